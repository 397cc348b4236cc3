"""Pulse input counted in hardware by a machine.Counter (on the ESP32: a PCNT unit).

    from machine import Counter, Pin
    pin = Pin(34, Pin.IN)
    pc = PcntCounter(Counter(0, pin, direction=Counter.UP, edge=Counter.FALLING,
                             filter_ns=12_000), pin)

The reader interface of pulsecounter.PulseCounter: count() (wraps at 2**30),
last_edge_ms(), read(), active(), `flag`, `hard`.

The counter counts every falling edge in hardware, whatever the CPU does: a flash erase that
holds the CPU's interrupts off for 45 ms loses no pulse, nor does a scheduler busy with a
TLS handshake. The ESP32's glitch filter (`filter_ns`) ignores pulses shorter than at most
1023 APB cycles (12.8 us): a reed contact's bounce (ms) needs an RC filter on the board, or
the interrupt counter with its software minimum width. machine.Counter (MicroPython >= 1.26,
the port's frozen machine.py over esp32.PCNT) extends the unit's 16-bit register with an
overflow interrupt every 32000 counts; each read takes the count since the previous read
with value(0), which resets in software only (no pulse lost) and keeps every int small.

Edge times come from an interrupt on the same pin (falling edges; soft on the ESP32, where
Pin.irq has no `hard`): they only time the pulses (the rate at low flow), and set `flag`.
An interrupt that comes late or not at all (masked, the scheduler's queue full) delays or
loses a timestamp; the count stays exact.
"""

import time

from micropython import const

_MASK = const(0x3FFFFFFF)


class PcntCounter:
    def __init__(self, counter, pin, *, flag=None, hard=True, clock=time):
        self._hw = counter
        self._pin = pin
        self._ticks_ms = clock.ticks_ms
        self.flag = flag
        self._count = 0
        self._last_ms = None
        counter.value(0)
        self.hard = False
        if hard:
            try:
                pin.irq(handler=self._edge, trigger=pin.IRQ_FALLING, hard=True)
                self.hard = True
            except TypeError:  # esp32: no hard interrupts on pins
                pass
        if not self.hard:
            pin.irq(handler=self._edge, trigger=pin.IRQ_FALLING)

    def _edge(self, _pin):
        self._last_ms = self._ticks_ms()
        f = self.flag
        if f is not None:
            f.set()

    def count(self):
        d = self._hw.value(0)  # pulses since the last read (reset in software: none lost)
        c = self._count
        if d:
            room = _MASK - c  # wrap at 2**30 without a long int on the way
            c = c + d if d <= room else d - room - 1
            self._count = c
        return c

    def read(self):
        """(count, last_edge_ms): the time first, so the count covers its pulse (a late
        timestamp never names a pulse the count does not hold yet)."""
        t = self._last_ms
        return self.count(), t

    def last_edge_ms(self):
        return self._last_ms

    def active(self):
        """The input is at its active level (low) now."""
        return self._pin.value() == 0
