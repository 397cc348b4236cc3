"""Modbus meters: one restartable poller task per bus, and the values they keep.

Imported only when the configuration has a `modbus` section (heatgw.app). Only the
transport a bus needs is imported: lib/modbus/mbrtu for an RS-485 bus, mbtcp for TCP.

    gw.modbus.value("compute", "power_w")   # (value, reason, valid_ms)
    gw.modbus.meter("compute")              # (fault, valid_ms): the meter as a whole

value() is the one place every other part reads a meter (telemetry, the heat recovery
ratio, the BMS server): the value, None and the reason when there is no good one
("timeout", "crc", "exception:02", "truncated", "wrong_slave", "bad_frame", "closed",
"no_connection", "no_bus", "bad_value" for a float32 NaN/infinity, "stale" when older than
the meter's stale_s, "not_ready" before its first read), and the ticks of its last good
read. No stale value ever reads as fresh.

Polling: each bus's task takes the meter due first, reads its register blocks one
request per turn (mbplan groups adjacent registers), retries a failed request `retries`
times, then stores the values (decoded from the preallocated answer buffer into lists
made at construction) and the meter's fault. Waits are asyncio sleeps bounded in node
time by each meter's timeout_ms: a Modbus poll never holds the CPU beyond a parse or a
write (measured: record()["worst_call_us"]).

Fail-safe: each meter is an external reading (heatgw.failsafe): after every poll the
poller stores into gw.inputs.readings / reading_reasons / reading_valid_ms under the
meter's name; the control task's fail-safe judges the critical ones (sensor_fault:<name>,
sensor_stale:<name>). The poller decides nothing.

Events: a meter's fault appearing, changing or clearing is a `modbus` event, at most one
per meter per minute (the state then is what the next one says). Every minute a `modbus`
record (counters, the longest real time inside one Modbus call) goes to the record sinks.
"""

from mbcore import EXCEPTION, NAMES, OK, decode

from heatgw import clock

_EVENT_GAP_MS = 60_000
_RECORD_EVERY_MS = 60_000
_EXC = ("exception:00", "exception:01", "exception:02", "exception:03", "exception:04",
        "exception:05", "exception:06", "exception:07", "exception:08", "exception:09",
        "exception:0A", "exception:0B")
_PRIMARY = ("power_w", "flow_m3h", "energy_kwh", "volume_m3")  # a meter's reading value
_PARITY = {"none": None, "even": 0, "odd": 1}


class Meter:
    """One meter: its plan and what was read, in lists made once."""

    def __init__(self, name, mc, names, units, requests):
        self.name = name
        self.role = mc["role"]
        self.slave = mc["slave"]
        self.period_ms = mc["period_s"] * 1000
        self.timeout_ms = mc["timeout_ms"]
        self.retries = mc["retries"]
        self.stale_ms = mc["stale_s"] * 1000
        self.critical = mc["critical"]
        self.names = names
        self.units = units
        n = len(names)
        self.vals = [None] * n
        self.why = [None] * n  # reason of the last read of each value, None when good
        self.valid = [None] * n  # ticks of each value's last good read
        self.requests = requests
        self.fault = None  # the first failure of the last poll
        self.valid_ms = None  # ticks of the last poll without a fault
        self.next_ms = 0
        self.polls = 0
        self.failed = 0  # polls with a fault
        self.primary = 0
        for p in _PRIMARY:
            if p in names:
                self.primary = names.index(p)
                break
        self._ev = None  # the fault the last event reported
        self._ev_ms = None


class Modbus:
    def __init__(self, plan, board):
        """plan: heatgw.mbplan.plan(cfg), made by heatgw.start.modbus_plan at boot."""
        self.board = board
        self.meters = {}
        self._buses = []
        self._masters = []
        for bname, bc, ms in plan:
            meters = []
            for name, mc, names, units, reqs in ms:
                m = Meter(name, mc, names, units, reqs)
                self.meters[name] = m
                meters.append(m)
            t = self._master(bc)  # its buffers, once: a restarted bus task reuses them
            self._masters.append(t)
            self._buses.append((bname, bc, tuple(meters), t))
        self._inputs = None
        self._event = None
        self._emit = None
        self._record_ms = clock.ticks_ms()
        self.bus_errors = 0
        # the telemetry payload's `meters` as of a record (snapshot(), write_meters()):
        # references to the values, each meter's fault; lists made once
        self._order = tuple(sorted(self.meters))
        self._sv = [None] * sum([len(self.meters[n].names) for n in self._order])
        self._sf = [None] * len(self._order)

    # -- what others read -----------------------------------------------------------------

    def value(self, meter, name):
        """(value, reason, valid_ms) of one value of one meter (module doc)."""
        m = self.meters[meter]
        i = m.names.index(name)
        t = m.valid[i]
        why = m.why[i]
        if why is not None:
            return None, why, t
        if t is None:
            return None, "not_ready", None
        if clock.ticks_diff(clock.ticks_ms(), t) > m.stale_ms:
            return None, "stale", t
        return m.vals[i], None, t

    def meter(self, name):
        """(fault, valid_ms) of a meter: fault "stale" when its last good poll is older
        than its stale_s, "not_ready" before the first."""
        m = self.meters[name]
        if m.fault is not None:
            return m.fault, m.valid_ms
        if m.valid_ms is None:
            return "not_ready", None
        if clock.ticks_diff(clock.ticks_ms(), m.valid_ms) > m.stale_ms:
            return "stale", m.valid_ms
        return None, m.valid_ms

    def readings(self):
        """The meters' names: heatgw.failsafe's external readings."""
        return tuple(sorted(self.meters))

    def critical(self):
        """((name, stale_ms), ...) of the critical meters, for FailSafe(readings=...)."""
        return tuple((m.name, m.stale_ms) for m in self.meters.values() if m.critical)

    def record(self):
        """The `modbus` record: per meter polls, failed, fault, the age of its last good
        poll and its values (value()'s, None when there is no good one); requests sent,
        the longest real time one Modbus call took (µs) and where, bus task crashes."""
        now = clock.ticks_ms()
        meters = {}
        for m in self.meters.values():
            meters[m.name] = {"polls": m.polls, "failed": m.failed, "fault": m.fault,
                              "age_ms": None if m.valid_ms is None
                              else clock.ticks_diff(now, m.valid_ms),
                              "values": {n: self.value(m.name, n)[0] for n in m.names}}
        w, where, n = 0, None, 0
        for t in self._masters:
            n += t.requests
            if t.worst_us > w:
                w, where = t.worst_us, t.worst_where
        return {"meters": meters, "requests": n, "worst_call_us": w,
                "worst_call_where": where, "bus_errors": self.bus_errors}

    # -- running ---------------------------------------------------------------------------

    def attach(self, gw):
        """Store readings in gw.inputs, events and records through gw; one restartable
        task per bus ("modbus:<bus>")."""
        self._inputs = gw.inputs
        self._event = gw.event
        self._emit = gw.emit
        aw = getattr(self.board, "awaits_replies", None)
        if aw is not None:
            aw(self._awaiting)
        for bus in self._buses:
            gw.add_task("modbus:" + bus[0], self._task(bus))

    def _task(self, bus):
        return lambda asyncio: self._run(asyncio, bus)

    def _awaiting(self):
        for t in self._masters:
            if t.busy:
                return True
        return False

    def _master(self, bc):
        on_send = getattr(self.board, "io_sent", None)
        if bc["type"] == "tcp":  # connected by its first request
            from mbtcp import TCPMaster

            return TCPMaster(bc["host"], bc["port"], clock=clock, on_send=on_send)
        from mbrtu import RTUMaster  # its port is opened by the bus task

        bits = 10 + (bc["parity"] != "none") + (bc["stop_bits"] - 1)
        return RTUMaster(None, baudrate=bc["baud"], clock=clock, bits_per_char=bits,
                         on_send=on_send)

    async def _run(self, asyncio, bus):
        # One coroutine per bus for its whole life: a poll makes no coroutine of its own
        # (each request is one: the driver's transact).
        _name, bc, meters, t = bus
        opened = False
        try:
            if bc["type"] == "rtu":
                uart, de = self.board.rs485(bc["uart"], bc["baud"], _PARITY[bc["parity"]],
                                            bc["stop_bits"])
                t.attach(uart, de)
            opened = True
            now = clock.ticks_ms()
            for m in meters:
                m.next_ms = now
            while True:
                m = meters[0]
                for x in meters:
                    if clock.ticks_diff(x.next_ms, m.next_ms) < 0:
                        m = x
                d = clock.ticks_diff(m.next_ms, clock.ticks_ms())
                if d > 0:
                    await asyncio.sleep_ms(d)
                fault = None
                for pdu, spec in m.requests:  # one request per turn
                    tries = m.retries
                    while True:
                        st = await t.transact(m.slave, pdu, m.timeout_ms)
                        if st == OK or tries <= 0:
                            break
                        tries -= 1
                    fault = self._take(m, t, st, spec, fault)
                self._polled(m, fault)
                if t.err and bc["type"] == "rtu":
                    raise OSError(5, "RS-485 port closed")  # reopened by the restart
        except Exception:
            self.bus_errors += 1
            now = clock.ticks_ms()
            if not opened:  # the port could not be opened: no value of the bus is good
                for m in meters:
                    for i in range(len(m.names)):
                        m.vals[i] = None
                        m.why[i] = "no_bus"
                    self._store(m, "no_bus", now)
            raise
        finally:
            t.close()  # the reader stops, the socket or the UART is released

    def _take(self, m, t, st, spec, fault):
        """Store one request's values (decoded from the driver's buffer into the
        meter's lists) or its fault; returns the poll's first fault."""
        vals = m.vals
        why = m.why
        if st == OK:
            now = clock.ticks_ms()
            valid = m.valid
            rx = t.rx
            base = t.data
            for i, off, typ, order, scale in spec:
                v = decode(rx, base + off, typ, order)
                if v is None:
                    vals[i] = None
                    why[i] = "bad_value"
                    if fault is None:
                        fault = "bad_value"
                    continue
                if scale != 1:
                    v = v * scale
                vals[i] = v
                why[i] = None
                valid[i] = now
            return fault
        r = self._fault_name(st, t.exc)
        for i, _off, _typ, _order, _scale in spec:
            vals[i] = None
            why[i] = r
        return r if fault is None else fault

    def _polled(self, m, fault):
        m.polls += 1
        if fault is not None:
            m.failed += 1
        now = clock.ticks_ms()
        self._store(m, fault, now)
        m.next_ms = clock.ticks_add(m.next_ms, m.period_ms)
        if clock.ticks_diff(m.next_ms, now) < 0:  # overran its period: from now on
            m.next_ms = now
        if self._emit is not None and clock.ticks_diff(now, self._record_ms) >= 0:
            self._record_ms = clock.ticks_add(now, _RECORD_EVERY_MS)
            self._emit("modbus", self.record())

    def _fault_name(self, st, exc):
        if st == EXCEPTION:
            return _EXC[exc] if exc < len(_EXC) else "exception:%02X" % exc
        return NAMES[st]

    def _store(self, m, fault, now):
        """The meter's state after a poll: its fault, the fail-safe's reading, an event
        when the fault changed (at most one per minute per meter)."""
        m.fault = fault
        if fault is None:
            m.valid_ms = now
        ins = self._inputs
        if ins is not None:
            ins.readings[m.name] = None if fault is not None else m.vals[m.primary]
            ins.reading_reasons[m.name] = fault
            if fault is None:
                ins.reading_valid_ms[m.name] = now
        if fault != m._ev and self._event is not None and (
                m._ev_ms is None or clock.ticks_diff(now, m._ev_ms) >= _EVENT_GAP_MS):
            m._ev = fault
            m._ev_ms = now
            self._event({"kind": "modbus", "meter": m.name,
                         "state": "ok" if fault is None else "fault", "fault": fault,
                         "polls": m.polls, "failed": m.failed})


    # -- the telemetry payload's `meters` (heatgw.telemetry) ------------------------------

    def snapshot(self, now):
        """Every value as value() gives it (None when not good or stale) and each meter's
        fault as meter() gives it, as of now, into the lists made once (references: no
        allocation): the `meters` of the telemetry record taken now."""
        sv = self._sv
        k = 0
        j = 0
        for name in self._order:
            m = self.meters[name]
            for i in range(len(m.names)):
                t = m.valid[i]
                sv[k] = m.vals[i] if (m.why[i] is None and t is not None and
                                      clock.ticks_diff(now, t) <= m.stale_ms) else None
                k += 1
            f = m.fault
            if f is None:
                if m.valid_ms is None:
                    f = "not_ready"
                elif clock.ticks_diff(now, m.valid_ms) > m.stale_ms:
                    f = "stale"
            self._sf[j] = f
            j += 1

    def write_meters(self, w, live):
        """`,"meters":{"<meter>":{"<value>":v,...,"fault":f},...}` into a payloads.Writer:
        the snapshot's values (live), or every value null with the fault "invalid" (a
        record from the backlog: the queue keeps no meter values)."""
        w.raw(b',"meters":{')
        sv = self._sv
        k = 0
        j = 0
        for name in self._order:
            m = self.meters[name]
            if j:
                w.raw(b",")
            w.str(name)
            w.raw(b":{")
            for vn in m.names:
                w.str(vn)
                w.raw(b":")
                v = sv[k] if live else None
                k += 1
                if v is None:
                    w.raw(b"null,")
                elif type(v) is int:
                    w.raw(b"%d," % v)
                else:
                    w.raw(b"%.7g," % v)
            w.raw(b'"fault":')
            w.str(self._sf[j] if live else "invalid")
            w.raw(b"}")
            j += 1
        w.raw(b"}")


class ModbusFlow:
    """flow.type "modbus": the heat meter's volume and the fail-safe's flow from a Modbus
    flow meter (role flow), with heatgw.flow.PulseFlow's sample() interface.

    Volume: the difference of the meter's volume_m3 total between two good reads, in
    whole µL (a float32 total is exact to its own resolution: 1 L at 10^4 m3, 8 L at
    10^5 m3; the differences telescope, so that error never accumulates). A total that
    goes backwards (a replaced or reset meter) or jumps beyond twice max_m3h over the
    time between the reads adds nothing (counted in `resets`). Rate: flow_m3h when the
    meter has it, else from the volume differences. None while the meter's last good
    poll is older than its stale_s: a stale flow is no flow."""

    def __init__(self, mb, name, max_m3h):
        m = mb.meters[name]
        self._m = m
        self._iv = m.names.index("volume_m3")
        self._if = m.names.index("flow_m3h") if "flow_m3h" in m.names else -1
        self._max = max_m3h
        self._t = None  # valid ticks of the volume last taken
        self._v = None
        self._rate = None
        self.valid_ms = None
        self.resets = 0
        self.stale_ms = m.stale_ms

    def sample(self, now_ms):
        """(volume_ul since the last sample, flow_m3h or None, reason or None)."""
        m = self._m
        self.valid_ms = m.valid_ms
        vol_ul = 0
        i = self._iv
        t = m.valid[i]
        if t is not None and t != self._t and m.why[i] is None:
            v = m.vals[i]
            if self._t is not None:
                d = v - self._v
                dt = clock.ticks_diff(t, self._t)
                if 0 <= d and dt > 0 and d * 3_600_000 <= 2 * self._max * dt:
                    vol_ul = int(d * 1e9 + 0.5)
                    self._rate = d * 3_600_000 / dt
                else:
                    self.resets += 1
            self._t = t
            self._v = v
        if m.valid_ms is None or clock.ticks_diff(now_ms, m.valid_ms) > m.stale_ms:
            return vol_ul, None, m.fault
        if self._if >= 0:
            return vol_ul, m.vals[self._if], m.fault
        return vol_ul, self._rate, m.fault
