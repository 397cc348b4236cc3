"""Configuration: heatgw.schema + heatgw.config_schema + heatgw.config, run in the real
micropython binary and in CPython (host_tools.config_check imports the same files); both
must judge every document identically."""

import copy
import json
import os
import subprocess
import sys

import pytest

from host_tools import config_check, mpinfo
from host_tools.paths import FIRMWARE, REPO

if str(FIRMWARE) not in sys.path:
    sys.path.insert(0, str(FIRMWARE))

from heatgw import config, fluid, fluid_data, mbschema, migrate, recschema  # noqa: E402
from heatgw.config_schema import SCHEMA, VERSION  # noqa: E402

mbschema.install(SCHEMA)  # the whole schema, as the host's tools see it
recschema.install(SCHEMA)
from heatgw.schema import validate  # noqa: E402


def _sensor(critical):
    return {"r0_ohm": 1000, "wires": 4, "offset_k": 0.0, "min_c": 0.0, "max_c": 120.0,
            "critical": critical}


# The full example of the interface spec.
FULL = {
    "version": 2,
    "node_id": "heatgw-01",
    "site": {"mains_hz": 50},
    "sensors": {"supply": _sensor(False), "return": _sensor(False),
                "sink_return": _sensor(True), "it_coolant": _sensor(True)},
    "flow": {"type": "pulse", "litres_per_pulse": 0.1, "max_m3h": 15.0, "critical": True,
             "min_pulse_ms": 0.0, "zero_after_s": 60.0, "stuck_active_s": None},
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
        # the contact alone (test_bms covers the remote sources)
        "sink_sources": {"modbus": None, "mqtt": None},
    },
    "persist": {"interval_s": 300},
    "mqtt": None,  # no telemetry (test_mqtt covers the section)
    "modbus": None,  # no Modbus meters (test_modbus covers the section)
    "bms": None,  # no Modbus server (test_bms covers the section)
    "recovery": None,  # no heat recovery ratio (test_recovery covers the section)
    "analog": None,  # no analogue inputs (test_analog covers the section)
    "telemetry": {"interval_s": 10, "queue_capacity": None},
    "supervisor": {"watchdog_ms": 5000, "stall_s": 3},
    "safe_mode": {"resets": 4, "window_min": 10},
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
MAINS_REQUIRED = ("site.mains_hz: required with sensors (50 or 60: the mains frequency at the "
                  "site, which the RTD converters filter out)")

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
    (with_("contrl", {}), "contrl: unknown key; expected one of analog, bms, control, flow, "
     "meter, modbus, mqtt, node_id, persist, recovery, safe_mode, sensors, site, supervisor, "
     "telemetry, version"),
    # mqtt: the password lives in the secrets file; host and site have no default
    (with_("mqtt", {"host": "b", "site": "s", "password": "x"}), "mqtt.password: unknown key; "
     "expected one of clean_session, client_id, ha_discovery_prefix, host, keepalive_s, port, "
     "prefix, site, tls, username"),
    (with_("mqtt", {"site": "s"}), "mqtt.host: required (broker host name or IP address; an "
     "address needs no DNS lookup, which blocks)"),
    (with_("mqtt", {"host": "b", "site": "s/x"}), 'mqtt.site: character "/" not allowed (site '
     "id in the topics: letters, digits, - and _)"),
    (with_("mqtt", {"host": "b", "site": "s", "tls": {}}), "mqtt.tls.ca_file: required (the "
     "broker's CA certificate, DER, on the node's file system: e.g. /ca.der)"),
    (with_("site.mains", 50), "site.mains: unknown key; expected one of mains_hz"),
    (with_("sensors.suply", _sensor(True)), "sensors.suply: unknown key; expected one of "
     "it_coolant, return, sink_return, supply"),
    (with_("control.tick_s", 1), "control.tick_s: unknown key; expected one of "
     "it_coolant_hyst_k, it_coolant_max_c, min_dwell_s, recover_s, sink_flow_hyst_m3h, "
     "sink_flow_min_m3h, sink_return_hyst_k, sink_return_max_c, sink_signal, sink_sources, "
     "stale_s, "
     "tick_ms, valve_feedback, valve_travel_s"),
    (with_("flow.k", 1), "flow.k: unknown key; expected one of critical, litres_per_pulse, "
     "max_m3h, meter, min_pulse_ms, pulses_per_litre, stuck_active_s, type, zero_after_s"),
    # bad enum
    (with_("meter.fluid", "glycol"), 'meter.fluid: "glycol" is not allowed; one of "water", '
     '"propylene_glycol", "ethylene_glycol"'),
    (with_("sensors.return.r0_ohm", 500),
     "sensors.return.r0_ohm: 500 is not allowed; one of 100, 1000"),
    (with_("sensors.return.wires", 5), "sensors.return.wires: 5 is not allowed; one of 2, 3, 4"),
    (with_("flow.type", "mbus"),
     'flow.type: "mbus" is not allowed; one of "pulse", "modbus"'),
    (with_("version", 3), "version: 3 is not allowed; one of 2"),
    # validate() alone reads the current version only; load() migrates older files
    (with_("version", 1), "version: 1 is not allowed; one of 2"),
    (with_("site.mains_hz", 55), "site.mains_hz: 55 is not allowed; one of 50, 60"),
    (with_("site.mains_hz", "50"), 'site.mains_hz: expected an integer, got "50"'),
    (with_("site.mains_hz", 50.0), "site.mains_hz: expected an integer, got 50"),
    (with_("site", None), "site: expected an object, got null"),
    (with_("site", 50), "site: expected an object, got 50"),
    # required
    (with_("version", DEL), "version: required (configuration format version (older files are "
     "migrated))"),
    # required with any sensor: no silent 50 Hz
    (with_("site.mains_hz", DEL), MAINS_REQUIRED),
    (with_("site", DEL), MAINS_REQUIRED),
    (with_("sensors", {"it_coolant": _sensor(True)}) | {"site": {}}, MAINS_REQUIRED),
    (with_("sensors", {"supply": _sensor(False)}) | {"site": {}}, MAINS_REQUIRED),
    (with_("sensors.supply.r0_ohm", DEL), "sensors.supply.r0_ohm: required (RTD resistance at "
     "0 C: 100 (PT100) or 1000 (PT1000))"),
    # the K-factor: exactly one of two keys, each in whole steps
    (with_("flow.litres_per_pulse", DEL), "flow: needs one of litres_per_pulse, "
     "pulses_per_litre (a pulse meter's K-factor)"),
    (with_("flow.pulses_per_litre", 100), "flow: takes only one of litres_per_pulse, "
     "pulses_per_litre (a pulse meter's K-factor)"),
    (with_("flow.litres_per_pulse", 0.0000015), "flow.litres_per_pulse: 1.5e-06 is not a whole "
     "multiple of 1e-06 L"),
    (with_("flow", {"pulses_per_litre": 450.0005, "max_m3h": 4.0}), "flow.pulses_per_litre: "
     "450 is not a whole multiple of 0.001 1/L"),
    (with_("flow.min_pulse_ms", 0.0005), "flow.min_pulse_ms: 0.0005 is not a whole multiple "
     "of 0.001 ms"),
    # the input's 500 Hz, the debounce against the pulse period, zero flow against one pulse
    (with_("flow", {"pulses_per_litre": 450, "max_m3h": 5.0}), "flow.max_m3h * "
     "flow.pulses_per_litre = 2250 must be at most 1800 (the pulse rate at max_m3h must be "
     "at most the input's 500 Hz)"),
    (with_("flow.litres_per_pulse", 0.001), "flow.max_m3h = 15 must be at most "
     "1800 * flow.litres_per_pulse = 1.8 (the pulse rate at max_m3h must be at most the "
     "input's 500 Hz)"),
    (with_("flow.min_pulse_ms", 12.0), "flow.min_pulse_ms * flow.max_m3h = 180 must be below "
     "1800 * flow.litres_per_pulse = 180 (min_pulse_ms must be under half the pulse period "
     "at max_m3h)"),
    (with_("flow", {"pulses_per_litre": 400, "max_m3h": 4.0, "min_pulse_ms": 1.2}),
     "(flow.min_pulse_ms * flow.max_m3h) * flow.pulses_per_litre = 1920 must be below 1800 "
     "(min_pulse_ms must be under half the pulse period at max_m3h)"),
    (with_("flow", {"litres_per_pulse": 10.0, "max_m3h": 15.0, "zero_after_s": 12}),
     "flow.zero_after_s = 12 must be above (3.6 * flow.litres_per_pulse) / "
     "control.sink_flow_min_m3h = 12 (zero_after_s must exceed one pulse at "
     "control.sink_flow_min_m3h)"),
    (with_("flow", {"pulses_per_litre": 0.1, "max_m3h": 15.0, "zero_after_s": 11}),
     "flow.zero_after_s = 11 must be above 3.6 / (flow.pulses_per_litre * "
     "control.sink_flow_min_m3h) = 12 (zero_after_s must exceed one pulse at "
     "control.sink_flow_min_m3h)"),
    (with_("flow.stuck_active_s", 0.5), "flow.stuck_active_s: 0.5 is below the minimum 1 s"),
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
    {"version": 2},
    with_("flow", None),
    with_("flow", DEL),
    with_("sensors", {}),
    with_("sensors", DEL) | {"site": {}},  # no sensor: no mains frequency needed
    {"version": 2, "flow": FULL["flow"]},
    # a Modbus flow meter takes no K-factor: the pulse meter's rules skip it
    with_("flow", {"type": "modbus", "meter": "fm", "max_m3h": 15.0}),
    with_("flow", {"pulses_per_litre": 450, "max_m3h": 4.0, "min_pulse_ms": 0.9,
                   "zero_after_s": 5, "stuck_active_s": 120}),
    with_("flow", {"pulses_per_litre": 0.5, "max_m3h": 15.0, "zero_after_s": 2.5}),
    with_("flow", {"litres_per_pulse": 0.1, "max_m3h": 15.0, "min_pulse_ms": 5.0,
                   "stuck_active_s": None}),
    with_("control.sink_flow_min_m3h", 0.0) | {"flow": {"litres_per_pulse": 100.0,
                                                       "max_m3h": 15.0, "zero_after_s": 1}},
    with_("site.mains_hz", 60),
    with_("sensors.supply", DEL),
    with_("meter", {"fluid": "propylene_glycol", "mass_fraction": 0.3}),
    with_("meter", {"fluid": "ethylene_glycol", "mass_fraction": 0.6}),
    with_("sensors.supply", {"r0_ohm": 100, "wires": 3}),
    with_("control.tick_ms", 100),
    with_("supervisor.watchdog_ms", 8300),
    with_("persist.interval_s", 10),
    with_("persist.interval_s", 86400),
    with_("control.sink_return_max_c", 45),  # int accepted in a float field
    with_("mqtt", {"host": "10.0.0.2", "site": "plant-7"}),
    with_("mqtt", {"host": "broker.lan", "port": 8883, "site": "s", "client_id": "gw-7",
                   "keepalive_s": 30, "clean_session": False, "prefix": "acme/heat",
                   "username": "gw", "tls": {"ca_file": "/ca.der"},
                   "ha_discovery_prefix": "homeassistant"}),
    with_("telemetry", {"interval_s": 60}),
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
    cfg, errs = validate({"version": 2, "site": {"mains_hz": 60},
                          "sensors": {"sink_return": {"r0_ohm": 1000, "wires": 4}}}, SCHEMA)
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
    odd = [0, -1, 1.5, "", [], {}, [[[]]], {"": None}, {"version": [2]}, {"version": {}},
           {"sensors": {"supply": []}}, {"sensors": {"supply": {"r0_ohm": [1000]}}},
           {"version": 2, "flow": "pulse"}, {"version": 2, "control": {"tick_ms": None}},
           {"version": 2, "node_id": "x" * 100000}, {"version": 2, "k" * 100000: 1},
           {"version": 2, "site": [50]}, {"version": 2, "site": {"mains_hz": None}},
           {"version": 2, "site": {"mains_hz": 50}, "sensors": {"supply": {
               "r0_ohm": 1000, "wires": 4, "min_c": float("nan")}}}]
    for doc in odd:
        cfg, errs = validate(doc, SCHEMA)
        assert errs, doc
        assert all(type(e) is str and len(e) < 400 for e in errs)
    _, errs = validate(odd[-1], SCHEMA)
    assert errs == ["sensors.supply.min_c: nan is not a finite number"]


def test_validate_does_not_alias_the_schema_defaults():
    a = validate({"version": 2}, SCHEMA)[0]
    a["control"]["tick_ms"] = 1
    a["sensors"]["supply"] = {}
    a["site"]["mains_hz"] = 60
    b = validate({"version": 2}, SCHEMA)[0]
    assert b["control"]["tick_ms"] == 1000 and b["sensors"] == {} and b["site"] == {}


# ---- the schema itself -------------------------------------------------------------------

REQ_WITH = {r[1] for r in SCHEMA["rules"] if r[0] == "req"}
ONE_OF = {f"{r[1]}.{k}" for r in SCHEMA["rules"] if r[0] == "one" for k in r[2]}


def _walk(node, path=""):
    yield path, node
    for k, sub in (node.get("keys") or {}).items():
        yield from _walk(sub, f"{path}.{k}" if path else k)
    if "items" in node:  # members named by the installer: <name> in the path
        yield from _walk(node["items"], f"{path}.<name>")


def test_schema_is_plain_data():
    def plain(v):
        if isinstance(v, dict):
            return all(type(k) is str and plain(x) for k, x in v.items())
        if isinstance(v, list):
            return all(plain(x) for x in v)
        return v is None or type(v) in (str, int, float, bool)
    assert plain(SCHEMA)


def test_schema_documents_every_key():
    allowed = {"type", "null", "req", "default", "min", "max", "step", "enum", "len", "chars",
               "unit", "doc", "keys", "rules", "items", "max_items"}
    for path, node in _walk(SCHEMA):
        assert set(node) <= allowed, path
        assert node.get("type") in ("int", "float", "bool", "str", "object"), path
        assert node.get("doc"), path
        if path and node["type"] != "object":  # required (always or with a section) or a default
            assert (node.get("req") or "default" in node or path in REQ_WITH
                    or path in ONE_OF), path
        if node["type"] in ("int", "float") and "enum" not in node:
            assert "min" in node and "max" in node and "unit" in node, path


def test_schema_rules_name_existing_keys():
    leaves = {p for p, n in _walk(SCHEMA) if n["type"] != "object"}
    names = {p.replace(".supply.", ".*.") for p in leaves} | leaves

    def paths(term):
        if isinstance(term, list):
            return [p for t in term[1:] for p in paths(t)]
        return [term] if isinstance(term, str) else []

    objects = {p for p, n in _walk(SCHEMA) if n["type"] == "object"}
    for rule in SCHEMA["rules"]:
        assert rule[0] in ("lt", "le", "gt", "ge", "eq", "req", "one"), rule
        if rule[0] == "req":  # [req, key without req/default, object, why]
            assert rule[1] in leaves and rule[2] in objects and rule[3], rule
            continue
        if rule[0] == "one":  # [one, object, [keys without req/default], why]
            assert rule[1] in objects and rule[3], rule
            assert all(f"{rule[1]}.{k}" in leaves for k in rule[2]), rule
            continue
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
    cfg, errs, src, mig = config.load(path)
    print(json.dumps({"cfg": json.loads(config.dumps(cfg)), "errs": errs, "src": src,
                      "configured": config.is_configured(cfg), "dumps": config.dumps(cfg),
                      "mig": mig}))
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
        "minimal": write("minimal.json", '{"version": 2}'),
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
        cfg, errs, src, mig = config.load(files[name])
        assert (errs, src, mig) == ([], "file", None)
        assert cfg == FULL
        assert got[name]["src"] == "file" and got[name]["errs"] == []
        assert got[name]["cfg"] == FULL and got[name]["mig"] is None
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
        cfg, errs, src, mig = config.load(files[name])
        r = got[name]
        assert src == "default" and r["src"] == "default", name
        assert cfg == config.DEFAULT and r["cfg"] == default, name
        assert r["configured"] is False and config.is_configured(cfg) is False
        assert errs and r["errs"], name
        assert mig is None and r["mig"] is None, name
        if name in BROKEN:
            want = [e.format(path=files[name]) for e in BROKEN[name]]
            assert errs == want and r["errs"] == want, name
    for name in ("badjson", "trailing"):
        for errs in (config.load(files[name])[1], got[name]["errs"]):
            assert len(errs) == 1 and errs[0].startswith(files[name] + ": not valid JSON ("), \
                (name, errs)
    # 4000 nested lists: CPython's json runs out of recursion; MicroPython's parses them, or
    # runs out of memory in a small heap (MICROPYTHON_ARGS="-X heapsize=128K")
    for errs in (config.load(files["deep"])[1], got["deep"]["errs"]):
        assert len(errs) == 1, errs
        assert (errs[0] == "config: expected an object, got a list"
                or errs[0].startswith(files["deep"] + ": not valid JSON (")
                or errs[0].startswith(files["deep"] + ": loading failed (MemoryError")), errs
    # CPython's json reads NaN (and the validator would refuse it), MicroPython's refuses
    # it: heatgw.strictjson refuses it on both, with the same words
    nan = [files["nan"] + ": not valid JSON (line 11 column 19: NaN and Infinity are not "
           "finite numbers)"]
    assert config.load(files["nan"])[1] == nan and got["nan"]["errs"] == nan
    for name in ("binary", "directory"):
        for errs in (config.load(files[name])[1], got[name]["errs"]):
            assert len(errs) == 1 and errs[0].startswith(files[name] + ": "), (name, errs)


def test_load_returns_a_fresh_default_each_time(files):
    a = config.load(files["missing"])[0]
    a["control"]["tick_ms"] = 1
    a["sensors"]["x"] = 1
    b = config.load(files["missing"])[0]
    assert b == config.DEFAULT and config.DEFAULT["control"]["tick_ms"] == 1000
    assert config.DEFAULT["sensors"] == {} and config.DEFAULT["flow"] is None


def test_load_in_a_small_heap(mp, files):
    # 128 KB on the 64-bit host (what 64wK gave there), scaled to the binary under test
    names = ["full", "schema", "badjson", "missing", "toolarge"]
    got = _load_in_mp(mp, files, names, heapsize=mpinfo.heapsize(128))
    assert got["full"]["src"] == "file" and got["full"]["cfg"] == FULL
    for name in names[1:]:
        assert got[name]["src"] == "default" and got[name]["cfg"] == _default(), name


MP_STARVED = r"""
import gc, json
# preallocated: recording a result must not allocate (nor keep the errors alive); before
# the import, whose compiling leaves the heap fragmented (the list needs 16 KB in one piece)
srcs = [None] * 600
kinds = [None] * 600  # 0 no error, 1 "<path>: loading failed (MemoryError...",
                      # 2 "config: out of memory while ...", else the error
oks = [None] * 600
n = big = i = freed = 0
cfg = errs = src = mig = None  # every global exists before the heap is full
hog = [None] * 2000  # more than the heap holds of either filler, on any word size
from heatgw import config
gc.collect()
# Fill the heap: 256-byte blocks, then 1-block objects for the holes that loading the
# modules left (a few KB on a 32-bit port: enough for load() itself if left free).
try:
    while n < len(hog):
        hog[n] = bytearray(256)
        n += 1
except MemoryError:
    pass
big = n
try:
    while n < len(hog):
        hog[n] = bytearray(0)
        n += 1
except MemoryError:
    pass
# Free it again about 256 bytes at a time, the holes first: load() must answer at every
# step, never raise. The first 1 KB lets the call itself be made and the result stored.
while n > big and freed < 1024:
    n -= 1
    hog[n] = None
    freed += 16
while i < len(srcs) and n:
    freed = 0
    while n and freed < 256:
        n -= 1
        freed += 256 if n < big else 16
        hog[n] = None
    gc.collect()
    cfg, errs, src, mig = config.load(PATH)
    srcs[i] = src
    if not errs:
        kinds[i] = 0
    elif errs[0].startswith(PATH) and errs[0].startswith("loading failed (MemoryError",
                                                           len(PATH) + 2):
        kinds[i] = 1
    else:
        # any other error is kept as is, for the assertion message
        kinds[i] = 2 if errs[0].startswith("config: out of memory while ") else errs[0]
    oks[i] = (cfg == config.DEFAULT) if src == "default" else (cfg.get("node_id") == NODE_ID)
    cfg = errs = mig = None
    i += 1
    if src == "file":
        break
hog = None
gc.collect()
for j in range(i):
    print(json.dumps([srcs[j], oks[j], kinds[j]]))
"""


@pytest.mark.parametrize("name", ["full", "v1_no_sensors"])
def test_load_never_raises_when_starved_of_memory(mp, files, tmp_path, name):
    # the current file, and a version-1 file that is migrated and written back
    if name == "full":
        path, node_id = files["full"], FULL["node_id"]
    else:
        path, node_id = str(tmp_path / "v1.json"), "bench-07"
        (tmp_path / "v1.json").write_bytes((V1 / "no_sensors.json").read_bytes())
    src = f"PATH = {path!r}\nNODE_ID = {node_id!r}\n" + MP_STARVED
    out = mp.run_json(src, heapsize=mpinfo.heapsize(128))
    assert out[-1] == ["file", True, 0]
    starved = out[:-1]
    assert starved, "the first attempts must have run out of memory"
    for src, ok, kind in starved:
        # DEFAULT, and the error names the file when there was room to format it, else a
        # preallocated answer (load) or a constant one (validate)
        assert src == "default" and ok and kind in (1, 2), out
    # whatever step the memory ran out at, the file on flash is a valid one
    cfg, errs, src, _ = config.load(path, save=False)
    assert (errs, src, cfg["node_id"]) == ([], "file", node_id)


def test_is_configured():
    assert config.is_configured(validate(FULL, SCHEMA)[0])
    assert not config.is_configured(config.DEFAULT)
    only_flow = validate({"version": 2, "flow": FULL["flow"]}, SCHEMA)[0]
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


# ---- migration from older versions -------------------------------------------------------

V1 = REPO / "tests" / "config_v1"  # version-1 files as the firmware before version 2 read them


def _v1(name):
    return json.loads((V1 / name).read_text())


def _as_v2(doc, **site):
    """What the migration must make of a version-1 doc: only the version changes."""
    out = copy.deepcopy(doc)
    out["version"] = 2
    if site:
        out["site"] = site
    return out


def _readme_keyed():
    doc = _v1("readme_example.json")
    doc["site"] = {"mains_hz": 60}  # the technician set the key and left the version
    return doc


def _with_tick(doc, tick_ms):
    doc = copy.deepcopy(doc)
    doc.setdefault("control", {})["tick_ms"] = tick_ms
    return doc


# name -> the file's text; every case is loaded twice (the second load reads what the first
# wrote back) in CPython and in MicroPython, each from its own copy
MIGRATION_CASES = {
    "readme_example": (V1 / "readme_example.json").read_text(),
    "harness_default": (V1 / "harness_default.json").read_text(),
    "full_v1": json.dumps(with_("site", DEL) | {"version": 1}),
    "no_sensors": (V1 / "no_sensors.json").read_text(),
    "minimal_v1": '{"version": 1}',
    "empty_sensors_v1": '{"version": 1, "sensors": {}}',
    "readme_keyed": json.dumps(_readme_keyed()),
    "readme_invalid": json.dumps(_with_tick(_v1("readme_example.json"), 5000)),
    "no_sensors_invalid": json.dumps(_with_tick(_v1("no_sensors.json"), 5000)),
    "current": json.dumps(FULL),
    "future": json.dumps(with_("version", 3)),
    "far_future": '{"version": 1000000000000000000000000000000}',
    "v0": '{"version": 0}',
    "v_negative": '{"version": -1, "sensors": {}}',
}

MP_MIGRATE = r"""
import json, os
from heatgw import config
os.chdir(DIR)
for name in NAMES:
    out = []
    for _ in range(2):
        cfg, errs, src, mig = config.load(name)
        out.append({"cfg": json.loads(config.dumps(cfg)), "errs": errs, "src": src,
                    "mig": mig, "configured": config.is_configured(cfg)})
    print(json.dumps(out))
"""


def _load_twice(name):
    out = []
    for _ in range(2):
        cfg, errs, src, mig = config.load(name)
        out.append({"cfg": json.loads(config.dumps(cfg)), "errs": errs, "src": src,
                    "mig": mig, "configured": config.is_configured(cfg)})
    return out


def _sealed_doc(data):
    """The document of a file the node wrote: it must carry a matching seal."""
    doc, err, sealed = config.parse(data, "written")
    assert err is None and sealed is True, (err, data[:100])
    return doc


def _files_after(d):
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())}


@pytest.fixture(scope="module")
def migrated(mp, tmp_path_factory):
    """{case: {"cp": [load, load], "mp": [...], "files_cp": {...}, "files_mp": {...}}}"""
    dirs = {}
    for side in ("cp", "mp"):
        d = dirs[side] = tmp_path_factory.mktemp("migrate_" + side)
        for name, text in MIGRATION_CASES.items():
            (d / f"{name}.json").write_text(text)
    names = [f"{n}.json" for n in MIGRATION_CASES]
    mp_out = mp.run_json(f"DIR = {str(dirs['mp'])!r}\nNAMES = {names!r}\n" + MP_MIGRATE)
    cwd = os.getcwd()
    os.chdir(dirs["cp"])
    try:
        cp_out = [_load_twice(n) for n in names]
    finally:
        os.chdir(cwd)
    files = {side: _files_after(dirs[side]) for side in dirs}
    out = {}
    for i, name in enumerate(MIGRATION_CASES):
        out[name] = {"cp": cp_out[i], "mp": mp_out[i],
                     "files_cp": {k: v for k, v in files["cp"].items()
                                  if k.startswith(name + ".json")},
                     "files_mp": {k: v for k, v in files["mp"].items()
                                  if k.startswith(name + ".json")}}
    return out


def _same_on_both(r):
    """MicroPython and CPython agree, including on the files left on flash; floats are
    compared as the JSON they came back as."""
    assert r["mp"] == r["cp"]
    assert {k: json.loads(v) for k, v in r["files_mp"].items()} == \
        {k: json.loads(v) for k, v in r["files_cp"].items()}


NEEDS_MAINS = {"kind": "config", "migrated": [1, 2], "notes": [], "needs": ["site.mains_hz"],
               "saved": False}


@pytest.mark.parametrize("name", ["readme_example", "harness_default", "full_v1"])
def test_v1_file_with_sensors_names_the_one_key_and_stays_in_bypass(migrated, name):
    # 50 or 60 Hz cannot be guessed: the node runs the default configuration (bypass,
    # no_config) and says, in one error that starts with the key, what to set
    r = migrated[name]
    _same_on_both(r)
    for load in r["cp"]:  # every boot, until the technician sets it
        assert load["src"] == "default" and load["cfg"] == _default()
        assert load["configured"] is False
        assert load["errs"] == [migrate._MAINS]
        assert load["mig"] == NEEDS_MAINS
    assert migrate._MAINS.startswith("site.mains_hz: set it to 50 or 60")
    # nothing written: the file is as the technician left it
    assert r["files_cp"] == {f"{name}.json": MIGRATION_CASES[name].encode()}


def test_v1_file_with_the_key_set_runs_and_is_written_back_once(migrated):
    r = migrated["readme_keyed"]
    _same_on_both(r)
    first, second = r["cp"]
    want = validate(_as_v2(_readme_keyed()), SCHEMA)
    assert want[1] == [] and want[0]["site"] == {"mains_hz": 60}
    assert first["src"] == "file" and first["errs"] == [] and first["configured"] is True
    assert first["cfg"] == json.loads(json.dumps(want[0]))
    assert first["mig"] == {"kind": "config", "migrated": [1, 2], "saved": True, "needs": [],
                            "notes": ["v2: site.mains_hz: already set",
                                      "saved as version 2; the old file is "
                                      "readme_keyed.json.v1"]}
    # the second boot reads the version-2 file: no migration, the same configuration
    assert second == {**first, "mig": None}
    files = r["files_cp"]
    assert _sealed_doc(files["readme_keyed.json"]) == _as_v2(_readme_keyed())
    assert files["readme_keyed.json.v1"] == MIGRATION_CASES["readme_keyed"].encode()
    assert sorted(files) == ["readme_keyed.json", "readme_keyed.json.v1"]  # no .new left


@pytest.mark.parametrize("name", ["no_sensors", "minimal_v1", "empty_sensors_v1"])
def test_v1_file_without_sensors_migrates_silently(migrated, name):
    r = migrated[name]
    _same_on_both(r)
    first, second = r["cp"]
    doc = json.loads(MIGRATION_CASES[name])
    want = validate(_as_v2(doc), SCHEMA)[0]
    assert first["src"] == "file" and first["errs"] == []
    assert first["cfg"] == json.loads(json.dumps(want))
    assert "mains_hz" not in first["cfg"]["site"]
    assert first["mig"] == {"kind": "config", "migrated": [1, 2], "saved": True, "needs": [],
                            "notes": ["v2: site.mains_hz: not needed, no sensor configured",
                                      f"saved as version 2; the old file is {name}.json.v1"]}
    assert second == {**first, "mig": None}
    files = r["files_cp"]
    assert _sealed_doc(files[f"{name}.json"]) == _as_v2(doc)  # no key lost or changed
    assert files[f"{name}.json.v1"] == MIGRATION_CASES[name].encode()  # byte for byte
    assert sorted(files) == [f"{name}.json", f"{name}.json.v1"]


def test_migrated_v1_file_that_is_invalid_otherwise_reports_everything(migrated):
    r = migrated["readme_invalid"]
    _same_on_both(r)
    tick = "control.tick_ms: 5000 is above the maximum 1000 ms"
    for load in r["cp"]:
        assert load["src"] == "default" and load["errs"] == [migrate._MAINS, tick]
    r = migrated["no_sensors_invalid"]
    _same_on_both(r)
    for load in r["cp"]:
        assert load["src"] == "default" and load["errs"] == [tick]
        assert load["mig"]["saved"] is False and load["mig"]["needs"] == []
    assert sorted(r["files_cp"]) == ["no_sensors_invalid.json"]  # never written back


def test_current_file_runs_without_migration(migrated):
    r = migrated["current"]
    _same_on_both(r)
    for load in r["cp"]:
        assert (load["src"], load["errs"], load["mig"]) == ("file", [], None)
        assert load["cfg"] == FULL
    assert r["files_cp"] == {"current.json": MIGRATION_CASES["current"].encode()}


@pytest.mark.parametrize("name,error", [
    ("future", "version: 3 is newer than this firmware's 2: update the firmware, or write a "
     "version-2 file"),
    ("far_future", "version: a huge integer is newer than this firmware's 2: update the "
     "firmware, or write a version-2 file"),
    ("v0", "version: 0 is not a known version: this firmware reads 1 to 2"),
    ("v_negative", "version: -1 is not a known version: this firmware reads 1 to 2"),
])
def test_unknown_version_is_refused_clearly(migrated, name, error):
    r = migrated[name]
    _same_on_both(r)
    for load in r["cp"]:
        assert (load["src"], load["errs"], load["mig"]) == ("default", [error], None)
        assert load["cfg"] == _default()
    assert r["files_cp"] == {f"{name}.json": MIGRATION_CASES[name].encode()}


# version-1 documents, valid or not: upgrade() changes the version and nothing else
UPGRADE_DOCS = [json.loads(t) for n, t in MIGRATION_CASES.items()
                if json.loads(t).get("version") == 1] + [
    {"version": 1, "sensors": {"supply": {"r0_ohm": 1000, "wires": 4}}, "site": {"x": 1}},
    {"version": 1, "sensors": "all", "bogus": [1, {"a": None}], "node_id": 7},
    {"version": 1, "site": 50, "flow": None},
    {"version": 1, "sensors": {}, "site": {"mains_hz": 60}},
]

MP_UPGRADE = r"""
import sys, json
from heatgw import migrate
while True:
    line = sys.stdin.readline()
    if not line:
        break
    doc = json.loads(line)
    rec, needs = migrate.upgrade(doc, 1)
    print(json.dumps([doc, rec, [list(n) for n in needs]]))
"""


def test_upgrade_never_loses_or_changes_other_keys(mp):
    lines = [json.dumps(d) for d in UPGRADE_DOCS]
    mp_out = mp.run_json(MP_UPGRADE, stdin="\n".join(lines) + "\n")
    assert len(mp_out) == len(UPGRADE_DOCS)
    for before, got in zip(UPGRADE_DOCS, mp_out, strict=True):
        doc = copy.deepcopy(before)
        rec, needs = migrate.upgrade(doc, 1)
        assert doc == _as_v2(before)  # compared key by key, nested, before and after
        assert json.loads(json.dumps([doc, rec, [list(n) for n in needs]])) == got
        assert rec["migrated"] == [1, 2]
        sensors = before.get("sensors")
        site = before.get("site")
        set_already = isinstance(site, dict) and "mains_hz" in site
        asked = isinstance(sensors, dict) and bool(sensors) and not set_already
        assert rec["needs"] == (["site.mains_hz"] if asked else [])
        assert [k for k, _ in needs] == rec["needs"]


def test_migration_steps_cover_every_version():
    assert migrate.FIRST == 1 and len(migrate.STEPS) == VERSION - migrate.FIRST
    assert SCHEMA["keys"]["version"]["enum"] == [VERSION]
    assert config.DEFAULT["version"] == VERSION


def test_a_failed_write_back_still_runs_the_migrated_config(mp, tmp_path):
    # the backup's name is taken by a directory: the write fails before the file changes
    text = (V1 / "no_sensors.json").read_bytes()
    for side in ("cp", "mp"):
        d = tmp_path / side
        (d / "config.json.v1").mkdir(parents=True)
        (d / "config.json").write_bytes(text)
    src = f"DIR = {str(tmp_path / 'mp')!r}\nNAMES = ['config.json']\n" + MP_MIGRATE
    mp_first = mp.run_json(src)[0][0]
    cwd = os.getcwd()
    os.chdir(tmp_path / "cp")
    try:
        cp_first = _load_twice("config.json")[0]
    finally:
        os.chdir(cwd)
    for first in (cp_first, mp_first):
        assert first["src"] == "file" and first["errs"] == []
        assert first["cfg"]["node_id"] == "bench-07" and first["mig"]["saved"] is False
        note = first["mig"]["notes"][-1]
        assert note.startswith("not saved (") and note.endswith(
            "): migrated again at the next boot"), note
    for side in ("cp", "mp"):
        d = tmp_path / side
        assert (d / "config.json").read_bytes() == text
        assert sorted(p.name for p in d.iterdir()) == ["config.json", "config.json.v1"]


MP_START = r"""
import sys, json
from heatgw import start
for path in PATHS:
    cfg, errors, source, configured, mig = start.load_config(path)
    print(json.dumps([source, errors, configured, mig,
                      [m for m in ("heatgw.config", "heatgw.schema", "heatgw.config_schema",
                                   "heatgw.migrate", "heatgw.strictjson") if m in sys.modules]]))
"""


def test_start_passes_the_migration_and_forgets_the_module(mp, tmp_path):
    (tmp_path / "v1.json").write_bytes((V1 / "readme_example.json").read_bytes())
    (tmp_path / "v2.json").write_text(json.dumps(FULL))
    out = mp.run_json("PATHS = %r\n" % [str(tmp_path / "v1.json"), str(tmp_path / "v2.json")]
                      + MP_START)
    assert out[0] == ["default", [migrate._MAINS], False, [NEEDS_MAINS], []]
    # a current file written by hand (no seal): accepted, with the warning event
    v2 = str(tmp_path / "v2.json")
    assert out[1] == ["file", [], True, [{"kind": "config", "integrity": "none", "file": v2,
                                          "note": "no seal (edited by hand?): accepted; "
                                                  "`config save` seals it"}], []]


MP_NO_MIGRATE = r"""
import sys
from heatgw import config
config.load(PATH)
print("heatgw.migrate" in sys.modules)
"""


def test_a_current_file_never_imports_the_migrations(mp, files):
    assert mp.run_code(f"PATH = {files['full']!r}\n" + MP_NO_MIGRATE).strip() == "False"


# ---- host CLI ----------------------------------------------------------------------------

def _cli(*args):
    return subprocess.run([sys.executable, "-m", "host_tools.config_check", *args], cwd=REPO,
                          capture_output=True, text=True)


def test_cli_valid_file_prints_filled_config(files):
    p = _cli(files["minimal"])
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout) == validate({"version": 2}, SCHEMA)[0]
    assert p.stderr == ""
    assert config_check.check(files["full"]) == (FULL, [], None)


def test_cli_invalid_file_prints_errors_and_exits_1(files):
    p = _cli(files["schema"])
    assert p.returncode == 1
    assert p.stderr.strip() == "control.tick_ms: 5000 is above the maximum 1000 ms"
    assert p.stdout == ""
    for name in ("missing", "badjson", "empty"):
        p = _cli(files[name])
        assert p.returncode == 1 and p.stderr.startswith(files[name] + ": "), name
    assert config_check.check(files["missing"]) == \
        (None, [files["missing"] + ": not found"], None)


def test_cli_reports_the_migration_and_never_writes(tmp_path):
    v1 = tmp_path / "no_sensors.json"
    v1.write_bytes((V1 / "no_sensors.json").read_bytes())
    p = _cli(str(v1))
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout) == validate(_as_v2(_v1("no_sensors.json")), SCHEMA)[0]
    assert p.stderr.splitlines() == [
        f"{v1}: version 1, migrated to 2 as the node does at boot",
        "  v2: site.mains_hz: not needed, no sensor configured",
        "  the node writes it back once as version 2, the old file kept as <file>.v1"]
    with_sensors = tmp_path / "readme_example.json"
    with_sensors.write_bytes((V1 / "readme_example.json").read_bytes())
    p = _cli(str(with_sensors))
    assert p.returncode == 1 and p.stdout == ""
    assert p.stderr.splitlines() == [
        f"{with_sensors}: version 1, migrated to 2 as the node does at boot", migrate._MAINS]
    assert config_check.check(with_sensors) == (None, [migrate._MAINS], NEEDS_MAINS)
    # the technician's files are never touched by the check
    assert sorted(p.name for p in tmp_path.iterdir()) == ["no_sensors.json",
                                                          "readme_example.json"]
    assert v1.read_bytes() == (V1 / "no_sensors.json").read_bytes()


def test_cli_usage_and_doc():
    assert _cli().returncode == 2
    p = _cli("--doc")
    assert p.returncode == 0
    for path, _node in _walk(SCHEMA):
        if path:
            assert f"\n{path}: " in "\n" + p.stdout, path
    assert "\nsite.mains_hz: int; required with sensors; one of 50, 60; Hz - " in p.stdout


# ---- the node on the host board: an upgrade that finds a version-1 file ------------------

def _run_node(tmp_path, name, config_text, **extra):
    from host_tools.harness import run_scenario  # the plant harness, only for these tests

    sc = {"name": name, "duration_s": 1500, "load_kw": 100, "demand_kw": 100,
          "initial": {"tank_c": 37.8, "it_feed_c": 40.0}, "config_text": config_text, **extra}
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(sc))
    s, h = run_scenario(path, workdir=tmp_path / name)
    return s, h.console_path.read_text()


def _config_events(console):
    return [json.loads(line[len("event: "):]) for line in console.splitlines()
            if line.startswith("event: ") and '"kind": "config"' in line]


def test_node_with_the_readme_v1_file_names_the_key_and_stays_in_bypass(tmp_path):
    s, console = _run_node(tmp_path, "v1_readme", (V1 / "readme_example.json").read_text())
    assert "Traceback" not in console, console[-3000:]
    assert "config: " + migrate._MAINS in console
    assert "running the default configuration" in console
    assert s["relay_transitions"] == []  # never left the safe state
    assert [b["cause"] for b in s["boots"]] == ["power_on"]  # and never crashed
    (ev,) = _config_events(console)
    assert {k: ev[k] for k in NEEDS_MAINS} == NEEDS_MAINS


def test_node_with_the_key_set_in_its_v1_file_runs_and_migrates_once(tmp_path):
    # a power cut after the first boot: the second boot reads the written-back file
    keyed = _v1("readme_example.json") | {"site": {"mains_hz": 50}}
    s, console = _run_node(tmp_path, "v1_keyed", json.dumps(keyed),
                           events=[{"t_s": 120, "do": "power_cut", "off_s": 5}])
    assert "Traceback" not in console, console[-3000:]
    assert "running the default configuration" not in console
    assert [b["cause"] for b in s["boots"]] == ["power_on", "power_cut"]
    (ev,) = _config_events(console)  # reported once: the first boot wrote version 2
    assert ev["migrated"] == [1, 2] and ev["saved"] is True and ev["needs"] == []
    # the sensors read and reuse runs
    assert [t["state"] for t in s["relay_transitions"]][:1] == ["reuse"], s["relay_transitions"]


def test_readme_example_is_a_valid_current_file():
    text = (REPO / "README.md").read_text()
    section = text[text.index("## Configuration\n"):]
    start = section.index("```json\n") + len("```json\n")
    example = section[start:section.index("\n```", start)]
    cfg, errs = validate(json.loads(example), SCHEMA)
    assert errs == []
    assert cfg["version"] == VERSION and cfg["site"]["mains_hz"] in (50, 60)


MP_FILTER = r"""
import json
import board
from heatgw.app import Gateway


class G:  # only what Gateway._build_sensors reads
    pass


for hz in (50, 60):
    g = G()
    g.board = board
    g.cfg = {"site": {"mains_hz": hz}}
    sc = {"r0_ohm": 1000, "wires": 4, "offset_k": 0.0, "min_c": 0.0, "max_c": 120.0}
    Gateway._build_sensors(g, {"supply": sc, "it_coolant": sc})
    print(json.dumps([hz, [board.rtd_chip(n).config & 1 for n in ("supply", "it_coolant")]]))
"""


def test_site_mains_hz_sets_every_converters_filter(mp):
    # configuration register D0: 1 = 50 Hz filter, 0 = 60 Hz (the emulated chip's register)
    assert mp.run_json(MP_FILTER, board="host") == [[50, [1, 1]], [60, [0, 0]]]


MP_CUT = r"""
import json, os, vfs
from flashdev import FlashDev, mount
from heatgw import config

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


def read(name):
    with open("/fl/" + name) as f:
        return f.read()


base = T + "/base.img"
dev = boot(base)
with open("/fl/config.json", "w") as f:
    f.write(TEXT)
off(dev)
# the flash operations of one migrating boot (the write-back)
copy(base, T + "/dry.img")
dev = boot(T + "/dry.img")
ops = dev.ops
r = config.load("/fl/config.json")
print(json.dumps(["dry", dev.ops - ops, r[2], r[3]["saved"]]))
total = dev.ops - ops
off(dev)
for torn in (0, 7):
    for k in range(1, total + 1):
        img = T + "/cut.img"
        copy(base, img)
        dev = boot(img)
        dev.arm_cut(k, torn)
        first = config.load("/fl/config.json")[2]
        off(dev)
        dev = boot(img)  # the flash after the reset
        cfg, errs, src, mig = config.load("/fl/config.json")
        again = config.load("/fl/config.json")[3]
        print(json.dumps([torn, k, first, src, errs, cfg["node_id"], mig and mig["saved"],
                          again, sorted(os.listdir("/fl")), read("config.json"),
                          read("config.json.v1")]))
        off(dev)
"""


def test_a_power_cut_during_the_write_back_never_loses_the_config(mp, tmp_path):
    # at every flash operation of the migrating boot (littlefs on the host board's NOR
    # flash), whole and torn: the next boot runs the configuration and migrates at most
    # once more; the backup ends up byte for byte the version-1 file
    text = (V1 / "no_sensors.json").read_text()
    out = mp.run_json(f"T = {str(tmp_path)!r}\nTEXT = {text!r}\n" + MP_CUT, board="host")
    dry, cuts = out[0], out[1:]
    assert dry[0] == "dry" and dry[2:] == ["file", True]
    assert dry[1] >= 3 and len(cuts) == 2 * dry[1]
    want = _as_v2(_v1("no_sensors.json"))
    for torn, k, first, src, errs, node_id, saved, again, names, new, backup in cuts:
        case = (torn, k)
        assert first in ("file", "default"), case  # the cut boot itself never raised
        assert (src, errs, node_id) == ("file", [], "bench-07"), case
        # True: migrated again (the old file was still there), None: the rename had landed
        assert saved in (True, None), case
        assert again is None, case  # and from then on: no more migration
        assert names == ["config.json", "config.json.v1"], case
        assert _sealed_doc(new.encode()) == want and backup == text, case
