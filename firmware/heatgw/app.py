"""The gateway application: one asyncio app, fail-safe first.

Tasks (Peter Hinch's micropython-async style, one global exception handler):
- sampler: every control tick starts a 1-shot conversion on each RTD (with the chip's
  wiring check), reads them when due, samples the flow meter and the board-level inputs,
  feeds the heat meter (viper kernel) and hands the fresh inputs to the control task.
- control: evaluates the fail-safe (heatgw.failsafe) on every fresh sample (every tick)
  and drives the relays every tick. Nothing else ever energises a relay.
- persist: saves meter totals and latched trips every interval (events go to flash
  as they happen, heatgw.events).
- supervisor: every tick, feeds the hardware watchdog only while every critical task has
  checked in within `stall_s` and none has crashed; otherwise it drives the relays safe
  at once (the control task may be the one that hangs), logs why and lets the watchdog
  reset the node.

Later issues (network, console, Modbus) add tasks and record sinks (`add_sink`) without
touching the control path; until then maintenance, trip reset, "sink available" and the
valve feedback are board-level inputs.
"""

import json

from heatgw import clock
from heatgw.events import EventLog
from heatgw.failsafe import FailSafe, Inputs
from heatgw.heapmon import HeapMonitor
from heatgw.meter import c_to_mc
from heatgw.store import SlotStore

CRITICAL_TASKS = ("sampler", "control")
_STATE_VERSION = 2  # 2: the event log moved to its own files (heatgw.events)
_EVENTS_PER_FILE = 32  # on flash, two files: the newest 32..64 events survive a reboot
_STATUS_EVERY_MS = 60_000
_MAX_POLLS = 8  # bias settle, wiring-check polls, conversion, with margin


class Gateway:
    def __init__(self, board, cfg, *, cfg_source="file", cfg_errors=(), configured=True,
                 sinks=(), meter=None):
        self.board = board
        self.cfg = cfg
        now = clock.ticks_ms()
        self.boot_ms = now
        self._up_last_ms = now
        self.uptime_ms = 0
        # The relays first: safe now, whatever happens below.
        self._relays = board.relays_safe()
        self._relay_active = {name: board.RELAY_PINS[name][1] for name in self._relays}
        self.relay_reuse = False
        # Heap: sampled every supervisor pass and, as a sink, at saves, events, restore.
        self.heap = HeapMonitor(cap_bytes=getattr(board, "HEAP_PROBE_CAP_BYTES", None))
        self.sinks = [self.heap.sink] + list(sinks)
        self._crashed = None
        self._starved = False
        self.checkins = {name: now for name in CRITICAL_TASKS}

        ctl = cfg["control"]
        self.tick_ms = ctl["tick_ms"]
        data = board.data_dir()
        self.log = EventLog(data, _EVENTS_PER_FILE)
        self.store = SlotStore(data + "/state.a", data + "/state.b")
        self.saved_seq = 0
        self.boot_id = 0
        latched = self._restore()

        if meter is None:
            from heatgw.start import build_meter

            meter = build_meter(cfg["meter"])
        self.meter = meter
        if self._restored_totals:
            self.meter.restore(self._restored_totals)
        self._restored_totals = None
        self._build_sensors(cfg.get("sensors") or {})
        self._build_flow(cfg.get("flow"), now)
        self.inputs = Inputs(tuple(self.sensors))
        self._board_inputs = board.inputs()
        self.failsafe = FailSafe(
            ctl, sensors_cfg=cfg.get("sensors") or {}, flow_cfg=cfg.get("flow"),
            now_ms=now, latched=latched, configured=configured,
        )
        self.failsafe.ticks_diff = clock.ticks_diff
        self._sample_ms = now
        self.boot_id += 1
        self.event({"kind": "boot", "config": cfg_source, "errors": list(cfg_errors)[:4],
                    "latched": list(latched), "state": self.failsafe.state})
        self.save("boot")  # a crash loop still counts boots and keeps latched trips

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

    def _build_flow(self, flow_cfg, now):
        self.flow = None
        if flow_cfg:
            from heatgw.flow import PulseFlow

            self.flow = PulseFlow(self.board.flow_pulse_counter(),
                                  litres_per_pulse=flow_cfg["litres_per_pulse"],
                                  now_ms=now, ticks_diff=clock.ticks_diff)

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
            latched = tuple(st.get("latched") or ())
        except Exception as e:  # noqa: BLE001
            print("state: record %d unreadable: %r" % (seq, e))
            return ()
        self.emit("restored", {"seq": seq, "boot": self.boot_id,
                               "totals": self._restored_totals, "latched": list(latched)})
        return latched

    def save(self, why):
        """Persist totals, latched trips and the boot id (atomic two-slot record; the
        event log is written event by event, see heatgw.events)."""
        totals = self.meter.totals()
        record = json.dumps({"v": _STATE_VERSION, "boot": self.boot_id, "totals": totals,
                             "latched": list(self.failsafe.latched)}).encode()
        self.emit("saving", {"seq": self.store.next_seq(), "why": why, "totals": totals})
        try:
            self.saved_seq = self.store.save(record)
        except Exception as e:  # noqa: BLE001 - keep controlling; retried next interval
            print("state: save failed:", repr(self.heap.caught(e)))
            return None
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
        self.log.append(ev)  # on flash at once: a power cut right after keeps it
        print("event:", json.dumps(ev))
        self.emit("event", ev)

    # -- relays -----------------------------------------------------------------------

    def drive_relays(self, reuse):
        self.relay_reuse = reuse
        for name, pin in self._relays.items():
            active = self._relay_active[name]
            pin.value(active if reuse else 1 - active)

    # -- tasks ------------------------------------------------------------------------

    def checkin(self, name, now):
        self.checkins[name] = now

    def _uptime(self, now):
        d = clock.ticks_diff(now, self._up_last_ms)
        if d > 0:
            self.uptime_ms += d
        self._up_last_ms = now

    async def sampler(self, asyncio):
        inputs = self.inputs
        sensors = self.sensors
        tick = self.tick_ms
        next_ms = clock.ticks_ms()
        pending = []
        while True:
            for s in sensors.values():
                s.start()
            now = await self._convert(asyncio, sensors, pending)
            self._uptime(now)
            vol_ul = 0
            if self.flow is not None:
                vol_ul, m3h, why = self.flow.sample(now)
                inputs.flow_m3h = m3h
                inputs.flow_reason = why
                if why is None:
                    inputs.flow_valid_ms = now
            self._read_board_inputs()
            dt_ms = clock.ticks_diff(now, self._sample_ms)
            self._sample_ms = now
            if dt_ms > 0:
                self.meter.add(c_to_mc(inputs.temps_c.get("supply")),
                               c_to_mc(inputs.temps_c.get("return")), vol_ul, dt_ms)
            self.checkin("sampler", now)
            self._fresh.set()
            next_ms = clock.ticks_add(next_ms, tick)
            d = clock.ticks_diff(next_ms, clock.ticks_ms())
            if d < 0:  # overran a tick: start again from now instead of bursting
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
        # Board input names are the Inputs attributes they feed (sink_available,
        # maintenance, trip_reset, valve_at_reuse).
        ins = self.inputs
        for name, (pin, active) in self._board_inputs.items():
            setattr(ins, name, pin.value() == active)

    async def control(self, asyncio):
        fs = self.failsafe
        inputs = self.inputs
        fresh = self._fresh
        while True:
            # Every sample, i.e. every tick. If the sampler stalls or dies, the
            # supervisor drives the relays safe within a tick and lets the watchdog
            # reset the node (a stall cannot be repaired from inside).
            await fresh.wait()
            fresh.clear()
            now = clock.ticks_ms()
            events = fs.update(now, inputs)
            self.drive_relays(fs.relay_reuse and not self._starved)
            for ev in events:
                self.event(ev)
                if ev.get("kind") in ("latch", "reset"):
                    self.save(ev["kind"])  # a latched trip survives a crash loop
            self.checkin("control", now)

    def _stalled(self, now, stall_ms, names):
        # A crashed task of any kind counts: a node with a dead task is restarted whole
        # (a half-alive node would, say, stop saving its totals).
        out = () if self._crashed is None else (self._crashed,)
        for name in names:
            if clock.ticks_diff(now, self.checkins[name]) > stall_ms:
                out += (name,)
        return out

    async def persist(self, asyncio):
        interval_ms = self.cfg["persist"]["interval_s"] * 1000
        while True:
            await asyncio.sleep_ms(interval_ms)
            self.save("interval")

    async def supervisor(self, asyncio):
        sup = self.cfg["supervisor"]
        wdt = self.board.watchdog(sup["watchdog_ms"])
        period_ms = min(self.tick_ms, sup["watchdog_ms"] // 4)
        stall_ms = sup["stall_s"] * 1000
        heap = self.heap
        status_due = clock.ticks_ms()
        while True:
            now = clock.ticks_ms()
            stalled = self._stalled(now, stall_ms, CRITICAL_TASKS)
            if stalled:
                if not self._starved:
                    self._starved = True
                    self.drive_relays(False)
                    self.event({"kind": "supervisor", "state": "bypass",
                                "reason": "task_stalled:" + stalled[0],
                                "action": "watchdog reset"})
            else:
                wdt.feed()
            try:  # live heap after a collect every 10 passes; the largest free block
                heap.tick()
                if heap.changed:
                    self.emit("heap", heap.record())
            except MemoryError as e:  # measuring never stops the supervisor
                heap.caught(e)
            if clock.ticks_diff(now, status_due) >= 0:
                status_due = clock.ticks_add(now, _STATUS_EVERY_MS)
                self.emit("status", self.status())
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
                "memory_errors": self.heap.memory_errors}

    async def _guard(self, name, coro):
        try:
            await coro
        except Exception as e:  # noqa: BLE001 - the supervisor decides what happens next
            self._crash(name, e)

    def _crash(self, name, exc):
        self._crashed = name
        self.drive_relays(False)
        self.event({"kind": "crash", "task": name, "error": repr(exc)})

    def _loop_exception(self, loop, context):
        self._crash("unknown", context.get("exception"))

    async def run(self, asyncio):
        self._fresh = asyncio.Event()
        asyncio.get_event_loop().set_exception_handler(self._loop_exception)
        asyncio.create_task(self._guard("sampler", self.sampler(asyncio)))
        asyncio.create_task(self._guard("control", self.control(asyncio)))
        asyncio.create_task(self._guard("persist", self.persist(asyncio)))
        await self._guard("supervisor", self.supervisor(asyncio))
        # The supervisor never returns; if it crashed, nothing feeds the watchdog.
        while True:
            await asyncio.sleep_ms(1000)

    def shutdown(self):
        """Orderly stop (console Ctrl-C, redeploy): relays safe, totals saved."""
        was_reuse = self.relay_reuse
        self.drive_relays(False)
        if was_reuse:
            self.event({"kind": "state", "state": "bypass", "reason": "shutdown"})
        self.meter.flush()
        self.save("shutdown")
