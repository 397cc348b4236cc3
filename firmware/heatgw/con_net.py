"""Console commands `net` and `mqtt`: their state and counters (never a password)."""

HELP = """net           the network: interface (wlan, lan, the host's), link up or down, address,
              DNS server, the broker's resolved address, whether UTC was set by NTP.
mqtt          the MQTT connection: broker host and port, TLS, user name, client id,
              state, last error, and the counters (published, acked, retransmitted,
              reconnects, failures, timeouts, pings, received), the flash queue (unsent,
              dropped, sequence numbers) and the commands received per result.
Passwords, the Wi-Fi SSID and the command key are never shown."""

from heatgw import clock  # noqa: E402


async def run(con, args):
    if args:
        con.error("%s takes no arguments" % con.cmd)
        return
    gw = con.gw
    src = getattr(gw, "telemetry", None) if gw is not None else con.safe
    cfg = gw.cfg if gw is not None else con.safe.cfg
    m = cfg.get("mqtt") or {}
    net = getattr(src, "net", None) if src is not None else None
    if con.cmd == "net":
        if net is None:
            con.out("net: %s" % ("no network: no mqtt section configured" if not m else
                                 "the board has no network interface"))
            return
        con.out("net      %s, link %s, address %s, dns %s" % (
            net.kind, "up" if net.up else "down", net.ip or "-", net.dns_server or "-"))
        con.out("broker   %s -> %s" % (m.get("host"), net.broker_ip or "not resolved"))
        con.out("utc      %s (%s)" % (clock.utc_s(), "NTP" if net.utc_synced else "not synced"))
        return
    if not m:
        con.out("mqtt: not configured (no mqtt section)")
        return
    tls = m.get("tls")
    con.out("broker   %s port %s, %s, user %s, client id %s, keepalive %s s" % (
        m.get("host"), m.get("port") or (8883 if tls else 1883), "TLS" if tls else "no TLS",
        m.get("username") or "-", m.get("client_id") or cfg.get("node_id"),
        m.get("keepalive_s")))
    c = getattr(src, "client", None)
    if c is None:
        con.out("client   not started")
        return
    st = c.stats()
    con.out("state    %s  last error %s" % (st.pop("state"), st.pop("last_error")))
    con.out("counters " + "  ".join("%s %s" % (k, st[k]) for k in sorted(st)))
    if gw is None:
        return
    tel = src
    q = tel.q
    con.out("queue    unsent %d  dropped %d  queued max %d  sent seq %d..%d" % (
        q.unsent(), q.dropped, tel.queued_max, tel.first_seq, tel.last_seq))
    cc = tel.cmd_counts
    con.out("commands " + ("  ".join("%s %s" % (k, cc[k]) for k in sorted(cc)) or "none"))
