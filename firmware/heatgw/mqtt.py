"""Asyncio MQTT 3.1.1 client: every wait bounded, keepalive pings, QoS 1 with PUBACK
tracking, retransmission with DUP after a reconnect, reconnect with capped backoff.

    c = Client("node-1", "192.168.1.10", will_topic=b"heatgw/s/node-1/status",
               subs=(b"heatgw/s/node-1/cmd",), cb=on_msg)
    asyncio.create_task(c.run())       # connects and reconnects for ever; never raises
    pid = c.publish(b"heatgw/s/node-1/telemetry", payload)  # None: no free slot
    await c.wait_slot(1000)            # True once a slot is free

CONNECT and SUBSCRIBE are encoded by umqtt.simple (micropython-lib, pinned in
mplibs.lock) at connect time only: heatgw.mqttpack loads it, lets it write both into the
receive buffer through a stand-in socket and drops it again before the first await, so it
holds no heap while the node runs. PUBLISH (every message, and the status) is encoded here
into the preallocated in-flight slots (a few lines). Sockets, framing of received packets,
checks, timers, the in-flight table and reconnects are ours too. cb(topic, msg) gets topic
as bytes and msg as a memoryview into the receive buffer, valid only during the call (copy
what you keep).
"""

import asyncio
import socket
from asyncio import core

from micropython import const

from heatgw import clock

DOWN = "down"  # not connected (also: broker down at boot, the normal case)
CONNECTING = "connecting"
UP = "up"

# CONNACK return codes 1.., and the socket errors why() names: one string each (read when
# a connection fails), not a tuple or dict of strings
_CONNACK = ("unacceptable protocol version,client id rejected,server unavailable,"
            "bad user name or password,not authorised")
_ERRNOS = ("111 connection refused,104 connection reset,113 host unreachable,"
           "110 connect timeout,32 broken pipe")
_PINGREQ = b"\xc0\x00"
_DISCONNECT = b"\xe0\x00"
_FAILURES = const(0)  # Client._n: counters read through stats()
_TIMEOUTS = const(1)
_PINGS = const(2)
_RECEIVED = const(3)
_RX_OVERSIZED = const(4)
_CB_ERRORS = const(5)
_SUB_FAILED = const(6)
_EINPROGRESS = const(115)  # errno.EINPROGRESS on lwIP and Linux alike
_HEAD = const(256)  # per in-flight slot: a PUBLISH's fixed header, topic (< 247 bytes), packet id
_PUBACKS = const(8)  # incoming QoS 1 messages whose PUBACK is still to send: more is a dead link


class MQTTError(Exception):
    pass


def _head(mv, first, size):
    """A packet's fixed header (type and flags, remaining length) at mv[0]; its length."""
    mv[0] = first
    i = 1
    while size > 0x7F:
        mv[i] = (size & 0x7F) | 0x80
        size >>= 7
        i += 1
    mv[i] = size
    return i + 1


def _put(mv, n, b, prefixed=True):
    """b (bytes) into mv at n, after its 2-byte length when prefixed; returns the end."""
    k = len(b)
    end = n + k + (2 if prefixed else 0)
    if end > len(mv):
        raise ValueError("packet of over %d bytes does not fit its buffer" % len(mv))
    if prefixed:
        mv[n] = k >> 8
        mv[n + 1] = k & 0xFF
        n += 2
    mv[n:end] = b
    return end


def _publish(mv, pid, topic, msg, retain, qos, head_only=False):
    """PUBLISH (packet id pid when qos is 1) into mv; returns its length. head_only: all
    but the payload (it follows from where it is)."""
    n = _head(mv, 0x30 | qos << 1 | (1 if retain else 0),
              2 + len(topic) + len(msg) + (2 if qos else 0))
    n = _put(mv, n, topic)
    if qos:
        mv[n] = pid >> 8
        mv[n + 1] = pid & 0xFF
        n += 2
    return n if head_only else _put(mv, n, msg, False)


def why(e):
    """A clear one-line reason for a failed connection (never any secret)."""
    if isinstance(e, MQTTError):
        return str(e)
    if isinstance(e, asyncio.TimeoutError):
        return "timeout"
    if isinstance(e, EOFError):
        return "connection closed by the broker"
    if isinstance(e, ValueError) and "certificate" in str(e):  # mbedTLS verify flags
        return "TLS: server certificate not verified by the configured CA (%s)" % (
            " ".join(str(e).split()),)
    if isinstance(e, OSError):
        a = e.args
        code = a[0] if a else 0
        if type(code) is int and code < 0:  # mbedTLS codes are negative
            if code in (-9984, -0x2700) or "VERIFY" in str(a):
                return "TLS: server certificate not verified by the configured CA (%s)" % (
                    a[-1],)
            return "TLS error %s" % (a,)
        for item in _ERRNOS.split(","):
            n, text = item.split(" ", 1)
            if int(n) == code:
                return text
        return "OSError %s" % (a,)
    return "%s: %s" % (type(e).__name__, e)


class Client:
    online = b"online"  # retained on will_topic after each CONNACK (safe mode sets
    # b"safe_mode" on its client); the will says b"offline"

    # Pass everything after port by keyword. (Not keyword-only: positional-or-keyword
    # parameters keep their defaults in one tuple, keyword-only ones in a dict, 0.3 KB.)
    def __init__(self, client_id, host, port=1883, keepalive_s=60, clean_session=True,
                 username=None, password=None, will_topic=None, subs=(), cb=None,
                 ack_cb=None, event_cb=None, ssl=None, server_hostname=None, inflight=4,
                 max_packet=1024, max_in=None, timeout_ms=10000, backoff_min_ms=1000,
                 backoff_max_ms=60000, pace=None):
        if not 1 <= keepalive_s <= 65535:
            raise ValueError("keepalive_s must be 1..65535")
        max_in = max_in or max_packet  # the largest packet received (the rest is skipped)
        if not 1 <= inflight <= 64 or not 128 <= max_packet <= 65536 or \
                not 128 <= max_in <= 65536:
            raise ValueError("inflight 1..64, max_packet 128..65536")
        if not 0 < backoff_min_ms <= backoff_max_ms < 2**29:
            raise ValueError("need 0 < backoff_min_ms <= backoff_max_ms")
        if username is None and password is not None:
            raise ValueError("a password needs a username")
        b = _enc
        for t in subs:
            if not 0 < len(t) <= 120:  # umqtt.simple sends SUBSCRIBE's length as one byte
                raise ValueError("subscription topic of 1..120 bytes")
        # CONNECT and the SUBSCRIBEs are encoded into the receive buffer together
        # (heatgw.mqttpack): it holds both, whatever the login and topics
        need = 16 + len(b(client_id)) + (11 + len(b(will_topic)) if will_topic else 0) + \
            (4 + len(b(username)) + len(b(password or "")) if username else 0)
        for t in subs:
            need += 7 + len(b(t))
        max_in = max(max_in, need)
        self.host = host
        self.port = port
        self.keepalive_ms = keepalive_s * 1000
        self.clean_session = clean_session
        self.subs = tuple(b(t) for t in subs)
        self.will_topic = b(will_topic) if will_topic else None
        self.cb = cb
        self.ack_cb = ack_cb
        self.event_cb = event_cb
        self._tls = None if ssl is None else (ssl, server_hostname or host)  # ctx, SNI
        self.timeout_ms = timeout_ms
        self.backoff_min_ms = backoff_min_ms
        self.backoff_max_ms = backoff_max_ms
        # pace(): awaited before each TLS handshake step (the node: right after a control
        # tick, so the step's CPU time falls where the next tick has the most slack)
        self.pace = pace
        self._handshaking = False
        # what CONNECT carries (the password only when there is a user name)
        self.client_id = b(client_id)
        self._login = (b(username), b(password or "")) if username else None
        # In-flight table, preallocated: slot i holds a PUBLISH's header, topic and packet
        # id in _tx[i*_HEAD:(i+1)*_HEAD], and a reference to its payload (no copy).
        self.max_packet = max_packet
        self._tx = memoryview(bytearray(inflight * _HEAD))
        self._msg = [None] * inflight
        self._len = [0] * inflight  # header length; 0 = free
        self._pid = [0] * inflight  # 0 for QoS 0
        self._sent = [0] * inflight  # 0 not yet sent on this session, else ticks when sent
        self._was_sent = [False] * inflight  # sent before: the next send has DUP
        self._order = []  # occupied slots in publish order
        self._rx = memoryview(bytearray(max_in))
        self._next_pid = 0
        seed = 1
        for c in b(client_id):
            seed = (seed * 31 + c) % 65521
        self._rnd = seed  # jitter differs from node to node, deterministically
        self._ev = asyncio.Event()  # wakes the writer: new publish, reader died
        self._slot_ev = asyncio.Event()  # a slot was freed
        self._pubacks = []  # packet ids the reader received QoS 1: the writer acks them
        self._sock = None
        self._addr = None
        self._dead = None  # the reader's exception
        self._ping_t = None  # ticks of the unanswered PINGREQ
        self._subacks = 0  # SUBACKs due
        self._tx_t = 0
        self._stop = False
        self.state = DOWN
        self.last_error = None
        self.session_present = False
        # counters
        self.published = 0  # messages accepted by publish()
        self.acked = 0  # PUBACKs matched to an in-flight message
        self.retransmitted = 0  # sent again with DUP after a reconnect
        self.reconnects = 0  # connections after the first
        self.connects = 0
        # failed connections and lost sessions, timeouts, pings, PUBLISH packets delivered
        # to cb, incoming packets over max_in (acked, dropped), callback errors, refused
        # subscriptions: read through stats()
        self._n = [0] * 7

    # ---- the application's side ---------------------------------------------------------

    def awaiting_reply(self):
        """True while a reply we asked for is due (CONNACK, SUBACK, PUBACK, PINGRESP): the
        host board's virtual time waits for it (board.awaits_replies)."""
        if self._sock is None:
            return False
        if self.state != UP or self._subacks or self._ping_t is not None:
            return True
        for i in self._order:
            if self._pid[i] and self._sent[i]:
                return True
        return False

    def inflight(self):
        return len(self._order)

    def publish(self, topic, msg, retain=False, qos=1):
        """Queue a message; returns its packet id (QoS 1), 0 (QoS 0), or None when the
        in-flight table is full or (QoS 0) not connected. Never waits. A QoS 1 message stays
        until its PUBACK, across reconnects. ValueError when the packet would be longer
        than max_packet. The payload is not copied: msg (bytes, or a buffer its owner
        leaves alone until the message is acknowledged) is sent from where it is."""
        if qos not in (0, 1):
            raise ValueError("qos must be 0 or 1")
        if qos == 0 and self.state != UP:
            return None
        i = self._free_slot()
        if i < 0:
            return None
        topic = _enc(topic)
        msg = _enc(msg)
        if 9 + len(topic) + len(msg) > self.max_packet:
            raise ValueError("packet of over %d bytes does not fit its buffer" % self.max_packet)
        pid = self._new_pid() if qos else 0
        self._len[i] = _publish(self._slot(i), pid, topic, msg, retain, qos, True)
        self._msg[i] = msg
        self._pid[i] = pid
        self._sent[i] = 0
        self._was_sent[i] = False
        self._order.append(i)
        self.published += 1
        self._ev.set()
        return pid

    async def wait_slot(self, timeout_ms):
        """True as soon as publish() would find a free slot (bounded wait)."""
        t0 = clock.ticks_ms()
        while self._free_slot() < 0:
            left = timeout_ms - clock.ticks_diff(clock.ticks_ms(), t0)
            if left <= 0:
                return False
            self._slot_ev.clear()
            try:
                await asyncio.wait_for_ms(self._slot_ev.wait(), left)
            except asyncio.TimeoutError:
                return False
        return True

    def stats(self):
        return {"state": self.state, "published": self.published, "acked": self.acked,
                "retransmitted": self.retransmitted, "reconnects": self.reconnects,
                "connects": self.connects, "failures": self._n[_FAILURES],
                "timeouts": self._n[_TIMEOUTS], "pings": self._n[_PINGS],
                "received": self._n[_RECEIVED], "inflight": len(self._order),
                "rx_oversized": self._n[_RX_OVERSIZED], "cb_errors": self._n[_CB_ERRORS],
                "sub_failed": self._n[_SUB_FAILED],
                "last_error": self.last_error}

    def stop(self):
        """run() ends at its next wake-up, sending DISCONNECT when connected (no will)."""
        self._stop = True
        self._ev.set()

    # ---- connection loop ----------------------------------------------------------------

    async def run(self):
        """Connect, keep the session, reconnect with capped exponential backoff and jitter;
        a broker down at boot is normal. Returns only after stop(); no exception escapes
        but cancellation."""
        fails = 0
        while not self._stop:
            t_up = None
            try:
                self.state = CONNECTING
                await self._connect()
                t_up = clock.ticks_ms()
                self.state = UP
                if self.connects:
                    self.reconnects += 1
                self.connects += 1
                self._event("up", None)
                await self._session()
            except Exception as e:  # CancelledError is a BaseException: it goes through
                if isinstance(e, asyncio.TimeoutError):
                    self._n[_TIMEOUTS] += 1
                self._n[_FAILURES] += 1
                self.last_error = why(e)
                self._event("down", self.last_error)
            if self._stop and self.state == UP:
                try:  # a clean DISCONNECT suppresses the will: say offline ourselves
                    if self.will_topic:
                        rx = self._rx
                        n = _publish(rx, 0, self.will_topic, b"offline", True, 0)
                        await self._send(rx[:n])
                    await self._send(_DISCONNECT)
                except Exception:
                    pass
            self._close()
            self.state = DOWN
            if self._stop:
                break
            # a session that held for the longest delay resets the backoff
            if t_up is not None and clock.ticks_diff(clock.ticks_ms(), t_up) >= \
                    self.backoff_max_ms:
                fails = 0
            fails += 1
            if fails % 8 == 0:
                self._addr = None  # resolve the name again now and then
            await asyncio.sleep_ms(self.backoff_ms(fails))

    def backoff_ms(self, fails):
        """Delay before attempt `fails` + 1: min * 2**(fails-1), capped, then jittered to
        between half and all of it (nodes that lost one broker do not return in step)."""
        d = self.backoff_min_ms
        while fails > 1 and d < self.backoff_max_ms:
            d += d
            fails -= 1
        d = min(d, self.backoff_max_ms)
        self._rnd = (self._rnd * 75 + 74) % 65537  # ZX81 LCG: stays a small int
        half = d // 2
        r = self._rnd & 1023
        # r * half stays below 2**30 (a small int on the targets)
        return half + ((r * half) >> 10 if half < 1 << 20 else r * (half >> 10))

    def _event(self, what, detail):
        if self.event_cb:
            try:
                self.event_cb(what, detail)
            except Exception:
                self._n[_CB_ERRORS] += 1

    def _close(self):
        s = self._sock
        self._sock = None
        if s is not None:
            t0 = clock.real_us()
            try:
                s.close()  # TLS: sends its close_notify
            except OSError:
                pass
            clock.took(t0, "close")

    async def _connect(self):
        # each synchronous call is measured in real time (clock.took: the longest is kept)
        ai = self._addr
        if ai is None:
            # blocks on a DNS name (configure an IP address to avoid it): once, cached
            t0 = clock.real_us()
            try:
                ai = socket.getaddrinfo(self.host, self.port, 0, socket.SOCK_STREAM)[0]
            finally:
                clock.took(t0, "dns")
            self._addr = ai
        t0 = clock.real_us()
        try:
            s = socket.socket(ai[0], ai[1], ai[2])
            self._sock = s
            s.setblocking(False)
            try:
                s.connect(ai[-1])
            except OSError as e:
                if e.args[0] != _EINPROGRESS:
                    raise
        finally:
            clock.took(t0, "connect")
        tls = self._tls
        if tls is not None:
            # the handshake runs inside the first writes/reads, bounded by their timeout
            t0 = clock.real_us()
            try:
                s = tls[0].wrap_socket(s, server_hostname=tls[1],
                                          do_handshake_on_connect=False)
            finally:
                clock.took(t0, "tls")
            self._sock = s
        self._handshaking = tls is not None  # until the CONNACK: it came through TLS
        self._pubacks.clear()
        self._dead = None
        self._ping_t = None
        self._subacks = 0
        rx = self._rx  # free until the reader starts: what we send now is encoded there
        # CONNECT in rx[:sub], the SUBSCRIBEs in rx[sub:end], by umqtt.simple: loaded for this
        # call and dropped again, before any await (heatgw.mqttpack)
        from heatgw.mqttpack import encode

        sub, end = encode(self, rx)
        encode = None
        await self._send(rx[:sub])
        h, n = await asyncio.wait_for_ms(self._packet(), self.timeout_ms)
        self._handshaking = False
        if h != 0x20 or n != 2:
            raise MQTTError("protocol: expected CONNACK, got type 0x%02x" % h)
        rc = rx[1]
        if rc:
            why = _CONNACK.split(",")
            raise MQTTError("broker refused: %s" % (
                why[rc - 1] if rc <= len(why) else "code %d" % rc))
        self.session_present = bool(rx[0] & 1)
        if end > sub:  # the CONNACK took rx[:2] only: the SUBSCRIBEs (QoS 1) are still there
            self._subacks = len(self.subs)
            await self._send(rx[sub:end])
        if self.will_topic:
            n = _publish(rx, 0, self.will_topic, self.online, True, 0)
            await self._send(rx[:n])
        for i in self._order:  # unacknowledged ones first, in their order, with DUP
            if self._was_sent[i]:
                self._slot(i)[0] |= 0x08
                await self._send_slot(i)
                self.retransmitted += 1

    async def _session(self):
        reader = asyncio.create_task(self._reader())
        try:
            while not self._stop:
                if self._dead is not None:
                    raise self._dead
                if self._pubacks:  # the reader's: this task is the only one that writes
                    pid = self._pubacks.pop(0)
                    await self._send(bytes((0x40, 2, pid >> 8, pid & 0xFF)))  # PUBACK
                    continue
                for i in self._order:
                    if not self._sent[i]:
                        await self._send_slot(i)
                        break
                else:
                    ms = self._timers()
                    if ms <= 0:
                        if self._ping_t is None:
                            self._ping_t = clock.ticks_ms() or 1
                            self._n[_PINGS] += 1
                            await self._send(_PINGREQ)
                        continue
                    # until _ev (a publish, the reader, stop) or the deadline: a timer
                    # task sets _ev then (lighter than wait_for, whose task and frames the
                    # idle writer would hold)
                    ev = self._ev
                    ev.clear()
                    timer = asyncio.create_task(_set_after(ev, ms))
                    try:
                        await ev.wait()
                    finally:
                        timer.cancel()
        finally:
            reader.cancel()

    def _timers(self):
        """Check the deadlines; return how long the writer may sleep (ms)."""
        now = clock.ticks_ms()
        diff = clock.ticks_diff
        t = self.timeout_ms
        if self._ping_t is not None:
            left = t - diff(now, self._ping_t)
            if left <= 0:
                raise asyncio.TimeoutError  # no PINGRESP: the link or the broker is dead
            wait = left
        else:
            # ping after half the keepalive without sending (the broker allows 1.5x)
            wait = self.keepalive_ms // 2 - diff(now, self._tx_t)
            if wait <= 0:
                return 0
        for i in self._order:
            if self._pid[i] and self._sent[i]:
                left = t - diff(now, self._sent[i])
                if left <= 0:
                    raise asyncio.TimeoutError  # no PUBACK
                wait = min(wait, left)
        return wait

    async def _send_slot(self, i):
        qos1 = self._pid[i]
        if qos1:  # marked first: its PUBACK may free the slot while we still drain
            self._sent[i] = clock.ticks_ms() or 1
            self._was_sent[i] = True
        await self._send(self._slot(i)[:self._len[i]], self._msg[i])
        if not qos1:
            self._free(i)  # QoS 0: done once written (nothing else frees it)

    async def _send(self, data, more=None):
        # Only the writer (connect, session, stop) sends: no lock. Bounded by timeout_ms.
        await asyncio.wait_for_ms(self._write(data, more), self.timeout_ms)
        self._tx_t = clock.ticks_ms()

    async def _write(self, data, more):
        # data, then more (a PUBLISH's payload), each write as soon as the socket takes
        # data (asyncio's poller: the host board's virtual time sees the send there) and
        # then all it takes at once, each write measured in real time; while connecting
        # over TLS these writes carry the handshake, whose steps (the certificate check,
        # the key exchange: long on a target's CPU) are paced.
        sock = self._sock
        pace = self.pace if self._handshaking else None
        mv = memoryview(data)
        off = 0
        while True:
            await _io(sock, True)
            if pace is not None:
                await pace()
            while True:
                if off >= len(mv):
                    if more is None:
                        return
                    mv = memoryview(more)
                    more = None
                    off = 0
                    continue
                t0 = clock.real_us()
                n = sock.write(mv[off:])
                clock.took(t0, "send")
                if not n:  # the socket takes no more now: wait for it
                    break
                off += n

    # ---- receiving ----------------------------------------------------------------------

    async def _readn(self, mv, n):
        got = 0
        sock = self._sock
        while got < n:
            await _io(sock, False)
            k = sock.readinto(mv[got:n])
            if k is None:
                continue
            if not k:
                raise EOFError
            got += k

    async def _packet(self):
        """Read one packet into _rx; return (first byte, length). Longer payloads are
        left unread (the caller skips them)."""
        rx = self._rx
        sock = self._sock
        while True:  # the first byte: where the idle reader waits (no _readn frame)
            await _io(sock, False)
            k = sock.readinto(rx, 1)
            if k:
                break
            if k is not None:
                raise EOFError
        h = rx[0]
        n = 0
        sh = 0
        while True:
            await self._readn(rx, 1)
            n |= (rx[0] & 0x7F) << sh
            if not rx[0] & 0x80:
                break
            sh += 7
            if sh > 21:
                raise MQTTError("protocol: bad remaining length")
        if n <= len(rx):
            await self._readn(rx, n)
        return h, n

    async def _skip(self, n):
        rx = self._rx
        while n > 0:
            k = min(n, len(rx))
            await self._readn(rx, k)
            n -= k

    async def _reader(self):
        # no timeout here: the writer's PINGREQ deadline bounds every stall of the peer
        try:
            while True:
                h, n = await self._packet()
                t0 = clock.real_us()  # the packet's processing, up to the next await
                t = h & 0xF0
                if t == 0x30:
                    await self._incoming(h, n, t0)
                    continue
                if t == 0x40:
                    if n != 2:
                        raise MQTTError("protocol: %s of %d bytes" % ("PUBACK", n))
                    self._acked(self._rx[0] << 8 | self._rx[1])
                elif t == 0x90:
                    if n != 3:
                        raise MQTTError("protocol: %s of %d bytes" % ("SUBACK", n))
                    if self._subacks:
                        self._subacks -= 1
                    if self._rx[2] == 0x80:
                        self._n[_SUB_FAILED] += 1
                        self.last_error = "subscription refused by the broker"
                elif t == 0xD0:
                    if n:
                        raise MQTTError("protocol: %s of %d bytes" % ("PINGRESP", n))
                    self._ping_t = None
                    self._ev.set()  # the writer slept until the PINGRESP deadline
                else:
                    raise MQTTError("protocol: unexpected packet type 0x%02x" % h)
                clock.took(t0, "rx")  # a PUBACK: ack_cb marks its record acked on flash
        except Exception as e:
            self._dead = e
            self._ev.set()

    async def _incoming(self, h, n, t0):
        qos = (h >> 1) & 3
        if qos > 1:
            raise MQTTError("protocol: incoming QoS %d (we subscribe with QoS 1)" % qos)
        rx = self._rx
        head = 4 if qos else 2
        if n < head:
            raise MQTTError("protocol: %s of %d bytes" % ("PUBLISH", n))
        if n > len(rx):  # too big for the buffer: skip it, but acknowledge it
            await self._readn(rx, 2)
            tl = rx[0] << 8 | rx[1]
            if tl + head > n:
                raise MQTTError("protocol: PUBLISH topic longer than the packet")
            await self._skip(tl)
            pid = 0
            if qos:
                await self._readn(rx, 2)
                pid = rx[0] << 8 | rx[1]
            await self._skip(n - tl - head)
            self._n[_RX_OVERSIZED] += 1
        else:
            tl = rx[0] << 8 | rx[1]
            if tl + head > n:
                raise MQTTError("protocol: PUBLISH topic longer than the packet")
            pid = rx[2 + tl] << 8 | rx[3 + tl] if qos else 0
            self._n[_RECEIVED] += 1
            if self.cb:
                try:
                    self.cb(bytes(rx[2:2 + tl]), rx[head + tl:n])
                except Exception as e:
                    self._n[_CB_ERRORS] += 1
                    self.last_error = "callback: %s" % (why(e),)
            clock.took(t0, "rx")  # with the callback (a command is handled in it)
        if qos:  # the writer sends its PUBACK
            if len(self._pubacks) >= _PUBACKS:
                raise MQTTError("protocol: %d messages not acknowledged" % _PUBACKS)
            self._pubacks.append(pid)
            self._ev.set()

    # ---- the in-flight table ------------------------------------------------------------

    def _slot(self, i):
        return self._tx[i * _HEAD:(i + 1) * _HEAD]

    def _free_slot(self):
        for i in range(len(self._len)):
            if not self._len[i]:
                return i
        return -1

    def _free(self, i):
        self._msg[i] = None
        self._len[i] = 0
        self._pid[i] = 0
        self._sent[i] = 0
        self._order.remove(i)
        self._slot_ev.set()

    def _acked(self, pid):
        for i in self._order:
            if self._pid[i] == pid:
                self._free(i)
                self.acked += 1
                if self.ack_cb:
                    try:
                        self.ack_cb(pid)
                    except Exception:
                        self._n[_CB_ERRORS] += 1
                return
        # unknown id (e.g. acked again after a retransmission): harmless

    def _new_pid(self):
        while True:
            p = self._next_pid % 65535 + 1
            self._next_pid = p
            if p not in self._pid:
                return p


async def _set_after(ev, ms):
    await asyncio.sleep_ms(ms)
    ev.set()


async def _io(sock, write):
    # one wait until the socket takes data (write) or has some, through asyncio's poller
    # (as its streams wait)
    yield (core._io_queue.queue_write if write else core._io_queue.queue_read)(sock)


def _enc(s):
    return s.encode() if isinstance(s, str) else s
