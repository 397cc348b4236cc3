"""Each board's manifest.py freezes every module the node imports on that board.

The manifests are evaluated with stubs of MicroPython's manifest functions, following the
semantics of micropython/tools/manifestfile.py: paths are relative to the manifest being
run, `include()` of a directory runs its manifest.py, `package(p, base_path=b)` takes
b/p/**/*.py as p/**, `module(m, base_path=b)` takes b/m as m. `require()` is refused: it
resolves from micropython-lib, a second unpinned copy of what mplibs.lock pins.
The node's imports are followed with CPython's ast from boot.py, main.py and the board
file through firmware/, lib/, build/mplibs and the board folder, lazy imports included.
"""

import ast
import os
from pathlib import Path

import pytest

from host_tools import build_mpy
from host_tools.paths import BOARDS, FIRMWARE, LIB, MPLIBS, REPO

REAL_BOARDS = tuple(sorted(p.parent.name for p in BOARDS.glob("*/manifest.py")))  # + new ones

# Built into the ESP32 and RP2 firmware (C modules): never in a manifest. A `u` prefix
# (ustruct, usocket) still finds them.
PORT_BUILTINS = {
    "array", "binascii", "builtins", "cmath", "collections", "cryptolib", "deflate",
    "errno", "gc", "hashlib", "heapq", "io", "json", "machine", "math", "micropython",
    "network", "os", "platform", "random", "re", "select", "socket", "ssl", "struct",
    "sys", "time", "uctypes", "vfs", "_thread",
}
PORT_DIR_VARS = ("$(PORT_DIR)", "$(MPY_DIR)", "$(BOARD_DIR)", "$(MPY_LIB_DIR)")
# What the port-relative entries of our manifests provide; the port's own modules differ by
# port (rp2: rp2.py with the PIO assembler; esp32: machine.py with machine.Counter).
PORT_PROVIDES = {"$(MPY_DIR)/extmod/asyncio": {"asyncio"}, "$(PORT_DIR)/modules": {"_boot"}}
PORT_MODULES = {"armv6m": {"rp2"}, "xtensawin": set()}
HOST_ONLY = {p.stem for p in (BOARDS / "host").glob("*.py")} - {"board"}


class ManifestError(Exception):
    pass


def _py_modules(base, sub):
    """Module names of base/sub/**/*.py (a package) as manifestfile names them."""
    root = base / sub
    if not root.is_dir():
        raise ManifestError(f"package {sub!r} not found under {base}")
    names = set()
    for p in root.rglob("*.py"):
        rel = p.relative_to(base).with_suffix("")
        parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
        names.add(".".join(parts))
        names.update(".".join(parts[:i]) for i in range(1, len(parts)))  # namespace pkgs
    return names


def evaluate(manifest, text=None, texts=None):
    """(module names, port entries, requires) that running `manifest` would freeze.
    `text` replaces the manifest's own text, `texts` {path: text} that of included ones."""
    texts = {Path(k).resolve(): v for k, v in (texts or {}).items()}
    modules, port, requires = set(), [], []
    visited = set()
    meta = []  # one metadata level: only require() would push another (refused here)

    def run(path, text=None):
        path = Path(path).resolve()
        if path.is_dir():
            path = path / "manifest.py"
        if path in visited:
            return
        visited.add(path)
        here = path.parent

        def resolve(p):
            return (here / p).resolve()

        def include(p, **kw):
            if p.startswith(PORT_DIR_VARS):
                port.append(p)
                modules.update(PORT_PROVIDES.get(p, ()))
            else:
                run(resolve(p))

        def package(p, files=None, base_path=".", opt=None):
            if files is not None:
                modules.update(p + "." + f.removesuffix(".py").replace("/", ".") for f in files)
                modules.add(p)
            else:
                modules.update(_py_modules(resolve(base_path), p))

        def module(p, base_path=".", opt=None):
            f = resolve(base_path) / p
            if not f.is_file():
                raise ManifestError(f"module {p!r} not found: {f}")
            modules.add(p.removesuffix(".py").replace("/", "."))

        def freeze(p, script=None, opt=None):
            if not p.startswith(PORT_DIR_VARS):
                raise ManifestError(f"freeze({p!r}): use package()/module() for our code")
            port.append(p)
            modules.update(PORT_PROVIDES.get(p, ()))

        def require(name, *a, **kw):
            requires.append(name)

        def metadata(**kw):
            meta.append(path)
            if len(meta) > 1:
                raise ManifestError(f"Duplicate call to metadata(): {meta}")

        g = {"include": include, "package": package, "module": module, "freeze": freeze,
             "require": require, "metadata": metadata, "options": None}
        if text is None:
            text = texts.get(path)
        src = path.read_text() if text is None else text
        cwd = os.getcwd()
        os.chdir(here)  # as manifestfile does: relative paths are the manifest's
        try:
            exec(compile(src, str(path), "exec"), g)  # noqa: S102 - our own build data
        finally:
            os.chdir(cwd)

    run(manifest, text)
    return modules, port, requires


def _search_dirs(board):
    """Where a name the node imports is found, board folder first (like MICROPYPATH)."""
    dirs = [BOARDS / board, FIRMWARE]
    dirs += sorted(p.parent for p in LIB.glob("*/manifest.py"))
    dirs += sorted(p for p in MPLIBS.iterdir() if p.is_dir())
    return dirs


def _find(name, dirs):
    rel = Path(*name.split("."))
    for d in dirs:
        for cand in (d / rel.with_suffix(".py"), d / rel / "__init__.py"):
            if cand.is_file():
                return cand
        if (d / rel).is_dir():
            return d / rel  # namespace package (umqtt)
    return None


def _imports(path, modname):
    """Absolute names a file imports, anywhere in it (lazy imports in functions too)."""
    tree = ast.parse(path.read_text(), str(path))
    pkg = modname if path.name == "__init__.py" else modname.rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = pkg.split(".")
                up = parts[: len(parts) - node.level + 1]
                base = ".".join([*up, base] if base else up)
            out.append(base)
            out += [base + "." + a.name for a in node.names]  # maybe submodules
    return out


def node_imports(board):
    """(repository modules the node imports on `board`, port modules it needs)."""
    dirs = _search_dirs(board)
    todo = [("boot", FIRMWARE / "boot.py"), ("main", FIRMWARE / "main.py"),
            ("board", BOARDS / board / "board.py")]
    found, port, seen = set(), set(), set()
    while todo:
        name, path = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        found.add(name)
        if path.is_dir():
            continue
        for imp in _imports(path, name):
            parts = imp.split(".")
            for i in range(1, len(parts) + 1):  # a.b.c imports a, a.b, a.b.c
                sub = ".".join(parts[:i])
                p = _find(sub, dirs)
                if p is not None:
                    todo.append((sub, p))
                elif i == 1:
                    port.add(sub)
    return found, port


@pytest.mark.parametrize("board", REAL_BOARDS)
def test_manifest_freezes_every_module_the_node_imports(board):
    if not MPLIBS.is_dir():
        pytest.fail("build/mplibs missing: run `make mplibs`")
    frozen, port_entries, requires = evaluate(BOARDS / board / "manifest.py")
    assert requires == [], f"require() in the manifest: {requires} (use package()/module())"
    used, port_mods = node_imports(board)
    used -= {"boot", "main"}  # files on the board's file system, never frozen (see manifest)
    assert {"heatgw.app", "heatgw.heapmon", "max31865", "board", "asyncio"} <= used | port_mods
    missing = sorted(used - frozen)
    assert missing == [], f"{board}: imported but not in its manifest: {missing}"
    port_own = PORT_MODULES[build_mpy.TARGET_ARCHES[board]]
    unknown = sorted(m for m in port_mods - frozen - port_own
                     if m not in PORT_BUILTINS and m.removeprefix("u") not in PORT_BUILTINS)
    assert unknown == [], f"{board}: neither in the repository, the manifest nor the port"
    assert not frozen & HOST_ONLY, "host-only modules frozen"
    assert not {"boot", "main"} & frozen  # frozen, they would shadow the deployed files


@pytest.mark.parametrize("board", REAL_BOARDS)
def test_manifest_packages_every_pinned_library_from_build_mplibs(board):
    text = (BOARDS / "app_manifest.py").read_text()  # every board includes it
    assert 'include("../app_manifest.py")' in (BOARDS / board / "manifest.py").read_text()
    lock = [line.split() for line in (REPO / "mplibs.lock").read_text().splitlines()
            if line.strip() and not line.startswith("#")]
    frozen, _, _ = evaluate(BOARDS / board / "manifest.py")
    for name, version, _sha in lock:
        assert f"build/mplibs/{name}-{version}" in text, (name, version)
    assert {"umqtt.simple", "umodbus.tcp", "umodbus.serial"} <= frozen
    # What the frozen libraries import is there too.
    dirs = _search_dirs(board)
    for lib_mod in ("umqtt.simple", "umodbus.tcp", "umodbus.serial"):
        path = _find(lib_mod, dirs)
        for imp in _imports(path, lib_mod):
            top = imp.split(".")[0]
            assert (imp in frozen or top in frozen or top in PORT_BUILTINS
                    or top.removeprefix("u") in PORT_BUILTINS), (lib_mod, imp)


@pytest.mark.parametrize("line, lost", [
    ('module("max31865.py", base_path="../lib/max31865", opt=3)', "max31865"),
    ('module("pulsecounter.py", base_path="../../lib/pulsecounter")', "pulsecounter"),
    ('module("pcntcounter.py", base_path="../../lib/pcntcounter")', "pcntcounter"),
    ('include("$(MPY_DIR)/extmod/asyncio")', "asyncio"),
    ('module("board.py")', "board"),
    ('package("heatgw", base_path="../firmware")', "heatgw.app"),
    ('include("../app_manifest.py")', "heatgw.app"),
])
def test_check_fails_when_a_module_is_removed_from_the_manifest(line, lost):
    # The line is in the board's manifest or in the application's part it includes.
    path = BOARDS / "esp32_devkitc" / "manifest.py"
    app = BOARDS / "app_manifest.py"
    board_text, app_text = path.read_text(), app.read_text()
    assert (line in board_text) != (line in app_text)
    frozen, _, _ = evaluate(path, board_text.replace(line, ""),
                            {app: app_text.replace(line, "")})
    used, port_mods = node_imports("esp32_devkitc")
    assert lost in (used | port_mods) - frozen


def test_each_board_freezes_its_own_pulse_counter_only():
    """The RP2040 board freezes the PIO counter (and imports rp2, the port's), the ESP32
    boards the PCNT counter and the interrupt counter; none freezes the other's."""
    for board in REAL_BOARDS:
        frozen, _, _ = evaluate(BOARDS / board / "manifest.py")
        used, port_mods = node_imports(board)
        if build_mpy.TARGET_ARCHES[board] == "armv6m":
            assert "piocounter" in used & frozen and "rp2" in port_mods, board
            assert not {"pcntcounter", "pulsecounter"} & frozen, board
        else:
            assert {"pcntcounter", "pulsecounter"} <= used & frozen, board
            assert "piocounter" not in frozen | used, board


def test_a_port_module_of_another_port_is_unknown():
    """rp2 on an ESP32 board would be an import the port cannot satisfy: the check sees it."""
    used, port_mods = node_imports("esp32_devkitc")
    assert "rp2" not in port_mods | used
    assert "rp2" not in PORT_MODULES["xtensawin"] and "rp2" not in PORT_BUILTINS


def test_require_is_caught_and_a_missing_package_is_an_error():
    path = BOARDS / "pico_w" / "manifest.py"
    _, _, requires = evaluate(path, path.read_text() + '\nrequire("umqtt.simple")\n')
    assert requires == ["umqtt.simple"]
    with pytest.raises(ManifestError):
        evaluate(path, 'package("nosuch", base_path="../../firmware")\n')
    # As manifestfile: include() shares the metadata level, so two driver manifests clash.
    with pytest.raises(ManifestError, match="Duplicate call to metadata"):
        evaluate(path, 'include("../../lib/max31865/manifest.py")\n'
                       'include("../../lib/pulsecounter/manifest.py")\n')
