"""The node's telemetry (heatgw.telemetry) end to end: the real micropython binary runs the
whole node (heatgw.start.build: sampler, control, supervisor, persist, mqtt) on the host
board standalone, asyncio on virtual time with real sockets (boards/host/vasyncio.py),
against a real broker (tests/brokers.py) and a paho-mqtt subscriber. Each test that
talks to a broker runs against two independent implementations, mosquitto and amqtt
(the `broker_cls` fixture); every message the subscriber receives is validated against
its JSON Schema (nodedriver.messages(), tests/payload_schemas.py).

The driver (tests/nodedriver.py) runs the node for some virtual minutes and reports its
`mqtt` record, status and events; commands are signed there and travel through the broker.
"""

import json

import pytest

from tests.brokers import BROKERS, Subscriber, free_port
from tests.nodedriver import (
    BASE,
    NET_WHERE,
    Listener,
    Node,
    check_healthy,
    config,
    messages,
    records,
    signed,
)


@pytest.fixture(params=["mosquitto", "amqtt"])
def broker_cls(request):
    """The broker implementation: mosquitto or amqtt (same interface, tests/brokers.py;
    each skips when it is not installed)."""
    return BROKERS[request.param]


@pytest.fixture
def broker(tmp_path, broker_cls):
    with broker_cls(tmp_path / broker_cls.name) as b:
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
    # the network side's longest real stretch was measured (a figure, not a limit)
    assert e["worst_net_real_us"] > 0 and e["worst_net_where"] in NET_WHERE
    print(f"\n{broker.name}: longest network stretch {e['worst_net_real_us']} us real "
          f"({e['worst_net_where']})")


def test_a_slow_synchronous_socket_write_is_seen_in_real_time(tmp_path):
    # Each socket write made 100 ms slower by a busy wait (real time): virtual time does
    # not see it, the node's worst_net_real_us must, and name where it was ("send").
    with BROKERS["mosquitto"](tmp_path / "mosquitto") as b:
        node = Node(tmp_path, config(b.port), """
import io
import time
import socket as _socket
from heatgw import mqtt

SLOW = [False]


class SlowSocket(io.IOBase):
    # the client's socket: each write 100 ms slower (a busy wait) while SLOW[0]; asyncio's
    # poller (the unix port's) polls the real socket's file descriptor
    def __init__(self, *a):
        self.s = _socket.socket(*a)

    def ioctl(self, req, arg):
        return self.s.fileno() if req == 10 else 0  # MP_STREAM_GET_FILENO

    def write(self, buf, *a):
        t = time.ticks_us()
        while SLOW[0] and time.ticks_diff(time.ticks_us(), t) < 100_000:
            pass
        return self.s.write(buf, *a)

    def readinto(self, buf, *a):
        return self.s.readinto(buf, *a)

    def setblocking(self, flag):
        self.s.setblocking(flag)

    def connect(self, addr):
        self.s.connect(addr)

    def close(self):
        self.s.close()


class SlowNet:  # heatgw.mqtt's `socket` module, with that socket type
    socket = SlowSocket
    getaddrinfo = _socket.getaddrinfo
    SOCK_STREAM = _socket.SOCK_STREAM


mqtt.socket = SlowNet  # before the client's first connection
await up()
before = tel.record()
SLOW[0] = True
await asyncio.sleep_ms(30_000)
SLOW[0] = False
out(before=before)
""")
        before = json.loads(node.wait_for("R ")[2:])["before"]
        r = node.result()
    check_healthy(r)  # virtual time: the slow writes cost no tick its timing
    e = r["end"]
    assert e["worst_net_real_us"] >= 100_000 and e["worst_net_where"] == "send", e
    assert e["acked"] > before["acked"]  # writes went through the slow path


def test_signed_commands_are_obeyed_through_the_inbox_and_forged_ones_refused(
        tmp_path, broker):
    sub = Subscriber(broker, [BASE + "/cmd/ack", BASE + "/event"])
    forged = signed(2, "maintenance", {"on": False}, key=bytes(32))
    cmds = [signed(1, "maintenance", {"on": True}), forged,
            signed(3, "resend", {"from_seq": 2, "to_seq": 4}),
            signed(4, "resend", {"from_seq": 0, "to_seq": 5000})]
    node = Node(tmp_path, config(broker.port), f"""
handle, seen = tel._command, []
def spy(msg):  # the inputs right after the mqtt task handled the command
    handle(msg)
    seen.append(gw.inputs.maintenance)
tel._command = spy
await command({cmds[0]!r})
tel._command = handle
before = seen[0]  # queued in the inbox: only the control task applies it
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


def test_broker_down_at_boot_then_up_delivers_the_queued_records_in_order(tmp_path,
                                                                          broker_cls):
    b = broker_cls(tmp_path / broker_cls.name)
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
