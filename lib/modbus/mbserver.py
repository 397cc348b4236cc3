"""Modbus TCP server (a slave) under asyncio: a listening socket, a few connections from
allowed client addresses, one request per turn. Nothing in it waits on a client.

    srv = TCPServer(502, ("192.168.1.50",), regs, clock=clock, max_conns=2,
                    idle_ms=60_000)
    await srv.run()          # the task: listens until cancelled (then closes everything)

`regs`, the application's register map:
    regs.read(fc, address, count, buf, off) -> 0, or an exception code (2, 3, 4, 6);
        fills buf[off:off + 2 * count] (registers, big-endian); fc 3 (holding), 4 (input)
    regs.write(address, count, buf, off) -> 0, or an exception code; the values at
        buf[off:off + 2 * count]; fc 6 (count 1) and 16

Requests (MBAP + PDU, at most 260 bytes): function codes 3 and 4 (read 1..125 registers),
6 (write one), 16 (write 1..123). Any other function code: exception 01; a PDU whose
length, count or byte count is wrong: 03 (checked in that order, as the Modbus
specification's diagrams do; the map then answers 02 for an address it does not have).
Every unit id is answered (echoed). An MBAP header that cannot be a request (protocol
id not 0, a length outside 2..254) cannot be resynchronised: the connection is closed.

Bounded by construction:
- buffers made once: a 260-byte receive buffer per connection slot, one 260-byte answer
  buffer, a 64-byte read chunk; the answer is written with one non-blocking write (a
  client that leaves its answers unread until the socket's buffer is full is closed);
- connections only from the allowed addresses (others are accepted and closed at once:
  counted in `refused`, the last in `refused_addr`), at most max_conns: a new allowed
  connection beyond that replaces the least recently active one;
- a connection without a complete request for idle_ms (node time) is closed: a slow or
  half-open client cannot hold a slot;
- the accept and each connection wait in asyncio's I/O queue (select.poll); each wake-up
  does one read of what is there and at most one request, then yields.
Every synchronous stretch is measured in real µs (`worst_us`, `worst_where`: "accept",
"rx", "request", "close"). On the host board, the sockets are registered as a server's
(`serving(sock, kind)`, the board's io_serving): what a client sends is a request, not a
reply, and while a client is connected virtual time does not run away from it.
"""

import asyncio
import socket
import time

from micropython import const

MORE = const(-1)  # request(): not complete yet
CLOSE = const(-2)  # request(): a broken MBAP header: close the connection
_ADU = const(260)  # MBAP (7) + the longest PDU (253)
_CHUNK = const(64)
_ERROR_BIAS = const(0x80)


class _Slot:
    """One connection slot: its socket, buffer and task, reused."""

    def __init__(self):
        self.s = None
        self.rx = bytearray(_ADU)
        self.n = 0
        self.last_ms = 0  # node ticks of the last complete request (or the accept)
        self.task = None
        self.ip = None  # the client's address (str)


class TCPServer:
    def __init__(self, port, allowed, regs, *, clock, max_conns=2, idle_ms=60_000,
                 host="0.0.0.0", serving=None, on_sweep=None):
        self.port = port
        self.host = host
        self.allowed = tuple(allowed)  # IPv4 addresses as text
        quads = []
        for a in self.allowed:
            q = bytes(int(x) for x in a.split("."))
            if len(q) != 4:
                raise ValueError("not an IPv4 address: %r" % (a,))
            quads.append(q)
        self._quads = tuple(quads)
        self.regs = regs
        self.clock = clock
        self.idle_ms = idle_ms
        self._sweep_ms = max(250, min(idle_ms // 4, 5000))
        self._serving = serving  # the host board's io_serving, or None
        self.on_sweep = on_sweep  # called every sweep (the application's records)
        self.tx = bytearray(_ADU)
        self.tx_len = 0
        self._chunk = bytearray(_CHUNK)
        self._slots = [_Slot() for _ in range(max_conns)]
        self.ls = None
        self.requests = 0
        self.exceptions = 0  # answered with an exception
        self.refused = 0  # connections from addresses not allowed
        self.refused_addr = None
        self.connections = 0  # accepted from allowed addresses
        self.replaced = 0  # closed for a newer connection (all slots busy)
        self.idle_closed = 0
        self.dropped = 0  # closed for a broken header or an unwritable answer
        self.worst_us = 0
        self.worst_where = None

    # -- the pure part: one request ---------------------------------------------------

    def request(self, b, n):
        """Judge the bytes b[:n] (the start of a request stream): MORE (not complete),
        CLOSE (a broken MBAP header), or the number of bytes the request took; its answer
        is then tx[:tx_len]. No allocation; never raises for any bytes (the map's own
        errors aside)."""
        self.tx_len = 0
        if n < 8:
            if n >= 6 and (b[2] or b[3] or not 2 <= (b[4] << 8 | b[5]) <= 254):
                return CLOSE
            return MORE
        ln = b[4] << 8 | b[5]
        if b[2] or b[3] or ln < 2 or ln > 254:
            return CLOSE
        end = 6 + ln
        if n < end:
            return MORE
        self.requests += 1
        tx = self.tx
        for i in range(7):
            tx[i] = b[i]  # transaction id, protocol, (length), unit id: echoed
        fc = b[7]
        plen = ln - 1  # the PDU's length
        exc = 0
        if fc == 3 or fc == 4:
            count = b[10] << 8 | b[11] if plen >= 5 else 0
            if plen != 5 or not 1 <= count <= 125:
                exc = 3
            elif (b[8] << 8 | b[9]) + count > 0x10000:
                exc = 2
            else:
                exc = self.regs.read(fc, b[8] << 8 | b[9], count, tx, 9)
                if not exc:
                    tx[7] = fc
                    tx[8] = 2 * count
                    self._length(2 + 2 * count)
        elif fc == 6:
            if plen != 5:
                exc = 3
            else:
                exc = self.regs.write(b[8] << 8 | b[9], 1, b, 10)
                if not exc:
                    for i in range(7, 12):
                        tx[i] = b[i]  # the request's PDU, echoed
                    self._length(5)
        elif fc == 16:
            count = b[10] << 8 | b[11] if plen >= 6 else 0
            if plen < 6 or not 1 <= count <= 123 or b[12] != 2 * count \
                    or plen != 6 + 2 * count:
                exc = 3
            elif (b[8] << 8 | b[9]) + count > 0x10000:
                exc = 2
            else:
                exc = self.regs.write(b[8] << 8 | b[9], count, b, 13)
                if not exc:
                    for i in range(7, 12):
                        tx[i] = b[i]  # function, address, count
                    self._length(5)
        else:
            exc = 1
        if exc:
            self.exceptions += 1
            tx[7] = fc | _ERROR_BIAS
            tx[8] = exc
            self._length(2)
        return end

    def _length(self, pdu_len):
        # the MBAP length: unit id + PDU
        self.tx[4] = 0
        self.tx[5] = pdu_len + 1
        self.tx_len = 7 + pdu_len

    # -- the sockets ------------------------------------------------------------------

    def _took(self, t0, where):
        d = time.ticks_diff(time.ticks_us(), t0)
        if d > self.worst_us:
            self.worst_us = d
            self.worst_where = where

    def _allowed(self, addr):
        """The client's address as text if it is allowed, else None (refused_addr says
        which). `addr`: (ip, port) on the lwIP ports; a raw sockaddr on the unix port."""
        if type(addr) is tuple:
            ip = addr[0]
            if ip in self.allowed:
                return ip
        elif len(addr) >= 8 and addr[0] == 2 and addr[1] == 0:  # AF_INET
            for q in self._quads:
                if q[0] == addr[4] and q[1] == addr[5] and q[2] == addr[6] \
                        and q[3] == addr[7]:
                    return "%d.%d.%d.%d" % (q[0], q[1], q[2], q[3])
            ip = "%d.%d.%d.%d" % (addr[4], addr[5], addr[6], addr[7])
        else:
            ip = "?"
        self.refused += 1
        self.refused_addr = ip
        return None

    def _open(self):
        ls = socket.socket()
        try:
            ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            ls.bind(socket.getaddrinfo(self.host, self.port)[0][-1])
            ls.listen(2)
            ls.setblocking(False)
        except Exception:
            ls.close()
            raise
        self.ls = ls
        if self._serving is not None:
            self._serving(ls, "listen")

    async def run(self):
        """The server task: listen (OSError when the port cannot be had), accept, serve,
        sweep idle connections; everything is closed when it ends (cancelled, or an
        error: the caller restarts it)."""
        self._open()
        sweeper = asyncio.create_task(self._sweeper())
        q = asyncio.core._io_queue
        ls = self.ls
        try:
            while True:
                yield q.queue_read(ls)
                t0 = time.ticks_us()
                try:
                    c, addr = ls.accept()
                except OSError:  # the client gave up meanwhile
                    continue
                self._admit(c, addr)
                self._took(t0, "accept")
        finally:
            sweeper.cancel()
            self.close()

    def _admit(self, c, addr):
        ip = self._allowed(addr)
        if ip is None:
            c.close()
            return
        slot = None
        old = None
        for sl in self._slots:
            if sl.s is None:
                slot = sl
                break
            if old is None or self.clock.ticks_diff(sl.last_ms, old.last_ms) < 0:
                old = sl
        if slot is None:  # all busy: the least recently active one makes room
            self.replaced += 1
            self._drop(old)
            slot = old
        c.setblocking(False)
        try:
            c.setsockopt(6, 1, 1)  # IPPROTO_TCP, TCP_NODELAY: answers leave at once
        except (AttributeError, OSError):
            pass
        slot.s = c
        slot.n = 0
        slot.ip = ip
        slot.last_ms = self.clock.ticks_ms()
        self.connections += 1
        if self._serving is not None:
            self._serving(c, "conn")
        slot.task = asyncio.create_task(self._serve(slot, c))

    async def _serve(self, slot, s):
        # Parked in asyncio's I/O queue until the client sends; then one read of what is
        # there and at most one request per turn. A task of its own: nothing may escape it
        # (asyncio's exception handler is the node's fault latch), so whatever fails
        # closes this connection.
        q = asyncio.core._io_queue
        chunk = self._chunk
        rx = slot.rx
        try:
            while True:
                yield q.queue_read(s)
                t0 = time.ticks_us()
                n = slot.n
                room = _ADU - n
                k = s.readinto(chunk, room if room < _CHUNK else _CHUNK)
                if k is None:
                    continue
                if k == 0:
                    break  # the client closed
                for i in range(k):
                    rx[n + i] = chunk[i]
                slot.n = n + k
                self._took(t0, "rx")
                while True:  # the requests now complete, one per turn
                    t0 = time.ticks_us()
                    used = self.request(rx, slot.n)
                    if used == CLOSE:
                        self.dropped += 1
                        self._took(t0, "request")
                        return
                    if used == MORE:
                        self._took(t0, "request")
                        break
                    slot.last_ms = self.clock.ticks_ms()
                    w = s.write(self.tx, self.tx_len)
                    left = slot.n - used
                    for i in range(left):
                        rx[i] = rx[used + i]
                    slot.n = left
                    self._took(t0, "request")
                    if w != self.tx_len:  # its answers unread: a buffer's worth
                        self.dropped += 1
                        return
                    await asyncio.sleep_ms(0)
        except Exception:  # noqa: BLE001 - a reset (OSError), anything else: the end
            pass
        finally:
            if slot.s is s:
                slot.task = None  # (this task ends here: nothing to cancel)
                self._drop(slot)

    async def _sweeper(self):
        while True:
            await asyncio.sleep_ms(self._sweep_ms)
            try:
                now = self.clock.ticks_ms()
                for sl in self._slots:
                    if sl.s is not None and \
                            self.clock.ticks_diff(now, sl.last_ms) > self.idle_ms:
                        self.idle_closed += 1
                        self._drop(sl)
                if self.on_sweep is not None:
                    self.on_sweep()
            except Exception:  # noqa: BLE001 - never escapes its task (see _serve)
                pass

    def _drop(self, slot):
        t0 = time.ticks_us()
        s = slot.s
        t = slot.task
        slot.s = None
        slot.task = None
        slot.n = 0
        if t is not None:
            t.cancel()  # out of the I/O queue before the socket closes
        if s is not None:
            if self._serving is not None:
                self._serving(s, None)
            try:
                s.close()
            except OSError:
                pass
        self._took(t0, "close")

    def clients(self):
        """The addresses of the open connections (a list: made on call)."""
        return [sl.ip for sl in self._slots if sl.s is not None]

    def close(self):
        for sl in self._slots:
            self._drop(sl)
        ls = self.ls
        self.ls = None
        if ls is not None:
            if self._serving is not None:
                self._serving(ls, None)
            try:
                ls.close()
            except OSError:
                pass
