"""A machine.UART for the host board: one end of a pseudo-terminal that a test made, with
an RS-485 transceiver's driver enable in front of it.

    uart = PtyUART("/dev/pts/7", de=DEPin())
    uart.init(baudrate=9600, bits=8, parity=None, stop=1)   # termios: raw, speed

What the Modbus RTU driver (lib/modbus/mbrtu.py) uses of a UART, and nothing blocks:
- readinto(buf) / read(n): what is there now, 0 / b"" when nothing (termios VMIN = 0,
  VTIME = 0 on the pty: a read never waits);
- write(buf): into the pty, only while the transceiver drives the bus (`de` high, when
  a DE pin is given); bytes written with DE low never reach the bus (they are counted in
  `lost_tx`), as on a real half-duplex line. Writes only when the pty is writable (a
  select.poll with timeout 0), else 0 bytes: a full buffer is no stall;
- txdone(): True (the pty takes the bytes at once);
- asyncio can poll it: an io.IOBase whose ioctl gives the pty's file descriptor.
The peer at the pty's other end answers in real time: boards/host/vasyncio.py's rules for
real peers apply (the driver says when it sent, board.io_sent()).
"""

import io
import select
import termios

from micropython import const

_GET_FILENO = const(10)  # MP_STREAM_GET_FILENO
_POLL = const(3)  # MP_STREAM_POLL
_CLOSE = const(4)  # MP_STREAM_CLOSE
_VTIME = const(5)  # Linux termios c_cc indexes
_VMIN = const(6)
_PARENB = const(0o400)  # Linux c_cflag bits
_PARODD = const(0o1000)
_CSTOPB = const(0o100)


class DEPin:
    """The transceiver's driver-enable input: machine.Pin's value(), high = sending."""

    def __init__(self):
        self.level = 0
        self.rises = 0

    def value(self, v=None):
        if v is None:
            return self.level
        v = 1 if v else 0
        if v and not self.level:
            self.rises += 1
        self.level = v


class PtyUART(io.IOBase):
    def __init__(self, path, de=None):
        self._f = open(path, "r+b")
        self._fd = self._f.fileno()
        self._de = de
        self._out = select.poll()
        self._out.register(self._f, select.POLLOUT)
        self.lost_tx = 0  # bytes written while DE was low
        self.init()

    def init(self, baudrate=9600, bits=8, parity=None, stop=1, **kw):
        """Raw mode, no waiting reads; the line settings as a real tty would take them
        (a pty ignores speed and parity, the bytes pass unchanged)."""
        fd = self._fd
        termios.setraw(fd)
        a = termios.tcgetattr(fd)
        cc = a[6]
        cc[_VMIN] = 0
        cc[_VTIME] = 0
        cflag = a[2] & ~(_PARENB | _PARODD | _CSTOPB)
        if parity is not None:
            cflag |= _PARENB | (_PARODD if parity == 1 else 0)
        if stop == 2:
            cflag |= _CSTOPB
        a[2] = cflag
        speed = getattr(termios, "B%d" % baudrate, termios.B9600)  # a pty ignores it
        a[4] = speed
        a[5] = speed
        termios.tcsetattr(fd, termios.TCSANOW, a)

    def any(self):
        p = select.poll()
        p.register(self._f, select.POLLIN)
        return 1 if p.poll(0) else 0

    def readinto(self, buf):
        return self._f.readinto(buf)

    def read(self, n=256):
        return self._f.read(n)

    def write(self, buf):
        if self._de is not None and not self._de.level:
            self.lost_tx += len(buf)
            return len(buf)  # the UART sent them; the transceiver did not drive the bus
        if not self._out.poll(0):
            return 0
        return self._f.write(buf)

    def txdone(self):
        return True

    def flush(self):
        pass

    def ioctl(self, req, arg):
        if req == _GET_FILENO:
            return self._fd
        if req == _POLL:
            return 0  # never asked: the poller uses the descriptor
        if req == _CLOSE:
            self._f.close()
            return 0
        return -1

    def close(self):
        self._f.close()

    deinit = close  # machine.UART's name
