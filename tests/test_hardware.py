"""On a real board (HEATGW_PORT=/dev/ttyUSB0 ...): driver and kernel on the target itself.

Skipped without hardware. The board must be one of boards/*/ (HEATGW_BOARD, default
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

pytestmark = pytest.mark.hardware


def mpremote(*args):
    exe = str(Path(sys.executable).parent / "mpremote")
    port = os.environ["HEATGW_PORT"]
    proc = subprocess.run([exe, "connect", port, *args], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


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
    script.write_text(f"""
import json, time, board
from max31865 import MAX31865
from heatgw.rtd import TemperatureSensor
from heatgw import selftest
adc = MAX31865(board.spi(), board.rtd_cs("supply"), wires={wires}, filter_hz=50,
               r_ref_ohm=4300, r0_ohm=1000)
s = TemperatureSensor(adc)
s.start()
for _ in range(100):
    t, why = s.read_c()
    if why != "not_ready":
        break
    time.sleep_ms(10)
print(json.dumps({{"t": t, "why": why, "selftest": selftest.run()}}))
""")
    lines = mpremote("run", str(script)).strip().splitlines()
    out = json.loads(lines[-1])
    assert (out["t"] is None) != (out["why"] is None)
    if out["t"] is not None:
        assert -50 < out["t"] < 200
    # The metering arithmetic on the 32-bit target: EN 1434 cases, semantics, heap_lock.
    assert out["selftest"] is True, "\n".join(lines)
