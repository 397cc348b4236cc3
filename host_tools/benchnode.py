"""A node on the bench: the firmware on the host board, standalone, with a serial port.

    python -m host_tools.benchnode [--serial auto|PATH] [--flash FILE] [--config FILE]
                                   [--safe-boot] [--mpy]

No plant and no harness: the emulated chips read their power-on values, nothing feeds the
flow meter, and the node runs in real time (its idle waits are waits on its serial port),
like a board on a desk with a USB cable. It prints the port (a pty, host_tools/
serialport.py) for mpremote, picocom or pexpect; everything the node writes also goes to
`console.log` beside the flash image. A reset asked at the port ends the node process
with a status (boards/host/linkproto.py EXIT_*) and this runner starts it again behind
the same port: a soft reset (Ctrl-D at the REPL, mpremote soft-reset: from the raw REPL
boot.py runs and main.py does not, as on a board) or a hard reset (machine.reset(),
mpremote reset). The flash image is the node's littlefs, so files copied with mpremote
are there at the next boot. There is no watchdog here (the harness owns the host board's
watchdog: `python -m host_tools.harness SCENARIO --serial auto`).

Tests use BenchNode(workdir, config=..., files=..., safe_boot=...).
"""

import argparse
import binascii
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from host_tools.linkcodec import proto as lp
from host_tools.paths import REPO, micropypath, micropython_cmd
from host_tools.serialport import SerialPort

# The installer's first deploy onto the node's flash (stdin: {name: hex}).
_PROVISION = """
import binascii, board, json, sys
d = board.data_dir()
for name, data in json.loads(sys.stdin.read()).items():
    with open(d + "/" + name, "wb") as f:
        f.write(binascii.unhexlify(data))
print("provisioned")
"""


class BenchNode:
    """The node process behind a serial port, restarted for every reset asked at it.

    `boots`: [(cause, t)] with cause "power_on", "soft_reset", "soft_reset_raw" or
    "hard_reset"; `ended`: the exit status of a node that ended otherwise (None while it
    runs); `console_path`: the log of everything the node wrote."""

    def __init__(self, workdir, *, serial="auto", flash=None, config=None, files=None,
                 safe_boot=False, mpy=False, heapsize=None, env=None, trace=False):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.flash_path = Path(flash) if flash else self.workdir / "flash.bin"
        extra = []
        if mpy:
            from host_tools.build_mpy import build, host_mpy_dir

            if not build(["host"]):
                raise RuntimeError("mpy-cross failed for the host board")
            extra.append(host_mpy_dir())
        self.env = dict(os.environ, MICROPYPATH=micropypath("host", extra),
                        HEATGW_FLASH=str(self.flash_path), HEATGW_SERIAL="1")
        for k in ("HEATGW_LINK", "HEATGW_REPL", "HEATGW_RESET", "HEATGW_WDT_MS"):
            self.env.pop(k, None)
        self.env.update(env or {})
        self.cmd = micropython_cmd() + (["-X", f"heapsize={heapsize}"] if heapsize else [])
        put = dict(files or {})
        if config is not None:
            put["config.json"] = config if isinstance(config, (str, bytes)) else \
                json.dumps(config)
        if safe_boot:
            put["SAFEBOOT"] = b""
        if put:
            self.provision(put)
        self.console_path = self.workdir / "console.log"
        self._console = open(self.console_path, "ab")
        link = None if serial in (None, "auto") else serial
        self.port = SerialPort(link=link, console=self._console, trace=trace)
        self.boots = []
        self.ended = None
        self.proc = None
        self._closing = False
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._supervise, name="benchnode",
                                        daemon=True)
        self._thread.start()
        self._started.wait(10)

    @property
    def name(self):
        return self.port.name

    def provision(self, files):
        """Put files ({name: str or bytes}) on the node's flash, as a first deploy does."""
        doc = {k: binascii.hexlify(v.encode() if isinstance(v, str) else v).decode()
               for k, v in files.items()}
        env = {k: v for k, v in self.env.items() if k != "HEATGW_SERIAL"}
        out = subprocess.run([*micropython_cmd(), "-c", _PROVISION], cwd=REPO, env=env,
                             input=json.dumps(doc), capture_output=True, text=True,
                             timeout=60, check=False)
        if "provisioned" not in out.stdout:
            raise RuntimeError(f"provisioning failed: {out.stdout}{out.stderr}")

    def _spawn(self, extra):
        env = dict(self.env)
        env.update(extra)
        return subprocess.Popen([*self.cmd, "-m", "node"], cwd=REPO, env=env,
                                **self.port.node_stdio())

    def _supervise(self):
        extra, cause = {}, "power_on"
        while not self._closing:
            self.proc = self._spawn(extra)
            self.boots.append((cause, time.monotonic()))
            self._started.set()
            rc = self.proc.wait()
            if self._closing:
                return
            if rc == lp.EXIT_SOFT_RESET:
                extra, cause = {"HEATGW_RESET": "soft"}, "soft_reset"
            elif rc == lp.EXIT_SOFT_RESET_RAW:
                extra = {"HEATGW_RESET": "soft", "HEATGW_REPL": "raw"}
                cause = "soft_reset_raw"
            elif rc == lp.EXIT_HARD_RESET:
                extra, cause = {"HEATGW_RESET": "hard"}, "hard_reset"
            else:
                self.ended = rc
                return

    def wait_boots(self, n, timeout=30):
        """Wait until the node has booted n times (resets included)."""
        give_up = time.monotonic() + timeout
        while len(self.boots) < n:
            if self.ended is not None or time.monotonic() > give_up:
                raise TimeoutError(f"{len(self.boots)} boots, not {n}; ended {self.ended}; "
                                   f"console:\n{self.console_text()[-2000:]}")
            time.sleep(0.02)

    def console_text(self):
        return self.console_path.read_bytes().decode(errors="replace")

    def close(self):
        self._closing = True
        p = self.proc
        if p is not None and p.poll() is None:
            p.kill()
            p.wait()
        self._thread.join(5)
        self.port.close()
        self._console.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--serial", default="auto", metavar="auto|PATH",
                    help="a symlink to the port at PATH (default: just the /dev/pts/N)")
    ap.add_argument("--workdir", default=str(REPO / "build" / "bench"),
                    help="where the flash image and console.log live (default build/bench)")
    ap.add_argument("--flash", help="the node's flash image (default: WORKDIR/flash.bin)")
    ap.add_argument("--config", help="put this config.json on the flash first")
    ap.add_argument("--safe-boot", action="store_true",
                    help="put SAFEBOOT on the flash: the application does not start")
    ap.add_argument("--mpy", action="store_true", help="run precompiled modules")
    args = ap.parse_args(argv)
    config = Path(args.config).read_text() if args.config else None
    node = BenchNode(args.workdir, serial=args.serial, flash=args.flash, config=config,
                     safe_boot=args.safe_boot, mpy=args.mpy)
    print(f"serial port: {node.name} ({node.port.path}); console log: {node.console_path}",
          flush=True)
    try:
        while node.ended is None:
            time.sleep(0.5)
        print(f"node exited with {node.ended}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        node.close()


if __name__ == "__main__":
    sys.exit(main())
