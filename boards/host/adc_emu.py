"""The host board's analogue inputs: the front end and a 12-bit ADC, behind machine.ADC's
read_u16() (MicroPython; CPython imports it too: the harness's oracle computes the codes
the node reads with the same functions).

The harness drives each channel with the signal at its terminals (`a` lines of the link):
a loop current in mA (through the board's shunt) or a voltage (through its divider), or
"open" (a broken wire: no current, the divider's bottom resistor pulls the pin to 0 V).
The pin voltage is quantised as a 12-bit converter with the 3.3 V reference does, and
read_u16() scales the code to 16 bits as MicroPython's rp2 port does (code << 4 | code >>
8). Optional noise: a uniform +-noise_lsb codes from a small deterministic generator, so a
run is repeatable. read_u16() allocates nothing.
"""

FULL_SCALE_UV = 3_300_000  # the reference: 4095 codes
_CODES = 4095


def pin_uv(kind, value, shunt_ohm, divider):
    """µV at the ADC pin for the signal at the terminals: kind "ma" (value mA through the
    shunt), "v" (value V through the divider (top, bottom)) or "open" (0 V). Clamped at
    the pin's protection, 0 .. 3.6 V."""
    if kind == "ma":
        uv = value * 1000.0 * shunt_ohm
    elif kind == "v":
        top, bottom = divider
        uv = value * 1e6 * bottom / (top + bottom)
    elif kind == "open":
        uv = 0.0
    else:
        raise ValueError("signal kind %r: ma, v or open" % (kind,))
    return min(max(uv, 0.0), 3_600_000.0)


def code12(uv):
    """The 12-bit conversion of a pin voltage (nearest code, clipped at full scale)."""
    c = int(uv * _CODES / FULL_SCALE_UV + 0.5)
    return 0 if c < 0 else _CODES if c > _CODES else c


def u16(code):
    return (code << 4) | (code >> 8)


class ADCEmu:
    """One channel: machine.ADC's read_u16()."""

    def __init__(self, shunt_ohm, divider):
        self._shunt = shunt_ohm
        self._div = divider
        self.code = 0
        self.noise_lsb = 0
        self._x = 1  # the noise generator's state (ZX81 LCG: small ints only)
        self.reads = 0

    def set_signal(self, kind, value, noise_lsb=0):
        self.code = code12(pin_uv(kind, value, self._shunt, self._div))
        self.noise_lsb = int(noise_lsb)

    def read_u16(self):
        self.reads += 1
        c = self.code
        n = self.noise_lsb
        if n:
            self._x = (self._x * 75 + 74) % 65537
            c += self._x % (2 * n + 1) - n
            c = 0 if c < 0 else _CODES if c > _CODES else c
        return (c << 4) | (c >> 8)
