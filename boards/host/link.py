"""Lockstep link between the host board and the plant harness (host_tools/harness.py).

The protocol (opcodes and what each line carries) is boards/host/linkproto.py, the one
table the harness uses too.

Without HEATGW_LINK the board runs standalone: time jumps to the next deadline at once.
With it, the board's clock connects and is the link too. Lines are parsed token by token
from a small receive buffer: a pulse line never needs its own copy, a list of strings or a
buffer as long as itself.
"""

import json
import os
import select
import socket

import linkproto as lp
from micropython import const

_MASK = const(0x3FFFFFFF)  # ticks wrap at 2**30
_HALF = const(0x20000000)
_RBUF = const(256)  # receive buffer: lines are read token by token, so one token must fit


class LinkClock:
    """Virtual ms time. `vt` is the harness's unwrapped time; ticks wrap at 2**30 like the
    targets' and start at `tick0` at boot (the harness puts the wrap minutes after boot).

    The same object is the link once `connect()`ed (`link` is then the clock itself):
    one object instead of two on a small heap."""

    def __init__(self):
        self.vt = 0
        self.vt0 = 0
        self.tick0 = 0
        self.horizon = 0  # the node may run alone up to (not including) this vt
        self.utc0 = None  # UTC seconds at vt0, when the harness knows it
        self.link = None
        self.pin = None  # the pulse input (pulse_emu.PulsePin): runs as time passes
        self._timer_vt = None  # the board's one periodic timer (every()): next fire
        self._timer_ms = 0
        self._timer_fn = None

    hang_armed = False  # the harness asked for a hang at the next relay write

    def ticks_ms(self):
        return (self.tick0 + self.vt - self.vt0) & _MASK

    def ticks_us(self):
        # (ticks_ms * 1000) mod 2**30 in small ints only: ms split at bit 15
        ms = self.ticks_ms()
        a = (((ms >> 15) * 1000) & 0x7FFF) << 15
        b = (ms & 0x7FFF) * 1000
        return a + b - _MASK - 1 if a > _MASK - b else a + b

    def _to(self, vt):
        # time moves to vt: the pulse input's transitions and interrupts run on the way
        if self.pin is not None:
            self.pin.run_to(vt)
        self.vt = vt

    def ticks_add(self, ticks, delta):
        return (ticks + delta) & _MASK

    def ticks_diff(self, a, b):
        d = (a - b) & _MASK
        return d - _MASK - 1 if d >= _HALF else d

    def utc_s(self):
        if self.utc0 is None:
            return None
        return self.utc0 + (self.vt - self.vt0) // 1000

    def every(self, ms, fn):
        """Call fn() every ms of virtual time from now on (fn None: stop): the host
        board's machine.Timer, as far as the board needs one (board.hold_watchdog)."""
        self._timer_fn = fn
        self._timer_ms = ms
        self._timer_vt = None if fn is None else self.vt + ms

    def timer_due(self):
        """Virtual ms until the timer fires next (None: no timer)."""
        t = self._timer_vt
        return None if t is None else t - self.vt

    def wait_until(self, deadline_vt):
        """Block until virtual time reaches deadline_vt (None: until the harness says);
        a timer due before then fires on the way (and the wait may end there)."""
        t = self._timer_vt
        if t is not None and (deadline_vt is None or t <= deadline_vt):
            self._wait_until(t)
            if self.vt >= t and self._timer_vt == t:
                self._timer_vt = t + self._timer_ms
                self._timer_fn()
            return
        self._wait_until(deadline_vt)

    def _wait_until(self, deadline_vt):
        if self.link is None:
            if deadline_vt is None:
                raise RuntimeError("standalone: every task waits")
        elif deadline_vt is None or deadline_vt >= self.horizon:
            self.send("%c %s" % (lp.IDLE, lp.NONE) if deadline_vt is None else
                      "%c %d" % (lp.IDLE, deadline_vt))
            self._serve()
            return
        if deadline_vt > self.vt:
            self._to(deadline_vt)

    def sleep_ms(self, ms):
        target = self.vt + max(0, ms)
        while self.vt < target:
            self.wait_until(target)

    def asyncio_wait(self, dt_ms):
        self.wait_until(None if dt_ms < 0 else self.vt + dt_ms)

    # -- the link to the harness ------------------------------------------------------

    def connect(self, addr, board):
        """Connect to the harness at "host:port", say hello and take the boot step."""
        host, port = addr.rsplit(":", 1)
        s = socket.socket()
        s.connect(socket.getaddrinfo(host, int(port))[0][-1])
        s.setsockopt(6, 1, 1)  # IPPROTO_TCP, TCP_NODELAY: lockstep wants no Nagle delay
        self._s = s
        self._board = board
        self._stop = False
        # socket.readline() on the unix port reads one byte per system call, and a whole
        # line (a pulse line carries hundreds of edges) needs a big buffer: receive in
        # chunks into one small buffer, allocated once, and take the lines token by token.
        self._rbuf = bytearray(_RBUF)
        self._rmv = memoryview(self._rbuf)
        self._rpos = 0
        self._rlen = 0
        self._eol = True  # between lines
        self._poll = select.poll()
        self._poll.register(s, select.POLLIN)
        self.link = self
        self.send("%c %d" % (lp.HELLO, os.getpid() if hasattr(os, "getpid") else 0))
        self._serve()

    def feed(self):
        """The watchdog (board.watchdog()) is fed: tell the harness, which owns it."""
        if self.link is not None:
            self.send("%c %d" % (lp.WDT_FEED, self.vt))

    def send(self, line):
        self._s.write(line + "\n")

    def send_json(self, head, obj):
        """A line: `head`, then obj as JSON written straight to the socket (a status
        record is never copied into one string on the heap)."""
        s = self._s
        s.write(head)
        json.dump(obj, s)
        s.write("\n")

    def _tok(self):
        """The next token of the current line (a memoryview), or None at its end."""
        if self._eol:
            return None
        buf = self._rbuf
        while True:
            i = self._rpos
            n = self._rlen
            while i < n and buf[i] == 32:
                i += 1
            j = buf.find(b" ", i, n)
            k = buf.find(b"\n", i, n)
            if k >= 0 and (j < 0 or k < j):
                j = k
            if j >= 0:  # a whole token, or the end of the line
                self._rpos = j
                if j > i:
                    return self._rmv[i:j]
                self._rpos = j + 1
                self._eol = True
                return None
            # Keep the partial token, wait for data and take what has arrived straight
            # into the buffer: recv() would allocate a chunk, and a fragmented 64 KB heap
            # may have no 257 contiguous bytes. (A blocking readinto() would wait for a
            # full buffer, hence non-blocking for the read.)
            buf[:n - i] = self._rmv[i:n]
            n -= i
            self._rpos = 0
            self._rlen = n
            if n == _RBUF:
                raise RuntimeError("harness token over %d bytes" % _RBUF)
            for _ in self._poll.ipoll(-1):
                pass
            s = self._s
            s.setblocking(False)
            k = s.readinto(self._rmv[n:])
            s.setblocking(True)
            if k == 0:
                raise SystemExit("harness closed the link")
            if k:
                self._rlen = n + k

    def _serve(self):
        board = self._board
        tok = self._tok
        while not self._eol:
            tok()  # the rest of a line an exception interrupted
        while True:
            self._eol = False
            t = tok()
            if t is None:
                continue  # an empty line
            op = t[0]
            if op == lp.END:
                while tok() is not None:
                    pass
                if self._stop:
                    raise KeyboardInterrupt  # orderly stop, as Ctrl-C on the console
                return
            if op == lp.TIME:
                vt = int(tok())
                if vt < self.vt:
                    raise RuntimeError("harness moved time backwards")
                self._to(vt)
                self.horizon = int(tok())
                t = tok()
                if t is not None:
                    self.utc0 = int(t) - (vt - self.vt0) // 1000
            elif op == lp.RTD_OHM:
                board.rtd_chip(str(tok(), "ascii")).set_resistance(float(tok()))
            elif op == lp.RTD_FAULT:
                board.rtd_chip(str(tok(), "ascii")).inject(str(tok(), "ascii"))
            elif op == lp.CHIP:  # the chip's analogue side: fitted Rref, noise
                chip = board.rtd_chip(str(tok(), "ascii"))
                chip.r_ref_ohm = float(tok())
                chip.noise_lsb = float(tok())
            elif op == lp.TECHNICIAN:
                args = []
                t = tok()
                while t is not None:
                    args.append(str(t, "ascii"))
                    t = tok()
                board.technician_line(args)
            elif op == lp.INPUT:
                pin = board.input_pin(str(tok(), "ascii"))  # (assignment reads right first)
                pin.level = int(tok())
            elif op == lp.PULSES:  # the input's level or "-", the low time, the pulses
                pin = board.flow_pin()
                t = tok()
                if t[0] != 45:  # "-": as the node has it
                    pin.schedule(int(t))
                low = int(tok())
                t = tok()
                while t is not None:
                    pin.add_pulse(int(t), low)
                    t = tok()
            elif op == lp.CUT_AT:
                board.flash_device().arm_cut(int(tok()), int(tok()), on_cut=self._cut)
            elif op == lp.STOP:
                self._stop = True
            elif op == lp.HANG:
                self.hang_armed = True
            elif op == lp.BUS_ERROR:
                board.BUS.error_armed = True
            elif op == lp.WDT_ERROR:
                board.WDT.error_armed = True
            elif op == lp.FLASH_ERROR:
                board.flash_device().fail_ops(int(tok()))
            elif op == lp.BOOT:  # boot parameters, first step only
                self.vt0 = int(tok())
                self.tick0 = int(tok())
                board.SAFE_BOOT_HELD = bytes(tok()) == b"1"
            else:
                raise RuntimeError("harness sent %r" % bytes(t))
            while tok() is not None:
                pass  # the rest of the line

    def _cut(self, info):
        # Power is gone: report where, then wait to be killed; nothing else may run.
        self.send_json("%c %d " % (lp.CUT_REACHED, self.vt), info)
        try:
            while True:
                self._eol = False
                self._tok()
        except SystemExit:
            pass
        raise SystemExit("power cut")
