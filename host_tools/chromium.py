"""Headless Chromium (Debian's `chromium` package) for the report: print an HTML file to
PDF, or take a screenshot of it.

    exe = find()                              # None: not installed
    print_pdf(exe, html_path, pdf_path)
    screenshot(exe, html_path, png_path, width=1200, height=2400)

The flags are those known to work as root on a machine with no network but loopback:
no sandbox (root), no GPU, and no background connections (each would be refused), with a
fresh profile directory per run.
"""

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--hide-scrollbars"]
TIMEOUT_S = 120


class ChromiumError(RuntimeError):
    pass


def find():
    """Chromium's path: $HEATGW_CHROMIUM, else the first of CANDIDATES on PATH (Debian:
    /usr/bin/chromium), else None."""
    env = os.environ.get("HEATGW_CHROMIUM")
    if env:
        return env if os.access(env, os.X_OK) else None
    for name in CANDIDATES:
        p = shutil.which(name)
        if p:
            return p
    return None


def _run(exe, args, out_path):
    out_path = Path(out_path)
    if out_path.exists():
        out_path.unlink()
    with tempfile.TemporaryDirectory(prefix="heatgw-chromium-") as profile:
        cmd = [exe, *FLAGS, f"--user-data-dir={profile}", *args]
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S,
                               stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise ChromiumError(f"{exe} did not finish in {TIMEOUT_S} s") from None
    if not out_path.is_file() or out_path.stat().st_size == 0:
        raise ChromiumError(f"{exe} wrote no {out_path.name} (exit {r.returncode}): "
                            f"{r.stderr[-1500:]}")
    return out_path


def print_pdf(exe, html, pdf):
    """html -> pdf (A4 from the page's @page rule, no header or footer)."""
    return _run(exe, ["--no-pdf-header-footer", f"--print-to-pdf={Path(pdf).resolve()}",
                      Path(html).resolve().as_uri()], pdf)


def screenshot(exe, html, png, width=1200, height=2400):
    return _run(exe, [f"--screenshot={Path(png).resolve()}", f"--window-size={width},{height}",
                      Path(html).resolve().as_uri()], png)
