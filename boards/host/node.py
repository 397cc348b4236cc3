"""Start the host board like a reset starts a chip: boot.py, then main.py.

    MICROPYPATH=... micropython -m node

The unix port runs neither file by itself; this does, in one interpreter, in order. When
main.py returns (safe boot, or the application could not start) a chip would sit at
its REPL with the relays safe: under the harness the node keeps answering, idle.

$HEATGW_ROMFS names a ROMFS image (host_tools/romfs.py) holding the node's code, as a
production board's ROMFS partition does: it is mounted at /rom, first on sys.path, before
anything else runs. The unix port cannot map flash, so the image is read into one
buffer first (the heap holds it: the harness adds its size to the heap and subtracts it
from the heap figures).
"""
# ruff: noqa: I001 - the order is the point: ROMFS, boot.py, then main.py, then idle

import os

_rom = os.getenv("HEATGW_ROMFS")
if _rom:
    import sys
    import vfs

    _img = bytearray(os.stat(_rom)[6])  # exactly its size: no growing read, no copy
    with open(_rom, "rb") as _f:
        _f.readinto(_img)
    vfs.mount(vfs.VfsRom(_img), "/rom")
    sys.path.insert(0, "/rom")
    print("romfs: %d bytes mounted at /rom" % len(_img))
    _f = sys = vfs = None

if os.getenv("HEATGW_SERIAL") != "1":
    import boot  # noqa: F401
    import main  # noqa: F401
    import board

    if board.clock.link is not None:
        dev = board._flash
        if dev is not None:  # what this run cost the flash (README: flash-wear budget)
            board.observer("flash", {"ops": dev.ops, "erases": dev.erases,
                                     "bytes_programmed": dev.bytes_programmed,
                                     "block_erases": dev.wear()})
        while True:
            board.clock.wait_until(None)
else:
    import sys

    import board

    os.chdir(board.data_dir())
    if "" in sys.path:  # the flash's root first, before a ROMFS image too
        sys.path.remove("")
    sys.path.insert(0, "")
    sys.path.append(board.data_dir() + "/lib")
    board.serial_port()

    def _pyexec(name):
        try:
            __import__(name)
            return True
        except (Exception, KeyboardInterrupt) as e:  # noqa: BLE001 - printed, as pyexec
            sys.print_exception(e)
            return False

    _mode = os.getenv("HEATGW_REPL") or "friendly"
    _main = _pyexec("boot") and _mode == "friendly"
    if _main:
        _pyexec("main")
    import repl

    repl.run(_mode, _main)
