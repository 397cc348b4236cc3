"""A node driver script in a micropython process (tests/test_modbus.py, tests/test_bms.py):
the script written to a file, run with the host board's environment and its own flash
file; its stdout lines collected on a list as they come, its stdin open for commands."""

import subprocess
import threading
import time
from pathlib import Path

from host_tools.mprun import mp_env
from host_tools.paths import REPO, micropython_cmd


class ScriptNode:
    def __init__(self, tmp_path, code, prefix, env=None):
        path = Path(tmp_path) / f"{prefix}_{time.monotonic_ns()}.py"
        path.write_text(code)
        e = mp_env()
        e["HEATGW_FLASH"] = str(Path(tmp_path) / f"flash_{time.monotonic_ns()}.bin")
        e.update(env or {})
        self.proc = subprocess.Popen([*micropython_cmd(), str(path)], cwd=REPO, env=e,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        self.lines = []  # stdout's lines; None once it closed
        self._got = threading.Condition()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self):
        for ln in self.proc.stdout:
            with self._got:
                self.lines.append(ln)
                self._got.notify_all()
        with self._got:
            self.lines.append(None)
            self._got.notify_all()

    def tail(self):
        with self._got:
            out = "".join(ln for ln in self.lines[-60:] if ln)
        err = self.proc.stderr.read()[-3000:] if self.proc.poll() is not None else ""
        return out + "\n--- stderr ---\n" + err
