"""MicroPython's REPL on the host board's serial port, byte for byte as a board's.

The unix port has no raw REPL, so this is MicroPython's shared/runtime/pyexec.c (and the
part of shared/readline/readline.c the REPL's control characters live in) in Python. It
is imported only after the application stopped, or in safe boot (boards/host/node.py):
the running node carries none of it.

Friendly REPL (`>>> `): Ctrl-A raw REPL, Ctrl-B banner, Ctrl-C cancels the line, Ctrl-D
soft reset, Ctrl-E paste mode (Ctrl-C cancels, Ctrl-D runs), each on an empty line;
continuation lines (`... `) as mp_repl_continue_with_input decides.
Raw REPL (Ctrl-A -> "raw REPL; CTRL-B to exit\\r\\n>"): bytes up to Ctrl-D, then "OK",
the output, \\x04, the exception text, \\x04, ">"; Ctrl-D on an empty buffer: "OK\\r\\n"
and a soft reset; Ctrl-C clears the buffer; Ctrl-B back to friendly; Ctrl-A again: the
banner again. Raw-paste (\\x05A\\x01 in the raw REPL): "R\\x01", the window (2 bytes,
little-endian) and \\x01; each window of bytes received is answered by \\x01; Ctrl-D ends
the code (answered \\x04), Ctrl-C aborts it; then output, \\x04, exception, \\x04, ">".
Another \\x05<x>\\x01 is answered "R\\x00" (not supported).

Code runs with the terminal's ISIG on, so a Ctrl-C typed then is SIGINT, raised as
KeyboardInterrupt in the code (the unix port's own REPL does the same); reading, the
REPL takes 0x03 as a byte. Its globals persist between commands (mpremote relies on it),
its working directory is the flash's root (board.data_dir()). `machine.reset()` and
`machine.soft_reset()` are resets of this node (reset()): the process ends with the
exit status its runner restarts it for (boards/host/linkproto.py).

The pty cooks output like a board's print (\\n -> \\r\\n, host_tools/serialport.py), so
this writes \\n where pyexec writes \\r\\n: the bytes at the port are pyexec's.
"""

import sys

import board
import linkproto as lp
from micropython import const

_CTRL_A = const(1)
_CTRL_B = const(2)
_CTRL_C = const(3)
_CTRL_D = const(4)
_CTRL_E = const(5)
_ESC = const(27)
RAW_PASTE_WINDOW = const(128)  # half of a board's 256-byte stdin buffer, as pyexec
_COMPOUND = ("if", "while", "for", "try", "with", "def", "class", "async")


def continues(text):
    """mp_repl_continue_with_input (py/repl.c): does the input so far need more lines?"""
    if not text:
        return False
    first = text.split(None, 1)[0] if text.split() else ""
    compound = text[0] == "@" or first.rstrip(":") in _COMPOUND
    paren = 0
    quote = None  # the open quote: "'", '"', "'''" or '"""'
    i = 0
    n = len(text)
    while i < n:
        c = text[i]
        if quote is None:
            if c in "'\"":
                q3 = c * 3
                quote = q3 if text[i:i + 3] == q3 else c
                i += len(quote)
                continue
            if c in "([{":
                paren += 1
            elif c in ")]}":
                paren -= 1
        elif c == "\\":
            i += 2
            continue
        elif text[i:i + len(quote)] == quote:
            i += len(quote)
            quote = None
            continue
        i += 1
    if quote is not None and len(quote) == 3:
        return True
    if paren > 0 and quote is None:
        return True
    if text[-1] == "\\":
        return True
    return compound and text[-1] != "\n"


class _Machine:
    """`machine` at the host REPL: the unix port's module plus reset() and soft_reset()
    of this node (mpremote's `reset` runs machine.reset())."""

    def __init__(self, real):
        for name in dir(real):
            if not name.startswith("__"):
                setattr(self, name, getattr(real, name))

    def reset(self):
        reset(False)

    def soft_reset(self):
        raise SystemExit  # as sys.exit() at a board's REPL: a soft reset


def reset(soft, raw=False):
    """A reset asked at the serial port: the node process ends with the exit status its
    runner restarts it for (linkproto.EXIT_*): a soft reset (from the raw REPL: main.py
    will not run) or a hard one (machine.reset())."""
    if soft:
        print("MPY: soft reboot")
        raise SystemExit(lp.EXIT_SOFT_RESET_RAW if raw else lp.EXIT_SOFT_RESET)
    raise SystemExit(lp.EXIT_HARD_RESET)


def _stopping():
    # the harness ended the run (its orderly stop arrived while the node sat here)
    c = board.clock
    return c.link is not None and c._stop


class Repl:
    def __init__(self, port):
        self.port = port  # serialio.SerialIO
        self.w = port.write
        self.g = {"__name__": "__main__"}
        self.raw_pastes = 0  # raw-paste transfers served (mpremote uses one per command)

    def key(self):
        return self.port.read_byte()

    # -- running code ----------------------------------------------------------------

    def execute(self, src, mode, eof):
        """Compile and run src; with eof (the raw REPL) \\x04 after the output and after
        the exception text. A SystemExit is a soft reset (pyexec's forced exit)."""
        port = self.port
        err = None
        try:
            try:
                port.isig(True)
                exec(compile(src, "<stdin>", mode), self.g)
            finally:
                port.isig(False)
                for _ in range(2):
                    pass  # a SIGINT that came before ISIG went off is raised here
        except SystemExit as e:
            if e.args and e.args[0] == lp.EXIT_HARD_RESET:
                raise  # machine.reset(): the process ends
            if eof:
                self.w(b"\x04\x04")
            return "soft"
        except BaseException as e:  # noqa: BLE001 - printed, as pyexec does
            err = e
        if eof:
            self.w(b"\x04")
        if err is not None:
            self.print_exception(err)
        if eof:
            self.w(b"\x04")
        return None

    def print_exception(self, e):
        """The traceback as a board prints it: from <stdin> on (this file's frames out)."""
        import io

        buf = io.StringIO()
        sys.print_exception(e, buf)
        for line in buf.getvalue().split("\n"):
            if line and "repl.py\", line" not in line:
                self.w(line.encode() + b"\n")

    # -- friendly REPL -----------------------------------------------------------------

    def banner(self):
        self.w(b"%s; heatgw host board with the unix port\n"
               b'Type "help()" for more information.\n'
               % sys.version.split("; ", 1)[-1].encode())

    def readline(self, prompt):
        """A line (str, without its end) or the control character that ended it: Ctrl-A
        to Ctrl-E on an empty line, Ctrl-C on any."""
        w = self.w
        w(prompt)
        line = bytearray()
        cr = False
        while True:
            c = self.key()
            if _CTRL_A <= c <= _CTRL_E and not line:
                return c
            if c == _CTRL_C:
                return c
            if c == 13 or (c == 10 and not cr):
                w(b"\n")
                return line.decode()
            cr = False
            if c == 10:
                continue  # the \n of a \r\n
            if c in (8, 127):
                if line:
                    line.pop()
                    w(b"\x08\x1b[K")
            elif c == _ESC:
                self._escape()
            elif 32 <= c <= 126 or c >= 128:
                line.append(c)
                w(bytes((c,)))
            # other control characters (Ctrl-A/E: home/end) move nothing here

    def _escape(self):
        # an ESC [ ... sequence (cursor keys): taken and ignored
        c = self.key()
        if c in (91, 79):  # [ or O
            while True:
                c = self.key()
                if 64 <= c <= 126:
                    return

    def friendly(self):
        """Returns "raw" (Ctrl-A) or "soft" (Ctrl-D, or SystemExit)."""
        w = self.w
        self.banner()
        while True:
            try:
                r = self.readline(b">>> ")
                if r == _CTRL_A:
                    w(b"\n")
                    return "raw"
                if r == _CTRL_B:
                    w(b"\n")
                    self.banner()
                    continue
                if r == _CTRL_C:
                    w(b"\n")
                    continue
                if r == _CTRL_D:
                    w(b"\n")
                    return "soft"
                if r == _CTRL_E:
                    src = self._paste()
                    if src is None:
                        continue
                    mode = "exec"
                else:
                    if not r:
                        continue
                    src = r
                    while continues(src):
                        src += "\n"
                        r = self.readline(b"... ")
                        if r == _CTRL_C:
                            w(b"\n")
                            src = None
                            break
                        if r == _CTRL_D:
                            break
                        if isinstance(r, int):
                            continue  # Ctrl-A/B/E on an empty continuation line
                        src += r
                    if src is None:
                        continue
                    mode = "single"
                if self.execute(src, mode, False) == "soft":
                    return "soft"
            except KeyboardInterrupt:
                if _stopping():
                    raise SystemExit(0) from None
                w(b"\n")

    def _paste(self):
        w = self.w
        w(b"\npaste mode; Ctrl-C to cancel, Ctrl-D to finish\n=== ")
        buf = bytearray()
        while True:
            c = self.key()
            if c == _CTRL_C:
                w(b"\n")
                return None
            if c == _CTRL_D:
                w(b"\n")
                return buf.decode()
            buf.append(c)
            w(b"\n=== " if c == 13 else bytes((c,)))

    # -- raw REPL ------------------------------------------------------------------------

    def raw(self):
        """Returns "friendly" (Ctrl-B) or "soft" (Ctrl-D on an empty buffer)."""
        w = self.w
        while True:
            try:
                w(b"raw REPL; CTRL-B to exit\n")
                r = self._raw_commands()
                if r is not None:
                    return r
            except KeyboardInterrupt:
                if _stopping():
                    raise SystemExit(0) from None

    def _raw_commands(self):
        w = self.w
        while True:
            w(b">")
            line = bytearray()
            while True:
                c = self.key()
                if c == _CTRL_A:
                    if len(line) == 2 and line[0] == _CTRL_E:
                        r = self._raw_paste(line[1])
                        if r is not None:
                            return r
                        line = bytearray()
                        w(b">")
                        continue
                    return None  # the banner again
                if c == _CTRL_B:
                    w(b"\n")
                    return "friendly"
                if c == _CTRL_C:
                    line = bytearray()
                elif c == _CTRL_D:
                    break
                else:
                    line.append(c)
            w(b"OK")
            if not line:
                w(b"\n")
                return "soft"
            if self.execute(bytes(line), "exec", True) == "soft":
                return "soft"

    def _raw_paste(self, cmd):
        w = self.w
        if cmd != 65:  # "A"
            w(b"R\x00")
            return None
        w(b"R\x01")
        w(bytes((RAW_PASTE_WINDOW & 0xFF, RAW_PASTE_WINDOW >> 8, 1)))
        self.raw_pastes += 1
        src = bytearray()
        remain = RAW_PASTE_WINDOW
        while True:
            c = self.key()
            if c == _CTRL_D:
                w(b"\x04")  # end of data received
                break
            if c == _CTRL_C:
                w(b"\x04\x04")  # end; then as pyexec, the KeyboardInterrupt as the error
                self.print_exception(KeyboardInterrupt())
                w(b"\x04")
                return None
            src.append(c)
            remain -= 1
            if remain == 0:
                w(b"\x01")  # the next window may come
                remain = RAW_PASTE_WINDOW
        return self.execute(bytes(src), "exec", True)


def run(mode, main_ran):
    """The REPL until a reset ends the node process (board.reset)."""
    port = board.serial_port()
    port.intr = False
    sys.modules["machine"] = _Machine(__import__("machine"))
    from heatgw import bootstate

    board.observer("repl", {"mode": mode, "main_ran": main_ran, "app": bootstate.app,
                            "safe_boot": bootstate.safe_boot, "dropped": port.dropped})
    r = Repl(port)
    while True:
        nxt = r.raw() if mode == "raw" else r.friendly()
        if nxt == "soft":
            reset(True, raw=mode == "raw")
        mode = nxt
