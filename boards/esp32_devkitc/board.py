"""Espressif ESP32-DevKitC (ESP32-WROOM-32): the only file that knows its GPIO numbers.

Bus and pin choices:
- MAX31865 chips share VSPI (SCK 18, MOSI 23, MISO 19), SPI mode 1 (CPHA = 1), 1 MHz; one
  chip-select per sensor, idle high.
- Relay outputs drive opto-isolated relay modules that are active-LOW: pin high = coil off.
  GPIO 25/26 have no strapping function, so they are quiet at reset; a 10 kΩ pull-up on the
  module input keeps the coil de-energised while the pin floats before boot.py runs.
- GPIO 34-39 are input-only without internal pulls: the flow-meter pulse input (GPIO 34)
  needs the meter's open collector plus an external 4.7 kΩ pull-up to 3.3 V.
"""

from machine import SPI, Pin

NAME = "esp32_devkitc"
ARCH = "xtensawin"

_SPI_ID = 2  # VSPI
_SCK, _MOSI, _MISO = 18, 23, 19
RTD_CS_PINS = {"supply": 5, "return": 17, "sink_return": 16, "it_coolant": 4}

# name: (gpio, active_level); safe state = coil de-energised = not active_level.
RELAY_PINS = {"reuse": (25, 0), "bypass_aux": (26, 0)}
FLOW_PULSE_PIN = 34
SAFE_BOOT_PIN = 0  # the BOOT button: held low at reset stops the application


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
