"""Heat meter (EN 1434 style): plain-Python front end of the viper kernel.

    m = HeatMeter(fluid.water(), meter_in_return=True, cutoff_k=0.1)
    m.add(supply_mc, return_mc, vol_ul, dt_ms)    # once per sample, allocation-free
    m.energy_wh, m.volume_l, m.totals()             # exact integers, flushed first

Samples are staged in a preallocated batch; `heatgw.meterkernel.integrate` runs
when the batch is full, on `flush()`, and before any total is read, so totals are
always up to date. `batch_len` only bounds how much work one kernel call does
(a few µs per sample with viper on the targets, so the default 16 keeps a flush well
under a millisecond): nothing safety-related waits on a batch, the fail-safe reads
temperatures itself.

Temperatures are integers in milli-°C; `None` or INVALID (or anything below
absolute zero or at/above ~1.07e6 °C) means "no valid reading" and counts as error
time. Volume increments are integers in µL, tick deltas integers in ms (from
ticks_diff); increments larger than the kernel's per-sample contract are split
into several samples, negative ones raise ValueError.

Units: exact totals are integers in nJ, µL and ms. `energy_wh`, `volume_l` and the
`*_time_s` values are integers rounded down (what a meter display shows);
`energy_kwh` and `volume_m3` are floats for display only (single precision on the
targets: never accumulate them).
"""

from array import array

from micropython import const

from heatgw import meterkernel as _k

# m°C sentinel for a missing reading (None works too): far below absolute zero, yet a
# 31-bit small int with room to spare, so nothing on the sampling path allocates on a
# 32-bit target (-0x40000000 would be a long int there: its literal is 2**30).
INVALID = -0x20000000

_CODE_MAX = const(0x3FFFFFFF)  # temperature codes (mK absolute) stay below 2**30 (small ints)
# Valid m°C readings: code = t + K_OFFSET_MC in [1, _CODE_MAX]. _code() compares before it
# adds, so no sum leaves the small-int range whatever small int it is given.
_T_MIN_MC = 1 - _k.K_OFFSET_MC
_T_MAX_MC = _CODE_MAX - _k.K_OFFSET_MC
_E_LIMIT = const(1 << 90)  # energy capacity, nJ (top limb < 2**30)
_L_LIMIT = const(1 << 60)  # volume (µL) and time (ms) capacity
_NJ_PER_WH = const(3_600_000_000_000)
_M30 = const(0x3FFFFFFF)

# totals() keys, in the kernel state's order from ST_E0 (ST_E0, ST_V0, ST_TIME0, ST_ERR0,
# ST_LOW0, ST_NEG0): energy 3 limbs, each other 2 (_first: where total i starts)
_TOTALS = ("energy_nj", "volume_ul", "time_ms", "error_ms", "low_dt_ms", "negative_dt_ms")


def _first(i):
    return _k.ST_E0 if i == 0 else _k.ST_E0 + 1 + 2 * i

# Totals read as attributes (HeatMeter.__getattr__), rounded down:
# name, first limb, limb count, unit divisor
_READ_AS = (
    "energy_nj", _k.ST_E0, 3, 1,
    "energy_j", _k.ST_E0, 3, 1_000_000_000,
    "energy_wh", _k.ST_E0, 3, _NJ_PER_WH,
    "volume_ul", _k.ST_V0, 2, 1,
    "volume_l", _k.ST_V0, 2, 1_000_000,
    "time_s", _k.ST_TIME0, 2, 1000,
    "error_time_s", _k.ST_ERR0, 2, 1000,
    "low_dt_time_s", _k.ST_LOW0, 2, 1000,
    "negative_dt_time_s", _k.ST_NEG0, 2, 1000,
)

FLAG_NEGATIVE = _k.FLAG_NEGATIVE
FLAG_FAULT = _k.FLAG_FAULT
FLAG_RANGE = _k.FLAG_RANGE
FLAG_LOW = _k.FLAG_LOW
FLAG_ENERGY = _k.FLAG_ENERGY


def c_to_mc(value_c):
    """°C (float) -> integer m°C, rounded half away from zero; None stays None."""
    if value_c is None:
        return None
    v = value_c * 1000
    return int(v + 0.5) if v >= 0 else -int(0.5 - v)


def _code(t_mc):
    if t_mc is None or t_mc < _T_MIN_MC or t_mc > _T_MAX_MC:
        return _k.INVALID
    return t_mc + _k.K_OFFSET_MC


class HeatMeter:
    """Integrates heat, volume and error/low-ΔΘ/negative-ΔΘ time from samples.

    table: a heatgw.fluid FluidTable (t0_mc, STEP_SHIFT 9, n, h_q64, rho_q32,
        t_min_mc, t_max_mc); checked against the kernel's contract (heatgw.metertable).
    meter_in_return: True if the volume sensor sits in the return (cold) pipe,
        False for the flow (hot) pipe. Required: it changes k by 1-7 %.
    cutoff_k: ΔΘ below this (K, > 0) integrates no energy and counts as low-ΔΘ time.
    t_min_c, t_max_c: configured valid temperature range (°C); the effective range
        is its intersection with the table's. Readings outside count as error time.
    batch_len: samples per kernel call (1..4096).
    """

    # (pass all but the table by keyword; not keyword-only: the defaults then take a
    # tuple, not a dict)
    def __init__(self, table, meter_in_return, cutoff_k, t_min_c=None, t_max_c=None,
                 batch_len=16):
        # checked and built once (heatgw.metertable), then dropped: the meter keeps the
        # kernel's table and its range
        from heatgw import forget, metertable

        tab, n, t0, t_min, t_max, cutoff = metertable.build(table, t_min_c, t_max_c,
                                                            cutoff_k, batch_len)
        forget("metertable")
        self._tab = tab
        st = array("i", [0] * _k.STATE_WORDS)
        st[_k.ST_T0] = t0 + _k.K_OFFSET_MC
        st[_k.ST_N] = n
        st[_k.ST_TMIN] = t_min + _k.K_OFFSET_MC
        st[_k.ST_TMAX] = t_max + _k.K_OFFSET_MC
        st[_k.ST_CUTOFF] = cutoff
        st[_k.ST_IN_RETURN] = 1 if meter_in_return else 0
        self._st = st
        self._buf = array("i", [0] * (_k.SAMPLE_WORDS * batch_len))
        self._cap = batch_len
        self._n = 0
        self._prev = array("i", [0] * 5)  # E0, E1, E2, TIME0, TIME1 before the last batch
        self._last = array("i", [0] * 5)  # ... and after it
        self._flags = 0
        self.last_flags = 0
        self.meter_in_return = bool(meter_in_return)
        self.cutoff_mk = cutoff
        self.t_min_mc = t_min
        self.t_max_mc = t_max
        self.batch_len = batch_len

    # -- sampling (hot path: no allocation) ------------------------------------
    def add(self, supply_mc, return_mc, vol_ul, dt_ms):
        """Stage one sample; integrates the batch when it is full."""
        if vol_ul < 0 or dt_ms < 0:
            raise ValueError("negative volume or time")
        s = _code(supply_mc)
        r = _code(return_mc)
        while vol_ul > _k.VOL_MAX_UL or dt_ms > _k.DT_MAX_MS:
            v = min(vol_ul, _k.VOL_MAX_UL)
            d = min(dt_ms, _k.DT_MAX_MS)
            self._put(s, r, v, d)
            vol_ul -= v
            dt_ms -= d
        self._put(s, r, vol_ul, dt_ms)

    def _put(self, s, r, v, d):
        b = self._buf
        j = self._n * _k.SAMPLE_WORDS
        b[j + _k.S_SUPPLY] = s
        b[j + _k.S_RETURN] = r
        b[j + _k.S_VOL] = v
        b[j + _k.S_DT] = d
        self._n += 1
        if self._n >= self._cap:
            self.flush()

    def flush(self):
        """Integrate the staged samples now; returns the batch's FLAG_* bits."""
        n = self._n
        if not n:
            return 0
        st = self._st
        p = self._prev
        q = self._last
        p[0] = st[_k.ST_E0]
        p[1] = st[_k.ST_E1]
        p[2] = st[_k.ST_E2]
        p[3] = st[_k.ST_TIME0]
        p[4] = st[_k.ST_TIME1]
        f = _k.integrate(self._buf, n, self._tab, st)
        q[0] = st[_k.ST_E0]
        q[1] = st[_k.ST_E1]
        q[2] = st[_k.ST_E2]
        q[3] = st[_k.ST_TIME0]
        q[4] = st[_k.ST_TIME1]
        self._n = 0
        self.last_flags = f
        self._flags |= f
        return f

    def take_flags(self):
        """FLAG_* bits seen since the previous call (then cleared)."""
        self.flush()
        f = self._flags
        self._flags = 0
        return f

    # -- totals -------------------------------------------------------------------
    def _total(self, first, limbs):
        st = self._st
        v = 0
        for k in range(limbs - 1, -1, -1):
            v = (v << 30) | st[first + k]
        return v

    def totals(self):
        """Exact totals as integers: energy_nj, volume_ul, time_ms, error_ms,
        low_dt_ms, negative_dt_ms. Feed the dict back to restore()."""
        self.flush()
        out = {}
        for i in range(len(_TOTALS)):
            out[_TOTALS[i]] = self._total(_first(i), 3 if i == 0 else 2)
        return out

    def restore(self, totals):
        """Load persisted totals (a dict from totals()); staged samples are kept and
        will be integrated on top. Missing time keys count as 0."""
        values = []
        for i in range(len(_TOTALS)):
            key = _TOTALS[i]
            if i < 2 and key not in totals:  # energy_nj, volume_ul
                raise ValueError("restore: missing " + key)
            v = totals.get(key, 0)
            if not isinstance(v, int) or not 0 <= v < (_E_LIMIT if i == 0 else _L_LIMIT):
                raise ValueError("restore: bad " + key)
            values.append(v)
        st = self._st
        for i in range(len(_TOTALS)):
            v = values[i]
            first = _first(i)
            for k in range(3 if i == 0 else 2):
                st[first + k] = v & _M30
                v >>= 30

    def __getattr__(self, name):
        # The read-only values, computed when read (one method, not 15 properties):
        # totals (flushed first) in _READ_AS units rounded down, energy_kwh and volume_m3
        # as floats (display only), pending samples, and the last integrated batch's
        # last_energy_nj, last_time_ms and last_power_w (mean W; None if it had no time:
        # error and low-ΔΘ time count as zero power, this is metered, not estimated).
        if name in _READ_AS:
            i = _READ_AS.index(name)
            self.flush()
            return self._total(_READ_AS[i + 1], _READ_AS[i + 2]) // _READ_AS[i + 3]
        p = self._prev
        q = self._last
        if name == "last_energy_nj":
            return (((q[2] - p[2]) << 60) + ((q[1] - p[1]) << 30)) + (q[0] - p[0])
        if name == "last_time_ms":
            return ((q[4] - p[4]) << 30) + (q[3] - p[3])
        if name == "last_power_w":
            t = self.last_time_ms
            return None if t <= 0 else (self.last_energy_nj // t) / 1e6
        if name == "energy_kwh":
            return self.energy_nj / 3.6e15
        if name == "volume_m3":
            return self.volume_ul / 1e9
        if name == "pending":  # samples staged but not yet integrated
            return self._n
        raise AttributeError(name)
