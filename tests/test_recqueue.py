"""heatgw.recqueue (the store-and-forward ring) on the real micropython binary: the record
format (checked against an independent CPython codec), acks, overflow, RAM that does not
grow with the queue, and power cuts at every flash operation of appends and acks on
littlefs (boards/host/flashdev.py)."""

import json
import struct
import zlib

REC_LEN = 112
HDR = "<BBHIIIHHI"
TEL = "<IIIIIIHIHIHIHiiiiiiBBHHH"
AIN = "<HHHH"  # version 0x52: the valve's and 3 analogue inputs' readings (64 µV)
EVT = "<iiii60s"
V1_LEN = 104  # version 0x51 records, before the analogue inputs
INVALID = -0x20000000
EPOCH_2020 = 1577836800
M30 = (1 << 30) - 1


def run_one(mp, src, **kw):
    out = mp.run_json(src, **kw)
    if len(out) != 1:
        raise AssertionError(out)
    return out[0]


def cp_record(seq, low, *, kind=1, boot=3, up_ms=0, utc=0, code=0, body=None,
              version=0x52):
    """The on-flash record, written independently of recqueue.py (zlib's CRC-32); version
    0x51: an older firmware's 104-byte record."""
    head = struct.pack(HDR, version, kind, boot, seq, low, up_ms & M30, up_ms >> 30, code,
                       utc)
    rec = head + body
    assert len(rec) == (REC_LEN if version == 0x52 else V1_LEN) - 4
    return rec + struct.pack("<I", zlib.crc32(rec))


def cp_tel_body(energy_nj, volume_ul, times=(0, 0, 0, 0), temps=(INVALID,) * 4,
                flow=INVALID, power=INVALID, relay=255, reason=0, active=0, latched=0,
                heap=0xFFFF, ain=(0xFFFF,) * 4, version=0x52):
    t = []
    for x in times:
        t += [x & M30, x >> 30]
    body = struct.pack(TEL, energy_nj & M30, (energy_nj >> 30) & M30, energy_nj >> 60,
                       volume_ul & M30, volume_ul >> 30, *t, *temps, flow, power, relay,
                       reason, active, latched, heap)
    return body + struct.pack(AIN, *ain) if version == 0x52 else body


PRELUDE = """
import json
from heatgw.recqueue import RecordQueue, decode, KIND_TELEMETRY, KIND_EVENT, KIND_ALARM
D = %r
def tel(i, **kw):
    f = {"boot": 3, "up_ms": i * 10000, "utc": None,
         "totals": {"energy_nj": i * 1000003, "volume_ul": i * 7, "time_ms": i * 10000}}
    f.update(kw)
    return f
"""


def test_record_format_is_exact_and_matches_an_independent_codec(mp, tmp_path):
    d = str(tmp_path / "q")
    big_e = (1 << 90) - 1  # the meter's full energy capacity, nJ
    r = run_one(mp, PRELUDE % d + f"""
q = RecordQueue(D, 100, segments=4)
f = {{"boot": 70000, "up_ms": (1 << 45) + 12345, "utc": {EPOCH_2020} + 200000000,
     "totals": {{"energy_nj": {big_e}, "volume_ul": (1 << 60) - 1, "time_ms": (1 << 46) - 1,
                "error_ms": 12345678901, "low_dt_ms": 1 << 30, "negative_dt_ms": 3}},
     "supply_mc": 61250, "return_mc": -40000, "sink_return_mc": None,
     "coolant_mc": 0x1FFFFFFF, "flow_ml_h": 36000000, "power_w": -5, "relay": True,
     "reason": 6, "active": 0x41, "latched": 8, "heap_free": 123457,
     "valve_q": 31250, "ain_q": [8765, None, 0xFFFE]}}
s1 = q.append(KIND_TELEMETRY, f)
s2 = q.append(KIND_EVENT, {{"code": "state", "args": (1, -2, 3), "text": "bypass " + "é" * 40,
                           "utc": 5}})
s3 = q.append(KIND_ALARM, {{"code": 2, "args": (1,), "text": "task_failing:mqtt"}})
rec = q.get(s1)
print(json.dumps({{"seqs": [s1, s2, s3], "tel": rec, "ev": q.get(s2), "al": q.get(s3),
                  "gone": [q.get(0), q.get(4)]}}))
""")
    assert r["seqs"] == [1, 2, 3]
    t = r["tel"]
    assert t["totals"] == {"energy_nj": big_e, "volume_ul": (1 << 60) - 1,
                           "time_ms": (1 << 46) - 1, "error_ms": 12345678901,
                           "low_dt_ms": 1 << 30, "negative_dt_ms": 3}
    assert (t["seq"], t["kind"], t["boot"], t["low"]) == (1, 1, 70000 & 0xFFFF, 0)
    assert t["up_ms"] == (1 << 45) + 12345 and t["utc"] == EPOCH_2020 + 200000000
    assert [t["supply_mc"], t["return_mc"], t["sink_return_mc"], t["coolant_mc"]] == \
        [61250, -40000, None, 0x1FFFFFFF]
    assert (t["flow_ml_h"], t["power_w"], t["relay"], t["reason"]) == (36000000, -5, 1, 6)
    assert (t["active"], t["latched"], t["heap_free"]) == (0x41, 8, 123456)
    assert t["valve_q"] == 31250 and t["ain_q"] == [8765, None, 0xFFFE]
    ev, al = r["ev"], r["al"]
    assert ev["code"] == "state" and ev["args"] == [1, -2, 3, 0] and ev["utc"] is None
    assert ev["text"] == "bypass " + "é" * 26  # cut at 60 bytes on a character boundary
    assert al["code"] == "task_failing" and al["kind"] == 3 and al["text"] == "task_failing:mqtt"
    assert r["gone"] == [None, None]
    # The bytes on flash, byte for byte, from the independent codec.
    raw = (tmp_path / "q" / "seg00").read_bytes()
    assert len(raw) == 3 * REC_LEN
    want = cp_record(1, 0, boot=70000 & 0xFFFF, up_ms=(1 << 45) + 12345, utc=200000000,
                     body=cp_tel_body(big_e, (1 << 60) - 1,
                                      ((1 << 46) - 1, 12345678901, 1 << 30, 3),
                                      (61250, -40000, INVALID, 0x1FFFFFFF), 36000000, -5, 1,
                                      6, 0x41, 8, 123456 // 16,
                                      (31250, 8765, 0xFFFF, 0xFFFE)))
    assert raw[:REC_LEN] == want
    text = ("bypass " + "é" * 26).encode()
    assert raw[REC_LEN:2 * REC_LEN] == cp_record(
        2, 0, kind=2, boot=0, code=2, body=struct.pack(EVT, 1, -2, 3, 0, text) + bytes(8))


def test_code_tables_look_up_whole_names_only_and_allocate_nothing(mp):
    # the code tables are strings: a name is found at its index, never a part of a name
    r = run_one(mp, """
import json, micropython
from heatgw import recqueue as rq
out = {}
for t in ("EVENT_CODES", "ALARM_CODES", "REASONS"):
    names = getattr(rq, t)
    out[t] = [[n, rq.code_of(names, n), rq.name_of(names, i)]
              for i, n in enumerate(names.split())]
out["misses"] = [rq.code_of(rq.EVENT_CODES, n) for n in
                 ("boo", "ate", "cmd_", "task_failin", "other boot", "", None, 3)]
out["beyond"] = [rq.name_of(rq.REASONS, len(rq.REASONS.split())),
                 rq.name_of(rq.ALARM_CODES, 255)]
r = [0]
def look(r):
    r[0] = rq.code_of(rq.REASONS, "sensor_stale") + rq.code_of(rq.EVENT_CODES, "nope")
micropython.heap_lock()
try:
    look(r)
finally:
    micropython.heap_unlock()
out["locked"] = r[0]
print(json.dumps(out))
""")
    for t in ("EVENT_CODES", "ALARM_CODES", "REASONS"):
        assert r[t] and all(code == i and name == n for i, (n, code, name) in enumerate(r[t]))
    assert [n for n, _c, _m in r["EVENT_CODES"]][-2:] == ["cmd_rejected", "calibration"]
    assert r["misses"] == [-1] * 8
    assert r["beyond"] == [None, None]
    assert r["locked"] == 11 - 1


def test_bad_input_raises_and_stores_nothing(mp, tmp_path):
    r = run_one(mp, PRELUDE % str(tmp_path / "q") + """
q = RecordQueue(D, 100, segments=4)
q.append(KIND_TELEMETRY, tel(1))
bad = [(KIND_TELEMETRY, tel(2, supply_mc=1.5)), (KIND_TELEMETRY, tel(2, power_w=1 << 29)),
       (KIND_TELEMETRY, tel(2, totals={"energy_nj": -1, "volume_ul": 0})),
       (KIND_TELEMETRY, tel(2, totals={"energy_nj": 1 << 90, "volume_ul": 0})),
       (KIND_TELEMETRY, tel(2, totals={"energy_nj": 1, "volume_ul": 1 << 60})),
       (KIND_TELEMETRY, tel(2, totals={"energy_nj": 1, "volume_ul": 1, "time_ms": 1 << 46})),
       (KIND_TELEMETRY, tel(2, totals={"volume_ul": 1})), (KIND_TELEMETRY, {"boot": 1}),
       (KIND_TELEMETRY, tel(2, utc=1.7e9)),
       (KIND_TELEMETRY, tel(2, reason=256)), (KIND_TELEMETRY, tel(2, up_ms=-1)),
       (KIND_EVENT, {"code": "no_such_code"}), (KIND_EVENT, {"args": (1, 2, 3, 4, 5)}),
       (KIND_EVENT, {"text": b"bytes"}), (9, {}),
       (KIND_TELEMETRY, tel(2, valve_q=0.5)), (KIND_TELEMETRY, tel(2, ain_q=[0xFFFF])),
       (KIND_TELEMETRY, tel(2, ain_q=[-1])), (KIND_TELEMETRY, tel(2, ain_q=[1, 2, 3, 4]))]
errs = []
for kind, f in bad:
    try:
        q.append(kind, f)
        errs.append("stored")
    except ValueError as e:
        errs.append(type(e).__name__)
q2 = RecordQueue(D, 100, segments=4)
print(json.dumps({"errs": errs, "next": [q.next_seq, q2.next_seq], "n": len(q2),
                  "ok": q.append(KIND_TELEMETRY, tel(2))}))
""")
    assert "stored" not in r["errs"], r
    assert r["next"] == [2, 2] and r["n"] == 1 and r["ok"] == 2


def test_upgrade_from_104_byte_records_keeps_seq_and_drops_the_unsent(mp, tmp_path):
    """A queue written by the firmware before the analogue inputs (version 0x51, 104-byte
    records): the new firmware does not read them, but its seq goes on after the newest,
    and the ones not yet acknowledged are dropped with a drop record, never silently."""
    d = tmp_path / "q"
    d.mkdir()
    old = b"".join(cp_record(s, 0, version=0x51, body=cp_tel_body(s * 1000, s, version=0x51))
                   for s in range(1, 11))
    (d / "seg00").write_bytes(old)
    old = b"".join(cp_record(s, 0, version=0x51, body=cp_tel_body(s * 1000, s, version=0x51))
                   for s in range(11, 16))
    (d / "seg01").write_bytes(old)
    # the old firmware had saved its ack mark at 12: 13..15 were never acknowledged
    body = b"QACK" + struct.pack("<I", 12)
    (d / "ack").write_bytes(body + struct.pack("<I", zlib.crc32(body[:8]) & 0xFFFFFFFF))
    r = run_one(mp, PRELUDE % str(d) + """
q = RecordQueue(D, 100, segments=4)
first = [q.next_seq, len(q), q.last_totals()]
s = q.append(KIND_TELEMETRY, tel(1))
q2 = RecordQueue(D, 100, segments=4)  # a later boot finds the new records
print(json.dumps({"first": first, "s": s, "drop": q.get(16), "tel": q.get(17)["seq"],
                  "dropped": [q.dropped, q.last_drop], "unsent": q.next_unsent(0),
                  "again": [q2.next_seq, q2.next_unsent(0), q2.dropped]}))
""")
    assert r["first"] == [16, 0, None], r
    assert r["s"] == 17
    assert r["drop"]["code"] == "queue_drop" and r["drop"]["args"][:3] == [13, 15, 3], r
    assert r["tel"] == 17 and r["dropped"] == [3, [13, 15]]
    assert r["unsent"] == 16  # the drop record itself goes upstream, then the telemetry
    assert r["again"] == [18, 16, 0], r


def test_upgrade_from_the_152_byte_development_records_keeps_seq(mp, tmp_path):
    """The recovery extension's first format (version 0x52 of 152 bytes: the 100 bytes of a
    0x51 record, 48 of extension, the CRC), written by a development build before the
    analogue inputs took version 0x52 for the 112-byte base record: not read as either of
    today's formats (the same version byte, another length), but seq goes on after the
    newest and the unsent ones are dropped with a drop record, in a queue of either kind."""
    d = tmp_path / "q"
    d.mkdir()
    ext = bytes(range(48))
    old = b""
    for s in range(1, 8):
        rec = struct.pack(HDR, 0x52, 1, 3, s, 0, s * 1000, 0, 0, 0)
        rec += cp_tel_body(s * 1000, s, version=0x51) + ext
        old += rec + struct.pack("<I", zlib.crc32(rec))
    assert len(old) == 7 * 152
    (d / "seg00").write_bytes(old)
    body = b"QACK" + struct.pack("<I", 5)
    (d / "ack").write_bytes(body + struct.pack("<I", zlib.crc32(body[:8]) & 0xFFFFFFFF))
    r = run_one(mp, PRELUDE % str(d) + """
out = []
for ext in (True, False):
    q = RecordQueue(D, 100, segments=4, ext=ext)
    out.append([q.next_seq, len(q), q.last_totals(), q.get(3)])
q = RecordQueue(D, 100, segments=4, ext=True)
s = q.append(KIND_TELEMETRY, tel(1))
print(json.dumps({"open": out, "s": s, "drop": q.get(8), "dropped": q.last_drop}))
""")
    assert r["open"] == [[8, 0, None, None]] * 2, r
    assert r["s"] == 9 and r["dropped"] == [6, 7]
    assert r["drop"]["code"] == "queue_drop" and r["drop"]["args"][:3] == [6, 7, 2], r


def test_failing_flash_stores_nothing_and_the_next_append_takes_the_seq(mp, tmp_path):
    r = run_one(mp, PRELUDE % "/fl/q" + f"""
from flashdev import FlashDev, mount
dev = FlashDev({str(tmp_path / "f.img")!r}, block_count=32)
mount(dev, "/fl")
q = RecordQueue(D, 8, segments=2, ack_save_every=1)
for i in range(1, 4):
    q.append(KIND_TELEMETRY, tel(i))
res = {{}}
for n in (1, 3, 50):
    dev.fail_ops(n)
    try:
        q.append(KIND_TELEMETRY, tel(99))
        res[n] = "stored"
    except OSError:
        res[n] = "OSError"
    dev.fail_ops(0)
dev.fail_ops(50)
res["ack"] = [q.mark_acked(1), q.low]   # the ack file cannot be written: counted, kept
dev.fail_ops(0)
res["after"] = [q.append(KIND_TELEMETRY, tel(4)), q.errors]
q2 = RecordQueue(D, 8, segments=2)
res["reopen"] = [q2.next_seq, [q2.get(s)["totals"]["energy_nj"] // 1000003
                               for s in range(1, 5)], q2.low]
print(json.dumps(res))
""")
    # littlefs gives up on a program/erase that fails: the append raises, nothing moves.
    assert [r["1"], r["3"], r["50"]] == ["OSError"] * 3
    assert r["ack"] == [True, 1]
    assert r["after"] == [4, 4]  # 3 appends and 1 ack save failed; seq 4 was not spent
    assert r["reopen"][:2] == [5, [1, 2, 3, 4]]
    assert r["reopen"][2] == 1  # the newest record carries the ack the file could not


def test_acks_in_and_out_of_order_and_their_persistence(mp, tmp_path):
    r = run_one(mp, PRELUDE % str(tmp_path / "q") + """
q = RecordQueue(D, 100, segments=4, ack_save_every=5)
for i in range(1, 21):
    q.append(KIND_TELEMETRY, tel(i))
res = {}
res["first"] = q.peek_unsent()
# A live record acked while the backlog drains: out of order, kept as a range above low.
res["news"] = [q.mark_acked(20), q.mark_acked(19), q.mark_acked(20), q.mark_acked(21),
               q.mark_acked(1), q.mark_acked(2), q.mark_acked(4)]
order = []
s = q.next_unsent(0)
while s:
    order.append(s)
    s = q.next_unsent(s)
res["order"] = order
res["unsent"] = q.unsent()
for s in range(3, 19):
    q.mark_acked(s)
res["low_all"] = [q.low, q.unsent(), q.next_unsent(0), q.ack_saves]
# Reopen without save_acks: the mark is the ack file (saved every 5) or the newest record.
q2 = RecordQueue(D, 100, segments=4)
res["reopen"] = [q2.low, q2.next_unsent(0)]
q.save_acks()
res["saved"] = RecordQueue(D, 100, segments=4).low
q3 = RecordQueue(D, 100, segments=4)
s = q3.append(KIND_TELEMETRY, tel(21))   # carries low in its header
import os
os.remove(D + "/ack")
res["from_record"] = [RecordQueue(D, 100, segments=4).low, s]
print(json.dumps(res))
""")
    assert r["first"] == 1
    assert r["news"] == [True, True, False, False, True, True, True]
    assert r["order"] == [3] + list(range(5, 19))
    assert r["unsent"] == 15
    assert r["low_all"][:3] == [20, 0, 0] and r["low_all"][3] >= 3
    assert r["reopen"] == [20, 0]  # low reached 20 in one step, 20 - 15 >= 5: saved
    assert r["saved"] == 20
    assert r["from_record"] == [20, 21]


def test_overflow_drops_the_oldest_and_records_the_exact_range(mp, tmp_path):
    r = run_one(mp, PRELUDE % str(tmp_path / "q") + """
q = RecordQueue(D, 30, segments=4)        # 10 records a segment, 30..40 kept
res = {"per_seg": q.per_seg}
for i in range(1, 41):
    q.append(KIND_TELEMETRY, tel(i))
res["full"] = [len(q), q.oldest(), q.dropped]
for s in range(1, 6):
    q.mark_acked(s)
q.mark_acked(8)                           # acked out of order: not lost when dropped
s = q.append(KIND_TELEMETRY, tel(41))     # refills segment 0: 6..10 unacked, 8 acked
res["drop"] = [s, q.oldest(), q.dropped, q.last_drop, q.low]
res["rec"] = q.get(41)
res["order"] = [q.next_unsent(0), q.get(42)["totals"]["energy_nj"] == 41 * 1000003]
# Nothing acked: the next refill drops all ten of segment 1.
for i in range(42, 51):
    q.append(KIND_TELEMETRY, tel(i))
res["drop2"] = [q.dropped, q.last_drop, q.oldest()]
q2 = RecordQueue(D, 30, segments=4)
res["reopen"] = [q2.next_seq, q2.oldest(), q2.low, q2.next_unsent(0),
                 q2.last_totals()[1]["energy_nj"] == 50 * 1000003]
print(json.dumps(res))
""")
    assert r["per_seg"] == 10
    assert r["full"] == [40, 1, 0]
    assert r["drop"] == [42, 11, 4, [6, 10], 10]
    assert r["rec"]["code"] == "queue_drop" and r["rec"]["args"] == [6, 10, 4, 0]
    assert r["rec"]["low"] == 10
    assert r["order"] == [11, True]
    assert r["drop2"] == [14, [11, 20], 21]
    assert r["reopen"][:4] == [53, 21, 20, 21] and r["reopen"][4]


def test_last_totals_skips_events_and_survives_reopen(mp, tmp_path):
    r = run_one(mp, PRELUDE % str(tmp_path / "q") + """
q = RecordQueue(D, 50, segments=4)
res = {"empty": q.last_totals()}
q.append(KIND_TELEMETRY, tel(5))
for i in range(12):
    q.append(KIND_EVENT, {"code": "boot"})
res["a"] = q.last_totals()
res["b"] = RecordQueue(D, 50, segments=4).last_totals()
print(json.dumps(res))
""")
    assert r["empty"] is None
    want = [1, {"energy_nj": 5000015, "volume_ul": 35, "time_ms": 50000, "error_ms": 0,
                "low_dt_ms": 0, "negative_dt_ms": 0}]
    assert r["a"] == want and r["b"] == want


def test_damaged_records_are_gone_and_seqs_still_follow_flash(mp, tmp_path):
    """A record whose bytes rot on flash is `gone`; the seq count stays positional."""
    qd = tmp_path / "q"
    qd.mkdir()
    recs = b"".join(cp_record(s, 0, body=cp_tel_body(s, s)) for s in range(1, 7))
    b = bytearray(recs)
    b[0] ^= 0xFF  # seq 1: wrong version byte
    b[3 * REC_LEN + 50] ^= 1  # seq 4: CRC fails
    (qd / "seg00").write_bytes(bytes(b))
    r = run_one(mp, PRELUDE % str(qd) + """
q = RecordQueue(D, 30, segments=4)
print(json.dumps({"next": q.next_seq, "oldest": q.oldest(),
                  "got": [q.get(s) is not None for s in range(1, 7)],
                  "new": q.append(KIND_TELEMETRY, tel(7))}))
""")
    assert r == {"next": 7, "oldest": 1, "got": [False, True, True, False, True, True],
                 "new": 7}


HEAP = """
import gc, json
from heatgw.recqueue import RecordQueue
gc.collect()
base = gc.mem_alloc()
q = RecordQueue(%r, 10000, segments=16)
gc.collect()
held = gc.mem_alloc() - base
s = q.next_unsent(0)
q.get(s)
q.last_totals()
n = 0
while s and n < 10:  # the same work on both queues
    q.mark_acked(s)
    s = q.next_unsent(s)
    n += 1
gc.collect()
print(json.dumps({"held": held, "after": gc.mem_alloc() - base, "len": len(q),
                  "next": q.next_seq, "low": q.low}))
"""


def _write_queue(qdir, n, per_seg):
    qdir.mkdir()
    for seg in range(-(-n // per_seg)):
        first = seg * per_seg + 1
        last = min(n, first + per_seg - 1)
        (qdir / f"seg{seg:02d}").write_bytes(b"".join(
            cp_record(s, 0, body=cp_tel_body((s % 10 + 1) * 10**9, s))
            for s in range(first, last + 1)))  # totals of one size: only the length differs


def test_ram_does_not_grow_with_the_queue(mp, tmp_path):
    # Queues of 10 and 10,000 records, written by the independent codec, same capacity.
    per_seg = -(-10000 // 15)
    res = {}
    for n in (10, 10000):
        _write_queue(tmp_path / f"q{n}", n, per_seg)
        res[n] = run_one(mp, HEAP % str(tmp_path / f"q{n}"))
    assert res[10]["len"] == 10 and res[10000]["len"] == 10000
    assert res[10000]["next"] == 10001 and res[10000]["low"] == 10
    # Flat, not growing: one byte per record more would show as ~10 KB. The conservative
    # GC leaves up to 80 B of noise after the work on 32-bit builds (a dead object a
    # register still points at), so the bound is 128 B.
    assert abs(res[10000]["held"] - res[10]["held"]) <= 64, res
    assert abs(res[10000]["after"] - res[10]["after"]) <= 128, res
    assert res[10000]["held"] < 4096, res  # the queue object itself stays small


def test_default_capacity_per_board(mp, tmp_path):
    r = run_one(mp, f"""
import json
from flashdev import FlashDev, mount
from heatgw.recqueue import default_capacity, capacity_for
mount(FlashDev({str(tmp_path / "f.img")!r}, block_count=48), "/fl")
print(json.dumps([default_capacity(2 * 1024 * 1024), default_capacity(848 * 1024),
                  capacity_for("/fl"), capacity_for("/fl", ext=True)]))
""")
    esp32, picow, host48, ext48 = r
    assert host48 == (48 * 4096 // 100 * 50 // REC_LEN) * 15 // 16  # from statvfs
    assert ext48 == (48 * 4096 // 100 * 50 // (REC_LEN + 48)) * 15 // 16  # 0x53: 160 B
    assert esp32 >= 8640  # 24 h of 10 s telemetry on the ESP32's 2 MB littlefs
    assert picow == (848 * 1024 // 100 * 50 // REC_LEN) * 15 // 16


# --- Power cuts at every flash operation of appends and acks on littlefs -------------------

POWER_CUT = r"""
import json
from flashdev import FlashDev, mount
from heatgw.recqueue import RecordQueue, KIND_TELEMETRY, KIND_EVENT

IMG = %(img)r
ITER = %(iterations)d
CAP = 12
SEGS = 4                       # 4 records a segment: refills (and drops) inside the sweep
PER_CYCLE = 4                  # appends per power cycle
TORN = (0, 5, 40, 1 << 20)     # nothing, inside a program unit, inside a cache flush, whole
E_NJ = 1000003


def fields(c):                 # every record is tied to its counter c
    return {"boot": 1, "up_ms": c, "totals": {"energy_nj": c * E_NJ, "volume_ul": c,
                                              "time_ms": c * 10000}}


def fail(msg):
    print(json.dumps({"error": msg}))
    raise SystemExit(1)


def opened(q):
    return RecordQueue("/fl/q", CAP, segments=SEGS, ack_save_every=3)


stored = {}      # seq -> counter (or -1 for a drop record) of every append that returned
acked = {}       # seq -> True: mark_acked() returned before the cut
drops = []       # (first, last) of every drop record seen on flash or returned
counter = 0


def work(q, dev, it):
    # PER_CYCLE appends. Online (10 cycles in 20) every record is acked once stored and
    # the backlog drains in order; offline (the other 10) nothing is acked, so refills drop.
    global counter
    online = it %% 20 < 10
    for k in range(PER_CYCLE):
        counter += 1
        try:
            s = q.append(KIND_TELEMETRY, fields(counter))
        except OSError:
            return ("append", counter)
        if dev.cut_done:       # the cut came after the commit: it may or may not be there
            return ("append", counter)
        if q.last_drop is not None and (not drops or drops[-1] != tuple(q.last_drop)):
            drops.append(tuple(q.last_drop))
            stored[s - 1] = -1
        stored[s] = counter
        if online:
            a = q.next_unsent(0)
            while a:
                try:
                    q.mark_acked(a)
                except OSError:
                    acked[a] = True
                    return ("ack", a)
                if dev.cut_done:       # the PUBACK came: its save may have landed or not
                    acked[a] = True
                    return ("ack", a)
                acked[a] = True
                a = q.next_unsent(a)
    return None


dev = FlashDev(IMG)
if not mount(dev, "/fl"):
    fail("blank image did not need mkfs")
q = opened(None)
span = 0
for _ in range(4):             # calibrate: ops of a power cycle (they grow as segments fill)
    o = dev.ops
    work(q, dev, -1)
    span = max(span, dev.ops - o)
span += 6                      # a few cuts fall after the cycle: between records
dev.arm_cut(1, 0)

mounts = inside = inflight_landed = 0
resent = {}
where = {}
positions = {}
torn_ops = {}
prev_energy = -1
for it in range(ITER):
    dev = FlashDev(IMG)
    if mount(dev, "/fl"):
        fail("iteration %%d: the filesystem needed mkfs" %% it)
    mounts += 1
    q = opened(None)
    old, nxt = q.oldest(), q.next_seq
    top = max(stored) if stored else 0
    # No seq reused, none skipped: the flash ends at the last stored record, or one (two
    # with a drop record) further when the cut came after the in-flight append's commit.
    if not top + 1 <= nxt <= top + 3:
        fail("iteration %%d: next_seq %%d after stored %%d" %% (it, nxt, top))
    for s in range(old, nxt):
        r = q.get(s)
        if r is None:
            fail("iteration %%d: seq %%d missing inside %%d..%%d" %% (it, s, old, nxt - 1))
        if r["seq"] != s:
            fail("iteration %%d: seq %%d holds %%d" %% (it, s, r["seq"]))
        want = stored.get(s)
        if r["kind"] == KIND_EVENT:
            if r["code"] != "queue_drop":
                fail("iteration %%d: unexpected event %%r" %% (it, r))
            a = r["args"]
            if (a[0], a[1]) not in drops:
                drops.append((a[0], a[1]))
            if want is None:
                stored[s] = -1
            elif want != -1:
                fail("iteration %%d: seq %%d reused by a drop record" %% (it, s))
        else:
            c = r["totals"]["energy_nj"] // E_NJ
            if want is None:
                if s < top + 1:
                    fail("iteration %%d: seq %%d unknown" %% (it, s))
                stored[s] = c
                inflight_landed += 1
                if c != counter:
                    fail("iteration %%d: landed %%d, in flight %%d" %% (it, c, counter))
            elif want != c:
                fail("iteration %%d: seq %%d reused (%%d then %%d)" %% (it, s, want, c))
    # Nothing lost before its ack: a stored, unacked record is still on flash, or its
    # loss is in a drop record.
    for s, c in stored.items():
        if c != -1 and s < old and s not in acked:
            if not any(a <= s <= b for a, b in drops):
                fail("iteration %%d: unacked seq %%d lost without a drop record (old %%d, "
                     "drops %%r, low %%d, first %%r count %%r)" %% (it, s, old, drops[-5:],
                                                     q.low, q._first, q._count))
    for s in range(old, nxt):  # an ack is never invented: it would lose the record
        if q.is_acked(s) and s not in acked:
            fail("iteration %%d: seq %%d acked, but its PUBACK never came" %% (it, s))
    for s in acked:
        if s >= old and not q.is_acked(s):
            resent[s] = 1      # acked, but after the last saved mark: sent again
    if q.low > top + 2:
        fail("iteration %%d: low %%d beyond the stored records" %% (it, q.low))
    lt = q.last_totals()
    e = lt[1]["energy_nj"] if lt else -1
    if e < prev_energy:
        fail("iteration %%d: newest totals went back %%d -> %%d" %% (it, prev_energy, e))
    prev_energy = e
    after = 1 + (it * 7 + it // 5) %% span     # sweeps every op of a power cycle
    torn = TORN[(it + it // len(TORN)) %% len(TORN)]
    o = dev.ops
    dev.arm_cut(after, torn)
    w = work(q, dev, it)
    if dev.cut_done:
        inside += 1
        where[w[0]] = where.get(w[0], 0) + 1
        positions[dev.ops - o] = 1
        torn_ops[dev.cut_info["op"]] = torn_ops.get(dev.cut_info["op"], 0) + 1
    for s in list(stored):     # forget what the ring overwrote long ago (bounded model)
        if s < old - 60:
            del stored[s]
            acked.pop(s, None)
    dev.close()

print(json.dumps({"mounts": mounts, "inside": inside, "positions": len(positions),
                  "span": span, "torn_ops": torn_ops, "resent": len(resent), "in": where,
                  "inflight_landed": inflight_landed, "drops": len(drops),
                  "records": len(stored), "last_seq": max(stored)}))
"""


def test_power_cuts_at_every_flash_op_of_appends_and_acks(mp, tmp_path):
    iterations = 160
    r = run_one(mp, POWER_CUT % {"img": str(tmp_path / "flash.img"),
                                 "iterations": iterations}, timeout=600)
    print("\nqueue power-cut test:", json.dumps(r))
    assert "error" not in r, r
    assert r["mounts"] == iterations
    assert r["inside"] >= 100, r  # at least 50 cuts inside appends/acks, with margin
    assert r["in"].get("append", 0) >= 50 and r["in"].get("ack", 0) >= 3, r
    assert r["positions"] >= 25, r  # at many different operations of a cycle
    assert r["torn_ops"].get("erase", 0) >= 1 and r["torn_ops"].get("program", 0) >= 30, r
    assert r["drops"] >= 3, r  # refills with unacked records were cut too
    assert r["resent"] >= 1, r
