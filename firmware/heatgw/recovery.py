"""The heat recovery ratio, the compute load's power and energy, and the heat meter check.

Imported only when the configuration has a `recovery` section (heatgw.app builds it as
`gw.recovery`). The interface other parts read (telemetry, the BMS's Modbus server):

    gw.recovery.compute_w            # the compute load's power, W (None: no good value)
    gw.recovery.compute_energy_wh    # its energy total, whole Wh (None: nothing counted)
    gw.recovery.ratio_interval       # heat / electric energy over the last telemetry
    gw.recovery.ratio_hour           #   interval, the last completed hour, and since
    gw.recovery.ratio_total          #   commissioning (floats; None when unknown)
    gw.recovery.compute_why, interval_why, hour_why, total_why   # why a value is None

Sources (recovery.compute.source):
- "modbus": a meter of role compute (gw.modbus). With an energy register (energy_kwh) the
  energy is the register's differences between two good reads: exact to the register, a
  failed poll in between loses nothing; a decrease, or a growth faster than max_kw, is a
  meter reset or replacement and adds nothing (`resets`). Without one, its power_w is
  integrated as below.
- "mqtt": a topic the site's IT monitoring publishes, the power at a JSON path (x scale =
  W). The telemetry client subscribes; its callback only copies the message into a buffer
  made once (mqtt_in, at most max_bytes, else the fault too_large); the mqtt task parses
  the newest one at most once a second (mqtt_parse; a flood costs no more than that). A
  message that is no JSON, lacks the path or has no number there, or a number that is
  negative, not finite or above max_kw is a named fault (bad_json, no_path, not_number,
  bad_value), counted, an event at most once a minute: nothing changes, the last good
  value goes stale in its time. Energy is power integrated over time (trapezoids between
  two samples at most stale_s apart, in integer mWh): an estimate, flagged
  (compute_energy_integrated), never passed off as metered.
- A value older than stale_s (the meter's own for Modbus) is no value: reason "stale".

Pairs. Each new compute reading closes a pair with the one before: its electric energy
and the heat this node metered between the two control ticks that saw them (exact
integers: the meter's limbs in mWh, floor of nJ / 3.6e9). So heat and electricity cover
the same span to within a tick. A pair counts into:
- the totals (compute_energy_wh, and ratio_heat_wh, the heat of the counted pairs):
  every pair whose electric energy is known: an energy register's difference across any
  gap (it is exact), a power integration only across a gap of at most stale_s;
- the current telemetry interval's and hour's sums: only a pair whose span is at most
  stale_s. A window in which the source was stale at some tick, or that holds a reset or a
  gap, has no ratio (reason "stale", "meter_reset"); a window with no pair completed in it
  has none either ("no_reading"; "not_ready" before the first), nor one whose electric
  energy is 0 ("no_energy"). Partial windows are never scaled up or passed off as whole:
  their heat and electricity still count in the totals when the pair is known.
So ratio_total = ratio_heat / compute_energy over every counted pair since commissioning
(persisted: the state record and the flash queue's telemetry records carry the totals).
The hour is the telemetry intervals of one hour of node time, counted from boot; its
ratio is published until the next hour completes. Poll the compute meter at least twice
per telemetry interval, or intervals alternate between one pair and none.

Heat meter check (recovery.heat_check): a Modbus meter of role heat is a second,
independent energy total. Each pair of its good reads is compared with this node's heat
over the same span, when the node metered without error time in it (a sensor fault stops
our metering, not the meter's) and the register neither fell nor jumped (reset): the sums
heat_meter_wh (theirs) and ours give the difference in kWh and in % of ours, since
commissioning (persisted). Beyond limit_pct, once both counted min_kwh, the event
`heat_check` (state mismatch / ok) raises and clears the heat_meter_mismatch alarm.

Cost: the control tick compares a few small ints (no allocation); a new reading flushes
the meter, divides its limbs (15-bit halves, no allocation) and does a few float
operations; a telemetry interval's close does a few more. Everything 32-bit safe: totals
are 2 limbs of 30 bits (mWh: 2**60 mWh is 1.15e12 kWh), window sums too.
"""

from array import array

from heatgw import clock
from heatgw import meterkernel as _k

INVALID = -0x20000000  # an int value that is not valid (heatgw.recqueue.INVALID)
_M30 = 0x3FFFFFFF
_LIMB = 1073741824.0  # 2**30 as a float
_EVENT_GAP_MS = 60_000
_PARSE_GAP_MS = 1_000
_PPM_MAX = 0x1FFFFFFF
_HEAT_MAX_W = 2_000_000  # the heat meter's plausible growth: twice the gateway's 1 MW
_MWH_DIV = (1000, 1000, 3600)  # nJ -> mWh, each divisor < 2**15

# The extension of a telemetry queue record (heatgw.recqueue, version 0x52), `ext`:
X_POWER = 0  # compute power, W (INVALID: none)
X_CE = 1  # compute energy, mWh: 2 limbs (low, high)
X_RH = 3  # the heat of the counted pairs, mWh: 2 limbs
X_IV = 5  # the last interval's ratio, ppm (INVALID: none)
X_HR = 6  # the last completed hour's ratio, ppm (INVALID: none)
X_HM = 7  # the heat meter over the compared spans, mWh: 2 limbs
X_OWN = 9  # our heat over the same spans, mWh: 2 limbs
X_FLAGS = 11  # FLAG_INTEGRATED
X_LEN = 12
FLAG_INTEGRATED = 1
# Window sums (_w): the interval's heat and electricity, then the hour's, 2 limbs each
_IV = 0
_HR = 4


def _add(a, i, d):
    """a[i] + a[i + 1] * 2**30 += d, 0 <= d <= 2**30 - 1, no intermediate >= 2**30."""
    room = _M30 - a[i]
    if d > room:
        a[i] = d - room - 1
        a[i + 1] += 1
    else:
        a[i] += d


def _add_big(a, i, d):
    """The same for any d >= 0 (a long int beyond 2**30 - 1, only after long gaps)."""
    if d <= _M30:
        _add(a, i, d)
    else:
        _add(a, i, d & _M30)
        a[i + 1] += d >> 30


def _add_diff(a, i, b, j, c, k):
    """a[i:i+2] += b[j:j+2] - c[k:k+2] (2-limb numbers, b >= c); False when b < c."""
    lo = b[j] - c[k]
    hi = b[j + 1] - c[k + 1]
    if lo < 0:
        lo = lo + _M30 + 1
        hi -= 1
    if hi < 0:
        return False
    _add(a, i, lo)
    a[i + 1] += hi
    return True


def _f(a, i):
    return a[i + 1] * _LIMB + a[i]


def _ppm(heat, elec):
    r = int(heat * 1e6 / elec + 0.5)
    return r if r <= _PPM_MAX else INVALID


class Recovery:
    def __init__(self, cfg, gw):
        rc = cfg["recovery"]
        self._gw = gw
        self._meter = gw.meter
        self.auto = True  # close intervals by itself; heatgw.telemetry closes them instead
        iv_s = (cfg.get("telemetry") or {}).get("interval_s") or 10
        self.interval_ms = iv_s * 1000
        self._per_hour = -(-3600 // iv_s)  # intervals in an hour (rounded up)
        self._due = None
        self.ext = array("i", [0] * X_LEN)  # the values of the last close (module doc)
        self.ext[X_POWER] = self.ext[X_IV] = self.ext[X_HR] = INVALID
        self._w = array("i", [0] * 8)  # window sums
        self._q = array("i", [0] * 4)  # our heat now (mWh) and error time (ms), limbs
        self._hv = [0] * 6  # _heat(): 15-bit halves
        self.resets = 0
        self.compute_why = "not_configured"
        self.interval_why = self.hour_why = "not_ready"
        self._ivs = 0  # intervals in the current hour
        self._iv_why = self._hr_why = None  # why the current window has no ratio
        self._iv_pairs = self._hr_pairs = 0
        self._hr_span = None  # (first pair's start, last pair's end) ticks of the hour
        self.pairs = 0  # pairs counted since boot
        self._first_up = self._last_up = None  # uptime (ms): the first pair's start, the
        # last pair's end (the hour records give them, for the harness's truth)
        self._c = None
        c = rc.get("compute")
        if c:
            self._c = c
            self._max_w = c["max_kw"] * 1000
            self.compute_why = "not_ready"
            self._ct = None  # ticks of the last reading taken, of the last pair's end
            self._cpt = None  # ticks (reading time) of the previous good reading
            self._ce = None  # its energy (kWh) and power (W)
            self._cp = None
            self._cq = array("i", [0] * 2)  # our heat when it was seen, mWh
            self._gap = False  # the source went stale since the previous reading
            self._gap_up = 0  # uptime (ms) of the previous reading: a stale gap's length
            self._cobs = None  # the tick that saw the previous reading
            self._pair_w = None  # the last pair's mean power (a meter without power_w)
            if c["source"] == "modbus":
                m = gw.modbus.meters[c["meter"]]
                self._cm = m
                self._ie = m.names.index("energy_kwh") if "energy_kwh" in m.names else -1
                self._ip = m.names.index("power_w") if "power_w" in m.names else -1
                self._stale_ms = m.stale_ms
            else:
                self._cm = None
                self._ie = self._ip = -1
                self._stale_ms = c["stale_s"] * 1000
                self._mbuf = bytearray(c["max_bytes"])
                self._mn = 0
                self._marr = 0  # arrival ticks of the message in _mbuf
                self.mqtt_pending = False
                self._mlast = None  # ticks of the last parse
                self._mt = None  # arrival ticks of the last good value
                self._mw = None  # its power, W
                self._path = tuple(c["path"].split("."))
                self.mqtt_received = 0
                self.mqtt_skipped = 0  # overwritten before they were parsed
                self.mqtt_faults = 0
                self.mqtt_fault = None  # the last fault's name
                self._mev_ms = None
        self._h = None
        h = rc.get("heat_check")
        if h:
            self._h = h
            m = gw.modbus.meters[h["meter"]]
            self._hm = m
            self._hi = m.names.index("energy_kwh")
            self._ht = None  # the heat meter's last reading taken, and the previous good
            self._hpt = None
            self._he = None
            self._hq = array("i", [0] * 4)  # our heat and error time when it was seen
            self.heat_why = "not_ready"
            self.mismatch = False
            self.heat_resets = 0

    # -- what others read ------------------------------------------------------------------

    @property
    def compute_w(self):
        v = self.ext[X_POWER]
        return None if v == INVALID else v

    @property
    def compute_energy_wh(self):
        x = self.ext
        if self._c is None or not (x[X_CE] or x[X_CE + 1]):
            return None
        return ((x[X_CE + 1] << 30) + x[X_CE]) // 1000

    @property
    def ratio_interval(self):
        v = self.ext[X_IV]
        return None if v == INVALID else v / 1e6

    @property
    def ratio_hour(self):
        v = self.ext[X_HR]
        return None if v == INVALID else v / 1e6

    @property
    def ratio_total(self):
        x = self.ext
        e = _f(x, X_CE)
        return _f(x, X_RH) / e if e > 0 else None

    @property
    def total_why(self):
        return None if _f(self.ext, X_CE) > 0 else "no_energy"

    def totals(self):
        """The persisted totals (heatgw.app's state record), exact ints."""
        x = self.ext
        return {"compute_mwh": (x[X_CE + 1] << 30) + x[X_CE],
                "ratio_heat_mwh": (x[X_RH + 1] << 30) + x[X_RH],
                "heat_meter_mwh": (x[X_HM + 1] << 30) + x[X_HM],
                "heat_own_mwh": (x[X_OWN + 1] << 30) + x[X_OWN],
                "integrated": bool(x[X_FLAGS] & FLAG_INTEGRATED)}

    def restore(self, t):
        """Totals from the state record or a queue record; a bad one is refused whole."""
        x = self.ext
        keys = ("compute_mwh", "ratio_heat_mwh", "heat_meter_mwh", "heat_own_mwh")
        for key in keys:
            v = t.get(key, 0)
            if type(v) is not int or v < 0 or v >> 30 >> 30:
                raise ValueError("recovery: bad " + key)
        for j in range(4):
            v = t.get(keys[j], 0)
            i = (X_CE, X_RH, X_HM, X_OWN)[j]
            x[i] = v & _M30
            x[i + 1] = v >> 30
        x[X_FLAGS] = FLAG_INTEGRATED if t.get("integrated") else 0

    def record(self):
        """The `recovery` record: counters and the values now (tests, the harness)."""
        r = {"pairs": self.pairs, "resets": self.resets, "compute_w": self.compute_w,
             "compute_why": self.compute_why, "compute_energy_wh": self.compute_energy_wh,
             "ratio_interval": self.ratio_interval, "interval_why": self.interval_why,
             "ratio_hour": self.ratio_hour, "hour_why": self.hour_why,
             "ratio_total": self.ratio_total, "totals": self.totals()}
        if self._c is not None and self._cm is None:
            r["mqtt"] = {"received": self.mqtt_received, "skipped": self.mqtt_skipped,
                         "faults": self.mqtt_faults, "fault": self.mqtt_fault}
        if self._h is not None:
            r["heat_check"] = {"why": self.heat_why, "mismatch": self.mismatch,
                               "resets": self.heat_resets}
        return r

    # -- the control path ------------------------------------------------------------------

    def tick(self, now):
        """Every control tick (heatgw.app, after the fail-safe): take new readings, mark
        the windows where the source is stale; close an interval when due (without
        telemetry; with it, heatgw.telemetry calls close() at its record)."""
        if self._c is not None:
            m = self._cm
            if m is not None:
                i = self._ie if self._ie >= 0 else self._ip
                t = m.valid[i]
                if t is not None and t != self._ct:
                    self._ct = t
                    if m.why[i] is None:
                        self._compute(now, t, m.vals[self._ie] if self._ie >= 0 else None,
                                      m.vals[self._ip] if self._ip >= 0 else None)
            else:
                t = self._mt
                if t is not None and t != self._ct:
                    self._ct = t
                    self._compute(now, t, None, self._mw)
            t = self._cpt
            if t is not None and clock.ticks_diff(now, t) > self._stale_ms:
                self._gap = True
                if self._iv_why is None:
                    self._iv_why = "stale"
                if self._hr_why is None:
                    self._hr_why = "stale"
        if self._h is not None:
            m = self._hm
            t = m.valid[self._hi]
            if t is not None and t != self._ht:
                self._ht = t
                if m.why[self._hi] is None:
                    self._heat_check(now, t, m.vals[self._hi])
        if self.auto:
            if self._due is None:
                self._due = clock.ticks_add(now, self.interval_ms)
            elif clock.ticks_diff(now, self._due) >= 0:
                self._due = clock.ticks_add(self._due, self.interval_ms)
                if clock.ticks_diff(self._due, now) <= 0:
                    self._due = clock.ticks_add(now, self.interval_ms)
                self.close(now)

    def _heat(self, out):
        """Our heat total, floor(nJ / 3.6e9) mWh, into out[0:2], and our error time (ms)
        into out[2:4]; the meter flushed first. No allocation."""
        m = self._meter
        m.flush()
        st = m._st  # the kernel's state words: read, never written, here
        h = self._hv
        for j in range(3):  # MSB first, two 15-bit halves per limb
            v = st[_k.ST_E0 + 2 - j]
            h[2 * j] = v >> 15
            h[2 * j + 1] = v & 0x7FFF
        for d in _MWH_DIV:
            r = 0
            for j in range(6):
                x = (r << 15) | h[j]
                q = x // d
                h[j] = q
                r = x - q * d
        out[0] = (h[4] << 15) | h[5]
        out[1] = (h[2] << 15) | h[3]
        out[2] = st[_k.ST_ERR0]
        out[3] = st[_k.ST_ERR1]

    def _compute(self, now, t, e, p):
        """A new compute reading (taken at ticks t, seen at now): energy e (kWh) or None,
        power p (W) or None. Pairs it with the previous one (module doc)."""
        q = self._q
        self._heat(q)
        pt = self._cpt
        d = None  # the pair's electric energy, mWh
        integrated = False
        why = None
        gap = self._gap
        up = self._gw.uptime_ms
        if pt is not None:
            span = clock.ticks_diff(t, pt)
            if gap:  # ticks_diff reaches 6.2 days: a long gap is measured in uptime
                span = up - self._gap_up
            if span <= 0:
                why = "stale"
            elif self._ie >= 0:
                dk = e - self._ce
                if dk < 0 or dk * 3.6e9 > self._max_w * span:
                    self.resets += 1
                    why = "meter_reset"
                else:
                    d = int(dk * 1e6 + 0.5)
            elif gap or p is None or self._cp is None:
                why = "stale"  # power over a gap is unknown: nothing to integrate
            else:
                d = int((self._cp + p) * span / 7200 + 0.5)  # W·ms / 3600 = mWh
                integrated = True
        if d is not None:
            x = self.ext
            _add_big(x, X_CE, d)
            _add_diff(x, X_RH, q, 0, self._cq, 0)
            if integrated:
                x[X_FLAGS] |= FLAG_INTEGRATED
            self.pairs += 1
            if self._first_up is None:
                self._first_up = self._gap_up
            self._last_up = up
            self._pair_w = d * 3600 / span if span > 0 else None
            if gap:
                why = "stale"  # exact in the totals, but no window holds its span
            else:
                w = self._w
                for i in (_IV, _HR):
                    _add_diff(w, i, q, 0, self._cq, 0)
                    _add_big(w, i + 2, d)
                self._iv_pairs += 1
                self._hr_pairs += 1
                s = self._hr_span
                self._hr_span = (self._cobs, now) if s is None else (s[0], now)
        if why is not None and pt is not None:
            if self._iv_why is None:
                self._iv_why = why
            if self._hr_why is None:
                self._hr_why = why
        self._cpt = t
        self._ce = e
        self._cp = p
        self._cq[0] = q[0]
        self._cq[1] = q[1]
        self._gap = False
        self._gap_up = up
        self._cobs = now

    def _heat_check(self, now, t, e):
        """A new heat meter reading: compare its growth with ours over the same span."""
        q = self._q
        self._heat(q)
        hq = self._hq
        if self._hpt is not None:
            dk = e - self._he
            span = clock.ticks_diff(t, self._hpt)
            if dk < 0 or span <= 0 or dk * 3.6e9 > _HEAT_MAX_W * span:
                self.heat_resets += 1
            elif q[2] == hq[2] and q[3] == hq[3]:  # no error time in the span
                x = self.ext
                _add_big(x, X_HM, int(dk * 1e6 + 0.5))
                _add_diff(x, X_OWN, q, 0, hq, 0)
                self._judge()
        self._hpt = t
        self._he = e
        for i in range(4):
            hq[i] = q[i]

    def _judge(self):
        x = self.ext
        own = _f(x, X_OWN)
        theirs = _f(x, X_HM)
        self.heat_why = None if own > 0 else "no_data"
        lim = self._h["limit_pct"]
        floor = self._h["min_kwh"] * 1e6
        if lim is None or own <= 0 or own < floor or theirs < floor:
            return
        pct = (theirs - own) * 100 / own
        bad = pct > lim or -pct > lim
        if bad != self.mismatch:
            self.mismatch = bad
            self._gw.event({"kind": "heat_check", "state": "mismatch" if bad else "ok",
                            "meter": self._h["meter"], "diff_pct": round(pct, 2),
                            "meter_kwh": round(theirs / 1e6, 3),
                            "own_kwh": round(own / 1e6, 3), "limit_pct": lim})

    def close(self, now):
        """End a telemetry interval (every interval_s): the ratios of the interval and,
        after an hour of them, of the hour; the compute power now; into `ext`."""
        x = self.ext
        if self._c is not None:
            p, why = self._power(now)
            x[X_POWER] = INVALID if p is None else int(p + 0.5)
            self.compute_why = why
            w = self._w
            x[X_IV], self.interval_why = self._ratio(_IV, self._iv_why, self._iv_pairs)
            for i in range(4):
                w[_IV + i] = 0
            self._iv_why = None
            self._iv_pairs = 0
            self._ivs += 1
            if self._ivs >= self._per_hour:
                x[X_HR], self.hour_why = self._ratio(_HR, self._hr_why, self._hr_pairs)
                s = self._hr_span
                up = self._gw.uptime_ms
                self._gw.emit("recovery", {
                    "first_pair_ago_ms": None if self._first_up is None
                    else up - self._first_up,
                    "last_pair_ago_ms": None if self._last_up is None
                    else up - self._last_up,
                    "hour_ppm": x[X_HR], "why": self.hour_why, "pairs": self._hr_pairs,
                    "heat_mwh": _f(w, _HR), "elec_mwh": _f(w, _HR + 2),
                    "span_ago_ms": None if s is None else
                    [clock.ticks_diff(now, s[0]), clock.ticks_diff(now, s[1])],
                    "record": self.record()})
                for i in range(4):
                    w[_HR + i] = 0
                self._hr_why = None
                self._hr_pairs = 0
                self._hr_span = None
                self._ivs = 0

    def _ratio(self, i, why, pairs):
        if why is not None:
            return INVALID, why
        if not pairs:
            return INVALID, "not_ready" if self._cpt is None or not self.pairs \
                else "no_reading"
        w = self._w
        e = _f(w, i + 2)
        if e <= 0:
            return INVALID, "no_energy"
        r = _ppm(_f(w, i), e)
        return r, None if r != INVALID else "implausible"

    def _power(self, now):
        """(the compute power now, W, or None; why not)."""
        m = self._cm
        if m is not None and self._ip >= 0:
            t = m.valid[self._ip]
            why = m.why[self._ip]
            if why is not None:
                return None, why
            if t is None:
                return None, "not_ready"
            if clock.ticks_diff(now, t) > self._stale_ms:
                return None, "stale"
            return m.vals[self._ip], None
        t = self._cpt if m is not None else self._mt
        if t is None:
            return None, "not_ready"
        if clock.ticks_diff(now, t) > self._stale_ms:
            return None, "stale"
        if m is not None:  # an energy register only: the last pair's mean power
            return (None, "not_ready") if self._pair_w is None else (self._pair_w, None)
        return self._mw, None

    # -- the MQTT source ---------------------------------------------------------------

    def mqtt_in(self, msg, now):
        """The telemetry client's callback (its reader task): copy only."""
        self.mqtt_received += 1
        n = len(msg)
        if n > len(self._mbuf):
            self._fault("too_large", now)
            return
        if self.mqtt_pending:
            self.mqtt_skipped += 1
        self._mbuf[:n] = msg
        self._mn = n
        self._marr = now
        self.mqtt_pending = True

    def mqtt_parse(self, now):
        """The mqtt task: the newest message, at most once a second (module doc)."""
        if not self.mqtt_pending or (self._mlast is not None and
                                     clock.ticks_diff(now, self._mlast) < _PARSE_GAP_MS):
            return
        import json

        self.mqtt_pending = False
        self._mlast = now
        try:
            v = json.loads(bytes(memoryview(self._mbuf)[:self._mn]))
        except Exception:  # noqa: BLE001 - ValueError, a bad UTF-8 sequence: all the same
            self._fault("bad_json", now)
            return
        for part in self._path:
            if type(v) is dict and part in v:
                v = v[part]
            elif type(v) is list and part.isdigit() and int(part) < len(v):
                v = v[int(part)]
            else:
                self._fault("no_path", now)
                return
        if type(v) is not int and type(v) is not float:  # bool, str, null, an object
            self._fault("not_number", now)
            return
        w = v * self._c["scale"]
        if not w == w or w < 0 or w > self._max_w:
            self._fault("bad_value", now)
            return
        self._mw = w
        self._mt = self._marr

    def _fault(self, name, now):
        self.mqtt_faults += 1
        self.mqtt_fault = name
        if self._mev_ms is None or clock.ticks_diff(now, self._mev_ms) >= _EVENT_GAP_MS:
            self._mev_ms = now
            self._gw.event({"kind": "compute", "source": "mqtt", "fault": name,
                            "faults": self.mqtt_faults})

    # -- the telemetry payload ---------------------------------------------------------

    def write(self, w, x, live):
        """The recovery keys of a telemetry payload (payloads.Writer w, before its closing
        brace) from x: `ext` for the live record, a queue record's "ext" for one from the
        backlog (which keeps values but not reasons: "invalid")."""
        if self._c is not None:
            _value(w, b',"compute_w":', b',"compute_why":', x[X_POWER],
                   self.compute_why if live else "invalid")
            w.raw(b',"compute_energy_wh":')
            w.exact(x, X_CE, 2, (), 3)
            w.raw(b',"compute_energy_integrated":')
            w.bool(x[X_FLAGS] & FLAG_INTEGRATED)
            _ratio_key(w, b',"ratio_interval":', b',"ratio_interval_why":', x[X_IV],
                       self.interval_why if live else "invalid")
            _ratio_key(w, b',"ratio_hour":', b',"ratio_hour_why":', x[X_HR],
                       self.hour_why if live else "invalid")
            e = _f(x, X_CE)
            r = _ppm(_f(x, X_RH), e) if e > 0 else INVALID
            _ratio_key(w, b',"ratio_total":', b',"ratio_total_why":', r,
                       "no_energy" if e <= 0 else "implausible")
            w.raw(b',"ratio_heat_wh":')
            w.exact(x, X_RH, 2, (), 3)
        if self._h is not None:
            w.raw(b',"heat_meter_wh":')
            w.exact(x, X_HM, 2, (), 3)
            own = _f(x, X_OWN)
            d = _f(x, X_HM) - own
            w.raw(b',"heat_meter_diff_kwh":')
            if own > 0:
                w.fixed(d / 1e6, 3)
                w.raw(b',"heat_meter_diff_pct":')
                w.fixed(d * 100 / own, 2)
                w.raw(b',"heat_meter_why":null')
            else:
                w.raw(b'null,"heat_meter_diff_pct":null,"heat_meter_why":"no_data"')


def _value(w, key, why_key, v, why):
    # key, why_key: b',"<name>":'; a valid int beside a null reason, or null beside one
    w.raw(key)
    if v == INVALID:
        w.raw(b"null")
        w.raw(why_key)
        w.str(why or "invalid")
    else:
        w.raw(b"%d" % v)
        w.raw(why_key)
        w.raw(b"null")


def _ratio_key(w, key, why_key, ppm, why):
    # a ratio from its ppm, to 4 decimals (rounded)
    if ppm == INVALID:
        _value(w, key, why_key, ppm, why)
        return
    r4 = (ppm + 50) // 100
    w.raw(key)
    w.raw(b"%d.%04d" % (r4 // 10000, r4 % 10000))
    w.raw(why_key)
    w.raw(b"null")
