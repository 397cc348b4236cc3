"""Modbus master core: result codes, register decoding, and the non-blocking exchange that
the RTU (mbrtu) and TCP (mbtcp) drivers share. Runs under asyncio only.

    st = await master.transact(slave, pdu, timeout_ms)   # one request, one answer
    if st == OK:
        v = decode(master.rx, master.data + 4, FLOAT32, 0)   # registers 2 and 3

Nothing here waits on the peer. A reader task parks on the stream in asyncio's I/O queue
and copies what arrives into the preallocated `rx`; `transact` sends (a write that only
fills the UART's or socket's buffer), then checks `rx` between sleeps of `step_ms` until
the answer is complete or the deadline (node time, the `clock` given) has passed. Every
synchronous stretch (a write, a read of what is there, a parse) is measured in real µs:
`worst_us` and `worst_where`, the longest one ("send", "de", "rx", "parse", "connect").

Result codes (`NAMES[code]` is the fault's name):
    OK             the answer is in rx: registers at rx[data:], 2 bytes each, big-endian
    TIMEOUT        nothing came before the deadline
    CRC            RTU: the frame's CRC is wrong
    EXCEPTION      the slave answered with an exception; its code is in `exc`
    TRUNCATED      the start of our answer came, the rest not before the deadline
    WRONG_SLAVE    an intact answer from another slave id / unit id
    BAD_FRAME      bytes that cannot be our answer (garbage, wrong function code or
                   byte count, a broken MBAP header, more than rx holds)
    CLOSED         the stream failed or was closed (TCP: reset, EOF; a pty hung up)
    NO_CONNECTION  TCP: the connection could not be made (refused, unreachable, timed out)
"""

import asyncio
import time
from math import ldexp

from micropython import const

OK = const(0)
MORE = const(1)  # internal: the answer is not complete yet
TIMEOUT = const(2)
CRC = const(3)
EXCEPTION = const(4)
TRUNCATED = const(5)
WRONG_SLAVE = const(6)
BAD_FRAME = const(7)
CLOSED = const(8)
NO_CONNECTION = const(9)
NAMES = ("ok", "more", "timeout", "crc", "exception", "truncated", "wrong_slave",
         "bad_frame", "closed", "no_connection")

# Register types (int16, uint16: one register; int32, uint32, float32: two) and orders
INT16 = const(0)
UINT16 = const(1)
INT32 = const(2)
UINT32 = const(3)
FLOAT32 = const(4)
WORD_LITTLE = const(1)  # order bit: low word first
BYTE_LITTLE = const(2)  # order bit: low byte first within each register

_CHUNK = const(64)  # bytes taken from the stream per read
_SPIN_US = const(2000)  # DE: busy wait at most this long for the last bits to leave


def decode(buf, off, typ, order):
    """The value of the register (16-bit types) or register pair (32-bit) at buf[off:]:
    an int, a float for FLOAT32, None for a float32 NaN or infinity. No allocation but
    the result (a float, or an int beyond the port's small ints)."""
    if order & BYTE_LITTLE:
        hi = buf[off + 1] << 8 | buf[off]
    else:
        hi = buf[off] << 8 | buf[off + 1]
    if typ == INT16:
        return hi - 0x10000 if hi & 0x8000 else hi
    if typ == UINT16:
        return hi
    if order & BYTE_LITTLE:
        lo = buf[off + 3] << 8 | buf[off + 2]
    else:
        lo = buf[off + 2] << 8 | buf[off + 3]
    if order & WORD_LITTLE:
        hi, lo = lo, hi
    if typ == FLOAT32:
        e = hi >> 7 & 0xFF
        m = (hi & 0x7F) << 16 | lo  # < 2**23: small int everywhere
        if e == 0xFF:
            return None
        # exact in single precision: a 24-bit mantissa times a power of two
        v = ldexp(m, -149) if e == 0 else ldexp(m | 0x800000, e - 150)
        return -v if hi & 0x8000 else v
    if typ == INT32 and hi & 0x8000:
        return (hi - 0x10000) << 16 | lo
    return hi << 16 | lo


class Master:
    """The part RTU and TCP share: transact() (one coroutine per request: no other object
    is made but asyncio's own), the reader task and the real-time measurement.
    Subclasses: _open() (async: start the reader; TCP connects), _frame(slave, pdu)
    (build the request, say what answer is expected), _send() (write it: OK or a fault),
    check() (is rx[:n] our complete answer, and is it valid?), _partial() (what an
    incomplete rx means at the deadline), _done(st) (after the request: TCP closes a
    connection that failed); `gap_ms` (silence before a request), `de` (a driver-enable
    pin: high while sending, for `air_ms`)."""

    gap_ms = 0
    de = None
    air_ms = 0

    def __init__(self, stream, rx_bytes, clock, step_ms, on_send):
        self.s = stream
        self.rx = bytearray(rx_bytes)
        self._chunk = bytearray(_CHUNK)
        self.n = 0  # bytes in rx
        self.over = False  # more came than rx holds
        self.err = 0  # set by the reader: CLOSED
        self.data = 0  # after OK: where the registers start in rx
        self.exc = 0  # after EXCEPTION: the exception code
        self.busy = False  # an answer is awaited
        self.clock = clock
        self.step_ms = step_ms
        self.on_send = on_send  # called after each send (the host board's reply window)
        self.worst_us = 0
        self.worst_where = None
        self.requests = 0
        self._task = None
        self._txdone = getattr(stream, "txdone", None)

    def _took(self, t0, where):
        d = time.ticks_diff(time.ticks_us(), t0)
        if d > self.worst_us:
            self.worst_us = d
            self.worst_where = where

    async def transact(self, slave, pdu, timeout_ms):
        """Send the read request `pdu` (function code, address, count: 5 bytes, e.g.
        as heatgw.mbplan builds it) to `slave` (RTU slave id, TCP unit id) and wait for its
        answer at most timeout_ms of node time; a result code."""
        if self._task is None or self.err:
            st = await self._open(timeout_ms)
            if st != OK:
                return st
        self._frame(slave, pdu)
        if self.gap_ms:
            await asyncio.sleep_ms(self.gap_ms)  # silence; whatever came is dropped
        self.n = 0
        self.over = False
        t0 = time.ticks_us()
        st = self._send()
        self._took(t0, "send")
        if st != OK:
            return self._done(st)
        self.requests += 1
        if self.on_send is not None:
            self.on_send()
        de = self.de
        if de is not None:
            # the last stop bit leaves 3.5 characters before the slave answers: sleep
            # through most of the frame's air time, then at most _SPIN_MS of busy wait
            if self.air_ms > 1:
                await asyncio.sleep_ms(self.air_ms - 1)
            t0 = time.ticks_us()
            done = self._txdone
            if done is not None:
                while not done() and time.ticks_diff(time.ticks_us(), t0) < _SPIN_US:
                    pass
            de.value(0)
            self._took(t0, "de")
        clock = self.clock
        end = clock.ticks_add(clock.ticks_ms(), timeout_ms)
        self.busy = True
        try:
            while True:
                t0 = time.ticks_us()
                st = self.check()
                if st == MORE and self.err:
                    st = self.err  # the stream ended before the answer was complete
                self._took(t0, "parse")
                if st != MORE:
                    break
                if clock.ticks_diff(end, clock.ticks_ms()) <= 0:
                    st = self._partial()
                    break
                await asyncio.sleep_ms(self.step_ms)
        finally:
            self.busy = False
        return self._done(st)

    def _done(self, st):
        return st

    def _start_reader(self, connecting=False):
        self._task = asyncio.create_task(self._reader(connecting))

    async def _reader(self, connecting):
        # Parked in asyncio's I/O queue until the stream is readable: no polling, no
        # timeout of its own (close() cancels it). Copies what is there into rx, through
        # a small chunk buffer (no slice or memoryview made per read). It is a task of its
        # own, so nothing may escape it (asyncio's exception handler is the node's fault
        # latch): whatever fails ends the stream (CLOSED), which transact() reports.
        s = self.s
        q = asyncio.core._io_queue
        chunk = self._chunk
        rx = self.rx
        cap = len(rx)
        try:
            if connecting:
                yield q.queue_write(s)  # writable: connected (or failed: the read says)
                self.up = True
            while True:
                yield q.queue_read(s)
                t0 = time.ticks_us()
                k = s.readinto(chunk)
                if k is not None:
                    if k == 0:  # EOF, a reset, a pty hung up: this stream is done
                        self.err = CLOSED
                        self._took(t0, "rx")
                        return
                    n = self.n
                    for i in range(k):
                        if n < cap:
                            rx[n] = chunk[i]
                            n += 1
                        else:
                            self.over = True
                    self.n = n
                self._took(t0, "rx")
        except Exception:  # noqa: BLE001 - a reset (OSError) or anything else: the end
            self.err = CLOSED

    def close(self):
        t = self._task
        self._task = None
        if t is not None:
            t.cancel()
