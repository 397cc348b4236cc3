"""Console command `help`: the command table, or one command's help."""

HELP = """help          the commands, one line each
help NAME     what NAME does, its arguments and what it asks (also: NAME --help)"""


async def run(con, args):
    from heatgw.con_table import TABLE, find

    if len(args) > 1:
        con.error("help takes one command name at most")
        return
    if args:
        name = args[0].lower()
        e = find(name)
        if e is None:
            con.error("no command %r: type help" % name[:24])
            return
        try:
            mod = __import__("heatgw." + e[1].lstrip("+"), None, None, ("run",))
        except ImportError:
            con.out("%s: %s (not available in this build)" % (name, e[2]))
            return
        con.out(getattr(mod, "HELP", None) or "%s: %s" % (name, e[2]))
        return
    safe = con.safe is not None
    for e in TABLE:
        tag = "   (not in safe mode)" if safe and e[1][0] != "+" else ""
        con.out("%-14s %s%s" % (e[0], e[2], tag))
    con.out("Commands that change something ask to confirm: type yes. Ctrl-C stops the "
            "application (relays safe, totals saved) and leaves the MicroPython REPL.")
