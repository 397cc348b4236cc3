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

import boot  # noqa: F401, E402
import main  # noqa: F401, E402
import board  # noqa: E402

if board.clock.link is not None:
    dev = board._flash
    if dev is not None:  # what this run cost the flash (README: flash-wear budget)
        rec = {"ops": dev.ops, "erases": dev.erases, "bytes_programmed": dev.bytes_programmed,
               "block_erases": dev.wear()}
        pin = board._pulse_pin
        if pin is not None:  # and the pulse input: edges, interrupts, edges lost to masking
            rec["pulses"] = {"edges": pin.edges, "irqs": pin.irqs, "collapsed": pin.collapsed,
                             "counter": board.PULSE_COUNTER}
        board.observer("flash", rec)
    while True:
        board.clock.wait_until(None)
