"""Sensor calibration: the methods' arithmetic, the calibration file, what sensors apply.

Loaded on demand and dropped again: by heatgw.start at boot when calibration.json exists,
by heatgw.calprocedure (the console's `calibrate`) and heatgw.calshow (its `sensors`).
The running node keeps only what each sensor applies (set_trim(): rtd.TemperatureSensor's
`trim` and `cal`, and the offset of its reading).

The chain of one sensor; every stage is optional, and they apply in this order:

    R_raw   = code * Rref / 32768          the converter, with the nominal Rref
    R       = g_c * R_raw + o_c            1. channel: two precision resistors at the
                                              sensor's terminals (the chip's reference
                                              resistor and the leads of a 2-wire sensor)
    T       = a * CVD^-1(R) + b            2. two-point against a reference thermometer
                                              (the element's deviation: its class)
    T_final = T + pair_k (+ offset_k)      3. pair: both sensors of ΔΘ in one bath; the
                                              second named gets the offset that makes it
                                              read as the first

The methods work on averaged raw codes (mean_code() of what the sensor captured), check
that the readings are stable and plausible, refuse nonsense with a ValueError that says
what is wrong, and return their result. A two-point result is a gain and an offset in
the temperature domain (what the technician checks against the reference); it is applied
as the equivalent resistance-domain line through its two points, so that stages 1 and 2
are one small-int trim of the code (rtd.trim_code): on the targets every float is a heap
object, and a calibrated reading must cost no more than an uncalibrated one. Callendar-Van
Dusen's curvature makes the two differ by < 0.3 mK between the points and < 2.5 mK from 0
to 100 °C for a class B sensor calibrated at 30 and 60 °C (tests/test_calibration.py); a
real element's deviation (its R0 and α) is a line in the resistance domain, which this
form follows exactly.

The file (calibration.json in the board's data directory, beside config.json: a factory
reset removes it, a configuration change keeps it) holds each sensor's entries, each with
its method, date, the references and readings it was computed from and its result. It is
written whole to calibration.json.new, then renamed over the old one (atomic on
littlefs). Loading recomputes every result from its references and readings and refuses
an entry whose stored result disagrees (a corrupted digit), or that was made with another
R0, wiring or reference resistor than the sensor now has.
"""

import json
import os

from heatgw import rtd

FILE = "calibration.json"
CHANNEL = "channel"
TWO_POINT = "two_point"
PAIR = "pair"
METHODS = (CHANNEL, TWO_POINT, PAIR)  # the order of the chain

N_MIN = 4  # conversions averaged per point
N_MAX = 1000  # the sum of the codes stays below 2**30 (32767 * 1000)
SPREAD_MAX_LSB = 4  # max - min code of a stable point (4 LSB = 0.52 ohm at 4300 ohm)
PLAUSIBLE = 0.02  # a channel point reads within 2 % of the stated resistor
CH_SPAN_MIN = 0.2  # the two resistors at least 0.2 R0 apart (200 ohm on a PT1000)
TP_SPAN_MIN_K = 10.0
TP_DEV_MAX_K = 3.0  # a two-point reading within 3 K of its reference
REF_MIN_C = -50.0  # a reference thermometer's point (°C)
REF_MAX_C = 200.0
GAIN_MAX = 0.01  # |gain - 1| of a method
PAIR_MAX_K = 2.5
GAIN_TRIM_MAX = 0.03  # |gain - 1| of the composed trim: keeps rtd.trim_code in 31 bits
# A stored result matches its recomputation within these (float32 prints ~7 digits).
_TOL = {"gain": 1e-5, "offset_ohm": 5e-3, "offset_k": 2e-3}


# -- the methods: pure arithmetic ----------------------------------------------------

def mean_code(cap, spread_max=SPREAD_MAX_LSB):
    """(mean code, spread in LSB) of a finished capture (the sensor's list: wanted, n,
    sum, min, max, faults, first fault). ValueError: faults, unfinished, unstable."""
    want, n, total, lo, hi, faults, why = cap
    if faults:
        raise ValueError("%d conversion(s) failed (%s): sensor open or miswired?"
                         % (faults, why))
    if n < want or n <= 0:
        raise ValueError("only %d of %d conversions" % (n, want))
    if hi - lo > spread_max:
        raise ValueError("unstable: the codes spread over %d LSB (at most %d); wait "
                         "until it settles" % (hi - lo, spread_max))
    return total / n, hi - lo


def check_ref(method, r0_ohm, r_ref_ohm, ref):
    """ValueError unless `ref` can be a point's reference: a precision resistor that suits
    the channel (channel, ohm), a reference temperature (two_point, °C)."""
    if method == CHANNEL:
        lo, hi = r0_ohm // 2, int(min(3 * r0_ohm, 0.95 * r_ref_ohm))
        what = "a %.1f ohm resistor does not suit this channel: use %d..%d ohm"
    else:
        lo, hi = REF_MIN_C, REF_MAX_C
        what = "reference %.2f C outside %d..%d C"
    if not lo <= ref <= hi:  # also False for NaN
        raise ValueError(what % (ref, lo, hi))


def point(method, r0_ohm, r_ref_ohm, ref, read):
    """ValueError unless `read` is plausible for its reference: a channel within 2 % of
    the stated resistor, a two-point within 3 K of the reference thermometer."""
    check_ref(method, r0_ohm, r_ref_ohm, ref)
    lim = PLAUSIBLE * ref if method == CHANNEL else TP_DEV_MAX_K
    if not abs(read - ref) <= lim:
        raise ValueError("reads %.3f for the reference %.3f (%+.3f, at most ±%.3g): %s"
                         % (read, ref, read - ref, lim, "another resistor, or none fitted?"
                            if method == CHANNEL else "not in the bath, or another sensor?"))


def line(method, r0_ohm, r_ref_ohm, refs, reads):
    """(gain, offset) of a channel (R = gain * R_raw + offset, ohm) or a two-point (T =
    gain * T_read + offset, °C): the line through both (reading, reference) points."""
    (r1, r2), (m1, m2) = refs, reads
    point(method, r0_ohm, r_ref_ohm, r1, m1)
    point(method, r0_ohm, r_ref_ohm, r2, m2)
    span = CH_SPAN_MIN * r0_ohm if method == CHANNEL else TP_SPAN_MIN_K
    if not abs(r2 - r1) >= span:
        raise ValueError("the points are %g apart: at least %g (e.g. 1000.0 and 1385.0 "
                         "ohm, 30 and 60 C)" % (abs(r2 - r1), span))
    gain = (r2 - r1) / (m2 - m1)
    if not abs(gain - 1.0) <= GAIN_MAX:
        raise ValueError("gain %.5f is beyond 1 ± %g: not a component tolerance; check "
                         "the references" % (gain, GAIN_MAX))
    return gain, r1 - gain * m1


def two_point_ohm(r0_ohm, ref_c, read_c):
    """A two-point correction as applied: (gain, offset_ohm) of the resistance line
    through its points, R -> R(ref) at R = R(read) (R: Callendar-Van Dusen)."""
    (r1, r2), (m1, m2) = ref_c, read_c
    a1 = rtd.resistance_ohm(r1, r0_ohm)
    b1 = rtd.resistance_ohm(m1, r0_ohm)
    gain = (rtd.resistance_ohm(r2, r0_ohm) - a1) / (rtd.resistance_ohm(m2, r0_ohm) - b1)
    return gain, a1 - gain * b1


def pair(ref_read_c, read_c):
    """offset_k of a pair: what the second sensor lacks to read as the first."""
    p = ref_read_c - read_c
    if not abs(p) <= PAIR_MAX_K:
        raise ValueError("the pair reads %.2f K apart in one bath (at most %g): both in the "
                         "same stirred bath?" % (p, PAIR_MAX_K))
    return p


# -- what a sensor applies ---------------------------------------------------------------

def compose(r0_ohm, entries):
    """(gain, offset_ohm, pair_k) that a sensor with these (checked) entries applies."""
    gain, offset = 1.0, 0.0
    e = entries.get(CHANNEL)
    if e:
        gain, offset = e["gain"], e["offset_ohm"]
    e = entries.get(TWO_POINT)
    if e:
        g, o = two_point_ohm(r0_ohm, e["ref_c"], e["read_c"])
        gain, offset = g * gain, g * offset + o
    e = entries.get(PAIR)
    return gain, offset, (e["offset_k"] if e else 0.0)


def set_trim(sensor, gain=1.0, offset_ohm=0.0, pair_k=0.0, info=None):
    """Make `sensor` (rtd.TemperatureSensor) apply R = gain * R_raw + offset_ohm before
    Callendar-Van Dusen and pair_k (K) after it; `info` is what its state shows
    ((methods, utc, boot, gain, offset_ohm, pair_k)); no arguments: uncalibrated.
    ValueError, nothing changed, for a gain beyond ±3 %, an offset beyond ±5 % of R0,
    |pair_k| > 5 K, or a converter without read_code()."""
    gain = float(gain)
    offset_ohm = float(offset_ohm)
    pair_k = float(pair_k)
    r0 = sensor.r0_ohm
    if not -GAIN_TRIM_MAX <= gain - 1.0 <= GAIN_TRIM_MAX:  # also False for NaN
        raise ValueError("trim gain %r beyond 1 ± %g" % (gain, GAIN_TRIM_MAX))
    if not -0.05 * r0 <= offset_ohm <= 0.05 * r0:
        raise ValueError("trim offset %r ohm beyond ±5 %% of R0" % offset_ohm)
    if not -5.0 <= pair_k <= 5.0:
        raise ValueError("pair offset %r K beyond ±5 K" % pair_k)
    trim = None
    if gain != 1.0 or offset_ohm != 0.0:
        adc = sensor.adc
        if not hasattr(adc, "read_code"):
            raise ValueError("the converter has no read_code(): no resistance trim")
        r_ref = adc.r_ref_ohm
        d = (gain - 1.0) * 1048576  # 2**20
        o = offset_ohm * 32768 / r_ref * 4096  # units of 2**-12 LSB
        trim = (int(d + 0.5) if d >= 0 else -int(0.5 - d),
                int(o + 0.5) if o >= 0 else -int(0.5 - o), r_ref / 134217728)  # Rref/2**27
    if info is None and pair_k:
        info = ((), None, 0, gain, offset_ohm, pair_k)
    sensor.trim = trim
    sensor.cal = info
    sensor._off_k = sensor.offset_k + pair_k  # the reading's one float addition


def _same(e, key, value, what):
    if not abs(e[key] - value) <= _TOL[key]:
        raise ValueError("%s %s %r does not match its readings (%r): corrupted?"
                         % (what, key, e[key], value))


def check(sensor, entries):
    """ValueError (why) unless every entry of a sensor is sound for it: its result
    recomputed from its references and readings, made with the sensor's R0, wiring and
    reference resistor."""
    adc = sensor.adc
    for m, e in entries.items():
        if m not in METHODS or type(e) is not dict or e.get("method") != m:
            raise ValueError("malformed entry %r" % (m,))
    try:
        e = entries.get(CHANNEL)
        if e:
            for k in ("r0_ohm", "wires", "r_ref_ohm"):
                if e[k] != getattr(adc, k, None):
                    raise ValueError("channel made with %s %r, now %r: calibrate it again"
                                     % (k, e[k], getattr(adc, k, None)))
        for m in (CHANNEL, TWO_POINT):
            e = entries.get(m)
            if e:
                unit = "_ohm" if m == CHANNEL else "_c"
                refs, reads = e["ref" + unit], e["read" + unit]
                if len(refs) != 2 or len(reads) != 2:
                    raise ValueError("malformed entry %r" % (m,))
                g, o = line(m, sensor.r0_ohm, adc.r_ref_ohm, refs, reads)
                _same(e, "gain", g, m)
                _same(e, "offset" + ("_ohm" if m == CHANNEL else "_k"), o, m)
        e = entries.get(PAIR)
        if e:
            if type(e["with"]) is not str:
                raise ValueError("pair without its reference sensor")
            _same(e, "offset_k", pair(e["read_c"][0], e["read_c"][1]), PAIR)
    except (KeyError, TypeError, AttributeError, IndexError) as x:
        raise ValueError("malformed entry (%r)" % (x,)) from None


def apply(sensors, doc):
    """Set every configured sensor's trim from the file's document (a sensor without
    entries, or whose entries are refused, is uncalibrated). Returns (the names
    calibrated, ["name: why", ...] for what was not applied)."""
    done, errors = [], []
    table = doc["sensors"]
    for name, s in sensors.items():
        entries = table.get(name)
        set_trim(s)
        if not entries:
            continue
        try:
            check(s, entries)
            p = entries.get(PAIR)
            if p and p["with"] not in sensors:
                raise ValueError("pair reference %r is not configured" % (p["with"],))
            g, o, k = compose(s.r0_ohm, entries)
            # what the state shows: the methods, and the newest entry's UTC and boot
            methods = tuple(m for m in METHODS if m in entries)
            d = max((entries[m].get("date") or {} for m in methods),
                    key=lambda d: (d.get("boot") or 0, d.get("up_s") or 0))
            utc = d.get("utc")
            set_trim(s, g, o, k, (methods, utc if type(utc) is int else None,
                                  d.get("boot") or 0, g, o, k))
            done.append(name)
        except ValueError as e:
            errors.append("%s: %s" % (name, e))
    for name in table:
        if name not in sensors:
            errors.append("%s: not configured (kept in the file)" % name)
    return done, errors


# -- the file ----------------------------------------------------------------------------

def load(data_dir):
    """The file's document ({"v": 1, "sensors": {}} when there is none). ValueError when
    it cannot be read or is not a calibration file."""
    try:
        f = open(data_dir + "/" + FILE)
    except OSError:
        return {"v": 1, "sensors": {}}
    try:
        doc = json.load(f)
    except (ValueError, OSError) as e:
        raise ValueError("%s unreadable: %r" % (FILE, e)) from None
    finally:
        f.close()
    if type(doc) is not dict or doc.get("v") != 1 or type(doc.get("sensors")) is not dict \
            or [1 for e in doc["sensors"].values() if type(e) is not dict]:
        raise ValueError("%s is not a version 1 calibration file" % FILE)
    return doc


def save(data_dir, doc):
    """Write the document atomically: a new file, then renamed over the old one (a power
    cut leaves the old file or the new one, never a torn one)."""
    p = data_dir + "/" + FILE
    f = open(p + ".new", "w")
    try:
        json.dump(doc, f)
    finally:
        f.close()
    os.rename(p + ".new", p)


def apply_file(sensors, data_dir):
    """At boot: apply the file to the sensors; the event to log (None: no file)."""
    try:
        os.stat(data_dir + "/" + FILE)
    except OSError:
        return None
    try:
        done, errors = apply(sensors, load(data_dir))
    except ValueError as e:
        for s in sensors.values():
            set_trim(s)
        return {"kind": "calibration", "result": "unreadable", "error": str(e)[:80]}
    return {"kind": "calibration", "result": "loaded", "sensors": done,
            "errors": [x[:80] for x in errors[:4]]}
