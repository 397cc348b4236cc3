"""End-to-end delivery across faults: every record of a run reaches the upstream.

Issue 8's first "must be shown": a paho-mqtt subscriber with a persistent session
(clean_session=False, its queue kept at the broker while it is away) receives every record
of a run, seq 1 to the node's last, contiguous: across a broker SIGKILLed mid-run (the gap
that leaves is found from seq and refilled with a signed `resend`, as a real upstream
would), a one-hour outage in virtual time, a node rebooted with records queued, and power
cuts during queue writes. Also the slow broker, and wrong credentials or CA at node level.

The whole node runs on the real micropython binary (tests/nodedriver.py), against a real
mosquitto (tests/brokers.py). Resent records ("resent": true) and duplicates (QoS 1 is at
least once) are allowed and counted; a missing seq is a failure.
"""

import json
import random

import pytest

from tests.brokers import Broker, Subscriber, make_ca, require_mosquitto
from tests.nodedriver import (
    BASE,
    KEY,
    LATE_MAX_MS,
    NO_SSL,
    Node,
    SlowProxy,
    check_healthy,
    config,
    has_ssl,
    messages,
    records,
    signed,
)

RECORDS = [BASE + "/telemetry", BASE + "/event"]
CMD = BASE + "/cmd"
ACK = BASE + "/cmd/ack"

# BODY helpers: wait in virtual time for a condition the test's peers make true in real
# time (time.sleep_ms is real and costs no virtual time: a command the test just published
# has time to reach the node's socket).
UNTIL = """
import time


async def until(cond, ms=120_000, step_ms=100):
    t = clk.vt
    while not cond():
        if clk.vt - t > ms:
            raise RuntimeError("timed out")
        time.sleep_ms(1)
        await asyncio.sleep_ms(step_ms)
"""


@pytest.fixture
def broker(tmp_path):
    with Broker(tmp_path / "mosquitto") as b:
        yield b


@pytest.fixture
def broker_off(tmp_path):
    """A broker the test starts, stops, kills and restarts itself; stopped at teardown."""
    b = Broker(tmp_path / "mosquitto")
    yield b
    b.stop()


def upstream(broker, topics=RECORDS):
    """The upstream: a persistent session, the same client id each time."""
    return Subscriber(broker, topics, client_id="upstream", clean_session=False)


def missing(seqs, last):
    """The gaps in 1..last as [first, last] ranges."""
    got = set(seqs)
    out = []
    for s in range(1, last + 1):
        if s not in got:
            if out and out[-1][1] == s - 1:
                out[-1][1] = s
            else:
                out.append([s, s])
    return out


def delivered(recs, last):
    """Every seq 1..last arrived (resent and duplicate copies allowed): the counts."""
    seqs = [s for s, _, _ in recs]
    assert missing(seqs, last) == [], missing(seqs, last)
    assert max(seqs) == last  # and nothing the node did not store
    return {"records": last, "copies": len(seqs), "duplicates": len(seqs) - len(set(seqs)),
            "resent": sum(1 for _, _, d in recs if d.get("resent"))}


def test_broker_sigkilled_mid_run_gap_found_from_seq_and_refilled_with_resend(
        tmp_path, broker_off):
    """The upstream is away for a minute (its session queued at the broker), the broker
    is SIGKILLed with that minute's records acknowledged to the node but not delivered:
    they are gone from the broker and from the node's unsent queue, still on its flash.
    The upstream finds them missing from seq and asks with `resend`, one per gap."""
    b = broker_off.start()
    sub = upstream(b, RECORDS + [ACK, CMD])  # CMD: it sees its own commands pass
    b.save()  # the upstream's session (its subscriptions) is in the broker's store
    node = Node(tmp_path, config(b.port), UNTIL + """
await asyncio.sleep_ms(60_000)
out(phase="online", next_seq=tel.q.next_seq)
sys.stdin.readline()  # the upstream goes away
await asyncio.sleep_ms(60_000)
out(phase="away", next_seq=tel.q.next_seq, unsent=tel.q.unsent())
sys.stdin.readline()  # the broker is SIGKILLed and restarted
await asyncio.sleep_ms(60_000)
out(phase="after", next_seq=tel.q.next_seq, unsent=tel.q.unsent())
while True:
    n = int(sys.stdin.readline())  # commands the upstream sent so far; 0: done
    if not n:
        break
    await until(lambda: sum(tel.cmd_counts.values()) >= n and not tel._resend
                and not tel.client.inflight())
    out(phase="refilled", n=n)
""")
    got = []
    online = json.loads(node.wait_for("R ")[2:])
    got += messages(sub)
    sub.close()
    node.go()
    away = json.loads(node.wait_for("R ")[2:])
    assert away["unsent"] <= 1  # the node has its PUBACKs: the broker has the records
    b.restart()  # SIGKILL: not saved since the upstream subscribed
    sub = upstream(b, RECORDS + [ACK, CMD])
    node.go()
    after = json.loads(node.wait_for("R ")[2:])
    got += messages(sub)
    last = after["next_seq"] - 1
    gaps = missing([s for s, _, _ in records(got)], last)
    lost = sum(z - a + 1 for a, z in gaps)
    first_gaps = [list(g) for g in gaps]
    ctr = 0
    while gaps:  # the upstream refills what it misses, one resend per gap
        assert ctr < 10, gaps
        a, z = gaps[0]
        ctr += 1
        cmd = signed(ctr, "resend", {"from_seq": a, "to_seq": z})
        sub.client.publish(CMD, cmd, qos=1).wait_for_publish(10)
        got += sub.drain(lambda m, c=cmd: m[0] == CMD and m[1] == c.encode())
        node.go(str(ctr))
        node.wait_for("R ")
        got += messages(sub)
        gaps = missing([s for s, _, _ in records(got)], last)
    node.go("0")
    r = node.result()
    got += messages(sub)
    sub.close()
    check_healthy(r)
    acks = [json.loads(m[1]) for m in got if m[0] == ACK]
    print(f"\nSIGKILL: {lost} of {last} records needed refill, in {ctr} resend(s): "
          f"{json.dumps(acks)}")
    assert online["next_seq"] < away["next_seq"] <= after["next_seq"]
    # what was lost with the broker is from the minute the upstream was away
    assert lost >= 5, node.diagnosis(b)
    assert all(online["next_seq"] - 1 <= a <= z < away["next_seq"] for a, z in first_gaps), (
        online, away, first_gaps)
    assert all(a["ok"] and a["gone"] == [] for a in acks), acks
    counts = delivered(records(got), r["next_seq"] - 1)
    assert counts["resent"] >= lost
    assert r["counts"]["accepted"] == ctr
    print("SIGKILL:", counts)


def test_two_gaps_asked_for_at_once_are_both_refilled(tmp_path, broker):
    """An upstream that finds two gaps asks for both; the node acks both with their
    ranges, so it must send both."""
    sub = upstream(broker, RECORDS + [ACK, CMD])
    node = Node(tmp_path, config(broker.port), UNTIL + """
await asyncio.sleep_ms(60_000)
out(next_seq=tel.q.next_seq)
sys.stdin.readline()  # the upstream sends its two resends
await until(lambda: sum(tel.cmd_counts.values()) >= 2 and not tel._resend
            and not tel.client.inflight())
await asyncio.sleep_ms(5_000)
""")
    assert json.loads(node.wait_for("R ")[2:])["next_seq"] > 13
    got = messages(sub)
    cmds = [signed(1, "resend", {"from_seq": 2, "to_seq": 6}),
            signed(2, "resend", {"from_seq": 8, "to_seq": 12})]
    for c in cmds:
        sub.client.publish(CMD, c, qos=1).wait_for_publish(10)
    got += sub.drain(lambda m: m[0] == CMD and m[1] == cmds[1].encode())
    node.go()
    r = node.result()
    got += messages(sub)
    sub.close()
    check_healthy(r)
    acks = [json.loads(m[1]) for m in got if m[0] == ACK]
    assert [a["resend"] for a in acks] == [[2, 6], [8, 12]], acks
    resent = {s for s, _, d in records(got) if d.get("resent")}
    assert {2, 3, 4, 5, 6, 8, 9, 10, 11, 12} <= resent, sorted(resent)


def test_a_one_hour_outage_in_virtual_time_loses_nothing(tmp_path, broker_off):
    """The broker is down (stopped) for 3600 s of the node's time: ~360 telemetry records
    and the events wait on flash, then drain in order with live records interleaved."""
    b = broker_off.start()
    sub = upstream(b, RECORDS + [CMD])
    node = Node(tmp_path, config(b.port), UNTIL + """
await asyncio.sleep_ms(60_000)
out(next_seq=tel.q.next_seq, unsent=tel.q.unsent())
sys.stdin.readline()  # the broker stops
t = clk.vt
await asyncio.sleep_ms(3_600_000)
out(down_ms=clk.vt - t, next_seq=tel.q.next_seq, unsent=tel.q.unsent())
sys.stdin.readline()  # the broker is back
await up()
mark = tel._live_mark  # stored from here on: live
# a third through the backlog (it drains at ~1000 records/s real: look often)
await until(lambda: tel.q.low > mark - 250, step_ms=5)
out(mark=mark, low=tel.q.low, unsent=tel.q.unsent())
sys.stdin.readline()  # the upstream asks for the state: the command's events are live
await until(lambda: sum(tel.cmd_counts.values()) == 1)
await until(lambda: tel.q.unsent() == 0, 600_000)
await asyncio.sleep_ms(30_000)
""")
    online = json.loads(node.wait_for("R ")[2:])
    b.stop()  # SIGTERM: mosquitto saves the upstream's session
    node.go()
    down = json.loads(node.wait_for("R ")[2:])
    b.start()
    sub.connected.get(timeout=10)  # paho is back too (it retried every 0.2 s)
    node.go()
    mid = json.loads(node.wait_for("R ")[2:])
    mark = mid["mark"]
    cmd = signed(1, "publish_state")
    sub.client.publish(CMD, cmd, qos=1).wait_for_publish(10)
    msgs = sub.drain(lambda m: m[0] == CMD and m[1] == cmd.encode())
    node.go()
    r = node.result()
    msgs += messages(sub)
    sub.close()
    check_healthy(r)
    assert online["next_seq"] > 5 and online["unsent"] == 0  # connected before the outage
    assert down["down_ms"] == 3_600_000
    backlog_n = down["unsent"]
    assert backlog_n == down["next_seq"] - online["next_seq"] >= 360  # the hour, on flash
    assert mid["unsent"] >= 100  # held with the backlog still draining
    recs = records(msgs)
    counts = delivered(recs, r["next_seq"] - 1)
    seqs = [s for s, _, _ in recs]
    b0 = online["next_seq"]  # the first record stored in the outage
    first = seqs.index(b0)
    backlog = [s for s in seqs[first:] if s < mark]
    live = [s for s in seqs[first:] if s >= mark]
    assert backlog == list(range(b0, mark))  # each once, in order
    assert live == sorted(live)
    # interleaved: live records (the command's) arrived before the backlog's end
    assert seqs.index(live[0]) < seqs.index(mark - 1), seqs[first:]
    e = r["end"]
    assert e["queued_max"] >= backlog_n and e["dropped"] == 0 and r["unsent"] == 0
    assert e["retransmitted"] == 0 and e["reconnects"] == 1
    print(f"\noutage: 3600 s virtual, {backlog_n} records queued (queued_max "
          f"{e['queued_max']}), {counts}, reconnects {e['reconnects']}")


def test_a_node_rebooted_with_records_queued_delivers_them_and_continues_seq(
        tmp_path, broker_off):
    """The first node runs with no broker and loses power (SIGKILL) with its records
    queued; the second boots on the same flash with the broker up and delivers them
    all, its own records continuing the seq: no seq reused, none skipped."""
    flash = tmp_path / "flash.bin"
    b = broker_off  # not started: the first node finds no broker
    first = Node(tmp_path, config(b.port), """
await asyncio.sleep_ms(120_000)
out(next_seq=tel.q.next_seq, unsent=tel.q.unsent(), boot=gw.boot_id)
sys.stdin.readline()  # power cut while held here
""", flash=flash)
    queued = json.loads(first.wait_for("R ")[2:])
    first.proc.kill()  # a power cut: no shutdown, no save
    first.proc.wait()
    with b:
        sub = upstream(b)
        second = Node(tmp_path, config(b.port), """
await up()
await asyncio.sleep_ms(60_000)
""", flash=flash)
        r = second.result()
        msgs = messages(sub)
        sub.close()
    check_healthy(r)
    assert queued["unsent"] == queued["next_seq"] - 1 >= 12  # all of them, on flash
    recs = records(msgs)
    counts = delivered(recs, r["next_seq"] - 1)
    assert counts["duplicates"] == 0 and counts["resent"] == 0
    boots = {d["boot"] for s, _, d in recs}
    assert boots == {queued["boot"], queued["boot"] + 1}
    # the second boot's records start where the first's ended: its boot event first
    mine = sorted(s for s, _, d in recs if d["boot"] == queued["boot"] + 1)
    assert mine[0] == queued["next_seq"], (queued, mine[:3])
    boot_ev = [d for s, t, d in recs if s == mine[0]][0]
    assert boot_ev["kind"] == "boot"
    assert r["unsent"] == 0 and r["end"]["first_seq"] == 1
    print(f"\nreboot: {queued['unsent']} records queued by the first boot, {counts}")


CUT_BODY = """
dev = board.flash_device()
q = tel.q
append = q.append
n = [0, 0]  # appends so far, flash ops of the last one


def cut(info):  # from inside littlefs: print, then stop as a dead CPU would
    print("CUT", json.dumps({"stored": q.next_seq - 1, "boot": gw.boot_id, "info": info}))
    while True:
        time.sleep(60)


def cut_append(kind, fields):
    n[0] += 1
    if n[0] == AT:  # an op of this append (its ops grow with its segment file)
        dev.arm_cut(OFF % (n[1] + 1) + 1, TORN, cut)
    o = dev.ops
    s = append(kind, fields)
    n[1] = dev.ops - o
    return s


q.append = cut_append
out(next_seq=q.next_seq)
await asyncio.sleep_ms(300_000)
"""


def test_power_cuts_during_queue_writes_lose_no_stored_record_and_leave_no_gap(tmp_path):
    """Node boots each cut at a random flash operation (torn at a random byte) of a
    random append, the broker up; then a node that runs on. Every record an append had
    stored before the cut arrives; the one being written is there or not, and a record
    lost before storage leaves no gap: the next boot reuses its seq, never a stored one.
    (The queue alone takes 100+ cuts at every op in test_recqueue.py; this is the end to
    end sample.) A small queue (capacity 60: segments of 5) puts segment refills, erase
    and truncate, among the cut appends."""
    rnd = random.Random(8)
    flash = tmp_path / "flash.bin"
    cuts = []
    with Broker(tmp_path / "mosquitto") as b:
        cfg = config(b.port)
        cfg["telemetry"]["queue_capacity"] = 60
        sub = upstream(b)
        for _ in range(6):
            plan = {"AT": rnd.randint(2, 14), "OFF": rnd.randrange(1 << 20),
                    "TORN": rnd.randrange(0, 40)}
            body = CUT_BODY
            for k, v in plan.items():
                body = body.replace(k, str(v))
            node = Node(tmp_path, cfg, "import time\n" + body, flash=flash)
            start = json.loads(node.wait_for("R ")[2:])["next_seq"]
            c = json.loads(node.wait_for("CUT ")[4:])
            node.proc.kill()  # the power stays off
            node.proc.wait()
            cuts.append({**c, "first_seq": start - 1, **plan})
        final = Node(tmp_path, cfg, UNTIL + """
await up()
await until(lambda: tel.q.unsent() == 0)
await asyncio.sleep_ms(20_000)
""", flash=flash)
        r = final.result()
        msgs = messages(sub)
        sub.close()
    check_healthy(r)
    recs = records(msgs)
    counts = delivered(recs, r["next_seq"] - 1)
    by_seq = {}
    # copies of one seq are one record (same boot, same uptime): a seq is never reused.
    # (Not the whole payload: a live copy and one formatted from flash differ a little.)
    for s, _, d in recs:
        by_seq.setdefault(s, d)
        assert (by_seq[s]["boot"], by_seq[s]["up_ms"]) == (d["boot"], d["up_ms"]), s
    boots = [c["boot"] for c in cuts]
    assert boots == list(range(boots[0], boots[0] + 6))  # each boot was one cut
    landed = 0
    for i, c in enumerate(cuts):
        nxt = cuts[i + 1]["first_seq"] if i + 1 < len(cuts) else None
        assert c["stored"] < r["next_seq"]  # every stored record is among the delivered
        # the next boot starts right after what this one stored, or after the record
        # (and a drop record) it was writing when the power went
        if nxt is not None:
            assert c["stored"] + 1 <= nxt <= c["stored"] + 3, (c, nxt)
            landed += nxt > c["stored"] + 1
        assert by_seq[c["stored"]]["boot"] == c["boot"] or c["stored"] < c["first_seq"]
    ops = sorted({c["info"]["op"] for c in cuts})
    print(f"\npower cuts: {len(cuts)} boots cut ({ops}), the record being written landed "
          f"in {landed}; {counts}; cuts: "
          + json.dumps([{k: c[k] for k in ("stored", "first_seq")} | c["info"] for c in cuts]))


@pytest.fixture(scope="module")
def slow_run(tmp_path_factory):
    """One node run through SlowProxy: every chunk, each way, 200 ms late (a 400 ms round
    trip, under the host board's 500 ms reply window)."""
    require_mosquitto()
    tmp = tmp_path_factory.mktemp("slow")
    with Broker(tmp / "mosquitto") as b:
        sub = upstream(b)
        proxy = SlowProxy(b.port, delay_s=0.2)
        try:
            node = Node(tmp, config(proxy.port), UNTIL + """
await up()
await asyncio.sleep_ms(30_000)
await until(lambda: tel.q.unsent() == 0)
out(stats=tel.client.stats())
""")
            stats = json.loads(node.wait_for("R ")[2:])["stats"]
            r = node.result()
            msgs = messages(sub)
            sub.close()
        finally:
            proxy.close()
        return {"r": r, "stats": stats, "msgs": msgs, "proxy": proxy,
                "diagnosis": node.diagnosis(b)}


def test_a_slow_broker_delays_no_control_tick_and_loses_nothing(slow_run):
    r, proxy = slow_run["r"], slow_run["proxy"]
    check_healthy(r)  # lateness <= 50 ms, no crash, the watchdog fed every second
    assert proxy.chunks >= 20  # the node's traffic went through the slow path
    counts = delivered(records(slow_run["msgs"]), r["next_seq"] - 1)
    assert r["unsent"] == 0
    e = r["end"]
    print(f"\nslow broker (200 ms each way): {counts}, lateness {r['late']} ms, longest "
          f"feed gap {r['feeds'][2]} ms, {proxy.chunks} chunks, {proxy.accepted} "
          f"connection(s), reconnects {e['reconnects']}, retransmitted {e['retransmitted']}, "
          f"longest network stretch {e['worst_net_real_us']} us real "
          f"({e['worst_net_where']}), client {slow_run['stats']}")


def test_a_slow_broker_looks_healthy_no_reconnect_no_retransmission(slow_run):
    r, proxy = slow_run["r"], slow_run["proxy"]
    e = r["end"]
    assert slow_run["stats"]["timeouts"] == 0, slow_run["stats"]
    assert proxy.accepted == 1 and e["reconnects"] == 0 and e["retransmitted"] == 0, (
        slow_run["stats"], slow_run["diagnosis"])
    assert delivered(records(slow_run["msgs"]), r["next_seq"] - 1)["duplicates"] == 0


def bad_peer(tmp_path, which):
    """The node against a broker that wants a password it does not have, or a TLS broker
    whose certificate its CA did not sign: (node, result, the client's stats)."""
    from cryptography.hazmat.primitives import serialization
    if which == "ca" and not has_ssl():
        pytest.skip(NO_SSL)
    if which == "password":
        b = Broker(tmp_path / "mosquitto", users={"node": "right-Pw-1"})
        cfg = config(b.port, username="node")
        files = {}
    else:
        b = Broker(tmp_path / "mosquitto", tls=True)
        cfg = config(b.tls_port, tls={"ca_file": "/flash/ca.der"})
        other = make_ca("not the broker's CA")[1]
        files = {"ca.der": other.public_bytes(serialization.Encoding.DER)}
    sec = json.dumps({"version": 1, "command_key": KEY.hex(), "mqtt_password": PASSWORD})
    with b:
        node = Node(tmp_path, cfg, """
await asyncio.sleep_ms(60_000)
out(stats=tel.client.stats(), ticks=gw.status().get("ticks"))
""", secrets=sec, files=files)
        mid = json.loads(node.wait_for("R ")[2:])
        r = node.result()
    return node, r, mid["stats"]


PASSWORD = "wrong-Pw-Zebra-7"
# mosquitto 2 answers a wrong password with CONNACK 5 (not authorised), others with 4
REASONS = {"password": ("broker refused: bad user name or password",
                        "broker refused: not authorised"),
           "ca": ("TLS: server certificate not verified by the configured CA",)}


@pytest.mark.parametrize("which", ["password", "ca"])
def test_wrong_credentials_or_ca_crash_nothing_and_control_runs(tmp_path, which):
    node, r, stats = bad_peer(tmp_path, which)
    check_healthy(r)  # no crash, ticks on time, the watchdog fed
    assert stats["connects"] == 0 and stats["failures"] >= 3  # it kept trying, with backoff
    assert stats["last_error"].startswith(REASONS[which]), stats
    assert r["unsent"] == r["next_seq"] - 1 >= 6  # the records wait on flash
    assert r["feeds"][0] >= 59 and r["time_ms"] >= 59_000  # control and metering ran
    assert PASSWORD not in "".join(node.all)  # the password is never printed


@pytest.mark.parametrize("which", ["password", "ca"])
def test_wrong_credentials_or_ca_say_so_on_the_console(tmp_path, which):
    node, r, stats = bad_peer(tmp_path, which)
    assert stats["last_error"].startswith(REASONS[which]), stats  # the client knows why
    console = [ln for ln in node.all if not ln.startswith(("R ", "event: "))]
    assert any(stats["last_error"] in ln for ln in console), console


SLOW_STEP_MS = 400  # a TLS handshake step's CPU time on a slow target (the host: ~13 ms)


@pytest.mark.parametrize("paced", [True, False])
def test_a_slow_tls_handshake_step_runs_right_after_a_control_tick(tmp_path, paced):
    """Every socket write while the TLS handshake runs is made SLOW_STEP_MS slower by a
    busy wait (real time, which virtual time follows while the client awaits a reply). The
    client paces those writes to just after a control tick (Telemetry._after_tick), so the
    next tick still comes on time; unpaced, a step lands wherever the broker's reply does
    and a tick waits behind it."""
    if not has_ssl():
        pytest.skip(NO_SSL)
    b = Broker(tmp_path / "mosquitto", tls=True)
    cfg = config(b.tls_port, tls={"ca_file": "/flash/ca.der"})
    with b:
        node = Node(tmp_path, cfg, f"""
import time
from heatgw import clock
took = clock.took
def slow(t0, where):
    c = tel.client
    if where == "send" and c is not None and c.state != "up":
        t = time.ticks_us()
        while time.ticks_diff(time.ticks_us(), t) < {SLOW_STEP_MS} * 1000:
            pass
    took(t0, where)
clock.took = slow
while tel.client is None:
    await asyncio.sleep_ms(10)
if not {paced}:
    tel.client.pace = None
await asyncio.sleep_ms(40_000)
out(stats=tel.client.stats(), late=gw.status()["worst_tick_late_ms"])
""", files={"ca.der": b.ca_der})
        mid = json.loads(node.wait_for("R ")[2:])
        r = node.result()
    assert mid["stats"]["connects"] >= 1, mid  # the handshake went through
    assert r["end"]["worst_net_real_us"] >= SLOW_STEP_MS * 1000  # the slow step was seen
    print(f"\nslow TLS step {SLOW_STEP_MS} ms, paced={paced}: tick lateness {mid['late']} ms")
    if paced:
        check_healthy(r)  # lateness within 50 ms: the step ran where the next tick was far
    else:
        assert mid["late"] > LATE_MAX_MS  # what pacing prevents
