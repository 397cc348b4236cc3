"""firmware/heatgw/inbox.py: the one command inbox, the board/remote merge and the sink rule.

The scenarios (SCENARIOS) are MicroPython-compatible source run in CPython, where they
are asserted, and again in the real micropython binary, which must give the very same
results and allocate nothing in the steady state (heap_lock). The sink rule's truth
table is checked against the rule as the README states it, written out again here
(`rule()`), independently of the inbox's code.
"""

import itertools
import json
import sys

import pytest

from host_tools.paths import FIRMWARE

sys.path.insert(0, str(FIRMWARE))

from heatgw.inbox import Inbox  # noqa: E402

SCENARIOS = r"""
import json
from heatgw.inbox import Inbox, sources

M30 = (1 << 30) - 1
BOARD_ONLY = (("board", None),)
ALL3 = (("board", None), ("modbus", 3000), ("mqtt", 5000))


class Ins:
    maintenance = None
    maintenance_by = None
    sink_available = None
    sink_by = None
    sink_silent = None


def snap(ins):
    return [ins.maintenance, ins.maintenance_by, ins.sink_available, ins.sink_by]


def scn_merge():
    # (board levels, requests posted before the tick) -> merged inputs, each tick; the
    # contact is the one configured source (control.sink_signal on)
    steps = [
        ({"maintenance": False, "sink_available": True}, []),
        ({"maintenance": True, "sink_available": True}, []),
        ({"maintenance": True, "sink_available": True}, [("console", "maintenance", True)]),
        ({"maintenance": False, "sink_available": True}, []),
        ({"maintenance": False, "sink_available": True}, [("console", "maintenance", False)]),
        ({"maintenance": False, "sink_available": True}, [("mqtt", "sink_available", False)]),
        ({"maintenance": False, "sink_available": True}, [("mqtt", "sink_available", True)]),
        ({"maintenance": False, "sink_available": False}, [("modbus", "sink_available", True)]),
        ({"maintenance": False}, []),  # the contact is not wired: it is open
        ({"maintenance": False, "sink_available": True},
         [("modbus", "sink_available", None), ("mqtt", "sink_available", None)]),
        ({"sink_available": True}, [("mqtt", "sink_available", False)]),
    ]
    ib = Inbox(sink_sources=BOARD_ONLY)
    ins = Ins()
    out = []
    t = 0
    for board, posts in steps:
        t += 1000
        for p in posts:
            ib.post(*p)
        events, resets = ib.drain(t)
        ib.merge(ins, board, t)
        out.append({"in": snap(ins), "events": events, "resets": resets})
    return out


def scn_resets():
    ib = Inbox(4)
    ib.post("console", "trip_reset")
    ib.post("mqtt", "trip_reset", 0)  # the value of a reset is ignored
    ib.post("console", "maintenance", True)
    events, resets = ib.drain()
    again = ib.drain()
    return {"events": events, "resets": resets, "again": [again[0], again[1]],
            "same": again[0] is again[1]}


BAD = [
    ("", "maintenance", True), (None, "maintenance", True), (5, "trip_reset", True),
    ("x" * 17, "maintenance", True), ("board", "maintenance", True),
    ("console", "maintenace", True), ("console", "maintenance", 1),
    ("console", "maintenance", None), ("console", "sink_available", "yes"),
    ("console", "sink_available", 0), ("console", "sink_available", True, 1.5),
]


def scn_bad():
    ib = Inbox(3)
    ib.post("console", "maintenance", True)
    out = []
    for req in BAD:
        try:
            ib.post(*req)
            out.append("accepted")
        except ValueError as e:
            out.append(str(e))
    ib.post("a", "trip_reset")
    ib.post("b", "trip_reset")
    try:
        ib.post("c", "trip_reset")
        out.append("accepted")
    except ValueError as e:
        out.append(str(e))
    events, resets = ib.drain()
    # more than 8 sources holding a state: refused; a known source still may post
    ib2 = Inbox(16)
    for k in range(8):
        ib2.post("s%d" % k, "maintenance", True)
    try:
        ib2.post("s9", "maintenance", True)
        out.append("accepted")
    except ValueError as e:
        out.append(str(e))
    ib2.post("s0", "maintenance", False)
    # bad sink sources
    for srcs in ((("modbus", None),), (("board", 5),), (("modbus", 0),), (("", 5),),
                 (("modbus", 1.5),), (("mqtt", 9), ("mqtt", 9))):
        try:
            Inbox(sink_sources=srcs)
            out.append("accepted")
        except ValueError as e:
            out.append(str(e))
    return {"errors": out, "pending_after": [len(events), resets],
            "sources": [e["source"] for e in ib2.drain()[0]]}


def scn_wraps():
    # the ring reuses its slots: 3 slots, 20 rounds of 2 requests each
    ib = Inbox(3)
    got = []
    for k in range(20):
        ib.post("c", "maintenance", k % 2 == 0)
        ib.post("r%d" % (k % 3), "trip_reset")
        events, resets = ib.drain()
        got.append([len(events), resets[0]])
    return got


# -- the sink rule ---------------------------------------------------------------------
# One tick at T = 10 s; a remote source's statement was made at 9.5 s (fresh) or at 1 s
# (beyond its timeout: silent), or never. The contact is closed or open.
T = 10000
CONFIGS = ((), (("board", None),), (("modbus", 3000),), (("mqtt", 5000),),
           (("board", None), ("modbus", 3000)), (("modbus", 3000), ("mqtt", 5000)), ALL3)
CONTACT = ("closed", "open")
REMOTE = ("available", "unavailable", "silent", "never")


def rule_case(cfg, contact, modbus, mqtt, t0=0):
    ib = Inbox(sink_sources=cfg)
    for src, st in (("modbus", modbus), ("mqtt", mqtt)):
        if st == "available":
            ib.post(src, "sink_available", True, (t0 + 9500) & M30)
        elif st == "unavailable":
            ib.post(src, "sink_available", False, (t0 + 9500) & M30)
        elif st == "silent":
            ib.post(src, "sink_available", True, (t0 + 1000) & M30)
    ib.drain((t0 + T) & M30)
    ins = Ins()
    ib.merge(ins, {"sink_available": contact == "closed"}, (t0 + T) & M30)
    return [ins.sink_available, ins.sink_by, ins.sink_silent]


def scn_rule():
    out = []
    for cfg in CONFIGS:
        for contact in CONTACT:
            for modbus in REMOTE:
                for mqtt in REMOTE:
                    out.append(rule_case(cfg, contact, modbus, mqtt))
    return out


def scn_rule_wrapped():
    # the same table with the ticks wrapping at 2**30 between the statements and the tick
    out = []
    for contact in CONTACT:
        for modbus in REMOTE:
            for mqtt in REMOTE:
                out.append(rule_case(ALL3, contact, modbus, mqtt, t0=M30 - 5000))
    return out


def scn_timeout():
    # modbus (timeout 3 s) says True at 500 ms after a tick, once; ticks every second from
    # just before the wrap: available until the first tick where it is older than 3 s
    ib = Inbox(sink_sources=(("modbus", 3000),))
    ins = Ins()
    t0 = M30 - 2500
    ib.post("modbus", "sink_available", True, (t0 + 500) & M30)
    got = []
    for k in range(1, 7):
        t = (t0 + 1000 * k) & M30
        ib.drain(t)
        ib.merge(ins, {}, t)
        got.append([1000 * k, ins.sink_available, ins.sink_silent])
    # silent stays silent: a tick 2**29 + 5 s later, where a wrapped ticks_diff would call
    # the old statement fresh again
    t = (t0 + (1 << 29) + 5000) & M30
    ib.drain(t)
    ib.merge(ins, {}, t)
    late = [ins.sink_available, ins.sink_silent]
    # it speaks again: available at once
    ib.post("modbus", "sink_available", True, t)
    ib.drain(t)
    ib.merge(ins, {}, t)
    return {"ticks": got, "late": late, "again": [ins.sink_available, ins.sink_by]}


def scn_pulse():
    # a 0 and a 1 written between two ticks: that tick is unavailable, the next available
    ib = Inbox(sink_sources=(("modbus", 30000),))
    ins = Ins()
    ib.post("modbus", "sink_available", True, 100)
    ib.drain(1000)
    ib.merge(ins, {}, 1000)
    first = ins.sink_available
    ib.post("modbus", "sink_available", False, 1200)
    ib.post("modbus", "sink_available", True, 1300)
    events, _ = ib.drain(2000)
    ib.merge(ins, {}, 2000)
    pulse = [ins.sink_available, ins.sink_by]
    ib.drain(3000)
    ib.merge(ins, {}, 3000)
    # a source that is not configured: its False counts too, its True does not
    ib.post("console", "sink_available", False)
    ib.drain(4000)
    ib.merge(ins, {}, 4000)
    other = [ins.sink_available, ins.sink_by]
    ib.post("console", "sink_available", True)
    ib.drain(5000)
    ib.merge(ins, {}, 5000)
    return {"first": first, "pulse": pulse, "events": [e["value"] for e in events],
            "after": [ins.sink_available, ins.sink_by], "other": other}


def scn_coalesce():
    # a heartbeat flood takes one slot and moves its time on; a change takes another
    ib = Inbox(3, sink_sources=(("modbus", 3000),))
    for k in range(20):
        ib.post("modbus", "sink_available", True, 100 + k)
    n1 = ib.queued("modbus")
    ib.post("modbus", "sink_available", False, 200)
    ib.post("console", "maintenance", True)  # the others' requests still fit
    n2 = [ib.queued("modbus"), ib.queued("console")]
    try:
        ib.post("mqtt", "trip_reset")
        full = "accepted"
    except ValueError as e:
        full = str(e)
    events, _ = ib.drain(3000)
    ins = Ins()
    ib.merge(ins, {}, 3000)
    ib.post("modbus", "sink_available", True, 3100)
    ib.drain(4000)
    ib.merge(ins, {}, 4000)
    avail = ins.sink_available
    ib.merge(ins, {}, 4000 + 3100)  # 4 s after its statement at 3.1 s: silent
    return {"n1": n1, "n2": n2, "full": full, "events": len(events), "avail": avail,
            "later": [ins.sink_available, ins.sink_silent]}


def scn_sources():
    return [list(sources({"sink_signal": True})), list(sources({"sink_signal": False})),
            list(sources({"sink_signal": True, "sink_sources": {"mqtt": 600, "modbus": 30}})),
            list(sources({"sink_signal": False, "sink_sources": {"modbus": None,
                                                                 "mqtt": 60}}))]
"""

NAMES = ["scn_merge", "scn_resets", "scn_bad", "scn_wraps", "scn_rule", "scn_rule_wrapped",
         "scn_timeout", "scn_pulse", "scn_coalesce", "scn_sources"]


@pytest.fixture(scope="module")
def cp():
    ns = {"__name__": "inbox_scenarios"}
    exec(SCENARIOS, ns)
    return {name: json.loads(json.dumps(ns[name]())) for name in NAMES}


def test_merge_board_or_remote_maintenance_and_strictest_sink(cp):
    r = [s["in"] for s in cp["scn_merge"]]
    assert r[0] == [False, None, True, "board"]
    assert r[1] == [True, "board", True, "board"]  # the board's key alone
    assert r[2] == [True, "board,console", True, "board"]  # both hold it
    assert r[3] == [True, "console", True, "board"]  # key off: console still holds it
    assert r[4] == [False, None, True, "board"]  # released
    assert r[5] == [False, None, False, "mqtt"]  # a remote "unavailable" wins
    assert r[6] == [False, None, True, "board"]  # withdrawn by saying available
    assert r[7] == [False, None, False, "board"]  # a remote True never beats the contact
    assert r[8] == [False, None, False, "board"]  # a contact not wired is open
    assert r[9] == [False, None, True, "board"]  # statements withdrawn
    assert r[10] == [False, None, False, "mqtt"]


def test_each_state_change_is_one_event_naming_its_source(cp):
    ev = [s["events"] for s in cp["scn_merge"]]
    assert ev[2] == [{"kind": "request", "source": "console", "what": "maintenance",
                      "value": True}]
    assert ev[4] == [{"kind": "request", "source": "console", "what": "maintenance",
                      "value": None}]
    assert ev[5][0]["source"] == "mqtt" and ev[5][0]["value"] is False
    assert [e["source"] for e in ev[9]] == ["modbus", "mqtt"]
    assert ev[0] == ev[1] == ev[3] == ev[8] == []


def test_resets_are_returned_in_order_and_repeated_statements_are_quiet(cp):
    r = cp["scn_resets"]
    assert r["resets"] == ["console", "mqtt"]
    assert [e["what"] for e in r["events"]] == ["maintenance"]
    assert r["again"] == [[], []] and r["same"] is True
    # a heartbeat repeating its statement causes no event
    assert all(len(g) == 2 for g in cp["scn_wraps"])
    assert [g[1] for g in cp["scn_wraps"][:4]] == ["r0", "r1", "r2", "r0"]
    assert all(g[0] == 1 for g in cp["scn_wraps"])  # maintenance toggles every round


def test_bad_requests_get_a_clear_error_and_change_nothing(cp):
    r = cp["scn_bad"]
    errors = r["errors"]
    assert "accepted" not in errors, errors
    assert "source must be a name of 1..16 characters" in errors[0]
    assert "board" in errors[4]
    assert "unknown request 'maintenace'" in errors[5]
    assert "maintenance takes True or False, got 1" in errors[6]
    assert "sink_available takes True, False or None" in errors[8]
    assert "at_ms must be ticks" in errors[10]
    assert "full (3 requests)" in errors[11]
    assert "more than 8 sources" in errors[12]
    assert all("timeout_ms must be an int > 0" in e for e in errors[13:16]), errors[13:16]
    assert "a name of 1..16 characters, once" in errors[16]
    assert "timeout_ms" in errors[17] and "once" in errors[18]
    # only the 3 good requests were queued: maintenance (an event) and two resets
    assert r["pending_after"] == [1, ["a", "b"]]
    # s9 was refused; s0 (already queued) could still release
    assert r["sources"] == [f"s{k}" for k in range(8)] + ["s0"]


def test_inbox_size_is_checked():
    for bad in (0, -1, 2.5, "8"):
        with pytest.raises(ValueError, match="inbox size"):
            Inbox(bad)


CONFIGS = [(), ("board",), ("modbus",), ("mqtt",), ("board", "modbus"), ("modbus", "mqtt"),
           ("board", "modbus", "mqtt")]
CONTACT = ("closed", "open")
REMOTE = ("available", "unavailable", "silent", "never")


def rule(cfg, contact, modbus, mqtt):
    """The sink rule as the README states it: every configured source must say
    available; a remote one silent beyond its timeout (or never heard) is unavailable;
    any one unavailable trips; a source that is not configured counts only when it says
    unavailable. (sink_available, sink_by, sink_silent)."""
    state = {"board": contact, "modbus": modbus, "mqtt": mqtt}
    off, silent = [], []
    for src in ("board", "modbus", "mqtt"):
        st = state[src]
        if src in cfg:
            if st not in ("closed", "available"):
                off.append(src)
            if st in ("silent", "never"):
                silent.append(src)
        elif st == "unavailable":
            off.append(src)
    if off:
        return [False, ",".join(sorted(off)), ",".join(silent) or None]
    return [True if cfg else None, ",".join(cfg) or None, None]


def test_the_sink_rule_truth_table(cp):
    """7 configurations x contact x Modbus x MQTT (224 cases): available only when every
    configured source is; silent (or never heard) counts as unavailable; any one
    unavailable trips, a source that is not configured by saying so only; the trip names
    the sources, and the silent ones."""
    cases = list(itertools.product(CONFIGS, CONTACT, REMOTE, REMOTE))
    got = cp["scn_rule"]
    assert len(got) == len(cases) == 224
    for case, g in zip(cases, got, strict=True):
        assert g == rule(*case), case
    # some rows spelled out
    table = dict(zip(cases, got, strict=True))
    all3 = ("board", "modbus", "mqtt")
    assert table[(all3, "closed", "available", "available")] == [True, "board,modbus,mqtt",
                                                                None]
    assert table[(all3, "closed", "silent", "available")] == [False, "modbus", "modbus"]
    assert table[(all3, "open", "available", "unavailable")] == [False, "board,mqtt", None]
    assert table[(all3, "closed", "never", "silent")] == [False, "modbus,mqtt",
                                                         "modbus,mqtt"]
    assert table[(("modbus",), "open", "available", "silent")] == [True, "modbus", None]
    assert table[(("modbus",), "open", "available", "unavailable")] == [False, "mqtt", None]
    assert table[((), "open", "silent", "available")] == [None, None, None]


def test_the_truth_table_holds_across_the_ticks_wrap(cp):
    cases = list(itertools.product(CONTACT, REMOTE, REMOTE))
    for case, g in zip(cases, cp["scn_rule_wrapped"], strict=True):
        assert g == rule(("board", "modbus", "mqtt"), *case), case


def test_a_silent_source_is_unavailable_from_the_first_tick_past_its_timeout(cp):
    r = cp["scn_timeout"]
    # said at 0.5 s, timeout 3 s: ticks 1..3 s available, 4 s (3.5 s old) unavailable
    assert r["ticks"] == [[1000, True, None], [2000, True, None], [3000, True, None],
                          [4000, False, "modbus"], [5000, False, "modbus"],
                          [6000, False, "modbus"]]
    assert r["late"] == [False, "modbus"]  # never fresh again by a wrapped ticks_diff
    assert r["again"] == [True, "modbus"]


def test_an_unavailable_between_two_ticks_still_trips_once(cp):
    r = cp["scn_pulse"]
    assert r["first"] is True
    assert r["pulse"] == [False, "modbus"] and r["events"] == [False, True]
    assert r["after"] == [True, "modbus"]
    assert r["other"] == [False, "console"]  # not configured: its "unavailable" counts


def test_a_heartbeat_flood_takes_one_slot(cp):
    r = cp["scn_coalesce"]
    assert r["n1"] == 1 and r["n2"] == [2, 1]
    assert "full (3 requests)" in r["full"]
    assert r["events"] == 3  # True, False, maintenance
    assert r["avail"] is True and r["later"] == [False, "modbus"]


def test_configured_sources_from_the_control_section(cp):
    assert cp["scn_sources"] == [[["board", None]], [],
                                 [["board", None], ["modbus", 30000], ["mqtt", 600000]],
                                 [["mqtt", 60000]]]


def test_micropython_gives_the_same_results(mp, cp):
    src = SCENARIOS + f"\nfor n in {NAMES!r}:\n    print(json.dumps(globals()[n]()))\n"
    got = mp.run_json(src)
    assert dict(zip(NAMES, got, strict=True)) == cp


def test_steady_state_allocates_nothing_on_micropython(mp):
    """Ticks without news, and ticks with a heartbeat (a repeated "available", posted
    and drained), allocate nothing, with every source configured."""
    src = SCENARIOS + r"""
import micropython
ib = Inbox(sink_sources=ALL3)
ins = Ins()
board = {"maintenance": False, "sink_available": True, "trip_reset": False}
ib.post("mqtt", "sink_available", True, 0)
ib.post("modbus", "sink_available", True, 0)
ib.drain(0)
ib.merge(ins, board, 0)
k = 100
t = 0
events = resets = n = err = None  # globals made before the lock
micropython.heap_lock()
try:
    while k:  # (a range() would allocate)
        t += 1000
        if k & 1:
            ib.post("modbus", "sink_available", True, t - 300)
            ib.post("mqtt", "sink_available", True, t - 200)
        events, resets = ib.drain(t)
        ib.merge(ins, board, t)
        n = len(events) + len(resets)
        k -= 1
except MemoryError as e:
    err = e
micropython.heap_unlock()
print(json.dumps("allocated" if err else "ok %d %r %r" % (n, ins.sink_available,
                                                          ins.sink_by)))
"""
    assert mp.run_json(src) == ["ok 0 True 'board,modbus,mqtt'"]
