"""The console's one command table, its parser and dispatcher, and the interface commands
use (heatgw.console imports this module for each line typed and drops it afterwards).

TABLE: `name -> (module, one-line help)`. Each command is a small module heatgw.<module>,
imported when its line runs and dropped afterwards (with every heatgw module it imported
that was not loaded before). A module whose name starts with "+" in the table also runs in
safe mode (the application is not running there: `con.gw` is None). A module exports

    HELP = "..."                   (optional) what `help NAME` / `NAME --help` print
    async def run(con, args)       args: the words after the name (str, at most MAX_ARGS)

and uses only this interface of `con`:
    con.gw            the Gateway (None in safe mode: con.safe is set instead)
    con.safe          None, or the safe mode (heatgw.safemode.SafeMode: cfg, why, log, ...)
    con.asyncio       the asyncio module the node runs on
    con.cmd           the command's name as typed (lower case)
    con.out(text)     write text as lines to the port. Never pass a secret: the secrets
                      file's values are Secret objects that print as <secret>; never
                      reveal() one here.
    con.error(text)   one line "error: <text>" (bad arguments, refusals)
    await con.ask(prompt)      the next line typed (stripped), None after ASK_S or an
                               unreadable line
    await con.confirm(text)    True only when the technician types `yes`; anything else
                               says "cancelled: nothing changed"
    con.post(what, value)      a request on the command inbox with source "console"
                               (heatgw.inbox: maintenance, sink_available, trip_reset);
                               False and an error line when the inbox refuses it. Every
                               state change made at the console goes through the inbox
                               or con.event: it is an event naming "console".
    con.event(ev)              log an event dict (heatgw.events) with source "console"
    con.pressed()              True once a key was typed (`watch` stops on a key)
    await con.sleep(ms)
    con.live(on)               someone watches in real time (`watch`): on a board whose time
                               is virtual (the host board under the harness) it follows
                               real time until the command ends (ask() does this itself)

The `config` command (get|set|save|diff) is the module heatgw.con_config, written with
the configuration work; when a build lacks it, `config` answers "config: not available
in this build". It is marked "+": it also runs in safe mode, where con.gw is None and
con.safe.cfg is the configuration the node loaded (so a technician can fix what made the
node crash, then `safemode clear`). A command that raises is one error line; the console
carries on. After each command the node's heap is sampled with the command still loaded
(gw.heap: its figures include what a command costs).
"""

from heatgw import clock

MAX_ARGS = 8
ASK_S = 60  # a question not answered within this is cancelled

TABLE = (
    ("help", "+con_help", "the commands; help NAME (or NAME --help) explains one"),
    ("status", "+con_status", "one screen: temperatures, flow, power, energy, relays, "
                              "alarms, network, uptime, version"),
    ("sensors", "con_sensors", "per sensor: raw code, resistance, temperature, fault, "
                               "calibration"),
    ("watch", "con_watch", "live values every second until a key is pressed"),
    ("relay", "con_relay", "relay state, why, and the trip history"),
    ("alarms", "con_alarms", "active and latched trips, alarms"),
    ("ack", "con_alarms", "reset latched trips (asks to confirm)"),
    ("log", "+con_log", "the event log on flash: log [KIND] [N]"),
    ("config", "+con_config", "config get|set|save|diff: the configuration"),
    ("calibrate", "con_calibrate", "calibrate a sensor channel step by step"),
    ("maintenance", "con_maint", "maintenance on|off (asks to confirm)"),
    ("selftest", "+con_selftest", "the arithmetic and sensor self-test (no relay moves)"),
    ("net", "+con_net", "network link, address, DNS, time"),
    ("mqtt", "+con_net", "MQTT connection and counters"),
    ("safemode", "+con_safemode", "safe mode and the reset history; safemode clear"),
    ("reboot", "+con_reboot", "restart the node in order (asks to confirm)"),
    ("factory-reset", "+con_reboot", "erase configuration, calibration and secrets "
                                     "(asks to confirm)"),
)


def find(name):
    """The TABLE entry of a command name, or None."""
    for e in TABLE:
        if e[0] == name:
            return e
    return None


async def execute(console, line):
    """Parse and run one command line (str, not blank)."""
    words = line.split()
    name = words[0].lower()
    args = words[1:]
    e = find(name)
    if e is None:
        console.error("unknown command %r: type help" % name[:24])
        return
    if len(args) > MAX_ARGS:
        console.error("%s: too many arguments (at most %d)" % (name, MAX_ARGS))
        return
    if console.safe is not None and e[1][0] != "+":
        console.error("%s: not in safe mode (the application is not running); `safemode` "
                      "says why, `safemode clear` leaves it" % name)
        return
    con = Con(console, name)
    try:
        try:
            mod = __import__("heatgw." + e[1].lstrip("+"), None, None, ("run",))
        except ImportError:
            console.error("%s: not available in this build" % name)
            return
        if "--help" in args or "-h" in args:
            con.out(getattr(mod, "HELP", None) or (name + ": " + e[2]))
            return
        await mod.run(con, args)
        if console.gw is not None:  # the node's heap peak with the command still loaded
            console.gw.heap.sample("console")
    except Exception as ex:  # noqa: BLE001 - a command's failure is one line
        console.error("%s failed: %r" % (name, ex))
    finally:
        con.live(False)


class Con:
    """What a command sees of the console (the interface in the module doc)."""

    def __init__(self, console, name):
        self.c = console
        self.gw = console.gw
        self.safe = console.safe
        self.asyncio = console.asyncio
        self.cmd = name

    def out(self, text):
        w = self.c.w
        w(text)
        w("\n")

    def error(self, text):
        self.c.error(text)

    def pressed(self):
        """True when a key was typed: that one byte is consumed, what follows it stays
        for the prompt (a line typed ahead loses its first character)."""
        c = self.c
        if c.rpos >= c.rlen and not c.fill():
            return False
        c.rpos += 1
        return True

    async def sleep(self, ms):
        await self.asyncio.sleep_ms(ms)

    def live(self, on):
        port = self.c.port
        if hasattr(port, "live"):
            port.live = on

    async def ask(self, prompt):
        c = self.c
        c.w(prompt)
        give_up = clock.ticks_add(clock.ticks_ms(), ASK_S * 1000)
        self.live(True)
        try:
            while True:
                line = c.next_line()
                if line is not None:
                    return line.strip() if line else None
                if clock.ticks_diff(clock.ticks_ms(), give_up) >= 0:
                    self.out("")
                    self.out("(no answer within %d s)" % ASK_S)
                    return None
                await self.asyncio.sleep_ms(30)
        finally:
            self.live(False)

    async def confirm(self, text):
        """Ask; True only for `yes` typed in full. Anything else cancels (said)."""
        a = await self.ask(text + " Type yes to confirm: ")
        if a == "yes":
            return True
        self.out("cancelled: nothing changed")
        return False

    def post(self, what, value=True):
        try:
            self.gw.inbox.post("console", what, value)
            return True
        except ValueError as e:
            self.error(str(e))
            return False

    def event(self, ev):
        ev["source"] = "console"
        (self.gw if self.gw is not None else self.safe).event(ev)
