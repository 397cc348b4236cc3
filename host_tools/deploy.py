"""Copy the node's code and configuration to a board: `heatgw deploy --board B --port P`.

    heatgw deploy --board esp32_devkitc --port /dev/ttyUSB0 [--config config.json]
    heatgw deploy --board pico_w --port /dev/ttyACM0 --romfs    the code as a ROMFS image
    heatgw deploy --board host --port /dev/pts/7                the host board (benchnode)
    heatgw deploy --board pico_w --build-only [--romfs]         build, touch no board
    heatgw deploy --board esp32_devkitc --port P --frozen      a frozen firmware: start files

1. Builds what the node imports, compiled by mpy-cross for the board's architecture
   (host_tools/build_mpy.py: xtensawin, armv6m; the host board's from $MICROPYTHON):
   the application (heatgw/), the drivers its board's manifest names (boards/<board>/
   manifest.py and boards/app_manifest.py; the host board: every driver), the pinned
   libraries from build/mplibs (umqtt, and of umodbus only what the node imports:
   host_tools/romfs.py), a real board's board.mpy, and boot.py, main.py as source; plus
   --config FILE as config.json, validated first with the node's own code
   (host_tools/config_check.py). Staged in build/deploy/<board>/tree/.
2. Talks to the board through mpremote's serial transport (the real mpremote, as a library:
   one session, its raw-paste REPL, its file writes): stops the application (Ctrl-C: relays
   safe, totals saved), checks it is MicroPython for the board (.mpy architecture and
   version), hashes every file it would write ON THE DEVICE (one small script, sha256 in
   512-byte reads) and copies only those whose hash differs, with a progress bar. A `.py`
   left beside a deployed `.mpy` (it would be imported instead) is removed. Nothing else on
   the board is touched (state, events, queue, secrets, calibration stay).
3. With --romfs (a board whose firmware has a ROMFS partition): the same tree packed as a
   ROMFS image (`mpremote romfs build`) and written with `mpremote romfs deploy` unless the
   partition already holds it (compared by sha256 on the device); the start files and the
   configuration are copied as files, and deployed code files that would shadow the image
   (the flash's root comes first on sys.path) are removed. The host board has no ROM
   partition: its node mounts an image its runner names ($HEATGW_ROMFS: `heatgw scenario
   --romfs`), so `--board host --romfs` is refused with that advice.
4. Resets the board (machine.reset()) and reads its console until the application's boot
   event (`event: {... "kind": "boot"}`): the node boots from what was deployed. A node
   that stops at boot, sits in safe boot or says nothing within --boot-timeout fails.

Files go to the flash's root, which comes first on every board's sys.path (before
.frozen, /rom and /lib): what was deployed is what runs, also over a frozen image.
--frozen (a firmware with the code frozen in) copies only the start files and the
configuration and removes deployed code files; on the host board the code on the node's
MICROPYPATH (firmware/, lib/) stands for the frozen modules.

Exit status: 0 deployed and booted, 1 the board failed (no port, no MicroPython, wrong
board, a copy or the boot failed), 2 bad usage or an invalid configuration (nothing
copied). `--json` prints the report as one JSON line at the end.
"""

import argparse
import ast
import contextlib
import hashlib
import io
import json
import shutil
import sys
import time
from pathlib import Path

from host_tools.paths import BOARDS, BUILD, FIRMWARE

START_FILES = ("boot.py", "main.py")
BOOT_TIMEOUT_S = 60.0
RESET_REOPEN_S = 15.0  # a native-USB board (Pico W) re-enumerates after its reset
HASH_CHUNK = 512


class DeployError(Exception):
    """The board failed: exit 1."""


class UsageError(Exception):
    """Bad usage or input: exit 2, nothing copied."""


def boards():
    from host_tools.build_mpy import TARGET_ARCHES

    return sorted(TARGET_ARCHES) + ["host"]


def board_arch(board):
    from host_tools.build_mpy import TARGET_ARCHES, host_arch

    return host_arch() if board == "host" else TARGET_ARCHES[board]


def manifest_modules(board):
    """Driver modules a real board's frozen image names: `module("x.py", ...)` calls in
    boards/<board>/manifest.py and boards/app_manifest.py, minus the board file."""
    names = []
    for path in (BOARDS / board / "manifest.py", BOARDS / "app_manifest.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and getattr(node.func, "id", None) == "module"
                    and node.args and isinstance(node.args[0], ast.Constant)):
                names.append(Path(node.args[0].value).stem)
    return sorted(set(names) - {"board"})


# -- 1. what goes onto the board --------------------------------------------------------

class Stage:
    """The files for one board: `files` {device path: local path}, `image` (ROMFS)."""

    def __init__(self, board, root):
        self.board = board
        self.root = Path(root)
        self.tree = self.root / "tree"
        self.files = {}
        self.code = []  # device paths of the compiled code (the image's, with --romfs)
        self.image = None
        self.frozen = False  # the code is in the firmware: only the start files and config


def stage(board, config=None, romfs=False, root=None, frozen=False):
    from host_tools import build_mpy
    from host_tools import romfs as romfs_mod

    if config is not None:
        check_config(config)
    arch = board_arch(board)
    with contextlib.redirect_stdout(io.StringIO()):
        ok = build_mpy.build([board])
    if not ok:
        raise UsageError(f"mpy-cross failed for {board} ({arch}): see the errors above")
    st = Stage(board, root or BUILD / "deploy" / board)
    st.root.mkdir(parents=True, exist_ok=True)
    drivers = None if board == "host" else manifest_modules(board)
    extra = () if board == "host" else ("board",)
    try:
        romfs_mod.app_tree(build_mpy.out_dir(board), st.tree, arch=arch, drivers=drivers,
                           extra=extra)
    except RuntimeError as e:
        raise UsageError(str(e)) from None
    st.code = sorted(p.relative_to(st.tree).as_posix() for p in st.tree.rglob("*")
                     if p.is_file())
    st.frozen = frozen
    if romfs:
        st.image = romfs_mod.pack(st.tree, st.root / "app.romfs")
    elif not frozen:
        st.files = {rel: st.tree / rel for rel in st.code}
    for name in START_FILES:
        st.files[name] = FIRMWARE / name
    if config is not None:
        dest = st.root / "config.json"
        shutil.copy(config, dest)
        st.files["config.json"] = dest
    return st


def check_config(path):
    from host_tools import config_check

    if not Path(path).is_file():
        raise UsageError(f"--config {path}: no such file")
    cfg, errors, _ = config_check.check(path)
    if cfg is None:
        raise UsageError(f"--config {path} is not a valid configuration (nothing copied): "
                         + "; ".join(errors[:4]))


def sha256_file(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# -- 2. the board, through mpremote -------------------------------------------------------

# Runs on the board: sha256 of each path (None: no such file), one line each; 512-byte reads
# into one buffer. ROM: the sha256 of the ROMFS partition's first N bytes, if asked.
_HASH_SCRIPT = """
import hashlib, binascii
def _h(p):
    try:
        f = open(p, 'rb')
    except OSError:
        return None
    h = hashlib.sha256()
    b = bytearray(%(chunk)d)
    m = memoryview(b)
    while True:
        n = f.readinto(b)
        if not n:
            break
        h.update(m[:n])
    f.close()
    return binascii.hexlify(h.digest()).decode()
for _p in %(paths)r:
    print('H', _p, _h(_p))
if %(rom)d:
    import vfs
    _d = vfs.rom_ioctl(2, 0) if hasattr(vfs, 'rom_ioctl') else -1
    if isinstance(_d, int):
        print('R none')
    else:
        _m = memoryview(_d)
        print('R', len(_m), binascii.hexlify(hashlib.sha256(_m[:%(rom)d]).digest()).decode())
"""

_MKDIRS = """
import os
for _d in %r:
    try:
        os.mkdir(_d)
    except OSError:
        pass
"""


_RMDIRS = """
import os
for _d in %r:
    try:
        if not list(os.ilistdir(_d)):
            os.rmdir(_d)
    except OSError:
        pass
"""


class Device:
    """One mpremote session on the board's serial port."""

    def __init__(self, port, timeout_s=10):
        self.port = port
        self.timeout_s = timeout_s
        self.open()

    def open(self):
        from mpremote.transport import TransportError
        from mpremote.transport_serial import SerialTransport

        port, timeout_s = self.port, self.timeout_s
        try:
            # a read timeout while entering the REPL: on a pty mpremote reads without
            # looking first, and a port with nothing behind it would block it for ever
            self.t = SerialTransport(port, baudrate=115200, timeout=2)
        except TransportError as e:
            raise DeployError(f"no port {port}: {e} (is the board plugged in?)") from None
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # mpremote prints what it got
                self.t.enter_raw_repl(soft_reset=True, timeout_overall=timeout_s)
            self.t.serial.timeout = None  # from here on mpremote's own (blocking) reads
        except Exception as e:  # noqa: BLE001 - TransportError, serial errors
            self.close()
            raise DeployError(f"no MicroPython REPL on {port} ({e}): is it a board running "
                              "MicroPython (heatgw flash), and is no other program (a "
                              "terminal, mpremote) using the port?") from None

    def exec(self, code):
        from mpremote.transport import TransportError

        try:
            return self.t.exec(code).decode(errors="replace")
        except TransportError as e:
            raise DeployError(f"the board on {self.port} failed: {e}") from None

    def identity(self):
        """(sys.platform, sys.implementation._mpy) of the board."""
        out = self.exec("import sys, gc\ngc.collect()\nprint(repr((sys.platform, "
                        "getattr(sys.implementation, '_mpy', 0), gc.mem_free() + "
                        "gc.mem_alloc())))")
        return ast.literal_eval(out.strip().splitlines()[-1])

    def hashes(self, paths, rom=0):
        out = self.exec(_HASH_SCRIPT % {"chunk": HASH_CHUNK, "paths": tuple(paths),
                                        "rom": rom})
        got, rom_state = {}, None
        for line in out.splitlines():
            parts = line.split()
            if parts and parts[0] == "H" and len(parts) == 3:
                got[parts[1]] = None if parts[2] == "None" else parts[2]
            elif parts and parts[0] == "R":
                rom_state = None if parts[1] == "none" else (int(parts[1]), parts[2])
        missing = set(paths) - set(got)
        if missing:
            raise DeployError(f"the board did not hash {len(missing)} files: {out[-300:]}")
        return got, rom_state

    def mkdirs(self, dirs):
        if dirs:
            self.exec(_MKDIRS % (tuple(dirs),))

    def write(self, path, data, progress=None):
        from mpremote.transport import TransportError

        try:
            self.t.fs_writefile(path, data, progress_callback=progress)
        except (TransportError, OSError) as e:
            raise DeployError(f"copying {path} to the board failed: {e}") from None

    def remove(self, path):
        self.exec(f"import os\nos.remove({path!r})")

    def reset(self):
        """machine.reset(), as `mpremote reset`; the serial port stays ours."""
        self.t.exec_raw_no_follow("import machine; machine.reset()")
        self.t.in_raw_repl = False

    def close(self):
        try:
            self.t.close()
        except Exception:  # noqa: BLE001, S110 - the port may be gone (a reset board)
            pass


def check_identity(dev, board, tree):
    from host_tools.mpinfo import MPY_ARCHES

    platform, mpy, heap = dev.identity()
    arch = MPY_ARCHES[(mpy >> 10) & 0x0F] if mpy else "none"
    want = board_arch(board)
    if arch != want:
        raise DeployError(f"wrong board: the MicroPython on {dev.port} is for {platform} "
                          f"(.mpy arch {arch}); --board {board} needs {want}")
    have = (mpy & 0xFF, (mpy >> 8) & 3)
    for path in sorted(Path(tree).rglob("*.mpy")):
        head = path.read_bytes()[:3]  # b"M", version, arch << 2 | sub-version (native code)
        native = head[2] >> 2 != 0  # bytecode alone loads on any sub-version of its version
        if head[1] != have[0] or (native and head[2] & 3 != have[1]):
            made = f"{head[1]}.{head[2] & 3}" if native else f"{head[1]}"
            raise DeployError(f"the firmware on {dev.port} loads .mpy {have[0]}.{have[1]}; "
                              f"this mpy-cross makes {made} ({path.name}): flash a MicroPython "
                              "of the same version as mpy-cross (heatgw flash)")
    return platform, arch, heap


def _dirs_of(paths):
    out = []
    for p in paths:
        parts = p.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            d = "/".join(parts[:i])
            if d not in out:
                out.append(d)
    return out


def sync(dev, st, console=None):
    """Copy what differs (module doc, 2.); the report's counts."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn

    planned = dict(st.files)
    twins = [p[:-4] + ".py" for p in st.code if p.endswith(".mpy")]
    code_elsewhere = st.image is not None or st.frozen  # in the ROM partition or firmware
    ask = list(planned) + twins + (list(st.code) if code_elsewhere else [])
    image_bytes = st.image.read_bytes() if st.image is not None else b""
    have, rom_state = dev.hashes(list(dict.fromkeys(ask)), rom=len(image_bytes))
    report = {"files": len(planned), "copied": [], "unchanged": 0, "removed": [],
              "bytes": 0, "romfs": None}
    if st.image is not None:
        report["romfs"] = deploy_image(dev, st.image, image_bytes, rom_state)
    if code_elsewhere:
        # code files deployed before would shadow the image or the frozen modules: the
        # flash's root is first on sys.path
        stale = [p for p in st.code if have.get(p) is not None]
    else:
        stale = []
    stale += [p for p in twins if have.get(p) is not None]
    for p in stale:
        dev.remove(p)
        report["removed"].append(p)
    if stale:  # an empty package folder left in the root would still shadow the package
        dev.exec(_RMDIRS % (tuple(sorted(_dirs_of(stale), key=len, reverse=True)),))
    todo = [p for p, local in planned.items() if have.get(p) != sha256_file(local)]
    report["unchanged"] = len(planned) - len(todo)
    if todo:
        dev.mkdirs(_dirs_of(todo))
        total = sum(Path(planned[p]).stat().st_size for p in todo)
        with Progress(TextColumn("{task.description:<32}"), BarColumn(), DownloadColumn(),
                      TextColumn("{task.fields[n]}"), console=console) as progress:
            task = progress.add_task("copying", total=total, n="")
            done = 0
            for i, p in enumerate(todo):
                data = Path(planned[p]).read_bytes()
                progress.update(task, description=p, n=f"{i + 1}/{len(todo)}")

                def step(written, _size, base=done):
                    progress.update(task, completed=base + written)

                dev.write(p, data, step)
                done += len(data)
                progress.update(task, completed=done)
                report["copied"].append(p)
        report["bytes"] = total
    return report


def deploy_image(dev, image, data, rom_state):
    """The ROMFS image into the board's partition with `mpremote romfs deploy`, unless the
    partition holds it already; what was done."""
    import subprocess

    if rom_state is None:
        raise DeployError(f"the firmware on {dev.port} has no ROMFS partition (no "
                          "vfs.rom_ioctl or no partition 0): flash a firmware built with one "
                          "(README, \"Production images\") or deploy without --romfs")
    size, digest = rom_state
    if len(data) > size:
        raise DeployError(f"the ROMFS image is {len(data)} bytes, the board's partition "
                          f"{size}")
    if digest == hashlib.sha256(data).hexdigest():
        return {"image_bytes": len(data), "partition_bytes": size, "written": False}
    dev.close()  # mpremote's own session writes the partition
    r = subprocess.run([sys.executable, "-m", "mpremote", "connect", dev.port, "romfs",
                        "deploy", str(image)], capture_output=True, text=True, timeout=600,
                       check=False)
    dev.open()
    if r.returncode != 0 or "ROMFS image deployed" not in r.stdout:
        raise DeployError(f"mpremote romfs deploy failed: {(r.stdout + r.stderr)[-500:]}")
    return {"image_bytes": len(data), "partition_bytes": size, "written": True}


# -- 4. does it boot? ---------------------------------------------------------------------

def _reopen(port, until):
    import serial

    while True:
        try:
            return serial.Serial(port, 115200, timeout=0.2)
        except (OSError, serial.SerialException):
            if time.monotonic() > until:
                raise DeployError(f"{port} did not come back after the reset") from None
            time.sleep(0.3)


def wait_boot(dev, timeout_s=BOOT_TIMEOUT_S):
    """Reset the board and read its console up to the boot event: its fields, or
    DeployError with the reason and the console's last lines."""
    import serial

    dev.reset()
    ser = dev.t.serial
    ser.timeout = 0.2  # mpremote's session reads block
    give_up = time.monotonic() + timeout_s
    buf = b""
    try:
        while time.monotonic() < give_up:
            try:
                chunk = ser.read(4096)
            except (OSError, serial.SerialException):
                ser.close()  # a native-USB board's port went away with the reset
                ser = _reopen(dev.port, time.monotonic() + RESET_REOPEN_S)
                continue
            buf += chunk
            *lines, _ = buf.split(b"\n")
            for raw in lines:
                line = raw.decode(errors="replace").strip()
                if line.startswith("event: {") and '"kind": "boot"' in line:
                    return json.loads(line[len("event: "):])
                if line.startswith("main: application stopped"):
                    raise DeployError(f"the node did not start: {line}\n"
                                      + _tail(buf))
                if "safe boot" in line and "application not started" in line:
                    raise DeployError(f"the node booted into safe boot: {line} (remove "
                                      "SAFEBOOT from its flash, or release the safe-boot "
                                      "pin)")
    finally:
        ser.close()
    raise DeployError(f"no boot event on {dev.port} within {timeout_s:.0f} s of the reset; "
                      "the console said:\n" + _tail(buf))


def _tail(buf, n=12):
    return "\n".join(buf.decode(errors="replace").splitlines()[-n:])


# -- the command -----------------------------------------------------------------------

def parser():
    ap = argparse.ArgumentParser(
        description="Copy the node's code (compiled for the board) and configuration to a "
                    "board over its serial port, only what changed; reset it and check "
                    "that it boots.",
        epilog="Exit: 0 deployed and booted, 1 the board failed, 2 bad usage or an invalid "
               "configuration (nothing copied).")
    ap.add_argument("--board", required=True, choices=boards(),
                    help="the board (its mpy arch decides the compiled code)")
    ap.add_argument("--port", help="the board's serial port (/dev/ttyUSB0, /dev/ttyACM0; "
                                   "the host board's: the pty benchnode prints)")
    ap.add_argument("--config", metavar="FILE",
                    help="a config.json to put on the board (validated first)")
    ap.add_argument("--romfs", action="store_true",
                    help="the code as a ROMFS image in the board's ROM partition")
    ap.add_argument("--frozen", action="store_true",
                    help="the board runs a firmware with the code frozen in: copy only the "
                         "start files and the configuration, remove deployed code files")
    ap.add_argument("--no-reset", action="store_true",
                    help="do not reset the board and wait for its boot afterwards")
    ap.add_argument("--boot-timeout", type=float, default=BOOT_TIMEOUT_S, metavar="S",
                    help=f"seconds to wait for the boot event (default {BOOT_TIMEOUT_S:.0f})")
    ap.add_argument("--build-only", action="store_true",
                    help="build the files (and the ROMFS image) and say where; no board")
    ap.add_argument("--json", action="store_true", help="the report as one JSON line")
    return ap


def run(args):
    t0 = time.monotonic()
    if args.romfs and args.board == "host":
        raise UsageError("the host board has no ROM partition: its node mounts the ROMFS "
                         "image its runner names ($HEATGW_ROMFS), e.g. `heatgw scenario "
                         "SCENARIO --romfs` (make scenario ROMFS=1); deploy to the host "
                         "board without --romfs")
    if not args.build_only and not args.port:
        raise DeployError("no port: give the board's serial port with --port (the host "
                          "board's: the /dev/pts/N that `python -m host_tools.benchnode` "
                          "prints)")
    if args.frozen and args.romfs:
        raise UsageError("--frozen and --romfs exclude each other: the code is in the "
                         "firmware or in the ROM partition")
    st = stage(args.board, args.config, args.romfs, frozen=args.frozen)
    report = {"board": args.board, "arch": board_arch(args.board), "stage": str(st.root)}
    if st.image is not None:
        report["image"] = str(st.image)
        report["image_bytes"] = st.image.stat().st_size
    if args.build_only:
        report["files"] = len(st.files)
        return report
    dev = Device(args.port)
    try:
        report["platform"], _, report["heap_bytes"] = check_identity(dev, args.board,
                                                                     st.tree)
        report.update(sync(dev, st))
        report["copy_seconds"] = round(time.monotonic() - t0, 2)
        if not args.no_reset:
            report["boot"] = {k: v for k, v in wait_boot(dev, args.boot_timeout).items()
                              if k in ("config", "errors", "state", "boot", "latched")}
    finally:
        dev.close()
    report["seconds"] = round(time.monotonic() - t0, 2)
    return report


def main(argv=None):
    ap = parser()
    args = ap.parse_args(argv)
    try:
        report = run(args)
    except UsageError as e:
        print(f"{ap.prog}: error: {e}", file=sys.stderr)
        return 2
    except DeployError as e:
        print(f"{ap.prog}: error: {e}", file=sys.stderr)
        return 1
    if args.build_only:
        what = f"ROMFS image {report['image']} ({report['image_bytes']} bytes) and " \
            if "image" in report else ""
        print(f"deploy: built {what}{report['files']} files for {args.board} "
              f"({report['arch']}) in {report['stage']}")
    else:
        romfs = report.get("romfs")
        if romfs:
            print(f"romfs: image {romfs['image_bytes']} bytes in a {romfs['partition_bytes']}"
                  f"-byte partition: {'written' if romfs['written'] else 'unchanged'}")
        print(f"board: MicroPython for {report['platform']}, a heap of "
              f"{report['heap_bytes'] / 1024:.1f} KB")
        print(f"deploy: {report['files']} files for {args.board} on {args.port}: "
              f"{len(report['copied'])} copied ({report['bytes']} bytes), "
              f"{report['unchanged']} unchanged, {len(report['removed'])} removed; "
              f"{report['copy_seconds']:.1f} s")
        if "boot" in report:
            b = report["boot"]
            print(f"boot: the node booted (boot {b.get('boot')}, config {b.get('config')}, "
                  f"state {b.get('state')}, errors {b.get('errors')})")
    if args.json:
        print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
