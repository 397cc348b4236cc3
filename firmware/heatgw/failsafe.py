"""Fail-safe bypass state machine: pure logic, no I/O, no clock reads.

    fs = FailSafe(cfg["control"], sensors_cfg=cfg["sensors"], flow_cfg=cfg.get("flow"),
                  now_ms=clock.ticks_ms(), latched=saved_latches)
    events = fs.update(clock.ticks_ms(), inputs)   # every tick
    drive_relays(fs.relay_reuse)                    # True only in state 'reuse'

Any active condition or latched reason puts the node in 'bypass' in the same update.
Going back to 'reuse' needs every condition clear continuously for `recover_s` and at
least `min_dwell_s` since the last entry into bypass (the construction counts: a node
that keeps rebooting cannot chatter either).

Timers are durations accumulated from update to update (saturating), never stored tick
stamps, so a node that sits in bypass for weeks cannot see a wrapped ticks_diff make a
long time look short. The steady-state update (nothing changes) allocates nothing and
returns the same empty list: treat returned lists as read-only.

External readings (the mechanism every input that is not an RTD or the flow meter uses:
the Modbus meters of heatgw.modbus now, analogue inputs such as a 4-20 mA valve position or
loop pressure next). A task that owns such an input stores, by the reading's name:

    inputs.readings[name] = value          # a number, or None when there is none
    inputs.reading_reasons[name] = reason  # None, or why there is no good value ("timeout")
    inputs.reading_valid_ms[name] = ticks  # when the last good value was read (set on
                                           # success only; None before the first)

(`Inputs(sensor_names, reading_names)` makes the three tables; the owner only assigns,
never decides.) The fail-safe is told which readings are critical and how old each may
get: `FailSafe(..., readings=((name, stale_ms), ...))`. Every update it then evaluates,
for each of them, `sensor_fault:<name>` while its reason is not None (or its value is a
non-finite number) and `sensor_stale:<name>` while its last good value is older than its
own stale_ms (from construction, before the first one). Names must differ from the RTD
channels' and from "flow". Trips on a reading's value (loop pressure low, ...) are
conditions of their own, added here by the work that brings the reading.

Value trips of external readings (heatgw.analog: the pressure and level inputs):
`FailSafe(..., input_limits=((name, low_reason, low, low_clear, high_reason, high,
high_clear), ...))` evaluates `input_low:<name>` (value below low; clears above
low_clear) and `input_high:<name>` (above high; clears below high_clear) every update
while the reading has a value (a reason holds both as they are: the fault is its own
trip). Two reason codes for any number of inputs (recqueue.REASONS), the input's name
after the colon as with sensor_fault:<name>.

The valve's analogue position feedback (a reading in milli-%, heatgw.analog):
`FailSafe(..., valve_reading=(name, tolerance_milli))`: commanded (0 % in bypass,
100 000 milli-% in reuse) and measured differing by more than the tolerance counts as the
end switch disagreeing; either one disagreeing for longer than valve_travel_s is
`valve_stuck` (latching). With valve_feedback false (no end switch) the analogue feedback
alone supervises the valve. A reading with no value (wire break) neither agrees nor
disagrees: its fault is sensor_fault:<name> when it is critical.

Runs unchanged on MicroPython and CPython.
"""

try:
    from micropython import const
except ImportError:  # CPython (host tools, tests): const() is the identity on ints
    const = int

# a - b in ticks that wrap at 2**30, like time.ticks_diff on the targets (the app sets
# its clock's own): the inbox's, resident beside this module in the app
from heatgw.inbox import ticks_diff  # noqa: E402

BYPASS = "bypass"
REUSE = "reuse"

BOOT = "boot"
NO_CONFIG = "no_config"
SINK_RETURN_HIGH = "sink_return_high"
SINK_FLOW_LOW = "sink_flow_low"
SINK_UNAVAILABLE = "sink_unavailable"
IT_COOLANT_HIGH = "it_coolant_high"
FLOW_IMPLAUSIBLE = "flow_implausible"
VALVE_STUCK = "valve_stuck"
MAINTENANCE = "maintenance"
SENSOR_FAULT = "sensor_fault:"
SENSOR_STALE = "sensor_stale:"
INPUT_LOW = "input_low:"  # heatgw.analog's value trips: input_low:<name>
INPUT_HIGH = "input_high:"
_FAULT_FLOW = SENSOR_FAULT + "flow"
_STALE_FLOW = SENSOR_STALE + "flow"
RECOVERED = "recovered"

LATCHING = (IT_COOLANT_HIGH, VALVE_STUCK)

# Order for choosing the main cause of a bypass: what endangers equipment first.
PRIORITY = (NO_CONFIG, IT_COOLANT_HIGH, SINK_RETURN_HIGH, VALVE_STUCK, INPUT_HIGH,
            INPUT_LOW, SINK_FLOW_LOW, FLOW_IMPLAUSIBLE, SENSOR_FAULT, SENSOR_STALE,
            SINK_UNAVAILABLE, MAINTENANCE, BOOT)

_CAP_MS = const(0x1FFFFFFF)  # timers saturate here (~6 days): stays a small int on 32-bit ports
_INF = float("inf")
_VALVE_OPEN = const(100_000)  # the valve's commanded position in reuse, milli-%
_NINF = -_INF


def _finite(v):
    t = type(v)
    if t is float:
        return v == v and v != _INF and v != _NINF  # no arithmetic: floats are boxed
    return t is int  # bool is not int here: True is no temperature


_BROKEN = object()  # what a replaced (non-dict) input table yields: garbage, not "None"


def _get(d, key):
    if type(d) is dict:
        return d.get(key)
    return _BROKEN


def _json(v):
    """A value that json.dumps turns into valid, small JSON."""
    if v is None or v is True or v is False:
        return v
    if v is _BROKEN:
        return "broken input table"
    t = type(v)
    if t is int:
        return v
    if t is float:
        return v if _finite(v) else repr(v)
    if t is str:
        return v[:40]
    try:
        return repr(v)[:40]
    except Exception:
        return "?"


def _prio(reason):
    for i, p in enumerate(PRIORITY):
        if reason == p or (p[-1] == ":" and reason.startswith(p)):
            return (i, reason)
    return (len(PRIORITY), reason)


def _num(cfg, key, default):
    v = cfg.get(key, default) if type(cfg) is dict else default
    if v is None:
        return None
    if not _finite(v):
        raise ValueError("config %s: not a number: %r" % (key, v))
    return v


class Inputs:
    """Preallocated once by the sampler, updated in place every tick."""

    def __init__(self, sensor_names, reading_names=()):
        self.temps_c = dict.fromkeys(sensor_names)  # float or None
        self.temp_reasons = dict.fromkeys(sensor_names)  # None or reason str
        self.temp_valid_ms = dict.fromkeys(sensor_names)  # ticks of last valid reading
        self.flow_m3h = None
        self.flow_reason = None
        self.flow_valid_ms = None
        # Merged board + remote requests (heatgw.inbox); *_by says who, for the events.
        self.sink_available = None  # True/False, None = no source configured
        self.sink_by = None
        self.sink_silent = None  # remote sink sources silent beyond their timeout
        self.maintenance = False
        self.maintenance_by = None
        self.trip_reset = False  # level of the board's reset input (edge-detected)
        self.valve_at_reuse = None  # True reuse end, False bypass end, None between/unwired
        # External readings (module doc): value, reason, ticks of the last good value
        self.readings = dict.fromkeys(reading_names)
        self.reading_reasons = dict.fromkeys(reading_names)
        self.reading_valid_ms = dict.fromkeys(reading_names)


class FailSafe:
    def __init__(self, control_cfg, *, sensors_cfg, flow_cfg, now_ms, latched=(),
                 configured=True, readings=(), flow_stale_ms=None, input_limits=(),
                 valve_reading=None, milli_readings=()):
        """readings: ((name, stale_ms), ...), the critical external readings (module
        doc). flow_stale_ms: the flow meter's own staleness limit (a Modbus flow meter's
        stale_s); None: control.stale_s. input_limits: the value trips of external
        readings, valve_reading: (name, tolerance) of the valve's analogue feedback
        (module doc); milli_readings: readings kept in milli-units (heatgw.analog), shown
        in their units in events."""
        self.ticks_diff = ticks_diff  # the app may set time.ticks_diff
        c = control_cfg if type(control_cfg) is dict else {}
        # defaults for missing keys: the values of the reference config
        sr_max_c = _num(c, "sink_return_max_c", 45.0)
        it_max_c = _num(c, "it_coolant_max_c", 44.0)
        # (sensor, condition, limit, clear): over-temperature with hysteresis
        self._limits_all = (
            ("sink_return", SINK_RETURN_HIGH, sr_max_c,
             sr_max_c - _num(c, "sink_return_hyst_k", 2.0)),
            ("it_coolant", IT_COOLANT_HIGH, it_max_c,
             it_max_c - _num(c, "it_coolant_hyst_k", 2.0)),
        )
        self._flow_min_m3h = _num(c, "sink_flow_min_m3h", 3.0)
        self._flow_clear_m3h = None
        if self._flow_min_m3h is not None:
            self._flow_clear_m3h = self._flow_min_m3h + _num(c, "sink_flow_hyst_m3h", 0.5)
        self._stale_s = _num(c, "stale_s", 5)
        self._travel_s = _num(c, "valve_travel_s", 45)
        self._stale_ms = int(self._stale_s * 1000)
        self._travel_ms = int(self._travel_s * 1000)
        self._recover_ms = int(_num(c, "recover_s", 120) * 1000)
        self._dwell_min_ms = int(_num(c, "min_dwell_s", 600) * 1000)
        # The sink rule (heatgw.inbox): with a configured source (the contact, a remote
        # source of sink_sources) reuse needs sink_available True; without one, only a
        # source saying False trips.
        ss = c.get("sink_sources")
        remote = False
        if type(ss) is dict:
            for k in ss:
                if ss[k] is not None:
                    remote = True
        self._sink_signal = bool(c.get("sink_signal", False)) or remote
        configured = bool(configured)
        # An installation without end switches says so; otherwise None means "not there".
        # Without a config nothing is known about the valve: supervising it would only
        # latch (and persist) a spurious valve_stuck while no_config holds bypass anyway.
        self._valve_fb = bool(c.get("valve_feedback", True)) and configured

        s = sensors_cfg if type(sensors_cfg) is dict else {}
        self._limits = ()
        for x in self._limits_all:
            if x[0] in s:
                self._limits += (x,)
        crit = []
        for n in s:
            if type(s[n]) is dict and s[n].get("critical"):
                crit.append(n)
        crit.sort()
        self._crit = ()
        for n in crit:
            self._crit += ((n, SENSOR_FAULT + n, SENSOR_STALE + n),)
        self._flow = type(flow_cfg) is dict
        self._flow_crit = self._flow and bool(flow_cfg.get("critical"))
        self._flow_max_m3h = _num(flow_cfg, "max_m3h", None) if self._flow else None
        # last valid_ms judged stale, per sensor: that reading only gets older, even
        # when ticks_diff wraps after ~6 days and would call it fresh again
        self._stale_seen = dict.fromkeys(crit)
        self._stale_seen["flow"] = None
        self._flow_stale_ms = self._stale_ms if flow_stale_ms is None else int(flow_stale_ms)
        rd = []
        for name, stale_ms in readings:
            if type(name) is not str or name in s or name in self._stale_seen:
                raise ValueError("reading name %r: not a str, or a sensor's" % (name,))
            if not _finite(stale_ms) or stale_ms <= 0:
                raise ValueError("reading %s: stale_ms must be > 0" % name)
            rd.append((name, SENSOR_FAULT + name, SENSOR_STALE + name, int(stale_ms)))
            self._stale_seen[name] = None
        rd.sort()
        self._readings = tuple(rd)
        lim = []
        for x in input_limits:
            if len(x) != 7 or type(x[0]) is not str:
                raise ValueError("input limit %r: (name, low reason, low, clear, high "
                                 "reason, high, clear)" % (x,))
            for r, a, b in ((x[1], x[2], x[3]), (x[4], x[5], x[6])):
                if r is not None and not (type(r) is str and _finite(a) and _finite(b)):
                    raise ValueError("input limit %s: limits must be numbers" % x[0])
            lim.append(tuple(x))
        self._in_limits = tuple(lim)
        self._milli = tuple(milli_readings)
        self._valve_an = None
        if valve_reading is not None and configured:
            name, tol = valve_reading
            if type(name) is not str or not _finite(tol) or tol < 0:
                raise ValueError("valve reading %r: (name, tolerance >= 0)" % (valve_reading,))
            self._valve_an = (name, tol)

        self._on = {BOOT: True}  # active conditions
        if not configured:
            self._on[NO_CONFIG] = True
        self._latched = {}
        for r in latched or ():
            self._latched[r if type(r) is str else "%s" % (r,)] = True
        self.active = tuple(sorted(self._on))
        self.latched = tuple(sorted(self._latched))
        self.state = BYPASS
        self.relay_reuse = False
        self.cause = BOOT if configured else NO_CONFIG  # main cause of the state

        self._prev_ms = now_ms
        self._age_ms = 0  # since construction
        self._dwell_ms = 0  # since the last entry into bypass
        self._clear_ms = -1  # how long every condition has been clear; -1: not clear
        self._valve_ms = 0  # how long the valve disagrees with the command; -1: agrees
        self._reset_prev = True  # a reset input already high at boot is no press
        self._inputs = None
        self._none = []  # returned when nothing happens

    # ---------------------------------------------------------------- public

    def reset_latches(self, now_ms, source="remote"):
        """Technician reset: drop latched reasons whose condition is clear. Its events
        name `source` (who asked: "board" for the reset input, else the inbox's)."""
        return self._reset(now_ms, [], source)

    def update(self, now_ms, inputs):
        """Evaluate every condition; return the events (the shared empty list if none)."""
        try:
            return self._update(now_ms, inputs)
        except Exception:
            # a bug here must still leave the relays in the safe position
            self.state = BYPASS
            self.relay_reuse = False
            self._dwell_ms = 0
            self._clear_ms = -1
            raise

    # ---------------------------------------------------------------- internals

    def _update(self, now_ms, inputs):
        if self._none:
            self._none.clear()  # somebody appended to the shared empty list
        ev = self._none
        self._inputs = inputs
        dt = 0
        if type(now_ms) is int and type(self._prev_ms) is int:
            dt = self.ticks_diff(now_ms, self._prev_ms)
            if dt < 0:
                dt = 0  # time does not run backwards here
        elif type(now_ms) is not int:
            now_ms = self._prev_ms  # keep events and timers on the last good tick
        self._prev_ms = now_ms
        self._age_ms = min(_CAP_MS, self._age_ms + dt)
        if self.state == BYPASS:
            self._dwell_ms = min(_CAP_MS, self._dwell_ms + dt)
        on = self._on

        if BOOT in on:
            ev = self._set(BOOT, False, ev, now_ms)

        temps = inputs.temps_c
        reasons = inputs.temp_reasons
        for name, reason, limit, clear in self._limits:
            if _get(reasons, name) is None:  # a reason (or a broken table): no number
                t = _get(temps, name)
                if _finite(t):
                    ev = self._set(reason, not t < clear if reason in on else t > limit,
                                   ev, now_ms)

        valid = inputs.temp_valid_ms
        for name, fault, stale in self._crit:
            r = _get(reasons, name)
            v = _get(temps, name)
            bad = (r is not None and r != "not_ready") or (v is not None and not _finite(v))
            ev = self._set(fault, bad, ev, now_ms)
            ev = self._set(stale, self._is_stale(name, _get(valid, name), now_ms), ev, now_ms)

        if self._readings:
            ev = self._check_readings(inputs, now_ms, ev)
        if self._in_limits:
            ev = self._check_limits(inputs, now_ms, ev)

        if self._flow:
            f = inputs.flow_m3h
            fr = inputs.flow_reason
            if fr is None and _finite(f):
                if self._flow_min_m3h is not None:
                    if SINK_FLOW_LOW in on:
                        hit = not f > self._flow_clear_m3h
                    else:
                        hit = f < self._flow_min_m3h
                    ev = self._set(SINK_FLOW_LOW, hit, ev, now_ms)
                if self._flow_max_m3h is not None:
                    ev = self._set(FLOW_IMPLAUSIBLE, f > self._flow_max_m3h, ev, now_ms)
            if self._flow_crit:
                bad = (fr is not None and fr != "not_ready") or (f is not None and not _finite(f))
                ev = self._set(_FAULT_FLOW, bad, ev, now_ms)
                ev = self._set(_STALE_FLOW,
                               self._is_stale("flow", inputs.flow_valid_ms, now_ms,
                                              self._flow_stale_ms), ev, now_ms)

        sa = inputs.sink_available
        ev = self._set(SINK_UNAVAILABLE, sa is not True if self._sink_signal else sa is False,
                       ev, now_ms)
        ev = self._set(MAINTENANCE, bool(inputs.maintenance), ev, now_ms)

        if self._valve_fb or self._valve_an is not None:
            agree = True
            if self._valve_fb:
                fb = inputs.valve_at_reuse
                agree = (fb is True) if self.relay_reuse else (fb is False)
            va = self._valve_an
            if va is not None and agree and _get(inputs.reading_reasons, va[0]) is None:
                pos = _get(inputs.readings, va[0])
                if _finite(pos):
                    d = pos - _VALVE_OPEN if self.relay_reuse else pos
                    agree = -va[1] <= d <= va[1]
            if agree:
                self._valve_ms = -1
            elif self._valve_ms < 0:
                self._valve_ms = 0  # disagreement begins now
            else:
                self._valve_ms = min(_CAP_MS, self._valve_ms + dt)
            # once stuck, stuck until the valve shows the commanded end (the trip itself
            # changes the command, which must not make a valve stuck at reuse look fine)
            hit = not agree and (VALVE_STUCK in on or self._valve_ms > self._travel_ms)
            ev = self._set(VALVE_STUCK, hit, ev, now_ms)

        level = bool(inputs.trip_reset)
        if level and not self._reset_prev:
            ev = self._reset(now_ms, ev, "board")
        self._reset_prev = level

        if on:
            self._clear_ms = -1
        elif self._clear_ms < 0:
            self._clear_ms = 0  # clear from this update on
        else:
            self._clear_ms = min(_CAP_MS, self._clear_ms + dt)

        if self.state == REUSE:
            if on or self._latched:
                ev = self._enter(BYPASS, ev, now_ms)
        elif (not on and not self._latched and self._clear_ms >= self._recover_ms
              and self._dwell_ms >= self._dwell_min_ms):
            ev = self._enter(REUSE, ev, now_ms)
        return ev

    def _check_readings(self, inputs, now_ms, ev):
        vals = inputs.readings
        reasons = inputs.reading_reasons
        valid = inputs.reading_valid_ms
        for name, fault, stale, limit in self._readings:
            v = _get(vals, name)
            bad = _get(reasons, name) is not None or (v is not None and not _finite(v))
            ev = self._set(fault, bad, ev, now_ms)
            ev = self._set(stale, self._is_stale(name, _get(valid, name), now_ms, limit),
                           ev, now_ms)
        return ev

    def _check_limits(self, inputs, now_ms, ev):
        vals = inputs.readings
        reasons = inputs.reading_reasons
        on = self._on
        for name, r_lo, lo, lo_clear, r_hi, hi, hi_clear in self._in_limits:
            if _get(reasons, name) is not None:  # no value: the trips hold as they are
                continue
            v = _get(vals, name)
            if not _finite(v):
                continue
            if r_lo is not None:
                ev = self._set(r_lo, not v > lo_clear if r_lo in on else v < lo, ev, now_ms)
            if r_hi is not None:
                ev = self._set(r_hi, not v < hi_clear if r_hi in on else v > hi, ev, now_ms)
        return ev

    def _is_stale(self, name, valid_ms, now_ms, limit=None):
        if limit is None:
            limit = self._stale_ms
        if valid_ms is None:
            return self._age_ms > limit
        if type(valid_ms) is not int:
            return True
        if valid_ms == self._stale_seen[name]:
            return True
        age = self.ticks_diff(now_ms, valid_ms)
        # far in the "future" means wrapped from far in the past (or nonsense)
        if age > limit or age < -limit:
            self._stale_seen[name] = valid_ms
            return True
        return False

    def _set(self, reason, hit, ev, now_ms):
        """Record a condition's level; events only when it changes."""
        on = self._on
        if hit:
            if reason in on:
                return ev
            on[reason] = True
            kind = "trip"
        else:
            if reason not in on:
                return ev
            del on[reason]
            kind = "clear"
        self.active = tuple(sorted(on))
        if ev is self._none:
            ev = []
        values = self._values(reason, now_ms)
        ev.append({"kind": kind, "reason": reason, "t_ms": now_ms, "values": values})
        if hit and reason in LATCHING and reason not in self._latched:
            self._latched[reason] = True
            self.latched = tuple(sorted(self._latched))
            ev.append({"kind": "latch", "reason": reason, "t_ms": now_ms, "values": values})
        return ev

    def _reset(self, now_ms, ev, source):
        if ev is self._none:
            ev = []
        source = _json(source)
        if not self._latched:
            ev.append({"kind": "reset", "reason": "none", "result": "cleared", "t_ms": now_ms,
                       "source": source, "detail": "nothing latched", "values": {}})
            return ev
        for reason in sorted(self._latched):
            if reason in self._on:
                ev.append({"kind": "reset", "reason": reason, "result": "refused",
                           "t_ms": now_ms, "source": source, "detail": "condition still active",
                           "values": self._values(reason, now_ms)})
            else:
                del self._latched[reason]
                ev.append({"kind": "reset", "reason": reason, "result": "cleared",
                           "t_ms": now_ms, "source": source, "values": {}})
        self.latched = tuple(sorted(self._latched))
        return ev

    def _enter(self, state, ev, now_ms):
        if ev is self._none:
            ev = []
        if state == BYPASS:
            # main cause: the highest-priority condition that tripped in this update
            cause = None
            values = {}
            for e in ev:
                if e["kind"] == "trip" and (cause is None or _prio(e["reason"]) < _prio(cause)):
                    cause = e["reason"]
                    values = e["values"]
            if cause is None:
                held = list(self._on) + list(self._latched)
                cause = min(held, key=_prio) if held else "unknown"
                values = self._values(cause, now_ms)
            self.relay_reuse = False
            self._dwell_ms = 0
        else:
            cause = RECOVERED
            values = {"clear_s": self._clear_ms // 1000, "bypass_s": self._dwell_ms // 1000}
            self.relay_reuse = True
        self.state = state
        self.cause = cause
        self._valve_ms = 0  # the valve starts travelling now
        ev.append({"kind": "state", "state": state, "reason": cause,
                   "reasons": list(self.active), "latched": list(self.latched),
                   "t_ms": now_ms, "values": values})
        return ev

    def _reading(self, name):
        for rd in self._readings:
            if rd[0] == name:
                return rd
        return None

    def _values(self, reason, now_ms):
        """The values behind a condition, for its events ({} if they cannot be had)."""
        try:
            i = self._inputs
            for name, r, limit, clear in self._limits_all:
                if reason == r:
                    return {name + "_c": _json(_get(i.temps_c, name)), "limit_c": limit,
                            "clear_c": clear}
            if reason == SINK_FLOW_LOW:
                return {"flow_m3h": _json(i.flow_m3h), "limit_m3h": self._flow_min_m3h,
                        "clear_m3h": self._flow_clear_m3h}
            if reason == FLOW_IMPLAUSIBLE:
                return {"flow_m3h": _json(i.flow_m3h), "limit_m3h": self._flow_max_m3h}
            if reason == SINK_UNAVAILABLE:
                return {"sink_available": _json(i.sink_available),
                        "source": _json(getattr(i, "sink_by", None)),
                        "silent": _json(getattr(i, "sink_silent", None))}
            if reason == MAINTENANCE:
                return {"source": _json(getattr(i, "maintenance_by", None))}
            if reason == VALVE_STUCK:
                out = {"relay_reuse": self.relay_reuse,
                       "valve_at_reuse": _json(i.valve_at_reuse),
                       "disagree_ms": max(self._valve_ms, 0), "travel_s": self._travel_s}
                if self._valve_an is not None:
                    pos = _get(i.readings, self._valve_an[0])
                    out["valve_pct"] = pos / 1000 if _finite(pos) else _json(pos)
                return out
            if reason.startswith(INPUT_LOW) or reason.startswith(INPUT_HIGH):
                for x in self._in_limits:
                    if reason == x[1] or reason == x[4]:
                        v = _get(i.readings, x[0])
                        lim = x[2:4] if reason == x[1] else x[5:7]
                        return {"input": x[0], "value": v / 1000 if _finite(v) else _json(v),
                                "limit": lim[0] / 1000, "clear": lim[1] / 1000}
            if reason.startswith(SENSOR_FAULT):
                name = reason[len(SENSOR_FAULT):]
                if self._reading(name):
                    v = _get(i.readings, name)
                    if name in self._milli and _finite(v):
                        v = v / 1000
                    return {"sensor": name, "sensor_reason": _json(_get(i.reading_reasons,
                                                                        name)),
                            "value": _json(v)}
                if name == "flow":
                    return {"sensor": name, "sensor_reason": _json(i.flow_reason),
                            "flow_m3h": _json(i.flow_m3h)}
                return {"sensor": name, "sensor_reason": _json(_get(i.temp_reasons, name)),
                        "temp_c": _json(_get(i.temps_c, name))}
            if reason.startswith(SENSOR_STALE):
                name = reason[len(SENSOR_STALE):]
                rd = self._reading(name)
                stale_s = self._stale_s
                if rd:
                    v = _get(i.reading_valid_ms, name)
                    stale_s = rd[3] // 1000
                elif name == "flow":
                    v = i.flow_valid_ms
                    stale_s = self._flow_stale_ms // 1000
                else:
                    v = _get(i.temp_valid_ms, name)
                age = self.ticks_diff(now_ms, v) if type(v) is int else None
                return {"sensor": name, "valid_ms": _json(v), "age_ms": age,
                        "stale_s": stale_s}
        except Exception:
            pass
        return {}
