"""The technician console (heatgw.console and its commands) against the real micropython
binary: in process (the line assembler, parser and dispatcher on a whole node, fuzzed with
10,000+ lines) and over the host board's serial port with pexpect (every command, its
errors and its confirmation; a fuzz sample; Ctrl-C and the REPL's control characters
with the console running; safe mode after a crash loop). README "Console".
"""

import json
import os
import re
import threading
import time
from pathlib import Path

import pexpect
import pytest

from host_tools.benchnode import BenchNode
from host_tools.build_mpy import build as build_mpy
from host_tools.build_mpy import host_mpy_dir
from host_tools.harness import Harness
from host_tools.paths import REPO
from host_tools.scenario import load_scenario
from host_tools.uplink import Uplink
from tests.brokers import free_port
from tests.console_fuzz import corpus
from tests.test_serial_port import PROMPT, settle, terminal

CON = b"heatgw> "
SAFE = b"heatgw[safe mode]> "
# the node's secrets: none of them may ever appear in what the console writes
SECRETS = {"command_key": "5ec7e7" + "ab" * 29, "mqtt_password": "mqtt-Pa55-w0rd-zz9",
           "wifi_ssid": "site-ssid-QX7", "wifi_password": "wifi-Pa55-w0rd-kk3"}
SECRET_VALUES = [v.encode() for v in SECRETS.values()]


def node_config(broker_port=None):
    cfg = json.loads((REPO / "scenarios" / "default_config.json").read_text())
    cfg["mqtt"] = {"host": "127.0.0.1", "port": broker_port or free_port(), "site": "s1",
                   "username": "node", "keepalive_s": 60}
    return cfg


# -- in process: 10,000+ lines through the assembler, parser and dispatcher ------------

FUZZ_RIG = r"""
import board, json, sys, time
d = board.data_dir()
with open(d + "/config.json", "w") as f:
    f.write(CFG)
with open(d + "/secrets.json", "w") as f:
    f.write(SECRETS)
from heatgw import start
gw, asyncio = start.build()
from heatgw.console import Console


class Feed:
    # what a technician types, from the corpus file, in chunks of 0..32 bytes (a
    # port that has nothing, a part, or a full read)
    def __init__(self, path):
        self.f = open(path, "rb")
        self.left = SIZE
        self.rnd = 12345

    def readinto(self, buf):
        self.rnd = (self.rnd * 1103515245 + 12345) & 0x3FFFFFFF
        n = (self.rnd >> 8) % (len(buf) + 1)
        if n > self.left:
            n = self.left
        if n == 0:
            return 0
        got = self.f.readinto(memoryview(buf)[:n])
        self.left -= got
        return got


def state():
    fs = gw.failsafe
    with open(d + "/config.json") as f:
        cfg = f.read()
    import binascii, hashlib
    with open(d + "/secrets.json", "rb") as f:  # its hash: the RESULT line holds no secret
        sec = binascii.hexlify(hashlib.sha256(f.read()).digest()).decode()
    ib = gw.inbox
    return {"relay": gw.relay_reuse, "maintenance": gw.inputs.maintenance,
            "maintenance_by": gw.inputs.maintenance_by, "latched": list(fs.latched),
            "inbox": [sorted(ib._maint), sorted(ib._sink), ib._n], "fault": gw.fault,
            "config": cfg, "secrets": sec, "files": sorted(
                n for n in __import__("os").listdir(d) if not n.startswith(
                    ("events.", "state.", "q", "cmdctr."))),
            "modules": sorted(k for k in sys.modules if k.startswith("heatgw.con_"))}


EVENTS = []
gw.add_sink(lambda k, r: EVENTS.append(r) if k == "event" else None)
feed = Feed(PATH)
con = Console(gw, feed, asyncio)
gw.add_task("console", con.run)


async def watcher(aio):
    # the state once the node runs (before any line is read), then again when the
    # corpus is through and the console is back at its prompt
    await aio.sleep_ms(3000)
    before = state()
    n0 = len(EVENTS)
    t0 = time.ticks_ms()
    while feed.left or "heatgw.con_table" in sys.modules or con.rpos < con.rlen:
        await aio.sleep_ms(1000)
    await aio.sleep_ms(3000)
    after = state()
    print("\nRESULT", json.dumps({
        "before": before, "after": after, "lines": con.lines, "errors": con.errors,
        "events": EVENTS[n0:], "worst_late_ms": gw.worst_tick_late_ms,
        "worst_read_us": con.worst_us, "real_s": time.ticks_diff(time.ticks_ms(), t0) / 1000,
        "fault": gw.fault, "up_s": gw.uptime_ms // 1000}))
    raise SystemExit(0)


gw.add_task("watcher", watcher)
asyncio.run(gw.run(asyncio))
"""


def test_fuzz_10000_lines_in_process_change_nothing_and_leak_no_secret(mp, tmp_path,
                                                                       monkeypatch):
    data, n_lines = corpus(20261207)
    assert n_lines >= 10_000
    path = tmp_path / "corpus.bin"
    path.write_bytes(data)
    monkeypatch.setenv("HEATGW_FLASH", str(tmp_path / "flash.bin"))
    assert build_mpy(["host"])
    code = (f"CFG = {json.dumps(node_config())!r}\nSECRETS = {json.dumps(SECRETS)!r}\n"
            f"PATH = {str(path)!r}\nSIZE = {len(data)}\n" + FUZZ_RIG)
    out = mp.run_code(code, extra_path=[str(host_mpy_dir())], timeout=1800)
    found = [x for x in out.splitlines() if x.startswith("RESULT ")]
    assert found, out[-3000:]
    line = found[-1]
    r = json.loads(line[7:])
    print(f"fuzz in process: {n_lines} lines ({len(data)} bytes), {r['lines']} read at the "
          f"prompt, {r['errors']} errors; longest read+assembly {r['worst_read_us']} us "
          f"real; {r['real_s']:.1f} s real; worst tick late {r['worst_late_ms']} ms")
    # every line was read (answers to confirmations and keys that stop `watch` are read
    # by the command that asked, not at the prompt)
    assert r["lines"] > 0.9 * n_lines
    assert r["errors"] > 0.5 * n_lines  # most of it is refused, each with its error
    # nothing changed: relays, maintenance, latches, the inbox, the configuration and
    # the secrets on flash, the files; no command module stayed loaded
    assert r["after"] == r["before"], (r["before"], r["after"])
    assert r["after"]["modules"] == []
    assert r["fault"] is None
    assert r["worst_late_ms"] <= 50
    # no event from the console: no request, reset, ack or console event
    from_console = [e for e in r["events"] if e.get("source") == "console" or
                    e.get("kind") in ("request", "reset", "console", "ack")]
    assert from_console == []
    # not a single secret in anything the console or the node wrote
    raw = out.encode()
    for s in SECRET_VALUES:
        assert s not in raw
    # the refusals are the one-line errors the console promises
    for why in (b"error: line too long (max 120 characters): ignored up to the next Enter",
                b"error: the line holds control or non-ASCII bytes: ignored",
                b"error: unknown command", b"error: Ctrl-A acts at the REPL",
                b"cancelled: nothing changed"):
        assert why in raw, why


# -- over the serial port: the node on the bench ----------------------------------------

def answer(t, line, prompt=CON, timeout=30):
    """Type a line, wait for the prompt: what the node wrote in between, without its
    event lines and the echo of the line (str)."""
    t.send(line + b"\r")
    t.expect(re.escape(prompt), timeout=timeout)
    text = t.before.decode("ascii", "replace").replace("\r\n", "\n")
    echo = line.decode("ascii", "replace") + "\n"
    if echo in text:  # other tasks' lines (events, mqtt state) may come first
        text = text[text.index(echo) + len(echo):]
    return "\n".join(x for x in text.split("\n") if not x.startswith(("event: ", "mqtt: ")
                                                                  )).strip()


def sync(t, prompt=CON):
    """Past every prompt written so far: a command whose answer is known, then its
    prompt."""
    t.send(b"help help\r")
    t.expect(b"what NAME does, its arguments and what it asks[^\n]*\n")
    t.expect(re.escape(prompt))


def ask(t, line, question=b"Type yes to confirm: "):
    """Type a command that asks to confirm; wait for the question."""
    t.send(line + b"\r")
    t.expect(re.escape(question))
    return t.before.decode("ascii", "replace")


def bench(tmp_path, **kw):
    cfg = kw.pop("config", None) or node_config()
    files = {"secrets.json": json.dumps(SECRETS)}
    files.update(kw.pop("files", {}))
    node = BenchNode(tmp_path, config=cfg, files=files, trace=True, **kw)
    t = terminal(node.port.path)
    t.expect(re.escape(CON), timeout=60)
    settle(t)
    return node, t


def no_secret_in(data):
    for s in SECRET_VALUES:
        assert s not in data, "a secret was written to the port"


@pytest.fixture(scope="module")
def bench_node(tmp_path_factory):
    node, t = bench(tmp_path_factory.mktemp("console"))
    t.close()
    yield node
    no_secret_in(node.console_path.read_bytes())  # everything written in the module's tests
    node.close()


@pytest.fixture
def con(bench_node):
    t = terminal(bench_node.port.path)
    t.send(b"\r")
    t.expect(re.escape(CON))
    settle(t)
    yield t
    t.close()


def events_since(node, n0):
    """The node's events printed on its console after byte n0 of its log."""
    text = node.console_path.read_bytes()[n0:].decode("ascii", "replace")
    return [json.loads(m) for m in re.findall(r"event: (\{.*\})\r?\n", text)]


def test_help_lists_every_command_and_explains_each_one(con):
    from tests.console_fuzz import COMMANDS

    out = answer(con, b"help")
    listed = [x.split()[0] for x in out.split("\n") if x and x[0].isalpha() and
              not x.startswith("Commands")]
    assert listed == list(COMMANDS), out
    assert "type yes" in out and "Ctrl-C stops the application" in out
    for name in COMMANDS:
        a = answer(con, b"help " + name.encode())
        b = answer(con, name.encode() + b" --help")
        if "not available in this build" in a:  # a build without that module
            assert b == f"error: {name}: not available in this build"
            continue
        assert a == b and name in a and not a.startswith("error"), (name, a, b)
    assert answer(con, b"HELP Status") == answer(con, b"help status")
    assert answer(con, b"help nothing") == "error: no command 'nothing': type help"
    assert answer(con, b"help a b") == "error: help takes one command name at most"


def test_status_is_one_screen_of_the_node(con):
    out = answer(con, b"status")
    for key in ("node     heatgw-sim  firmware 0.8.0  boot 1  up 0d 00:00:",
                "state    bypass  because", "relays   bypass: heat to the dry cooler",
                "temps    supply ", "dT       ", "meter    power ", "energy ",
                "trips    active ", "inputs   maintenance off", "alarms   ",
                "network  host up", "mqtt     127.0.0.1:", "heap     "):
        assert key in out, (key, out)
    assert len(out.split("\n")) <= 24  # one screen
    assert answer(con, b"status now") == "error: status takes no arguments"


def test_sensors_show_codes_resistance_temperature_faults_and_calibration(con):
    out = answer(con, b"sensors")
    rows = [x for x in out.split("\n") if not x.startswith(" ")]
    names = ["supply", "return", "sink_return", "it_coolant"]
    assert [r.split()[0] for r in rows if "PT1000" in r] == names, out
    for r in rows:
        if "PT1000" in r:
            assert re.search(r"PT1000 4-wire  code +\d+ flag [01]  \d+\.\d{3} ohm  ", r), r
            assert " chip " in r and " valid " in r
    assert "  supply: not calibrated" in out  # heatgw.calshow
    one = answer(con, b"sensors supply")
    assert one.split()[0] == "supply" and "return" not in one.split("\n")[0][6:]
    assert answer(con, b"sensors bogus").startswith("error: sensors takes one of: supply,")


def test_relay_alarms_and_log_read_the_event_log(con):
    out = answer(con, b"relay")
    assert out.startswith("relays   BYPASS: ") and "history  (" in out
    assert "#1 boot 1 " in answer(con, b"relay 64") or "boot 1" in out
    assert answer(con, b"relay 0") == "error: relay takes a number of history entries, 1..64"
    out = answer(con, b"alarms")
    assert "holding  " in out and "latched  nothing" in out and "alarms   " in out
    assert answer(con, b"alarms x") == "error: alarms takes no arguments"
    log = answer(con, b"log 2").split("\n")
    assert len(log) == 3 and log[2].startswith("log: 2 of ")
    assert all(json.loads(x)["boot"] == 1 for x in log[:2])
    boot = answer(con, b"log boot 1").split("\n")
    assert json.loads(boot[0])["kind"] == "boot" and boot[1].startswith("log: 1 of 1 ")
    assert answer(con, b"log 65") == "error: log takes [KIND] [N], N in 1..64"
    assert answer(con, b"log a b c") == "error: log takes [KIND] [N], N in 1..64"


def test_net_and_mqtt_show_state_and_counters_never_a_password(con):
    out = answer(con, b"net")
    assert out.startswith("net      host, link up") and "broker   127.0.0.1 ->" in out
    out = answer(con, b"mqtt")
    assert "broker   127.0.0.1 port " in out and "user node" in out
    assert "counters " in out and "queue    unsent " in out
    assert answer(con, b"mqtt now") == "error: mqtt takes no arguments"
    no_secret_in(out.encode())


def test_watch_refreshes_until_a_key_is_pressed(con):
    con.send(b"watch\r")
    con.expect(b"any key stops")
    con.expect(rb"\r\n +\d+ bypass ")
    con.expect(rb"\r\n +\d+ bypass ")  # a second line: it refreshes
    time.sleep(0.3)
    con.send(b"q")
    con.expect(b"watch: stopped\r\n" + re.escape(CON))
    assert answer(con, b"watch 0") == "error: watch takes a period in seconds, 1..60"


def test_selftest_passes_and_never_drives_a_relay(con, bench_node):
    n0 = len(bench_node.console_path.read_bytes())
    out = answer(con, b"selftest", timeout=60)
    assert "selftest: en1434_70_50_return ok" in out and "selftest: rtd_iec60751 ok" in out
    assert "selftest: sensor_supply " in out and out.endswith("selftest: PASS") or \
        "selftest: sensors FAIL" in out
    evs = events_since(bench_node, n0)
    assert not [e for e in evs if e.get("kind") in ("state", "request")]
    assert answer(con, b"selftest all") == "error: selftest takes no arguments"


BAD = [
    (b"frobnicate", "error: unknown command 'frobnicate': type help"),
    (b"maintenance maybe", "error: maintenance takes on or off"),
    (b"maintenance on now", "error: maintenance takes on or off"),
    (b"ack a b", "error: ack takes nothing (latched trips) or one alarm id"),
    (b"ack no_such_alarm", "error: no held alarm 'no_such_alarm' (see alarms)"),
    (b"reboot now", "error: reboot takes no arguments"),
    (b"factory-reset --yes", "error: factory-reset takes no arguments"),
    (b"safemode on", "error: safemode takes nothing or clear"),
    (b"net x", "error: net takes no arguments"),
    (b"status 1 2 3 4 5 6 7 8 9", "error: status: too many arguments (at most 8)"),
    (b"x" * 121, "error: line too long (max 120 characters): ignored up to the next Enter"),
    (b"stat\xffus", "error: the line holds control or non-ASCII bytes: ignored"),
    (b"status\x1b[A", "error: the line holds control or non-ASCII bytes: ignored"),
    (b"\x00\x00\x00", "error: the line holds control or non-ASCII bytes: ignored"),
]


@pytest.mark.parametrize("line,error", BAD)
def test_bad_input_is_one_clear_error_line(con, line, error):
    out = answer(con, line)
    assert out.split("\n")[-1] == error, out
    assert sum(x.startswith("error: ") for x in out.split("\n")) == 1, out


def test_half_lines_backspace_and_the_repl_characters(con):
    con.send(b"sta")
    time.sleep(0.3)  # a half line waits for the rest
    assert settle(con, 0.2) == b"sta"  # echoed, nothing else
    assert answer(con, b"tus 1") == "error: status takes no arguments"
    out = answer(con, b"statux\x08s 1")  # echo: x, then backspace-space-backspace
    assert out == "statux\b \bs 1\nerror: status takes no arguments", out
    con.send(b"stat\x01")
    con.expect(re.escape(CON))
    assert b"error: Ctrl-A acts at the REPL: press Ctrl-C first" in con.before
    assert answer(con, b"") == ""  # an empty line: just the prompt again
    assert answer(con, b"   \t ") == ""


def test_maintenance_asks_and_goes_through_the_inbox_with_source_console(con, bench_node):
    assert answer(con, b"maintenance") == "maintenance: off"
    n0 = len(bench_node.console_path.read_bytes())
    ask(con, b"maintenance on")
    assert answer(con, b"no") == "cancelled: nothing changed"
    ask(con, b"maintenance on")
    assert answer(con, b"YES") == "cancelled: nothing changed"
    assert answer(con, b"maintenance") == "maintenance: off"
    assert not [e for e in events_since(bench_node, n0) if e["kind"] == "request"]
    ask(con, b"maintenance on")
    out = answer(con, b"yes", timeout=30)
    assert out.endswith("maintenance: held by console; state bypass"), out
    ev = [e for e in events_since(bench_node, n0) if e["kind"] == "request"]
    assert [(e["source"], e["what"], e["value"]) for e in ev] == [
        ("console", "maintenance", True)]
    assert "inputs   maintenance console" in answer(con, b"status")
    ask(con, b"maintenance off")
    assert answer(con, b"yes").endswith("maintenance: off; state bypass")
    ev = [e for e in events_since(bench_node, n0) if e["kind"] == "request"]
    assert [(e["source"], e["value"]) for e in ev] == [("console", True), ("console", None)]


def test_ack_without_a_latched_trip_says_so(con):
    assert answer(con, b"ack") == "ack: no latched trip"


def test_safemode_shows_the_reset_history(con):
    out = answer(con, b"safemode")
    assert out.startswith("safe mode  off\nlimit      4 resets within 10 min"), out
    assert "last boots power_on" in out
    ask(con, b"safemode clear")
    assert answer(con, b"n") == "cancelled: nothing changed"


def test_config_is_the_config_modules_or_says_not_available(con):
    out = answer(con, b"config get node_id")
    if (REPO / "firmware" / "heatgw" / "con_config.py").exists():
        assert "error: config: not available" not in out
    else:
        assert out == "error: config: not available in this build"


def flash_files(flash_path, names):
    """Files on a node's littlefs image (the node stopped), read by another process."""
    from host_tools.mprun import run_json

    code = ("import board, json, os\nd = board.data_dir()\nout = {'_ls': sorted(os.listdir(d))}\n"
            f"for n in {names!r}:\n"
            "    try:\n        out[n] = open(d + '/' + n, 'rb').read().hex()\n"
            "    except OSError:\n        out[n] = None\n"
            "print(json.dumps(out))\n")
    old = os.environ.get("HEATGW_FLASH")
    os.environ["HEATGW_FLASH"] = str(flash_path)
    try:
        return run_json(code)[0]
    finally:
        os.environ["HEATGW_FLASH"] = old


def test_reboot_asks_then_stops_in_order_and_restarts_uncounted(tmp_path):
    node, t = bench(tmp_path)
    try:
        ask(t, b"reboot")
        assert answer(t, b"") == "cancelled: nothing changed"
        n0 = len(node.console_path.read_bytes())
        ask(t, b"reboot")
        t.send(b"yes\r")
        t.expect(b"reboot: stopping the application, then a reset\r\n")
        t.expect(b"stopping: saving state")
        t.expect(re.escape(CON), timeout=60)  # the new boot's console
        node.wait_boots(2)
        assert [c for c, _ in node.boots] == ["power_on", "hard_reset"]
        evs = events_since(node, n0)
        assert [(e["kind"], e.get("cmd"), e.get("source")) for e in evs[:1]] == [
            ("console", "reboot", "console")]
        assert [e["boot"] for e in evs if e["kind"] == "boot"] == [2]
        out = answer(t, b"safemode")
        assert "last boots power_on, hard (planned: reboot)" in out, out
        assert "no counted reset" in out
        t.close()
        no_secret_in(node.console_path.read_bytes())
    finally:
        node.close()


def test_factory_reset_erases_config_calibration_secrets_and_keeps_totals_log_counter(
        tmp_path):
    keep = {"cmdctr.a": b"counter slot a", "cmdctr.b": b"counter slot b"}
    gone = {"calibration.json": b"{}", "config.json.sha256": b"0" * 64}
    node, t = bench(tmp_path, files={**keep, **gone})
    try:
        ask(t, b"factory-reset")
        assert answer(t, b"no") == "cancelled: nothing changed"
        out = answer(t, b"log boot")
        assert '"config": "file"' in out
        n0 = len(node.console_path.read_bytes())
        ask(t, b"factory-reset")
        t.send(b"yes\r")
        t.expect(rb"factory-reset: removed ([^\r]*); restarting\r\n")
        removed = sorted(t.match.group(1).decode().split(", "))
        # config.json.good: the last good copy the boot kept (README "Configuration
        # integrity") goes too
        assert removed == sorted(["config.json", "config.json.good", "secrets.json",
                                  *gone]), removed
        t.expect(re.escape(CON), timeout=60)
        node.wait_boots(2)
        evs = events_since(node, n0)
        boot = [e for e in evs if e["kind"] == "boot"][0]
        assert boot["config"] == "default" and boot["boot"] == 2  # the boot count stays
        assert sorted([e for e in evs if e["kind"] == "console"][0]["removed"]) == removed
        assert answer(t, b"status").split("\n")[1].startswith("state    bypass  because "
                                                               "no_config")
        t.close()
    finally:
        node.close()
    files = flash_files(node.flash_path, [*keep, *gone, "config.json", "config.json.good",
                                          "secrets.json"])
    for name, data in keep.items():
        assert bytes.fromhex(files[name]) == data  # the command counter stays
    for name in [*gone, "config.json", "config.json.good", "secrets.json"]:
        assert files[name] is None, name
    ls = files["_ls"]
    assert "state.a" in ls and "events.0" in ls and "resets.a" in ls, ls


def test_mpremote_connect_is_a_terminal_for_the_console(tmp_path):
    """The README's way in: `mpremote connect PORT` (the real mpremote, its repl terminal),
    a command typed and answered, Ctrl-] out again: the node never reset or stopped."""
    import sys

    node, t = bench(tmp_path)
    t.close()
    try:
        c = pexpect.spawn(str(Path(sys.executable).parent / "mpremote"),
                          ["connect", node.name], timeout=30)
        c.expect("Connected to MicroPython")
        c.send("relay 1\r")
        c.expect(re.escape(CON))
        out = c.before.decode("ascii", "replace")
        assert "relays   BYPASS: " in out and "history  (1, newest last)" in out, out
        c.send("\x1d")  # Ctrl-]: mpremote leaves its terminal
        c.expect(pexpect.EOF)
        time.sleep(0.5)
        assert [b for b, _ in node.boots] == ["power_on"]
        assert "stopping: saving state" not in node.console_text()
    finally:
        node.close()


def test_ctrl_c_stops_in_order_and_the_repl_characters_work_with_the_console(tmp_path):
    node, t = bench(tmp_path, config=json.loads(
        (REPO / "scenarios" / "default_config.json").read_text()))
    try:
        assert answer(t, b"maintenance") == "maintenance: off"
        t.send(b"sta")  # a half line (read: echoed), then Ctrl-C: the application stops
        t.expect(b"sta")  # in order
        t.send(b"\x03")
        t.expect(b"stopping: saving state\r\n")
        t.expect(PROMPT)
        assert b'Type "help()" for more information.' in t.before
        t.send(b"\x01")  # Ctrl-A: the raw REPL
        t.expect(b"raw REPL; CTRL-B to exit\r\n>")
        t.send(b"print(6 * 7)\x04")
        t.expect(b"\x04>")
        assert t.before == b"OK42\r\n\x04"
        t.send(b"\x02")  # Ctrl-B: back to the friendly REPL, the banner
        t.expect(PROMPT)
        assert t.before.startswith(b"\r\nMicroPython ")
        t.send(b"\x05")  # Ctrl-E: paste mode, Ctrl-C cancels it
        t.expect(b"=== ")
        t.send(b"print('never')\x03")
        t.expect(PROMPT)
        t.send(b"\x04")  # Ctrl-D: a soft reset; main.py starts the application again
        t.expect(b"MPY: soft reboot")
        t.expect(re.escape(CON), timeout=60)
        node.wait_boots(2)
        assert node.boots[-1][0] == "soft_reset"
        assert answer(t, b"safemode").endswith("last boots power_on, soft (planned: stopped)")
        # a Ctrl-C typed while a command asks: the application stops in order too
        ask(t, b"maintenance on")
        t.send(b"\x03")
        t.expect(b"stopping: saving state\r\n")
        t.expect(PROMPT)
        t.close()
    finally:
        node.close()


# -- under the harness: the plant, the relays, virtual time ------------------------------

class AllSecrets(Uplink):
    """The broker's password and every other secret in the node's secrets.json."""

    def secrets(self):
        return dict(SECRETS)


def uplink(tmp_path, port):
    pw = tmp_path / "pw.txt"
    pw.write_text(SECRETS["mqtt_password"])
    return AllSecrets(f"127.0.0.1:{port}", user="node", password_file=pw)


class Run:
    """The harness in a thread with a serial port; the test types at the console."""

    def __init__(self, tmp_path, scenario, uplink=None):
        sc_path = tmp_path / "scenario.json"
        sc_path.write_text(json.dumps(scenario))
        self.h = Harness(load_scenario(sc_path), tmp_path / "run", serial="auto",
                         serial_trace=True, uplink=uplink, mpy=True)
        self.error = None
        self.summary = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        self.t = terminal(self.h.serial.path, timeout=60)

    def _run(self):
        try:
            self.summary = self.h.run()
        except Exception as e:  # noqa: BLE001 - the test reports it
            self.error = e

    def wait(self, cond, what, timeout=120):
        give_up = time.monotonic() + timeout
        while not cond():
            assert self.error is None, self.error
            assert time.monotonic() < give_up, f"timed out waiting for {what}"
            time.sleep(0.01)

    def events(self, kind=None):
        return [e for e in self.h.node_events if kind is None or e.get("kind") == kind]

    def end(self):
        self.h.request_stop()
        self.thread.join(120)
        self.t.close()
        assert not self.thread.is_alive() and self.error is None, self.error


PLANT = {"name": "console", "duration_s": 172800, "step_s": 1,
         "initial": {"tank_c": 37.8, "it_feed_c": 40.0}, "load_kw": 100, "demand_kw": 100,
         "config": {"control": {"recover_s": 60, "min_dwell_s": 60}},
         "events": [{"t_s": 300, "do": "override", "sensor": "it_coolant", "mean_c": 50.0,
                     "amp_k": 0.0, "period_s": 60},
                    {"t_s": 360, "do": "override", "sensor": "it_coolant", "off": True}]}


def test_the_console_on_a_running_plant_ack_maintenance_and_a_fuzz_sample(tmp_path):
    """Under the harness (virtual time, the plant, the relays' coils): a latched trip
    reset with `ack` (asked, confirmed, through the inbox), maintenance from the console
    dropping the coils, then a sample of the fuzz corpus typed at the port while reuse
    runs: no coil moves, no request reaches the inbox, the control tick stays on time in
    node time, no secret is written."""
    run = Run(tmp_path, PLANT, uplink=uplink(tmp_path, free_port()))
    h = run.h
    t = run.t
    try:
        run.wait(lambda: run.events("latch"), "it_coolant_high to latch")
        run.wait(lambda: h.vt > 370_000, "the override to end")
        sync(t)
        out = answer(t, b"alarms")
        assert "latched  it_coolant_high" in out and "it_coolant_high" in out.split(
            "alarms   ")[1], out
        ask(t, b"ack")
        assert answer(t, b"nope") == "cancelled: nothing changed"
        assert not run.events("reset")
        ask(t, b"ack")
        assert answer(t, b"yes").endswith("ack: reset requested; latched now: nothing")
        resets = run.events("reset")
        assert [(e["reason"], e["result"], e["source"]) for e in resets] == [
            ("it_coolant_high", "cleared", "console")]
        run.wait(lambda: h.coils["reuse"], "reuse again")
        # maintenance from the console drops the coils (the control task decides)
        ask(t, b"maintenance on")
        assert answer(t, b"yes").endswith("maintenance: held by console; state bypass")
        assert h.coils == {"reuse": False, "cooler_inhibit": False}
        trip = [e for e in run.events("trip") if e["reason"] == "maintenance"][-1]
        assert trip["values"]["source"] == "console"
        ask(t, b"maintenance off")
        answer(t, b"yes")
        run.wait(lambda: h.coils["reuse"] and run.events("state")[-1]["state"] == "reuse",
                 "reuse after maintenance")
        # the fuzz sample, paced (a board's input ring holds 256 bytes)
        data, n = corpus(7, lines=300, skip=(b"watch",))
        n_events = len(h.node_events)
        n_pins = len(h.pin_log)
        vt0 = h.vt
        for i in range(0, len(data), 64):
            t.send(data[i:i + 64])
            time.sleep(0.01)
        # the end: a line whose answer is known (again, if the sample's last bytes found
        # the ring full while a slow command ran: lost input is refused, as on a board)
        for _ in range(30):
            t.send(b"\rhelp help\r")
            try:
                t.expect(b"what NAME does, its arguments and what it asks", timeout=5)
                break
            except pexpect.TIMEOUT:
                continue
        t.expect(re.escape(CON))
        vt1 = h.vt
        assert h.pin_log[n_pins:] == [] and h.coils["reuse"]  # no relay moved
        new = h.node_events[n_events:]
        assert not [e for e in new if e.get("source") == "console" or e.get("kind") in
                    ("request", "reset", "console", "ack", "state")], new
        out = answer(t, b"status")
        late = int(re.search(r"worst tick late (\d+) ms", out).group(1))
        print(f"fuzz sample over the serial port: {n} lines, {len(data)} bytes, "
              f"{(vt1 - vt0) / 1000:.0f} s of node time; worst tick late {late} ms")
        assert late <= 50
        assert "inputs   maintenance off" in out and "latched none" in out
    finally:
        run.end()
    no_secret_in(h.console_path.read_bytes())


CRASH_LOOP = {"name": "crash_loop", "duration_s": 172800, "step_s": 1,
              "initial": {"tank_c": 37.8, "it_feed_c": 40.0}, "load_kw": 100,
              "demand_kw": 100,
              "config": {"control": {"recover_s": 60, "min_dwell_s": 60},
                         "safe_mode": {"resets": 3, "window_min": 10}},
              "events": [{"t_s": 20, "do": "bus_error"}, {"t_s": 50, "do": "bus_error"},
                         {"t_s": 80, "do": "bus_error"}]}


def test_a_crash_loop_enters_safe_mode_and_the_technician_leaves_it(tmp_path):
    """Three crashes (an SPI error in the sampler: the fault latch, then the watchdog)
    within the configured 10 minutes: the 4th boot is safe mode. The application does
    not start (no watchdog, no relay pin driven, every coil off), the console runs with
    its safe-mode commands and the broker holds the status `safe_mode`; `safemode clear`
    (asked, confirmed) restarts the node into the application, uncounted."""
    from tests.brokers import Broker, Subscriber

    with Broker(tmp_path / "mosquitto", users={"node": SECRETS["mqtt_password"],
                                               "upstream": "up-pw"}) as broker:
        run = Run(tmp_path, CRASH_LOOP, uplink=uplink(tmp_path, broker.port))
        h = run.h
        t = run.t
        try:
            run.wait(lambda: [e for e in run.events() if e.get("kind") == "safe_mode"],
                     "safe mode")
            assert [b["cause"] for b in h.boots] == ["power_on", "watchdog", "watchdog",
                                                    "watchdog"]
            ev = run.events("safe_mode")[0]
            assert ev["why"] == "3 watchdog/crash resets within 10 min", ev
            n_wdt = len(h.watchdog_starts)
            n_pins = len(h.pin_log)
            t.expect(re.escape(SAFE), timeout=60)
            sync(t, SAFE)
            out = answer(t, b"status", SAFE)
            assert out.startswith("SAFE MODE: the application is not running; relays safe")
            assert "why      3 watchdog/crash resets within 10 min" in out
            assert answer(t, b"sensors", SAFE).startswith("error: sensors: not in safe mode")
            assert answer(t, b"maintenance on", SAFE).startswith(
                "error: maintenance: not in safe mode")
            assert "(not in safe mode)" in answer(t, b"help", SAFE)
            out = answer(t, b"safemode", SAFE)
            assert out.startswith("safe mode  ON: 3 watchdog/crash resets"), out
            assert "history    watchdog after 0 s, watchdog after 0 s, watchdog after 0 s" \
                in out, out
            assert json.loads(answer(t, b"log safe_mode 1", SAFE).split("\n")[0])[
                "kind"] == "safe_mode"
            # the broker says safe mode (retained, on the node's status topic)
            sub = Subscriber(broker, ["heatgw/sim/heatgw-sim/status"], username="upstream",
                             password="up-pw")
            got = sub.drain(lambda m: m[1] == b"safe_mode", timeout=60)
            assert got[-1][2] is True  # retained
            assert "mqtt     " in answer(t, b"status", SAFE)
            ask(t, b"safemode clear")
            t.send(b"no\r")
            t.expect(re.escape(SAFE))
            assert b"cancelled: nothing changed" in t.before
            # nothing ran in safe mode: no watchdog, no relay pin, coils off
            assert len(h.watchdog_starts) == n_wdt and h.pin_log[n_pins:] == []
            assert h.coils == {"reuse": False, "cooler_inhibit": False}
            ask(t, b"safemode clear")
            t.send(b"yes\r")
            t.expect(b"safemode: cleared; restarting")
            t.expect(re.escape(CON), timeout=120)  # the application's console
            assert [b["cause"] for b in h.boots][-1] == "hard_reset"
            run.wait(lambda: h.coils["reuse"], "reuse after safe mode")
            sub.drain(lambda m: m[1] == b"online", timeout=60)
            clear = [e for e in run.events("console") if e.get("cmd") == "safemode clear"]
            assert clear and clear[0]["source"] == "console"
            out = answer(t, b"safemode")
            assert out.startswith("safe mode  off") and "hard (planned: safemode clear)" \
                in out, out
            sub.client.loop_stop()
        finally:
            run.end()
    no_secret_in(h.console_path.read_bytes())


# -- the complete-node day ----------------------------------------------------------------

def test_the_console_runs_all_day_and_answers_what_is_typed(complete_node_day):
    """tests/siteday.py's `console` feature: the node's console task runs all day beside
    telemetry, Modbus and calibration, in the day's heap; the lines typed during the day
    (CONSOLE_LINES) each got their answer; the tick kept its period; nothing from the
    console changed state (the `maintenance on` was answered no); no secret was written."""
    from tests.siteday import CONSOLE_LINES

    day = complete_node_day
    c = day.extra["console"]
    typed = [x["typed"] for x in c["typed"]]
    assert typed == [line + "\r" for _, line in CONSOLE_LINES]
    text = c["log"].decode("ascii", "replace").replace("\r\n", "\n")
    for key in ("state    ", "relays   ", "temps    supply ", "meter    power ",
                "mqtt     127.0.0.1:", "network  host up", "history  (",
                "latched  nothing", "broker   127.0.0.1 port ", "counters ",
                "net      host, link up", "log: 3 of ", "calibrate: out of service: none",
                "ack           reset the latched trips",
                "error: unknown command 'frobnicate': type help",
                "cancelled: nothing changed", "safe mode  off"):
        assert key in text, key
    shown = text.split("sensors\n", 1)[1]  # sensors shows each one's calibration (calshow)
    assert "  supply: channel " in shown and "  supply: applied channel" in shown
    assert sum(x.startswith("error: ") for x in text.split("\n")) == 1  # frobnicate only
    assert "Traceback" not in text and "MemoryError" not in text
    ev = day.harness.node_events
    # nothing typed changed anything (the BMS's heartbeat is a `modbus` request: not typed)
    assert not [e for e in ev if e.get("source") == "console" or e.get("kind") in
                ("console", "ack") or (e.get("kind") == "request" and e.get("source") != "modbus")]
    assert not [e for e in ev if e.get("kind") == "task" and e.get("task") == "console"]
    assert day.summary["mqtt"]["worst_tick_late_ms"] <= 50
    pw = (day.harness.workdir.parent / "mqtt_password").read_bytes().strip()
    assert pw and pw not in c["log"]


# -- heap: the resident console and each command while it runs -----------------------------

HEAP_RIG = r"""
import gc, sys, vfs, json
import board  # host-only: from the file system in every case, not counted
IMG = {img!r}
if IMG:
    with open(IMG, "rb") as f:
        img = f.read()  # in RAM on the host; a board maps its ROM partition instead
    vfs.mount(vfs.VfsRom(img), "/rom")
    sys.path.insert(0, "/rom")
for name in {app!r}:  # the resident node first: its qstr pools as they are at boot
    __import__(name)
import heatgw


class Port:  # board.console_in()'s contract: nothing typed
    dropped = 0

    def readinto(self, buf):
        return 0


def mem():
    gc.collect()
    return gc.mem_alloc()


out = {{}}
a = mem()
from heatgw.console import Console
b = mem()
con = Console(None, Port(), None)
c = mem()
task = con.run(None)  # the task's coroutine (its Task adds a few words more)
d = mem()
out["console"] = {{"import": b - a, "object": c - b, "coroutine": d - c, "total": d - a,
                  "from": str(sys.modules["heatgw.console"])}}
for name in {mods!r}:
    before = set(sys.modules)
    a = mem()
    __import__("heatgw." + name)
    b = mem()
    new = sorted(set(sys.modules) - before)
    for k in new:
        sys.modules.pop(k)
        try:
            delattr(heatgw, k[7:])
        except (AttributeError, KeyError):
            pass
    c = mem()
    out[name] = {{"import": b - a, "left": c - a, "modules": new}}
print(json.dumps(out))
"""
CMD_MODULES = ("con_table", "con_help", "con_status", "con_sensors", "con_watch", "con_relay",
               "con_alarms", "con_log", "con_calibrate", "con_maint", "con_selftest",
               "con_net", "con_safemode", "con_reboot", "bootloop", "safemode")


def test_the_resident_console_is_small_and_commands_cost_only_while_they_run(mp, tmp_path):
    """gc.mem_alloc() after a collect, around the import of heatgw.console, its Console
    object (line buffer and receive buffers) and the task's coroutine: at most 4 KB from
    ROMFS on the 64-bit host. Each command module's import, and what stays after it was
    dropped (its identifiers stay interned, as qstrs do)."""
    from host_tools import romfs
    from host_tools.heapbudget import APP_MODULES

    assert build_mpy(["host"])
    mpy = host_mpy_dir()
    img = romfs.pack(romfs.app_tree(mpy, tmp_path / "app", packages=()),
                     tmp_path / "app.romfs")
    res = {}
    for how, image, extra in (("romfs", str(img), [str(mpy)]), ("mpy", "", [str(mpy)])):
        code = HEAP_RIG.format(img=image, app=APP_MODULES, mods=CMD_MODULES)
        res[how] = json.loads(mp.run_code(code, extra_path=extra).strip().splitlines()[-1])
    assert "/rom/" in res["romfs"]["console"]["from"]
    assert ".mpy" in res["mpy"]["console"]["from"] or str(mpy) in res["mpy"]["console"][
        "from"]
    m, r = res["mpy"]["console"], res["romfs"]["console"]
    print(f"\nresident console (.mpy / ROMFS): import {m['import']} / {r['import']} B, object "
          f"{r['object']} B, coroutine {r['coroutine']} B, total {m['total']} / "
          f"{r['total']} B")
    for name in CMD_MODULES:
        m, r = res["mpy"][name], res["romfs"][name]
        print(f"{name:14} import {m['import']:6} / {r['import']:6} B, left after the drop "
              f"{m['left']:5} / {r['left']:5} B  {','.join(r['modules'])}")
    assert res["romfs"]["console"]["total"] <= 4096
    for name in CMD_MODULES:
        assert res["romfs"][name]["left"] < 1024, name  # the module itself is gone


KBD_RIG = r"""
import board, sys
from heatgw import start
gw, asyncio = start.build()
from heatgw.console import Console


class Port:
    # types LINE, then raises KeyboardInterrupt in readinto, as a board's port does when
    # Ctrl-C comes while the console reads (the host board raises at its idle point too)
    def __init__(self, data):
        self.data = data
        self.reads = 0

    def readinto(self, buf):
        self.reads += 1
        if self.data:
            n = min(len(buf), len(self.data))
            buf[:n] = self.data[:n]
            self.data = self.data[n:]
            return n
        if self.reads > 40:
            raise KeyboardInterrupt
        return 0


gw.add_task("console", Console(gw, Port(LINE), asyncio).run)


async def bound(aio):  # virtual time: the interrupt comes within ~1.2 s of it
    await aio.sleep_ms(20_000)
    print("NOT STOPPED")
    raise SystemExit(3)


gw.add_task("bound", bound)
try:
    asyncio.run(gw.run(asyncio))
except KeyboardInterrupt:
    start.stop(gw)
    print("STOPPED IN ORDER", gw.relay_reuse, sorted(k for k in sys.modules
                                                    if k.startswith("heatgw.con_")))
"""


@pytest.mark.parametrize("line", [b"status\r", b"maintenance on\r"])
def test_a_ctrl_c_while_the_console_reads_stops_the_application_in_order(mp, tmp_path,
                                                                         monkeypatch, line):
    """KeyboardInterrupt raised inside the console's read (at the prompt, and while a
    command waits for its confirmation) is never swallowed: it leaves asyncio and
    heatgw.start stops the application in order (relays safe, totals saved)."""
    monkeypatch.setenv("HEATGW_FLASH", str(tmp_path / "flash.bin"))
    out = mp.run_code(f"LINE = {line!r}\n" + KBD_RIG, timeout=120)
    assert "stopping: saving state" in out
    assert out.strip().endswith("STOPPED IN ORDER False []") or \
        "STOPPED IN ORDER False" in out, out[-2000:]
