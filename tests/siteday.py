"""The complete-node day: ONE simulated 24 h day with every feature the node has, run once
per test session and shared by every test that checks something on it (tests/test_siteday.py
and later issues' tests). There is one 24 h day in the suite: a feature adds its part here
instead of running a day of its own.

    def test_something(complete_node_day):
        day = complete_node_day
        day.summary        # the harness summary (README, "Scenarios": every key)
        day.harness        # the Harness: node_events, saves, restores, cfg, ...
        day.console        # the node's console log (Path)
        day.broker         # the mosquitto the node published to (stopped at session end)
        day.messages       # every message the upstream got: (topic, payload, retain, dup, qos)
        day.retained       # what a new subscriber gets afterwards: the retained messages
        day.base           # the node's topic base, <prefix>/<site>/<node_id>
        day.records()      # (seq, "telemetry" | "event", doc) of the queue records
        day.extra[name]    # what a feature collected (below)
        day.heap_budget_bytes   # the budget the day must fit (the image not counted)

What runs (FEATURES, in order): scenarios/day_24h.json through host_tools.harness with
- `telemetry`: telemetry to a local mosquitto (tests/brokers.Broker) that requires a user
  name and password (the harness provisions the password into the node's secrets file),
  and a paho upstream (tests/brokers.Subscriber) with a PERSISTENT session on `heatgw/#`
  and `homeassistant/#`, subscribed before the node boots, collecting every message;
- `ha_discovery`: Home Assistant discovery on (`mqtt.ha_discovery_prefix`);
- `modbus`: the compute load's Eastron SDM630, a pymodbus server on Modbus TCP whose power
  and import energy follow the plant's IT load (the harness's `compute_meter`,
  host_tools/plantmeters.py), polled every 10 s (tests/test_modbus.py checks it); it is the
  node's compute source: the heat recovery ratio (`recovery`, tests/test_recovery.py
  checks it against the plant's truth);
- `romfs_code`: the node's code from a ROMFS image (`--romfs`), in the heap budget
  `mpinfo.heapsize(160)`, to which the harness adds what a board does not hold in its heap:
  the image and the host board's own modules (README, "Heap accounting on the host board");
- `calibration`: the supply/return converters' reference resistors 0.1 % off (opposite
  signs: 6 % of heat uncorrected) and a calibration.json on the node's flash that corrects
  them (an earlier channel calibration): the day's metering is right only if the node
  applies it at boot; its state carries it (tests/test_calibration.py);
- `pulse_flow`: the flow meter's pulse input with a debounce (`flow.min_pulse_ms`) and the
  stuck-input check on, counted by the host board's hardware counter while its flash
  operations mask interrupts; `day.extra["pulse_flow"]`: the pulses served, the node's
  pin figures (edges, interrupts, edges collapsed by masking);
- `console`: the node has a serial port (`serial="auto"`) and runs its console all day; a
  technician types a few commands during the day (harness `console` events, CONSOLE_LINES;
  tests/test_console.py checks the answers).
- `analog`: the valve's 4-20 mA position feedback beside its end switch, commanded by the
  node's 0-10 V output, the building loop's pressure (0-6 bar, 4-20 mA, low limit 1.0
  bar) and the tank level (0-2 m, 0-10 V), on the host board's emulated converter with
  +-2 codes of noise (tests/test_analog.py checks it).
- `recorder`: a real `heatgw monitor --record` (persistent session, the upstream's login
  from a password file) records the day into SQLite; tests/test_report.py writes the
  commissioning report of that record and checks its figures against the day's truth.
- `bms`: the building's BMS, a pymodbus client polling the node's Modbus TCP server (its
  input registers) and writing the sink heartbeat all day, the heartbeat a source of the
  sink rule (control.sink_sources.modbus); the node runs at most BMS_LEAD_MS of its time
  ahead of the client's last request (tests/test_bms.py checks it).

Environment, for development only (the defaults are the budget and the real day):
HEATGW_DAY_HEAP_KB=400 runs the node in `-X heapsize=400K` (plus the image) instead of the
budget; HEATGW_DAY_SCENARIO=path runs the same features on a shorter scenario (the day's
own checks then fail on its length, the feature checks still mean something);
HEATGW_SKIP_DAY=1 skips every test that uses the day.

Adding a feature (the field-I/O and console issues): write a function `feature(setup)` and
append it to FEATURES. Before the run it may
- merge configuration into the node's: `setup.config["modbus"] = {...}` (deep-merged
  into the scenario's `config`, so it is validated by the node like any config.json);
- set other scenario keys: `setup.scenario["sensor_model"] = {...}` (README, "Scenarios"),
  and add scenario events: `setup.events.append({"t_s": .., "do": ..})`;
- start its peers (a Modbus server, a pty) and register `setup.cleanups.append(stop)`;
- pass harness options: `setup.harness_kw["uplink"] = ...` (host_tools.harness.Harness);
- register `setup.collectors.append(fn)`: `fn(day)` runs after the run, while the peers
  still run, and stores what the feature saw in `day.extra["<feature>"]`.
Then check it in the feature's own test module with the `complete_node_day` fixture (a
test there that asserts something of the day: never a second day). A feature that needs
the harness to do something new adds it to the harness, for every scenario.
"""

import json
import os
from pathlib import Path

import pytest

from host_tools import mpinfo
from host_tools.harness import run_scenario
from host_tools.paths import REPO
from host_tools.scenario import deep_merge
from host_tools.uplink import Uplink
from tests.brokers import Broker, Subscriber
from tests.nodedriver import messages

DAY_SCENARIO = REPO / "scenarios" / "day_24h.json"
BUDGET_HOST64_KB = 160  # the complete node's heap budget on the 64-bit host (issue 7)
# The heap the day runs in until the complete node fits the budget. With every feature
# merged (telemetry, Modbus and the compute meter, calibration, the pulse input, the
# console, configuration integrity, the analogue inputs, the BMS server) the node's own peak
# is 185.1 KB from ROMFS; in 192K it died at boot (MemoryError: the 7th qstr pool, 1280
# entries, found no 14 KB block in a heap fragmented by the boot's configuration check);
# README, "The complete-node day". test_day_heap_peak_is_under_90_percent_of_the_budget is
# a strict xfail meanwhile: when the node fits, it passes, fails as XPASS, and this goes
# back to the budget. 320K: the node sits at ~2,530 qstrs, a few below the 7th pool's end
# (2,540); a few more names open the 8th pool, 2,560 entries (28 KB) in one block, wherever
# the node then is (at 2,540, in 256K, the host board's REPL loaded at the day's end found
# no such block: "MemoryError: memory allocation failed, allocating 2560 bytes").
RUN_HEAP_HOST64_KB = 320
NODE_USER, UPSTREAM_USER = "heatgw-node", "upstream"
HA_PREFIX = "homeassistant"


class Setup:
    """What the features prepare before the run (module doc)."""

    def __init__(self, tmp):
        self.tmp = Path(tmp)
        self.config = {}  # deep-merged into the scenario's config
        self.scenario = {}  # other scenario keys (sensor_model, calibration_file, ...)
        self.harness_kw = {}  # run_scenario keyword arguments
        self.cleanups = []  # after everything, last first
        self.collectors = []  # fn(day), after the run, peers still up
        self.events = []  # scenario events, added to the scenario's own
        self.broker = None  # the telemetry feature's mosquitto
        self.upstream_login = None  # (user, password) for upstream subscribers


class Day:
    def __init__(self, summary, harness):
        self.summary = summary
        self.harness = harness
        self.console = Path(summary["console_log"])
        self.broker = None
        self.messages = []
        self.retained = []
        self.base = (summary.get("uplink") or {}).get("topic_base")
        self.extra = {}
        self.heap_budget_bytes = mpinfo.heap_kb(BUDGET_HOST64_KB) * 1024

    def records(self):
        """(seq, "telemetry" | "event", doc) of every queue record received, in order."""
        out = []
        for topic, payload, *_ in self.messages:
            if topic in (self.base + "/telemetry", self.base + "/event"):
                doc = json.loads(payload)
                out.append((doc["seq"], topic.rsplit("/", 1)[1], doc))
        return out

    def event_kinds(self):
        """The kinds of every event the node logged (through its record sink)."""
        return [e.get("kind") for e in self.harness.node_events]


# -- the features ------------------------------------------------------------------------


def telemetry(setup):
    node_pw, up_pw = "node-" + os.urandom(8).hex(), "up-" + os.urandom(8).hex()
    broker = Broker(setup.tmp / "mosquitto", users={NODE_USER: node_pw, UPSTREAM_USER: up_pw})
    broker.start()
    setup.cleanups.append(broker.stop)
    setup.broker, setup.upstream_login = broker, (UPSTREAM_USER, up_pw)
    pw = setup.tmp / "mqtt_password"
    pw.write_text(node_pw + "\n")
    # a persistent session from before the node boots: nothing it publishes is missed
    sub = Subscriber(broker, ["heatgw/#", HA_PREFIX + "/#"], client_id="siteday-upstream",
                     clean_session=False, username=UPSTREAM_USER, password=up_pw)
    setup.cleanups.append(sub.close)
    setup.harness_kw["uplink"] = Uplink(f"127.0.0.1:{broker.port}", user=NODE_USER,
                                        password_file=pw)

    def collect(day):
        day.broker = broker
        day.messages = messages(sub, quiet_s=1.0)
        fresh = Subscriber(broker, [HA_PREFIX + "/#", day.base + "/#"],
                           client_id="siteday-late", username=UPSTREAM_USER, password=up_pw)
        day.retained = messages(fresh, quiet_s=1.0)
        fresh.close()

    setup.collectors.append(collect)


def ha_discovery(setup):
    setup.config = deep_merge(setup.config, {"mqtt": {"ha_discovery_prefix": HA_PREFIX}})


# The modbus feature: the compute load's SDM630 (pymodbus, Modbus TCP) and what it serves
SDM630_ENERGY_KWH = 12345.75  # its import energy at t = 0; it grows with the IT load
MODBUS_PERIOD_S = 10


def modbus(setup):
    """An Eastron SDM630 (a pymodbus server on Modbus TCP) metering the compute load: its
    power and import energy follow the plant's IT load in node time (the harness's
    `compute_meter`, host_tools/plantmeters.py, which owns the server and adds the meter
    to the node's modbus section: bus `plant`, meter `compute`, role compute, the built-in
    map); the node polls it every 10 s all day and takes it as its compute source (the
    heat recovery ratio, `recovery.compute`). Collected: the summary's `modbus` record, the
    reads the server answered and the values it served last."""
    setup.scenario["compute_meter"] = {"model": "sdm630", "slave": 1,
                                       "energy_kwh": SDM630_ENERGY_KWH,
                                       "period_s": MODBUS_PERIOD_S}

    def collect(day):
        cm = day.harness.compute_meter
        day.extra["modbus"] = {"record": day.summary.get("modbus"), "served": cm.reads,
                               "last_served": dict(cm.served)}

    setup.collectors.append(collect)


def romfs_code(setup):
    setup.harness_kw["romfs"] = True
    kb = os.environ.get("HEATGW_DAY_HEAP_KB")
    setup.harness_kw["heapsize"] = f"{int(kb)}K" if kb else mpinfo.heapsize(RUN_HEAP_HOST64_KB)


def calibration(setup):
    # The chips' reference resistors 0.1 % off, and the channel calibration that a
    # technician made earlier (README "Calibration") on the flash: the line through both
    # precision resistors as these chips read them, R_raw = R * nominal / fitted.
    refs = [1000.0, 1385.0]
    model, sensors = {}, {}
    for name, dev in (("supply", -0.1), ("return", 0.1)):
        k = 1 + dev / 100
        model[name] = {"r_ref_dev_pct": dev}
        sensors[name] = {"channel": {
            "method": "channel", "date": {"utc": 1_789_900_000, "boot": 1, "up_s": 3600},
            "n": 60, "r0_ohm": 1000, "wires": 4, "r_ref_ohm": 4300, "ref_ohm": refs,
            "read_ohm": [r / k for r in refs], "gain": k, "offset_ohm": 0.0}}
    setup.scenario["sensor_model"] = model
    setup.scenario["calibration_file"] = {"v": 1, "sensors": sensors}


def pulse_flow(setup):
    # a 1 ms debounce (the served pulses are 5 ms lows) and the stuck check (the meter
    # never stops low in the day): both on all day without a false count or fault
    setup.config = deep_merge(setup.config, {"flow": {"min_pulse_ms": 1.0,
                                                      "stuck_active_s": 600}})

    def collect(day):
        flash = day.summary.get("flash") or {}
        day.extra["pulse_flow"] = {"served": day.harness.world.sent,
                                   "pin": flash.get("pulses")}

    setup.collectors.append(collect)


def analog(setup):
    """Analogue inputs (heatgw.analog): the valve's position feedback and 0-10 V command,
    the loop pressure with a low limit, a tank level. Collected: the summary's `analog`
    record (the node's last, each input's value, reason and signal)."""
    setup.config = deep_merge(setup.config, {"analog": {
        "valve": {"channel": "ain1", "signal": "4-20mA", "output": "pwm"},
        "inputs": {
            "loop_pressure": {"channel": "ain2", "kind": "pressure", "signal": "4-20mA",
                              "value_lo": 0.0, "value_hi": 6.0, "unit": "bar", "low": 1.0},
            "tank_level": {"channel": "ain3", "kind": "level", "signal": "0-10V",
                           "value_lo": 0.0, "value_hi": 2.0, "unit": "m",
                           "critical": False}}}})
    setup.scenario["analog_noise_lsb"] = 2

    def collect(day):
        day.extra["analog"] = {"record": day.summary.get("analog")}

    setup.collectors.append(collect)


# The console feature: what a technician types at the node's serial port during the day
# (harness `console` events: each line at its time; `maintenance on` is answered `no`).
CONSOLE_LINES = [(600, "status"), (800, "sensors"), (1000, "relay 5"), (1200, "alarms"),
                 (1400, "mqtt"), (1600, "net"), (1800, "log 3"), (2000, "calibrate"),
                 (2200, "help ack"), (2400, "frobnicate"), (2600, "maintenance on\rno"),
                 (2800, "safemode"), (3000, "status")]


def console(setup):
    """The technician's console (heatgw.console) on the node's serial port all day, and
    a few commands typed (CONSOLE_LINES). Collected: the console log's text from the first
    typed line on (day.extra["console"])."""
    setup.harness_kw["serial"] = "auto"
    for t_s, line in CONSOLE_LINES:
        setup.events.append({"t_s": t_s, "do": "console", "line": line})

    def collect(day):
        day.extra["console"] = {"typed": day.harness.console_typed,
                                "log": day.console.read_bytes()}

    setup.collectors.append(collect)


def recorder(setup):
    """`heatgw monitor --record` (a real one, in a subprocess) records the day from the
    telemetry feature's broker, with the upstream's login from a password file and a
    persistent session, subscribed before the node boots. Collected, once it holds every
    record the node published: day.extra["recorder"] = {"record": the SQLite file,
    "stats": the monitor's --stats}; tests/test_report.py reports on it against the day's
    truth."""
    import signal
    import subprocess
    import sys
    import time

    from host_tools import records

    b, (user, pw) = setup.broker, setup.upstream_login
    pwf = setup.tmp / "recorder_password"
    pwf.write_text(pw + "\n")
    rec, stats, log = (setup.tmp / "day.sqlite", setup.tmp / "recorder.json",
                       setup.tmp / "recorder.out")
    with open(log, "w") as out:
        mon = subprocess.Popen(
            [sys.executable, "-m", "host_tools.cli", "monitor", f"127.0.0.1:{b.port}",
             "--user", user, "--password-file", str(pwf), "--record", str(rec),
             "--client-id", "siteday-recorder", "--view", "plain", "--stats", str(stats)],
            cwd=REPO, stdout=out, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)

    def stop():
        if mon.poll() is None:
            mon.send_signal(signal.SIGTERM)
            mon.communicate(timeout=60)

    setup.cleanups.append(stop)
    deadline = time.monotonic() + 30
    while "monitor: subscribed" not in log.read_text():
        if mon.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("the recorder did not subscribe: " + log.read_text()[-1000:])
        time.sleep(0.05)

    def collect(day):
        last = (day.summary.get("mqtt") or {}).get("last_seq") or 0
        deadline = time.monotonic() + 60
        while True:
            st = records.open_store(rec)
            n = st.count()
            st.close()
            if n >= last or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        stop()
        day.extra["recorder"] = {"record": rec, "returncode": mon.returncode,
                                 "stats": json.loads(stats.read_text())}

    setup.collectors.append(collect)


# The bms feature: the building's BMS polls the node (heatgw.bms) and writes the heartbeat
BMS_TIMEOUT_S = 120  # control.sink_sources.modbus in the day
BMS_LEAD_MS = 40_000  # HEATGW_IO_LEAD_MS: the node runs at most this far ahead of it
BMS_PERIOD_S = 0.05  # real seconds between two of its polls (a read and a heartbeat)


def bms(setup):
    """A pymodbus client (the BMS, tests/bmsclient.py, a process of its own) that reads
    the node's 45 input registers and writes the heartbeat register (a counter 1..65535:
    never 0) every BMS_PERIOD_S of real time, all day; the heartbeat is a source of the
    sink rule with a 120 s timeout. Collected: what it read and wrote (uptime and energy
    as it saw them) and the node's `bms` record."""
    import subprocess
    import sys

    from tests.brokers import free_port

    port = free_port()
    setup.config = deep_merge(setup.config, {
        "bms": {"port": port, "clients": {"bms": "127.0.0.1"}},
        "control": {"sink_sources": {"modbus": BMS_TIMEOUT_S}}})
    setup.harness_kw["node_env"] = {"HEATGW_IO_LEAD_MS": str(BMS_LEAD_MS)}
    proc = subprocess.Popen([sys.executable, "-m", "tests.bmsclient", str(port),
                             str(BMS_PERIOD_S)], cwd=REPO, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    got = []

    def halt():
        if proc.poll() is None:
            try:
                proc.stdin.write("stop\n")
                proc.stdin.flush()
                got.append(json.loads(proc.stdout.readline() or "null"))
                proc.wait(20)
            except (OSError, ValueError, subprocess.TimeoutExpired):
                proc.kill()

    setup.cleanups.append(halt)

    def collect(day):
        halt()
        day.extra["bms"] = {**(got[0] if got and got[0] else {}),
                            "record": day.summary.get("bms")}

    setup.collectors.append(collect)


FEATURES = [telemetry, ha_discovery, modbus, romfs_code, calibration, pulse_flow, console,
            analog, bms, recorder]


# -- the fixture -------------------------------------------------------------------------


def run_day(tmp, features=FEATURES, scenario=None):
    """Run the scenario once with every feature; the Day (peers still up) and the cleanups
    to call when done."""
    setup = Setup(tmp)
    try:
        for feature in features:
            feature(setup)
        sc = json.loads(Path(scenario or DAY_SCENARIO).read_text())
        sc["name"] = "complete_node_" + sc.get("name", "day")
        sc["config"] = deep_merge(sc.get("config", {}), setup.config)
        sc.update(setup.scenario)
        sc["events"] = sorted(sc.get("events", []) + setup.events, key=lambda e: e["t_s"])
        path = setup.tmp / "scenario.json"
        path.write_text(json.dumps(sc, indent=1))
        summary, h = run_scenario(path, workdir=setup.tmp / "node", **setup.harness_kw)
        day = Day(summary, h)
        for collect in setup.collectors:
            collect(day)
    except BaseException:
        for stop in reversed(setup.cleanups):
            stop()
        raise
    return day, setup.cleanups


@pytest.fixture(scope="session")
def complete_node_day(tmp_path_factory):
    """The complete-node day (module doc), run once per session."""
    if os.environ.get("HEATGW_SKIP_DAY") == "1":
        pytest.skip("HEATGW_SKIP_DAY=1")
    day, cleanups = run_day(tmp_path_factory.mktemp("complete_node_day"),
                            scenario=os.environ.get("HEATGW_DAY_SCENARIO"))
    yield day
    for stop in reversed(cleanups):
        stop()
