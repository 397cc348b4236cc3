"""The RTDs as the node's converter chips see them (CPython).

The physics is the firmware's own IEC 60751 module, firmware/heatgw/rtd.py, imported
unchanged; the reference resistor is the host board's R_REF_OHM, read from
boards/host/board.py (that file is MicroPython and imports the link, so it is parsed,
not imported).
"""

import ast
import sys

from host_tools.paths import BOARDS, FIRMWARE

if str(FIRMWARE) not in sys.path:
    sys.path.insert(0, str(FIRMWARE))

from heatgw import rtd  # noqa: E402  (needs firmware/ on sys.path)

_CODES = 32768  # MAX31865: R = code * Rref / 32768


def board_constant(name, board="host"):
    """A module-level `NAME = <number>` of boards/<board>/board.py."""
    path = BOARDS / board / "board.py"
    for node in ast.parse(path.read_text()).body:
        if (isinstance(node, ast.Assign) and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Name) and node.targets[0].id == name
                and isinstance(node.value, ast.Constant)):
            return node.value.value
    raise ValueError(f"{path}: no `{name} = <number>`")


R_REF_OHM = float(board_constant("R_REF_OHM"))  # the emulated converters' reference


def pt_ohm(t_c, r0_ohm=1000.0):
    """The RTD's resistance at a true t_c."""
    return rtd.resistance_ohm(t_c, r0_ohm)


def seen_temp_c(t_c, r0_ohm=1000.0):
    """The temperature a MAX31865 reports for a true t_c (nearest 15-bit code)."""
    code = int(pt_ohm(t_c, r0_ohm) * _CODES / R_REF_OHM + 0.5)
    return rtd.temp_c(rtd.code_to_ohm(code, R_REF_OHM), r0_ohm)
