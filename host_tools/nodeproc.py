"""The node process: the firmware on the MicroPython unix port, from reset to power-off.

`micropython -m node` (boards/host/node.py: boot.py, then main.py) with its console
(stdout and stderr) in a log file and the lockstep link on a loopback socket. A node that
does not run as a device would (never connects, never says hello, exits) raises
NodeFailed, naming the reason and quoting its console.

With a serial port (host_tools/serialport.py) the node's stdin, stdout and stderr are the
port's node side instead, and the port's bridge writes the console log.
"""

import os
import socket
import subprocess
import time

from host_tools.paths import REPO, micropython_cmd

REAL_TIMEOUT_S = 60.0  # a node that says nothing this long (real time) is broken
_POLL_S = 0.05  # while waiting for the connection: how often to look whether it died


class NodeFailed(RuntimeError):
    """The node did not run (did not start, crashed at boot, exited unexpectedly)."""


class NodeGone(NodeFailed):
    """The node's process ended (expected only after a power cut, an orderly stop or a
    reset asked at its serial port: `returncode`)."""

    def __init__(self, msg, returncode=None):
        super().__init__(msg)
        self.returncode = returncode


def console_tail(path, lines=12):
    """The last lines of the node's console, for an error message."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no console log)"
    return "\n".join(text.rstrip().splitlines()[-lines:]) or "(console empty)"


class Node:
    """One run of the firmware process, from reset to power-off.

    `wdt_timeout_ms` / `last_feed_vt`: the watchdog the node started (the harness owns
    it); `app_booted`: the application reported its boot record."""

    def __init__(self, *, micropypath, listener, flash_path, console, console_path,
                 cmd=None, env=None, serial=None, detach=False):
        """cmd: the micropython command line (default: micropython_cmd()); env: extra
        environment (e.g. HEATGW_ROMFS); serial: a SerialPort, the node's stdio; detach:
        the process in a session of its own (no terminal's Ctrl-C reaches it)."""
        self.console_path = console_path
        extra = env
        env = dict(os.environ)
        env.update(extra or {})
        env["MICROPYPATH"] = micropypath
        env["HEATGW_LINK"] = f"127.0.0.1:{listener.getsockname()[1]}"
        env["HEATGW_FLASH"] = str(flash_path)
        if serial is not None:
            env["HEATGW_SERIAL"] = "1"
            stdio = serial.node_stdio()
        else:
            stdio = {"stdin": subprocess.DEVNULL, "stdout": console,
                     "stderr": subprocess.STDOUT, "start_new_session": detach}
        # -m: the module path decides (precompiled first when asked), not the script's
        # own folder
        self.proc = subprocess.Popen([*(cmd or micropython_cmd()), "-m", "node"],
                                     cwd=REPO, env=env,
                                     **stdio)
        self.sock = self._accept(listener)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.settimeout(REAL_TIMEOUT_S)
        self.rfile = self.sock.makefile("rb")
        self.wdt_timeout_ms = None
        self.last_feed_vt = None
        self.app_booted = False
        self.at_repl = False  # it said it sits at its REPL (a serial port's node only)

    def _accept(self, listener):
        """The node's connection; NodeFailed at once if it exits before connecting."""
        listener.settimeout(_POLL_S)
        give_up = time.monotonic() + REAL_TIMEOUT_S
        while True:
            try:
                sock, _ = listener.accept()
                return sock
            except TimeoutError:
                pass
            rc = self.proc.poll()
            if rc is not None:
                raise NodeFailed(f"node exited with {rc} before connecting to the harness")
            if time.monotonic() > give_up:
                self.proc.kill()
                self.proc.wait()
                raise NodeFailed(f"node did not connect within {REAL_TIMEOUT_S:.0f} s")

    def readline(self, timeout_s):
        """The node's next line, None after timeout_s of silence; NodeGone at its exit."""
        self.sock.settimeout(timeout_s)
        try:
            line = self.rfile.readline()
        except TimeoutError:
            return None
        if not line:
            rc = self.proc.wait()
            raise NodeGone(f"node exited with {rc}", rc)
        return line.decode().rstrip("\n")

    def send(self, text):
        try:
            self.sock.sendall(text.encode())
        except OSError as e:
            raise NodeGone(f"node gone ({e})") from e

    def kill(self):
        try:
            self.proc.kill()
        except ProcessLookupError:
            pass
        self.proc.wait()
        self.rfile.close()
        self.sock.close()
