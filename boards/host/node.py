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

The host board itself (board, the emulated MAX31865 chips, the file-backed flash, the
pulse input's emulated pin and counter, the lockstep link, asyncio on virtual time) stands
in for a board's hardware and its frozen board file: a target's heap holds none of it.
What importing it costs is measured here, before boot.py (live heap after a collect,
before and after), and reported to the harness (`host_board` record), which gives the
node that much more heap and leaves it out of the heap figures, as it does the ROMFS image
(README, "Heap accounting on the host board").
asyncio is imported before the measurement: a board's firmware has it too, so it counts as
the node's. `HEATGW_HOST_PROBE=1` prints the figure and stops there: the harness asks
before it starts a node, to size the heap.
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

import gc  # noqa: E402

import asyncio  # noqa: E402, F401 - the node's, as on a board (docstring)

gc.collect()
_m0 = gc.mem_alloc()
import board  # noqa: E402 - the host board: emulated chips and pins, link, clock
import flashdev  # noqa: E402, F401 - the file-backed NOR flash
import pulse_emu  # noqa: E402, F401 - the flow input: emulated pin, counter, masking
import vasyncio  # noqa: E402, F401 - asyncio's run queue on virtual time

gc.collect()
host_board_bytes = gc.mem_alloc() - _m0
if os.getenv("HEATGW_HOST_PROBE"):
    print("host_board_bytes", host_board_bytes)
    raise SystemExit(0)
board.connect_link()  # the harness's hello and boot step (after the measurement)
board.observer("host_board", {"bytes": host_board_bytes})



def _report_flash():
    """Under the harness, once the application stopped: what this run cost the flash
    (README: flash-wear budget) and what the pulse input saw; and the names the node
    interned (the harness reads the console's `qstr pool:` line into its summary)."""
    dev = board._flash
    if board.clock.link is None or dev is None:
        return
    import micropython

    micropython.qstr_info()
    rec = {"ops": dev.ops, "erases": dev.erases,
           "bytes_programmed": dev.bytes_programmed, "max_block_erases": dev.max_wear()}
    pin = board._pulse_pin
    if pin is not None:  # and the pulse input: edges, interrupts, edges masked away
        rec["pulses"] = {"edges": pin.edges, "irqs": pin.irqs,
                         "collapsed": pin.collapsed, "counter": board.PULSE_COUNTER}
    board.observer("flash", rec)


if os.getenv("HEATGW_SERIAL") != "1":
    import boot  # noqa: F401
    import main  # noqa: F401

    _report_flash()
    if board.clock.link is not None:
        while True:
            board.clock.wait_until(None)
else:
    import sys

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
    gc.collect()
    import repl  # first: at a long run's end the stopped application left the heap in pieces

    if _main:
        _report_flash()  # the application stopped (the harness's end, a Ctrl-C)

    repl.run(_mode, _main)
