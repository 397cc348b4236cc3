"""Register maps of the Eastron SDM120 (single phase) and SDM630 (three phase) energy
meters, Modbus RTU (also behind a Modbus TCP gateway).

    for name, address, fc, typ, word_order, byte_order, scale, unit in sdm.MAPS["sdm630"]:

Input registers (function code 4), each value two registers holding an IEEE-754 float32,
high word first, high byte first. The PDU address is the register number minus 30001
(Eastron's manuals list 30053 for the SDM630's total system power: address 0x0034).
The same fields as a generic register map in the node's configuration (`modbus.meters.
<name>.registers`), so a built-in map and a configured one are read alike.
"""

from micropython import const

_FC_INPUT = const(4)
_ACTIVE_POWER_L1 = const(0x000C)  # SDM120: its one phase's active power, W
_TOTAL_SYSTEM_POWER = const(0x0034)  # SDM630: total system power, W
_IMPORT_ACTIVE_ENERGY = const(0x0048)  # both: import active energy, kWh

SDM120 = (
    ("power_w", _ACTIVE_POWER_L1, _FC_INPUT, "float32", "big", "big", 1.0, "W"),
    ("energy_kwh", _IMPORT_ACTIVE_ENERGY, _FC_INPUT, "float32", "big", "big", 1.0, "kWh"),
)
SDM630 = (
    ("power_w", _TOTAL_SYSTEM_POWER, _FC_INPUT, "float32", "big", "big", 1.0, "W"),
    ("energy_kwh", _IMPORT_ACTIVE_ENERGY, _FC_INPUT, "float32", "big", "big", 1.0, "kWh"),
)
MAPS = {"sdm120": SDM120, "sdm630": SDM630}
