"""Boot-loop protection: the reset history on flash, and whether this boot is safe mode.

    hist, why = bootloop.at_boot(board, cfg)  # heatgw.start, before the application
    if why: ...safe mode (heatgw.safemode)...

N resets within M minutes (config `safe_mode.resets`, `safe_mode.window_min`) that were
watchdog or crash resets make the next boot start in safe mode: the application does not
start, the relays stay safe, the console and the network run. It is sticky: a power cycle
does not leave it, the technician does (`safemode clear` at the console, or at the REPL
`from heatgw import bootloop; bootloop.clear()`).

What counts: the reset cause (board.reset_cause(), else machine.reset_cause()) "watchdog"
or "hard" (on the ESP32 a panic is a hard reset) - unless the node asked for it: a reset
after the application stopped in order (Ctrl-C, the REPL, mpremote) or the console's
`reboot` / `factory-reset` / `safemode clear` is "planned" and does not count. Power-on,
brown-out and soft resets never count.

Time across resets: there is no clock that survives a reset, so each boot remembers how
long the boot before it ran: while the history holds a counted reset, the application
writes its uptime every window/10 (at least 10 s) until it has run a whole window, and then
forgets the history (it was stable). So the resets are "within M minutes" to one
checkpoint period. A node that never crashes writes nothing here after its boot record.

File: <data>/resets.a, .b (heatgw.store.SlotStore: two slots, CRC), JSON:
    {"v": 1, "hist": [[counted 0|1, run_s before that reset, cause], ...] (oldest first,
     since the last stable run), "up_s": this boot's run time at its last checkpoint,
     "planned": why or null, "safe": why safe mode holds, or null, "boots": [causes]}
"""

import json

from heatgw.store import SlotStore

COUNTED = ("watchdog", "hard")
_KEEP = 24  # history entries kept (more than any sensible safe_mode.resets)
_CAUSES = 8  # the last boots' causes kept for the console


def _store(data):
    return SlotStore(data + "/resets.a", data + "/resets.b", max_payload=2048)


def load(data):
    try:
        _, payload = _store(data).load()
        rec = json.loads(payload) if payload else None
    except (OSError, ValueError):
        rec = None
    if type(rec) is not dict or rec.get("v") != 1:
        rec = {"v": 1}
    for k, v in (("hist", []), ("up_s", 0), ("planned", None), ("safe", None),
                 ("boots", [])):
        if k not in rec:
            rec[k] = v
    return rec


def save(data, rec):
    _store(data).save(json.dumps(rec).encode())


def reset_cause(board):
    """ "power_on", "soft", "hard", "watchdog", "deepsleep" or "unknown"."""
    f = getattr(board, "reset_cause", None)
    if f is not None:
        return f()
    try:
        import machine
    except ImportError:
        return "unknown"
    c = machine.reset_cause()
    for name, const_name in (("watchdog", "WDT_RESET"), ("soft", "SOFT_RESET"),
                             ("hard", "HARD_RESET"), ("deepsleep", "DEEPSLEEP_RESET"),
                             ("power_on", "PWRON_RESET")):
        if c == getattr(machine, const_name, None):
            return name
    return "unknown"


def judge(hist, resets, window_s):
    """Why safe mode, or None: at least `resets` counted resets within window_s, walking
    back from the newest through each boot's run time."""
    if resets <= 0:
        return None
    n = 0
    elapsed = 0
    for i in range(len(hist) - 1, -1, -1):
        counted, run_s = hist[i][0], hist[i][1]
        if counted:
            n += 1
            if n >= resets:
                return "%d watchdog/crash resets within %d min" % (n, window_s // 60)
        elapsed += run_s
        if elapsed >= window_s:
            break
    return None


def at_boot(board, cfg):
    """Record this boot's reset and decide: (record, why safe mode or None). Writes the
    record once (every boot: the causes; a crash loop needs the count)."""
    data = board.data_dir()
    sm = cfg.get("safe_mode") or {}
    resets = sm.get("resets", 4)
    window_s = sm.get("window_min", 10) * 60
    rec = load(data)
    cause = reset_cause(board)
    planned = rec["planned"]
    counted = 1 if cause in COUNTED and not planned else 0
    rec["boots"] = (rec["boots"] + [cause + (" (planned: %s)" % planned if planned else "")]
                    )[-_CAUSES:]
    hist = rec["hist"]
    if counted or hist:
        hist.append([counted, rec["up_s"], cause])
        del hist[:-_KEEP]
    if not any(h[0] for h in hist):
        hist.clear()  # nothing counted since the last stable run: nothing to time
    rec["up_s"] = 0
    rec["planned"] = None
    if rec["safe"] is None:
        rec["safe"] = judge(hist, resets, window_s)
    try:
        save(data, rec)
    except OSError as e:  # a failing flash must not stop the boot (or safe mode)
        print("resets: cannot save:", repr(e))
    return rec, rec["safe"]


def boot(board, cfg):
    """heatgw.start's boot-loop check: records this reset; runs safe mode when it holds
    (heatgw.safemode; True once it stopped). Otherwise None, or with a counted reset in
    the history a function gw -> the coroutine function of the `resets` task that times
    this run (checkpoints)."""
    hist, why = at_boot(board, cfg)
    if why is not None:
        from heatgw import safemode

        safemode.run(board, cfg, why, hist)
        return True
    if not hist["hist"]:
        return None
    window_s = cfg["safe_mode"]["window_min"] * 60
    return lambda gw: (lambda aio: checkpoints(gw, aio, window_s))


def planned(data, why):
    """The next reset is the node's or a technician's own: it does not count."""
    rec = load(data)
    rec["planned"] = why
    save(data, rec)


def planned_reset(board, why):
    """planned(), never raising: a failing flash only means the reset may count."""
    try:
        planned(board.data_dir(), why)
    except OSError as e:
        print("resets: cannot save:", repr(e))


def restart(gw, why):
    """The node restarts itself in order (the console's reboot, factory-reset, safemode
    clear): the application stopped (heatgw.start.stop: relays safe, totals saved), the
    reset marked planned, then the board resets (board.reset(), else machine.reset()).
    Never returns."""
    import board

    if gw is not None:
        from heatgw import start

        start.stop(gw)
    planned_reset(board, why)
    f = getattr(board, "reset", None)
    if f is None:
        import machine

        f = machine.reset
    f()


def clear(data=None):
    """Leave safe mode and forget the history (the technician's `safemode clear`)."""
    if data is None:
        import board

        data = board.data_dir()
    rec = load(data)
    rec["safe"] = None
    rec["hist"] = []
    rec["up_s"] = 0
    save(data, rec)
    return rec


async def checkpoints(gw, asyncio, window_s):
    """While the history holds a counted reset: the uptime on flash every window/10,
    until the application has run the whole window (stable: the history is forgotten)."""
    data = gw.board.data_dir()
    period_ms = max(10, window_s // 10) * 1000
    while True:
        await asyncio.sleep_ms(period_ms)
        up_s = gw.uptime_ms // 1000
        rec = load(data)
        if up_s >= window_s:
            rec["hist"] = []
            rec["up_s"] = 0
            save(data, rec)
            gw.event({"kind": "resets", "state": "stable", "up_s": up_s})
            return
        rec["up_s"] = up_s
        save(data, rec)
