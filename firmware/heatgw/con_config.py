"""Console command `config`: get, set, diff, save (heatgw.cfgedit does the work)."""

HELP = """config get [KEY]      the running configuration, a section or one key (dotted:
                      control.sink_return_max_c); a staged or saved change is shown
                      beside its key. Secrets live in secrets.json and are never shown.
config set KEY VALUE  stage a change, checked against the schema (type, range, allowed
                      values): VALUE as JSON (42.5, true, null, {"r0_ohm": 1000, ...}), a
                      text key's value as is or in double quotes. Nothing is written yet.
config diff           the staged and the saved changes against the running configuration,
                      and what `config save` would refuse
config save           validate the whole configuration with the changes (every key, the
                      cross-field rules, the board's dead-man hold), then write config.json
                      sealed (SHA-256), after confirmation. An invalid configuration is
                      never written. It takes effect at the next boot: `reboot`.
config drop           forget the staged changes"""

_USAGE = "config get [KEY] | set KEY VALUE | diff | save | drop"


def _running(con):
    return con.gw.cfg if con.gw is not None else con.safe.cfg


def _holder(con):
    """What lives between two commands (neither this module nor `con` does): the node."""
    return con.gw if con.gw is not None else con.safe


def _staged(con):
    """The staged changes: a list [[key, value], ...] on the node until saved, dropped or
    the next boot (RAM only: a reboot forgets what was not saved)."""
    h = _holder(con)
    s = getattr(h, "config_staged", None)
    if s is None:
        s = h.config_staged = []
    return s


def _hold_ms():
    import board

    return getattr(board, "DEAD_MAN_HOLD_MS", None)


def _path():
    import board

    return board.data_dir() + "/config.json"


async def run(con, args):
    sub = args[0] if args else "get"
    rest = args[1:]
    if sub == "get" and len(rest) <= 1:
        await _get(con, rest[0] if rest else None)
    elif sub == "set" and len(rest) >= 2:
        await _set(con, rest[0], " ".join(rest[1:]))
    elif sub == "diff" and not rest:
        await _diff(con)
    elif sub == "save" and not rest:
        await _save(con)
    elif sub == "drop" and not rest:
        n = len(_staged(con))
        _holder(con).config_staged = []
        con.out("config: %d staged change%s dropped" % (n, "" if n == 1 else "s"))
    else:
        con.error("usage: " + _USAGE)


def _leaves(key, v, out):
    if type(v) is dict and v:
        for k in sorted(v):
            _leaves(key + "." + k if key else k, v[k], out)
    else:
        out.append((key, v))
    return out


async def _get(con, key):
    from heatgw import cfgedit

    if key is not None and (key.split(".")[0] == "secrets" or cfgedit.is_secret(key)):
        con.out("%s: never shown (secrets live in secrets.json)" % key)
        return
    running = _running(con)
    if key is not None:
        _node, err = cfgedit.node(key)
        if err is not None:
            con.error(err)
            return
    v = running if key is None else cfgedit.get(running, key)
    changed = {}
    staged = _staged(con)
    try:  # what the next boot would run, beside the running value
        _doc, cfg, _errs, _src = cfgedit.pending(_path(), running, staged)
        _doc = None
        await con.sleep(0)
        for k, _a, b in cfgedit.diff(running, cfg or {}):
            changed[k] = b
        cfg = None
    except MemoryError:
        con.out("(not enough memory to compare with the saved configuration)")
    for k, val in _leaves(key or "", v, []):
        line = "%s = %s" % (k, cfgedit.show(k, val))
        if k in changed:
            line += "   (pending: %s)" % cfgedit.show(k, changed[k])
        con.out(line)


async def _set(con, key, text):
    from heatgw import cfgedit

    if cfgedit.is_secret(key) or key.split(".")[0] == "secrets":
        con.error("%s: secrets are set by provisioning (secrets.json), never here" % key)
        return
    value, err = cfgedit.typed(key, text)
    if err is not None:
        con.error(err + ": not staged")
        return
    staged = _staged(con)
    for i in range(len(staged) - 1, -1, -1):
        k = staged[i][0]
        if k == key or k.startswith(key + "."):  # replaced by this change
            staged.pop(i)
    staged.append([key, value])
    await con.sleep(0)
    con.out("config: %s = %s staged (%d change%s; `config save` writes them)"
            % (key, cfgedit.show(key, value), len(staged), "" if len(staged) == 1 else "s"))
    try:
        _doc, _cfg, errs, _src = cfgedit.pending(_path(), _running(con), staged, _hold_ms())
    except MemoryError:  # staged anyway: `config save` checks it all before writing
        con.out("(not enough free heap to check the whole configuration now: `config "
                "save` will)")
        return
    _doc = _cfg = None
    if errs:
        con.out("note: `config save` would refuse this now (stage more changes, or "
                "`config drop`):")
        for e in errs[:4]:
            con.out("  " + e)


async def _diff(con):
    from heatgw import cfgedit

    running = _running(con)
    staged = _staged(con)
    doc, cfg, errs, src = cfgedit.pending(_path(), running, staged, _hold_ms())
    await con.sleep(0)
    keys = [k for k, _ in staged]
    rows = cfgedit.diff(running, cfg or {})
    cfg = doc = None  # noqa: F841 - dropped before printing
    if not rows:
        con.out("config: no changes: config.json is the running configuration")
    for k, a, b in rows:
        why = "staged" if any(k == s or k.startswith(s + ".") for s in keys) else \
            "saved, next boot"
        con.out("%s: %s -> %s   (%s)" % (k, cfgedit.show(k, a), cfgedit.show(k, b), why))
    if src != "file":
        con.out("(config.json is not a valid configuration: changes apply to the running "
                "one)")
    if errs:
        con.out("`config save` would refuse this:")
        for e in errs[:6]:
            con.out("  " + e)


async def _save(con):
    from heatgw import cfgedit

    staged = _staged(con)
    path = _path()
    try:
        data, errs = cfgedit.prepare(path, _running(con), staged, _hold_ms())
    except MemoryError:
        data, errs = None, ["not enough free heap to validate the configuration now (the "
                            "staged changes are kept: try again)"]
    await con.sleep(0)
    if data is None:
        con.error("config save: refused, nothing written:")
        for e in errs[:8]:
            con.out("  " + e)
        return
    keys = [k for k, _ in staged]
    if not await con.confirm("Write config.json (%d byte%s%s)? It takes effect at the "
                             "next boot." % (len(data), "" if len(data) == 1 else "s",
                                             ", changes: " + ", ".join(keys) if keys else "")):
        return
    wrote, err = cfgedit.commit(path, data)
    data = None
    if err is not None:
        con.error("config save: " + err)
        return
    _holder(con).config_staged = []
    con.event({"kind": "config", "saved": keys, "file": "config.json",
               "written": wrote})
    con.out("config save: %s; sealed (SHA-256), read back; takes effect at the next boot "
            "(reboot)" % ("written" if wrote else "config.json already holds it"))
