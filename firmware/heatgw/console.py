"""The technician's line console on the REPL's serial port: a restartable task.

heatgw.start adds it when the board has a console (`board.console_in()` not None):
    con = Console(gw, board.console_in(), asyncio)
    gw.add_task("console", con.run)

Reading never blocks: the task polls the port every POLL_MS with a non-blocking
`readinto` and assembles lines in one preallocated buffer (LINE_MAX bytes). Printable
ASCII is echoed; backspace edits; CR, LF or CRLF ends a line. A line that is too long,
holds other bytes (binary, cursor keys, UTF-8) or lost input (the port's ring overflowed)
is refused with one line, `error: ...`, and nothing runs. Ctrl-C is not a byte here: the
board raises KeyboardInterrupt and the application stops in order (heatgw.start). Ctrl-A,
B, D and E are the REPL's: they drop the line and say so.

Commands: TABLE, the one command table, `name -> (module, one-line help)`. Each command
is a small module heatgw.<module>, imported when its line runs and dropped afterwards
(with every heatgw module it imported that was not loaded before), so the resident
console is this task, its buffers and the table. A module exports

    HELP = "..."                   (optional) what `help NAME` / `NAME --help` print
    async def run(con, args)       args: the words after the name (str, at most MAX_ARGS)

and uses only this interface of `con`:
    con.gw            the Gateway (None in safe mode: con.safe is set instead)
    con.safe          None, or the safe-mode record (heatgw.safemode) while in safe mode
    con.asyncio       the asyncio module the node runs on
    con.cmd           the command's name as typed (lower case)
    con.out(text)     write text as lines to the port. Never pass a secret: the secrets
                      file's values are Secret objects that print as <secret>; never
                      reveal() one here.
    con.error(text)   one line "error: <text>" (bad arguments, refusals)
    await con.ask(prompt)      the next line typed (stripped), None after ASK_S or an
                               unreadable line
    await con.confirm(text)    True only when the technician types `yes`
    con.post(what, value)      a request on the command inbox with source "console"
                               (heatgw.inbox: maintenance, sink_available, trip_reset);
                               False and an error line when the inbox refuses it. Every
                               state change made at the console goes through the inbox
                               or con.event: it is an event naming "console".
    con.event(ev)              log an event dict (heatgw.events) with source "console"
    con.pressed()              True once something was typed (`watch` stops on a key)
    await con.sleep(ms)

The `config` command (get|set|save|diff) is the module heatgw.con_config, written with
the configuration work; when a build lacks it, `config` answers "config: not available
in this build". A command that raises is one error line; the console carries on.
"""

import sys
import time

from micropython import const

from heatgw import clock

LINE_MAX = const(120)  # bytes of one command line
MAX_ARGS = const(8)
POLL_MS = const(30)  # how often the port is read
ASK_S = const(60)  # a confirmation not answered within this is cancelled
_RX = const(32)  # bytes taken from the port per read
_BUDGET = const(256)  # bytes handled per wake before the task sleeps again
PROMPT = "heatgw> "
SAFE_PROMPT = "heatgw[safe mode]> "

# name, module (heatgw.<module>), one-line help. Commands marked with a leading "+" in
# the module name also run in safe mode (the application is not running there).
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
    ("log", "+con_log", "the event log on flash: log [N]"),
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

_CTRL_REPL = b"\x01\x02\x04\x05"  # Ctrl-A, B, D, E: the REPL's (raw REPL, banner, ...)
_LONG = const(1)
_BINARY = const(2)
_LOST = const(3)
_REPL = const(4)
_WHY = (None, "line too long (max %d characters): ignored",
        "the line holds control or non-ASCII bytes: ignored",
        "input lost (typed faster than it was read): line ignored",
        "Ctrl-%c acts at the REPL: press Ctrl-C first to stop the application")


def find(name):
    """The TABLE entry of a command name, or None."""
    for e in TABLE:
        if e[0] == name:
            return e
    return None


class Console:
    def __init__(self, gw, port, asyncio, safe=None, write=None):
        self.gw = gw
        self.safe = safe
        self.asyncio = asyncio
        self.port = port
        self.cmd = None
        self._w = write or sys.stdout.write  # cooked: a newline goes out as CR LF
        self._line = bytearray(LINE_MAX)
        self._rx = bytearray(_RX)
        self._echo = bytearray(_RX + 1)
        self._emv = memoryview(self._echo)
        self._reset_input()
        self.lines = 0  # lines handled (commands, errors and empty lines)
        self.errors = 0  # lines refused and commands that failed
        self.worst_us = 0  # the longest real time in one read + assembly step

    def _reset_input(self):
        self._n = 0  # bytes in the line
        self._bad = 0  # why the line is refused (_WHY index), 0 while it is fine
        self._cr = False  # the last byte ended a line with CR (a LF after it is not one)
        self._rpos = 0
        self._rlen = 0
        self._dropped = getattr(self.port, "dropped", 0)

    # -- output ---------------------------------------------------------------------

    def out(self, text):
        w = self._w
        w(text)
        w("\n")

    def error(self, text):
        self.errors += 1
        self.out("error: " + text)

    def _prompt(self):
        self._w(SAFE_PROMPT if self.safe is not None else PROMPT)

    # -- input ----------------------------------------------------------------------

    def _fill(self):
        """Read what the port has into the receive buffer (never waits)."""
        n = self.port.readinto(self._rx)
        self._rpos = 0
        self._rlen = n
        d = getattr(self.port, "dropped", None)
        if d is not None and d != self._dropped:
            self._dropped = d
            if not self._bad:
                self._bad = _LOST
        return n

    def _next_line(self, budget):
        """Assemble from the port: the next complete line as str ("" for an empty or
        refused line, whose error is printed), or None when none is complete yet or the
        byte budget is spent."""
        t0 = time.ticks_us()
        line = self._assemble(budget)
        d = time.ticks_diff(time.ticks_us(), t0)
        if d > self.worst_us:
            self.worst_us = d
        return line

    def _assemble(self, budget):
        buf = self._line
        rx = self._rx
        echo = self._echo
        ne = 0
        got = None
        while got is None and budget > 0:
            if self._rpos >= self._rlen and not self._fill():
                break
            c = rx[self._rpos]
            self._rpos += 1
            budget -= 1
            if c == 13 or c == 10:
                if c == 10 and self._cr:
                    self._cr = False
                    continue
                self._cr = c == 13
                echo[ne] = 10
                ne += 1
                got = self._end(ne)
                ne = 0
                continue
            self._cr = False
            if 32 <= c < 127 or c == 9:
                if self._n < LINE_MAX:
                    buf[self._n] = 32 if c == 9 else c
                    self._n += 1
                    if not self._bad:
                        echo[ne] = c
                        ne += 1
                elif self._bad != _LONG:
                    self._bad = _LONG  # said at once: a flood may never end its line
                    self._flush(ne)
                    ne = 0
                    self.out("")
                    self.error(_WHY[_LONG] % LINE_MAX + " up to the next Enter")
            elif c == 8 or c == 127:
                if self._n and not self._bad:
                    self._n -= 1
                    self._flush(ne)
                    ne = 0
                    self._w(b"\b \b")
            elif c in _CTRL_REPL:
                self._flush(ne)
                ne = 0
                self._n = 0
                self._bad = 0
                self.out("")
                self.error(_WHY[_REPL] % (c + 64))
                got = ""
            elif not self._bad:
                self._bad = _BINARY
            if ne >= _RX:
                self._flush(ne)
                ne = 0
        self._flush(ne)
        return got

    def _flush(self, ne):
        if ne:
            self._w(self._emv[:ne])

    def _end(self, ne):
        self._flush(ne)
        n = self._n
        bad = self._bad
        self._n = 0
        self._bad = 0
        if bad:
            if bad != _LONG:  # too long: said when it happened
                self.error(_WHY[bad])
            return ""
        return str(self._line[:n], "ascii")

    def pressed(self):
        """True when something was typed (it is consumed)."""
        n = self._fill()
        self._rlen = 0
        return n > 0

    async def sleep(self, ms):
        await self.asyncio.sleep_ms(ms)

    async def ask(self, prompt):
        self._w(prompt)
        give_up = clock.ticks_add(clock.ticks_ms(), ASK_S * 1000)
        while True:
            line = self._next_line(_BUDGET)
            if line is not None:
                return line.strip() if line else None
            if clock.ticks_diff(clock.ticks_ms(), give_up) >= 0:
                self.out("")
                self.out("(no answer within %d s)" % ASK_S)
                return None
            await self.asyncio.sleep_ms(POLL_MS)

    async def confirm(self, text):
        """Ask; True only for `yes` typed in full. Anything else cancels (said)."""
        a = await self.ask(text + " Type yes to confirm: ")
        if a == "yes":
            return True
        self.out("cancelled: nothing changed")
        return False

    # -- state changes --------------------------------------------------------------

    def post(self, what, value=True):
        try:
            self.gw.inbox.post("console", what, value)
            return True
        except ValueError as e:
            self.error(str(e))
            return False

    def event(self, ev):
        ev["source"] = "console"
        if self.gw is not None:
            self.gw.event(ev)
        else:
            self.safe.event(ev)

    # -- the task -------------------------------------------------------------------

    async def run(self, asyncio):
        self._reset_input()
        self.out("console: type help (Ctrl-C stops the application and leaves the REPL)")
        self._prompt()
        while True:
            line = self._next_line(_BUDGET)
            if line is None:
                await asyncio.sleep_ms(POLL_MS)
                continue
            self.lines += 1
            if line:
                await self.execute(line)
                await asyncio.sleep_ms(0)  # one line per turn: control runs between
            self._prompt()

    async def execute(self, line):
        """Parse and run one command line (str)."""
        words = line.split()
        if not words:
            return
        name = words[0].lower()
        args = words[1:]
        e = find(name)
        if e is None:
            self.error("unknown command %r: type help" % name[:24])
            return
        if len(args) > MAX_ARGS:
            self.error("%s: too many arguments (at most %d)" % (name, MAX_ARGS))
            return
        mod_name = e[1].lstrip("+")
        if self.safe is not None and e[1][0] != "+":
            self.error("%s: not in safe mode (the application is not running); "
                       "`safemode` says why, `safemode clear` leaves it" % name)
            return
        before = list(sys.modules)
        self.cmd = name
        try:
            try:
                mod = __import__("heatgw." + mod_name, None, None, ("run",))
            except ImportError:
                self.error("%s: not available in this build" % name)
                return
            if "--help" in args or "-h" in args:
                self.out(getattr(mod, "HELP", None) or (name + ": " + e[2]))
                return
            await mod.run(self, args)
        except Exception as ex:  # noqa: BLE001 - a command's failure is one line
            self.error("%s failed: %r" % (name, ex))
        finally:
            self.cmd = None
            mod = None
            _drop(before)


def _drop(before):
    """Forget the heatgw modules imported since `before` (the command and its helpers):
    the heap keeps only the resident node."""
    import gc

    import heatgw

    for k in list(sys.modules):
        if k not in before and k.startswith("heatgw."):
            sys.modules.pop(k)
            try:
                delattr(heatgw, k[7:])
            except (AttributeError, KeyError):
                pass
    gc.collect()
