"""Start the host board like a reset starts a chip: boot.py, then main.py.

    MICROPYPATH=... micropython -m node

The unix port runs neither file by itself; this does, in one interpreter, in order. When
main.py returns (safe boot, or the application could not start) a chip would sit at
its REPL with the relays safe: under the harness the node keeps answering, idle.
"""
# ruff: noqa: I001 - the order is the point: boot.py, then main.py, then idle

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
