"""The node driver shared by the tests that run the whole node against real peers.

The real micropython binary runs the whole node (heatgw.start.build: sampler, control,
supervisor, persist, mqtt, net) on the host board standalone, asyncio on virtual time with
real sockets (boards/host/vasyncio.py). A driver around it runs BODY (indented code inside
`async def main()`, after the node's tasks were created), counts the watchdog feeds (the
largest virtual gap between two) and prints one `R {...}` line at the end: the node's `mqtt`
record, its status, the event kinds it logged. `out(**kw)` prints an `R` line from BODY;
`sys.stdin.readline()` in BODY holds virtual time until the test calls `Node.go()`.

    node = Node(tmp_path, config(broker.port), "await asyncio.sleep_ms(60_000)")
    r = node.result()             # the last R line; the process must exit 0
    check_healthy(r)              # lateness, no crash, watchdog fed, the record's keys

Commands are signed here (host_tools.command, CPython's hmac) with `signed()`; `command()`
in BODY publishes one through the node's own client to its `.../cmd` topic, so it travels
through the broker like any other at a known virtual time. Listener is a broken broker
(black hole or reset), SlowProxy a slow one (a real broker behind a delaying proxy).
`files={"ca.der": der}` puts files on the node's flash before it boots; `go(line)` hands
BODY's `sys.stdin.readline()` a line (the test's answer, e.g. how many commands it sent).
"""

import json
import queue
import socket
import subprocess
import textwrap
import threading
import time
from pathlib import Path

from host_tools import command as signer
from host_tools.mprun import mp_env
from host_tools.paths import REPO, micropython_cmd
from tests.payload_schemas import validate

NODE = "heatgw-sim"
BASE = "heatgw/s1/" + NODE
KEY = bytes(range(32))
MQTT_KEYS = ["acked", "dropped", "first_seq", "last_seq", "published", "queued_max",
             "reconnects", "retransmitted", "worst_tick_late_ms"]
# the record's two more: the network side's longest real stretch (heatgw.clock.took), which
# the summary reports as net_worst_real_ms / net_worst_where, outside its mqtt block
NET_KEYS = ["worst_net_real_us", "worst_net_where"]
NET_WHERE = ("dns", "connect", "tls", "send", "rx", "close", "loop", "net", "udp")
LATE_MAX_MS = 50

DRIVER = r"""
import board, json, sys
clk = board.clock
d = board.data_dir()
with open(d + "/config.json", "w") as f:
    f.write(CFG)
if SECRETS is not None:
    with open(d + "/secrets.json", "w") as f:
        f.write(SECRETS)
for name in FILES:  # e.g. a CA certificate for mqtt.tls.ca_file
    with open(d + "/" + name, "wb") as f:
        f.write(FILES[name])
feeds = [0, 0, 0]  # feeds, vt of the last, largest vt gap between two
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
tel = getattr(gw, "telemetry", None)
KINDS = []
gw.add_sink(lambda k, r: KINDS.append(r.get("kind")) if k == "event" else None)


def out(**kw):
    print("R", json.dumps(kw))


async def up(ms=600_000):
    t = clk.vt
    while tel.client is None or tel.client.state != "up":
        if clk.vt - t > ms:
            raise RuntimeError("not connected")
        await asyncio.sleep_ms(100)


async def command(payload, ms=60_000):
    # through the broker: our client publishes it to our own cmd topic
    await up()
    n = sum(tel.cmd_counts.values())
    while tel.client.publish(tel.t_cmd, payload) is None:  # its one slot is busy
        await asyncio.sleep_ms(20)
    t = clk.vt
    while sum(tel.cmd_counts.values()) == n:
        if clk.vt - t > ms:
            raise RuntimeError("command not handled")
        await asyncio.sleep_ms(100)


async def main():
    asyncio.create_task(gw.run(asyncio))
BODY
    gw.shutdown()
    st = gw.status()
    out(end=tel.record(), feeds=feeds, kinds=KINDS, fault=gw.fault, unsent=tel.q.unsent(),
        next_seq=tel.q.next_seq, counts=tel.cmd_counts, active=list(gw.failsafe.active),
        late=st["worst_tick_late_ms"], relay=gw.relay_reuse, vt=clk.vt,
        energy=gw.meter.totals()["energy_nj"], time_ms=gw.meter.totals()["time_ms"])
asyncio.run(main())
"""


NO_SSL = ("this micropython binary has no ssl module (built without mbedTLS, like the "
          "32-bit test builds): TLS cannot be tested on it")
_ssl = []


def has_ssl():
    """True when the micropython binary has the ssl module (asked once)."""
    if not _ssl:
        out = subprocess.run([*micropython_cmd(), "-c", "import ssl; print(ssl.SSLContext)"],
                             capture_output=True, text=True)
        _ssl.append(out.returncode == 0)
    return _ssl[0]


def config(port, **mqtt):
    cfg = json.loads((REPO / "scenarios" / "default_config.json").read_text())
    m = {"host": "127.0.0.1", "port": port, "keepalive_s": 30, "site": "s1"}
    m.update(mqtt)
    cfg["mqtt"] = m
    cfg["telemetry"] = {"interval_s": 10}
    return cfg


class Node:
    """The node driver in a micropython process; lines on a queue, stdin for WAIT."""

    def __init__(self, tmp_path, cfg, body, secrets=True, flash=None, heapsize=None,
                 env=None, files=None):
        sec = json.dumps({"version": 1, "command_key": KEY.hex()}) if secrets is True \
            else secrets
        code = f"CFG = {json.dumps(cfg)!r}\nSECRETS = {sec!r}\nFILES = {dict(files or {})!r}\n"
        body = textwrap.indent(textwrap.dedent(body.strip("\n")), "    ")
        code += DRIVER.replace("BODY", body)
        self.path = Path(tmp_path) / f"driver_{time.monotonic_ns()}.py"
        self.path.write_text(code)
        e = mp_env()
        e["HEATGW_FLASH"] = str(flash or Path(tmp_path) / "flash.bin")
        e.update(env or {})
        cmd = micropython_cmd()
        if heapsize:
            cmd += ["-X", f"heapsize={heapsize}"]
        self.proc = subprocess.Popen([*cmd, str(self.path)], cwd=REPO, env=e,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        self.lines = queue.Queue()
        self.all = []
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self):
        for ln in self.proc.stdout:
            self.all.append(ln)
            self.lines.put(ln)
        self.lines.put(None)

    def wait_for(self, text, timeout=60):
        while True:
            ln = self.lines.get(timeout=timeout)
            if ln is None:
                tail = "".join(self.all[-40:])
                raise AssertionError(f"node ended before {text!r}:\n{tail}\n"
                                     f"{self.proc.stderr.read()[-3000:]}")
            if ln.startswith(text):
                return ln

    def diagnosis(self, broker=None):
        """What the node printed and the broker logged last: the message of a failed
        assertion, so a failure seen once in CI can be explained."""
        text = "node console:\n" + "".join(self.all[-60:])
        if broker is not None:
            text += "\nbroker log:\n" + broker.log_text()[-3000:]
        return text

    def go(self, line=""):
        """Let BODY's `sys.stdin.readline()` return `line`."""
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def result(self, timeout=120):
        ln = self.wait_for("R ", timeout)
        self.proc.wait(timeout)
        assert self.proc.returncode == 0, self.proc.stderr.read()[-3000:]
        return json.loads(ln[2:])


def messages(sub, quiet_s=0.5):
    """Every message the subscriber got until none came for quiet_s, each validated
    against its topic's JSON Schema (tests/payload_schemas.py: PayloadError if one is
    wrong or no schema covers its topic)."""
    got = []
    while True:
        try:
            m = sub.get(timeout=quiet_s)
        except queue.Empty:
            return got
        validate(m[0], m[1])
        got.append(m)


def records(msgs):
    """(seq, topic, doc) of the queue records (telemetry and events), in arrival order."""
    out = []
    for topic, payload, _retain, _dup, _qos in msgs:
        if topic in (BASE + "/telemetry", BASE + "/event"):
            doc = json.loads(payload)
            out.append((doc["seq"], topic.rsplit("/", 1)[1], doc))
    return out


def signed(ctr, cmd, args=None, key=KEY):
    return signer.sign(key, signer.body(NODE, f"c-{ctr}", ctr, cmd, args)).decode()


def check_healthy(r):
    e = r["end"]
    assert sorted(e) == sorted(MQTT_KEYS + NET_KEYS)  # the summary's mqtt block + net_worst
    # measured (real µs), never a limit here: the 50 ms goal is reported, not asserted
    assert e["worst_net_real_us"] > 0 and e["worst_net_where"] in NET_WHERE, e
    assert r["fault"] is None
    assert "crash" not in r["kinds"] and "task_failing" not in r["kinds"], r["kinds"]
    assert r["late"] == r["end"]["worst_tick_late_ms"] <= LATE_MAX_MS, r
    assert r["feeds"][0] > 0 and r["feeds"][2] <= 2_000, r["feeds"]  # never starved


class _LoopbackServer:
    """A TCP server on 127.0.0.1 in a thread: each accepted connection goes to _serve(c);
    close() closes the listener and every socket kept in self.socks."""

    def __init__(self):
        self.ls = socket.socket()
        self.ls.bind(("127.0.0.1", 0))
        self.ls.listen(16)
        self.port = self.ls.getsockname()[1]
        self.socks = []
        self.accepted = 0
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        while True:
            try:
                c, _ = self.ls.accept()
            except OSError:
                return
            self.accepted += 1
            self._serve(c)

    def close(self):
        self.ls.close()
        for s in self.socks:
            s.close()


class Listener(_LoopbackServer):
    """black_hole: accepts and never reads; reset: accepts, reads, closes with RST."""

    def __init__(self, mode):
        self.mode = mode
        super().__init__()

    def _serve(self, c):
        if self.mode == "reset":
            try:
                c.recv(100)
                c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
            except OSError:
                pass
            c.close()
        else:
            self.socks.append(c)


class SlowProxy(_LoopbackServer):
    """A slow broker: a TCP proxy in front of a real one (target_port) that delays every
    chunk, in each direction, by delay_s real. Latency, not bandwidth: each chunk leaves
    delay_s after it came, in order, never queued behind the delay of the one before."""

    def __init__(self, target_port, delay_s=0.2):
        self.target_port = target_port
        self.delay_s = delay_s
        self.chunks = 0  # forwarded, both directions
        super().__init__()

    def _serve(self, c):
        try:
            b = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
        except OSError:
            c.close()
            return
        b.settimeout(None)
        self.socks += [c, b]
        for src, dst in ((c, b), (b, c)):
            q = queue.Queue()
            threading.Thread(target=self._recv, args=(src, q), daemon=True).start()
            threading.Thread(target=self._send, args=(q, dst), daemon=True).start()

    def _recv(self, src, q):
        while True:
            try:
                data = src.recv(65536)
            except OSError:
                data = b""
            q.put((time.monotonic() + self.delay_s, data))
            if not data:
                return

    def _send(self, q, dst):
        while True:
            due, data = q.get()
            time.sleep(max(0.0, due - time.monotonic()))
            try:
                if not data:  # the other side closed: pass it on, late too
                    dst.shutdown(socket.SHUT_WR)
                    return
                dst.sendall(data)
            except OSError:
                return
            self.chunks += 1
