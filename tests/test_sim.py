"""`heatgw sim` (host_tools/sim.py, simview.py, simrecord.py, brokers.py) and `make sim`.

Each run is the real thing: the firmware in the micropython binary under the harness (one
process and one plant per node), a broker the run starts (mosquitto; amqtt where mosquitto
is not on PATH), the monitor's recorder writing the record, `heatgw report` on it. Short
runs (an hour or less of simulated time, seconds of wall time each):

- a short day ends by itself and leaves the record and the report, whose figures (read
  from report.json, computed from the record's data) match the run's truth from the harness
  summary: the heat against the node's own final meter and the plant's IF97 heat, each
  completed hour's heat recovery ratio against the plant's, completeness from seq across
  an outage of the run's broker (every record, none twice), the relay transitions;
- the live view in a pseudo-terminal (pexpect): it draws, it updates, a key press reaches
  the node (the relay drops with the reason the key's fault causes, at the instant the
  harness applied it), the broker goes down and up from a key, `q` ends the run in order;
- `--nodes 2`: two node processes, one broker, distinct ids, both records complete, a fault
  aimed at one node reaches that node only;
- the embedded amqtt when mosquitto is not on PATH;
- bad options, and the README's Telegraf and Node-RED snippets parse and say what the
  telemetry payload has.
"""

import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tomllib

import pytest

from host_tools import sim
from host_tools.paths import REPO
from tests.brokers import require_mosquitto

ENV = {**os.environ, "COLUMNS": "200"}


def run_sim(*args, env=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "host_tools.cli", "sim", *map(str, args)],
                          cwd=REPO, capture_output=True, text=True, timeout=timeout,
                          env=env or ENV, stdin=subprocess.DEVNULL)


def printed(stdout, what):
    """The path a `what: PATH` line of the run's end names."""
    m = re.search(rf"^{re.escape(what)}: (\S+)$", stdout, re.M)
    assert m, f"no '{what}:' line in:\n{stdout[-3000:]}"
    return m.group(1)


def record_rows(path, node):
    con = sqlite3.connect(path)
    try:
        return con.execute("SELECT kind, seq, payload FROM records WHERE node = ? "
                           "ORDER BY seq", (node,)).fetchall()
    finally:
        con.close()


# -- a short day, its record and its report against the truth ---------------------------


@pytest.fixture(scope="module")
def short_day(tmp_path_factory):
    """sim_day for 65 minutes and a half (the last telemetry, every 60 s at x1.067 s,
    0.43 s before the stop), with a sink outage, the broker down for 5 minutes and back,
    and a sensor opened: (completed process, the run's folder)."""
    require_mosquitto()
    out = tmp_path_factory.mktemp("short_day")
    r = run_sim("--duration", "3901.5", "--out", out, "--view", "plain", "--no-pdf",
                "--inject", "1200:sink_lost", "--inject", "1500:sink_restored",
                "--inject", "2400:broker_down", "--inject", "2700:broker_up",
                "--inject", "3000:sensor_open", "--inject", "3300:sensor_ok")
    return r, out


def test_a_short_day_ends_by_itself_with_its_record_and_report(short_day):
    r, out = short_day
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    lines = r.stdout.strip().splitlines()
    head = next(ln for ln in lines if ln.startswith("heatgw sim: "))
    assert head.startswith("heatgw sim: sim_day, 1 node, 01:05:01 simulated; broker "
                           "127.0.0.1:")
    assert "(mosquitto, started for this run)" in head
    # the plain view: a progress line per 1/24 of the run, the relay changes, the broker
    assert sum(1 for ln in lines if re.match(r"\[ *\d+%\] ", ln)) >= 20
    assert any("relay BYPASS (sink_unavailable)" in ln for ln in lines)
    assert any("broker down at 00:40:00 (--inject)" in ln for ln in lines)
    assert any("broker up again at 00:45:00 (--inject)" in ln for ln in lines)
    # the end: the record, the summary, the report, and last where the report is
    record = printed(r.stdout, "record")
    summary = json.loads(open(printed(r.stdout, "summary")).read())
    assert lines[-1] == f"the report: {out / 'report' / 'report.html'}"
    assert os.path.getsize(record) > 0 and (out / "report" / "report.json").exists()
    con = sqlite3.connect(record)
    meta = dict(con.execute("SELECT key, value FROM meta").fetchall())
    cfg = json.loads(con.execute("SELECT config FROM node_config").fetchone()[0])
    con.close()
    assert meta["writer"] == "heatgw sim" and meta["scenario"] == "sim_day"
    assert cfg["modbus"]["meters"]["compute"]["role"] == "compute"
    assert summary["duration_s"] == 3901.5 and summary["mqtt"]["reconnects"] >= 1


def test_the_reports_figures_match_the_runs_truth(short_day):
    r, out = short_day
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads(open(printed(r.stdout, "summary")).read())
    data = json.loads((out / "report" / "report.json").read_text())
    assert data["truth_node"] == "sim/heatgw-sim"
    n = data["nodes"]["sim/heatgw-sim"]
    # heat: the record's last telemetry is the node's own meter 0.43 s before its stop
    # (to the mWh the payload prints, and at most 0.5 s of 100 kW), and the plant's IF97
    # heat within the meter's class
    final = summary["metered"]["energy_kwh"]
    assert abs(n["heat"]["energy_kwh"] - final) < 0.001 + 100 * 0.5 / 3600, (n["heat"], final)
    plant = summary["plant"]["heat_delivered_kwh"]
    assert abs(n["heat"]["energy_kwh"] - plant) / plant * 100 < 0.5
    assert n["truth_check"]["record_ends_s_before_stop"] < 1.0
    # the heat recovery ratio: each completed hour as the record has it, against the
    # plant's heat over the compute load's true energy of the same span
    hours = summary["recovery"]["hours"]
    assert len(hours) == 1 and len(n["compute"]["hours"]) == 1
    got, want = n["compute"]["hours"][0]["ratio"], hours[0]
    assert got == pytest.approx(want["node_ratio"], abs=1e-4)
    assert abs(got - want["true_ratio"]) / want["true_ratio"] < 0.005, (got, want)
    assert n["compute"]["ratio"] == pytest.approx(n["compute"]["node_ratio_total"], rel=0.01)
    # completeness: every record the node published, across the broker's outage, once
    c = n["completeness"]
    last = summary["mqtt"]["last_seq"]
    assert (c["first_seq"], c["last_seq"], c["received"], c["missing"]) == (1, last, last, [])
    assert c["truth_percent"] == 100.0
    # the relay transitions: what the harness saw at the coils, with the node's reasons
    want = [(round(t["t_s"], 3), t["state"], t["reason"])
            for t in summary["relay_transitions"] if t["t_s"] <= n["span"]["duration_s"]]
    got = [(t["up_ms"] / 1000, t["state"], t["reason"]) for t in n["transitions"]]
    assert got == want, (got, want)
    assert [s for _, s, _ in got] == ["reuse", "bypass", "reuse", "bypass", "reuse"]
    assert [w for _, _, w in got][1::2] == ["sink_unavailable", "sensor_fault:sink_return"]


# -- the live view in a pseudo-terminal ---------------------------------------------------


def test_the_live_view_draws_updates_and_its_keys_reach_the_node(tmp_path):
    require_mosquitto()
    pexpect = pytest.importorskip("pexpect")
    out = tmp_path / "run"
    child = pexpect.spawn(sys.executable, ["-m", "host_tools.cli", "sim", "--duration", "4h",
                                           "--out", str(out), "--no-pdf"],
                          cwd=str(REPO), env=ENV, dimensions=(50, 200), encoding="utf-8",
                          timeout=120)
    try:
        child.expect(r"heatgw sim.{0,10} · sim_day · broker 127\.0\.0\.1:\d+ .*up")  # drawn
        seen = set()
        while len(seen) < 3:  # it updates: the simulated time moves on the progress line
            child.expect(r"(\d\d:\d\d:\d\d) of 04:00:00 simulated")
            seen.add(child.match.group(1))
        child.expect(r"REUSE.{0,40}\(recovered\)")
        child.send("s")  # sink lost
        child.expect(r"BYPASS.{0,40}\(sink_unavailable\)")
        child.expect(r"faults.{0,30}sink lost")
        child.send("b")  # broker down
        child.expect(r"DOWN")
        child.expect(r"node: [^\r\n]*(closed|refused|retrying|gone)")  # the node says so
        child.send("b")  # and up again
        child.expect(r"broker up again \(key b\)")
        child.send("q")
        child.expect(r"the report: (\S+)", timeout=120)
        child.expect(pexpect.EOF, timeout=60)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0
    summary = json.loads(next(out.glob("summary-*.json")).read_text())
    (inj,) = summary["injected"]
    assert inj["do"] == "sink_lost"
    # the key's event reached the node: the relay dropped for it within a control tick
    drop = next(t for t in summary["relay_transitions"] if t["reason"] == "sink_unavailable")
    assert drop["state"] == "bypass" and 0 <= drop["t_s"] - inj["t_s"] <= 1.1
    # q ended the run early, in order: the node saved and stopped, the record holds it
    assert summary["duration_s"] < 4 * 3600
    assert summary["metered"]["time_s"] == pytest.approx(summary["duration_s"], abs=1.1)
    rows = record_rows(out / "sim_day.sqlite", "heatgw-sim")
    assert any(k == "event" and "reason=sink_unavailable" in p for k, _, p in rows)
    seqs = [s for _, s, _ in rows]
    assert seqs == list(range(1, len(seqs) + 1))


# -- a site of two nodes ------------------------------------------------------------------


def test_two_nodes_on_one_broker(tmp_path):
    require_mosquitto()
    r = run_sim("--nodes", "2", "--duration", "20m", "--out", tmp_path, "--view", "plain",
                "--no-report", "--inject", "700:sensor_open@2")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    record = printed(r.stdout, "record")
    con = sqlite3.connect(record)
    nodes = sorted(n for (n,) in con.execute("SELECT DISTINCT node FROM records"))
    con.close()
    assert nodes == ["heatgw-sim-1", "heatgw-sim-2"]
    for i, node in enumerate(nodes):
        s = json.loads((tmp_path / f"summary-{node}.json").read_text())
        seqs = [q for _, q, _ in record_rows(record, node)]
        assert seqs == list(range(1, s["mqtt"]["last_seq"] + 1)), node  # every record, once
        reasons = [t["reason"] for t in s["relay_transitions"]]
        if i == 0:
            assert "sensor_fault:sink_return" not in reasons
        else:
            assert "sensor_fault:sink_return" in reasons
        assert s["uplink"]["topic_base"] == f"heatgw/sim/{node}"
    assert "  sim/heatgw-sim-1: metered " in r.stdout and "  sim/heatgw-sim-2: metered " \
        in r.stdout


# -- the embedded broker -------------------------------------------------------------------


def test_the_embedded_amqtt_runs_when_mosquitto_is_not_on_path(tmp_path):
    path = os.pathsep.join([os.path.dirname(sys.executable), "/usr/bin", "/bin"])
    if shutil.which("mosquitto", path=path):
        pytest.skip("mosquitto is in /usr/bin or /bin here: no PATH without it")
    env = {k: v for k, v in ENV.items() if k != "HEATGW_MOSQUITTO"}
    env["PATH"] = path
    r = run_sim("--duration", "10m", "--out", tmp_path, "--view", "plain", "--no-report",
                env=env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "(amqtt, started for this run (mosquitto is not on PATH" in r.stdout
    s = json.loads(open(printed(r.stdout, "summary")).read())
    seqs = [q for _, q, _ in record_rows(printed(r.stdout, "record"), "heatgw-sim")]
    assert s["mqtt"]["acked"] > 0 and seqs == list(range(1, s["mqtt"]["last_seq"] + 1))
    assert "amqtt" in open(tmp_path / "broker" / "amqtt.yaml").read()


def test_make_sim_runs_the_default_day_on_a_broker_it_starts():
    """`make sim`: the venv and the MicroPython libraries first (the Makefile's bootstrap,
    as every target), then `heatgw sim` with nothing more: the default day, its own broker."""
    r = subprocess.run(["make", "-n", "sim"], cwd=REPO, capture_output=True, text=True,
                       check=True)
    line = next(x for x in r.stdout.splitlines() if "host_tools.cli" in x)
    assert line.split()[1:] == ["-m", "host_tools.cli", "sim"]
    assert re.search(r"^sim: \$\(STAMP\) \$\(MPLIBS\)$",
                     (REPO / "Makefile").read_text(), re.M)
    assert sim.build_parser().parse_args([]).scenario == str(REPO / "scenarios" /
                                                                "sim_day.json")
    assert sim.build_parser().parse_args([]).broker is None
    day = json.loads((REPO / "scenarios" / "sim_day.json").read_text())
    assert day["duration_s"] >= 86400
    dos = [e["do"] for e in day["events"]]
    assert "sink_lost" in dos and any(e.get("fault") == "open" for e in day["events"])


def test_bad_options_are_clear_errors_and_start_nothing(tmp_path):
    for args, text in ((["--nodes", "0"], "--nodes 0: 1..16"),
                       (["--inject", "10:flood"], "no command 'flood'"),
                       (["--inject", "sink_lost"], "expected T:COMMAND"),
                       (["--inject", "1h:sink_lost@3"], "@NODE must be 1..1"),
                       (["--inject", "5:pump_off:supply"], "pump_off takes no argument"),
                       (["--duration", "soon"], "not a time"),
                       ([str(tmp_path / "none.json")], "scenario ")):
        r = run_sim(*args, "--out", tmp_path / "x", timeout=60)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        assert text in r.stderr, (args, r.stderr)
        assert not (tmp_path / "x" / "broker").exists()  # no broker was started


def test_commands_and_times_parse():
    assert sim.parse_inject("09:30:sensor_open:supply@2", 2) == (34200, "sensor_open",
                                                                  "supply", [1])
    assert sim.parse_inject("1.5h:broker_down", 3) == (5400.0, "broker_down", None, [0, 1, 2])
    assert sim.fault_events("sensor", True, None) == [
        {"do": "sensor_fault", "sensor": "sink_return", "fault": "open"}]
    assert sim.fault_events("pump", True) == [{"do": "pump", "on": False}]


# -- the README's snippets for upstream systems -------------------------------------------


def readme_block(marker):
    """The code block right after the README's `<!-- marker -->` comment."""
    text = (REPO / "README.md").read_text()
    m = re.search(rf"<!-- {re.escape(marker)} -->\n```[a-z]*\n(.*?)^```$", text, re.M | re.S)
    assert m, f"no block after <!-- {marker} --> in the README"
    return m.group(1)


def telemetry_keys():
    schema = json.loads((REPO / "schemas" / "telemetry.schema.json").read_text())
    return set(schema["properties"])


def test_the_telegraf_snippet_parses_and_reads_what_the_telemetry_has():
    conf = tomllib.loads(readme_block("telegraf.conf"))
    (mc,) = conf["inputs"]["mqtt_consumer"]
    assert mc["data_format"] == "json_v2" and mc["qos"] == 1 and mc["persistent_session"]
    assert mc["client_id"] and mc["topics"] == ["$share/telegraf/heatgw/+/+/telemetry"]
    (tp,) = mc["topic_parsing"]
    assert tp["topic"] == "heatgw/+/+/telemetry" and tp["tags"] == "_/site/node/_"
    (jv,) = mc["json_v2"]
    keys = telemetry_keys()
    paths = [f["path"] for f in jv["field"]] + [t["path"] for t in jv["tag"]]
    assert set(paths) <= keys, set(paths) - keys
    assert jv["timestamp_path"] == "utc" and jv["timestamp_format"] == "unix"
    required = set(json.loads((REPO / "schemas" / "telemetry.schema.json").read_text())
                   ["required"])
    for f in jv["field"]:  # a key only some nodes send is optional, or Telegraf refuses
        assert f.get("optional", False) == (f["path"] not in required), f
        assert f["type"] in ("float", "int", "bool")
    assert conf["outputs"]["influxdb_v2"][0]["bucket"]


def test_the_node_red_flow_parses_and_its_wires_hold():
    flow = json.loads(readme_block("node-red flow"))
    ids = {n["id"] for n in flow}
    assert len(ids) == len(flow)
    tabs = {n["id"] for n in flow if n["type"] == "tab"}
    brokers = {n["id"]: n for n in flow if n["type"] == "mqtt-broker"}
    ins = [n for n in flow if n["type"] == "mqtt in"]
    assert ins and tabs and brokers
    topic_ok = re.compile(r"^(#$|(\+|[^+#]*)(\/(\+|[^+#]*))*(\/(\+|#|[^+#]*))?$)")  # node-red's
    for n in flow:
        if n["type"] not in ("tab", "mqtt-broker"):
            assert n["z"] in tabs, n
            for out in n["wires"]:
                assert set(out) <= ids, n
    for n in ins:
        assert n["broker"] in brokers and topic_ok.match(n["topic"]), n
        assert n["qos"] == "1" and n["datatype"] == "json"
    assert "$share/nodered/heatgw/+/+/telemetry" in [n["topic"] for n in ins]
    assert not brokers[ins[0]["broker"]]["cleansession"]  # a persistent session


def test_the_home_assistant_automation_parses():
    import yaml

    (auto,) = yaml.safe_load(readme_block("home-assistant automation"))["automation"]
    (trig,) = auto["triggers"]
    assert trig["trigger"] == "mqtt" and re.fullmatch(r"heatgw/site1/\+/alarm/\+", trig["topic"])
    assert "trigger.payload != ''" in auto["conditions"][0]["value_template"]


def test_the_fail_safe_table_has_every_reason_and_its_latching():
    """README "Every situation": each condition of heatgw/failsafe.py has its row, and the
    latches column says yes exactly for failsafe.LATCHING."""
    sys.path.insert(0, str(REPO / "firmware"))
    try:
        from heatgw import failsafe
    finally:
        sys.path.pop(0)
    text = (REPO / "README.md").read_text()
    table = text[text.index("### Every situation: what the relays do"):]
    table = table[:table.index("\n\n", table.index("| situation |"))]
    rows = [[c.strip() for c in ln.strip("|").split("|")] for ln in table.splitlines()
            if ln.startswith("| ") and not ln.startswith("| situation")]
    assert all(len(r) == 5 for r in rows)
    reasons = [r for r in failsafe.PRIORITY if r != failsafe.BOOT]
    for reason in reasons:
        mine = [r for r in rows if f"(`{reason}" in r[0] or f"`{reason}<" in r[0]
                or f"`{reason}`" in r[0]]
        assert mine, f"no row for {reason}"
        for r in mine:
            assert r[3].startswith("**yes**") == (reason in failsafe.LATCHING), r
    assert set(failsafe.LATCHING) == {failsafe.IT_COOLANT_HIGH, failsafe.VALVE_STUCK}


def test_the_readmes_links_to_its_own_chapters_resolve():
    text = (REPO / "README.md").read_text()
    slugs = set()
    for h in re.findall(r"^#+ (.+)$", text, re.M):
        slug = re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-")
        slugs.add(slug)
    mine = text[text.index("## MQTT topics, payloads and alarms"):text.index("## Layout")]
    mine += text[:text.index("## Installing a node")]
    for link in set(re.findall(r"\]\(#([^)]+)\)", mine)):
        assert link in slugs, link
