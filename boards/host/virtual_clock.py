"""A virtual millisecond clock for the host board, wrapping where the targets wrap.

`time.ticks_ms()` on ESP32 and RP2040 wraps at 2**30 ms (12.4 days); the unix port's wraps
far later and would hide every subtraction that should have been `ticks_diff`. This clock
offers the same `ticks_ms`, `ticks_add`, `ticks_diff` and `sleep_ms` as `time`, but time only
moves when someone calls `sleep_ms` (or `advance`), so tests and simulations are
deterministic and a simulated day takes no real day.
"""

TICKS_PERIOD = 1 << 30
_TICKS_MAX = TICKS_PERIOD - 1
_TICKS_HALF = TICKS_PERIOD // 2


class VirtualClock:
    def __init__(self, start_ms=0):
        self.t = start_ms & _TICKS_MAX
        self.elapsed_ms = 0  # unwrapped, for whoever drives the clock

    def ticks_ms(self):
        return self.t

    def ticks_add(self, ticks, delta):
        return (ticks + delta) & _TICKS_MAX

    def ticks_diff(self, a, b):
        d = (a - b) & _TICKS_MAX
        return d - TICKS_PERIOD if d >= _TICKS_HALF else d

    def sleep_ms(self, ms):
        self.advance(ms)

    def advance(self, ms):
        if ms < 0:
            raise ValueError("time does not run backwards")
        self.t = (self.t + ms) & _TICKS_MAX
        self.elapsed_ms += ms
