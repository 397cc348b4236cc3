"""Real sockets in virtual time (boards/host/vasyncio.py; README, host board).

The node runs asyncio on the host board's virtual clock; its peers here are CPython
servers on 127.0.0.1 that answer in real time: slow (100 ms), dead (accept, never
answer), resetting (RST), trickling and flooding. A healthy peer's answer takes about
its real delay in virtual time (not 0, not the timeout); a dead peer's timeout fires in
virtual time while little real time passes; an idle open socket costs no real time.

Real time is measured by the node itself (time.ticks_ms, which the board leaves real);
assertions compare it with virtual time (ratios), they never limit how long a test runs.
"""

import json
import socket
import threading
import time

import pytest

from host_tools.harness import run_scenario

REPLY_MS = 500  # vasyncio.REPLY_MS
GRACE_MS = 10  # vasyncio.GRACE_MS


class Peer:
    """A TCP server on 127.0.0.1 in a thread: `mode` decides how it treats what comes."""

    def __init__(self, mode, delay_s=0.1):
        self.mode = mode
        self.delay_s = delay_s
        self.ls = socket.socket()
        self.ls.bind(("127.0.0.1", 0))
        self.ls.listen(8)
        self.port = self.ls.getsockname()[1]
        self.conns = []
        self.stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.stop.is_set():
            try:
                c, _ = self.ls.accept()
            except OSError:
                return
            self.conns.append(c)
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        try:
            if self.mode == "rst":  # linger 0: close sends RST
                c.recv(100)
                c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
                c.close()
                return
            if self.mode == "dead":  # accepts, reads nothing, answers nothing
                self.stop.wait()
                return
            if self.mode in ("trickle", "flood"):
                c.recv(100)
                while not self.stop.is_set():
                    c.sendall(b"x" if self.mode == "trickle" else b"y" * 4096)
                    if self.mode == "trickle":  # a byte every 3 ms: inside the grace
                        time.sleep(0.003)
                return
            if self.mode == "pipelined":  # two requests: the first answered at once
                d = b""
                while d.count(b"\n") < 2:
                    d += c.recv(100)
                first, second = d.split(b"\n")[:2]
                c.sendall(first + b"\n")
                time.sleep(self.delay_s)  # the second after delay_s (> the grace)
                c.sendall(second + b"\n")
                self.stop.wait()
                return
            while True:  # echo after delay_s
                d = c.recv(100)
                if not d:
                    return
                time.sleep(self.delay_s)
                c.sendall(d)
        except OSError:
            pass

    def close(self):
        self.stop.set()
        self.ls.close()
        for c in self.conns:
            try:
                c.close()
            except OSError:
                pass


@pytest.fixture
def peer():
    made = []

    def make(mode, **kw):
        made.append(Peer(mode, **kw))
        return made[-1]

    yield make
    for p in made:
        p.close()


# The node side: the host board's asyncio, a 1 s ticker standing in for the control
# task, and one probe coroutine that prints JSON lines.
NODE = """
import json, time, board
asyncio = board.install_asyncio()
clk = board.clock
PORT = %d

def now():
    return clk.vt, time.ticks_ms()

def since(t):
    return {"vt_ms": clk.vt - t[0], "real_ms": time.ticks_diff(time.ticks_ms(), t[1])}

async def ticker():
    while True:
        await asyncio.sleep_ms(1000)

async def main():
    asyncio.create_task(ticker())
    r, w = await asyncio.open_connection("127.0.0.1", PORT)
%s
asyncio.run(main())
"""


def _node(mp, port, body):
    body = "\n".join("    " + ln for ln in body.strip("\n").splitlines())
    return mp.run_json(NODE % (port, body))


def test_a_slow_peer_takes_its_real_delay_in_virtual_time(mp, peer):
    p = peer("echo", delay_s=0.1)
    out = _node(mp, p.port, """
for i in range(3):
    t = now()
    w.write(b"ping%d\\n" % i)
    await w.drain()
    line = await asyncio.wait_for_ms(r.readline(), 2000)
    d = since(t)
    d["line"] = line
    print(json.dumps(d))
""")
    assert [o["line"] for o in out] == ["ping0\n", "ping1\n", "ping2\n"]
    for o in out:
        # about the real round trip (the peer sleeps 100 ms): never 0, never the
        # 2 s timeout, never more than the real time that passed
        assert 95 <= o["vt_ms"] <= o["real_ms"] + 2, o
        assert o["vt_ms"] < 2000


def test_b_dead_peer_times_out_in_virtual_time(mp, peer):
    p = peer("dead")
    (o,) = _node(mp, p.port, """
t = now()
w.write(b"hello\\n")
await w.drain()
try:
    await asyncio.wait_for_ms(r.readline(), 30_000)
    d = {"timeout": False}
except asyncio.TimeoutError:
    d = since(t)
    d["timeout"] = True
print(json.dumps(d))
""")
    assert o["timeout"]
    assert 30_000 <= o["vt_ms"] <= 30_000 + 50, o  # the timeout fired on (virtual) time
    # ... after about the reply window in real time, not 30 s
    assert o["real_ms"] < REPLY_MS + 2_000, o
    assert o["real_ms"] * 10 < o["vt_ms"], o


def test_c_idle_open_socket_costs_no_real_time(mp, peer):
    p = peer("echo", delay_s=0.0)
    (o,) = _node(mp, p.port, """
w.write(b"x\\n")
await w.drain()
await r.readline()
reader = asyncio.create_task(r.readline())  # an open socket, waited on, silent
t = now()
await asyncio.sleep_ms(600_000)
d = since(t)
d["reader_done"] = reader.done()
print(json.dumps(d))
""")
    assert o["vt_ms"] == 600_000
    assert not o["reader_done"]
    # ten virtual minutes: at most one grace window of real time plus the 600 ticks
    assert o["real_ms"] * 100 < o["vt_ms"], o


def test_d_resetting_peer_is_an_oserror_at_once(mp, peer):
    p = peer("rst")
    (o,) = _node(mp, p.port, """
t = now()
w.write(b"hello\\n")
await w.drain()
try:
    got = await asyncio.wait_for_ms(r.read(100), 30_000)
    d = {"error": None, "got": str(got)}
except OSError as e:
    d = {"error": e.errno}
except asyncio.TimeoutError:
    d = {"error": "timeout"}
d.update(since(t))
print(json.dumps(d))
""")
    assert o["error"] == 104, o  # ECONNRESET, delivered ...
    assert o["vt_ms"] <= o["real_ms"] + 2 and o["vt_ms"] < 1_000, o  # ... at once


@pytest.mark.parametrize("hook", [True, False])
def test_pipelined_requests_wait_for_every_awaited_reply(mp, peer, hook):
    # Two requests sent at once; the first reply comes at once, the second 100 ms later,
    # longer than the grace after data. A client that says what it awaits
    # (board.awaits_replies, as heatgw.mqtt does) gets it in about 100 ms virtual;
    # without that, the grace after the first reply ends the window and virtual time
    # jumps to the timeout (what the hook is for: MQTT's SUBACKs before a PUBACK).
    p = peer("pipelined", delay_s=0.1)
    (o,) = _node(mp, p.port, "HOOK = " + repr(hook) + """
due = [0]
if HOOK:
    board.awaits_replies(lambda: due[0] > 0)
t = now()
w.write(b"a\\nb\\n")
due[0] = 2
await w.drain()
got = []
try:
    while due[0]:
        got.append(await asyncio.wait_for_ms(r.readline(), 30_000))
        due[0] -= 1
except asyncio.TimeoutError:
    got.append("timeout")
d = since(t)
d["got"] = got
print(json.dumps(d))
""")
    if hook:
        assert o["got"] == ["a\n", "b\n"], o
        assert 95 <= o["vt_ms"] <= o["real_ms"] + 2, o  # its real delay, not the timeout
    else:
        assert o["got"] == ["a\n", "timeout"], o
        assert o["vt_ms"] >= 30_000, o


@pytest.mark.parametrize("mode", ["trickle", "flood"])
def test_a_peer_that_never_stops_sending_does_not_freeze_virtual_time(mp, peer, mode):
    p = peer(mode)
    (o,) = _node(mp, p.port, """
async def drink():
    n = 0
    while True:
        n += len(await r.read(4096))

t = now()
w.write(b"go\\n")
await w.drain()
try:
    await asyncio.wait_for_ms(drink(), 1_000)
except asyncio.TimeoutError:
    pass
print(json.dumps(since(t)))
""")
    # the timeout fired: virtual time ran at real time (never slower) while data came
    assert 1_000 <= o["vt_ms"] <= 1_050, o
    assert o["real_ms"] >= 0.9 * o["vt_ms"], o


def test_without_sockets_time_is_virtual_only(mp):
    out = mp.run_json("""
import json, time, board
asyncio = board.install_asyncio()
async def main():
    t = board.clock.vt, time.ticks_ms()
    await asyncio.sleep_ms(3_600_000)
    print(json.dumps([board.clock.vt - t[0], time.ticks_diff(time.ticks_ms(), t[1])]))
asyncio.run(main())
""")
    vt_ms, real_ms = out[0]
    assert vt_ms == 3_600_000 and real_ms * 1000 < vt_ms


# -- under the harness: the lockstep link asks for time as the windows allow --------------

MAIN = """
import json, os, time, board
asyncio = board.install_asyncio()
clk = board.clock
board.observer("event", {"kind": "boot"})

async def ticker():
    while True:
        await asyncio.sleep_ms(1000)

async def probe(port, delay_s, timeout_ms):
    t = clk.vt, time.ticks_ms()
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(b"ping\\n")
    await w.drain()
    try:
        line = await asyncio.wait_for_ms(r.readline(), timeout_ms)
    except asyncio.TimeoutError:
        line = None
    w.close()
    board.observer("event", {"kind": "vsock", "line": line, "vt_ms": clk.vt - t[0],
                             "real_ms": time.ticks_diff(time.ticks_ms(), t[1])})

async def main():
    asyncio.create_task(ticker())
    await asyncio.sleep_ms(7_300)  # mid plant step: the horizon is ahead
    await probe(int(os.getenv("VSOCK_ECHO")), 0.1, 2_000)
    await probe(int(os.getenv("VSOCK_DEAD")), 0, 30_000)
    await asyncio.sleep_ms(600_000)

asyncio.run(main())
"""


def test_under_the_harness(tmp_path, peer, monkeypatch):
    echo = peer("echo", delay_s=0.1)
    dead = peer("dead")
    monkeypatch.setenv("VSOCK_ECHO", str(echo.port))
    monkeypatch.setenv("VSOCK_DEAD", str(dead.port))
    stand_ins = tmp_path / "stand_ins"
    stand_ins.mkdir()
    (stand_ins / "main.py").write_text(MAIN)
    sc = tmp_path / "sc.json"
    sc.write_text(json.dumps({"name": "vsock", "duration_s": 900, "load_kw": 100,
                              "demand_kw": 100}))
    _, h = run_scenario(sc, workdir=tmp_path / "w", module_dirs=[stand_ins])
    got = [e for e in h.node_events if e.get("kind") == "vsock"]
    assert len(got) == 2, h.node_events
    ok, timed_out = got
    assert ok["line"] == "ping\n"
    assert 95 <= ok["vt_ms"] <= ok["real_ms"] + 2, ok
    assert timed_out["line"] is None
    assert 30_000 <= timed_out["vt_ms"] <= 30_050, timed_out
    assert timed_out["real_ms"] * 10 < timed_out["vt_ms"], timed_out


def test_the_reply_window_is_configurable(mp, peer, monkeypatch):
    # A reply window shorter than the peer's 100 ms: the peer looks dead (that is what
    # the window decides), and time jumps to the 2 s timeout.
    monkeypatch.setenv("HEATGW_IO_REPLY_MS", "30")
    p = peer("echo", delay_s=0.1)
    (o,) = _node(mp, p.port, """
t = now()
w.write(b"ping\\n")
try:
    await asyncio.wait_for_ms(r.readline(), 2000)
    d = {"timeout": False}
except asyncio.TimeoutError:
    d = {"timeout": True}
d.update(since(t))
print(json.dumps(d))
""")
    assert o["timeout"] and o["vt_ms"] >= 2000, o
    monkeypatch.setenv("HEATGW_IO_REPLY_MS", "-1")
    with pytest.raises(mp.MicroPythonError) as e:
        _node(mp, p.port, "pass")
    assert "HEATGW_IO_REPLY_MS: -1 ms is not in 0..59999" in str(e.value)
