"""Raspberry Pi Pico W (RP2040): the only file that knows its GPIO numbers.

Bus and pin choices:
- MAX31865 chips share SPI0 (SCK GP18, MOSI GP19, MISO GP16), SPI mode 1 (CPHA = 1),
  1 MHz; one chip-select per sensor, idle high.
- Relay outputs drive active-LOW relay modules: pin high = coil off. RP2040 pins come up as
  inputs with pull-downs disabled after reset, so a 10 kΩ pull-up on the module input keeps
  the coil de-energised until boot.py drives the pin.
- Flow-meter pulse input on GP22 with the internal pull-up (plus 4.7 kΩ external for long
  cable runs).
"""

from machine import SPI, Pin

NAME = "pico_w"
ARCH = "armv6m"

_SPI_ID = 0
_SCK, _MOSI, _MISO = 18, 19, 16
RTD_CS_PINS = {"supply": 17, "return": 20, "sink_return": 21, "it_coolant": 13}

# name: (gpio, active_level); safe state = coil de-energised = not active_level.
RELAY_PINS = {"reuse": (14, 0), "bypass_aux": (15, 0)}
FLOW_PULSE_PIN = 22
SAFE_BOOT_PIN = 9  # jumper to GND at reset stops the application


def spi():
    """The SPI bus shared by the MAX31865 chips."""
    return SPI(_SPI_ID, baudrate=1_000_000, polarity=0, phase=1,
               sck=Pin(_SCK), mosi=Pin(_MOSI), miso=Pin(_MISO))


def rtd_cs(name):
    """Chip-select pin for the RTD converter called `name`, driven high (deselected)."""
    return Pin(RTD_CS_PINS[name], Pin.OUT, value=1)


def relays_safe():
    """Drive every relay pin to the level that de-energises its coil; returns the pins."""
    return {name: Pin(gpio, Pin.OUT, value=1 - active)
            for name, (gpio, active) in RELAY_PINS.items()}
