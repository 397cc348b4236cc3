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
