"""A test double of MicroPython's `rp2` module for the unix port (tests only): it assembles
PIO programs through the asm_pio decorator protocol to the RP2040's instruction words
(RP2040 datasheet, 3.4) and runs a state machine on them cycle by cycle against an input
waveform, so lib/piocounter's program is tested where no RP2040 is. It is written from the
datasheet, not from MicroPython's rp2.py, and covers what the counter uses: JMP (always,
X--, Y--, PIN), WAIT (PIN), IN, PUSH/PULL, MOV, IRQ (set), SET, wrap; anything else raises.

    wave = Wave([t_us, ...])       # level changes (from high) at these us
    pin = WavePin(wave)            # a machine.Pin for the driver: value() at the SM's time
    sm = StateMachine(0, wave)
    ...                            # the driver inits, execs, puts, sets irq, activates
    sm.run_to(t_us)                # cycles up to t_us (waits skip to the next level change)
    CLOCK, now_us()                # ticks_ms/ticks_add/ticks_diff of the SMs' time; it, us

Registers and FIFOs are visible (x, y, isr, osr, rx, tx) and `irq_enabled` = False stops
the CPU interrupt (the count must not depend on it).
"""

_JMP, _WAIT, _IN, _OUT, _PUSHPULL, _MOV, _IRQ, _SET = range(8)
_COND = {None: 0, "not_x": 1, "x_dec": 2, "not_y": 3, "y_dec": 4, "x_not_y": 5, "pin": 6,
         "not_osre": 7}
_SRC = {"pins": 0, "x": 1, "y": 2, "null": 3, "isr": 6, "osr": 7}
_DEST = {"pins": 0, "x": 1, "y": 2, "pindirs": 4, "isr": 6, "osr": 7}
_M32 = 0xFFFFFFFF


class PIO:
    SHIFT_LEFT = 0
    SHIFT_RIGHT = 1


class PIOASMError(Exception):
    pass


class _Asm:
    """One pass of the decorated function: instruction words and labels."""

    def __init__(self, labels):
        self.words = []
        self.labels = labels
        self.wrap_target = 0
        self.wrap = None

    def _w(self, op, arg, target=None):
        if target is not None:
            if target not in self.labels:
                if self.labels.get("_pass") == 2:
                    raise PIOASMError("unknown label " + target)
                arg |= 0
            else:
                arg |= self.labels[target]
        self.words.append(op << 13 | arg)

    def names(self):
        a = self

        def label(name):
            if a.labels.get("_pass") == 1:
                a.labels[name] = len(a.words)

        def wrap_target():
            a.wrap_target = len(a.words)

        def wrap():
            a.wrap = len(a.words) - 1

        def jmp(cond, target=None):
            if target is None:
                cond, target = None, cond
            a._w(_JMP, _COND[cond] << 5, target)

        def wait(pol, src, idx):
            if src != "pin":
                raise PIOASMError("wait: only pin sources here")
            a._w(_WAIT, pol << 7 | 1 << 5 | idx)

        def in_(src, bits):
            a._w(_IN, _SRC[src] << 5 | (bits & 31))

        def push(mode="block"):
            a._w(_PUSHPULL, (1 << 5 if mode == "block" else 0))

        def pull(mode="block"):
            a._w(_PUSHPULL, 1 << 7 | (1 << 5 if mode == "block" else 0))

        def mov(dest, src):
            a._w(_MOV, _DEST[dest] << 5 | _SRC[src])

        def irq(index):
            a._w(_IRQ, index)

        def set(dest, value):  # noqa: A001 - the PIO instruction's name
            a._w(_SET, _DEST[dest] << 5 | (value & 31))

        def rel(i):
            return 0x10 | i

        g = {"label": label, "wrap_target": wrap_target, "wrap": wrap, "jmp": jmp,
             "wait": wait, "in_": in_, "push": push, "pull": pull, "mov": mov, "irq": irq,
             "set": set, "rel": rel, "block": "block", "noblock": "noblock"}
        for n in list(_COND) + list(_SRC) + list(_DEST):
            if n is not None:
                g[n] = n
        return g


def asm_pio(**kw):
    if kw:
        raise PIOASMError("asm_pio options not emulated: %r" % (kw,))

    def dec(f):
        labels = {}
        for p in (1, 2):
            labels["_pass"] = p
            a = _Asm(labels)
            gl = f.__globals__
            old = dict(gl)
            gl.clear()
            gl.update(a.names())
            try:
                f()
            finally:
                gl.clear()
                gl.update(old)
        return {"words": a.words, "wrap_target": a.wrap_target,
                "wrap": len(a.words) - 1 if a.wrap is None else a.wrap, "name": f.__name__}

    return dec


def asm_pio_encode(instr, sideset_count):
    if sideset_count:
        raise PIOASMError("side-set not emulated")
    a = _Asm({"_pass": 2})
    exec(instr, a.names())  # noqa: S102 - a test double's assembler
    if len(a.words) != 1:
        raise PIOASMError("expecting exactly 1 instruction")
    return a.words[0]


class Wave:
    """An input that starts high and changes level at the given times (us, ascending)."""

    def __init__(self, times_us=()):
        self.t = list(times_us)

    def level(self, t_us):
        return 1 if _count_le(self.t, t_us) % 2 == 0 else 0

    def next_change(self, t_us):
        i = _count_le(self.t, t_us)
        return self.t[i] if i < len(self.t) else None


def _count_le(a, x):
    lo, hi = 0, len(a)
    while lo < hi:
        mid = (lo + hi) // 2
        if a[mid] <= x:
            lo = mid + 1
        else:
            hi = mid
    return lo


_now = [0]  # the state machines' time, ns (one clock for all)


class _Clock:
    def ticks_ms(self):
        return (_now[0] // 1_000_000) & 0x3FFFFFFF

    def ticks_add(self, t, d):
        return (t + d) & 0x3FFFFFFF

    def ticks_diff(self, a, b):
        d = (a - b) & 0x3FFFFFFF
        return d - 0x40000000 if d >= 0x20000000 else d


CLOCK = _Clock()


def now_us():
    """The state machines' time."""
    return _now[0] // 1000


class WavePin:
    """A machine.Pin whose level is the wave's at the state machines' time."""

    IN = 0
    PULL_UP = 1

    def __init__(self, wave):
        self.wave = wave

    def value(self):
        return self.wave.level(_now[0] // 1000)


class StateMachine:
    def __init__(self, id, wave=None):
        self.id = id
        self.wave = wave
        self.prog = None
        self.x = self.y = self.isr = self.osr = 0
        self.isr_count = 0
        self.rx = []
        self.tx = []
        self.pc = 0
        self.on = False
        self.handler = None
        self.hard = None
        self.irq_enabled = True
        self.irqs = 0  # CPU interrupts raised

    # -- the MicroPython API the driver uses ---------------------------------------------

    def init(self, prog, freq=-1, *, in_base=None, jmp_pin=None):
        if in_base is None or jmp_pin is None or in_base is not jmp_pin:
            raise ValueError("the counter's input is its in_base and jmp_pin")
        self.prog = prog
        self.cycle_ns = 1_000_000_000 // freq
        self.pc = 0

    def exec(self, instr):
        if isinstance(instr, str):
            instr = asm_pio_encode(instr, 0)
        self._do(instr, executed=True)

    def put(self, v):
        if len(self.tx) >= 4:
            raise RuntimeError("TX FIFO full: put would block")
        self.tx.append(v & _M32)

    def get(self):
        if not self.rx:
            raise RuntimeError("RX FIFO empty: get would block forever")
        return self.rx.pop(0)

    def irq(self, handler=None, trigger=1, hard=False):
        self.handler = handler
        self.hard = hard

    def active(self, v=None):
        if v is not None:
            self.on = bool(v)
        return self.on

    # -- execution ----------------------------------------------------------------------

    def _pin(self):
        return self.wave.level(_now[0] // 1000)

    def run_to(self, t_us):
        end = t_us * 1000
        if not self.on:
            _now[0] = max(_now[0], end)
            return
        words = self.prog["words"]
        while _now[0] < end:
            w = words[self.pc]
            if w >> 13 == _WAIT:
                pol = w >> 7 & 1
                if self._pin() != pol:  # stalled: on to the next level change
                    nxt = self.wave.next_change(_now[0] // 1000)
                    if nxt is None or nxt * 1000 > end:
                        _now[0] = end
                        return
                    _now[0] = nxt * 1000
                    continue
            if not self._do(w):
                return  # stalled on a blocking PULL with an empty FIFO
            _now[0] += self.cycle_ns

    def _advance(self):
        if self.pc == self.prog["wrap"]:
            self.pc = self.prog["wrap_target"]
        else:
            self.pc += 1

    def _do(self, w, executed=False):
        op = w >> 13
        arg = w & 0xFF
        if w >> 8 & 0x1F:
            raise NotImplementedError("delay/side-set not emulated")
        if op == _JMP:
            cond, addr = arg >> 5, arg & 31
            if cond == 0:
                take = True
            elif cond == 2:
                take = self.x != 0
                self.x = (self.x - 1) & _M32
            elif cond == 4:
                take = self.y != 0
                self.y = (self.y - 1) & _M32
            elif cond == 6:
                take = self._pin() == 1
            else:
                raise NotImplementedError("jmp condition %d" % cond)
            if take:
                self.pc = addr
            elif not executed:
                self._advance()
            return True
        if op == _WAIT:  # the condition holds (run_to stalls otherwise)
            if executed:
                raise NotImplementedError("an executed wait")
        elif op == _IN:
            src, bits = arg >> 5, (arg & 31) or 32
            v = {1: self.x, 2: self.y, 3: 0}[src] & ((1 << bits) - 1)
            self.isr = (self.isr << bits | v) & _M32
            self.isr_count = min(32, self.isr_count + bits)
        elif op == _PUSHPULL:
            if arg & 0x80:  # pull
                if self.tx:
                    self.osr = self.tx.pop(0)
                elif arg & 0x20:
                    if executed:
                        raise RuntimeError("an executed blocking pull stalls")
                    return False
                else:
                    self.osr = self.x
            else:  # push
                if len(self.rx) < 4:
                    self.rx.append(self.isr)
                elif arg & 0x20:
                    raise RuntimeError("a blocking push with the RX FIFO full stalls")
                self.isr = 0
                self.isr_count = 0
        elif op == _MOV:
            dest, src = arg >> 5, arg & 7
            v = {1: self.x, 2: self.y, 3: 0, 6: self.isr, 7: self.osr}[src]
            if dest == 1:
                self.x = v
            elif dest == 2:
                self.y = v
            elif dest == 6:
                self.isr = v
                self.isr_count = 0
            else:
                raise NotImplementedError("mov to %d" % dest)
        elif op == _IRQ:
            if arg & 0x60:
                raise NotImplementedError("irq wait/clear")
            if arg & 0x10 and (arg & 3) == 0 and self.irq_enabled and self.handler:
                self.irqs += 1
                self.handler(self)  # flag (0 + sm) raises this state machine's interrupt
        elif op == _SET:
            dest, v = arg >> 5, arg & 31
            if dest == 1:
                self.x = v
            elif dest == 2:
                self.y = v
            else:
                raise NotImplementedError("set to %d" % dest)
        else:
            raise NotImplementedError("opcode %d" % op)
        if not executed:
            self._advance()
        return True
