"""`heatgw deploy` against the host board's serial port, with the real mpremote.

A node on the bench (host_tools/benchnode.py, a 2 MB flash like an ESP32's file system)
gets the node's code compiled for the binary's arch: it boots from the deployed files (the
modules' __file__ are the flash's, the boot event after the reset), a second deploy with
nothing changed copies nothing (the tool's report AND the bytes on the wire: no file
write reached the node), a `.py` planted beside a deployed `.mpy` is removed, a changed
configuration is the only file copied. Errors: no port, a wrong board name, a port with
no MicroPython behind it, the wrong board, an invalid configuration, safe boot, ROMFS on
the host board. The ROMFS images for the real boards are built and read back with the
real micropython's VfsRom.
"""

import json
import os
import pty
import re
import subprocess
import sys

import pytest

from host_tools.benchnode import BenchNode
from host_tools.paths import REPO

MPREMOTE = str(os.path.join(os.path.dirname(sys.executable), "mpremote"))


def deploy(*args, timeout=300):
    r = subprocess.run([sys.executable, "-m", "host_tools.cli", "deploy", *map(str, args)],
                       cwd=REPO, capture_output=True, text=True, timeout=timeout)
    report = None
    for line in r.stdout.splitlines():
        if line.startswith("{"):
            report = json.loads(line)
    return r.returncode, r.stdout + r.stderr, report


def writes(node, since):
    """File writes the node received over its serial port since byte `since`: mpremote's
    fs_writefile opens each file with `open(PATH,'wb')`."""
    sent = bytes(node.port.sent[since:])
    return re.findall(rb"f=open\('([^']+)','wb'\)", sent)


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    n = BenchNode(tmp_path_factory.mktemp("deploy"), trace=True, flash_blocks=512)
    yield n
    n.close()


def test_deploy_to_the_host_board_boots_from_it_and_a_second_deploy_copies_nothing(node):
    n0 = len(node.port.sent)
    rc, out, first = deploy("--board", "host", "--port", node.name, "--json")
    assert rc == 0, out
    files = first["files"]
    assert files > 40 and first["unchanged"] == 0 and len(first["copied"]) == files
    for f in ("heatgw/app.mpy", "heatgw/meterkernel.mpy", "max31865.mpy",
              "umqtt/simple.mpy", "umodbus/const.mpy", "boot.py", "main.py"):
        assert f in first["copied"], f
    assert "board.mpy" not in first["copied"]  # the host board's own cannot be shadowed
    got = writes(node, n0)
    assert sorted(p.decode() for p in got) == sorted(first["copied"])  # on the wire
    assert first["boot"]["config"] == "default" and first["boot"]["state"] == "bypass"
    assert f"deploy: {files} files for host on {node.name}: {files} copied" in out
    assert "boot: the node booted" in out
    # the running node's modules are the deployed files in the flash's root
    where = subprocess.run(
        [MPREMOTE, "connect", node.name, "exec",
         "import sys; print([sys.modules[m].__file__ for m in ('heatgw.bootstate', "
         "'heatgw')])"], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert where.stdout.strip() == "['heatgw/bootstate.mpy', 'heatgw/__init__.mpy']", where

    n1 = len(node.port.sent)
    rc, out, second = deploy("--board", "host", "--port", node.name, "--json")
    assert rc == 0, out
    assert second["copied"] == [] and second["unchanged"] == files and second["bytes"] == 0
    assert writes(node, n1) == []  # no file write reached the node
    assert f"deploy: {files} files for host on {node.name}: 0 copied (0 bytes), {files} " \
           "unchanged, 0 removed" in out
    assert second["boot"]["boot"] == first["boot"]["boot"] + 1  # it booted again
    print(f"deploy to the host board: first {len(first['copied'])} files "
          f"({first['bytes']} B) in {first['copy_seconds']} s (boot checked: "
          f"{first['seconds']} s); second {len(second['copied'])} files in "
          f"{second['copy_seconds']} s ({second['seconds']} s)")


def test_a_planted_py_is_removed_and_a_changed_config_is_the_only_copy(node, tmp_path):
    shadow = tmp_path / "store.py"
    shadow.write_text("print('SHADOW store.py imported')\nraise ImportError('shadow')\n")
    subprocess.run([MPREMOTE, "connect", node.name, "fs", "cp", str(shadow),
                    ":heatgw/store.py"], check=True, capture_output=True, timeout=60)
    cfg = json.loads((REPO / "scenarios" / "default_config.json").read_text())
    cfg["node_id"] = "bench-deploy"
    cfg_path = tmp_path / "config.json"
    cfg_path.write_text(json.dumps(cfg))
    n0 = len(node.port.sent)
    start = len(node.console_text())
    rc, out, rep = deploy("--board", "host", "--port", node.name, "--config", cfg_path,
                          "--json")
    assert rc == 0, out
    assert rep["removed"] == ["heatgw/store.py"] and rep["copied"] == ["config.json"]
    assert [p.decode() for p in writes(node, n0)] == ["config.json"]
    assert rep["boot"]["config"] == "file" and rep["boot"]["errors"] == []
    assert "SHADOW" not in node.console_text()[start:]


def test_frozen_removes_the_deployed_code_and_the_node_boots_from_its_firmware(node):
    """On the host board the node's MICROPYPATH (firmware/, lib/) is its frozen code."""
    rc, out, rep = deploy("--board", "host", "--port", node.name, "--frozen", "--json")
    assert rc == 0, out
    assert rep["copied"] == [] and "heatgw/app.mpy" in rep["removed"]
    assert "boot.py" not in rep["removed"] and len(rep["removed"]) > 40
    where = subprocess.run(
        [MPREMOTE, "connect", node.name, "exec",
         "import sys; print(sys.modules['heatgw.bootstate'].__file__)"],
        capture_output=True, text=True, timeout=60, cwd=REPO)
    assert where.stdout.strip().endswith("firmware/heatgw/bootstate.py"), where
    rc, out, rep = deploy("--board", "host", "--port", node.name, "--json")
    assert rc == 0 and len(rep["copied"]) == rep["files"] - 2, out  # boot.py, main.py stay


def test_an_invalid_config_is_refused_before_the_board_is_touched(node, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"version": 1, "control": {"tick_ms": "fast"}}')
    n0 = len(node.port.sent)
    rc, out, _ = deploy("--board", "host", "--port", node.name, "--config", bad)
    assert rc == 2 and f"--config {bad} is not a valid configuration (nothing copied)" in out
    assert bytes(node.port.sent[n0:]) == b""  # not a byte to the node
    rc, out, _ = deploy("--board", "host", "--port", node.name, "--config", tmp_path / "no")
    assert rc == 2 and "no such file" in out


def test_port_and_board_errors(node):
    rc, out, _ = deploy("--board", "host")
    assert rc == 1 and "error: no port: give the board's serial port with --port" in out
    rc, out, _ = deploy("--board", "esp8266", "--port", node.name)
    assert rc == 2 and "argument --board: invalid choice: 'esp8266'" in out
    rc, out, _ = deploy("--board", "host", "--port", "/dev/ttyHEATGW-none")
    assert rc == 1 and "error: no port /dev/ttyHEATGW-none: failed to access" in out
    master, slave = pty.openpty()  # a serial port with no MicroPython behind it
    try:
        port = os.ttyname(slave)
        rc, out, _ = deploy("--board", "host", "--port", port)
    finally:
        os.close(master)
        os.close(slave)
    assert rc == 1 and f"error: no MicroPython REPL on {port} (could not enter raw repl)" in out
    n0 = len(node.port.sent)
    rc, out, _ = deploy("--board", "esp32_devkitc", "--port", node.name)
    assert rc == 1, out
    from host_tools.mpinfo import mpy_arch

    assert (f"wrong board: the MicroPython on {node.name} is for linux (.mpy arch "
            f"{mpy_arch()}); --board esp32_devkitc needs xtensawin") in out
    assert writes(node, n0) == []
    rc, out, _ = deploy("--board", "host", "--port", node.name, "--romfs")
    assert rc == 2 and "the host board has no ROM partition" in out
    assert "heatgw scenario SCENARIO --romfs" in out


def test_a_node_in_safe_boot_fails_the_check(tmp_path):
    with BenchNode(tmp_path, safe_boot=True, flash_blocks=512) as n:
        rc, out, _ = deploy("--board", "host", "--port", n.name, "--boot-timeout", "30")
    assert rc == 1 and "error: the node booted into safe boot: " in out, out


@pytest.mark.parametrize("board,arch", [("pico_w", "armv6m"), ("esp32_devkitc", "xtensawin")])
def test_romfs_images_for_the_real_boards(board, arch, mp):
    rc, out, rep = deploy("--board", board, "--romfs", "--build-only", "--json")
    assert rc == 0, out
    assert rep["arch"] == arch and rep["files"] == 2  # boot.py, main.py beside the image
    image = rep["image"]
    # read back by the real micropython: VfsRom mounted, every .mpy for the board's arch
    code = f"""
import json, os, vfs
buf = open({image!r}, 'rb').read()
vfs.mount(vfs.VfsRom(buf), '/rom')
names = []
def walk(d):
    for e in os.ilistdir(d):
        p = d + '/' + e[0]
        if e[1] == 0x4000:
            walk(p)
        else:
            names.append(p[5:])
walk('/rom')
arches = set(open('/rom/' + n, 'rb').read(3)[2] >> 2 for n in names)
print(json.dumps([len(buf), sorted(names), sorted(arches)]))
"""
    ((size, names, arches),) = mp.run_json(code)
    assert size == rep["image_bytes"]
    assert "board.mpy" in names and "heatgw/app.mpy" in names and "umqtt/simple.mpy" in names
    assert not any(n.endswith(".py") for n in names)
    from host_tools.mpinfo import MPY_ARCHES

    assert [MPY_ARCHES[a] for a in arches if a] == [arch]  # the viper kernel's native code
    print(f"ROMFS image for {board}: {size} bytes, {len(names)} files")


@pytest.mark.hardware
def test_deploy_to_a_real_board():
    """HEATGW_PORT: a board running MicroPython; HEATGW_BOARD: its name (esp32_devkitc,
    pico_w). Copies the code, resets, checks the boot; then a second deploy copies nothing."""
    board = os.environ.get("HEATGW_BOARD")
    if not board:
        pytest.skip("set HEATGW_BOARD to the board's name")
    port = os.environ["HEATGW_PORT"]
    rc, out, first = deploy("--board", board, "--port", port, "--json", timeout=900)
    assert rc == 0, out
    rc, out, second = deploy("--board", board, "--port", port, "--json", timeout=900)
    assert rc == 0 and second["copied"] == [], out
