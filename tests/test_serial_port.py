"""The host board's serial port: a pty that behaves like a board's USB serial.

Driven like a technician's terminal (pexpect on the port) and like an installer's deploy
(the real mpremote), against the real micropython binary: the node on the bench
(host_tools/benchnode.py: standalone, real time) and under the harness (lockstep, virtual
time, the harness owns relays and watchdog). README "The host board's serial port".
"""

import json
import os
import subprocess
import sys
import threading
import time
import tty
from pathlib import Path

import pytest
from pexpect import fdpexpect

from host_tools.benchnode import BenchNode
from host_tools.harness import Harness
from host_tools.paths import REPO
from host_tools.scenario import load_scenario

MPREMOTE = str(Path(sys.executable).parent / "mpremote")
PROMPT = b">>> "
RAW_BANNER = b"raw REPL; CTRL-B to exit\r\n"


def terminal(path, timeout=20):
    """The port opened as a terminal program would (raw), for pexpect."""
    fd = os.open(path, os.O_RDWR | os.O_NOCTTY)
    tty.setraw(fd)
    return fdpexpect.fdspawn(fd, timeout=timeout)


def settle(t, quiet_s=0.3):
    """Read what is still coming until the port is quiet; what came."""
    got = b""
    while True:
        try:
            got += t.read_nonblocking(4096, quiet_s)
        except Exception:  # noqa: BLE001 - pexpect TIMEOUT: quiet
            return got


def friendly(t):
    """To a fresh `>>> ` from the friendly or the raw REPL (Ctrl-B: banner, prompt)."""
    t.send(b"\x02")
    t.expect(b"for more information.\r\n>>> ")
    settle(t)


def mpremote(port, *args, timeout=90):
    r = subprocess.run([MPREMOTE, "connect", port, *args], capture_output=True,
                       timeout=timeout, cwd=REPO)
    assert r.returncode == 0, (args, r.stdout[-2000:], r.stderr[-2000:])
    return r.stdout.decode()


@pytest.fixture(scope="module")
def repl_node(tmp_path_factory):
    """A node on the bench in safe boot: at its friendly REPL from the start."""
    node = BenchNode(tmp_path_factory.mktemp("repl"), safe_boot=True, trace=True)
    t = terminal(node.port.path)
    t.expect(PROMPT)
    settle(t)
    t.close()
    yield node
    node.close()


@pytest.fixture
def term(repl_node):
    t = terminal(repl_node.port.path)
    friendly(t)
    yield t
    t.close()


# -- the control characters, each on its own ------------------------------------------

def test_ctrl_a_enters_the_raw_repl(term):
    term.send(b"\x01")
    term.expect(b">")
    assert term.before + term.after == b"\r\n" + RAW_BANNER + b">"


def test_ctrl_b_leaves_the_raw_repl_and_reprints_the_banner(term):
    term.send(b"\x01")
    term.expect(RAW_BANNER + b">")
    term.send(b"\x02")
    term.expect(PROMPT)
    out = term.before
    assert out.startswith(b"\r\nMicroPython ") and out.endswith(
        b'Type "help()" for more information.\r\n'), out
    term.send(b"\x02")  # in the friendly REPL: the banner again
    term.expect(PROMPT)
    assert term.before.startswith(b"\r\nMicroPython "), term.before


def test_ctrl_c_cancels_a_line_clears_the_raw_buffer_and_interrupts_code(term):
    term.send(b"1/0 +")
    term.send(b"\x03")
    term.expect(PROMPT)
    assert term.before == b"1/0 +\r\n"  # cancelled: never ran (no ZeroDivisionError)
    term.send(b"import time; time.sleep(30)\r")
    time.sleep(0.5)
    t0 = time.monotonic()
    term.send(b"\x03")
    term.expect(PROMPT, timeout=5)
    assert time.monotonic() - t0 < 3
    assert b"KeyboardInterrupt" in term.before and b'File "<stdin>", line 1' in term.before
    assert b"repl.py" not in term.before  # a board's traceback: from <stdin> on
    term.send(b"\x01")
    term.expect(RAW_BANNER + b">")
    term.send(b"print('lost')\x03print('kept')\x04")
    term.expect(b"\x04>")
    assert term.before == b"OKkept\r\n\x04", term.before


def test_ctrl_d_soft_resets_main_py_runs_again_from_the_friendly_repl_only(term, repl_node):
    boots = len(repl_node.boots)
    term.send(b"\x04")
    term.expect(PROMPT)
    out = term.before
    assert out.startswith(b"\r\nMPY: soft reboot\r\n"), out
    assert b"safe boot (flag file): application not started" in out  # main.py ran
    repl_node.wait_boots(boots + 1)
    assert repl_node.boots[-1][0] == "soft_reset"
    term.send(b"\x01")
    term.expect(RAW_BANNER + b">")
    term.send(b"\x04")  # empty buffer: a soft reset; boot.py runs, main.py does not
    term.expect(RAW_BANNER + b">")
    out = term.before
    assert out.startswith(b"OK\r\nMPY: soft reboot\r\n"), out
    assert b"safe boot" not in out
    repl_node.wait_boots(boots + 2)
    assert repl_node.boots[-1][0] == "soft_reset_raw"
    term.send(b"x = 41\x04")  # the raw REPL carries on: exec works
    term.expect(b"\x04\x04>")
    term.send(b"print(x + 1)\x04")
    term.expect(b"\x04\x04>")
    assert term.before == b"OK42\r\n"


def test_ctrl_e_paste_mode_runs_on_ctrl_d_and_cancels_on_ctrl_c(term):
    term.send(b"\x05")
    term.expect(b"paste mode; Ctrl-C to cancel, Ctrl-D to finish\r\n=== ")
    assert term.before == b"\r\n"
    term.send(b"def f():\r    return 6 * 7\r\rprint(f())")
    term.send(b"\x04")
    term.expect(PROMPT)
    assert term.before.endswith(b"print(f())\r\n42\r\n"), term.before
    assert b"===     return 6 * 7" in term.before
    term.send(b"\x05")
    term.expect(b"=== ")
    term.send(b"print('never')\x03")
    term.expect(PROMPT)
    assert b"never\r\n" not in term.before.replace(b"print('never')", b"")


def test_raw_repl_frames_output_and_exception_text(term):
    term.send(b"\x01")
    term.expect(RAW_BANNER + b">")
    term.send(b"print('out')\nraise ValueError('bad')\x04")
    term.expect(b"\x04>")
    out = term.before
    assert out.startswith(b"OKout\r\n\x04Traceback (most recent call last):\r\n"), out
    assert out.endswith(b"ValueError: bad\r\n"), out  # then \x04 and the prompt
    term.send(b"1/\x04")  # a syntax error is the exception text too
    term.expect(b"\x04>")
    assert term.before.startswith(b"OK\x04") and b"SyntaxError" in term.before


def test_raw_paste_flow_control_window_and_refusal(term):
    term.send(b"\x01")
    term.expect(RAW_BANNER + b">")
    term.send(b"\x05B\x01")  # another raw-paste command: not supported
    term.expect(b"R\x00")
    term.send(b"\x05A\x01")
    # R\x01, the window (128, little-endian), then \x01: one more window free
    term.expect(b"R\x01\x80\x00\x01")
    assert term.before == b">" and term.buffer == b""  # (the prompt after the refusal)
    line = b"x = 1 + 1  # ..........................................\n"
    code = line * 6 + b"print('pasted', x)\n"  # 370 bytes: two windows and a part
    window = 128
    sent = 0
    grants = 0
    credit = 2 * window  # the size itself and the \x01 say: two windows free
    while sent < len(code):
        if credit == 0:
            assert term.read_nonblocking(1, 5) == b"\x01"
            grants += 1
            credit += window
        n = min(credit, len(code) - sent)
        term.send(code[sent:sent + n])
        sent += n
        credit -= n
    term.send(b"\x04")
    term.expect(b"\x04\x04>")
    out = term.before
    # the grants still due arrive before the ack of the end (\x04), then the output
    assert out.replace(b"\x01", b"") == b"\x04pasted 2\r\n", out
    assert grants + out.count(b"\x01") == len(code) // window


# -- mpremote ---------------------------------------------------------------------------

def _flash_files(node, names):
    """The node's littlefs image read by another micropython process: {name: text}."""
    from host_tools.mprun import run_json

    code = ("import board, json\nd = board.data_dir()\nout = {}\n"
            f"for n in {names!r}:\n"
            "    try:\n        out[n] = open(d + '/' + n).read()\n"
            "    except OSError:\n        out[n] = None\n"
            "print(json.dumps(out))\n")
    env_flash = os.environ.get("HEATGW_FLASH")
    os.environ["HEATGW_FLASH"] = str(node.flash_path)
    try:
        return run_json(code)[0]
    finally:
        os.environ["HEATGW_FLASH"] = env_flash


def test_mpremote_fs_exec_eval_run_against_the_node(repl_node, tmp_path):
    port = repl_node.name
    src = tmp_path / "hello.py"
    src.write_text("print('hello from run', 6 * 7)\n")
    before = len(repl_node.port.sent)
    out = mpremote(port, "fs", "mkdir", ":app", "+", "fs", "cp", str(src), ":app/hello.py",
                   "+", "fs", "cp", str(src), ":gone.py", "+", "fs", "ls", ":app",
                   "+", "fs", "cat", ":app/hello.py", "+", "fs", "rm", ":gone.py",
                   "+", "fs", "ls")
    assert "mkdir :app" in out and "hello.py" in out
    assert "print('hello from run', 6 * 7)" in out  # cat
    listing = out.split("ls :")[-1]
    assert "app/" in listing and "gone.py" not in listing
    assert mpremote(port, "exec", "print('exec', 1 + 2)").strip() == "exec 3"
    assert mpremote(port, "eval", "2 ** 10").strip() == "1024"
    assert "hello from run 42" in mpremote(port, "run", str(src))
    # mpremote really used raw-paste: its command, and the node's answer with the window
    typed = bytes(repl_node.port.sent[before:])
    assert typed.count(b"\x05A\x01") >= 5
    assert b"R\x01\x80\x00\x01" in repl_node.console_path.read_bytes()
    # the files are in the node's littlefs image (read back by another process)
    files = _flash_files(repl_node, ["app/hello.py", "gone.py"])
    assert files == {"app/hello.py": src.read_text(), "gone.py": None}


def test_mpremote_cp_of_a_package_then_soft_reset_imports_it_from_lib(repl_node, tmp_path):
    pkg = tmp_path / "sitepkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("NAME = 'sitepkg'\n")
    (pkg / "calc.py").write_text("def twice(x):\n    return 2 * x\n")
    port = repl_node.name
    boots = len(repl_node.boots)
    mpremote(port, "fs", "mkdir", ":lib")
    mpremote(port, "fs", "cp", "-r", str(pkg), ":lib/")
    out = mpremote(port, "soft-reset", "+", "exec",
                   "import sitepkg, sitepkg.calc as c, sys; print(c.twice(21), sitepkg.NAME, "
                   "'sitepkg' in sys.modules)")
    assert out.strip().endswith("42 sitepkg True"), out
    assert len(repl_node.boots) > boots and repl_node.boots[-1][0] == "soft_reset_raw"


def test_copied_config_and_module_are_what_the_node_boots_from(tmp_path):
    """A node without a configuration runs its default (bypass); an installer copies a
    config.json and a changed driver with mpremote and resets it: the node boots from
    them (the boot event says config "file"; the driver's marker is printed). A soft
    reset from the raw REPL (mpremote soft-reset) runs boot.py but not main.py."""
    cfg = json.loads((REPO / "scenarios" / "default_config.json").read_text())
    cfg["node_id"] = "bench-7"
    cfg_path = tmp_path / "config.json"
    cfg_path.write_text(json.dumps(cfg))
    drv = (REPO / "lib" / "max31865" / "max31865.py").read_text()
    marked = tmp_path / "max31865.py"
    marked.write_text(drv + "\nprint('max31865: the copy on flash')\n")
    with BenchNode(tmp_path / "node") as node:
        t = terminal(node.port.path)
        t.expect(b'"kind": "boot"')
        assert b'"config": "default"' in t.before + t.buffer
        t.close()
        mpremote(node.name, "fs", "cp", str(cfg_path), ":config.json", "+", "fs", "cp",
                 str(marked), ":max31865.py")
        n = len(node.console_text())
        mpremote(node.name, "soft-reset")
        time.sleep(1)
        assert '"kind": "boot"' not in node.console_text()[n:]  # raw: no main.py
        t = terminal(node.port.path)
        mpremote(node.name, "reset")
        t.expect(b'"kind": "boot"', timeout=30)
        booted = t.before + t.after + settle(t)
        assert b"max31865: the copy on flash" in booted  # imported from the flash's root
        assert b'"config": "file"' in booted and b'"errors": []' in booted, booted
        t.close()
        # each mpremote session soft-resets first (from the raw REPL); `reset` is hard
        causes = [c for c, _ in node.boots]
        assert causes[0] == "power_on" and causes[-1] == "hard_reset", causes
        assert set(causes[1:-1]) == {"soft_reset_raw"}, causes


# -- console input while the application runs -----------------------------------------

CONSOLE_MAIN = r"""
import board, time
asyncio = board.install_asyncio()
cin = board.console_in()
buf = bytearray(32)
stats = {"worst_read_us": 0, "worst_late_ms": 0, "reads": 0}

async def reader():
    while True:
        t = time.ticks_us()
        n = cin.readinto(buf)
        d = time.ticks_diff(time.ticks_us(), t)
        stats["reads"] += 1
        if d > stats["worst_read_us"]:
            stats["worst_read_us"] = d
        if n:
            print("got", bytes(buf[:n]))
        await asyncio.sleep_ms(20)

async def ticker():
    clk = board.clock
    due = clk.ticks_ms()
    while True:
        due = clk.ticks_add(due, 100)
        await asyncio.sleep_ms(clk.ticks_diff(due, clk.ticks_ms()))
        late = clk.ticks_diff(clk.ticks_ms(), due)
        if late > stats["worst_late_ms"]:
            stats["worst_late_ms"] = late

async def main():
    asyncio.create_task(reader())
    await ticker()

try:
    asyncio.run(main())
except KeyboardInterrupt:
    print("stopped", stats)
"""


def test_console_in_reads_typed_bytes_without_blocking_and_ctrl_c_stops(tmp_path):
    with BenchNode(tmp_path, files={"main.py": CONSOLE_MAIN}) as node:
        t = terminal(node.port.path)
        time.sleep(1)
        t.send(b"status\r")
        t.expect(rb"got b'status\\r'")
        time.sleep(1)
        t.send(b"ab")
        t.expect(rb"got b'ab'")
        t.send(b"\x03")
        t.expect(rb"stopped (\{.*\})")
        stats = eval(t.match.group(1).decode())  # noqa: S307 - the node's own dict
        t.expect(PROMPT)
        t.close()
    print(f"console_in: {stats['reads']} reads, the longest {stats['worst_read_us']} us real")
    assert stats["reads"] > 50
    # the ticks never waited for the port (virtual time = real time on the bench)
    assert stats["worst_late_ms"] < 50, stats
    assert 0 < stats["worst_read_us"] < 20_000, stats


# -- under the harness: the relays, the watchdog, resets ----------------------------

SCENARIO = {"name": "serial", "duration_s": 7200, "step_s": 1,
            "initial": {"tank_c": 37.8, "it_feed_c": 40.0}, "load_kw": 100,
            "demand_kw": 100,
            "config": {"control": {"recover_s": 60, "min_dwell_s": 60}}}


class Run:
    """The harness in a thread with a serial port; the test types at the port."""

    def __init__(self, tmp_path):
        sc_path = tmp_path / "serial.json"
        sc_path.write_text(json.dumps(SCENARIO))
        self.h = Harness(load_scenario(sc_path), tmp_path / "run", serial="auto",
                         serial_trace=True)
        self.error = None
        self.summary = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        self.t = terminal(self.h.serial.path, timeout=30)

    def _run(self):
        try:
            self.summary = self.h.run()
        except Exception as e:  # noqa: BLE001 - the test reports it
            self.error = e

    def wait(self, cond, what, timeout=60):
        give_up = time.monotonic() + timeout
        while not cond():
            assert self.error is None, self.error
            assert time.monotonic() < give_up, f"timed out waiting for {what}"
            time.sleep(0.01)

    def end(self):
        self.h.request_stop()
        self.thread.join(60)
        self.t.close()
        assert not self.thread.is_alive() and self.error is None, self.error


def test_ctrl_c_stops_in_order_and_the_held_watchdog_outlasts_an_mpremote_copy(tmp_path):
    run = Run(tmp_path)
    h = run.h
    try:
        run.wait(lambda: h.coils["reuse"], "reuse (coil energised)")
        run.t.send(b"\x03")
        run.t.expect(PROMPT)
        stop_out = run.t.before
        assert b"stopping: saving state" in stop_out
        # in order: the relay released and said so, the totals saved, then the REPL
        assert h.saves[-1]["why"] == "shutdown"
        states = [e for e in h.node_events if e.get("kind") == "state"]
        assert states[-1]["state"] == "bypass" and states[-1]["reason"] == "shutdown"
        assert h.coils == {"reuse": False, "cooler_inhibit": False}
        assert h.repl_entries[-1]["app"] == "stopped"
        assert h.repl_entries[-1]["t_s"] < SCENARIO["duration_s"]  # our Ctrl-C, not the end
        wdt_ms = h.watchdog_starts[-1][1]
        at_stop = h.vt
        # at the REPL virtual time follows real time; the watchdog stays fed (held)
        time.sleep(2.5 * wdt_ms / 1000)
        assert [b["cause"] for b in h.boots] == ["power_on"], h.boots  # no watchdog reset
        big = tmp_path / "big.json"
        big.write_text(json.dumps({"rows": [[i, i * i] for i in range(1500)]}))
        t0 = time.monotonic()
        mpremote(h.serial.name, "fs", "cp", str(big), ":big.json", "+", "exec",
                 "import os; print(os.stat('big.json')[6])")
        copy_s = time.monotonic() - t0
        time.sleep(1.5 * wdt_ms / 1000)
        run.wait(lambda: h.vt - at_stop > 3 * wdt_ms, "virtual time to pass at the REPL")
        assert [b["cause"] for b in h.boots] == ["power_on", "soft_reset"], h.boots
        assert h.node.last_feed_vt >= h.vt - wdt_ms  # fed while it sat there
        assert h.coils == {"reuse": False, "cooler_inhibit": False}
        assert not any(p[1] == "reuse" and p[2] == 0 for p in h.pin_log
                       if p[0] * 1000 > at_stop)  # no relay pin active since the stop
    finally:
        run.end()
    assert h.final_totals is not None
    ser = run.summary["serial"]  # the summary says where the node sat and what reset it
    assert [e["app"] for e in ser["repl_entries"]][:2] == ["stopped", None]
    assert ser["resets"][0]["kind"] == "soft_raw"  # mpremote's session start
    big_size = big.stat().st_size
    from host_tools.mprun import run_json

    flash = os.environ.get("HEATGW_FLASH")
    os.environ["HEATGW_FLASH"] = str(h.flash_path)
    try:
        (size,) = run_json("import board, os\n"
                           "print(os.stat(board.data_dir() + '/big.json')[6])\n")
    finally:
        os.environ["HEATGW_FLASH"] = flash
    assert size == big_size  # the whole copy landed in the node's littlefs
    print(f"mpremote copied {big_size} B in {copy_s:.2f} s "
          f"({big_size / copy_s / 1024:.1f} KB/s) while the watchdog was held")


def test_soft_reset_restarts_the_application_and_an_unfed_repl_is_reset(tmp_path):
    """Ctrl-D at the friendly REPL: boot.py and main.py again, the application runs
    again under the same harness. Then, stopped again, the hold's timer is stopped at
    the REPL: the harness's watchdog resets the node (virtual time does pass there)."""
    run = Run(tmp_path)
    h = run.h
    try:
        run.wait(lambda: h.coils["reuse"], "reuse")
        run.t.send(b"\x03")
        run.t.expect(PROMPT)
        run.t.send(b"\x04")
        run.wait(lambda: sum(e.get("kind") == "boot" for e in h.node_events) == 2,
                 "the application's second boot")
        assert [b["cause"] for b in h.boots] == ["power_on", "soft_reset"]
        run.wait(lambda: len(h.watchdog_starts) == 2, "the supervisor's watchdog again")
        run.wait(lambda: h.coils["reuse"], "reuse again", timeout=90)
        run.t.send(b"\x03")
        run.t.expect(PROMPT)
        run.t.send(b"import board; board.clock.every(0, None)\r")  # no more feeds
        run.t.expect(PROMPT)
        run.wait(lambda: len(h.boots) == 3, "the watchdog reset", timeout=30)
        assert h.boots[-1]["cause"] == "watchdog"
        assert h.boots[-1]["coils_at_boot"] == {"reuse": False, "cooler_inhibit": False}
    finally:
        run.end()
