"""The host board's serial port from the node's side: stdin/stdout on a pty.

host_tools/serialport.py makes the pty (raw input that never waits, VMIN = 0; output
cooked like a board's print) and passes it as the node's stdio. Imported only when the
node has a serial port (board.SERIAL, $HEATGW_SERIAL); board.serial_port() makes the one
SerialIO.

While the application runs, what is typed at the port is read at every idle point of the
event loop (`asyncio_wait`, never waiting there under the harness) into a ring of RING
bytes, as a board's UART/USB driver fills its stdin buffer from an interrupt. A Ctrl-C
(0x03) raises KeyboardInterrupt there instead, as `micropython.kbd_intr(3)` makes a board
do; the bytes around it stay in the ring, and bytes beyond a full ring are dropped
(`dropped`), as on a board. `readinto(buf)` serves the ring: board.console_in().

Standalone (no harness) the node runs in real time, like a board on the bench: an idle
wait is a real wait on the port, and a byte typed ends it at once.

The REPL (repl.py, loaded only after the application stopped) reads with `read_byte()`
with `intr` off (0x03 is a byte then) and only as much as the ring takes (the pty holds
the rest: nothing lost). The pty is a real peer (README "Real sockets in virtual time"):
while the REPL waits, virtual time follows real time, the board's timers (the watchdog
hold) fire on the way, and under the harness the node asks for that time as it crosses
the harness's horizon.
"""

import select
import sys
import time

from micropython import const

RING = const(256)  # like a board's stdin buffer (MICROPY_REPL_STDIN_BUFFER_MAX)
_CHUNK = const(64)
_CTRL_C = const(3)
_WAIT_MAX_MS = const(1000)  # one real wait at most, then time moves
_ISIG = const(1)  # termios c_lflag ISIG (Linux)


class SerialIO:
    def __init__(self, clock):
        self.clock = clock
        self._in = sys.stdin.buffer
        self.out = sys.stdout.buffer
        self._poll = select.poll()
        self._poll.register(self._in, select.POLLIN)
        self._ring = bytearray(RING)
        self._rd = 0  # index of the oldest byte held
        self._n = 0  # bytes held
        self._chunk = bytearray(_CHUNK)
        self.intr = True  # Ctrl-C raises KeyboardInterrupt (off at the REPL)
        # The console sets `live` while a command runs: someone at the port waits for its
        # answer (a confirmation, `watch`), so under the harness virtual time follows
        # real time then, as at the REPL; between commands it jumps as before.
        self.live = False
        self.dropped = 0  # input lost to a full ring while the application ran
        self._t0 = None  # standalone: real ms at which virtual time was _vt0
        self._vt0 = 0

    # -- input ---------------------------------------------------------------------

    def poll(self, ms=0):
        """Take what the port has into the ring, waiting up to ms real for the first
        byte; True when something came. With `intr`, a Ctrl-C raises KeyboardInterrupt
        (after the bytes before and after it went into the ring)."""
        got = False
        ring = self._ring
        while True:
            for _ in self._poll.ipoll(ms):
                break
            else:
                return got
            ms = 0
            k = _CHUNK
            if not self.intr and RING - self._n < k:
                k = RING - self._n  # at the REPL the pty keeps what the ring cannot take
                if k == 0:
                    return got
            n = self._in.readinto(self._chunk, k)
            if not n:
                return got
            got = True
            stop = False
            for i in range(n):
                c = self._chunk[i]
                if c == _CTRL_C and self.intr:
                    stop = True
                elif self._n < RING:
                    ring[(self._rd + self._n) % RING] = c
                    self._n += 1
                else:
                    self.dropped += 1
            if stop:
                raise KeyboardInterrupt
            if n < k:
                return got

    def any(self):
        """Bytes waiting (never blocks)."""
        self.poll(0)
        return self._n

    def readinto(self, buf):
        """Up to len(buf) bytes typed at the port into buf; the count, 0 when none. Never
        blocks. A Ctrl-C raises KeyboardInterrupt (the application stops)."""
        self.poll(0)
        n = self._n
        if n > len(buf):
            n = len(buf)
        ring = self._ring
        rd = self._rd
        for i in range(n):
            buf[i] = ring[rd]
            rd = (rd + 1) % RING
        self._rd = rd
        self._n -= n
        return n

    def read_byte(self):
        """The next byte typed (the REPL's input): waits, time following real time."""
        while not self._n:
            self.wait_input(_WAIT_MAX_MS)
        c = self._ring[self._rd]
        self._rd = (self._rd + 1) % RING
        self._n -= 1
        return c

    def wait_input(self, max_ms):
        """Wait up to max_ms real for input, never past the board's next timer; then move
        virtual time by the real time that passed (asking the harness for it when it
        crosses the harness's horizon)."""
        clock = self.clock
        ms = max_ms
        due = clock.timer_due()
        if due is not None and due < ms:
            ms = due if due > 0 else 0
        vt0 = clock.vt
        t0 = time.ticks_ms()
        got = self.poll(ms)
        el = time.ticks_diff(time.ticks_ms(), t0)
        if not got and el < ms:
            el = ms  # the wait ran out: exactly to the timer
        target = vt0 + el
        while clock.vt < target:
            clock.wait_until(target)

    # -- the event loop's idle wait (board.install_asyncio) --------------------------

    def asyncio_wait(self, dt_ms):
        """No task is runnable for dt_ms of virtual time (-1: none scheduled). Under the
        harness: take the port's input (Ctrl-C stops the application here), then the
        lockstep decides. Standalone: a real wait on the port, virtual time = real time."""
        clock = self.clock
        if clock.link is not None:
            if self.live:  # a console command runs: real time, woken by a key
                self.wait_input(_WAIT_MAX_MS if dt_ms < 0 or dt_ms > _WAIT_MAX_MS else dt_ms)
                return
            self.poll(0)
            clock.asyncio_wait(dt_ms)
            return
        if self._t0 is None:
            self._t0 = time.ticks_ms()
            self._vt0 = clock.vt
        real = self._vt0 + time.ticks_diff(time.ticks_ms(), self._t0)
        target = real + _WAIT_MAX_MS if dt_ms < 0 else clock.vt + dt_ms
        if real < target:
            self.poll(target - real)
            real = self._vt0 + time.ticks_diff(time.ticks_ms(), self._t0)
            if real < target:
                target = real  # input came: wake up now
        if target > clock.vt:
            clock.wait_until(target)

    # -- output and the terminal -------------------------------------------------------

    def write(self, data):
        self.out.write(data)

    def isig(self, on):
        """Ctrl-C as SIGINT (on: the REPL runs code) or as a byte (off): the terminal's
        ISIG, as the unix port's REPL switches its terminal mode around running code."""
        import termios

        a = termios.tcgetattr(0)
        a[3] = a[3] | _ISIG if on else a[3] & ~_ISIG
        termios.tcsetattr(0, termios.TCSANOW, a)
