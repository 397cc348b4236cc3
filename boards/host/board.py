"""Host board: the MicroPython unix port with emulated buses behind the real interfaces.

The application builds its drivers from this module exactly as on a chip: `spi()` is one
shared SPI bus and `rtd_cs(name)` a chip-select per MAX31865. Behind them sit emulated
chips (boards/host/max31865_emu.py) whose RTD resistance and faults the plant model or a
test sets through `rtd_chip(name)`. The bus is open-drain-like: a deselected chip leaves
SDO floating high (0xFF), so the byte read is the AND of every chip's answer.
"""

from max31865_emu import MAX31865Emu

NAME = "host"
ARCH = None  # runs source (or x64 .mpy) on the unix port

R_REF_OHM = 4300  # the reference resistor fitted on the emulated converter boards
RTD_NAMES = ("supply", "return", "sink_return", "it_coolant")

# name: (emulated output, active_level). The host board's relay modules are active-low
# like the real boards', so the safe level differs from "0" and a polarity bug shows here.
RELAY_PINS = {"reuse": ("emu_reuse", 0), "bypass_aux": ("emu_bypass_aux", 0)}

_chips = {}


def rtd_chip(name):
    """The emulated MAX31865 behind chip-select `name` (host board only)."""
    chip = _chips.get(name)
    if chip is None:
        if name not in RTD_NAMES:
            raise ValueError("no RTD channel %r on the host board; have %r" % (name, RTD_NAMES))
        chip = _chips[name] = MAX31865Emu(r_ref_ohm=R_REF_OHM)
    return chip


class SharedSPI:
    """One SPI bus shared by every emulated chip (machine.SPI interface)."""

    def init(self, *args, **kwargs):
        pass

    def deinit(self):
        pass

    def write_readinto(self, write_buf, read_buf):
        for i in range(len(write_buf)):
            b = 0xFF
            for chip in _chips.values():
                b &= chip._xfer(write_buf[i])
            read_buf[i] = b

    def write(self, buf):
        for byte in buf:
            for chip in _chips.values():
                chip._xfer(byte)

    def readinto(self, buf, write_byte=0):
        self.write_readinto(bytes([write_byte]) * len(buf), buf)


_BUS = SharedSPI()


def spi():
    """The SPI bus shared by the (emulated) MAX31865 chips."""
    for name in RTD_NAMES:
        rtd_chip(name)
    return _BUS


def rtd_cs(name):
    """Chip-select pin for the RTD converter called `name`, idle high."""
    pin = rtd_chip(name).cs
    pin.value(1)
    return pin


class RelayPin:
    """An output pin driving an emulated relay module's input (machine.Pin interface)."""

    OUT = 1

    def __init__(self, name, active_level):
        self.name = name
        self.active_level = active_level
        self._v = None  # floating until driven: the module's pull resistor holds it off

    def init(self, mode=None, value=None):
        if value is not None:
            self.value(value)

    def value(self, v=None):
        if v is None:
            return self._v
        self._v = 1 if v else 0

    def __call__(self, v=None):
        return self.value(v)

    def on(self):
        self.value(1)

    def off(self):
        self.value(0)

    def coil_energised(self):
        # A floating input is pulled to the inactive level by the module's resistor.
        return self._v is not None and self._v == self.active_level


_relays = {name: RelayPin(pin, active) for name, (pin, active) in RELAY_PINS.items()}


def relay_pin(name):
    """The emulated relay output `name` (host board only: lets tests see the coil)."""
    return _relays[name]


def relays_safe():
    """Drive every relay pin to the level that de-energises its coil; returns the pins."""
    for pin in _relays.values():
        pin.init(RelayPin.OUT, value=1 - pin.active_level)
    return dict(_relays)
