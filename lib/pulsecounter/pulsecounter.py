"""Pulse input counter for flow meters with a reed or open-collector output.

    pc = PulseCounter(Pin(34, Pin.IN))
    pc.count()          # pulses since start, wraps at 2**30
    pc.last_edge_ms()   # ticks_ms() of the latest pulse, None before the first
    pc.read()           # both, consistent with each other

The interrupt handler only increments a small int and stores `ticks_ms()`: no
allocation, no task creation (hard-IRQ safe), so a 100 Hz meter costs almost nothing.
Readers take deltas with `count_diff` (wrap-safe) and the edge time with ticks_diff.
An edge timestamp lets the reader bound the flow between pulses: no pulse for g ms
means the flow is below one pulse per g ms, which is how a stopped pump is seen
within a fraction of a second instead of after a whole counting window.
"""

import time

from micropython import const

_MASK = const(0x3FFFFFFF)


def count_diff(a, b):
    """a - b for counts that wrap at 2**30 (a is the later count)."""
    return (a - b) & _MASK


class PulseCounter:
    def __init__(self, pin, *, trigger=None, clock=time):
        self._ticks_ms = clock.ticks_ms
        self._count = 0
        self._last_ms = None
        if trigger is None:
            trigger = pin.IRQ_FALLING
        pin.irq(handler=self._irq, trigger=trigger)

    def _irq(self, _pin):
        # Wrap before 2**30: `(c + 1) & _MASK` would make 2**30 for a moment, a long int
        # (an allocation) inside the IRQ on a 31-bit small-int port.
        c = self._count
        self._count = c + 1 if c != _MASK else 0
        self._last_ms = self._ticks_ms()

    def count(self):
        return self._count

    def read(self):
        """(count, last_edge_ms) from the same moment: re-read if a pulse came between."""
        while True:
            c = self._count
            t = self._last_ms
            if c == self._count:
                return c, t

    def last_edge_ms(self):
        return self._last_ms
