"""Sensor calibration: the three methods, the calibration file, what each sensor applies.

Loaded on demand and dropped again: by heatgw.start at boot when calibration.json exists,
by the console's `calibrate` (through heatgw.calprocedure) and `sensors` (describe()).
The running node keeps only what each sensor applies (set_trim(): rtd.TemperatureSensor's
`trim`, `cal` and the offset of its reading).

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

A method works on averaged raw codes (mean_code() of a capture the sensor filled), checks
that the readings are stable and plausible, refuses nonsense with a ValueError that says
what is wrong, and returns its result. The two-point result is a gain and an offset in
the temperature domain (what the technician checks against the reference); it is applied
as the equivalent resistance-domain line through its two points, so that stages 1 and 2
are one small-int trim of the code (rtd.trim_code): on the targets every
float is a heap object, and a calibrated reading must cost no more than an uncalibrated
one. Callendar-Van Dusen's curvature makes the two differ by < 0.3 mK between the points
and < 2.5 mK from 0 to 100 °C for a class B sensor calibrated at 30 and 60 °C
(tests/test_calibration.py); a real element's deviation (its R0 and α) is a line in the
resistance domain, which this form follows exactly.

The file (calibration.json in the board's data directory, beside config.json: a factory
reset removes it, a configuration change keeps it) holds each sensor's entries, each with
its method, date, the references and readings it was computed from and its result. It is
written whole to calibration.json.new, then renamed over the old one (atomic on
littlefs). Loading recomputes every result from its references and readings and refuses
an entry whose stored result disagrees (a corrupted digit), or that was made with
another R0, wiring or reference resistor than the sensor now has.
"""

import json
import os

from heatgw import rtd

FILE = "calibration.json"
V = 1
CHANNEL = "channel"
TWO_POINT = "two_point"
PAIR = "pair"
METHODS = (CHANNEL, TWO_POINT, PAIR)  # the order of the chain

N_MIN = 4  # conversions averaged per point
N_MAX = 1000  # the sum of the codes stays below 2**30 (32767 * 1000)
SPREAD_MAX_LSB = 4  # max - min code of a stable point (4 LSB = 0.52 ohm at 4300 ohm)
PLAUSIBLE = 0.02  # a channel point reads within 2 % of the stated resistor
CH_SPAN_MIN = 0.2  # the two resistors at least 0.2 R0 apart (200 ohm on a PT1000)
GAIN_MAX = 0.01  # |gain - 1| of a method
TP_SPAN_MIN_K = 10.0
TP_DEV_MAX_K = 3.0  # a two-point reading within 3 K of its reference
REF_MIN_C = -50.0  # a reference thermometer's point (°C)
REF_MAX_C = 200.0
PAIR_MAX_K = 2.5
# A stored result matches its recomputation within these (float32 prints ~7 digits).
_TOL_GAIN = 1e-5
_TOL_OHM = 5e-3
_TOL_K = 2e-3


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


def check_resistor(r0_ohm, r_ref_ohm, ref_ohm):
    """ValueError unless `ref_ohm` can be a precision resistor for this channel."""
    hi = min(3 * r0_ohm, 0.95 * r_ref_ohm)
    if not 0.5 * r0_ohm <= ref_ohm <= hi:  # also False for NaN
        raise ValueError("a %.1f ohm resistor does not suit this channel: use %d..%d ohm"
                         % (ref_ohm, r0_ohm // 2, int(hi)))


def channel_point(r0_ohm, r_ref_ohm, ref_ohm, read_ohm):
    """ValueError unless the channel reads `read_ohm` plausibly for `ref_ohm`."""
    check_resistor(r0_ohm, r_ref_ohm, ref_ohm)
    dev = (read_ohm - ref_ohm) / ref_ohm
    if not -PLAUSIBLE <= dev <= PLAUSIBLE:
        raise ValueError("reads %.2f ohm with %.1f ohm stated (%+.1f %%, at most %.0f %%): "
                         "another resistor, or none fitted?"
                         % (read_ohm, ref_ohm, 100 * dev, 100 * PLAUSIBLE))


def channel(r0_ohm, r_ref_ohm, ref_ohm, read_ohm):
    """(gain, offset_ohm) of a channel: the line through (read, stated) of both precision
    resistors, R = gain * R_raw + offset (R_raw from the averaged code, nominal Rref)."""
    (r1, r2), (m1, m2) = ref_ohm, read_ohm
    channel_point(r0_ohm, r_ref_ohm, r1, m1)
    channel_point(r0_ohm, r_ref_ohm, r2, m2)
    if not abs(r2 - r1) >= CH_SPAN_MIN * r0_ohm:
        raise ValueError("the resistors are %.1f ohm apart: at least %d ohm (e.g. 1000.0 "
                         "and 1385.0 on a PT1000)" % (abs(r2 - r1), int(CH_SPAN_MIN * r0_ohm)))
    gain = (r2 - r1) / (m2 - m1)
    offset = r1 - gain * m1
    if not abs(gain - 1.0) <= GAIN_MAX:
        raise ValueError("gain %.5f is beyond 1 ± %g: not a reference resistor "
                         "tolerance; check the resistors and the board" % (gain, GAIN_MAX))
    return gain, offset


def two_point_point(ref_c, read_c):
    """ValueError unless a sensor reading `read_c` at a reference `ref_c` is plausible."""
    if not REF_MIN_C <= ref_c <= REF_MAX_C:
        raise ValueError("reference %.2f C outside %d..%d C" % (ref_c, REF_MIN_C, REF_MAX_C))
    if not abs(read_c - ref_c) <= TP_DEV_MAX_K:
        raise ValueError("reads %.2f C against the reference %.3f C (%.2f K apart, at most "
                         "%g): not in the bath, or not this sensor?"
                         % (read_c, ref_c, read_c - ref_c, TP_DEV_MAX_K))


def two_point(ref_c, read_c):
    """(gain, offset_k): T = gain * T_read + offset maps both readings onto their
    references (the temperature domain)."""
    (r1, r2), (m1, m2) = ref_c, read_c
    two_point_point(r1, m1)
    two_point_point(r2, m2)
    if not abs(r2 - r1) >= TP_SPAN_MIN_K:
        raise ValueError("the points are %.2f K apart: at least %g K"
                         % (abs(r2 - r1), TP_SPAN_MIN_K))
    gain = (r2 - r1) / (m2 - m1)
    if not abs(gain - 1.0) <= GAIN_MAX:
        raise ValueError("gain %.5f is beyond 1 ± %g: not a sensor class tolerance"
                         % (gain, GAIN_MAX))
    return gain, r1 - gain * m1


def two_point_ohm(r0_ohm, ref_c, read_c):
    """The two-point correction as applied: (gain, offset_ohm) of the resistance line
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

GAIN_TRIM_MAX = 0.03  # |gain - 1| of the composed trim: keeps rtd.trim_code in 31 bits


def set_trim(sensor, gain=1.0, offset_ohm=0.0, pair_k=0.0, info=None):
    """Make `sensor` (rtd.TemperatureSensor) apply R = gain * R_raw + offset_ohm before
    Callendar-Van Dusen and pair_k (K) after it; `info` is what its state shows
    (info()); no arguments: uncalibrated. ValueError, nothing changed, for a gain beyond
    ±3 %, an offset beyond ±5 % of R0, |pair_k| > 5 K, or a converter without
    read_code()."""
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


# -- a sensor's chain --------------------------------------------------------------------

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


def reading_c(r0_ohm, r_ref_ohm, entries, code, before=None):
    """What the sensor reads (°C, without the configuration's offset_k) for an averaged
    `code` through its stages before the method `before` (None: all of them)."""
    r = code * r_ref_ohm / 32768
    if before != CHANNEL:
        e = entries.get(CHANNEL)
        if e:
            r = e["gain"] * r + e["offset_ohm"]
        if before != TWO_POINT:
            e = entries.get(TWO_POINT)
            if e:
                g, o = two_point_ohm(r0_ohm, e["ref_c"], e["read_c"])
                r = g * r + o
    t = rtd.temp_c(r, r0_ohm)
    if before is None:
        e = entries.get(PAIR)
        if e:
            t += e["offset_k"]
    return t


def _close(a, b, tol, what):
    if not abs(a - b) <= tol:
        raise ValueError("%s %r does not match its readings (%r): corrupted?" % (what, a, b))


def _two(v):
    if type(v) is not list or len(v) != 2:
        raise ValueError("not a pair of numbers")
    return float(v[0]), float(v[1])


def check(sensor, entries):
    """The entries of one sensor if every one is sound for it: recomputed from its
    references and readings, made with the sensor's R0, wiring and reference resistor,
    a pair's reference sensor named. ValueError otherwise (why)."""
    if type(entries) is not dict:
        raise ValueError("malformed entry")
    adc = sensor.adc
    r0 = sensor.r0_ohm
    for m, e in entries.items():
        if m not in METHODS or type(e) is not dict or e.get("method") != m:
            raise ValueError("malformed entry %r" % (m,))
    try:
        e = entries.get(CHANNEL)
        if e:
            for k in ("r0_ohm", "wires", "r_ref_ohm"):
                now = getattr(adc, k, None)
                if e[k] != now:
                    raise ValueError("channel made with %s %r, now %r: calibrate it again"
                                     % (k, e[k], now))
            g, o = channel(r0, adc.r_ref_ohm, _two(e["ref_ohm"]), _two(e["read_ohm"]))
            _close(e["gain"], g, _TOL_GAIN, "channel gain")
            _close(e["offset_ohm"], o, _TOL_OHM, "channel offset")
        e = entries.get(TWO_POINT)
        if e:
            g, o = two_point(_two(e["ref_c"]), _two(e["read_c"]))
            _close(e["gain"], g, _TOL_GAIN, "two-point gain")
            _close(e["offset_k"], o, _TOL_K, "two-point offset")
        e = entries.get(PAIR)
        if e:
            if type(e["with"]) is not str:
                raise ValueError("pair without its reference sensor")
            ref, read = _two(e["read_c"])
            _close(e["offset_k"], pair(ref, read), _TOL_K, "pair offset")
    except (KeyError, TypeError, AttributeError) as x:
        raise ValueError("malformed entry (%r)" % (x,)) from None
    return entries


def info(entries, gain, offset_ohm, pair_k):
    """What a sensor's state shows: (methods, utc, boot, gain, offset_ohm, pair_k), utc
    and boot of its newest entry (utc None when the clock was not set then)."""
    methods = tuple(m for m in METHODS if m in entries)
    newest = None
    for m in methods:
        d = entries[m].get("date") or {}
        key = (d.get("boot") or 0, d.get("up_s") or 0)
        if newest is None or key >= newest[0]:
            newest = (key, d)
    d = newest[1] if newest else {}
    utc = d.get("utc")
    return (methods, utc if type(utc) is int else None, d.get("boot") or 0, gain,
            offset_ohm, pair_k)


def apply(sensors, doc):
    """Set every configured sensor's trim from the file's document (a sensor without
    entries, or whose entries are refused, is uncalibrated). Returns (the names
    calibrated, ["name: why", ...] for what was not applied)."""
    done, errors = [], []
    table = doc.get("sensors") or {}
    for name, s in sensors.items():
        entries = table.get(name)
        if not entries:
            set_trim(s)
            continue
        try:
            check(s, entries)
            p = entries.get(PAIR)
            if p and p["with"] not in sensors:
                raise ValueError("pair reference %r is not configured" % (p["with"],))
            g, o, k = compose(s.r0_ohm, entries)
            set_trim(s, g, o, k, info(entries, g, o, k))
            done.append(name)
        except ValueError as e:
            set_trim(s)
            errors.append("%s: %s" % (name, e))
    for name in table:
        if name not in sensors:
            errors.append("%s: not configured (kept in the file)" % name)
    return done, errors


def record(doc, name, entry):
    """Put a new entry of sensor `name` into the document, dropping what it invalidates
    (those were measured through what it replaces): the sensor's later stages, and every
    other sensor's pair that refers to it. Returns the dropped ["name.method", ...]."""
    table = doc["sensors"]
    mine = table.get(name) or {}
    method = entry["method"]
    dropped = []
    for m in METHODS[METHODS.index(method) + 1:]:
        if m in mine:
            del mine[m]
            dropped.append(name + "." + m)
    mine[method] = entry
    table[name] = mine
    for other, ent in table.items():
        p = ent.get(PAIR)
        if other != name and p and p.get("with") == name:
            del ent[PAIR]
            dropped.append(other + "." + PAIR)
    return dropped


def remove(doc, name):
    """Drop every entry of sensor `name` and every pair that refers to it."""
    table = doc["sensors"]
    dropped = [name + "." + m for m in (table.pop(name, None) or ())]
    for other, ent in table.items():
        p = ent.get(PAIR)
        if p and p.get("with") == name:
            del ent[PAIR]
            dropped.append(other + "." + PAIR)
    return dropped


# -- dates -------------------------------------------------------------------------------

def stamp(utc, boot, up_s):
    """An entry's date: UTC seconds when the clock is set (else None), boot id, uptime."""
    return {"utc": None if utc is None else int(utc), "boot": boot, "up_s": up_s}


def date_text(d):
    """"2026-09-21 10:00Z", or "boot 3 + 1234 s" when the clock was not set."""
    utc = d.get("utc")
    if type(utc) is not int:
        return "boot %s + %s s" % (d.get("boot"), d.get("up_s"))
    days, s = divmod(utc, 86400)
    # civil date from days since 1970-01-01 (H. Hinnant's algorithm): no time module,
    # whose epoch is 2000 on some ports
    z = days + 719468
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    day = doy - (153 * mp + 2) // 5 + 1
    month = mp + 3 if mp < 10 else mp - 9
    year = yoe + era * 400 + (1 if month <= 2 else 0)
    return "%04d-%02d-%02d %02d:%02dZ" % (year, month, day, s // 3600, s // 60 % 60)


# -- the file ----------------------------------------------------------------------------

def path(data_dir):
    return data_dir + "/" + FILE


def empty():
    return {"v": V, "sensors": {}}


def load(data_dir):
    """The file's document ({"v": 1, "sensors": {}} when there is none). ValueError when
    it cannot be read or is not a calibration file."""
    try:
        f = open(path(data_dir))
    except OSError:
        return empty()
    try:
        doc = json.load(f)
    except (ValueError, OSError) as e:
        raise ValueError("%s unreadable: %r" % (FILE, e)) from None
    finally:
        f.close()
    if type(doc) is not dict or doc.get("v") != V or type(doc.get("sensors")) is not dict:
        raise ValueError("%s is not a version %d calibration file" % (FILE, V))
    for entries in doc["sensors"].values():
        if type(entries) is not dict:
            raise ValueError("%s is not a version %d calibration file" % (FILE, V))
    return doc


def save(data_dir, doc):
    """Write the document atomically: a new file, then renamed over the old one (a power
    cut leaves the old file or the new one, never a torn one)."""
    p = path(data_dir)
    tmp = p + ".new"
    f = open(tmp, "w")
    try:
        json.dump(doc, f)
    finally:
        f.close()
    os.rename(tmp, p)


def apply_file(sensors, data_dir):
    """At boot: apply the file to the sensors; the event to log (None: no file)."""
    try:
        os.stat(path(data_dir))
    except OSError:
        return None
    try:
        doc = load(data_dir)
    except ValueError as e:
        for s in sensors.values():
            set_trim(s)
        return {"kind": "calibration", "result": "unreadable", "error": str(e)[:80]}
    done, errors = apply(sensors, doc)
    return {"kind": "calibration", "result": "loaded", "sensors": done,
            "errors": [x[:80] for x in errors[:4]]}


# -- the console's `sensors` -------------------------------------------------------------

def _f(v, fmt):
    return fmt % v if type(v) in (int, float) else "?"


def describe(name, data_dir=None, sensor=None):
    """Lines for the console's `sensors`: each calibration of sensor `name` in the file
    (method, date, references, readings, result), then what the sensor applies when
    `sensor` (its TemperatureSensor) is given."""
    if data_dir is None:
        import board

        data_dir = board.data_dir()
    try:
        entries = load(data_dir)["sensors"].get(name) or {}
    except ValueError as e:
        return ["%s: calibration file: %s" % (name, e)]
    out = []
    for m in METHODS:
        e = entries.get(m)
        if type(e) is not dict:
            continue
        head = "%s: %s %s, n %s, " % (name, m, date_text(e.get("date") or {}), e.get("n"))
        try:
            if m == CHANNEL:
                out.append(head + "%s/%s ohm read %s/%s ohm: gain %s, offset %s ohm" % (
                    _f(e["ref_ohm"][0], "%.3f"), _f(e["ref_ohm"][1], "%.3f"),
                    _f(e["read_ohm"][0], "%.3f"), _f(e["read_ohm"][1], "%.3f"),
                    _f(e["gain"], "%.6f"), _f(e["offset_ohm"], "%+.3f")))
            elif m == TWO_POINT:
                out.append(head + "ref %s/%s C read %s/%s C: gain %s, offset %s K" % (
                    _f(e["ref_c"][0], "%.3f"), _f(e["ref_c"][1], "%.3f"),
                    _f(e["read_c"][0], "%.3f"), _f(e["read_c"][1], "%.3f"),
                    _f(e["gain"], "%.6f"), _f(e["offset_k"], "%+.3f")))
            else:
                out.append(head + "with %s, read %s/%s C: offset %s K" % (
                    e["with"], _f(e["read_c"][0], "%.3f"), _f(e["read_c"][1], "%.3f"),
                    _f(e["offset_k"], "%+.3f")))
        except (KeyError, IndexError, TypeError):
            out.append(head + "malformed")
    if sensor is not None:
        c = sensor.cal
        if c is None:
            out.append("%s: not calibrated%s" % (name, " (the file's entries are not "
                                                  "applied)" if entries else ""))
        else:
            out.append("%s: applied %s: R = %.6f R_raw %+.3f ohm, %+.3f K"
                       % (name, ",".join(c[0]), c[3], c[4], c[5]))
        if sensor.offset_k:
            out.append("%s: configuration offset_k %+.3f K on top" % (name, sensor.offset_k))
    elif not out:
        out.append("%s: not calibrated" % name)
    return out
