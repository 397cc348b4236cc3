"""Board definitions: the host board serves the same interface as the real boards."""

import ast

import pytest

from host_tools.paths import BOARDS

REAL_BOARDS = ("esp32_devkitc", "pico_w")


def test_host_board_drives_several_chips_on_one_shared_bus(mp):
    out = mp.run_json(
        """
import json
import board
from max31865 import MAX31865
from heatgw.rtd import TemperatureSensor, resistance_ohm
bus = board.spi()
sensors = {}
for name, t in (("supply", 70.0), ("return", 50.0)):
    board.rtd_chip(name).set_resistance(resistance_ohm(t, 1000))
    adc = MAX31865(bus, board.rtd_cs(name), wires=4, filter_hz=50,
                   r_ref_ohm=board.R_REF_OHM, r0_ohm=1000, clock=board.clock)
    sensors[name] = TemperatureSensor(adc)
board.rtd_chip("return").inject("open")
res = {}
for name, s in sensors.items():
    s.start()
    for _ in range(200):
        t, why = s.read_c()
        if why != "not_ready":
            break
        board.clock.sleep_ms(2)  # the host board's chips run on its virtual clock
    res[name] = [t, why]
print(json.dumps(res))
"""
    )[0]
    supply_c, why = out["supply"]
    assert why is None and abs(supply_c - 70.0) < 0.02
    # The faulty channel on the same bus gives a reason and no number.
    assert out["return"][0] is None and out["return"][1] == "rtd_high_threshold"


@pytest.mark.parametrize("board", REAL_BOARDS)
def test_real_board_defines_pins_polarity_and_bus(board):
    src = (BOARDS / board / "board.py").read_text()
    tree = ast.parse(src)
    names = {t.id for node in tree.body if isinstance(node, ast.Assign) for t in node.targets
             if isinstance(t, ast.Name)}
    funcs = {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}
    assert {"NAME", "ARCH", "RTD_CS_PINS", "RELAY_PINS", "SAFE_BOOT_PIN"} <= names
    assert {"spi", "rtd_cs"} <= funcs
    ns = {}
    for node in tree.body:
        target = node.targets[0] if isinstance(node, ast.Assign) else None
        if isinstance(target, ast.Name) and target.id in ("RTD_CS_PINS", "RELAY_PINS"):
            ns[target.id] = ast.literal_eval(node.value)
    pins = list(ns["RTD_CS_PINS"].values()) + [p for p, _ in ns["RELAY_PINS"].values()]
    assert len(pins) == len(set(pins)), "a GPIO is used twice"
    assert {"supply", "return"} <= set(ns["RTD_CS_PINS"])


def test_no_gpio_numbers_outside_boards():
    """Pins live only in board definitions: firmware/ and lib/ never construct Pin(<int>)."""
    from host_tools.paths import FIRMWARE, LIB

    for root in (FIRMWARE, LIB):
        for path in root.rglob("*.py"):
            tree = ast.parse(path.read_text())
            for node in ast.walk(tree):
                if (isinstance(node, ast.Call) and getattr(node.func, "id", None) == "Pin"
                        and node.args and isinstance(node.args[0], ast.Constant)):
                    raise AssertionError(f"{path}: Pin({node.args[0].value}) outside boards/")
