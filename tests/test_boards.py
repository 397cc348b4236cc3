"""Board definitions: the host board serves the same interface as the real boards."""

import ast
import importlib.util

import pytest

from host_tools import build_mpy
from host_tools.paths import BOARDS


def _load_contract():
    """boards/contract.py: the board contract, in one place (not a package: loaded by path)."""
    spec = importlib.util.spec_from_file_location("board_contract", BOARDS / "contract.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


contract = _load_contract()

# Every folder with a manifest.py is a real board (the host board has none): a new board
# is checked here without an edit.
REAL_BOARDS = tuple(sorted(p.parent.name for p in BOARDS.glob("*/manifest.py")))


def test_host_board_drives_several_chips_on_one_shared_bus(mp):
    out = mp.run_json(
        """
import json
import board
from max31865 import MAX31865
from heatgw.rtd import TemperatureSensor, resistance_ohm
bus = board.spi()
sensors = {}
for name, t in (("supply", 70.0), ("return", 50.0)):
    board.rtd_chip(name).set_resistance(resistance_ohm(t, 1000))
    adc = MAX31865(bus, board.rtd_cs(name), wires=4, filter_hz=50,
                   r_ref_ohm=board.R_REF_OHM, r0_ohm=1000, clock=board.clock)
    sensors[name] = TemperatureSensor(adc)
board.rtd_chip("return").inject("open")
res = {}
for name, s in sensors.items():
    s.start()
    for _ in range(200):
        t, why = s.read_c()
        if why != "not_ready":
            break
        board.clock.sleep_ms(2)  # the host board's chips run on its virtual clock
    res[name] = [t, why]
print(json.dumps(res))
"""
    )[0]
    supply_c, why = out["supply"]
    assert why is None and abs(supply_c - 70.0) < 0.02
    # The faulty channel on the same bus gives a reason and no number.
    assert out["return"][0] is None and out["return"][1] == "rtd_high_threshold"


# A recording stub of `machine` for importing a real board file on the unix port: every
# Pin / SPI / WDT construction and every call on them goes to LOG (printed as JSON).
STUB_MACHINE = r"""
LOG = []


class Pin:
    IN = "IN"
    OUT = "OUT"
    OPEN_DRAIN = "OPEN_DRAIN"
    PULL_UP = "PULL_UP"
    PULL_DOWN = "PULL_DOWN"
    IRQ_FALLING = 2
    IRQ_RISING = 1

    def __init__(self, id, mode=None, pull=None, *, value=None):
        self.id = id
        self._level = value
        LOG.append(["Pin", id, mode, pull, value])

    def init(self, mode=None, pull=None, *, value=None):
        LOG.append(["init", self.id, mode, pull, value])

    def value(self, v=None):
        if v is None:
            LOG.append(["read", self.id])
            return 1 if self._level is None else self._level
        self._level = v
        LOG.append(["value", self.id, v])

    def irq(self, handler=None, trigger=None, **kw):
        if kw.get("hard") and not HARD_IRQ:  # esp32's Pin.irq has no `hard`
            raise TypeError("unexpected keyword argument 'hard'")
        LOG.append(["irq", self.id, trigger, bool(kw.get("hard"))])


HARD_IRQ = True  # the port's Pin.irq takes hard=True (rp2); the probe sets it per board


class Counter:  # machine.Counter (esp32: a PCNT unit)
    UP = 1
    RISING = 1
    FALLING = 2

    def __init__(self, id, src, *, direction=UP, edge=RISING, filter_ns=0):
        LOG.append(["Counter", id, src.id, direction, edge, filter_ns])

    def value(self, v=None):
        return 0


class SPI:
    def __init__(self, id, **kw):
        pins = {k: kw.pop(k).id for k in ("sck", "mosi", "miso") if k in kw}
        LOG.append(["SPI", id, pins, kw])

    def write_readinto(self, w, r):
        LOG.append(["xfer", len(w)])


class UART:
    def __init__(self, id, **kw):
        pins = {k: kw.pop(k).id for k in ("tx", "rx") if k in kw}
        LOG.append(["UART", id, pins, kw])


class WDT:
    def __init__(self, id=0, timeout=5000):
        LOG.append(["WDT", timeout])

    def feed(self):
        LOG.append(["feed"])


PWRON_RESET = 1
SOFT_RESET = 5
RESET_CAUSE = [PWRON_RESET]  # a probe sets it (ESP32: reset_cause() after a soft reset)
MEM = {}  # a probe sets registers (RP2040: WATCHDOG CTRL.ENABLE survives a soft reset)
TIMERS = []


def reset_cause():
    return RESET_CAUSE[0]


class _Mem32:
    def __getitem__(self, addr):
        return MEM.get(addr, 0)


mem32 = _Mem32()


class Timer:
    PERIODIC = "PERIODIC"
    ONE_SHOT = "ONE_SHOT"

    def __init__(self, id=-1):
        self.id = id
        self.callback = None
        LOG.append(["Timer", id])

    def init(self, period=None, mode=None, callback=None):
        self.callback = callback
        TIMERS.append(self)
        LOG.append(["Timer.init", self.id, period, mode])

    def deinit(self):
        LOG.append(["Timer.deinit", self.id])
"""

# A stub `rp2` (the unix port has none): the program is not assembled here (tests/rp2_emu
# runs it); the state machine's configuration and instructions go to machine.LOG.
STUB_RP2 = r"""
from machine import LOG


def asm_pio(**kw):
    return lambda f: ("program", f.__name__)


def asm_pio_encode(instr, sideset_count):
    return instr


class StateMachine:
    def __init__(self, id):
        self.id = id
        LOG.append(["SM", id])

    def init(self, prog, freq=-1, **kw):
        LOG.append(["SM.init", self.id, prog[1], freq,
                    {k: v.id if hasattr(v, "id") else v for k, v in kw.items()}])

    def exec(self, instr):
        LOG.append(["SM.exec", self.id, instr])

    def put(self, v):
        LOG.append(["SM.put", self.id, v])

    def irq(self, handler=None, trigger=1, hard=False):
        LOG.append(["SM.irq", self.id, trigger, hard])

    def active(self, v=None):
        LOG.append(["SM.active", self.id, v])
"""

# A stub `network` (the unix port has none): constructions go to machine.LOG, pins as ids.
STUB_NETWORK = r"""
from machine import LOG, Pin

STA_IF = "STA_IF"
AP_IF = "AP_IF"
PHY_LAN8720 = "PHY_LAN8720"
PHY_RTL8201 = "PHY_RTL8201"


def _ids(kw):
    return {k: (v.id if isinstance(v, Pin) else v) for k, v in kw.items()}


class WLAN:
    def __init__(self, interface_id):
        LOG.append(["WLAN", interface_id])


class LAN:
    def __init__(self, *a, **kw):
        LOG.append(["LAN", list(a), _ids(kw)])
"""

# Every contract call on a real board, each call's log separately.
PROBE = r"""
import json
import sys
import machine
import board
sys.path.append("/nonexistent")  # (nothing else is importable by accident)

def names(mod):
    return sorted(n for n in dir(mod) if not n.startswith("__"))

def const(n):
    v = getattr(board, n, None)
    if isinstance(v, dict):
        return {k: list(x) if isinstance(x, tuple) else x for k, x in v.items()}
    if isinstance(v, tuple):
        return list(v)
    return v if isinstance(v, (int, str)) or v is None else repr(v)

calls = {}
def call(key, f, *a):
    del machine.LOG[:]
    res = f(*a)
    calls[key] = machine.LOG[:]
    return res

res = {}
res["import"] = machine.LOG[:]  # nothing touched at import
relays = call("relays_safe", board.relays_safe)
res["relays_returned"] = sorted(relays)
call("spi", board.spi)
for name in board.RTD_CS_PINS:
    call("rtd_cs:" + name, board.rtd_cs, name)
ins = call("inputs", board.inputs)
res["inputs_returned"] = {k: v[1] for k, v in ins.items()}
machine.HARD_IRQ = board.ARCH == "armv6m"  # rp2 has hard pin interrupts, esp32 not
call("flow_pulse_counter", board.flow_pulse_counter)
call("flow_pulse_counter:debounced", board.flow_pulse_counter, 5000)
call("watchdog", board.watchdog, 4000)
res["safe_boot_requested"] = call("safe_boot_requested", board.safe_boot_requested)
res["data_dir"] = board.data_dir()
dm = call("dead_man", board.dead_man)
del machine.LOG[:]
dm.value(1)
dm.value(0)
calls["dead_man_toggle"] = machine.LOG[:]
for port in getattr(board, "RS485_PORTS", ()):
    uart, de = call("rs485:" + port, board.rs485, port, 9600, None, 1)
    res["rs485_de_returned"] = None if de is None else de.id
try:
    board.rs485("nosuch", 9600, None, 1)
    res["rs485_bad_port"] = "accepted"
except ValueError:
    res["rs485_bad_port"] = "ValueError"
except AttributeError:
    res["rs485_bad_port"] = None
for kind in getattr(board, "NET_INTERFACES", ()):
    call("net:" + kind, board.network_interface, kind)
try:
    board.network_interface("nosuch")
    res["net_bad_kind"] = "accepted"
except ValueError:
    res["net_bad_kind"] = "ValueError"
except AttributeError:
    res["net_bad_kind"] = None
res["calls"] = calls
res["names"] = names(board)
res["callable"] = sorted(n for n in names(board) if callable(getattr(board, n)))
res["consts"] = {n: const(n) for n in names(board) if n.isupper()}
res["clock"] = all(hasattr(board.clock, f) for f in ("ticks_ms", "ticks_add", "ticks_diff",
                                                     "sleep_ms"))
print(json.dumps(res))
"""

# Hardware facts, from the chips' datasheets (not from the board files under test), by the
# MCU (the board's ARCH), so a new board on a known MCU needs nothing here.
MCU = {
    "xtensawin": {  # ESP32 (WROOM/WROVER modules)
        "input_only": set(range(34, 40)),  # no output driver, no internal pulls
        "reserved": set(range(6, 12)),  # the module's SPI flash
        "strapping": {0, 2, 5, 12, 15},
        "gpio": set(range(40)),
        "rmii": {19, 21, 22, 25, 26, 27},  # EMAC pins fixed by the chip (IO_MUX only)
        "high_at_reset": {0, 5, 15},  # strapping pins with their pull-up on at reset
        "uart_pins": None,  # any GPIO through the matrix (TX: an output-capable one)
    },
    "armv6m": {"input_only": set(), "reserved": set(), "strapping": set(),
               "gpio": set(range(30)), "rmii": set(), "high_at_reset": set(),
               # RP2040 datasheet, GPIO function table: UARTn TX / RX pins
               "uart_pins": {0: ({0, 12, 16, 28}, {1, 13, 17, 29}),
                             1: ({4, 8, 20, 24}, {5, 9, 21, 25})}},
}
# Board-level facts from the boards' schematics.
BOARD_RESERVED = {"pico_w": {23, 24, 25, 29}}  # the wireless chip (CYW43439) on the Pico W
# The PHY wiring (Olimex ESP32-POE rev L1 netlist, WROOM variant): MDC, MDIO, the 50 MHz
# clock out to the PHY's CLKIN, and the PHY power switch.
BOARD_NET = {"olimex_esp32_poe": {"mdc": 23, "mdio": 18, "ref_clk": 17, "phy_power": 12}}


def _mcu(board, res=None):
    arch = (res["consts"]["ARCH"] if res is not None else build_mpy.TARGET_ARCHES[board])
    return MCU[arch]


def probe_board(mp, tmp_path, board):
    (tmp_path / "machine.py").write_text(STUB_MACHINE)
    (tmp_path / "network.py").write_text(STUB_NETWORK)
    (tmp_path / "rp2.py").write_text(STUB_RP2)
    return mp.run_json(PROBE, board=board, extra_path=[tmp_path])[0]


@pytest.fixture(scope="module", params=REAL_BOARDS)
def probed(request, mp, tmp_path_factory):
    board = request.param
    return board, probe_board(mp, tmp_path_factory.mktemp(board), board)


def _pins_made(log):
    return [e for e in log if e[0] == "Pin"]


def test_real_board_has_every_contract_name(probed):
    board, res = probed
    missing = [n for n in contract.EVERY_BOARD_FUNCTIONS if n not in res["callable"]]
    missing += [n for n in contract.EVERY_BOARD_CONSTANTS + contract.REAL_BOARD_CONSTANTS
                if n not in res["consts"]]
    assert not missing, f"{board} lacks {missing} (see boards/contract.py)"
    c = res["consts"]
    assert c["NAME"] == board
    assert c["ARCH"] == build_mpy.TARGET_ARCHES[board]
    assert sorted(c["RELAY_PINS"]) == sorted(contract.RELAY_NAMES)
    assert sorted(c["INPUT_PINS"]) == sorted(contract.INPUT_NAMES)
    assert {"supply", "return"} <= set(c["RTD_CS_PINS"])
    assert type(c["R_REF_OHM"]) is int and type(c["DEAD_MAN_HOLD_MS"]) is int
    assert 100 <= c["DEAD_MAN_HOLD_MS"] <= 60_000
    assert res["clock"], "board.clock lacks a ticks function"
    assert res["import"] == [], "importing the board touched the hardware"
    assert res["safe_boot_requested"] is False  # stub pins read high: not held
    assert isinstance(res["data_dir"], str)


def test_relays_safe_drives_every_relay_to_its_inactive_level(probed):
    """Polarity: each relay pin is made an output at 1 - active_level (coil off) in the
    constructor itself (no glitch to the active level), nothing else is touched, and the
    module's pull holds the same level while the pin floats."""
    board, res = probed
    relay_pins = res["consts"]["RELAY_PINS"]
    log = res["calls"]["relays_safe"]
    made = {e[1]: e for e in _pins_made(log)}
    assert res["relays_returned"] == sorted(relay_pins)
    for name, (gpio, active) in relay_pins.items():
        assert active in (0, 1), name
        assert made[gpio][2] == "OUT" and made[gpio][4] == 1 - active, (name, made[gpio])
        # a floating pin (reset, before boot.py) must also be the inactive level
        assert res["consts"]["RELAY_PULL"] == ("up" if active == 0 else "down"), name
    active_of = {gpio: active for gpio, active in relay_pins.values()}
    assert sorted(made) == sorted(active_of)  # every relay, and nothing else
    for e in log:  # a later write, if any, is the inactive level too
        assert e[0] == "Pin" or (e[0] == "value" and e[2] == 1 - active_of[e[1]]), e


def test_no_gpio_is_used_twice(probed):
    board, res = probed
    c = res["consts"]
    spi = [e for e in res["calls"]["spi"] if e[0] == "SPI"]
    assert len(spi) == 1
    _, _spi_id, spi_pins, spi_kw = spi[0]
    assert sorted(spi_pins) == ["miso", "mosi", "sck"]
    assert spi_kw.get("phase") == 1  # MAX31865: SPI mode 1 or 3
    uses = [("spi " + k, v) for k, v in spi_pins.items()]
    uses += [("cs " + k, v) for k, v in c["RTD_CS_PINS"].items()]
    uses += [("relay " + k, v[0]) for k, v in c["RELAY_PINS"].items()]
    uses += [("input " + k, v[0]) for k, v in c["INPUT_PINS"].items()]
    uses += [("flow", c["FLOW_PULSE_PIN"]), ("safe boot", c["SAFE_BOOT_PIN"]),
             ("dead man", c["DEAD_MAN_PIN"])]
    uses += [("net " + k, v) for k, v in (c.get("NET_PINS") or {}).items()]
    uses += [("rs485 " + k, v) for k, v in (c.get("RS485_PINS") or {}).items()]
    by_gpio = {}
    for what, gpio in uses:
        by_gpio.setdefault(gpio, []).append(what)
    twice = {g: w for g, w in by_gpio.items() if len(w) > 1}
    assert not twice, f"{board}: GPIO used twice: {twice}"
    mcu = _mcu(board, res)
    reserved = mcu["reserved"] | BOARD_RESERVED.get(board, set())
    bad = {g: w for g, w in by_gpio.items() if g not in mcu["gpio"] or g in reserved}
    assert not bad, f"{board}: GPIO that does not exist or the MCU reserves: {bad}"
    # the calls construct exactly the pins the constants name (the PHY driver takes the
    # fixed RMII data pins itself: named in NET_PINS, never constructed)
    made = {e[1] for log in res["calls"].values() for e in _pins_made(log)}
    net = set((c.get("NET_PINS") or {}).values())
    assert made <= set(by_gpio) and set(by_gpio) - made <= net, (made, set(by_gpio))


def test_network_interfaces(probed):
    """Each kind the board names builds the port's interface: Wi-Fi station; LAN with the
    board's PHY pins (every one in NET_PINS, so the duplicate check above covers them),
    and on an ESP32 the chip's fixed RMII pins kept free for the PHY."""
    board, res = probed
    c = res["consts"]
    kinds = c.get("NET_INTERFACES")
    assert kinds, f"{board} names no network interface (NET_INTERFACES)"
    assert set(kinds) <= set(contract.NET_KINDS) - {"host"}, kinds
    assert res["net_bad_kind"] == "ValueError"  # a kind the board lacks: a clear error
    net_pins = c.get("NET_PINS") or {}
    for kind in kinds:
        log = res["calls"]["net:" + kind]
        if kind == "wlan":
            assert log == [["WLAN", "STA_IF"]], log
            continue
        lan = [e for e in log if e[0] == "LAN"]
        assert len(lan) == 1, log
        kw = lan[0][2]
        assert kw["phy_type"] in ("PHY_LAN8720", "PHY_RTL8201"), kw
        assert type(kw["phy_addr"]) is int and 0 <= kw["phy_addr"] < 32
        assert kw["ref_clk_mode"] in ("OUT", "IN")
        for arg, name in (("mdc", "mdc"), ("mdio", "mdio"), ("power", "phy_power"),
                          ("ref_clk", "ref_clk")):
            if arg in kw:
                assert kw[arg] == net_pins[name], (arg, kw[arg], net_pins)
        missing = _mcu(board, res)["rmii"] - set(net_pins.values())
        assert not missing, f"{board}: RMII pins {sorted(missing)} not reserved in NET_PINS"
    if "lan" not in kinds:
        assert not net_pins, "NET_PINS without a wired interface"
    for name, gpio in BOARD_NET.get(board, {}).items():
        assert net_pins.get(name) == gpio, (name, net_pins.get(name), gpio)


def test_rs485_port(probed):
    """Modbus RTU: rs485() makes one UART on exactly the named TX/RX pins (on the RP2040
    pins carrying that UART), reads that never wait (timeout=0), and the DE pin an output
    low from the start and low from reset. A board without a port says so (ValueError)."""
    board, res = probed
    c = res["consts"]
    ports = c.get("RS485_PORTS") or []
    assert res["rs485_bad_port"] == "ValueError"
    if not ports:
        assert not c.get("RS485_PINS"), "RS485_PINS without RS485_PORTS"
        return
    assert ports == ["rs485"], ports
    pins = c["RS485_PINS"]
    mcu = _mcu(board, res)
    log = res["calls"]["rs485:rs485"]
    uarts = [e for e in log if e[0] == "UART"]
    assert len(uarts) == 1, log
    _, uart_id, upins, kw = uarts[0]
    assert upins == {"tx": pins["tx"], "rx": pins["rx"]}, upins
    assert kw.get("timeout") == 0 and kw.get("baudrate") == 9600 and kw.get("bits") == 8, kw
    assert "parity" in kw and kw.get("stop") == 1, kw
    assert pins["tx"] not in mcu["input_only"]
    if mcu["uart_pins"] is not None:
        tx_ok, rx_ok = mcu["uart_pins"][uart_id]
        assert pins["tx"] in tx_ok and pins["rx"] in rx_ok, (uart_id, pins)
    made = {e[1]: e for e in _pins_made(log)}
    if "de" in pins:
        de = pins["de"]
        assert made[de][2] == "OUT" and made[de][4] == 0, made[de]  # receiving at once
        assert de not in mcu["input_only"] | mcu["high_at_reset"], de
        assert res["rs485_de_returned"] == de
        assert [e for e in log if e[0] == "value" and e[1] == de and e[2] != 0] == []
    else:
        assert res["rs485_de_returned"] is None


def test_input_only_pins_are_never_outputs_and_never_asked_for_a_pull(probed):
    board, res = probed
    for key, log in res["calls"].items():
        for e in log:
            if e[0] in ("Pin", "init") and e[1] in _mcu(board, res)["input_only"]:
                assert e[2] not in ("OUT", "OPEN_DRAIN"), (key, e)
                assert e[3] is None, f"{board} GPIO {e[1]} has no internal pulls: {key} {e}"
            if e[0] == "value" and e[1] in _mcu(board, res)["input_only"]:
                raise AssertionError(f"{key} writes input-only GPIO {e[1]}")


def test_inputs_flow_and_safe_boot_pins(probed):
    board, res = probed
    c = res["consts"]
    made = {e[1]: e for e in _pins_made(res["calls"]["inputs"])}
    for name, (gpio, active) in c["INPUT_PINS"].items():
        assert made[gpio][2] == "IN", name
        if gpio not in _mcu(board, res)["input_only"]:  # contacts to GND: pulled inactive
            assert made[gpio][3] == ("PULL_UP" if active == 0 else "PULL_DOWN"), name
    assert res["inputs_returned"] == {k: v[1] for k, v in c["INPUT_PINS"].items()}
    for key in ("flow_pulse_counter", "flow_pulse_counter:debounced"):
        flow = res["calls"][key]
        assert [e[:3] for e in _pins_made(flow)] == [["Pin", c["FLOW_PULSE_PIN"], "IN"]], key
    sb = _pins_made(res["calls"]["safe_boot_requested"])
    assert [e[:3] for e in sb] == [["Pin", c["SAFE_BOOT_PIN"], "IN"]]
    for name, gpio in c["RTD_CS_PINS"].items():
        cs = _pins_made(res["calls"]["rtd_cs:" + name])
        assert [e[1:] for e in cs] == [[gpio, "OUT", None, 1]], name  # deselected at once
    assert res["calls"]["watchdog"] == [["WDT", 4000]]


def test_flow_pulses_are_counted_in_hardware(probed):
    """The flow input is counted by the MCU's hardware counter, so no pulse is lost while
    interrupts are masked (a flash erase): an ESP32 board takes a PCNT unit (falling
    edges, its glitch filter up to 12.8 us), an RP2040 board a PIO state machine (the
    minimum width in its program, in 2 us loop turns at 1 MHz). A debounce beyond the
    PCNT's filter (a reed contact's 5 ms) falls back to the interrupt counter on both
    edges (soft on the ESP32); the PIO takes any width."""
    board, res = probed
    c = res["consts"]
    pin = c["FLOW_PULSE_PIN"]
    plain = res["calls"]["flow_pulse_counter"]
    debounced = res["calls"]["flow_pulse_counter:debounced"]
    if c["ARCH"] == "xtensawin":
        unit = c["FLOW_PCNT_UNIT"]
        assert ["Counter", unit, pin, 1, 2, 0] in plain, plain  # up, falling, no filter
        assert ["irq", pin, 2, False] in plain  # edge times only (soft: no hard on esp32)
        assert not [e for e in debounced if e[0] == "Counter"], debounced
        assert ["irq", pin, 2 | 1, False] in debounced  # both edges: software width
    elif c["ARCH"] == "armv6m":
        sm = c["FLOW_PIO_SM"]
        assert 0 <= sm < 4, "PIO1 has a state machine taken by the CYW43 radio"
        for log, turns in ((plain, 0), (debounced, 2500)):
            init = [e for e in log if e[0] == "SM.init"]
            assert init == [["SM.init", sm, "_count_low_pulses", 1_000_000,
                             {"in_base": pin, "jmp_pin": pin}]], log
            assert ["SM.put", sm, turns] in log and ["SM.active", sm, 1] in log
            assert ["SM.irq", sm, 1, True] in log  # edge times from a hard interrupt
            assert not [e for e in log if e[0] == "irq"], log  # no pin interrupt at all
    else:
        raise AssertionError(f"{board}: no hardware pulse counter for {c['ARCH']}")


def test_dead_man_output(probed):
    board, res = probed
    c = res["consts"]
    made = _pins_made(res["calls"]["dead_man"])
    assert [e[1:3] for e in made] == [[c["DEAD_MAN_PIN"], "OUT"]]
    mcu = _mcu(board, res)
    assert c["DEAD_MAN_PIN"] not in mcu["strapping"] | mcu["input_only"]
    assert res["calls"]["dead_man_toggle"] == [["value", c["DEAD_MAN_PIN"], 1],
                                               ["value", c["DEAD_MAN_PIN"], 0]]
    # the default 1000 ms control tick fits the hold (tick <= hold <= 1.5 tick)
    assert 1000 <= c["DEAD_MAN_HOLD_MS"] <= 1500


def test_probe_catches_a_wrong_board(mp, tmp_path):
    """The checks above see these mistakes: a relay driven to its active level, a pull on
    an input-only pin, a GPIO used twice."""
    src = (BOARDS / "esp32_devkitc" / "board.py").read_text()
    bad = tmp_path / "bad"
    bad.mkdir()
    wrong = (src.replace("value=1 - active)", "value=active)")
             .replace("Pin(FLOW_PULSE_PIN, Pin.IN)", "Pin(FLOW_PULSE_PIN, Pin.IN, Pin.PULL_UP)")
             .replace("DEAD_MAN_PIN = 13", "DEAD_MAN_PIN = 25"))
    assert wrong.count("value=active)") == 1 and "DEAD_MAN_PIN = 25" in wrong
    (bad / "board.py").write_text(wrong)
    (bad / "machine.py").write_text(STUB_MACHINE)
    (bad / "network.py").write_text(STUB_NETWORK)
    (bad / "rp2.py").write_text(STUB_RP2)
    res = mp.run_json(PROBE, board="esp32_devkitc", extra_path=[bad])[0]
    for check in (test_relays_safe_drives_every_relay_to_its_inactive_level,
                  test_input_only_pins_are_never_outputs_and_never_asked_for_a_pull,
                  test_no_gpio_is_used_twice):
        with pytest.raises(AssertionError):
            check(("esp32_devkitc", res))




@pytest.mark.parametrize("mistake", [
    ('RS485_PINS = {"tx": 22, "rx": 21, "de": 2}', 'RS485_PINS = {"tx": 22, "rx": 21, "de": 15}'),
    ('de = Pin(p["de"], Pin.OUT, value=0)', 'de = Pin(p["de"], Pin.OUT, value=1)'),
    ("timeout=0, timeout_char=0", "timeout=100, timeout_char=0"),
    ('tx=Pin(p["tx"]), rx=Pin(p["rx"])', 'tx=Pin(p["rx"]), rx=Pin(p["tx"])'),
])
def test_probe_catches_a_wrong_rs485_port(mp, tmp_path, mistake):
    """DE on a pin pulled up at reset, DE driving at start, reads that wait, TX/RX swapped."""
    src = (BOARDS / "esp32_devkitc" / "board.py").read_text()
    assert src.count(mistake[0]) == 1
    (tmp_path / "board.py").write_text(src.replace(*mistake))
    (tmp_path / "machine.py").write_text(STUB_MACHINE)
    (tmp_path / "network.py").write_text(STUB_NETWORK)
    res = mp.run_json(PROBE, board="esp32_devkitc", extra_path=[tmp_path])[0]
    with pytest.raises(AssertionError):
        test_rs485_port(("esp32_devkitc", res))


def test_host_board_has_every_contract_name(mp):
    (res,) = mp.run_json("""
import json
import board
print(json.dumps({"names": [n for n in dir(board) if not n.startswith("__")],
                  "callable": [n for n in dir(board) if callable(getattr(board, n))],
                  "net": [list(board.NET_INTERFACES), board.network_interface("host")]}))
""")
    missing = {n for n in contract.EVERY_BOARD_FUNCTIONS if n not in res["callable"]}
    missing |= {n for n in contract.EVERY_BOARD_CONSTANTS if n not in res["names"]}
    assert not missing, f"host board lacks {sorted(missing)}"
    assert {"install_asyncio", "observer", "clock"} <= set(res["names"])
    assert res["net"] == [["host"], None]  # the host's network: no interface object


def test_no_gpio_numbers_outside_boards():
    """Pins live only in board definitions: firmware/ and lib/ never construct Pin(<int>)."""
    from host_tools.paths import FIRMWARE, LIB

    for root in (FIRMWARE, LIB):
        for path in root.rglob("*.py"):
            tree = ast.parse(path.read_text())
            for node in ast.walk(tree):
                if (isinstance(node, ast.Call) and getattr(node.func, "id", None) == "Pin"
                        and node.args and isinstance(node.args[0], ast.Constant)):
                    raise AssertionError(f"{path}: Pin({node.args[0].value}) outside boards/")


# The watchdog hold on a real board (board.hold_watchdog, lib/wdthold): in a fresh node
# each time, since the board keeps the watchdog in its module state. SOFT sets the MCU's
# own sign of a soft reset (ESP32: reset_cause(); RP2040: WATCHDOG CTRL.ENABLE).
HOLD_PROBE = r"""
import json
import machine
if SOFT:
    machine.RESET_CAUSE[0] = machine.SOFT_RESET
    machine.MEM[0x40058000] = 1 << 30
import board
res = {}
if APP:
    board.watchdog(APP)  # the application's supervisor started it
del machine.LOG[:]
res["held"] = board.hold_watchdog()
res["hold"] = machine.LOG[:]
del machine.LOG[:]
for t in machine.TIMERS:
    t.callback(t)  # the timer fires
res["fire"] = machine.LOG[:]
del machine.LOG[:]
res["again"] = board.hold_watchdog()  # a second hold changes nothing
res["again_log"] = machine.LOG[:]
del machine.LOG[:]
board.watchdog(4000)  # the application takes it over
res["takeover"] = machine.LOG[:]
print(json.dumps(res))
"""


def _hold(mp, tmp_path, board, soft, app):
    (tmp_path / "machine.py").write_text(STUB_MACHINE)
    (tmp_path / "network.py").write_text(STUB_NETWORK)
    code = f"SOFT = {soft}\nAPP = {app}\n" + HOLD_PROBE
    return mp.run_json(code, board=board, extra_path=[tmp_path])[0]


@pytest.mark.parametrize("board", REAL_BOARDS)
def test_real_board_holds_the_watchdog_the_application_started(mp, tmp_path, board):
    """After the orderly stop the started watchdog is fed from a periodic timer (a
    quarter of its timeout), and the application's next watchdog() releases the timer."""
    res = _hold(mp, tmp_path, board, soft=False, app=4000)
    assert res["held"] is True
    timers = [e for e in res["hold"] if e[0] == "Timer.init"]
    assert len(timers) == 1 and timers[0][2:] == [1000, "PERIODIC"], res["hold"]
    assert ["feed"] in res["hold"]  # fed at once, then by the timer
    assert res["fire"] == [["feed"]]
    assert res["again"] is True and res["again_log"] == []
    assert res["takeover"][0][0] == "Timer.deinit" and ["WDT", 4000] in res["takeover"]


@pytest.mark.parametrize("board", REAL_BOARDS)
def test_real_board_holds_a_watchdog_a_soft_reset_left_running(mp, tmp_path, board):
    """boot.py after a soft reset: the watchdog may run on (it cannot be stopped), so the
    board sets it to HOLD_WDT_MS and feeds it; after power-on it starts nothing."""
    soft = _hold(mp, tmp_path, board, soft=True, app=0)
    assert soft["held"] is True
    assert soft["hold"][0] == ["WDT", 8000], soft["hold"]
    assert [e[2:] for e in soft["hold"] if e[0] == "Timer.init"] == [[2000, "PERIODIC"]]
    assert soft["fire"] == [["feed"]]
    power_on = _hold(mp, tmp_path, board, soft=False, app=0)
    assert power_on["held"] is False and power_on["hold"] == [], power_on
    assert power_on["fire"] == []


CONSOLE_PROBE = r"""
import json, sys, time
import board
cin = board.console_in()
buf = bytearray(8)
t = time.ticks_us()
n = cin.readinto(buf)
first = [n, bytes(buf[:n]).decode(), time.ticks_diff(time.ticks_us(), t)]
n = cin.readinto(buf)
print(json.dumps({"first": first, "second": n}))
"""


@pytest.mark.parametrize("board", REAL_BOARDS)
def test_real_board_console_in_never_blocks(mp, tmp_path, board):
    """console_in() reads what waits on the REPL's stream (here the unix port's stdin, a
    pipe) and returns 0 at once when nothing does, even with the stream still open."""
    import json as _json
    import select
    import subprocess

    from host_tools.mprun import mp_env
    from host_tools.paths import REPO, micropython_cmd

    (tmp_path / "machine.py").write_text(STUB_MACHINE)
    (tmp_path / "network.py").write_text(STUB_NETWORK)
    res = mp.run_json(CONSOLE_PROBE, board=board, extra_path=[tmp_path], stdin="ab")[0]
    assert res["first"][:2] == [2, "ab"] and res["second"] == 0, res
    # the stream stays open with nothing in it: both reads return 0 without waiting
    script = tmp_path / "probe.py"
    script.write_text(CONSOLE_PROBE)
    p = subprocess.Popen([*micropython_cmd(), str(script)], cwd=REPO,
                         env=mp_env(board, [tmp_path]), stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True)
    try:
        ready, _, _ = select.select([p.stdout], [], [], 20)
        assert ready, "console_in().readinto() blocked on an open, empty stream"
        out = p.stdout.readline()
    finally:
        p.stdin.close()
        p.wait(20)
    res = _json.loads(out)
    assert res["first"][:2] == [0, ""] and res["second"] == 0, res
