"""The host board's serial port: a pseudo-terminal that behaves like a board's USB serial.

    port = SerialPort(link="build/ttyHEATGW", console=open("console.log", "ab"))
    port.path                         # /dev/pts/N: mpremote, pyserial, pexpect, picocom
    subprocess.Popen(cmd, **port.node_stdio())  # the node's stdin/stdout/stderr
    port.close()

Two pty pairs and a bridge thread between them:
- the port (pair A): what the user or a tool opens (`path`, and the symlink `link` when
  asked). Raw from the start: with the default line discipline the slave would echo what
  the bridge writes back to the bridge as input.
- the node's side (pair B): its slave is the node process's stdin, stdout, stderr and
  controlling terminal (the node leads its own session). Input is raw and never makes a
  read wait (the node polls): every byte, 0x03 included, reaches the node, whose host
  board turns Ctrl-C into KeyboardInterrupt as a board's `micropython.kbd_intr` does
  (boards/host/serialio.py); the host REPL sets ISIG
  only while it runs code, so Ctrl-C then interrupts that code (SIGINT, as the unix
  port's own REPL does). Output is cooked like a board's `print` (\\n -> \\r\\n).
- the bridge copies A -> B and B -> A and appends everything the node writes to the
  console log. Input waits while the node does not read (flow control, nothing lost);
  output nobody reads is kept up to OUT_MAX bytes, then the oldest is dropped (a board's
  USB serial with no host reading loses it too; the console log keeps all of it).
- Ctrl-C bursts: a 0x03 that follows a forwarded 0x03 within CTRL_C_MERGE_S is dropped.
  The unix port exits at once on a second SIGINT that arrives before it handled the first;
  one Ctrl-C does what several do on a board.

The node's runner (host_tools/harness.py, host_tools/benchnode.py) restarts the node
process behind the same port for a soft or hard reset: the port stays open throughout,
as a board's USB-UART bridge does.
"""

import fcntl
import os
import pty
import select
import termios
import threading
import time
import tty
from pathlib import Path

OUT_MAX = 65536  # node output kept for a reader that is not reading
CTRL_C_MERGE_S = 0.2
_CHUNK = 4096


def _set_node_side(fd):
    """Raw input (no echo, no line editing, no signals, no CR/NL mapping) that never
    waits (VMIN = VTIME = 0: a read returns what is there, 0 bytes when nothing; the node
    polls first), output cooked (OPOST | ONLCR) like a board's print."""
    tty.setraw(fd)
    a = termios.tcgetattr(fd)
    a[1] |= termios.OPOST | termios.ONLCR
    a[6][termios.VMIN] = 0
    a[6][termios.VTIME] = 0
    termios.tcsetattr(fd, termios.TCSANOW, a)


def _take_ctty():
    # In the child, after setsid(): the node's stdin (pair B's slave) becomes its
    # controlling terminal, so ISIG (set by the host REPL while it runs code) can send it
    # SIGINT.
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


class SerialPort:
    def __init__(self, link=None, console=None, trace=False):
        """link: a path for a symlink to the port (replaced if it is a symlink already);
        console: a binary file every byte the node writes is appended to; trace: keep what
        the user sent (`sent`, bytes as the node received them) for tests."""
        self._ma, self._sa = pty.openpty()  # the port
        tty.setraw(self._sa)
        self.path = os.ttyname(self._sa)
        self._mb, self._sb = pty.openpty()  # the node's side
        _set_node_side(self._sb)
        for fd in (self._ma, self._mb):
            os.set_blocking(fd, False)
        self.link = None
        if link:
            p = Path(link)
            if p.is_symlink():
                p.unlink()
            elif p.exists():
                raise FileExistsError(f"{p} exists and is not a symlink")
            p.parent.mkdir(parents=True, exist_ok=True)
            p.symlink_to(self.path)
            self.link = p
        self.console = console
        self.sent = bytearray() if trace else None
        self.out_dropped = 0  # node output dropped: nobody read the port
        self.ctrl_c_merged = 0
        self._to_node = bytearray()
        self._to_user = bytearray()
        self._last_ctrl_c = None  # time of the last 0x03 forwarded (None: another byte since)
        self._wake_r, self._wake_w = os.pipe()
        self._closed = False
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="serialport", daemon=True)
        self._thread.start()

    @property
    def name(self):
        """What to give mpremote: the symlink when there is one, else the pty."""
        return str(self.link) if self.link else self.path

    def node_stdio(self):
        """subprocess.Popen keyword arguments: the node's stdio on the port's node side,
        in a session of its own with that side as its controlling terminal."""
        return {"stdin": self._sb, "stdout": self._sb, "stderr": self._sb,
                "start_new_session": True, "preexec_fn": _take_ctty}

    def write(self, data):
        """Bytes to the node as if typed at the port (tests without a second opener)."""
        with self._lock:
            self._to_node += data
        os.write(self._wake_w, b"w")

    def type_now(self, data):
        """Bytes to the node as if typed, in its input before this returns (the harness:
        its technician's lines reach the node at a known virtual time, deterministically).
        Behind anything the bridge still holds for the node, in order."""
        with self._lock:
            if self._to_node:
                self._to_node += data
                os.write(self._wake_w, b"w")
                return
            view = memoryview(data)
            while view:
                try:
                    n = os.write(self._mb, view)
                except BlockingIOError:
                    self._to_node += view
                    os.write(self._wake_w, b"w")
                    return
                view = view[n:]

    def _from_user(self, data):
        out = bytearray()
        now = time.monotonic()
        for b in data:
            if b == 3:
                if self._last_ctrl_c is not None and now - self._last_ctrl_c < CTRL_C_MERGE_S:
                    self.ctrl_c_merged += 1
                    continue
                self._last_ctrl_c = now
            else:
                self._last_ctrl_c = None
            out.append(b)
        if self.sent is not None:
            self.sent += out
        with self._lock:
            self._to_node += out

    def _from_node(self, data):
        if self.console is not None:
            try:
                self.console.write(data)
                self.console.flush()
            except (OSError, ValueError):  # the log was closed under us: keep bridging
                self.console = None
        self._to_user += data
        extra = len(self._to_user) - OUT_MAX
        if extra > 0:
            del self._to_user[:extra]
            self.out_dropped += extra

    def _run(self):
        try:
            self._bridge()
        finally:  # the node's last words (it may have exited) go to the console log
            try:
                while True:
                    data = os.read(self._mb, _CHUNK)
                    if not data:
                        break
                    self._from_node(data)
            except OSError:
                pass

    def _bridge(self):
        ma, mb = self._ma, self._mb
        while not self._closed:
            rd = [self._wake_r, mb]
            if len(self._to_node) < OUT_MAX:
                rd.append(ma)  # the user's input waits while the node does not read
            wr = []
            if self._to_node:
                wr.append(mb)
            if self._to_user:
                wr.append(ma)
            try:
                r, w, _ = select.select(rd, wr, [])
            except (OSError, ValueError):
                return  # closed
            if self._wake_r in r:
                os.read(self._wake_r, 64)
            for fd in r:
                if fd == self._wake_r:
                    continue
                try:
                    data = os.read(fd, _CHUNK)
                except BlockingIOError:
                    continue
                except OSError:
                    return
                if not data:
                    continue
                if fd == ma:
                    self._from_user(data)
                else:
                    self._from_node(data)
            for fd in w:
                with self._lock:
                    buf = self._to_node if fd == mb else self._to_user
                    try:
                        n = os.write(fd, buf[:_CHUNK])
                    except BlockingIOError:
                        n = 0
                    except OSError:
                        return
                    del buf[:n]

    def close(self):
        """Stop the bridge (what the node wrote last still goes to the console log), close
        every descriptor and remove the symlink."""
        if self._closed:
            return
        self._closed = True
        os.write(self._wake_w, b"x")
        self._thread.join(2)
        for fd in (self._ma, self._sa, self._mb, self._sb, self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass
        if self.link is not None and self.link.is_symlink():
            self.link.unlink()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
