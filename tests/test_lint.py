"""The tree is ruff-clean at 99 columns (configuration in pyproject.toml)."""

import subprocess
import sys
from pathlib import Path

from host_tools.paths import REPO


def test_ruff_clean():
    ruff = Path(sys.executable).parent / "ruff"
    proc = subprocess.run([str(ruff), "check", "."], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
