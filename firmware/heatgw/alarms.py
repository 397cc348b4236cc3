"""The alarm model, defined once for every consumer: pure logic, no I/O, no clock reads.

    book = AlarmBook(max_alarms=16)
    gw.add_sink(book.sink)            # fed the node's records: events, saved, and the
                                      # save_failed / event_log_failed records (to wire)
    changes = book.feed(kind, record)  # the same, returning the transitions
    book.ack("it_coolant_high", "console")   # ValueError for an unknown id
    for a in book.alarms(): ...        # what the console shows, telemetry publishes

An alarm is something a person should know about, held until it no longer matters:

    id            stable string: "it_coolant_high", "sensor_fault:supply",
                  "task_failing:persist", "save_failed", "queue_dropped", ...
    severity      critical | major | minor | info (SEVERITIES, most severe first)
    source        what raised it: failsafe, supervisor, tasks, persist, config, queue, alarms
    active        the condition holds now (raised) or no longer (cleared)
    ack_required  a technician must acknowledge it: it stays, cleared, until acked
    acked, acked_by  acknowledged, and by whom (the asker's name, like the inbox's sources)
    raised_up_ms/raised_utc, cleared_up_ms/cleared_utc, acked_up_ms/acked_utc
    count         how often it was raised while held; detail: a short why (<= 40 chars)

An alarm is held while it is active, or cleared but still waiting for its ack; a cleared
alarm that needs no ack (or has one) is removed (its retained MQTT message is deleted by
publishing an empty retained payload). A momentary alarm (a crash, a dropped queue range)
is raised and cleared at once, so only its ack removes it. The fail-safe's latching trips
(it_coolant_high, valve_stuck) stay active until the trip is reset, and the reset
acknowledges them in the name of the reset's source; a plain ack never resets a trip (that
is `trip_reset` through the inbox).

`feed` returns the transitions, a list of {"alarm": id, "what": "raise" | "clear" |
"ack" | "remove" | "update"} (the shared empty list when nothing changed: read-only).
After a transition `get(id)` is the alarm's current state, or None once removed.

Bounded: `max_alarms` slots are allocated at construction, the last one reserved for
"alarm_overflow": an alarm that finds no free slot is counted in `dropped` and raises (or
updates) alarm_overflow naming it, never evicts one that is held. The distinct ids are few
(one per condition, sensor and task), so 16 slots overflow only on a bug.

Runs unchanged on MicroPython and CPython.
"""

CRITICAL = "critical"
MAJOR = "major"
MINOR = "minor"
INFO = "info"
SEVERITIES = (CRITICAL, MAJOR, MINOR, INFO)

RAISE = "raise"
CLEAR = "clear"
ACK = "ack"
REMOVE = "remove"
UPDATE = "update"

OVERFLOW = "alarm_overflow"
_SOURCE_MAX = 16
_DETAIL_MAX = 40

# id (or id prefix ending in ":"), severity, ack required, source.
# The fail-safe's trip reasons (heatgw.failsafe); sink_unavailable is no alarm: the
# building not wanting heat is normal operation (the state payload says why it bypasses).
_TRIPS = (
    ("it_coolant_high", CRITICAL, True, "failsafe"),
    ("valve_stuck", CRITICAL, True, "failsafe"),
    ("sink_return_high", MAJOR, False, "failsafe"),
    ("flow_implausible", MAJOR, False, "failsafe"),
    ("sensor_fault:", MAJOR, False, "failsafe"),
    ("sensor_stale:", MAJOR, False, "failsafe"),
    ("sink_flow_low", MINOR, False, "failsafe"),
    ("maintenance", INFO, False, "failsafe"),
)
_LATCHING = ("it_coolant_high", "valve_stuck")  # heatgw.failsafe.LATCHING

# The other alarms: id (prefix), severity, ack required, source, momentary.
_OTHERS = (
    ("crash:", CRITICAL, True, "supervisor", True),  # a critical task failed: fault latch
    ("task_stalled:", CRITICAL, True, "supervisor", True),
    ("no_config", CRITICAL, False, "config", False),  # cleared only by a good config + boot
    ("secrets_invalid", MAJOR, False, "config", False),  # a bad secrets.json: run without
    ("task_failing:", MAJOR, True, "tasks", True),
    ("save_failed", MAJOR, True, "persist", False),  # cleared by the next good save
    ("event_log_failed", MAJOR, True, "persist", True),
    ("queue_dropped", MAJOR, True, "queue", True),
    # heatgw.recovery: a Modbus heat meter disagrees with our metering beyond the limit
    ("heat_meter_mismatch", MAJOR, False, "meter", False),
    (OVERFLOW, MAJOR, True, "alarms", True),
)

_EMPTY = ()


def _define(alarm_id):
    """(severity, ack_required, source, momentary) of an id, or None if it is none."""
    for key, sev, ack, src in _TRIPS:
        if alarm_id == key or (key[-1] == ":" and alarm_id.startswith(key)):
            return sev, ack, src, False
    for key, sev, ack, src, mom in _OTHERS:
        if alarm_id == key or (key[-1] == ":" and alarm_id.startswith(key)):
            return sev, ack, src, mom
    return None


_ID_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789_-"


def _part(name):
    """A task or sensor name as part of an alarm id (and MQTT topic): [a-z0-9_-], <= 24."""
    if type(name) is not str or not name:
        return "unknown"
    out = ""
    for c in name[:24].lower():
        out += c if c in _ID_CHARS else "_"
    return out


def _text(v):
    if v is None:
        return None
    s = v if type(v) is str else repr(v)
    return s[:_DETAIL_MAX]


class Alarm:
    """One slot of the book (preallocated; `id` None while free)."""

    def __init__(self):
        self.id = None
        self._reset()

    def _reset(self):
        self.severity = None
        self.source = None
        self.ack_required = False
        self.momentary = False
        self.active = False
        self.acked = False
        self.acked_by = None
        self.raised_up_ms = None
        self.raised_utc = None
        self.cleared_up_ms = None
        self.cleared_utc = None
        self.acked_up_ms = None
        self.acked_utc = None
        self.count = 0
        self.detail = None

    def record(self):
        """The alarm as a dict (console, tests; payloads.alarm streams the same keys)."""
        return {"id": self.id, "severity": self.severity, "source": self.source,
                "active": self.active, "ack_required": self.ack_required,
                "acked": self.acked, "acked_by": self.acked_by,
                "raised_up_ms": self.raised_up_ms, "raised_utc": self.raised_utc,
                "cleared_up_ms": self.cleared_up_ms, "cleared_utc": self.cleared_utc,
                "acked_up_ms": self.acked_up_ms, "acked_utc": self.acked_utc,
                "count": self.count, "detail": self.detail}


class AlarmBook:
    def __init__(self, max_alarms=16):
        if type(max_alarms) is not int or not 2 <= max_alarms <= 64:
            raise ValueError("max_alarms must be an int 2..64")
        self._slots = [Alarm() for _ in range(max_alarms)]
        self.dropped = 0  # alarms that found no slot (see alarm_overflow)
        self.up_ms = 0  # time of the last stamped record: for records without a stamp
        self.utc = None
        self._none = []  # feed()'s shared empty result

    # -- queries ------------------------------------------------------------------------

    def get(self, alarm_id):
        for a in self._slots:
            if a.id == alarm_id:
                return a
        return None

    def alarms(self):
        """The held alarms, most severe first, then by raise time (a new list)."""
        held = [a for a in self._slots if a.id is not None]
        held.sort(key=lambda a: (SEVERITIES.index(a.severity), a.raised_up_ms or 0, a.id))
        return held

    def counts(self):
        """(held, active, waiting for ack)."""
        held = active = unacked = 0
        for a in self._slots:
            if a.id is not None:
                held += 1
                if a.active:
                    active += 1
                if a.ack_required and not a.acked:
                    unacked += 1
        return held, active, unacked

    def stale(self, alarm_id):
        """True for a retained alarm the broker still shows and this node does not hold
        (raised before a reboot): publish an empty retained payload to remove it."""
        return self.get(alarm_id) is None

    # -- changes ------------------------------------------------------------------------

    def sink(self, kind, record):
        """Gateway.add_sink() signature."""
        self.feed(kind, record)

    def feed(self, kind, record):
        """Update the book from one node record; returns the transitions."""
        if self._none:
            self._none.clear()
        if type(record) is not dict:
            return self._none
        up = record.get("up_ms")
        if type(up) is int:
            self.up_ms = up
            self.utc = record.get("utc")
        if kind == "event":
            return self._event(record, self._none)
        if kind == "save_failed" or kind == "event_log_failed":  # sink records
            return self._raise(kind, _text(record.get("error")), self._none)
        if kind == "saved":
            return self._clear("save_failed", self._none)
        return self._none

    def _event(self, ev, out):
        k = ev.get("kind")
        if k == "trip" or k == "clear" or k == "latch":
            reason = ev.get("reason")
            if type(reason) is not str or _define(reason) is None:
                return out
            if k != "clear":  # a latch raises it too if the trip came before the book
                return self._raise(reason, _detail(ev.get("values")), out)
            if reason in _LATCHING:
                return out  # held until the trip is reset
            return self._clear(reason, out)
        if k == "reset":
            if ev.get("result") == "cleared" and ev.get("reason") in _LATCHING:
                out = self._clear(ev["reason"], out)
                return self._ack(ev["reason"], _text(ev.get("source")) or "reset", out)
            return out
        if k == "boot":
            if ev.get("config") not in (None, "file"):
                errs = ev.get("errors") or ()
                out = self._raise("no_config", _text(errs[0] if errs else ev.get("config")),
                                  out)
            for reason in ev.get("latched") or _EMPTY:  # restored latched trips
                if reason in _LATCHING:
                    out = self._raise(reason, "latched before boot", out)
            return out
        if k == "crash":
            return self._raise("crash:" + _part(ev.get("task")), _text(ev.get("error")), out)
        if k == "supervisor":
            reason = ev.get("reason")
            if type(reason) is str and reason.startswith("task_stalled:"):
                return self._raise("task_stalled:" + _part(reason[13:]),
                                   _text(ev.get("action")), out)
            return out
        if k == "task_failing":
            return self._raise("task_failing:" + _part(ev.get("task")),
                               _text(ev.get("error")), out)
        if k == "save_failed" or k == "event_log_failed":
            return self._raise(k, _text(ev.get("error")), out)
        if k == "heat_check":  # heatgw.recovery: state mismatch / ok
            if ev.get("state") == "mismatch":
                return self._raise("heat_meter_mismatch",
                                   _text("%s%% vs %s" % (ev.get("diff_pct"), ev.get("meter"))),
                                   out)
            return self._clear("heat_meter_mismatch", out)
        if k == "queue_dropped" or k == "queue_drop":
            return self._raise("queue_dropped", "seq %s..%s" % (ev.get("first_seq"),
                                                                ev.get("last_seq")), out)
        return out

    def raise_alarm(self, alarm_id, detail=None):
        """Raise a defined alarm directly (a module with no event for it)."""
        if type(alarm_id) is not str or _define(alarm_id) is None:
            raise ValueError("alarm: %r is no defined alarm" % (alarm_id,))
        return self._raise(alarm_id, _text(detail), [])

    def ack(self, alarm_id, source, up_ms=None, utc=None):
        """A technician acknowledges an alarm; `source` names who (console, mqtt, ...).
        ValueError for an unknown id or a bad source; returns the transitions."""
        if type(source) is not str or not 0 < len(source) <= _SOURCE_MAX:
            raise ValueError("alarm ack: source must be a name of 1..%d characters, got %r"
                             % (_SOURCE_MAX, source))
        if self.get(alarm_id) is None:
            held = [a.id for a in self._slots if a.id is not None]
            raise ValueError("alarm ack: no alarm %r (held: %s)"
                             % (alarm_id, ", ".join(sorted(held)) or "none"))
        if type(up_ms) is int:
            self.up_ms = up_ms
            self.utc = utc
        return self._ack(alarm_id, source, [])

    # -- persistence --------------------------------------------------------------------

    def export(self):
        """The alarms that a reboot must not lose (waiting for an ack), as JSON-able
        lists [id, raised_utc, count, detail]; feed them to restore() after boot."""
        return [[a.id, a.raised_utc, a.count, a.detail] for a in self._slots
                if a.id is not None and a.ack_required and not a.acked
                and a.id != OVERFLOW]

    def restore(self, items):
        """Bring back exported alarms, cleared and waiting for their ack (their condition
        is evaluated afresh). Unknown or malformed entries are skipped."""
        out = []
        for it in items or _EMPTY:
            try:
                alarm_id, utc, count, detail = it
            except (TypeError, ValueError):
                continue
            if type(alarm_id) is not str or _define(alarm_id) is None or self.get(alarm_id):
                continue
            out = self._raise(alarm_id, _text(detail), out)
            a = self.get(alarm_id)
            if a is not None and a.id == alarm_id:
                a.raised_utc = utc if type(utc) is int else None
                a.count = count if type(count) is int and count > 0 else 1
                if alarm_id not in _LATCHING:
                    out = self._clear(alarm_id, out)
        return out

    # -- internals ----------------------------------------------------------------------

    def _add(self, out, alarm_id, what):
        if out is self._none:
            out = []
        out.append({"alarm": alarm_id, "what": what})
        return out

    def _slot(self, alarm_id):
        """The free slot for a new alarm, or None (the last slot is the overflow's)."""
        slots = self._slots
        if alarm_id == OVERFLOW:
            last = slots[-1]
            return last if last.id is None else None
        for i in range(len(slots) - 1):
            if slots[i].id is None:
                return slots[i]
        return None

    def _raise(self, alarm_id, detail, out):
        a = self.get(alarm_id)
        if a is not None:
            if a.active and not a.momentary:
                if detail is not None and detail != a.detail:
                    a.detail = detail
                    return self._add(out, alarm_id, UPDATE)
                return out
            a.count += 1
            a.detail = detail if detail is not None else a.detail
            a.acked = False  # raised again: it needs a fresh ack
            a.acked_by = a.acked_up_ms = a.acked_utc = None
            if a.momentary:
                a.raised_up_ms = self.up_ms
                a.raised_utc = self.utc
                a.cleared_up_ms = self.up_ms
                a.cleared_utc = self.utc
                return self._add(out, alarm_id, UPDATE)
            a.active = True
            a.raised_up_ms = self.up_ms
            a.raised_utc = self.utc
            a.cleared_up_ms = a.cleared_utc = None
            return self._add(out, alarm_id, RAISE)
        sev, ack, src, mom = _define(alarm_id)
        a = self._slot(alarm_id)
        if a is None:
            self.dropped += 1
            if alarm_id == OVERFLOW:
                return out
            return self._raise(OVERFLOW, alarm_id, out)
        a.id = alarm_id
        a._reset()
        a.severity = sev
        a.source = src
        a.ack_required = ack
        a.momentary = mom
        a.active = True
        a.raised_up_ms = self.up_ms
        a.raised_utc = self.utc
        a.count = 1
        a.detail = detail
        out = self._add(out, alarm_id, RAISE)
        if mom:
            out = self._clear(alarm_id, out)
        return out

    def _clear(self, alarm_id, out):
        a = self.get(alarm_id)
        if a is None or not a.active:
            return out
        a.active = False
        a.cleared_up_ms = self.up_ms
        a.cleared_utc = self.utc
        out = self._add(out, alarm_id, CLEAR)
        return self._maybe_remove(a, out)

    def _ack(self, alarm_id, source, out):
        a = self.get(alarm_id)
        if a is None or a.acked:
            return out
        a.acked = True
        a.acked_by = source
        a.acked_up_ms = self.up_ms
        a.acked_utc = self.utc
        out = self._add(out, alarm_id, ACK)
        return self._maybe_remove(a, out)

    def _maybe_remove(self, a, out):
        if a.active or (a.ack_required and not a.acked):
            return out
        alarm_id = a.id
        a.id = None
        a._reset()
        return self._add(out, alarm_id, REMOVE)


def _detail(values):
    """A short why from a fail-safe event's values (the sensor reason, or a value)."""
    if type(values) is not dict or not values:
        return None
    for key in ("sensor_reason", "source"):
        v = values.get(key)
        if v is not None:
            return _text(v)
    for k in sorted(values):
        if not k.startswith("limit") and not k.startswith("clear"):
            return _text("%s=%s" % (k, values[k]))
    return None
