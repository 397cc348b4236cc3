"""Heap of the configuration code that runs on the node, from .mpy and from a ROMFS image,
on the binary under test: each new module's import cost, and the free heap each path
needs (the boot-time load with its strict JSON and seal check; a console `config save`
and an MQTT config_set with the application's running configuration resident).

"Needs" is measured, not estimated: the path runs in a process whose heap was filled up
to leave exactly N bytes free (one block, so what is left is contiguous), and N is
bisected to the smallest that works (to 64 bytes). That is the path's peak, including the
fragmentation it causes. README "Configuration integrity" has the figures.
"""

import json
import sys

import pytest

from host_tools import gen_config_parts, heapbudget, mpinfo, romfs
from host_tools.build_mpy import build as build_mpy
from host_tools.paths import FIRMWARE, REPO

if str(FIRMWARE) not in sys.path:
    sys.path.insert(0, str(FIRMWARE))

from heatgw import cfgfile, config  # noqa: E402

NEW = ("heatgw.strictjson", "heatgw.seal", "heatgw.cfgfile", "heatgw.config_parts",
       "heatgw.cfgedit", "heatgw.con_config")

SETUP = r"""
import gc, json, sys, vfs
if IMG:
    with open(IMG, "rb") as f:
        img = f.read()  # in RAM on the host; a board maps its ROM partition instead
    vfs.mount(vfs.VfsRom(img), "/rom")
    sys.path.insert(0, "/rom")
import heatgw, heatgw.start  # resident on a node (main.py imports start)
RUNNING = json.loads(RUNNING_TEXT)  # the running configuration: resident on a node
del RUNNING_TEXT
P = DIR + "/config.json"
"""

OPS = {
    # main.py's first step: config.json (sealed), strict JSON, the schema, the last good
    # copy compared (and written when it changed)
    "boot": "r = heatgw.start.load_config(P, 1500)\nok = r[2] == 'file'",
    # the console's `config save` and the MQTT config_set: the key, the whole
    # configuration validated, sealed, written, read back
    "save": ("from heatgw import cfgedit\n"
             "data, e = cfgedit.prepare(P, RUNNING, [['control.sink_return_max_c', 41.5]], "
             "1500)\nok = data is not None and cfgedit.commit(P, data)[1] is None"),
    "config_set": ("from heatgw import cfgedit\n"
                   "ok = cfgedit.set_one(P, RUNNING, 'control.recover_s', 90, 1500)[0]"),
    # the same save with the whole schema in RAM (heatgw.config_schema), as it would be
    # without heatgw.config_parts: what validating in pieces saves
    "whole_schema": ("from heatgw import cfgfile, schema\n"
                     "from heatgw.config_schema import SCHEMA\n"
                     "raw, e = cfgfile.read(P)\ndoc = cfgfile.parse(raw, P)[0]\nraw = None\n"
                     "doc['control']['sink_return_max_c'] = 41.5\n"
                     "cfg, errs = schema.validate(doc, SCHEMA)\ncfg = None\n"
                     "data = cfgfile.seal(cfgfile.text(doc))\ncfgfile.write(P, data)\n"
                     "ok = not errs"),
}

TRY = r"""
gc.collect()
free = gc.mem_free()
hog = bytearray(free - N - 64) if free - N - 64 > 0 else None
gc.collect()
left = gc.mem_free()
ok = False
try:
%s
except MemoryError:
    ok = False
hog = None
print("RESULT", json.dumps([ok, left]))
"""


def _cfg_text():
    doc = json.loads((REPO / "scenarios" / "default_config.json").read_text())
    doc["mqtt"] = {"host": "10.0.0.5", "site": "plant", "username": "gw"}
    return cfgfile.seal(cfgfile.text(doc)), config.from_doc(doc, "c", save=False)[0]


def _run(mp, img, extra, d, code):
    out = mp.run_code(code, extra_path=extra, timeout=120, check=False)
    lines = [x for x in out.splitlines() if x.startswith("RESULT ")]
    return json.loads(lines[-1][7:]) if lines else [False, None]


def needs(mp, tmp_path, op, img, extra):
    """The smallest free heap (bytes, to 64) in which the op succeeds."""
    sealed, running = _cfg_text()
    d = tmp_path / f"{op}-{'rom' if img else 'mpy'}"
    d.mkdir()
    head = (f"IMG = {str(img) if img else ''!r}\nDIR = {str(d)!r}\n"
            f"RUNNING_TEXT = {json.dumps(running)!r}\n" + SETUP)
    body = "\n".join("    " + x for x in OPS[op].splitlines())

    def works(n):
        (d / "config.json").write_bytes(sealed)
        for extra_file in d.glob("config.json.*"):
            extra_file.unlink()
        if op == "boot":  # a last good copy that differs: the boot writes it
            (d / "config.json.good").write_bytes(sealed.replace(b'"version"', b'"version"'))
        return _run(mp, img, extra, d, head + f"N = {n}\n" + TRY % body)[0]

    lo, hi = 0, 96 * 1024
    assert works(hi), (op, img)
    while hi - lo > 64:
        mid = (lo + hi) // 2
        if works(mid):
            hi = mid
        else:
            lo = mid
    return hi


IMPORT = r"""
import gc, json, sys, vfs
if IMG:
    with open(IMG, "rb") as f:
        img = f.read()
    vfs.mount(vfs.VfsRom(img), "/rom")
    sys.path.insert(0, "/rom")
for name in PRE:
    __import__(name)
gc.collect()
a = gc.mem_alloc()
__import__(MOD)
gc.collect()
print("RESULT", json.dumps([gc.mem_alloc() - a, str(sys.modules[MOD])]))
"""

DEPS = {"heatgw.strictjson": (), "heatgw.seal": (), "heatgw.cfgfile": ("heatgw.seal",),
        "heatgw.config_parts": (),
        "heatgw.cfgedit": ("heatgw.cfgfile", "heatgw.config_parts", "heatgw.schema",
                           "heatgw.seal", "heatgw.start"),
        "heatgw.con_config": ()}


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    assert build_mpy(["host"])
    rb = romfs.host_romfs(tmp_path_factory.mktemp("romfs"))
    mpy = heapbudget.build_mpy_for_binary()
    return {"mpy": (None, [str(mpy)]), "romfs": (rb.image, [str(p) for p in rb.path_dirs])}


def test_import_cost_of_each_new_module(mp, images, capsys):
    rows = {}
    for how, (img, extra) in images.items():
        for mod in NEW:
            code = (f"IMG = {str(img) if img else ''!r}\nPRE = {list(DEPS[mod])!r}\n"
                    f"MOD = {mod!r}\n" + IMPORT)
            out = mp.run_code(code, extra_path=extra)
            cost, where = json.loads(out.split("RESULT ", 1)[1])
            assert ("/rom/" in where) == (how == "romfs"), where
            rows[(mod, how)] = cost
    with capsys.disabled():
        print(f"\nimport cost, {mpinfo.word_bits()}-bit binary (own, deps loaded first):")
        for mod in NEW:
            print(f"  {mod:20s} .mpy {rows[(mod, 'mpy')]:6d} B   ROMFS "
                  f"{rows[(mod, 'romfs')]:6d} B")
    # small on purpose: loaded on demand, dropped after; the pieces of the schema cost
    # half of config_schema (measured 17 KB from ROMFS, 23 KB from .mpy, 64-bit host)
    kb = mpinfo.heap_kb
    for mod in NEW:
        assert rows[(mod, "romfs")] <= rows[(mod, "mpy")]
    assert rows[("heatgw.strictjson", "mpy")] < kb(6) * 1024
    assert rows[("heatgw.seal", "mpy")] < kb(3) * 1024
    assert rows[("heatgw.config_parts", "romfs")] < kb(10) * 1024


def test_free_heap_each_path_needs(mp, images, tmp_path, capsys):
    got = {}
    for how, (img, extra) in images.items():
        for op in OPS:
            got[(op, how)] = needs(mp, tmp_path, op, img, extra)
    with capsys.disabled():
        print(f"\nfree heap needed, {mpinfo.word_bits()}-bit binary (to 64 B):")
        for op in OPS:
            print(f"  {op:12s} .mpy {got[(op, 'mpy')] / 1024:5.1f} KB   ROMFS "
                  f"{got[(op, 'romfs')] / 1024:5.1f} KB")
    # the bounds these figures are held to (64-bit host figures, scaled to the binary:
    # mpinfo.heap_kb, 0.69 on a 32-bit one)
    kb = mpinfo.heap_kb
    for op in OPS:
        assert got[(op, "romfs")] <= got[(op, "mpy")] + 256, op
    # boot from .mpy: 62.3 KB before the bms section's stub and control.sink_sources
    # (their schema, measured +2.3 KB), 64.6 KB with them
    assert got[("boot", "mpy")] < kb(66) * 1024
    assert got[("save", "romfs")] < kb(36) * 1024
    assert got[("config_set", "romfs")] < kb(38) * 1024
    # the running node's path never loads the whole schema: from ROMFS (and frozen, where
    # the sections' constants stay in flash too) validating in pieces needs clearly less
    # than the same save with config_schema in RAM; from .mpy files every constant of
    # config_parts is loaded at import, and it is no better (no worse either)
    assert got[("save", "romfs")] < 0.85 * got[("whole_schema", "romfs")]
    assert got[("save", "mpy")] < got[("whole_schema", "mpy")] + 1024


# -- heatgw.config_parts: generated from config_schema.py, and the same data ------------

def test_config_parts_is_a_fresh_generation():
    want = gen_config_parts.generate()
    assert gen_config_parts.OUT.read_text() == want, (
        "firmware/heatgw/config_parts.py differs from a fresh generation: run "
        "`.venv/bin/python -m host_tools.gen_config_parts` (never edit it by hand)")


MP_PARTS = r"""
import json
from heatgw import config_parts as P
from heatgw.config_schema import SCHEMA


def lean(v):  # config_schema without the docs no error message quotes
    if type(v) is dict:
        out = {k: lean(v[k]) for k in v}
        if "doc" in out and not (v.get("req") or v.get("chars")):
            del out["doc"]
        return out
    if type(v) is list:
        return [lean(x) for x in v]
    return v


root = {k: SCHEMA[k] for k in SCHEMA if k not in ("keys", "rules")}
print(json.dumps([sorted(SCHEMA["keys"]) == list(P.NAMES), root == P.ROOT,
                  P.rules() == SCHEMA["rules"]] +
                 [[k, P.SECTIONS[k]() == lean(SCHEMA["keys"][k])] for k in P.NAMES]))
"""

MP_SAME = r"""
import json
from heatgw import cfgedit, config
same = n = 0
with open(DOCS) as f:
    for line in f:  # one document a line: the binary's heap holds one at a time
        d = json.loads(line)
        cfg, errs, src, _ = config.from_doc(json.loads(line), "c", save=False)
        got = cfgedit.validate_doc(d)
        ok = (src == "file") == (not got[1]) and (src != "file" or cfg == got[0]) and \
            (src == "file" or errs == got[1] or d.get("version") != 2)
        same += ok
        if not ok:
            print("DIFF", json.dumps([d.get("version"), errs, got[1]]))
        n += 1
print(json.dumps([same, n]))
"""

MODBUS = {"buses": {"lan": {"type": "tcp", "host": "127.0.0.1", "port": 1502}},
          "meters": {"compute": {"bus": "lan", "slave": 1, "model": "sdm630",
                                 "role": "compute", "period_s": 10}}}
ANALOG = {"valve": {"channel": "ain1", "signal": "4-20mA", "output": "pwm"},
          "inputs": {"loop_pressure": {"channel": "ain2", "kind": "pressure",
                                       "signal": "4-20mA", "value_lo": 0.0, "value_hi": 6.0,
                                       "unit": "bar", "low": 1.0},
                     "tank_level": {"channel": "ain3", "kind": "level", "signal": "0-10V",
                                    "value_lo": 0.0, "value_hi": 2.0, "unit": "m",
                                    "high": 1.9, "critical": False}}}


def test_config_parts_equal_the_schema_on_the_binary_and_validate_alike(mp, tmp_path):
    # every section built by config_parts equals config_schema's (less the docs no error
    # quotes), on the binary (its own float parsing: repr's 1e-06 against the source's
    # 0.000001, single precision too)
    got = mp.run_json(MP_PARTS)[0]
    assert got[:3] == [True, True, True], got
    assert all(ok for _, ok in got[3:]), got
    # and validation in pieces gives the very same verdict, configuration and errors as
    # heatgw.config (the whole schema; the sections of Modbus, recovery and the analogue
    # inputs with their checks when a document has them),
    # for documents valid and not (the fuzz corpus' mutations parsed by CPython)
    import random

    from tests.test_config_integrity import bases, mutate

    rng = random.Random(7)
    shipped = json.loads((REPO / "scenarios" / "default_config.json").read_text())
    docs = [dict(shipped, modbus=MODBUS),  # heatgw.mbschema's section and mbplan's checks
            dict(shipped, modbus={"buses": {}, "meters": {"x": {"bus": "nope"}}}),
            # heatgw.recschema's section and checks (the compute meter found by its role)
            dict(shipped, modbus=MODBUS, recovery={"compute": {"source": "modbus"}}),
            dict(shipped, modbus=MODBUS, recovery={"compute": {"source": "mqtt"}}),
            dict(shipped, recovery={"compute": {"source": "modbus"}, "nope": 1}),
            # heatgw.anschema's section and its cross-checks
            dict(shipped, analog=ANALOG),
            dict(shipped, modbus=MODBUS, analog=ANALOG,
                 recovery={"compute": {"source": "modbus"}}),
            dict(shipped, analog=dict(ANALOG, valve={"channel": "ain2", "signal": "4-20mA"})),
            dict(shipped, analog={"inputs": {"p": {"channel": "ain9", "kind": "pressure"}}}),
            dict(shipped, analog={"valve": {"channel": "ain1", "signal": "4-20mA",
                                            "tolerance_pct": 60}})]
    while len(docs) < 600:
        try:
            d = json.loads(mutate(rng, rng.choice(bases())).decode("utf-8"))
        except (UnicodeError, ValueError):
            continue
        docs.append(d)
    (tmp_path / "docs.json").write_text("\n".join(json.dumps(d) for d in docs) + "\n")
    out = mp.run_code(f"DOCS = {str(tmp_path / 'docs.json')!r}\n" + MP_SAME)
    same, n = json.loads(out.splitlines()[-1])
    assert (same, n) == (600, 600), out  # (an older or newer version: the same verdict;
    # heatgw.config says "migrated"/"newer", the pieces "not allowed": cfgedit never
    # writes such a file, it falls back to the running configuration)
