"""Console command `log`: the event log on flash."""

HELP = """log [N]       the newest N events kept on flash (1..64, default 20), oldest first, each
              as stored: JSON with seq, boot id, uptime (up_ms) and UTC when known.
log KIND [N]  only events of that kind (state, trip, clear, latch, reset, request, boot,
              console, task, crash, net, ...)."""

import json  # noqa: E402


async def run(con, args):
    n = 20
    kind = None
    if args and not args[0].isdigit():
        kind = args.pop(0)
    if len(args) > 1 or (args and (not args[0].isdigit() or not 1 <= int(args[0]) <= 64)):
        con.error("log takes [KIND] [N], N in 1..64")
        return
    if args:
        n = int(args[0])
    log = con.gw.log if con.gw is not None else con.safe.log
    total = 0
    for ev in log.each():
        if kind is None or ev.get("kind") == kind:
            total += 1
    skip = total - n
    shown = 0
    for ev in log.each():
        if kind is not None and ev.get("kind") != kind:
            continue
        skip -= 1
        if skip >= 0:
            continue
        con.out(json.dumps(ev))
        shown += 1
        if shown % 8 == 0:
            await con.sleep(0)
    con.out("log: %d of %d event(s)%s; errors writing the log: %d" % (
        shown, total, " of kind " + kind if kind else "", log.errors))
