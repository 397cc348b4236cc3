"""Where things are: repository layout and the MicroPython binary used on the host."""

import os
import shlex
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BUILD = REPO / "build"
MPLIBS = BUILD / "mplibs"
FIRMWARE = REPO / "firmware"
LIB = REPO / "lib"
BOARDS = REPO / "boards"


def micropython_cmd():
    """The micropython command line: $MICROPYTHON (default: the venv's) + $MICROPYTHON_ARGS.

    MICROPYTHON_ARGS carries extra options for the binary, e.g. "-X heapsize=64wK".
    """
    exe = os.environ.get("MICROPYTHON")
    if not exe:
        exe = str(Path(sys.executable).parent / "micropython")
    return [exe, *shlex.split(os.environ.get("MICROPYTHON_ARGS", ""))]


def lib_dirs():
    """Every driver package under lib/ (each folder with a manifest.py)."""
    return sorted(p.parent for p in LIB.glob("*/manifest.py"))


def mplib_dirs():
    """Unpacked third-party MicroPython libraries (see mplibs.lock)."""
    if not MPLIBS.is_dir():
        return []
    return sorted(p for p in MPLIBS.iterdir() if p.is_dir())


def micropypath(board="host", extra=()):
    """MICROPYPATH for running the firmware of `board` on the unix port."""
    parts = [str(p) for p in extra]
    parts += [str(BOARDS / board), str(FIRMWARE)]
    parts += [str(p) for p in lib_dirs()]
    parts += [str(p) for p in mplib_dirs()]
    parts.append(".frozen")
    return os.pathsep.join(parts)
