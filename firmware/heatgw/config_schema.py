"""The configuration schema, as data only: heatgw.schema.validate() reads it on the device
and host_tools.config_check reads the very same file on the host.

Node keys (every one optional):
    type     "int" | "float" (an int is accepted and stored as float) | "bool" | "str" |
             "object"
    null     true: null is accepted (and is the value stored)
    req      true: the key must be present (no safe default exists)
    default  used when the key is absent; an object default ({}) is filled in turn
             (keys with neither req nor default stay absent)
    min max  inclusive bounds (numbers)
    step     the number must be a whole multiple of it (to 1e-6, single precision)
    enum     the allowed values
    len      [min, max] string length;  chars  the allowed characters
    unit doc installer documentation
    keys     object members; any other key is an error (typos must not pass)
    items    instead of keys: an object whose member names the installer chooses (Modbus
             buses, meters, registers), each member checked against this node; "len" and
             "chars" then constrain the names, "max_items" their number
    rules    cross-field checks on the filled object: [op, lhs, rhs, why(, when)]
             op: lt le gt ge eq.  lhs/rhs: a number, a dotted path, or [+|-|*|/, a, b] with
             a/b numbers, paths or terms (a division by 0 skips the rule). A "*" path
             segment runs the rule for every key there.
             when: [path, [values]] - the rule applies only if path holds one of values.
             A rule whose paths are absent (sensor or flow not configured) is skipped.
             op "req": ["req", key, object, why(, when)] - key (a path) is required whenever
             the object at that path has any member (a key without req or default).
             op "one": ["one", object, [key, ...], why(, when)] - the object, when present
             (not null), has exactly one of the keys.

Checks the schema cannot state (the Modbus section's cross-references: a meter's bus, the
flow meter, register ranges) are heatgw.mbplan.check(), which heatgw.config.load runs after
this schema when a `modbus` section is present, on the device and on the host alike.

VERSION is the format version a file must carry. Each change that adds a required key or
renames one bumps it and adds the step from the previous version to heatgw.migrate, which
heatgw.config.load applies to older files.
"""

VERSION = 2  # 2: site.mains_hz (the RTD converters' mains filter, 50 Hz hard-coded in 1)

# One MAX31865 channel. r0 and wires have no default: a wrong one is the commonest field
# fault and reads plausible temperatures (README, max31865).
_SENSOR = {
    "type": "object", "doc": "RTD channel (MAX31865)",
    "keys": {
        "r0_ohm": {"type": "int", "req": True, "enum": [100, 1000], "unit": "ohm",
                   "doc": "RTD resistance at 0 C: 100 (PT100) or 1000 (PT1000)"},
        "wires": {"type": "int", "req": True, "enum": [2, 3, 4],
                  "doc": "RTD wiring: 2, 3 or 4 wires"},
        "offset_k": {"type": "float", "default": 0.0, "min": -5.0, "max": 5.0, "unit": "K",
                     "doc": "calibration offset added to the reading"},
        "min_c": {"type": "float", "default": 0.0, "min": -50.0, "max": 200.0, "unit": "C",
                  "doc": "readings below this are a sensor fault"},
        "max_c": {"type": "float", "default": 120.0, "min": -50.0, "max": 200.0, "unit": "C",
                  "doc": "readings above this are a sensor fault"},
        "critical": {"type": "bool", "default": True,
                     "doc": "a fault or stale reading of this sensor forces bypass"},
    },
}

_ID_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_"
_FLUIDS = ["water", "propylene_glycol", "ethylene_glycol"]  # heatgw.fluid.FLUIDS
_GLYCOLS = ["propylene_glycol", "ethylene_glycol"]
# the pulse meter's rules, each for litres_per_pulse and for pulses_per_litre
_WHY_500HZ = "the pulse rate at max_m3h must be at most the input's 500 Hz"
_WHY_DEBOUNCE = "min_pulse_ms must be under half the pulse period at max_m3h"
_WHY_ZERO = "zero_after_s must exceed one pulse at control.sink_flow_min_m3h"

SCHEMA = {
    "type": "object", "doc": "heatgw node configuration (one JSON file)",
    "keys": {
        "version": {"type": "int", "req": True, "enum": [VERSION],
                    "doc": "configuration format version (older files are migrated)"},
        "node_id": {"type": "str", "default": "heatgw", "len": [1, 32],
                    "chars": _ID_CHARS,
                    "doc": "node name in MQTT topics: letters, digits, - and _"},
        "site": {
            "type": "object", "default": {}, "doc": "the installation site",
            "keys": {
                "mains_hz": {"type": "int", "enum": [50, 60], "unit": "Hz",
                             "doc": "mains frequency at the site, which the RTD converters "
                                    "filter out: 50 or 60"},
            },
        },
        "sensors": {
            "type": "object", "default": {},
            "doc": "temperature sensors; an absent one is not measured",
            "keys": {"supply": _SENSOR, "return": _SENSOR,
                     "sink_return": _SENSOR, "it_coolant": _SENSOR},
        },
        "flow": {
            "type": "object", "null": True, "default": None,
            "doc": "flow meter; null or absent: no flow measurement",
            "keys": {
                "type": {"type": "str", "default": "pulse", "enum": ["pulse", "modbus"],
                         "doc": "meter output: pulse, or modbus (a meter in modbus.meters)"},
                "litres_per_pulse": {"type": "float", "min": 0.000001, "max": 1000.0,
                                     "step": 0.000001, "unit": "L",
                                     "doc": "pulse: K-factor, volume per pulse (whole uL)"},
                "pulses_per_litre": {"type": "float", "min": 0.001, "max": 100000.0,
                                     "step": 0.001, "unit": "1/L",
                                     "doc": "pulse: K-factor, pulses per litre (e.g. 450)"},
                "meter": {"type": "str", "len": [1, 16], "chars": _ID_CHARS,
                          "doc": "modbus: the flow meter in modbus.meters (role flow) whose "
                                 "volume_m3 (and flow_m3h) feed the heat meter"},
                "max_m3h": {"type": "float", "req": True, "min": 0.01, "max": 1000.0,
                            "unit": "m3/h", "doc": "rates above this are implausible"},
                "critical": {"type": "bool", "default": True,
                             "doc": "a flow fault forces bypass"},
                "min_pulse_ms": {"type": "float", "default": 0.0, "min": 0.0, "max": 1000.0,
                                 "step": 0.001, "unit": "ms",
                                 "doc": "pulse: shorter lows are bounce, not pulses (reed: "
                                        "2 to 5)"},
                "zero_after_s": {"type": "float", "default": 60.0, "min": 0.1, "max": 3600.0,
                                 "unit": "s",
                                 "doc": "pulse: no pulse this long reads as zero flow"},
                "stuck_active_s": {"type": "float", "null": True, "default": None,
                                   "min": 1.0, "max": 86400.0, "unit": "s",
                                   "doc": "pulse: input low this long without a pulse is a "
                                          "meter fault; null: not checked"},
            },
        },
        "meter": {
            "type": "object", "default": {}, "doc": "EN 1434 heat meter",
            "keys": {
                "fluid": {"type": "str", "default": "water", "enum": _FLUIDS,
                          "doc": "heat-transfer fluid"},
                "mass_fraction": {"type": "float", "default": 0.0, "min": 0.0, "max": 0.6,
                                  "unit": "kg/kg",
                                  "doc": "glycol mass fraction (0.3 = 30 %); 0 for water"},
                "meter_in_return": {"type": "bool", "default": True,
                                    "doc": "flow meter sits in the return pipe"},
                "cutoff_k": {"type": "float", "default": 0.2, "min": 0.0, "max": 5.0,
                             "unit": "K", "doc": "no metering below this temperature difference"},
            },
        },
        "control": {
            "type": "object", "default": {}, "doc": "fail-safe control",
            "keys": {
                "tick_ms": {"type": "int", "default": 1000, "min": 100, "max": 1000,
                            "unit": "ms", "doc": "control period (1 s or faster)"},
                "sink_return_max_c": {"type": "float", "default": 45.0, "min": 0.0,
                                      "max": 150.0, "unit": "C",
                                      "doc": "bypass when the sink return is above this"},
                "sink_return_hyst_k": {"type": "float", "default": 2.0, "min": 0.1,
                                       "max": 50.0, "unit": "K",
                                       "doc": "reuse again below max minus this"},
                "it_coolant_max_c": {"type": "float", "default": 44.0, "min": 0.0,
                                     "max": 150.0, "unit": "C",
                                     "doc": "bypass (latching) when IT coolant is above this"},
                "it_coolant_hyst_k": {"type": "float", "default": 2.0, "min": 0.1,
                                      "max": 50.0, "unit": "K",
                                      "doc": "release below max minus this"},
                "sink_flow_min_m3h": {"type": "float", "default": 3.0, "min": 0.0,
                                      "max": 1000.0, "unit": "m3/h",
                                      "doc": "bypass when the sink flow is below this"},
                "sink_flow_hyst_m3h": {"type": "float", "default": 0.5, "min": 0.0,
                                       "max": 100.0, "unit": "m3/h",
                                       "doc": "reuse again above min plus this"},
                "sink_signal": {"type": "bool", "default": True,
                                "doc": "the sink's ready contact is wired and is a source "
                                       "of the sink rule"},
                "sink_sources": {
                    "type": "object", "default": {},
                    "doc": "remote sources of the sink rule, each with the seconds it may "
                           "stay silent; every configured source must say available",
                    "keys": {
                        "modbus": {"type": "int", "null": True, "default": None, "min": 2,
                                   "max": 86400,
                                   "unit": "s", "doc": "the BMS's heartbeat register "
                                   "(bms section): silent this long = unavailable"},
                        "mqtt": {"type": "int", "null": True, "default": None, "min": 2,
                                 "max": 86400,
                                 "unit": "s", "doc": "signed sink commands (mqtt "
                                 "section): silent this long = unavailable"},
                    },
                },
                "stale_s": {"type": "int", "default": 5, "min": 1, "max": 3600, "unit": "s",
                            "doc": "a reading older than this is stale"},
                "valve_travel_s": {"type": "int", "default": 45, "min": 1, "max": 600,
                                   "unit": "s", "doc": "full valve stroke time"},
                "valve_feedback": {"type": "bool", "default": True,
                                   "doc": "valve end switch wired: stuck valve detection"},
                "recover_s": {"type": "int", "default": 120, "min": 0, "max": 86400,
                              "unit": "s", "doc": "conditions must hold this long to reuse"},
                "min_dwell_s": {"type": "int", "default": 600, "min": 0, "max": 86400,
                                "unit": "s", "doc": "minimum time between state changes"},
            },
        },
        "persist": {
            "type": "object", "default": {}, "doc": "meter totals in flash",
            "keys": {
                "interval_s": {"type": "int", "default": 300, "min": 10, "max": 86400,
                               "unit": "s", "doc": "save period (flash wear vs. loss)"},
            },
        },
        "mqtt": {
            "type": "object", "null": True, "default": None,
            "doc": "MQTT telemetry and commands; null or absent: no telemetry (the password "
                   "is in the secrets file, never here)",
            "keys": {
                "host": {"type": "str", "req": True, "len": [1, 64],
                         "doc": "broker host name or IP address; an address needs no DNS "
                                "lookup, which blocks"},
                "port": {"type": "int", "null": True, "default": None, "min": 1,
                         "max": 65535, "unit": "",
                         "doc": "broker TCP port; null: 1883, or 8883 with tls"},
                "client_id": {"type": "str", "null": True, "default": None, "len": [1, 64],
                              "chars": _ID_CHARS, "doc": "MQTT client id; null: node_id"},
                "keepalive_s": {"type": "int", "default": 60, "min": 5, "max": 3600,
                                "unit": "s", "doc": "ping period bound; the broker drops "
                                                    "the node after 1.5 times this"},
                "clean_session": {"type": "bool", "default": True,
                                  "doc": "start each connection with a fresh broker session "
                                         "(false: commands wait at the broker while away)"},
                "prefix": {"type": "str", "default": "heatgw", "len": [1, 32],
                           "chars": _ID_CHARS + "/",
                           "doc": "topic prefix: <prefix>/<site>/<node_id>/..."},
                "site": {"type": "str", "req": True, "len": [1, 32], "chars": _ID_CHARS,
                         "doc": "site id in the topics: letters, digits, - and _"},
                "username": {"type": "str", "null": True, "default": None, "len": [1, 64],
                             "doc": "broker user name; null: anonymous"},
                "tls": {
                    "type": "object", "null": True, "default": None,
                    "doc": "TLS with server-certificate verification; null: plain TCP",
                    "keys": {
                        "ca_file": {"type": "str", "req": True, "len": [1, 128],
                                    "doc": "the broker's CA certificate, DER, on the "
                                           "node's file system: e.g. /ca.der"},
                    },
                },
                "ha_discovery_prefix": {"type": "str", "null": True, "default": None,
                                        "len": [1, 32], "chars": _ID_CHARS + "/",
                                        "doc": "Home Assistant discovery prefix, e.g. "
                                               "homeassistant; null: no discovery"},
            },
        },
        # heatgw.mbschema.MODBUS replaces this stub when a document has a modbus section
        # (heatgw.config.load; the host's tools install it always): a node without Modbus
        # never loads that part of the schema (12 KB while validating).
        "modbus": {
            "type": "object", "null": True, "default": None, "keys": {},
            "doc": "Modbus meters over RTU and TCP (heatgw.mbschema); null or absent: none "
                   "(nothing of it is loaded)",
        },
        # heatgw.bmsschema.BMS replaces this stub when a document has a bms section
        "bms": {
            "type": "object", "null": True, "default": None, "keys": {},
            "doc": "the building's Modbus TCP server (heatgw.bmsschema); null or absent: "
                   "none (nothing of it is loaded)",
        },
        # heatgw.recschema.RECOVERY replaces this stub when a document has a recovery
        # section (as the modbus stub above): the heat recovery ratio, the heat check.
        "recovery": {
            "type": "object", "null": True, "default": None, "keys": {},
            "doc": "the heat recovery ratio and the heat meter check (heatgw.recschema); "
                   "null or absent: neither (nothing of it is loaded)",
        },
        # heatgw.anschema.ANALOG replaces this stub when a document has an analog section
        # (heatgw.config.load; the host's tools install it always).
        "analog": {
            "type": "object", "null": True, "default": None, "keys": {},
            "doc": "analogue inputs: valve position, pressure, level (heatgw.anschema); "
                   "null or absent: none (nothing of it is loaded)",
        },
        "telemetry": {
            "type": "object", "default": {}, "doc": "telemetry records",
            "keys": {
                "interval_s": {"type": "int", "default": 10, "min": 1, "max": 3600,
                               "unit": "s", "doc": "telemetry record period"},
                "queue_capacity": {"type": "int", "null": True, "default": None,
                                   "min": 16, "max": 100000, "unit": "records",
                                   "doc": "records the flash queue holds; null: the "
                                          "board's default (half its file system)"},
            },
        },
        "supervisor": {
            "type": "object", "default": {}, "doc": "task supervision",
            "keys": {
                "watchdog_ms": {"type": "int", "default": 5000, "min": 1, "max": 8300,
                                "unit": "ms", "doc": "hardware watchdog (RP2040: 8300 max)"},
                "stall_s": {"type": "int", "default": 3, "min": 1, "max": 600, "unit": "s",
                            "doc": "a task silent this long is stalled"},
            },
        },
        "safe_mode": {
            "type": "object", "default": {}, "doc": "boot-loop protection (heatgw.bootloop)",
            "keys": {
                "resets": {"type": "int", "default": 4, "min": 0, "max": 50, "unit": "resets",
                           "doc": "this many watchdog or crash resets in a row, each within "
                                  "window_min of the boot before it, start the next boot in "
                                  "safe mode (no application, relays safe, console and "
                                  "network only); 0: never"},
                "window_min": {"type": "int", "default": 10, "min": 1, "max": 1440,
                               "unit": "min", "doc": "the application running this long "
                                                     "clears the count of resets"},
            },
        },
    },
    "rules": [
        # no silent default: a wrong filter reads plausible, noisy temperatures
        ["req", "site.mains_hz", "sensors", "50 or 60: the mains frequency at the site, "
         "which the RTD converters filter out"],
        ["one", "flow", ["litres_per_pulse", "pulses_per_litre"], "a pulse meter's K-factor",
         ["flow.type", ["pulse"]]],
        ["req", "flow.meter", "flow", "the Modbus flow meter, a name in modbus.meters",
         ["flow.type", ["modbus"]]],
        ["lt", "sensors.*.min_c", "sensors.*.max_c", "the sensor range must not be empty"],
        ["lt", "control.sink_return_max_c", "sensors.sink_return.max_c",
         "the trip point must be inside the sensor range"],
        ["gt", ["-", "control.sink_return_max_c", "control.sink_return_hyst_k"],
         "sensors.sink_return.min_c", "hysteresis must be smaller than the threshold span"],
        ["lt", "control.it_coolant_max_c", "sensors.it_coolant.max_c",
         "the trip point must be inside the sensor range"],
        ["gt", ["-", "control.it_coolant_max_c", "control.it_coolant_hyst_k"],
         "sensors.it_coolant.min_c", "hysteresis must be smaller than the threshold span"],
        ["lt", "control.sink_flow_min_m3h", "flow.max_m3h",
         "the low-flow threshold must be below the meter's maximum"],
        ["lt", ["+", "control.sink_flow_min_m3h", "control.sink_flow_hyst_m3h"], "flow.max_m3h",
         "hysteresis must be smaller than the threshold span"],
        # the pulse input is rated to 500 Hz: pulses/s at max_m3h = max_m3h / 3.6 / L per pulse
        ["le", "flow.max_m3h", ["*", 1800, "flow.litres_per_pulse"], _WHY_500HZ],
        ["le", ["*", "flow.max_m3h", "flow.pulses_per_litre"], 1800, _WHY_500HZ],
        # debounce shorter than the low half of a pulse at the maximum flow
        ["lt", ["*", "flow.min_pulse_ms", "flow.max_m3h"], ["*", 1800, "flow.litres_per_pulse"],
         _WHY_DEBOUNCE],
        ["lt", ["*", ["*", "flow.min_pulse_ms", "flow.max_m3h"], "flow.pulses_per_litre"], 1800,
         _WHY_DEBOUNCE],
        # zero flow only after a silence longer than one pulse at the low-flow threshold
        ["gt", "flow.zero_after_s",
         ["/", ["*", 3.6, "flow.litres_per_pulse"], "control.sink_flow_min_m3h"], _WHY_ZERO],
        ["gt", "flow.zero_after_s",
         ["/", 3.6, ["*", "flow.pulses_per_litre", "control.sink_flow_min_m3h"]], _WHY_ZERO],
        ["gt", "supervisor.watchdog_ms", ["*", 2, "control.tick_ms"],
         "the watchdog must outlast two control ticks"],
        ["ge", ["*", 1000, "supervisor.stall_s"], ["*", 2, "control.tick_ms"],
         "a task is stalled only after two missed ticks"],
        ["ge", ["*", 1000, "control.stale_s"], ["*", 2, "control.tick_ms"],
         "a reading is stale only after two missed ticks"],
        ["eq", "meter.mass_fraction", 0, "water takes no glycol mass fraction",
         ["meter.fluid", ["water"]]],
        ["gt", "meter.mass_fraction", 0, "a glycol needs its mass fraction, e.g. 0.3 for 30 %",
         ["meter.fluid", _GLYCOLS]],
    ],
}
