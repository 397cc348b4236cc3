"""firmware/heatgw/inbox.py: the one command inbox and the board/remote merge.

The scenarios (SCENARIOS) are MicroPython-compatible source run in CPython, where they
are asserted, and again in the real micropython binary, which must give the very same
results and allocate nothing in the steady state (heap_lock).
"""

import json
import sys

import pytest

from host_tools.paths import FIRMWARE

sys.path.insert(0, str(FIRMWARE))

from heatgw.inbox import Inbox  # noqa: E402

SCENARIOS = r"""
import json
from heatgw.inbox import Inbox


class Ins:
    maintenance = None
    maintenance_by = None
    sink_available = None
    sink_by = None


def snap(ins):
    return [ins.maintenance, ins.maintenance_by, ins.sink_available, ins.sink_by]


def scn_merge():
    # (board levels, requests posted before the tick) -> merged inputs, each tick
    steps = [
        ({"maintenance": False, "sink_available": True}, []),
        ({"maintenance": True, "sink_available": True}, []),
        ({"maintenance": True, "sink_available": True}, [("console", "maintenance", True)]),
        ({"maintenance": False, "sink_available": True}, []),
        ({"maintenance": False, "sink_available": True}, [("console", "maintenance", False)]),
        ({"maintenance": False, "sink_available": True}, [("mqtt", "sink_available", False)]),
        ({"maintenance": False, "sink_available": True}, [("mqtt", "sink_available", True)]),
        ({"maintenance": False, "sink_available": False}, [("modbus", "sink_available", True)]),
        ({"maintenance": False}, []),  # no contact wired: the remote statement counts
        ({"maintenance": False}, [("modbus", "sink_available", None),
                                  ("mqtt", "sink_available", None)]),
        ({}, [("mqtt", "sink_available", False)]),
    ]
    ib = Inbox()
    ins = Ins()
    out = []
    for board, posts in steps:
        for p in posts:
            ib.post(*p)
        events, resets = ib.drain()
        ib.merge(ins, board)
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
    ("console", "sink_available", 0),
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
"""

NAMES = ["scn_merge", "scn_resets", "scn_bad", "scn_wraps"]


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
    assert r[8] == [False, None, True, "modbus,mqtt"]  # no contact wired: the remotes say
    assert r[9] == [False, None, None, None]  # nobody says anything
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
    assert "full (3 requests)" in errors[10]
    assert "more than 8 sources" in errors[11]
    # only the 3 good requests were queued: maintenance (an event) and two resets
    assert r["pending_after"] == [1, ["a", "b"]]
    # s9 was refused; s0 (already queued) could still release
    assert r["sources"] == [f"s{k}" for k in range(8)] + ["s0"]


def test_inbox_size_is_checked():
    for bad in (0, -1, 2.5, "8"):
        with pytest.raises(ValueError, match="inbox size"):
            Inbox(bad)


def test_micropython_gives_the_same_results(mp, cp):
    src = SCENARIOS + f"\nfor n in {NAMES!r}:\n    print(json.dumps(globals()[n]()))\n"
    got = mp.run_json(src)
    assert dict(zip(NAMES, got, strict=True)) == cp


def test_steady_state_allocates_nothing_on_micropython(mp):
    src = SCENARIOS + r"""
import micropython
ib = Inbox()
ins = Ins()
board = {"maintenance": False, "sink_available": True, "trip_reset": False}
ib.post("mqtt", "sink_available", True)
ib.drain()
ib.merge(ins, board)
k = 100
events = resets = n = err = None  # globals made before the lock
micropython.heap_lock()
try:
    while k:  # (a range() would allocate)
        events, resets = ib.drain()
        ib.merge(ins, board)
        n = len(events) + len(resets)
        k -= 1
except MemoryError as e:
    err = e
micropython.heap_unlock()
print(json.dumps("allocated" if err else "ok %d %r" % (n, ins.sink_by)))
"""
    assert mp.run_json(src) == ["ok 0 'board'"]
