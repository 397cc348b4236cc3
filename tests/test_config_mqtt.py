"""The MQTT command config_set: signed like every command (heatgw.command), limited to a
whitelist of keys (command.CONFIG_KEYS), then the console's path (heatgw.cfgedit: the key
against its schema node, the whole configuration validated, written sealed) for the next
boot; answered on .../cmd/ack with what changed or why not; an event names mqtt.

In process on both runtimes (the verdicts of heatgw.command, identical), then a node on the
bench with a real mosquitto and the host-side signer (host_tools.command --broker): the
ack, the file, the console's diff, and the value running after a reboot."""

import json
import re
import subprocess
import sys

from host_tools import command as signer
from host_tools.benchnode import BenchNode
from host_tools.paths import FIRMWARE, REPO
from tests.brokers import Broker
from tests.payload_schemas import validate
from tests.test_config_console import answer
from tests.test_serial_port import settle, terminal

if str(FIRMWARE) not in sys.path:
    sys.path.insert(0, str(FIRMWARE))

from heatgw import command, config  # noqa: E402

KEY = bytes(range(7, 39))
OTHER = bytes(range(1, 33))
CON = b"heatgw> "


def _payload(ctr, cmd, args, key=KEY, node="n1"):
    return signer.sign(key, signer.body(node, f"c-{ctr}", ctr, cmd, args))


CASES = [
    ("whitelisted", _payload(1, "config_set", {"key": "control.sink_return_max_c",
                                               "value": 42.5})),
    ("broker", _payload(2, "config_set", {"key": "mqtt.host", "value": 1})),
    ("tick", _payload(2, "config_set", {"key": "control.tick_ms", "value": 500})),
    ("not_a_number", _payload(2, "config_set", {"key": "control.recover_s",
                                                "value": "60"})),
    ("missing_value", _payload(2, "config_set", {"key": "control.recover_s"})),
    ("forged", _payload(2, "config_set", {"key": "control.recover_s", "value": 60},
                        key=OTHER)),
    ("second", _payload(2, "config_set", {"key": "telemetry.interval_s", "value": 30})),
]

MP_CASES = r"""
import json
from binascii import unhexlify
from heatgw import secrets
from heatgw.command import Commands
from heatgw.inbox import Inbox
c = Commands("n1", secrets.from_dict({"command_key": KEY}), Inbox(),
             (DIR + "/ctr.a", DIR + "/ctr.b"))
for name, p in CASES:
    ack, ev, act = c.handle(unhexlify(p))
    print(json.dumps([name, ack, ev, list(act[1]) if act else None, c.last_ctr]))
"""


def _cpython_verdicts(d):
    from heatgw import secrets
    from heatgw.inbox import Inbox

    c = command.Commands("n1", secrets.from_dict({"command_key": KEY.hex()}), Inbox(),
                         (str(d / "ctr.a"), str(d / "ctr.b")))
    out = []
    for name, p in CASES:
        ack, ev, act = c.handle(p)
        out.append([name, ack, ev, list(act[1]) if act else None, c.last_ctr])
    return out


def test_config_set_is_signed_and_whitelisted_identically_on_both(mp, tmp_path):
    (tmp_path / "cp").mkdir()
    (tmp_path / "mp").mkdir()
    cp = _cpython_verdicts(tmp_path / "cp")
    src = (f"KEY = {KEY.hex()!r}\nDIR = {str(tmp_path / 'mp')!r}\n"
           f"CASES = {[(n, p.hex()) for n, p in CASES]!r}\n" + MP_CASES)
    got = mp.run_json(src)
    assert json.loads(json.dumps(cp)) == got
    r = {row[0]: row[1:] for row in cp}
    ack, ev, act, ctr = r["whitelisted"]
    assert ack == {"id": "c-1", "ok": True} and act == ["control.sink_return_max_c", 42.5]
    assert ev["cmd"] == "config_set" and ev["key"] == "control.sink_return_max_c" and \
        ev["source"] == "mqtt" and ctr == 1
    # outside the whitelist, or not a number: invalid, and no counter spent
    for name in ("broker", "tick"):
        ack, ev, act, ctr = r[name]
        assert ack["ok"] is False and ack["error"].startswith(
            "invalid: args.key: ") and "cannot be set remotely; one of control." in \
            ack["error"], ack
        assert act is None and ctr == 1
    assert r["not_a_number"][0]["error"] == "invalid: args.value: must be a number"
    assert r["missing_value"][0]["error"] == "invalid: args.value: missing"
    assert r["forged"][0] == {"id": None, "ok": False, "error": "forged: the mac does not "
                              "match the body (wrong key, or the body was changed)"}
    assert r["second"][2] == ["telemetry.interval_s", 30] and r["second"][3] == 2
    for row in cp:
        validate("heatgw/s1/n1/cmd/ack", json.dumps(row[1]).encode())


def test_the_whitelist_holds_no_secret_broker_or_loop_timing():
    for k in command.CONFIG_KEYS:
        assert k.split(".")[0] in ("control", "telemetry", "persist"), k
        assert k not in ("control.tick_ms",), k
    from heatgw import cfgedit

    for k in command.CONFIG_KEYS:  # every one is a number in the schema
        node, err = cfgedit.node(k)
        assert err is None and node["type"] in ("int", "float"), k


MP_SET = r"""
import json, os
from heatgw import cfgedit, config
P = DIR + "/config.json"
with open(P, "w") as f:
    f.write(TEXT)
running = config.load(P)[0]
for key, value in SETS:
    ok, r = cfgedit.set_one(P, running, key, value, 1000)
    with open(P, "rb") as f:
        raw = f.read()
    print(json.dumps([ok, r, config.unseal(raw), sorted(os.listdir(DIR))]))
"""


def test_set_one_validates_the_whole_configuration_and_writes_it_sealed(mp, tmp_path):
    text = (REPO / "scenarios" / "default_config.json").read_text()
    sets = [["control.sink_return_max_c", 500], ["control.sink_return_hyst_k", 45.0],
            ["control.sink_return_max_c", 42.5], ["persist.interval_s", 60]]
    out = mp.run_json(f"DIR = {str(tmp_path)!r}\nTEXT = {text!r}\nSETS = {sets!r}\n" +
                      MP_SET)
    assert out[0] == [False, "control.sink_return_max_c: 500 is above the maximum 150 C",
                      False, ["config.json"]]
    assert out[1][0] is False and out[1][1].startswith(
        "control.sink_return_max_c - control.sink_return_hyst_k = -5 must be above")
    assert out[1][2] is False  # refused: the hand-written file is still there, untouched
    assert out[2] == [True, ["control.sink_return_max_c", 40.0, 42.5], True,
                      ["config.json"]]
    # the second change builds on the first (the file, not the running configuration)
    assert out[3] == [True, ["persist.interval_s", 300, 60], True, ["config.json"]]
    doc, err, sealed = config.parse((tmp_path / "config.json").read_bytes(), "c")
    want = json.loads(text)
    want["control"]["sink_return_max_c"] = 42.5
    want["persist"]["interval_s"] = 60
    assert (err, sealed, doc) == (None, True, want)


# -- a node on the bench, a real broker, the host-side signer --------------------------

def _sign_and_send(tmp_path, port, key_file, *cmd):
    args = ["--key-file", str(key_file), "--counter-file", str(tmp_path / "op.ctr"),
            "--node", "gw-cfg", "--site", "s1", "--broker", f"127.0.0.1:{port}",
            "--ack-timeout", "20", *cmd]
    r = subprocess.run([sys.executable, "-m", "host_tools.command", *args], cwd=REPO,
                       capture_output=True, text=True, timeout=60, check=False)
    assert r.stdout.strip(), r.stderr
    return r.returncode, json.loads(r.stdout)


def test_config_set_over_mqtt_is_saved_and_runs_after_the_next_boot(tmp_path):
    cfg = json.loads((REPO / "scenarios" / "default_config.json").read_text())
    with Broker(tmp_path / "mosquitto") as b:
        cfg["node_id"] = "gw-cfg"
        cfg["mqtt"] = {"host": "127.0.0.1", "port": b.port, "site": "s1"}
        key_file = tmp_path / "node.key"
        key_file.write_text(KEY.hex() + "\n")
        (tmp_path / "other.key").write_text(OTHER.hex() + "\n")
        files = {"secrets.json": json.dumps({"command_key": KEY.hex()})}
        with BenchNode(tmp_path / "node", config=cfg, files=files, trace=True) as node:
            t = terminal(node.port.path)
            t.expect(b"mqtt: connected to", timeout=60)
            settle(t)
            rc, ack = _sign_and_send(tmp_path, b.port, key_file, "config_set",
                                     "control.sink_return_max_c", "42.5")
            assert rc == 0 and ack == {"id": "config_set-1", "ok": True, "config": {
                "key": "control.sink_return_max_c", "from": 40.0, "to": 42.5,
                "applies": "next_boot"}}, ack
            rc, ack = _sign_and_send(tmp_path, b.port, key_file, "config_set",
                                     "control.it_coolant_max_c", "130")
            assert rc == 1 and ack["id"] == "config_set-2" and ack["error"] == (
                "invalid: control.it_coolant_max_c = 130 must be below "
                "sensors.it_coolant.max_c = 120 (the trip point must be inside the sensor "
                "range): nothing saved"), ack
            rc, ack = _sign_and_send(tmp_path, b.port, key_file, "config_set",
                                     "control.tick_ms", "500")
            assert rc == 1 and ack["error"].startswith(
                "invalid: args.key: \"control.tick_ms\" cannot be set remotely"), ack
            rc, ack = _sign_and_send(tmp_path, b.port, tmp_path / "other.key",
                                     "config_set", "control.recover_s", "60")
            assert rc == 1 and ack["id"] is None and ack["error"].startswith("forged: ")
            for a in (ack,):
                validate("heatgw/s1/gw-cfg/cmd/ack", json.dumps(a).encode())
            settle(t)
            assert answer(t, b"config diff") == \
                "control.sink_return_max_c: 40.0 -> 42.5   (saved, next boot)"
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
                "control.sink_return_max_c = 42.5"
            t.close()
            log = node.console_text()
    events = [json.loads(x[7:]) for x in log.splitlines() if x.startswith("event: ") and
              '"kind": "config"' in x]
    mqtt = [e for e in events if e.get("source") == "mqtt"]
    assert [(e["key"], e["result"]) for e in mqtt] == [
        ("control.sink_return_max_c", "saved"), ("control.it_coolant_max_c", "refused")]
    assert mqtt[0]["from"] == 40.0 and mqtt[0]["to"] == 42.5
