"""boot.py puts relays in their safe state first; the on-device self-test stays available.

main.py (the application) is exercised against the simulated plant in test_scenarios.py.
"""

from host_tools import mpinfo
from host_tools.build_mpy import build, host_mpy_dir
from host_tools.paths import FIRMWARE

# The heap, as a 64-bit host figure, scaled to the binary under test (mpinfo.heapsize):
# 92 KB here is 64 KB on a 32-bit binary, a small target's heap. Measured (boot.py +
# selftest from precompiled modules): the smallest heap that passes is 88 KB on the 64-bit
# host and 60 KB on a 32-bit (i686) build; 84 KB and 56 KB run out of memory.
HEAP_HOST64_KB = 92

BOOT_THEN_MAIN = f"""
import board
states_before = {{n: board.relay_pin(n).value() for n in board.RELAY_PINS}}
exec(open({str(FIRMWARE / "boot.py")!r}).read())
for n in board.RELAY_PINS:
    p = board.relay_pin(n)
    print("relay", n, p.value(), p.active_level, p.coil_energised())
print("before", states_before)
from heatgw import bootstate, selftest
print("safe_boot", bootstate.safe_boot)
selftest.run()
"""


def test_boot_drives_relays_safe_then_selftest_passes_in_64k_target_heap(mp, tmp_path,
                                                                         monkeypatch):
    # precompiled modules, as on a device: compiling source needs RAM a board never spends
    assert build(["host"])
    assert mpinfo.word_bits() == 64 or mpinfo.heap_kb(HEAP_HOST64_KB) <= 64
    monkeypatch.setenv("HEATGW_FLASH", str(tmp_path / "flash.bin"))
    out = mp.run_code(BOOT_THEN_MAIN, heapsize=mpinfo.heapsize(HEAP_HOST64_KB),
                      extra_path=[host_mpy_dir()])
    lines = out.splitlines()
    relays = [line.split() for line in lines if line.startswith("relay ")]
    assert len(relays) == 2
    for _, name, level, active, energised in relays:
        # active-low modules: the safe level is high, and the coil is off
        assert level == str(1 - int(active)) and energised == "False", name
    assert "None" in next(line for line in lines if line.startswith("before"))
    assert "safe_boot False" in lines
    results = [line for line in lines if line.startswith("selftest: ") and
               (" ok " in line or " FAIL " in line)]
    assert len(results) == 4, out
    assert all(" ok " in line for line in results), out
    assert lines[-1] == "selftest: PASS"


def test_selftest_catches_wrong_arithmetic(mp):
    # The self-test must fail when the meter is wrong, e.g. a wrong meter position.
    out = mp.run_code("""
from heatgw import selftest
selftest._EN1434_CASES = ((70000, 50000, False, 22959),)
print(selftest.run())
""")
    assert "en1434_70_50_flow FAIL" in out
    assert out.splitlines()[-2] == "selftest: FAIL 1"
    assert out.splitlines()[-1] == "False"
