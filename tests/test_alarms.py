"""firmware/heatgw/alarms.py: the alarm model fed by the node's records.

The scenarios (SCENARIOS) are MicroPython-compatible source run in CPython, where they
are asserted, and again in the real micropython binary, which must give the very same
results. Events are the ones heatgw.app and heatgw.failsafe emit (kinds trip, clear,
latch, reset, boot, crash, supervisor, task, task_failing), stamped like Gateway.event.
"""

import json
import sys

import pytest

from host_tools.paths import FIRMWARE
from tests.payload_schemas import validate

sys.path.insert(0, str(FIRMWARE))

from heatgw import alarms  # noqa: E402
from heatgw.alarms import AlarmBook  # noqa: E402
from heatgw.topics import Topics  # noqa: E402

TOPICS = Topics("heatgw", "s1", "n1")

SCENARIOS = r"""
import json
from heatgw import payloads
from heatgw.alarms import AlarmBook as _Book, definitions
from heatgw.failsafe import LATCHING

T = [0]
PUB = []  # [id, payload] after every transition, as the MQTT task publishes them
_W = payloads.Writer(1024)


def _pub(book, changes):
    for ch in changes:
        PUB.append([ch["alarm"], bytes(payloads.alarm(_W, book.get(ch["alarm"]))).decode()])
    return changes


class AlarmBook(_Book):
    # the book, each change's retained payload kept in PUB (results unchanged)
    def feed(self, kind, record):
        return _pub(self, _Book.feed(self, kind, record))

    def raise_alarm(self, alarm_id, detail=None):
        return _pub(self, _Book.raise_alarm(self, alarm_id, detail))

    def ack(self, alarm_id, source, up_ms=None, utc=None):
        return _pub(self, _Book.ack(self, alarm_id, source, up_ms, utc))

    def restore(self, items):
        return _pub(self, _Book.restore(self, items))


def ev(kind, **kw):
    T[0] += 1000
    d = {"kind": kind, "boot": 3, "up_ms": T[0], "utc": 1700000000 + T[0] // 1000}
    d.update(kw)
    return d


def trip(reason, **values):
    return ev("trip", reason=reason, t_ms=T[0], values=values)


def clear(reason):
    return ev("clear", reason=reason, t_ms=T[0], values={})


def held(book):
    return [[a.id, a.active, a.acked, a.acked_by] for a in book.alarms()]


def scn_trip_clear():
    # a non-latching trip: raised, cleared, removed (no ack needed)
    b = AlarmBook()
    r = {}
    r["raise"] = b.feed("event", trip("sensor_fault:supply", sensor="supply",
                                      sensor_reason="open", temp_c=None))
    a = b.get("sensor_fault:supply")
    r["rec"] = a.record()
    r["steady"] = b.feed("event", ev("state", state="bypass"))
    r["clear"] = b.feed("event", clear("sensor_fault:supply"))
    r["gone"] = b.get("sensor_fault:supply") is None
    r["unknown_reason"] = b.feed("event", trip("sink_unavailable"))
    r["held"] = held(b)
    return r


def scn_latching():
    # it_coolant_high: trip + latch; clear keeps it; a plain ack does not remove it while
    # the trip is latched; a refused reset keeps it; a cleared reset acks and removes it
    b = AlarmBook()
    r = {}
    r["trip"] = b.feed("event", trip("it_coolant_high", it_coolant_c=44.6, limit_c=44.0,
                                     clear_c=42.0))
    r["latch"] = b.feed("event", ev("latch", reason="it_coolant_high", values={}))
    r["clear"] = b.feed("event", clear("it_coolant_high"))
    r["after_clear"] = held(b)
    r["refused"] = b.feed("event", ev("reset", reason="it_coolant_high", result="refused",
                                      source="console", values={}))
    r["ack"] = b.ack("it_coolant_high", "mqtt")
    r["after_ack"] = held(b)
    r["reset"] = b.feed("event", ev("reset", reason="it_coolant_high", result="cleared",
                                    source="board", values={}))
    r["held"] = held(b)
    r["detail"] = None
    b.feed("event", trip("it_coolant_high", it_coolant_c=45.1, limit_c=44.0, clear_c=42.0))
    r["detail"] = b.get("it_coolant_high").detail
    return r


def scn_ack_required():
    # task_failing: momentary (raised and cleared at once), held until acked
    b = AlarmBook()
    r = {}
    r["raise"] = b.feed("event", ev("task_failing", task="persist", crashes=5, window_s=600,
                                    error="OSError(28,)"))
    a = b.get("task_failing:persist")
    r["rec"] = a.record()
    r["again"] = b.feed("event", ev("task_failing", task="persist", crashes=5, window_s=600,
                                    error="OSError(5,)"))
    r["count"] = a.count
    r["ack"] = b.ack("task_failing:persist", "console")
    r["held"] = held(b)
    return r


def scn_save_failed():
    # a failed save raises (ack required), the next good save clears it; acked: removed
    b = AlarmBook()
    r = {}
    r["raise"] = b.feed("save_failed", {"error": "OSError(28,)"})
    r["saving"] = b.feed("saving", {"seq": 4, "why": "interval", "totals": {}})
    r["saved"] = b.feed("saved", {"seq": 4, "why": "interval", "totals": {}})
    r["cleared_held"] = held(b)
    r["ack"] = b.ack("save_failed", "console")
    r["held"] = held(b)
    # acked while active: stays until the condition clears
    b.feed("save_failed", {"error": "OSError(5,)"})
    r["ack_active"] = b.ack("save_failed", "console")
    r["held_active"] = held(b)
    r["saved2"] = b.feed("saved", {"seq": 5})
    r["held2"] = held(b)
    r["log_failed"] = b.feed("event_log_failed", {"error": "OSError(28,)"})
    return r


def scn_node_events():
    # boot with the default config and a latched trip; crash; stall; queue drop
    b = AlarmBook()
    r = {}
    r["boot"] = b.feed("event", ev("boot", config="default",
                                   errors=["control.tick_ms: must be <= 1000"],
                                   latched=["valve_stuck"], state="bypass"))
    r["boot_ok"] = b.feed("event", ev("boot", config="file", errors=[], latched=[],
                                      state="bypass"))
    r["crash"] = b.feed("event", ev("crash", task="sampler", error="ZeroDivisionError()"))
    r["stall"] = b.feed("event", ev("supervisor", state="bypass",
                                    reason="task_stalled:control", action="watchdog reset"))
    r["task_crash"] = b.feed("event", ev("task", task="persist", state="crashed",
                                         error="E", crashes=1, restart_in_ms=1000))
    r["drop"] = b.feed("event", ev("queue_dropped", first_seq=100, last_seq=180))
    r["held"] = held(b)
    r["recs"] = [a.record() for a in b.alarms()]
    r["counts"] = list(b.counts())
    return r


def scn_overflow():
    # 4 slots: 3 for alarms, the last for alarm_overflow; nothing held is evicted
    b = AlarmBook(max_alarms=4)
    r = {}
    for n in ("a", "b", "c", "d", "e"):
        b.feed("event", trip("sensor_stale:" + n, sensor=n))
    r["held"] = held(b)
    r["dropped"] = b.dropped
    r["overflow"] = b.get("alarm_overflow").record()
    b.feed("event", clear("sensor_stale:a"))
    r["after_clear"] = b.feed("event", trip("sensor_stale:f"))
    r["held2"] = held(b)
    r["ack"] = b.ack("alarm_overflow", "console")
    r["held3"] = held(b)
    return r


def scn_errors():
    b = AlarmBook()
    r = {}
    b.feed("event", trip("maintenance", source="board"))
    for args in (("nope", "console"), ("maintenance", ""), ("maintenance", None),
                 ("maintenance", "x" * 17)):
        try:
            b.ack(*args)
            r[repr(args)] = "accepted"
        except ValueError as e:
            r[repr(args)[:30]] = str(e)
    r["held"] = held(b)
    for bad in (None, 3, "x", [1]):
        r["feed " + repr(bad)] = b.feed("event", bad)
    r["garbage"] = b.feed("event", {"kind": "trip", "reason": None})
    try:
        b.raise_alarm("no_such_alarm")
        r["raise_unknown"] = "accepted"
    except ValueError as e:
        r["raise_unknown"] = str(e)
    try:
        AlarmBook(max_alarms=1)
        r["ctor"] = "accepted"
    except ValueError as e:
        r["ctor"] = str(e)
    return r


def scn_persist():
    b = AlarmBook()
    b.feed("event", ev("crash", task="control", error="E"))
    b.feed("event", trip("it_coolant_high", it_coolant_c=50.0))
    b.feed("event", trip("sink_flow_low", flow_m3h=1.0))
    b.feed("save_failed", {"error": "OSError(28,)"})
    b.ack("save_failed", "console")
    exported = b.export()
    b2 = AlarmBook()
    r = {"exported": exported}
    r["restore"] = b2.restore(json.loads(json.dumps(exported)) + [["bogus", 1, 1, "x"], 7])
    r["held"] = held(b2)
    r["again"] = b2.restore(exported)
    return r


def scn_definitions():
    defs = [list(d) for d in definitions()]
    return {"defs": defs, "latching": list(LATCHING)}
"""

NAMES = ["scn_trip_clear", "scn_latching", "scn_ack_required", "scn_save_failed",
         "scn_node_events", "scn_overflow", "scn_errors", "scn_persist", "scn_definitions"]


@pytest.fixture(scope="module")
def cp():
    ns = {"__name__": "alarm_scenarios"}
    exec(SCENARIOS, ns)
    cache = {}

    def run(name):
        if name not in cache:
            ns["T"][0] = 0
            cache[name] = json.loads(json.dumps(ns[name]()))
        return cache[name]

    return run


def test_trip_raises_clear_removes(cp):
    r = cp("scn_trip_clear")
    assert r["raise"] == [{"alarm": "sensor_fault:supply", "what": "raise"}]
    rec = r["rec"]
    assert (rec["severity"], rec["source"], rec["active"], rec["ack_required"]) == (
        "major", "failsafe", True, False)
    assert (rec["raised_up_ms"], rec["raised_utc"], rec["detail"]) == (1000, 1700000001, "open")
    assert r["steady"] == []
    assert r["clear"] == [{"alarm": "sensor_fault:supply", "what": "clear"},
                          {"alarm": "sensor_fault:supply", "what": "remove"}]
    assert r["gone"] is True
    assert r["unknown_reason"] == [] and r["held"] == []


def test_latching_trip_held_until_reset(cp):
    r = cp("scn_latching")
    assert r["trip"] == [{"alarm": "it_coolant_high", "what": "raise"}]
    assert r["latch"] == [] and r["clear"] == []
    assert r["after_clear"] == [["it_coolant_high", True, False, None]]
    assert r["refused"] == []
    assert r["ack"] == [{"alarm": "it_coolant_high", "what": "ack"}]
    assert r["after_ack"] == [["it_coolant_high", True, True, "mqtt"]]
    # the reset clears it; already acked by mqtt: removed
    assert r["reset"] == [{"alarm": "it_coolant_high", "what": "clear"},
                          {"alarm": "it_coolant_high", "what": "remove"}]
    assert r["held"] == []
    assert r["detail"] == "it_coolant_c=45.1"


def test_momentary_alarm_needs_ack(cp):
    r = cp("scn_ack_required")
    assert r["raise"] == [{"alarm": "task_failing:persist", "what": "raise"},
                          {"alarm": "task_failing:persist", "what": "clear"}]
    rec = r["rec"]
    assert (rec["active"], rec["ack_required"], rec["severity"], rec["detail"]) == (
        False, True, "major", "OSError(28,)")
    assert r["again"] == [{"alarm": "task_failing:persist", "what": "update"}]
    assert r["count"] == 2
    assert r["ack"] == [{"alarm": "task_failing:persist", "what": "ack"},
                        {"alarm": "task_failing:persist", "what": "remove"}]
    assert r["held"] == []


def test_save_failed_cleared_by_next_save(cp):
    r = cp("scn_save_failed")
    assert r["raise"] == [{"alarm": "save_failed", "what": "raise"}]
    assert r["saving"] == []
    assert r["saved"] == [{"alarm": "save_failed", "what": "clear"}]
    assert r["cleared_held"] == [["save_failed", False, False, None]]
    assert r["ack"][-1] == {"alarm": "save_failed", "what": "remove"}
    assert r["held"] == []
    assert r["ack_active"] == [{"alarm": "save_failed", "what": "ack"}]
    assert r["held_active"] == [["save_failed", True, True, "console"]]
    assert r["saved2"][-1] == {"alarm": "save_failed", "what": "remove"}
    assert r["held2"] == []
    assert r["log_failed"] == [{"alarm": "event_log_failed", "what": "raise"},
                               {"alarm": "event_log_failed", "what": "clear"}]


def test_node_events_become_alarms(cp):
    r = cp("scn_node_events")
    ids = [h[0] for h in r["held"]]
    # most severe first, then by raise time
    assert ids == ["no_config", "valve_stuck", "crash:sampler", "task_stalled:control",
                   "queue_dropped"]
    assert r["boot_ok"] == []
    assert r["task_crash"] == []  # one crash is an event; task_failing is the alarm
    recs = {x["id"]: x for x in r["recs"]}
    assert recs["no_config"]["detail"] == "control.tick_ms: must be <= 1000"
    assert recs["no_config"]["active"] is True
    assert recs["valve_stuck"]["detail"] == "latched before boot"
    assert recs["crash:sampler"]["severity"] == "critical"
    assert recs["crash:sampler"]["active"] is False
    assert recs["queue_dropped"]["detail"] == "seq 100..180"
    assert r["counts"] == [5, 2, 4]


def test_overflow_is_explicit(cp):
    r = cp("scn_overflow")
    assert [h[0] for h in r["held"]] == ["sensor_stale:a", "sensor_stale:b",
                                         "sensor_stale:c", "alarm_overflow"]
    assert r["dropped"] == 2
    ov = r["overflow"]
    assert (ov["count"], ov["detail"], ov["ack_required"]) == (2, "sensor_stale:e", True)
    assert r["after_clear"] == [{"alarm": "sensor_stale:f", "what": "raise"}]
    assert "sensor_stale:f" in [h[0] for h in r["held2"]]
    assert r["held3"][-1][0] != "alarm_overflow"


def test_errors_are_clear_and_change_nothing(cp):
    r = cp("scn_errors")
    assert r["('nope', 'console')"] == "alarm ack: no alarm 'nope' (held: maintenance)"
    for k in ("('maintenance', '')", "('maintenance', None)"):
        assert r[k].startswith("alarm ack: source must be a name of 1..16"), k
    assert r["held"] == [["maintenance", True, False, None]]
    for k, v in r.items():
        if k.startswith("feed") or k == "garbage":
            assert v == [], k
    assert r["raise_unknown"] == "alarm: 'no_such_alarm' is no defined alarm"
    assert r["ctor"] == "max_alarms must be an int 2..64"


def test_export_restore(cp):
    r = cp("scn_persist")
    assert [e[0] for e in r["exported"]] == ["crash:control", "it_coolant_high"]
    held = {h[0]: h for h in r["held"]}
    assert set(held) == {"crash:control", "it_coolant_high"}
    assert held["it_coolant_high"][1] is True  # latched trips stay active till reset
    assert held["crash:control"][1] is False
    assert r["again"] == []


def test_latching_matches_failsafe(cp):
    r = cp("scn_definitions")
    defs = {d[0]: d for d in r["defs"]}
    for reason in r["latching"]:
        assert defs[reason][2] is True  # ack required
    assert set(r["latching"]) == set(alarms._LATCHING)
    for d in r["defs"]:
        assert d[1] in alarms.SEVERITIES


def test_alarm_ids_are_valid_topic_levels():
    from heatgw.topics import Topics

    t = Topics("heatgw", "site", "node")
    b = AlarmBook()
    b.feed("event", {"kind": "crash", "task": "My Task/#1", "up_ms": 1})
    b.feed("event", {"kind": "task_failing", "task": None, "up_ms": 2})
    ids = [a.id for a in b.alarms()]
    assert ids == ["crash:my_task__1", "task_failing:unknown"]
    for i in ids:
        assert t.alarm(i).endswith("/alarm/" + i)


def test_scenarios_identical_in_micropython(mp, cp):
    src = SCENARIOS + "\nfor _n in " + repr(NAMES) + ":\n"
    src += "    T[0] = 0\n    print(json.dumps(globals()[_n]()))\n"
    src += "print(json.dumps(PUB))\n"
    got = mp.run_json(src)
    published = got.pop()
    assert len(got) == len(NAMES)
    for name, res in zip(NAMES, got, strict=True):
        assert res == cp(name), name
    # every retained alarm payload the binary built, against the alarm schema
    removed = 0
    for alarm_id, payload in published:
        removed += validate(TOPICS.alarm(alarm_id), payload.encode()) is None
    assert len(published) > 40 and 0 < removed < len(published)
