"""The one time source of the firmware: monotonic ticks in ms, and UTC when known.

On the targets this is the `time` module (ticks wrap at 2**30 ms: always ticks_diff).
A board may provide its own `clock` (the host board's runs virtual time in lockstep with
the plant harness), so metering, control and the emulated chips all see one time.
Wall-clock time is for timestamps only, never for control or metering.
"""

try:
    from board import clock as _src
except ImportError:
    import time as _src

ticks_ms = _src.ticks_ms
ticks_add = _src.ticks_add
ticks_diff = _src.ticks_diff
sleep_ms = _src.sleep_ms  # blocking; tasks use asyncio.sleep_ms


def utc_s():
    """Seconds since 1970-01-01 UTC, or None while the clock has not been set."""
    f = getattr(_src, "utc_s", None)
    return f() if f is not None else None
