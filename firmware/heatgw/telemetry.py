"""MQTT telemetry of the node: records into the flash queue, and the task that sends them.

    tel = Telemetry(board, cfg)          # only when cfg["mqtt"] is set (start.py)
    gw = Gateway(..., sinks=(tel.sink,), queue=tel.q)   # restore reads the queue
    tel.attach(gw)                       # the "mqtt" task (restartable), tick hook

Two sides, never mixed:
- The control path (the sink and the tick hook) only copies: every event into a binary
  queue record (heatgw.recqueue), every alarm transition (heatgw.alarms, fed the same
  records) into one too, and every `telemetry.interval_s` a payloads.Snapshot plus the
  meter's exact totals into a telemetry record. No JSON, no network, no waiting.
- The "mqtt" task (restartable: a broker can crash it, never the node) owns the client
  (heatgw.mqtt), formats each record when it sends it (payloads, one reused buffer) and
  handles `.../cmd` (heatgw.command).

Sending. Every queued record goes out with QoS 1 in seq order within its class and
leaves the queue (`mark_acked`) only on its PUBACK. Interleaving: at each connection the
records already stored are the backlog and those stored afterwards are live; while a
backlog drains the two alternate one for one, so live data keeps flowing at half the
drain rate and the backlog still drains at half of it (upstream orders by seq). Records
in flight when the link drops stay in the client and go again with DUP on the next
connection. Per connection also: `state` (retained), every held alarm (retained per id),
Home Assistant discovery when `mqtt.ha_discovery_prefix` is set (and again when Home
Assistant announces `online`). Queue records go to `.../telemetry` or `.../event` (alarm
transitions too, as kind "alarm"), each with its `seq`.

Commands (`.../cmd`): heatgw.command authenticates them; maintenance and reset go to the
inbox (the control task decides), publish_state and resend are done here, each answered
on `.../cmd/ack`. resend sends what is still on flash marked `"resent": true`; the ack
names the seq ranges that are gone.

Secrets (`secrets.json`): the MQTT password and the command key, read once; a bad file
runs without them, raises the `secrets_invalid` alarm and says so on the console (keys,
never values). The secrets module and hadisc are dropped from RAM after use.

Counters: `record()` is the node's `mqtt` record (emitted every minute and at shutdown),
with the longest real time one loop iteration or network call took (heatgw.clock.took).
"""

import gc

from heatgw import clock
from heatgw import payloads as pl
from heatgw import recqueue as rq
from heatgw.alarms import AlarmBook

_STATS_EVERY_MS = 60_000
_IDLE_MS = 1_000  # the task's longest sleep when nothing is to do (it is woken anyway)
_ACKS = 4  # command answers waiting for a slot
_RESENDS = 4  # resend jobs held at once
_ALARMS = 10
# Messages in flight at once. One: each PUBACK comes before the next PUBLISH, so on the
# host board a reply never overlaps the next send (vasyncio's grace after data would cut
# the reply window of a later send: a healthy broker would look dead); on a LAN one
# round trip per record still drains well above 50 records/s. It also keeps the
# client's in-flight table at one 1 KB slot.
_INFLIGHT = 1
_STATE_KINDS = ("state", "latch", "reset", "crash", "supervisor", "boot", "calibration")
_SKIP = ("kind", "boot", "up_ms", "utc", "values", "t_ms", "seq")  # seq: the event log's
# alarm id (prefix) -> recqueue.ALARM_CODES name
_ALARM_CODE = (("save_failed", "save_failed"), ("task_failing:", "task_failing"),
               ("it_coolant_high", "trip_latched"), ("valve_stuck", "trip_latched"),
               ("sensor_fault:", "sensor_fault"), ("sensor_stale:", "sensor_fault"),
               ("queue_dropped", "queue_drop"), ("crash:", "fault"), ("task_stalled:", "fault"))
_MAX_SMALL = 0x1FFFFFFF


def _forget(name):
    import sys

    import heatgw

    sys.modules.pop("heatgw." + name, None)
    try:
        delattr(heatgw, name)
    except (AttributeError, KeyError):
        pass


def _summary(ev, kind):
    """The event's main fields as short text for its 60-byte queue record."""
    out = "" if kind is None else kind
    for k in ev:
        if k in _SKIP:
            continue
        v = ev[k]
        if v is None or v == [] or v == ():
            continue
        if isinstance(v, (list, tuple)):
            v = ",".join([str(x) for x in v])
        out += (" " if out else "") + k + "=" + str(v)
        if len(out) >= 60:
            break
    return out


def _alarm_code(alarm_id):
    for key, code in _ALARM_CODE:
        if alarm_id == key or (key[-1] == ":" and alarm_id.startswith(key)):
            return code
    return "other"


def _mc(t):
    # °C float -> m°C int for the queue, None when it is no finite small value
    if t is None or t != t:
        return None
    v = t * 1000
    if not -_MAX_SMALL < v < _MAX_SMALL:
        return None
    return int(v + 0.5) if v >= 0 else -int(0.5 - v)


def _meters_bytes(cfg):
    # the `meters` object's room in the payload: per meter its name and fault, per value
    # its name and a number (heatgw.modbus.write_meters)
    n = 0
    for m in ((cfg.get("modbus") or {}).get("meters") or {}).values():
        n += 48 + 32 * (len(m.get("registers") or ()) + (2 if m.get("model") else 0))
    return n


def _names(bits):
    return [rq.REASONS[i] for i in range(1, 16) if bits >> i & 1 and i < len(rq.REASONS)]


class Telemetry:
    def __init__(self, board, cfg):
        data = board.data_dir()
        self.data = data
        self.cfg = cfg
        self.mcfg = cfg["mqtt"]
        tcfg = cfg.get("telemetry") or {}
        # with a `recovery` section the telemetry records carry its values (recqueue's
        # version-0x52 records, heatgw.recovery.X_*)
        ext = bool(cfg.get("recovery"))
        cap = tcfg.get("queue_capacity") or rq.capacity_for(data, ext=ext)
        self.q = rq.RecordQueue(data + "/q", cap, ext=ext)
        # the payload buffer: the recovery keys and the Modbus `meters` need room
        self._wsize = 1024 + (512 if ext else 0) + _meters_bytes(cfg)
        self._t_compute = None  # recovery.compute.topic when the source is mqtt
        rc = (cfg.get("recovery") or {}).get("compute")
        if rc and rc["source"] == "mqtt":
            self._t_compute = rc["topic"].encode()
        self.book = AlarmBook(_ALARMS)
        self.snap = pl.Snapshot()
        self.interval_ms = (tcfg.get("interval_s") or 10) * 1000
        self._due = None
        self._fields = {"boot": 0, "up_ms": 0, "utc": None, "totals": None}
        self.live_seq = 0  # the telemetry record whose values self.snap holds
        self.gw = None
        self.wake = None  # asyncio.Event: something to send
        self.state_dirty = True
        self.ha_dirty = False
        self._dirty = []  # alarm ids whose retained message is to be published
        self._all_alarms = True
        self._acks = []  # command answers (bytes) waiting for a slot
        self._resend = []  # resend jobs, [next, last] seq each, done in order
        self._fl_pid = [0] * _INFLIGHT  # queue records in flight: packet id -> seq
        self._fl_seq = [0] * _INFLIGHT
        self._live_mark = self.q.next_seq
        self._turn_live = False
        self._in_sink = False
        self.client = None
        self._awaits = getattr(board, "awaits_replies", None)
        self._said = None  # the last connection state the console was told
        self._tick_ev = None  # asyncio.Event set by every control tick (_after_tick)
        self._aio = None
        self.net = None  # heatgw.net.Net when the board has a network interface (start.py)
        self.cmd_counts = {}  # heatgw.command's counts per reason, summed
        self._cmd_ev_ms = None
        self._cmd_suppressed = 0
        self._password = None
        self._secrets_read = False
        self.w = None  # _build(): topics, buffers, client
        self._connects_seen = 0
        self.queued_max = self.q.unsent()
        self.first_seq = 0
        self.last_seq = 0
        self.sink_errors = 0  # records that could not be queued (flash failing, bad field)
        self.unreadable = 0  # queue records that could not be read back to send
        self.resent = 0

    # -- the control path: copy only ----------------------------------------------------

    def sink(self, kind, rec):
        """Gateway.add_sink: events and alarm transitions into the queue (no I/O but the
        queue's append, no formatting)."""
        if self._in_sink:
            return
        self._in_sink = True
        try:
            if kind == "event":
                self._event(rec)
            changes = self.book.feed(kind, rec)
            if changes:
                self._alarm_changes(changes, rec)
        finally:
            self._in_sink = False

    def _event(self, ev):
        k = ev.get("kind")
        if k == "command":
            code = "cmd" if ev.get("result") == "accepted" else "cmd_rejected"
        elif k == "net" and ev.get("state") in ("up", "down"):
            code = "net_" + ev["state"]
        else:
            code = k if k in rq.EVENT_CODES else "other"
        if k in _STATE_KINDS:
            self.state_dirty = True
        self._append(rq.KIND_EVENT, {"boot": ev.get("boot"), "up_ms": ev.get("up_ms"),
                                     "utc": ev.get("utc"), "code": code,
                                     "text": _summary(ev, k if code == "other" else None)})

    def _alarm_changes(self, changes, rec):
        up = rec.get("up_ms") if type(rec) is dict else None
        for ch in changes:
            aid = ch["alarm"]
            if not self._all_alarms and aid not in self._dirty:
                if len(self._dirty) < _ALARMS:
                    self._dirty.append(aid)
                else:
                    self._all_alarms = True
            boot = rec.get("boot") if type(rec) is dict else None
            if type(boot) is not int:
                boot = self.gw.boot_id if self.gw else 0
            self._append(rq.KIND_ALARM, {"boot": boot,
                                         "up_ms": up if type(up) is int else self.book.up_ms,
                                         "utc": self.book.utc, "code": _alarm_code(aid),
                                         "text": aid + " " + ch["what"]})

    def _append(self, kind, fields):
        q = self.q
        drops = q.dropped
        utc = fields.get("utc")
        if utc is not None and type(utc) is not int:
            fields["utc"] = int(utc)
        try:
            seq = q.append(kind, fields)
        except Exception:  # noqa: BLE001 - a failing flash or a bad field never stops control
            self.sink_errors += 1
            return 0
        if q.dropped != drops and q.last_drop is not None:
            changes = self.book.feed("event", {"kind": "queue_drop",
                                               "first_seq": q.last_drop[0],
                                               "last_seq": q.last_drop[1]})
            if changes:
                self._alarm_changes(changes, fields)
        n = q.unsent()
        if n > self.queued_max:
            self.queued_max = n
        if self.wake is not None:
            self.wake.set()
        return seq

    async def _after_tick(self):
        """Until the control task's next tick has run (bounded by two ticks): a TLS
        handshake step, pure CPU for a long while on a target, then starts where the next
        tick is furthest away, instead of wherever the broker's reply happened to land."""
        ev = self._tick_ev
        ev.clear()
        try:
            await self._aio.wait_for_ms(ev.wait(), 2 * self.gw.cfg["control"]["tick_ms"])
        except self._aio.TimeoutError:  # no tick came: go ahead
            pass

    def tick(self, gw, now):
        """The control task's hook, every tick: a telemetry record every interval."""
        if self._tick_ev is not None:
            self._tick_ev.set()  # a paced TLS handshake step may go now
        if self._due is None:
            self._due = now
        if clock.ticks_diff(now, self._due) < 0:
            return
        self._due = clock.ticks_add(self._due, self.interval_ms)
        if clock.ticks_diff(self._due, now) <= 0:  # far behind (a long stall): re-phase
            self._due = clock.ticks_add(now, self.interval_ms)
        snap = self.snap
        utc = clock.utc_s()
        snap.take(gw, gc.mem_free(), None if utc is None else int(utc))
        f = self._fields
        f["boot"] = snap.boot
        f["up_ms"] = snap.up_ms
        f["utc"] = snap.utc
        f["totals"] = gw.meter.totals()
        for i in range(4):
            name = snap.names[i]
            ok = snap.configured[name] and snap.reasons[name] is None
            f[rq.TEMPS[i]] = _mc(snap.temps_c[name]) if ok else None
        m3h = snap.flow_m3h if snap.flow_why is None else None
        f["flow_ml_h"] = None if m3h is None else _mc(m3h * 1000)
        p = snap.power_w
        f["power_w"] = None if p is None or p != p or not -_MAX_SMALL < p < _MAX_SMALL \
            else int(p)
        f["relay"] = snap.relay_reuse
        f["reason"] = rq.reason_code(snap.reason)
        f["active"] = rq.reason_bits(snap.active)
        f["latched"] = rq.reason_bits(snap.latched)
        f["heap_free"] = snap.heap_free
        rec = gw.recovery
        if rec is not None:  # the interval ends with this record (heatgw.recovery)
            rec.close(now)
            f["ext"] = rec.ext
        if gw.modbus is not None:
            gw.modbus.snapshot(now)  # the live payload's `meters`
        seq = self._append(rq.KIND_TELEMETRY, f)
        f["totals"] = None
        if seq:
            self.live_seq = seq

    # -- wiring -------------------------------------------------------------------------

    def attach(self, gw):
        self.gw = gw
        gw.telemetry = self
        gw.on_tick = self.tick
        gw.on_shutdown = self.shutdown
        if gw.recovery is not None:
            gw.recovery.auto = False  # its intervals end with the telemetry records
        gw.add_task("mqtt", self.run)
        self._read_secrets()
        try:
            self._build()
        except Exception as e:  # noqa: BLE001 - e.g. a bad CA file: the task says it again
            print("mqtt:", repr(e))

    def _read_secrets(self):
        """The MQTT password, once at boot; a bad file raises secrets_invalid."""
        s = self.read_secrets()
        pw = s.get("mqtt_password")
        self._password = None if pw is None else pw.reveal()

    def read_secrets(self):
        # secrets.json read now (and the module dropped again): boot, and each command,
        # which so sees a rotated key without keeping a copy in RAM
        from heatgw import secrets

        try:
            s = secrets.load(self.data + "/secrets.json")
        except secrets.SecretsError as e:  # its text names keys, never values
            s = secrets.Secrets()
            if not self._secrets_read:
                print("secrets: %s: running without secrets (no MQTT password, no "
                      "commands)" % (e,))
                changes = self.book.raise_alarm("secrets_invalid", "secrets.json: invalid")
                self._alarm_changes(changes, {"up_ms": self.gw.uptime_ms})
        self._secrets_read = True
        secrets = None
        _forget("secrets")
        return s

    def shutdown(self):
        """Gateway.shutdown(): the last mqtt record, the ack mark on flash."""
        self.gw.emit("mqtt", self.record())
        try:
            self.q.close()
        except OSError:
            pass

    def record(self):
        c = self.client  # one client for the node's life (counters kept across restarts)
        return {"published": c.published if c else 0, "acked": c.acked if c else 0,
                "retransmitted": c.retransmitted if c else 0,
                "reconnects": c.reconnects if c else 0,
                "queued_max": self.queued_max, "dropped": self.q.dropped,
                "first_seq": self.first_seq, "last_seq": self.last_seq,
                "worst_tick_late_ms": self.gw.worst_tick_late_ms,
                # the longest real time the network side held the CPU in one go
                # (heatgw.clock.took: an mqtt loop iteration, a network call)
                "worst_net_real_us": clock.net_worst_us, "worst_net_where": clock.net_worst_where}

    # -- the mqtt task ------------------------------------------------------------------

    def _build(self):
        """Topics, buffers and the client, once, while the heap is young: a task
        restart later reuses them (no new 1 KB blocks in a fragmented heap)."""
        from heatgw import mqtt
        from heatgw.topics import Topics

        mc = self.mcfg
        node = self.gw.cfg["node_id"]
        if self.w is None:
            t = Topics(mc["prefix"], mc["site"], node)
            self.topics = t
            self.t_tel = t.telemetry.encode()
            self.t_ev = t.event.encode()
            self.t_state = t.state.encode()
            self.t_cmd = t.cmd.encode()
            self.t_ack = t.cmd_ack.encode()
            ha = mc.get("ha_discovery_prefix")
            self.t_ha = None if not ha else (ha + "/status").encode()
            self.chash = pl.config_hash(self.data + "/config.json")
            self.w = pl.Writer(self._wsize)
        # TLS: a bad CA file raises here, with a clear error (the task restarts with
        # backoff; its 5th crash is the task_failing alarm)
        kw = {}
        if self._wsize > 1024:  # the in-flight slot holds a whole telemetry message
            kw["max_packet"] = self._wsize + 256
        self.client = mqtt.from_config(mc, node, self._password, cb=self._on_msg,
                                       ack_cb=self._on_ack, event_cb=self._on_conn,
                                       inflight=_INFLIGHT, pace=self._after_tick, **kw)
        if self._t_compute is not None:  # the IT monitoring's power (heatgw.recovery)
            self.client.subs += (self._t_compute,)
        if self._awaits:  # the host board: virtual time waits for the replies it awaits
            self._awaits(self.client.awaiting_reply)

    async def run(self, asyncio):
        from heatgw import mqtt

        self.wake = asyncio.Event()
        self._aio = asyncio
        self._tick_ev = asyncio.Event()
        if self.client is None:
            self._build()
        c = self.client
        c._stop = False  # a restart reuses the client: its unacked message stays in it
        net = self.net
        while net is not None and not (net.up and net.broker_ip):
            await asyncio.sleep_ms(250)  # the link is down or the name not yet resolved
        self._follow_net(c)
        ctask = asyncio.create_task(c.run())
        try:
            await self._loop(asyncio, c, mqtt.UP)
        finally:
            c.stop()
            ctask.cancel()
            c._close()  # cancelled mid-session: its socket is ours to close
            c.state = mqtt.DOWN
            self._connects_seen = 0

    async def _loop(self, asyncio, c, up):
        gw = self.gw
        stats_due = clock.ticks_add(clock.ticks_ms(), _STATS_EVERY_MS)
        while True:
            t0 = clock.real_us()  # this iteration's stretch, up to its await (clock.took)
            now = clock.ticks_ms()
            if clock.ticks_diff(now, stats_due) >= 0:
                stats_due = clock.ticks_add(now, _STATS_EVERY_MS)
                gw.emit("mqtt", self.record())
            busy = False
            if c.state != up:
                self._follow_net(c)  # a new address after a DNS refresh
            else:
                if c.connects != self._connects_seen:
                    self._connected(c)
                busy = self._one(c)
                if busy is None:  # no slot free: wait for a PUBACK
                    clock.took(t0, "loop")
                    await c.wait_slot(_IDLE_MS)
                    continue
            rec = gw.recovery
            if rec is not None and self._t_compute is not None and rec.mqtt_pending:
                rec.mqtt_parse(now)  # the newest compute message, at most once a second
            clock.took(t0, "loop")
            if not busy:
                left = clock.ticks_diff(stats_due, clock.ticks_ms())
                self.wake.clear()
                try:
                    await asyncio.wait_for_ms(self.wake.wait(),
                                              max(1, min(_IDLE_MS, left)))
                except asyncio.TimeoutError:
                    pass
            else:
                await asyncio.sleep_ms(0)

    def _follow_net(self, c):
        # heatgw.net resolves the broker's name without blocking; the client connects to
        # that address only (getaddrinfo on an IP literal asks no DNS server)
        net = self.net
        if net is not None and net.broker_ip and c.host != net.broker_ip:
            c.host = net.broker_ip
            c._addr = None

    def _connected(self, c):
        self._connects_seen = c.connects
        self._live_mark = self.q.next_seq  # stored from now on: live; before: backlog
        self.state_dirty = True
        self._all_alarms = True
        self.ha_dirty = self.t_ha is not None
        self._ha = None

    def _pub(self, c, topic, mv, retain=False):
        return c.publish(topic, mv, retain, 1)

    def _one(self, c):
        """Publish one message; True: sent, False: nothing to do, None: no free slot."""
        if c.inflight() >= _INFLIGHT:
            return None
        if self._acks:
            if self._pub(c, self.t_ack, self._acks[0]) is None:
                return None
            self._acks.pop(0)
            return True
        if self.state_dirty:
            if self._pub(c, self.t_state, self._state(), True) is None:
                return None
            self.state_dirty = False
            return True
        if self._all_alarms or self._dirty:
            return self._alarm_one(c)
        if self.ha_dirty or self._ha is not None:
            return self._ha_one(c)
        if self._resend:
            return self._resend_one(c)
        s = self._next_record()
        if not s:
            return False
        pid = self._send_record(c, s, False)
        if pid is None:
            return None
        if pid is False:
            return True
        for i in range(len(self._fl_pid)):
            if not self._fl_pid[i]:
                self._fl_pid[i] = pid
                self._fl_seq[i] = s
                break
        if not self.first_seq:
            self.first_seq = s
        if s > self.last_seq:
            self.last_seq = s
        return True

    def _state(self):
        gw = self.gw
        fs = gw.failsafe
        utc = clock.utc_s()
        return pl.state(self.w, fs.state, fs.cause, fs.active, fs.latched, gw.relay_reuse,
                        self.chash, gw.boot_id, gw.uptime_ms,
                        None if utc is None else int(utc), gw.fault, gw.sensors)

    def _alarm_one(self, c):
        book = self.book
        if self._all_alarms:  # every held alarm again (a new connection)
            self._all_alarms = False
            self._dirty.clear()
            for a in book.alarms():
                if len(self._dirty) < _ALARMS:
                    self._dirty.append(a.id)
            return True
        aid = self._dirty[0]
        mv = pl.alarm(self.w, book.get(aid))  # None: removed -> empty retained payload
        if self._pub(c, self.topics.alarm(aid), mv, True) is None:
            return None
        self._dirty.pop(0)
        return True

    def _ha_one(self, c):
        if self._ha is None:
            from heatgw import hadisc

            self.ha_dirty = False
            self._ha = hadisc.configs(self.topics, self.mcfg["ha_discovery_prefix"],
                                      tuple(self.cfg.get("sensors") or ()), cfg=self.cfg)
            self._ha_next = None
        if self._ha_next is None:
            try:
                self._ha_next = next(self._ha)
            except StopIteration:
                self._ha = None
                _forget("hadisc")  # used once per connection (and HA restart)
                gc.collect()
                return True
        topic, payload = self._ha_next
        if self._pub(c, topic, payload, True) is None:
            return None
        self._ha_next = None
        return True

    def _resend_one(self, c):
        r = self._resend[0]
        s = r[0]
        if s > r[1]:
            self._resend.pop(0)
            return True
        pid = self._send_record(c, s, True)
        if pid is None:
            return None
        r[0] = s + 1
        if pid is not False:
            self.resent += 1
        return True

    def _unsent_from(self, after):
        q = self.q
        s = q.next_unsent(after)
        while s and s in self._fl_seq:
            s = q.next_unsent(s)
        return s

    def _next_record(self):
        """The next queue record to send: backlog and live one for one (module doc)."""
        live = self._live_mark
        b = self._unsent_from(0)
        if b and b < live:
            if self._turn_live:
                self._turn_live = False
                s = self._unsent_from(live - 1)
                if s:
                    return s
            self._turn_live = True
        return b

    def _send_record(self, c, seq, resent):
        """Publish queue record seq: its pid, None (no slot), False (not readable)."""
        rec = self.q.get(seq)
        if rec is None:
            if not resent:  # damaged on flash: nothing to send, do not retry forever
                self.unreadable += 1
                self.q.mark_acked(seq)
            return False
        w = self.w
        if rec["kind"] == rq.KIND_TELEMETRY:
            live = seq == self.live_seq
            snap = self.snap if live else self._backlog_snap(rec)
            pl.telemetry(w, snap, seq)
            self._more(w, rec, live)
            topic = self.t_tel
        else:
            self._event_payload(w, rec, seq)
            topic = self.t_ev
        if resent:
            w.n -= 1
            w.raw(b',"resent":true}')
        return self._pub(c, topic, w.value())

    def _more(self, w, rec, live):
        # the recovery keys (a record stored without them, from before the feature was
        # configured, has none) and the Modbus meters, before the payload's closing brace
        gw = self.gw
        x = gw.recovery.ext if live and gw.recovery is not None else rec.get("ext")
        if gw.modbus is None and (gw.recovery is None or x is None):
            return
        w.n -= 1
        if gw.recovery is not None and x is not None:
            gw.recovery.write(w, x, live)
        if gw.modbus is not None:
            gw.modbus.write_meters(w, live)
        w.raw(b"}")

    def _backlog_snap(self, rec):
        # a backlog record's values into the Snapshot, for payloads.telemetry()
        s = self.snap  # reused (0.9 KB less): the live record is then read back too
        self.live_seq = 0
        sensors = self.cfg.get("sensors") or ()
        for i in range(4):
            name = s.names[i]
            v = rec[rq.TEMPS[i]]
            s.configured[name] = name in sensors
            s.temps_c[name] = None if v is None else v / 1000
            s.reasons[name] = None if v is not None else "invalid"
        if self.cfg.get("flow"):
            f = rec["flow_ml_h"]
            s.flow_m3h = None if f is None else f / 1000000
            s.flow_why = None if f is not None else "invalid"
        p = rec["power_w"]
        s.power_w = p
        s.power_why = None if p is not None else "no_data"
        t = rec["totals"]
        lb = s.limbs
        i = 0
        for key, n in (("energy_nj", 3), ("volume_ul", 2), ("time_ms", 2), ("error_ms", 2),
                       ("low_dt_ms", 2)):
            v = t.get(key, 0)
            for _ in range(n):
                lb[i] = v & 0x3FFFFFFF
                v >>= 30
                i += 1
        s.relay_reuse = rec["relay"] is True or rec["relay"] == 1
        s.state = "reuse" if s.relay_reuse else "bypass"
        code = rec["reason"]
        # a cause the queue has no code for (255) is still a cause: never null
        s.reason = rq.REASONS[code] if code < len(rq.REASONS) else "unknown"
        s.active = _names(rec["active"])
        s.latched = _names(rec["latched"])
        s.heap_free = rec["heap_free"]
        s.boot = rec["boot"]
        s.up_ms = rec["up_ms"]
        s.utc = rec["utc"]
        return s

    def _event_payload(self, w, rec, seq):
        alarm = rec["kind"] == rq.KIND_ALARM
        w.reset()
        w.raw(b'{"v":%d' % pl.V)
        w.key(b'"seq":')
        w.int(seq)
        w.key(b'"kind":')
        w.str("alarm" if alarm else rec["code"])
        if alarm:
            w.key(b'"code":')
            w.str(rec["code"])
        w.key(b'"boot":')
        w.int(rec["boot"])
        w.key(b'"up_ms":')
        w.int(rec["up_ms"])
        if rec["utc"] is not None:
            w.key(b'"utc":')
            w.int(rec["utc"])
        a = rec["args"]
        if rec["code"] == "queue_drop" and not alarm:
            w.key(b'"first_seq":')
            w.int(a[0])
            w.key(b'"last_seq":')
            w.int(a[1])
            w.key(b'"count":')
            w.int(a[2])
        w.key(b'"text":')
        w.str(rec["text"])
        w.raw(b"}")

    # -- the client's callbacks (its reader task) ---------------------------------------

    def _on_ack(self, pid):
        for i in range(len(self._fl_pid)):
            if self._fl_pid[i] == pid:
                self.q.mark_acked(self._fl_seq[i])
                self._fl_pid[i] = self._fl_seq[i] = 0
                break
        if self.wake is not None:
            self.wake.set()

    def _on_conn(self, what, detail):
        # the console says why the broker cannot be used (a wrong password, a CA that
        # does not verify the server, refused...), once per change: never a secret
        said = (what, detail)
        if said != self._said:
            self._said = said
            if what == "up":
                print("mqtt: connected to %s:%d" % (self.client.host, self.client.port))
            else:
                print("mqtt: %s: %s (retrying with backoff)" % (what, detail))
        if self.wake is not None:
            self.wake.set()

    def _on_msg(self, topic, msg):
        if topic == self.t_cmd:
            self._command(msg)
        elif topic == self._t_compute:  # copied only; parsed by the task (heatgw.recovery)
            self.gw.recovery.mqtt_in(msg, clock.ticks_ms())
        elif self.t_ha is not None and topic == self.t_ha and bytes(msg) == b"online":
            self.ha_dirty = True  # Home Assistant restarted: configs again
        if self.wake is not None:
            self.wake.set()

    def _command(self, msg):
        """One `.../cmd` message. heatgw.command (18 KB of heap even from ROMFS) is loaded
        for it and dropped again: commands are rare; the counter is on flash anyway, and
        the rejection throttle and counts are kept here."""
        import json

        gw = self.gw
        d = self.data
        counts = self.cmd_counts
        try:
            from heatgw.command import Commands

            cmds = Commands(gw.cfg["node_id"], self.read_secrets(), gw.inbox,
                            (d + "/cmdctr.a", d + "/cmdctr.b"),
                            secrets_path=d + "/secrets.json")
            cmds._last_ev_ms = self._cmd_ev_ms  # one rejection event a minute, across calls
            cmds.suppressed = self._cmd_suppressed
            ack, ev, action = cmds.handle(msg, clock.ticks_ms())
            self._cmd_ev_ms = cmds._last_ev_ms
            self._cmd_suppressed = cmds.suppressed
            for k in cmds.counts:
                counts[k] = counts.get(k, 0) + cmds.counts[k]
        except Exception as e:  # noqa: BLE001 - MemoryError, a flash error: still answered
            counts["error"] = counts.get("error", 0) + 1
            ack, ev, action = {"id": None, "ok": False, "error": "error: internal"}, None, None
            print("command: failed:", repr(gw.heap.caught(e)))
        cmds = Commands = None
        _forget("command")
        _forget("hmac256")
        if ev is not None:
            gw.event(ev)
        if action is not None:
            if action[0] == "publish_state":
                self.state_dirty = True
                self._all_alarms = True
            elif action[0] == "resend":
                a, b = action[1]
                a = max(a, 1)  # seqs start at 1
                q = self.q
                lo = max(a, q.oldest() or q.next_seq)
                hi = min(b, q.next_seq - 1)
                gone = []
                if a < lo:
                    gone.append([a, min(b, lo - 1)])
                if b > hi and b >= q.next_seq:
                    gone.append([max(a, q.next_seq), b])
                ack["resend"] = [lo, hi] if lo <= hi else None
                ack["gone"] = gone
                jobs = self._resend
                if lo <= hi:  # a job per request; a 5th joins the last (some sent twice)
                    if len(jobs) < _RESENDS:
                        jobs.append([lo, hi])
                    else:
                        jobs[-1] = [min(jobs[-1][0], lo), max(jobs[-1][1], hi)]
        if len(self._acks) < _ACKS:
            self._acks.append(json.dumps(ack).encode())
