"""Network bring-up and reconnect: a restartable task that never blocks.

    n = Net(board, secrets, on_event, broker_host="mqtt.example", ntp_server="pool.ntp.org")
    gw.add_task("net", n.run)           # restartable: a crash is restarted with backoff
    n.up, n.ip, n.broker_ip             # read by the MQTT task (broker_ip: resolved here)

The board says which interfaces it has (`NET_INTERFACES`, first = used) and builds them
(`network_interface(kind)`: the port's network.WLAN / network.LAN, or None on the host
board, whose network is the host's: bring-up is then a no-op that reports "up").

- Wi-Fi station ("wlan", heatgw.wlan, loaded on Wi-Fi boards only): credentials
  `wifi_ssid` / `wifi_password` from the secrets file. connect() returns at once on the
  ports; the task polls isconnected() and status() with asyncio sleeps, gives up an
  attempt after `connect_timeout_ms` or on a failure status (wrong password, no AP),
  then waits a capped exponential backoff with jitter (`Backoff`) before the next. A
  link lost later is noticed by the same polling.
- Ethernet ("lan"): active(True) once; the link (isconnected: link up with an address)
  is polled; up and down are events. A failing active() is retried with the backoff.
- Events go to on_event(dict), never printed here: {"kind": "net", "state": "up",
  "iface": "wlan", "ip": "10.0.0.7"}, {"kind": "net", "state": "down", "iface": ...,
  "reason": "wrong_password", "retry_in_ms": 4000}, {"kind": "net", "state": "error",
  "iface": "wlan", "error": "no wifi_ssid in the secrets file"} (no retry: the task then
  idles until restarted after provisioning). No event or exception text carries a secret.

DNS. socket.getaddrinfo() blocks inside lwIP on the targets (up to its retries, seconds)
and would stall every task, control included. So the broker name is resolved HERE only:
an IP literal needs no query; a name is asked of the interface's DNS server
(ifconfig()[3]) with our own query (heatgw.dns) over a non-blocking UDP socket awaited
through asyncio (heatgw.ntp.udp_request, bounded), once per link-up and then every
`dns_refresh_ms`. The address is cached in `broker_ip`; the MQTT task only reads it and
never resolves (a failed refresh keeps the old address). On the host board the host's
resolver answers (getaddrinfo, here too: the host's network).

NTP (heatgw.ntp) runs here too, after each link-up and every `ntp_interval_ms`, and sets
heatgw.clock's UTC for payloads only. heatgw.dns and heatgw.ntp are loaded for these
queries and dropped again after them.

Each stretch of this task between two awaits (a loop iteration, what follows a DNS or NTP
reply: events go to the sinks, the flash queue) and each DNS or NTP datagram's handling
(heatgw.ntp) is measured in real time by heatgw.clock.took ("net", "dns", "udp").
"""

try:
    from micropython import const
except ImportError:  # CPython (host tools, tests): const() is the identity on ints
    const = int

from heatgw import clock, forget

_RETRY_MS = const(60_000)  # a failed DNS or NTP query is asked again after this


class Backoff:
    """Capped exponential backoff with jitter: base_ms, 2*base_ms, ... up to cap_ms,
    each shortened by a random 0..jitter_pct % (so nodes that lost the same AP do not
    retry in step). rand(n) -> int in 0..n-1."""

    def __init__(self, base_ms=1000, cap_ms=60_000, jitter_pct=25, rand=None):
        if not 0 < base_ms <= cap_ms < 1 << 29 or not 0 <= jitter_pct < 100:
            raise ValueError("need 0 < base_ms <= cap_ms < 2**29, 0 <= jitter_pct < 100")
        self.base_ms = base_ms
        self.cap_ms = cap_ms
        self.jitter_pct = jitter_pct
        if rand is None:
            import random

            rand = lambda n: random.getrandbits(30) % n  # noqa: E731 - small ints
        self._rand = rand
        self.attempts = 0

    def reset(self):
        self.attempts = 0

    def next_ms(self):
        d = self.base_ms
        for _ in range(self.attempts):  # doubling, capped: no shift overflow
            d <<= 1
            if d >= self.cap_ms:
                d = self.cap_ms
                break
        self.attempts += 1
        j = d * self.jitter_pct // 100
        return d - (self._rand(j + 1) if j else 0)


class Net:
    def __init__(self, board, secrets, on_event, broker_host=None, broker_port=1883,
                 ntp_server=None, poll_ms=250, connect_timeout_ms=20_000, base_ms=1000,
                 cap_ms=60_000, jitter_pct=25, rand=None, dns_timeout_ms=3000,
                 dns_refresh_ms=3_600_000, ntp_interval_ms=3_600_000, ntp_timeout_ms=2000,
                 dns_port=53, ntp_port=123):
        kinds = getattr(board, "NET_INTERFACES", ())
        if not kinds:
            raise ValueError("board %s has no network interface" % board.NAME)
        self.board = board
        self.kind = kinds[0]
        self.secrets = secrets
        self.on_event = on_event
        self.broker_host = broker_host
        self.broker_port = broker_port
        self.ntp_server = ntp_server
        self.poll_ms = poll_ms
        self.connect_timeout_ms = connect_timeout_ms
        self.backoff = Backoff(base_ms, cap_ms, jitter_pct, rand)
        self.dns_timeout_ms = dns_timeout_ms
        self.dns_refresh_ms = dns_refresh_ms
        self.ntp_interval_ms = ntp_interval_ms
        self.ntp_timeout_ms = ntp_timeout_ms
        self.dns_port = dns_port
        self.ntp_port = ntp_port
        self.up = False
        self.ip = None
        self.dns_server = None
        self.broker_ip = None  # cached: the MQTT task reads it, never resolves
        self.iface = None

    def _event(self, state, **kw):
        ev = {"kind": "net", "state": state, "iface": self.kind}
        for k in kw:
            ev[k] = kw[k]
        self.on_event(ev)

    def _set_up(self, ip):
        self.up = True
        self.ip = ip
        self.backoff.reset()
        self._fresh = True  # DNS and NTP again after every link-up
        self._event("up", ip=ip)

    def _set_down(self, reason):
        if self.up:
            self.up = False
            self.ip = None
            self._event("down", reason=reason)

    def _addr(self):
        cfg = self.iface.ifconfig()
        self.dns_server = cfg[3] if len(cfg) > 3 and cfg[3] not in ("", "0.0.0.0") else None
        return cfg[0]

    async def run(self, asyncio):
        """The task (Gateway.add_task(name, net.run)): bring the link up, keep it up."""
        self.up = False
        self.iface = self.board.network_interface(self.kind)
        if self.iface is None:  # the host board: the host's network is up
            self._set_up(None)
            while True:
                await self._services(asyncio)
                await asyncio.sleep_ms(self.poll_ms * 40)
        if self.kind == "wlan":
            from heatgw import wlan

            await wlan.run(self, asyncio)
        else:
            await self._lan(asyncio)

    async def _lan(self, asyncio):
        iface = self.iface
        while True:
            try:
                iface.active(True)
                break
            except OSError as e:
                d = self.backoff.next_ms()
                self._event("down", reason="phy_error_%s" % (e.args[0] if e.args else "?"),
                            retry_in_ms=d)
                await asyncio.sleep_ms(d)
        while True:
            t0 = clock.real_us()
            if iface.isconnected():
                if not self.up:
                    self._set_up(self._addr())
                clock.took(t0, "net")
                await self._services(asyncio)
            else:
                if self.up:
                    self._set_down("link_down")
                clock.took(t0, "net")  # not after _services: its awaits are no stretch
            await asyncio.sleep_ms(self.poll_ms)

    # -- after link-up: DNS and NTP, only here ----------------------------------------

    async def _services(self, asyncio):
        now = clock.ticks_ms()
        fresh = self._fresh
        self._fresh = False
        if self.broker_host and (fresh or clock.ticks_diff(now, self._dns_next) >= 0):
            ip = await self.resolve(asyncio, self.broker_host)
            t0 = clock.real_us()
            if ip:
                self.broker_ip = ip
                self._dns_next = clock.ticks_add(now, self.dns_refresh_ms)
            else:  # keep the cached address; ask again sooner
                self._event("dns_failed", host=self.broker_host)
                self._dns_next = clock.ticks_add(now, _RETRY_MS)
            clock.took(t0, "net")
        if self.ntp_server and (fresh or clock.ticks_diff(now, self._ntp_next) >= 0):
            ok = await self.sync_utc(asyncio)
            self._ntp_next = clock.ticks_add(now, self.ntp_interval_ms if ok else _RETRY_MS)
        forget("dns")  # loaded for a query (resolve, sync_utc): until the next one
        forget("ntp")

    # class defaults: an instance holds them only once they change
    _fresh = False
    _qid = 0  # the last DNS query id
    utc_synced = False
    _dns_next = 0
    _ntp_next = 0

    async def resolve(self, asyncio, host):
        """host's IPv4 address as a string, or None. Only the network task calls this."""
        parts = host.split(".")  # an IP literal needs no query
        if len(parts) == 4:
            for p in parts:
                if not p.isdigit() or int(p) > 255:
                    break
            else:
                return host
        if self.iface is None:  # the host board: the host's resolver
            import socket

            t0 = clock.real_us()
            try:  # blocks in the host's resolver: measured
                sa = socket.getaddrinfo(host, self.broker_port, 0, socket.SOCK_STREAM)[0][-1]
                # the port's sockaddr: a (host, port) tuple, or bytes (unix: sockaddr_in)
                if type(sa) is tuple:
                    return sa[0]
                return "%d.%d.%d.%d" % (sa[4], sa[5], sa[6], sa[7])
            except OSError:
                return None
            finally:
                clock.took(t0, "dns")
        if self.dns_server is None:
            return None
        from heatgw import dns

        self._qid = (self._qid + 1) & 0xFFFF
        return await dns.resolve(asyncio, self.dns_server, self.dns_port, host, self._qid,
                                 self.dns_timeout_ms)

    async def sync_utc(self, asyncio):
        from heatgw import ntp

        server = await self.resolve(asyncio, self.ntp_server)
        utc = None
        if server:
            utc = await ntp.query(asyncio, server, self.ntp_port, self.ntp_timeout_ms)
        t0 = clock.real_us()
        try:
            if utc is None:
                self._event("ntp_failed", server=self.ntp_server)
                return False
            clock.set_utc_s(utc)
            first = not self.utc_synced
            self.utc_synced = True
            if first:
                self._event("utc_set", utc=utc)
            return True
        finally:
            clock.took(t0, "net")

