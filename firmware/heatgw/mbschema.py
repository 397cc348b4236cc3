"""The Modbus section of the configuration schema (heatgw.config_schema's format), kept
apart so that a node without Modbus never loads it: install(SCHEMA) puts it in place of
config_schema's stub. heatgw.config.load does that when a document has a `modbus`
section; host_tools.config_check and the tests always do.

Cross-checks the schema cannot state (a meter's bus exists, register ranges, roles, the
flow meter) are heatgw.mbplan.check().
"""

from heatgw.config_schema import _ID_CHARS

_NAME_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789_"  # Modbus value names: power_w, ...
# bus and meter names: lower case, as the alarm ids (sensor_fault:<meter>) they make
_METER_CHARS = _NAME_CHARS + "-"
_ORDERS = ["big", "little"]

# Modbus (heatgw.modbus, lib/modbus): buses, meters and their register maps. Cross-checks
# (a meter's bus exists, register ranges, roles, the flow meter) are heatgw.mbplan.check.
_MB_REGISTER = {
    "type": "object", "doc": "one value of a meter: where it is and how to read it",
    "keys": {
        "address": {"type": "int", "req": True, "min": 0, "max": 65535, "unit": "",
                    "doc": "PDU address of its first register, 0-based (the manual's "
                           "register number minus 40001 for holding, 30001 for input "
                           "registers)"},
        "fc": {"type": "int", "default": 3, "enum": [3, 4],
               "doc": "function code: 3 reads holding registers, 4 input registers"},
        "type": {"type": "str", "req": True,
                 "enum": ["int16", "uint16", "int32", "uint32", "float32"],
                 "doc": "data type: int16, uint16 (one register); int32, uint32, float32 "
                        "(IEEE 754; two registers)"},
        "word_order": {"type": "str", "default": "big", "enum": _ORDERS,
                       "doc": "32-bit types: big = the high word in the first register; "
                              "little = the low word first (word-swapped)"},
        "byte_order": {"type": "str", "default": "big", "enum": _ORDERS,
                       "doc": "big = the high byte first in each register (Modbus's own "
                              "order); little = the bytes of each register swapped"},
        "scale": {"type": "float", "default": 1.0, "min": -1e9, "max": 1e9, "unit": "",
                  "doc": "value = register value x scale (e.g. 0.001 turns Wh into kWh); "
                         "not 0"},
        "unit": {"type": "str", "default": "", "len": [0, 12],
                 "doc": "the unit of the scaled value, for people: W, kWh, m3/h, m3, C, bar"},
    },
}
_MB_BUS = {
    "type": "object", "doc": "a Modbus bus: an RS-485 line (RTU) or a Modbus TCP server",
    "keys": {
        "type": {"type": "str", "req": True, "enum": ["rtu", "tcp"],
                 "doc": "rtu: RS-485 on one of the board's UARTs; tcp: Modbus TCP"},
        "uart": {"type": "str", "default": "rs485", "len": [1, 16], "chars": _ID_CHARS,
                 "doc": "rtu: the board's RS-485 port, as its board file names it "
                        "(rs485 on every board that has one)"},
        "baud": {"type": "int", "default": 9600,
                 "enum": [1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200],
                 "doc": "rtu: line speed, baud"},
        "parity": {"type": "str", "default": "none", "enum": ["none", "even", "odd"],
                   "doc": "rtu: parity (Eastron's default: none; the Modbus standard's: "
                          "even)"},
        "stop_bits": {"type": "int", "default": 1, "enum": [1, 2], "doc": "rtu: stop bits"},
        "host": {"type": "str", "null": True, "default": None, "len": [7, 15],
                 "chars": "0123456789.",
                 "doc": "tcp: the server's IPv4 address (no host name: a DNS lookup "
                        "blocks)"},
        "port": {"type": "int", "default": 502, "min": 1, "max": 65535, "unit": "",
                 "doc": "tcp: the server's TCP port"},
    },
}
_MB_METER = {
    "type": "object", "doc": "a Modbus meter",
    "keys": {
        "bus": {"type": "str", "req": True, "len": [1, 16], "chars": _METER_CHARS,
                "doc": "the bus it is on: a name in modbus.buses"},
        "slave": {"type": "int", "req": True, "min": 0, "max": 255, "unit": "",
                  "doc": "its slave id (RTU: 1 ... 247) or unit id (TCP: 0 ... 255)"},
        "model": {"type": "str", "null": True, "default": None, "enum": ["sdm120", "sdm630"],
                  "doc": "a built-in register map: Eastron SDM120 or SDM630 (power_w, "
                         "energy_kwh); null: the registers below only"},
        "registers": {"type": "object", "default": {}, "items": _MB_REGISTER,
                      "len": [1, 24], "chars": _NAME_CHARS, "max_items": 12,
                      "doc": "the values to read, by name with its unit (power_w, "
                             "energy_kwh, flow_m3h, volume_m3, supply_c, pressure_bar, ...): "
                             "added to the model's, or replacing one of the same name"},
        "role": {"type": "str", "null": True, "default": None,
                 "enum": ["compute", "heat", "flow", "pump"],
                 "doc": "what it meters: compute (the IT load's electricity: power_w or "
                        "energy_kwh), heat (a heat meter: energy_kwh, a second, independent "
                        "total), flow (the loop's flow meter: volume_m3, with flow.type "
                        "modbus it feeds the heat meter), pump (the loop's own "
                        "electricity); null: none"},
        "period_s": {"type": "int", "default": 10, "min": 1, "max": 3600, "unit": "s",
                     "doc": "poll period"},
        "timeout_ms": {"type": "int", "default": 500, "min": 20, "max": 10000, "unit": "ms",
                       "doc": "how long to wait for each answer"},
        "retries": {"type": "int", "default": 1, "min": 0, "max": 3, "unit": "",
                    "doc": "a failed request is sent again this many times in the same poll "
                           "before the meter reports the fault"},
        "stale_s": {"type": "int", "default": 60, "min": 2, "max": 86400, "unit": "s",
                    "doc": "a value older than this reads as stale (no value)"},
        "critical": {"type": "bool", "default": False,
                     "doc": "a fault or stale reading of this meter forces bypass "
                            "(sensor_fault:<name>, sensor_stale:<name>)"},
    },
}
MODBUS = {
    "type": "object", "null": True, "default": None,
    "doc": "Modbus meters over RTU and TCP; null or absent: none (nothing of it is "
           "loaded)",
    "keys": {
        "buses": {"type": "object", "req": True, "items": _MB_BUS, "len": [1, 16],
                  "chars": _METER_CHARS, "max_items": 4,
                  "doc": "the buses, by name"},
        "meters": {"type": "object", "req": True, "items": _MB_METER,
                   "len": [1, 16], "chars": _METER_CHARS, "max_items": 8,
                   "doc": "the meters, by name (their faults' name too: "
                          "sensor_fault:<name>)"},
    },
}


def install(schema):
    """Put MODBUS into schema (config_schema.SCHEMA) in place of the stub; idempotent."""
    schema["keys"]["modbus"] = MODBUS
