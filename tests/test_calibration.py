"""Sensor calibration (README "Calibration"): heatgw.calibration's methods, their
refusals, the trim in rtd.TemperatureSensor (allocation-free, 31-bit, float32), the
calibration file across a reboot, the procedure API (heatgw.calprocedure) on a real
Gateway, the host board's model of what calibration corrects, and the calibration day.

Everything that is firmware runs in the real micropython binary (the host board's
emulated MAX31865 behind the real driver); tolerances come from the binary
(host_tools.mpinfo) or from the emulated noise, never from the 64-bit host's doubles.
"""

import datetime
import json

import pytest

from host_tools import mpinfo
from host_tools.paths import FIRMWARE, REPO

PRELUDE = r"""
import gc
import json
from array import array

from heatgw import calibration as cal
from heatgw import rtd
from max31865 import MAX31865

CH, TP = cal.CHANNEL, cal.TWO_POINT
from max31865_emu import MAX31865Emu
from virtual_clock import VirtualClock as Clock


def make(wires=2, r_ref=4300, actual=None, noise=0.0, r0=1000):
    clk = Clock((1 << 30) - 500)  # crosses the tick wrap
    emu = MAX31865Emu(r_ref_ohm=r_ref if actual is None else actual, now_ms=clk.ticks_ms,
                      ticks_diff=clk.ticks_diff)
    emu.noise_lsb = noise
    adc = MAX31865(emu.spi, emu.cs, wires=wires, filter_hz=50, r_ref_ohm=r_ref, r0_ohm=r0,
                   clock=clk)
    return clk, emu, rtd.TemperatureSensor(adc, min_c=-50.0, max_c=200.0)


def sample(s, clk):
    w = s.start()
    for _ in range(20):
        if s.adc.ready():
            break
        clk.sleep_ms(w if w > 0 else 1)
        w = s.adc.wait_ms()
    return s.read_c()


def capture(s, clk, n):
    # what the sampler does while a calibration measures: n conversions into the capture
    s.capture = [n, 0, 0, 32767, 0, 0, None]
    for _ in range(n):
        sample(s, clk)
    c = s.capture
    s.capture = None
    return c


def out(**kw):
    print(json.dumps(kw))


def err(f, *a):
    try:
        f(*a)
    except ValueError as e:
        return str(e)
    return None
"""


def run(mp, body):
    return mp.run_json(PRELUDE + body)


def one(mp, body):
    (res,) = run(mp, body)
    return res


LSB_OHM = 4300 / 32768  # one code of the 4300 ohm PT1000 boards: 0.131 ohm, 34 mK


def rel(ulps=8):
    return mpinfo.rel_tol(ulps)


# -- the methods' arithmetic against known deviations -------------------------------------


def test_each_method_recovers_known_deviations_exactly(mp):
    res = one(mp, """
rows = {}
# channel: a reference resistor 0.1 % high reads every resistance 0.1 % low; 2-wire leads
# of 1.5 ohm add to it: R_raw = (R + lead) / k
k, lead = 1.001, 1.5
rows["channel"] = cal.line(CH, 1000, 4300, (1000.0, 1385.0),
                              ((1000.0 + lead) / k, (1385.0 + lead) / k))
k2 = 0.999
rows["channel_low"] = cal.line(CH, 100, 430, (100.0, 138.5), (100.0 / k2, 138.5 / k2))
# two-point: a class B element reading the full limit +(0.3 + 0.005 t) K high
for sign in (1, -1):
    reads = [t + sign * (0.3 + 0.005 * t) for t in (30.0, 60.0)]
    rows["two_point%+d" % sign] = cal.line(TP, 0, 0, (30.0, 60.0), reads)
rows["pair"] = cal.pair(43.012, 42.871)
# the stages compose into the one line a sensor applies: the channel's, then the
# two-point's resistance line; the pair's offset after Callendar-Van Dusen
tp = {"ref_c": [30.0, 60.0], "read_c": [30.45, 60.6]}
g, o, k = cal.compose(1000, {"channel": {"gain": 1.001, "offset_ohm": -1.5},
                             "two_point": tp, "pair": {"offset_k": 0.02}})
gs, os_ = cal.two_point_ohm(1000, tp["ref_c"], tp["read_c"])
rows["compose"] = [max(abs(g * r + o - (gs * (1.001 * r - 1.5) + os_))
                       for r in (800.0, 1000.0, 1200.0, 1500.0)), k]
out(**rows)
""")
    tol = rel()
    g, o = res["channel"]
    assert g == pytest.approx(1.001, rel=tol) and o == pytest.approx(-1.5, abs=2000 * tol)
    g, o = res["channel_low"]
    assert g == pytest.approx(0.999, rel=tol) and o == pytest.approx(0.0, abs=200 * tol)
    for sign in (1, -1):
        g, o = res[f"two_point{sign:+d}"]
        assert g == pytest.approx(1 / (1 + sign * 0.005), rel=tol)
        assert o == pytest.approx(-sign * 0.3 / (1 + sign * 0.005), abs=100 * tol)
    assert res["pair"] == pytest.approx(0.141, abs=100 * tol)
    assert res["compose"][0] <= 1500 * tol and res["compose"][1] == 0.02


def test_the_two_point_resistance_line_follows_the_temperature_correction(mp):
    """Applied as a resistance line through its points (one trim for stages 1 and 2), the
    two-point differs from its temperature-domain form by Callendar-Van Dusen's curvature
    only: < 0.3 mK between the points, < 2.5 mK from 0 to 100 °C (class B, 30/60 °C)."""
    res = one(mp, """
worst_in = worst_all = 0.0
for sign in (1, -1):
    def e(t):
        return sign * (0.3 + 0.005 * t)
    reads = (30.0 + e(30.0), 60.0 + e(60.0))
    a, b = cal.line(cal.TWO_POINT, 0, 0, (30.0, 60.0), reads)
    g, o = cal.two_point_ohm(1000, (30.0, 60.0), reads)
    for i in range(0, 201):
        t = i * 0.5
        m = t + e(t)  # what the element reads
        by_t = a * m + b  # the temperature-domain correction: exact for this model
        by_r = rtd.temp_c(g * rtd.resistance_ohm(m, 1000) + o, 1000)
        d = abs(by_r - by_t)
        worst_all = max(worst_all, d)
        if 30 <= t <= 60:
            worst_in = max(worst_in, d)
out(worst_in=worst_in, worst_all=worst_all)
""")
    print(f"two-point as a resistance line: {res['worst_in'] * 1000:.3f} mK between the "
          f"points, {res['worst_all'] * 1000:.3f} mK over 0..100 °C")
    assert res["worst_in"] < 0.3e-3 and res["worst_all"] < 2.5e-3


def test_channel_calibration_through_the_emulated_chip(mp):
    """Averaged codes of a noisy chip (±1 LSB) with its reference resistor off by 0.1 % and
    2-wire leads: the channel's gain is the reference's ratio, its offset minus the leads,
    and the calibrated sensor reads within half an LSB where it read 0.3-0.8 K off."""
    res = run(mp, """
for dev, lead in ((0.1, 0.0), (-0.1, 1.5), (0.1, 3.0)):
    clk, emu, s = make(actual=4300 * (1 + dev / 100), noise=1.0)
    reads, spreads = [], []
    for r in (1000.0, 1385.0):
        emu.set_resistance(r + lead)
        m, spread = cal.mean_code(capture(s, clk, 200))
        reads.append(m * 4300 / 32768)
        spreads.append(spread)
    g, o = cal.line(cal.CHANNEL, 1000, 4300, (1000.0, 1385.0), reads)
    emu.noise_lsb = 0.0
    before = after = 0.0
    for t in range(0, 101, 5):
        emu.set_resistance(rtd.resistance_ohm(t, 1000) + lead)
        before = max(before, abs(sample(s, clk)[0] - t))
    cal.set_trim(s, g, o)
    for t in range(0, 101, 5):
        emu.set_resistance(rtd.resistance_ohm(t, 1000) + lead)
        after = max(after, abs(sample(s, clk)[0] - t))
    out(dev=dev, lead=lead, gain=g, offset=o, spreads=spreads, before=before, after=after,
        violations=emu.violations)
""")
    for r in res:
        print(f"Rref {r['dev']:+.1f} %, leads {r['lead']} ohm: gain {r['gain']:.6f} offset "
              f"{r['offset']:+.4f} ohm; worst error 0..100 °C {r['before']:.3f} K -> "
              f"{r['after'] * 1000:.1f} mK")
        # 200 conversions with ±1 LSB noise: the mean is within ~0.05 LSB (4 sigma)
        assert r["gain"] == pytest.approx(1 + r["dev"] / 100, abs=1.2e-4)
        assert r["offset"] == pytest.approx(-r["lead"], abs=0.12)
        assert max(r["spreads"]) <= 3  # ±1 LSB of noise and the rounding
        assert r["before"] > 0.25
        # half an LSB of quantisation (17 mK) plus what the calibration left
        assert r["after"] <= 0.5 * LSB_OHM / 3.79 + 0.012
        assert r["violations"] == []


# -- refusals ------------------------------------------------------------------------------


def test_each_method_refuses_nonsense_with_a_clear_error(mp):
    res = one(mp, """
e = {}
# channel
e["wrong_resistor"] = err(cal.line, CH, 1000, 4300, (1000.0, 1385.0), (1385.2, 1385.3))
e["too_close"] = err(cal.line, CH, 1000, 4300, (1000.0, 1100.0), (1000.5, 1100.5))
e["gain"] = err(cal.line, CH, 1000, 4300, (1000.0, 1385.0), (1015.0, 1385.0 * 1.015))
e["resistor_value"] = err(cal.line, CH, 1000, 4300, (100.0, 1385.0), (100.0, 1385.0))
e["beyond_rref"] = err(cal.check_ref, CH, 1000, 4300, 4200.0)
e["nan"] = err(cal.check_ref, CH, 1000, 4300, float("nan"))
e["small_rref"] = err(cal.check_ref, CH, 1000, 2000, 1950.0)
# two-point
e["tp_close"] = err(cal.line, TP, 0, 0, (30.0, 35.0), (30.2, 35.2))
e["tp_not_in_bath"] = err(cal.line, TP, 0, 0, (30.0, 60.0), (21.5, 60.2))
e["tp_gain"] = err(cal.line, TP, 0, 0, (30.0, 60.0), (30.0, 60.7))
e["tp_ref"] = err(cal.line, TP, 0, 0, (30.0, 250.0), (30.0, 250.0))
# pair
e["pair"] = err(cal.pair, 43.0, 40.1)
# a capture: unfinished, unstable, faulty
e["unfinished"] = err(cal.mean_code, [30, 12, 12 * 7600, 7600, 7600, 0, None])
e["unstable"] = err(cal.mean_code, [30, 30, 30 * 7600, 7590, 7600, 0, None])
# an open sensor: every conversion of the capture fails, the first fault is kept
clk, emu, s = make()
emu.set_resistance(1000.0)
emu.inject("open")
c = capture(s, clk, 10)
e["open"] = err(cal.mean_code, c)
e["open_counts"] = c
# the trim itself
e["trim_gain"] = err(cal.set_trim, s, 1.04, 0.0)
e["trim_offset"] = err(cal.set_trim, s, 1.0, 60.0)
e["trim_nan"] = err(cal.set_trim, s, float("nan"), 0.0)
e["trim_pair"] = err(cal.set_trim, s, 1.0, 0.0, 6.0)
class Adc:  # a converter without read_code(): no resistance trim, a pair offset is fine
    r0_ohm = 1000
    r_ref_ohm = 4300
e["no_read_code"] = err(cal.set_trim, rtd.TemperatureSensor(Adc()), 1.001, 0.0)
e["no_read_code_pair"] = err(cal.set_trim, rtd.TemperatureSensor(Adc()), 1.0, 0.0, 0.1)
e["kept"] = [s.trim, s.cal, s._off_k]
out(**e)
""")
    want = {
        "wrong_resistor": "reads 1385.200 for the reference 1000.000 (+385.200, at most ±20): "
                          "another resistor, or none fitted?",
        "too_close": "the points are 100 apart: at least 200",
        "gain": "gain 0.98522 is beyond 1 ± 0.01: not a component tolerance",
        "resistor_value": "a 100.0 ohm resistor does not suit this channel: use 500..3000 ohm",
        "beyond_rref": "use 500..3000 ohm",
        "nan": "does not suit",
        "small_rref": "use 500..1900 ohm",  # 0.95 Rref: the code must not saturate
        "tp_close": "the points are 5 apart: at least 10",
        "tp_not_in_bath": "reads 21.500 for the reference 30.000 (-8.500, at most ±3): not in "
                          "the bath, or another sensor?",
        "tp_gain": "is beyond 1 ± 0.01",
        "tp_ref": "reference 250.00 C outside -50..200 C",
        "pair": "the pair reads 2.90 K apart in one bath",
        "unfinished": "only 12 of 30 conversions",
        "unstable": "unstable: the codes spread over 10 LSB (at most 4)",
        "open": "10 conversion(s) failed (rtd_high_threshold): sensor open or miswired?",
        "trim_gain": "trim gain 1.04 beyond 1 ± 0.03",
        "trim_offset": "beyond ±5 % of R0",
        "trim_nan": "trim gain",
        "trim_pair": "pair offset 6.0 K beyond ±5 K",
        "no_read_code": "no read_code()",
    }
    for key, text in want.items():
        assert res[key] is not None and text in res[key], (key, res[key])
    assert res["no_read_code_pair"] is None
    assert res["open_counts"] == [10, 0, 0, 32767, 0, 10, "rtd_high_threshold"]
    assert res["kept"] == [None, None, 0.0]  # refused trims changed nothing


# -- the trim in the measurement chain -----------------------------------------------------


def test_the_trim_is_allocation_free_and_a_calibrated_read_costs_what_a_plain_one_does(mp):
    res = one(mp, """
import micropython

def trims_locked(s, ys):
    # locals and a preallocated array only: anything that allocates raises here
    micropython.heap_lock()
    try:
        t = s.trim
        ys[0] = rtd.trim_code(0, t)
        ys[1] = rtd.trim_code(32767, t)
        ys[2] = rtd.trim_code(9684, t)
        ok = True
    except MemoryError:
        ok = False
    micropython.heap_unlock()
    return ok


clk, emu, s = make()
locked = {}
for gain, off in ((1.0299, 50.0), (0.9701, -50.0), (1.0004, -1.3)):
    cal.set_trim(s, gain, off)
    ys = array("i", (0, 0, 0))
    ok = trims_locked(s, ys)
    locked["%g/%g" % (gain, off)] = [ok] + list(ys)


def per_read(s, n=100):
    # continuous mode, clock frozen: the converter does no work; bytes per read_c()
    gc.collect()
    gc.disable()
    a = gc.mem_alloc()
    for _ in range(n):
        s.read_c()
    b = gc.mem_alloc()
    gc.enable()
    return (b - a) / n


clk, emu, s = make()
emu.set_resistance(1163.0)
s.adc.start_continuous()
clk.sleep_ms(100)
s.adc.ready()  # VBIAS settled: converting from here
clk.sleep_ms(100)
first = s.read_c()
plain = per_read(s)
cal.set_trim(s, 1.0004, -1.3, 0.05)
trimmed = per_read(s)
s.capture = [1000, 0, 0, 32767, 0, 0, None]
capturing = per_read(s)
out(locked=locked, plain=plain, trimmed=trimmed, capturing=capturing,
    captured=list(s.capture), first=first)
""")
    for key, (ok, *ys) in res["locked"].items():
        assert ok, key  # no MemoryError under heap_lock: small ints only
        assert all(-(1 << 30) <= y < (1 << 30) for y in ys), key
    print(f"bytes per read_c: plain {res['plain']}, calibrated {res['trimmed']}, "
          f"capturing {res['capturing']}")
    assert res["trimmed"] == res["plain"]  # the float and the tuple, as before
    assert res["capturing"] <= res["plain"]  # the tuple only
    assert res["captured"][1] == 100 and res["captured"][5] == 0
    assert res["first"][1] is None  # a temperature: the reads above measured the full path


def test_the_trim_stays_within_31_bits_for_every_code_and_the_widest_trims():
    """Every intermediate of trim_code() is a 31-bit small int (-2**30 <= n < 2**30) for
    every code and the extremes set_trim() accepts, on the boards' references and the
    tightest one the driver allows (Rref just above R0: the largest offset in LSB)."""
    import sys

    sys.path.insert(0, str(FIRMWARE))
    from heatgw import calibration, rtd

    class Adc:
        def __init__(self, r0, r_ref):
            self.r0_ohm, self.r_ref_ohm = r0, r_ref

        def read_code(self):
            raise AssertionError

    lo, hi = -(1 << 30), (1 << 30)
    worst = 0
    for r0, r_ref in ((1000, 4300), (100, 430), (1000, 1001), (100, 101)):
        s = rtd.TemperatureSensor(Adc(r0, r_ref))
        for gain in (1.0299, 0.9701):
            for off in (0.05 * r0, -0.05 * r0):
                calibration.set_trim(s, gain, off)
                dq, oq, _scale = s.trim
                for code in range(32768):
                    p = code * dq + 128
                    parts = (code << 12, p, p >> 8, oq, (code << 12) + oq,
                             rtd.trim_code(code, s.trim))
                    assert all(lo <= v < hi for v in parts), (r0, r_ref, gain, off, code)
                    worst = max(worst, *(abs(v) for v in parts))
    print(f"trim_code: largest intermediate {worst} ({worst / hi:.1%} of 2**30)")
    assert worst > hi // 2  # the bound is tight: a wider gain limit would break it


def test_the_trim_in_float32_matches_the_exact_line():
    """rtd.py in float32 (tests/float32_emul.py): the trimmed resistance of every code of
    0..120 °C is the exact line g * R_raw + o within the fixed point's steps and 3 float32
    ulps of R."""
    import sys
    import types

    import float32_emul as fe

    sys.path.insert(0, str(FIRMWARE))  # heatgw.calibration imports heatgw.rtd
    ns = fe.load(FIRMWARE / "heatgw" / "rtd.py")
    cal = fe.load(FIRMWARE / "heatgw" / "calibration.py")
    ns["float"] = cal["float"] = fe.F  # set_trim's float() in single precision too
    adc = types.SimpleNamespace(r0_ohm=1000, r_ref_ohm=4300, read_code=None)
    s = ns["TemperatureSensor"](adc)
    worst = 0.0
    for gain, off in ((1.0009443, -1.2719), (0.9990559, 3.5), (1.0100000, -25.0)):
        cal["set_trim"](s, fe.F(gain), fe.F(off))
        g32, o32 = float(fe.F(gain)), float(fe.F(off))
        for code in range(7500, 11400):  # PT1000 0..120 °C with Rref 4300
            r = fe.check_f32(ns["trim_code"](code, s.trim) * s.trim[2])
            exact = g32 * code * 4300 / 32768 + o32
            bound = (code * 2.0**-21 + 2.0**-11) * LSB_OHM + 3 * fe.ulp(exact)
            assert abs(float(r) - exact) <= bound, (gain, off, code)
            worst = max(worst, abs(float(r) - exact))
    print(f"float32 trim: worst {worst * 1000:.3f} mohm from the exact line "
          f"({worst / 3.79 * 1000:.3f} mK)")
    assert worst < 0.002  # ohm: < 0.6 mK


# -- dates, describe ------------------------------------------------------------------------


UTCS = [0, 951782400, 951868800, 1709164800, 1790000000, 4107542400, 4102444799]


def test_dates_are_utc_calendar_dates(mp):
    res = one(mp, f"""
from heatgw.calshow import date_text
out(dates=[date_text({{"utc": u}}) for u in {UTCS!r}],
    boot=date_text({{"utc": None, "boot": 3, "up_s": 1234}}))
""")
    want = [datetime.datetime.fromtimestamp(u, datetime.UTC).strftime("%Y-%m-%d %H:%MZ")
            for u in UTCS]
    assert res["dates"] == want  # 2000-02-29, 2024-02-29, 2100-03-01 among them
    assert res["boot"] == "boot 3 + 1234 s"


# -- the emulated chip: fitted reference, noise ---------------------------------------------


def test_the_emulated_chip_has_its_fitted_reference_and_unbiased_noise(mp):
    res = one(mp, """
clk, emu, s = make(actual=4304.3)
emu.set_resistance(1163.2)
plain = s.adc.read_blocking()
codes = []
emu.noise_lsb = 1.0
for _ in range(2000):
    w = s.adc.start_one_shot()
    for _ in range(20):
        if s.adc.ready():
            break
        clk.sleep_ms(w if w > 0 else 1)
        w = s.adc.wait_ms()
    codes.append(s.adc.read_code()[0])
out(plain=plain, mean=sum(codes) / len(codes), lo=min(codes), hi=max(codes),
    ideal=MAX31865Emu(r_ref_ohm=4300).code_for(1163.2))
""")
    ratio = 1163.2 * 32768 / 4304.3
    # the driver, told 4300 ohm, reads a chip fitted with 4304.3 ohm 0.1 % low
    assert res["plain"][0] == pytest.approx(round(ratio) * LSB_OHM, rel=rel())
    assert res["mean"] == pytest.approx(ratio, abs=0.05)  # unbiased: 2000 x ±1 LSB
    assert res["hi"] - res["lo"] == 2
    assert res["ideal"] == round(1163.2 * 32768 / 4300)


# -- the host board's model of what calibration corrects (CPython) -------------------------


def test_the_sensor_model_and_the_default_plant_stays_ideal():
    from host_tools import sensors
    from host_tools.plant import Plant
    from host_tools.scenario import node_config
    from host_tools.world import World

    cfg = node_config({"config": {"sensors": {"supply": {"wires": 2}}}})
    ideal = World(Plant(), cfg, {})
    for name, t in ideal.served_temps(0).items():
        assert ideal.terminal_ohm(name, t) == sensors.pt_ohm(t)  # unchanged scenarios
    lines = []
    ideal._value_lines(0, lines)
    assert not [x for x in lines if x.startswith("R ")]  # no chip line: ideal chips

    spec = {"noise_lsb": 1.0,
            "supply": {"class": "B", "class_sign": 1, "lead_ohm": 1.2, "r_ref_dev_pct": -0.1},
            "return": {"class": "A", "class_sign": -1}}
    w = World(Plant(), cfg, {"sensor_model": spec})
    m = w.models["supply"]
    assert m.error_k(50.0) == pytest.approx(0.3 + 0.005 * 50)  # the full class B limit
    assert w.models["return"].error_k(-20.0) == pytest.approx(-(0.15 + 0.002 * 20))
    assert w.terminal_ohm("supply", 50.0) == pytest.approx(
        sensors.pt_ohm(50.55) + 1.2)
    assert m.r_ref_ohm == pytest.approx(4300 * 0.999)
    w.apply_event({"do": "rtd_resistor", "sensors": ["supply"], "ohm": 1000.0})
    assert w.terminal_ohm("supply", 50.0) == pytest.approx(1001.2)  # leads still in series
    w.apply_event({"do": "rtd_bath", "sensors": ["supply", "return"], "temp_c": 30.0})
    assert w.bath_c() == 30.0
    assert w.terminal_ohm("return", 50.0) == pytest.approx(sensors.pt_ohm(30 - 0.21))
    w.apply_event({"do": "rtd_installed", "sensors": ["supply"]})
    with pytest.raises(ValueError, match="is not a configured sensor"):
        w.apply_event({"do": "rtd_installed", "sensors": ["nope"]})
    lines = []
    w._value_lines(0, lines)
    assert "R supply 4295.7000 1.0\n" in lines and "R return 4300.0000 1.0\n" in lines
    # refused: unknown keys, leads on a 3/4-wire sensor, tolerances beyond the model's
    bad = [({"supply": {"klass": "B"}}, "unknown keys"),
           ({"return": {"lead_ohm": 1.0}}, "models 2-wire leads"),
           ({"supply": {"class": "D"}}, "class 'D'"),
           ({"supply": {"r_ref_dev_pct": 2.0}}, "within ±1 %"),
           ({"supply": {"class_sign": 0}}, "class_sign"),
           ({"flow": {}}, "not configured sensors")]
    for spec, text in bad:
        with pytest.raises(ValueError, match=text):
            sensors.sensor_models(spec, cfg["sensors"])


# -- the file across a reboot, and the procedure on a real Gateway --------------------------

NODE = r"""
import json
import board
from heatgw import start, payloads

EV = []
CFG = json.loads(CONFIG)
if CFG is not None:
    with open(board.data_dir() + "/config.json", "w") as f:
        json.dump(CFG, f)
for name, (actual, lead) in CHIPS.items():
    board.rtd_chip(name).r_ref_ohm = actual
    LEADS[name] = lead
gw, asyncio = start.build()
gw.add_sink(lambda kind, rec: EV.append(rec) if kind == "event" else None)
clock = board.clock


def pipe(temps):
    for name, t in temps.items():
        board.rtd_chip(name).set_resistance(rtd.resistance_ohm(t, 1000) + LEADS.get(name, 0))


def tick():
    # one sampler pass by hand: every sensor's 1-shot, polled when due (as app._convert)
    for s in gw.sensors.values():
        s.start()
    got = {}
    for _ in range(10):
        clock.sleep_ms(max([s.adc.wait_ms() for s in gw.sensors.values()] + [1]))
        for name, s in gw.sensors.items():
            if name not in got:
                r = s.read_c()
                if r[1] != "not_ready":
                    got[name] = r
        if len(got) == len(gw.sensors):
            break
    return got


def maintenance(on):
    # as the control task does with the console's request
    gw.inbox.post("console", "maintenance", on)
    gw._merge_inputs(clock.ticks_ms())
    gw.failsafe.update(clock.ticks_ms(), gw.inputs)


def step(f, *a, **kw):
    try:
        return [True, f(*a, **kw)]
    except ValueError as e:
        return [False, str(e)]


def measure(ref):
    r = step(cp.measure, gw, ref)
    if not r[0]:
        return r
    for _ in range(1000):
        tick()
        try:
            done, text = cp.poll(gw)
        except ValueError as e:
            return [False, str(e)]
        if done:
            return [True, text]


def state():
    w = payloads.Writer(1024)
    return bytes(payloads.state(w, "bypass", "maintenance", (), (), False, None, gw.boot_id,
                                gw.uptime_ms, sensors=gw.sensors)).decode()
"""


def node_config(**wires):
    cfg = json.loads((REPO / "scenarios" / "default_config.json").read_text())
    for name, n in wires.items():
        cfg["sensors"][name]["wires"] = n
    return cfg


def node(mp, body, flash, monkeypatch, config=None, chips=None):
    """Run `body` on a node built as heatgw.start builds it (standalone host board,
    `flash` its littlefs image: a second call with the same image is a reboot)."""
    monkeypatch.setenv("HEATGW_FLASH", str(flash))
    chips = chips or {}
    head = (f"CONFIG = {json.dumps(json.dumps(config))}\nCHIPS = {chips!r}\nLEADS = {{}}\n"
            "from heatgw import rtd\nfrom heatgw import calprocedure as cp\n")
    text = mp.run_code(head + NODE + body)
    return [json.loads(x[2:]) for x in text.splitlines() if x.startswith("R ")], text


CHIPS = {"supply": (4300 * 0.999, 1.2), "return": (4300 * 1.001, 0.3)}
OUT = "def out(**kw):\n    print('R', json.dumps(kw))\n"


def test_calibration_is_persisted_and_applied_again_after_a_reboot(mp, tmp_path, monkeypatch):
    flash = tmp_path / "flash.bin"
    cfg = node_config(supply=2, **{"return": 2})
    (first,), _ = node(mp, OUT + """
pipe({"supply": 47.6, "return": 37.8, "sink_return": 37.8, "it_coolant": 40.0})
before = tick()
maintenance(True)
steps = [step(cp.begin, gw, "channel", ("supply", "return"), n=20)]
for r in (1000.0, 1385.0):
    for name in ("supply", "return"):
        board.rtd_chip(name).set_resistance(r + LEADS[name])
    tick()
    steps.append(measure(r))
steps.append(step(cp.finish, gw))
pipe({"supply": 47.6, "return": 37.8})
steps.append(step(cp.release, gw))
after = tick()
with open(board.data_dir() + "/calibration.json") as f:
    doc = json.load(f)
out(before=before, after=after, steps=steps, doc=doc, state=state(),
    trims={n: s.trim and list(s.trim) for n, s in gw.sensors.items()},
    events=[e for e in EV if e.get("kind") == "calibration"])
""", flash, monkeypatch, cfg, CHIPS)
    assert all(ok for ok, _ in first["steps"]), first["steps"]
    b, a = first["before"], first["after"]
    dt_before = b["supply"][0] - b["return"][0]
    dt_after = a["supply"][0] - a["return"][0]
    print(f"ΔΘ 9.8 K read {dt_before:.3f} K uncalibrated, {dt_after:.3f} K after the channel "
          "calibration")
    assert dt_before - 9.8 > 0.8  # Rref ±0.1 % and 0.9 ohm of leads: ~0.83 K too much
    assert abs(dt_after - 9.8) <= 2 * LSB_OHM / 3.8  # two half-LSBs of quantisation
    doc = first["doc"]
    ch = doc["sensors"]["supply"]["channel"]
    assert doc["v"] == 1 and set(doc["sensors"]) == {"supply", "return"}
    assert ch["method"] == "channel" and ch["ref_ohm"] == [1000.0, 1385.0]
    assert ch["r0_ohm"] == 1000 and ch["wires"] == 2 and ch["r_ref_ohm"] == 4300
    assert ch["n"] == 20 and len(ch["read_ohm"]) == 2
    assert set(ch["date"]) == {"utc", "boot", "up_s"} and ch["date"]["boot"] == 1
    assert ch["gain"] == pytest.approx(0.999, abs=1e-4)
    assert ch["offset_ohm"] == pytest.approx(-1.2, abs=0.15)
    from tests.payload_schemas import validate

    st = validate("heatgw/s/n/state", first["state"].encode())
    assert set(st["calibration"]) == {"supply", "return"}
    assert st["calibration"]["return"]["methods"] == ["channel"]
    assert [e["result"] for e in first["events"]] == ["saved", "released"]

    # reboot: the same flash, a new process; the calibration is applied before any reading
    (second,), text = node(mp, OUT + """
from heatgw import calshow
pipe({"supply": 47.6, "return": 37.8, "sink_return": 37.8, "it_coolant": 40.0})
out(after=tick(), state=state(), trims={n: s.trim and list(s.trim) for n, s in gw.sensors.items()},
    describe=calshow.describe("supply", sensor=gw.sensors["supply"]))
""", flash, monkeypatch, None, CHIPS)
    assert second["trims"] == first["trims"]
    assert second["after"] == first["after"]
    assert json.loads(second["state"])["calibration"] == st["calibration"]
    assert '"kind": "calibration"' in text and '"result": "loaded"' in text
    lines = second["describe"]
    # no UTC on a standalone host board: the boot and its uptime date the entry
    assert lines[0].startswith("supply: channel boot 1 + ")
    assert " n=20 ref_ohm=1000/1385 read_ohm=10" in lines[0] and " gain=0.99" in lines[0]
    assert lines[-1].startswith("supply: applied channel: R = 0.99")
    assert len(lines) == 2


def test_a_corrupted_or_foreign_calibration_is_refused_at_boot(mp, tmp_path, monkeypatch):
    flash = tmp_path / "flash.bin"
    cfg = node_config(supply=2, **{"return": 2})
    node(mp, OUT + """
maintenance(True)
step(cp.begin, gw, "channel", ("supply", "return"), n=8)
for r in (1000.0, 1385.0):
    for name in ("supply", "return"):
        board.rtd_chip(name).set_resistance(r + LEADS[name])
    tick()
    measure(r)
step(cp.finish, gw)
""", flash, monkeypatch, cfg, CHIPS)
    boot_again = OUT + """
with open(board.data_dir() + "/calibration.json.new", "w") as f:
    f.write("{torn")  # a stale half-written file from a power cut: ignored
out(cal={n: s.cal is not None for n, s in gw.sensors.items()})
"""
    # a flipped digit in a stored gain: the entry no longer matches its own readings
    tamper = """
p = board.data_dir() + "/calibration.json"
with open(p) as f:
    doc = json.load(f)
doc["sensors"]["supply"]["channel"]["gain"] += 0.0001
with open(p, "w") as f:
    json.dump(doc, f)
"""
    (res,), text = node(mp, tamper + OUT + "out(cal={n: s.cal is not None for n, s in "
                        "gw.sensors.items()})", flash, monkeypatch, None, CHIPS)
    assert res["cal"]["supply"] is True  # tampered after this boot's load
    (res,), text = node(mp, boot_again, flash, monkeypatch, None, CHIPS)
    assert res["cal"] == {"supply": False, "return": True, "sink_return": False,
                          "it_coolant": False}
    assert "supply: channel gain" in text and "does not match its readings" in text
    # the sensor's wiring changed since: its calibration does not apply
    (res,), text = node(mp, boot_again, flash, monkeypatch,
                        node_config(supply=2, **{"return": 4}), CHIPS)
    assert res["cal"]["return"] is False
    assert "return: channel made with wires 2, now 4" in text
    # not JSON at all: nothing applied, said why
    node(mp, """
with open(board.data_dir() + "/calibration.json", "w") as f:
    f.write('{"v": 1, "sensors": {"supply": ')
""", flash, monkeypatch, None, CHIPS)
    (res,), text = node(mp, boot_again, flash, monkeypatch, None, CHIPS)
    assert not any(res["cal"].values())
    assert '"result": "unreadable"' in text and "calibration.json unreadable" in text


def test_the_procedure_refuses_out_of_order_steps_and_drops_what_a_recalibration_invalidates(
        mp, tmp_path, monkeypatch):
    flash = tmp_path / "flash.bin"
    cfg = node_config(supply=2, **{"return": 2})
    (res,), text = node(mp, OUT + """
def fit(r):
    for name in ("supply", "return"):
        board.rtd_chip(name).set_resistance(r + LEADS[name])
    tick()


def bath(t):
    pipe({"supply": t, "return": t})
    tick()


S = {}
pipe({"supply": 47.6, "return": 37.8, "sink_return": 37.8, "it_coolant": 40.0})
S["no_maintenance"] = step(cp.begin, gw, "channel", ("supply",))
maintenance(True)
S["no_session"] = step(cp.measure, gw, 1000.0)
S["bad_method"] = step(cp.begin, gw, "three_point", ("supply",))
S["bad_sensor"] = step(cp.begin, gw, "channel", ("flow",))
S["pair_of_one"] = step(cp.begin, gw, "pair", ("supply",))
S["bad_n"] = step(cp.begin, gw, "channel", ("supply",), n=2)
S["begin"] = step(cp.begin, gw, "channel", ("supply", "return"), n=8)
S["reads_out"] = tick()
S["second_begin"] = step(cp.begin, gw, "pair", ("supply", "return"))
S["finish_early"] = step(cp.finish, gw)
S["no_ref"] = step(cp.measure, gw, None)
S["silly_ref"] = step(cp.measure, gw, 50.0)
fit(1385.0)
S["wrong_resistor"] = measure(1000.0)  # 1385 fitted, 1000 stated: the point is dropped
fit(1000.0)
S["point1"] = measure(1000.0)
S["too_close"] = step(cp.measure, gw, 1100.0)
S["busy"] = [step(cp.measure, gw, 1385.0), step(cp.measure, gw, 1385.0)]
S["finish_busy"] = step(cp.finish, gw)
S["release_busy"] = step(cp.release, gw)
maintenance(False)
tick()
S["maintenance_ended"] = step(cp.poll, gw)
maintenance(True)
fit(1385.0)
S["point2"] = measure(1385.0)
S["all_points"] = step(cp.measure, gw, 1385.0)
S["finish"] = step(cp.finish, gw)
S["between_sessions"] = tick()  # still out of the pipe until release
bath(30.0)
S["tp"] = [step(cp.begin, gw, "two_point", ("supply", "return"), n=8), measure(30.0)]
S["tp_close"] = step(cp.measure, gw, 35.0)
bath(45.0)
S["not_in_bath"] = measure(60.0)  # the baths are 45 C: 15 K from the reference
bath(60.0)
S["tp2"] = [measure(60.0), step(cp.finish, gw)]
bath(43.0)
S["pair"] = [step(cp.begin, gw, "pair", ("supply", "return"), n=8),
             step(cp.measure, gw, 43.0), measure(None), step(cp.finish, gw)]
with open(board.data_dir() + "/calibration.json") as f:
    S["methods"] = {n: sorted(e) for n, e in json.load(f)["sensors"].items()}
S["applied"] = {n: s.cal[0] for n, s in gw.sensors.items() if s.cal}
S["read_in_bath"] = tick()
S["bath_release"] = step(cp.release, gw, ["return"])  # out of the bath: reads as supply
cap = gw.sensors["supply"].capture
gw.sensors["supply"].capture = None  # (supply too, for one reading)
S["bath_reads"] = tick()
gw.sensors["supply"].capture = cap
# an open sensor during a measurement: the point fails at the first faulty conversion
S["open_begin"] = step(cp.begin, gw, "pair", ("supply", "return"), n=8)
board.rtd_chip("return").inject("open")
S["open"] = measure(None)
board.rtd_chip("return").inject("none")
tick()
S["open_abort"] = step(cp.abort, gw)
# a new channel calibration of supply: its two-point and the pair through it go
S["again"] = step(cp.begin, gw, "channel", ("supply",), n=8)
fit(1000.0)
measure(1000.0)
fit(1385.0)
measure(1385.0)
S["dropped"] = step(cp.finish, gw)
with open(board.data_dir() + "/calibration.json") as f:
    S["methods_after"] = {n: sorted(e) for n, e in json.load(f)["sensors"].items()}
S["status"] = cp.status(gw)
pipe({"supply": 47.6, "return": 37.8})
S["release"] = step(cp.release, gw)
S["back"] = tick()
S["status_after"] = cp.status(gw)
S["clear_off"] = [maintenance(False), step(cp.clear, gw, "return")][1]
maintenance(True)
S["clear"] = step(cp.clear, gw, "return")
S["clear_again"] = step(cp.clear, gw, "return")
S["kinds"] = [(e.get("result"), e.get("method")) for e in EV if e.get("kind") == "calibration"]
out(**S)
""", flash, monkeypatch, cfg, CHIPS)
    r = res
    refused = {
        "no_maintenance": "maintenance is off",
        "no_session": "no calibration open",
        "bad_method": "unknown method 'three_point'",
        "bad_sensor": "no sensor 'flow'",
        "pair_of_one": "a pair is two sensors",
        "bad_n": "conversions per point: 4..1000",
        "second_begin": "a channel calibration of supply,return is open",
        "finish_early": "0 of 2 points measured",
        "no_ref": "measure needs the resistor's value in ohm",
        "silly_ref": "a 50.0 ohm resistor does not suit this channel",
        "wrong_resistor": "supply: reads 13",
        "too_close": "too close to the first point",
        "finish_busy": "still measuring",
        "release_busy": "is in the open channel calibration",
        "maintenance_ended": "maintenance ended: the measurement is dropped",
        "all_points": "every point is measured: finish",
        "tp_close": "too close to the first point 30",
        "not_in_bath": "not in the bath",
        "clear_off": "maintenance is off",
    }
    for key, text in refused.items():
        ok, msg = r[key]
        assert not ok and text in msg, (key, r[key])
    assert r["begin"][0] and "out of service until release" in r["begin"][1]
    assert r["reads_out"]["supply"] == [None, "calibrating"]
    assert r["reads_out"]["sink_return"][1] is None  # the others measure on
    assert r["point1"][0] and "point 1: supply 100" in r["point1"][1]
    assert r["busy"][0][0] and not r["busy"][1][0] and "still measuring" in r["busy"][1][1]
    assert r["point2"][0] and r["finish"][0]
    assert r["between_sessions"]["return"] == [None, "calibrating"]
    assert all(ok for ok, _ in r["tp"]) and all(ok for ok, _ in r["tp2"])
    assert r["pair"][0][0] and not r["pair"][1][0] and "needs no reference" in r["pair"][1][1]
    assert r["pair"][2][0] and r["pair"][3][0] and "return pair offset_k " in r["pair"][3][1]
    assert r["methods"] == {"supply": ["channel", "two_point"],
                            "return": ["channel", "pair", "two_point"]}
    assert r["applied"] == {"supply": ["channel", "two_point"],
                            "return": ["channel", "two_point", "pair"]}
    assert r["read_in_bath"]["supply"] == [None, "calibrating"]
    assert r["bath_release"] == [True, "return back in service"]
    sup, ret = r["bath_reads"]["supply"][0], r["bath_reads"]["return"][0]
    # the pair's offset makes return read as supply in their bath (the same codes as the
    # pair's point: no noise on these chips)
    # (within the trim's fixed point: < 0.5 mK; the offset itself is several mK here)
    assert abs(ret - sup) <= 0.5e-3, (sup, ret, r["pair"][3])
    assert abs(float(r["pair"][3][1].split("offset_k ")[1].split(";")[0])) > 2e-3
    assert r["open_begin"][0]
    ok, msg = r["open"]
    assert not ok and msg.startswith("return: ") and "failed (rtd_high_threshold)" in msg
    assert r["open_abort"] == [True, "pair calibration of supply,return aborted: nothing saved"]
    assert r["dropped"][0] and "dropped (measured through what changed): supply.two_point, " \
        "return.pair" in r["dropped"][1]
    assert r["methods_after"] == {"supply": ["channel"], "return": ["channel", "two_point"]}
    assert "out of service: " in r["status"] and "supply" in r["status"]
    assert r["release"][0] and r["back"]["supply"][1] is None
    assert r["status_after"] == "out of service: none"
    assert r["clear"] == [True, "cleared: return.channel, return.two_point"]
    assert r["clear_again"] == [True, "return has no calibration"]
    assert r["kinds"] == [["saved", "channel"], ["saved", "two_point"], ["saved", "pair"],
                          ["released", None], ["saved", "channel"], ["released", None],
                          ["cleared", None]]


# -- the proof: the calibration day --------------------------------------------------------


def test_calibration_day_several_percent_off_uncalibrated_within_half_a_percent_after(
        tmp_path):
    from host_tools.harness import run_scenario

    s, h = run_scenario(REPO / "scenarios" / "calibration_day.json", workdir=tmp_path / "w")
    text = h.console_path.read_text()
    assert "Traceback" not in text
    # the technician's steps, typed at the console (heatgw/con_calibrate.py): each one
    # answered without an error, the calibrations saved and the sensors released
    steps = s["technician"]
    assert [t["typed"].split()[1] for t in steps] == [
        "begin", "measure", "measure", "finish"] * 2 + ["begin", "measure", "finish",
                                                        "release"]
    assert "error: calibrate" not in text and "error: " not in text, text[-3000:]
    for t in steps[:-1]:
        assert t["typed"].split("\r")[0] in text
    assert text.count("calibrate: point ") == 5
    cal = [(e["result"], e.get("method")) for e in h.node_events
           if e.get("kind") == "calibration" and e.get("source") == "console"]
    assert cal == [("saved", "channel"), ("saved", "two_point"), ("saved", "pair"),
                   ("released", None)]
    ph = s["phases"]
    for name, p in ph.items():
        print(f"{name}: {p['from_s']:.0f}..{p['to_s']:.0f} s metered {p['metered_kwh']:.2f} "
              f"kWh, IF97 {p['true_kwh']:.2f} kWh: {p['heat_error_pct']:+.3f} %")
    print(f"wall {s['wall_s']} s")
    assert ph["uncalibrated"]["heat_error_pct"] > 5.0  # several %: ΔΘ read ~1.8 K high
    for name in ("calibrated", "calibrated_after_reboot"):
        assert abs(ph[name]["heat_error_pct"]) <= 0.5, name
        assert ph[name]["true_kwh"] > 300 and not ph[name]["spans_reboot"]
    assert [b["cause"] for b in s["boots"]] == ["power_on", "power_cut"]
    loaded = [e for e in h.node_events if e.get("kind") == "calibration"
              and e.get("result") == "loaded"]
    assert len(loaded) == 1 and sorted(loaded[0]["sensors"]) == ["return", "supply"]
    assert loaded[0]["errors"] == [] and loaded[0]["boot"] == 2
    # metering stopped while the sensors were out of the pipe: error time, no energy
    assert s["metered"]["error_time_s"] >= 39000 - 36060 - 60


def test_the_complete_node_day_applies_its_persisted_calibration(complete_node_day):
    """tests/siteday.py's `calibration` feature: the chips' reference resistors are 0.1 %
    off (6 % of heat uncorrected) and the node boots with the calibration.json of an
    earlier channel calibration: it applies it before the first reading, its state
    carries it, and the day's meter agrees with the plant (tests/test_siteday.py)."""
    day = complete_node_day
    loaded = [e for e in day.harness.node_events if e.get("kind") == "calibration"]
    assert [e["result"] for e in loaded] == ["loaded"], loaded
    assert sorted(loaded[0]["sensors"]) == ["return", "supply"] and loaded[0]["errors"] == []
    states = [json.loads(p) for t, p, *_ in day.messages if t == day.base + "/state"]
    assert states
    for st in states:  # every state the upstream got (each passed its JSON Schema)
        c = st["calibration"]
        assert sorted(c) == ["return", "supply"]
        assert c["supply"]["methods"] == c["return"]["methods"] == ["channel"]
        assert c["supply"]["gain"] == pytest.approx(0.999, abs=2e-6)
        assert c["return"]["gain"] == pytest.approx(1.001, abs=2e-6)
        assert c["supply"]["utc"] == 1_789_900_000 and c["supply"]["offset_ohm"] == 0.0
    kinds = [doc.get("kind") for _seq, what, doc in day.records() if what == "event"]
    assert "calibration" in kinds  # the boot's `loaded` went upstream as an event
    print(f"complete-node day with its calibration applied: heat error "
          f"{day.summary['heat_error_pct']:+.3f} %")
    assert abs(day.summary["heat_error_pct"]) < 0.5
