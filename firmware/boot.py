# boot.py: the first code to run after every reset, before anything that can fail.
# Every relay goes to its safe state (coil de-energised: heat to the dry cooler) first;
# until then the relay modules' pull resistors hold the coils off (see boards/*/board.py).
try:
    import board

    board.relays_safe()
except Exception as e:  # noqa: BLE001 - nothing may stop the boot; the pulls keep us safe
    print("boot: could not drive relays to safe state:", repr(e))
