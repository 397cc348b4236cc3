"""Pulse input counter on a GPIO interrupt (flow meters with a reed or open-collector output).

    pc = PulseCounter(Pin(34, Pin.IN), min_pulse_us=2000, flag=asyncio.ThreadSafeFlag())
    pc.count()          # pulses since start, wraps at 2**30
    pc.last_edge_ms()   # ticks_ms() at the start of the latest pulse, None before the first
    pc.read()           # both, from the same moment
    pc.active()         # the input is at its active (low) level now
    pc.hard             # True when the port gave a hard interrupt

Pulses are active low: the meter's contact or open collector pulls the input to ground
against a pull-up. The interrupt handler only counts, timestamps and sets `flag` (an
asyncio.ThreadSafeFlag, the one safe way to wake a task from an interrupt): no allocation,
no task creation. It runs as a hard interrupt where the port has one (rp2: `hard=True`),
else as a soft one (esp32's Pin.irq has no `hard`: the handler runs from the scheduler,
so its timestamps are scheduler times and edges are lost when its queue of 8 is full).

min_pulse_us > 0 (debounce, reed contacts): both edges interrupt; a pulse counts at its
end (rising edge) when the input stayed low for at least min_pulse_us since the last
falling edge, and is stamped with that falling edge. A bounce (a low shorter than that)
is not counted. The level is read in the handler, so a late soft interrupt sees where the
input settled. min_pulse_us = 0: falling edges only, each one counts.

Interrupts masked by the CPU (an RP2040 flash erase stalls them for tens of ms) collapse
into one pending interrupt: pulses in that time are lost. Where a hardware counter exists
(piocounter on the RP2040, pcntcounter on the ESP32) the board uses it instead.
Readers take deltas with `count_diff` (wrap-safe) and the edge time with ticks_diff.
"""

import time

from micropython import const

_MASK = const(0x3FFFFFFF)


def count_diff(a, b):
    """a - b for counts that wrap at 2**30 (a is the later count)."""
    return (a - b) & _MASK


class PulseCounter:
    def __init__(self, pin, *, min_pulse_us=0, flag=None, hard=True, clock=time):
        if min_pulse_us < 0 or min_pulse_us > _MASK >> 1:
            raise ValueError("min_pulse_us out of range")
        self._pin = pin
        self._ticks_ms = clock.ticks_ms
        self._ticks_us = clock.ticks_us
        self._diff = clock.ticks_diff
        self._min_us = min_pulse_us
        self.flag = flag
        self._count = 0
        self._last_ms = None
        self._start_us = None  # falling edge of the pulse under way (debounce)
        self._start_ms = 0
        if min_pulse_us:
            handler = self._both
            trigger = pin.IRQ_FALLING | pin.IRQ_RISING
        else:
            handler = self._falling
            trigger = pin.IRQ_FALLING
        self.hard = False
        if hard:
            try:
                pin.irq(handler=handler, trigger=trigger, hard=True)
                self.hard = True
            except TypeError:  # esp32: no hard interrupts on pins
                pass
        if not self.hard:
            pin.irq(handler=handler, trigger=trigger)

    def _falling(self, _pin):
        # Wrap before 2**30: `(c + 1) & _MASK` would make 2**30 for a moment, a long int
        # (an allocation) inside the interrupt on a 31-bit small-int port.
        c = self._count
        self._count = c + 1 if c != _MASK else 0
        self._last_ms = self._ticks_ms()
        f = self.flag
        if f is not None:
            f.set()

    def _both(self, pin):
        if pin.value() == 0:  # low: a pulse (or a bounce) begins
            self._start_us = self._ticks_us()
            self._start_ms = self._ticks_ms()
            return
        s = self._start_us
        if s is None:
            return  # high without a low seen (at start, or a collapsed interrupt)
        self._start_us = None
        if self._diff(self._ticks_us(), s) < self._min_us:
            return  # too short: a bounce
        c = self._count
        self._count = c + 1 if c != _MASK else 0
        self._last_ms = self._start_ms
        f = self.flag
        if f is not None:
            f.set()

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

    def active(self):
        """The input is at its active level (low) now."""
        return self._pin.value() == 0
