"""Provisioning (host_tools.provision) against the host board's serial port with the real
mpremote: a round trip (written sealed, read back, the node boots it: config "file", the
values in its status), a second run that shows the difference, bad flags that write
nothing, passwords that appear on no command line and in no output."""

import hashlib
import hmac
import json
import re
import subprocess
import sys

import pytest

from host_tools import provision
from host_tools.benchnode import BenchNode
from host_tools.paths import FIRMWARE, REPO
from tests.brokers import free_port
from tests.test_config_console import answer
from tests.test_serial_port import settle, terminal

if str(FIRMWARE) not in sys.path:
    sys.path.insert(0, str(FIRMWARE))

from heatgw import config, seal  # noqa: E402

CON = b"heatgw> "
MQTT_PW = "Mq77-pr0v-Secret"
WIFI_PW = "W1fi-pr0v-Secret"


def _flags(tmp_path, port, *extra):
    """The site's flags; a --sensor in extra replaces the four sensors."""
    (tmp_path / "mqtt.pw").write_text(MQTT_PW + "\n")
    sensors = [] if "--sensor" in extra else [
        "--sensor", "supply:1000:4:noncritical", "--sensor", "return:1000:4:noncritical",
        "--sensor", "sink_return:1000:3", "--sensor", "it_coolant:1000:3"]
    return ["--port", port, "--node", "gw-prov", "--site", "plant", "--mains-hz", "50",
            *sensors, "--flow", "0.1:15", "--meter-in", "return", "--fluid", "water",
            "--sink-return-max", "42", "--set", "control.recover_s=60",
            "--broker", f"127.0.0.1:{free_port()}", "--mqtt-user", "gw-prov",
            "--mqtt-password-file", str(tmp_path / "mqtt.pw"),
            "--command-key-file", str(tmp_path / "gw.key"), *extra]


def _provision(argv, spy=None):
    """provision.main in process; every subprocess it starts (mpremote) recorded."""
    calls = []
    real = subprocess.run

    def recording(cmd, *a, **kw):
        calls.append(list(cmd))
        return real(cmd, *a, **kw)

    out = []
    provision.subprocess.run = recording
    try:
        ns = provision.parser().parse_args(argv)
        try:
            rc = provision.run(ns, out=out.append, inp=lambda q: "")
        except provision.ProvisionError as e:
            out.append(f"error: {e}")
            rc = 2
        except provision.DeviceError as e:
            out.append(f"error: {e}")
            rc = 1
    finally:
        provision.subprocess.run = real
    return rc, "\n".join(out), calls


def _device_files(port):
    """The device's config.json, and what the node says of its secrets.json: the names,
    the seal, and a MAC under its command key (never the key)."""
    dev = provision.Device(port)
    try:
        got = dev.get(["config.json"])
        got["secrets"] = json.loads(dev.exec(
            "import json, binascii\nfrom heatgw import secrets, seal, hmac256\n"
            "s = secrets.load('secrets.json')\nk = s.get('command_key')\n"
            "with open('secrets.json', 'rb') as f:\n    ok = seal.check(f.read())\n"
            "print('NODE', json.dumps([s.names(), ok, k and binascii.hexlify("
            "hmac256.Key(k.reveal()).mac(b'provision test')).decode()]))", "NODE "))
        return got
    finally:
        dev.close()


def _mac(key_hex):
    return hmac.new(bytes.fromhex(key_hex), b"provision test", hashlib.sha256).hexdigest()


def test_round_trip_then_the_node_boots_it_and_a_second_run_shows_the_diff(tmp_path):
    with BenchNode(tmp_path / "node", trace=True) as node:
        t = terminal(node.port.path)
        t.expect(b'"kind": "boot"', timeout=60)
        assert b'"config": "default"' in t.before + t.buffer
        t.close()
        rc, out, calls = _provision(_flags(tmp_path, node.name, "--yes", "--reset"))
        assert rc == 0, out
        assert f"device {node.name}: config.json: none on the device; secrets.json: none" \
            in out
        assert "  node_id: \"heatgw\" -> \"gw-prov\"" in out
        assert "  control.sink_return_max_c: 45.0 -> 42.0" in out
        assert "  secrets.json command_key: added (values never shown)" in out
        assert "  secrets.json mqtt_password: added (values never shown)" in out
        assert "written and read back: config.json (" in out
        assert "secrets.json checked by the node: command_key, mqtt_password, sealed, seal " \
               "matches" in out
        assert "  control.recover_s = 60" in out
        assert "  secrets.json: command_key = <secret>, mqtt_password = <secret>" in out
        assert "reset: the node boots the new configuration" in out
        key = (tmp_path / "gw.key").read_text().strip()
        for c in calls:  # the real mpremote, never a secret on its command line
            assert c[:4] == [sys.executable, "-m", "mpremote", "connect"], c
            assert MQTT_PW not in " ".join(c) and key not in " ".join(c), c
        assert MQTT_PW not in out and key not in out
        assert (tmp_path / "gw.key").stat().st_mode & 0o777 == 0o600
        # the node boots the provisioned configuration
        t = terminal(node.port.path)
        t.expect(b'"kind": "boot"', timeout=60)
        booted = t.before + t.after
        t.expect(re.escape(CON), timeout=60)
        booted += t.before
        assert b'"config": "file"' in booted and b"no seal" not in booted, booted
        settle(t)
        status = answer(t, b"status")
        assert re.search(r"^node\s+gw-prov\b", status, re.M), status
        assert answer(t, b"config get control.sink_return_max_c") == \
            "control.sink_return_max_c = 42.0"
        t.close()
        assert node.boots[-1][0] == "hard_reset"
        # what is on the device: sealed, and the node's secrets file with the key
        files = _device_files(node.name)
        assert seal.check(files["config.json"]) is True
        doc = config.parse(files["config.json"], "c")[0]
        assert doc["node_id"] == "gw-prov" and doc["control"]["sink_return_max_c"] == 42
        assert doc["sensors"]["sink_return"] == {"r0_ohm": 1000, "wires": 3}
        assert doc["mqtt"]["username"] == "gw-prov" and "password" not in json.dumps(doc)
        # the node's secrets: sealed, and its key is the operator's (a MAC proves it)
        assert files["secrets"] == [["command_key", "mqtt_password"], True, _mac(key)]
        # a second run: one threshold changed: the difference, nothing else (the same
        # password and key: "same", not listed)
        rc, out, _ = _provision(_flags(tmp_path, node.name, "--sink-return-max", "41",
                                       "--dry-run"))
        assert rc == 0, out
        assert "config.json: sealed, seal matches; secrets.json: command_key, " \
               "mqtt_password" in out
        changes = out.split("changes on the device:\n")[1].split("\ndry run")[0]
        # the broker port is new too (a free port each run)
        assert [x for x in changes.splitlines() if "mqtt.port" not in x] == \
            ["  control.sink_return_max_c: 42.0 -> 41.0"], changes
        assert "dry run: nothing written" in out
        assert _device_files(node.name) == files
        # --show: the device's configuration, secrets masked
        rc, out, _ = _provision(["--port", node.name, "--show"])
        assert rc == 0 and "config.json: sealed, seal matches" in out
        assert "  node_id = \"gw-prov\"" in out and MQTT_PW not in out and key not in out
    log = (tmp_path / "node" / "console.log").read_bytes()
    assert MQTT_PW.encode() not in log and key.encode() not in log


BAD = [
    (["--mains-hz", "55"], "site.mains_hz: 55 is not allowed; one of 50, 60"),
    (["--sensor", "supply:1000:5"], "sensors.supply.wires: 5 is not allowed; one of 2, 3, 4"),
    (["--sensor", "boiler:1000:4"], "--sensor boiler:1000:4: expected NAME:R0:WIRES"),
    (["--set", "control.tick_ms=5000"],
     "--set control.tick_ms=5000: control.tick_ms: 5000 is above the maximum 1000 ms"),
    (["--set", "control.tickms=500"], "--set control.tickms=500: control.tickms: unknown key"),
    (["--sink-return-max", "130"], "control.sink_return_max_c = 130 must be below "
                                   "sensors.sink_return.max_c = 120"),
    (["--fluid", "propylene_glycol"], "meter.mass_fraction = 0 must be above 0"),
    (["--flow", "0.1"], "--flow 0.1: expected LITRES_PER_PULSE:MAX_M3H"),
    (["--node", "gw prov"], "node_id: character \" \" not allowed"),
    (["--set", "mqtt_password=x"], "--set mqtt_password: not settable here"),
]


@pytest.fixture(scope="module")
def provisioned(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("prov")
    with BenchNode(tmp / "node", trace=True) as node:
        rc, out, _ = _provision(_flags(tmp, node.name, "--yes"))
        assert rc == 0, out
        yield node, tmp, _device_files(node.name)


@pytest.mark.parametrize("extra, error", BAD, ids=[b[1][:40] for b in BAD])
def test_bad_flags_give_a_clear_error_and_write_nothing(provisioned, extra, error):
    node, tmp, before = provisioned
    rc, out, calls = _provision(_flags(tmp, node.name, *extra, "--yes"))
    assert rc == 2 and out.startswith("error: ") and error in out, out
    assert calls == []  # refused before the device was even opened


def test_a_missing_password_is_refused_not_guessed(provisioned, tmp_path):
    node, tmp, before = provisioned
    argv = _flags(tmp, node.name, "--yes", "--wifi-ssid", "site-net")
    rc, out, _ = _provision(argv)
    assert rc == 2 and "--wifi-ssid: give --wifi-password-file or --wifi-open" in out, out
    assert _device_files(node.name) == before  # nothing written


def test_cli_exit_codes_and_no_password_in_output(provisioned, tmp_path):
    node, tmp, before = provisioned
    (tmp_path / "wifi.pw").write_text("short\n")  # Wi-Fi needs 8..63 characters
    r = subprocess.run([sys.executable, "-m", "host_tools.provision",
                        *_flags(tmp, node.name, "--wifi-ssid", "site-net",
                                "--wifi-password-file", str(tmp_path / "wifi.pw"), "--yes")],
                       cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stdout == "", (r.stdout, r.stderr)
    assert r.stderr == ("error: secrets.json: wifi_password: must be 8..63 characters, 64 hex "
                        "digits, or \"\" for an open network\n")
    assert "short" not in r.stderr
    assert _device_files(node.name) == before


def test_interactive_questions_and_prompted_passwords_into_a_folder(tmp_path):
    answers = "\n".join(["gw-ask", "60", "sink_return:1000:3 it_coolant:100:4", "0.5:20",
                         "flow", "propylene_glycol:0.3", "", "", "2.5",
                         "10.0.0.9:1884", "plant", "gw-ask", "site-net",
                         MQTT_PW, WIFI_PW, ""]) + "\n"
    r = subprocess.run([sys.executable, "-m", "host_tools.provision", "--out",
                        str(tmp_path / "out"), "-i", "--command-key-file",
                        str(tmp_path / "k")], cwd=REPO, input=answers,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert MQTT_PW not in r.stdout + r.stderr and WIFI_PW not in r.stdout + r.stderr
    raw = (tmp_path / "out" / "config.json").read_bytes()
    doc, err, sealed = config.parse(raw, "config.json")
    assert err is None and sealed is True
    assert doc["node_id"] == "gw-ask" and doc["site"] == {"mains_hz": 60}
    assert doc["sensors"]["it_coolant"] == {"r0_ohm": 100, "wires": 4}
    assert doc["flow"]["litres_per_pulse"] == 0.5 and doc["meter"]["meter_in_return"] is False
    assert doc["meter"]["fluid"] == "propylene_glycol" and doc["control"][
        "sink_flow_min_m3h"] == 2.5
    assert doc["mqtt"] == {"host": "10.0.0.9", "port": 1884, "site": "plant",
                           "username": "gw-ask"}
    s = config_secrets(tmp_path / "out" / "secrets.json")
    assert s == {"command_key": (tmp_path / "k").read_text().strip(), "mqtt_password": MQTT_PW,
                 "wifi_password": WIFI_PW, "wifi_ssid": "site-net"}


def config_secrets(path):
    from heatgw import secrets

    s = secrets.load(str(path))
    return {k: (s.get(k).reveal().hex() if k == "command_key" else s.get(k).reveal())
            for k in s.names()}
