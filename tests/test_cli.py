"""The `heatgw` command: the table, on-demand handlers, the console script, the make wrapper.

Every entry of host_tools.cli.COMMANDS is run with --help; `heatgw --help` loads none of
them; a fresh venv given the Makefile's own install command gets a working
`bin/heatgw`; `heatgw scenario` runs a scenario as `make scenario` does.
"""

import json
import re
import subprocess
import sys

import pytest

from host_tools import cli
from host_tools.paths import REPO


def heatgw(*args, timeout=120, **kw):
    """`heatgw ARGS` as the console script runs it (python -m host_tools.cli, this tree)."""
    return subprocess.run([sys.executable, "-m", "host_tools.cli", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout, **kw)


def test_help_lists_every_command_of_the_table_with_its_line():
    r = heatgw("--help")
    assert r.returncode == 0, r.stderr
    for name, (_, help_) in cli.COMMANDS.items():
        assert re.search(rf"^  {re.escape(name)} +{re.escape(help_)}$", r.stdout, re.M), name
    assert heatgw().returncode == 2  # no command: the table, on stderr... and usage error


def test_help_imports_no_handler_module():
    code = ("import sys; from host_tools import cli; cli.main(['--help']); "
            "print(sorted(m for m in sys.modules if m.startswith('host_tools')))")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                       text=True, check=True)
    assert r.stdout.strip().splitlines()[-1] == "['host_tools', 'host_tools.cli']"


@pytest.mark.parametrize("name", list(cli.COMMANDS))
def test_every_subcommand_has_its_own_help(name):
    r = heatgw(name, "--help")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"usage: heatgw {name}"), r.stdout[:200]


def test_unknown_command_and_bad_options_are_clear_errors():
    r = heatgw("flsah")
    assert r.returncode == 2
    assert "heatgw: error: no command 'flsah' (choose from " in r.stderr
    r = heatgw("scenario")  # its required argument missing: argparse, named `heatgw scenario`
    assert r.returncode == 2
    assert "usage: heatgw scenario" in r.stderr and "required: scenario" in r.stderr


def test_the_makefiles_install_gives_a_console_script_in_a_fresh_venv(tmp_path):
    """The Makefile's venv bootstrap, in a new venv: the pinned setuptools (what
    `-r requirements.txt` brings for the build), then its own editable-install line; the
    venv's bin/heatgw answers --help (it needs nothing but the standard library for it)."""
    venv = tmp_path / "venv"
    dry = subprocess.run(["make", "-n", "-B", "venv", f"VENV={venv}"], cwd=REPO,
                         capture_output=True, text=True, check=True).stdout
    recipe = dry.replace("\\\n", " ").splitlines()
    pip = f"{venv}/bin/pip install"
    steps = [line.split() for line in recipe if line.startswith(pip)]
    assert "-r" in steps[0] and "requirements.txt" in steps[0]
    assert steps[1][-3:] == ["--no-build-isolation", "-e", "."] and "--no-deps" in steps[1]
    pin = re.search(r"^setuptools==\S+$", (REPO / "requirements.txt").read_text(), re.M)
    assert pin, "the build backend is pinned in requirements.txt"
    subprocess.run(["python3", "-m", "venv", str(venv)], check=True, timeout=120)
    subprocess.run([f"{venv}/bin/pip", "install", "--quiet", pin.group(0)], check=True,
                   timeout=300)
    subprocess.run(steps[1], cwd=REPO, check=True, timeout=300)
    r = subprocess.run([f"{venv}/bin/heatgw", "--help"], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    assert all(f"  {name} " in r.stdout for name in cli.COMMANDS)


SHORT = {"name": "short", "duration_s": 120, "load_kw": 100, "demand_kw": 100}


def test_heatgw_scenario_runs_a_scenario_and_writes_its_summary(tmp_path):
    sc = tmp_path / "short.json"
    sc.write_text(json.dumps(SHORT))
    out = tmp_path / "short_out.json"
    r = heatgw("scenario", str(sc), "--out", str(out), "--mpy", timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    summary = json.loads(out.read_text())
    assert summary["scenario"] == "short" and summary["boots"], summary.keys()
    brief = json.loads(r.stdout[r.stdout.index("{"):])
    assert brief["scenario"] == "short"
    # a bad option is the harness's own clear error (exit 2), nothing runs
    r = heatgw("scenario", str(sc), "--mqtt-user", "u")
    assert r.returncode == 2 and "need --broker" in r.stderr


def test_make_scenario_is_a_wrapper_passing_every_option():
    dry = subprocess.run(
        ["make", "-n", "scenario", "SCENARIO=scenarios/sink_lost.json", "OUT=out/x.json",
         "BROKER=127.0.0.1:1883", "MQTT_USER=u", "MQTT_PASSWORD_FILE=pw", "CA=ca.pem",
         "HA_PREFIX=homeassistant", "ROMFS=1", "SERIAL=auto"],
        cwd=REPO, capture_output=True, text=True, check=True).stdout
    line = next(x for x in dry.replace("\\\n", " ").splitlines() if "host_tools.cli" in x)
    args = line.split()
    assert args[1:5] == ["-m", "host_tools.cli", "scenario", "scenarios/sink_lost.json"]
    for flag in ("--out out/x.json", "--mpy", "--broker 127.0.0.1:1883", "--mqtt-user u",
                 "--mqtt-password-file pw", "--ca ca.pem", "--ha-prefix homeassistant",
                 "--romfs", "--serial auto"):
        assert f" {flag}" in line, flag
