"""The building's side: the node's Modbus TCP server (lib/modbus/mbserver), its register
map, and the BMS's "sink available" heartbeat.

Imported only with a `bms` section (heatgw.app). The restartable task "bms" runs the
server; a crash of it is an event and a restart with backoff, never a relay. The
heartbeat register only posts to the command inbox ("modbus", "sink_available",
value != 0, the write's ticks); the control task judges it by the sink rule
(heatgw.inbox: silent beyond control.sink_sources.modbus = unavailable).

Input registers (function code 4), read-only, 0-based PDU addresses, every value an
integer in the unit given, multi-register values high word first (big-endian words and
bytes). Built at each request from the node's own state in one go: a value spanning
registers is never torn, and two registers of one request belong to the same moment.
A reading without a valid value reads as its type's "no value" marker (int16 0x8000,
uint16 0xFFFF, int32 0x80000000, uint32 0xFFFFFFFF), never a made-up number.

     0 map_version     uint16  1              19 energy_wh       uint64  Wh (19..22)
     1 state           uint16  0 bypass 1 reuse  23 volume_l     uint64  L (23..26)
     2 reason          uint16  main cause      27 energy_kwh      uint32  kWh
     3 active          uint16  bitmap          29 metered_s       uint32  s
     4 latched         uint16  bitmap          31 error_s         uint32  s
     5 sink_available  uint16  0/1, 0xFFFF     33 ratio_interval  uint32  1e-6
     6 sink_off_by     uint16  bitmap          35 ratio_hour      uint32  1e-6
     7 fault           uint16  0/1             37 ratio_total     uint32  1e-6
     8 uptime_s        uint32  s                39 compute_w       uint32  W
    10..13 supply, return, sink_return, it_coolant  int16  0.01 degC
    14 delta_t         int16   0.01 K           41 compute_wh      uint64  Wh (41..44)
    15 flow_l_h        uint32  L/h
    17 power_w         int32   W

reason, active, latched: heatgw.reasons codes (the telemetry's). sink_off_by:
bit 0 the contact, 1 the Modbus heartbeat, 2 MQTT, 3 another source. The ratios and the
compute load's power and energy come from gw.recovery (heatgw.recovery) when the node has
one; without it they read "no value". Holding register
`heartbeat_register` (function codes 3, 6, 16): the last value written. Anything else:
exception 02; a write anywhere else changes nothing.
"""

from mbserver import TCPServer
from micropython import const

from heatgw import clock
from heatgw.reasons import reason_bits, reason_code

SOURCE = "modbus"
MAP_VERSION = const(1)
N_INPUT = const(45)  # input registers 0..44
_RECORD_EVERY_MS = const(60_000)
_REFUSED_EVENT_MS = const(60_000)
_TEMPS = ("supply", "return", "sink_return", "it_coolant")
_RATIOS = ("ratio_interval", "ratio_hour", "ratio_total")
_INF = float("inf")


def _finite(v):
    return type(v) is float and v == v and v != _INF and v != -_INF or type(v) is int


def _round(v):
    # half away from zero, an int (v finite)
    return int(v + 0.5) if v >= 0 else -int(0.5 - v)


class Bms:
    def __init__(self, gw, bc):
        self.gw = gw
        self.hb_addr = bc["heartbeat_register"]
        self.hb_value = 0  # the last value written
        self.hb_writes = 0
        self.hb_ms = None  # node ticks of the last write
        self._img = bytearray(2 * N_INPUT)  # the input registers of one request
        clients = bc["clients"]
        self.server = TCPServer(bc["port"], [clients[k] for k in sorted(clients)], self,
                                clock=clock, max_conns=bc["max_connections"],
                                idle_ms=bc["idle_s"] * 1000,
                                serving=getattr(gw.board, "io_serving", None),
                                on_sweep=self._sweep)
        self._record_ms = clock.ticks_ms()
        self._refused_seen = 0  # server.refused at the last refusal event
        self._refused_ms = None
        gw.add_task("bms", self.run)

    async def run(self, asyncio):
        await self.server.run()

    def close(self):
        self.server.close()

    # -- the register map (mbserver calls these) ----------------------------------------

    def read(self, fc, addr, count, buf, off):
        if fc == 3:
            if addr != self.hb_addr or count != 1:
                return 2
            buf[off] = self.hb_value >> 8
            buf[off + 1] = self.hb_value & 0xFF
            return 0
        if addr + count > N_INPUT:
            return 2
        img = self._img
        try:
            self._snapshot(img)
        except Exception:  # noqa: BLE001 - a device failure answer, never a crash
            return 4
        for i in range(2 * count):
            buf[off + i] = img[2 * addr + i]
        return 0

    def write(self, addr, count, buf, off):
        if addr != self.hb_addr or count != 1:
            return 2  # only the heartbeat register takes writes
        v = buf[off] << 8 | buf[off + 1]
        now = clock.ticks_ms()
        inbox = self.gw.inbox
        # A flood of changing values may hold 2 slots of the inbox, and "unavailable"
        # always gets one while there is room: the others' requests still fit.
        if v and inbox.queued(SOURCE) >= 2:
            return 6  # server busy: nothing changed, the client writes again
        try:
            inbox.post(SOURCE, "sink_available", v != 0, now)
        except ValueError:
            return 6  # the inbox is full this tick: nothing changed
        self.hb_value = v
        self.hb_writes += 1
        self.hb_ms = now
        return 0

    def _snapshot(self, img):
        gw = self.gw
        fs = gw.failsafe
        ins = gw.inputs
        _u16(img, 0, MAP_VERSION)
        _u16(img, 1, 1 if gw.relay_reuse else 0)
        _u16(img, 2, reason_code(fs.cause) & 0xFFFF)
        _u16(img, 3, reason_bits(fs.active))
        _u16(img, 4, reason_bits(fs.latched))
        sa = ins.sink_available
        _u16(img, 5, 0xFFFF if sa is None else 1 if sa else 0)
        bits = 0
        by = ins.sink_by
        if sa is False and by:
            for part in by.split(","):
                bits |= 1 if part == "board" else 2 if part == SOURCE else \
                    4 if part == "mqtt" else 8
        _u16(img, 6, bits)
        _u16(img, 7, 0 if gw.fault is None else 1)
        _u32(img, 8, gw.uptime_ms // 1000)
        temps = ins.temps_c
        why = ins.temp_reasons
        sup = ret = None
        for i in range(4):
            name = _TEMPS[i]
            t = temps.get(name)
            c = None
            if why.get(name) is None and _finite(t):
                c = _round(t * 100)
                if not -0x7FFF <= c <= 0x7FFF:
                    c = None
            if i == 0:
                sup = c
            elif i == 1:
                ret = c
            _i16(img, 10 + i, c)
        _i16(img, 14, None if sup is None or ret is None else sup - ret)
        f = ins.flow_m3h
        _u32(img, 15, _round(f * 1000) if ins.flow_reason is None and _finite(f) and f >= 0
             else None)
        m = gw.meter
        wh = m.energy_wh  # the exact totals, flushed first, rounded down to the unit
        p = m.last_power_w  # (the batch that flush integrated)
        _i32(img, 17, _round(p) if _finite(p) and abs(p) < 2e9 else None)
        _u64(img, 19, wh)
        _u64(img, 23, m.volume_l)
        _u32(img, 27, wh // 1000)
        _u32(img, 29, m.time_s)
        _u32(img, 31, m.error_time_s)
        rec = getattr(gw, "recovery", None)
        for i in range(3):
            r = getattr(rec, _RATIOS[i], None) if rec is not None else None
            v = None
            if _finite(r) and r >= 0:
                v = _round(r * 1_000_000)
            _u32(img, 33 + 2 * i, v)
        p = getattr(rec, "compute_w", None) if rec is not None else None
        _u32(img, 39, _round(p) if _finite(p) and 0 <= p < 4e9 else None)
        e = getattr(rec, "compute_energy_wh", None) if rec is not None else None
        if type(e) is int and e >= 0:
            _u64(img, 41, e)
        else:
            for i in range(41, 45):
                _u16(img, i, 0xFFFF)

    # -- records --------------------------------------------------------------------------

    def _sweep(self):
        # (the server's sweeper, every few s): the minute's record, refused clients
        now = clock.ticks_ms()
        s = self.server
        if s.refused != self._refused_seen and (
                self._refused_ms is None
                or clock.ticks_diff(now, self._refused_ms) >= _REFUSED_EVENT_MS):
            self.gw.event({"kind": "bms", "what": "refused", "client": s.refused_addr,
                           "count": s.refused - self._refused_seen})
            self._refused_seen = s.refused
            self._refused_ms = now
        if clock.ticks_diff(now, self._record_ms) >= _RECORD_EVERY_MS:
            self._record_ms = now
            self.gw.emit("bms", self.record())

    def record(self):
        """The `bms` record: requests, exceptions, connections and why they closed,
        refused clients, the heartbeat, the longest real time in one server step."""
        s = self.server
        return {"requests": s.requests, "exceptions": s.exceptions,
                "connections": s.connections, "clients": s.clients(),
                "replaced": s.replaced, "idle_closed": s.idle_closed,
                "dropped": s.dropped, "refused": s.refused, "refused_addr": s.refused_addr,
                "heartbeat": self.hb_value, "heartbeat_writes": self.hb_writes,
                "heartbeat_age_ms": None if self.hb_ms is None
                else clock.ticks_diff(clock.ticks_ms(), self.hb_ms),
                "worst_request_us": s.worst_us, "worst_request_where": s.worst_where}


def _u16(img, reg, v):
    img[2 * reg] = v >> 8 & 0xFF
    img[2 * reg + 1] = v & 0xFF


def _i16(img, reg, v):
    _u16(img, reg, 0x8000 if v is None else v & 0xFFFF)


def _u32(img, reg, v):
    if v is None or v < 0 or v >> 16 > 0xFFFF:  # no value, or beyond the type
        _u16(img, reg, 0xFFFF)
        _u16(img, reg + 1, 0xFFFF)
        return
    _u16(img, reg, v >> 16)
    _u16(img, reg + 1, v & 0xFFFF)


def _i32(img, reg, v):
    if v is None:
        _u16(img, reg, 0x8000)
        _u16(img, reg + 1, 0)
        return
    _u16(img, reg, v >> 16 & 0xFFFF)
    _u16(img, reg + 1, v & 0xFFFF)


def _u64(img, reg, v):
    for i in range(4):
        _u16(img, reg + 3 - i, v >> (16 * i) & 0xFFFF)

