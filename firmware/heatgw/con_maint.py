"""Console command `maintenance`."""

HELP = """maintenance       whether maintenance holds and who holds it (board key, console, mqtt)
maintenance on    hold the node in bypass for maintenance (asks to confirm): a
                  request on the command inbox, source console; an event names it
maintenance off   release the console's hold (asks to confirm); the board's key and
                  other sources keep theirs. Reuse comes back only after the fail-safe's
                  recover and dwell times."""

from heatgw import clock  # noqa: E402


async def run(con, args):
    gw = con.gw
    ins = gw.inputs
    if not args:
        con.out("maintenance: %s" % ("held by " + ins.maintenance_by if ins.maintenance
                                     else "off"))
        return
    if len(args) != 1 or args[0] not in ("on", "off"):
        con.error("maintenance takes on or off")
        return
    on = args[0] == "on"
    q = ("Hold the node in maintenance (bypass: heat to the dry cooler)?" if on else
         "Release the console's maintenance hold?")
    if not await con.confirm(q):
        return
    if not con.post("maintenance", on):
        return
    t0 = clock.ticks_ms()
    while clock.ticks_diff(clock.ticks_ms(), t0) < 2 * gw.tick_ms + 100:
        await con.sleep(50)
    con.out("maintenance: %s; state %s" % (
        "held by " + ins.maintenance_by if ins.maintenance else "off", gw.failsafe.state))
