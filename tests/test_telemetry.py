"""The node's telemetry (heatgw.telemetry) end to end: the real micropython binary runs the
whole node (heatgw.start.build: sampler, control, supervisor, persist, mqtt) on the host
board standalone, asyncio on virtual time with real sockets (boards/host/vasyncio.py),
against a real mosquitto (tests/brokers.py) and a paho-mqtt subscriber.

A driver around the node runs it for some virtual minutes, counts the watchdog feeds (the
largest virtual gap between two) and prints one `R {...}` line at the end: the node's
`mqtt` record, its status, the event kinds it logged. Commands are signed here
(host_tools.command, CPython's hmac) and published by the node's own client to its
`.../cmd` topic, so they travel through the broker like any other at a known virtual time.
"""

import json
import queue
import socket
import subprocess
import textwrap
import threading
import time
from pathlib import Path

import pytest

from host_tools import command as signer
from host_tools.mprun import mp_env
from host_tools.paths import REPO, micropython_cmd
from tests.brokers import Broker, Subscriber, free_port, require_mosquitto

NODE = "heatgw-sim"
BASE = "heatgw/s1/" + NODE
KEY = bytes(range(32))
MQTT_KEYS = ["acked", "dropped", "first_seq", "last_seq", "published", "queued_max",
             "reconnects", "retransmitted", "worst_tick_late_ms"]
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
                 env=None):
        sec = json.dumps({"version": 1, "command_key": KEY.hex()}) if secrets is True \
            else secrets
        code = f"CFG = {json.dumps(cfg)!r}\nSECRETS = {sec!r}\n"
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

    def go(self):
        self.proc.stdin.write("\n")
        self.proc.stdin.flush()

    def result(self, timeout=120):
        ln = self.wait_for("R ", timeout)
        self.proc.wait(timeout)
        assert self.proc.returncode == 0, self.proc.stderr.read()[-3000:]
        return json.loads(ln[2:])


def messages(sub, quiet_s=0.5):
    """Every message the subscriber got until none came for quiet_s."""
    got = []
    while True:
        try:
            got.append(sub.get(timeout=quiet_s))
        except queue.Empty:
            return got


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
    assert sorted(r["end"]) == MQTT_KEYS  # the harness summary's keys, exactly
    assert r["fault"] is None
    assert "crash" not in r["kinds"] and "task_failing" not in r["kinds"], r["kinds"]
    assert r["late"] == r["end"]["worst_tick_late_ms"] <= LATE_MAX_MS, r
    assert r["feeds"][0] > 0 and r["feeds"][2] <= 2_000, r["feeds"]  # never starved


@pytest.fixture
def broker(tmp_path):
    with Broker(tmp_path / "mosquitto") as b:
        yield b


def test_a_short_run_publishes_status_state_telemetry_events_with_contiguous_seq(
        tmp_path, broker):
    sub = Subscriber(broker, [BASE + "/#"])
    node = Node(tmp_path, config(broker.port), "    await asyncio.sleep_ms(180_000)")
    r = node.result()
    msgs = messages(sub)
    sub.close()
    check_healthy(r)
    by_topic = {}
    for m in msgs:
        by_topic.setdefault(m[0], []).append(m)
    assert by_topic[BASE + "/status"][0][1] == b"online"
    state = json.loads(by_topic[BASE + "/state"][0][1])
    assert state["fw"] and len(state["config_hash"]) == 8 and state["state"] == "bypass"
    assert all(m[2] is False for m in by_topic[BASE + "/state"])  # live, not from store
    recs = records(msgs)
    seqs = sorted(s for s, _, _ in recs)
    assert seqs == list(range(1, len(seqs) + 1))  # contiguous from the first record
    assert len(seqs) == len(set(seqs)) == r["next_seq"] - 1 == r["end"]["last_seq"]
    tele = [d for _, t, d in recs if t == "telemetry"]
    assert 17 <= len(tele) <= 19  # every 10 s for 3 virtual minutes
    for d in tele:
        assert d["v"] == 1 and "energy_wh" in d and "supply_why" in d
    kinds = [d["kind"] for _, t, d in recs if t == "event"]
    assert kinds[0] == "boot" and "trip" in kinds and "alarm" in kinds
    assert "net_up" in kinds  # heatgw.net: the host's network, reported up
    alarms = [m for m in msgs if "/alarm/" in m[0]]
    assert alarms and all(json.loads(m[1])["active"] for m in alarms if m[1])
    e = r["end"]
    assert e["first_seq"] == 1 and e["dropped"] == 0 and e["retransmitted"] == 0
    assert e["reconnects"] == 0 and e["published"] == e["acked"]
    assert r["unsent"] == 0  # every record acked: nothing left in the queue


def test_signed_commands_are_obeyed_through_the_inbox_and_forged_ones_refused(
        tmp_path, broker):
    sub = Subscriber(broker, [BASE + "/cmd/ack", BASE + "/event"])
    forged = signed(2, "maintenance", {"on": False}, key=bytes(32))
    cmds = [signed(1, "maintenance", {"on": True}), forged,
            signed(3, "resend", {"from_seq": 2, "to_seq": 4}),
            signed(4, "resend", {"from_seq": 0, "to_seq": 5000})]
    node = Node(tmp_path, config(broker.port), f"""
await command({cmds[0]!r})
before = gw.inputs.maintenance  # queued in the inbox: the control task applies it
await asyncio.sleep_ms(1_100)
out(before=before, relay=gw.relay_reuse, maint=gw.inputs.maintenance,
    active=list(gw.failsafe.active))
await command({cmds[1]!r})
await command({cmds[2]!r})
await command({cmds[3]!r})
await asyncio.sleep_ms(30_000)
""")
    after = json.loads(node.wait_for("R ")[2:])
    r = node.result()
    msgs = messages(sub)
    sub.close()
    check_healthy(r)
    assert after["before"] is not True and after["maint"] is True
    assert after["relay"] is False and "maintenance" in after["active"]
    acks = [json.loads(m[1]) for m in msgs if m[0] == BASE + "/cmd/ack"]
    assert acks[0] == {"id": "c-1", "ok": True}
    assert acks[1]["ok"] is False and acks[1]["error"].startswith("forged")
    assert acks[2]["ok"] is True and acks[2]["resend"] == [2, 4] and acks[2]["gone"] == []
    assert acks[3]["resend"][0] == 1 and acks[3]["gone"] == [[acks[3]["resend"][1] + 1, 5000]]
    assert r["counts"]["accepted"] == 3 and r["counts"]["forged"] == 1
    assert "maintenance" in r["active"]  # the fail-safe took it, from the inbox
    assert "request" in r["kinds"] and "command" in r["kinds"]
    evs = [json.loads(m[1]) for m in msgs if m[0] == BASE + "/event"]
    assert any(e["kind"] == "cmd_rejected" and "forged" in e["text"] for e in evs)
    assert any(e["kind"] == "request" and "source=mqtt" in e["text"] for e in evs)
    resent = sorted(e["seq"] for e in evs if e.get("resent"))
    assert resent[:3] == [2, 3, 4] or {2, 3, 4} <= set(resent)


def test_broker_down_at_boot_then_up_delivers_the_queued_records_in_order(tmp_path):
    require_mosquitto()
    b = Broker(tmp_path / "mosquitto")
    node = Node(tmp_path, config(b.port), """
await asyncio.sleep_ms(120_000)
out(waiting=tel.q.unsent())
sys.stdin.readline()  # blocks: no virtual time passes while the test starts the broker
await asyncio.sleep_ms(180_000)
""")
    try:
        waiting = json.loads(node.wait_for("R ")[2:])["waiting"]
        b.start()
        sub = Subscriber(b, [BASE + "/telemetry", BASE + "/event"])
        node.go()
        r = node.result()
        msgs = messages(sub)
        sub.close()
    finally:
        b.stop()
    check_healthy(r)
    assert waiting >= 12  # 2 virtual minutes of records, queued on flash
    recs = records(msgs)
    seqs = [s for s, _, _ in recs]
    assert sorted(seqs) == list(range(1, r["next_seq"])), node.diagnosis(b)  # every record
    backlog = [s for s in seqs if s <= waiting]
    assert backlog == sorted(backlog)  # the backlog in order ...
    live = [s for s in seqs if s > waiting]
    assert live == sorted(live)  # ... and the live records in order, interleaved
    assert r["unsent"] == 0 and r["end"]["queued_max"] >= waiting


class Listener:
    """black_hole: accepts and never reads; reset: accepts, reads, closes with RST."""

    def __init__(self, mode):
        self.mode = mode
        self.ls = socket.socket()
        self.ls.bind(("127.0.0.1", 0))
        self.ls.listen(16)
        self.port = self.ls.getsockname()[1]
        self.conns = []
        self.accepted = 0
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        while True:
            try:
                c, _ = self.ls.accept()
            except OSError:
                return
            self.accepted += 1
            if self.mode == "reset":
                try:
                    c.recv(100)
                    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
                except OSError:
                    pass
                c.close()
            else:
                self.conns.append(c)

    def close(self):
        self.ls.close()
        for c in self.conns:
            c.close()


@pytest.mark.parametrize("mode", ["black_hole", "reset"])
def test_control_ticks_stay_on_time_with_a_broken_broker(tmp_path, mode):
    ls = Listener(mode)
    try:
        # a 100 ms reply window: a black hole costs 100 ms real per attempt, not 500
        node = Node(tmp_path, config(ls.port), "    await asyncio.sleep_ms(300_000)",
                    env={"HEATGW_IO_REPLY_MS": "100"})
        r = node.result()
    finally:
        ls.close()
    check_healthy(r)
    assert ls.accepted >= 2  # it kept trying (backoff), and control never waited
    e = r["end"]
    assert e["acked"] == 0 and e["last_seq"] == 0
    assert r["unsent"] == r["next_seq"] - 1 >= 30  # everything waits on flash


def test_restart_restores_totals_from_the_queue_not_only_the_state_record(tmp_path):
    # persist.interval_s 300: a node that stops after 100 s has only its boot save; the
    # queue's telemetry records carry the totals up to the last 10 s.
    port = free_port()  # nothing listens: records stay queued
    cfg = config(port)
    flash = tmp_path / "flash.bin"
    body = """
await asyncio.sleep_ms(100_000)
t = tel.q.last_totals()
out(queue_time_ms=t[1]["time_ms"], saved=gw.saved_seq)
"""
    first = Node(tmp_path, cfg, body, flash=flash)
    q = json.loads(first.wait_for("R ")[2:])
    first.proc.kill()  # a power cut: no shutdown save
    first.proc.wait()
    second = Node(tmp_path, cfg, "    out(restored_time_ms=gw.meter.totals()['time_ms'])",
                  flash=flash)
    got = json.loads(second.wait_for("R ")[2:])
    second.proc.kill()
    second.proc.wait()
    assert q["queue_time_ms"] >= 90_000
    assert got["restored_time_ms"] == q["queue_time_ms"]  # at most one interval lost


def test_a_bad_secrets_file_runs_without_and_raises_an_alarm(tmp_path, broker):
    sub = Subscriber(broker, [BASE + "/alarm/+"])
    node = Node(tmp_path, config(broker.port), "    await asyncio.sleep_ms(20_000)",
                secrets='{"version": 1, "command_key": "00zz-not-hex-SECRETVALUE"}')
    r = node.result()
    msgs = messages(sub)
    sub.close()
    check_healthy(r)
    text = "".join(node.all)
    assert "secrets:" in text and "command_key" in text and "SECRETVALUE" not in text
    ids = [m[0].rsplit("/", 1)[1] for m in msgs if m[1]]
    assert "secrets_invalid" in ids


def test_a_crashing_mqtt_task_is_restarted_and_loses_nothing(tmp_path, broker):
    sub = Subscriber(broker, [BASE + "/telemetry", BASE + "/event"])
    node = Node(tmp_path, config(broker.port), """
await asyncio.sleep_ms(30_000)
one = tel._one
def boom(c):
    tel._one = one  # once
    raise OSError(5)
tel._one = boom
await asyncio.sleep_ms(60_000)
""")
    r = node.result()
    msgs = messages(sub)
    sub.close()
    assert r["fault"] is None and "crash" not in r["kinds"]
    assert r["kinds"].count("task") == 1  # crashed once, restarted
    recs = records(msgs)
    seqs = sorted(s for s, _, _ in recs)
    assert seqs == list(range(1, r["next_seq"]))  # every record once, across the restart
    assert r["unsent"] == 0 and r["end"]["retransmitted"] == 0


def test_home_assistant_discovery_at_connect_and_again_when_ha_comes_online(tmp_path, broker):
    sub = Subscriber(broker, ["homeassistant/+/+/+/config"])
    node = Node(tmp_path, config(broker.port, ha_discovery_prefix="homeassistant"), """
await asyncio.sleep_ms(20_000)
out(hadisc_loaded="heatgw.hadisc" in sys.modules)
while tel.client.publish(b"homeassistant/status", b"online") is None:  # HA's birth
    await asyncio.sleep_ms(20)
await asyncio.sleep_ms(20_000)
""")
    mid = json.loads(node.wait_for("R ")[2:])
    r = node.result()
    msgs = messages(sub)
    sub.close()
    check_healthy(r)
    assert mid["hadisc_loaded"] is False  # dropped after publishing
    topics = [m[0] for m in msgs]
    assert len(set(topics)) == 10  # 4 temperatures, dT, flow, power, energy, volume, reuse
    assert len(topics) == 20  # every config twice: at connect, after HA's birth
    assert all(m[2] is False for m in msgs)  # live, retained at the broker
    energy = [json.loads(m[1]) for m in msgs if m[0].endswith("/energy_wh/config")][0]
    assert energy["device_class"] == "energy" and energy["state_class"] == "total_increasing"
    assert energy["availability_topic"] == BASE + "/status"
