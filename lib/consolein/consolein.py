"""Non-blocking input from the REPL's serial port, for a console that must never block
the control loop.

    cin = ConsoleIn(sys.stdin.buffer, select.poll())
    n = cin.readinto(buf)   # what was typed, 0 bytes when nothing: never waits

The port's driver fills the stdin buffer from its interrupt; a Ctrl-C typed while
`micropython.kbd_intr(3)` is on (the application runs) never reaches the stream: it
raises KeyboardInterrupt, which stops the application in order. Each byte is read only
after the poll said one is there, through a one-byte buffer allocated once, so a read
neither blocks nor allocates.
"""


class ConsoleIn:
    def __init__(self, stream, poller):
        self._s = stream
        self._p = poller
        poller.register(stream, 1)  # select.POLLIN
        self._one = bytearray(1)

    def any(self):
        """True when a byte waits."""
        for _ in self._p.ipoll(0):
            return True
        return False

    def readinto(self, buf):
        """Up to len(buf) bytes typed into buf; the count (0: none). Never blocks."""
        n = 0
        one = self._one
        while n < len(buf) and self.any():
            if not self._s.readinto(one):
                break
            buf[n] = one[0]
            n += 1
        return n
