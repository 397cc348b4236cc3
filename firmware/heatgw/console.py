"""The technician's line console on the REPL's serial port: a restartable task.

heatgw.start adds it when the board has a console (`board.console_in()` not None):
    con = Console(gw, board.console_in(), asyncio)
    gw.add_task("console", con.run)

Reading never blocks: the task polls the port every 30 ms with a non-blocking `readinto`
and assembles lines in one preallocated buffer (LINE_MAX bytes). Printable ASCII is
echoed; backspace edits; CR, LF or CRLF ends a line. A line that is too long, holds other
bytes (binary, cursor keys, UTF-8) or lost input (the port's ring overflowed) is refused
with one line, `error: ...`, and nothing runs. Ctrl-C is not a byte here: the board raises
KeyboardInterrupt and the application stops in order (heatgw.start). Ctrl-A, B, D and E
are the REPL's: they drop the line and say so.

This module is what stays resident: the task, the line assembler and its buffers. A
complete line goes to heatgw.con_table (the one command table, the parser and dispatcher,
and the `con` interface commands use), which is imported for that line and dropped
afterwards with the command's module and every heatgw module they imported.

Writing a command (full text in heatgw.con_table): heatgw/con_<name>.py with an optional
HELP string and `async def run(con, args)`, listed in con_table.TABLE as `name ->
(module, one-line help)` ("+" before the module: it also runs in safe mode, where con.gw
is None and con.safe.cfg is the configuration). `con`: gw, safe, asyncio, cmd,
out(text), error(text), await ask(prompt), await confirm(text) (True only for `yes`),
post(what, value) (the command inbox, source "console"), event(ev) (source "console"),
pressed(), await sleep(ms), live(on). The `config` command is heatgw.con_config (in the
table already; "config: not available in this build" without it).
"""

import sys
import time

from micropython import const

LINE_MAX = const(120)  # bytes of one command line
_POLL_MS = const(30)  # how often the port is read
_RX = const(32)  # bytes taken from the port per read
_BUDGET = const(256)  # bytes handled per wake before the task sleeps again
_LONG = const(1)
_BINARY = const(2)
_LOST = const(3)
_CTRL_REPL = b"\x01\x02\x04\x05"  # Ctrl-A, B, D, E: the REPL's (raw REPL, banner, ...)
_WHY = (None, "line too long (max %d characters): ignored up to the next Enter" % LINE_MAX,
        "the line holds control or non-ASCII bytes: ignored",
        "input lost (typed faster than it was read): line ignored")


class Console:
    def __init__(self, gw, port, asyncio, safe=None, write=None):
        self.gw = gw
        self.safe = safe
        self.asyncio = asyncio
        self.port = port
        self.w = write or sys.stdout.write  # cooked: a newline goes out as CR LF
        self._line = bytearray(LINE_MAX)
        self._rx = bytearray(_RX)
        self._emv = memoryview(bytearray(_RX + 1))  # echo
        self.lines = 0  # lines handled at the prompt (commands, errors, empty lines)
        self.errors = 0  # lines refused and commands that failed
        self.worst_us = 0  # the longest real time in one read + assembly step
        self.start()

    def start(self):
        self._n = 0  # bytes in the line
        self._bad = 0  # why the line is refused (_WHY index), 0 while it is fine
        self._cr = False  # the last byte ended a line with CR (a LF after it is not one)
        self.rpos = 0
        self.rlen = 0
        self._dropped = getattr(self.port, "dropped", 0)

    def error(self, text):
        self.errors += 1
        self.w("error: %s\n" % text)

    def fill(self):
        """Read what the port has into the receive buffer (never waits)."""
        n = self.port.readinto(self._rx)
        self.rpos = 0
        self.rlen = n
        d = getattr(self.port, "dropped", None)
        if d is not None and d != self._dropped:
            self._dropped = d
            if not self._bad:
                self._bad = _LOST
        return n

    def next_line(self, budget=_BUDGET):
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
        echo = self._emv
        ne = 0
        got = None
        while got is None and budget > 0:
            if self.rpos >= self.rlen and not self.fill():
                break
            c = rx[self.rpos]
            self.rpos += 1
            budget -= 1
            if c == 13 or c == 10:
                if c == 10 and self._cr:
                    self._cr = False
                    continue
                self._cr = c == 13
                echo[ne] = 10
                self.w(echo[:ne + 1])
                ne = 0
                got = self._end()
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
                    self.w(echo[:ne])
                    ne = 0
                    self.w("\n")
                    self.error(_WHY[_LONG])
            elif c == 8 or c == 127:
                if self._n and not self._bad:
                    self._n -= 1
                    self.w(echo[:ne])
                    ne = 0
                    self.w(b"\b \b")
            elif c in _CTRL_REPL:
                self.w(echo[:ne])
                ne = 0
                self._n = 0
                self._bad = 0
                self.w("\n")
                self.error("Ctrl-%c acts at the REPL: press Ctrl-C first to stop the "
                           "application" % (c + 64))
                got = ""
            elif not self._bad:
                self._bad = _BINARY
            if ne >= _RX:
                self.w(echo[:ne])
                ne = 0
        if ne:
            self.w(echo[:ne])
        return got

    def _end(self):
        n = self._n
        bad = self._bad
        self._n = 0
        self._bad = 0
        if bad:
            if bad != _LONG:  # too long: said when it happened
                self.error(_WHY[bad])
            return ""
        return str(self._line[:n], "ascii")

    def prompt(self):
        self.w("heatgw[safe mode]> " if self.safe is not None else "heatgw> ")

    async def run(self, asyncio):
        self.start()
        self.w("console: type help (Ctrl-C stops the application and leaves the REPL)\n")
        self.prompt()
        while True:
            line = self.next_line()
            if line is None:
                await asyncio.sleep_ms(_POLL_MS)
                continue
            self.lines += 1
            if line and not line.isspace():
                before = list(sys.modules)
                try:
                    from heatgw import con_table

                    await con_table.execute(self, line)
                except Exception as e:  # noqa: BLE001 - e.g. MemoryError: one line
                    self.error("%r" % (e,))
                finally:
                    con_table = None
                    drop(before)
                await asyncio.sleep_ms(0)  # one line per turn: control runs between
            self.prompt()


def drop(before):
    """Forget the heatgw modules imported since `before` (the table, the command and its
    helpers): the heap keeps only the resident node."""
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
