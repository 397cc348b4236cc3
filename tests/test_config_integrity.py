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
