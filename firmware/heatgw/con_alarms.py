"""Console commands `alarms` and `ack`."""

HELP = """alarms        the fail-safe's conditions that hold now and its latched trips, a latched
              fault, and (with telemetry) every held alarm: severity, active or cleared,
              waiting for an ack, when raised, count, detail.
ack           reset the latched trips (it_coolant_high, valve_stuck): asks to confirm,
              then a trip_reset request on the command inbox (source console). The
              fail-safe resets only a trip whose condition is clear; the answer says what
              is still latched.
ack ALARM     acknowledge one held alarm by its id (a crash, a dropped queue range, ...):
              asks to confirm; an `ack` event naming the console. An ack never resets a
              trip."""

from heatgw import clock  # noqa: E402


async def run(con, args):
    gw = con.gw
    fs = gw.failsafe
    book = getattr(getattr(gw, "telemetry", None), "book", None)
    if con.cmd == "alarms":
        if args:
            con.error("alarms takes no arguments")
            return
        con.out("holding  %s" % (", ".join(fs.active) or "nothing"))
        con.out("latched  %s" % (", ".join(fs.latched) or "nothing"))
        if gw.fault:
            con.out("FAULT    %s" % gw.fault)
        if book is None:
            con.out("alarms   no alarm book without telemetry (an mqtt section)")
            return
        held = book.alarms()
        con.out("alarms   %d held" % len(held))
        for a in held:
            con.out("  %-26s %-8s %-7s %s raised +%ss x%d %s" % (
                a.id, a.severity, "ACTIVE" if a.active else "cleared",
                ("ack by " + a.acked_by) if a.acked else
                ("NEEDS ACK" if a.ack_required else "-"),
                (a.raised_up_ms or 0) // 1000, a.count, a.detail or ""))
        return
    if len(args) > 1:
        con.error("ack takes nothing (latched trips) or one alarm id")
        return
    if args:
        aid = args[0]
        if book is None or book.get(aid) is None:
            con.error("no held alarm %r (see alarms)" % aid[:40])
            return
        if await con.confirm("Acknowledge alarm %s?" % aid):
            con.event({"kind": "ack", "alarm": aid})
            a = book.get(aid)
            con.out("ack: %s %s" % (aid, "acknowledged" if a is None or a.acked
                                    else "not acknowledged"))
        return
    if not fs.latched:
        con.out("ack: no latched trip")
        return
    if not await con.confirm("Reset the latched trips %s? A trip whose condition still "
                             "holds stays latched." % ", ".join(fs.latched)):
        return
    if not con.post("trip_reset"):
        return
    # the control task applies it at its next tick: wait for two
    t0 = clock.ticks_ms()
    while clock.ticks_diff(clock.ticks_ms(), t0) < 2 * gw.tick_ms + 100:
        await con.sleep(50)
    con.out("ack: reset requested; latched now: %s" % (", ".join(fs.latched) or "nothing"))
