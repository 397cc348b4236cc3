"""Valve and analogue inputs (heatgw.analog, lib/adcin): on the real micropython binary,
the host board's emulated front end and 12-bit converter, and the plant.

- lib/adcin: the trimmed mean of N conversions, µV from read_uv() (ESP32) or read_u16()
  scaled (RP2040, the host board), spikes rejected, its refusals; allocation-free under
  heap_lock, heatgw.analog's whole tick too;
- the two-point line: exact integer arithmetic, the same on the binary and in CPython,
  within a stated bound of the exact rational line, for current, voltage, reversed and
  commissioning-measured points; and the configurations it refuses (device and host
  alike);
- wire break at the limit and recovery: no value and a reason, never a number, and the
  fail-safe's sensor_fault:<name>;
- scenarios through host_tools.harness (the oracle computes when each condition appeared
  from what it served, as the node's converter reads it): a stuck valve seen only by its
  4-20 mA feedback, and a loop pressure falling below its limit;
- the telemetry payload's new keys against the JSON Schema, live and from a backlog
  record; Home Assistant's entities; the complete-node day's analogue part.
"""

import json
import sys
from fractions import Fraction

import pytest

from host_tools.harness import run_scenario
from host_tools.paths import FIRMWARE, LIB, REPO
from tests.payload_schemas import validate

for _p in (FIRMWARE, LIB / "adcin"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

from heatgw import analog, anschema, hadisc  # noqa: E402
from heatgw.config_schema import SCHEMA  # noqa: E402
from heatgw.schema import validate as validate_cfg  # noqa: E402
from heatgw.topics import Topics  # noqa: E402

SCENARIOS = REPO / "scenarios"
T = Topics("heatgw", "s1", "n1")


def one(mp, src, **kw):
    out = mp.run_json(src, **kw)
    assert len(out) == 1, out
    return out[0]


# -- lib/adcin ---------------------------------------------------------------------------

ADCIN_SRC = r"""
import json
from adcin import ADCInput

class UV:  # an ESP32-like ADC: read_uv(), eFuse-corrected µV (whole mV, as the port gives)
    def __init__(self, seq):
        self.seq = seq
        self.i = 0
    def read_uv(self):
        v = self.seq[self.i % len(self.seq)]
        self.i += 1
        return v

class U16:  # an RP2040-like ADC: read_u16() only
    def __init__(self, v):
        self.v = v
    def read_u16(self):
        return self.v

out = {}
# 16 conversions around 1.500 V with two spikes (a radio burst): dropped by the trim
seq = [1500000, 1501000, 1499000, 1500000] * 3 + [1500000, 1500000, 3100000, 0]
a = ADCInput(UV(seq), samples=16)
out["uv"] = [a.read_uv(), a.spread_uv]
b = ADCInput(UV(seq), samples=16, trim=0)  # a plain mean would be off by 100 mV
out["plain"] = b.read_uv()
out["u16"] = [ADCInput(U16(v), samples=4, uv_full_scale=3300000).read_uv()
              for v in (0, 1, 32768, 65535)]
errs = []
for kw in ({"samples": 2}, {"samples": 65}, {"samples": 8, "trim": 4}, {"samples": 8}):
    try:
        ADCInput(U16(0), **kw)
        errs.append("accepted")
    except ValueError as e:
        errs.append(str(e)[:30])
out["errs"] = errs
print(json.dumps(out))
"""


def test_adcin_trimmed_mean_in_microvolts(mp):
    r = one(mp, ADCIN_SRC)
    seq = sorted([1500000, 1501000, 1499000, 1500000] * 3 + [1500000, 1500000, 3100000, 0])
    assert r["uv"] == [sum(seq[4:12]) // 8, seq[11] - seq[4]] == [1500000, 0]  # middle 8
    assert r["plain"] == (sum(seq) + 8) // 16 == 1506250  # the burst's 6 mV, trimmed out
    s = (3_300_000 * 256 + 32768) // 65536
    assert r["u16"] == [(v * s + 128) >> 8 for v in (0, 1, 32768, 65535)]
    assert abs(r["u16"][3] - 3_300_000) <= 50 and abs(r["u16"][2] - 1_650_025) <= 25
    assert r["errs"][:3] == ["samples must be 3..64", "samples must be 3..64",
                             "trim must leave at least one c"]
    assert r["errs"][3].startswith("an ADC without read_uv() need")


TICK_SRC = r"""
import json, micropython
import board
from heatgw.analog import Analog
from heatgw.failsafe import Inputs
cfg = {"samples": 16,
       "valve": {"channel": "ain1", "signal": "4-20mA", "signal_lo": None, "signal_hi": None,
                 "break_ma": 3.6, "over_ma": 21.0, "critical": True, "tolerance_pct": 10.0,
                 "output": "relay"},
       "inputs": {"loop_pressure": {"channel": "ain2", "kind": "pressure",
                                    "signal": "4-20mA", "value_lo": 0.0, "value_hi": 6.0,
                                    "unit": "bar", "break_ma": 3.6, "over_ma": 21.0,
                                    "low": 1.0, "high": None, "hyst": None},
                  "tank_level": {"channel": "ain3", "kind": "level", "signal": "0-10V",
                                 "value_lo": 0.0, "value_hi": 2.0, "unit": "m",
                                 "break_v": None, "over_v": 10.5}}}
for ch, kind, x in (("ain1", "ma", 12.0), ("ain2", "ma", 9.07), ("ain3", "v", 8.0)):
    board.adc_channel(ch).set_signal(kind, x, 3)  # with conversion noise: +-3 codes
an = Analog(cfg, board)
ins = Inputs((), an.names())
an.sample(ins, 1)  # warm up (first-call allocations are not the tick's)

def ticks(n):
    micropython.heap_lock()
    try:
        for t in range(n):
            an.sample(ins, t)
    except MemoryError:
        micropython.heap_unlock()
        return False
    micropython.heap_unlock()
    return True

ok = ticks(500)
reads = board.adc_channel("ain1").reads
print(json.dumps({"ok": ok, "reads": reads, "values": ins.readings,
                  "why": ins.reading_reasons, "valid": ins.reading_valid_ms}))
"""


def test_a_tick_of_every_input_allocates_nothing_under_heap_lock(mp):
    """500 ticks of three inputs, 16 noisy conversions each, sorted and converted into
    the fail-safe's tables, with the heap locked (on a 32-bit binary a long int or a float
    would allocate and fail)."""
    r = one(mp, TICK_SRC)
    assert r["ok"] is True
    assert r["reads"] == 501 * 16
    v = r["values"]
    assert abs(v["valve"] - 50_000) <= 100  # 12 mA: 50 % (milli-%)
    assert abs(v["loop_pressure"] - 1_901) <= 5  # 9.07 mA on 0-6 bar: 1.901 bar (mbar)
    assert abs(v["tank_level"] - 1_600) <= 5  # 8 V on 0-2 m: 1.6 m (mm)
    assert set(r["why"].values()) == {None} and set(r["valid"].values()) == {499}


# -- the two-point line ------------------------------------------------------------------

LINES = [  # (signal, signal_lo, signal_hi, value_lo, value_hi)
    ("4-20mA", 4.0, 20.0, 0.0, 100.0),  # the valve
    ("4-20mA", 4.0, 20.0, 0.0, 6.0),  # 0-6 bar
    ("4-20mA", 4.0, 20.0, 100.0, 0.0),  # reversed: 4 mA = open
    ("4-20mA", 4.23, 19.61, 0.0, 100.0),  # measured at commissioning
    ("0-10V", 0.0, 10.0, 0.0, 2.0),  # 0-2 m
    ("2-10V", 2.0, 10.0, -1.0, 16.0),  # -1..16 bar
    ("4-20mA", 4.0, 20.0, -100000.0, 100000.0),  # the widest range the schema allows
]
FRONT = (100, (39000, 10000))  # every board's front end


def exact_milli(sig, lo, hi, v_lo, v_hi, q):
    """The exact line at reading q (64 µV steps), in milli-units (a Fraction)."""
    u_lo, u_hi = (analog.pin_uv(sig, x, *FRONT) for x in (lo, hi))
    m_lo, m_hi = analog.milli(v_lo), analog.milli(v_hi)
    return m_lo + Fraction(m_hi - m_lo, u_hi - u_lo) * (q * 64 - u_lo)


def qs():
    return list(range(0, 62501, 97)) + [0, 5625, 6250, 31250, 62500]


LINE_SRC = r"""
import json
from heatgw.analog import Linear, milli, pin_uv
out = []
for sig, lo, hi, v_lo, v_hi in LINES:
    front = (100, (39000, 10000))
    lin = Linear(pin_uv(sig, lo, *front), milli(v_lo), pin_uv(sig, hi, *front), milli(v_hi))
    out.append([lin.milli(q) for q in QS])
print(json.dumps(out))
"""


def test_two_point_line_is_exact_within_its_bound_and_identical_on_the_binary(mp):
    """Every line, every reading over the converter's range: the binary's fixed-point
    result equals CPython's to the bit (integers only), and it is within span / 8192 + 1
    milli-unit of the exact rational line (|gain| kept in [4096, 8192): 0.012 % of the
    span, far below any ADC's error here)."""
    src = f"LINES = {LINES!r}\nQS = {qs()!r}\n" + LINE_SRC
    got = one(mp, src)
    for (sig, lo, hi, v_lo, v_hi), ms in zip(LINES, got, strict=True):
        lin = analog.Linear(analog.pin_uv(sig, lo, *FRONT), analog.milli(v_lo),
                            analog.pin_uv(sig, hi, *FRONT), analog.milli(v_hi))
        assert ms == [lin.milli(q) for q in qs()]  # CPython: the same integers
        span = abs(analog.milli(v_hi) - analog.milli(v_lo))
        # the bound, measured over the signal's own range (a wider reading scales it)
        ends = sorted(analog.to_q(analog.pin_uv(sig, x, *FRONT)) for x in (lo, hi))
        for q, m in zip(qs(), ms, strict=True):
            err = abs(m - exact_milli(sig, lo, hi, v_lo, v_hi, q))
            scale = max(1, abs(q - ends[0]) / max(1, ends[1] - ends[0]))
            assert err <= span / 8192 * scale + 1, (sig, lo, hi, v_lo, v_hi, q, m, err)
            assert -(1 << 30) <= m < (1 << 30)  # a small int on a 32-bit port
        # the points themselves
        for x, v in ((lo, v_lo), (hi, v_hi)):
            q = analog.to_q(analog.pin_uv(sig, x, *FRONT))
            assert abs(lin.milli(q) - analog.milli(v)) <= span / 8192 + 2


REFUSE_SRC = r"""
import json
from heatgw.analog import Linear
out = []
for args in ((400000, 0, 400030, 100000), (400000, 5, 2000000, 5), (400000, 0, 400640, -10**8)):
    try:
        Linear(*args)
        out.append("accepted")
    except ValueError as e:
        out.append(str(e)[:40])
print(json.dumps(out))
"""


def test_the_line_refuses_nonsense_on_the_binary(mp):
    assert one(mp, REFUSE_SRC) == ["the two calibration points have the same",
                                   "the two calibration points have the same",
                                   "value range too large for the signal: -1"]


GOOD = {"version": 2, "analog": {
    "valve": {"channel": "ain1", "signal": "4-20mA"},
    "inputs": {"loop_pressure": {"channel": "ain2", "kind": "pressure", "signal": "4-20mA",
                                 "value_lo": 0, "value_hi": 6, "unit": "bar", "low": 1.0}}}}


def bad(path, value):
    doc = json.loads(json.dumps(GOOD))
    node = doc["analog"]
    *parents, key = path
    for p in parents:
        node = node.setdefault(p, {})
    node[key] = value
    return doc


MISTAKES = [
    (bad(("valve", "signal_hi"), 4.0), "analog.valve: signal_lo and signal_hi are both 4"),
    (bad(("inputs", "loop_pressure", "value_hi"), 0), "the two calibration points have the "
     "same value"),
    (bad(("inputs", "loop_pressure", "signal_lo"), 3.5), "the wire-break limit 3.6 mA must "
     "be below"),
    (bad(("inputs", "loop_pressure", "over_ma"), 19.0), "the over-range limit 19 mA must be "
     "above"),
    (bad(("inputs", "loop_pressure", "low"), 7.0), "analog.inputs.loop_pressure.low: 7"),
    (bad(("inputs", "loop_pressure", "high"), 1.1), "low 1 and high 1.1 overlap"),
    (bad(("inputs", "loop_pressure", "unit"), "m"), "m is no unit of pressure"),
    (bad(("inputs", "loop_pressure", "channel"), "ain1"), "ain1 is used by analog.valve"),
    (bad(("inputs", "flow"), {"channel": "ain3", "kind": "level", "signal": "0-10V",
                              "value_lo": 0, "value_hi": 2, "unit": "m"}),
     "analog.inputs.flow: the name is taken"),
    (bad(("inputs", "loop_pressure", "signal"), "0-20mA"), 'signal: "0-20mA" is not allowed'),
    (bad(("valve", "tolerance_pct"), 60), "tolerance_pct: 60 is above the maximum 49"),
    (bad(("valve", "output"), "pwm"), None),  # fine: open 10 V, closed 0 V
    (bad(("valve", "closed_v"), 10.0) | {}, "open_v and closed_v are both 10 V"),
    (bad(("inputs", "a"), {}), "analog.inputs.a.channel: required"),
    (bad(("inputs", "loop_pressure", "signal_hi"), 4.01), "are too close"),
    (bad(("inputs", "loop_pressure", "value_hi"), 100000.0) | {}, "value range too large"),
]
MISTAKES[-1][0]["analog"]["inputs"]["loop_pressure"]["signal_hi"] = 6.0  # 1e5 bar in 2 mA
MISTAKES[12][0]["analog"]["valve"]["output"] = "pwm"  # a pwm output that cannot move
_LEVEL = {"channel": "ain3", "kind": "level", "signal": "0-10V", "value_lo": 0,
          "value_hi": 2, "unit": "m"}
_FOUR = bad(("inputs", "b"), dict(_LEVEL))  # four inputs: one more than a record keeps
_FOUR["analog"]["inputs"].update({"c": dict(_LEVEL, channel="ain4"),
                                  "d": dict(_LEVEL, channel="ain5")})
MISTAKES.append((_FOUR, "at most 3"))


def host_errors(doc):
    anschema.install(SCHEMA)
    cfg, errors = validate_cfg(doc, SCHEMA)
    if not errors and cfg.get("analog"):
        errors = anschema.check(cfg)
    return errors


@pytest.mark.parametrize("doc, want", MISTAKES, ids=[str(w) for _, w in MISTAKES])
def test_configuration_refuses_nonsense_on_the_host(doc, want):
    errors = host_errors(doc)
    if want is None:
        assert errors == []
    else:
        assert errors and any(want in e for e in errors), errors


DEVICE_SRC = r"""
import json
from heatgw import config
out = []
for i, doc in enumerate(DOCS):
    p = "/tmp/heatgw-analog-cfg-%d.json" % i
    with open(p, "w") as f:
        f.write(json.dumps(doc))
    cfg, errors, source, mig = config.load(p, save=False)
    out.append([source, errors])
print(json.dumps(out))
"""


def test_configuration_refusals_are_the_same_on_the_device(mp, tmp_path):
    """config.load on the binary: the same errors as the host's check, and a bad file runs
    the default configuration (bypass)."""
    docs = [GOOD] + [d for d, _ in MISTAKES]
    src = DEVICE_SRC.replace("/tmp/heatgw-analog-cfg-", str(tmp_path / "c-"))
    got = one(mp, f"DOCS = {json.dumps(docs)}\n" + src)
    assert got[0] == ["file", []]
    for (doc, _want), (source, errors) in zip(MISTAKES, got[1:], strict=True):
        host = host_errors(doc)
        assert errors == host, (doc, errors, host)
        assert source == ("file" if not host else "default")


# -- wire break --------------------------------------------------------------------------

BREAK_SRC = r"""
import json
import board
from heatgw.analog import Analog
from heatgw.failsafe import FailSafe, Inputs
cfg = {"inputs": {"loop_pressure": {"channel": "ain2", "kind": "pressure",
                                    "signal": "4-20mA", "value_lo": 0.0, "value_hi": 6.0,
                                    "unit": "bar", "break_ma": 3.6, "over_ma": 21.0}}}
an = Analog(cfg, board)
ins = Inputs((), an.names())
fs = FailSafe({"recover_s": 0, "min_dwell_s": 0, "sink_signal": False, "stale_s": 5},
              sensors_cfg={}, flow_cfg=None, now_ms=0, readings=an.critical(5000),
              milli_readings=an.names())
out = []
t = 0
for ma in MA:
    board.adc_channel("ain2").set_signal("ma", ma) if ma is not None else \
        board.adc_channel("ain2").set_signal("open", 0)
    an.sample(ins, t)
    ev = fs.update(t, ins)
    out.append([ma, ins.readings["loop_pressure"], ins.reading_reasons["loop_pressure"],
                sorted(fs.active), [(e["kind"], e["reason"]) for e in ev if e["kind"] in
                                    ("trip", "clear")]])
    t += 1000
print(json.dumps(out))
"""


def test_wire_break_at_the_limit_and_recovery(mp):
    """3.6 mA is the limit (NAMUR NE 43): the 12-bit converter resolves ~8 µA there, so
    20 µA either side is each side. Below it and at 0 mA (the wire cut): no value, reason
    wire_break, the fail-safe's sensor_fault:loop_pressure; back above it: the value and
    the fault cleared. Above 21 mA: over_range."""
    ma = [12.0, 3.62, 3.58, None, 3.58, 3.62, 20.98, 21.1, 24.0, 12.0]
    r = one(mp, f"MA = {ma!r}\n" + BREAK_SRC)
    vals = [x[1] for x in r]
    whys = [x[2] for x in r]
    assert whys == [None, None, "wire_break", "wire_break", "wire_break", None, None,
                    "over_range", "over_range", None]
    assert vals[1] == pytest.approx(-142, abs=4)  # 3.62 mA on 0-6 bar: -0.142 bar, a value
    assert vals[2] is None and vals[3] is None and vals[7] is None  # never a made-up number
    assert vals[6] == pytest.approx(6367, abs=4) and vals[9] == pytest.approx(3000, abs=4)
    fault = "sensor_fault:loop_pressure"
    trips = [(i, e) for i, x in enumerate(r) for e in x[4] if e[1] == fault]
    assert trips == [(2, ["trip", fault]), (5, ["clear", fault]), (7, ["trip", fault]),
                     (9, ["clear", fault])]
    assert [fault in x[3] for x in r] == [False, False, True, True, True, False, False, True,
                                           True, False]


def test_wire_break_is_refused_below_the_lower_point_and_unset_for_0_10_volt():
    """The schema's defaults: 4-20 mA breaks below 3.6 mA; a 0-10 V input has no break
    detection (a broken wire reads 0 V, a valid value); a 2-10 V one may set break_v."""
    cfg, errors = validate_cfg({"inputs": {"t": {"channel": "ain3", "kind": "level",
                                                 "signal": "0-10V", "value_lo": 0,
                                                 "value_hi": 2, "unit": "m"}}},
                               anschema.ANALOG)
    assert errors == []
    c = cfg["inputs"]["t"]
    assert c["break_v"] is None and c["over_v"] == 10.5 and c["break_ma"] == 3.6


# -- the fail-safe's new conditions --------------------------------------------------------

LIMITS_SRC = r"""
import json
from heatgw.failsafe import FailSafe, Inputs
ctl = {"recover_s": 0, "min_dwell_s": 0, "sink_signal": False, "valve_travel_s": 45,
       "valve_feedback": FB}
fs = FailSafe(ctl, sensors_cfg={}, flow_cfg=None, now_ms=0,
              input_limits=(("p", "input_low:p", 1000, 1200, "input_high:p", 3000, 2800),),
              valve_reading=("valve", 10000), milli_readings=("p", "valve"))
ins = Inputs((), ("p", "valve"))
out = []
t = 0
for p, why, valve, switch in STEPS:
    ins.readings["p"] = p
    ins.reading_reasons["p"] = why
    ins.readings["valve"] = valve
    ins.reading_reasons["valve"] = None if valve is not None else "wire_break"
    ins.valve_at_reuse = switch
    ev = fs.update(t, ins)
    out.append([t // 1000, fs.state, sorted(fs.active), sorted(fs.latched),
                [[e["kind"], e["reason"], e.get("values")] for e in ev
                 if e["kind"] in ("trip", "clear", "latch")]])
    t += 1000
print(json.dumps(out))
"""


def limits_run(mp, steps, feedback=False):
    return one(mp, f"STEPS = {steps!r}\nFB = {feedback!r}\n" + LIMITS_SRC)


def test_input_limits_trip_and_clear_with_hysteresis(mp):
    """input_low trips below the limit and clears only above limit + hyst; input_high the
    mirror; a reading with a reason holds them as they are; the events carry the values
    in the input's unit."""
    v = 0  # the valve at its commanded 0 % (bypass): no valve trouble here
    steps = [[1500, None, v, None], [999, None, v, None], [1100, None, v, None],
             [1200, None, v, None], [1201, None, v, None], [2900, None, v, None],
             [3001, None, v, None], [2800, None, v, None], [2799, None, v, None],
             [500, "wire_break", v, None], [3500, None, v, None], [500, "wire_break", v, None],
             [1500, None, v, None]]
    r = limits_run(mp, steps)
    trips = [(x[0], e[0], e[1]) for x in r for e in x[4] if e[1].startswith("input_")]
    assert trips == [(1, "trip", "input_low:p"), (4, "clear", "input_low:p"),
                     (6, "trip", "input_high:p"), (8, "clear", "input_high:p"),
                     (10, "trip", "input_high:p"), (12, "clear", "input_high:p")]
    ev = r[1][4][0]
    assert ev[2] == {"input": "p", "value": 0.999, "limit": 1.0, "clear": 1.2}
    assert [x[1] for x in r][:2] == ["reuse", "bypass"]  # boot clears at once (no dwell)


def test_valve_stuck_from_analogue_feedback_alone_and_with_an_end_switch(mp):
    """The valve's position against its command (0 % bypass, 100 % reuse; tolerance 10 %
    here): beyond it for longer than the travel time (45 s) is valve_stuck, latching,
    without an end switch; with one too, either disagreeing trips; a wire-broken feedback
    neither agrees nor disagrees."""
    def stuck(r):
        return [(x[0], e) for x in r for e in x[4] if e[1] == "valve_stuck"]

    # reuse from the first update (no dwell): command 100 %, the valve stays at 0 %
    r = limits_run(mp, [[1500, None, 0, None]] * 48)
    (t, trip), (t2, latch), (t3, clear) = stuck(r)
    assert (t, trip[0], t2, latch[0]) == (46, "trip", 46, "latch")  # 46 s > 45 s travel
    assert trip[2]["valve_pct"] == 0.0 and r[46][3] == ["valve_stuck"]
    # bypass commands 0 %, where the valve is: the condition clears, the latch holds
    assert (t3, clear[0]) == (47, "clear") and r[47][3] == ["valve_stuck"]
    # it moves and arrives (90 % is within 10 %): no trip
    moving = [[1500, None, min(100000, i * 4000), None] for i in range(60)]
    assert stuck(limits_run(mp, moving)) == []
    # a broken feedback wire: no value, no verdict (sensor_fault is its own condition)
    assert stuck(limits_run(mp, [[1500, None, None, None]] * 60)) == []
    # with an end switch that says "at reuse" while the feedback says 50 %: stuck
    r = limits_run(mp, [[1500, None, 50000, True]] * 48, feedback=True)
    assert stuck(r)[0][0] == 46
    assert stuck(limits_run(mp, [[1500, None, 99000, True]] * 60, feedback=True)) == []
    # and the end switch still counts: at 100 % measured but the switch never closes
    assert stuck(limits_run(mp, [[1500, None, 100000, None]] * 48, feedback=True))[0][0] == 46


# -- scenarios through the harness ----------------------------------------------------------

_runs = {}


def scenario(name, tmp_path_factory):
    if name not in _runs:
        _runs[name] = run_scenario(SCENARIOS / f"{name}.json",
                                   workdir=tmp_path_factory.mktemp(name))
    return _runs[name]


def check_trips_within_a_tick(s, h):
    assert "Traceback" not in h.console_path.read_text()
    tick_s = s["control_tick_s"]
    for t in s["trips"]:
        assert t["bypass_t_s"] is not None, t
        assert 0 <= t["latency_s"] <= tick_s, t
    for tr in s["relay_transitions"]:
        if tr["state"] == "bypass" and tr["t_s"] < s["duration_s"]:
            assert tr["condition_t_s"] is not None and tr["reason"], tr


def test_stuck_valve_is_seen_from_its_analogue_feedback(tmp_path_factory):
    """No end switch: the 4-20 mA position feedback alone. The oracle's onset is the time
    commanded and measured (as the node's converter reads the served current) have
    disagreed beyond the 10 % tolerance for the 45 s travel time; the relay drops within
    one control tick of it. Latched twice (seized at the bypass end, then at the reuse
    end), a wire break is sensor_fault:valve, and the node's 0-10 V output is what moved
    the valve."""
    s, h = scenario("valve_stuck_analog", tmp_path_factory)
    check_trips_within_a_tick(s, h)
    assert h.cfg["control"]["valve_feedback"] is False
    stuck = [t for t in s["trips"] if t["reason"] == "valve_stuck"]
    assert len(stuck) == 1  # the second one appears with the relay already dropped
    first_reuse = next(tr["t_s"] for tr in s["relay_transitions"] if tr["state"] == "reuse")
    # onset: the command (first reuse) + the travel time; the node trips within a tick
    assert stuck[0]["condition_t_s"] == pytest.approx(first_reuse + 45, abs=1.0)
    latch = [e for e in h.node_events if e.get("kind") == "latch"]
    assert [e["reason"] for e in latch] == ["valve_stuck", "valve_stuck"]
    assert latch[0]["values"]["valve_pct"] == pytest.approx(0, abs=0.5)
    assert latch[1]["values"]["valve_pct"] == pytest.approx(100, abs=0.5)  # held open
    assert [c["reason"] for c in s["conditions"]].count("valve_stuck") == 2
    # the second latch holds bypass until the reset at 4200 s (valve freed at 3600 s)
    reuse = [tr["t_s"] for tr in s["relay_transitions"] if tr["state"] == "reuse"]
    assert not [t for t in reuse if latch[1]["harness_t_s"] < t < 4200]
    # the wire break: a fault, no made-up position
    fault = [t for t in s["trips"] if t["reason"] == "sensor_fault:valve"]
    assert len(fault) == 1 and fault[0]["condition_t_s"] == 4800
    trip = next(e for e in h.node_events if e.get("kind") == "trip"
                and e.get("reason") == "sensor_fault:valve")
    assert trip["values"] == {"sensor": "valve", "sensor_reason": "wire_break", "value": None}
    # the valve's 0-10 V command: full open exactly while the reuse relay is driven
    duty = [p for p in s["pin_transitions"] if p[1] == "valve_out"]
    relay = [p for p in s["pin_transitions"] if p[1] == "reuse"]
    assert [d[0] for d in duty] == [r[0] for r in relay]  # from boot on (relays_safe)
    assert [d[2] for d in duty] == [65535 if r[2] == 0 else 0 for r in relay]
    assert s["plant"]["max_it_coolant_c"] < s["plant"]["it_coolant_limit_c"]
    assert s["analog"]["valve"]["why"] is None and s["analog"]["valve"]["unit"] == "%"


def test_loop_pressure_low_bypasses_with_hysteresis(tmp_path_factory):
    """A leak takes the loop below 1.0 bar: input_low:loop_pressure within one control
    tick of the served (quantised) pressure crossing it; refilled it clears above 1.2 bar
    and reuse returns after recover_s; a broken transmitter wire is
    sensor_fault:loop_pressure with no value."""
    s, h = scenario("loop_pressure", tmp_path_factory)
    check_trips_within_a_tick(s, h)
    seen = {t["reason"]: t for t in s["trips"]}
    assert set(seen) == {"input_low:loop_pressure", "sensor_fault:loop_pressure"}
    low = seen["input_low:loop_pressure"]
    # fill 1.5 -> 0.5 bar over 610 s from 1200 s, +0.4 bar pump head: 1.0 bar at 1749 s,
    # served from the 1750 s plant step
    assert low["condition_t_s"] == 1750
    trip = next(e for e in h.node_events if e.get("reason") == "input_low:loop_pressure")
    assert trip["values"]["limit"] == 1.0 and trip["values"]["clear"] == 1.2
    assert 0.99 <= trip["values"]["value"] < 1.0
    clear = next(e for e in h.node_events if e.get("kind") == "clear"
                 and e.get("reason") == "input_low:loop_pressure")
    assert clear["harness_t_s"] == pytest.approx(2400, abs=1)
    back = [tr["t_s"] for tr in s["relay_transitions"]
            if tr["state"] == "reuse" and 2400 <= tr["t_s"] < 3600]
    assert back and back[0] >= 2400 + h.cfg["control"]["recover_s"]
    assert seen["sensor_fault:loop_pressure"]["condition_t_s"] == 3600
    rec = s["analog"]
    assert rec["loop_pressure"]["value"] == pytest.approx(1.9, abs=0.005)
    assert rec["loop_pressure"]["signal"] == pytest.approx(4 + 16 * 1.9 / 6, abs=0.01)
    assert rec["tank_level"]["value"] == pytest.approx(1.6, abs=0.005)


# -- payloads ----------------------------------------------------------------------------

PAYLOAD_SRC = r"""
import json
import board
from heatgw import fluid, payloads
from heatgw.analog import Analog
from heatgw.failsafe import FailSafe, Inputs
from heatgw.meter import HeatMeter
from heatgw.payloads import Snapshot, Writer
from heatgw import recqueue as rq

ACFG = {"valve": {"channel": "ain1", "signal": "4-20mA", "break_ma": 3.6, "over_ma": 21.0},
        "inputs": {"loop_pressure": {"channel": "ain2", "kind": "pressure",
                                     "signal": "4-20mA", "value_lo": 0.0, "value_hi": 6.0,
                                     "unit": "bar", "break_ma": 3.6, "over_ma": 21.0},
                   "tank_level": {"channel": "ain3", "kind": "level", "signal": "0-10V",
                                  "value_lo": 0.0, "value_hi": 2.0, "unit": "m",
                                  "over_v": 10.5}}}

class Gw:
    pass

gw = Gw()
gw.analog = Analog(ACFG, board)
gw.inputs = Inputs(("supply", "return"), gw.analog.names())
gw.flow = None
gw.meter = HeatMeter(fluid.water(), meter_in_return=True, cutoff_k=0.2)
gw.failsafe = FailSafe({}, sensors_cfg={}, flow_cfg=None, now_ms=0)
gw.boot_id = 3
gw.uptime_ms = 1000
out = []
snap = Snapshot()
snap.set_analog(ACFG)
q = rq.RecordQueue(QDIR, 50, segments=4)
for reuse, sig in ((True, (("ma", 19.9), ("ma", 9.07), ("v", 8.0))),
                   (False, (("ma", 4.1), ("open", 0), ("v", 10.0))),
                   (False, (("ma", 22.0), ("ma", 20.0), ("v", 0.0)))):
    gw.relay_reuse = reuse
    for ch, (k, x) in zip(("ain1", "ain2", "ain3"), sig):
        board.adc_channel(ch).set_signal(k, x)
    gw.analog.sample(gw.inputs, 0)
    snap.take(gw, heap_free=1000)
    live = bytes(payloads.telemetry(Writer(1024), snap, 1)).decode()
    seq = q.append(rq.KIND_TELEMETRY, {"boot": 3, "up_ms": 1000, "totals": gw.meter.totals(),
                                        "relay": reuse, "valve_q": snap.valve_q,
                                        "ain_q": snap.ain_q})
    rec = q.get(seq)
    out.append([live, rec["valve_q"], rec["ain_q"],
                [gw.analog.judge("valve", rec["valve_q"]),
                 [gw.analog.judge(n, x) for n, x in zip(snap.ain, rec["ain_q"])]]])
print(json.dumps(out))
"""


def test_payload_keys_live_and_from_the_queue_record_pass_the_schema(mp, tmp_path):
    """The telemetry payload's valve and inputs keys from live readings pass the JSON
    Schema; a value with a reason is null; the queue record keeps each reading at the pin
    and converting it again gives the same values and reasons (what a backlog record's
    payload shows)."""
    rows = one(mp, PAYLOAD_SRC.replace("QDIR", repr(str(tmp_path / "q"))))
    docs = [validate(T.telemetry, live.encode()) for live, *_ in rows]
    d0, d1, d2 = docs
    assert (d0["valve_cmd_pct"], d0["valve_why"]) == (100, None)
    assert d0["valve_pct"] == pytest.approx(99.4, abs=0.05)
    assert d0["inputs"] == {"loop_pressure": {"value": pytest.approx(1.901, abs=0.003),
                                              "why": None},
                            "tank_level": {"value": pytest.approx(1.6, abs=0.002),
                                           "why": None}}
    assert (d1["valve_cmd_pct"], d1["valve_pct"]) == (0, pytest.approx(0.6, abs=0.05))
    assert d1["inputs"]["loop_pressure"] == {"value": None, "why": "wire_break"}
    assert d2["valve_pct"] is None and d2["valve_why"] == "over_range"
    assert d2["inputs"]["loop_pressure"]["value"] == 6.0
    assert d2["inputs"]["tank_level"]["value"] == 0.0
    for (_live, _vq, _aq, (valve, ins)), d in zip(rows, docs, strict=True):
        if d["valve_why"] is None:
            assert valve[0] / 1000 == pytest.approx(d["valve_pct"], abs=0.05)
        else:
            assert valve == [None, d["valve_why"]]
        for (m, why), name in zip(ins, ("loop_pressure", "tank_level"), strict=False):
            assert why == d["inputs"][name]["why"]
            if why is None:
                assert m / 1000 == pytest.approx(d["inputs"][name]["value"], abs=0.0011)


def test_worst_case_payload_fits_the_client_packet():
    """Every RTD failing with its longest reason, the valve's feedback and three inputs
    with 16-character names broken too, each one's fault and staleness active: the
    payload would outgrow the 1 KB payload buffer (an oversized payload is never sent), so
    telemetry gives a node with analogue inputs 1.25 KB of base payload (the recovery keys
    and the Modbus meters have their own room after it, the MQTT packet's bound is the
    buffer plus 256 bytes for the topic and header), and `active` is cut to fit the limit
    it sets, ending with "+<n> more" (the state payload and the events name them all).
    The analogue keys cost 77 bytes, and an input ~35 more with its name."""
    from heatgw import payloads
    from heatgw.payloads import Snapshot, Writer

    src = (FIRMWARE / "heatgw" / "telemetry.py").read_text()  # (MicroPython-only module)
    assert "_PACKET = const(1024)" in src and "_PACKET_ANALOG = const(256)" in src
    assert "self.w.limit = room - 14" in src and "max_packet=size + 256" in src
    names = ("loop_pressure_it", "loop_pressure_bl", "tank_level_bldg")
    s = Snapshot()
    for n in s.names:
        s.configured[n] = True
        s.reasons[n] = "rtd_high_threshold"
    s.flow_why = "not_configured"
    active = []
    for n in ("sink_return", "it_coolant", "valve") + names:
        active += ["sensor_fault:" + n, "sensor_stale:" + n]
    s.active = tuple(active)
    s.latched = ("valve_stuck", "it_coolant_high")
    s.reason = "it_coolant_high"
    s.utc = 1_790_000_000
    s.heap_free = 9_999_999
    s.boot, s.up_ms = 65535, 10 * 365 * 86_400_000
    s.set_analog({"valve": {}, "inputs": {n: {"unit": "mbar"} for n in names}})
    s.valve, s.valve_why = True, "wire_break"
    for i in range(3):
        s.ain_why[i] = "wire_break"
    topic = "heatgw/" + "s" * 32 + "/" + "n" * 32 + "/telemetry"  # the longest
    packet = 1024 + 256  # _PACKET + _PACKET_ANALOG: a node with analogue inputs
    w = Writer(packet)
    w.limit = packet - 14  # as heatgw.telemetry sets it (a resent flag after it)
    s.up_ms = 10 * 365 * 86_400_000
    s.limbs[0] = s.limbs[1] = s.limbs[2] = (1 << 30) - 1  # 90-bit energy: 15 digits
    text = bytes(payloads.telemetry(w, s, 4294967295)).decode()
    d = validate(T.telemetry, text.encode())
    # the worst case of faults needs the 1.25 KB (over 1 KB) and fits it whole
    assert 1024 < len(text) and len(text) + len(',"resent":true') <= packet
    assert 5 + 2 + len(topic) + 2 + len(text) + len(',"resent":true') <= packet + 256
    assert d["active"] == active and d["latched"] == list(s.latched)
    # a longer `active` (every input's limit trip as well) is cut to the limit
    longer = active + ["input_low:" + n for n in names] + ["input_high:" + n for n in names]
    s.active = tuple(longer)
    text = bytes(payloads.telemetry(w, s, 4294967295)).decode()
    d = validate(T.telemetry, text.encode())
    assert len(text) + len(',"resent":true') <= packet
    assert d["active"][-1].endswith(" more") and d["latched"] == list(s.latched)
    kept = d["active"][:-1]
    assert kept == longer[:len(kept)] and int(d["active"][-1].split()[0]) == \
        len(longer) - len(kept)
    assert len(kept) >= 12
    w2 = Writer(4096)
    w2.limit = 4096
    assert json.loads(bytes(payloads.telemetry(w2, s, 1)))["active"] == longer
    plain = Snapshot()
    text = bytes(payloads.telemetry(Writer(1024), plain, 1)).decode()
    keys = ',"valve_cmd_pct":0,"valve_pct":null,"valve_why":"not_configured","inputs":{}'
    assert keys in text  # always there: 77 bytes
    plain.set_analog({"valve": {"channel": "ain1"}, "inputs": {"p": {"unit": "bar"}}})
    plain.valve_why = plain.ain_why[0] = "wire_break"
    more = len(bytes(payloads.telemetry(Writer(1024), plain, 1))) - len(text)
    assert more == len('"p":{"value":null,"why":"wire_break"}') - 4, more  # valve: -4


def test_home_assistant_entities_for_the_analogue_inputs():
    acfg = {"valve": {"channel": "ain1"},
            "inputs": {"loop_pressure": {"kind": "pressure", "unit": "bar"},
                       "tank_level": {"kind": "level", "unit": "m"},
                       "tank_pct": {"kind": "level", "unit": "%"}}}
    cfgs = [(t, json.loads(p))
            for t, p in hadisc.configs(T, "homeassistant", cfg={"analog": acfg})]
    for t, p in cfgs:
        validate(t, json.dumps(p).encode())
    by = {t.split("/")[-2]: p for t, p in cfgs}
    assert len(cfgs) == len(hadisc.ENTITIES) + 5
    assert by["valve_pct"]["unit_of_measurement"] == "%" and "device_class" not in by[
        "valve_pct"]
    assert by["input_loop_pressure"]["device_class"] == "pressure"
    assert by["input_loop_pressure"]["value_template"] == \
        "{{ value_json.inputs.loop_pressure.value }}"
    assert by["input_tank_level"]["device_class"] == "distance"
    assert "device_class" not in by["input_tank_pct"]
    rem = {t for t, _ in hadisc.removals(T, "homeassistant", cfg={"analog": acfg})}
    assert rem == {t for t, _ in cfgs}
    assert len(list(hadisc.configs(T, "homeassistant"))) == len(hadisc.ENTITIES)


# -- the complete-node day -----------------------------------------------------------------


def test_day_measures_the_valve_and_the_loop_pressure_all_day(complete_node_day):
    """The day's analogue part (tests/siteday.py `analog`): the valve's 4-20 mA feedback
    beside its end switch and the node's 0-10 V command, the loop pressure with a low
    limit, a tank level: every telemetry record carries them, they agree with the plant,
    nothing tripped on them, and Home Assistant has their entities."""
    day = complete_node_day
    tele = [d for _seq, kind, d in day.records() if kind == "telemetry"]
    assert tele
    assert all(d["inputs"]["loop_pressure"]["why"] is None for d in tele)
    assert all(0.5 < d["inputs"]["loop_pressure"]["value"] < 3.0 for d in tele)
    assert all(d["valve_why"] is None for d in tele)
    assert all(-1 < d["valve_pct"] < 101 for d in tele)
    # at rest (reuse or bypass for over a minute) the position agrees with the command
    rest = [d for a, d in zip(tele, tele[6:], strict=False)
            if a["relay_reuse"] == d["relay_reuse"]]
    assert rest and all(abs(d["valve_pct"] - d["valve_cmd_pct"]) < 1.0 for d in rest)
    reasons = {t["reason"] for t in day.summary["trips"]}
    assert not {"valve_stuck", "input_low:loop_pressure", "sensor_fault:valve",
                "sensor_fault:loop_pressure"} & reasons
    assert not [e for e in day.harness.node_events if e.get("kind") == "trip"
                and ("valve" in e.get("reason", "") or "input_" in e.get("reason", ""))]
    rec = day.extra["analog"]["record"]
    assert rec["loop_pressure"]["why"] is None and rec["valve"]["why"] is None
    node, site = day.harness.cfg["node_id"], day.harness.cfg["mqtt"]["site"]
    want = {f"homeassistant/sensor/{site}_{node}/{obj}/config"
            for obj, *_ in hadisc.analog_entities(day.harness.cfg["analog"])}
    retained = {t for t, p, retain, *_ in day.retained if retain and p}
    assert want and want <= retained


def test_the_readme_example_is_a_valid_configuration():
    text = (REPO / "README.md").read_text()
    section = text[text.index("## Valve and analogue inputs\n"):]
    start = section.index("```json\n") + len("```json\n")
    example = section[start:section.index("\n```", start)]
    doc = json.loads('{"version": 2, ' + example + "}")
    assert host_errors(doc) == []
    assert doc["analog"]["inputs"]["loop_pressure"]["low"] == 1.0


IMPORTS_SRC = r"""
import json, sys
import board
with open(board.data_dir() + "/config.json", "w") as f:
    f.write(CFG)
from heatgw import start
gw, asyncio = start.build()
print(json.dumps({"mods": sorted(n for n in sys.modules if n in (
    "heatgw.analog", "adcin", "heatgw.anschema", "adc_emu")), "analog": gw.analog is not None,
    "out": gw._valve_out is not None, "readings": sorted(gw.inputs.readings),
    "state": gw.failsafe.state}))
"""


@pytest.mark.parametrize("with_analog", [False, True])
def test_only_what_is_configured_is_imported(mp, tmp_path, monkeypatch, with_analog):
    """Without an `analog` section nothing of it is imported; with one, heatgw.analog and
    lib/adcin stay, the section's schema (heatgw.anschema) is dropped after boot."""
    cfg = json.loads((SCENARIOS / "default_config.json").read_text())
    if with_analog:
        cfg["analog"] = {"valve": {"channel": "ain1", "signal": "4-20mA", "output": "pwm"},
                         "inputs": {"loop_pressure": GOOD["analog"]["inputs"]["loop_pressure"]}}
    monkeypatch.setenv("HEATGW_FLASH", str(tmp_path / "flash.bin"))
    out = mp.run_code(f"CFG = {json.dumps(json.dumps(cfg))}\n" + IMPORTS_SRC)
    r = json.loads(out.strip().splitlines()[-1])  # (the boot's event lines come first)
    if with_analog:  # (adc_emu is the host board's own, imported with the board)
        assert r["mods"] == ["adc_emu", "adcin", "heatgw.analog"], r
        assert r["analog"] and r["out"] and r["readings"] == ["loop_pressure", "valve"]
    else:
        assert r["mods"] == ["adc_emu"] and not r["analog"] and not r["out"], r
        assert r["readings"] == []
