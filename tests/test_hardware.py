"""On a real board (HEATGW_PORT=/dev/ttyUSB0 ...): driver and kernel on the target itself.

The target test is skipped without hardware; its checks also run against the host
board's emulated chip (present and absent), so they are known to fail when no chip
answers. The board must be one of boards/*/ (HEATGW_BOARD, default
esp32_devkitc) with a MAX31865 on the "supply" channel wired as HEATGW_RTD_WIRES
(default 4) with a 50 Hz filter, Rref 4300 Ω and a PT1000.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from host_tools.paths import BOARDS, FIRMWARE, LIB


def mpremote(*args):
    exe = str(Path(sys.executable).parent / "mpremote")
    port = os.environ["HEATGW_PORT"]
    proc = subprocess.run([exe, "connect", port, *args], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


@pytest.mark.hardware
def test_supply_rtd_and_kernel_on_target(tmp_path):
    board = os.environ.get("HEATGW_BOARD", "esp32_devkitc")
    wires = int(os.environ.get("HEATGW_RTD_WIRES", "4"))
    files = [
        (BOARDS / board / "board.py", "board.py"),
        (LIB / "max31865" / "max31865.py", "max31865.py"),
    ]
    if "heatgw" not in mpremote("fs", "ls"):
        mpremote("fs", "mkdir", ":heatgw")
    for name in ("__init__.py", "rtd.py", "fluid.py", "fluid_data.py", "meter.py",
                 "meterkernel.py", "selftest.py"):
        files.append((FIRMWARE / "heatgw" / name, "heatgw/" + name))
    for src, dst in files:
        mpremote("fs", "cp", str(src), ":" + dst)
    script = tmp_path / "probe.py"
    script.write_text(PROBE.replace("WIRES", str(wires)))
    lines = mpremote("run", str(script)).strip().splitlines()
    check_probe(lines)


PROBE = """
import json, board
from max31865 import MAX31865
from heatgw.rtd import TemperatureSensor
from heatgw import selftest
adc = MAX31865(board.spi(), board.rtd_cs("supply"), wires=WIRES, filter_hz=50,
               r_ref_ohm=board.R_REF_OHM, r0_ohm=1000, clock=board.clock)
answers = adc.init()  # True only if the chip reads its configuration back
s = TemperatureSensor(adc)
s.start()
for _ in range(100):
    t, why = s.read_c()
    if why != "not_ready":
        break
    board.clock.sleep_ms(10)
print(json.dumps({"answers": answers, "t": t, "why": why, "selftest": selftest.run()}))
"""


def check_probe(lines):
    out = json.loads(lines[-1])
    # A chip must answer and the fitted PT1000 must read a room-ish temperature: "no chip
    # answered" or a fault is a failure here, never a pass.
    assert out["answers"] is True, f"no MAX31865 answered on the supply channel: {out}"
    assert out["why"] is None, f"the supply RTD gave no reading: {out['why']}"
    assert -20 < out["t"] < 60, out
    # The metering arithmetic on the 32-bit target: EN 1434 cases, semantics, heap_lock.
    assert out["selftest"] is True, "\n".join(lines)


@pytest.mark.parametrize("present", [True, False])
def test_the_target_checks_fail_without_a_chip(mp, present):
    """The probe above, run on the host board's emulated chip: it passes with a PT1000 at
    room temperature and fails when no chip answers (what the target test must do)."""
    lines = mp.run_code(f"""
import board
from heatgw.rtd import resistance_ohm
board.rtd_chip("supply").set_resistance(resistance_ohm(21.5, 1000))
board.rtd_chip("supply").present = {present}
""" + PROBE.replace("WIRES", "4")).strip().splitlines()
    if present:
        check_probe(lines)
    else:
        with pytest.raises(AssertionError, match="no MAX31865 answered"):
            check_probe(lines)
