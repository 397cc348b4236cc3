"""Configuration: heatgw.schema + heatgw.config_schema + heatgw.config, run in the real
micropython binary and in CPython (host_tools.config_check imports the same files); both
must judge every document identically."""

import copy
import json
import subprocess
import sys

import pytest

from host_tools import config_check
from host_tools.paths import FIRMWARE, REPO

if str(FIRMWARE) not in sys.path:
    sys.path.insert(0, str(FIRMWARE))

from heatgw import config, fluid, fluid_data  # noqa: E402
from heatgw.config_schema import SCHEMA  # noqa: E402
from heatgw.schema import validate  # noqa: E402


def _sensor(critical):
    return {"r0_ohm": 1000, "wires": 4, "offset_k": 0.0, "min_c": 0.0, "max_c": 120.0,
            "critical": critical}


# The full example of the interface spec.
FULL = {
    "version": 1,
    "node_id": "heatgw-01",
    "sensors": {"supply": _sensor(False), "return": _sensor(False),
                "sink_return": _sensor(True), "it_coolant": _sensor(True)},
    "flow": {"type": "pulse", "litres_per_pulse": 0.1, "max_m3h": 15.0, "critical": True},
    "meter": {"fluid": "water", "mass_fraction": 0.0, "meter_in_return": True, "cutoff_k": 0.2},
    "control": {
        "tick_ms": 1000,
        "sink_return_max_c": 45.0, "sink_return_hyst_k": 2.0,
        "it_coolant_max_c": 44.0, "it_coolant_hyst_k": 2.0,
        "sink_flow_min_m3h": 3.0, "sink_flow_hyst_m3h": 0.5,
        "sink_signal": True,
        "stale_s": 5,
        "valve_travel_s": 45,
        "valve_feedback": True,
        "recover_s": 120,
        "min_dwell_s": 600,
    },
    "persist": {"interval_s": 300},
    "supervisor": {"watchdog_ms": 5000, "stall_s": 3},
}


def with_(path, value):
    """FULL with one key set (value DEL removes it)."""
    doc = copy.deepcopy(FULL)
    *parents, last = path.split(".")
    d = doc
    for p in parents:
        d = d[p]
    if value is DEL:
        del d[last]
    else:
        d[last] = value
    return doc


DEL = object()

# (document, the error expected, exactly; a list when one mistake breaks two rules)
BAD = [
    # wrong type
    (with_("control.tick_ms", "1000"), 'control.tick_ms: expected an integer, got "1000"'),
    (with_("control.tick_ms", 500.5), "control.tick_ms: expected an integer, got 500.5"),
    (with_("sensors.supply.wires", True), "sensors.supply.wires: expected an integer, got true"),
    (with_("control.sink_signal", 1), "control.sink_signal: expected true or false, got 1"),
    (with_("control.sink_return_max_c", "45"),
     'control.sink_return_max_c: expected a number, got "45"'),
    (with_("node_id", 7), "node_id: expected a string, got 7"),
    (with_("sensors", []), "sensors: expected an object, got a list"),
    (with_("control", None), "control: expected an object, got null"),
    (with_("sensors.supply", None), "sensors.supply: expected an object, got null"),
    # out of range
    (with_("control.tick_ms", 5000), "control.tick_ms: 5000 is above the maximum 1000 ms"),
    (with_("control.tick_ms", 50), "control.tick_ms: 50 is below the minimum 100 ms"),
    (with_("supervisor.watchdog_ms", 9000),
     "supervisor.watchdog_ms: 9000 is above the maximum 8300 ms"),
    (with_("persist.interval_s", 5), "persist.interval_s: 5 is below the minimum 10 s"),
    (with_("persist.interval_s", 86401),
     "persist.interval_s: 86401 is above the maximum 86400 s"),
    (with_("sensors.it_coolant.offset_k", -6), "sensors.it_coolant.offset_k: -6 is below the "
     "minimum -5 K"),
    (with_("flow.max_m3h", 0), "flow.max_m3h: 0 is below the minimum 0.01 m3/h"),
    (with_("meter.mass_fraction", 0.7), "meter.mass_fraction: 0.7 is above the maximum 0.6 kg/kg"),
    (with_("node_id", ""), "node_id: length 0 is not 1 ... 32"),
    (with_("node_id", "a/b"), 'node_id: character "/" not allowed (node name in MQTT topics: '
     "letters, digits, - and _)"),
    # huge and non-finite numbers (json has no NaN; 1e400 parses to inf in both)
    (with_("control.tick_ms", 10**30), "control.tick_ms: a huge integer is above the maximum "
     "1000 ms"),
    (with_("control.sink_return_max_c", 10**400),
     "control.sink_return_max_c: a huge integer is above the maximum 150 C"),
    (with_("control.sink_return_max_c", float("inf")),
     "control.sink_return_max_c: inf is not a finite number"),
    (with_("sensors.supply.min_c", float("-inf")), "sensors.supply.min_c: -inf is not a finite "
     "number"),
    # unknown keys
    (with_("contrl", {}), "contrl: unknown key; expected one of control, flow, meter, node_id, "
     "persist, sensors, supervisor, version"),
    (with_("sensors.suply", _sensor(True)), "sensors.suply: unknown key; expected one of "
     "it_coolant, return, sink_return, supply"),
    (with_("control.tick_s", 1), "control.tick_s: unknown key; expected one of "
     "it_coolant_hyst_k, it_coolant_max_c, min_dwell_s, recover_s, sink_flow_hyst_m3h, "
     "sink_flow_min_m3h, sink_return_hyst_k, sink_return_max_c, sink_signal, stale_s, "
     "tick_ms, valve_feedback, valve_travel_s"),
    (with_("flow.k", 1), "flow.k: unknown key; expected one of critical, litres_per_pulse, "
     "max_m3h, type"),
    # bad enum
    (with_("meter.fluid", "glycol"), 'meter.fluid: "glycol" is not allowed; one of "water", '
     '"propylene_glycol", "ethylene_glycol"'),
    (with_("sensors.return.r0_ohm", 500),
     "sensors.return.r0_ohm: 500 is not allowed; one of 100, 1000"),
    (with_("sensors.return.wires", 5), "sensors.return.wires: 5 is not allowed; one of 2, 3, 4"),
    (with_("flow.type", "mbus"), 'flow.type: "mbus" is not allowed; one of "pulse"'),
    (with_("version", 2), "version: 2 is not allowed; one of 1"),
    # required
    (with_("version", DEL), "version: required (configuration format version)"),
    (with_("sensors.supply.r0_ohm", DEL), "sensors.supply.r0_ohm: required (RTD resistance at "
     "0 C: 100 (PT100) or 1000 (PT1000))"),
    (with_("flow.litres_per_pulse", DEL), "flow.litres_per_pulse: required (volume per pulse "
     "(a whole number of uL))"),
    # cross-field rules
    (with_("sensors.return.min_c", 120), "sensors.return.min_c = 120 must be below "
     "sensors.return.max_c = 120 (the sensor range must not be empty)"),
    (with_("control.sink_return_hyst_k", 45.0), "control.sink_return_max_c - "
     "control.sink_return_hyst_k = 0 must be above sensors.sink_return.min_c = 0 (hysteresis "
     "must be smaller than the threshold span)"),
    (with_("control.it_coolant_max_c", 130), "control.it_coolant_max_c = 130 must be below "
     "sensors.it_coolant.max_c = 120 (the trip point must be inside the sensor range)"),
    (with_("control.sink_flow_min_m3h", 15.0), ["control.sink_flow_min_m3h = 15 must be below "
     "flow.max_m3h = 15 (the low-flow threshold must be below the meter's maximum)",
     "control.sink_flow_min_m3h + control.sink_flow_hyst_m3h = 15.5 must be below "
     "flow.max_m3h = 15 (hysteresis must be smaller than the threshold span)"]),
    (with_("control.sink_flow_hyst_m3h", 12.0), "control.sink_flow_min_m3h + "
     "control.sink_flow_hyst_m3h = 15 must be below flow.max_m3h = 15 (hysteresis must be "
     "smaller than the threshold span)"),
    (with_("supervisor.watchdog_ms", 2000), "supervisor.watchdog_ms = 2000 must be above "
     "2 * control.tick_ms = 2000 (the watchdog must outlast two control ticks)"),
    (with_("supervisor.stall_s", 1), "1000 * supervisor.stall_s = 1000 must be at least "
     "2 * control.tick_ms = 2000 (a task is stalled only after two missed ticks)"),
    (with_("control.stale_s", 1), "1000 * control.stale_s = 1000 must be at least "
     "2 * control.tick_ms = 2000 (a reading is stale only after two missed ticks)"),
    (with_("meter.mass_fraction", 0.3), "meter.mass_fraction = 0.3 must be equal to 0 (water "
     "takes no glycol mass fraction)"),
    (with_("meter.fluid", "ethylene_glycol"), "meter.mass_fraction = 0 must be above 0 (a "
     "glycol needs its mass fraction, e.g. 0.3 for 30 %)"),
    # not an object at the top
    ([], "config: expected an object, got a list"),
    ("config", 'config: expected an object, got "config"'),
    (1, "config: expected an object, got 1"),
    (None, "config: expected an object, got null"),
    (True, "config: expected an object, got true"),
]

GOOD = [
    FULL,
    {"version": 1},
    with_("flow", None),
    with_("flow", DEL),
    with_("sensors", {}),
    with_("sensors.supply", DEL),
    with_("meter", {"fluid": "propylene_glycol", "mass_fraction": 0.3}),
    with_("meter", {"fluid": "ethylene_glycol", "mass_fraction": 0.6}),
    with_("sensors.supply", {"r0_ohm": 100, "wires": 3}),
    with_("control.tick_ms", 100),
    with_("supervisor.watchdog_ms", 8300),
    with_("persist.interval_s", 10),
    with_("persist.interval_s", 86400),
    with_("control.sink_return_max_c", 45),  # int accepted in a float field
]

MP_VALIDATE = r"""
import sys, json
from heatgw.schema import validate
from heatgw.config_schema import SCHEMA
while True:
    line = sys.stdin.readline()
    if not line:
        break
    cfg, errs = validate(json.loads(line), SCHEMA)
    print(json.dumps([cfg, errs]))
"""


def _jsonable(doc):
    # json.dumps writes inf as Infinity, which MicroPython cannot parse; 1e400 parses to inf
    return json.dumps(doc).replace("-Infinity", "-1e400").replace("Infinity", "1e400")


@pytest.fixture(scope="module")
def mp_results(mp):
    docs = [d for d, _ in BAD] + GOOD
    lines = [_jsonable(d) for d in docs]
    out = mp.run_json(MP_VALIDATE, stdin="\n".join(lines) + "\n")
    assert len(out) == len(docs)
    return {line: r for line, r in zip(lines, out, strict=True)}


def _cp(doc):
    cfg, errs = validate(json.loads(_jsonable(doc)), SCHEMA)
    # the same trip through JSON text that the micropython results took
    return [json.loads(json.dumps(cfg)), errs]


@pytest.mark.parametrize("doc,error", BAD, ids=[str(e)[:60] for _, e in BAD])
def test_bad_document_gives_a_clear_error_identically(doc, error, mp_results):
    cp = _cp(doc)
    assert cp[1] == (error if isinstance(error, list) else [error])
    assert mp_results[_jsonable(doc)] == cp


@pytest.mark.parametrize("doc", GOOD)
def test_valid_document_passes_identically(doc, mp_results):
    cp = _cp(doc)
    assert cp[1] == []
    assert mp_results[_jsonable(doc)] == cp


def test_full_spec_config_is_kept_as_written():
    cfg, errs = validate(FULL, SCHEMA)
    assert errs == []
    assert cfg == FULL
    assert cfg is not FULL and cfg["sensors"] is not FULL["sensors"]


def test_defaults_fill_sections_and_sensors_but_add_no_sensor():
    cfg, errs = validate({"version": 1, "sensors": {"sink_return": {"r0_ohm": 1000,
                                                                   "wires": 4}}}, SCHEMA)
    assert errs == []
    assert cfg["sensors"] == {"sink_return": {"r0_ohm": 1000, "wires": 4, "offset_k": 0.0,
                                              "min_c": 0.0, "max_c": 120.0, "critical": True}}
    assert cfg["flow"] is None
    assert cfg["control"] == FULL["control"]
    assert cfg["meter"] == FULL["meter"]
    assert cfg["supervisor"] == FULL["supervisor"] and cfg["persist"] == FULL["persist"]
    ctl = validate(with_("control.sink_return_max_c", 45), SCHEMA)[0]["control"]
    assert type(ctl["sink_return_max_c"]) is float


def test_several_errors_are_all_reported_in_a_stable_order():
    doc = with_("control.tick_ms", 5000)
    doc["control"]["bogus"] = 1
    doc["meter"]["fluid"] = "oil"
    doc["sensors"]["supply"]["wires"] = "4"
    _, errs = validate(doc, SCHEMA)
    assert errs == [
        "control.bogus: unknown key; expected one of " + ", ".join(sorted(FULL["control"])),
        "control.tick_ms: 5000 is above the maximum 1000 ms",
        'meter.fluid: "oil" is not allowed; one of "water", "propylene_glycol", '
        '"ethylene_glycol"',
        'sensors.supply.wires: expected an integer, got "4"',
    ]


def test_validate_never_raises_on_odd_json_values():
    odd = [0, -1, 1.5, "", [], {}, [[[]]], {"": None}, {"version": [1]}, {"version": {}},
           {"sensors": {"supply": []}}, {"sensors": {"supply": {"r0_ohm": [1000]}}},
           {"version": 1, "flow": "pulse"}, {"version": 1, "control": {"tick_ms": None}},
           {"version": 1, "node_id": "x" * 100000}, {"version": 1, "k" * 100000: 1},
           {"version": 1, "sensors": {"supply": {"r0_ohm": 1000, "wires": 4,
                                                 "min_c": float("nan")}}}]
    for doc in odd:
        cfg, errs = validate(doc, SCHEMA)
        assert errs, doc
        assert all(type(e) is str and len(e) < 400 for e in errs)
    _, errs = validate(odd[-1], SCHEMA)
    assert errs == ["sensors.supply.min_c: nan is not a finite number"]


def test_validate_does_not_alias_the_schema_defaults():
    a = validate({"version": 1}, SCHEMA)[0]
    a["control"]["tick_ms"] = 1
    a["sensors"]["supply"] = {}
    b = validate({"version": 1}, SCHEMA)[0]
    assert b["control"]["tick_ms"] == 1000 and b["sensors"] == {}


# ---- the schema itself -------------------------------------------------------------------

def _walk(node, path=""):
    yield path, node
    for k, sub in (node.get("keys") or {}).items():
        yield from _walk(sub, f"{path}.{k}" if path else k)


def test_schema_is_plain_data():
    def plain(v):
        if isinstance(v, dict):
            return all(type(k) is str and plain(x) for k, x in v.items())
        if isinstance(v, list):
            return all(plain(x) for x in v)
        return v is None or type(v) in (str, int, float, bool)
    assert plain(SCHEMA)


def test_schema_documents_every_key():
    allowed = {"type", "null", "req", "default", "min", "max", "enum", "len", "chars", "unit",
               "doc", "keys", "rules"}
    for path, node in _walk(SCHEMA):
        assert set(node) <= allowed, path
        assert node.get("type") in ("int", "float", "bool", "str", "object"), path
        assert node.get("doc"), path
        if path and node["type"] != "object":
            assert node.get("req") or "default" in node, path
        if node["type"] in ("int", "float") and "enum" not in node:
            assert "min" in node and "max" in node and "unit" in node, path


def test_schema_rules_name_existing_keys():
    leaves = {p for p, n in _walk(SCHEMA) if n["type"] != "object"}
    names = {p.replace(".supply.", ".*.") for p in leaves} | leaves

    def paths(term):
        if isinstance(term, list):
            return [t for t in term[1:] if isinstance(t, str)]
        return [term] if isinstance(term, str) else []

    for rule in SCHEMA["rules"]:
        assert rule[0] in ("lt", "le", "gt", "ge", "eq"), rule
        for p in paths(rule[1]) + paths(rule[2]) + ([rule[4][0]] if len(rule) > 4 else []):
            assert p in names, (p, rule)


def test_schema_matches_the_fluid_tables():
    assert SCHEMA["keys"]["meter"]["keys"]["fluid"]["enum"] == list(fluid.FLUIDS)
    mf = SCHEMA["keys"]["meter"]["keys"]["mass_fraction"]
    assert mf["min"] == fluid_data.GLYCOL_X_MIN and mf["max"] == fluid_data.GLYCOL_X_MAX
    assert sorted(SCHEMA["keys"]["sensors"]["keys"]) == sorted(config.SENSOR_NAMES)


# ---- load() on the device ----------------------------------------------------------------

MP_LOAD = r"""
import json
from heatgw import config
for path in PATHS:
    cfg, errs, src = config.load(path)
    print(json.dumps({"cfg": json.loads(config.dumps(cfg)), "errs": errs, "src": src,
                      "configured": config.is_configured(cfg), "dumps": config.dumps(cfg)}))
"""


@pytest.fixture
def files(tmp_path):
    def write(name, data):
        p = tmp_path / name
        p.write_bytes(data if isinstance(data, bytes) else data.encode())
        return str(p)
    text = json.dumps(FULL, indent=2)
    return {
        "full": write("full.json", text),
        "bom": write("bom.json", b"\xef\xbb\xbf" + text.encode()),
        "minimal": write("minimal.json", '{"version": 1}'),
        "missing": str(tmp_path / "absent.json"),
        "empty": write("empty.json", ""),
        "blank": write("blank.json", " \n\t\n"),
        "badjson": write("bad.json", text[:-5]),
        "trailing": write("trailing.json", text + ","),
        "list": write("list.json", "[1, 2]"),
        "schema": write("schema.json", json.dumps(with_("control.tick_ms", 5000))),
        "nan": write("nan.json", text.replace('"offset_k": 0.0', '"offset_k": NaN', 1)),
        "huge": write("huge.json", text.replace('"tick_ms": 1000', '"tick_ms": 1' + "0" * 60)),
        "toolarge": write("toolarge.json", text + " " * config.MAX_BYTES),
        "deep": write("deep.json", "[" * 4000 + "]" * 4000),
        "binary": write("binary.bin", bytes(range(256))),
        "directory": str(tmp_path),
    }


def _load_in_mp(mp, files, names, **kw):
    src = "PATHS = %r\n" % [files[n] for n in names] + MP_LOAD
    return dict(zip(names, mp.run_json(src, **kw), strict=True))


def _default():
    return json.loads(config.dumps(config.default()))


def test_load_valid_file_on_both(mp, files):
    got = _load_in_mp(mp, files, ["full", "bom", "minimal"])
    for name in ("full", "bom"):
        cfg, errs, src = config.load(files[name])
        assert (errs, src) == ([], "file")
        assert cfg == FULL
        assert got[name]["src"] == "file" and got[name]["errs"] == []
        assert got[name]["cfg"] == FULL
        assert got[name]["configured"] is True
        assert got[name]["dumps"] == config.dumps(cfg)  # canonical text, byte for byte
    assert got["minimal"]["src"] == "file"
    assert got["minimal"]["cfg"] == _default()
    assert got["minimal"]["configured"] is False


BROKEN = {
    "missing": ["{path}: not found"],
    "empty": ["{path}: file is empty"],
    "blank": ["{path}: file is empty"],
    "list": ["config: expected an object, got a list"],
    "schema": ["control.tick_ms: 5000 is above the maximum 1000 ms"],
    "huge": ["control.tick_ms: a huge integer is above the maximum 1000 ms"],
    "toolarge": ["{path}: larger than 8192 bytes"],
}


def test_broken_files_fall_back_to_default_on_both(mp, files):
    names = list(BROKEN) + ["badjson", "trailing", "nan", "deep", "binary", "directory"]
    got = _load_in_mp(mp, files, names)
    default = _default()
    for name in names:
        cfg, errs, src = config.load(files[name])
        r = got[name]
        assert src == "default" and r["src"] == "default", name
        assert cfg == config.DEFAULT and r["cfg"] == default, name
        assert r["configured"] is False and config.is_configured(cfg) is False
        assert errs and r["errs"], name
        if name in BROKEN:
            want = [e.format(path=files[name]) for e in BROKEN[name]]
            assert errs == want and r["errs"] == want, name
    for name in ("badjson", "trailing"):
        for errs in (config.load(files[name])[1], got[name]["errs"]):
            assert len(errs) == 1 and errs[0].startswith(files[name] + ": not valid JSON ("), \
                (name, errs)
    # 4000 nested lists: CPython's json runs out of recursion; MicroPython's parses them, or
    # runs out of memory in a small heap (MICROPYTHON_ARGS="-X heapsize=64wK")
    for errs in (config.load(files["deep"])[1], got["deep"]["errs"]):
        assert len(errs) == 1, errs
        assert (errs[0] == "config: expected an object, got a list"
                or errs[0].startswith(files["deep"] + ": not valid JSON (")
                or errs[0].startswith(files["deep"] + ": loading failed (MemoryError")), errs
    # CPython's json reads NaN and the validator refuses it; MicroPython's json refuses it
    assert config.load(files["nan"])[1] == ["sensors.supply.offset_k: nan is not a finite number"]
    assert got["nan"]["errs"][0].startswith(files["nan"] + ": not valid JSON (")
    for name in ("binary", "directory"):
        for errs in (config.load(files[name])[1], got[name]["errs"]):
            assert len(errs) == 1 and errs[0].startswith(files[name] + ": "), (name, errs)


def test_load_returns_a_fresh_default_each_time(files):
    a, _, _ = config.load(files["missing"])
    a["control"]["tick_ms"] = 1
    a["sensors"]["x"] = 1
    b, _, _ = config.load(files["missing"])
    assert b == config.DEFAULT and config.DEFAULT["control"]["tick_ms"] == 1000
    assert config.DEFAULT["sensors"] == {} and config.DEFAULT["flow"] is None


def test_load_in_a_64k_heap(mp, files):
    names = ["full", "schema", "badjson", "missing", "toolarge"]
    got = _load_in_mp(mp, files, names, heapsize="64wK")
    assert got["full"]["src"] == "file" and got["full"]["cfg"] == FULL
    for name in names[1:]:
        assert got[name]["src"] == "default" and got[name]["cfg"] == _default(), name


MP_STARVED = r"""
import gc, json
from heatgw import config
# preallocated: recording a result must not allocate (nor keep the errors alive)
srcs = [None] * 600
kinds = [None] * 600  # 0 no error, 1 "<path>: loading failed (MemoryError...",
                      # 2 "config: out of memory while ...", else the error
oks = [None] * 600
gc.collect()
hog = [None] * 1000  # 256 KB: more than the 64wK heap (128 KB here, 64 KB on 32 bit)
n = 0
try:
    while True:
        hog[n] = bytearray(256)
        n += 1
except MemoryError:
    pass
# Free the heap 256 bytes at a time: load() must answer at every step, never raise. The
# first 1 KB lets the call itself be made (its frame is on the heap) and the result stored.
n -= 4
hog[n] = hog[n + 1] = hog[n + 2] = hog[n + 3] = None
i = 0
while n and i < len(srcs):
    n -= 1
    hog[n] = None
    gc.collect()
    cfg, errs, src = config.load(PATH)
    srcs[i] = src
    if not errs:
        kinds[i] = 0
    elif errs[0].startswith(PATH) and errs[0].startswith("loading failed (MemoryError",
                                                           len(PATH) + 2):
        kinds[i] = 1
    else:
        # any other error is kept as is, for the assertion message
        kinds[i] = 2 if errs[0].startswith("config: out of memory while ") else errs[0]
    oks[i] = (cfg == config.DEFAULT) if src == "default" else (cfg.get("node_id") == "heatgw-01")
    cfg = errs = None
    i += 1
    if src == "file":
        break
hog = None
gc.collect()
for j in range(i):
    print(json.dumps([srcs[j], oks[j], kinds[j]]))
"""


def test_load_never_raises_when_starved_of_memory(mp, files):
    out = mp.run_json("PATH = " + repr(files["full"]) + "\n" + MP_STARVED, heapsize="64wK")
    assert out[-1] == ["file", True, 0]
    starved = out[:-1]
    assert starved, "the first attempts must have run out of memory"
    for src, ok, kind in starved:
        # DEFAULT, and the error names the file when there was room to format it, else a
        # preallocated answer (load) or a constant one (validate)
        assert src == "default" and ok and kind in (1, 2), out


def test_is_configured():
    assert config.is_configured(validate(FULL, SCHEMA)[0])
    assert not config.is_configured(config.DEFAULT)
    only_flow = validate({"version": 1, "flow": FULL["flow"]}, SCHEMA)[0]
    assert config.is_configured(only_flow)
    noncritical = with_("sensors", {"supply": _sensor(False), "return": _sensor(False)})
    noncritical["flow"]["critical"] = False
    assert validate(noncritical, SCHEMA)[1] == []
    assert not config.is_configured(validate(noncritical, SCHEMA)[0])
    for odd in (None, [], {}, {"sensors": 5}, {"sensors": {"supply": 1}}, {"flow": []}, 7):
        assert config.is_configured(odd) is False


def test_dumps_is_canonical():
    cfg = validate(FULL, SCHEMA)[0]
    text = config.dumps(cfg)
    assert text == json.dumps(cfg, sort_keys=True, separators=(",", ":"))
    assert json.loads(text) == cfg


# ---- host CLI ----------------------------------------------------------------------------

def _cli(*args):
    return subprocess.run([sys.executable, "-m", "host_tools.config_check", *args], cwd=REPO,
                          capture_output=True, text=True)


def test_cli_valid_file_prints_filled_config(files):
    p = _cli(files["minimal"])
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout) == validate({"version": 1}, SCHEMA)[0]
    assert config_check.check(files["full"]) == (FULL, [])


def test_cli_invalid_file_prints_errors_and_exits_1(files):
    p = _cli(files["schema"])
    assert p.returncode == 1
    assert p.stderr.strip() == "control.tick_ms: 5000 is above the maximum 1000 ms"
    assert p.stdout == ""
    for name in ("missing", "badjson", "empty"):
        p = _cli(files[name])
        assert p.returncode == 1 and p.stderr.startswith(files[name] + ": "), name
    assert config_check.check(files["missing"]) == (None, [files["missing"] + ": not found"])


def test_cli_usage_and_doc():
    assert _cli().returncode == 2
    p = _cli("--doc")
    assert p.returncode == 0
    for path, _node in _walk(SCHEMA):
        if path:
            assert f"\n{path}: " in "\n" + p.stdout, path
