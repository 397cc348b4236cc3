"""Modbus RTU master over a UART (RS-485), non-blocking under asyncio.

    uart = UART(2, baudrate=9600, bits=8, parity=None, stop=1, tx=.., rx=.., timeout=0)
    rtu = RTUMaster(uart, baudrate=9600, clock=heatgw.clock, de=Pin(.., Pin.OUT, value=0))
    st = await rtu.transact(1, b"\\x04\\x00\\x48\\x00\\x02", 500)   # slave 1, PDU, ms

Bus contract: `uart` is a stream asyncio can poll for reading (machine.UART, or the
host board's pty shim) with `readinto(buf)` returning what is there, never waiting
(machine.UART with timeout=0), `write(buf)`, and optionally `txdone()`. `de` is the
RS-485 transceiver's driver-enable pin (high while sending), or None for a transceiver
that switches direction itself.

A request: 3.5 character times of silence (asyncio sleep), rx emptied (a late answer to
an earlier request is dropped), DE high, the 8-byte frame written into the UART's
buffer, an asyncio sleep for its air time minus 1 ms, then at most `_SPIN_MS` of busy
wait on `txdone()` before DE goes low (the slave answers 3.5 characters after our last
stop bit; an asyncio sleep alone could overshoot into its answer). The answer is then
collected by the reader task and judged by check() every `step_ms` until the deadline.

From micropython-modbus (umodbus) this uses the CRC-16/MODBUS table
(umodbus.const.CRC16_TABLE), copied once into an array: its own RTU host busy-waits
for the answer and imports machine.UART at import time, so it cannot be used here.
"""

from array import array

from mbcore import (
    BAD_FRAME,
    CLOSED,
    CRC,
    EXCEPTION,
    MORE,
    OK,
    TIMEOUT,
    TRUNCATED,
    WRONG_SLAVE,
    Master,
)
from micropython import const

_FRAME = const(8)  # slave, function, address (2), count (2), CRC (2)
_RX = const(256)  # the longest RTU frame
_ERROR_BIAS = const(0x80)

_table = None  # CRC-16/MODBUS table, shared by every RTUMaster


def crc_table():
    """The CRC table, made once from umodbus.const's (the caller may drop that module
    afterwards: the node's start does)."""
    global _table
    if _table is None:
        from umodbus.const import CRC16_TABLE

        _table = array("H", CRC16_TABLE)
    return _table


def crc16(buf, n):
    """CRC-16/MODBUS of buf[:n] (transmitted low byte first)."""
    t = _table
    c = 0xFFFF
    for i in range(n):
        c = (c >> 8) ^ t[(c ^ buf[i]) & 0xFF]
    return c


class RTUMaster(Master):
    def __init__(self, uart, *, baudrate, clock, de=None, bits_per_char=10, on_send=None):
        """uart None: attach() it later."""
        crc_table()
        char_us = bits_per_char * 1_000_000 // baudrate
        # check the answer every ~4 characters (at least every 2 ms)
        super().__init__(uart, _RX, clock, max(2, char_us * 4 // 1000), on_send)
        # Modbus: 3.5 characters of silence between frames, 1.75 ms above 19200 baud
        self.gap_ms = (char_us * 7 // 2 + 999) // 1000 if baudrate <= 19200 else 2
        self.air_ms = (char_us * _FRAME + 999) // 1000
        self.de = de
        self._tx = bytearray(_FRAME)
        self._slave = 0
        self._fc = 0
        self._count = 0
        if de is not None:
            de.value(0)

    def attach(self, uart, de=None):
        """Take a (re)opened UART and its DE pin (the node opens its port when a bus task
        starts; the buffers stay the same)."""
        self.s = uart
        self.de = de
        self._txdone = getattr(uart, "txdone", None)
        self.err = 0
        self.n = 0
        if de is not None:
            de.value(0)

    def expect(self, slave, fc, count):
        """What check() takes for our answer (transact sets it; the fuzz tests too)."""
        self._slave = slave
        self._fc = fc
        self._count = count

    async def _open(self, timeout_ms):
        if self.err or self.s is None:  # the port failed, or none yet: its owner opens it
            return self.err or CLOSED
        self._start_reader()
        return OK

    def _frame(self, slave, pdu):
        tx = self._tx
        tx[0] = slave
        for i in range(5):
            tx[1 + i] = pdu[i]
        c = crc16(tx, 6)
        tx[6] = c & 0xFF
        tx[7] = c >> 8
        self.expect(slave, pdu[0], pdu[3] << 8 | pdu[4])

    def _send(self):
        de = self.de
        if de is not None:
            de.value(1)
        try:
            w = self.s.write(self._tx)
        except OSError:
            w = 0
        if w != _FRAME:
            if de is not None:
                de.value(0)
            return CLOSED
        return OK

    def close(self):
        """Stop the reader and release the UART (machine.UART.deinit)."""
        Master.close(self)
        done = getattr(self.s, "deinit", None)
        self.s = None
        if done is not None:
            try:
                done()
            except OSError:
                pass

    def check(self):
        """Judge rx[:n] against the expected answer: MORE, OK (registers at rx[3:]) or
        a fault code. Never raises, whatever the bytes."""
        n = self.n
        if self.over:
            return BAD_FRAME
        if n < 2:
            return MORE
        b = self.rx
        f = b[1]
        fc = self._fc
        if f == fc | _ERROR_BIAS:
            need = 5
        elif f == fc:
            if n < 3:
                return MORE
            if b[2] != 2 * self._count:
                return BAD_FRAME
            need = 5 + b[2]
        else:
            return BAD_FRAME
        if n < need:
            return MORE
        if crc16(b, need - 2) != b[need - 2] | b[need - 1] << 8:
            return CRC
        if b[0] != self._slave:
            return WRONG_SLAVE
        if f != fc:
            self.exc = b[2]
            return EXCEPTION
        self.data = 3
        return OK

    def _partial(self):
        n = self.n
        if n == 0:
            return TIMEOUT
        b = self.rx
        fc = self._fc
        if b[0] == self._slave and (n < 2 or b[1] == fc or b[1] == fc | _ERROR_BIAS):
            return TRUNCATED
        return BAD_FRAME
