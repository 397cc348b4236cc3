"""DNS over UDP (RFC 1035) without blocking: the A record of the broker's (or the NTP
server's) name, asked of the interface's DNS server. heatgw.net loads this when it
resolves a name (once per link-up, then every `dns_refresh_ms`) and drops it again.

    ip = await dns.resolve(asyncio, "192.168.1.1", 53, "broker.site.example", qid, 3000)

One query, one non-blocking UDP socket awaited through asyncio's poller
(heatgw.ntp.udp_request), bounded by the timeout: "a.b.c.d", or None (no answer, no A
record, NXDOMAIN, a reply that is not ours).
"""

from heatgw import ntp


async def resolve(asyncio, server, port, name, qid, timeout_ms):
    """name's IPv4 address as "a.b.c.d", or None."""
    ip = await ntp.udp_request(asyncio, server, port, dns_query(name, qid),
                               lambda d: dns_parse(d, qid), timeout_ms)
    return ip or None


def dns_query(name, qid):
    """A DNS query (RFC 1035) for the A record of name, with id qid (0..65535)."""
    q = bytearray(b"%c%c\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00" % (qid >> 8, qid & 255))
    for label in name.split("."):
        if not 0 < len(label) < 64:
            raise ValueError("bad host name")
        q.append(len(label))
        q.extend(label.encode())
    q.extend(b"\x00\x00\x01\x00\x01")
    return q


def _skip_name(d, i):
    while i < len(d):
        n = d[i]
        if n >= 0xC0:
            return i + 2  # compression pointer ends the name
        if n == 0:
            return i + 1
        i += n + 1
    raise ValueError


def dns_parse(d, qid):
    """The first A record's address ("a.b.c.d") of a reply to dns_query(.., qid), or
    None: not our reply (ignored), "" for an answer without one (NXDOMAIN, no A)."""
    if len(d) < 12 or (d[0] << 8 | d[1]) != qid or not d[2] & 0x80:
        return None
    try:
        if d[3] & 15:
            return ""  # rcode: no such name, server failure
        i = 12
        for _ in range(d[4] << 8 | d[5]):
            i = _skip_name(d, i) + 4
        for _ in range(d[6] << 8 | d[7]):
            i = _skip_name(d, i)
            rtype, rlen = d[i] << 8 | d[i + 1], d[i + 8] << 8 | d[i + 9]
            i += 10
            if rtype == 1 and rlen == 4 and i + 4 <= len(d):
                return "%d.%d.%d.%d" % (d[i], d[i + 1], d[i + 2], d[i + 3])
            i += rlen
    except (ValueError, IndexError):
        pass
    return ""
