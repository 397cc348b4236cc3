"""Analogue inputs: the valve's position feedback and 4-20 mA / 0-10 V inputs (loop
pressure, tank level), read through the board's ADC (lib/adcin), each a two-point
calibrated value with wire-break detection. Imported only when the configuration has an
`analog` section (heatgw.app).

    an = Analog(cfg["analog"], board)
    an.sample(gw.inputs, now)    # the sampler, every tick: allocation-free
    an.value("loop_pressure")    # (value in milli-units or None, reason or None)

Chain, per input: the ADC's reading in µV at the pin (lib/adcin: trimmed mean of
`samples` conversions) -> the signal at the terminals (4-20 mA through the board's shunt,
AIN_SHUNT_OHM; 0-10 V or 2-10 V through its divider, AIN_DIVIDER) -> the engineering
value by the two configured points (signal_lo -> value_lo, signal_hi -> value_hi; for the
valve 0 % and 100 %). Everything per tick is integer: the two-point line is folded at
construction into one fixed-point map from µV to milli-units (Linear), and values are
kept in milli-units (milli-% for the valve, mbar for bar, ...), so a reading never makes
a float or a long int on a 32-bit port.

No made-up numbers: below the wire-break limit (break_ma, default 3.6 mA: NAMUR NE 43's
failure band; break_v for a 2-10 V live zero) the value is None with reason `wire_break`,
above the over-range limit (over_ma 21.0 mA, over_v 10.5 V) `over_range`; `adc_error` when
the conversion raised, `no_channel` when the board has no such ADC channel (its input
reads nothing, ever: a critical one holds bypass), `bad_calibration` when the board's
front end makes the two points unusable (heatgw.anschema refuses such points for the
usual front end), `not_ready` before the first reading. The telemetry record keeps each
input's reading at the pin (reading()), and judge() gives its value and reason again.

The fail-safe (heatgw.failsafe) sees every input as an external reading under its name
(inputs.readings / reading_reasons / reading_valid_ms, the Modbus meters' mechanism):
a critical input's fault is `sensor_fault:<name>`; the valve's is `sensor_fault:valve`.
An input's `low` / `high` limits are the trips `input_low:<name>` / `input_high:<name>`
with hysteresis (trips()); the valve's position against the command is the stuck-valve
check (valve()). This module only measures; the control task decides.

Runs unchanged on CPython: the harness's oracle computes what the node sees with it.
"""

try:
    from micropython import const
except ImportError:  # CPython (host tools, tests): const() is the identity on ints
    const = int

VALVE = "valve"
SIGNALS = {"4-20mA": (4.0, 20.0), "0-10V": (0.0, 10.0), "2-10V": (2.0, 10.0)}
UNITS = {"pressure": ("bar", "mbar", "kPa", "psi"), "level": ("%", "m")}
FULL_MILLI = 100_000  # the valve's 100 % in milli-%
_PRE = const(6)  # µV differences are taken in 64 µV steps (0.64 µA through 100 ohm)
_G_MAX = const(8192)  # |gain| < 2**13: (4e6 >> 6) * gain < 2**29, a small int on 32-bit ports
_NO_LIMIT = const(0x3FFFFFFF)


class Linear:
    """The two-point line from a reading at the pin to milli-units, in fixed point. The
    reading is q, the pin voltage in 64 µV steps (uv + 32) >> 6 (0.64 µA through 100 ohm;
    4 V is 62 500: a u16, which the telemetry record keeps); m = m0 + ((q * g - off) >>
    k), |q * g| < 2**29: every term a small int. Built from integers only (the two points
    in µV and milli-units), so every port, and CPython, makes the same line to the bit."""

    def __init__(self, uv_lo, m_lo, uv_hi, m_hi):
        du = uv_hi - uv_lo
        dm = m_hi - m_lo
        if -64 < du < 64:
            raise ValueError("the two calibration points have the same signal")
        if dm == 0:
            raise ValueError("the two calibration points have the same value")
        k = 0
        g = _div_round(dm << _PRE, du)  # milli-units per 64 µV, k = 0
        if not -_G_MAX < g < _G_MAX:
            raise ValueError("value range too large for the signal: %d milli-units per "
                             "64 uV" % g)
        while k < 30:  # as many bits as fit: |g| in [4096, 8192)
            g2 = _div_round(dm << (_PRE + k + 1), du)
            if not -_G_MAX < g2 < _G_MAX:
                break
            g = g2
            k += 1
        self.m0 = m_lo
        self.g = g
        self.k = k
        self.off = _div_round(uv_lo * g, 1 << _PRE) - ((1 << k) >> 1)  # u0 and rounding

    def milli(self, q):
        return self.m0 + ((q * self.g - self.off) >> self.k)


def to_q(uv):
    """A pin voltage in µV as Linear's reading: 64 µV steps, rounded."""
    return (uv + 32) >> _PRE


def _div_round(n, d):
    """n / d rounded half away from zero, in integers."""
    q = (2 * abs(n) + abs(d)) // (2 * abs(d))
    return q if (n >= 0) == (d > 0) else -q


def pin_uv(signal, x, shunt_ohm, divider):
    """µV at the pin (an int) for x mA (a 4-20mA signal, through the shunt) or x V
    (through the divider (top_ohm, bottom_ohm)), from x rounded to 1 µA / 1 mV: integer
    arithmetic, the same on every port."""
    milli_x = int(round(x * 1000))
    if signal == "4-20mA":
        return milli_x * shunt_ohm  # µA x ohm
    top, bottom = divider
    return _div_round(milli_x * 1000 * bottom, top + bottom)


def signal_ends(c):
    """(signal_lo, signal_hi) of an input's config: the configured points, or the
    signal's own ends (4/20 mA, 0/10 V, 2/10 V)."""
    lo, hi = SIGNALS[c["signal"]]
    if c.get("signal_lo") is not None:
        lo = c["signal_lo"]
    if c.get("signal_hi") is not None:
        hi = c["signal_hi"]
    return lo, hi


def milli(v):
    return int(round(v * 1000))


class Channel:
    """One input: its driver, its line, its limits; value/why after each sample()."""

    def __init__(self, name, c, board, samples, m_lo, m_hi):
        self.name = name
        sig = self.signal = c["signal"]
        shunt = getattr(board, "AIN_SHUNT_OHM", 100)
        div = getattr(board, "AIN_DIVIDER", (39000, 10000))
        self._front = (shunt, div)
        lo, hi = signal_ends(c)
        self.lin = None
        try:  # heatgw.anschema.check refuses such a line; a board's odd front end may not
            self.lin = Linear(pin_uv(sig, lo, shunt, div), m_lo, pin_uv(sig, hi, shunt, div),
                              m_hi)
        except ValueError:
            pass
        cur = sig == "4-20mA"
        brk = c.get("break_ma") if cur else c.get("break_v")
        over = c.get("over_ma") if cur else c.get("over_v")
        self.break_q = -1 if brk is None else to_q(pin_uv(sig, brk, shunt, div))
        self.over_q = _NO_LIMIT if over is None else to_q(pin_uv(sig, over, shunt, div))
        self.critical = bool(c.get("critical", True))
        self.channel = c["channel"]
        self.drv = None
        self.q = None  # the last reading at the pin, 64 µV steps (to_q)
        self.value = None
        self.why = "not_ready"
        adc = None
        make = getattr(board, "adc", None)
        if make is not None:
            try:
                adc = make(self.channel)
            except ValueError:  # the board has no such channel (board.adc says so)
                pass
        if adc is None:
            self.why = "no_channel"
        elif self.lin is None:
            self.why = "bad_calibration"
        else:
            from adcin import ADCInput

            try:  # a board whose ADC has no read_uv() must give its full scale
                self.drv = ADCInput(adc, samples=samples,
                                    uv_full_scale=getattr(board, "ADC_UV_FULL_SCALE", None))
            except ValueError:
                self.why = "adc_error"

    def sample(self):
        drv = self.drv
        if drv is None:
            return
        try:
            uv = drv.read_uv()
        except OSError:
            self.value = None
            self.why = "adc_error"
            return
        q = self.q = (uv + 32) >> _PRE
        if q < self.break_q:
            self.value = None
            self.why = "wire_break"
        elif q > self.over_q:
            self.value = None
            self.why = "over_range"
        else:
            self.value = self.lin.milli(q)
            self.why = None

    def judge(self, q):
        """(milli-units or None, reason or None) of a reading q: what sample() makes of
        it (a telemetry record's reading, formatted later)."""
        if self.lin is None:
            return None, self.why
        if q < self.break_q:
            return None, "wire_break"
        if q > self.over_q:
            return None, "over_range"
        return self.lin.milli(q), None

    def signal_now(self):
        """The signal at the terminals by the last reading: mA or V (a float), or None."""
        if self.q is None:
            return None
        uv = self.q << _PRE
        shunt, (top, bottom) = self._front
        if self.signal == "4-20mA":
            return uv / (1000 * shunt)
        return uv * (top + bottom) / bottom / 1e6


class Analog:
    def __init__(self, acfg, board):
        samples = acfg.get("samples", 16)
        self.chans = []
        self.units = {}  # input name -> its unit
        self.kinds = {}
        self._limits = []
        vc = acfg.get("valve")
        self.valve_tol = None  # milli-% of commanded vs measured, when there is a valve
        if vc:
            self.chans.append(Channel(VALVE, vc, board, samples, 0, FULL_MILLI))
            self.valve_tol = milli(vc.get("tolerance_pct", 10.0))
            self.units[VALVE] = "%"
        inputs = acfg.get("inputs") or {}
        for name in sorted(inputs):
            c = inputs[name]
            self.chans.append(Channel(name, c, board, samples, milli(c["value_lo"]),
                                      milli(c["value_hi"])))
            self.units[name] = c["unit"]
            self.kinds[name] = c["kind"]
            low, high = c.get("low"), c.get("high")
            if low is None and high is None:
                continue
            hyst = c.get("hyst")
            if hyst is None:  # 2 % of the span
                hyst = abs(c["value_hi"] - c["value_lo"]) * 0.02
            self._limits.append((
                name,
                None if low is None else "input_low:" + name,
                None if low is None else milli(low),
                None if low is None else milli(low + hyst),
                None if high is None else "input_high:" + name,
                None if high is None else milli(high),
                None if high is None else milli(high - hyst)))
        self._by_name = {ch.name: ch for ch in self.chans}
        self.output = (vc or {}).get("output", "relay")
        self._vc = vc

    # -- for the fail-safe ----------------------------------------------------------------

    def names(self):
        """The inputs' names: heatgw.failsafe's external readings."""
        return tuple(ch.name for ch in self.chans)

    def critical(self, stale_ms):
        """((name, stale_ms), ...) of the critical inputs, for FailSafe(readings=...)."""
        return tuple((ch.name, stale_ms) for ch in self.chans if ch.critical)

    def trips(self):
        """The value trips, for FailSafe(input_limits=...): per input (name, low reason,
        low, low clear, high reason, high, high clear), milli-units, None where absent."""
        return tuple(self._limits)

    def valve(self):
        """(name, tolerance in milli-%) of the valve's feedback, or None."""
        return None if self.valve_tol is None else (VALVE, self.valve_tol)

    def valve_duties(self, full_v):
        """(open, closed) duty_u16 of the valve's 0-10 V command output, whose 100 %
        duty is full_v at the terminals (the board's VALVE_OUT_FULL_V)."""
        vc = self._vc or {}
        out = []
        for v in (vc.get("open_v", 10.0), vc.get("closed_v", 0.0)):
            d = int(round(v / full_v * 65535))
            out.append(0 if d < 0 else 65535 if d > 65535 else d)
        return out[0], out[1]

    # -- every tick ------------------------------------------------------------------------

    def sample(self, inputs, now):
        """Read every input into the fail-safe's tables (allocation-free)."""
        vals = inputs.readings
        whys = inputs.reading_reasons
        valid = inputs.reading_valid_ms
        for ch in self.chans:
            ch.sample()
            n = ch.name
            vals[n] = ch.value
            whys[n] = ch.why
            if ch.why is None:
                valid[n] = now

    def value(self, name):
        """(milli-units or None, reason or None) of an input's last reading."""
        ch = self._by_name[name]
        return ch.value, ch.why

    def reading(self, name):
        """An input's last reading at the pin (64 µV steps, an int < 65535: what a
        telemetry record keeps) or None while it has none (no_channel, adc_error)."""
        ch = self._by_name[name]
        return ch.q if ch.why in (None, "wire_break", "over_range") else None

    def judge(self, name, q):
        """(milli-units or None, reason or None) of a kept reading (reading()), by the
        input's present configuration: a backlog record's value and reason."""
        return self._by_name[name].judge(q)

    def record(self):
        """The `analog` record: per input its value (in its unit), reason, the signal at
        the terminals (mA or V: what a technician compares with a meter at commissioning)
        and the spread of the conversions the last reading kept (µV)."""
        out = {}
        for ch in self.chans:
            s = ch.signal_now()
            out[ch.name] = {"value": None if ch.value is None else ch.value / 1000,
                            "why": ch.why, "unit": self.units[ch.name],
                            "signal": None if s is None else round(s, 3),
                            "signal_unit": "mA" if ch.signal == "4-20mA" else "V",
                            "spread_uv": None if ch.drv is None else ch.drv.spread_uv}
        return out
