"""lib/pulsecounter on the real micropython binary: the IRQ handler counts, stamps and
wraps at 2**30 without allocating (heap locked), whatever the binary's word size."""

CODE = """
import micropython
from pulsecounter import PulseCounter, count_diff

class Pin:
    IRQ_FALLING = 2
    def irq(self, handler, trigger):
        self.handler = handler

class Clock:
    t = 123
    def ticks_ms(self):
        return self.t

pin = Pin()
clock = Clock()
pc = PulseCounter(pin, clock=clock)
print(pc.read() == (0, None))
pc._count = 0x3FFFFFFE  # two edges before the wrap
before = pc.count()
def edges(h, pin):
    # in a function: a new module global would grow the globals dict under the lock
    micropython.heap_lock()
    try:
        h(pin)
        h(pin)
        h(pin)
        h(pin)
    except MemoryError:
        micropython.heap_unlock()
        return False
    micropython.heap_unlock()
    return True

ok = edges(pin.handler, pin)
print(ok)
print(pc.read())
print(count_diff(pc.count(), before))
"""


def test_irq_wraps_at_2_30_without_allocating(mp):
    out = mp.run_code(CODE).split()
    assert out == ["True", "True", "(2,", "123)", "4"]
