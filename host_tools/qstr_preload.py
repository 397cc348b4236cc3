"""The node's qstr preload: one generated module that interns, at the start of the boot, the
names every configuration's node interns anyway.

Why: a node that loads .mpy files (deployed to its filesystem, or from ROMFS) keeps each new
name in the qstr pools, and MicroPython grows them by doubling: the 7th pool is 1,280 entries
in one block (9 KB on a 32-bit board, 14 KB on the 64-bit host). Where that block has to be
found decides whether the node boots: opened by chance in the middle of the application's
import, after the configuration's load has cut the heap into pieces, it failed at 160 KB
while 150 KB booted, and a checkout in a longer path (longer module names) moved the point
again. Interned first, on an empty heap, the pools and the names' text are allocated once,
at the bottom of the heap, and later imports find their names there.

Only names that are certain to be interned are preloaded: the names of the modules that
every boot imports (ROOTS and what they import at module level), as the compiled .mpy files
list them. A name the node would never have used would cost pool space and could open a pool
on its own. The generated module is compiled with the same mpy-cross as the rest; its code
(references to the names, never run) is dropped right after its import (heatgw.start).
"""

import ast
import keyword
import sys
import tempfile
from pathlib import Path

from host_tools.paths import FIRMWARE, lib_dirs

MODULE = "heatgw.qstrs"  # its file: heatgw/qstrs.mpy next to the compiled firmware
# Imported by every boot that starts the application, whatever the configuration (heatgw.start:
# the board; the configuration read by heatgw.config through heatgw.cfgfile; the boot-loop
# check; the meter built from heatgw.fluid's generated data; then heatgw.app) and the
# temperature chain of every configured node (heatgw.rtd, the MAX31865 driver; a node
# without sensors runs in bypass, with heap to spare).
ROOTS = ("board", "heatgw.start", "heatgw.bootstate", "heatgw.config", "heatgw.cfgfile",
         "heatgw.bootloop", "heatgw.fluid", "heatgw.fluid_data", "heatgw.meter", "heatgw.app",
         "heatgw.rtd", "max31865")
_PER_LINE = 32  # names per list in the generated function (its stack size)


def _read_uint(data, i):
    n = 0
    while True:
        b = data[i]
        i += 1
        n = (n << 7) | (b & 0x7F)
        if not b & 0x80:
            return n, i


def mpy_qstrs(data):
    """The names a compiled module (.mpy v6) interns when it is loaded: its qstr table's
    strings, without the static ones (in every firmware's ROM)."""
    if len(data) < 4 or data[0] != ord("M") or data[1] != 6:
        raise ValueError("not an .mpy v6 file")
    n_qstr, i = _read_uint(data, 4)
    _n_obj, i = _read_uint(data, i)
    names = []
    for _ in range(n_qstr):
        n, i = _read_uint(data, i)
        if n & 1:  # a static qstr: its index
            continue
        n >>= 1
        names.append(data[i:i + n].decode())
        i += n + 1  # and its NUL
    return names


def _module_imports(src):
    """Modules a source file imports at module level (not inside functions or branches)."""
    out = []
    for node in ast.parse(src.read_text()).body:
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append(node.module)
            out += [f"{node.module}.{a.name}" for a in node.names]  # `from pkg import mod`
    return out


def closure(board_dir, roots=ROOTS):
    """{module name: source path}: the roots and every module they import at module level,
    among the board's sources (`board_dir`), the firmware and the drivers (built-in modules
    are not files: skipped)."""
    search = (board_dir, FIRMWARE, *lib_dirs())

    def find(name):
        rel = Path(*name.split("."))
        for d in search:
            for p in (d / rel.with_suffix(".py"), d / rel / "__init__.py"):
                if p.is_file():
                    return p
        return None

    found, todo = {}, list(roots)
    while todo:
        name = todo.pop()
        if name in found:
            continue
        src = find(name)
        if src is None:
            continue
        found[name] = src
        todo += _module_imports(src)
    return found


def names_for(mpy_dir, modules):
    """The dynamic names of `modules` (from closure()) as compiled in `mpy_dir`, each once
    (their order does not matter: they are interned together)."""
    seen = {}
    for name in modules:
        path = Path(mpy_dir, *name.split(".")).with_suffix(".mpy")
        if not path.is_file():
            path = Path(mpy_dir, *name.split("."), "__init__.mpy")
        for q in mpy_qstrs(path.read_bytes()):
            seen.setdefault(q, None)
    return list(seen)


def _ident(s):
    return s.isidentifier() and not keyword.iskeyword(s)


def source(names):
    """The generated module: one function (never called) that refers to every name, so that
    mpy-cross lists them in the module's qstr table. Identifiers are global names, dotted
    ones (the modules a module imports) imports, other strings of up to 10 characters (which
    the compiler interns) literals; longer ones would be objects, not names: left out."""
    idents = [n for n in names if _ident(n)]
    dotted = [n for n in names if not _ident(n) and all(map(_ident, n.split(".")))]
    literals = [n for n in names if not _ident(n) and n not in dotted and len(n.encode()) <= 10]
    lines = ["# generated by host_tools/qstr_preload.py: names interned first (never run)",
             "def qstrs():"]
    lines += [f"    import {n}" for n in dotted]
    for i in range(0, len(idents), _PER_LINE):
        lines.append(f"    _ = [{', '.join(idents[i:i + _PER_LINE])}]")
    for i in range(0, len(literals), _PER_LINE):
        lines.append(f"    _ = [{', '.join(repr(s) for s in literals[i:i + _PER_LINE])}]")
    lines.append("")
    return "\n".join(lines)


def out_path(mpy_dir):
    return Path(mpy_dir, *MODULE.split(".")).with_suffix(".mpy")


def build(mpy_cross, arch, mpy_dir, board_dir):
    """Write heatgw/qstrs.mpy into `mpy_dir` (the compiled firmware of one board, whose
    sources are in `board_dir`); True on success. The file name its bytecode carries is
    its module's name (build_mpy.module_name)."""
    from host_tools.build_mpy import compile_one

    names = names_for(mpy_dir, closure(board_dir))
    out = out_path(mpy_dir)
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "qstrs.py"
        src.write_text(source(names))
        return compile_one(mpy_cross, arch, src, out, MODULE)


if __name__ == "__main__":  # what the preload of a board's compiled tree holds
    from host_tools.paths import BOARDS

    mods = closure(BOARDS / sys.argv[2])
    names = names_for(sys.argv[1], mods)
    print(f"{len(mods)} modules, {len(names)} names")
