"""What the `micropython` binary under test is: word size, .mpy arch, float precision.

Everything that depends on the binary is derived from it here, once per process, so
nothing in the tests or tools assumes the 64-bit host: ESP32 and RP2040 are 32-bit with
single-precision floats, and a 32-bit unix build (`MICROPYTHON=...`) must pass unchanged.
"""

import functools
import json
import math
import subprocess

from host_tools.paths import micropython_cmd

# sys.implementation._mpy bits 10..13 (py/persistentcode.h MP_NATIVE_ARCH_*)
MPY_ARCHES = ("none", "x86", "x64", "armv6", "armv6m", "armv7m", "armv7em", "armv7emsp",
              "armv7emdp", "xtensa", "xtensawin", "rv32imc", "rv64imc")

# Heap used by the same objects on a 32-bit port relative to the 64-bit host: measured on a
# 32-bit build of the same MicroPython (the 24 h day: 79 KB against 115 KB). `-X
# heapsize=NwK` assumes 0.5, which is why a 64wK figure promised too small a target.
HEAP_RATIO_32_TO_64 = 0.69

_PROBE = """
import sys, json
x = 1.0 + 1e-10
print(json.dumps({"mpy": sys.implementation._mpy, "maxsize": sys.maxsize,
                  "double": x != 1.0, "version": list(sys.implementation.version[:3])}))
"""


@functools.cache
def probe():
    """Ask the binary itself (one run per process)."""
    out = subprocess.run([*micropython_cmd(), "-c", _PROBE], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def word_bits():
    """32 on ESP32/RP2040 and an i686 build, 64 on the x86-64 host."""
    return probe()["maxsize"].bit_length() + 1


def small_int_bits():
    """Bits of a MicroPython small int: one less than the word (31 on the targets)."""
    return word_bits() - 1


def mpy_arch():
    """The .mpy native architecture the binary loads (x64, x86, ...), from _mpy."""
    return MPY_ARCHES[(probe()["mpy"] >> 10) & 0x0F]


def float_bits():
    """64 for double-precision floats, 32 for single (the targets)."""
    return 64 if probe()["double"] else 32


def float_eps():
    """Machine epsilon of the binary's floats: 2**-52 or 2**-23."""
    return 2.0**-52 if float_bits() == 64 else 2.0**-23


def rel_tol(ulps=4):
    """A relative tolerance of `ulps` units in the last place of the binary's floats."""
    return ulps * float_eps()


def heap_kb(host64_kb):
    """The heap size, in KB, that holds on this binary what `host64_kb` holds on the
    64-bit host (scaled by the measured ratio on a 32-bit binary, never by `wK`), rounded
    up to whole 4 KB: the budget of 160K on the host is 112K on a 32-bit target."""
    if word_bits() == 64:
        return host64_kb
    return 4 * math.ceil(host64_kb * HEAP_RATIO_32_TO_64 / 4)


def heapsize(host64_kb):
    """`-X heapsize=` argument for heap_kb(host64_kb)."""
    return f"{heap_kb(host64_kb)}K"
