"""Run MicroPython code on the host unix port with the firmware's module path."""

import json
import os
import subprocess
import tempfile

from host_tools.paths import REPO, micropypath, micropython_cmd


class MicroPythonError(RuntimeError):
    pass


def mp_env(board="host", extra_path=()):
    env = dict(os.environ)
    env["MICROPYPATH"] = micropypath(board, extra_path)
    return env


def run_code(code, *, board="host", extra_path=(), args=(), heapsize=None, timeout=120,
             stdin=None, check=True):
    """Run `code` (a MicroPython source string) and return its stdout as text.

    heapsize, when given, is passed as `-X heapsize=...` after any $MICROPYTHON_ARGS.
    """
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False, dir=None) as f:
        f.write(code)
        path = f.name
    try:
        cmd = micropython_cmd()
        if heapsize:
            cmd += ["-X", f"heapsize={heapsize}"]
        cmd += [path, *args]
        proc = subprocess.run(
            cmd, cwd=REPO, env=mp_env(board, extra_path), capture_output=True, text=True,
            timeout=timeout, input=stdin,
        )
    finally:
        os.unlink(path)
    if check and proc.returncode != 0:
        raise MicroPythonError(
            f"micropython exited {proc.returncode}\n--- stdout ---\n{proc.stdout[-4000:]}"
            f"\n--- stderr ---\n{proc.stderr[-4000:]}"
        )
    return proc.stdout


def run_json(code, **kw):
    """Run code that prints one JSON document per line; return the parsed list."""
    out = run_code(code, **kw)
    return [json.loads(line) for line in out.splitlines() if line.strip()]
