"""Host board: the MicroPython unix port with emulated buses behind the real interfaces.

The application builds its drivers from this module exactly as on a chip: `spi()` is one
shared SPI bus and `rtd_cs(name)` a chip-select per MAX31865. Behind them sit emulated
chips (boards/host/max31865_emu.py) whose RTD resistance and faults the plant model or a
test sets through `rtd_chip(name)`. The bus is open-drain-like: a deselected chip leaves
SDO floating high (0xFF), so the byte read is the AND of every chip's answer.
"""

import os
import time

from adc_emu import ADCEmu  # at import: the host board's own heap, not the node's
from link import LinkClock
from max31865_emu import MAX31865Emu

NAME = "host"
ARCH = None  # runs source (or x64 .mpy) on the unix port

R_REF_OHM = 4300  # the reference resistor fitted on the emulated converter boards
RTD_NAMES = ("supply", "return", "sink_return", "it_coolant")

# name: (emulated output, active_level). The host board's relay modules are active-low
# like the real boards', so the safe level differs from "0" and a polarity bug shows here.
# reuse: diverting valve to the heat exchanger; cooler_inhibit: holds the dry-cooler fans
# off. De-energised (the safe state) = heat to the dry cooler.
RELAY_PINS = {"reuse": ("emu_reuse", 0), "cooler_inhibit": ("emu_cooler_inhibit", 0)}
RELAY_PULL = "up"  # the modules' input pull-up holds a floating pin at the inactive level

# Board-level inputs (until the console/MQTT/Modbus issues drive them): name ->
# (emulated pin, active_level). Contacts to ground with pull-ups, as on the real boards.
INPUT_PINS = {
    "sink_available": ("emu_sink_ok", 0),
    "maintenance": ("emu_maint", 0),
    "trip_reset": ("emu_reset", 0),
    "valve_at_reuse": ("emu_valve_fb", 0),
}
SAFE_BOOT_HELD = False  # the harness holds the safe-boot input at reset

# Dead-man output: the control task toggles it every healthy tick; a retriggerable
# monostable (every edge retriggers it) enables the relay drivers for DEAD_MAN_HOLD_MS
# after each edge. The harness models it. 1400 ms: the default 1000 ms tick needs
# 1000..1500 ms (tick <= hold <= 1.5 tick); 1400 leaves 400 ms for the tick's jitter
# (conversion wait, scheduling) and 100 ms for the RC's tolerance (7 % of 1400).
DEAD_MAN_PIN = "emu_deadman"
DEAD_MAN_HOLD_MS = 1400

clock = LinkClock()
_link = None
_chips = [None] * len(RTD_NAMES)  # in RTD_NAMES order, made on first use


def rtd_chip(name):
    """The emulated MAX31865 behind chip-select `name` (host board only)."""
    if name not in RTD_NAMES:
        raise ValueError("no RTD channel %r; have %r" % (name, RTD_NAMES))
    i = RTD_NAMES.index(name)
    chip = _chips[i]
    if chip is None:
        chip = _chips[i] = MAX31865Emu(r_ref_ohm=R_REF_OHM, now_ms=clock.ticks_ms,
                                       ticks_diff=clock.ticks_diff)
    return chip


class _Bus:
    """One SPI bus shared by every emulated chip: `write_readinto`, the drivers' whole
    bus contract."""

    error_armed = False  # the harness injects one failing transfer (a crashed driver call)

    def write_readinto(self, write_buf, read_buf):
        if self.error_armed:
            self.error_armed = False
            raise OSError(5)  # EIO, as machine.SPI raises when the bus hardware fails
        # A deselected chip only ever answers 0xFF: only selected chips take part.
        # (Faster, and no allocation: a simulated day polls the bus ~10^6 times.)
        sel = None
        for chip in _chips:
            if chip is not None and not chip._v:
                if sel is not None:
                    sel = None
                    break
                sel = chip
        else:
            if sel is not None:
                sel._xfer_into(write_buf, read_buf)
                return
        # None or several selected (a driver bug): the bus reads the AND of the answers.
        n = len(write_buf)
        w = bytes(write_buf)  # the bytes sent (read_buf may be the same buffer)
        tmp = bytearray(n)
        for i in range(n):
            read_buf[i] = 0xFF
        for chip in _chips:
            if chip is not None and not chip._v:
                chip._xfer_into(w, tmp)
                for i in range(n):
                    read_buf[i] &= tmp[i]


BUS = _Bus()  # the harness injects bus errors through it (link: "e")


def spi():
    """The SPI bus shared by the (emulated) MAX31865 chips."""
    for name in RTD_NAMES:
        rtd_chip(name)
    return BUS


def rtd_cs(name):
    """Chip-select pin for the RTD converter called `name`, idle high."""
    pin = rtd_chip(name).cs
    pin.value(1)
    return pin


class Pin:
    """A board-level pin (machine.Pin's init and value): a relay output, whose level goes to the
    harness, or an input the harness drives (`level`)."""

    OUT = 1
    IN = 0

    def __init__(self, name, active_level, out):
        self.name = name
        self.active_level = active_level
        # An output floats until driven: the module's pull resistor holds it off. An
        # input is pulled up: inactive until the harness says.
        self.level = None if out else 1 - active_level
        self._out = out

    def init(self, mode=None, value=None):
        if value is not None:
            self.value(value)

    def value(self, v=None):
        if v is None:
            return self.level
        if _link is not None and _link.hang_armed:
            while True:  # an injected hang: the driver call never returns (and blocks,
                time.sleep(60)  # so the hung node burns no CPU while the harness waits)
        v = 1 if v else 0
        if v != self.level:
            self.level = v
            if _link is not None and self._out:
                _link.send("P %s %d %d" % (self.name, v, clock.vt))

    def coil_energised(self):
        # A floating input is pulled to the inactive level by the module's resistor.
        return self.level is not None and self.level == self.active_level


_relays = {name: Pin(name, active, True) for name, (_pin, active) in RELAY_PINS.items()}
_inputs = {name: Pin(name, active, False) for name, (_pin, active) in INPUT_PINS.items()}


_dead_man = None


def dead_man():
    """The dead-man output (active high, idle low). The first call tells the harness the
    hold time (`D <hold_ms> <vt>`); its edges go to the harness as `P deadman ...`."""
    global _dead_man
    if _dead_man is None:
        _dead_man = Pin("deadman", 1, True)
        if _link is not None:
            _link.send("D %d %d" % (DEAD_MAN_HOLD_MS, clock.vt))
    return _dead_man


def relay_pin(name):
    """The emulated relay output `name` (host board only: lets tests see the coil)."""
    return _relays[name]


def relays_safe():
    """Drive every relay pin to the level that de-energises its coil; returns the pins."""
    for pin in _relays.values():
        pin.init(Pin.OUT, value=1 - pin.active_level)
    return dict(_relays)


def input_pin(name):
    return _inputs[name]


def inputs():
    """name -> (pin, active_level) for every board-level input."""
    return {name: (pin, pin.active_level) for name, pin in _inputs.items()}


# The flow meter's pulse input (boards/host/pulse_emu.py, made on first use): an emulated
# pin the harness (or a test) schedules, driving the real driver's interrupt handler. Which
# driver, as a real board chooses one: "counter" (default) a hardware counter on the pin
# (lib/pcntcounter over an emulated machine.Counter: every pulse counts, as the ESP32's PCNT
# and the RP2040's PIO do), "irq" the interrupt counter (lib/pulsecounter).
PULSE_COUNTER = os.getenv("HEATGW_PULSE_COUNTER") or "counter"
# Interrupts masked per flash operation, ms (erase, program): an RP2040 runs both with
# interrupts disabled, a 4 KB sector erase typically 45 ms (W25Q16JV tSE; up to 400 ms),
# a page program 0.4 ms (here the next whole ms). "0,0": none.
FLASH_IRQ_MASK_MS = tuple(int(x) for x in (os.getenv("HEATGW_FLASH_IRQ_MASK") or "45,1")
                          .split(","))
_pulse_pin = None


def flow_pin():
    """The emulated pulse input (host board only: the link and tests schedule it)."""
    global _pulse_pin
    if _pulse_pin is None:
        from pulse_emu import PulsePin

        _pulse_pin = PulsePin(clock)
        clock.pin = _pulse_pin  # the clock runs its transitions as time passes
    return _pulse_pin


def flow_pulse_counter(min_pulse_us=0, flag=None):
    """The flow meter's pulse input, counted by the driver PULSE_COUNTER names."""
    pin = flow_pin()
    if PULSE_COUNTER == "irq":
        from pulsecounter import PulseCounter

        return PulseCounter(pin, min_pulse_us=min_pulse_us, flag=flag, clock=clock)
    if PULSE_COUNTER != "counter":
        raise ValueError("HEATGW_PULSE_COUNTER: %r is not counter or irq" % (PULSE_COUNTER,))
    from pcntcounter import PcntCounter
    from pulse_emu import Counter

    return PcntCounter(Counter(0, pin, filter_ns=min_pulse_us * 1000), pin, flag=flag,
                       clock=clock)


def _flash_op(erase):
    # a program or erase on the emulated flash: the CPU's interrupts are off meanwhile
    if _pulse_pin is not None:
        _pulse_pin.mask(clock.vt, FLASH_IRQ_MASK_MS[0] if erase else FLASH_IRQ_MASK_MS[1])


# The serial port (host_tools/serialport.py): with $HEATGW_SERIAL = "1" the node's stdin
# and stdout are a pty that behaves like a board's USB serial (boards/host/serialio.py).
SERIAL = os.getenv("HEATGW_SERIAL") == "1"
_port = None


def serial_port():
    """The node's side of the serial port (serialio.SerialIO), made on first use; None
    when the node has none."""
    global _port
    if _port is None and SERIAL:
        from serialio import SerialIO

        _port = SerialIO(clock)
    return _port


def console_in():
    """Non-blocking input from the serial port (board contract, optional): an object whose
    readinto(buf) puts what was typed into buf and returns the count (0: nothing), never
    blocking; any() counts what waits. A Ctrl-C typed raises KeyboardInterrupt, which
    stops the application in order. None without a serial port (no --serial)."""
    return serial_port()


class _Watchdog:
    """machine.WDT on the host: the harness owns the timer and resets the node; a feed
    is a message on the link (the clock is the link)."""

    error_armed = False  # the harness injects one failing feed (a crashed supervisor)

    def feed(self):
        if self.error_armed:
            self.error_armed = False
            raise OSError(5)  # EIO
        clock.feed()


WDT = _Watchdog()
_wdt_ms = None  # the timeout of the watchdog this run started


def watchdog(timeout_ms):
    global _wdt_ms
    clock.every(0, None)  # the application takes the watchdog over from a hold
    _wdt_ms = timeout_ms
    if _link is not None:
        _link.send("W %d %d" % (timeout_ms, clock.vt))
    return WDT


def hold_watchdog():
    """Keep a started watchdog fed from a timer while the application is stopped (board
    contract, optional; heatgw.start after the orderly stop, boot.py after a soft reset):
    the watchdog cannot be stopped, and the REPL and mpremote must not be cut short. Safe:
    nothing toggles the dead-man output then, so the relay drivers stay off in hardware.
    Here the timer runs on virtual time (clock.every) and a soft reset that leaves the
    harness's watchdog running says so in $HEATGW_WDT_MS. True when a watchdog is held."""
    ms = _wdt_ms or int(os.getenv("HEATGW_WDT_MS") or 0)
    if not ms or _link is None:
        return False  # none started (standalone, the harness owns no watchdog)
    clock.feed()
    clock.every(ms // 4, clock.feed)
    return True


def safe_boot_requested():
    return SAFE_BOOT_HELD


# Why the node (re)started, as a chip's machine.reset_cause() says (heatgw.bootloop): the
# harness says it in its boot line (its watchdog, a power cut, a reset at the port);
# standalone, the runner's $HEATGW_RESET ("soft", "hard"), else a power-on.
RESET_CAUSE = {"soft": "soft", "hard": "hard"}.get(os.getenv("HEATGW_RESET"), "power_on")


def reset_cause():
    """ "power_on", "soft", "hard" or "watchdog" (board contract, optional)."""
    return RESET_CAUSE


def reset():
    """A hard reset asked by the firmware (the console's reboot): the node process ends
    with the status its runner restarts it for (linkproto.EXIT_HARD_RESET), as
    machine.reset() resets a chip."""
    import linkproto

    raise SystemExit(linkproto.EXIT_HARD_RESET)


_flash = None
_MOUNT = "/flash"


def flash_device():
    global _flash
    if _flash is None:
        from flashdev import FlashDev

        path = os.getenv("HEATGW_FLASH") or "/tmp/heatgw-host-flash.bin"
        # 64 blocks of 4 KB by default; a deployed node's code (.mpy files, a 4 KB block
        # each at least) needs an ESP32's 2 MB file system: HEATGW_FLASH_BLOCKS=512
        _flash = FlashDev(path, block_count=int(os.getenv("HEATGW_FLASH_BLOCKS") or 64))
        _flash.on_op = _flash_op
    return _flash


_mounted = False


NET_INTERFACES = ("host",)  # the network is the host's: nothing to bring up


def network_interface(kind):
    """None: the host's own network (heatgw.net reports it up at once)."""
    if kind != "host":
        raise ValueError("the host board has no %r interface" % (kind,))
    return None


def data_dir():
    """Where the firmware keeps its files: littlefs on a file-backed flash image."""
    global _mounted
    if not _mounted:
        from flashdev import mount

        mount(flash_device(), _MOUNT)
        _mounted = True
    return _MOUNT


def observer(kind, record):
    """Application records (events, saves, status) go to the harness."""
    if _link is not None:
        _link.send_json("O %s %d " % (kind, clock.vt), record)


def install_asyncio():
    """Run asyncio on this board's virtual clock (the application calls this first)."""
    import vasyncio

    port = serial_port()  # with a serial port, the idle wait reads it (Ctrl-C, console)
    return vasyncio.install(clock.ticks_ms, clock.ticks_diff, clock.ticks_add,
                            clock.asyncio_wait if port is None else port.asyncio_wait)


# RS-485 ports: name -> the environment variable naming the pty a test made for it (the
# other end is the test's Modbus peer). Without it the port cannot be opened (OSError).
RS485_PORTS = {"rs485": "HEATGW_RS485"}


def rs485(port, baudrate, parity, stop_bits):
    """(uart, de) of the RS-485 port `port`: a UART-like stream over the pty named by
    $HEATGW_RS485 (boards/host/ptyuart.py) and its emulated driver-enable pin. parity:
    None, 0 (even) or 1 (odd), as machine.UART takes it."""
    if port not in RS485_PORTS:
        raise ValueError("the host board has no RS-485 port %r; have %r"
                         % (port, sorted(RS485_PORTS)))
    path = os.getenv(RS485_PORTS[port])
    if not path:
        raise OSError(19, "no pty for %s: set $%s" % (port, RS485_PORTS[port]))  # ENODEV
    from ptyuart import DEPin, PtyUART

    de = DEPin()
    uart = PtyUART(path, de)
    uart.init(baudrate=baudrate, bits=8, parity=parity, stop=stop_bits)
    return uart, de


# Analogue inputs (heatgw.analog): three channels with the real boards' front ends, a
# 12-bit converter on the 3.3 V reference (boards/host/adc_emu.py) whose signals the
# harness serves from the plant (`a` lines: the valve's position feedback, the loop
# pressure, wire breaks). Like the RP2040's, the ADC has read_u16() only.
ADC_CHANNELS = ("ain1", "ain2", "ain3")
AIN_SHUNT_OHM = 100
AIN_DIVIDER = (39000, 10000)
ADC_UV_FULL_SCALE = 3_300_000
VALVE_OUT_FULL_V = 10.0
_adcs = {}


def adc_channel(channel):
    """The emulated ADC of a channel (host board only: the link and tests set it)."""
    a = _adcs.get(channel)
    if a is None:
        if channel not in ADC_CHANNELS:
            raise ValueError("the host board has no ADC channel %r; have %r"
                             % (channel, ADC_CHANNELS))
        a = _adcs[channel] = ADCEmu(AIN_SHUNT_OHM, AIN_DIVIDER)
    return a


def adc(channel):
    return adc_channel(channel)


class ValveOutput:
    """The valve's 0-10 V command (machine.PWM's duty_u16): each new duty goes to the
    harness as `P valve_out <duty> <vt>`, whose plant moves the valve to it while the reuse
    relay powers the actuator."""

    def __init__(self):
        self.duty = 0

    def duty_u16(self, d=None):
        if d is None:
            return self.duty
        if d != self.duty:
            self.duty = d
            if _link is not None:
                _link.send("P valve_out %d %d" % (d, clock.vt))


_valve_out = None


def valve_output():
    global _valve_out
    if _valve_out is None:
        _valve_out = ValveOutput()
        if _link is not None:
            _link.send("P valve_out 0 %d" % clock.vt)
    return _valve_out


def io_sent():
    """A client writing to a raw socket or a pty says it sent something its peer answers
    (vasyncio.sent(): virtual time follows real time while the reply is due)."""
    import vasyncio

    vasyncio.sent()


def io_serving(sock, kind):
    """A server registers its sockets: kind "listen", "conn" (a client's connection) or
    None (closed). What they receive is a request, not a reply; while a client is
    connected, virtual time runs at most $HEATGW_IO_LEAD_MS ahead of the last request
    heard, then follows real time (vasyncio.serving)."""
    import vasyncio

    vasyncio.serving(sock, kind)


def awaits_replies(fn):
    """A network client says what it awaits (fn() true while a reply is due): virtual
    time keeps following real time until it came (vasyncio: pipelined requests)."""
    import vasyncio

    vasyncio.awaits(fn)


def connect_link():
    """Under the harness ($HEATGW_LINK), connect the clock to it: hello and the boot
    step. boards/host/node.py calls this once it has measured the host board's heap."""
    global _link
    addr = os.getenv("HEATGW_LINK")
    if addr and _link is None:
        _link = clock
        clock.connect(addr, __import__("sys").modules[__name__])
