"""Lockstep link between the host board and the plant harness (host_tools/harness.py).

The harness owns virtual time, the plant, the relays' physical state, the watchdog and
the power. The node runs until every task is idle, tells the harness how long it may
sleep, and blocks until the harness moves time forward. One text line per message on a
loopback TCP socket (stdin/stdout stay the node's console):

node -> harness (vt: the node's time)   harness -> node
  H <pid>          hello after reset       A <vt> <horizon> [<utc_s>]  time is now vt
  I <vt_ms>|-      idle until vt / no task r <rtd> <ohm>         RTD resistance
  P <relay> 0|1 vt relay pin level         f <rtd> <fault>       RTD fault injection
  W <timeout> vt   watchdog started        d <input> 0|1         digital input level
  F vt             watchdog fed            p <n> <edge>|- <e>..  pulse count, last edge,
  O <kind> vt json application record                            edges due before horizon
  X vt <json>      power cut reached       k <ops> <torn_bytes>  cut power at a flash op
                                           h                     hang the next relay write
                                           s                     orderly stop (Ctrl-C)
                                           B <vt0> <tick0> 0|1   boot: time base, safe-boot pin
                                           .                     end of this step

Nothing the harness serves changes before `horizon` (the next plant step, scenario event
or watchdog expiry), so the node moves its own time to any deadline before it without
asking: one round trip per plant step instead of one per poll.

Without HEATGW_LINK the board runs standalone: time jumps to the next deadline at once.
"""

import json
import os
import socket

_MASK = (1 << 30) - 1
_RBUF = 2048  # longest harness line: a pulse line with a few hundred edges
_HALF = 1 << 29


class LinkClock:
    """Virtual ms time. `vt` is the harness's unwrapped time; ticks wrap at 2**30 like the
    targets' and start at `tick0` at boot (the harness puts the wrap minutes after boot)."""

    def __init__(self):
        self.vt = 0
        self.vt0 = 0
        self.tick0 = 0
        self.horizon = 0  # the node may run alone up to (not including) this vt
        self.utc0 = None  # UTC seconds at vt0, when the harness knows it
        self.link = None

    def ticks_ms(self):
        return (self.tick0 + self.vt - self.vt0) & _MASK

    def ticks_add(self, ticks, delta):
        return (ticks + delta) & _MASK

    def ticks_diff(self, a, b):
        d = (a - b) & _MASK
        return d - (1 << 30) if d >= _HALF else d

    def utc_s(self):
        if self.utc0 is None:
            return None
        return self.utc0 + (self.vt - self.vt0) // 1000

    def wait_until(self, deadline_vt):
        """Block until virtual time reaches deadline_vt (None: until the harness says)."""
        if self.link is None:
            if deadline_vt is None:
                raise RuntimeError("standalone host board: every task waits forever")
            if deadline_vt > self.vt:
                self.vt = deadline_vt
            return
        if deadline_vt is not None and deadline_vt < self.horizon:
            if deadline_vt > self.vt:
                self.vt = deadline_vt
            return
        self.link.idle(deadline_vt)

    def sleep_ms(self, ms):
        target = self.vt + max(0, ms)
        while self.vt < target:
            self.wait_until(target)

    def asyncio_wait(self, dt_ms):
        self.wait_until(None if dt_ms < 0 else self.vt + dt_ms)


class Link:
    def __init__(self, addr, board):
        host, port = addr.rsplit(":", 1)
        s = socket.socket()
        s.connect(socket.getaddrinfo(host, int(port))[0][-1])
        s.setsockopt(6, 1, 1)  # IPPROTO_TCP, TCP_NODELAY: lockstep wants no Nagle delay
        self._s = s
        self._board = board
        self.hang_armed = False
        self._stop = False
        # socket.readline() on the unix port reads one byte per system call; a step is
        # one send from the harness, so read it in chunks into one buffer, allocated
        # once (a fresh 4 KB per read fragments a small heap), and split lines here.
        self._rbuf = bytearray(_RBUF)
        self._rmv = memoryview(self._rbuf)
        self._rlen = 0

    def _readline(self):
        buf = self._rbuf
        while True:
            i = buf.find(b"\n", 0, self._rlen)
            if i >= 0:
                line = bytes(self._rmv[:i + 1])
                rest = self._rlen - i - 1
                buf[:rest] = self._rmv[i + 1:self._rlen]
                self._rlen = rest
                return line
            if self._rlen == _RBUF:
                raise RuntimeError("harness line longer than %d bytes" % _RBUF)
            # recv returns what has arrived (readinto would wait to fill the buffer)
            chunk = self._s.recv(min(512, _RBUF - self._rlen))
            n = len(chunk)
            if not n:
                line = bytes(self._rmv[:self._rlen])
                self._rlen = 0
                return line
            buf[self._rlen:self._rlen + n] = chunk
            self._rlen += n

    def send(self, line):
        self._s.write(line.encode() + b"\n")

    def hello(self):
        self.send("H %d" % os.getpid() if hasattr(os, "getpid") else "H 0")
        self._serve()

    def idle(self, deadline_vt):
        self.send("I -" if deadline_vt is None else "I %d" % deadline_vt)
        self._serve()

    def _serve(self):
        board = self._board
        clock = board.clock
        readline = self._readline
        while True:
            line = readline()
            if not line:
                raise SystemExit("harness closed the link")
            op = line[0]
            if op == 46:  # "."
                if self._stop:
                    raise KeyboardInterrupt  # orderly stop, as Ctrl-C on the console
                return
            parts = line.decode().split()
            if op == 65:  # "A"
                vt = int(parts[1])
                if vt < clock.vt:
                    raise RuntimeError("harness moved time backwards")
                clock.vt = vt
                clock.horizon = int(parts[2])
                if len(parts) > 3:
                    clock.utc0 = int(parts[3]) - (vt - clock.vt0) // 1000
            elif op == 114:  # "r"
                board.rtd_chip(parts[1]).set_resistance(float(parts[2]))
            elif op == 102:  # "f"
                board.rtd_chip(parts[1]).inject(parts[2])
            elif op == 100:  # "d"
                board.input_pin(parts[1]).level = int(parts[2])
            elif op == 112:  # "p"
                edge = None if parts[2] == "-" else int(parts[2])
                board.pulse_input().set(int(parts[1]), edge, [int(e) for e in parts[3:]])
            elif op == 107:  # "k"
                board.flash_device().arm_cut(int(parts[1]), int(parts[2]), on_cut=self._cut)
            elif op == 115:  # "s"
                self._stop = True
            elif op == 104:  # "h"
                self.hang_armed = True
            elif op == 66:  # "B": boot parameters, first step only
                clock.vt0 = int(parts[1])
                clock.tick0 = int(parts[2])
                board.SAFE_BOOT_HELD = parts[3] == "1"
            else:
                raise RuntimeError("harness sent %r" % line)

    def _cut(self, info):
        # Power is gone: report where, then wait to be killed; nothing else may run.
        self.send("X %d %s" % (self._board.clock.vt, json.dumps(info)))
        while self._readline():
            pass
        raise SystemExit("power cut")
