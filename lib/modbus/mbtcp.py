"""Modbus TCP master over a non-blocking socket, under asyncio.

    tcp = TCPMaster("192.168.1.20", 502, clock=heatgw.clock)
    st = await tcp.transact(1, b"\\x03\\x00\\x00\\x00\\x04", 500)   # unit 1, PDU, ms

`host` is an IPv4 address: a name would need a DNS lookup, which blocks. The socket is
connected on the first request (and again after any failure) with a non-blocking
connect(); the reader task learns that it completed when the socket turns writable.
Every wait is bounded by the request's timeout in node time: the connection, the answer.

The MBAP header's transaction id goes up by one per request; an answer carrying an
earlier id (a late answer to a request that timed out) is skipped. After a timeout, a
truncated or garbled answer the connection is closed (a half-open connection or a
desynchronised stream then costs one request, not every later one).

Nothing of micropython-modbus's TCP host is used: it blocks up to its socket timeout.
"""

import asyncio
import socket
import time
from errno import EINPROGRESS

from mbcore import (
    BAD_FRAME,
    CLOSED,
    EXCEPTION,
    MORE,
    NO_CONNECTION,
    OK,
    TIMEOUT,
    TRUNCATED,
    WRONG_SLAVE,
    Master,
)
from micropython import const

_REQ = const(12)  # MBAP (7) + function, address, count (5)
_RX = const(260)  # MBAP (7) + the longest PDU (253)
_ERROR_BIAS = const(0x80)


class TCPMaster(Master):
    def __init__(self, host, port, *, clock, on_send=None, step_ms=5):
        # an address literal: getaddrinfo parses it, no lookup
        self.addr = socket.getaddrinfo(host, port)[0][-1]
        super().__init__(None, _RX, clock, step_ms, on_send)
        self._tx = bytearray(_REQ)
        self._tid = 0
        self._unit = 0
        self._fc = 0
        self._count = 0
        self.up = False
        self._fresh = False
        self.connects = 0

    def expect(self, unit, fc, count, tid):
        """What check() takes for our answer (transact sets it; the fuzz tests too)."""
        self._unit = unit
        self._fc = fc
        self._count = count
        self._tid = tid

    async def _open(self, timeout_ms):
        """Connect (non-blocking): OK, or NO_CONNECTION when it fails or takes longer
        than timeout_ms."""
        self.close()
        s = socket.socket()
        s.setblocking(False)
        self.s = s
        self.err = 0
        self.up = False
        self._fresh = True
        t0 = time.ticks_us()
        try:
            s.connect(self.addr)
        except OSError as e:
            if e.errno != EINPROGRESS:
                self._took(t0, "connect")
                self.close()
                return NO_CONNECTION
        self._took(t0, "connect")
        self.connects += 1
        if self.on_send is not None:
            self.on_send()  # the handshake is a reply the host board waits for too
        self._start_reader(True)
        clock = self.clock
        end = clock.ticks_add(clock.ticks_ms(), timeout_ms)
        while not self.up:
            if self.err or clock.ticks_diff(end, clock.ticks_ms()) <= 0:
                self.close()
                return NO_CONNECTION
            await asyncio.sleep_ms(self.step_ms)
        return OK

    def _frame(self, unit, pdu):
        tid = (self._tid + 1) & 0xFFFF
        tx = self._tx
        tx[0] = tid >> 8
        tx[1] = tid & 0xFF
        tx[2] = 0
        tx[3] = 0
        tx[4] = 0
        tx[5] = 6  # unit id + PDU
        tx[6] = unit
        for i in range(5):
            tx[7 + i] = pdu[i]
        self.expect(unit, pdu[0], pdu[3] << 8 | pdu[4], tid)

    def _send(self):
        try:
            w = self.s.write(self._tx)
        except OSError:
            w = 0
        if w != _REQ:  # a fresh socket's buffer takes 12 bytes: else it failed
            return NO_CONNECTION if self._fresh else CLOSED
        self._fresh = False
        return OK

    def _done(self, st):
        if st != OK and st != EXCEPTION and st != WRONG_SLAVE:
            self.close()  # a timeout, a broken or partial answer: a new connection next
        return st

    def check(self):
        """Judge rx[:n] against the expected answer: MORE, OK (registers at rx[data:])
        or a fault code. Answers with an earlier transaction id are skipped. Never
        raises, whatever the bytes."""
        if self.over:
            return BAD_FRAME
        b = self.rx
        n = self.n
        p = 0
        while True:
            if n - p < 8:
                return MORE
            if b[p + 2] or b[p + 3]:  # protocol id: 0 is Modbus
                return BAD_FRAME
            ln = b[p + 4] << 8 | b[p + 5]
            if ln < 2 or ln > 254:
                return BAD_FRAME
            end = p + 6 + ln
            if n < end:
                return MORE
            if (b[p] << 8 | b[p + 1]) != self._tid:
                p = end  # an answer to an earlier request
                continue
            f = b[p + 7]
            fc = self._fc
            if f == fc | _ERROR_BIAS:
                if ln != 3:
                    return BAD_FRAME
            elif f != fc or ln != 3 + 2 * self._count or b[p + 8] != 2 * self._count:
                return BAD_FRAME
            if b[p + 6] != self._unit:
                return WRONG_SLAVE
            if f != fc:
                self.exc = b[p + 8]
                return EXCEPTION
            self.data = p + 9
            return OK

    def _partial(self):
        n = self.n
        if n == 0:
            return TIMEOUT
        b = self.rx
        if n < 2 or (b[0] << 8 | b[1]) == self._tid:
            return TRUNCATED
        return BAD_FRAME

    def close(self):
        Master.close(self)
        s = self.s
        self.s = None
        self.up = False
        if s is not None:
            try:
                s.close()
            except OSError:
                pass
