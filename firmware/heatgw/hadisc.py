"""Home Assistant MQTT discovery: one device, its entities fed by the telemetry topic.

    for topic, payload in configs(topics, "homeassistant"):   # one config at a time
        publish(topic, payload, retain=True, qos=1)
    if is_ha_online(topic, msg, "homeassistant"): ...          # HA restarted: republish

On only when a discovery prefix is configured. Each config is retained at
`<discovery_prefix>/<component>/<node_id>/<object_id>/config` with node_id
`<site>_<node>` and object_id the telemetry key (Home Assistant allows `[a-zA-Z0-9_-]`
in both; heatgw.topics enforces that set for site and node). Home Assistant announces
itself with `online` on `<discovery_prefix>/status` (its birth message); the node then
publishes every config again. An empty retained config deletes an entity (`removals`).

Entities: supply, return, sink-return and IT-coolant temperatures (°C), ΔT (K, no device
class: HA's temperature class would convert K as an absolute temperature), flow (m³/h,
volume_flow_rate), thermal power (W, power), energy (kWh, energy, total_increasing),
volume (m³, volume, total_increasing) and a binary sensor "heat reuse" (on = reuse,
off = bypass). Availability: the node's status topic (online / offline, its last will).
A `null` value in the telemetry renders as "None" through `value_json`, which HA's MQTT
sensor treats as unknown (its PAYLOAD_NONE) instead of a made-up number.

Checked against Home Assistant's documentation:
- MQTT discovery (topic format, id characters, empty payload deletes, birth message
  `online` on `homeassistant/status`): https://www.home-assistant.io/integrations/mqtt/
- MQTT sensor (state_topic, value_template, unit_of_measurement, device_class,
  state_class, unique_id, device, availability_topic, payload_available,
  payload_not_available): https://www.home-assistant.io/integrations/sensor.mqtt/
- MQTT binary sensor (payload_on, payload_off): https://www.home-assistant.io/integrations/binary_sensor.mqtt/
- Sensor device classes and their units (energy: kWh; volume: m³; volume_flow_rate:
  m³/h; power: W; temperature: °C): https://www.home-assistant.io/integrations/sensor/#device-class
- State classes (total_increasing for meters; a decrease is a new meter cycle):
  https://developers.home-assistant.io/blog/2021/08/16/state_class_total
"""

import json

from heatgw.payloads import FW_VERSION
from heatgw.topics import check_prefix

SENSOR = "sensor"
BINARY_SENSOR = "binary_sensor"

# object_id (= telemetry key the template reads), component, name, device_class,
# unit, state_class, template expression (None: the key itself)
ENTITIES = (
    ("supply_c", SENSOR, "Supply temperature", "temperature", "°C", "measurement", None),
    ("return_c", SENSOR, "Return temperature", "temperature", "°C", "measurement", None),
    ("sink_return_c", SENSOR, "Sink return temperature", "temperature", "°C",
     "measurement", None),
    ("it_coolant_c", SENSOR, "IT coolant temperature", "temperature", "°C",
     "measurement", None),
    ("dt_k", SENSOR, "Temperature difference", None, "K", "measurement", None),
    ("flow_m3h", SENSOR, "Flow", "volume_flow_rate", "m³/h", "measurement", None),
    ("power_w", SENSOR, "Thermal power", "power", "W", "measurement", None),
    ("energy_wh", SENSOR, "Heat energy", "energy", "kWh", "total_increasing",
     "value_json.energy_wh / 1000"),
    ("volume_l", SENSOR, "Volume", "volume", "m³", "total_increasing",
     "value_json.volume_l / 1000"),
    ("state", BINARY_SENSOR, "Heat reuse", None, None, None, None),
)
_TEMPS = {"supply_c": "supply", "return_c": "return", "sink_return_c": "sink_return",
          "it_coolant_c": "it_coolant"}

# With a `recovery` section (heatgw.recovery): the compute load and the ratio; the ratios
# have no unit (a fraction: heat delivered per unit of electric energy).
RECOVERY = (
    ("compute_w", SENSOR, "Compute power", "power", "W", "measurement", None),
    ("compute_energy_wh", SENSOR, "Compute energy", "energy", "kWh", "total_increasing",
     "value_json.compute_energy_wh / 1000"),
    ("ratio_interval", SENSOR, "Heat recovery ratio (interval)", None, None, "measurement",
     None),
    ("ratio_hour", SENSOR, "Heat recovery ratio (hour)", None, None, "measurement", None),
    ("ratio_total", SENSOR, "Heat recovery ratio (total)", None, None, "measurement", None),
)
HEAT_CHECK = (
    ("heat_meter_diff_pct", SENSOR, "Heat meter difference", None, "%", "measurement", None),
    ("heat_meter_diff_kwh", SENSOR, "Heat meter difference (energy)", None, "kWh",
     "measurement", None),
)
# A Modbus meter's values (the payload's `meters`): by the value's name
_METER_CLASSES = {"power_w": ("power", "W", "measurement"),
                  "energy_kwh": ("energy", "kWh", "total_increasing"),
                  "volume_m3": ("volume", "m³", "total_increasing"),
                  "flow_m3h": ("volume_flow_rate", "m³/h", "measurement")}


def more_entities(cfg):
    """The entities a configuration adds to ENTITIES: the recovery section's, and one per
    Modbus meter value (object_id meter_<meter>_<value>; a value name HA has no class for,
    e.g. pressure_bar, gets none and no unit: HA shows the number as is)."""
    rc = cfg.get("recovery") or {}
    if rc.get("compute"):
        yield from RECOVERY
    if rc.get("heat_check"):
        yield from HEAT_CHECK
    meters = (cfg.get("modbus") or {}).get("meters") or {}
    for name in sorted(meters):
        m = meters[name]
        names = set(m.get("registers") or ())
        if m.get("model"):
            names |= {"power_w", "energy_kwh"}
        for vn in sorted(names):
            dc, unit, sc = _METER_CLASSES.get(vn) or (None, None, "measurement")
            yield ("meter_%s_%s" % (name, vn), SENSOR, "%s %s" % (name, vn), dc, unit, sc,
                   "value_json.meters['%s'].%s" % (name, vn))


def check(discovery_prefix):
    """ValueError unless the discovery prefix is a valid topic prefix."""
    return check_prefix("homeassistant discovery prefix", discovery_prefix)


def birth_topic(discovery_prefix):
    return discovery_prefix + "/status"


def is_ha_online(topic, payload, discovery_prefix):
    """True for Home Assistant's birth message: republish the configs."""
    if topic != discovery_prefix + "/status":
        return False
    return payload == "online" if type(payload) is str else bytes(payload) == b"online"


def _ids(topics):
    node_id = topics.site + "_" + topics.node
    return node_id, "heatgw_" + node_id


def config_topic(topics, discovery_prefix, object_id, component=None):
    if component is None:
        component = BINARY_SENSOR if object_id == "state" else SENSOR
    return "%s/%s/%s/%s/config" % (discovery_prefix, component, _ids(topics)[0], object_id)


def _entities(sensors, cfg=None):
    for e in ENTITIES:
        name = _TEMPS.get(e[0])
        if name is None or sensors is None or name in sensors:
            yield e
    if cfg is not None:
        yield from more_entities(cfg)


def configs(topics, discovery_prefix, sensors=None, model="heatgw", cfg=None):
    """Yield (topic, payload bytes) of every entity's config, one at a time (RAM holds
    one). sensors: the configured temperature sensors (None: all four); cfg: the node's
    configuration, for the entities its recovery and modbus sections add."""
    check(discovery_prefix)
    node_id, uid = _ids(topics)
    for obj, comp, name, dev_cls, unit, st_cls, tpl in _entities(sensors, cfg):
        c = {
            "name": name,
            "unique_id": uid + "_" + obj,
            "state_topic": topics.telemetry,
            "availability_topic": topics.status,
            "payload_available": "online",
            "payload_not_available": "offline",
            "device": {"identifiers": [uid], "name": "heatgw " + node_id,
                       "manufacturer": "heatgw", "model": model, "sw_version": FW_VERSION},
        }
        if comp == BINARY_SENSOR:
            c["value_template"] = "{{ value_json.state }}"
            c["payload_on"] = "reuse"
            c["payload_off"] = "bypass"
        else:
            c["value_template"] = "{{ %s }}" % (tpl or "value_json." + obj)
            if unit is not None:  # a ratio has none
                c["unit_of_measurement"] = unit
            c["state_class"] = st_cls
            if dev_cls is not None:
                c["device_class"] = dev_cls
        yield (config_topic(topics, discovery_prefix, obj, comp), json.dumps(c).encode())
        c = None


def removals(topics, discovery_prefix, cfg=None):
    """Yield (topic, b"") for every entity: retained and empty, it deletes the entity
    (discovery switched off, a sensor removed); cfg: with those its sections add."""
    check(discovery_prefix)
    for e in _entities(None, cfg):
        yield (config_topic(topics, discovery_prefix, e[0], e[1]), b"")
