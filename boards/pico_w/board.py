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
- RS-485 (Modbus RTU meters) on UART0: TX GP0 -> the transceiver's DI, RX GP1 <- RO
  (UART0's own pin functions), driver enable GP6 -> DE and /RE tied together (high =
  sending), a 10 kΩ pull-down on DE: receiving from reset. The REPL is on USB, so UART0
  is free. An auto-direction transceiver needs no DE: leave GP6 unconnected.
- Left free for other I/O: GP26-28 (ADC0-2, analogue inputs), GP7, 8, 11, 12.
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
RS485_PORTS = ("rs485",)  # Modbus RTU: modbus.buses.<name>.uart
RS485_PINS = {"tx": 0, "rx": 1, "de": 6}
_RS485_UART = 0


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


# The watchdog, once started, runs until a hard reset: WDT cannot be stopped. While the
# application is stopped (the orderly stop at the serial port; a soft reset) a timer feeds
# it (lib/wdthold), so the REPL and an mpremote copy are not cut short; relays are safe
# then and nothing toggles the dead-man output. A soft reset leaves it running with a
# timeout we cannot read back: boot.py holds it with HOLD_WDT_MS (RP2040 max 8388 ms).
HOLD_WDT_MS = 8000
_HOLD_TIMER = -1  # a soft (virtual) timer: the scheduled callback feeds
_WATCHDOG_CTRL = 0x40058000  # RP2040 WATCHDOG block, its CTRL register (datasheet)
_wdt = None
_wdt_ms = 0
_hold = None


def watchdog(timeout_ms):
    """Start (or reconfigure) the watchdog; the application's supervisor takes it over
    from a hold."""
    global _wdt, _wdt_ms, _hold
    if _hold is not None:
        _hold.release()
        _hold = None
    _wdt = WDT(timeout=timeout_ms)
    _wdt_ms = timeout_ms
    return _wdt


def _soft_reset_left_watchdog():
    # CTRL.ENABLE (bit 30): the watchdog counts down; a soft reset does not clear it.
    import machine

    return (machine.mem32[_WATCHDOG_CTRL] >> 30) & 1 == 1


def hold_watchdog():
    """Keep a started watchdog fed from a timer while the application is stopped (after
    the orderly stop; at boot after a soft reset). True when one is held."""
    global _wdt, _wdt_ms, _hold
    if _hold is not None:
        return True
    if _wdt is None:
        if not _soft_reset_left_watchdog():
            return False  # power-on or hard reset: no watchdog runs
        _wdt = WDT(timeout=HOLD_WDT_MS)
        _wdt_ms = HOLD_WDT_MS
    from machine import Timer
    from wdthold import WatchdogHold

    _hold = WatchdogHold(_wdt, Timer(_HOLD_TIMER), _wdt_ms // 4)
    return True


def console_in():
    """Non-blocking input from the REPL's serial port (lib/consolein): readinto(buf) never
    waits; a Ctrl-C still stops the application (micropython.kbd_intr)."""
    import select
    import sys

    from consolein import ConsoleIn

    return ConsoleIn(sys.stdin.buffer, select.poll())


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


def rs485(port, baudrate, parity, stop_bits):
    """(uart, de) of the RS-485 port: a machine.UART whose reads never wait (timeout 0)
    and the driver-enable pin, low (receiving). parity: None, 0 even, 1 odd."""
    if port not in RS485_PORTS:
        raise ValueError("%s has no RS-485 port %r; have %r" % (NAME, port, RS485_PORTS))
    from machine import UART

    p = RS485_PINS
    de = Pin(p["de"], Pin.OUT, value=0)
    uart = UART(_RS485_UART, baudrate=baudrate, bits=8, parity=parity, stop=stop_bits,
                tx=Pin(p["tx"]), rx=Pin(p["rx"]), timeout=0, timeout_char=0, rxbuf=512,
                txbuf=256)
    return uart, de
