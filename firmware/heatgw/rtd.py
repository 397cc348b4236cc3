"""Platinum RTD physics (IEC 60751 / ITS-90 Callendar-Van Dusen) and a temperature sensor.

    t >= 0 °C: R = R0 (1 + A t + B t²)
    t <  0 °C: R = R0 (1 + A t + B t² + C (t - 100) t³)

Plain Python (no viper): it runs on the targets' single-precision floats and on the
host's doubles. Conversions are pure functions; `TemperatureSensor` is the only part
that touches a converter, and only through its `read()` / `read_code()` /
`clear_faults()` / `run_fault_detection()` / `init()` methods (lib/max31865 or anything
shaped like it).

Calibration (heatgw.calibration sets it, README "Calibration") is applied here, in the
one place every reading passes: a resistance-domain trim of the converter's code before
Callendar-Van Dusen, in small-int fixed point, and a temperature offset after it (folded
into the one float addition the reading already had). A calibrated reading allocates
exactly what an uncalibrated one does.
"""

try:
    from micropython import const
except ImportError:  # CPython (host tools, tests): const() is the identity on ints
    const = int

import math

A = 3.9083e-3
B = -5.775e-7
C = -4.183e-12

# IEC 60751 defines the equation from -200 to +850 °C; outside it a number is not a
# temperature, so the inverse refuses it.
T_MIN_C = -200.0
T_MAX_C = 850.0

FULL_SCALE_CODE = 32767  # MAX31865: 15-bit ratio code, R = code * Rref / 32768

OUT_OF_RANGE = "out_of_range"
CALIBRATING = "calibrating"  # the sensor is out of the pipe for a calibration

# The resistance trim (heatgw.calibration.set_trim makes it): (dq, oq, scale) with the code
# times 2**12, plus code * (gain - 1) in units of 2**-20 (dq), plus the offset in units of
# 2**-12 LSB (oq); R = trim_code(code, trim) * scale, scale = Rref / 2**27. Small ints
# only: |gain - 1| <= 3 % keeps code * dq below 32767 * 31457 = 1.03e9 < 2**30.


def trim_code(code, trim):
    """A 15-bit code with the resistance trim applied, in units of 2**-12 LSB. Allocation-
    free, within 31 bits for every code (|code * dq| <= 1.03e9, |oq| <= 6.7e6)."""
    return (code << 12) + trim[1] + ((code * trim[0] + 128) >> 8)


_NEWTON_STEPS = const(8)  # 3 are enough from the quadratic start at -200 °C; 8 is a hard bound


def _poly(t):
    # (R - R0) / R0, written as a sum of small terms: no "1 +" that would swallow
    # low-order bits in single precision.
    x = (A + B * t) * t
    if t < 0.0:
        x += C * (t - 100.0) * t * t * t
    return x


def resistance_ohm(temp_c, r0_ohm):
    """RTD resistance at `temp_c` for a sensor with R(0 °C) = `r0_ohm` (100 or 1000)."""
    return r0_ohm + r0_ohm * _poly(temp_c)


# Ratio R/R0 at the ends of the defined range, widened by 2**-20 (8 single-precision
# ulps; 0.04 mK at -200 °C, 1.3 mK at 850 °C): a resistance computed at a range end in
# float32 (by the driver, or another formula) lands a few ulps either side of these
# products and must not be refused. temp_c() clamps the result to the range.
_RATIO_MIN = (1.0 + _poly(T_MIN_C)) * (1.0 - 2.0**-20)
_RATIO_MAX = (1.0 + _poly(T_MAX_C)) * (1.0 + 2.0**-20)


def temp_c(r_ohm, r0_ohm):
    """Temperature (°C) of an RTD reading `r_ohm`; ValueError outside -200..850 °C."""
    if not (r0_ohm * _RATIO_MIN <= r_ohm <= r0_ohm * _RATIO_MAX):
        raise ValueError("RTD resistance outside -200..850 °C")
    # c = 1 - R/R0, computed as (R0 - R)/R0: by Sterbenz' lemma R0 - R is exact for
    # R0/2 <= R <= 2 R0, so near 0 °C (where it matters most) c carries only the one
    # rounding of the division instead of the cancellation of 1 - 1.000x.
    c = (r0_ohm - r_ohm) / r0_ohm
    # Root of B t² + A t + c = 0 in the rationalised form -2c / (A + sqrt(A² - 4Bc)).
    # The textbook (-A + sqrt(A² - 4Bc)) / 2B subtracts two nearly equal numbers
    # (4Bc << A²) and loses ~1 digit: in float32, 0.35 mK worst case over -50..200 °C,
    # against 0.05 mK (the float32 resolution of R itself) for this form, which only
    # adds positive numbers.
    t = -2.0 * c / (A + math.sqrt(A * A - 4.0 * B * c))
    if c <= 0.0:  # t >= 0: the quadratic is the whole equation, t is exact
        return t if t < T_MAX_C else T_MAX_C
    # Below 0 °C the C term makes it a quartic: Newton on the full equation, starting
    # from the quadratic root (already within 0.02 K at -50 °C, 2.6 K at -200 °C).
    for _ in range(_NEWTON_STEPS):
        t2 = t * t
        f = (A + B * t) * t + C * (t - 100.0) * t2 * t + c
        df = A + 2.0 * B * t + C * (4.0 * t - 300.0) * t2
        dt = f / df
        t -= dt
        if -1e-7 < dt < 1e-7:
            break
    return t if t > T_MIN_C else T_MIN_C


def code_to_ohm(code, r_ref_ohm):
    """Resistance for a MAX31865 15-bit code (RTD register >> 1) with reference `r_ref_ohm`."""
    if not 0 <= code <= FULL_SCALE_CODE:
        raise ValueError("code outside 0..32767")
    return code * r_ref_ohm / 32768


class TemperatureSensor:
    """One RTD channel: a converter, its RTD (R0 from the converter) and a calibration.

    `adc` is a MAX31865 (lib/max31865) or anything with the same `read()` contract:
    (resistance_ohm, None) or (None, reason), plus `r0_ohm`, `clear_faults()`,
    `run_fault_detection()` and `init()`. R0 comes from the converter so it is
    configured once, next to the reference resistor it is checked against.

    offset_k: a manual offset added to the converted temperature (the configuration's
    sensors.<name>.offset_k); at most ±10 K, a larger one means a wrong sensor or
    wiring, not a calibration. It comes on top of the calibration below.
    min_c / max_c: the plausible range for this measuring point; a reading outside it
    is reported as OUT_OF_RANGE, never as a number.

    Calibration (heatgw.calibration.set_trim): `trim` (R = gain * R_raw + offset_ohm
    before Callendar-Van Dusen, see trim_code), then + pair_k (in `cal`, a ΔΘ pair
    offset), then + offset_k. `capture` a list: the sensor is out of the pipe for a
    calibration (a precision resistor or a bath at its terminals) and read_c() reports
    CALIBRATING, never a number; while its wanted count (item 0) exceeds its count
    (item 1) each conversion's raw code goes into it, without allocating: [wanted, n,
    sum, min, max, faults, first fault].
    """

    trim = None  # (dq, oq, scale), or None: no resistance trim
    cal = None  # what is applied: (methods, utc, boot, gain, offset_ohm, pair_k)
    capture = None  # out of service for a calibration (see above)

    def __init__(self, adc, *, offset_k=0.0, min_c=-50.0, max_c=200.0):
        self.adc = adc
        self.r0_ohm = adc.r0_ohm
        self.set_offset_k(offset_k)
        if not (T_MIN_C <= min_c < max_c <= T_MAX_C):
            raise ValueError("min_c..max_c not in -200..850")
        self.min_c = min_c
        self.max_c = max_c

    # Faults only a fault-detection cycle can see (cable/FORCE- faults): they are not
    # re-detected by conversions, so they stay until a clean check_wiring(). (A class
    # default until the first check: four sensors need no empty list each.)
    wiring_faults = ()

    def set_offset_k(self, offset_k):
        offset_k = float(offset_k)
        if not (-10.0 <= offset_k <= 10.0):  # also False for NaN
            raise ValueError("offset_k must be within ±10 K")
        self.offset_k = offset_k
        c = self.cal
        self._off_k = offset_k + c[5] if c else offset_k  # the reading's one float add

    def start(self):
        """Start a 1-shot conversion; returns the converter's wait_ms()."""
        return self.adc.start_one_shot()

    def read_c(self):
        """(temp_c, None) or (None, reason). Never a number for a faulty sensor, nor for
        one out of the pipe for a calibration (CALIBRATING)."""
        trim = self.trim
        cap = self.capture
        raw = trim is not None or cap is not None
        # always read: a 1-shot result is consumed
        v, reason = self.adc.read_code() if raw else self.adc.read()
        if reason == "config_lost":
            self.adc.init()  # chip reset (brown-out): put the configuration back
        elif reason is not None and reason != "not_ready" and reason != "no_response":
            # Clear the latch so a healed sensor comes back by itself; a fault that
            # persists latches again on the next conversion (open, short, overvoltage)
            # or, with the converter's per-shot cycle, the next wiring check.
            self.adc.clear_faults()
        if cap is not None and reason != "not_ready":
            if cap[1] < cap[0]:
                if reason is None and not self.wiring_faults:
                    cap[1] += 1
                    cap[2] += v
                    if v < cap[3]:
                        cap[3] = v
                    if v > cap[4]:
                        cap[4] = v
                else:
                    cap[5] += 1
                    if cap[6] is None:
                        cap[6] = reason or self.wiring_faults[0]
            return None, CALIBRATING
        if self.wiring_faults:
            return None, self.wiring_faults[0]
        if reason is not None:
            return None, reason
        r_ohm = trim_code(v, trim) * trim[2] if raw else v
        if not (self.r0_ohm * _RATIO_MIN <= r_ohm <= self.r0_ohm * _RATIO_MAX):
            return None, OUT_OF_RANGE
        t = temp_c(r_ohm, self.r0_ohm) + self._off_k
        if not (self.min_c <= t <= self.max_c):
            return None, OUT_OF_RANGE
        return t, None

    def check_wiring(self):
        """Run the converter's fault-detection cycle (blocks ~1-2 ms); list of reasons.

        A non-empty result holds the sensor in fault until a later check is clean.
        For continuous mode, where conversions cannot see cable faults; in continuous
        mode the next result comes one 1-shot time (66 / 55 ms) after the check.
        """
        faults = self.adc.run_fault_detection()
        if "config_lost" in faults:
            self.adc.init()
        elif faults and "no_response" not in faults:
            self.adc.clear_faults()  # remembered here; the chip's latch is not needed
        self.wiring_faults = faults
        return faults
