"""The README's wiring tables say what the board files say, and all of it.

README "Installing a node, step by step" has one wiring table per real board; its column
"board.py" names each row's constant (`RTD_CS_PINS supply`, `FLOW_PULSE_PIN`, `_SCK`...).
Every row's GPIO must be that constant's value in boards/<board>/board.py (read with
CPython's ast: the board files are MicroPython), and every pin constant of the board file
must have its row: a pin changed or added in a board file fails here until the guide says
so too.
"""

import ast
import re

import pytest

from host_tools.paths import BOARDS, REPO

TABLES = {"esp32_devkitc": "ESP32-DevKitC (ESP32-WROOM-32):",
          "pico_w": "Raspberry Pi Pico W:"}
# the board file's pin constants: dicts of name -> pin or (pin, level), and single pins
PIN_DICTS = ("RTD_CS_PINS", "RELAY_PINS", "INPUT_PINS", "RS485_PINS")
PIN_NAMES = ("FLOW_PULSE_PIN", "DEAD_MAN_PIN", "SAFE_BOOT_PIN", "_SCK", "_MOSI", "_MISO")


def board_pins(board):
    """{"RTD_CS_PINS supply": 5, "FLOW_PULSE_PIN": 34, ...} from the board file."""
    consts = {}
    for node in ast.parse((BOARDS / board / "board.py").read_text()).body:
        if not isinstance(node, ast.Assign):
            continue
        target = node.targets[0]
        names = ([t.id for t in target.elts] if isinstance(target, ast.Tuple)
                 else [getattr(target, "id", None)])
        try:
            value = ast.literal_eval(node.value)
        except ValueError:
            continue
        values = value if isinstance(target, ast.Tuple) else (value,)
        consts.update(zip(names, values, strict=True))
    pins = {}
    for name in PIN_DICTS:
        for key, v in consts[name].items():
            pins[f"{name} {key}"] = v[0] if isinstance(v, tuple) else v
    for name in PIN_NAMES:
        pins[name] = consts[name]
    return pins


def readme_table(title):
    text = (REPO / "README.md").read_text()
    start = text.index("\n" + title + "\n")
    rows = {}
    for line in text[start:].splitlines()[2:]:
        if not line.startswith("|"):
            if rows:
                break
            continue
        cells = [c.strip() for c in line.strip("|").split("|")]
        m = re.fullmatch(r"`([^`]+)`", cells[2])
        if not m:
            continue  # the header and its rule
        gpio = re.fullmatch(r"(?:GP)?(\d+)", cells[1])
        assert gpio, f"{title}: GPIO column {cells[1]!r}"
        assert m.group(1) not in rows, f"{title}: {m.group(1)} twice"
        rows[m.group(1)] = int(gpio.group(1))
    return rows


@pytest.mark.parametrize("board", sorted(TABLES))
def test_the_wiring_table_is_the_board_file(board):
    table = readme_table(TABLES[board])
    pins = board_pins(board)
    assert table == pins, {"README only": {k: v for k, v in table.items() if k not in pins},
                           "board.py only": {k: v for k, v in pins.items()
                                             if k not in table},
                           "differ": {k: (table[k], pins[k]) for k in table
                                      if k in pins and table[k] != pins[k]}}
    assert len(set(pins.values())) == len(pins)  # and no pin twice (test_boards too)
