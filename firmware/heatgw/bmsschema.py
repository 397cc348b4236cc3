"""The `bms` section of the configuration schema (the building's Modbus TCP server,
heatgw.bms), kept apart so that a node without one never loads it: install(SCHEMA) puts
it in place of config_schema's stub (heatgw.config.load, when a document has the
section; host_tools.config_check always). check(cfg): what the schema cannot state.
"""

from heatgw.config_schema import _ID_CHARS
from heatgw.schema import ipv4

BMS = {
    "type": "object", "null": True, "default": None,
    "doc": "the building's Modbus TCP server: read-only input registers, the sink "
           "heartbeat register; null or absent: none",
    "keys": {
        "port": {"type": "int", "default": 502, "min": 1, "max": 65535, "unit": "",
                 "doc": "TCP port the node listens on"},
        "clients": {
            "type": "object", "req": True, "max_items": 4, "len": [1, 16],
            "chars": _ID_CHARS,
            "doc": "the client addresses answered, by name (e.g. \"bms\": "
                   "\"192.168.1.50\"); every other address is refused",
            "items": {"type": "str", "req": True, "len": [7, 15], "chars": "0123456789.",
                      "doc": "an IPv4 address"},
        },
        "max_connections": {"type": "int", "default": 2, "min": 1, "max": 4, "unit": "",
                            "doc": "connections at once; a new one replaces the least "
                                   "recently active"},
        "idle_s": {"type": "int", "default": 60, "min": 5, "max": 3600, "unit": "s",
                   "doc": "a connection without a request this long is closed"},
        "heartbeat_register": {"type": "int", "default": 0, "min": 0, "max": 65535,
                               "unit": "",
                               "doc": "PDU address of the holding register the BMS "
                                      "writes (register number minus 40001): non-zero "
                                      "= sink available, 0 = unavailable; its timeout is "
                                      "control.sink_sources.modbus"},
    },
}


def install(schema):
    schema["keys"]["bms"] = BMS


def check(cfg):
    """Errors the schema cannot state: each client an IPv4 address, at least one."""
    errors = []
    b = cfg.get("bms")
    if not b:
        return errors
    clients = b.get("clients") or {}
    if not clients:
        errors.append("bms.clients: at least one client address (the BMS's): the "
                      "server answers no other")
    for name in sorted(clients):
        if not ipv4(clients[name]):
            errors.append("bms.clients.%s: %s is not an IPv4 address (four numbers "
                          "0..255)" % (name, clients[name]))
    return errors
