"""Console command `safemode`: boot-loop protection (heatgw.bootloop)."""

HELP = """safemode        whether the node is in safe mode and why, the reset history (counted
                watchdog/crash resets and the run time before each), the causes of the
                last boots, and the configured limit (safe_mode.resets within
                safe_mode.window_min minutes).
safemode clear  forget the reset history; in safe mode, also leave it: the node restarts
                and the application starts (asks to confirm)."""


async def run(con, args):
    import board

    from heatgw import bootloop

    data = board.data_dir()
    cfg = con.gw.cfg if con.gw is not None else con.safe.cfg
    sm = cfg.get("safe_mode") or {}
    if not args:
        rec = bootloop.load(data)
        con.out("safe mode  %s" % ("ON: " + con.safe.why if con.safe is not None else
                                   ("next boot: " + rec["safe"]) if rec["safe"] else "off"))
        con.out("limit      %s resets within %s min (safe_mode.resets, window_min)" % (
            sm.get("resets"), sm.get("window_min")))
        con.out("history    %s" % (", ".join("%s after %d s%s" % (
            h[2] if len(h) > 2 else "?", h[1], "" if h[0] else " (not counted)")
            for h in rec["hist"]) or "no counted reset since the last stable run"))
        con.out("last boots %s" % ", ".join(rec["boots"]))
        return
    if args != ["clear"]:
        con.error("safemode takes nothing or clear")
        return
    safe = con.safe is not None
    if not await con.confirm("Clear the reset history%s?" % (
            " and leave safe mode (the node restarts, the application starts)"
            if safe else "")):
        return
    bootloop.clear(data)
    con.event({"kind": "console", "cmd": "safemode clear", "safe_mode": safe})
    if not safe:
        con.out("safemode: history cleared")
        return
    con.out("safemode: cleared; restarting")
    bootloop.restart(None, "safemode clear")
