"""Asyncio MQTT 3.1.1 client: every wait bounded, keepalive pings, QoS 1 with PUBACK
tracking, retransmission with DUP after a reconnect, reconnect with capped backoff.

    c = Client("node-1", "192.168.1.10", will_topic=b"heatgw/s/node-1/status",
               subs=(b"heatgw/s/node-1/cmd",), cb=on_msg)
    asyncio.create_task(c.run())       # connects and reconnects for ever; never raises
    pid = c.publish(b"heatgw/s/node-1/telemetry", payload)  # None: no free slot
    await c.wait_slot(1000)            # True once a slot is free

umqtt.simple (micropython-lib, pinned in mplibs.lock) encodes CONNECT, PUBLISH and
SUBSCRIBE: its methods write to `self.sock`, which here is _Buf, a stand-in over our
preallocated buffers, and its blocking wait for the broker's reply stops at once (_Buf's
read raises _Sent). Sockets, framing of received packets, checks, timers, the in-flight
table and reconnects are ours. cb(topic, msg) gets topic as bytes and msg as a memoryview
into the receive buffer, valid only during the call (copy what you keep).
"""

import asyncio
import socket
from asyncio import core

from umqtt import simple as _umqtt

from heatgw import clock

DOWN = "down"  # not connected (also: broker down at boot, the normal case)
CONNECTING = "connecting"
UP = "up"

_CONNACK = ("", "unacceptable protocol version", "client id rejected", "server unavailable",
            "bad user name or password", "not authorised")
_PINGREQ = b"\xc0\x00"
_DISCONNECT = b"\xe0\x00"
_EINPROGRESS = 115  # errno.EINPROGRESS on lwIP and Linux alike


class MQTTError(Exception):
    pass


class _Sent(Exception):
    """umqtt.simple has written its packet and would now block on the reply."""


class _Buf:
    """Stand-in socket for umqtt.simple: write() fills a preallocated buffer, read() stops
    the caller. Also its `socket` module: socket() and getaddrinfo() for its connect()."""

    def __init__(self):
        self.mv = None
        self.n = 0

    def start(self, mv):
        self.mv = mv
        self.n = 0

    def write(self, b, n=-1):
        if n < 0:
            n = len(b)
        end = self.n + n
        if end > len(self.mv):
            raise ValueError("packet of over %d bytes does not fit its buffer" % len(self.mv))
        self.mv[self.n:end] = memoryview(b)[:n]
        self.n = end
        return n

    def read(self, n):
        raise _Sent

    def setblocking(self, flag):
        pass

    def connect(self, addr):
        pass

    def socket(self, *a):
        return self

    def getaddrinfo(self, host, port, *a):
        return ((0, 0, 0, "", None),)


_buf = _Buf()
_umqtt.socket = _buf  # its connect() opens "sockets" here only: it never touches the network


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
        return {111: "connection refused", 104: "connection reset", 113: "host unreachable",
                110: "connect timeout", 32: "broken pipe"}.get(code, "OSError %s" % (a,))
    return "%s: %s" % (type(e).__name__, e)


def tls_context(ca_file):
    """An SSLContext that verifies the server against the CA certificate in `ca_file`
    (DER). MQTTError with a clear reason when the port has no ssl or the file is bad."""
    try:
        import ssl
    except ImportError:
        raise MQTTError("TLS configured but this firmware has no ssl module") from None
    try:
        with open(ca_file, "rb") as f:
            der = f.read()
    except OSError:
        raise MQTTError("TLS CA file %s cannot be read" % ca_file) from None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies the server (CERT_REQUIRED)
    try:
        ctx.load_verify_locations(cadata=der)
    except (ValueError, OSError) as e:
        raise MQTTError("TLS CA file %s is not a DER certificate (%s)" % (ca_file, e)) from None
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


class Client:
    def __init__(self, client_id, host, port=1883, *, keepalive_s=60, clean_session=True,
                 username=None, password=None, will_topic=None, subs=(), cb=None,
                 ack_cb=None, event_cb=None, ssl=None, server_hostname=None, inflight=4,
                 max_packet=1024, timeout_ms=10000, backoff_min_ms=1000,
                 backoff_max_ms=60000, pace=None):
        if not 1 <= keepalive_s <= 65535:
            raise ValueError("keepalive_s must be 1..65535")
        if not 1 <= inflight <= 64 or not 128 <= max_packet <= 65536:
            raise ValueError("inflight 1..64, max_packet 128..65536")
        if not 0 < backoff_min_ms <= backoff_max_ms < 2**29:
            raise ValueError("need 0 < backoff_min_ms <= backoff_max_ms")
        if username is None and password is not None:
            raise ValueError("a password needs a username")
        b = _enc
        for t in subs:
            if not 0 < len(t) <= 120:  # umqtt.simple sends SUBSCRIBE's length as one byte
                raise ValueError("subscription topic of 1..120 bytes")
        self.host = host
        self.port = port
        self.keepalive_ms = keepalive_s * 1000
        self.clean_session = clean_session
        self.subs = tuple(b(t) for t in subs)
        self.will_topic = b(will_topic) if will_topic else None
        self.online = b"online"  # retained on will_topic after each CONNACK (safe mode:
        # b"safe_mode"); the will says b"offline"
        self.cb = cb
        self.ack_cb = ack_cb
        self.event_cb = event_cb
        self._ssl = ssl
        self._sni = server_hostname or host
        self.timeout_ms = timeout_ms
        self.backoff_min_ms = backoff_min_ms
        self.backoff_max_ms = backoff_max_ms
        # pace(): awaited before each TLS handshake step (the node: right after a control
        # tick, so the step's CPU time falls where the next tick has the most slack)
        self.pace = pace
        self._handshaking = False
        # umqtt.simple keeps what CONNECT carries; its `sock` is our stand-in
        u = _umqtt.MQTTClient(b(client_id), "", 1, user=b(username) if username else None,
                              password=b(password or ""), keepalive=keepalive_s)
        if self.will_topic:
            u.set_last_will(self.will_topic, b"offline", retain=True, qos=1)
        u.cb = _nop  # its subscribe() insists on a callback
        u.sock = _buf
        self._u = u
        # in-flight table, preallocated: slot i is _tx[i*max_packet:(i+1)*max_packet]
        self.max_packet = max_packet
        self._tx = memoryview(bytearray(inflight * max_packet))
        self._len = [0] * inflight  # encoded length; 0 = free
        self._pid = [0] * inflight  # 0 for QoS 0
        self._sent = [0] * inflight  # 0 not yet sent on this session, else ticks when sent
        self._was_sent = [False] * inflight  # sent before: the next send has DUP
        self._order = []  # occupied slots in publish order
        self._rx = memoryview(bytearray(max_packet))
        self._ack = bytearray(b"\x40\x02\x00\x00")
        self._next_pid = 0
        seed = 1
        for c in b(client_id):
            seed = (seed * 31 + c) % 65521
        self._rnd = seed  # jitter differs from node to node, deterministically
        self._ev = asyncio.Event()  # wakes the writer: new publish, reader died
        self._slot_ev = asyncio.Event()  # a slot was freed
        self._lock = asyncio.Lock()  # writer and reader (PUBACK) share the stream
        self._sock = None
        self._s = None
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
        self.failures = 0  # failed connections and lost sessions
        self.timeouts = 0
        self.pings = 0
        self.received = 0  # PUBLISH packets delivered to cb
        self.rx_oversized = 0  # incoming payloads over max_packet: acked, dropped
        self.cb_errors = 0
        self.sub_failed = 0

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
        until its PUBACK, across reconnects. ValueError when it cannot fit a slot."""
        if qos not in (0, 1):
            raise ValueError("qos must be 0 or 1")
        if qos == 0 and self.state != UP:
            return None
        i = self._free_slot()
        if i < 0:
            return None
        topic = _enc(topic)
        pid = self._new_pid() if qos else 0
        n = self._encode(self._slot(i), pid, self._u.publish, topic, msg, retain, qos)
        self._len[i] = n
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
                "connects": self.connects, "failures": self.failures,
                "timeouts": self.timeouts, "pings": self.pings, "received": self.received,
                "inflight": len(self._order), "rx_oversized": self.rx_oversized,
                "cb_errors": self.cb_errors, "sub_failed": self.sub_failed,
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
                    self.timeouts += 1
                self.failures += 1
                self.last_error = why(e)
                self._event("down", self.last_error)
            if self._stop and self.state == UP:
                try:  # a clean DISCONNECT suppresses the will: say offline ourselves
                    if self.will_topic:
                        rx = self._rx
                        n = self._encode(rx, 0, self._u.publish, self.will_topic,
                                         b"offline", True, 0)
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
                self.cb_errors += 1

    def _close(self):
        s = self._sock
        self._sock = None
        self._s = None
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
        if self._ssl is not None:
            # the handshake runs inside the first writes/reads, bounded by their timeout
            t0 = clock.real_us()
            try:
                s = self._ssl.wrap_socket(s, server_hostname=self._sni,
                                          do_handshake_on_connect=False)
            finally:
                clock.took(t0, "tls")
            self._sock = s
        self._handshaking = self._ssl is not None  # until the CONNACK: it came through TLS
        self._s = asyncio.StreamReader(s)
        self._dead = None
        self._ping_t = None
        self._subacks = 0
        rx = self._rx  # free until the reader starts: scratch for what we send now
        u = self._u
        n = self._encode(rx, 0, u.connect, self.clean_session)
        await self._send(rx[:n])
        h, n = await asyncio.wait_for_ms(self._packet(), self.timeout_ms)
        self._handshaking = False
        if h != 0x20 or n != 2:
            raise MQTTError("protocol: expected CONNACK, got type 0x%02x" % h)
        rc = rx[1]
        if rc:
            raise MQTTError("broker refused: %s" % (
                _CONNACK[rc] if rc < len(_CONNACK) else "code %d" % rc))
        self.session_present = bool(rx[0] & 1)
        for t in self.subs:
            n = self._encode(rx, self._new_pid(), u.subscribe, t, 1)
            self._subacks += 1
            await self._send(rx[:n])
        if self.will_topic:
            n = self._encode(rx, 0, u.publish, self.will_topic, self.online, True, 0)
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
                for i in self._order:
                    if not self._sent[i]:
                        await self._send_slot(i)
                        break
                else:
                    await self._wait(self._timers())
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

    async def _wait(self, ms):
        if ms <= 0:
            if self._ping_t is None:
                self._ping_t = clock.ticks_ms() or 1
                self.pings += 1
                await self._send(_PINGREQ)
            return
        self._ev.clear()
        try:
            await asyncio.wait_for_ms(self._ev.wait(), ms)
        except asyncio.TimeoutError:
            pass

    async def _send_slot(self, i):
        qos1 = self._pid[i]
        if qos1:  # marked first: its PUBACK may free the slot while we still drain
            self._sent[i] = clock.ticks_ms() or 1
            self._was_sent[i] = True
        await self._send(self._slot(i)[:self._len[i]])
        if not qos1:
            self._free(i)  # QoS 0: done once written (nothing else frees it)

    async def _send(self, data):
        async with self._lock:
            if self._handshaking and self.pace is not None:
                await self.pace()  # its first write may start the TLS handshake
            t0 = clock.real_us()
            self._s.write(data)  # the socket's write (with TLS: a handshake step) is here
            clock.took(t0, "send")
            await asyncio.wait_for_ms(self._drain(self._s), self.timeout_ms)
        self._tx_t = clock.ticks_ms()

    async def _drain(self, st):
        # Stream.drain(), but each socket write after a wait is measured too: what the
        # socket did not take at once (a full send buffer; with TLS the rest of the
        # handshake, its certificate check and key exchange, runs in these writes)
        buf = st.out_buf
        if not buf:
            return await st.drain()  # all written: drain's one yield
        mv = memoryview(buf)
        off = 0
        sock = st.s
        # while connecting over TLS these writes carry the handshake: its steps (the
        # certificate check, the key exchange: long on a target's CPU) are paced
        pace = self.pace if self._handshaking else None
        while off < len(mv):
            await _writable(sock)
            if pace is not None:
                await pace()
            t0 = clock.real_us()
            n = sock.write(mv[off:])
            clock.took(t0, "send")
            if n is not None:
                off += n
        st.out_buf = b""

    # ---- receiving ----------------------------------------------------------------------

    async def _readn(self, mv, n):
        got = 0
        r = self._s
        while got < n:
            k = await r.readinto(mv[got:n])
            if k is None:
                continue
            if not k:
                raise EOFError
            got += k

    async def _packet(self):
        """Read one packet into _rx; return (first byte, length). Longer payloads are
        left unread (the caller skips them)."""
        rx = self._rx
        await self._readn(rx, 1)
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
                        raise MQTTError("protocol: PUBACK of %d bytes" % n)
                    self._acked(self._rx[0] << 8 | self._rx[1])
                elif t == 0x90:
                    if n != 3:
                        raise MQTTError("protocol: SUBACK of %d bytes" % n)
                    if self._subacks:
                        self._subacks -= 1
                    if self._rx[2] == 0x80:
                        self.sub_failed += 1
                        self.last_error = "subscription refused by the broker"
                elif t == 0xD0:
                    if n:
                        raise MQTTError("protocol: PINGRESP of %d bytes" % n)
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
            raise MQTTError("protocol: PUBLISH of %d bytes" % n)
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
            self.rx_oversized += 1
        else:
            tl = rx[0] << 8 | rx[1]
            if tl + head > n:
                raise MQTTError("protocol: PUBLISH topic longer than the packet")
            pid = rx[2 + tl] << 8 | rx[3 + tl] if qos else 0
            self.received += 1
            if self.cb:
                try:
                    self.cb(bytes(rx[2:2 + tl]), rx[head + tl:n])
                except Exception as e:
                    self.cb_errors += 1
                    self.last_error = "callback: %s" % (why(e),)
            clock.took(t0, "rx")  # with the callback (a command is handled in it)
        if qos:
            a = self._ack
            a[2] = pid >> 8
            a[3] = pid & 0xFF
            await self._send(a)

    # ---- the in-flight table ------------------------------------------------------------

    def _slot(self, i):
        m = self.max_packet
        return self._tx[i * m:(i + 1) * m]

    def _free_slot(self):
        for i in range(len(self._len)):
            if not self._len[i]:
                return i
        return -1

    def _free(self, i):
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
                        self.cb_errors += 1
                return
        # unknown id (e.g. acked again after a retransmission): harmless

    def _new_pid(self):
        while True:
            p = self._next_pid % 65535 + 1
            self._next_pid = p
            if p not in self._pid:
                return p

    def _encode(self, mv, pid, fn, *args):
        """Let umqtt.simple's `fn` encode one packet (with packet id `pid`, 0: none) into
        mv; return its length."""
        if pid:
            self._u.pid = pid - 1  # it takes the next id
        _buf.start(mv)
        try:
            fn(*args)
        except _Sent:
            pass
        return _buf.n


async def _writable(sock):
    # one wait for the socket to take data, through asyncio's poller (as Stream.drain)
    yield core._io_queue.queue_write(sock)


def _nop(topic, msg):
    pass


def _enc(s):
    return s.encode() if isinstance(s, str) else s


def topic_base(mqtt_cfg, node_id):
    """`<prefix>/<site>/<node>` from the configuration's mqtt section."""
    return "%s/%s/%s" % (mqtt_cfg["prefix"], mqtt_cfg["site"], node_id)


def from_config(mqtt_cfg, node_id, password=None, **kw):
    """A Client for the validated `mqtt` section (None when it is null: no telemetry).
    The password comes from the secrets file, never from the configuration."""
    if not mqtt_cfg:
        return None
    base = topic_base(mqtt_cfg, node_id)
    subs = [base + "/cmd"]
    ha = mqtt_cfg.get("ha_discovery_prefix")
    if ha:
        subs.append(ha + "/status")
    tls = mqtt_cfg.get("tls")
    ctx = tls_context(tls["ca_file"]) if tls else None
    port = mqtt_cfg.get("port") or (8883 if tls else 1883)
    user = mqtt_cfg.get("username")
    return Client(mqtt_cfg.get("client_id") or node_id, mqtt_cfg["host"], port,
                  keepalive_s=mqtt_cfg["keepalive_s"],
                  clean_session=mqtt_cfg["clean_session"],
                  username=user, password=password if user else None,
                  will_topic=base + "/status", subs=subs, ssl=ctx, **kw)
