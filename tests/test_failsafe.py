"""firmware/heatgw/failsafe.py: the fail-safe bypass state machine.

The scenarios below (RIG + SCENARIOS) are MicroPython-compatible source. They run in
CPython in-process (module imported from firmware/ via sys.path) where each one is
asserted, and all of them run again inside the real micropython binary, which must give
the very same results. The micropython run also checks that a steady-state update
allocates nothing (heap_lock). Time is simulated: 1 s ticks, no wall clock.
"""

import json
import math
import sys

import pytest

from host_tools.paths import BOARDS, FIRMWARE

sys.path.insert(0, str(FIRMWARE))
sys.path.insert(0, str(BOARDS / "host"))

from heatgw import failsafe  # noqa: E402
from heatgw.failsafe import FailSafe, Inputs  # noqa: E402

RIG = r"""
import json
from heatgw.failsafe import FailSafe, Inputs, ticks_diff

M30 = (1 << 30) - 1
CTL = {"tick_ms": 1000,
       "sink_return_max_c": 45.0, "sink_return_hyst_k": 2.0,
       "it_coolant_max_c": 44.0, "it_coolant_hyst_k": 2.0,
       "sink_flow_min_m3h": 3.0, "sink_flow_hyst_m3h": 0.5,
       "sink_signal": True, "stale_s": 5, "valve_travel_s": 45,
       "recover_s": 120, "min_dwell_s": 600}
SENSORS = {}
for _n in ("supply", "return", "sink_return", "it_coolant"):
    SENSORS[_n] = {"r0_ohm": 1000, "wires": 4, "offset_k": 0.0, "min_c": 0.0,
                   "max_c": 120.0, "critical": _n in ("sink_return", "it_coolant")}
FLOW = {"type": "pulse", "litres_per_pulse": 0.1, "max_m3h": 15.0, "critical": True}


class Rig:
    # A healthy plant around a FailSafe: the sampler delivers fresh readings every
    # second and the valve reaches the commanded end one tick after the command.

    def __init__(self, t0=0, ctl=None, sensors=None, flow=FLOW, latched=(),
                 configured=True):
        self.t = t0 & M30
        self.el = 0  # elapsed ms since construction (unwrapped)
        self.fs = FailSafe(CTL if ctl is None else ctl,
                           sensors_cfg=SENSORS if sensors is None else sensors,
                           flow_cfg=flow, now_ms=self.t, latched=latched,
                           configured=configured)
        names = SENSORS if sensors is None else sensors
        self.i = Inputs(names)
        self.temp = {n: 30.0 for n in names}
        self.flow = 5.0
        self.fresh = True  # sampler delivers valid readings
        self.lag_ms = 500  # readings are taken this long before the update
        self.valve = "follow"  # or True/False/None: end switch stuck at that value
        self.i.sink_available = True
        self.over = []  # (field, key or None, value) forced after the rig fills inputs
        self.events = []
        self.reuse_at = []  # elapsed s of every entry into reuse
        self.bypass_at = []

    def step(self, ms=1000):
        self.t = (self.t + ms) & M30
        self.el += ms
        i = self.i
        for n in self.temp:
            if type(i.temps_c) is dict:  # a garbage test may have replaced it
                i.temps_c[n] = self.temp[n]
            if self.fresh and type(i.temp_valid_ms) is dict:
                i.temp_valid_ms[n] = (self.t - self.lag_ms) & M30
        i.flow_m3h = self.flow
        if self.fresh:
            i.flow_valid_ms = (self.t - self.lag_ms) & M30
        i.valve_at_reuse = self.fs.relay_reuse if self.valve == "follow" else self.valve
        for field, key, value in self.over:
            if key is None:
                setattr(i, field, value)
            else:
                getattr(i, field)[key] = value
        ev = self.fs.update(self.t, i)
        for e in ev:
            e2 = dict(e)
            e2["el_s"] = self.el // 1000  # comparable across different tick origins
            del e2["t_ms"]
            self.events.append(e2)
            if e["kind"] == "state":
                (self.reuse_at if e["state"] == "reuse" else self.bypass_at).append(
                    self.el // 1000)
        return ev

    def run(self, seconds):
        for _ in range(seconds):
            self.step()

    def run_until(self, state, limit_s):
        # seconds until fs.state == state (None if not within limit_s)
        for k in range(limit_s):
            self.step()
            if self.fs.state == state:
                return k + 1
        return None

    def kinds(self, ev):
        return [(e["kind"], e["reason"]) for e in ev]


def ready():
    r = Rig()
    r.run_until("reuse", 700)
    return r
"""

SCENARIOS = r"""
def scn_boot():
    r = Rig()
    out = {"state0": r.fs.state, "active0": list(r.fs.active), "relay0": r.fs.relay_reuse}
    ev = r.step()
    out["first"] = r.kinds(ev)
    out["reuse_after_s"] = r.run_until("reuse", 2000) + 1
    out["relay"] = r.fs.relay_reuse
    out["state_event"] = r.events[-1]
    return out


TRIPS = {
    "sink_return_high": ("temp", "sink_return", 45.1),
    "it_coolant_high": ("temp", "it_coolant", 44.6),
    "sink_flow_low": ("flow", None, 2.9),
    "flow_implausible": ("flow", None, 15.5),
    "sink_unavailable": ("attr", "sink_available", False),
    "sink_unavailable/none": ("attr", "sink_available", None),
    "sensor_fault:sink_return": ("reason", "sink_return", "no_response"),
    "sensor_fault:it_coolant": ("reason", "it_coolant", "rtd_high_threshold"),
    "sensor_fault:it_coolant/nan": ("temp", "it_coolant", float("nan")),
    "sensor_fault:flow": ("attr", "flow_reason", "no_pulses"),
    "maintenance": ("attr", "maintenance", True),
}


def trip_one(key):
    r = ready()
    what, name, value = TRIPS[key]
    if what == "temp":
        r.temp[name] = value
    elif what == "flow":
        r.flow = value
    elif what == "reason":
        r.i.temp_reasons[name] = value
    else:
        setattr(r.i, name, value)
    ev = r.step()
    st = [e for e in ev if e["kind"] == "state"]
    return {"state": r.fs.state, "relay": r.fs.relay_reuse, "kinds": r.kinds(ev),
            "cause": st[0]["reason"] if st else None, "active": list(r.fs.active),
            "values": st[0]["values"] if st else None}


def scn_trips():
    return {k: trip_one(k) for k in sorted(TRIPS)}


def scn_hysteresis():
    r = ready()
    out = []
    for t in (45.0, 45.1, 44.0, 43.0, 42.9, 44.9, 45.0):
        r.temp["sink_return"] = t
        r.step()
        out.append("sink_return_high" in r.fs.active)
    r.temp["sink_return"] = 30.0
    fl = []
    for f in (3.0, 2.99, 3.4, 3.5, 3.51, 3.0):
        r.flow = f
        r.step()
        fl.append("sink_flow_low" in r.fs.active)
    return {"sink_return": out, "flow": fl}


def scn_recover_dwell():
    r = ready()  # reuse at 600 s
    r.run(100)
    r.temp["sink_return"] = 46.0
    r.run(5)  # bypass at 701 s, clear at 706 s
    r.temp["sink_return"] = 40.0
    a = r.run_until("reuse", 3000)
    r.run(2000)
    r.temp["sink_return"] = 46.0
    r.run(700)  # long trip: the dwell is over before the condition clears
    r.temp["sink_return"] = 40.0
    b = r.run_until("reuse", 3000)
    return {"reuse_at": r.reuse_at, "bypass_at": r.bypass_at, "a": a, "b": b}


def chatter(pattern, seconds=3600):
    # pattern: list of (sink_return_c, seconds) repeated for `seconds`
    r = Rig()
    k = 0
    while r.el < seconds * 1000:
        t, n = pattern[k % len(pattern)]
        k += 1
        r.temp["sink_return"] = t
        for _ in range(n):
            r.step()
            if "sink_return_high" in r.fs.active and r.fs.state != "bypass":
                return {"error": "active condition in reuse"}
    gaps = [b - a for a, b in zip(r.reuse_at, r.reuse_at[1:])]
    return {"reuse": len(r.reuse_at), "min_gap": min(gaps) if gaps else None,
            "bypass": len(r.bypass_at)}


def scn_chatter():
    return {
        "fast_around_max": chatter([(44.9, 2), (45.1, 3)]),
        "fast_full_swing": chatter([(40.0, 4), (46.0, 3)]),
        "slow_full_swing": chatter([(46.0, 10), (40.0, 200)]),
        "every_minute": chatter([(46.0, 1), (40.0, 59)]),
    }


def scn_latch_reset():
    r = ready()
    r.temp["it_coolant"] = 45.0
    out = {"trip": r.kinds(r.step())}
    r.i.trip_reset = True
    ev = r.step()
    out["refused"] = [(e["kind"], e["reason"], e.get("result")) for e in ev]
    out["latched_after_refused"] = list(r.fs.latched)
    r.i.trip_reset = False
    r.temp["it_coolant"] = 41.0
    out["clear"] = r.kinds(r.step())
    out["still_latched"] = list(r.fs.latched)
    r.run(2000)
    out["bypass_while_latched"] = r.fs.state
    r.i.trip_reset = True
    ev = r.step()
    out["accepted"] = [(e["kind"], e["reason"], e.get("result"), e.get("state")) for e in ev]
    out["latched_after"] = list(r.fs.latched)
    out["state"] = r.fs.state
    r.temp["it_coolant"] = 45.0
    r.step()  # reset still held high: no new press
    r.temp["it_coolant"] = 30.0
    ev = r.step()
    out["held_no_press"] = [e["kind"] for e in ev]
    return out


def scn_restored_latch():
    r = Rig(latched=("valve_stuck",))
    out = {"latched0": list(r.fs.latched)}
    r.run(3000)
    out["state_3000s"] = r.fs.state
    out["events"] = [(e["kind"], e["reason"]) for e in r.events]
    out["reset"] = [(e["kind"], e["reason"], e["result"]) for e in r.fs.reset_latches(r.t)]
    out["reuse_after_s"] = r.run_until("reuse", 10)
    return out


def scn_stale():
    r = ready()
    r.fresh = False  # last valid readings at 600 s
    hits = []
    for _ in range(8):
        ev = r.step()
        hits.append(sorted(e["reason"] for e in ev if e["kind"] == "trip"))
    out = {"hits": hits, "state": r.fs.state}
    r.fresh = True
    out["cleared"] = sorted(e["reason"] for e in r.step() if e["kind"] == "clear")
    # no reading ever since construction
    r2 = Rig()
    r2.fresh = False
    first = None
    for k in range(10):
        r2.step()
        if "sensor_stale:it_coolant" in r2.fs.active and first is None:
            first = k + 1
    out["never_valid_first_s"] = first
    # a reading frozen for 2**30 ms (12.4 days): ticks_diff says "negative" after half of
    # that and "0 ms old" at the end; it must stay stale throughout
    r3 = ready()
    r3.fresh = False
    r3.run(10)
    stale_all_along = True
    # last valid at ready - 500 ms, now 10.5 s later: land 2 s before "2**30 ms old"
    for k in range(255 + 1 + 20):
        r3.step((1 << 22) if k < 255 else (1 << 22) - 12500 if k == 255 else 250)
        if "sensor_stale:it_coolant" not in r3.fs.active:
            stale_all_along = False
    out["stale_all_along"] = stale_all_along
    # a timestamp 7 s in the "future": a reading 2**30 - 7 s old seen for the first time,
    # or nonsense; never fresh
    r4 = ready()
    r4.over = [("temp_valid_ms", "it_coolant", (r4.t + 8000) & M30)]
    r4.step()
    out["far_ticks_stale"] = "sensor_stale:it_coolant" in r4.fs.active
    return out


def scn_valve():
    out = {}
    # commanded to reuse, the valve never leaves the bypass end
    r = Rig()
    r.valve = False
    at = r.run_until("reuse", 700)
    trip = None
    for k in range(60):
        ev = r.step()
        if ("trip", "valve_stuck") in r.kinds(ev):
            trip = k + 1
            out["trip_kinds"] = r.kinds(ev)
            break
    out["reuse_at"] = at
    out["trip_after_s"] = trip
    out["state"] = r.fs.state
    ev = r.step()  # now commanded bypass and the valve is at bypass: condition clear
    out["then"] = r.kinds(ev)
    out["latched"] = list(r.fs.latched)
    out["reset"] = [e["result"] for e in r.fs.reset_latches(r.t)]
    # stuck at the reuse end: commanded bypass after the trip, still disagrees
    r = Rig()
    r.run_until("reuse", 700)
    r.valve = True
    r.temp["sink_return"] = 46.0
    r.step()
    r.temp["sink_return"] = 30.0
    first = None
    for k in range(60):
        r.step()
        if "valve_stuck" in r.fs.active:
            first = k + 1
            break
    r.run(3)
    out["stuck_at_reuse_after_s"] = first
    out["refused"] = [e["result"] for e in r.fs.reset_latches(r.t)]
    # no feedback at all (between ends / unwired)
    r = Rig()
    r.valve = None
    hit = None
    for k in range(60):
        r.step()
        if "valve_stuck" in r.fs.active:
            hit = k + 1
            break
    out["none_after_s"] = hit
    # commanded to reuse, the valve stops between the ends: the trip's command change
    # (back to bypass) must not make it look fine while it is still between the ends
    r = Rig()
    r.run_until("reuse", 700)
    r.valve = None
    r.run(46)
    out["between_active"] = "valve_stuck" in r.fs.active
    r.step()
    out["between_still_active"] = "valve_stuck" in r.fs.active
    out["between_reset"] = [e["result"] for e in r.fs.reset_latches(r.t)]
    ctl = dict(CTL)
    ctl["valve_feedback"] = False
    r = Rig(ctl=ctl)
    r.valve = None
    out["no_feedback_cfg_reuse_s"] = r.run_until("reuse", 700)
    return out


def scn_no_config():
    r = Rig(configured=False, sensors={}, flow=None)
    r.valve = None
    r.run(3 * 3600)
    r.fs.reset_latches(r.t)
    r.run(700)
    return {"state": r.fs.state, "active": list(r.fs.active), "reuse": r.reuse_at,
            "latched": list(r.fs.latched), "relay": r.fs.relay_reuse}


def wrap_run(t0):
    r = Rig(t0=t0)
    r.run_until("reuse", 700)
    r.run(50)
    r.temp["sink_return"] = 46.0
    r.step()
    r.temp["sink_return"] = 30.0
    r.fresh = False
    r.run(10)
    r.fresh = True
    r.valve = False
    r.run(2000)
    r.valve = "follow"
    r.fs.reset_latches(r.t)
    r.run(1000)
    # tick stamps differ between origins; everything else must not
    return [(e["kind"], e["reason"], e["el_s"], e.get("state"), e.get("result"),
             e["values"].get("age_ms")) for e in r.events]


def scn_wrap():
    base = wrap_run(0)
    # the tick counter wraps during every phase of the run below
    out = {"n": len(base)}
    for t0 in ((1 << 30) - 300000, (1 << 30) - 601000, (1 << 30) - 655000,
               (1 << 30) - 700500, (1 << 30) - 1):
        out[str(t0)] = wrap_run(t0) == base
    out["td"] = [ticks_diff(5, (1 << 30) - 5), ticks_diff((1 << 30) - 5, 5),
                 ticks_diff(1 << 29, 0), ticks_diff((1 << 29) - 1, 0), ticks_diff(7, 7)]
    return out


GARBAGE = [
    ("temps_c", "it_coolant", float("nan")), ("temps_c", "it_coolant", float("inf")),
    ("temps_c", "sink_return", "hot"), ("temps_c", "sink_return", True),
    ("temps_c", "sink_return", [1]), ("temps_c", None, None), ("temps_c", None, 5),
    ("temp_reasons", "it_coolant", 7), ("temp_reasons", None, "x"),
    ("temp_valid_ms", "it_coolant", "x"), ("temp_valid_ms", "it_coolant", 1.5),
    ("temp_valid_ms", None, None),
    ("flow_m3h", None, "fast"), ("flow_m3h", None, float("nan")),
    ("flow_m3h", None, -float("inf")), ("flow_reason", None, 3),
    ("flow_valid_ms", None, "soon"), ("sink_available", None, "yes"),
    ("sink_available", None, 1), ("maintenance", None, [0]), ("trip_reset", None, "x"),
    ("valve_at_reuse", None, 1), ("maintenance_by", None, [1]), ("sink_by", None, 5),
]


def scn_readings():
    # External readings (heatgw.failsafe's module doc): a Modbus meter "compute" (stale
    # after 20 s) and an analogue "pressure" (3 s) are critical, "spare" is not.
    r = Rig()
    r.fs = FailSafe(CTL, sensors_cfg=SENSORS, flow_cfg=FLOW, now_ms=r.t,
                    readings=(("pressure", 3000), ("compute", 20000)))
    i = Inputs(SENSORS, ("compute", "pressure", "spare"))
    i.sink_available = True
    r.i = i
    fresh = {"compute": True, "pressure": True}

    def mine():
        return sorted(a for a in r.fs.active if a.split(":")[-1] in ("compute", "pressure",
                                                                      "spare"))

    def step(feed=True):
        for n in fresh:
            if feed and fresh[n]:
                i.reading_valid_ms[n] = r.t
                if i.readings[n] is None:
                    i.readings[n] = 1.5
        return r.step()

    out = {}
    seen = []
    for _ in range(21):  # nothing read yet: each is stale after its own limit
        step(False)
        seen.append(mine())
    out["boot"] = [seen[2], seen[3], seen[19], seen[20]]
    for _ in range(700):
        step()
    out["reuse"] = [r.fs.state, mine()]
    i.reading_reasons["compute"] = "timeout"
    ev = step()
    out["fault"] = [r.fs.state, r.kinds(ev), [e["values"] for e in ev if e["kind"] == "trip"
                                              and e["reason"] == "sensor_fault:compute"]]
    i.reading_reasons["compute"] = None
    step()
    i.readings["pressure"] = float("nan")
    step()
    out["nan"] = mine()
    i.readings["pressure"] = 1.5
    fresh["pressure"] = False
    got = []
    for _ in range(5):
        step()
        got.append(mine())
    out["stale"] = got
    out["stale_values"] = [e["values"] for e in r.events if e["kind"] == "trip"
                           and e["reason"] == "sensor_stale:pressure"][-1]
    fresh["pressure"] = True
    i.reading_reasons["spare"] = "crc"
    i.readings["spare"] = float("inf")
    step()
    out["spare"] = mine()
    bad = []
    for name in ("supply", "flow", 7):
        try:
            FailSafe(CTL, sensors_cfg=SENSORS, flow_cfg=FLOW, now_ms=0,
                     readings=((name, 1000),))
            bad.append("accepted")
        except ValueError:
            bad.append("ValueError")
    out["bad_names"] = bad
    return out


def scn_garbage():
    out = []
    for field, key, value in GARBAGE:
        r = ready()
        r.over = [(field, key, value)]
        try:
            evs = []
            for _ in range(8):
                evs.extend(r.step())
            json.dumps(evs)
            res = r.fs.state
        except Exception as exc:
            res = "raised %r" % (exc,)
        out.append(res)
    return out
"""

NAMES = [
    "scn_boot", "scn_trips", "scn_hysteresis", "scn_recover_dwell", "scn_chatter",
    "scn_latch_reset", "scn_restored_latch", "scn_stale", "scn_valve", "scn_no_config",
    "scn_wrap", "scn_garbage", "scn_readings",
]


@pytest.fixture(scope="module")
def cp():
    """The scenarios, run in this CPython process; results normalised through JSON."""
    ns = {"__name__": "failsafe_scenarios"}
    exec(RIG + SCENARIOS, ns)
    cache = {}

    def run(name):
        if name not in cache:
            cache[name] = json.loads(json.dumps(ns[name]()))
        return cache[name]

    run.ns = ns
    return run


# --------------------------------------------------------------------------------------
# CPython: each scenario asserted


def test_boot_bypass_then_reuse_after_dwell(cp):
    r = cp("scn_boot")
    assert (r["state0"], r["active0"], r["relay0"]) == ("bypass", ["boot"], False)
    assert r["first"] == [["clear", "boot"]]
    # boot is an entry into bypass: min_dwell_s (600) > recover_s (120) decides
    assert r["reuse_after_s"] == 600
    assert r["relay"] is True
    ev = r["state_event"]
    assert (ev["kind"], ev["state"], ev["reason"], ev["reasons"]) == (
        "state", "reuse", "recovered", [])


CAUSE = {
    "sink_unavailable/none": "sink_unavailable",
    "sensor_fault:it_coolant/nan": "sensor_fault:it_coolant",
}


@pytest.mark.parametrize("key", sorted(
    ["sink_return_high", "it_coolant_high", "sink_flow_low", "flow_implausible",
     "sink_unavailable", "sink_unavailable/none", "sensor_fault:sink_return",
     "sensor_fault:it_coolant", "sensor_fault:it_coolant/nan", "sensor_fault:flow",
     "maintenance"]))
def test_each_reason_trips_in_the_same_update(cp, key):
    r = cp("scn_trips")[key]
    reason = CAUSE.get(key, key)
    assert r["state"] == "bypass" and r["relay"] is False
    assert r["cause"] == reason
    assert ["trip", reason] in r["kinds"]
    assert r["kinds"][-1] == ["state", reason]
    assert reason in r["active"]
    if reason == "it_coolant_high":
        assert ["latch", reason] in r["kinds"]
        assert r["values"] == {"it_coolant_c": 44.6, "limit_c": 44.0, "clear_c": 42.0}


def test_hysteresis(cp):
    r = cp("scn_hysteresis")
    # 45.0 is not above the limit; clears only below 45 - 2 = 43 (43.0 holds)
    assert r["sink_return"] == [False, True, True, True, False, False, False]
    # 3.0 is not below the minimum; clears only above 3 + 0.5
    assert r["flow"] == [False, True, True, True, False, False]


def test_recover_s_and_min_dwell_s(cp):
    r = cp("scn_recover_dwell")
    assert r["bypass_at"][0] == 701
    # clear since 706 s (recover until 826) but bypass only since 701 s: dwell rules
    assert r["reuse_at"][1] == 701 + 600
    # after a long trip the dwell is long over: recover_s rules
    trip2 = r["bypass_at"][1]
    assert r["reuse_at"][2] == trip2 + 700 + 120


def test_no_chattering_around_a_threshold(cp):
    r = cp("scn_chatter")
    # hysteresis: 44.9 never goes below 43, one trip and no re-enable at all
    assert r["fast_around_max"] == {"reuse": 0, "min_gap": None, "bypass": 0}
    # never clear for recover_s: the boot bypass never ends
    assert r["fast_full_swing"]["reuse"] == 0
    assert r["every_minute"]["reuse"] == 0
    # clear for 200 s out of every 210 s: re-enables, but at most once per min_dwell_s
    slow = r["slow_full_swing"]
    assert 2 <= slow["reuse"] <= 3600 // 600
    assert slow["min_gap"] >= 600
    assert slow["bypass"] >= slow["reuse"] - 1


def test_latch_reset_refused_then_accepted(cp):
    r = cp("scn_latch_reset")
    assert r["trip"] == [["trip", "it_coolant_high"], ["latch", "it_coolant_high"],
                         ["state", "it_coolant_high"]]
    assert r["refused"] == [["reset", "it_coolant_high", "refused"]]
    assert r["latched_after_refused"] == ["it_coolant_high"]
    assert r["clear"] == [["clear", "it_coolant_high"]]
    assert r["still_latched"] == ["it_coolant_high"]
    assert r["bypass_while_latched"] == "bypass"
    # conditions clear for 2000 s and dwell over: the reset re-enables at once
    assert r["accepted"] == [["reset", "it_coolant_high", "cleared", None],
                             ["state", "recovered", None, "reuse"]]
    assert r["latched_after"] == []
    assert r["state"] == "reuse"
    # the reset input stayed high: the new trip latches, no second reset happens
    assert "reset" not in r["held_no_press"]


def test_latched_restored_at_construction(cp):
    r = cp("scn_restored_latch")
    assert r["latched0"] == ["valve_stuck"]
    assert r["state_3000s"] == "bypass"
    assert r["events"] == [["clear", "boot"]]
    assert r["reset"] == [["reset", "valve_stuck", "cleared"]]
    assert r["reuse_after_s"] == 1


def test_stale_timing(cp):
    r = cp("scn_stale")
    stale = ["sensor_stale:flow", "sensor_stale:it_coolant", "sensor_stale:sink_return"]
    # last valid reading 500 ms before step 0: 4500 ms at step 4 is fresh, 5500 ms is not
    assert r["hits"] == [[], [], [], [], stale, [], [], []]
    assert r["state"] == "bypass"
    assert r["cleared"] == stale
    assert r["never_valid_first_s"] == 6
    assert r["stale_all_along"] is True
    assert r["far_ticks_stale"] is True


def test_valve_stuck_timing(cp):
    r = cp("scn_valve")
    assert r["reuse_at"] == 600
    # command changed at 600 s; disagreement for 45 s is travel, 46 s is stuck
    assert r["trip_after_s"] == 46
    assert r["trip_kinds"] == [["trip", "valve_stuck"], ["latch", "valve_stuck"],
                               ["state", "valve_stuck"]]
    assert r["state"] == "bypass"
    assert r["then"] == [["clear", "valve_stuck"]]
    assert r["latched"] == ["valve_stuck"]
    assert r["reset"] == ["cleared"]
    # stuck at the reuse end: the trip's own command change must not clear it
    assert r["stuck_at_reuse_after_s"] == 46
    assert r["refused"] == ["refused"]
    assert r["none_after_s"] == 46
    assert r["between_active"] is True and r["between_still_active"] is True
    assert r["between_reset"] == ["refused"]
    assert r["no_feedback_cfg_reuse_s"] == 600


def test_no_config_never_reuses(cp):
    r = cp("scn_no_config")
    assert r["state"] == "bypass" and r["relay"] is False
    assert r["active"] == ["no_config"]
    assert r["reuse"] == [] and r["latched"] == []


def test_ticks_wrap_at_2_30(cp):
    r = cp("scn_wrap")
    assert r["n"] >= 10
    assert all(v is True for k, v in r.items() if k not in ("n", "td"))
    assert r["td"] == [10, -10, -(1 << 29), (1 << 29) - 1, 0]


def test_ticks_diff_matches_reference():
    half, period = 1 << 29, 1 << 30
    for a in (0, 1, half - 1, half, half + 1, period - 1):
        for b in (0, 1, half - 1, half, half + 1, period - 1):
            d = (a - b) % period
            assert failsafe.ticks_diff(a, b) == (d - period if d >= half else d)


def test_garbage_inputs_do_not_raise(cp):
    r = cp("scn_garbage")
    fields = cp.ns["GARBAGE"]
    assert not [x for x in r if x not in ("bypass", "reuse")], list(zip(fields, r, strict=True))
    res = dict(((f, k, repr(v)), s) for (f, k, v), s in zip(fields, r, strict=True))
    # a non-number temperature is a fault of that (critical) sensor
    for v in (float("nan"), float("inf")):
        assert res[("temps_c", "it_coolant", repr(v))] == "bypass"
    for v in ("hot", True, [1]):
        assert res[("temps_c", "sink_return", repr(v))] == "bypass"
    assert res[("temps_c", None, "None")] == "bypass"  # broken table: every sensor faulty
    assert res[("flow_m3h", None, "'fast'")] == "bypass"
    assert res[("sink_available", None, "'yes'")] == "bypass"


# --------------------------------------------------------------------------------------
# CPython: details


def make(**kw):
    args = dict(sensors_cfg={"it_coolant": {"critical": True}}, flow_cfg=None, now_ms=0)
    args.update(kw)
    return FailSafe({"recover_s": 0, "min_dwell_s": 0, "valve_feedback": False}, **args)


def test_steady_update_returns_the_shared_empty_list():
    fs = make()
    i = Inputs(["it_coolant"])
    i.temps_c["it_coolant"] = 30.0
    i.temp_valid_ms["it_coolant"] = 1000
    fs.update(1000, i)
    assert fs.state == "reuse"
    a = fs.update(1500, i)
    b = fs.update(2000, i)
    assert a == [] and a is b
    a.append("oops")  # a careless caller cannot poison later results
    assert fs.update(2500, i) == []


def test_main_cause_follows_priority_and_reasons_list_all():
    fs = make()
    i = Inputs(["it_coolant"])
    i.temps_c["it_coolant"] = 30.0
    i.temp_valid_ms["it_coolant"] = 0
    fs.update(0, i)
    i.maintenance = True
    i.sink_available = False
    fs._sink_signal = True
    i.temps_c["it_coolant"] = 50.0
    ev = fs.update(1000, i)
    st = ev[-1]
    assert st["kind"] == "state" and st["reason"] == "it_coolant_high"
    assert st["reasons"] == ["it_coolant_high", "maintenance", "sink_unavailable"]
    assert fs.active == ("it_coolant_high", "maintenance", "sink_unavailable")
    assert fs.cause == "it_coolant_high"
    json.dumps(ev, allow_nan=False)


def test_reset_with_nothing_latched_and_reset_held_at_boot():
    fs = make(latched=("it_coolant_high",))
    i = Inputs(["it_coolant"])
    i.temps_c["it_coolant"] = 30.0
    i.temp_valid_ms["it_coolant"] = 0
    i.trip_reset = True  # held high from power-up: no press
    assert all(e["kind"] != "reset" for e in fs.update(0, i))
    assert fs.latched == ("it_coolant_high",)
    i.trip_reset = False
    fs.update(1000, i)
    i.trip_reset = True
    ev = fs.update(2000, i)
    assert [e["kind"] for e in ev] == ["reset", "state"]
    assert ev[0]["source"] == "board"  # the board's reset input
    assert fs.latched == () and fs.state == "reuse"
    (e,) = fs.reset_latches(3000, "console")
    assert (e["kind"], e["result"], e["source"]) == ("reset", "cleared", "console")


def test_maintenance_and_sink_events_name_their_source():
    fs = make()
    fs._sink_signal = True
    i = Inputs(["it_coolant"])
    i.temps_c["it_coolant"] = 30.0
    i.temp_valid_ms["it_coolant"] = 0
    i.sink_available = True
    fs.update(0, i)
    i.maintenance, i.maintenance_by = True, "board,console"
    i.sink_available, i.sink_by, i.sink_silent = False, "board,modbus,mqtt", "modbus"
    ev = fs.update(1000, i)
    trips = {e["reason"]: e["values"] for e in ev if e["kind"] == "trip"}
    assert trips["maintenance"] == {"source": "board,console"}
    # the trip names every source that said unavailable, and which of them fell silent
    assert trips["sink_unavailable"] == {"sink_available": False, "source": "board,modbus,mqtt",
                                         "silent": "modbus"}


def _sink_trips(ctl_extra, values):
    fs = FailSafe(dict(ctl_extra), sensors_cfg={}, flow_cfg=None, now_ms=0)
    i = Inputs([])
    out = []
    for k, v in enumerate(values):
        i.sink_available = v
        fs.update(1000 * (k + 1), i)
        out.append("sink_unavailable" in fs.active)
    return out


def test_the_sink_rule_is_in_force_with_any_configured_source():
    # the contact (sink_signal), or a remote source of sink_sources: reuse needs True
    seq = [True, None, False, True]
    assert _sink_trips({"sink_signal": True}, seq) == [False, True, True, False]
    assert _sink_trips({"sink_signal": False, "sink_sources": {"modbus": 30}}, seq) == \
        [False, True, True, False]
    assert _sink_trips({"sink_sources": {"mqtt": 60, "modbus": None}}, seq) == \
        [False, True, True, False]
    # no source configured: only a source that says "unavailable" trips
    assert _sink_trips({"sink_signal": False}, seq) == [False, False, True, False]
    assert _sink_trips({"sink_signal": False, "sink_sources": {"modbus": None}}, seq) == \
        [False, False, True, False]


def test_app_supplied_ticks_diff_is_used():
    from virtual_clock import VirtualClock

    clk = VirtualClock((1 << 30) - 10)
    calls = []

    def td(a, b):
        calls.append((a, b))
        return clk.ticks_diff(a, b)

    fs = make(now_ms=clk.ticks_ms())
    fs.ticks_diff = td
    i = Inputs(["it_coolant"])
    i.temps_c["it_coolant"] = 30.0
    clk.advance(1000)
    i.temp_valid_ms["it_coolant"] = clk.ticks_ms()
    fs.update(clk.ticks_ms(), i)
    assert calls and fs.state == "reuse"


def test_bad_config_numbers_raise_at_construction():
    with pytest.raises(ValueError):
        FailSafe({"stale_s": "five"}, sensors_cfg={}, flow_cfg=None, now_ms=0)
    with pytest.raises(ValueError):
        FailSafe({"it_coolant_max_c": math.nan}, sensors_cfg={}, flow_cfg=None, now_ms=0)


def test_external_readings_fault_and_stale_by_name_with_their_own_limits(cp):
    r = cp("scn_readings")
    # before a first value: stale after its own limit, counted from construction
    assert r["boot"] == [[], ["sensor_stale:pressure"], ["sensor_stale:pressure"],
                         ["sensor_stale:compute", "sensor_stale:pressure"]]
    assert r["reuse"] == ["reuse", []]
    state, kinds, values = r["fault"]  # a reason: a fault in the same update
    assert state == "bypass" and ["trip", "sensor_fault:compute"] in kinds
    assert values == [{"sensor": "compute", "sensor_reason": "timeout", "value": 1.5}]
    assert r["nan"] == ["sensor_fault:pressure"]  # a non-finite value is a fault too
    # the last value was 1 s old at its update: 2, 3 s (not yet), 4 s: stale
    assert r["stale"] == [[], [], ["sensor_stale:pressure"], ["sensor_stale:pressure"],
                          ["sensor_stale:pressure"]]
    v = r["stale_values"]
    assert v["sensor"] == "pressure" and v["stale_s"] == 3 and v["age_ms"] > 3000
    assert r["spare"] == []  # not critical: never evaluated
    assert r["bad_names"] == ["ValueError"] * 3  # a sensor's name, flow's, not a str


# --------------------------------------------------------------------------------------
# The real micropython binary


def test_scenarios_identical_in_micropython(mp, cp):
    src = RIG + SCENARIOS + "\nfor _n in " + repr(NAMES) + ":\n"
    src += "    print(json.dumps(globals()[_n]()))\n"
    got = mp.run_json(src)
    assert len(got) == len(NAMES)
    for name, res in zip(NAMES, got, strict=True):
        assert res == cp(name), name


def test_steady_update_allocation_free_in_micropython(mp):
    src = RIG + r"""
import micropython


def steady(fs, i, t):
    # locals only and no range(): a new global or a range object would allocate
    ok, k, ev = False, 0, None
    micropython.heap_lock()
    try:
        while k < 200:
            k += 1
            t = (t + 1000) & M30
            for n in SENSORS:
                i.temp_valid_ms[n] = t
            i.flow_valid_ms = t
            ev = fs.update(t, i)
            if ev:
                break
        ok = True
    except MemoryError:
        pass
    micropython.heap_unlock()
    return ok, k, ev


r = ready()
r.run(5)
ok, k, ev = steady(r.fs, r.i, r.t)
print(json.dumps({"ok": ok, "state": r.fs.state, "n": k, "events": len(ev)}))
"""
    (res,) = mp.run_json(src)
    assert res == {"ok": True, "state": "reuse", "n": 200, "events": 0}


def test_steady_update_with_external_readings_allocation_free_in_micropython(mp):
    src = RIG + r"""
import micropython


def steady(fs, i, t):
    ok, k, ev = False, 0, None
    micropython.heap_lock()
    try:
        while k < 200:
            k += 1
            t = (t + 1000) & M30
            for n in SENSORS:
                i.temp_valid_ms[n] = t
            i.flow_valid_ms = t
            i.reading_valid_ms["compute"] = t
            i.reading_valid_ms["pressure"] = t
            ev = fs.update(t, i)
            if ev:
                break
        ok = True
    except MemoryError:
        pass
    micropython.heap_unlock()
    return ok, k, ev


r = Rig()
r.fs = FailSafe(CTL, sensors_cfg=SENSORS, flow_cfg=FLOW, now_ms=r.t,
                readings=(("pressure", 3000), ("compute", 20000)))
r.i = Inputs(SENSORS, ("compute", "pressure"))
r.i.sink_available = True
r.i.readings["compute"] = 1234.5
r.i.readings["pressure"] = 1.5
r.i.reading_valid_ms["compute"] = r.t
r.i.reading_valid_ms["pressure"] = r.t
for _ in range(700):
    r.i.reading_valid_ms["compute"] = r.t
    r.i.reading_valid_ms["pressure"] = r.t
    r.step()
ok, k, ev = steady(r.fs, r.i, r.t)
print(json.dumps({"ok": ok, "state": r.fs.state, "n": k, "events": len(ev)}))
"""
    (res,) = mp.run_json(src)
    assert res == {"ok": True, "state": "reuse", "n": 200, "events": 0}
