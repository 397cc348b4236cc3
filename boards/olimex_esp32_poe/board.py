"""Olimex ESP32-POE (ESP32-WROOM-32E variant), wired Ethernet: the only file that knows its
GPIO numbers.

Checked against Olimex's own design files (github.com/OLIMEX/ESP32-POE, hardware
revision L1: netlist ESP32-PoE_Rev_L1.net and the WROOM bill of materials):
- Ethernet PHY LAN8710A (LAN8720 family: network.PHY_LAN8720), MDIO address 0. RMII is
  fixed by the ESP32: TXD0 19, TX_EN 21, TXD1 22, RXD0 25, RXD1 26, CRS_DV 27; MDC 23 and
  MDIO 18 are the board's choice. The 50 MHz reference clock is the ESP32's output on
  GPIO17 (EMAC_CLK_OUT_180) into the PHY's CLKIN; GPIO12 switches the PHY's 3.3 V through
  a transistor (network.LAN(power=...)). (The -WROVER variant has no GPIO16/17: it clocks
  the PHY from GPIO0 through an inverter and joins GPIO33 to GPIO16: not this file.)
- Taken by the board: GPIO1/3 the USB-serial console; GPIO39 senses +5 V through 47k/100k;
  GPIO34 is the user button BUT1 (10 kΩ pull-up); GPIO36 has a 10 kΩ pull-up (UEXT pin 4
  through a diode); GPIO13/16 2.2 kΩ pull-ups (UEXT I2C); GPIO5 and 15 10 kΩ pull-ups;
  GPIO2/14/15 also reach the microSD slot: leave it EMPTY (a card would drive the bus).
- That leaves 14 GPIOs, and this node's full I/O needs 16 (3 SPI, 4 chip-selects, 2 relays,
  4 contacts, flow, safe boot, dead man). So this board carries the metering pair only:
  RTD chip-selects for supply and return; sink_return and it_coolant need another board
  (or an I/O expander). A configuration naming them fails at start with a clear error.

Bus and pin choices:
- MAX31865 chips on the UEXT SPI pins (SCK 14, MOSI 2, MISO 15), SPI mode 1, 1 MHz, on
  HSPI through the GPIO matrix; chip-selects 5 (10 kΩ pull-up: deselected from reset) and 4.
- Relays drive active-LOW modules (10 kΩ pull-up on the module input: floating = coil off):
  reuse on GPIO32 (no strapping role, quiet at reset); cooler_inhibit on GPIO0, a strapping
  pin that must be high at reset, which the module's pull-up holds: normal boot, coil off.
- Contacts to GND, active low: sink_available on GPIO36 (input-only, the board's 10 kΩ
  pull-up), maintenance on GPIO39 (input-only, held high by the +5 V divider: a contact to
  GND draws 0.1 mA), trip_reset on GPIO13 and valve_at_reuse on GPIO33 (internal pull-ups).
- Flow pulses on GPIO35 (input-only, no internal pulls: external 4.7 kΩ pull-up), counted
  by PCNT unit 0 (lib/pcntcounter): no pulse lost while a flash erase masks interrupts.
- Safe boot: BUT1 on GPIO34, held at reset.
- Dead-man output on GPIO16 (no strapping role; its 2.2 kΩ pull-up is driven through):
  toggled every healthy tick; 74HC123 hold as on the DevKitC (R_T 590 kΩ, C_T 4.7 µF).
- No RS-485 port: every GPIO is taken (its UEXT UART, GPIO4/36, carries a chip-select
  and the sink contact here). Modbus meters are read over Modbus TCP on the wired LAN;
  RTU meters through a Modbus TCP-to-RTU gateway (a `tcp` bus with the gateway's
  address, each meter's slave id as its unit id). A configuration with an `rtu` bus
  reads `no_bus` on its meters, and the bus task's crash events say why.
"""

import time

from machine import SPI, WDT, Pin

NAME = "olimex_esp32_poe"
ARCH = "xtensawin"

_SPI_ID = 1  # HSPI, pins through the GPIO matrix (1 MHz needs no IO_MUX pins)
_SCK, _MOSI, _MISO = 14, 2, 15
R_REF_OHM = 4300  # reference resistor on the PT1000 converter boards (0.1 %, 25 ppm/K)
RTD_CS_PINS = {"supply": 5, "return": 4}  # 14 free GPIOs: the metering pair only

# name: (gpio, active_level); safe state = coil de-energised = not active_level.
RELAY_PINS = {"reuse": (32, 0), "cooler_inhibit": (0, 0)}
RELAY_PULL = "up"  # 10 kΩ pull-up on each module input: a floating pin = coil off
INPUT_PINS = {
    "sink_available": (36, 0),
    "maintenance": (39, 0),
    "trip_reset": (13, 0),
    "valve_at_reuse": (33, 0),
}
_INPUT_ONLY = (34, 35, 36, 37, 38, 39)  # no output driver, no internal pulls
FLOW_PULSE_PIN = 35  # input-only, external 4.7 kΩ pull-up
FLOW_PCNT_UNIT = 0  # the PCNT unit counting the flow pulses (machine.Counter id)
_PCNT_FILTER_MAX_US = 12  # PCNT glitch filter: 1023 APB cycles (80 MHz) = 12.8 us
SAFE_BOOT_PIN = 34  # BUT1 (10 kΩ pull-up on the board)
DEAD_MAN_PIN = 16
DEAD_MAN_HOLD_MS = 1400  # 74HC123 hold (R_T 590 kΩ, C_T 4.7 µF): fits 934..1400 ms ticks

NET_INTERFACES = ("lan", "wlan")  # wired first; the module's Wi-Fi also works
# Ethernet: the PHY's pins (RMII fixed by the ESP32, the rest by the board).
NET_PINS = {"txd0": 19, "tx_en": 21, "txd1": 22, "rxd0": 25, "rxd1": 26, "crs_dv": 27,
            "mdc": 23, "mdio": 18, "ref_clk": 17, "phy_power": 12}
PHY_ADDR = 0
RS485_PORTS = ()  # none: no GPIO left (module doc); Modbus over TCP


def rs485(port, baudrate, parity, stop_bits):
    raise ValueError("%s has no RS-485 port (%r): read Modbus meters over TCP, RTU ones "
                     "through a Modbus TCP gateway" % (NAME, port))


def spi():
    """The SPI bus shared by the MAX31865 chips."""
    return SPI(_SPI_ID, baudrate=1_000_000, polarity=0, phase=1,
               sck=Pin(_SCK), mosi=Pin(_MOSI), miso=Pin(_MISO))


def rtd_cs(name):
    """Chip-select pin for the RTD converter called `name`, driven high (deselected)."""
    if name not in RTD_CS_PINS:
        raise ValueError("%s has no RTD channel %r; have %r" % (NAME, name,
                                                                 sorted(RTD_CS_PINS)))
    return Pin(RTD_CS_PINS[name], Pin.OUT, value=1)


def relays_safe():
    """Drive every relay pin to the level that de-energises its coil; returns the pins."""
    return {name: Pin(gpio, Pin.OUT, value=1 - active)
            for name, (gpio, active) in RELAY_PINS.items()}


def inputs():
    """name -> (pin, active_level); input-only pins rely on the board's pull-ups."""
    return {name: (Pin(gpio, Pin.IN) if gpio in _INPUT_ONLY else
                   Pin(gpio, Pin.IN, Pin.PULL_UP), active)
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
    """The dead-man output the control task toggles every tick."""
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
    """True while BUT1 is held (sampled at reset by boot.py)."""
    return Pin(SAFE_BOOT_PIN, Pin.IN).value() == 0


def network_interface(kind):
    """The port's interface for `kind`, made on call (network.LAN powers the PHY)."""
    import network

    if kind == "lan":
        p = NET_PINS
        return network.LAN(mdc=Pin(p["mdc"]), mdio=Pin(p["mdio"]), power=Pin(p["phy_power"]),
                           phy_type=network.PHY_LAN8720, phy_addr=PHY_ADDR,
                           ref_clk=Pin(p["ref_clk"]), ref_clk_mode=Pin.OUT)
    if kind == "wlan":
        return network.WLAN(network.STA_IF)
    raise ValueError("%s has no %r interface; have %r" % (NAME, kind, NET_INTERFACES))


def data_dir():
    """The port's _boot.py mounts littlefs at /: config and state live there."""
    return ""


clock = time  # ticks wrap at 2**30 ms here; the firmware reads time through heatgw.clock
