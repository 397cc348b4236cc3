"""The RTD and driver float paths in single precision, without a single-precision binary.

ESP32 and RP2040 run MicroPython with float32; the host's unix port uses doubles, so a
range check that refuses a range end computed in float32, or a formula that loses digits
to cancellation, passes every host test. Here firmware/heatgw/rtd.py and
lib/max31865/max31865.py run under CPython with every float operation rounded to
float32 (tests/float32_emul.py), over the whole range, ends included:

- rtd: -200..850 °C every 0.05 K (and the exact ends), PT1000 and PT100, from the true
  resistance rounded to float32, from rtd.resistance_ohm in float32 and from the
  "1 + A t + B t²" form in float32 (what a caller computing R itself gets);
- the driver: every code 0..32767 through MAX31865.code_to_ohm (and rtd.code_to_ohm) for
  the PT1000 (4300 Ω) and PT100 (430 Ω) references, back through ohm_to_code, and on
  through rtd.temp_c for every code inside -200..850 °C.

The metrology bound (<= 0.002 K) holds everywhere in float32 (measured figures in the
asserts' comments); the finer bound is 4 float32 ulps of R in kelvin.
"""

import math
import types

import float32_emul as fe
import pytest

from host_tools.paths import FIRMWARE, LIB

A, B, C = 3.9083e-3, -5.775e-7, -4.183e-12
EPS32 = 2.0**-23
METROLOGY_K = 0.002


def cvd(t, r0):
    """The defining equation in CPython doubles (the "true" resistance)."""
    return r0 * (1 + A * t + B * t * t + (C * (t - 100) * t**3 if t < 0 else 0))


def slope(t, r0):
    return r0 * (A + 2 * B * t + (C * (4 * t - 300) * t * t if t < 0 else 0))


def true_temp(r, r0):
    """Inverse of cvd in doubles (bisection: slow, simple, obviously right)."""
    lo, hi = -200.5, 850.5
    for _ in range(60):
        mid = (lo + hi) / 2
        if cvd(mid, r0) < r:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def ulps_k(t, r0, ulps=4):
    """`ulps` float32 ulps of R(t), in K: what R itself can carry in single precision."""
    return ulps * EPS32 * cvd(t, r0) / slope(t, r0)


@pytest.fixture(scope="module")
def rtd32():
    return fe.load(FIRMWARE / "heatgw" / "rtd.py")


@pytest.fixture(scope="module")
def drv32():
    return fe.load(LIB / "max31865" / "max31865.py")


def test_emulation_is_really_float32(rtd32):
    """Guards the emulation itself: results are float32 and differ from doubles."""
    r = fe.check_f32(rtd32["resistance_ohm"](fe.F(70.0), 1000))
    t = fe.check_f32(rtd32["temp_c"](r, 1000))
    assert float(r) != cvd(70.0, 1000) and abs(float(r) - cvd(70.0, 1000)) < fe.ulp(r)
    assert t != 70.0 or float(r) == cvd(70.0, 1000)
    assert fe.check_f32(rtd32["math"].sqrt(2)) == fe.F(1.4142135)


def _sweep_points():
    """Every 0.05 K over -200..850 °C, ends exact, each point a float32 value (so the
    sweep's own rounding of t is not counted against the conversions)."""
    pts = [float(fe.F(i / 20)) for i in range(-200 * 20, 850 * 20 + 1)]
    assert pts[0] == -200.0 and pts[-1] == 850.0
    return pts


@pytest.mark.parametrize("r0", [1000, 100])
def test_rtd_round_trip_in_float32_over_the_whole_range(rtd32, r0):
    temp_c = rtd32["temp_c"]
    fwd = rtd32["resistance_ohm"]
    F = fe.F
    worst = {"true": 0.0, "firmware": 0.0, "one_plus": 0.0}
    worst_ulps = 0.0
    fwd_worst = 0.0
    for t in _sweep_points():
        t32 = F(t)
        one_plus = F(r0) * (F(1) + F(A) * t32 + F(B) * t32 * t32 + (
            F(C) * (t32 - F(100)) * t32 * t32 * t32 if t < 0 else F(0)))
        r_fw = fe.check_f32(fwd(t32, r0))
        fwd_worst = max(fwd_worst, abs(float(r_fw) - cvd(t, r0)) / cvd(t, r0))
        for kind, r in (("true", F(cvd(t, r0))), ("firmware", r_fw), ("one_plus", one_plus)):
            # A range end computed in float32 is a temperature, never a ValueError.
            got = fe.check_f32(temp_c(r, r0))
            assert -200.0 <= got <= 850.0, (kind, t, got)
            err = abs(float(got) - t)
            worst[kind] = max(worst[kind], err)
            if kind == "true":  # R within half an ulp: the inverse's own error, in ulps
                # of R (in K) plus ulps of the result itself (which dominates near -200 °C)
                worst_ulps = max(worst_ulps, err / (ulps_k(t, r0, 1) + fe.ulp(t)))
    print(f"PT{r0} float32: worst |error| {worst}; inverse {worst_ulps:.2f} ulps of R; "
          f"forward {fwd_worst / EPS32:.2f} ulps")
    # Measured (PT1000 and PT100 alike): 0.18 mK from the true R and from the firmware's
    # own forward conversion, 0.24 mK from the "1 +" form; the inverse 1.5 ulps.
    assert max(worst.values()) <= METROLOGY_K
    assert worst_ulps <= 4
    # resistance_ohm: 5.0 ulps of R near -195 °C, where r0 + r0·x cancels (x ≈ -0.8):
    # 7.5e-5 Ω, 18 µK at PT1000; elsewhere 1-2 ulps
    assert fwd_worst <= 8 * EPS32


@pytest.mark.parametrize("r0, r_ref", [(1000, 4300), (100, 430)])
def test_driver_every_code_in_float32(rtd32, drv32, r0, r_ref):
    drv = types.SimpleNamespace(r_ref_ohm=r_ref)
    code_to_ohm = drv32["MAX31865"].code_to_ohm
    ohm_to_code = drv32["MAX31865"].ohm_to_code
    lo_r, hi_r = cvd(-200, r0), cvd(850, r0)
    worst_k = 0.0
    in_range = refused = 0
    for code in range(32768):
        exact = code * r_ref / 32768  # exact in double (< 2**53)
        r = fe.check_f32(code_to_ohm(drv, code))
        # correctly rounded: within half an ulp of the exact ratio; rtd.code_to_ohm agrees
        assert abs(float(r) - exact) <= fe.ulp(exact) / 2, code
        assert rtd32["code_to_ohm"](code, r_ref) == r, code
        assert ohm_to_code(drv, r) == code, code
        if lo_r <= exact <= hi_r:
            in_range += 1
            if code % 4 and code not in (math.ceil(lo_r * 32768 / r_ref),
                                         math.floor(hi_r * 32768 / r_ref)):
                continue  # every 4th code and both end codes through the inverse
            t_true = true_temp(exact, r0)
            got = fe.check_f32(rtd32["temp_c"](r, r0))
            worst_k = max(worst_k, abs(float(got) - t_true))
        else:
            with pytest.raises(ValueError):
                rtd32["temp_c"](r, r0)
            refused += 1
    print(f"PT{r0}/{r_ref} float32: {in_range} codes in -200..850 °C, worst code->°C error "
          f"{worst_k * 1000:.3f} mK")
    assert in_range > 25000 and refused > 2000
    # measured: 0.14 mK (PT1000 / 4300 Ω) and 0.18 mK (PT100 / 430 Ω)
    assert worst_k <= METROLOGY_K
