"""The gateway application: one asyncio app, fail-safe first.

Tasks (Peter Hinch's micropython-async style, one global exception handler), registered
with `Gateway.add_task(name, coro_fn, critical=...)`:
- sampler (critical): every control tick starts a 1-shot conversion on each RTD (with
  the chip's wiring check), reads them when due, samples the flow meter and the board
  inputs, feeds the heat meter (viper kernel) and wakes the control task.
- control (critical): drains the command inbox (heatgw.inbox), merges its requests with
  the board inputs, evaluates the fail-safe (heatgw.failsafe) on every fresh sample,
  drives the relays and toggles the dead-man output every tick. Nothing else decides a
  relay.
- supervisor (critical): every tick, feeds the hardware watchdog only while sampler and
  control checked in within `stall_s` and nothing critical failed; otherwise it latches
  the fault (relays safe at once: the control task may be the one that hangs), logs why
  and lets the watchdog reset the node.
- persist (restartable): saves meter totals and latched trips every interval (events go
  to flash as they happen, heatgw.events).

A critical task that fails latches the fault: `drive_relays` then releases every relay
whatever it is asked, and the dead-man output stops toggling, until the node resets. A
restartable task (persist now; network, console, Modbus later) that crashes is an event
and is restarted with capped exponential backoff; `_FAILING_RESTARTS` crashes within
`_FAILING_WINDOW_MS` are a `task_failing` event. Control and metering carry on.
"""

import json

from micropython import const

from heatgw import clock
from heatgw.events import EventLog
from heatgw.failsafe import FailSafe, Inputs
from heatgw.heapmon import HeapMonitor
from heatgw.inbox import Inbox
from heatgw.inbox import sources as sink_sources
from heatgw.meter import c_to_mc
from heatgw.store import SlotStore

_CHECKED_IN = ("sampler", "control")  # the supervisor's own liveness is its watchdog feed
_RESTART_BASE_MS = const(1_000)  # first restart of a crashed restartable task; doubles per crash
_RESTART_CAP_MS = const(60_000)
_FAILING_RESTARTS = const(5)  # this many crashes within the window: a task_failing event
_FAILING_WINDOW_MS = const(600_000)
_STATE_VERSION = const(2)  # 2: the event log moved to its own files (heatgw.events)
_EVENTS_PER_FILE = const(32)  # on flash, two files: the newest 32..64 events survive a reboot
_STATUS_EVERY_MS = const(60_000)
_MAX_POLLS = const(8)  # bias settle, wiring-check polls, conversion, with margin


class Gateway:
    # (options by keyword; not keyword-only: the defaults then take a tuple, not a dict)
    def __init__(self, board, cfg, meter, cfg_source="file", cfg_errors=(),
                 configured=True, sinks=(), queue=None, modbus_plan=None):
        self.board = board
        self.cfg = cfg
        now = clock.ticks_ms()
        self._up_last_ms = now
        # Uptime as whole seconds + ms: a ms count passes 2**30 (a long int, an
        # allocation per tick on a 32-bit port) after 12.4 days; seconds last 34 years.
        self._up_s = 0
        self._up_ms = 0
        # The relays first: safe now, whatever happens below.
        self._relays = board.relays_safe()
        self._valve_out = None  # the valve's 0-10 V command output (_build_valve_output)
        self._relay_active = {name: board.RELAY_PINS[name][1] for name in self._relays}
        self.relay_reuse = False
        # The fault latch: the first critical failure, set once by _fail(), never cleared
        # (only a reset does). While set, drive_relays releases every relay.
        self.fault = None
        self._dead_man = board.dead_man()
        self._dead_man_level = 0
        self._dead_man.value(0)
        # Heap: sampled every supervisor pass and, as a sink, at saves, events, restore.
        self.heap = HeapMonitor(cap_bytes=getattr(board, "HEAP_PROBE_CAP_BYTES", None))
        self.sinks = [self.heap.sink] + list(sinks)
        self.flash_errors = 0  # state saves (and odd event-log errors) that failed
        self.checkins = {name: now for name in _CHECKED_IN}
        # The sink rule's sources (heatgw.inbox): the contact, sink_sources' remotes
        self.inbox = Inbox(sink_sources=sink_sources(cfg["control"]))
        self.inbox.ticks_diff = clock.ticks_diff
        # Hooks of an optional part (heatgw.telemetry): on_tick(gw, now) in the control
        # path every tick (it only copies), on_shutdown() at an orderly stop.
        self.on_tick = None
        self.on_shutdown = None
        # Control-tick lateness in node time: how late the sampler woke against its
        # schedule, or the control task after the sample it acts on (ms; the worst).
        self.worst_tick_late_ms = 0
        self._tasks = []
        self._asyncio = None

        ctl = cfg["control"]
        self.tick_ms = ctl["tick_ms"]
        data = board.data_dir()
        self.log = EventLog(data, _EVENTS_PER_FILE)
        self.store = SlotStore(data + "/state.a", data + "/state.b")
        self.saved_seq = 0
        self.boot_id = 0
        self._restored_recovery = None  # heatgw.recovery's totals, when it is configured
        latched = self._restore()
        if queue is not None:
            self._restore_from_queue(queue)

        self.meter = meter
        if self._restored_totals:
            self.meter.restore(self._restored_totals)
        del self._restored_totals  # boot only
        self._build_sensors(cfg.get("sensors") or {})
        # Modbus meters (heatgw.modbus, only when configured): gw.modbus.value(meter, name)
        self.modbus = None
        if cfg.get("modbus"):
            from heatgw.modbus import Modbus

            if modbus_plan is None:  # (heatgw.start makes it earlier, on a smaller heap)
                from heatgw.start import modbus_plan as make

                modbus_plan = make(cfg)
            self.modbus = Modbus(modbus_plan, board)
            modbus_plan = None
        mb = self.modbus
        # The heat recovery ratio and the heat meter check (heatgw.recovery, only when
        # configured): gw.recovery.ratio_total, .compute_w, ... (its module doc)
        self.recovery = None
        if cfg.get("recovery"):
            from heatgw.recovery import Recovery

            self.recovery = Recovery(cfg, self)
            if self._restored_recovery:
                try:
                    self.recovery.restore(self._restored_recovery)
                except ValueError as e:
                    print("state:", e)
        del self._restored_recovery  # boot only
        self.flow = None
        self._flow_modbus = False
        flow_cfg = cfg.get("flow")
        if flow_cfg and flow_cfg["type"] == "modbus":  # a meter of self.modbus (mbplan)
            from heatgw.modbus import ModbusFlow

            self.flow = ModbusFlow(mb, flow_cfg["meter"], flow_cfg["max_m3h"])
            self._flow_modbus = True
        elif flow_cfg:
            from heatgw.flow import PulseFlow

            # the board picks the counter (hardware where it has one) for this debounce
            counter = board.flow_pulse_counter(
                min_pulse_us=int(flow_cfg["min_pulse_ms"] * 1000 + 0.5))
            self.flow = PulseFlow(counter, now_ms=now, ticks_diff=clock.ticks_diff,
                                  litres_per_pulse=flow_cfg.get("litres_per_pulse"),
                                  pulses_per_litre=flow_cfg.get("pulses_per_litre"),
                                  zero_after_s=flow_cfg["zero_after_s"],
                                  stuck_active_s=flow_cfg["stuck_active_s"])
        # Analogue inputs (heatgw.analog, only when configured): valve position, pressure
        self.analog = None
        if cfg.get("analog"):
            from heatgw.analog import Analog

            self.analog = Analog(cfg["analog"], board)
        an = self.analog
        self._build_valve_output()
        # external readings (heatgw.failsafe): the Modbus meters and analogue inputs
        names = mb.readings() if mb else ()
        if an is not None:
            names += an.names()
        self.inputs = Inputs(tuple(self.sensors), names)
        self._board_inputs = board.inputs()
        self.board_levels = dict.fromkeys(self._board_inputs)  # read by the sampler
        crit = mb.critical() if mb else ()
        if an is not None:
            crit += an.critical(ctl["stale_s"] * 1000)
        self.failsafe = FailSafe(
            ctl, sensors_cfg=cfg.get("sensors") or {}, flow_cfg=cfg.get("flow"),
            now_ms=now, latched=latched, configured=configured,
            readings=crit,
            flow_stale_ms=self.flow.stale_ms if self._flow_modbus else None,
            input_limits=an.trips() if an else (), valve_reading=an.valve() if an else None,
            milli_readings=an.names() if an else (),
        )
        self.failsafe.ticks_diff = clock.ticks_diff
        self._sample_ms = now
        self.boot_id += 1
        self.event({"kind": "boot", "config": cfg_source, "errors": list(cfg_errors)[:4],
                    "latched": list(latched), "state": self.failsafe.state})
        self.save("boot")  # a crash loop still counts boots and keeps latched trips
        self._save_due_ms = clock.ticks_add(now, cfg["persist"]["interval_s"] * 1000)
        self.add_task("sampler", self.sampler, critical=True)
        self.add_task("control", self.control, critical=True)
        self.add_task("persist", self.persist)
        self.add_task("supervisor", self.supervisor, critical=True)
        if mb is not None:
            mb.attach(self)  # a restartable task per bus: "modbus:<bus>"
        # The building's Modbus TCP server (heatgw.bms, only when configured): the task
        # "bms"; its heartbeat only posts to the inbox
        self.bms = None
        if cfg.get("bms"):
            from heatgw.bms import Bms

            self.bms = Bms(self, cfg["bms"])

    # -- construction -----------------------------------------------------------------

    def _build_sensors(self, sensors_cfg):
        from max31865 import MAX31865

        from heatgw.rtd import TemperatureSensor

        self.sensors = {}
        if not sensors_cfg:
            return
        bus = self.board.spi()
        for name, sc in sensors_cfg.items():
            adc = MAX31865(bus, self.board.rtd_cs(name), wires=sc["wires"],
                           filter_hz=self.cfg["site"]["mains_hz"],  # required with sensors
                           r_ref_ohm=self.board.R_REF_OHM, r0_ohm=sc["r0_ohm"], clock=clock)
            adc.init()
            self.sensors[name] = TemperatureSensor(
                adc, offset_k=sc["offset_k"], min_c=sc["min_c"], max_c=sc["max_c"])

    def _build_valve_output(self):
        """The valve's 0-10 V command output (analog.valve.output "pwm"), at its closed
        duty from the start; driven only by drive_relays. A board without one says so at
        boot and the reuse relay alone commands the valve (it powers the actuator)."""
        self._valve_out = None
        an = self.analog
        if an is None or an.output != "pwm":
            return
        make = getattr(self.board, "valve_output", None)
        try:
            if make is None:
                raise ValueError("the board has no valve output")
            self._valve_duty = an.valve_duties(self.board.VALVE_OUT_FULL_V)
            out = make()
            out.duty_u16(self._valve_duty[1])
            self._valve_out = out
        except ValueError as e:
            print("analog: valve output:", e)

    # -- persistence ------------------------------------------------------------------

    def _restore(self):
        self._restored_totals = None
        try:
            seq, payload = self.store.load()
        except Exception as e:  # noqa: BLE001 - a bad flash must not stop the fail-safe
            print("state: cannot read:", repr(self.heap.caught(e)))
            seq, payload = 0, None
        self.saved_seq = seq
        if payload is None:
            return ()
        try:
            st = json.loads(payload)
            self.boot_id = int(st["boot"])
            self._restored_totals = st["totals"]
            self._restored_recovery = st.get("recovery")
            latched = tuple(st.get("latched") or ())
        except Exception as e:  # noqa: BLE001
            print("state: record %d unreadable: %r" % (seq, e))
            return ()
        self.emit("restored", {"seq": seq, "boot": self.boot_id,
                               "totals": self._restored_totals, "latched": list(latched)})
        return latched

    def _restore_from_queue(self, queue):
        """The newer of the state record's totals and the flash queue's newest
        telemetry record (the larger metered time_ms): a power cut then costs at most
        one telemetry interval of metering instead of one save interval."""
        try:
            got = queue.last_totals()
        except Exception as e:  # noqa: BLE001 - the state record is still there
            print("queue: cannot read totals:", repr(self.heap.caught(e)))
            return
        if got is None:
            return
        seq, totals = got
        st = self._restored_totals
        if st is not None and totals.get("time_ms", 0) <= st.get("time_ms", 0):
            return
        self._restored_totals = totals
        self._restored_recovery = totals.get("recovery") or self._restored_recovery
        self.emit("restored", {"from": "queue", "seq": seq, "boot": self.boot_id,
                               "totals": totals})

    def save(self, why):
        """Persist totals, latched trips and the boot id (atomic two-slot record; the
        event log is written event by event, see heatgw.events). Never raises: the
        control path saves too (a latch), and a flash error must not stop it; counted
        in `flash_errors`, retried at the next save."""
        try:
            return self._save(why)
        except Exception as e:  # noqa: BLE001 - keep controlling
            self.flash_errors += 1
            err = repr(self.heap.caught(e))
            print("state: save failed:", err)
            self.event({"kind": "save_failed", "why": why, "error": err[:60]})
            return None

    def _save(self, why):
        totals = self.meter.totals()
        st = {"v": _STATE_VERSION, "boot": self.boot_id, "totals": totals,
              "latched": list(self.failsafe.latched)}
        if self.recovery is not None:
            st["recovery"] = self.recovery.totals()  # beside the heat it is paired with
        record = json.dumps(st).encode()
        self.emit("saving", {"seq": self.store.next_seq(), "why": why, "totals": totals})
        self.saved_seq = self.store.save(record)
        self.emit("saved", {"seq": self.saved_seq, "why": why, "totals": totals})
        return self.saved_seq

    # -- records ----------------------------------------------------------------------

    def add_sink(self, sink):
        """sink(kind, record): events, saves and status go to every sink."""
        self.sinks.append(sink)

    def emit(self, kind, record):
        for sink in self.sinks:
            try:
                sink(kind, record)
            except Exception as e:  # noqa: BLE001 - a broken sink never stops control
                print("sink failed:", repr(self.heap.caught(e)))

    def event(self, ev):
        """Stamp an event with boot id, uptime and UTC, keep it, print it, emit it."""
        vals = ev.get("values")
        if vals:  # 3 decimals say all a sensor can (and keep the log lines short)
            for k, v in vals.items():
                if isinstance(v, float):
                    vals[k] = round(v, 3)
        ev["boot"] = self.boot_id
        ev["up_ms"] = self.uptime_ms
        ev["utc"] = clock.utc_s()
        try:
            self.log.append(ev)  # on flash at once: a power cut right after keeps it
        except Exception as e:  # noqa: BLE001 - a flash error must not stop control
            self.flash_errors += 1
            print("event log: append failed:", repr(e))
        print("event:", json.dumps(ev))
        self.emit("event", ev)

    # -- relays -----------------------------------------------------------------------

    def drive_relays(self, reuse):
        """The one place that drives relay pins. Once a fault is latched every relay is
        released, whatever the caller asks."""
        reuse = reuse is True and self.fault is None
        self.relay_reuse = reuse
        for name, pin in self._relays.items():
            active = self._relay_active[name]
            pin.value(active if reuse else 1 - active)
        out = self._valve_out  # the valve's 0-10 V command follows the reuse relay
        if out is not None:
            out.duty_u16(self._valve_duty[0] if reuse else self._valve_duty[1])

    def _fail(self, reason, ev):
        """Latch the fault (the first reason stays), release the relays, log `ev`. The
        dead-man output stops toggling and the supervisor stops feeding the watchdog."""
        if self.fault is None:
            self.fault = reason
        self.drive_relays(False)
        self.event(ev)

    def _toggle_dead_man(self):
        # Healthy ticks only: the hardware drops the coils when the edges stop.
        if self.fault is None:
            self._dead_man_level ^= 1
            self._dead_man.value(self._dead_man_level)

    # -- tasks ------------------------------------------------------------------------

    @property
    def uptime_ms(self):
        return self._up_s * 1000 + self._up_ms

    def _uptime(self, now):
        d = clock.ticks_diff(now, self._up_last_ms)
        if d > 0:
            ms = self._up_ms + d
            self._up_s += ms // 1000
            self._up_ms = ms % 1000
        self._up_last_ms = now

    async def sampler(self, asyncio):
        inputs = self.inputs
        sensors = self.sensors
        tick = self.tick_ms
        next_ms = clock.ticks_ms()
        pending = []
        while True:
            late = clock.ticks_diff(clock.ticks_ms(), next_ms)
            self._late(late)
            for s in sensors.values():
                s.start()
            now = await self._convert(asyncio, sensors, pending)
            self._uptime(now)
            vol_ul = 0
            if self.flow is not None:
                vol_ul, m3h, why = self.flow.sample(now)
                inputs.flow_m3h = m3h
                inputs.flow_reason = why
                if why is None:  # a Modbus meter's value is as old as its last poll
                    inputs.flow_valid_ms = self.flow.valid_ms if self._flow_modbus else now
            self._read_board_inputs()
            if self.analog is not None:
                self.analog.sample(inputs, now)
            dt_ms = clock.ticks_diff(now, self._sample_ms)
            self._sample_ms = now
            if dt_ms > 0:
                self.meter.add(c_to_mc(inputs.temps_c.get("supply")),
                               c_to_mc(inputs.temps_c.get("return")), vol_ul, dt_ms)
            self.checkins["sampler"] = now
            self._fresh.set()
            next_ms = clock.ticks_add(next_ms, tick)
            d = clock.ticks_diff(next_ms, clock.ticks_ms())
            if d < 0:  # overran a tick: start again from now instead of bursting
                self._late(-d)
                next_ms = clock.ticks_ms()
                d = 0
            await asyncio.sleep_ms(d)

    async def _convert(self, asyncio, sensors, pending):
        """Poll the started 1-shots when each is due (VBIAS settle, wiring check,
        conversion: a few polls, ~70 ms) and store the readings; returns the time of
        the last reading. Bounded: a chip that never finishes reads as not_ready and
        goes stale in the fail-safe."""
        inputs = self.inputs
        pending.clear()
        pending.extend(sensors)
        for _ in range(_MAX_POLLS):
            wait_ms = 0
            for name in pending:
                w = sensors[name].adc.wait_ms()
                if w > wait_ms:
                    wait_ms = w
            if wait_ms:
                await asyncio.sleep_ms(wait_ms)
            now = clock.ticks_ms()
            i = 0
            while i < len(pending):
                name = pending[i]
                t, why = sensors[name].read_c()
                if why == "not_ready" and wait_ms:
                    i += 1
                    continue
                inputs.temps_c[name] = t
                inputs.temp_reasons[name] = why
                if why is None:
                    inputs.temp_valid_ms[name] = now
                pending.pop(i)
            if not pending or not wait_ms:
                break
        for name in pending:
            inputs.temps_c[name] = None
            inputs.temp_reasons[name] = "not_ready"
        return clock.ticks_ms()

    def _read_board_inputs(self):
        # Levels only; the control task merges them with the inbox's requests
        # (maintenance, sink_available) or passes them on (trip_reset, valve_at_reuse).
        lv = self.board_levels
        for name, (pin, active) in self._board_inputs.items():
            lv[name] = pin.value() == active

    def _merge_inputs(self, now):
        """Drain the inbox and merge its requests with the board levels; returns the
        events (requests, and remote latch resets)."""
        events, resets = self.inbox.drain(now)
        lv = self.board_levels
        ins = self.inputs
        self.inbox.merge(ins, lv, now)  # remote sink sources fall silent here, on the tick
        ins.trip_reset = lv.get("trip_reset") is True
        ins.valve_at_reuse = lv.get("valve_at_reuse")
        for source in resets:  # any reset means drain() made fresh lists
            events.extend(self.failsafe.reset_latches(now, source))
        return events

    async def control(self, asyncio):
        fs = self.failsafe
        fresh = self._fresh
        while True:
            # Every sample, i.e. every tick. If the sampler stalls or dies, the
            # supervisor latches the fault within a tick and lets the watchdog reset the
            # node (a stall cannot be repaired from inside).
            await fresh.wait()
            fresh.clear()
            now = clock.ticks_ms()
            self._late(clock.ticks_diff(now, self._sample_ms))
            requests = self._merge_inputs(now)
            events = fs.update(now, self.inputs)
            self.drive_relays(fs.relay_reuse)
            self._toggle_dead_man()
            for evs in (requests, events):
                for ev in evs:
                    self.event(ev)
                    if ev.get("kind") in ("latch", "reset"):
                        self.save(ev["kind"])  # a latched trip survives a crash loop
            if self.recovery is not None:
                try:  # new compute / heat meter readings, windows (no allocation per tick)
                    self.recovery.tick(now)
                except Exception as e:  # noqa: BLE001 - the ratio never stops control
                    print("recovery failed:", repr(self.heap.caught(e)))
            if self.on_tick is not None:
                try:
                    self.on_tick(self, now)
                except Exception as e:  # noqa: BLE001 - telemetry never stops control
                    print("tick hook failed:", repr(self.heap.caught(e)))
            self.checkins["control"] = now

    def _late(self, ms):
        if ms > self.worst_tick_late_ms:
            self.worst_tick_late_ms = ms

    async def persist(self, asyncio):
        interval_ms = self.cfg["persist"]["interval_s"] * 1000
        while True:
            d = clock.ticks_diff(self._save_due_ms, clock.ticks_ms())
            if d > 0:
                await asyncio.sleep_ms(d)
            now = clock.ticks_ms()
            try:
                self._save("interval")
            except Exception as e:
                # a flash error crashes this task; restarted after its backoff, it
                # retries at once
                self._save_due_ms = now
                self.event({"kind": "save_failed", "why": "interval",
                            "error": repr(e)[:60]})
                raise
            self._save_due_ms = clock.ticks_add(now, interval_ms)

    async def supervisor(self, asyncio):
        sup = self.cfg["supervisor"]
        wdt = self.board.watchdog(sup["watchdog_ms"])
        period_ms = min(self.tick_ms, sup["watchdog_ms"] // 4)
        stall_ms = sup["stall_s"] * 1000
        heap = self.heap
        status_due = clock.ticks_ms()
        while True:
            now = clock.ticks_ms()
            stalled = None
            for name in _CHECKED_IN:
                if clock.ticks_diff(now, self.checkins[name]) > stall_ms:
                    stalled = name
                    break
            if stalled is not None and self.fault is None:
                self._fail("task_stalled:" + stalled,
                           {"kind": "supervisor", "state": "bypass",
                            "reason": "task_stalled:" + stalled, "action": "watchdog reset"})
            if self.fault is None:
                wdt.feed()  # a latched fault starves it: the watchdog resets the node
            try:  # live heap after a collect every 10 passes; the largest free block
                heap.tick()
                if heap.changed:
                    self.emit("heap", heap.record())
            except MemoryError as e:  # measuring never stops the supervisor
                heap.caught(e)
            if clock.ticks_diff(now, status_due) >= 0:
                status_due = clock.ticks_add(now, _STATUS_EVERY_MS)
                self.emit("status", self.status())
                if self.analog is not None:
                    self.emit("analog", self.analog.record())
            await asyncio.sleep_ms(period_ms)

    def status(self):
        ins = self.inputs
        m = self.meter
        return {"state": self.failsafe.state, "active": list(self.failsafe.active),
                "latched": list(self.failsafe.latched), "temps_c": ins.temps_c,
                "flow_m3h": ins.flow_m3h, "power_w": m.last_power_w,
                "energy_wh": m.energy_wh, "volume_l": m.volume_l,
                "up_ms": self.uptime_ms, "boot": self.boot_id,
                "peak_heap_bytes": self.heap.peak_bytes,
                "min_largest_free_bytes": self.heap.min_largest_free_bytes,
                "memory_errors": self.heap.memory_errors, "fault": self.fault,
                "worst_tick_late_ms": self.worst_tick_late_ms,
                "flash_errors": self.flash_errors + self.log.errors}

    def add_task(self, name, coro_fn, critical=False):
        """Register a task: coro_fn(asyncio) is its coroutine function. A critical task
        that raises (or returns) latches the fault; any other is restarted with backoff.
        Tasks added while the application runs start at once."""
        if type(name) is not str or not name:
            raise ValueError("task name must be a non-empty str")
        for t in self._tasks:  # (name, coro_fn, critical) until run() started them: names
            if (t if type(t) is str else t[0]) == name:
                raise ValueError("task %r already registered" % name)
        if self._asyncio is not None:
            self._tasks.append(name)
            self._start(name, coro_fn, critical)
        else:
            self._tasks.append((name, coro_fn, critical))

    def _start(self, name, coro_fn, critical):
        asyncio = self._asyncio
        if critical:
            asyncio.create_task(self._critical(name, coro_fn, asyncio))
        else:
            asyncio.create_task(self._restartable(name, coro_fn, asyncio))

    async def _critical(self, name, coro_fn, asyncio):
        try:
            await coro_fn(asyncio)
            err = "returned"  # never meant to: as bad as a crash
        except Exception as e:  # noqa: BLE001 - the fault latch decides what happens next
            err = repr(e)
        self._fail("crash:" + name, {"kind": "crash", "task": name, "error": err[:120]})

    async def _restartable(self, name, coro_fn, asyncio):
        crashes = 0  # within the current window
        window_ms = clock.ticks_ms()
        while True:
            try:
                await coro_fn(asyncio)
                self.event({"kind": "task", "task": name, "state": "ended"})
                return
            except Exception as e:  # noqa: BLE001 - restarted below; control goes on
                err = repr(e)[:120]
            now = clock.ticks_ms()
            if clock.ticks_diff(now, window_ms) > _FAILING_WINDOW_MS:
                crashes = 0
            if crashes == 0:
                window_ms = now
            crashes += 1
            delay_ms = _RESTART_BASE_MS << min(crashes - 1, 6)
            if delay_ms > _RESTART_CAP_MS:
                delay_ms = _RESTART_CAP_MS
            self.event({"kind": "task", "task": name, "state": "crashed", "error": err,
                        "crashes": crashes, "restart_in_ms": delay_ms})
            if crashes == _FAILING_RESTARTS:
                self.event({"kind": "task_failing", "task": name, "crashes": crashes,
                            "window_s": _FAILING_WINDOW_MS // 1000, "error": err})
            await asyncio.sleep_ms(delay_ms)

    def _loop_exception(self, loop, context):
        exc = context.get("exception")
        self._fail("crash:unknown", {"kind": "crash", "task": "unknown", "error": repr(exc)})

    async def run(self, asyncio):
        self._fresh = asyncio.Event()
        self._asyncio = asyncio
        asyncio.get_event_loop().set_exception_handler(self._loop_exception)
        for name, coro_fn, critical in self._tasks:
            self._start(name, coro_fn, critical)
        self._tasks = [t[0] for t in self._tasks]  # started: only their names are kept
        while True:  # the tasks run on; a latched fault lets the WDT act
            await asyncio.sleep_ms(3_600_000)

    def shutdown(self):
        """Orderly stop (console Ctrl-C, redeploy): relays safe, totals saved."""
        was_reuse = self.relay_reuse
        self.drive_relays(False)
        if was_reuse:
            self.event({"kind": "state", "state": "bypass", "reason": "shutdown"})
        self.meter.flush()
        self.save("shutdown")
        if self.modbus is not None:
            self.emit("modbus", self.modbus.record())  # the final counters
        if self.bms is not None:
            self.bms.close()  # the port is free for the next start
            self.emit("bms", self.bms.record())
        if self.on_shutdown is not None:
            try:
                self.on_shutdown()
            except Exception as e:  # noqa: BLE001 - the state is saved already
                print("shutdown hook failed:", repr(e))
