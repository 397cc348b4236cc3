"""The alarm model, defined once for every consumer: pure logic, no I/O, no clock reads.

    book = AlarmBook(max_alarms=16)
    gw.add_sink(book.sink)            # fed the node's records: events, saved, and the
                                      # save_failed / event_log_failed records (to wire)
    changes = book.feed(kind, record)  # the same, returning the transitions
    book.ack("it_coolant_high", "console")   # ValueError for an unknown id
    (an event {"kind": "ack", "alarm": id, "source": ..} acks too: the console's `ack ID`)
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

RAM: the slots are one preallocated list (12 words per alarm), not an object with a
dict each; `get()` and `alarms()` hand out small `Alarm` views onto it. The definitions
are one string, parsed when an alarm is raised (rarely), not a table of tuples.

Runs unchanged on MicroPython and CPython.
"""

try:
    from micropython import const
except ImportError:  # CPython (the tests): const() is the identity on ints
    const = int

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
_SOURCE_MAX = const(16)
_DETAIL_MAX = const(40)

# id (or id prefix ending in ":"), severity, ack required, source, momentary; "," between.
# First the fail-safe's trip reasons (heatgw.failsafe; input_low/input_high: heatgw.analog's
# value trips; sink_unavailable is no alarm: the building not wanting heat is normal
# operation, the state payload says why it bypasses),
# then the others. A momentary alarm (a crash, a dropped range) is raised and cleared at
# once; no_config is cleared only by a good config and a boot; save_failed by the next
# good save; secrets_invalid means running without secrets; config_refused: config.json
# refused (damaged, seal mismatch), the last good one runs, until a new boot;
# heat_meter_mismatch (heatgw.recovery): a Modbus heat meter disagrees with our metering
# beyond the limit.
_DEFS = ("it_coolant_high critical 1 failsafe 0,valve_stuck critical 1 failsafe 0,"
         "sink_return_high major 0 failsafe 0,flow_implausible major 0 failsafe 0,"
         "sensor_fault: major 0 failsafe 0,sensor_stale: major 0 failsafe 0,"
         "input_low: major 0 failsafe 0,input_high: major 0 failsafe 0,"
         "sink_flow_low minor 0 failsafe 0,maintenance info 0 failsafe 0,"
         "crash: critical 1 supervisor 1,task_stalled: critical 1 supervisor 1,"
         "no_config critical 0 config 0,secrets_invalid major 0 config 0,"
         "config_refused major 0 config 0,"
         "task_failing: major 1 tasks 1,save_failed major 1 persist 0,"
         "event_log_failed major 1 persist 1,queue_dropped major 1 queue 1,"
         "heat_meter_mismatch major 0 meter 0,"
         "alarm_overflow major 1 alarms 1")
_LATCHING = ("it_coolant_high", "valve_stuck")  # heatgw.failsafe.LATCHING

_EMPTY = ()


def definitions():
    """Every definition: (id or prefix, severity, ack_required, source, momentary)."""
    out = []
    for d in _DEFS.split(","):
        key, sev, ack, src, mom = d.split()
        out.append((key, sev, ack == "1", src, mom == "1"))
    return out


def _define(alarm_id):
    """(severity, ack_required, source, momentary) of an id, or None if it is none."""
    for key, sev, ack, src, mom in definitions():
        if alarm_id == key or (key[-1] == ":" and alarm_id.startswith(key)):
            return SEVERITIES[SEVERITIES.index(sev)], ack, src, mom
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


# An alarm's fields, in payload order (heatgw.payloads.alarm). severity, source and
# ack_required follow from the id (_define); a slot holds the others, in this order, at
# these offsets: 12 words per alarm.
FIELDS = ("id", "severity", "source", "active", "ack_required", "acked", "acked_by",
          "raised_up_ms", "raised_utc", "cleared_up_ms", "cleared_utc", "acked_up_ms",
          "acked_utc", "count", "detail")
_ID = const(0)
_ACTIVE = const(1)
_ACKED = const(2)
_ACKED_BY = const(3)
_RAISED_UP = const(4)
_RAISED_UTC = const(5)
_CLEARED_UP = const(6)
_CLEARED_UTC = const(7)
_ACKED_UP = const(8)
_ACKED_UTC = const(9)
_COUNT = const(10)
_DETAIL = const(11)
_NF = const(12)  # words per slot
_FREE = (None, False, False, None, None, None, None, None, None, None, 0, None)


class Alarm:
    """One held alarm, read from its slot in the book when asked (`a.id`, `a.count`, ...:
    the FIELDS). Valid until the book's next change."""

    FIELDS = FIELDS

    def __init__(self, slots, at):
        self._f = slots
        self._at = at

    def __getattr__(self, name):
        if name not in FIELDS:
            raise AttributeError(name)
        i = FIELDS.index(name)
        if i == 1 or i == 2 or i == 4:  # severity, source, ack_required: from the id
            sev, ack, src, _mom = _define(self._f[self._at])
            return sev if i == 1 else src if i == 2 else ack
        return self._f[self._at + i - (i > 1) - (i > 2) - (i > 4)]

    def record(self):
        """The alarm as a dict (console, tests; payloads.alarm streams the same keys)."""
        return {name: getattr(self, name) for name in FIELDS}


class AlarmBook:
    def __init__(self, max_alarms=16):
        if type(max_alarms) is not int or not 2 <= max_alarms <= 64:
            raise ValueError("max_alarms must be an int 2..64")
        self._n = max_alarms
        self._f = list(_FREE) * max_alarms  # slot i: _f[i * _NF:(i + 1) * _NF]
        self.dropped = 0  # alarms that found no slot (see alarm_overflow)
        self.up_ms = 0  # time of the last stamped record: for records without a stamp
        self.utc = None
        self._none = []  # feed()'s shared empty result

    # -- queries ------------------------------------------------------------------------

    def _at(self, alarm_id):
        """The offset of alarm_id's slot in _f, or -1."""
        f = self._f
        for at in range(0, self._n * _NF, _NF):
            if f[at] == alarm_id:
                return at
        return -1

    def get(self, alarm_id):
        at = self._at(alarm_id)
        return None if at < 0 or alarm_id is None else Alarm(self._f, at)

    def alarms(self):
        """The held alarms, most severe first, then by raise time (a new list)."""
        f = self._f
        held = [Alarm(f, at) for at in range(0, self._n * _NF, _NF) if f[at] is not None]
        held.sort(key=lambda a: (SEVERITIES.index(a.severity), a.raised_up_ms or 0, a.id))
        return held

    def counts(self):
        """(held, active, waiting for ack)."""
        f = self._f
        held = active = unacked = 0
        for at in range(0, self._n * _NF, _NF):
            if f[at] is not None:
                held += 1
                if f[at + _ACTIVE]:
                    active += 1
                if _define(f[at])[1] and not f[at + _ACKED]:
                    unacked += 1
        return held, active, unacked

    def stale(self, alarm_id):
        """True for a retained alarm the broker still shows and this node does not hold
        (raised before a reboot): publish an empty retained payload to remove it."""
        return self._at(alarm_id) < 0

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
                why = errs[0] if errs else ev.get("config")
                if ev.get("config") == "last_good":  # the why without the file's path
                    out = self._raise("config_refused", _text(why.split(": ", 1)[-1]), out)
                else:
                    out = self._raise("no_config", _text(why), out)
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
        if k == "ack":  # a technician's ack (the console's `ack ID`): an event, logged
            aid = ev.get("alarm")
            if type(aid) is str and self.get(aid) is not None:
                return self._ack(aid, _text(ev.get("source")) or "ack", out)
            return out
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
            held = [a.id for a in self.alarms()]
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
        f = self._f
        return [[f[at], f[at + _RAISED_UTC], f[at + _COUNT], f[at + _DETAIL]]
                for at in range(0, self._n * _NF, _NF)
                if f[at] is not None and not f[at + _ACKED] and f[at] != OVERFLOW
                and _define(f[at])[1]]

    def restore(self, items):
        """Bring back exported alarms, cleared and waiting for their ack (their condition
        is evaluated afresh). Unknown or malformed entries are skipped."""
        out = []
        f = self._f
        for it in items or _EMPTY:
            try:
                alarm_id, utc, count, detail = it
            except (TypeError, ValueError):
                continue
            if type(alarm_id) is not str or _define(alarm_id) is None or self.get(alarm_id):
                continue
            out = self._raise(alarm_id, _text(detail), out)
            at = self._at(alarm_id)
            if at >= 0:
                f[at + _RAISED_UTC] = utc if type(utc) is int else None
                f[at + _COUNT] = count if type(count) is int and count > 0 else 1
                if alarm_id not in _LATCHING:
                    out = self._clear(alarm_id, out)
        return out

    # -- internals ----------------------------------------------------------------------

    def _add(self, out, alarm_id, what):
        if out is self._none:
            out = []
        out.append({"alarm": alarm_id, "what": what})
        return out

    def _stamp(self, at, first):
        # the book's time into the slot's `first` (_RAISED_UP, _CLEARED_UP, _ACKED_UP) pair
        self._f[at + first] = self.up_ms
        self._f[at + first + 1] = self.utc

    def _raise(self, alarm_id, detail, out):
        f = self._f
        at = self._at(alarm_id)
        if at >= 0:
            mom = _define(alarm_id)[3]
            if f[at + _ACTIVE] and not mom:
                if detail is not None and detail != f[at + _DETAIL]:
                    f[at + _DETAIL] = detail
                    return self._add(out, alarm_id, UPDATE)
                return out
            f[at + _COUNT] += 1
            if detail is not None:
                f[at + _DETAIL] = detail
            f[at + _ACKED] = False  # raised again: it needs a fresh ack
            f[at + _ACKED_BY] = f[at + _ACKED_UP] = f[at + _ACKED_UTC] = None
            self._stamp(at, _RAISED_UP)
            if mom:
                self._stamp(at, _CLEARED_UP)
                return self._add(out, alarm_id, UPDATE)
            f[at + _ACTIVE] = True
            f[at + _CLEARED_UP] = f[at + _CLEARED_UTC] = None
            return self._add(out, alarm_id, RAISE)
        mom = _define(alarm_id)[3]
        # a free slot: the last one is the overflow's
        last = (self._n - 1) * _NF
        at = last if alarm_id == OVERFLOW and f[last] is None else -1
        if alarm_id != OVERFLOW:
            for i in range(0, last, _NF):
                if f[i] is None:
                    at = i
                    break
        if at < 0:
            self.dropped += 1
            if alarm_id == OVERFLOW:
                return out
            return self._raise(OVERFLOW, alarm_id, out)
        f[at:at + _NF] = _FREE
        f[at] = alarm_id
        f[at + _ACTIVE] = True
        self._stamp(at, _RAISED_UP)
        f[at + _COUNT] = 1
        f[at + _DETAIL] = detail
        out = self._add(out, alarm_id, RAISE)
        if mom:
            out = self._clear(alarm_id, out)
        return out

    def _clear(self, alarm_id, out):
        at = self._at(alarm_id)
        if at < 0 or not self._f[at + _ACTIVE]:
            return out
        self._f[at + _ACTIVE] = False
        self._stamp(at, _CLEARED_UP)
        out = self._add(out, alarm_id, CLEAR)
        return self._maybe_remove(at, out)

    def _ack(self, alarm_id, source, out):
        at = self._at(alarm_id)
        if at < 0 or self._f[at + _ACKED]:
            return out
        self._f[at + _ACKED] = True
        self._f[at + _ACKED_BY] = source
        self._stamp(at, _ACKED_UP)
        out = self._add(out, alarm_id, ACK)
        return self._maybe_remove(at, out)

    def _maybe_remove(self, at, out):
        f = self._f
        if f[at + _ACTIVE] or (not f[at + _ACKED] and _define(f[at])[1]):
            return out
        alarm_id = f[at]
        f[at:at + _NF] = _FREE
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
