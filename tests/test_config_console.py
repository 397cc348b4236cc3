"""The console's `config` command (heatgw.con_config on heatgw.cfgedit), against the real
micropython binary: in process on a whole node (start.build() on the host board, the real
heatgw.console reading scripted lines), then the node booted again from what was saved;
and a sample over the host board's serial port with pexpect."""

import json
import os
import re
import sys

import pytest

from host_tools.benchnode import BenchNode
from host_tools.build_mpy import build as build_mpy
from host_tools.build_mpy import host_mpy_dir
from host_tools.paths import FIRMWARE, REPO
from tests.test_serial_port import settle, terminal

if str(FIRMWARE) not in sys.path:
    sys.path.insert(0, str(FIRMWARE))

from heatgw import config  # noqa: E402

CON = b"heatgw> "
SECRETS = {"command_key": "c0ffee" + "5a" * 29, "mqtt_password": "mqtt-Secr3t-pw-77",
           "wifi_ssid": "site-ssid-Z9", "wifi_password": "wifi-Secr3t-pw-88"}
SECRET_VALUES = [v.encode() for v in SECRETS.values()]


def node_config():
    return json.loads((REPO / "scenarios" / "default_config.json").read_text())


# The node, built as main.py builds it, with the real Console reading a scripted port:
# the next line is given only when the console asked for one (its prompt, or a question).
RIG = r"""
import board, json, sys, gc
d = board.data_dir()
with open(d + "/config.json", "w") as f:
    f.write(CFG)
with open(d + "/secrets.json", "w") as f:
    f.write(SECRETS)
from heatgw import start
gw, asyncio = start.build()
from heatgw.console import Console

OUT = []


class Script:
    def __init__(self, lines):
        self.lines = lines
        self.ready = False
        self.buf = b""

    def readinto(self, buf):
        if not self.buf and self.ready and self.lines:
            self.buf = self.lines.pop(0).encode() + b"\r"
            self.ready = False
        n = min(len(buf), len(self.buf))
        buf[:n] = self.buf[:n]
        self.buf = self.buf[n:]
        return n

    def any(self):
        return len(self.buf)


script = Script(LINES)


def write(text):
    if type(text) is not str:
        text = bytes(text).decode()
    OUT.append(text)
    if text.endswith("heatgw> ") or text.endswith("Type yes to confirm: "):
        script.ready = True


EVENTS = []
gw.add_sink(lambda k, r: EVENTS.append(r) if k == "event" else None)
con = Console(gw, script, asyncio, write=write)
gw.add_task("console", con.run)


async def watcher(aio):
    while script.lines or not script.ready:
        await aio.sleep_ms(200)
    with open(d + "/config.json", "rb") as f:
        saved = f.read()
    print("RESULT", json.dumps({"out": "".join(OUT), "events": EVENTS,
                                "saved": saved.decode(), "late": gw.worst_tick_late_ms,
                                "modules": [k for k in sys.modules
                                            if k.startswith("heatgw.c") and k not in
                                            ("heatgw.clock", "heatgw.console")]}))
    raise SystemExit(0)


gw.add_task("watcher", watcher)
try:
    asyncio.run(gw.run(asyncio))
except SystemExit:
    pass
"""

REBOOT = r"""
import board, json
from heatgw import start
cfg, errors, source, configured, events = start.config_for(board)
print("RESULT", json.dumps([source, errors, events, cfg["control"]]))
"""


def run_rig(mp, lines, cfg=None):
    assert build_mpy(["host"])
    code = (f"CFG = {json.dumps(cfg or node_config())!r}\n"
            f"SECRETS = {json.dumps(SECRETS)!r}\nLINES = {lines!r}\n" + RIG)
    out = mp.run_code(code, extra_path=[str(host_mpy_dir())], timeout=600)
    found = [x for x in out.splitlines() if x.startswith("RESULT ")]
    assert found, out[-3000:]
    r = json.loads(found[-1][7:])
    for s in SECRET_VALUES:  # nothing the node wrote holds a secret
        assert s not in out.encode(), s
    return r


def answers(out):
    """{command line: what the console answered}, in order (a list of pairs)."""
    parts = re.split(r"heatgw> ", out)
    pairs = []
    for p in parts[1:]:
        line, _, rest = p.partition("\n")
        pairs.append((line, rest.strip()))
    return pairs


@pytest.fixture(scope="module")
def session(mp, tmp_path_factory):
    flash = tmp_path_factory.mktemp("cfgcon") / "flash.bin"
    old = os.environ.get("HEATGW_FLASH")
    os.environ["HEATGW_FLASH"] = str(flash)
    try:
        lines = [
            "config get control.sink_return_max_c",
            "config get persist",
            "config get secrets",
            "config get mqtt_password",
            "config set mqtt_password hunter2",
            "config set control.sink_return_max_c 500",
            "config set control.sink_return_max_c forty",
            "config set control.sink_return_maxc 42",
            "config set control.tick_ms 1000.5",
            "config set sensors.supply.wires 5",
            "config set control.sink_return_max_c 42.5",
            "config get control.sink_return_max_c",
            "config set control.sink_return_hyst_k 45",
            "config diff",
            "config save",
            "config set control.sink_return_hyst_k 2.5",
            "config set telemetry.interval_s 30",
            "config save", "no",
            "config save", "yes",
            "config diff",
            "config get control.sink_return_max_c",
            "config bogus",
        ]
        r = run_rig(mp, lines)
        out = mp.run_code(REBOOT, extra_path=[str(host_mpy_dir())])
        again = json.loads([x for x in out.splitlines() if x.startswith("RESULT ")][-1][7:])
    finally:
        if old is None:
            os.environ.pop("HEATGW_FLASH")
        else:
            os.environ["HEATGW_FLASH"] = old
    seq = answers(r["out"])
    first = {}
    for line, a in seq:
        first.setdefault(line, a)
    return r, first, seq, again


def test_get_shows_values_and_sections_never_secrets(session):
    r, ans, seq, _ = session
    assert seq[0] == ("config get control.sink_return_max_c",
                      "control.sink_return_max_c = 40.0")
    assert ans["config get persist"] == "persist.interval_s = 300"
    assert ans["config get secrets"] == \
        "secrets: never shown (secrets live in secrets.json)"
    assert ans["config get mqtt_password"] == \
        "mqtt_password: never shown (secrets live in secrets.json)"
    assert ans["config set mqtt_password hunter2"] == \
        "error: mqtt_password: secrets are set by provisioning (secrets.json), never here"


def test_set_type_checks_against_the_schema_and_stages_only_valid_values(session):
    _, ans, seq, _ = session
    assert ans["config set control.sink_return_max_c 500"] == (
        "error: control.sink_return_max_c: 500 is above the maximum 150 C: not staged")
    assert ans["config set control.sink_return_max_c forty"].startswith(
        "error: control.sink_return_max_c: forty is not a JSON value (line 1 column 1: ")
    assert ans["config set control.sink_return_maxc 42"].startswith(
        "error: control.sink_return_maxc: unknown key; control has it_coolant_hyst_k, ")
    assert ans["config set control.tick_ms 1000.5"] == (
        "error: control.tick_ms: expected an integer, got 1000.5: not staged")
    assert ans["config set sensors.supply.wires 5"] == (
        "error: sensors.supply.wires: 5 is not allowed; one of 2, 3, 4: not staged")
    assert ans["config set control.sink_return_max_c 42.5"] == (
        "config: control.sink_return_max_c = 42.5 staged (1 change; `config save` writes "
        "them)")
    gets = [a for line, a in seq if line == "config get control.sink_return_max_c"]
    assert gets[1] == "control.sink_return_max_c = 40.0   (pending: 42.5)"


def test_an_invalid_configuration_is_never_saved(session):
    r, ans, seq, _ = session
    hyst = ans["config set control.sink_return_hyst_k 45"]
    assert hyst.startswith("config: control.sink_return_hyst_k = 45 staged (2 changes")
    assert "note: `config save` would refuse this now" in hyst
    rule = ("control.sink_return_max_c - control.sink_return_hyst_k = -2.5 must be above "
            "sensors.sink_return.min_c = 0 (hysteresis must be smaller than the threshold "
            "span)")
    assert rule in hyst
    assert "control.sink_return_max_c: 40.0 -> 42.5   (staged)" in ans["config diff"]
    assert rule in ans["config diff"]
    saves = [a for line, a in seq if line == "config save"]
    assert saves[0].startswith("error: config save: refused, nothing written:")
    assert rule in saves[0]
    # then valid: it asks first, and "no" writes nothing (the file is checked below)
    assert saves[1].startswith("Write config.json (") and saves[1].endswith(
        "changes: control.sink_return_max_c, control.sink_return_hyst_k, "
        "telemetry.interval_s)? It takes effect at the next boot. Type yes to confirm: no\n"
        "cancelled: nothing changed")


def test_save_writes_a_sealed_file_that_the_next_boot_runs(session):
    r, ans, seq, again = session
    saved = r["saved"]
    doc, err, sealed = config.parse(saved.encode(), "config.json")
    assert err is None and sealed is True
    want = node_config()
    want["control"]["sink_return_max_c"] = 42.5
    want["control"]["sink_return_hyst_k"] = 2.5
    want["telemetry"] = {"interval_s": 30}
    assert doc == want  # the file as written, with the changes: nothing else added
    ok = [a for line, a in seq if line == "config save"][2]
    assert ok.endswith("Type yes to confirm: yes\nconfig save: written; sealed (SHA-256), "
                       "read back; takes effect at the next boot (reboot)"), ok
    ev = [e for e in r["events"] if e.get("kind") == "config" and e.get("source") ==
          "console"]
    assert len(ev) == 1 and ev[0]["saved"] == ["control.sink_return_max_c",
                                              "control.sink_return_hyst_k",
                                              "telemetry.interval_s"]
    # still running the old value until the next boot, and the console says so
    post = [a for line, a in seq if line == "config diff"][-1]
    assert "control.sink_return_max_c: 40.0 -> 42.5   (saved, next boot)" in post
    assert [a for line, a in seq if line == "config get control.sink_return_max_c"][-1] \
        == "control.sink_return_max_c = 40.0   (pending: 42.5)"
    assert ans["config bogus"] == "error: usage: config get [KEY] | set KEY VALUE | diff | " \
                                  "save | drop"
    assert r["modules"] == []  # the command and the validator dropped again
    # the next boot: the sealed file, no warning, the new values
    source, errors, events, control = again
    assert (source, errors, events) == ("file", [], [])
    assert control["sink_return_max_c"] == 42.5 and control["sink_return_hyst_k"] == 2.5


# -- over the serial port: a sample, as a technician types it -------------------------

def answer(t, line, timeout=30):
    """Type a line, wait for its echo (what the port had before is behind it), then the
    console's prompt: what came in between, without the node's event and mqtt lines."""
    t.send(line + b"\r")
    t.expect(re.escape(line) + b"\r\n", timeout=timeout)
    t.expect(re.escape(CON), timeout=timeout)
    text = t.before.decode("ascii", "replace").replace("\r\n", "\n")
    return "\n".join(x for x in text.split("\n")
                     if not x.startswith(("event: ", "mqtt: "))).strip()


def test_config_at_the_serial_port_then_reboot_runs_it(tmp_path):
    files = {"secrets.json": json.dumps(SECRETS)}
    with BenchNode(tmp_path, config=node_config(), files=files, trace=True) as node:
        t = terminal(node.port.path)
        t.expect(re.escape(CON), timeout=60)
        settle(t)
        seen = b""
        assert answer(t, b"config get control.sink_return_max_c") == \
            "control.sink_return_max_c = 40.0"
        assert answer(t, b"config set control.sink_return_max_c 151") == (
            "error: control.sink_return_max_c: 151 is above the maximum 150 C: not staged")
        assert answer(t, b"config set control.sink_return_max_c 43.5").startswith(
            "config: control.sink_return_max_c = 43.5 staged")
        assert answer(t, b"config diff") == \
            "control.sink_return_max_c: 40.0 -> 43.5   (staged)"
        assert answer(t, b"config get secrets") == \
            "secrets: never shown (secrets live in secrets.json)"
        t.send(b"config save\r")
        t.expect(re.escape(b"Type yes to confirm: "))
        seen += t.before
        t.send(b"yes\r")
        t.expect(re.escape(CON))
        saved = t.before.decode()
        assert "config save: written; sealed (SHA-256), read back; takes effect at the " \
               "next boot (reboot)" in saved, saved
        assert '"kind": "config"' in saved and '"source": "console"' in saved
        t.send(b"reboot\r")
        t.expect(re.escape(b"Type yes to confirm: "))
        t.send(b"yes\r")
        t.expect(b'"kind": "boot"', timeout=60)
        booted = t.before + t.after
        t.expect(re.escape(CON), timeout=60)
        booted += t.before
        assert b'"config": "file"' in booted and b"no seal" not in booted, booted
        settle(t)
        assert answer(t, b"config get control.sink_return_max_c") == \
            "control.sink_return_max_c = 43.5"
        t.close()
        assert [c for c, _ in node.boots] == ["power_on", "hard_reset"]
        log = node.console_path.read_bytes()
        for s in SECRET_VALUES:
            assert s not in log and s not in seen
