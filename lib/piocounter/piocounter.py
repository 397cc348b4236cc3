"""Pulse input counted by an RP2040 PIO state machine, with a minimum-width filter.

    import rp2
    from machine import Pin
    pin = Pin(22, Pin.IN, Pin.PULL_UP)
    pc = PioCounter(rp2.StateMachine(0), pin, min_pulse_us=2000)

The reader interface of pulsecounter.PulseCounter: count() (wraps at 2**30),
last_edge_ms(), read(), active(), `flag`, `hard`.

The state machine counts in its X register, whatever the CPU does: an RP2040 flash erase or
program runs with the CPU's interrupts disabled (tens of ms per 4 KB sector), which an
interrupt counter pays in lost pulses at 500 Hz; the PIO keeps counting. Pulses are active
low. The program (1 MHz, one loop turn = 2 cycles = 2 us) waits for the input to be high,
then for a falling edge, then needs it low for min_pulse_us: back high sooner is a bounce
and is not counted. A counted pulse decrements X and raises the state machine's interrupt,
whose handler (hard) only stamps the time (back-dated by the minimum width, to the falling
edge as the other drivers stamp it) and sets `flag`: a late or lost interrupt loses a
timestamp, never a count.

Reading: three instructions executed by the CPU (mov isr, null; in x, 30; push noblock)
put the low 30 bits of X into the RX FIFO, read with get(): a small int, no allocation.
X counts down from 0, so the count is -X mod 2**30. The program never uses the ISR or the
RX FIFO itself, so the executed instructions cannot disturb it.
"""

import time

import rp2
from micropython import const

_MASK = const(0x3FFFFFFF)
_FREQ_HZ = const(1_000_000)  # state machine clock: 1 us per cycle


@rp2.asm_pio()
def _count_low_pulses():
    pull()  # the minimum width in loop turns, once from the TX FIFO
    wrap_target()
    label("idle")
    wait(1, pin, 0)  # the input released (high)
    wait(0, pin, 0)  # falling edge: a pulse may begin
    mov(y, osr)
    label("low")
    jmp(pin, "idle")  # high again before the minimum width: a bounce, not counted
    jmp(y_dec, "low")
    jmp(x_dec, "counted")  # a pulse: X counts down (wraps at 2**32)
    label("counted")
    irq(rel(0))  # its time, for the CPU (non-blocking)
    wrap()


class PioCounter:
    def __init__(self, sm, pin, *, min_pulse_us=0, flag=None, clock=time):
        if min_pulse_us < 0 or min_pulse_us > _MASK:
            raise ValueError("min_pulse_us out of range")
        self._sm = sm
        self._pin = pin
        self._ticks_ms = clock.ticks_ms
        self._ticks_add = clock.ticks_add
        self._lag_ms = -(min_pulse_us // 1000)  # the count comes this much after the fall
        self.flag = flag
        self._last_ms = None
        enc = rp2.asm_pio_encode
        self._rd = (enc("mov(isr, null)", 0), enc("in_(x, 30)", 0), enc("push(noblock)", 0))
        sm.init(_count_low_pulses, freq=_FREQ_HZ, in_base=pin, jmp_pin=pin)
        sm.exec(enc("set(x, 0)", 0))
        sm.put(min_pulse_us * (_FREQ_HZ // 1_000_000) // 2)  # loop turns of 2 cycles
        sm.irq(handler=self._edge, trigger=1, hard=True)
        self.hard = True
        sm.active(1)

    def _edge(self, _sm):
        self._last_ms = self._ticks_add(self._ticks_ms(), self._lag_ms)
        f = self.flag
        if f is not None:
            f.set()

    def count(self):
        sm = self._sm
        rd = self._rd
        sm.exec(rd[0])
        sm.exec(rd[1])
        sm.exec(rd[2])
        return -sm.get() & _MASK

    def read(self):
        """(count, last_edge_ms): the time first, so the count covers its pulse."""
        t = self._last_ms
        return self.count(), t

    def last_edge_ms(self):
        return self._last_ms

    def active(self):
        """The input is at its active level (low) now."""
        return self._pin.value() == 0
