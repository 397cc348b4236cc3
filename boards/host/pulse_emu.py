"""The flow meter's pulse input on the host board: an emulated pin, its interrupts, a
hardware counter on it, and interrupts masked while the flash is programmed or erased.

PulsePin is a machine.Pin for the real drivers (lib/pulsecounter, lib/pcntcounter):
value(), irq(handler, trigger, hard). Its level changes at scheduled virtual times
(`add_transition`, `add_pulse`: the harness's pulse line, or a test), and the board's
clock runs them as time passes (`run_to`): at each transition the clock stands at that
instant, the hardware counter sees it, and a matching edge calls the interrupt handler
then, as a chip does. The host advances time only while the node idles, so a soft and a
hard interrupt both run at their edge; `hard` is accepted and recorded.

Masked interrupts (`mask(vt, ms)`: boards/host/board.py calls it for every flash program
and erase, as an RP2040 runs them with interrupts disabled): edges in [vt, vt + ms) set one
pending bit, as a GPIO interrupt status does, and the handler runs once when the mask
ends. An interrupt counter loses the pulses that collapse; the hardware counter counts
every edge (`collapsed` counts the edges that found the bit already set).

Counter is a machine.Counter on this pin (the ESP32 PCNT's interface, value([v])): it
counts pulses whatever the interrupts do, and ignores lows shorter than filter_ns (a
minimum-width stage, as the RP2040 PIO program has; the ESP32's own filter stops at
12.8 us). With a filter a pulse counts at its end (or at a read while it is still low
long enough); without, at its falling edge. Time here is whole virtual ms.
"""

from array import array

from micropython import const

_MASK = const(0x3FFFFFFF)


class PulsePin:
    IN = 0
    PULL_UP = 1
    IRQ_RISING = 4  # values as the rp2 port's
    IRQ_FALLING = 8

    def __init__(self, clock):
        self._clock = clock
        self.level = 1  # idle: pulled up
        self._handler = None
        self._trigger = 0
        self.hard = None  # what the driver asked for (None: no interrupt set)
        self._t = array("i")  # scheduled transition times, ms after _base (kept, reused)
        self._n = 0
        self._next = 0
        self._first = 0  # _next when `edges` was last brought up to date
        self._base = 0
        self.mask_until = 0  # vt: interrupts masked before it
        self._pending = False
        self.edges = 0  # transitions run
        self.irqs = 0  # handler calls
        self.collapsed = 0  # edges lost to an interrupt already pending while masked
        # the hardware counter (Counter), kept here: no call per edge
        self.hw = False
        self.hw_count = 0
        self.hw_min_ms = 0
        self._hw_fall = None  # vt of the low under way, None: counted or none

    # -- machine.Pin ------------------------------------------------------------------

    def value(self, v=None):
        if v is not None:
            raise OSError(1)  # an input
        return self.level

    def irq(self, handler=None, trigger=IRQ_FALLING | IRQ_RISING, hard=False):
        self._handler = handler
        self._trigger = trigger if handler is not None else 0
        self.hard = bool(hard) if handler is not None else None
        self._pending = False

    # -- the schedule -----------------------------------------------------------------

    def schedule(self, level):
        """Forget the transitions still to come; the input's level is `level` now, set
        without an edge (a boot: the node starts with the input as it is)."""
        self._n = self._next = self._first = 0
        self.level = level

    def add_transition(self, vt):
        """One more level change at vt (in time order, not before now)."""
        t = self._t
        i = self._next
        n = self._n
        if i == n:  # everything ran: start over from now
            self._base = self._clock.vt
            self._next = self._first = n = 0
        elif n == len(t) and i:  # full: move what is still to come to the front
            d = self._clock.vt - self._base
            for j in range(n - i):
                t[j] = t[i + j] - d
            self._base += d
            self._next = self._first = 0
            n -= i
        if n < len(t):
            t[n] = vt - self._base
        else:
            t.append(vt - self._base)
        self._n = n + 1

    def add_pulse(self, vt, low_ms):
        """A pulse: low at vt, high again low_ms later."""
        self.add_transition(vt)
        self.add_transition(vt + low_ms)

    def mask(self, vt, ms):
        """Interrupts masked from vt for ms (a flash operation)."""
        if ms > 0 and vt + ms > self.mask_until:
            self.mask_until = vt + ms

    # -- time -------------------------------------------------------------------------

    def run_to(self, vt):
        """Run every transition and pending interrupt due up to vt, each at its instant
        (the clock stands there meanwhile); the caller then sets the clock to vt."""
        t = self._t
        base = self._base
        i = self._next
        n = self._n
        if (i >= n or t[i] + base > vt) and not self._pending:
            return  # nothing due (most calls: the node's clock moves in small steps)
        clock = self._clock
        handler = self._handler
        trig = self._trigger
        lv = self.level
        hw = self.hw
        hw_min = self.hw_min_ms
        while True:
            e = t[i] + base if i < n else vt + 1
            if self._pending and self.mask_until <= vt and self.mask_until <= e:
                self._pending = False  # the mask ends: the one pending interrupt runs
                clock.vt = self.mask_until
                self.irqs += 1
                handler(self)
                continue
            if e > vt:
                break
            i += 1
            clock.vt = e
            lv = 1 - lv
            self.level = lv
            if hw:  # the hardware counter sees every edge
                if lv == 0:
                    self._hw_fall = e
                    if not hw_min:
                        self._hw_count()
                else:
                    f = self._hw_fall
                    if f is not None and e - f >= hw_min:
                        self._hw_count()
                    self._hw_fall = None
            if trig & (8 if lv == 0 else 4):  # IRQ_FALLING, IRQ_RISING
                if e < self.mask_until:
                    if self._pending:
                        self.collapsed += 1
                    self._pending = True
                else:
                    self.irqs += 1
                    handler(self)
        self._next = i
        self.edges += i - self._first
        self._first = i

    def _hw_count(self):
        c = self.hw_count
        self.hw_count = c + 1 if c != _MASK else 0
        self._hw_fall = None

    def hw_settle(self):
        """A read of the counter: a low under way that has lasted the minimum counts."""
        f = self._hw_fall
        if f is not None and self.level == 0 and self._clock.vt - f >= self.hw_min_ms:
            self._hw_count()


class Counter:
    """machine.Counter on a PulsePin (host board): value([v]) as the port's."""

    UP = 0
    RISING = 1
    FALLING = 2

    def __init__(self, unit_id, src, *, direction=UP, edge=FALLING, filter_ns=0):
        if edge != self.FALLING or direction != self.UP:
            raise ValueError("the host counter counts falling edges up")
        self._pin = src
        src.hw = True
        src.hw_min_ms = (filter_ns + 999_999) // 1_000_000  # whole ms here
        self._offset = src.hw_count

    def value(self, value=None):
        p = self._pin
        p.hw_settle()
        n = (p.hw_count - self._offset) & _MASK
        if value is not None:
            self._offset = (p.hw_count - value) & _MASK
        return n
