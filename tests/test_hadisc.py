"""firmware/heatgw/hadisc.py: Home Assistant MQTT discovery configs.

Checked against Home Assistant's documentation (cited in the module): topic format and
id characters, required keys, device classes with their units and state classes; every
value template reads a key the telemetry payload has; the configs come one at a time and
are the same in micropython.
"""

import json
import re
import sys
import types

import pytest

from host_tools.paths import FIRMWARE
from tests.payload_schemas import validate

sys.path.insert(0, str(FIRMWARE))

from heatgw import hadisc, payloads  # noqa: E402
from heatgw.topics import Topics  # noqa: E402

T = Topics("heatgw", "site1", "gw-07")
DISC = "homeassistant"
ID_RE = re.compile(r"^[a-zA-Z0-9_-]+$")  # HA: node_id and object_id characters
# HA's sensor device classes used here -> units it accepts (integrations/sensor) and the
# state classes it allows (sensor/const.py DEVICE_CLASS_STATE_CLASSES)
UNITS = {"temperature": {"°C", "°F", "K"}, "power": {"mW", "W", "kW", "MW", "GW", "TW"},
         "energy": {"Wh", "kWh", "MWh", "GWh", "J", "kJ", "MJ", "GJ"},
         "volume": {"L", "mL", "gal", "fl. oz.", "m³", "ft³", "CCF"},
         "volume_flow_rate": {"m³/h", "m³/s", "ft³/min", "L/h", "L/min", "L/s", "gal/min",
                              "mL/s"}}
STATE_CLASSES = {"temperature": {"measurement"}, "power": {"measurement"},
                 "volume_flow_rate": {"measurement"},
                 "energy": {"total", "total_increasing"},
                 "volume": {"total", "total_increasing"}}


def all_configs(**kw):
    return [(t, json.loads(p)) for t, p in hadisc.configs(T, DISC, **kw)]


def telemetry_keys():
    w = payloads.Writer(1024)
    return set(json.loads(bytes(payloads.telemetry(w, payloads.Snapshot(), 1))))


def test_configs_one_at_a_time():
    gen = hadisc.configs(T, DISC)
    assert isinstance(gen, types.GeneratorType)
    topic, payload = next(gen)
    assert isinstance(payload, bytes)
    assert topic == "homeassistant/sensor/site1_gw-07/supply_c/config"


def test_every_config_is_valid_and_complete():
    cfgs = all_configs()
    assert len(cfgs) == len(hadisc.ENTITIES) == 10
    fixed = {x[1] for x in T.all()}
    keys = telemetry_keys()
    uids = set()
    for topic, c in cfgs:
        prefix, comp, node_id, obj, last = topic.split("/")
        assert (prefix, last) == (DISC, "config")
        assert comp in ("sensor", "binary_sensor")
        assert ID_RE.match(node_id) and ID_RE.match(obj)
        for k in ("name", "unique_id", "state_topic", "availability_topic", "device",
                  "value_template"):
            assert k in c, (topic, k)
        assert c["state_topic"] in fixed and c["state_topic"] == T.telemetry
        assert c["availability_topic"] == T.status
        assert (c["payload_available"], c["payload_not_available"]) == ("online", "offline")
        dev = c["device"]
        assert dev["identifiers"] == ["heatgw_site1_gw-07"]
        assert dev["sw_version"] == payloads.FW_VERSION
        uids.add(c["unique_id"])
        # the template reads keys the telemetry payload has
        used = re.findall(r"value_json\.([a-z_0-9]+)", c["value_template"])
        assert used and set(used) <= keys, (topic, used)
        if comp == "sensor":
            dc = c.get("device_class")
            if dc is not None:
                assert c["unit_of_measurement"] in UNITS[dc], topic
                assert c["state_class"] in STATE_CLASSES[dc], topic
        else:
            assert (c["payload_on"], c["payload_off"]) == ("reuse", "bypass")
            assert used == ["state"]
    assert len(uids) == len(cfgs)


def test_energy_and_volume_classes():
    cfgs = {t.split("/")[3]: c for t, c in all_configs()}
    e = cfgs["energy_wh"]
    assert (e["device_class"], e["unit_of_measurement"], e["state_class"]) == (
        "energy", "kWh", "total_increasing")
    assert e["value_template"] == "{{ value_json.energy_wh / 1000 }}"
    v = cfgs["volume_l"]
    assert (v["device_class"], v["unit_of_measurement"], v["state_class"]) == (
        "volume", "m³", "total_increasing")
    assert cfgs["power_w"]["unit_of_measurement"] == "W"
    assert "device_class" not in cfgs["dt_k"]  # K as a difference, not a temperature
    assert cfgs["flow_m3h"]["device_class"] == "volume_flow_rate"


def test_only_configured_sensors():
    objs = [t.split("/")[3] for t, _ in all_configs(sensors=("supply", "return"))]
    assert "sink_return_c" not in objs and "it_coolant_c" not in objs
    assert {"supply_c", "return_c", "energy_wh", "state"} <= set(objs)


def test_removals_and_birth():
    rem = list(hadisc.removals(T, DISC))
    assert {t for t, _ in rem} == {t for t, _ in hadisc.configs(T, DISC)}
    assert all(p == b"" for _, p in rem)
    assert hadisc.birth_topic(DISC) == "homeassistant/status"
    assert hadisc.is_ha_online("homeassistant/status", b"online", DISC)
    assert hadisc.is_ha_online("homeassistant/status", memoryview(b"online"), DISC)
    assert not hadisc.is_ha_online("homeassistant/status", b"offline", DISC)
    assert not hadisc.is_ha_online("other/status", b"online", DISC)
    assert not hadisc.is_ha_online("homeassistant/status", b"\xff", DISC)


@pytest.mark.parametrize("bad", ["", "home+assistant", "ha/#", "/ha", "$SYS"])
def test_bad_discovery_prefix(bad):
    with pytest.raises(ValueError):
        next(hadisc.configs(T, bad))


def test_identical_in_micropython(mp):
    src = r"""
import json
from heatgw import hadisc
from heatgw.topics import Topics
t = Topics("heatgw", "site1", "gw-07")
for topic, payload in hadisc.configs(t, "homeassistant"):
    print(json.dumps([topic, payload.decode()]))
for topic, payload in hadisc.removals(t, "homeassistant"):
    print(json.dumps([topic, payload.decode()]))
"""
    got = mp.run_json(src)
    n = len(hadisc.ENTITIES)
    cfgs = [(t, validate(t, p.encode())) for t, p in got[:n]]  # against their schemas
    assert cfgs == [(t, c) for t, c in all_configs()]
    assert [(t, validate(t, p.encode())) for t, p in got[n:]] == [
        (t, None) for t, _ in hadisc.removals(T, DISC)]
