"""The host board's virtual clock wraps at 2**30 ms like the targets' ticks_ms."""


def test_virtual_clock_wraps_like_the_targets(mp):
    out = mp.run_json("""
import json
from virtual_clock import VirtualClock, TICKS_PERIOD
c = VirtualClock(TICKS_PERIOD - 5)
a = c.ticks_ms()
c.sleep_ms(10)
b = c.ticks_ms()
try:
    c.advance(-1)
    back = False
except ValueError:
    back = True
print(json.dumps([a, b, c.ticks_diff(b, a), c.ticks_diff(a, b), c.ticks_add(a, 10),
                  c.elapsed_ms, back, TICKS_PERIOD]))
""")[0]
    a, b, fwd, rev, added, elapsed, refused_back, period = out
    assert period == 1 << 30
    assert a == (1 << 30) - 5 and b == 5  # wrapped
    assert fwd == 10 and rev == -10
    assert added == b
    assert elapsed == 10 and refused_back


def test_real_us_measures_what_virtual_time_does_not_see_and_took_allocates_nothing(mp):
    # heatgw.clock: ms from the board (virtual on the host board), real_us real everywhere;
    # took() keeps the longest stretch and where, with no allocation (heap locked).
    out = mp.run_json("""
import json, micropython, time
from heatgw import clock
v0 = clock.ticks_ms()
t0 = clock.real_us()
while time.ticks_diff(time.ticks_us(), t0) < 20_000:  # 20 ms real, busy
    pass
clock.took(t0, "send")
v1 = clock.ticks_ms()
i = 0
locked = None  # every global exists before the lock (a new one may grow the dict)
micropython.heap_lock()
try:
    while i < 1000:
        t0 = clock.real_us()
        clock.took(t0, "loop")
        i += 1
    locked = "ok"
except MemoryError:
    locked = "allocated"
micropython.heap_unlock()
print(json.dumps([clock.ticks_diff(v1, v0), clock.net_worst_us, clock.net_worst_where,
                  locked]))
""")[0]
    virtual_ms, worst_us, where, locked = out
    assert virtual_ms == 0  # the busy wait cost no virtual time ...
    assert worst_us >= 20_000 and where == "send"  # ... but real time, and it was kept
    assert locked == "ok"
