# main.py: runs after boot.py and starts the gateway application (heatgw.start). If the
# application cannot even start, the relays stay in their safe state (bypass), the
# error is printed on the console and no watchdog runs, so the node waits for a
# technician instead of reset-looping. The on-device self-test (heatgw.selftest) stays
# available from the REPL: `from heatgw import selftest; selftest.run()`.
try:
    from heatgw import start

    start.run()
except Exception as e:  # noqa: BLE001
    import sys

    print("main: application stopped:", repr(e))
    sys.print_exception(e)
    try:
        import board

        board.relays_safe()
    except Exception:  # noqa: BLE001, S110
        pass
