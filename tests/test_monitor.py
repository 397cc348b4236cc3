"""`heatgw monitor` (host_tools/monitor.py) against a real mosquitto, real nodes (the whole
node on the micropython binary, tests/nodedriver.py) and a real PostgreSQL server
(tests/pgserver.py): every record each node published is stored exactly once, checked
against the node's own last_seq; QoS 1 duplicates and resent copies are not doubled; a gap
a monitor restart left is found from seq and filled by the node's resent records; two
monitors sharing one subscription split the records and lose none, even when one of them is
SIGKILLed and comes back; the live view draws and updates in a pseudo-terminal, plain lines
when stdout is no terminal; bad options and a refused login are clear errors.
"""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from host_tools.paths import REPO
from host_tools.records import missing_ranges
from tests.brokers import Broker, mosquitto_broker  # noqa: F401 - fixture
from tests.nodedriver import BASE, KEY, Node, check_healthy, config, signed
from tests.payload_schemas import validate
from tests.pgserver import pg_server  # noqa: F401 - fixture

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


_STARTED = []  # every monitor process a test started: a failed test leaves none running


@pytest.fixture(autouse=True)
def _no_monitor_left():
    yield
    while _STARTED:
        proc = _STARTED.pop()
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


class MonitorProc:
    """`heatgw monitor ARGS --stats FILE` (python -m host_tools.cli) in a subprocess;
    stdout (plain lines: not a terminal) in a file."""

    def __init__(self, tmp_path, name, args):
        self.name = name
        self.stats_path = tmp_path / f"{name}.stats.json"
        self.out_path = tmp_path / f"{name}.out"
        self.args = [sys.executable, "-m", "host_tools.cli", "monitor", *args,
                     "--stats", str(self.stats_path)]
        self.start()

    def start(self):
        self.out = open(self.out_path, "a")  # noqa: SIM115 - closed in stop()/kill()
        self.proc = subprocess.Popen(self.args, cwd=REPO, stdout=self.out,
                                     stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                     text=True)
        _STARTED.append(self.proc)
        return self

    def text(self):
        return self.out_path.read_text()

    def wait_for(self, text, count=1, timeout=20):
        deadline = time.monotonic() + timeout
        while self.text().count(text) < count:
            if self.proc.poll() is not None:
                raise AssertionError(f"monitor {self.name} exited {self.proc.returncode}: "
                                     f"{self.proc.stderr.read()}\n{self.text()[-2000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"monitor {self.name}: no {text!r} x{count} in "
                                     f"{timeout} s:\n{self.text()[-2000:]}")
            time.sleep(0.05)

    def stop(self):
        """SIGTERM: it commits, acks, disconnects; its stats."""
        self.proc.send_signal(signal.SIGTERM)
        _out, err = self.proc.communicate(timeout=20)
        self.out.close()
        assert self.proc.returncode == 0, err
        self.summary = err
        return json.loads(self.stats_path.read_text())

    def kill(self):
        self.proc.kill()
        self.proc.communicate(timeout=20)
        self.out.close()


def wait_until(cond, timeout=20, what=""):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def start_node(tmp_path, broker, name, body, secrets=True):
    cfg = config(broker.port)
    cfg["node_id"] = name
    d = tmp_path / name
    d.mkdir(exist_ok=True)
    return Node(d, cfg, body, secrets=secrets)


def sqlite_seqs(path):
    db = sqlite3.connect(path)
    try:
        return db.execute("SELECT site, node, kind, seq, topic, payload FROM records "
                          "ORDER BY site, node, seq").fetchall()
    finally:
        db.close()


def pg_rows(url):
    import psycopg

    with psycopg.connect(url) as c:
        return c.execute("SELECT site, node, kind, seq, topic, payload::text FROM records "
                         "ORDER BY site, node, seq").fetchall()


def check_exactly_once(rows, last):
    """Every seq 1..last of each node exactly once, nothing else; payloads whole."""
    by_node = {}
    for site, node, kind, seq, topic, payload in rows:
        assert site == "s1"
        assert topic == f"heatgw/s1/{node}/{kind}"
        by_node.setdefault(node, []).append(seq)
        validate(topic, payload.encode() if isinstance(payload, str) else payload)
        assert json.loads(payload)["seq"] == seq
    assert sorted(by_node) == sorted(last)
    for node, seqs in by_node.items():
        assert seqs == list(range(1, last[node] + 1)), (node, missing_ranges(seqs), last)


def pub_client(broker):
    import paho.mqtt.client as mqtt

    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="dup-publisher")
    c.connect("127.0.0.1", broker.port)
    c.loop_start()
    return c


def test_two_nodes_into_sqlite_every_record_once_duplicates_ignored(
        tmp_path, mosquitto_broker):  # noqa: F811
    b = mosquitto_broker
    rec = tmp_path / "site.sqlite"
    mon = MonitorProc(tmp_path, "m", [f"127.0.0.1:{b.port}", "--site", "s1",
                                      "--record", str(rec)])
    mon.wait_for("monitor: subscribed to heatgw/s1/#")
    nodes = {n: start_node(tmp_path, b, n, "await asyncio.sleep_ms(180_000)")
             for n in ("gw-a", "gw-b")}
    results = {n: node.result() for n, node in nodes.items()}
    for r in results.values():
        check_healthy(r)
        assert r["end"]["dropped"] == 0 and r["end"]["first_seq"] == 1
    last = {n: r["end"]["last_seq"] for n, r in results.items()}
    assert min(last.values()) > 20
    wait_until(lambda: len(sqlite_seqs(rec)) == sum(last.values()), what="every record")
    # what a broker's redelivery and a node's resend look like: the same record again
    # (QoS 1 DUP), and a copy marked resent
    rows = [r for r in sqlite_seqs(rec) if r[1] == "gw-a" and r[2] == "telemetry"][:2]
    pub = pub_client(b)
    try:
        for _site, _node, _kind, _seq, topic, payload in rows:
            pub.publish(topic, payload, qos=1).wait_for_publish(5)
        doc = json.loads(rows[0][5])
        doc["resent"] = True
        pub.publish(rows[0][4], json.dumps(doc), qos=1).wait_for_publish(5)
    finally:
        pub.disconnect()
        pub.loop_stop()
    mon.wait_for("duplicate (ignored)", count=3)
    st = mon.stop()
    check_exactly_once(sqlite_seqs(rec), last)
    assert st["store_duplicates"] == 3 and st["conflicts"] == 0, st
    assert st["stored"] == sum(last.values())
    for n in last:
        s = st["nodes"][f"s1/{n}"]
        assert (s["first_seq"], s["last_seq"], s["missing"]) == (1, last[n], [])
        assert s["status"] == "offline" and s["alarms"], s  # the node said goodbye
    text = mon.text()  # plain lines: stdout is a file
    for n in last:
        for seq in range(1, last[n] + 1):
            assert f"s1/{n} #{seq} " in text, (n, seq)
    db = sqlite3.connect(rec)
    kinds = dict(db.execute("SELECT tail, count(*) FROM (SELECT substr(topic, 16) AS tail "
                            "FROM latest WHERE node = 'gw-a') GROUP BY tail").fetchall())
    assert kinds["status"] == 1 and kinds["state"] == 1, kinds
    print(f"\nSQLite: {last} records, 3 duplicates ignored; {mon.summary.strip()}")


def test_two_nodes_into_postgresql(tmp_path, mosquitto_broker, pg_server):  # noqa: F811
    b = mosquitto_broker
    url = pg_server.create_db("two_nodes")
    mon = MonitorProc(tmp_path, "m", [f"127.0.0.1:{b.port}", "--site", "s1", "--db", url])
    mon.wait_for("monitor: subscribed")
    # what PostgreSQL cannot hold (NUL in a string, a lone surrogate) is a bad message,
    # refused and acknowledged: it never comes back to stop the recorder
    pub = pub_client(b)
    try:
        for bad in (b'{"v":1,"seq":1,"boot":1,"up_ms":0,"text":"a\\u0000b"}',
                    b'{"v":1,"seq":2,"boot":1,"up_ms":0,"text":"\\ud800"}'):
            pub.publish("heatgw/s1/gw-z/event", bad, qos=1).wait_for_publish(5)
        pub.publish("heatgw/s1/gw-z/status", b"on\x00line", qos=1).wait_for_publish(5)
    finally:
        pub.disconnect()
        pub.loop_stop()
    mon.wait_for("bad message", count=2)
    nodes = {n: start_node(tmp_path, b, n, "await asyncio.sleep_ms(180_000)")
             for n in ("gw-a", "gw-b")}
    last = {n: node.result()["end"]["last_seq"] for n, node in nodes.items()}
    wait_until(lambda: len(pg_rows(url)) == sum(last.values()), what="every record")
    st = mon.stop()
    check_exactly_once(pg_rows(url), last)
    assert st["stored"] == sum(last.values()) and st["store_duplicates"] == 0
    assert st["bad"] == 2 and "NUL" in mon.text() and "surrogate" in mon.text()
    import psycopg

    with psycopg.connect(url) as c:  # the indexed columns say what the JSON says
        bad = c.execute("SELECT count(*) FROM records WHERE (payload->>'seq')::bigint <> seq "
                        "OR (payload->>'boot')::int <> boot OR "
                        "(kind = 'event' AND payload->>'kind' <> event)").fetchone()[0]
        assert bad == 0


def test_two_monitors_share_one_subscription_nothing_lost_nothing_doubled(
        tmp_path, mosquitto_broker, pg_server):  # noqa: F811
    """Two monitors in one shared-subscription group write one PostgreSQL. Mid-run one is
    SIGKILLed (what it had not committed was not acknowledged) and restarted with its
    client id: its persistent session brings what the broker kept for it."""
    b = mosquitto_broker
    url = pg_server.create_db("shared")
    common = [f"127.0.0.1:{b.port}", "--site", "s1", "--db", url, "--share", "recorders"]
    m1 = MonitorProc(tmp_path, "m1", [*common, "--client-id", "rec-1"])
    m2 = MonitorProc(tmp_path, "m2", [*common, "--client-id", "rec-2"])
    for m in (m1, m2):
        m.wait_for("monitor: subscribed to $share/recorders/heatgw/s1/#")
    body = """
await asyncio.sleep_ms(120_000)
out(phase=1, last=tel.last_seq)
sys.stdin.readline()
await asyncio.sleep_ms(120_000)
out(phase=2, last=tel.last_seq)
sys.stdin.readline()
await asyncio.sleep_ms(120_000)
"""
    nodes = {n: start_node(tmp_path, b, n, body) for n in ("gw-a", "gw-b")}
    for node in nodes.values():
        node.wait_for("R ")
    m1.kill()  # SIGKILL while the nodes go on
    for node in nodes.values():
        node.go()
    for node in nodes.values():
        node.wait_for("R ")
    m1.start()
    m1.wait_for("(session resumed)")
    for node in nodes.values():
        node.go()
    last = {n: node.result()["end"]["last_seq"] for n, node in nodes.items()}
    wait_until(lambda: len(pg_rows(url)) == sum(last.values()), what="every record")
    s1, s2 = m1.stop(), m2.stop()
    check_exactly_once(pg_rows(url), last)
    assert s1["conflicts"] == s2["conflicts"] == 0 and s1["bad"] == s2["bad"] == 0
    total = sum(last.values())
    # the split: each monitor's plain lines say which records it got (m1's from both of
    # its runs); both got some, together all, and what both got is what the broker sent
    # again after the SIGKILL (stored by m1, not acknowledged): never doubled in the table
    got = [_seen(m.text()) for m in (m1, m2)]
    assert got[0] and got[1], got
    every = {(n, q) for n in last for q in range(1, last[n] + 1)}
    assert got[0] | got[1] == every
    # split, not copied: mosquitto gives each message to one session of the group and
    # keeps what it gave the SIGKILLed monitor's session for it (a broker that hands them
    # to another member instead: the second copy is ignored, never doubled in the table)
    assert not got[0] & got[1] and got[0] != every and got[1] != every
    print(f"\nshared: {total} records; monitor 1 got {len(got[0])} (SIGKILLed and back), "
          f"monitor 2 {len(got[1])}, both {len(got[0] & got[1])}")


def _seen(text):
    """(node, seq) of every record line a monitor printed."""
    out = set()
    for ln in text.splitlines():
        parts = ln.split()
        if len(parts) > 2 and parts[1].startswith("s1/") and parts[2].startswith("#"):
            out.add((parts[1][3:], int(parts[2][1:])))
    return out


def test_a_restart_without_session_leaves_a_gap_found_from_seq_that_resent_records_fill(
        tmp_path, mosquitto_broker):  # noqa: F811
    """A monitor with a clean session is away for a minute: those records are lost to it.
    Restarted on the same file it finds the gap from seq; the upstream asks the node to
    `resend` it; the resent records fill it, and what it had is not doubled."""
    b = mosquitto_broker
    rec = tmp_path / "site.sqlite"
    args = [f"127.0.0.1:{b.port}", "--site", "s1", "--record", str(rec)]
    mon = MonitorProc(tmp_path, "m", args)
    mon.wait_for("monitor: subscribed")
    node = start_node(tmp_path, b, "heatgw-sim", UNTIL + """
await asyncio.sleep_ms(60_000)
out(phase=1, last=tel.last_seq)
sys.stdin.readline()
await asyncio.sleep_ms(60_000)
out(phase=2, last=tel.last_seq)
sys.stdin.readline()
await asyncio.sleep_ms(60_000)
out(phase=3, last=tel.last_seq)
sys.stdin.readline()
await until(lambda: sum(tel.cmd_counts.values()) >= 1 and not tel._resend
            and not tel.client.inflight())
await asyncio.sleep_ms(20_000)
""")
    p1 = json.loads(node.wait_for("R ")[2:])
    wait_until(lambda: len(sqlite_seqs(rec)) == p1["last"], what="phase 1")
    mon.stop()
    node.go()
    p2 = json.loads(node.wait_for("R ")[2:])
    mon.start()
    mon.wait_for("monitor: subscribed", count=2)
    node.go()
    p3 = json.loads(node.wait_for("R ")[2:])
    wait_until(lambda: max(r[3] for r in sqlite_seqs(rec)) == p3["last"], what="phase 3")
    gaps = missing_ranges([r[3] for r in sqlite_seqs(rec)])
    assert gaps and all(p1["last"] < a <= z <= p2["last"] + 1 for a, z in gaps), (gaps, p1, p2)
    pub = pub_client(b)
    try:
        z = gaps[-1][1]
        pub.publish(BASE + "/cmd", signed(1, "resend", {"from_seq": 1, "to_seq": z + 5}),
                    qos=1).wait_for_publish(5)
    finally:
        pub.disconnect()
        pub.loop_stop()
    node.go()
    r = node.result()
    check_healthy(r)
    last = r["end"]["last_seq"]
    wait_until(lambda: len(sqlite_seqs(rec)) == last, what="the gap filled")
    st = mon.stop()
    check_exactly_once(sqlite_seqs(rec), {"heatgw-sim": last})
    db = sqlite3.connect(rec)
    filled = [q for (q,) in db.execute("SELECT seq FROM records WHERE resent = 1")]
    assert filled == [q for a, z in gaps for q in range(a, z + 1)], (filled, gaps)
    # the node sent 1..z+5 again: what the file had already is ignored, not doubled
    assert st["store_duplicates"] >= z + 5 - len(filled) - 1, st
    assert st["nodes"]["s1/heatgw-sim"]["missing"] == [] and r["counts"]["accepted"] == 1
    assert KEY  # the node's command key (nodedriver) signed the resend
    print(f"\ngap {gaps} after a restart without session, filled by {len(filled)} resent "
          f"records; {st['store_duplicates']} copies ignored")


def test_live_view_draws_and_updates_in_a_pseudo_terminal(tmp_path, mosquitto_broker):  # noqa: F811
    import pexpect

    b = mosquitto_broker
    env = dict(os.environ, TERM="xterm-256color", COLUMNS="160", LINES="60")
    child = pexpect.spawn(sys.executable, ["-m", "host_tools.cli", "monitor",
                                           f"127.0.0.1:{b.port}", "--site", "s1"],
                          cwd=str(REPO), env=env, dimensions=(60, 160), timeout=20,
                          encoding="utf-8", codec_errors="replace")
    child.logfile_read = open(tmp_path / "pty.log", "w")  # noqa: SIM115
    try:
        child.expect("subscribed to heatgw/s1/#")
        child.expect("waiting for the first message")
        node = start_node(tmp_path, b, "gw-a", """
await asyncio.sleep_ms(60_000)
out(phase=1, last=tel.last_seq)
sys.stdin.readline()
await asyncio.sleep_ms(60_000)
""")
        p1 = json.loads(node.wait_for("R ")[2:])
        child.expect("s1/gw-a")
        child.expect(f"1\\.\\.{p1['last']} · {p1['last']} records")
        child.expect("BYPASS")
        node.go()
        r = node.result()
        last = r["end"]["last_seq"]
        child.expect(f"1\\.\\.{last} · {last} records")  # redrawn with the new records
        child.sendintr()
        child.expect("monitor: \\d+ messages")
        child.expect(pexpect.EOF)
    finally:
        child.close()
        child.logfile_read.close()
    assert child.exitstatus == 0
    screen = (tmp_path / "pty.log").read_text()
    assert "\x1b[" in screen  # drawn with terminal control sequences, not plain lines
    assert "gaps" in screen and "alarms" in screen and "energy" in screen


def test_options_and_a_refused_login_are_clear_errors(tmp_path):
    def run(*args, stdin=subprocess.DEVNULL):
        return subprocess.run([sys.executable, "-m", "host_tools.cli", "monitor", *args],
                              cwd=REPO, capture_output=True, text=True, timeout=30, stdin=stdin)

    r = run("127.0.0.1:1", "--share", "g")
    assert r.returncode == 2 and "--share needs --client-id" in r.stderr
    r = run("127.0.0.1:1", "--db", "postgresql://u:secret@127.0.0.1/x")
    assert r.returncode == 2 and "~/.pgpass" in r.stderr and "secret" not in r.stderr
    r = run("127.0.0.1:1", "--user", "ops")
    assert r.returncode == 2 and "--password-file" in r.stderr
    r = run("127.0.0.1:99999")
    assert r.returncode == 2 and "port must be" in r.stderr
    r = run("127.0.0.1:1", "--password-file", str(tmp_path / "none"), "--user", "ops")
    assert r.returncode == 2 and "No such file" in r.stderr
    pw = tmp_path / "pw"
    pw.write_text("wrong-password\n")
    with Broker(tmp_path / "mq", users={"ops": "right-password"}, tls=True) as b:
        r = run(f"127.0.0.1:{b.port}", "--user", "ops", "--password-file", str(pw))
        assert r.returncode == 1, r.stderr
        assert "refused the login" in r.stderr and "wrong-password" not in r.stderr + r.stdout
        # TLS against the test CA, the right password from a file: connects and subscribes
        pw.write_text("right-password\n")
        mon = MonitorProc(tmp_path, "tls", [f"localhost:{b.tls_port}", "--ca", b.ca_pem_path,
                                            "--user", "ops", "--password-file", str(pw)])
        mon.wait_for(f"monitor: connected to localhost:{b.tls_port}")
        mon.wait_for("monitor: subscribed to heatgw/#")
        mon.stop()


def test_a_store_that_fails_stops_the_monitor_and_loses_nothing(tmp_path, mosquitto_broker):  # noqa: F811
    """Another writer holds the SQLite file locked while records come: the monitor cannot
    store them, says so and stops (exit 1) without acknowledging them; started again with
    its client id, the broker delivers them from its persistent session."""
    b = mosquitto_broker
    rec = tmp_path / "site.sqlite"
    args = [f"127.0.0.1:{b.port}", "--site", "s1", "--record", str(rec), "--client-id", "rec-a"]
    mon = MonitorProc(tmp_path, "m", args)
    mon.wait_for("monitor: subscribed")
    node = start_node(tmp_path, b, "gw-a", """
await asyncio.sleep_ms(60_000)
out(phase=1, last=tel.last_seq)
sys.stdin.readline()
await asyncio.sleep_ms(60_000)
""")
    p1 = json.loads(node.wait_for("R ")[2:])
    wait_until(lambda: len(sqlite_seqs(rec)) == p1["last"], what="phase 1")
    lock = sqlite3.connect(rec, isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")
    node.go()
    last = node.result()["end"]["last_seq"]
    _out, err = mon.proc.communicate(timeout=60)
    mon.out.close()
    assert mon.proc.returncode == 1 and "the record store failed: database is locked" in err
    lock.execute("ROLLBACK")
    lock.close()
    assert len(sqlite_seqs(rec)) == p1["last"]  # nothing of phase 2 was stored
    mon.start()
    mon.wait_for("(session resumed)")
    wait_until(lambda: len(sqlite_seqs(rec)) == last, what="the records the broker kept")
    mon.stop()
    check_exactly_once(sqlite_seqs(rec), {"gw-a": last})


def test_a_fleet_is_one_line_per_node_and_the_view_names_what_it_shows():
    """More nodes than panels fit: one table line per node. Fed telemetry payloads that
    pass the node's JSON Schema (what a node publishes), rendered by rich as a terminal
    would show it."""
    from rich.console import Console

    from host_tools.liveview import PANELS_MAX, Fleet
    from host_tools.records import classify

    fleet = Fleet()
    names = [f"gw-{i:02d}" for i in range(PANELS_MAX + 2)]
    for i, name in enumerate(names):
        doc = {"v": 1, "seq": 7, "boot": 1, "up_ms": 60_000, "supply_c": 45.0 + i,
               "supply_why": None, "return_c": 35.0, "return_why": None,
               "sink_return_c": 33.9, "sink_return_why": None, "it_coolant_c": None,
               "it_coolant_why": "open", "dt_k": 10.0 + i, "dt_why": None, "flow_m3h": 5.5,
               "flow_why": None, "power_w": 64000, "power_why": None, "energy_wh": 1234.567,
               "volume_l": 98.765, "time_s": 60.0, "error_s": 0.0, "low_dt_s": 0.0,
               "state": "reuse" if i % 2 else "bypass", "relay_reuse": bool(i % 2),
               "reason": "recovered" if i % 2 else "sink_unavailable", "active": [],
               "latched": [], "heap_free": 41232, "valve_cmd_pct": 100 if i % 2 else 0,
               "valve_pct": None, "valve_why": "not_configured", "inputs": {}}
        topic = f"heatgw/s1/{name}/telemetry"
        payload = json.dumps(doc).encode()
        validate(topic, payload)
        lines = fleet.feed(classify(topic, payload), time.time())
        assert lines[0].endswith(f"s1/{name} #7 {doc['state']}({doc['reason']}) "
                                 f"supply={45.0 + i:.2f} return=35.00 dT={10.0 + i:.2f} "
                                 "flow=5.500 P_kW=64.00 E_kWh=1.235 gaps=0"), lines
    con = Console(width=200, record=True, color_system=None)
    con.print(fleet.render("header"))
    text = con.export_text()
    rows = [ln for ln in text.splitlines() if "s1/gw-" in ln]
    assert len(rows) == len(names) and "╭─" not in text  # a table, no panels
    assert all(f"s1/{n}" in r for n, r in zip(names, rows, strict=True))
    assert "reuse (recovered)" in rows[1] and "bypass (sink_unavailable)" in rows[0]
    assert "46.00" in rows[1] and "1.235" in rows[1]
