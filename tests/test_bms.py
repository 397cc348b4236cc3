"""The building's side (heatgw.bms, lib/modbus/mbserver): the node's Modbus TCP server
against a real client, the sink heartbeat, the sink rule's remote sources end to end.

The real micropython binary runs the whole node (heatgw.start.build) standalone on the
host board: asyncio on virtual time, real sockets (boards/host/vasyncio.py: a server's
sockets are registered with io_serving; while a client is connected, node time runs at
most $HEATGW_IO_LEAD_MS ahead of the client's last request, then with real time). Its
peer is pymodbus 3.16's own client (ModbusTcpClient), or a raw socket for what pymodbus
never sends. Register values are decoded here with CPython's struct and compared with
what the node itself says at the same node time (the driver prints its own view from
inside the request, where node time cannot move).
"""

import json
import random
import socket
import struct
import subprocess
import sys
import textwrap
import time

import pytest

from host_tools.mprun import mp_env
from host_tools.paths import FIRMWARE, REPO, micropython_cmd
from tests.brokers import free_port
from tests.nodedriver import LATE_MAX_MS
from tests.scriptnode import ScriptNode

if str(FIRMWARE) not in sys.path:
    sys.path.insert(0, str(FIRMWARE))

from heatgw.reasons import REASONS  # noqa: E402 - the telemetry's codes, the map's too

# -- the node ------------------------------------------------------------------------------

DRIVER = r"""
import board, json, select, sys, time
clk = board.clock
d = board.data_dir()
with open(d + "/config.json", "w") as f:
    f.write(CFG)
board.input_pin("sink_available").level = CONTACT  # active low: 0 = closed = available
feeds = [0, 0, 0]  # feeds, vt of the last, the largest vt gap between two
_feed = board.WDT.feed


def feed():
    if feeds[0] and clk.vt - feeds[1] > feeds[2]:
        feeds[2] = clk.vt - feeds[1]
    feeds[0] += 1
    feeds[1] = clk.vt
    _feed()


board.WDT.feed = feed
from heatgw import start
gw, asyncio = start.build()
bms = gw.bms
EVENTS = []
gw.add_sink(lambda k, r: EVENTS.append(r) if k == "event" and r.get("kind") in (
    "trip", "clear", "request", "bms", "task", "crash", "task_failing", "command") else None)
REAL0 = time.ticks_ms()
WRITES = []  # [ticks, value] of every heartbeat write the map accepted
VIEWS = [VIEW]  # print the node's own view at each read of input registers


def out(**kw):
    print("R", json.dumps(kw))


def view():
    m = gw.meter
    ins = gw.inputs
    fs = gw.failsafe
    return {"up_ms": gw.uptime_ms, "ticks": clk.ticks_ms(), "vt": clk.vt, "relay": gw.relay_reuse,
            "cause": fs.cause, "active": list(fs.active), "latched": list(fs.latched),
            "temps": ins.temps_c, "reasons": ins.temp_reasons, "flow": ins.flow_m3h,
            "flow_reason": ins.flow_reason, "power": m.last_power_w, "totals": m.totals(),
            "sink": ins.sink_available, "sink_by": ins.sink_by, "fault": gw.fault,
            "real_ms": time.ticks_diff(time.ticks_ms(), REAL0),
            "rec": None if gw.recovery is None else [
                gw.recovery.ratio_interval, gw.recovery.ratio_hour, gw.recovery.ratio_total,
                gw.recovery.compute_w, gw.recovery.compute_energy_wh]}


_read = bms.read
_write = bms.write


def read(fc, addr, count, buf, off):
    e = _read(fc, addr, count, buf, off)
    if fc == 4 and not e and VIEWS[0]:
        out(view=view(), addr=addr, count=count)
    return e


def write(addr, count, buf, off):
    e = _write(addr, count, buf, off)
    if not e:
        WRITES.append([clk.ticks_ms(), bms.hb_value])
    return e


bms.read = read
bms.write = write
_stdin = select.poll()
_stdin.register(sys.stdin, select.POLLIN)


def said():
    # the test's next line on stdin, if one came (never waits)
    for _ in _stdin.ipoll(0):
        return sys.stdin.readline().strip()
    return None


async def main():
    asyncio.create_task(gw.run(asyncio))
    while bms.server.ls is None:
        await asyncio.sleep_ms(10)
    out(ready=True, port=bms.server.port)
    sys.stdin.readline()  # node time stands still until the test has connected
BODY
    gw.shutdown()
    out(end=True, late=gw.worst_tick_late_ms, feeds=feeds, fault=gw.fault,
        rec=bms.record(), events=EVENTS, writes=WRITES, active=list(gw.failsafe.active),
        vt=clk.vt, ticks=clk.ticks_ms(), real_ms=time.ticks_diff(time.ticks_ms(), REAL0))
asyncio.run(main())
"""

# BODY until the test says "stop" on stdin (node time runs meanwhile)
UNTIL_STOP = """
while said() != "stop":
    await asyncio.sleep_ms(50)
"""

A, B = 3.9083e-3, -5.775e-7


def pt1000(t_c):
    return 1000 * (1 + A * t_c + B * t_c * t_c)


def base_config(port, **control):
    cfg = json.loads((REPO / "scenarios" / "default_config.json").read_text())
    cfg["bms"] = {"port": port, "clients": {"bms": "127.0.0.1"}, "idle_s": 60}
    cfg["control"].update({"recover_s": 5, "min_dwell_s": 10})
    cfg["control"].update(control)
    return cfg


class Node(ScriptNode):
    """The driver in a micropython process: R lines parsed as they come; go() and say()
    write lines to its stdin."""

    def __init__(self, tmp_path, cfg, body=UNTIL_STOP, env=None, contact=0, plant=True,
                 views=True):
        if plant:  # known temperatures and a pulse train (1 L/s: 3.6 m3/h), 10 minutes
            body = PLANT + body
        code = f"CFG = {json.dumps(cfg)!r}\nCONTACT = {contact}\nVIEW = {views}\n"
        code += DRIVER.replace("BODY", textwrap.indent(textwrap.dedent(body.strip("\n")),
                                                        "    "))
        super().__init__(tmp_path, code, "bmsnode", env)

    def results(self):
        with self._got:
            return [json.loads(ln[2:]) for ln in self.lines if ln and ln.startswith("R ")]

    def wait(self, key, n=1, timeout=120):
        """The first n R lines that have `key` (waiting for them)."""
        end = time.monotonic() + timeout
        with self._got:
            while True:
                rs = [r for r in (json.loads(ln[2:]) for ln in self.lines
                                  if ln and ln.startswith("R ")) if key in r]
                if len(rs) >= n:
                    return rs[:n]
                if self.lines and self.lines[-1] is None:
                    raise AssertionError(f"node ended before {key!r}:\n{self.tail()}")
                left = end - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no {key!r} in time:\n{self.tail()}")
                self._got.wait(left)

    def say(self, line=""):
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def end(self, timeout=120):
        self.say("stop")
        (r,) = self.wait("end", timeout=timeout)
        self.proc.wait(timeout)
        assert self.proc.returncode == 0, self.tail()
        return r

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


PLANT = f"""
for name, t in (("supply", 70.0), ("return", 50.0), ("sink_return", 35.0),
                ("it_coolant", 40.0)):
    board.rtd_chip(name).set_resistance(1000 * (1 + {A!r} * t + {B!r} * t * t))
_p = board.flow_pin()
for _k in range(1, 600 * 10):
    _p.add_pulse(clk.vt + 100 * _k, 5)
"""


@pytest.fixture
def nodes():
    made = []

    def start(*a, **kw):
        n = Node(*a, **kw)
        made.append(n)
        return n

    yield start
    for n in made:
        n.kill()


def connect(node, source=None, timeout=3):
    """A pymodbus client connected to the node (which stands still until then), then
    released: node time runs from here."""
    from pymodbus.client import ModbusTcpClient

    (r,) = node.wait("ready")
    c = ModbusTcpClient("127.0.0.1", port=r["port"], timeout=timeout, retries=0,
                        source_address=source)
    assert c.connect(), node.tail()
    node.say("go")
    return c


def check_healthy(end):
    assert end["fault"] is None, end
    kinds = [e["kind"] for e in end["events"]]
    assert "crash" not in kinds and "task_failing" not in kinds, kinds
    bms_tasks = [e for e in end["events"] if e["kind"] == "task"]
    assert bms_tasks == [], bms_tasks  # no restartable task crashed
    assert end["late"] <= LATE_MAX_MS, end["late"]
    assert end["feeds"][0] > 0 and end["feeds"][2] <= 2_000, end["feeds"]


def trips(end, reason="sink_unavailable"):
    return [e for e in end["events"] if e["kind"] in ("trip", "clear")
            and e["reason"] == reason]


def tdiff(a, b):
    """a - b in ticks that wrap at 2**30."""
    d = (a - b) & 0x3FFFFFFF
    return d - 0x40000000 if d >= 0x20000000 else d


# -- the register map, decoded here ---------------------------------------------------------

NO16, NOI16, NO32, NOI32 = 0xFFFF, -0x8000, 0xFFFFFFFF, -0x80000000
TEMPS = ("supply", "return", "sink_return", "it_coolant")


def decode(regs):
    """The input registers 0..44 as the README's table says, with struct."""
    raw = struct.pack(">45H", *regs)

    def u16(a):
        return struct.unpack_from(">H", raw, 2 * a)[0]

    def i16(a):
        return struct.unpack_from(">h", raw, 2 * a)[0]

    def u32(a):
        return struct.unpack_from(">I", raw, 2 * a)[0]

    def i32(a):
        return struct.unpack_from(">i", raw, 2 * a)[0]

    def u64(a):
        return struct.unpack_from(">Q", raw, 2 * a)[0]

    return {"map_version": u16(0), "state": u16(1), "reason": u16(2), "active": u16(3),
            "latched": u16(4), "sink_available": u16(5), "sink_off_by": u16(6),
            "fault": u16(7), "uptime_s": u32(8),
            **{t: i16(10 + i) for i, t in enumerate(TEMPS)}, "delta_t": i16(14),
            "flow_l_h": u32(15), "power_w": i32(17), "energy_wh": u64(19),
            "volume_l": u64(23), "energy_kwh": u32(27), "metered_s": u32(29),
            "error_s": u32(31), "ratio_interval": u32(33), "ratio_hour": u32(35),
            "ratio_total": u32(37), "compute_w": u32(39), "compute_wh": u64(41)}


def rnd(x):
    return int(x + 0.5) if x >= 0 else -int(0.5 - x)


def bits(reasons):
    b = 0
    for r in reasons:
        c = REASONS.split().index(r.split(":")[0])
        if 0 < c < 16:
            b |= 1 << c
    return b


def expected(v):
    """The registers the README's map gives for the node's own view `v`."""
    t = v["totals"]
    rec = v["rec"] or [None] * 5
    ratios, compute = rec[:3], rec[3:]
    temps = {}
    for name in TEMPS:
        c = v["temps"].get(name)
        ok = v["reasons"].get(name) is None and c is not None
        temps[name] = rnd(c * 100) if ok else NOI16
    dt = NOI16 if NOI16 in (temps["supply"], temps["return"]) else \
        temps["supply"] - temps["return"]
    sink = v["sink"]
    off = 0
    if sink is False:
        for part in v["sink_by"].split(","):
            off |= {"board": 1, "modbus": 2, "mqtt": 4}.get(part, 8)
    nj = t["energy_nj"]
    return {"map_version": 1, "state": 1 if v["relay"] else 0,
            "reason": REASONS.split().index(v["cause"].split(":")[0]), "active": bits(v["active"]),
            "latched": bits(v["latched"]),
            "sink_available": NO16 if sink is None else int(sink), "sink_off_by": off,
            "fault": 0 if v["fault"] is None else 1, "uptime_s": v["up_ms"] // 1000,
            **temps, "delta_t": dt,
            "flow_l_h": rnd(v["flow"] * 1000) if v["flow_reason"] is None
            and v["flow"] is not None else NO32,
            "power_w": NOI32 if v["power"] is None else rnd(v["power"]),
            "energy_wh": nj // 3_600_000_000_000,
            "volume_l": t["volume_ul"] // 1_000_000,
            "energy_kwh": nj // 3_600_000_000_000_000, "metered_s": t["time_ms"] // 1000,
            "error_s": t["error_ms"] // 1000,
            **{k: NO32 if r is None else rnd(r * 1e6)
               for k, r in zip(("ratio_interval", "ratio_hour", "ratio_total"), ratios,
                               strict=True)},
            "compute_w": NO32 if compute[0] is None else rnd(compute[0]),
            "compute_wh": 2**64 - 1 if compute[1] is None else compute[1]}


# 10 years at 1 MW and at 100 m3/h: beyond 32 bits in Wh and in L (4 registers each)
TEN_YEARS_NJ = 10 * 365 * 86400 * 10**6 * 10**9  # 3.15e23 nJ = 8.76e10 Wh
TEN_YEARS_UL = 10 * 365 * 24 * 100 * 10**9  # 8.76e15 uL = 8.76e12 L

REGISTERS_BODY = f"""
gw.meter.restore({{"energy_nj": {TEN_YEARS_NJ}, "volume_ul": {TEN_YEARS_UL},
                  "time_ms": 315360000000, "error_ms": 3600000}})


class Recovery:  # the interface heatgw.recovery exposes (gw.recovery)
    ratio_interval = 0.934512
    ratio_hour = None
    ratio_total = 1.25
    compute_w = 41250.5
    compute_energy_wh = 123456789012  # beyond 32 bits

    def tick(self, now):  # (what the control task calls; nothing to do here)
        pass

    def totals(self):
        return {{}}


gw.recovery = Recovery()
""" + UNTIL_STOP


def test_a_pymodbus_client_reads_what_the_node_itself_says(tmp_path, nodes):
    """Every input register, read by pymodbus and decoded here, is what the node's own
    status and exact totals say at the same node time; 64-bit totals (10 years at 1 MW,
    at 100 m3/h) to the last Wh and litre; the heat recovery ratio from gw.recovery, and
    the "no value" marker where it has none; partial reads of one snapshot agree."""
    port = free_port()
    node = nodes(tmp_path, base_config(port, sink_sources={"modbus": 30}),
                 body=REGISTERS_BODY)
    c = connect(node)
    reads = []
    try:
        for k in range(12):
            c.write_register(0, 1)  # heartbeat: the sink becomes available
            r = c.read_input_registers(0, count=45)
            assert not r.isError(), r
            reads.append(("all", 0, r.registers))
            if k % 3 == 2:
                for a, n in ((19, 4), (10, 5), (33, 6), (8, 2), (39, 6), (44, 1)):
                    r = c.read_input_registers(a, count=n)
                    assert not r.isError(), r
                    reads.append(("part", a, r.registers))
            time.sleep(0.4)
    finally:
        c.close()
    end = node.end()
    check_healthy(end)
    views = node.wait("view", len(reads))
    sinks = []
    for (kind, a, regs), v in zip(reads, views, strict=True):
        assert (v["addr"], v["count"]) == (a, len(regs))
        want = expected(v["view"])
        if kind == "all":
            got = decode(regs)
            assert got == want, (got, want)
            sinks.append(got["sink_available"])
        else:  # the same registers of a full map built from the node's view
            assert regs == encode(want)[a:a + len(regs)]
    got = decode([r for k, _, r in reads if k == "all"][-1])
    assert got["energy_wh"] >= TEN_YEARS_NJ // 3_600_000_000_000 > 2**32
    assert got["volume_l"] >= TEN_YEARS_UL // 10**6 > 2**32
    # the chips' quantisation (0.034 K per LSB) around 70 and 50 degC
    assert abs(got["supply"] - 7000) <= 4 and abs(got["return"] - 5000) <= 4
    assert got["delta_t"] == got["supply"] - got["return"]
    assert got["flow_l_h"] == 3600 and got["ratio_hour"] == NO32
    assert got["ratio_interval"] == 934512 and got["ratio_total"] == 1250000
    assert got["compute_w"] == 41251 and got["compute_wh"] == 123456789012
    assert sinks[-1] == 1 and got["sink_off_by"] == 0  # the heartbeat and the contact


RATIO_BODY = """
while said() != "stop":
    await asyncio.sleep_ms(50)
"""


def test_the_ratio_and_compute_registers_are_the_nodes_own(tmp_path, nodes):
    """With the real heat recovery part (a `recovery` section, the compute load's SDM630 a
    pymodbus server whose energy register grows), the ratio and compute registers are
    gw.recovery's own values at the same node time, "no value" until it has one."""
    from tests.modbus_peers import PymodbusTCP, f32, sdm630

    e = [12345.75]

    async def grow(fc, start, address, count, registers, values):
        if start <= 0x48 < start + len(registers):  # the energy register: 0.02 kWh a poll
            e[0] += 0.02
            registers[0x48 - start:0x4A - start] = f32(e[0])
        return None

    srv = PymodbusTCP([sdm630(1, 41250.5, e[0], action=grow)])
    try:
        port = free_port()
        cfg = base_config(port)
        cfg["modbus"] = {"buses": {"lan": {"type": "tcp", "host": "127.0.0.1",
                                           "port": srv.port}},
                         "meters": {"compute": {"bus": "lan", "slave": 1, "model": "sdm630",
                                                "role": "compute", "period_s": 2}}}
        cfg["recovery"] = {"compute": {"source": "modbus"}}
        node = nodes(tmp_path, cfg, body=RATIO_BODY, env={"HEATGW_IO_LEAD_MS": "3000"})
        c = connect(node)
        reads = []
        try:
            end = time.monotonic() + 90
            while time.monotonic() < end:
                r = c.read_input_registers(0, count=45)
                assert not r.isError(), r
                reads.append(r.registers)
                c.write_register(0, 1)
                got = decode(r.registers)
                if got["ratio_interval"] != NO32 and got["ratio_total"] != NO32 \
                        and len(reads) > 3:
                    break
                time.sleep(0.2)
        finally:
            c.close()
        end_r = node.end()
    finally:
        srv.stop()
    check_healthy(end_r)
    views = node.wait("view", len(reads))
    for regs, v in zip(reads, views, strict=True):
        assert decode(regs) == expected(v["view"]), (decode(regs), v["view"]["rec"])
    first, last = decode(reads[0]), decode(reads[-1])
    assert first["ratio_interval"] == NO32  # none yet: "no value", not 0
    assert last["compute_w"] == 41251 and 0 < last["ratio_interval"] < NO32, last
    assert 0 < last["ratio_total"] < NO32 and 0 < last["compute_wh"] < 2**64 - 1, last


def encode(fields):
    """The 45 registers of a decoded map (the inverse of decode())."""
    out = struct.pack(">HHHHHHHHI", fields["map_version"], fields["state"], fields["reason"],
                      fields["active"], fields["latched"], fields["sink_available"],
                      fields["sink_off_by"], fields["fault"], fields["uptime_s"])
    out += struct.pack(">5h", *(fields[t] for t in TEMPS), fields["delta_t"])
    out += struct.pack(">IiQQIIIIIIIQ", fields["flow_l_h"], fields["power_w"],
                       fields["energy_wh"], fields["volume_l"], fields["energy_kwh"],
                       fields["metered_s"], fields["error_s"], fields["ratio_interval"],
                       fields["ratio_hour"], fields["ratio_total"], fields["compute_w"],
                       fields["compute_wh"])
    return list(struct.unpack(">45H", out))


def _views_after(node, n0):
    return [r["view"] for r in node.wait("view", n0 + 1)[n0:]]


@pytest.mark.parametrize("lead_ms", [0, 1000])
def test_the_heartbeat_keeps_the_sink_and_its_silence_or_a_0_trips_within_a_tick(
        tmp_path, nodes, lead_ms):
    """The BMS writes the heartbeat every 0.5 s (real): the sink is available and stays so
    (a healthy client is never seen as slow, also with a lead of 1 s); it stops writing
    but stays connected: node time follows real time (it does not run away) and
    sink_unavailable trips within one control tick of the 3 s timeout, naming modbus as
    silent; it writes again: clear; it writes 0: a trip within one tick. Writes to any
    other register are refused with the right exception and change nothing."""
    from pymodbus.pdu import ExceptionResponse

    port = free_port()
    cfg = base_config(port, sink_signal=False, sink_sources={"modbus": 3})
    node = nodes(tmp_path, cfg, env={"HEATGW_IO_LEAD_MS": str(lead_ms)})
    c = connect(node)
    nv = 0
    try:
        time.sleep(1.5)  # not yet heard at the first control ticks: unavailable
        for _ in range(10):  # healthy: every 0.5 s real
            assert not c.write_register(0, 1).isError()
            assert not c.read_input_registers(0, count=1).isError()
            nv += 1
            time.sleep(0.5)
        (v_idle0,) = _views_after(node, nv - 1)
        time.sleep(4.5)  # silent, still connected
        assert not c.read_input_registers(0, count=1).isError()
        (v_idle1,) = _views_after(node, nv)
        nv += 1
        assert not c.write_register(0, 7).isError()  # any non-zero value: available
        time.sleep(1.2)  # a tick later (and within 3 s of node time also with the lead)
        assert not c.write_register(0, 0).isError()  # the BMS says: unavailable
        time.sleep(1.5)
        # refused: another holding register, two registers, a coil; read back: unchanged
        r6 = c.write_register(1, 1)
        r16 = c.write_registers(0, [1, 1])
        r5 = c.write_coil(0, True)
        r3 = c.read_holding_registers(0, count=1)
        r3b = c.read_holding_registers(1, count=1)
    finally:
        c.close()
    end = node.end()
    check_healthy(end)
    for r, code in ((r6, 2), (r16, 2), (r5, 1), (r3b, 2)):
        assert isinstance(r, ExceptionResponse) and r.exception_code == code, r
    assert r3.registers == [0]  # the 0 written last: the refused writes changed nothing
    w = end["writes"]
    assert [v for _, v in w] == [1] * 10 + [7, 0], w
    t_healthy = [t for t, _ in w[:10]]
    gaps = [tdiff(b, a) for a, b in zip(t_healthy, t_healthy[1:], strict=False)]
    # seen as healthy, within 3 s: each request at most its real gap + the lead after the
    # one before (a write and a read per round)
    assert max(gaps) <= 500 + 2 * lead_ms + 300, gaps
    ev = trips(end)
    # boot: never heard (silent) -> trip; the first write clears it
    assert ev[0]["kind"] == "trip" and ev[0]["values"]["silent"] == "modbus"
    assert ev[1]["kind"] == "clear" and 0 <= tdiff(ev[1]["t_ms"], t_healthy[0]) <= 1000
    # no trip while healthy; then the silence: within one tick of the 3 s timeout
    trip = ev[2]
    assert trip["kind"] == "trip" and trip["values"] == {
        "sink_available": False, "source": "modbus", "silent": "modbus"}
    late = tdiff(trip["t_ms"], t_healthy[-1])
    assert 3000 < late <= 3000 + cfg["control"]["tick_ms"], late
    assert ev[3]["kind"] == "clear" and 0 <= tdiff(ev[3]["t_ms"], w[10][0]) <= 1000
    zero = ev[4]
    assert zero["kind"] == "trip" and zero["values"] == {
        "sink_available": False, "source": "modbus", "silent": None}
    assert 0 <= tdiff(zero["t_ms"], w[11][0]) <= 1000
    assert len(ev) == 5, ev
    reqs = [(e["source"], e["value"]) for e in end["events"] if e["kind"] == "request"]
    assert reqs == [("modbus", True), ("modbus", False)]  # changes only; named
    # a connected idle client: node time followed real time, lead at most
    dv = v_idle1["vt"] - v_idle0["vt"]
    dr = v_idle1["real_ms"] - v_idle0["real_ms"]
    assert dr - 150 <= dv <= dr + lead_ms + 150, (dv, dr)
    assert end["rec"]["exceptions"] == 4 and end["rec"]["heartbeat"] == 0


def _closed(s, timeout=10.0):
    """True once the node closed the connection (recv gives b"" or a reset)."""
    s.settimeout(timeout)
    try:
        while True:
            data = s.recv(4096)
            if not data:
                return True
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def _raw(port, source="127.0.0.1"):
    s = socket.socket()
    s.bind((source, 0))
    s.connect(("127.0.0.1", port))
    return s


READ0 = bytes.fromhex("0001 0000 0006 01 04 0000 0001".replace(" ", ""))


def test_other_addresses_are_refused_and_hostile_clients_cannot_hold_the_server(
        tmp_path, nodes):
    """A client from an address not allowed (127.0.0.2, a loopback alias) is closed at
    once and never answered, with a `bms` event naming it; a broken MBAP header and a
    garbage flood close their connection; half a request holds its slot only until the
    idle timeout (node time); more connections than allowed replace the least recently
    active; through all of it control ticks on time and a good client is served."""
    from pymodbus.client import ModbusTcpClient

    port = free_port()
    cfg = base_config(port)
    cfg["bms"].update(idle_s=5, max_connections=2)
    node = nodes(tmp_path, cfg, env={"HEATGW_IO_LEAD_MS": "2000"})  # under idle_s
    c = connect(node)
    assert not c.read_input_registers(0, count=45).isError()
    # not allowed: pymodbus from 127.0.0.2 gets no answer; a raw one sees the close
    bad = ModbusTcpClient("127.0.0.1", port=port, source_address=("127.0.0.2", 0),
                          timeout=1, retries=0)
    try:
        refused = bad.read_input_registers(0, count=1).isError()
    except Exception:  # noqa: BLE001 - pymodbus raises on a closed connection
        refused = True
    bad.close()
    assert refused
    s = _raw(port, "127.0.0.2")
    s.sendall(READ0)
    assert _closed(s)
    s.close()
    # a broken header (protocol id 1), and garbage: closed at once
    s = _raw(port)
    s.sendall(bytes.fromhex("0001 0001 0006 01 04 0000 0001".replace(" ", "")))
    assert _closed(s, 5)
    s.close()
    s = _raw(port)
    rng = random.Random(5)
    try:
        s.sendall(bytes([1, 2, 0xFF, 0xFF]) + rng.randbytes(20_000))
    except OSError:
        pass
    assert _closed(s, 5)
    s.close()
    # half a request: its slot is free again after the idle timeout (node time)
    half = _raw(port)
    half.sendall(READ0[:9])
    assert _closed(half, 10)
    half.close()
    # 4 good connections, 2 allowed: each new one replaces the least recently active
    socks = []
    for k in range(4):
        s = _raw(port)
        socks.append(s)
        s.sendall(READ0)
        s.settimeout(5)
        assert len(s.recv(100)) == 11, k  # each answered while it was the newest
        time.sleep(0.05)
    assert _closed(socks[0], 5) and _closed(socks[1], 5)
    socks[3].sendall(READ0)
    assert len(socks[3].recv(100)) == 11
    for s in socks:
        s.close()
    c.close()
    c2 = ModbusTcpClient("127.0.0.1", port=port, timeout=3, retries=0)
    assert c2.connect() and not c2.read_input_registers(0, count=45).isError()
    c2.close()
    end = node.end()
    check_healthy(end)
    rec = end["rec"]
    assert rec["refused"] >= 2 and rec["refused_addr"] == "127.0.0.2", rec
    assert rec["dropped"] >= 2 and rec["idle_closed"] >= 1 and rec["replaced"] >= 2, rec
    ev = [e for e in end["events"] if e["kind"] == "bms"]
    assert ev and ev[0]["what"] == "refused" and ev[0]["client"] == "127.0.0.2", ev


# -- the request parser: fuzz ---------------------------------------------------------------

MORE, CLOSE = -1, -2
N_INPUT = 45


def ref_request(b, state):
    """The Modbus TCP specification's answer to the bytes b (the start of a request
    stream), written here independently of lib/modbus/mbserver: (MORE | CLOSE | bytes
    used, answer). The map: input registers 0..38 (register i holds i * 7919 mod 2**16),
    one holding register at 0 (state["hb"]), as heatgw.bms has them."""
    n = len(b)
    if n < 8:
        if n >= 6 and (b[2] or b[3] or not 2 <= (b[4] << 8 | b[5]) <= 254):
            return CLOSE, b""
        return MORE, b""
    ln = b[4] << 8 | b[5]
    if b[2] or b[3] or not 2 <= ln <= 254:
        return CLOSE, b""
    end = 6 + ln
    if n < end:
        return MORE, b""
    fc, pdu = b[7], b[7:end]

    def ans(p):
        return bytes(b[0:4]) + struct.pack(">H", len(p) + 1) + bytes(b[6:7]) + bytes(p)

    def exc(code):
        return end, ans(bytes([fc | 0x80, code]))

    if fc in (3, 4):
        if len(pdu) != 5:
            return exc(3)
        addr, count = struct.unpack(">HH", pdu[1:5])
        if not 1 <= count <= 125:
            return exc(3)
        if addr + count > 0x10000:
            return exc(2)
        if fc == 4:
            if addr + count > N_INPUT:
                return exc(2)
            data = b"".join(struct.pack(">H", (a * 7919) & 0xFFFF)
                            for a in range(addr, addr + count))
        else:
            if addr != 0 or count != 1:
                return exc(2)
            data = struct.pack(">H", state["hb"])
        return end, ans(bytes([fc, 2 * count]) + data)
    if fc == 6:
        if len(pdu) != 5:
            return exc(3)
        addr, value = struct.unpack(">HH", pdu[1:5])
        if addr != 0:
            return exc(2)
        state["hb"] = value
        return end, ans(pdu)
    if fc == 16:
        if len(pdu) < 6:
            return exc(3)
        addr, count = struct.unpack(">HH", pdu[1:5])
        if not 1 <= count <= 123 or pdu[5] != 2 * count or len(pdu) != 6 + 2 * count:
            return exc(3)
        if addr + count > 0x10000:
            return exc(2)
        if addr != 0 or count != 1:
            return exc(2)
        state["hb"] = struct.unpack(">H", pdu[6:8])[0]
        return end, ans(pdu[:5])
    return exc(1)


def _pdu(rng):
    k = rng.randrange(100)
    addr = rng.choice((0, 0, 1, rng.randrange(46), rng.randrange(65536), 65535, 44, 45))
    if k < 35:
        fc = rng.choice((3, 4, 4, 4))
        count = rng.choice((1, rng.randrange(1, 46), 45, 125, 126, 0, rng.randrange(65536)))
        if fc == 3 and rng.random() < 0.4:
            addr, count = 0, 1  # the heartbeat register read back
        return bytes([fc]) + struct.pack(">HH", addr, count)
    if k < 55:
        return bytes([6]) + struct.pack(">HH", addr, rng.randrange(65536))
    if k < 75:
        count = rng.choice((1, 1, 2, 0, 123, 124, rng.randrange(200)))
        nval = count if rng.random() < 0.7 else rng.randrange(130)
        bc = 2 * count if rng.random() < 0.7 else rng.randrange(256)
        vals = rng.randbytes(2 * nval)
        return bytes([16]) + struct.pack(">HHB", addr, count, bc & 0xFF) + vals
    fc = rng.choice((0, 1, 2, 5, 7, 15, 17, 22, 23, 43, 0x83, 0x84, 0x90, 255))
    return bytes([fc]) + rng.randbytes(rng.randrange(0, 12))


def fuzz_case(rng):
    """A request stream's start: well-formed requests (many with wrong lengths, counts,
    byte counts, addresses, function codes), then mutated: truncated, wrong MBAP length
    or protocol id, trailing bytes (the next request's start), or garbage."""
    k = rng.randrange(100)
    if k < 8:
        return rng.randbytes(rng.randrange(0, 261))
    pdu = _pdu(rng)[:253]
    head = struct.pack(">HHHB", rng.randrange(65536), 0, len(pdu) + 1, rng.randrange(256))
    b = bytearray(head + pdu)
    if k < 20:
        del b[rng.randrange(len(b)):]  # truncated
    elif k < 28:
        b[4:6] = struct.pack(">H", rng.choice((0, 1, 2, 3, len(pdu), len(pdu) + 2, 254, 255,
                                               rng.randrange(65536))))
    elif k < 33:
        b[2:4] = struct.pack(">H", rng.randrange(1, 65536))
    elif k < 45:
        b += rng.randbytes(rng.randrange(1, 40))  # the next request's start
    elif k < 50:
        b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
    return bytes(b[:260])


FUZZ = r"""
import json, micropython
from mbserver import TCPServer


class Regs:
    hb = 0

    def read(self, fc, addr, count, buf, off):
        if fc == 3:
            if addr != 0 or count != 1:
                return 2
            buf[off] = self.hb >> 8
            buf[off + 1] = self.hb & 255
            return 0
        if addr + count > 45:
            return 2
        for i in range(count):
            v = ((addr + i) * 7919) & 0xFFFF
            buf[off + 2 * i] = v >> 8
            buf[off + 2 * i + 1] = v & 255
        return 0

    def write(self, addr, count, buf, off):
        if addr != 0 or count != 1:
            return 2
        self.hb = buf[off] << 8 | buf[off + 1]
        return 0


class Clock:
    def ticks_ms(self):
        return 0

    def ticks_diff(self, a, b):
        return a - b


srv = TCPServer(502, ("127.0.0.1",), Regs(), clock=Clock())
rx = bytearray(260)
errors = []
with open(PATH, "rb") as f, open(OUT, "wb") as o:
    hdr = bytearray(2)
    while f.readinto(hdr) == 2:
        n = hdr[0] << 8 | hdr[1]
        f.readinto(rx, n)
        try:
            used = srv.request(rx, n)
        except Exception as e:
            errors.append(repr(e))
            used = -99
        o.write(bytes([(used >> 8) & 255, used & 255, srv.tx_len]))
        o.write(srv.tx, srv.tx_len)
# the request path allocates nothing: a read of the whole map, a heartbeat write
q = bytearray(b"\x00\x01\x00\x00\x00\x06\x01\x04\x00\x00\x00\x27")
w = bytearray(b"\x00\x02\x00\x00\x00\x06\x01\x06\x00\x00\x12\x34")
k = 200
ok = False
micropython.heap_lock()
try:
    while k:
        srv.request(q, 12)
        srv.request(w, 12)
        k -= 1
    ok = True
except MemoryError:
    pass
micropython.heap_unlock()
print(json.dumps({"errors": errors[:5], "alloc_free": ok, "requests": srv.requests,
                  "exceptions": srv.exceptions}))
"""


def test_fuzz_the_request_parser_in_process(mp, tmp_path):
    """12,000 request streams (well-formed requests with wrong lengths, counts, byte
    counts, addresses and function codes; truncations, broken MBAP headers, trailing
    bytes, bit flips, garbage) through the server's own request() in the micropython
    binary: never an exception, every verdict and answer byte for byte the specification's
    (the reference above), and a request allocates nothing."""
    rng = random.Random(20250115)
    cases = [fuzz_case(rng) for _ in range(12_000)]
    path, out = tmp_path / "frames.bin", tmp_path / "verdicts.bin"
    path.write_bytes(b"".join(struct.pack(">H", len(c)) + c for c in cases))
    (res,) = mp.run_json(f"PATH = {str(path)!r}\nOUT = {str(out)!r}\n" + FUZZ, timeout=300)
    assert res["errors"] == [] and res["alloc_free"] is True, res
    got = out.read_bytes()
    state = {"hb": 0}
    seen = {}
    p = 0
    for i, c in enumerate(cases):
        used = struct.unpack_from(">h", got, p)[0]
        ln = got[p + 2]
        answer = got[p + 3:p + 3 + ln]
        p += 3 + ln
        want = ref_request(c, state)
        assert (used, answer) == want, (i, c.hex(), used, answer.hex(), want)
        kind = ("more" if used == MORE else "close" if used == CLOSE else
                f"exception:{answer[8]:02d}" if answer[7] & 0x80 else f"fc{answer[7]}")
        seen[kind] = seen.get(kind, 0) + 1
    assert p == len(got)
    for kind in ("more", "close", "exception:01", "exception:02", "exception:03", "fc3", "fc4",
                 "fc6", "fc16"):
        assert seen.get(kind, 0) >= 50, seen
    print("\nverdicts:", dict(sorted(seen.items())))


E2E = r"""
import board, json, select, sys
asyncio = board.install_asyncio()
from heatgw import clock
from mbserver import TCPServer
""" + FUZZ.split("srv = TCPServer")[0].split("from mbserver import TCPServer")[1] + r"""
srv = TCPServer(PORT, ("127.0.0.1",), Regs(), clock=clock, serving=board.io_serving)
poll = select.poll()
poll.register(sys.stdin, select.POLLIN)


async def main():
    asyncio.create_task(srv.run())
    while srv.ls is None:
        await asyncio.sleep_ms(10)
    print(json.dumps({"ready": True}))
    while not poll.poll(0):
        await asyncio.sleep_ms(100)
    print(json.dumps({"requests": srv.requests, "dropped": srv.dropped,
                      "worst_us": srv.worst_us}))

asyncio.run(main())
"""


def test_fuzz_sample_end_to_end_over_a_socket(tmp_path):
    """300 fuzzed request streams sent to the server's real socket (one connection each,
    under the host board's asyncio): each answer byte for byte the reference's, and a
    broken header closes the connection."""
    rng = random.Random(77)
    port = free_port()
    path = tmp_path / "e2e.py"
    path.write_text(f"PORT = {port}\n" + E2E)
    proc = subprocess.Popen([*micropython_cmd(), str(path)], cwd=REPO, env=mp_env(),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert json.loads(proc.stdout.readline()) == {"ready": True}, proc.stderr.read()
        state = {"hb": 0}
        kinds = set()
        sent = 0
        while sent < 300:
            c = fuzz_case(rng)
            used, answer = ref_request(c, dict(state))
            if used == MORE or (used > 0 and used != len(c)):
                continue  # incomplete (the server would wait) or a second request behind
            used, answer = ref_request(c, state)
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                s.sendall(c)
                if used == CLOSE:
                    assert _closed(s, 5), c.hex()
                    kinds.add("close")
                else:
                    got = b""
                    while len(got) < len(answer):
                        chunk = s.recv(300)
                        assert chunk, (c.hex(), got.hex())
                        got += chunk
                    assert got == answer, (c.hex(), got.hex(), answer.hex())
                    kinds.add(answer[7])
            sent += 1
        proc.stdin.write("stop\n")
        proc.stdin.flush()
        res = json.loads(proc.stdout.readline())
        assert proc.wait(30) == 0, proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert {"close", 3, 4, 6, 16, 0x81, 0x83, 0x84, 0x86, 0x90} <= kinds, kinds
    assert res["requests"] + res["dropped"] == 300 and res["dropped"] >= 1, res


# -- the MQTT source of the sink rule ---------------------------------------------------------

MQTT_BODY = r"""
POSTS = []  # [at_ms, value] of the mqtt source's sink statements on the inbox
SINK = []  # the sink_unavailable trips and clears, and the command events
_post = gw.inbox.post


def post(source, what, value=True, at_ms=None):
    if source == "mqtt" and what == "sink_available":
        POSTS.append([at_ms, value])
    return _post(source, what, value, at_ms)


gw.inbox.post = post
gw.add_sink(lambda k, r: SINK.append(r) if k == "event" and (
    r.get("reason") == "sink_unavailable" or r.get("kind") in ("command", "request")) else None)


def sink(phase):
    out(phase=phase, sink=gw.inputs.sink_available, by=gw.inputs.sink_by,
        silent=gw.inputs.sink_silent, posts=len(POSTS))


await up()
await asyncio.sleep_ms(3000)
sink("start")
await command(FORGED)
await asyncio.sleep_ms(2000)
sink("forged")
await command(AVAILABLE)
await asyncio.sleep_ms(2000)
sink("available")
await asyncio.sleep_ms(40_000)
sink("silent")
await command(AVAILABLE2)
await asyncio.sleep_ms(2000)
sink("again")
await command(UNAVAILABLE)
await asyncio.sleep_ms(2000)
sink("unavailable")
out(posts=POSTS, sink_events=SINK)
"""


def test_the_signed_mqtt_sink_message_is_a_source_and_a_forged_one_is_refused(tmp_path):
    """control.sink_sources.mqtt = 30 s, the only source: the node boots with the sink
    unavailable (never heard); a forged `sink available` is refused with an event and
    changes nothing; a signed one makes it available through the inbox (source mqtt);
    silent for 30 s it trips within one tick, naming mqtt as silent; a signed
    `sink unavailable` trips at once. Through a real mosquitto."""
    from tests.brokers import Broker
    from tests.nodedriver import Node as MqttNode
    from tests.nodedriver import check_healthy as mqtt_healthy
    from tests.nodedriver import config as mqtt_config
    from tests.nodedriver import signed

    with Broker(tmp_path / "mosquitto") as broker:
        cfg = mqtt_config(broker.port)
        cfg["control"].update(sink_signal=False, sink_sources={"mqtt": 30})
        body = (f"FORGED = {signed(1, 'sink', {'available': True}, key=bytes(32))!r}\n"
                f"AVAILABLE = {signed(2, 'sink', {'available': True})!r}\n"
                f"AVAILABLE2 = {signed(3, 'sink', {'available': True})!r}\n"
                f"UNAVAILABLE = {signed(4, 'sink', {'available': False})!r}\n" + MQTT_BODY)
        node = MqttNode(tmp_path, cfg, body)
        rs = []
        while "end" not in (rs[-1] if rs else {}):
            rs.append(json.loads(node.wait_for("R ", 300)[2:]))
        assert node.proc.wait(60) == 0, node.diagnosis(broker)
    mqtt_healthy(rs[-1])
    ph = {x["phase"]: x for x in rs if "phase" in x}
    (log,) = [x for x in rs if "sink_events" in x]
    assert (ph["start"]["sink"], ph["start"]["silent"]) == (False, "mqtt")
    assert ph["forged"]["sink"] is False and ph["forged"]["posts"] == 0
    assert (ph["available"]["sink"], ph["available"]["by"]) == (True, "mqtt")
    assert (ph["silent"]["sink"], ph["silent"]["silent"]) == (False, "mqtt")
    assert ph["again"]["sink"] is True
    assert (ph["unavailable"]["sink"], ph["unavailable"]["silent"]) == (False, None)
    ev = log["sink_events"]
    cmds = [(e["result"], e.get("reason"), e.get("cmd")) for e in ev if e["kind"] == "command"]
    assert cmds == [("rejected", "forged", None), ("accepted", None, "sink"),
                    ("accepted", None, "sink"), ("accepted", None, "sink")]
    reqs = [(e["source"], e["value"]) for e in ev if e["kind"] == "request"]
    assert reqs == [("mqtt", True), ("mqtt", False)]
    sw = [e for e in ev if e.get("reason") == "sink_unavailable"]
    posts = log["posts"]
    assert [v for _, v in posts] == [True, True, False]
    # boot trip, clear, silent trip within a tick of 30 s, clear, trip on "unavailable"
    assert [e["kind"] for e in sw] == ["trip", "clear", "trip", "clear", "trip"]
    assert sw[2]["values"] == {"sink_available": False, "source": "mqtt", "silent": "mqtt"}
    late = tdiff(sw[2]["t_ms"], posts[0][0])
    assert 30_000 < late <= 31_000, late
    assert sw[4]["values"]["silent"] is None and 0 <= tdiff(sw[4]["t_ms"], posts[2][0]) <= 1000


# -- configuration --------------------------------------------------------------------------

DEL = object()


def _cfg(**over):
    """A valid configuration with a bms section and both remote sink sources; over:
    {dotted path: value or DEL}."""
    cfg = base_config(502, sink_sources={"modbus": 30, "mqtt": 600})
    cfg["bms"] = {"port": 502, "clients": {"bms": "192.168.1.50", "scada": "10.0.0.7"}}
    cfg["mqtt"] = {"host": "192.168.1.2", "site": "s1"}
    for path, v in over.items():
        *parents, last = path.split(".")
        d = cfg
        for p in parents:
            d = d.setdefault(p, {})
        if v is DEL:
            del d[last]
        else:
            d[last] = v
    return cfg


BAD_CONFIGS = [
    ({"bms.clients": DEL}, "bms.clients: required (the client addresses answered"),
    ({"bms.clients": {}}, "bms.clients: at least one client address"),
    ({"bms.clients.bms": "192.168.1.256"},
     "bms.clients.bms: 192.168.1.256 is not an IPv4 address"),
    ({"bms.clients.bms": "192.168.1"}, "bms.clients.bms: 192.168.1 is not an IPv4 address"),
    ({"bms.clients.bms": "1.2.3"}, "bms.clients.bms: length 5 is not 7 ... 15"),
    ({"bms.clients.bms": "bms.local"}, 'bms.clients.bms: character "b" not allowed'),
    ({"bms.clients": {f"c{i}": "10.0.0.1" for i in range(5)}},
     "bms.clients: 5 members, at most 4"),
    ({"bms.port": 0}, "bms.port: 0 is below the minimum 1"),
    ({"bms.max_connections": 5}, "bms.max_connections: 5 is above the maximum 4"),
    ({"bms.idle_s": 1}, "bms.idle_s: 1 is below the minimum 5 s"),
    ({"bms.heartbeat_register": 65536}, "bms.heartbeat_register: 65536 is above the maximum"),
    ({"bms.unit_id": 1}, "bms.unit_id: unknown key"),
    ({"bms": DEL}, "control.sink_sources.modbus: needs a bms section"),
    ({"mqtt": DEL}, "control.sink_sources.mqtt: needs a mqtt section"),
    ({"control.sink_sources.modbus": 1}, "control.sink_sources.modbus: 1 is below the minimum"),
    ({"control.sink_sources.console": 5}, "control.sink_sources.console: unknown key"),
]

LOAD = r"""
import json, sys
from heatgw import config
for p in PATHS:
    cfg, errors, source, _ = config.load(p, save=False)
    print(json.dumps([source, errors, cfg if source == "file" else None,
                      "heatgw.bmsschema" in sys.modules]))
"""


def test_the_bms_configuration_is_checked_alike_on_the_device_and_the_host(mp, tmp_path):
    from heatgw import config

    from host_tools import config_check  # noqa: F401 - the host's whole schema

    plain = base_config(502)
    del plain["bms"]
    docs = [_cfg(), plain] + [_cfg(**over) for over, _ in BAD_CONFIGS]
    paths = []
    for i, doc in enumerate(docs):
        p = tmp_path / f"c{i}.json"
        p.write_text(json.dumps(doc))
        paths.append(str(p))
    on_node = mp.run_json(f"PATHS = {paths[1:] + paths[:1]!r}\n" + LOAD)
    on_node = [on_node[-1]] + on_node[:-1]
    for i, p in enumerate(paths):
        cfg, errors, source, _ = config.load(p, save=False)
        assert on_node[i][:3] == [source, errors, cfg if source == "file" else None], p
        if i == 0:
            assert source == "file" and errors == [], errors
            assert cfg["bms"] == {"port": 502, "clients": {"bms": "192.168.1.50",
                                                           "scada": "10.0.0.7"},
                                  "max_connections": 2, "idle_s": 60,
                                  "heartbeat_register": 0}
            assert cfg["control"]["sink_sources"] == {"modbus": 30, "mqtt": 600}
            assert on_node[i][3] is True  # the section's schema: loaded for it
            continue
        if i == 1:  # no bms section: its schema is never loaded on the node
            assert source == "file" and on_node[i][3] is False
            continue
        want = BAD_CONFIGS[i - 2][1]
        assert source == "default", (want, errors)
        assert any(e.startswith(want) for e in errors), (want, errors)


def test_nothing_of_the_server_is_loaded_without_a_bms_section(tmp_path, nodes):
    port = free_port()
    cfg = base_config(port)
    (got,) = [json.loads(ln) for ln in subprocess.run(
        [*micropython_cmd(), "-c", f"""
import json, sys, board
d = board.data_dir()
with open(d + "/config.json", "w") as f:
    f.write({json.dumps(json.dumps({k: v for k, v in cfg.items() if k != "bms"}))})
from heatgw import start
gw, asyncio = start.build()
print(json.dumps([gw.bms, sorted(m for m in sys.modules if "bms" in m or m == "mbserver")]))
"""], cwd=REPO, env={**mp_env(), "HEATGW_FLASH": str(tmp_path / "f.bin")},
        capture_output=True, text=True, timeout=60).stdout.splitlines()[-1:]]
    assert got == [None, []]


# -- the complete-node day --------------------------------------------------------------------


def test_day_serves_the_bms_all_day(complete_node_day):
    """tests/siteday.py `bms`: a pymodbus BMS polled the node's registers and wrote the
    heartbeat all day: every poll answered, the uptime it read covers the day with no gap
    beyond the heartbeat timeout, the energy never went back and ends at the metered
    energy; sink_unavailable only at boot (before the first heartbeat); no refused or
    dropped connection, no bms task crash."""
    from tests.siteday import BMS_TIMEOUT_S

    day = complete_node_day
    b = day.extra["bms"]
    rec = day.summary["bms"]
    dur_s = day.summary["duration_s"]
    assert b["failed"] <= 2 and b["write_failed"] == 0, b  # (the node's stop: at the end)
    assert b["reads"] >= dur_s / BMS_TIMEOUT_S, b
    assert b["first_uptime_s"] <= 120 and b["last_uptime_s"] >= dur_s - 120, b
    assert 0 < b["max_gap_s"] < BMS_TIMEOUT_S and b["energy_back"] == 0, b
    metered_wh = day.summary["metered"]["energy_kwh"] * 1000
    assert metered_wh - 10_000 <= b["last_energy_wh"] <= metered_wh, (b, metered_wh)
    assert rec["requests"] >= b["reads"] + b["writes"] - 4, rec
    assert rec["refused"] == 0 and rec["dropped"] == 0 and rec["exceptions"] == 0, rec
    sink = [e["kind"] for e in day.harness.node_events if e.get("reason") == "sink_unavailable"]
    assert sink in ([], ["trip", "clear"]), sink
    kinds = [(e.get("kind"), e.get("task")) for e in day.harness.node_events]
    assert ("task", "bms") not in kinds, "the bms task crashed"
