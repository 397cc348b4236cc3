"""Configuration integrity: the node and the host judge every file alike, and a damaged file
is never taken as configuration.

- One fuzz corpus (>= 10,000 mutated configuration files) judged three ways: the node
  (heatgw.config.load in the real micropython binary, in batches), the host tool
  (host_tools.config_check in CPython) and the reference: CPython's own json.loads, then
  the schema (heatgw.config.from_doc). The three verdicts must be equal for every file,
  and an accepted file must give the same configuration everywhere.
- Sealed files (heatgw.config.seal): every mutation of one is refused, on both sides.
- At boot (heatgw.config.boot): a seal mismatch runs the last good copy and says why; with
  none, the default; a file without a seal is accepted with a warning; the last good copy
  is written only when it changes, by a rename that a power cut cannot tear.
"""

import json
import random
import struct
import sys

import pytest

from host_tools import config_check, mpinfo
from host_tools.paths import FIRMWARE, REPO

if str(FIRMWARE) not in sys.path:
    sys.path.insert(0, str(FIRMWARE))

from heatgw import config, strictjson  # noqa: E402

SEED = 20261207
N_PLAIN = 12000  # mutated files without a seal: the parsers' verdicts
N_SEALED = 2400  # mutated sealed files: every one refused
BATCHES = 4

MP_JUDGE = r"""
import json, sys
from heatgw import config
with open(LIST) as f:
    paths = f.read().split()
for p in paths:
    cfg, errs, src, mig = config.load(p, save=False)
    if src == "file":
        print("1 " + config.dumps(cfg))
    else:
        print("0 " + json.dumps(errs[0] if errs else "?"))
"""


def _doc_with_mqtt():
    doc = json.loads((REPO / "scenarios" / "default_config.json").read_text())
    doc["node_id"] = "gw-07"
    doc["mqtt"] = {"host": "10.0.0.5", "port": 1883, "site": "plant", "username": "gw07",
                   "keepalive_s": 60, "clean_session": False, "ha_discovery_prefix": None}
    doc["telemetry"] = {"interval_s": 10, "queue_capacity": 512}
    return doc


def bases():
    """Configuration files as they are met in the field: the shipped example (by hand),
    the same in other layouts, and as the node and provisioning write them."""
    shipped = (REPO / "scenarios" / "default_config.json").read_bytes()
    doc = _doc_with_mqtt()
    return [shipped,
            json.dumps(doc, indent=2).encode(),
            json.dumps(doc, separators=(",", ":")).encode(),
            json.dumps(doc, indent="\t", sort_keys=True).encode(),
            config.text(doc).encode()]


_SIGNIFICANT = b' \n\t,,,::{}[]""\\.-+0123456789eE'


def mutate(rng, data):
    """1-3 random edits: a bit flip, a random or a JSON-significant byte replaced, a byte
    deleted, inserted or doubled, a comma dropped, a digit changed or added."""
    b = bytearray(data)
    for _ in range(rng.choice((1, 1, 1, 2, 3))):
        op = rng.randrange(9)
        i = rng.randrange(len(b))
        if op == 0:
            b[i] ^= 1 << rng.randrange(8)
        elif op == 1:
            b[i] = rng.randrange(256)
        elif op == 2:
            b[i] = rng.choice(_SIGNIFICANT)
        elif op == 3:
            del b[i]
        elif op == 4:
            b.insert(i, rng.choice(_SIGNIFICANT))
        elif op == 5:
            b.insert(i, b[i])
        elif op in (6, 7, 8):
            want = b"," if op == 6 else b"0123456789"
            where = [k for k, c in enumerate(b) if c in want]
            if not where:
                continue
            k = rng.choice(where)
            if op == 6:
                del b[k]
            elif op == 7:
                b[k] = rng.choice(b"0123456789")
            else:
                b.insert(k + 1, rng.choice(b"0123456789"))
    return bytes(b)


def corpus(n, sealed, seed):
    rng = random.Random(seed)
    srcs = bases()
    if sealed:
        srcs = [config.seal(s) for s in srcs]
    out = []
    while len(out) < n:
        src = rng.choice(srcs)
        m = mutate(rng, src)
        if m != src:
            out.append(m)
    return out


def reference(raw, path):
    """CPython's verdict, independent of heatgw.strictjson: CPython's json.loads, then the
    schema (and the seal for a file that carries one). The configuration, or None."""
    if raw[:3] == b"\xef\xbb\xbf":
        raw = raw[3:]
    if len(raw) > config.MAX_BYTES:
        return None
    sealed = config.unseal(raw)
    if sealed is not True and sealed is not False:
        return None
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeError, ValueError, RecursionError):
        return None
    if sealed:
        doc.pop("sha256")
    cfg, _errors, source, _mig = config.from_doc(doc, path, save=False)
    return cfg if source == "file" else None


def _f32(x):
    return struct.unpack("f", struct.pack("f", x))[0]


def same_values(a, b, single):
    """a == b, floats compared as the binary stores them (single precision there)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return sorted(a) == sorted(b) and all(same_values(a[k], b[k], single) for k in a)
    if isinstance(a, float) or isinstance(b, float):
        if type(a) is not type(b):
            return False
        return _f32(a) == _f32(b) if single else a == b
    return type(a) is type(b) and a == b


def judge_on_device(mp, paths, tmp_path):
    """The node's verdicts: one micropython process per batch, never one per file."""
    out = []
    size = (len(paths) + BATCHES - 1) // BATCHES
    for b in range(BATCHES):
        chunk = paths[b * size:(b + 1) * size]
        listing = tmp_path / f"batch{b}.txt"
        listing.write_text("\n".join(chunk))
        text = mp.run_code(f"LIST = {str(listing)!r}\n" + MP_JUDGE, timeout=900)
        lines = text.splitlines()
        assert len(lines) == len(chunk), (b, len(lines), lines[-3:])
        out += lines
    return out


def _write_corpus(d, files):
    d.mkdir()
    paths = []
    for i, data in enumerate(files):
        p = d / f"{i:05d}.json"
        p.write_bytes(data)
        paths.append(str(p))
    return paths


@pytest.fixture(scope="module")
def judged(mp, tmp_path_factory):
    """{"plain"|"sealed": [(raw, device line, host verdict, reference cfg), ...]}"""
    tmp = tmp_path_factory.mktemp("corpus")
    out = {}
    for name, n, sealed in (("plain", N_PLAIN, False), ("sealed", N_SEALED, True)):
        files = corpus(n, sealed, SEED + sealed)
        paths = _write_corpus(tmp / name, files)
        dev = judge_on_device(mp, paths, tmp)
        rows = []
        for raw, path, line in zip(files, paths, dev, strict=True):
            host = config_check.check(path)[0]
            rows.append((raw, line, host, reference(raw, path)))
        out[name] = rows
    return out


def test_fuzz_corpus_node_host_and_cpython_agree_on_every_file(judged):
    rows = judged["plain"]
    assert len(rows) >= 10000
    single = mpinfo.float_bits() == 32
    disagree = []
    accepted = 0
    for raw, line, host, ref in rows:
        dev_ok = line.startswith("1 ")
        if dev_ok != (ref is not None) or (host is not None) != (ref is not None):
            disagree.append((raw, line[:160], host is not None, ref is not None))
            continue
        if ref is not None:
            accepted += 1
            dev_cfg = json.loads(line[2:])
            assert same_values(dev_cfg, json.loads(json.dumps(ref)), single), raw
            assert host == ref, raw
    assert not disagree, f"{len(disagree)} of {len(rows)} files judged differently: " + \
        "\n".join(repr(d) for d in disagree[:5])
    # the corpus means something: both verdicts are frequent, and the known lenient cases
    # (a comma dropped or doubled) are in it and refused
    assert 300 < accepted < len(rows) - 3000, accepted
    print(f"fuzz corpus: {len(rows)} files, {accepted} valid, {len(rows) - accepted} refused "
          "by the node, the host tool and CPython alike")


def test_every_mutation_of_a_sealed_file_is_refused_on_both(judged):
    rows = judged["sealed"]
    assert len(rows) >= 2000
    for raw, line, host, ref in rows:
        assert line.startswith("0 "), (raw[:120], line)
        assert host is None and ref is None, raw[:120]
    why = {json.loads(line[2:]).split(": ", 1)[1].split(" (")[0].split(":")[0]
           for _, line, _, _ in rows}
    assert "integrity check failed" in why, why


def test_a_comma_flipped_to_a_digit_is_refused_not_a_new_threshold(mp, tmp_path):
    # the field case: "sink_return_max_c": 40.0, -> 40.05 (the comma became a 5); before
    # heatgw.strictjson the node read 40.05 and the next key as if the comma were there
    shipped = (REPO / "scenarios" / "default_config.json").read_text()
    assert '"sink_return_max_c": 40.0, ' in shipped
    flipped = shipped.replace('"sink_return_max_c": 40.0, ', '"sink_return_max_c": 40.05 ')
    (tmp_path / "flipped.json").write_text(flipped)
    (tmp_path / "doubled.json").write_text(shipped.replace('"tick_ms": 1000,',
                                                           '"tick_ms": 1000,,'))
    names = ["flipped.json", "doubled.json"]
    code = (f"import os\nos.chdir({str(tmp_path)!r})\nfrom heatgw import config\n"
            f"for n in {names!r}:\n    print(config.load(n, save=False)[1][0])\n")
    got = mp.run_code(code).splitlines()
    assert got == ["flipped.json: not valid JSON (line 19 column 30: expected ',' or '}')",
                   "doubled.json: not valid JSON (line 18 column 19: expected a key in "
                   "double quotes)"]
    for n, want in zip(names, got, strict=True):
        assert config.load(str(tmp_path / n))[1] == [str(tmp_path / want)]


# -- strictjson on its own -------------------------------------------------------------

CASES = [
    (b"[1 2,,3]", "line 1 column 4: expected ',' or ']'"),
    (b'{"a": 1,}', "line 1 column 9: expected a key in double quotes"),
    (b"[1,]", "line 1 column 4: expected a value"),
    (b"01", "line 1 column 2: extra data after the JSON value"),
    (b"1.", "line 1 column 3: expected a digit"),
    (b".5", "line 1 column 1: expected a value"),
    (b"1e", "line 1 column 3: expected a digit"),
    (b"-", "line 1 column 2: expected a digit"),
    (b'"\\x"', "line 1 column 2: invalid escape in a string"),
    (b'"\\u12"', "line 1 column 2: \\u needs 4 hex digits"),
    (b'"a\tb"', "line 1 column 3: control character in a string (write it as an escape)"),
    (b'"\xed\xa0\x80"', "line 1 column 3: invalid UTF-8"),  # a surrogate, UTF-8 encoded
    (b'"\xc0\x80"', "line 1 column 2: invalid UTF-8"),  # overlong NUL
    (b'"\xf4\x90\x80\x80"', "line 1 column 3: invalid UTF-8"),  # above U+10FFFF
    (b'"\xe2\x82"', "line 1 column 4: invalid UTF-8"),  # cut short
    (b"NaN", "line 1 column 1: NaN and Infinity are not finite numbers"),
    (b"[-Infinity]", "line 1 column 2: NaN and Infinity are not finite numbers"),
    (b"tru", "line 1 column 1: expected a value"),
    (b"\x0c1", "line 1 column 1: expected a value"),
    (b"{\n  \"a\": 1\n  \"b\": 2}", "line 3 column 3: expected ',' or '}'"),
    (b"[" * 17 + b"]" * 17, "line 1 column 17: nested deeper than 16"),
    (b"", "line 1 column 1: expected a value"),
]
GOOD = [b"0", b"-0.5e+3", b"1E-2", b' {"a" : [ true , false , null ] } ', b'"\\/\\b\\f"',
        b'"\\ud800"', b'"\\ud83d\\ude00"', '"é€😀"'.encode(), b"[" * 16 + b"]" * 16,
        b'"\x7f"', b'{"a": 1, "a": 2}']


# the value as hex of the binary's JSON text of it: a lone surrogate is no valid UTF-8
MP_CHECK = r"""
import binascii, json
from heatgw import strictjson

def fin(v):  # a float beyond single precision is inf there: JSON has no word for it
    if type(v) is float and (v != v or v - v != 0):
        return "<%r>" % v
    if type(v) is list:
        return [fin(x) for x in v]
    if type(v) is dict:
        return {k: fin(v[k]) for k in v}
    return v

for t in TEXTS:
    e, p = strictjson.check(t)
    v = None
    if e is None:
        v = fin(json.loads(strictjson.join_pairs(t) if p else t))
        v = binascii.hexlify(json.dumps(v))
    print(json.dumps([e, p, v]))
"""


def _as_binary(v, single):
    """v as the binary under test holds it: floats rounded to single precision there
    (too large: inf), a non-finite float as the marker MP_CHECK writes."""
    if isinstance(v, float):
        if single:
            try:
                v = _f32(v)
            except OverflowError:
                v = float("inf") if v > 0 else float("-inf")
        return v if v - v == 0 else f"<{v!r}>"
    if isinstance(v, list):
        return [_as_binary(x, single) for x in v]
    if isinstance(v, dict):
        return {k: _as_binary(v[k], single) for k in v}
    return v


def _check_on_device(mp, texts):
    out = []
    single = mpinfo.float_bits() == 32
    for e, p, v in mp.run_json(f"TEXTS = {texts!r}\n" + MP_CHECK):
        if v is not None:
            v = _as_binary(json.loads(bytes.fromhex(v).decode("utf-8", "surrogatepass")),
                           single)
        out.append((e, p, v))
    return out


def test_strictjson_refuses_what_cpython_refuses_with_the_position(mp):
    texts = [t for t, _ in CASES] + GOOD
    got = _check_on_device(mp, texts)
    for (t, want), (e, _p, _v) in zip(CASES, got[:len(CASES)], strict=True):
        assert e == want and strictjson.check(t) == (want, 0), t
        if "nested deeper" in want:  # CPython reads it; no configuration nests that deep
            continue
        with pytest.raises((ValueError, RecursionError)):
            json.loads(t.decode("utf-8"), parse_constant=_no_constants)
    for t, (e, _p, v) in zip(GOOD, got[len(CASES):], strict=True):
        assert e is None and strictjson.check(t)[0] is None, t
        # what the binary's json then reads is CPython's value
        assert v == _as_binary(json.loads(t.decode()), mpinfo.float_bits() == 32), t
    # an escaped pair is one character, as CPython reads it (MicroPython's json alone: 2)
    assert got[len(CASES) + GOOD.index(b'"\\ud83d\\ude00"')] == (None, 1, "\U0001f600")


def _no_constants(c):
    raise ValueError(c)


def test_strictjson_agrees_with_cpython_on_mutated_json(mp):
    # generic JSON (escapes, non-ASCII, numbers) mutated; the node's check == CPython's json
    rng = random.Random(SEED)
    seeds = [b'{"k\\u00e9y": ["x\\ud83d\\ude00y", -0.5e+3, 0, true, null, {"a": []}]}',
             '{"name": "Wärme €", "t": [1.5E-2, -12, 3e4]}'.encode(), b'[1, 2, "\\n\\t\\""]']
    texts = []
    while len(texts) < 3000:
        t = mutate(rng, rng.choice(seeds))
        texts.append(t)
    got = _check_on_device(mp, texts)
    for t, (e, _p, v) in zip(texts, got, strict=True):
        try:
            want = json.loads(t.decode("utf-8"), parse_constant=_no_constants)
        except (UnicodeError, ValueError, RecursionError):
            want = e  # any error string
            assert e is not None, t
            continue
        assert e is None and v == _as_binary(want, mpinfo.float_bits() == 32), (t, e)


# -- at boot: a damaged file runs the last good one and says why -------------------------

MP_BOOT = r"""
import json, os, vfs
from flashdev import FlashDev, mount
from heatgw import config

dev = FlashDev(T + "/boot.img", 4096, 16)
mount(dev, "/fl")
P = "/fl/config.json"


def put(name, data):
    with open("/fl/" + name, "wb") as f:
        f.write(data)


def read(name):
    try:
        with open("/fl/" + name, "rb") as f:
            return f.read().decode()
    except OSError:
        return None


def boot(step):
    ops = dev.ops
    cfg, errors, source, events = config.boot(P)
    print(json.dumps({"step": step, "source": source, "errors": errors, "events": events,
                      "max_c": cfg["control"]["sink_return_max_c"], "flash_ops": dev.ops - ops,
                      "good": read("config.json.good"), "files": sorted(os.listdir("/fl"))}))


put("config.json", SEALED_40)
boot("sealed")              # runs it; keeps it as the last good copy
boot("again")               # nothing changed: nothing written
put("config.json", FLIPPED)
boot("flipped")             # the seal does not match: the last good one runs
put("config.json", SEALED_42)
boot("new_sealed")          # runs, and becomes the last good copy
put("config.json", HAND_41)
boot("hand")                # no seal: accepted with a warning, kept sealed
put("config.json", HAND_BAD)
boot("hand_bad")            # invalid: the last good (the hand-edited one, sealed) runs
os.remove("/fl/config.json.good")
boot("no_good")             # refused, and no last good copy: the default
os.remove("/fl/config.json")
put("config.json.good", SEALED_42)
boot("missing")             # no config.json: the default (the copy is no configuration)
"""


def _shipped(max_c):
    return (REPO / "scenarios" / "default_config.json").read_text().replace(
        '"sink_return_max_c": 40.0', f'"sink_return_max_c": {max_c}')


def test_a_damaged_file_runs_the_last_good_one_and_says_why(mp, tmp_path):
    sealed_40 = config.seal(_shipped("40.0"))
    flipped = sealed_40.replace(b'"sink_return_max_c": 40.0', b'"sink_return_max_c": 48.0')
    assert len(flipped) == len(sealed_40) and flipped != sealed_40
    hand_bad = _shipped("41.0").replace('"tick_ms": 1000', '"tick_ms": 5000')
    src = (f"T = {str(tmp_path)!r}\nSEALED_40 = {sealed_40!r}\nFLIPPED = {flipped!r}\n"
           f"SEALED_42 = {config.seal(_shipped('42.0'))!r}\n"
           f"HAND_41 = {_shipped('41.0').encode()!r}\nHAND_BAD = {hand_bad.encode()!r}\n"
           + MP_BOOT)
    r = {x["step"]: x for x in mp.run_json(src, board="host")}
    mismatch = ("/fl/config.json: integrity check failed: the file changed after it was "
                "written (damaged, or edited without deleting its first line, the seal)")
    assert (r["sealed"]["source"], r["sealed"]["max_c"], r["sealed"]["events"]) == \
        ("file", 40.0, [])
    assert r["sealed"]["good"] == sealed_40.decode()
    assert r["again"]["flash_ops"] == 0  # a boot that changes nothing writes nothing
    f = r["flipped"]
    assert (f["source"], f["errors"], f["max_c"]) == ("last_good", [mismatch], 40.0)
    assert f["good"] == sealed_40.decode()  # the last good copy is never overwritten by it
    assert (r["new_sealed"]["source"], r["new_sealed"]["max_c"]) == ("file", 42.0)
    assert r["new_sealed"]["good"] == config.seal(_shipped("42.0")).decode()
    h = r["hand"]
    assert (h["source"], h["max_c"]) == ("file", 41.0)
    assert h["events"] == [{"kind": "config", "integrity": "none", "file": "/fl/config.json",
                            "note": "no seal (edited by hand?): accepted; `config save` "
                                    "seals it"}]
    assert h["good"] == config.seal(_shipped("41.0")).decode()  # kept sealed
    b = r["hand_bad"]
    assert (b["source"], b["max_c"]) == ("last_good", 41.0)
    assert b["errors"] == ["control.tick_ms: 5000 is above the maximum 1000 ms"]
    n = r["no_good"]
    assert (n["source"], n["errors"], n["max_c"]) == ("default", b["errors"], 45.0)
    m = r["missing"]
    assert (m["source"], m["errors"]) == ("default", ["/fl/config.json: not found"])
    for x in r.values():  # never a temporary file left behind
        assert not [name for name in x["files"] if name.endswith(".new")], x


def test_the_node_says_why_on_its_console_in_its_boot_event_and_as_an_alarm(tmp_path):
    from heatgw.alarms import AlarmBook

    from host_tools.benchnode import BenchNode
    from tests.test_serial_port import terminal

    good = config.seal(_shipped("40.0"))
    damaged = good.replace(b'"sink_return_max_c": 40.0', b'"sink_return_max_c": 48.0')
    with BenchNode(tmp_path, files={"config.json": damaged, "config.json.good": good},
                   trace=True) as node:
        t = terminal(node.port.path)
        t.expect(b'"kind": "boot"[^\r]*\r\n', timeout=60)
        text = (t.before + t.after).decode()
        t.close()
    lines = text.replace("\r\n", "\n").splitlines()
    assert "config: /flash/config.json: integrity check failed: the file changed after it " \
           "was written (damaged, or edited without deleting its first line, the seal)" \
           in lines, text
    assert "config: config.json refused: running the last good configuration " \
           "(config.json.good)" in lines
    boot = json.loads([x for x in lines if '"kind": "boot"' in x][0][len("event: "):])
    assert boot["config"] == "last_good" and boot["errors"][0].startswith(
        "/flash/config.json: integrity check failed")
    # the alarm model (what telemetry publishes and the console's alarms show)
    book = AlarmBook(16)
    book.feed("event", boot)
    a = book.get("config_refused")
    assert a is not None and a.severity == "major" and a.source == "config" and a.active
    assert a.detail == "integrity check failed: the file changed"  # 40 characters
    assert book.get("no_config") is None  # configured: the last good one runs


# -- power cuts while writing: the old file or the new one, whole ----------------------

MP_SAVE_CUT = r"""
import json, os
from flashdev import FlashDev, mount
from heatgw import cfgedit, config
import vfs

GEOMETRY = (4096, 16)
buf = bytearray(4096)


def copy(src, dst):
    with open(src, "rb") as a, open(dst, "wb") as b:
        while True:
            n = a.readinto(buf)
            if not n:
                break
            b.write(buf[:n])


def boot(img):
    dev = FlashDev(img, *GEOMETRY)
    mount(dev, "/fl")
    return dev


def off(dev):
    vfs.umount("/fl")
    dev.close()


P = "/fl/config.json"
base = T + "/base.img"
dev = boot(base)
with open(P, "wb") as f:
    f.write(OLD)
running = config.boot(P)[0]  # also writes the last good copy
off(dev)


def save(dev):
    data, errs = cfgedit.prepare(P, running, [["control.sink_return_max_c", 43.0]])
    return cfgedit.commit(P, data)


copy(base, T + "/dry.img")
dev = boot(T + "/dry.img")
ops = dev.ops
print(json.dumps(["dry", save(dev), dev.ops - ops]))
total = dev.ops - ops
off(dev)
for torn in (0, 5):
    for k in range(1, total + 2):  # total + 1: the power goes just after the save
        img = T + "/cut.img"
        copy(base, img)
        dev = boot(img)
        dev.arm_cut(k, torn)
        try:
            save(dev)
        except Exception as e:  # the cut itself may surface as an error: it is a cut
            pass
        off(dev)
        dev = boot(img)  # after the power comes back
        cfg, errors, source, events = config.boot(P)
        print(json.dumps([torn, k, source, errors, cfg["control"]["sink_return_max_c"],
                          events, sorted(os.listdir("/fl"))]))
        off(dev)
"""


def test_a_power_cut_during_a_save_leaves_the_old_file_or_the_new_one(mp, tmp_path):
    old = config.seal(_shipped("40.0"))
    out = mp.run_json(f"T = {str(tmp_path)!r}\nOLD = {old!r}\n" + MP_SAVE_CUT, board="host")
    dry, cuts = out[0], out[1:]
    assert dry[1] == [True, None] and dry[2] >= 3, dry
    assert len(cuts) == 2 * (dry[2] + 1)
    seen = set()
    for torn, k, source, errors, max_c, events, names in cuts:
        case = (torn, k)
        # whatever the operation the power went at: the node boots a sealed file of its
        # own, the old one or the new one, never a torn one and never the fallback
        assert (source, errors, events) == ("file", [], []), case
        assert max_c in (40.0, 43.0), case
        seen.add(max_c)
        assert "config.json" in names and "config.json.good" in names, case
    assert seen == {40.0, 43.0}  # before the rename's commit: old; after it: new


MP_GOOD_CUT = MP_SAVE_CUT.split("P = \"/fl/config.json\"")[0] + r"""
P = "/fl/config.json"
base = T + "/base.img"
dev = boot(base)
for name, data in (("config.json", NEW), ("config.json.good", OLD)):
    with open("/fl/" + name, "wb") as f:
        f.write(data)
off(dev)
copy(base, T + "/dry.img")
dev = boot(T + "/dry.img")
ops = dev.ops
config.boot(P)  # config.json changed since the last good copy: the copy is rewritten
total = dev.ops - ops
off(dev)
print(json.dumps(["dry", total]))
for torn in (0, 5):
    for k in range(1, total + 2):
        img = T + "/cut.img"
        copy(base, img)
        dev = boot(img)
        dev.arm_cut(k, torn)
        first = config.boot(P)[2]
        off(dev)
        dev = boot(img)
        with open(P + ".good", "rb") as f:
            good = f.read()
        cfg, errors, source, events = config.boot(P)
        print(json.dumps([torn, k, first, source, cfg["control"]["sink_return_max_c"],
                          good.decode(), sorted(os.listdir("/fl"))]))
        off(dev)
"""


def test_a_power_cut_while_the_last_good_copy_is_written_loses_nothing(mp, tmp_path):
    old, new = config.seal(_shipped("40.0")), config.seal(_shipped("42.0"))
    out = mp.run_json(f"T = {str(tmp_path)!r}\nOLD = {old!r}\nNEW = {new!r}\n" + MP_GOOD_CUT,
                      board="host")
    total = out[0][1]
    assert total >= 3 and len(out) == 1 + 2 * (total + 1)
    goods = set()
    for torn, k, first, source, max_c, good, names in out[1:]:
        assert (first, source, max_c) == ("file", "file", 42.0), (torn, k)
        assert good in (old.decode(), new.decode()), (torn, k)  # whole, either one
        goods.add(good)
        assert names == ["config.json", "config.json.good"], (torn, k, names)
    assert goods == {old.decode(), new.decode()}


# -- secrets.json: sealed by its writers, read as strictly ------------------------------

MP_SECRETS = r"""
import json, os
from heatgw import secrets
for name in NAMES:
    try:
        s = secrets.load(DIR + "/" + name)
        print(json.dumps([name, s.names(), None]))
    except secrets.SecretsError as e:
        print(json.dumps([name, None, str(e)]))
"""


def test_secrets_file_is_sealed_checked_and_read_strictly_on_both(mp, tmp_path):
    from heatgw import secrets

    pw = "Pa55-w0rd-never-shown"
    secrets.save(str(tmp_path / "sealed.json"), {"mqtt_password": pw, "wifi_ssid": "net"})
    sealed = (tmp_path / "sealed.json").read_bytes()
    assert seal_check(sealed) is True
    (tmp_path / "flipped.json").write_bytes(sealed.replace(pw.encode(), pw[::-1].encode()))
    (tmp_path / "hand.json").write_text(json.dumps({"version": 1, "mqtt_password": pw}))
    (tmp_path / "lenient.json").write_text('{"version": 1 "mqtt_password": "' + pw + '"}')
    names = ["sealed.json", "flipped.json", "hand.json", "lenient.json"]
    got = mp.run_json(f"DIR = {str(tmp_path)!r}\nNAMES = {names!r}\n" + MP_SECRETS)
    want = [["sealed.json", ["mqtt_password", "wifi_ssid"], None],
            ["flipped.json", None, f"{tmp_path}/flipped.json: integrity check failed: the "
             "file changed after it was written (damaged, or edited without deleting its "
             "first line, the seal)"],
            ["hand.json", ["mqtt_password"], None],
            ["lenient.json", None, f"{tmp_path}/lenient.json: not valid JSON"]]
    assert got == want
    for name, names_, err in want:  # CPython alike
        try:
            assert secrets.load(str(tmp_path / name)).names() == names_
        except secrets.SecretsError as e:
            assert str(e) == err
    assert pw not in json.dumps(got)


def seal_check(raw):
    from heatgw import seal

    return seal.check(raw)


def test_config_and_cfgfile_agree_on_their_constants():
    from heatgw import cfgfile

    assert (config.MAX_BYTES, config.GOOD) == (cfgfile.MAX_BYTES, cfgfile.GOOD)
