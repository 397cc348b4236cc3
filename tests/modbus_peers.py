"""Real Modbus peers for the tests: pymodbus servers over TCP and over RTU on a pseudo-
terminal pair, and a raw responder (TCP or pty) for the answers pymodbus never gives.

    with PymodbusTCP([sdm630(1, power_w=1234.5, energy_kwh=98765.25)]) as srv:
        srv.port
    with PtyLine() as line, PymodbusRTU(line.peer_path, [sdm120(2, ...)]):
        line.node_path        # the node opens this end ($HEATGW_RS485)
    with RawTCP(answer) as raw:       # answer(request bytes) -> bytes to send, or None
    with PtyLine() as line, RawRTU(line, answer):

A PtyLine is two pty pairs whose masters a relay thread joins: the node opens one slave
end, the peer (pymodbus's serial server, or a raw responder) the other. Both are raw
ttys. Register values are built here with CPython's struct, independently of the
firmware's decoder: f32(v), i32(v), u32(v), swapped words with order="little".
"""

import asyncio
import logging
import os
import select
import socket
import struct
import threading
import time
import tty

from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

logging.getLogger("pymodbus").setLevel(logging.CRITICAL)  # its deprecation notes, tracebacks


def regs(fmt, v, word_order="big", byte_order="big"):
    """Registers (ints) of value v packed as struct format fmt ('>f', '>i', '>I')."""
    b = struct.pack(fmt, v)
    words = [b[i:i + 2] for i in range(0, len(b), 2)]
    if word_order == "little":
        words.reverse()
    if byte_order == "little":
        words = [w[::-1] for w in words]
    return [w[0] << 8 | w[1] for w in words]


def f32(v, **kw):
    return regs(">f", v, **kw)


def i32(v, **kw):
    return regs(">i", v, **kw)


def u32(v, **kw):
    return regs(">I", v, **kw)


def crc16(data):
    """CRC-16/MODBUS, bit by bit (independent of the firmware's table)."""
    c = 0xFFFF
    for b in data:
        c ^= b
        for _ in range(8):
            c = (c >> 1) ^ 0xA001 if c & 1 else c >> 1
    return c


def rtu_frame(body):
    c = crc16(body)
    return bytes(body) + bytes([c & 0xFF, c >> 8])


def device(slave, *, input_regs=None, holding_regs=None, action=None):
    """A pymodbus SimDevice: {address: [register, ...]} for input / holding registers;
    every other address is invalid (an exception 02 answer). action: pymodbus's hook,
    awaited on every access (it may change the registers in place)."""
    def blocks(m):
        m = m or {0xFFF0: [0]}
        return [SimData(a, values=list(v), datatype=DataType.REGISTERS)
                for a, v in sorted(m.items())]

    bits = [SimData(0, values=[False] * 16, datatype=DataType.BITS)]
    return SimDevice(slave, simdata=(bits, list(bits), blocks(holding_regs),
                                     blocks(input_regs)), action=action)


def sdm630(slave, power_w, energy_kwh, action=None):
    """An Eastron SDM630: total system power at 0x34, import energy at 0x48 (input
    registers, float32, high word first)."""
    return device(slave, input_regs={0x34: f32(power_w), 0x48: f32(energy_kwh)},
                  action=action)


def sdm120(slave, power_w, energy_kwh):
    """An Eastron SDM120: active power at 0x0C, import energy at 0x48."""
    return device(slave, input_regs={0x0C: f32(power_w), 0x48: f32(energy_kwh)})


class _LoopThread:
    """A pymodbus server in its own asyncio loop and thread."""

    def __init__(self, make):
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self.error = None
        self.server = None
        self._stopped = False
        threading.Thread(target=self._run, args=(make,), daemon=True).start()
        if not self._ready.wait(10) or self.error:
            raise RuntimeError(f"pymodbus server did not start: {self.error!r}")

    def _run(self, make):
        asyncio.set_event_loop(self.loop)

        async def main():
            try:
                self.server = make()
                await self.server.serve_forever(background=True)
            except Exception as e:  # noqa: BLE001 - reported to the test
                self.error = e
            self._ready.set()
            while True:
                await asyncio.sleep(3600)

        try:
            self.loop.run_until_complete(main())
        except RuntimeError:
            pass  # stopped

    def stop(self):
        if self._stopped:
            return
        self._stopped = True

        async def down():
            await self.server.shutdown()

        try:
            asyncio.run_coroutine_threadsafe(down(), self.loop).result(5)
        except Exception:  # noqa: BLE001 - best effort at teardown
            pass
        self.loop.call_soon_threadsafe(self.loop.stop)


class PymodbusTCP:
    """pymodbus ModbusTcpServer on 127.0.0.1 serving `devices` (a list of SimDevice)."""

    def __init__(self, devices):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        self.port = s.getsockname()[1]
        s.close()
        port = self.port
        self._t = _LoopThread(lambda: ModbusTcpServer(devices, address=("127.0.0.1", port)))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    def stop(self):
        self._t.stop()


class PymodbusRTU:
    """pymodbus ModbusSerialServer (RTU framing) on the tty `path`."""

    def __init__(self, path, devices, baudrate=9600):
        self._t = _LoopThread(lambda: ModbusSerialServer(devices, port=path,
                                                         baudrate=baudrate))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    def stop(self):
        self._t.stop()


class PtyLine:
    """Two pty pairs joined by a relay thread (a serial line): node_path for the node,
    peer_path for its peer. `tap(data) -> data` may rewrite what the peer sends."""

    def __init__(self):
        self._m1, s1 = os.openpty()
        self._m2, s2 = os.openpty()
        for fd in (s1, s2):
            tty.setraw(fd)
        self.node_path, self.peer_path = os.ttyname(s1), os.ttyname(s2)
        self._slaves = (s1, s2)  # kept open: a pty whose slave end closes hangs up
        self.to_peer = 0  # bytes the node sent
        self.to_node = 0
        self._stop = threading.Event()
        threading.Thread(target=self._relay, daemon=True).start()

    def _relay(self):
        a, b = self._m1, self._m2
        while not self._stop.is_set():
            r, _, _ = select.select([a, b], [], [], 0.1)
            for fd in r:
                try:
                    data = os.read(fd, 4096)
                except OSError:
                    continue
                if fd == a:
                    self.to_peer += len(data)
                    os.write(b, data)
                else:
                    self.to_node += len(data)
                    os.write(a, data)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        self._stop.set()
        time.sleep(0.15)
        for fd in (self._m1, self._m2, *self._slaves):
            try:
                os.close(fd)
            except OSError:
                pass


class RawTCP:
    """A TCP server on 127.0.0.1 that hands every request (one read) to answer(req) and
    sends what it returns (bytes, or a list of (delay_s, bytes) parts); None: silence;
    raising ConnectionAbortedError closes the connection. `requests` counts them."""

    def __init__(self, answer, port=0):
        self.answer = answer
        self.ls = socket.socket()
        self.ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.ls.bind(("127.0.0.1", port))
        self.ls.listen(8)
        self.port = self.ls.getsockname()[1]
        self.requests = 0
        self.connections = 0
        self._socks = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.ls.accept()
            except OSError:
                return
            c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.connections += 1
            self._socks.append(c)
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        while True:
            try:
                req = c.recv(300)
            except OSError:
                return
            if not req:
                return
            self.requests += 1
            try:
                out = self.answer(req)
            except ConnectionAbortedError:  # the answer is to hang up
                c.close()
                return
            _send(c.sendall, out)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        self.ls.close()
        for c in self._socks:
            try:
                c.close()
            except OSError:
                pass


def _send(write, out):
    if out is None:
        return
    parts = out if isinstance(out, list) else [(0, out)]
    for delay_s, data in parts:
        if delay_s:
            time.sleep(delay_s)
        try:
            write(data)
        except OSError:
            return


class RawRTU:
    """A raw responder on a PtyLine's peer end: each request frame (8 bytes, a read
    request) goes to answer(req); what it returns is written back (see RawTCP)."""

    def __init__(self, line, answer):
        self.answer = answer
        self.requests = 0
        self._fd = os.open(line.peer_path, os.O_RDWR | os.O_NOCTTY)
        tty.setraw(self._fd)
        self._stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        buf = b""
        while not self._stop.is_set():
            r, _, _ = select.select([self._fd], [], [], 0.1)
            if not r:
                continue
            try:
                buf += os.read(self._fd, 256)
            except OSError:
                return
            while len(buf) >= 8:
                req, buf = buf[:8], buf[8:]
                self.requests += 1
                _send(lambda d: os.write(self._fd, d), self.answer(req))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        self._stop.set()
        time.sleep(0.15)
        os.close(self._fd)
