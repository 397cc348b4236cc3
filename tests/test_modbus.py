"""Modbus meters (heatgw.modbus, lib/modbus, lib/sdm) against real peers.

The real micropython binary runs the whole node (heatgw.start.build) on the host board,
asyncio on virtual time with real sockets and a real pseudo-terminal (boards/host/
vasyncio.py, ptyuart.py). Its peers: pymodbus servers over TCP and over RTU on a pty pair
made here (tests/modbus_peers.py), and raw responders for the answers pymodbus never
gives (CRC errors, truncated frames, wrong slave ids, garbage). Register values are
packed here with CPython's struct, independently of the firmware's decoder.
"""

import json
import random
import socket
import struct
import sys
import textwrap
import time

import pytest

from host_tools.paths import FIRMWARE, REPO
from tests.modbus_peers import (
    PtyLine,
    PymodbusRTU,
    PymodbusTCP,
    RawRTU,
    RawTCP,
    crc16,
    device,
    f32,
    i32,
    rtu_frame,
    sdm120,
    sdm630,
    u32,
)
from tests.nodedriver import LATE_MAX_MS, Listener
from tests.scriptnode import ScriptNode

if str(FIRMWARE) not in sys.path:
    sys.path.insert(0, str(FIRMWARE))  # heatgw's pure modules run on CPython too

from heatgw import config, mbplan  # noqa: E402

# The node: the whole application, standalone on the host board; BODY runs inside
# `async def main()` after the node's tasks were created; out(**kw) prints an R line;
# sys.stdin.readline() holds virtual time until the test calls go().
DRIVER = r"""
import board, json, sys, time
clk = board.clock
d = board.data_dir()
with open(d + "/config.json", "w") as f:
    f.write(CFG)
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
mb = gw.modbus
EVENTS = []
gw.add_sink(lambda k, r: EVENTS.append(r) if k == "event" and r.get("kind") in (
    "modbus", "trip", "clear", "task", "crash", "task_failing") else None)
REAL0 = time.ticks_ms()


def out(**kw):
    print("R", json.dumps(kw))


def values(meter):
    return {n: mb.value(meter, n) for n in mb.meters[meter].names}


def state():
    return {name: {"values": values(name), "meter": mb.meter(name)} for name in mb.meters}


async def main():
    asyncio.create_task(gw.run(asyncio))
BODY
    gw.shutdown()
    out(end=True, late=gw.worst_tick_late_ms, feeds=feeds, fault=gw.fault,
        rec=mb.record() if mb else None,
        events=EVENTS, active=list(gw.failsafe.active), vt=clk.vt,
        real_ms=time.ticks_diff(time.ticks_ms(), REAL0))
asyncio.run(main())
"""


def base_config(modbus, **extra):
    cfg = json.loads((REPO / "scenarios" / "default_config.json").read_text())
    cfg["modbus"] = modbus
    cfg.update(extra)
    return cfg


class Node(ScriptNode):
    """The node driver in a micropython process; R lines on a list, stdin for go()."""

    def __init__(self, tmp_path, cfg, body, env=None):
        code = f"CFG = {json.dumps(cfg)!r}\n"
        code += DRIVER.replace("BODY", textwrap.indent(textwrap.dedent(body.strip("\n")),
                                                        "    "))
        super().__init__(tmp_path, code, "mbnode", env)

    def results(self, n=None, timeout=300):
        """The R lines so far (at least n of them, waiting for them), parsed."""
        end = time.monotonic() + timeout
        with self._got:
            while True:
                rs = [json.loads(ln[2:]) for ln in self.lines if ln and ln.startswith("R ")]
                if n is not None and len(rs) >= n or self.lines and self.lines[-1] is None:
                    break
                left = end - time.monotonic()
                if left <= 0:
                    raise AssertionError("node: no result in time:\n" + self.tail())
                self._got.wait(left)
        if n is not None and len(rs) < n:
            raise AssertionError(f"node ended with {len(rs)} results:\n{self.tail()}")
        return rs

    def go(self):
        self.proc.stdin.write("\n")
        self.proc.stdin.flush()

    def end(self, timeout=300):
        rs = self.results(timeout=timeout)
        self.proc.wait(timeout)
        assert self.proc.returncode == 0, self.tail()
        assert rs and rs[-1].get("end"), self.tail()
        return rs


def run_node(tmp_path, cfg, body, env=None):
    return Node(tmp_path, cfg, body, env).end()


def check_healthy(end):
    """What every run must show: no critical failure, ticks on time, the watchdog fed."""
    assert end["fault"] is None, end
    kinds = [e["kind"] for e in end["events"]]
    assert "crash" not in kinds and "task_failing" not in kinds, kinds
    assert end["late"] <= LATE_MAX_MS, end["late"]
    assert end["feeds"][0] > 0 and end["feeds"][2] <= 2_000, end["feeds"]


# -- meters read correctly -----------------------------------------------------------------

def _reg(address, typ, fc=3, word_order="big", byte_order="big", scale=1.0, unit=""):
    return {"address": address, "type": typ, "fc": fc, "word_order": word_order,
            "byte_order": byte_order, "scale": scale, "unit": unit}


def _bswap(words):
    return [((w & 0xFF) << 8) | (w >> 8) for w in words]


FLOAT_FLOW = {  # a flow meter with float32 holding registers, adjacent: one request
    "flow_m3h": _reg(0x100, "float32", unit="m3/h"),
    "volume_m3": _reg(0x102, "float32", unit="m3"),
}
SWAPPED_FLOW = {  # word-swapped int32 input registers (litres, l/h) and odd 16-bit ones
    "volume_m3": _reg(0x10, "int32", fc=4, word_order="little", scale=0.001, unit="m3"),
    "flow_m3h": _reg(0x12, "int32", fc=4, word_order="little", scale=0.001, unit="m3/h"),
    "supply_c": _reg(0x14, "int16", fc=4, byte_order="little", scale=0.1, unit="C"),
    "status": _reg(0x15, "uint16", fc=4),
    "hours": _reg(0x20, "uint32", fc=4),
}
EXPECTED = {
    "sdm630": {"power_w": 1234.5, "energy_kwh": 98765.25},
    "sdm120": {"power_w": 230.5, "energy_kwh": 12.75},
    "flow_f": {"flow_m3h": struct.unpack(">f", struct.pack(">f", 12.3))[0],
               "volume_m3": struct.unpack(">f", struct.pack(">f", 4321.125))[0]},
    "flow_i": {"volume_m3": 123456.789, "flow_m3h": -5.432, "supply_c": -12.5,
               "status": 0xBEEF, "hours": 3_000_000_000},
}
REQUESTS_PER_POLL = {"sdm630": 2, "sdm120": 2, "flow_f": 1, "flow_i": 2}


def _devices():
    return [
        sdm630(1, 1234.5, 98765.25),
        sdm120(2, 230.5, 12.75),
        device(3, holding_regs={0x100: f32(12.3) + f32(4321.125)}),
        device(4, input_regs={
            0x10: (i32(123456789, word_order="little") + i32(-5432, word_order="little")
                   + _bswap(struct.unpack(">H", struct.pack(">h", -125))) + [0xBEEF]),
            0x20: u32(3_000_000_000)}),
    ]


def _meters(bus, period_s=5):
    m = {"sdm630": {"slave": 1, "model": "sdm630", "role": "compute"},
         "sdm120": {"slave": 2, "model": "sdm120", "role": "pump"},
         "flow_f": {"slave": 3, "registers": FLOAT_FLOW, "role": "flow"},
         "flow_i": {"slave": 4, "registers": SWAPPED_FLOW}}
    for v in m.values():
        v.update(bus=bus, period_s=period_s, stale_s=30)
    return m


def _same_float():
    """x == y, for values the node printed: a single-precision build prints a float with
    7 digits, which gives back the same float32, not the same double."""
    from host_tools import mpinfo

    if mpinfo.float_bits() == 64:
        return lambda x, y: x == y

    def same(x, y):
        if isinstance(y, float):
            return struct.pack(">f", x) == struct.pack(">f", y)
        return x == y
    return same


@pytest.fixture(params=["tcp", "rtu"])
def transport(request):
    return request.param


@pytest.fixture
def peers():
    """Start peers; everything started is stopped at the end."""
    made = []

    def add(x):
        made.append(x)
        return x

    yield add
    for x in reversed(made):
        x.close() if hasattr(x, "close") else x.stop()


def _bus(transport, peers, devices=None, answer=None):
    """(bus config, env) for a pymodbus server (devices) or a raw responder (answer)."""
    if transport == "tcp":
        if answer is not None:
            srv = peers(RawTCP(answer))
        else:
            srv = peers(PymodbusTCP(devices))
        return {"type": "tcp", "host": "127.0.0.1", "port": srv.port}, {}
    line = peers(PtyLine())
    if answer is not None:
        peers(RawRTU(line, answer))
    else:
        peers(PymodbusRTU(line.peer_path, devices))
    return {"type": "rtu", "baud": 9600}, {"HEATGW_RS485": line.node_path}


def test_sdm630_sdm120_and_two_flow_meters_read_correctly(tmp_path, peers, transport):
    bus, env = _bus(transport, peers, _devices())
    meters = _meters("b")
    # pymodbus's own exception: an address its SDM630 does not have (02 illegal address)
    meters["nothere"] = {"bus": "b", "slave": 1, "period_s": 5, "stale_s": 30,
                         "registers": {"power_w": _reg(0x200, "float32", fc=4)}}
    cfg = base_config({"buses": {"b": bus}, "meters": meters})
    end = run_node(tmp_path, cfg, """
await asyncio.sleep_ms(61_000)
out(state=state(), polls={n: m.polls for n, m in mb.meters.items()})
""", env)
    got, last = end[0], end[-1]
    check_healthy(last)
    same = _same_float()
    for meter, want in EXPECTED.items():
        vals = got["state"][meter]["values"]
        assert got["state"][meter]["meter"][0] is None, got["state"][meter]
        for name, w in want.items():
            v, why, _t = vals[name]
            assert why is None, (meter, name, vals[name])
            if isinstance(w, float) and meter in ("flow_i",):
                assert v == pytest.approx(w, rel=1e-6), (meter, name, v)
            else:
                assert same(v, w), (meter, name, v)
                assert type(v) is type(w), (meter, name, v)
    # every 5 s for 61 s: 13 polls each, and adjacent registers in as few requests
    assert got["state"]["nothere"]["values"]["power_w"][:2] == [None, "exception:02"]
    polls = got["polls"]
    assert all(p == 13 for p in polls.values()), polls
    rec = last["rec"]
    # retries 1: the exception is asked twice per poll
    assert rec["requests"] == sum(13 * REQUESTS_PER_POLL[m] for m in EXPECTED) + 13 * 2, rec
    assert rec["worst_call_us"] > 0 and rec["worst_call_where"], rec
    events = [(e["meter"], e["fault"]) for e in last["events"] if e["kind"] == "modbus"]
    assert events == [("nothere", "exception:02")], events  # the others: never a fault
    assert all(same(last["rec"]["meters"]["sdm630"]["values"][n], w)
               for n, w in EXPECTED["sdm630"].items())
    print(f"\n{transport}: longest real time in one Modbus call "
          f"{rec['worst_call_us']} us ({rec['worst_call_where']})")


# -- every kind of bad answer ----------------------------------------------------------------

GOOD = 42.0


def _rtu_answer(slave, fc, regs):
    data = b"".join(struct.pack(">H", r) for r in regs)
    return rtu_frame(bytes([slave, fc, len(data)]) + data)


def _tcp_answer(req, unit, fc, regs=None, exc=None, proto=0):
    pdu = bytes([fc | 0x80, exc]) if exc is not None else bytes([fc, 2 * len(regs)]) + \
        b"".join(struct.pack(">H", r) for r in regs)
    return req[:2] + struct.pack(">HH", proto, 1 + len(pdu)) + bytes([unit]) + pdu


NAN = [0x7FC0, 0x0000]
RTU_FAULTS = {1: "timeout", 2: "crc", 3: "exception:01", 4: "truncated", 5: "wrong_slave",
              6: "bad_frame", 7: "bad_value"}
TCP_FAULTS = {1: "timeout", 3: "exception:01", 4: "truncated", 5: "wrong_slave",
              6: "bad_frame", 7: "bad_value", 8: "closed"}


def rtu_misbehaving(mode):
    def answer(req):
        slave, fc = req[0], req[1]
        if mode["good"]:
            return _rtu_answer(slave, fc, f32(GOOD))
        good = _rtu_answer(slave, fc, f32(GOOD))
        return {1: None,
                2: good[:-1] + bytes([good[-1] ^ 0xFF]),
                3: rtu_frame(bytes([slave, fc | 0x80, 0x01])),
                4: good[:5],
                5: _rtu_answer(9, fc, f32(GOOD)),
                6: b"\xde\xad\xbe\xef\x00\x11",
                7: _rtu_answer(slave, fc, NAN)}[slave]
    return answer


def tcp_misbehaving(mode):
    def answer(req):
        unit, fc = req[6], req[7]
        good = _tcp_answer(req, unit, fc, f32(GOOD))
        if mode["good"]:
            return good
        if unit == 8:
            raise ConnectionAbortedError  # the server closes the connection
        return {1: None,
                3: _tcp_answer(req, unit, fc, exc=1),
                4: good[:9],
                5: _tcp_answer(req, 9, fc, f32(GOOD)),
                6: _tcp_answer(req, unit, fc, f32(GOOD), proto=1),
                7: _tcp_answer(req, unit, fc, NAN)}[unit]
    return answer


def test_every_bad_answer_is_a_named_fault_and_the_node_carries_on(tmp_path, peers,
                                                                     transport):
    mode = {"good": False}
    faults = RTU_FAULTS if transport == "rtu" else TCP_FAULTS
    answer = (rtu_misbehaving if transport == "rtu" else tcp_misbehaving)(mode)
    bus, env = _bus(transport, peers, answer=answer)
    buses = {"b": bus}
    meters = {f"m{s}": {"bus": "b", "slave": s, "period_s": 5, "timeout_ms": 300,
                        "retries": 0, "stale_s": 30, "critical": True,
                        "registers": {"v": _reg(0, "float32")}} for s in faults}
    if transport == "tcp":  # and a server that is not there: a port bound, not listening
        closed = socket.socket()
        closed.bind(("127.0.0.1", 0))
        closed_port = closed.getsockname()[1]
        buses["gone"] = {"type": "tcp", "host": "127.0.0.1", "port": closed_port}
        meters["m9"] = {"bus": "gone", "slave": 1, "period_s": 5, "timeout_ms": 300,
                        "retries": 0, "stale_s": 30, "critical": True,
                        "registers": {"v": _reg(0, "float32")}}
        faults = {**faults, 9: "no_connection"}
    node = Node(tmp_path, base_config({"buses": buses, "meters": meters}), """
await asyncio.sleep_ms(21_000)
out(state=state(), active=list(gw.failsafe.active))
sys.stdin.readline()
await asyncio.sleep_ms(70_000)
out(state=state(), active=list(gw.failsafe.active))
""", env)
    bad = node.results(1)[0]
    mode["good"] = True
    if transport == "tcp":  # the server that was not there starts
        closed.close()
        peers(RawTCP(answer, port=closed_port))
    node.go()
    rs = node.end()
    good, end = rs[1], rs[-1]
    check_healthy(end)
    events = [e for e in end["events"] if e["kind"] == "modbus"]
    for s, want in faults.items():
        name = f"m{s}"
        v, why, _t = bad["state"][name]["values"]["v"]
        assert (v, why) == (None, want), (name, bad["state"][name])
        assert bad["state"][name]["meter"][0] == want
        assert "sensor_fault:" + name in bad["active"], bad["active"]
        # and when the peer answers again: fresh values, the fault cleared
        assert good["state"][name]["values"]["v"][:2] == [GOOD, None], good["state"][name]
        assert good["state"][name]["meter"][0] is None
        assert "sensor_fault:" + name not in good["active"]
        mine = [(e["state"], e["fault"]) for e in events if e["meter"] == name]
        assert mine == [("fault", want), ("ok", None)], (name, mine)
    assert end["rec"]["bus_errors"] == 0


# -- a Modbus poll never stalls control --------------------------------------------------------

REPLY_MS = 20  # the host board's reply window for this run (HEATGW_IO_REPLY_MS)


def test_every_meter_timing_out_for_an_hour_never_delays_a_control_tick(tmp_path, peers):
    # Four critical meters, two on an RS-485 line whose peer never answers, two on a TCP
    # server that accepts and never reads; each waits 2 s per request, twice per poll.
    line = peers(PtyLine())
    deaf = peers(RawRTU(line, lambda req: None))
    hole = peers(Listener("black_hole"))
    meters = {}
    for name, bus, slave in (("r1", "rs", 1), ("r2", "rs", 2), ("t1", "lan", 1),
                             ("t2", "lan", 2)):
        meters[name] = {"bus": bus, "slave": slave, "model": "sdm630", "period_s": 60,
                        "timeout_ms": 2000, "retries": 1, "stale_s": 120, "critical": True}
    cfg = base_config({"buses": {"rs": {"type": "rtu"},
                                 "lan": {"type": "tcp", "host": "127.0.0.1",
                                         "port": hole.port}},
                       "meters": meters})
    end = run_node(tmp_path, cfg, "await asyncio.sleep_ms(3_600_000)",
                   {"HEATGW_RS485": line.node_path, "HEATGW_IO_REPLY_MS": str(REPLY_MS)})[-1]
    check_healthy(end)  # ticks within 50 ms of node time all hour, the watchdog fed
    rec = end["rec"]
    for name in meters:
        m = rec["meters"][name]
        assert m["fault"] == "timeout" and m["failed"] == m["polls"] >= 58, (name, m)
        assert "sensor_fault:" + name in end["active"]
    # 2 requests (power, energy) x 2 tries x 60 polls x 4 meters, every one timed out
    assert rec["requests"] >= 4 * 58 * 2 * 2 and rec["bus_errors"] == 0, rec
    assert deaf.requests >= 2 * 58 * 2 * 2
    # By construction: a request to a dead peer holds virtual time to real time only for
    # the reply window, then its 2 s timeout passes in virtual time. The hour's real time
    # is a small fraction of the virtual time spent waiting (and the node did it all).
    waited_ms = rec["requests"] * 2000
    assert end["real_ms"] * 10 < waited_ms, (end["real_ms"], waited_ms)
    print(f"\n{rec['requests']} requests timed out in a virtual hour, {end['real_ms']} ms "
          f"real ({end['real_ms'] / rec['requests']:.1f} ms each, reply window {REPLY_MS} ms);"
          f" worst tick lateness {end['late']} ms; longest Modbus call "
          f"{rec['worst_call_us']} us ({rec['worst_call_where']})")


# -- the frame parsers: a fuzz run in process, a sample end to end -----------------------------

OK, MORE, TIMEOUT, CRC, EXCEPTION, TRUNCATED, WRONG_SLAVE, BAD_FRAME = 0, 1, 2, 3, 4, 5, 6, 7
RTU_RX, TCP_RX = 256, 260  # mbrtu._RX, mbtcp._RX


def rtu_verdict(b, slave, fc, count):
    """What an RTU answer b means to a master that asked slave/fc/count (the Modbus spec,
    written here again; CRC bit by bit): (verdict, offset of the registers)."""
    if len(b) > RTU_RX:
        return BAD_FRAME, 0
    if len(b) < 2:
        return MORE, 0
    f = b[1]
    if f == fc | 0x80:
        need = 5
    elif f == fc:
        if len(b) < 3:
            return MORE, 0
        if b[2] != 2 * count:
            return BAD_FRAME, 0
        need = 5 + 2 * count
    else:
        return BAD_FRAME, 0
    if len(b) < need:
        return MORE, 0
    if crc16(b[:need - 2]) != b[need - 2] | b[need - 1] << 8:
        return CRC, 0
    if b[0] != slave:
        return WRONG_SLAVE, 0
    return (EXCEPTION, 0) if f != fc else (OK, 3)


def tcp_verdict(b, tid, unit, fc, count):
    if len(b) > TCP_RX:
        return BAD_FRAME, 0
    p = 0
    while True:
        if len(b) - p < 8:
            return MORE, 0
        proto, ln = struct.unpack(">HH", b[p + 2:p + 6])
        if proto != 0 or not 2 <= ln <= 254:
            return BAD_FRAME, 0
        end = p + 6 + ln
        if len(b) < end:
            return MORE, 0
        if struct.unpack(">H", b[p:p + 2])[0] != tid:
            p = end
            continue
        f = b[p + 7]
        if f == fc | 0x80:
            if ln != 3:
                return BAD_FRAME, 0
        elif f != fc or ln != 3 + 2 * count or b[p + 8] != 2 * count:
            return BAD_FRAME, 0
        if b[p + 6] != unit:
            return WRONG_SLAVE, 0
        return (EXCEPTION, 0) if f != fc else (OK, p + 9)


def at_deadline(kind, b, slave, fc, tid):
    """An incomplete answer when the time is up (mbrtu/mbtcp _partial)."""
    if not b:
        return TIMEOUT
    if kind == "rtu":
        ok = b[0] == slave and (len(b) < 2 or b[1] in (fc, fc | 0x80))
    else:
        ok = len(b) < 2 or struct.unpack(">H", b[:2])[0] == tid
    return TRUNCATED if ok else BAD_FRAME


def _mutate(rng, b):
    b = bytearray(b)
    for _ in range(rng.randint(1, 3)):
        op = rng.randrange(8)
        i = rng.randrange(len(b)) if b else 0
        if op == 0 and b:
            b[i] ^= 1 << rng.randrange(8)
        elif op == 1 and b:
            b[i] = rng.randrange(256)
        elif op == 2:
            b.insert(i, rng.randrange(256))
        elif op == 3 and b:
            del b[i]
        elif op == 4:
            del b[rng.randrange(len(b) + 1):]
        elif op == 5:
            b += bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        elif op == 6 and len(b) > 1:
            j = rng.randrange(len(b))
            b[i], b[j] = b[j], b[i]
        else:
            b += b[:rng.randint(1, 12)]
    return bytes(b)


def rtu_case(rng, slave=None, fc=None, count=None):
    """(frame, slave, fc, count, original or None): a valid answer, an exception, its
    mutation, or garbage, for a master that asked slave/fc/count."""
    slave = slave or rng.randint(1, 247)
    fc = fc or rng.choice((3, 4))
    count = count or rng.randint(1, 125)
    kind = rng.randrange(10)
    if kind == 0:
        return bytes(rng.randrange(256) for _ in range(rng.randint(0, 300))), slave, fc, \
            count, None
    if kind == 1:
        good = rtu_frame(bytes([slave, fc | 0x80, rng.randint(1, 11)]))
    else:
        data = bytes(rng.randrange(256) for _ in range(2 * count))
        good = rtu_frame(bytes([rng.choice((slave, slave, slave ^ 1)), fc, 2 * count]) + data)
    if kind in (2, 3):
        return good, slave, fc, count, good
    return _mutate(rng, good), slave, fc, count, good


def tcp_case(rng, tid=None, unit=None, fc=None, count=None):
    tid = rng.randrange(65536) if tid is None else tid
    unit = rng.randrange(256) if unit is None else unit
    fc = fc or rng.choice((3, 4))
    count = count or rng.randint(1, 125)
    kind = rng.randrange(10)
    if kind == 0:
        return bytes(rng.randrange(256) for _ in range(rng.randint(0, 300))), tid, unit, fc, \
            count, None

    def frame(t, u, pdu):
        return struct.pack(">HHH", t, 0, 1 + len(pdu)) + bytes([u]) + pdu

    if kind == 1:
        good = frame(tid, unit, bytes([fc | 0x80, rng.randint(1, 11)]))
    else:
        pdu = bytes([fc, 2 * count]) + bytes(rng.randrange(256) for _ in range(2 * count))
        good = frame(tid, rng.choice((unit, unit, unit ^ 1)), pdu)
    if kind == 2:  # a late answer to an earlier request first
        good = frame((tid - 1) & 0xFFFF, unit, bytes([fc, 2, 0, 1])) + good
    if kind in (2, 3):
        return good, tid, unit, fc, count, good
    return _mutate(rng, good), tid, unit, fc, count, good


FUZZ = r"""
import json
from mbcore import NAMES
from mbrtu import RTUMaster
from mbtcp import TCPMaster


class Port:  # the parsers under test never touch their stream
    pass


rtu = RTUMaster(Port(), baudrate=9600, clock=None)
tcp = TCPMaster("127.0.0.1", 502, clock=None)
out = bytearray()
errors = []
with open(PATH, "rb") as f:
    while True:
        h = f.read(8)
        if not h:
            break
        n = h[6] << 8 | h[7]
        data = f.read(n)
        if h[0] == 0:
            m = rtu
            m.expect(h[1], h[2], h[3])
        else:
            m = tcp
            m.expect(h[1], h[2], h[3], h[4] << 8 | h[5])
        k = min(n, len(m.rx))
        for i in range(k):
            m.rx[i] = data[i]
        m.n = k
        m.over = n > k
        try:
            st = m.check()
            late = m._partial() if st == 1 else st
        except Exception as e:  # never: recorded for the assertion
            errors.append(repr(e))
            st = late = 255
        out.append(st)
        out.append(late)
        out.append(m.data if st == 0 else 0)
print(json.dumps({"verdicts": out.hex(), "errors": errors[:5]}))
"""


def test_fuzz_the_frame_parsers_in_process(mp, tmp_path):
    """11,000 frames (garbage, valid answers, exceptions, their mutations: bit flips,
    replaced, inserted, deleted bytes, truncations, trailing junk, repeats; TCP also with a
    late answer in front) through the drivers' own check() inside the micropython binary:
    never an exception, every verdict the Modbus spec's, and (RTU) never an answer taken
    from a damaged frame."""
    rng = random.Random(20240907)
    cases, blob = [], bytearray()
    for i in range(11_000):
        if i % 2 == 0 or i > 10_000:
            frame, slave, fc, count, good = rtu_case(rng)
            want = rtu_verdict(frame, slave, fc, count)
            head = bytes([0, slave, fc, count, 0, 0])
            cases.append(("rtu", frame, slave, fc, 0, good, want))
        else:
            frame, tid, unit, fc, count, good = tcp_case(rng)
            want = tcp_verdict(frame, tid, unit, fc, count)
            head = bytes([1, unit, fc, count]) + struct.pack(">H", tid)
            cases.append(("tcp", frame, unit, fc, tid, good, want))
        blob += head + struct.pack(">H", len(frame)) + frame
    path = tmp_path / "frames.bin"
    path.write_bytes(blob)
    (res,) = mp.run_json(f"PATH = {str(path)!r}\n" + FUZZ, timeout=300)
    assert res["errors"] == []
    got = bytes.fromhex(res["verdicts"])
    assert len(got) == 3 * len(cases)
    seen = {}
    for i, (kind, frame, who, fc, tid, good, (want, off)) in enumerate(cases):
        st, late, data = got[3 * i:3 * i + 3]
        assert (st, data) == (want, off), (i, kind, frame.hex(), st, want)
        if st == MORE:
            assert late == at_deadline(kind, frame, who, fc, tid), (i, kind, frame.hex())
        if kind == "rtu" and st in (OK, EXCEPTION, WRONG_SLAVE):
            # the CRC let through only an intact answer (its bytes are the original's;
            # TCP has no CRC of its own: TCP's checksum guards its bytes)
            need = 5 if frame[1] & 0x80 else 5 + frame[2]
            assert good is not None and frame[:need] == good[:need], (i, frame.hex())
        seen[st] = seen.get(st, 0) + 1
    # every verdict came up, many times
    assert all(seen.get(v, 0) >= 50 for v in (OK, MORE, CRC, EXCEPTION, WRONG_SLAVE,
                                              BAD_FRAME)), seen
    print("\nverdicts:", {("ok", "more", "", "crc", "exception", "", "wrong_slave",
                           "bad_frame")[k]: v for k, v in sorted(seen.items())})


E2E = r"""
import board, json
asyncio = board.install_asyncio()
from heatgw import clock
from mbrtu import RTUMaster
from mbtcp import TCPMaster


async def ticker():
    while True:
        await asyncio.sleep_ms(1000)


async def main():
    asyncio.create_task(ticker())
    if KIND == "rtu":
        u, de = board.rs485("rs485", 9600, None, 1)
        m = RTUMaster(u, baudrate=9600, clock=clock, de=de, on_send=board.io_sent)
    else:
        m = TCPMaster("127.0.0.1", PORT, clock=clock, on_send=board.io_sent)
    got = []
    for i in range(N):
        got.append(await m.transact(5, b"\x04\x00\x00\x00\x02", 150))
    print(json.dumps(got))

asyncio.run(main())
"""


@pytest.mark.parametrize("kind", ["rtu", "tcp"])
def test_fuzz_sample_end_to_end(mp, peers, kind, monkeypatch):
    """150 fuzzed answers through the real stream (a pty line, a socket): each request
    gets the next frame, the verdict the node reaches is the spec's (an incomplete one
    judged at its deadline)."""
    rng = random.Random(7 if kind == "rtu" else 8)
    want = []

    def answer(req):
        while True:
            if kind == "rtu":
                frame, *_ = rtu_case(rng, slave=5, fc=4, count=2)
                v, _ = rtu_verdict(frame, 5, 4, 2)
                tid = 0
            else:
                tid = struct.unpack(">H", req[:2])[0]
                frame, *_ = tcp_case(rng, tid=tid, unit=5, fc=4, count=2)
                v, _ = tcp_verdict(frame, tid, 5, 4, 2)
            if len(frame) <= 200:  # within one read of the relay: no overflow timing
                break
        want.append(at_deadline(kind, frame, 5, 4, tid) if v == MORE else v)
        return frame or None

    if kind == "rtu":
        line = peers(PtyLine())
        peers(RawRTU(line, answer))
        monkeypatch.setenv("HEATGW_RS485", line.node_path)
        port = 0
    else:
        port = peers(RawTCP(answer)).port
    monkeypatch.setenv("HEATGW_IO_REPLY_MS", "100")
    (got,) = mp.run_json(f"KIND = {kind!r}\nPORT = {port}\nN = 150\n" + E2E, timeout=300)
    assert got == want
    assert len(set(got)) >= 5, got  # timeouts, truncations, CRC/bad frames, OK, ...


def test_no_stale_value_ever_reads_as_fresh(tmp_path, peers):
    # One healthy meter (period 5 s, stale after 12 s) shares an RS-485 line with two dead
    # ones (4 s timeout, one retry): it is polled every ~16 s, so between polls its
    # value goes stale, while its own reads never fail. Sampled every 250 ms: a value is
    # given only while younger than 12 s, else (None, "stale"); the fail-safe trips
    # sensor_stale:a (critical) and clears it again at the next read.
    line = peers(PtyLine())
    peers(RawRTU(line, lambda req: _rtu_answer(1, req[1], f32(GOOD)) if req[0] == 1
                 else None))
    meters = {"a": {"bus": "rs", "slave": 1, "period_s": 5, "stale_s": 12, "critical": True,
                    "registers": {"power_w": _reg(0, "float32")}}}
    for name, slave in (("b", 2), ("c", 3)):
        meters[name] = {"bus": "rs", "slave": slave, "period_s": 5, "timeout_ms": 4000,
                        "retries": 1, "stale_s": 20, "registers": {"v": _reg(0, "float32")}}
    end = run_node(tmp_path, base_config({"buses": {"rs": {"type": "rtu"}}, "meters": meters}),
                   """
seen = {}
worst_age = 0
for i in range(480):
    await asyncio.sleep_ms(250)
    v, why, t = mb.value("a", "power_w")
    seen[str(why)] = seen.get(str(why), 0) + 1
    if why is None:
        worst_age = max(worst_age, clk.ticks_diff(clk.ticks_ms(), t))
        assert v == 42.0
    elif why == "stale":
        assert v is None and clk.ticks_diff(clk.ticks_ms(), t) > 12_000
out(seen=seen, worst_age=worst_age, fault=mb.meter("a"))
""", {"HEATGW_RS485": line.node_path, "HEATGW_IO_REPLY_MS": "50"})
    got, last = end[0], end[-1]
    check_healthy(last)
    assert got["seen"].get("None", 0) > 100 and got["seen"].get("stale", 0) > 20, got
    assert got["worst_age"] <= 12_000, got
    assert last["rec"]["meters"]["a"]["failed"] == 0  # never a fault of its own
    trips = [e for e in last["events"] if e.get("reason") == "sensor_stale:a"]
    assert [e["kind"] for e in trips][:4] == ["trip", "clear", "trip", "clear"], trips


# -- a Modbus flow meter feeds the heat meter ----------------------------------------------

def test_a_modbus_flow_meter_feeds_the_heat_meters_volume_and_the_fail_safes_flow(
        tmp_path, peers):
    # A flow meter (pymodbus) whose float32 volume total grows by 1/64 m3 per read (every
    # 5 s: 11.25 m3/h, its flow register says the same): the heat meter's volume is the
    # total's growth to the µL; the fail-safe sees the flow; when the meter goes silent,
    # sensor_fault:flow (flow.critical), and the volume stops.
    reads = [0]
    step = 1 / 64

    async def bump(fc, start, address, count, registers, values):
        reads[0] += 1
        registers[0x100 - start:0x102 - start] = f32(1000.0 + reads[0] * step)
        return None

    srv = peers(PymodbusTCP([device(7, holding_regs={0x100: f32(1000.0) + f32(11.25)},
                                    action=bump)]))
    cfg = base_config({
        "buses": {"lan": {"type": "tcp", "host": "127.0.0.1", "port": srv.port}},
        "meters": {"fm": {"bus": "lan", "slave": 7, "role": "flow", "period_s": 5,
                          "timeout_ms": 300, "stale_s": 20, "registers": {
                              "volume_m3": _reg(0x100, "float32", unit="m3"),
                              "flow_m3h": _reg(0x102, "float32", unit="m3/h")}}}},
        flow={"type": "modbus", "meter": "fm", "max_m3h": 15.0, "critical": True})
    node = Node(tmp_path, cfg, """
await asyncio.sleep_ms(61_000)
gw.meter.flush()
out(volume_ul=gw.meter.volume_ul, flow=gw.inputs.flow_m3h, why=gw.inputs.flow_reason,
    active=list(gw.failsafe.active), polls=mb.meters["fm"].polls)
sys.stdin.readline()
await asyncio.sleep_ms(30_000)
gw.meter.flush()
out(volume_ul=gw.meter.volume_ul, flow=gw.inputs.flow_m3h, why=gw.inputs.flow_reason,
    active=list(gw.failsafe.active))
""")
    first = node.results(1)[0]
    srv.stop()
    node.go()
    rs = node.end()
    later, end = rs[1], rs[-1]
    check_healthy(end)
    assert first["polls"] == 13 and reads[0] == 13
    # 13 reads: 12 differences of 1/64 m3, exact to the µL
    assert first["volume_ul"] == 12 * 15_625_000, first
    assert first["flow"] == 11.25 and first["why"] is None
    assert "sensor_fault:flow" not in first["active"] and "sink_flow_low" not in first["active"]
    # the meter gone: a named fault, no flow, no more volume
    assert later["why"] in ("no_connection", "timeout", "closed"), later
    assert later["flow"] is None and "sensor_fault:flow" in later["active"], later
    assert later["volume_ul"] == first["volume_ul"]


# -- in process: decoding, the plan, the configuration --------------------------------------

DECODE = r"""
import json, struct
from mbcore import decode
out = []
for typ, order, hexbytes in CASES:
    v = decode(bytes.fromhex(hexbytes), 0, typ, order)
    # a float by its float32 bits: exact on single- and double-precision builds alike
    out.append(v if v is None or type(v) is int else struct.pack(">f", v).hex())
print(json.dumps(out))
"""


def test_decode_every_type_and_order_like_struct(mp):
    """int16, uint16, int32, uint32, float32 in every word and byte order, against
    CPython's struct (floats exactly: decode builds them from their bits)."""
    rng = random.Random(3)
    cases, want = [], []
    specials = [0.0, -0.0, 1.0, -2.5, 3.4028234663852886e38, 1.401298464324817e-45,
                -1.1754942106924411e-38, float("inf"), float("-inf"), float("nan")]
    for i in range(2000):
        typ = i % 5
        order = (i // 5) % 4
        if typ == 4:
            v = specials[i % len(specials)] if i < 200 else \
                struct.unpack(">f", struct.pack(">I", rng.getrandbits(32)))[0]
            raw = struct.pack(">f", v)
        else:
            fmt = ">h>H>i>I"[2 * typ:2 * typ + 2]
            lo, hi = {0: (-2**15, 2**15 - 1), 1: (0, 2**16 - 1), 2: (-2**31, 2**31 - 1),
                      3: (0, 2**32 - 1)}[typ]
            v = rng.randint(lo, hi)
            raw = struct.pack(fmt, v)
        words = [raw[j:j + 2] for j in range(0, len(raw), 2)]
        if order & 1:
            words.reverse()
        if order & 2:
            words = [w[::-1] for w in words]
        cases.append((typ, order, b"".join(words).hex()))
        if typ == 4:
            want.append(None if v != v or v in (float("inf"), float("-inf")) else v)
        else:
            want.append(v)
    got = mp.run_json(f"CASES = {cases!r}\n" + DECODE)[0]
    for c, g, w in zip(cases, got, want, strict=True):
        if isinstance(w, float):
            assert g == struct.pack(">f", w).hex(), (c, g, w)  # every bit, -0.0 too
        else:
            assert g == w, (c, g, w)


PLAN = r"""
import json
from heatgw import mbplan
plan = mbplan.plan(CFG)
print(json.dumps([[b, [[n, list(names), [[pdu.hex(), [list(s) for s in spec]]
                                          for pdu, spec in reqs]]
                       for n, _mc, names, _u, reqs in ms]] for b, _bc, ms in plan]))
"""


def test_adjacent_registers_are_read_in_as_few_requests_as_possible(mp, tmp_path):
    regs = {"a": _reg(10, "float32"), "b": _reg(12, "uint16"), "c": _reg(13, "int32"),
            "d": _reg(11, "uint16"),  # overlaps a: same request
            "e": _reg(16, "int16"),  # a gap of one register: a new request
            "f": _reg(10, "int16", fc=4),  # another function code: a new request
            "g": _reg(200, "uint16"), "h": _reg(323, "float32")}  # 200..324: > 125 regs
    cfg = base_config({"buses": {"b": {"type": "tcp", "host": "10.0.0.1", "port": 502}},
                       "meters": {"m": {"bus": "b", "slave": 1, "registers": regs},
                                  "s": {"bus": "b", "slave": 2, "model": "sdm630"}}})
    cfg = _filled(cfg, tmp_path)
    plan = mp.run_json(f"CFG = {cfg!r}\n" + PLAN)[0]
    (bname, meters), = plan
    m = dict((n, (names, reqs)) for n, names, reqs in meters)
    names, reqs = m["m"]
    assert names == sorted(regs)
    idx = names.index
    # holding 10..14 (a b c d), 16 (e), 200 (g), 323..324 (h); input 10 (f)
    assert [r[0] for r in reqs] == ["03000a0005", "0300100001", "0300c80001",
                                    "0301430002", "04000a0001"], reqs
    assert sorted(map(tuple, reqs[0][1])) == sorted([
        (idx("a"), 0, 4, 0, 1), (idx("d"), 2, 1, 0, 1), (idx("b"), 4, 1, 0, 1),
        (idx("c"), 6, 2, 0, 1)])
    # the SDM630's two values, 20 registers apart: two requests of two registers
    names, reqs = m["s"]
    assert names == ["energy_kwh", "power_w"]
    assert [r[0] for r in reqs] == ["0400340002", "0400480002"]
    # CPython's check() agrees on how many requests a poll takes
    assert len(mbplan.blocks(mbplan._values(cfg["modbus"]["meters"]["m"]))) == 5


def _filled(cfg, tmp_path):
    """The configuration as the node holds it (validated, defaults filled)."""
    p = tmp_path / "filled.json"
    p.write_text(json.dumps(cfg))
    got, errors, source, _ = config.load(str(p), save=False)
    assert errors == [] and source == "file", errors
    return got


def _mb_cfg(**over):
    """A valid configuration with both kinds of bus; over: {dotted path: value or DEL}."""
    cfg = base_config({
        "buses": {"rs": {"type": "rtu", "baud": 19200, "parity": "even"},
                  "lan": {"type": "tcp", "host": "192.168.1.20"}},
        "meters": {"compute": {"bus": "lan", "slave": 1, "model": "sdm630", "role": "compute",
                               "critical": True},
                   "fm": {"bus": "rs", "slave": 3, "role": "flow", "registers": {
                       "volume_m3": _reg(0x100, "float32"),
                       "flow_m3h": {"address": 0x102, "type": "float32"}}}}},
        flow={"type": "modbus", "meter": "fm", "max_m3h": 15.0, "critical": True})
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


DEL = object()
BAD_CONFIGS = [
    ({"modbus.meters.compute.bus": "wifi"},
     "modbus.meters.compute.bus: 'wifi' is not one of modbus.buses (lan, rs)"),
    ({"modbus.buses.lan.host": DEL},
     "modbus.buses.lan.host: required for a tcp bus (the server's IPv4 address)"),
    ({"modbus.buses.lan.host": "300.1.1.1"},
     "modbus.buses.lan.host: '300.1.1.1' is not an IPv4 address like 192.168.1.20"),
    ({"modbus.buses.lan.host": "meter.local"},
     'modbus.buses.lan.host: character "m" not allowed'),
    ({"modbus.buses.rs.host": "10.0.0.1"}, "modbus.buses.rs.host: only for a tcp bus"),
    ({"modbus.meters.fm.slave": 0}, "modbus.meters.fm.slave: 0 is not an RTU slave id"),
    ({"modbus.meters.compute.model": None},
     "modbus.meters.compute: reads nothing: set model or registers"),
    ({"modbus.meters.fm.role": "compute"},
     "modbus.meters.fm.role: compute needs the value power_w or energy_kwh"),
    ({"modbus.meters.supply": {"bus": "lan", "slave": 2, "model": "sdm120"}},
     "modbus.meters.supply: the name is taken (an RTD channel's or flow's)"),
    ({"modbus.meters.fm.stale_s": 10},
     "modbus.meters.fm.stale_s: 10 s must be longer than period_s (10 s)"),
    ({"modbus.meters.fm.timeout_ms": 10000, "modbus.meters.fm.retries": 3,
      "modbus.meters.fm.stale_s": 30},
     "modbus.meters.fm.stale_s: 30 s is shorter than one poll that times out (40000 ms"),
    ({"flow.meter": "compute"}, "flow.meter: modbus.meters.compute has role compute, not flow"),
    ({"flow.meter": "nosuch"}, "flow.meter: 'nosuch' is not one of modbus.meters"),
    ({"flow.meter": DEL}, "flow.meter: required with flow (the Modbus flow meter"),
    ({"modbus": None}, "flow.meter: flow.type modbus needs a modbus section"),
    ({"modbus.meters.fm.registers.volume_m3.type": "float64"},
     'modbus.meters.fm.registers.volume_m3.type: "float64" is not allowed'),
    ({"modbus.meters.fm.registers.Volume": _reg(0, "uint16")},
     'modbus.meters.fm.registers.Volume: character "V" not allowed in a name'),
    ({"modbus.meters.fm.registers.hi": _reg(65535, "uint32")},
     "modbus.meters.fm.registers.hi.address: 65535: its registers run past 65535"),
    ({"modbus.meters.fm.registers.zero": _reg(0, "uint16", scale=0)},
     "modbus.meters.fm.registers.zero.scale: 0 makes every value 0"),
    ({"modbus.meters.fm.speed": 1}, "modbus.meters.fm.speed: unknown key"),
    ({"modbus.meters.Compute": {"bus": "lan", "slave": 2, "model": "sdm120"}},
     'modbus.meters.Compute: character "C" not allowed in a name'),
    ({"modbus.buses.rs.parity": "mark"}, 'modbus.buses.rs.parity: "mark" is not allowed'),
    ({"modbus.meters": {f"m{i}": {"bus": "lan", "slave": i, "model": "sdm120"}
                        for i in range(9)}}, "modbus.meters: 9 members, at most 8"),
    ({"flow.type": "pulse", "flow.meter": DEL},
     "flow: needs one of litres_per_pulse, pulses_per_litre (a pulse meter's K-factor)"),
]

LOAD = r"""
import json
from heatgw import config
for p in PATHS:
    cfg, errors, source, _ = config.load(p, save=False)
    print(json.dumps([source, errors, cfg if source == "file" else None]))
"""


def test_modbus_configuration_is_checked_alike_on_the_device_and_the_host(mp, tmp_path):
    docs = [_mb_cfg()] + [_mb_cfg(**over) for over, _ in BAD_CONFIGS]
    paths = []
    for i, doc in enumerate(docs):
        p = tmp_path / f"c{i}.json"
        p.write_text(json.dumps(doc))
        paths.append(str(p))
    on_node = mp.run_json(f"PATHS = {paths!r}\n" + LOAD)
    for i, p in enumerate(paths):
        cfg, errors, source, _ = config.load(p, save=False)
        assert on_node[i] == [source, errors, cfg if source == "file" else None], p
        if i == 0:
            assert source == "file" and errors == [], errors
            m = cfg["modbus"]["meters"]["fm"]
            assert m["registers"]["flow_m3h"] == _reg(0x102, "float32")  # defaults
            assert (m["period_s"], m["timeout_ms"], m["retries"], m["stale_s"],
                    m["critical"]) == (10, 500, 1, 60, False)
            continue
        want = BAD_CONFIGS[i - 1][1]
        assert source == "default", (want, errors)
        assert any(e.startswith(want) for e in errors), (want, errors)


def test_the_modbus_schema_is_loaded_only_for_a_configuration_that_has_one(mp, tmp_path):
    plain, mb = tmp_path / "plain.json", tmp_path / "mb.json"
    plain.write_text(json.dumps(base_config(None)))
    mb.write_text(json.dumps(_mb_cfg()))
    (got,) = mp.run_json(f"""
import json, sys
from heatgw import config
out = {{}}
for p in ({str(plain)!r}, {str(mb)!r}):
    cfg, errors, source, _ = config.load(p, save=False)
    out[p] = [source, "heatgw.mbschema" in sys.modules, "heatgw.mbplan" in sys.modules]
print(json.dumps(out))
""")
    assert got[str(plain)] == ["file", False, False]
    assert got[str(mb)] == ["file", True, True]


DE_RUN = r"""
import board, json
asyncio = board.install_asyncio()
from heatgw import clock
from mbcore import NAMES
from mbrtu import RTUMaster


async def main():
    u, de = board.rs485("rs485", 9600, None, 1)
    m = RTUMaster(u, baudrate=9600, clock=clock, de=de if USE_DE else None,
                  on_send=board.io_sent)
    got = []
    for _ in range(5):
        got.append(NAMES[await m.transact(1, b"\x04\x00\x34\x00\x02", 300)])
    print(json.dumps({"got": got, "rises": de.rises, "lost": u.lost_tx, "de": de.value(),
                      "requests": m.requests}))

asyncio.run(main())
"""


@pytest.mark.parametrize("use_de", [True, False])
def test_the_rtu_driver_drives_the_transceivers_de_around_each_request(mp, peers,
                                                                        monkeypatch, use_de):
    # The host board's RS-485 port drops what is written while DE is low, as a
    # half-duplex transceiver does: a driver that forgot DE would never reach a meter.
    line = peers(PtyLine())
    peers(PymodbusRTU(line.peer_path, [sdm630(1, 1234.5, 1.0)]))
    monkeypatch.setenv("HEATGW_RS485", line.node_path)
    (r,) = mp.run_json(f"USE_DE = {use_de}\n" + DE_RUN)
    if use_de:
        assert r == {"got": ["ok"] * 5, "rises": 5, "lost": 0, "de": 0, "requests": 5}
    else:
        assert r == {"got": ["timeout"] * 5, "rises": 0, "lost": 40, "de": 0, "requests": 5}


def test_an_rs485_port_that_cannot_be_opened_is_no_bus_and_control_carries_on(tmp_path):
    # No pty for the board's port: the bus task fails at each start and is restarted
    # with backoff (task events), its meters read "no_bus", the critical one trips.
    cfg = base_config({"buses": {"rs": {"type": "rtu"}},
                       "meters": {"m": {"bus": "rs", "slave": 1, "model": "sdm120",
                                        "critical": True}}})
    end = run_node(tmp_path, cfg, """
await asyncio.sleep_ms(30_000)
out(state=state())
""", {"HEATGW_RS485": ""})
    got, last = end[0], end[-1]
    assert got["state"]["m"]["values"]["power_w"][:2] == [None, "no_bus"]
    tasks = [e for e in last["events"] if e["kind"] == "task"]
    assert tasks and all(e["task"] == "modbus:rs" and e["state"] == "crashed"
                         for e in tasks), tasks
    assert "no pty for rs485" in tasks[0]["error"]
    assert last["rec"]["bus_errors"] == len(tasks) >= 4  # 1, 2, 4, 8, 16 s backoff
    assert "sensor_fault:m" in last["active"]
    assert last["fault"] is None and last["late"] <= LATE_MAX_MS


# -- heap: what a poll allocates ------------------------------------------------------------

ALLOC = r"""
import gc, json, board
asyncio = board.install_asyncio()
from heatgw import clock, start
gc.collect()
a0 = gc.mem_alloc()
plan = start.modbus_plan(CFG)
from heatgw.modbus import Modbus
gc.collect()
a1 = gc.mem_alloc()
mb = Modbus(plan, board)
plan = None
gc.collect()
a2 = gc.mem_alloc()


async def poll(m, t, n):
    # the bus task's loop body (heatgw.modbus._run), n polls of meter m
    gc.collect()
    gc.disable()
    b0 = gc.mem_alloc()
    for _ in range(n):
        fault = None
        for pdu, spec in m.requests:
            st = await t.transact(m.slave, pdu, m.timeout_ms)
            fault = mb._take(m, t, st, spec, fault)
        mb._polled(m, fault)
    b1 = gc.mem_alloc()
    gc.enable()
    return (b1 - b0) / n


async def main():
    t = mb._buses[0][3]  # the bus's driver, made at construction
    await poll(mb.meters["flow_i"], t, 3)  # the reader task, connection: once
    gc.collect()
    a3 = gc.mem_alloc()
    per_poll = {}
    for name in ("sdm630", "flow_f", "flow_i"):
        per_poll[name] = await poll(mb.meters[name], t, 40)
    print(json.dumps({"plan_and_module": a1 - a0, "poller": a2 - a1, "connected": a3 - a2,
                      "per_poll": per_poll,
                      "faults": [m.fault for m in mb.meters.values()]}))

asyncio.run(main())
"""


def test_a_poll_allocates_one_coroutine_per_request_and_its_values(mp, peers, tmp_path):
    """Buffers and lists are made once: a poll allocates the driver's transact coroutine
    per request (with asyncio's I/O-queue entry per read) and the values it decodes
    (floats, each a heap object on a target). Measured with gc off; the bound says no
    list, dict or buffer per poll (128 words per request, 16 per value)."""
    from host_tools import mpinfo

    srv = peers(PymodbusTCP(_devices()))
    cfg = _filled(base_config({"buses": {"b": {"type": "tcp", "host": "127.0.0.1",
                                               "port": srv.port}},
                               "meters": _meters("b")}), tmp_path)
    (r,) = mp.run_json(f"CFG = {cfg!r}\n" + ALLOC)
    assert r["faults"] == [None] * 4
    word = mpinfo.word_bits() // 8
    for name, per in r["per_poll"].items():
        n_req, n_val = REQUESTS_PER_POLL[name], len(EXPECTED[name])
        assert per <= (128 * n_req + 16 * n_val) * word, (name, per)
    print(f"\nheap (bytes, {8 * word}-bit): plan + heatgw.modbus + mbcore + mbtcp "
          f"{r['plan_and_module']}, the poller for 4 meters with its driver's buffers "
          f"{r['poller']}, the connection and its reader {r['connected']}; per poll "
          f"{r['per_poll']}")


# -- the complete-node day (tests/siteday.py, feature `modbus`) -------------------------------

def test_day_reads_the_compute_sdm630_all_day(complete_node_day):
    from tests.siteday import MODBUS_PERIOD_S

    day = complete_node_day
    got = day.extra["modbus"]
    rec = got["record"]
    assert rec is not None, "no modbus record from the node"
    m = rec["meters"]["compute"]
    polls = day.summary["duration_s"] / MODBUS_PERIOD_S
    assert polls - 2 <= m["polls"] <= polls + 1, (m, polls)
    assert m["failed"] == 0 and m["fault"] is None, m
    same = _same_float()
    assert sorted(m["values"]) == ["energy_kwh", "power_w"]
    # the values of the last poll: what the server (following the plant) answered last
    last = got["last_served"]
    assert same(m["values"]["power_w"], struct.unpack(">f", struct.pack(">f", last[0x34]))[0]), m
    assert same(m["values"]["energy_kwh"],
                struct.unpack(">f", struct.pack(">f", last[0x48]))[0]), m
    # two requests a poll (power and energy are 20 registers apart), every one answered
    assert rec["requests"] == 2 * m["polls"] == got["served"], (rec, got["served"])
    assert rec["bus_errors"] == 0
    kinds = [(e.get("kind"), e.get("task")) for e in day.harness.node_events]
    assert ("modbus", None) not in kinds and ("task", "modbus:lan") not in kinds
    print(f"\nday: {m['polls']} SDM630 polls, longest real time in one Modbus call "
          f"{rec['worst_call_us']} us ({rec['worst_call_where']})")


LOCKED = r"""
import json, micropython
import board
from heatgw import start
from heatgw.failsafe import Inputs
from heatgw.modbus import Modbus
from mbrtu import RTUMaster
from mbtcp import TCPMaster
plan = start.modbus_plan(CFG)
mb = Modbus(plan, board)
mb._inputs = Inputs((), mb.readings())
m = mb.meters["ints"]
(pdu, spec), = m.requests


class Port:
    pass


rtu = RTUMaster(Port(), baudrate=9600, clock=None)
tcp = TCPMaster("127.0.0.1", 502, clock=None)
ANSWER = bytes.fromhex(ANSWER_HEX)
for i in range(len(ANSWER)):
    rtu.rx[i] = ANSWER[i]
rtu.n = len(ANSWER)


def rtu_request():
    rtu._frame(5, pdu)
    rtu.check()


def tcp_request():
    tcp._frame(5, pdu)
    tcp.check()


def bookkeeping():
    mb._take(m, rtu, 0, spec, None)
    mb._polled(m, None)


def locked(fn):
    fn()  # once unlocked (first-time state)
    ok = "ok"
    k = 0
    micropython.heap_lock()
    try:
        while k < 20:
            fn()
            k += 1
    except MemoryError:
        ok = "allocates"
    micropython.heap_unlock()
    return ok


res = {}
for name, fn in (("frame+check", rtu_request), ("tcp frame+check", tcp_request),
                 ("take+polled", bookkeeping)):
    res[name] = locked(fn)
res["values"] = [mb.value("ints", n)[0] for n in m.names]
res["check"] = rtu.check()
print(json.dumps(res))
"""


def test_a_polls_bookkeeping_allocates_nothing(mp, tmp_path):
    """Under micropython.heap_lock(): building a request, judging the answer, decoding
    int registers into the meter's lists, the fail-safe's reading and the schedule make
    no object. (What a poll does allocate: the request's coroutine and float values.)"""
    regs = {"a": _reg(0, "uint16"), "b": _reg(1, "int16"), "c": _reg(2, "int32",
                                                                   word_order="little")}
    cfg = _filled(base_config({"buses": {"rs": {"type": "rtu"}},
                               "meters": {"ints": {"bus": "rs", "slave": 5, "registers": regs,
                                                   "critical": True}}}), tmp_path)
    data = struct.pack(">HhHH", 4321, -17, 0x5678, 0x0012)  # c = 0x00125678 word-swapped
    answer = rtu_frame(bytes([5, 3, len(data)]) + data)
    (r,) = mp.run_json(f"CFG = {cfg!r}\nANSWER_HEX = {answer.hex()!r}\n" + LOCKED)
    assert r == {"frame+check": "ok", "tcp frame+check": "ok", "take+polled": "ok",
                 "values": [4321, -17, 0x125678], "check": OK}, r


# -- Modbus peers in virtual time (boards/host/vasyncio.py's rules) ----------------------------

VTIME = r"""
import board, json, time
asyncio = board.install_asyncio()
from heatgw import clock
from mbcore import NAMES
from mbrtu import RTUMaster
from mbtcp import TCPMaster


async def ticker():
    while True:
        await asyncio.sleep_ms(1000)


async def main():
    asyncio.create_task(ticker())
    if KIND == "rtu":
        u, de = board.rs485("rs485", 9600, None, 1)
        m = RTUMaster(u, baudrate=9600, clock=clock, de=de, on_send=board.io_sent)
    else:
        m = TCPMaster("127.0.0.1", PORT, clock=clock, on_send=board.io_sent)
    out = []
    for slave in (1, 1, 2):  # slave 1 answers after 100 ms real, slave 2 never
        v0, r0 = board.clock.vt, time.ticks_ms()
        st = await m.transact(slave, b"\x04\x00\x00\x00\x02", 2000)
        out.append([NAMES[st], board.clock.vt - v0, time.ticks_diff(time.ticks_ms(), r0)])
    print(json.dumps(out))

asyncio.run(main())
"""


@pytest.mark.parametrize("kind", ["tcp", "rtu"])
def test_a_slow_meter_takes_its_real_delay_and_a_dead_ones_timeout_virtual_time(
        mp, peers, kind, monkeypatch):
    # A meter answering 100 ms after the request (real time) takes ~100 ms of node time:
    # not 0, not its 2 s timeout; a meter that never answers times out at 2 s of node
    # time after about the reply window (500 ms) of real time.
    def answer(req):
        if kind == "rtu":
            if req[0] != 1:
                return None
            return [(0.1, _rtu_answer(1, req[1], f32(GOOD)))]
        if req[6] != 1:
            return None
        return [(0.1, _tcp_answer(req, 1, req[7], f32(GOOD)))]

    if kind == "rtu":
        line = peers(PtyLine())
        peers(RawRTU(line, answer))
        monkeypatch.setenv("HEATGW_RS485", line.node_path)
        port = 0
    else:
        port = peers(RawTCP(answer)).port
    (out,) = mp.run_json(f"KIND = {kind!r}\nPORT = {port}\n" + VTIME)
    for st, vt_ms, real_ms in out[:2]:
        assert st == "ok" and 95 <= vt_ms <= real_ms + 5 and vt_ms < 2000, out
    st, vt_ms, real_ms = out[2]
    assert st == "timeout" and 2000 <= vt_ms <= 2050, out
    assert real_ms < 500 + 1000 and real_ms * 2 < vt_ms, out


MODULES = """
await asyncio.sleep_ms(15_000)
out(mods=sorted(n for n in sys.modules
               if n.startswith(("heatgw.mb", "heatgw.modbus", "mb", "umodbus", "sdm"))),
    polls=sum(m.polls for m in mb.meters.values()) if mb else 0)
"""


@pytest.mark.parametrize("kinds", [(), ("tcp",), ("rtu",)])
def test_only_the_configured_transport_is_imported(tmp_path, peers, kinds):
    """No modbus section: nothing of it; a TCP bus: mbtcp, never mbrtu; an RTU bus: mbrtu,
    never mbtcp. The planning code, the schema, lib/sdm and umodbus are gone after boot."""
    buses, env = {}, {}
    for kind in kinds:
        bus, e = _bus(kind, peers, [sdm630(1, 1.0, 2.0)])
        buses[kind] = bus
        env.update(e)
    modbus = {"buses": buses, "meters": {
        k: {"bus": k, "slave": 1, "model": "sdm630"} for k in kinds}} if kinds else None
    got, end = run_node(tmp_path, base_config(modbus), MODULES, env)[:2]
    check_healthy(end)
    want = {(): [], ("tcp",): ["heatgw.modbus", "mbcore", "mbtcp"],
            ("rtu",): ["heatgw.modbus", "mbcore", "mbrtu"]}[kinds]
    assert got["mods"] == want
    assert got["polls"] == (2 if kinds else 0), got
