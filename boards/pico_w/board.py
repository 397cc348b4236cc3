"""Raspberry Pi Pico W (RP2040): the only file that knows its GPIO numbers.

Bus and pin choices:
- MAX31865 chips share SPI0 (SCK GP18, MOSI GP19, MISO GP16), SPI mode 1 (CPHA = 1),
  1 MHz; one chip-select per sensor, idle high.
- Relay outputs drive active-LOW relay modules: pin high = coil off. Out of reset every
  RP2040 pad is an input with its pull-down ENABLED (50-80 kΩ, RP2040 datasheet), which
  fights the module's 10 kΩ pull-up to 3.3 V until boot.py drives the pin high: the input
  then sits at 3.3 V · 50/(10 + 50) = 2.75 V at the strongest pull-down (2.93 V at 80 kΩ).
  The module's opto LED (anode at its 3.3 V VCC) sees at most 3.3 - 2.75 = 0.55 V, far
  below its ~1.0-1.2 V forward voltage: no current, coil off. (2.75 V also reads high,
  VIH = 2.0 V.) So the coil stays off from reset to boot.py; relays_safe() then drives
  3.3 V. A module with a weaker pull-up than 10 kΩ would break this margin: 47 kΩ gives
  1.7 V, 1.6 V across the LED, which may light it.
- Flow-meter pulse input on GP22 with the internal pull-up (plus 4.7 kΩ external for long
  cable runs), counted by a PIO state machine (lib/piocounter): the count survives the
  interrupts a flash erase or program disables.
- Dead-man output on GP10 (RP2040 pins have no strapping role): the control task toggles
  it every healthy tick; each edge retriggers a 74HC123 (after the 74HC86 edge detector,
  see the README's dead-man circuit) that enables the relay drivers for
  DEAD_MAN_HOLD_MS. tW = K·R_T·C_T with K ≈ 0.505 at 3.3 V (NXP 74HC123: 0.55 at 5 V, 0.48
  at 2 V, C_T > 10 nF): R_T = 590 kΩ (1 %), C_T = 4.7 µF film gives 1.40 s. K and C_T
  spread about ±8 %: measure the fitted board's hold and set DEAD_MAN_HOLD_MS to it (the
  configuration check needs control.tick_ms <= hold <= 1.5 * control.tick_ms).
- Inputs are volt-free contacts to GND with the internal pull-ups (active low): the
  building's "sink available" contact, the maintenance key switch, the technician's
  trip-reset button and the valve's end switch at the reuse end.
"""

import time

from machine import SPI, WDT, Pin

NAME = "pico_w"
ARCH = "armv6m"

_SPI_ID = 0
_SCK, _MOSI, _MISO = 18, 19, 16
R_REF_OHM = 4300  # reference resistor on the PT1000 converter boards (0.1 %, 25 ppm/K)
RTD_CS_PINS = {"supply": 17, "return": 20, "sink_return": 21, "it_coolant": 13}

# name: (gpio, active_level); safe state = coil de-energised = not active_level.
RELAY_PINS = {"reuse": (14, 0), "cooler_inhibit": (15, 0)}
# reuse: diverting valve to the heat exchanger; cooler_inhibit: holds the dry-cooler fans
# off. Both de-energised (the safe state) send the heat to the dry cooler.
RELAY_PULL = "up"  # 10 kΩ pull-up on each module input: a floating pin = coil off
# name: (gpio, active_level) for the board-level inputs (contacts to GND, pull-ups).
INPUT_PINS = {
    "sink_available": (2, 0),
    "maintenance": (3, 0),
    "trip_reset": (4, 0),
    "valve_at_reuse": (5, 0),
}
FLOW_PULSE_PIN = 22
FLOW_PIO_SM = 0  # PIO0 SM0 (the CYW43 radio's SPI takes a state machine of PIO1)
SAFE_BOOT_PIN = 9  # jumper to GND at reset stops the application
DEAD_MAN_PIN = 10
DEAD_MAN_HOLD_MS = 1400  # 74HC123 hold (R_T 590 kΩ, C_T 4.7 µF): fits 934..1400 ms ticks
NET_INTERFACES = ("wlan",)  # the CYW43439 (GP23-25, GP29: reserved for it)


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


def inputs():
    """name -> (pin, active_level) for every board-level input."""
    return {name: (Pin(gpio, Pin.IN, Pin.PULL_UP), active)
            for name, (gpio, active) in INPUT_PINS.items()}


def flow_pulse_counter(min_pulse_us=0, flag=None):
    """The flow meter's pulse input (open collector, pulled up; active low), counted by PIO
    state machine FLOW_PIO_SM with the minimum width in its program: no pulse lost while a
    flash erase or program holds the CPU's interrupts off."""
    import rp2
    from piocounter import PioCounter

    return PioCounter(rp2.StateMachine(FLOW_PIO_SM), Pin(FLOW_PULSE_PIN, Pin.IN, Pin.PULL_UP),
                      min_pulse_us=min_pulse_us, flag=flag)


def dead_man():
    """The dead-man output the control task toggles every tick (its level is irrelevant:
    the edges retrigger the monostable)."""
    return Pin(DEAD_MAN_PIN, Pin.OUT, value=0)


def watchdog(timeout_ms):
    return WDT(timeout=timeout_ms)


def safe_boot_requested():
    """True while the safe-boot input is held low (sampled at reset by boot.py)."""
    return Pin(SAFE_BOOT_PIN, Pin.IN, Pin.PULL_UP).value() == 0


def network_interface(kind):
    """The port's interface for `kind` (NET_INTERFACES), made on call, never at import."""
    if kind != "wlan":
        raise ValueError("%s has no %r interface; have %r" % (NAME, kind, NET_INTERFACES))
    import network

    return network.WLAN(network.STA_IF)


def data_dir():
    """The port's _boot.py mounts littlefs at /: config and state live there."""
    return ""


clock = time  # ticks wrap at 2**30 ms here; the firmware reads time through heatgw.clock
