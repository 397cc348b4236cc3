"""The one time source of the firmware: monotonic ticks in ms, and UTC when known.

On the targets this is the `time` module (ticks wrap at 2**30 ms: always ticks_diff).
A board may provide its own `clock` (the host board's runs virtual time in lockstep with
the plant harness), so metering, control and the emulated chips all see one time.
Wall-clock time is for timestamps only, never for control or metering.
"""

try:
    from micropython import const
except ImportError:  # CPython (host tools, tests): const() is the identity on ints
    const = int

import time as _time

try:
    from board import clock as _src
except ImportError:
    _src = _time

ticks_ms = _src.ticks_ms
ticks_add = _src.ticks_add
ticks_diff = _src.ticks_diff
sleep_ms = _src.sleep_ms  # blocking; tasks use asyncio.sleep_ms

# Real microseconds on every board (the host board's ms above are virtual), to measure how
# long the network side holds the CPU in one go: a task's stretch from resuming to its
# next await, one network call. Virtual time does not move while code runs, so on the
# host board a blocking call is seen here only. took() keeps the longest (telemetry's
# record: worst_net_real_us, worst_net_where); no allocation (small ints, a constant str).
real_us = _time.ticks_us
net_worst_us = 0
net_worst_where = None


def took(t0_us, where):
    """A stretch that began at real_us() t0_us ends now; where: "send", "loop", ..."""
    global net_worst_us, net_worst_where
    d = _time.ticks_diff(_time.ticks_us(), t0_us)
    if d > net_worst_us:
        net_worst_us = d
        net_worst_where = where


_utc_at_s = None  # UTC seconds at the tick _utc_tick (set_utc_s: NTP), None = unknown
_utc_tick = 0
_REANCHOR_MS = const(1 << 28)  # move the anchor forward well before ticks_diff's 2**29 ms range


def utc_s():
    """Seconds since 1970-01-01 UTC, or None while the clock has not been set."""
    global _utc_at_s, _utc_tick
    f = getattr(_src, "utc_s", None)
    if f is not None:  # the board's own UTC (the host board's harness) comes first
        t = f()
        if t is not None:
            return t
    if _utc_at_s is None:
        return None
    el = ticks_diff(ticks_ms(), _utc_tick)
    if el >= _REANCHOR_MS:  # keep the anchor within ticks_diff's reach (6.2 days)
        s = el // 1000
        _utc_at_s += s
        _utc_tick = ticks_add(_utc_tick, s * 1000)
        el -= s * 1000
    return _utc_at_s + el // 1000


def set_utc_s(utc):
    """Set UTC (int seconds, from NTP) for payload timestamps; the ticks, which metering
    and control use, are untouched. Steps are allowed: only `utc` in payloads moves."""
    global _utc_at_s, _utc_tick
    if type(utc) is not int or utc < 0:
        raise ValueError("utc must be a non-negative int of seconds")
    _utc_tick = ticks_ms()
    _utc_at_s = utc
