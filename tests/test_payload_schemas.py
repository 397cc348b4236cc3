"""schemas/ and tests/payload_schemas.py: the JSON Schemas of the node's MQTT payloads.

Every schema is valid under the 2020-12 metaschema and used by a topic; the enums agree
with the firmware's tables; the payloads the firmware builds pass; wrong payloads (a key
missing, a wrong type, a made-up number where null is required, an extra key, ...) are
rejected, so the validation every whole-node test runs on what it receives can fail.
"""

import json
import re
import sys

import pytest
from jsonschema import Draft202012Validator

from host_tools.paths import FIRMWARE, REPO
from tests.payload_schemas import PayloadError, schema, schema_files, schema_for, validate

sys.path.insert(0, str(FIRMWARE))

from heatgw import alarms, command, hadisc, payloads, recqueue  # noqa: E402
from heatgw.alarms import AlarmBook  # noqa: E402
from heatgw.topics import Topics  # noqa: E402

T = Topics("heatgw/eu", "site1", "gw-07")
DISC = "homeassistant"


def topics_of_the_node():
    """One topic of each kind the node publishes on (alarms: one id)."""
    out = [x[1] for x in T.all() if x[0] not in ("alarm", "cmd")]
    out.append(T.alarm("sensor_fault:supply"))
    out += [t for t, _ in hadisc.configs(T, DISC)]
    return out


def refs(doc):
    if isinstance(doc, dict):
        for k, v in doc.items():
            if k == "$ref" and not v.startswith("#"):
                yield v.split("#")[0]
            else:
                yield from refs(v)
    elif isinstance(doc, list):
        for v in doc:
            yield from refs(v)


def test_every_schema_is_valid_2020_12_and_used_by_a_topic():
    files = {p.name.removesuffix(".schema.json"): json.loads(p.read_text())
             for p in schema_files()}
    for name, doc in files.items():
        assert doc["$schema"] == "https://json-schema.org/draft/2020-12/schema", name
        assert doc["$id"].endswith(f"/{name}.schema.json"), name
        Draft202012Validator.check_schema(doc)
    used = {schema_for(t) for t in topics_of_the_node()}
    assert used <= set(files)
    reached = set(used)
    for name in used:  # and what those $ref (ha_common)
        reached |= {r.removesuffix(".schema.json") for r in refs(files[name])}
    assert reached == set(files), set(files) - reached


def test_topic_picks_its_schema():
    assert schema_for(T.status) == "status" and schema_for(T.cmd_ack) == "cmd_ack"
    assert schema_for(T.alarm("crash:control")) == "alarm"
    assert schema_for("homeassistant/binary_sensor/site1_gw-07/state/config") == \
        "ha_binary_sensor"
    for bad in (T.cmd, "homeassistant/switch/site1_gw-07/x/config", "heatgw/s1/n/other",
                "telemetry"):
        with pytest.raises(PayloadError):
            schema_for(bad)


def test_enums_agree_with_the_firmware():
    ev = schema("event")["properties"]
    assert ev["kind"]["enum"] == list(recqueue.EVENT_CODES) + ["alarm"]
    assert ev["code"]["enum"] == list(recqueue.ALARM_CODES)
    al = schema("alarm")["properties"]
    assert al["severity"]["enum"] == list(alarms.SEVERITIES)
    sources = {d[3] for d in alarms._TRIPS} | {d[3] for d in alarms._OTHERS}
    assert set(al["source"]["enum"]) == sources
    reasons = "|".join(r for r in command.REASONS if r != "accepted")
    assert schema("cmd_ack")["properties"]["error"]["pattern"] == f"^({reasons}): ."
    sensor = schema("ha_sensor")["properties"]
    for _obj, comp, _n, dev_cls, unit, st_cls, _t in (hadisc.ENTITIES + hadisc.RECOVERY
                                                       + hadisc.HEAT_CHECK):
        if comp == hadisc.SENSOR:
            assert unit is None or unit in sensor["unit_of_measurement"]["enum"]
            assert st_cls in sensor["state_class"]["enum"]
            assert dev_cls is None or dev_cls in sensor["device_class"]["enum"]
    state = schema("telemetry")["properties"]["state"]["enum"]
    assert state == schema("state")["properties"]["state"]["enum"] == ["bypass", "reuse"]


# -- good payloads, as the firmware builds them ------------------------------------------


def snapshot():
    s = payloads.Snapshot()
    for n in ("supply", "return", "sink_return"):
        s.configured[n] = True
        s.reasons[n] = None
    s.temps_c.update(supply=45.5, **{"return": 35.25}, sink_return=30.0)
    s.flow_m3h, s.flow_why, s.power_w, s.power_why = 5.5, None, 63250.0, None
    s.heap_free, s.boot, s.up_ms, s.utc = 40000, 3, 123456, 1_760_000_000
    return s


def telemetry_doc(**kw):
    d = json.loads(bytes(payloads.telemetry(payloads.Writer(1024), snapshot(), 42)))
    d.update(kw)
    return d


def alarm_doc():
    b = AlarmBook()
    b.feed("event", {"kind": "trip", "reason": "sensor_fault:supply", "up_ms": 5,
                     "values": {"sensor_reason": "open"}})
    return json.loads(bytes(payloads.alarm(payloads.Writer(1024),
                                           b.get("sensor_fault:supply"))))


def state_doc():
    return json.loads(bytes(payloads.state(payloads.Writer(1024), "bypass", "boot", (),
                                           ("valve_stuck",), False, "0a1b2c3d", 1, 2)))


EVENT = {"v": 1, "seq": 7, "kind": "trip", "boot": 1, "up_ms": 5000,
         "text": "reason=sensor_fault:supply"}
DROP = {"v": 1, "seq": 9, "kind": "queue_drop", "boot": 1, "up_ms": 6000, "first_seq": 1,
        "last_seq": 4, "count": 4, "text": ""}
ALARM_EV = {"v": 1, "seq": 8, "kind": "alarm", "code": "sensor_fault", "boot": 1,
            "up_ms": 5000, "utc": 1_760_000_000, "text": "sensor_fault:supply raise"}


def enc(doc):
    return doc if isinstance(doc, bytes) else json.dumps(doc).encode()


def ha(obj):
    for t, p in hadisc.configs(T, DISC):
        if t.split("/")[3] == obj:
            return t, json.loads(p)
    raise KeyError(obj)


GOOD = [
    (T.status, b"online"), (T.status, b"offline"),
    (T.telemetry, telemetry_doc()), (T.telemetry, telemetry_doc(resent=True)),
    (T.state, state_doc()),
    (T.alarm("sensor_fault:supply"), alarm_doc()), (T.alarm("sensor_fault:supply"), b""),
    (T.event, EVENT), (T.event, DROP), (T.event, ALARM_EV), (T.event, dict(EVENT, resent=True)),
    (T.cmd_ack, {"id": "c-1", "ok": True}),
    (T.cmd_ack, {"id": "c-3", "ok": True, "resend": [2, 4], "gone": []}),
    (T.cmd_ack, {"id": "c-4", "ok": True, "resend": None, "gone": [[1, 5000]]}),
    (T.cmd_ack, {"id": None, "ok": False, "error": "forged: the mac does not match"}),
    ha("energy_wh"), ha("dt_k"), ha("state"), (ha("state")[0], b""),
]


@pytest.mark.parametrize("topic,doc", GOOD, ids=[f"{i}-{g[0].rsplit('/', 2)[-2]}"
                                                  for i, g in enumerate(GOOD)])
def test_payloads_the_firmware_builds_pass(topic, doc):
    validate(topic, enc(doc))


def test_the_firmware_builds_every_invalid_value_as_null_with_a_reason():
    s = snapshot()
    s.temps_c["supply"] = None
    s.reasons["supply"] = "open"
    s.flow_m3h, s.flow_why = None, "stale"
    s.temps_c["sink_return"] = float("nan")
    d = validate(T.telemetry, bytes(payloads.telemetry(payloads.Writer(1024), s, 1)))
    assert d["dt_k"] is None and d["power_w"] is None and d["sink_return_why"] == "not_finite"


def readme_examples():
    """(topic, payload) of every ```json <topic> block in the README."""
    text = (REPO / "README.md").read_text()
    return re.findall(r"^```json ([^\s`]+)\n(.*?)^```$", text, re.M | re.S)


def test_the_readme_examples_pass():
    examples = readme_examples()
    for topic, block in examples:
        validate(topic, block.encode())
    kinds = {schema_for(t) for t, _ in examples}
    assert kinds == {"telemetry", "state", "event", "alarm", "cmd_ack"}, kinds


# -- wrong payloads are rejected -----------------------------------------------------------


def without(doc, key):
    d = dict(doc)
    del d[key]
    return d


BAD = [
    ("status: not one of the two", T.status, b"Online"),
    ("status: JSON quotes", T.status, b'"online"'),
    ("telemetry: a key missing", T.telemetry, without(telemetry_doc(), "supply_why")),
    ("telemetry: energy missing", T.telemetry, without(telemetry_doc(), "energy_wh")),
    ("telemetry: seq a string", T.telemetry, telemetry_doc(seq="42")),
    ("telemetry: energy a string", T.telemetry, telemetry_doc(energy_wh="34293552.503")),
    ("telemetry: a made-up number beside a reason", T.telemetry,
     telemetry_doc(supply_c=0.0, supply_why="open")),
    ("telemetry: null without a reason", T.telemetry, telemetry_doc(flow_m3h=None)),
    ("telemetry: dT a number with supply null", T.telemetry,
     telemetry_doc(supply_c=None, supply_why="open")),
    ("telemetry: power a number with dT null", T.telemetry,
     telemetry_doc(dt_k=None, dt_why="supply:open")),
    ("telemetry: an extra key", T.telemetry, telemetry_doc(extra=1)),
    ("telemetry: negative total", T.telemetry, telemetry_doc(volume_l=-1)),
    ("telemetry: wrong version", T.telemetry, telemetry_doc(v=2)),
    ("telemetry: seq 0", T.telemetry, telemetry_doc(seq=0)),
    ("telemetry: unknown state", T.telemetry, telemetry_doc(state="on")),
    ("telemetry: resent false", T.telemetry, telemetry_doc(resent=False)),
    ("telemetry: empty", T.telemetry, b""),
    ("telemetry: not JSON", T.telemetry, b"{v:1}"),
    ("state: fw missing", T.state, without(state_doc(), "fw")),
    ("state: a short config hash", T.state, dict(state_doc(), config_hash="0a1b")),
    ("alarm: unknown severity", T.alarm("sensor_fault:supply"),
     dict(alarm_doc(), severity="high")),
    ("alarm: id not the topic's", T.alarm("sensor_fault:return"), alarm_doc()),
    ("alarm: count a string", T.alarm("sensor_fault:supply"), dict(alarm_doc(), count="1")),
    ("alarm: active with a clear time", T.alarm("sensor_fault:supply"),
     dict(alarm_doc(), cleared_up_ms=9)),
    ("alarm: cleared, no ack due", T.alarm("sensor_fault:supply"),
     dict(alarm_doc(), active=False, cleared_up_ms=9)),
    ("alarm: acked by nobody", T.alarm("sensor_fault:supply"), dict(alarm_doc(), acked=True)),
    ("event: unknown kind", T.event, dict(EVENT, kind="explosion")),
    ("event: alarm without its code", T.event, without(ALARM_EV, "code")),
    ("event: a code on an event", T.event, dict(EVENT, code="fault")),
    ("event: queue drop without its range", T.event, without(DROP, "first_seq")),
    ("event: a range on another event", T.event, dict(EVENT, first_seq=1)),
    ("event: text too long", T.event, dict(EVENT, text="x" * 61)),
    ("event: seq missing", T.event, without(EVENT, "seq")),
    ("cmd_ack: refused without an error", T.cmd_ack, {"id": "c-1", "ok": False}),
    ("cmd_ack: error with an unknown reason", T.cmd_ack,
     {"id": "c-1", "ok": False, "error": "nope: x"}),
    ("cmd_ack: accepted with a null id", T.cmd_ack, {"id": None, "ok": True}),
    ("cmd_ack: ok a string", T.cmd_ack, {"id": "c-1", "ok": "true"}),
    ("cmd_ack: resend without gone", T.cmd_ack, {"id": "c-1", "ok": True, "resend": [1, 2]}),
    ("cmd_ack: a range of three", T.cmd_ack,
     {"id": "c-1", "ok": True, "resend": [1, 2, 3], "gone": []}),
    ("ha: an extra key", ha("energy_wh")[0], dict(ha("energy_wh")[1], icon="mdi:fire")),
    ("ha: energy in Wh", ha("energy_wh")[0], dict(ha("energy_wh")[1],
                                                  unit_of_measurement="Wh")),
    ("ha: energy as a measurement", ha("energy_wh")[0], dict(ha("energy_wh")[1],
                                                             state_class="measurement")),
    ("ha: no availability", ha("power_w")[0], without(ha("power_w")[1],
                                                      "availability_topic")),
    ("ha: binary sensor on 1", ha("state")[0], dict(ha("state")[1], payload_on="1")),
    ("ha: binary sensor with a unit", ha("state")[0], dict(ha("state")[1],
                                                           unit_of_measurement="W")),
    ("ha: device without sw_version", ha("state")[0],
     dict(ha("state")[1], device=without(ha("state")[1]["device"], "sw_version"))),
]


@pytest.mark.parametrize("what,topic,doc", BAD, ids=[b[0] for b in BAD])
def test_wrong_payloads_are_rejected(what, topic, doc):
    with pytest.raises(PayloadError):
        validate(topic, enc(doc))


def test_the_error_names_the_topic_and_the_key():
    with pytest.raises(PayloadError, match=r"telemetry: telemetry\.schema\.json: .*supply"):
        validate(T.telemetry, enc(telemetry_doc(supply_c=0.0, supply_why="open")))
