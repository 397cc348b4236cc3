# boot.py: the first code to run after every reset, before anything that can fail.
# Every relay goes to its safe state (coil de-energised: heat to the dry cooler) first;
# until then the relay modules' pull resistors hold the coils off (see boards/*/board.py).
try:
    import board

    board.relays_safe()
except Exception as e:  # noqa: BLE001 - nothing may stop the boot; the pulls keep us safe
    print("boot: could not drive relays to safe state:", repr(e))

# A soft reset (Ctrl-D at the REPL, mpremote) leaves a started watchdog running: it cannot
# be stopped. The board keeps it fed from a timer until the application's supervisor takes
# it over, so the REPL and an mpremote copy are not cut short (relays are safe here).
try:
    hold = getattr(board, "hold_watchdog", None)
    if hold is not None:
        hold()
except Exception as e:  # noqa: BLE001
    print("boot: watchdog hold failed:", repr(e))

# Safe boot: the board's safe-boot input held at reset, or a flag file SAFEBOOT in the
# data directory, stops the application before the watchdog starts, so an installer can
# always reach the REPL and redeploy. Relays stay safe.
try:
    from heatgw import bootstate

    if board.safe_boot_requested():
        bootstate.safe_boot, bootstate.reason = True, "pin"
    else:
        import os

        try:
            os.stat(board.data_dir() + "/SAFEBOOT")
            bootstate.safe_boot, bootstate.reason = True, "flag file"
        except OSError:
            pass
except Exception as e:  # noqa: BLE001
    print("boot: safe-boot check failed:", repr(e))
