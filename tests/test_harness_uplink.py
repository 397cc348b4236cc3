"""The harness with telemetry (--broker, credentials, --ca, --ha-prefix) and --romfs: the
real node publishes a scenario's records to a real mosquitto (tests/brokers.py), the
summary carries the node's `mqtt` record, the password is never printed, and the code
runs from a ROMFS image in a heap grown by exactly the image."""

import json
import math
import os
import subprocess

import pytest

from host_tools import harness, mprun, romfs
from host_tools.harness import heap_bytes, run_scenario, split_heapsize
from host_tools.paths import REPO
from host_tools.uplink import MQTT_KEYS, Uplink, UplinkError
from tests.brokers import Broker, Subscriber, free_port
from tests.nodedriver import NET_WHERE, messages

PASSWORD = "s3cret-Pa55word-xyz"  # must appear in no output
SHORT = {"name": "uplink_short", "duration_s": 300, "load_kw": 100, "demand_kw": 100,
         "initial": {"tank_c": 37.5, "it_feed_c": 40.0}}


def _scenario(tmp_path, sc=SHORT):
    path = tmp_path / "sc.json"
    path.write_text(json.dumps(sc))
    return path


def _password_file(tmp_path):
    pw = tmp_path / "mqtt_password"
    pw.write_text(PASSWORD + "\n")  # as `echo` writes it: the line ending is not part of it
    return pw


def _has_ssl():
    out = mprun.run_code("try:\n import ssl\n print(1)\nexcept ImportError:\n print(0)")
    return out.strip() == "1"


def test_make_scenario_publishes_to_a_tls_broker_with_credentials_from_romfs(tmp_path):
    if not _has_ssl():
        pytest.skip("this micropython has no ssl module")
    with Broker(tmp_path / "mosquitto", users={"node": PASSWORD, "upstream": "up-pw"},
                tls=True) as b:
        sub = Subscriber(b, ["heatgw/#", "homeassistant/#"], username="upstream",
                         password="up-pw")
        out = tmp_path / "out.json"
        env = dict(os.environ, MICROPYTHON_ARGS="-X heapsize=400K")
        proc = subprocess.run(
            ["make", "-s", "scenario", f"SCENARIO={_scenario(tmp_path)}", f"OUT={out}",
             f"BROKER=localhost:{b.tls_port}", "MQTT_USER=node",
             f"MQTT_PASSWORD_FILE={_password_file(tmp_path)}", f"CA={b.ca_pem_path}",
             "HA_PREFIX=homeassistant", "ROMFS=1"],
            cwd=REPO, env=env, capture_output=True,
            text=True, timeout=600, check=False)
        msgs = messages(sub)
        sub.close()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    s = json.loads(out.read_text())
    console = open(s["console_log"]).read()
    for text in (proc.stdout, proc.stderr, console, out.read_text()):
        assert PASSWORD not in text
    # the summary's mqtt block: exactly the node's record, and the broker was reached
    m = s["mqtt"]
    assert tuple(m) == MQTT_KEYS
    # the network side's longest real stretch, beside the block (a figure, not a limit)
    assert s["net_worst_real_ms"] > 0 and s["net_worst_where"] in NET_WHERE
    print(f"\nTLS scenario: longest network stretch {s['net_worst_real_ms']} ms real "
          f"({s['net_worst_where']})")
    # (reconnects are not asserted here: a TLS socket keeps Nagle on the host board, README
    # "Real sockets in virtual time"; the complete-node day asserts 0 over plain TCP)
    assert m["published"] > 0 and m["acked"] >= m["published"] - 1
    up = s["uplink"]
    assert up["reached"] and up["tls"] and up["username"] == "node"
    base = up["topic_base"]
    seqs = [json.loads(p)["seq"] for t, p, *_ in msgs
            if t in (base + "/telemetry", base + "/event")]
    assert sorted(set(seqs)) == list(range(m["first_seq"], m["last_seq"] + 1))
    assert m["last_seq"] >= 30  # 5 minutes of telemetry and the boot's events
    assert len({t for t, *_ in msgs if t.startswith("homeassistant/")}) == 10
    # ROMFS: mounted at boot, and the heap grew by the image (rounded up to 4 KB) and by
    # the host board's modules, as this very boot measured them (the probe's figure)
    img = s["romfs_image_bytes"]
    assert f"romfs: {img} bytes mounted at /rom" in console
    assert s["host_board_bytes"] > 10 * 1024
    assert heap_bytes(s["heapsize"]) == (400 * 1024 + 4096 * math.ceil(img / 4096)
                                         + s["host_board_bytes"])
    assert 0 < s["peak_heap_bytes"] < 400 * 1024


def test_an_unreachable_broker_is_no_failure_and_the_summary_says_so(tmp_path, capsys):
    out = tmp_path / "out.json"
    rc = harness.main([str(_scenario(tmp_path, dict(SHORT, duration_s=120))), "--out",
                       str(out), "--broker", f"127.0.0.1:{free_port()}", "--mpy"])
    assert rc == 0, capsys.readouterr().err
    s = json.loads(out.read_text())
    assert s["mqtt"]["acked"] == s["mqtt"]["published"] == 0
    assert s["mqtt"]["last_seq"] == 0
    assert s["uplink"]["reached"] is False and "queued" in s["uplink"]["note"]
    assert s["net_worst_real_ms"] > 0 and s["net_worst_where"] in NET_WHERE
    assert s["metered"]["time_s"] > 100  # the node ran: control and metering as ever


@pytest.mark.parametrize("args, why", [
    (["--broker", "no-port"], "expected HOST:PORT"),
    (["--broker", "h:0"], "expected HOST:PORT"),
    (["--broker", "h:1883", "--mqtt-password-file", "PW"], "needs --mqtt-user"),
    (["--broker", "h:1883", "--mqtt-user", "u", "--mqtt-password-file", "MISSING"],
     "cannot be read"),
    (["--broker", "h:1883", "--ca", "PW"], "neither a PEM nor a DER certificate"),
    (["--mqtt-user", "u"], "need --broker"),
])
def test_bad_broker_options_are_clear_errors_and_run_nothing(tmp_path, capsys, args, why):
    pw = _password_file(tmp_path)
    args = [str(pw) if a == "PW" else str(tmp_path / "nope") if a == "MISSING" else a
            for a in args]
    out = tmp_path / "out.json"
    rc = harness.main([str(_scenario(tmp_path)), "--out", str(out), *args])
    err = capsys.readouterr().err
    assert rc == 2 and why in err, err
    assert PASSWORD not in err
    assert not out.exists()


def test_the_password_is_read_from_its_file_and_kept_out_of_reprs(tmp_path):
    up = Uplink("127.0.0.1:1883", user="node", password_file=_password_file(tmp_path))
    assert up.secrets() == {"mqtt_password": PASSWORD}  # without the file's line ending
    assert PASSWORD not in repr(up) and PASSWORD not in json.dumps(up.config_section())
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(UplinkError, match="empty"):
        Uplink("h:1", user="u", password_file=empty)


def test_a_password_the_node_refuses_is_refused_before_the_node_runs(tmp_path):
    pw = tmp_path / "long"
    pw.write_text("x" * 129)  # the secrets file allows 1..128 characters
    up = Uplink(f"127.0.0.1:{free_port()}", user="node", password_file=pw)
    with pytest.raises(harness.NodeFailed) as e:
        run_scenario(_scenario(tmp_path), workdir=tmp_path / "w", uplink=up)
    assert "mqtt_password" in str(e.value) and "x" * 20 not in str(e.value)


def test_heapsize_arguments_are_parsed_as_the_unix_port_does():
    assert heap_bytes("160K") == 160 * 1024 and heap_bytes("2M") == 2 << 20
    assert heap_bytes("163840") == 163840 and heap_bytes("0x1000") == 4096
    with pytest.raises(ValueError):
        heap_bytes("160KB")
    cmd, heap = split_heapsize(["mp", "-X", "heapsize=1M", "-v", "-Xheapsize=160K"])
    assert cmd == ["mp", "-v"] and heap == "160K"


def test_the_romfs_image_holds_the_application_drivers_and_umqtt(tmp_path):
    rb = romfs.host_romfs(tmp_path / "rom")
    tree = rb.root / "tree"
    assert (tree / "heatgw" / "telemetry.mpy").is_file()
    assert (tree / "umqtt" / "simple.mpy").is_file()
    assert {p.stem for p in tree.glob("*.mpy")} == set(romfs.driver_modules())
    # the host board's own modules stay outside it, and nothing of firmware/ is on the path
    assert not list(tree.glob("board.mpy"))
    assert sorted(p.name for p in rb.start_dir.iterdir()) == ["boot.py", "main.py"]
    assert {p.stem for p in rb.host_dir.iterdir()} == set(romfs.host_board_modules())
    assert rb.image_bytes > 50_000
