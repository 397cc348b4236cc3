"""UTC from NTP (RFC 5905, client mode), without blocking: for payload timestamps only.

    utc = await ntp.query(asyncio, "192.0.2.1", 123, timeout_ms=2000)   # int s or None
    clock.set_utc_s(utc)        # heatgw.clock: payloads' "utc"; never metering or control

Why not the port's `ntptime`: its settime() blocks in recv() for up to its socket timeout
(1 s) on every call and sets machine.RTC, which metering does not read anyway. Here one
non-blocking UDP socket is awaited through asyncio's poller (queue_write, then
queue_read), bounded by wait_for_ms: the control task keeps its ticks while the reply is
out. On the host board the same waits are what its virtual-time asyncio counts as
"a reply awaited" (README, real sockets in virtual time), so a real responder's real
delay is a virtual delay too.

`server` must be an IP address: names are resolved by heatgw.net (non-blocking DNS),
never here. The reply is checked: server mode, a stratum of 1..15, not "unsynchronised",
our own transmit timestamp echoed back as its origin (a stale or spoofed packet is
dropped), and a time after 2024. UTC is whole seconds (payloads carry seconds).
"""

from micropython import const

from heatgw import clock

# 1900-01-01 to 1970-01-01 is 2208988800 s = 0x83AA7E80, kept as two 16-bit halves: the
# targets' small ints stop at 2**30 (the result, seconds since 1970, is a long int anyway).
_DELTA_HI = const(0x83AA)
_DELTA_LO = const(0x7E80)
_MIN_UTC_HI = const(0x6592)  # utc >> 16 before 2024-01-01: a server with no real time
_PKT = const(48)


def _sockaddr(ip, port):
    # A numeric address: getaddrinfo parses it, no resolver query (no blocking).
    import socket

    return socket.getaddrinfo(ip, port, 0, socket.SOCK_DGRAM)[0][-1]


async def _wait(asyncio, s, write):
    # One wait on the socket through asyncio's poller (as asyncio.Stream does).
    from asyncio import core

    yield core._io_queue.queue_write(s) if write else core._io_queue.queue_read(s)


async def _exchange(asyncio, s, addr, pkt, check):
    # each stretch after a wait is measured in real time (heatgw.clock.took)
    await _wait(asyncio, s, True)
    t0 = clock.real_us()
    s.sendto(pkt, addr)
    clock.took(t0, "udp")
    while True:
        await _wait(asyncio, s, False)
        t0 = clock.real_us()
        try:
            data = s.recv(512)
        except OSError:
            continue  # woken without data (EAGAIN): wait again
        finally:
            clock.took(t0, "udp")
        res = check(data)
        if res is not None:
            return res


async def udp_request(asyncio, ip, port, pkt, check, timeout_ms):
    """Send pkt to ip:port over a non-blocking UDP socket; check(reply) returns a result
    or None (ignore that datagram). The result, or None after timeout_ms (or an OSError:
    no route, network down)."""
    import socket

    t0 = clock.real_us()
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.setblocking(False)
        addr = _sockaddr(ip, port)
        clock.took(t0, "udp")
        return await asyncio.wait_for_ms(_exchange(asyncio, s, addr, pkt, check), timeout_ms)
    except (OSError, asyncio.TimeoutError):
        return None
    finally:
        s.close()


def request(token):
    """A client-mode request (LI 0, version 4, mode 3) whose transmit timestamp is the
    4-byte token (the server echoes it as the origin)."""
    pkt = bytearray(_PKT)
    pkt[0] = 0x23
    pkt[40:44] = token
    return pkt


def parse(data, token):
    """UTC seconds from a server reply to request(token), or None if it is not one."""
    if len(data) < _PKT:
        return None
    li, mode, stratum = data[0] >> 6, data[0] & 7, data[1]
    if mode != 4 or li == 3 or not 1 <= stratum <= 15 or data[24:28] != token:
        return None
    hi = (data[40] << 8 | data[41]) - _DELTA_HI
    if hi < _MIN_UTC_HI:
        return None  # before 2024 (or before 1970)
    t = hi * 65536 + (data[42] << 8 | data[43]) - _DELTA_LO
    if data[44] >= 0x80:
        t += 1  # fraction >= 0.5 s: round
    return t


async def query(asyncio, server, port=123, timeout_ms=2000):
    """UTC seconds from the NTP server at IP `server`, or None (no valid answer in time)."""
    import os

    token = os.urandom(4)
    return await udp_request(asyncio, server, port, request(token),
                             lambda d: parse(d, token), timeout_ms)
