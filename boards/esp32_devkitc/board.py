"""Espressif ESP32-DevKitC (ESP32-WROOM-32): the only file that knows its GPIO numbers.

Bus and pin choices:
- MAX31865 chips share VSPI (SCK 18, MOSI 23, MISO 19), SPI mode 1 (CPHA = 1), 1 MHz; one
  chip-select per sensor, idle high.
- Relay outputs drive opto-isolated relay modules that are active-LOW: pin high = coil off.
  GPIO 25/26 have no strapping function, so they are quiet at reset; a 10 kΩ pull-up on the
  module input keeps the coil de-energised while the pin floats before boot.py runs.
- GPIO 34-39 are input-only and have no internal pulls (asking for one does nothing): the
  flow-meter pulse input (GPIO 34) is pulled up by an external 4.7 kΩ to 3.3 V, which the
  meter's open collector pulls low; no pull is requested in software. PCNT unit 0 counts
  it (lib/pcntcounter): no pulse lost while a flash erase masks interrupts.
- Dead-man output on GPIO 13 (no strapping role, not a flash pin, quiet at reset): the
  control task toggles it every healthy tick; each edge retriggers a 74HC123 (after the
  74HC86 edge detector, see the README's dead-man circuit) that enables the relay drivers
  for DEAD_MAN_HOLD_MS. tW = K·R_T·C_T with K ≈ 0.505 at 3.3 V (NXP 74HC123: 0.55 at 5 V,
  0.48 at 2 V, C_T > 10 nF): R_T = 590 kΩ (1 %), C_T = 4.7 µF film gives 1.40 s. K and C_T
  spread about ±8 %: measure the fitted board's hold and set DEAD_MAN_HOLD_MS to it (the
  configuration check needs control.tick_ms <= hold <= 1.5 * control.tick_ms).
- Inputs are volt-free contacts to GND with the internal pull-ups (active low): the
  building's "sink available" contact, the maintenance key switch, the technician's
  trip-reset button and the valve's end switch at the reuse end.
- RS-485 (Modbus RTU meters) on UART2 through the GPIO matrix: TX GPIO22 -> the
  transceiver's DI, RX GPIO21 <- RO, driver enable GPIO2 -> DE and /RE tied together
  (high = sending). GPIO2 is a strapping pin whose internal pull-down holds it low at
  reset (the level serial download needs too); a 10 kΩ pull-down on DE keeps the
  transceiver receiving until the driver sends. A transceiver that switches direction
  itself (auto-direction) needs no DE: leave GPIO2 unconnected.
- Left free for other I/O: ADC1 channels GPIO35, 36, 39 (analogue inputs: ADC2 does not
  work while Wi-Fi runs) and GPIO12, 15 (outputs; both strapping pins).
"""

import time

from machine import SPI, WDT, Pin

NAME = "esp32_devkitc"
ARCH = "xtensawin"

_SPI_ID = 2  # VSPI
_SCK, _MOSI, _MISO = 18, 23, 19
R_REF_OHM = 4300  # reference resistor on the PT1000 converter boards (0.1 %, 25 ppm/K)
RTD_CS_PINS = {"supply": 5, "return": 17, "sink_return": 16, "it_coolant": 4}

# name: (gpio, active_level); safe state = coil de-energised = not active_level.
RELAY_PINS = {"reuse": (25, 0), "cooler_inhibit": (26, 0)}
# reuse: diverting valve to the heat exchanger; cooler_inhibit: holds the dry-cooler fans
# off. Both de-energised (the safe state) send the heat to the dry cooler.
RELAY_PULL = "up"  # 10 kΩ pull-up on each module input: a floating pin = coil off
# name: (gpio, active_level) for the board-level inputs (contacts to GND, pull-ups).
INPUT_PINS = {
    "sink_available": (32, 0),
    "maintenance": (33, 0),
    "trip_reset": (27, 0),
    "valve_at_reuse": (14, 0),
}
FLOW_PULSE_PIN = 34  # input-only, external 4.7 kΩ pull-up (no internal pulls here)
FLOW_PCNT_UNIT = 0  # the PCNT unit counting the flow pulses (machine.Counter id)
_PCNT_FILTER_MAX_US = 12  # PCNT glitch filter: 1023 APB cycles (80 MHz) = 12.8 us
SAFE_BOOT_PIN = 0  # the BOOT button: held low at reset stops the application
DEAD_MAN_PIN = 13
DEAD_MAN_HOLD_MS = 1400  # 74HC123 hold (R_T 590 kΩ, C_T 4.7 µF): fits 934..1400 ms ticks
NET_INTERFACES = ("wlan",)  # the module's own radio (Wi-Fi station); no Ethernet PHY
RS485_PORTS = ("rs485",)  # Modbus RTU: modbus.buses.<name>.uart
RS485_PINS = {"tx": 22, "rx": 21, "de": 2}
_RS485_UART = 2


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
    """The flow meter's pulse input (open collector, external pull-up; active low), counted
    by PCNT unit FLOW_PCNT_UNIT in hardware: no pulse lost while the CPU's interrupts are
    off (a flash erase). Its glitch filter stops at 12.8 us, so a longer debounce (a reed
    contact's, ms) takes the interrupt counter with its software minimum width instead
    (soft interrupts on the ESP32: fine for a reed meter's few Hz)."""
    pin = Pin(FLOW_PULSE_PIN, Pin.IN)
    if min_pulse_us <= _PCNT_FILTER_MAX_US:
        from machine import Counter
        from pcntcounter import PcntCounter

        return PcntCounter(Counter(FLOW_PCNT_UNIT, pin, direction=Counter.UP,
                                   edge=Counter.FALLING, filter_ns=min_pulse_us * 1000),
                           pin, flag=flag)
    from pulsecounter import PulseCounter

    return PulseCounter(pin, min_pulse_us=min_pulse_us, flag=flag)


def dead_man():
    """The dead-man output the control task toggles every tick (its level is irrelevant:
    the edges retrigger the monostable)."""
    return Pin(DEAD_MAN_PIN, Pin.OUT, value=0)


# The watchdog, once started, runs until a hard reset: WDT cannot be stopped. While the
# application is stopped (the orderly stop at the serial port; a soft reset) a timer feeds
# it (lib/wdthold), so the REPL and an mpremote copy are not cut short; relays are safe
# then and nothing toggles the dead-man output. A soft reset leaves it running with a
# timeout we cannot read back: boot.py holds it with HOLD_WDT_MS.
HOLD_WDT_MS = 8000
_HOLD_TIMER = 0  # hardware timer 0 (group 0): the scheduled callback feeds
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
    # After a soft reset the watchdog may still run (the ESP32 cannot say): hold it.
    import machine

    return machine.reset_cause() == machine.SOFT_RESET


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
