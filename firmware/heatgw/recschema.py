"""The `recovery` section of the configuration (heatgw.config_schema's format) and its
cross-checks, kept apart so that a node without it never loads them: install(SCHEMA) puts
RECOVERY in place of config_schema's stub, heatgw.config.load does that when a document
has the section (host_tools.config_check and the tests always do), and runs check() after
the schema. Both are dropped again after loading (heatgw.start.load_config).

check() (plain Python: CPython runs it too):
- the section sets compute, heat_check or both;
- compute.source "modbus": a `modbus` section with the meter (compute.meter, or the one
  meter of role compute when it is null; that name is filled in); the meter has role
  compute (mbplan.check: power_w or energy_kwh);
- compute.source "mqtt": an `mqtt` section (the telemetry's client subscribes); the path's
  parts are not empty;
- heat_check: the meter (heat_check.meter, or the one meter of role heat; filled in) has
  role heat (mbplan.check: energy_kwh).
"""

_METER_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789_-"
_LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-"

_COMPUTE = {
    "type": "object", "null": True, "default": None,
    "doc": "the compute load's electric power and energy: the heat recovery ratio's "
           "denominator; null: no ratio",
    "keys": {
        "source": {"type": "str", "req": True, "enum": ["modbus", "mqtt"],
                   "doc": "modbus: a meter in modbus.meters (its energy register, else its "
                          "power integrated); mqtt: a topic the site's IT monitoring "
                          "publishes (power, integrated)"},
        "meter": {"type": "str", "null": True, "default": None, "len": [1, 16],
                  "chars": _METER_CHARS,
                  "doc": "modbus: the meter's name in modbus.meters; null: the one meter of "
                         "role compute"},
        "topic": {"type": "str", "len": [1, 120], "chars": _LETTERS + "/.:",
                  "doc": "mqtt: the topic that carries the power (a topic name, no "
                         "wildcards)"},
        "path": {"type": "str", "len": [1, 64], "chars": _LETTERS + ".",
                 "doc": "mqtt: where the power is in the message's JSON: keys and list "
                        "indexes joined by dots, e.g. power.total_w or data.0.watts"},
        "scale": {"type": "float", "default": 1.0, "min": 0.000001, "max": 1e9, "unit": "",
                  "doc": "mqtt: watts per unit of the value (1 for W, 1000 for kW)"},
        "stale_s": {"type": "int", "default": 60, "min": 2, "max": 86400, "unit": "s",
                    "doc": "mqtt: a value older than this is no value (reason stale); also "
                           "the longest gap between two samples that is integrated"},
        "max_bytes": {"type": "int", "default": 512, "min": 16, "max": 512, "unit": "B",
                      "doc": "mqtt: longer messages are refused unread (fault too_large)"},
        "max_kw": {"type": "float", "default": 2000.0, "min": 0.1, "max": 100000.0,
                   "unit": "kW",
                   "doc": "the compute load's highest plausible power: a power above it is "
                          "refused (bad_value), an energy register that grows faster is a "
                          "meter reset or replacement (adds nothing)"},
    },
}
_HEAT_CHECK = {
    "type": "object", "null": True, "default": None,
    "doc": "compare a Modbus heat meter's energy total with this node's own metering; "
           "null: no comparison",
    "keys": {
        "meter": {"type": "str", "null": True, "default": None, "len": [1, 16],
                  "chars": _METER_CHARS,
                  "doc": "the heat meter's name in modbus.meters; null: the one meter of "
                         "role heat"},
        "limit_pct": {"type": "float", "null": True, "default": 5.0, "min": 0.1,
                      "max": 100.0, "unit": "%",
                      "doc": "the heat_meter_mismatch alarm when the two differ by more "
                             "than this; null: publish the difference, no alarm"},
        "min_kwh": {"type": "float", "default": 10.0, "min": 0.0, "max": 1e6, "unit": "kWh",
                    "doc": "no alarm before both have counted this much in the compared "
                           "spans (a percentage of a small energy says nothing)"},
    },
}
RECOVERY = {
    "type": "object", "null": True, "default": None,
    "doc": "the heat recovery ratio (heat delivered / the compute load's electric energy) "
           "and the heat meter plausibility check; null or absent: neither (nothing of it "
           "is loaded)",
    "keys": {"compute": _COMPUTE, "heat_check": _HEAT_CHECK},
}
RULES = [
    ["req", "recovery.compute.topic", "recovery.compute",
     "the topic the IT monitoring publishes", ["recovery.compute.source", ["mqtt"]]],
    ["req", "recovery.compute.path", "recovery.compute", "where the power is in its JSON",
     ["recovery.compute.source", ["mqtt"]]],
]


def install(schema):
    """Put RECOVERY into schema (config_schema.SCHEMA) in place of the stub, and its
    rules beside the others; idempotent."""
    schema["keys"]["recovery"] = RECOVERY
    for r in RULES:
        if r not in schema["rules"]:
            schema["rules"].append(r)


def _meter(cfg, name, role, where, errs):
    """The meter's name (resolved from its role when name is None), or None + an error."""
    meters = (cfg.get("modbus") or {}).get("meters") or {}
    if name is None:
        found = sorted(n for n in meters if meters[n].get("role") == role)
        if len(found) == 1:
            return found[0]
        if not found:
            errs.append("%s: no meter of role %s in modbus.meters (set its role, or name "
                        "it here)" % (where, role))
        else:
            errs.append("%s: %s all have role %s: name the one to use"
                        % (where, ", ".join(found), role))
        return None
    m = meters.get(name)
    if m is None:
        errs.append("%s: %r is not one of modbus.meters (%s)"
                    % (where, name, ", ".join(sorted(meters)) or "none configured"))
        return None
    if m.get("role") != role:
        errs.append("%s: modbus.meters.%s has role %s, not %s" % (where, name, m.get("role"),
                                                                   role))
        return None
    return name


def check(cfg):
    """Error strings (empty: fine) for a configuration the schema has passed; fills in the
    meters' names resolved from their roles."""
    errs = []
    rc = cfg.get("recovery")
    if not rc:
        return errs
    c = rc.get("compute")
    h = rc.get("heat_check")
    if not c and not h:
        errs.append("recovery: set compute, heat_check or both (or remove the section)")
    if c:
        if c["source"] == "modbus":
            name = _meter(cfg, c.get("meter"), "compute", "recovery.compute.meter", errs)
            if name is not None:
                c["meter"] = name
        else:
            if not cfg.get("mqtt"):
                errs.append("recovery.compute.source: mqtt needs the mqtt section (its "
                            "client subscribes to recovery.compute.topic)")
            path = c.get("path") or ""
            if "" in path.split("."):
                errs.append("recovery.compute.path: %r has an empty part" % (path,))
    if h:
        name = _meter(cfg, h.get("meter"), "heat", "recovery.heat_check.meter", errs)
        if name is not None:
            h["meter"] = name
    return errs
