"""heatgw.mqtt on the real micropython binary (the unix port's own asyncio, real time)
against a real mosquitto (tests/brokers.py), with paho-mqtt as the upstream.

The node runs a small driver: it reads commands on stdin (`pub <topic> <payload> [qos]`,
`stats`, `stop`) and prints one JSON line per event (up/down, ack, rx, stats). Real time is
bounded by short keepalives and backoffs; the waits below only guard against a hang.
"""

import ast
import json
import os
import queue
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

from host_tools.mprun import mp_env
from host_tools.paths import FIRMWARE, REPO, micropython_cmd
from tests.brokers import Broker, Subscriber, free_port, make_ca, require_mosquitto
from tests.nodedriver import NO_SSL, has_ssl

BASE = "heatgw/site1/node-1"

DRIVER = r"""
import sys, json, asyncio, time

class board:  # real time: heatgw.clock must tick with the unix port's own asyncio
    clock = time

sys.modules["board"] = board
from heatgw import mqtt, mqttsetup

def out(**d):
    print(json.dumps(d))

async def main():
    kw = KW
    if CA:
        kw["ssl"] = mqttsetup.tls_context(CA)
    c = mqtt.Client(cb=lambda t, m: out(rx=t.decode(), msg=bytes(m).decode()),
                    ack_cb=lambda p: out(ack=p),
                    event_cb=lambda w, d: out(ev=w, why=d), **kw)
    t = asyncio.create_task(c.run())
    r = asyncio.StreamReader(sys.stdin)
    while True:
        cmd = (await r.readline()).split()
        if not cmd or cmd[0] == b"stop":
            c.stop()
            await t
            out(stopped=c.stats())
            return
        if cmd[0] == b"pub":
            out(pub=c.publish(cmd[1], cmd[2], qos=int(cmd[3]) if len(cmd) > 3 else 1),
                inflight=c.inflight())
        elif cmd[0] == b"stats":
            out(stats=c.stats())

asyncio.run(main())
"""


class Node:
    """The client in a micropython process; events arrive on a queue."""

    def __init__(self, ca=None, **kw):
        kw.setdefault("client_id", "node-1")
        kw.setdefault("host", "127.0.0.1")
        kw.setdefault("will_topic", BASE + "/status")
        kw.setdefault("backoff_min_ms", 50)
        kw.setdefault("backoff_max_ms", 400)
        kw.setdefault("timeout_ms", 2000)
        code = f"KW = {kw!r}\nCA = {ca!r}\n" + DRIVER
        fd, path = tempfile.mkstemp(suffix=".py", prefix="mqtt_driver_")
        os.write(fd, code.encode())
        os.close(fd)
        self.path = Path(path)
        self.proc = subprocess.Popen([*micropython_cmd(), str(self.path)], cwd=REPO,
                                     env=mp_env(), stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.events = queue.Queue()
        self.seen = []
        self.pending = []
        self.err = []
        threading.Thread(target=self._pump, daemon=True).start()
        threading.Thread(target=lambda: self.err.extend(self.proc.stderr), daemon=True).start()

    def _pump(self):
        for line in self.proc.stdout:
            try:
                self.events.put(json.loads(line))
            except ValueError:
                self.events.put({"raw": line.decode(errors="replace")})
        self.events.put({"exit": self.proc.wait()})

    def send(self, line):
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()

    def expect(self, pred, timeout=15):
        """The first event not yet taken for which pred is true."""
        for i, ev in enumerate(self.pending):
            if pred(ev):
                return self.pending.pop(i)
        deadline = time.monotonic() + timeout
        while True:
            try:
                ev = self.events.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no such event; seen {self.seen[-20:]}\n"
                                     + b"".join(self.err).decode()) from None
            self.seen.append(ev)
            if "raw" in ev:  # a line that is not an event: kept for the failure message
                continue
            if "exit" in ev:
                time.sleep(0.1)
                raise AssertionError(f"node died: {ev} {b''.join(self.err).decode()}")
            if pred(ev):
                return ev
            self.pending.append(ev)

    def pub(self, topic, payload, qos=1):
        self.send(f"pub {topic} {payload} {qos}")
        return self.expect(lambda e: "pub" in e)["pub"]

    def stats(self):
        self.send("stats")
        return self.expect(lambda e: "stats" in e)["stats"]

    def stop(self):
        if self.proc.poll() is None:
            self.send("stop")
            st = self.expect(lambda e: "stopped" in e)["stopped"]
            self.proc.wait(10)
            return st
        return None

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.path.unlink(missing_ok=True)


@pytest.fixture
def node():
    made = []

    def make(**kw):
        n = Node(**kw)
        made.append(n)
        return n
    yield make
    for n in made:
        n.close()


@pytest.fixture
def broker(tmp_path):
    with Broker(tmp_path / "broker") as b:
        yield b


def up(e):
    return e.get("ev") == "up"


def down(e):
    return e.get("ev") == "down"


needs_ssl = pytest.mark.skipif(not has_ssl(), reason=NO_SSL)


def test_connect_publish_qos1_acked(broker, node):
    sub = Subscriber(broker, [BASE + "/#"])
    n = node(port=broker.port, inflight=8)
    n.expect(up)
    assert sub.drain(lambda m: m[0] == BASE + "/status")[-1][1] == b"online"
    late = Subscriber(broker, [BASE + "/status"], client_id="late")
    assert late.get()[1:3] == (b"online", True)  # retained
    late.close()
    pids = [n.pub(BASE + "/telemetry", f"m{i}") for i in range(5)]
    assert all(1 <= p <= 65535 for p in pids) and len(set(pids)) == 5
    acked = {n.expect(lambda e: "ack" in e)["ack"] for _ in pids}
    assert acked == set(pids)
    got = [sub.get() for _ in pids]
    assert [m[1] for m in got] == [f"m{i}".encode() for i in range(5)]  # in order
    assert all(m[4] == 1 for m in got)
    st = n.stop()
    assert (st["published"], st["acked"], st["retransmitted"], st["reconnects"],
            st["timeouts"], st["inflight"]) == (5, 5, 0, 0, 0, 0)
    # a clean stop says offline itself (DISCONNECT suppresses the will)
    assert sub.drain(lambda m: m[0] == BASE + "/status")[-1][1] == b"offline"
    sub.close()


def test_keepalive_pings_hold_a_quiet_connection(broker, node):
    sub = Subscriber(broker, [BASE + "/status"])
    n = node(port=broker.port, keepalive_s=1)
    n.expect(up)
    time.sleep(2.6)  # quiet for more than 1.5 x keepalive (the broker drops us at 1.5 s)
    st = n.stats()
    assert st["state"] == "up" and st["reconnects"] == 0 and st["failures"] == 0, st
    assert st["pings"] >= 3, st  # at half the keepalive
    statuses = []
    while not sub.messages.empty():
        statuses.append(sub.get()[1])
    assert b"offline" not in statuses
    assert "exceeded timeout" not in broker.log_text()
    n.stop()
    sub.close()


def test_broker_killed_mid_stream_retransmits_with_dup(broker, node):
    # a persistent upstream whose session is in the broker's store before the crash
    sub = Subscriber(broker, [BASE + "/telemetry"], client_id="upstream-p",
                     clean_session=False)
    broker.save()
    n = node(port=broker.port, clean_session=False, inflight=8)
    n.expect(up)
    for i in range(3):
        n.pub(BASE + "/telemetry", f"a{i}")
        n.expect(lambda e: "ack" in e)
    broker.pause()  # TCP still takes the bytes; nothing is acknowledged
    pending = [n.pub(BASE + "/telemetry", f"b{i}") for i in range(4)]
    time.sleep(0.2)
    assert n.stats()["inflight"] == 4
    broker.kill()
    n.expect(down)
    broker.start()  # same port, from the saved store
    n.expect(up)
    acked = {n.expect(lambda e: "ack" in e)["ack"] for _ in pending}
    assert acked == set(pending)
    payloads = set()
    while len(payloads) < 7:
        payloads.add(sub.get()[1])
    assert payloads == {f"a{i}".encode() for i in range(3)} | {f"b{i}".encode()
                                                              for i in range(4)}
    st = n.stop()
    assert st["retransmitted"] == 4 and st["reconnects"] == 1 and st["acked"] == 7, st
    sub.close()


def _fake_broker_session(conn, log, ack):
    """Answer CONNECT; record every PUBLISH (dup flag, packet id, payload)."""
    def readn(n):
        b = b""
        while len(b) < n:
            k = conn.recv(n - len(b))
            if not k:
                raise EOFError
            b += k
        return b
    while True:
        h = readn(1)[0]
        n, sh = 0, 0
        while True:
            b = readn(1)[0]
            n |= (b & 0x7F) << sh
            sh += 7
            if not b & 0x80:
                break
        body = readn(n)
        if h == 0x10:
            conn.sendall(b"\x20\x02\x00\x00")
        elif h & 0xF0 == 0x30:
            tl = body[0] << 8 | body[1]
            pid = body[2 + tl] << 8 | body[3 + tl]
            log.append((bool(h & 0x08), pid, body[4 + tl:]))
            if ack:
                conn.sendall(bytes([0x40, 2, pid >> 8, pid & 0xFF]))


def test_retransmission_sets_dup_and_keeps_the_packet_id(node):
    """A scripted broker that never acknowledges, then drops the connection: the next
    connection gets the same packet ids with DUP set (the wire, byte by byte)."""
    srv = socket.create_server(("127.0.0.1", 0))
    port = srv.getsockname()[1]
    log = []

    def serve():
        for ack in (False, True):
            conn, _ = srv.accept()
            try:
                conn.settimeout(1.0 if not ack else 10)
                _fake_broker_session(conn, log, ack)
            except (EOFError, OSError):
                pass
            finally:
                conn.close()
    th = threading.Thread(target=serve, daemon=True)
    th.start()
    n = node(port=port, will_topic=None)
    n.expect(up)
    pids = [n.pub("t/x", f"p{i}") for i in range(2)]
    n.expect(down)  # the scripted broker hangs up after 1 s without PUBACK
    n.expect(up)
    assert {n.expect(lambda e: "ack" in e)["ack"] for _ in pids} == set(pids)
    first, again = log[:2], log[2:]
    assert first == [(False, pids[0], b"p0"), (False, pids[1], b"p1")]
    assert again == [(True, pids[0], b"p0"), (True, pids[1], b"p1")]
    st = n.stop()
    assert st["retransmitted"] == 2 and st["acked"] == 2
    srv.close()


def test_broker_down_at_boot_is_normal(tmp_path, node):
    require_mosquitto()
    port = free_port()
    n = node(port=port, backoff_min_ms=50, backoff_max_ms=200)
    for _ in range(3):
        assert n.expect(down)["why"] == "connection refused"
    pid = n.pub(BASE + "/telemetry", "early")  # queued while down
    assert pid and n.stats()["state"] != "up"
    with Broker(tmp_path / "late", port=port) as b:
        sub = Subscriber(b, [BASE + "/telemetry"])
        n.expect(up)
        assert n.expect(lambda e: "ack" in e)["ack"] == pid
        assert sub.get()[1] == b"early"
        st = n.stop()
        assert st["failures"] >= 3 and st["reconnects"] == 0 and st["connects"] == 1, st
        sub.close()


def test_backoff_is_capped_exponential_with_jitter(mp):
    out = mp.run_json("""
import json
from heatgw.mqtt import Client
c = Client("n", "h", backoff_min_ms=100, backoff_max_ms=1600)
print(json.dumps([[c.backoff_ms(k) for k in range(1, 9)] for _ in range(20)]))
d = Client("other", "h", backoff_min_ms=100, backoff_max_ms=1600)
print(json.dumps([d.backoff_ms(1) for _ in range(20)]))
""")
    runs, other = out
    cap = [min(100 * 2 ** (k - 1), 1600) for k in range(1, 9)]
    for r in runs:
        assert all(c // 2 <= d <= c for d, c in zip(r, cap, strict=True)), r
    for k in (0, 7):  # jittered over the whole upper half, not in step
        assert len({r[k] for r in runs}) > 10, [r[k] for r in runs]
    assert other != [r[0] for r in runs]  # another node, another sequence


def test_wrong_password_is_a_clear_error_and_no_crash(tmp_path, node):
    with Broker(tmp_path / "auth", users={"node": "right"}) as b:
        n = node(port=b.port, username="node", password="wrong")
        for _ in range(2):
            why = n.expect(down)["why"]
            assert why.startswith("broker refused: ") and ("password" in why
                                                          or "authorised" in why), why
        assert "wrong" not in json.dumps(n.seen)  # the password is never printed
        st = n.stop()
        assert st["connects"] == 0 and st["failures"] >= 2
        ok = node(port=b.port, username="node", password="right")
        ok.expect(up)
        ok.stop()


@needs_ssl
def test_tls_verified_connection(tmp_path, node):
    with Broker(tmp_path / "tls", tls=True) as b:
        sub = Subscriber(b, [BASE + "/telemetry"])
        n = node(port=b.tls_port, ca=b.ca_der_path, server_hostname="localhost")
        n.expect(up)
        pid = n.pub(BASE + "/telemetry", "sealed")
        assert n.expect(lambda e: "ack" in e)["ack"] == pid
        assert sub.get()[1] == b"sealed"
        sub.close()
        assert n.stop()["acked"] == 1


@needs_ssl
def test_tls_wrong_ca_is_a_clear_error(tmp_path, node):
    from cryptography.hazmat.primitives import serialization
    _, other = make_ca("not the broker's CA")
    wrong = tmp_path / "wrong-ca.der"
    wrong.write_bytes(other.public_bytes(serialization.Encoding.DER))
    with Broker(tmp_path / "tls", tls=True) as b:
        n = node(port=b.tls_port, ca=str(wrong), server_hostname="localhost")
        for _ in range(2):
            why = n.expect(down)["why"]
            assert why.startswith("TLS: server certificate not verified"), why
        st = n.stop()
        assert st["connects"] == 0


def test_incoming_commands_reach_the_callback(broker, node):
    import paho.mqtt.publish as publish
    # the receive buffer is max_in (max_packet, 1024 by default, bounds what is sent)
    n = node(port=broker.port, subs=[BASE + "/cmd", "homeassistant/status"], max_in=256)
    n.expect(up)
    time.sleep(0.2)  # SUBACK
    for qos, payload in ((1, "c1"), (0, "c0")):
        publish.single(BASE + "/cmd", payload, qos=qos, hostname="127.0.0.1",
                       port=broker.port)
        ev = n.expect(lambda e: "rx" in e)
        assert (ev["rx"], ev["msg"]) == (BASE + "/cmd", payload)
    publish.single(BASE + "/cmd", "x" * 1000, qos=1, hostname="127.0.0.1", port=broker.port)
    publish.single("homeassistant/status", "online", qos=1, hostname="127.0.0.1",
                   port=broker.port)
    ev = n.expect(lambda e: "rx" in e)  # the oversized one is skipped, the next arrives
    assert (ev["rx"], ev["msg"]) == ("homeassistant/status", "online")
    st = n.stop()
    assert st["received"] == 3 and st["rx_oversized"] == 1 and st["sub_failed"] == 0, st


def test_no_assert_in_the_client():
    tree = ast.parse((FIRMWARE / "heatgw" / "mqtt.py").read_text())
    assert not [n for n in ast.walk(tree) if isinstance(n, ast.Assert)]


def test_from_config_builds_topics_and_defaults(mp, tmp_path):
    ca = tmp_path / "ca.der"
    from cryptography.hazmat.primitives import serialization
    ca.write_bytes(make_ca()[1].public_bytes(serialization.Encoding.DER))
    out = mp.run_json("""
import json
from heatgw import mqtt, mqttsetup
from heatgw.schema import validate
from heatgw.config_schema import SCHEMA
for sec in (None, {"host": "10.0.0.2", "site": "s1"},
            {"host": "b", "site": "s1", "prefix": "acme/heat", "client_id": "gw",
             "username": "u", "ha_discovery_prefix": "homeassistant", "tls": TLS}):
    cfg, errs = validate({"version": 2, "node_id": "n7", "mqtt": sec}, SCHEMA)
    try:
        c = mqttsetup.from_config(cfg["mqtt"], cfg["node_id"], password="pw")
    except mqtt.MQTTError as e:
        print(json.dumps({"errs": errs, "error": str(e)}))
        continue
    print(json.dumps(None if c is None else {
        "errs": errs, "port": c.port, "id": c.client_id.decode(), "ka": c.keepalive_ms,
        "will": c.will_topic.decode(), "subs": [t.decode() for t in c.subs],
        "tls": c._tls is not None}))
""".replace("TLS", repr({"ca_file": str(ca)})))
    assert out[0] is None
    assert out[1] == {"errs": [], "port": 1883, "id": "n7", "ka": 60000,
                      "will": "heatgw/s1/n7/status", "subs": ["heatgw/s1/n7/cmd"],
                      "tls": False}
    if has_ssl():
        assert out[2] == {"errs": [], "port": 8883, "id": "gw", "ka": 60000,
                          "will": "acme/heat/s1/n7/status", "tls": True,
                          "subs": ["acme/heat/s1/n7/cmd", "homeassistant/status"]}
    else:
        assert out[2]["error"] == "TLS configured but this firmware has no ssl module"


def test_black_holed_broker_times_out_and_retries(node):
    """A listener that accepts TCP (the kernel does) and never answers: CONNACK's wait is
    bounded, the client backs off and tries again."""
    hole = socket.create_server(("127.0.0.1", 0), backlog=8)
    n = node(port=hole.getsockname()[1], timeout_ms=300)
    for _ in range(2):
        assert n.expect(down)["why"] == "timeout"
    st = n.stop()
    assert st["timeouts"] >= 2 and st["connects"] == 0, st
    hole.close()


def test_publish_refuses_clearly_and_changes_nothing(mp):
    out = mp.run_json("""
import json, asyncio
from heatgw import mqtt
c = mqtt.Client("n", "127.0.0.1", 1, inflight=2, max_packet=128)
r = {"qos0_down": c.publish(b"t", b"x", qos=0)}
try:
    c.publish(b"t", b"x" * 200)
except ValueError as e:
    r["big"] = str(e)
try:
    c.publish(b"t", b"x", qos=2)
except ValueError as e:
    r["qos2"] = str(e)
r["after_refusals"] = [c.inflight(), c.published]
r["pids"] = [c.publish(b"t", b"a"), c.publish(b"t", b"b"), c.publish(b"t", b"c")]
r["wait_full"] = asyncio.run(c.wait_slot(30))
c._acked(r["pids"][0])
r["wait_freed"] = asyncio.run(c.wait_slot(30))
r["end"] = [c.inflight(), c.published, c.acked]
print(json.dumps(r))
""")[0]
    assert out["qos0_down"] is None
    assert out["big"] == "packet of over 128 bytes does not fit its buffer"
    assert out["qos2"] == "qos must be 0 or 1"
    assert out["after_refusals"] == [0, 0]
    assert out["pids"][2] is None and out["pids"][0] != out["pids"][1]
    assert out["wait_full"] is False and out["wait_freed"] is True
    assert out["end"] == [1, 2, 1]


@pytest.mark.parametrize("answer,why", [
    (b"\x20\x03\x00\x00\x00", "protocol: expected CONNACK, got type 0x20"),
    (b"\x90\x03\x00\x01\x00", "protocol: expected CONNACK, got type 0x90"),
    (b"\x20\x02\x00\x00\x34\x05\x00\x01t\x00\x01", "protocol: incoming QoS 2 (we subscribe "
     "with QoS 1)"),
    (b"\x20\x02\x00\x00\xd0\x01\x00", "protocol: PINGRESP of 1 bytes"),
    (b"\x20\x02\x00\x00\x30\xff\xff\xff\xff\x01", "protocol: bad remaining length"),
    (b"\x20\x02\x00\x00\x30\x03\x00\x09t", "protocol: PUBLISH topic longer than the packet"),
])
def test_protocol_violations_are_clear_errors(node, answer, why):
    """A broker that breaks the protocol: a clear reason, the connection dropped, retried."""
    srv = socket.create_server(("127.0.0.1", 0))

    def serve():
        for _ in range(2):
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            conn.recv(1024)  # CONNECT
            conn.sendall(answer)
            time.sleep(0.5)
            conn.close()
    threading.Thread(target=serve, daemon=True).start()
    n = node(port=srv.getsockname()[1], will_topic=None)
    for _ in range(2):
        assert n.expect(down)["why"] == why
    n.stop()
    srv.close()


VASYNCIO = r"""
import sys, time, json
sys.path.insert(0, "boards/host")
from virtual_clock import VirtualClock
vc = VirtualClock(start_ms=(1 << 30) - 2000)  # the targets' ticks wrap during the run

class board:
    clock = vc

sys.modules["board"] = board
import vasyncio

def wait(dt):  # a stand-in for the board's wait: real time drives the virtual clock
    t0 = time.ticks_ms()
    time.sleep_ms(2 if dt < 0 or dt > 2 else dt)
    vc.advance(time.ticks_diff(time.ticks_ms(), t0))

asyncio = vasyncio.install(vc.ticks_ms, vc.ticks_diff, vc.ticks_add, wait)
from heatgw import mqtt

async def main():
    c = mqtt.Client("v", "127.0.0.1", PORT, keepalive_s=1, timeout_ms=2000, inflight=8)
    t = asyncio.create_task(c.run())
    while c.state != "up":
        await asyncio.sleep_ms(10)
    for i in range(5):
        c.publish(b"v/t", b"m%d" % i)
    await asyncio.sleep_ms(3000)
    c.stop()
    await t
    print(json.dumps({"stats": c.stats(), "t": vc.t,
                      "left": [m for m in sys.modules if "umqtt" in m or "mqttpack" in m]}))

asyncio.run(main())
"""


def test_runs_on_the_host_boards_virtual_asyncio(broker, mp):
    """Only the standard asyncio API: the client runs unchanged on boards/host/vasyncio
    (here with real time driving the virtual clock, across the targets' 2**30 ms wrap)."""
    out = mp.run_json(VASYNCIO.replace("PORT", str(broker.port)), timeout=60)[0]
    st = out["stats"]
    assert out["t"] < 10**6  # wrapped
    assert (st["published"], st["acked"], st["failures"], st["timeouts"]) == (5, 5, 0, 0), st
    assert st["pings"] >= 3, st
    assert out["left"] == []  # umqtt.simple encoded the CONNECT and was dropped again


PACK = r"""
import sys, json
from heatgw import mqtt
c = mqtt.Client("node-1", "h", keepalive_s=90, clean_session=False, username="u",
                password="pw", will_topic="s/n/status", subs=("s/n/cmd", "ha/status"))
before = set(sys.modules)
out = {}
try:
    from heatgw.mqttpack import encode

    rx = memoryview(bytearray(256))
    sub, end = encode(c, rx)
    out["connect"] = bytes(rx[:sub]).hex()
    out["subscribe"] = bytes(rx[sub:end]).hex()
except ImportError as e:
    out["import_error"] = str(e)
out["left"] = sorted(set(sys.modules) - before)
print(json.dumps(out))
"""


def _mqtt_str(s):
    return len(s).to_bytes(2, "big") + s.encode()


def test_connect_and_subscribe_are_encoded_by_umqtt_simple_and_dropped(mp):
    """CONNECT and SUBSCRIBE come from umqtt.simple (the pinned micropython-lib package),
    loaded for the encoding and dropped again: the bytes are MQTT 3.1.1 as encoded here
    independently, nothing of umqtt or heatgw.mqttpack stays in sys.modules, and without
    umqtt on the module path the connect fails at its import (no silent fallback)."""
    out = mp.run_json(PACK)[0]
    body = (_mqtt_str("MQTT") + bytes([4, 0xEC, 0, 90]) + _mqtt_str("node-1")
            + _mqtt_str("s/n/status") + _mqtt_str("offline") + _mqtt_str("u")
            + _mqtt_str("pw"))
    assert bytes.fromhex(out["connect"]) == bytes([0x10, len(body)]) + body
    subs = b""
    for pid, topic in ((1, "s/n/cmd"), (2, "ha/status")):
        pkt = pid.to_bytes(2, "big") + _mqtt_str(topic) + b"\x01"  # QoS 1
        subs += bytes([0x82, len(pkt)]) + pkt
    assert bytes.fromhex(out["subscribe"]) == subs
    assert out["left"] == []
    path = [p for p in mp_env()["MICROPYPATH"].split(":") if "umqtt" not in p]
    env = dict(mp_env(), MICROPYPATH=":".join(path))
    proc = subprocess.run([*micropython_cmd(), "-c", PACK], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    out = json.loads(proc.stdout.splitlines()[-1])
    assert "umqtt" in out["import_error"] and out["left"] == [], out
