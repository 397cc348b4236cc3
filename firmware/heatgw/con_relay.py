"""Console command `relay`: the relays, why, and the trip history from the event log."""

HELP = """relay         the relay state (reuse: energised, heat to the building; bypass: every
              relay de-energised, heat to the dry cooler), the main cause, the conditions
              that hold now and the latched ones, a latched fault, and the trip history:
              the last N state changes, trips, latches and resets kept in the event log on
              flash (newest last). relay N: N entries (1..64, default 10)."""

_KINDS = ("state", "trip", "latch", "reset", "supervisor", "crash")


async def run(con, args):
    n = 10
    if args:
        if len(args) > 1 or not args[0].isdigit() or not 1 <= int(args[0]) <= 64:
            con.error("relay takes a number of history entries, 1..64")
            return
        n = int(args[0])
    gw = con.gw
    fs = gw.failsafe
    con.out("relays   %s: %s" % (
        "REUSE" if gw.relay_reuse else "BYPASS",
        ", ".join("%s %s" % (k, "energised" if gw.relay_reuse else "released")
                  for k in gw.board.RELAY_PINS)))
    con.out("because  %s" % fs.cause)
    con.out("holding  %s" % (", ".join(fs.active) or "nothing"))
    con.out("latched  %s%s" % (", ".join(fs.latched) or "nothing",
                               "  (ack resets them)" if fs.latched else ""))
    if gw.fault:
        con.out("FAULT    %s: relays released until the watchdog resets the node" % gw.fault)
    hist = []
    for ev in gw.log.each():
        if ev.get("kind") in _KINDS:
            hist.append(line(ev))
            if len(hist) > n:
                hist.pop(0)
    con.out("history  (%d, newest last)" % len(hist))
    for h in hist:
        con.out("  " + h)


def line(ev):
    """One event as a short line: seq, boot, uptime, kind, what."""
    k = ev.get("kind")
    what = ev.get("state") or ev.get("result") or ""
    why = ev.get("reason") or ev.get("task") or ""
    src = ev.get("source") or (ev.get("values") or {}).get("source") or ""
    return "#%s boot %s +%ss %s %s %s%s" % (
        ev.get("seq"), ev.get("boot"), (ev.get("up_ms") or 0) // 1000, k, what, why,
        " by " + src if src else "")
