"""heatgw.store (two-slot atomic records) and the host's NOR flash
(boards/host/flashdev.py) in the real micropython binary, up to power cuts inside a save
on littlefs."""

import json
import struct
import sys
import zlib

from host_tools.paths import REPO

MAGIC = b"HGW\x01"


def record(seq, payload):
    """The slot format, written independently of store.py: magic|u32 seq|u32 len|data|crc."""
    body = MAGIC + struct.pack("<II", seq, len(payload)) + payload
    return body + struct.pack("<I", zlib.crc32(body))


def run_one(mp, src):
    out = mp.run_json(src)
    if len(out) != 1:
        raise AssertionError(out)
    return out[0]


# --- SlotStore on the host filesystem (VfsPosix) -------------------------------------------


def test_round_trip_newest_slot_and_counters(mp, tmp_path):
    d = str(tmp_path)
    r = run_one(mp, f"""
import json
from heatgw.store import SlotStore
D = {d!r}
s = SlotStore(D + "/a", D + "/b")
first = s.load()
seqs = [s.save(b"one"), s.save(b"two"), s.save(b""), s.save(bytes(range(256)) * 16)]
s2 = SlotStore(D + "/a", D + "/b")
seq, p = s2.load()
seq3 = s2.save(b"three")
s3 = SlotStore(D + "/a", D + "/b")
print(json.dumps({{"first": [first[0], first[1]], "seqs": seqs, "seq": seq,
                  "ok4k": p == bytes(range(256)) * 16, "seq3": seq3, "last": list(s3.load()[1]),
                  "saves": s.saves, "bytes": s.bytes_written}}))
""")
    assert r["first"] == [0, None]
    assert r["seqs"] == [1, 2, 3, 4]
    assert r["seq"] == 4 and r["ok4k"]
    assert r["seq3"] == 5 and bytes(r["last"]) == b"three"
    assert r["saves"] == 4
    assert r["bytes"] == 4 * 16 + 3 + 3 + 0 + 4096
    # Slots alternate: a holds 1, 3, 5; b holds 2, 4 — checked with the independent format.
    assert (tmp_path / "a").read_bytes() == record(5, b"three")
    assert (tmp_path / "b").read_bytes() == record(4, bytes(range(256)) * 16)


def _damage(rec):
    """Ways a slot can be bad: (name, bytes or None for a missing file)."""
    cases = [("missing", None), ("empty", b""), ("garbage", b"\x00\x13 not a record " * 9),
             ("foreign_magic", b"HGW\x02" + rec[4:]), ("trailing", rec + b"\x00"),
             ("seq_zero", record(0, b"payload"))]
    for cut in (1, 4, 8, 11, 12, 13, len(rec) - 4, len(rec) - 1):
        cases.append((f"truncated_{cut}", rec[:cut]))
    for pos in (0, 3, 4, 7, 8, 11, 12, len(rec) // 2, len(rec) - 5, len(rec) - 1):
        b = bytearray(rec)
        b[pos] ^= 0x01
        cases.append((f"flip_{pos}", bytes(b)))
    # A length field claiming far more than max_payload must not be believed.
    cases.append(("huge_len", MAGIC + struct.pack("<II", 9, 0x7FFFFFF0) + b"x" * 40))
    return cases


def test_a_bad_slot_is_ignored_and_the_other_used(mp, tmp_path):
    good = record(41, b"older meter totals")
    newer = record(42, b"newer meter totals, damaged below")
    names = []
    for i, (name, data) in enumerate(_damage(newer)):
        for bad_slot in ("a", "b"):
            c = tmp_path / f"c{i}{bad_slot}"
            c.mkdir()
            (c / ("b" if bad_slot == "a" else "a")).write_bytes(good)
            if data is not None:
                (c / bad_slot).write_bytes(data)
            names.append((f"{name}/{bad_slot}", str(c), bad_slot))
    r = run_one(mp, f"""
import json
from heatgw.store import SlotStore
res = {{}}
for name, d, bad in {[(n, d, b) for n, d, b in names]!r}:
    s = SlotStore(d + "/a", d + "/b", max_payload=4096)
    seq, p = s.load()
    # The next save must go to the bad slot, never over the only good record.
    nseq = s.save(b"next")
    res[name] = [seq, p.decode() if p else None, nseq, s.load_rejects]
print(json.dumps(res))
""")
    for name, d, bad in names:
        seq, p, nseq, rejects = r[name]
        assert (seq, p) == (41, "older meter totals"), name
        assert nseq == 42 and rejects == 1, name
        other = "b" if bad == "a" else "a"
        assert (tmp_path / d / other).read_bytes() == good, name
        assert (tmp_path / d / bad).read_bytes() == record(42, b"next"), name


def test_both_slots_bad_and_sequence_wrap(mp, tmp_path):
    for name, a, b in [("both_bad", b"junk", record(5, b"x")[:-1]), ("none", None, None),
                       ("wrap", record(0xFFFFFFFF, b"before wrap"), record(1, b"after wrap")),
                       ("wrap_rev", record(1, b"after wrap"), record(0xFFFFFFFF, b"before")),
                       ("plain", record(7, b"seven"), record(6, b"six"))]:
        c = tmp_path / name
        c.mkdir()
        if a is not None:
            (c / "a").write_bytes(a)
        if b is not None:
            (c / "b").write_bytes(b)
    r = run_one(mp, f"""
import json
from heatgw.store import SlotStore, seq_next, seq_newer
T = {str(tmp_path)!r}
res = {{}}
for name in ("both_bad", "none", "wrap", "wrap_rev", "plain"):
    s = SlotStore(T + "/" + name + "/a", T + "/" + name + "/b")
    seq, p = s.load()
    res[name] = [seq, p.decode() if p is not None else None, s.save(b"n")]
res["next"] = [seq_next(0), seq_next(0xFFFFFFFE), seq_next(0xFFFFFFFF)]
res["newer"] = [seq_newer(1, 0xFFFFFFFF), seq_newer(0xFFFFFFFF, 1), seq_newer(5, 5)]
print(json.dumps(res))
""")
    assert r["both_bad"] == [0, None, 1]
    assert r["none"] == [0, None, 1]
    assert r["wrap"] == [1, "after wrap", 2]
    assert r["wrap_rev"] == [1, "after wrap", 2]
    assert r["plain"] == [7, "seven", 8]
    assert r["next"] == [1, 0xFFFFFFFF, 1]  # 0 means "nothing stored", skipped
    assert r["newer"] == [True, False, False]
    assert (tmp_path / "wrap" / "a").read_bytes() == record(2, b"n")  # overwrote the older


def test_crc_fallback_matches_binascii_and_zlib(mp):
    r = run_one(mp, """
import json, binascii
from heatgw import store
data = [b"", b"a", b"123456789", bytes(range(256)), b"\\xff" * 1000]
sw = [store.crc32_sw(d) for d in data]
lib = [binascii.crc32(d) & 0xFFFFFFFF for d in data]
chained = store.crc32_sw(b"6789", store.crc32_sw(b"12345"))
print(json.dumps({"sw": sw, "lib": lib, "chained": chained,
                  "module_uses_lib": store.crc32(b"123456789") == sw[2]}))
""")
    data = [b"", b"a", b"123456789", bytes(range(256)), b"\xff" * 1000]
    want = [zlib.crc32(d) for d in data]
    assert r["sw"] == want and r["lib"] == want
    assert r["sw"][2] == 0xCBF43926  # the CRC-32 check value
    assert r["chained"] == 0xCBF43926
    assert r["module_uses_lib"]


def test_store_without_binascii_crc32(mp, tmp_path):
    # Like an ESP32/RP2040 build without binascii.crc32: the fallback writes the same records.
    d = str(tmp_path)
    r = run_one(mp, f"""
import json, sys
class NoCrc32:
    pass
sys.modules["binascii"] = NoCrc32()
from heatgw import store
s = store.SlotStore({d!r} + "/a", {d!r} + "/b")
s.save(b"first")
s.save(b"fallback crc")
print(json.dumps([store.crc32 is store.crc32_sw, list(s.load()[1])]))
""")
    assert r[0] is True and bytes(r[1]) == b"fallback crc"
    assert (tmp_path / "b").read_bytes() == record(2, b"fallback crc")


def test_store_also_runs_on_cpython(tmp_path):
    sys.path.insert(0, str(REPO / "firmware"))
    try:
        from heatgw import store
        s = store.SlotStore(str(tmp_path / "a"), str(tmp_path / "b"))
        assert s.save(b"cpython") == 1
        assert store.SlotStore(str(tmp_path / "a"), str(tmp_path / "b")).load() == \
            (1, b"cpython")
        assert store.crc32_sw(b"123456789") == zlib.crc32(b"123456789")
    finally:
        sys.path.remove(str(REPO / "firmware"))


# --- FlashDev: NOR semantics, torn operations, refusal to format data ----------------------


def test_flashdev_nor_semantics_cuts_and_persistence(mp, tmp_path):
    img = tmp_path / "nor.img"
    img.write_bytes(b"\x00" * 100)  # shorter than the device: extended with 0xFF
    r = run_one(mp, f"""
import json
from flashdev import FlashDev
IMG = {str(img)!r}
d = FlashDev(IMG, block_size=256, block_count=4)
buf = bytearray(4)
d.readblocks(0, buf, 98)
ext = list(buf)
d.erase(0)
d.writeblocks(0, b"\\xf0\\x0f\\xff\\x3c", 8)
d.writeblocks(0, b"\\x3c\\xff\\x0f\\xf0", 8)   # NOR: bits only go 1 -> 0
d.readblocks(0, buf, 8)
anded = list(buf)
d.ioctl(6, 1)
counts = [d.ops, d.programs, d.erases, d.bytes_programmed, d.ioctl(4, 0), d.ioctl(5, 0)]
seen = []
d.arm_cut(2, 3, seen.append)
d.writeblocks(1, b"\\x01\\x02\\x03\\x04", 0)          # op +1: lands
d.writeblocks(1, b"\\x11\\x12\\x13\\x14\\x15", 16)     # op +2: torn after 3 bytes
d.writeblocks(1, b"\\x00" * 8, 32)                    # power is gone: dropped
d.ioctl(6, 2)                                         # dropped
after = [d.ops, d.cut_done, d.dropped, d.wear()]
d2 = FlashDev(IMG, block_size=256, block_count=4)     # the flash after the reset
b1 = bytearray(40)
d2.readblocks(1, b1, 0)
d2.erase(3)
d2.writeblocks(3, b"\\x00" * 256, 0)
d2.arm_cut(1, 100)
d2.erase(3)                                           # torn erase: first 100 bytes only
b3 = bytearray(256)
d2.readblocks(3, b3, 0)
print(json.dumps({{"ext": ext, "anded": anded, "counts": counts, "seen": seen,
                  "after": after, "b1": list(b1), "b3": [len([x for x in b3 if x == 0xFF]), b3[99],
                  b3[100]],
                  "size": d2.block_size * d2.block_count}}))
""")
    assert r["ext"] == [0, 0, 0xFF, 0xFF]  # old bytes kept, extension erased
    assert r["anded"] == [0x30, 0x0F, 0x0F, 0x30]
    assert r["counts"] == [4, 2, 2, 8, 4, 256]
    assert r["seen"] == [{"op": "program", "block": 1, "offset": 16, "len": 5, "torn_bytes": 3}]
    assert r["after"][:3] == [6, True, 2] and r["after"][3] == [1, 1, 0, 0]
    b1 = r["b1"]
    assert b1[:4] == [1, 2, 3, 4] and b1[16:21] == [0x11, 0x12, 0x13, 0xFF, 0xFF]
    assert b1[32:40] == [0xFF] * 8
    assert r["b3"] == [100, 0xFF, 0]
    data = img.read_bytes()
    assert len(data) == 1024
    # The file is the flash: block 0 erased then programmed twice, block 1 as cut.
    assert data[:256] == b"\xff" * 8 + bytes([0x30, 0x0F, 0x0F, 0x30]) + b"\xff" * 244
    assert data[256 + 16:256 + 21] == b"\x11\x12\x13\xff\xff"


def test_mount_formats_only_a_blank_device(mp, tmp_path):
    junk = tmp_path / "junk.img"
    junk.write_bytes(bytes(range(256)) * 16 * 8)
    before = junk.read_bytes()
    r = run_one(mp, f"""
import json, os
from flashdev import FlashDev, mount
T = {str(tmp_path)!r}
d = FlashDev(T + "/blank.img", block_size=4096, block_count=16)
first = mount(d, "/fl")
with open("/fl/x", "w") as f:
    f.write("kept")
second = mount(FlashDev(T + "/blank.img", block_size=4096, block_count=16), "/fl")
with open("/fl/x") as f:
    kept = f.read()
try:
    mount(FlashDev(T + "/junk.img", block_size=4096, block_count=8), "/junk")
    junk = "mounted"
except OSError as e:
    junk = "refused"
print(json.dumps({{"first": first, "second": second, "kept": kept, "junk": junk}}))
""")
    assert r == {"first": True, "second": False, "kept": "kept", "junk": "refused"}
    assert junk.read_bytes() == before  # never reformatted


# --- Power cuts inside saves on littlefs ---------------------------------------------------

POWER_CUT = r"""
import json
from flashdev import FlashDev, mount
from heatgw.store import SlotStore

IMG = %(img)r
ITER = %(iterations)d
SAVES = 3                      # saves per power cycle
TORN = (0, 5, 40, 1 << 20)     # nothing, inside a 16-byte program unit, inside a 64-byte
                               # cache flush, the whole operation


def payload(counter):
    return (b"<%%010d>" %% counter) * 170        # 2040 bytes, every byte tied to counter


def decode(p):
    if p is None or len(p) != 2040 or p[:1] != b"<":
        raise ValueError("undecodable payload")
    c = int(p[1:11])
    if p != payload(c):
        raise ValueError("payload damaged")
    return c


def fail(msg):
    print(json.dumps({"error": msg}))
    raise SystemExit(1)


# Calibrate on a blank device: ops a save takes, so the cuts sweep the whole save.
dev = FlashDev(IMG)
if not mount(dev, "/fl"):
    fail("blank image did not need mkfs")
st = SlotStore("/fl/a", "/fl/b")
st.load()
counter = 0
per_save = []                  # [ops, erases, bytes] of every save that completed
last = None                    # (counter, seq) of the last save that returned before a cut
for _ in range(3):
    counter += 1
    o, e, b = dev.ops, dev.erases, dev.bytes_programmed
    seq = st.save(payload(counter))
    per_save.append([dev.ops - o, dev.erases - e, dev.bytes_programmed - b])
    last = (counter, seq)
ops_per_save = max(x[0] for x in per_save)
span = SAVES * ops_per_save + 6    # a few cuts fall after the last save: between saves
dev.arm_cut(1, 0)                  # power off

inside = between = inflight_won = mounts = save_errors = 0
torn_hits = {}
positions = {}
wear = [0] * dev.block_count
prev_seq = last[1]
inflight = None
for it in range(ITER):
    for i, w in enumerate(dev.wear()):
        wear[i] += w
    # Reset: the old FlashDev and VfsLfs2 are abandoned; only the image file remains.
    dev = FlashDev(IMG)
    if mount(dev, "/fl"):
        fail("iteration %%d: the filesystem needed mkfs" %% it)
    mounts += 1
    st = SlotStore("/fl/a", "/fl/b")
    seq, p = st.load()
    try:
        c = decode(p)
    except ValueError as ex:
        fail("iteration %%d: %%s" %% (it, ex))
    if seq < prev_seq:
        fail("iteration %%d: seq went back %%d -> %%d" %% (it, prev_seq, seq))
    if (c, seq) != last:
        # Only the save the power cut interrupted may have landed instead, whole.
        if inflight is None or (c, seq) != inflight:
            fail("iteration %%d: loaded %%r, last completed %%r, in flight %%r"
                 %% (it, (c, seq), last, inflight))
        inflight_won += 1
    last = (c, seq)
    prev_seq = seq
    inflight = None
    after = 1 + (it * 7 + it // 5) %% span     # deterministic sweep over every op of a save
    torn = TORN[(it + it // len(TORN)) %% len(TORN)]
    dev.arm_cut(after, torn)
    for k in range(SAVES):
        counter += 1
        o, e, b = dev.ops, dev.erases, dev.bytes_programmed
        try:
            seq = st.save(payload(counter))
            err = None
        except OSError as ex:      # littlefs noticed the dead flash (failed read-back)
            err = ex
        if dev.cut_done:
            inside += 1
            positions[dev.ops - o] = 1     # which op of the save the cut tore
            if err is not None:
                save_errors += 1
            torn_hits[dev.cut_info["op"]] = torn_hits.get(dev.cut_info["op"], 0) + 1
            inflight = (counter, last[1] + 1)
            break
        if err is not None:
            fail("iteration %%d: save failed without a power cut: %%r" %% (it, err))
        per_save.append([dev.ops - o, dev.erases - e, dev.bytes_programmed - b])
        last = (counter, seq)
    if not dev.cut_done:
        between += 1
        dev.arm_cut(1, 0)          # the cut comes after the last save
    dev.close()                    # the dead device's file handle; its ops are dropped anyway

n = len(per_save)
print(json.dumps({
    "iterations": ITER, "mounts": mounts, "inside": inside, "between": between,
    "inflight_won": inflight_won, "save_errors": save_errors, "torn_ops": torn_hits,
    "ops_per_save": [min(x[0] for x in per_save), sum(x[0] for x in per_save) / n,
                     max(x[0] for x in per_save)],
    "erases_per_save": [min(x[1] for x in per_save), sum(x[1] for x in per_save) / n,
                        max(x[1] for x in per_save)],
    "bytes_per_save": [min(x[2] for x in per_save), sum(x[2] for x in per_save) / n,
                       max(x[2] for x in per_save)],
    "cut_positions": len(positions), "completed_saves": n, "max_block_erases": max(wear),
    "span": span,
}))
"""


def test_power_cuts_inside_saves_on_littlefs(mp, tmp_path):
    iterations = 240
    r = run_one(mp, POWER_CUT % {"img": str(tmp_path / "flash.img"),
                                 "iterations": iterations})
    print("\npower-cut test:", json.dumps(r))
    assert "error" not in r, r
    assert r["mounts"] == iterations  # every reset mounted without mkfs
    assert r["inside"] + r["between"] == iterations
    assert r["inside"] >= 150, r  # most cuts land inside a save, at every op of it
    assert r["between"] >= 1
    # The sweep tears every one of the (about 35) operations a save consists of.
    assert r["cut_positions"] >= r["ops_per_save"][0], r
    assert r["torn_ops"].get("erase", 0) >= 1 and r["torn_ops"].get("program", 0) >= 50
    # A ~2 KB record costs about one block erase and its own size in programs.
    assert r["erases_per_save"][1] < 2
    assert 2052 <= r["bytes_per_save"][1] < 4096
