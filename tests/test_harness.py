"""The harness itself: the real micropython binary runs, with the firmware path set; a
scenario run fails loudly when its node does not run."""

import json
import os
import subprocess

import pytest

from host_tools import fetch_mplibs, linkcodec, mpinfo
from host_tools.harness import run_scenario
from host_tools.nodeproc import NodeFailed
from host_tools.paths import MPLIBS, REPO, micropython_cmd


def test_micropython_binary_runs(mp):
    out = mp.run_code("import sys\nprint(sys.implementation.name)")
    assert out.strip() == "micropython"


def test_micropython_env_var_selects_binary(monkeypatch):
    monkeypatch.setenv("MICROPYTHON", "/opt/other/micropython")
    monkeypatch.setenv("MICROPYTHON_ARGS", "-X heapsize=64wK")
    assert micropython_cmd() == ["/opt/other/micropython", "-X", "heapsize=64wK"]


def test_pinned_mplibs_are_unpacked_and_import(mp):
    pins = fetch_mplibs.read_lock()
    assert {p[0] for p in pins} == {"micropython-umqtt.simple", "micropython-modbus"}
    for name, version, sha in pins:
        stamp = MPLIBS / f"{name}-{version}" / ".sha256"
        assert stamp.read_text().strip() == sha
    # Both import on the unix port (umqtt.simple imports `ussl` only for TLS connections,
    # and this port has no `ussl` alias: the MQTT issue has to provide one).
    out = mp.run_code("import umqtt.simple\nimport umodbus.tcp\nprint('ok')")
    assert out.strip() == "ok"


def test_index_url_comes_from_pip_configuration(monkeypatch):
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple/")
    assert fetch_mplibs.index_url() == "http://127.0.0.1:9/simple"
    monkeypatch.delenv("PIP_INDEX_URL")
    assert fetch_mplibs.index_url().startswith(("http", "file"))


# -- a run whose node does not run fails, and says why ------------------------------------

SHORT = {"name": "short", "duration_s": 60, "load_kw": 100, "demand_kw": 100}


def _run_with(tmp_path, files, scenario=SHORT):
    """Run `scenario` with stand-in modules (path -> text) ahead of the firmware."""
    stand_ins = tmp_path / "stand_ins"
    for rel, text in files.items():
        (stand_ins / rel).parent.mkdir(parents=True, exist_ok=True)
        (stand_ins / rel).write_text(text)
    path = tmp_path / "sc.json"
    path.write_text(json.dumps(scenario))
    return run_scenario(path, workdir=tmp_path / "w", module_dirs=[stand_ins])


def test_run_fails_when_the_application_crashes_at_boot(tmp_path):
    with pytest.raises(NodeFailed) as e:
        _run_with(tmp_path, {"heatgw/__init__.py": 'raise MemoryError("stand-in")\n'})
    assert "application crashed at boot" in str(e.value)
    assert "MemoryError" in str(e.value)  # the console's last lines come with it


def test_run_fails_when_the_application_never_starts(tmp_path):
    with pytest.raises(NodeFailed, match="never reached the application"):
        _run_with(tmp_path, {"main.py": "# starts nothing\n"})


def test_run_fails_when_the_node_exits(tmp_path):
    with pytest.raises(NodeFailed, match="exited with 3 unexpectedly"):
        _run_with(tmp_path, {"main.py": "import sys\nsys.exit(3)\n"})


def test_stand_ins_that_run_the_application_pass(tmp_path):
    # the same mechanism with a working main.py: the failures above are the node's
    s, h = _run_with(tmp_path, {"main.py": (REPO / "firmware" / "main.py").read_text()})
    assert [b["cause"] for b in s["boots"]] == ["power_on"]
    assert any(e.get("kind") == "boot" for e in h.node_events)


def test_make_scenario_fails_when_the_node_runs_out_of_heap_at_boot(tmp_path):
    out = tmp_path / "short.json"
    out.write_text("{}")  # a summary left from an earlier run
    sc = tmp_path / "sc.json"
    sc.write_text(json.dumps(SHORT))
    # far below what the application needs (the host board comes on top): the node dies
    # of MemoryError at boot
    env = dict(os.environ, MICROPYTHON_ARGS=f"-X heapsize={mpinfo.heapsize(24)}")
    proc = subprocess.run(
        ["make", "-s", "scenario", f"SCENARIO={sc}", f"OUT={out}", "MPY=0"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert "harness: FAILED" in proc.stderr and "MemoryError" in proc.stderr, proc.stderr
    assert not out.exists()  # no summary that could pass for this run


def test_link_opcodes_are_one_distinct_character_each():
    codes = [v for k, v in vars(linkcodec.proto).items()
             if k.isupper() and k != "NONE" and not k.startswith("EXIT_")]  # exit statuses
    # 18 + D (dead-man hold), c (watchdog feed fails), w (flash fails), R (a chip's
    # reference resistor and noise), T (a technician's calibration step)
    assert len(codes) == 23
    assert len(set(codes)) == len(codes)
    assert all(33 <= c < 127 for c in codes)
    assert linkcodec.advance(5, 10) == "A 5 10\n"
    assert linkcodec.pulses(1, 5, [7, 9]) == "p 1 5 7 9\n"
    assert linkcodec.pulses("-", 5, [12]) == "p - 5 12\n"
    assert linkcodec.chip("supply", "4295.7000", 1.0) == "R supply 4295.7000 1.0\n"
    assert linkcodec.technician(["measure", "1000.0"]) == "T measure 1000.0\n"
    assert linkcodec.parse("P reuse 0 1200") == ("P", ("reuse", 0, 1200))
