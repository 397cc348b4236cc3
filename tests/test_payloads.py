"""firmware/heatgw/payloads.py and topics.py: MQTT topics and payloads.

Exact totals are checked against CPython's Decimal on random limbs (and the extremes:
ten years at 1 MW, every limb full), in CPython and in the real micropython binary, which
must print the very same digits; the formatter's arithmetic runs under heap_lock there
(on a 32-bit binary a long int would allocate and fail). Every payload is parsed with
json.loads.
"""

import hashlib
import json
import random
import sys
from array import array
from decimal import ROUND_FLOOR, Decimal

import pytest

from host_tools.paths import FIRMWARE
from tests.payload_schemas import validate

sys.path.insert(0, str(FIRMWARE))

from heatgw import payloads  # noqa: E402
from heatgw.alarms import AlarmBook  # noqa: E402
from heatgw.payloads import Snapshot, Writer  # noqa: E402
from heatgw.topics import Topics  # noqa: E402

T = Topics("heatgw", "s1", "n1")  # where the node would publish these payloads
NJ_PER_WH = 3_600_000_000_000
TEN_YEARS_1MW_NJ = 10 * 365 * 86400 * 10**6 * 10**9  # 3.15e26 nJ
M30 = (1 << 30) - 1


def floor_dec(n, unit, places):
    q = (Decimal(n) / Decimal(unit)).quantize(Decimal(1).scaleb(-places), ROUND_FLOOR)
    return str(q) if places else str(int(q))


def cases():
    rnd = random.Random(8)
    energy = [0, 1, NJ_PER_WH - 1, NJ_PER_WH, 3_600_000_000 - 1, 3_600_000_000,
              TEN_YEARS_1MW_NJ, (1 << 90) - 1, 10**26 + 12345]
    energy += [rnd.getrandbits(rnd.randint(1, 90)) for _ in range(200)]
    small = [0, 1, 999, 1000, 1001, (1 << 60) - 1, 10 * 365 * 86400 * 1000]
    small += [rnd.getrandbits(rnd.randint(1, 60)) for _ in range(200)]
    return energy, small


def expected(energy, small):
    out = []
    for e in energy:
        out.append(floor_dec(e, 3_600_000_000_000, 3))  # Wh, 3 decimals
    for v in small:
        out.append(floor_dec(v, 1_000_000, 3))  # µL -> L
        out.append(floor_dec(v, 1000, 3))  # ms -> s
    return out


def limbs(n, count):
    return [(n >> (30 * i)) & M30 for i in range(count)]


EXACT_SRC = r"""
import json
from heatgw.payloads import Writer
w = Writer(64)
out = []
for n in ENERGY:
    w.reset()
    w.exact(n, 0, 3, (1000, 1000, 3600), 3)
    out.append(bytes(w.value()).decode())
for n in SMALL:
    w.reset()
    w.exact(n, 0, 2, (1000,), 3)
    out.append(bytes(w.value()).decode())
    w.reset()
    w.exact(n, 0, 2, (), 3)
    out.append(bytes(w.value()).decode())
print(json.dumps(out))
"""


def exact_cp(energy, small):
    w = Writer(64)
    out = []
    for n in energy:
        w.reset()
        w.exact(limbs(n, 3), 0, 3, (1000, 1000, 3600), 3)
        out.append(bytes(w.value()).decode())
    for n in small:
        for div in ((1000,), ()):
            w.reset()
            w.exact(limbs(n, 2), 0, 2, div, 3)
            out.append(bytes(w.value()).decode())
    return out


def test_exact_matches_decimal_in_cpython():
    energy, small = cases()
    assert exact_cp(energy, small) == expected(energy, small)
    # ten years at 1 MW in Wh: 14 significant digits, exact through a double
    e = floor_dec(TEN_YEARS_1MW_NJ, NJ_PER_WH, 3)
    assert e == "87600000000.000"
    assert repr(float(e)) == "87600000000.0"


def test_exact_identical_in_micropython(mp):
    energy, small = cases()
    e3 = [limbs(n, 3) for n in energy]
    s2 = [limbs(n, 2) for n in small]
    src = f"ENERGY = {e3!r}\nSMALL = {s2!r}\n" + EXACT_SRC
    (got,) = mp.run_json(src)
    assert got == expected(energy, small)


def test_exact_allocation_free_under_heap_lock(mp):
    """Every limb full (the largest totals): the whole formatter runs under heap_lock, so
    no intermediate is a long int (which allocates) on a 32-bit binary."""
    src = r"""
import micropython
from array import array
from heatgw.payloads import Writer
w = Writer(128)
st = array("i", [0x3FFFFFFF] * 3)
def go(w, st):
    micropython.heap_lock()
    try:
        w.reset()
        w.exact(st, 0, 3, (1000, 1000, 3600), 3)
        w.exact(st, 0, 2, (1000,), 3)
        w.exact(st, 0, 2, (), 4)
        ok = True
    except MemoryError:
        ok = False
    micropython.heap_unlock()
    return ok
ok = go(w, st)
print(ok)
print(bytes(w.value()).decode())
"""
    out = mp.run_code(src).split()
    assert out[0] == "True"
    full3 = (1 << 90) - 1
    full2 = (1 << 60) - 1
    assert out[1] == (floor_dec(full3, 3_600_000_000_000, 3) + floor_dec(full2, 1_000_000, 3)
                      + floor_dec(full2, 10000, 4))


def test_writer_overflow_is_an_error():
    w = Writer(16)
    with pytest.raises(ValueError, match="longer than the 16-byte buffer"):
        w.raw(b"x" * 17)
    w.reset()
    w.raw(b"x" * 14)
    with pytest.raises(ValueError):
        w.exact(limbs(10**20, 3), 0, 3, (), 0)
    assert w.n == 0  # a failed payload leaves nothing behind


def take_totals(s, totals):
    # the Snapshot's limbs (energy 3, volume 2, time 2, error 2, low-dT 2; LSB first)
    s.limbs[:] = array("i", limbs(totals["energy_nj"], 3) + limbs(totals["volume_ul"], 2)
                       + limbs(totals["time_ms"], 2) + limbs(totals["error_ms"], 2)
                       + limbs(totals["low_dt_ms"], 2))


def snapshot(**kw):
    s = Snapshot()
    take_totals(s, {"energy_nj": 123_456_789_012_345_678_901, "volume_ul": 987_654_321,
                    "time_ms": 86_400_000, "error_ms": 1234, "low_dt_ms": 5})
    for n in ("supply", "return", "sink_return", "it_coolant"):
        s.configured[n] = True
        s.reasons[n] = None
    s.temps_c.update(supply=45.5, **{"return": 35.25}, sink_return=30.0, it_coolant=40.0)
    s.flow_m3h = 5.5
    s.flow_why = None
    s.power_w = 63250.0
    s.power_why = None
    s.state, s.reason, s.relay_reuse = "reuse", "recovered", True
    s.active, s.latched = (), ()
    s.heap_free, s.boot, s.up_ms, s.utc = 40000, 3, 123456, 1_760_000_000
    for k, v in kw.items():
        setattr(s, k, v)
    return s


def test_telemetry_payload():
    w = Writer(1024)
    d = json.loads(bytes(payloads.telemetry(w, snapshot(), 42)))
    assert d["v"] == payloads.V and d["seq"] == 42 and d["boot"] == 3
    assert (d["up_ms"], d["utc"]) == (123456, 1_760_000_000)
    assert d["supply_c"] == 45.5 and d["supply_why"] is None
    assert d["dt_k"] == 10.25 and d["dt_why"] is None
    assert d["flow_m3h"] == 5.5 and d["power_w"] == 63250
    assert d["energy_wh"] == float(floor_dec(123_456_789_012_345_678_901, NJ_PER_WH, 3))
    raw = bytes(w.value()).decode()
    assert '"energy_wh":34293552.503' in raw  # exact digits, not a float's
    assert '"volume_l":987.654,' in raw
    assert '"time_s":86400.000,' in raw and '"error_s":1.234,' in raw
    assert '"low_dt_s":0.005,' in raw
    assert (d["state"], d["relay_reuse"], d["reason"]) == ("reuse", True, "recovered")
    assert d["heap_free"] == 40000
    # utc only when known
    d = json.loads(bytes(payloads.telemetry(w, snapshot(utc=None), 43)))
    assert "utc" not in d


def test_invalid_values_are_null_with_a_reason():
    w = Writer(1024)
    s = snapshot(flow_m3h=None, flow_why="stale")
    s.temps_c["supply"] = None
    s.reasons["supply"] = "open"
    s.configured["it_coolant"] = False
    s.temps_c["sink_return"] = float("nan")
    d = json.loads(bytes(payloads.telemetry(w, s, 1)))
    assert (d["supply_c"], d["supply_why"]) == (None, "open")
    assert (d["dt_k"], d["dt_why"]) == (None, "supply:open")
    assert (d["power_w"], d["power_why"]) == (None, "supply:open")
    assert (d["flow_m3h"], d["flow_why"]) == (None, "stale")
    assert (d["it_coolant_c"], d["it_coolant_why"]) == (None, "not_configured")
    assert (d["sink_return_c"], d["sink_return_why"]) == (None, "not_finite")
    assert d["return_c"] == 35.25 and d["return_why"] is None
    # no power from the meter yet: null with a reason, never 0
    d = json.loads(bytes(payloads.telemetry(w, snapshot(power_w=None, power_why="no_data"),
                                            2)))
    assert (d["power_w"], d["power_why"]) == (None, "no_data")
    # a fresh snapshot (nothing configured): every key there, every value null + why
    d = json.loads(bytes(payloads.telemetry(w, Snapshot(), 3)))
    for k in ("supply", "return", "sink_return", "it_coolant", "flow"):
        assert d[k + ("_m3h" if k == "flow" else "_c")] is None
        assert d[k + "_why"] == "not_configured"
    assert d["energy_wh"] == 0 and d["volume_l"] == 0


class _Cal:
    """What payloads.state() reads of a sensor: its `cal` (rtd.TemperatureSensor)."""

    def __init__(self, cal):
        self.cal = cal


CAL_SENSORS = {"return": _Cal((("channel", "two_point", "pair"), None, 3, 1.0010561,
                               -0.3712, 0.0031)),
               "supply": _Cal((("channel",), 1790000000, 3, 0.9990559, -1.2719, 0.0)),
               "it_coolant": _Cal(None)}


def test_state_event_alarm_payloads():
    w = Writer(1024)
    d = json.loads(bytes(payloads.state(w, "bypass", "sink_unavailable", ("sink_unavailable",),
                                        ("valve_stuck",), False, "0a1b2c3d", 4, 5000)))
    assert d == {"v": payloads.V, "state": "bypass", "reason": "sink_unavailable",
                 "relay_reuse": False, "active": ["sink_unavailable"],
                 "latched": ["valve_stuck"], "fault": None, "fw": payloads.FW_VERSION,
                 "config_hash": "0a1b2c3d", "boot": 4, "up_ms": 5000, "calibration": {}}
    # the calibration each sensor applies (rtd.TemperatureSensor.cal), in sensor order
    raw = bytes(payloads.state(w, "bypass", "maintenance", (), (), False, None, 4, 5,
                               sensors=CAL_SENSORS))
    d = validate(T.state, raw)
    assert d["calibration"] == {
        "supply": {"methods": ["channel"], "utc": 1790000000, "boot": 3, "gain": 0.999056,
                   "offset_ohm": -1.272, "offset_k": 0.0},
        "return": {"methods": ["channel", "two_point", "pair"], "utc": None, "boot": 3,
                   "gain": 1.001056, "offset_ohm": -0.371, "offset_k": 0.003}}
    assert list(d["calibration"]) == ["supply", "return"]
    ev = {"kind": "trip", "reason": "sensor_fault:supply", "t_ms": 5,
          "values": {"sensor": "supply", "sensor_reason": 'o"pen\\', "temp_c": None},
          "boot": 4, "up_ms": 5, "utc": None, "seq": 17}
    d = json.loads(bytes(payloads.event(w, ev)))
    assert d == dict(ev, v=payloads.V)
    book = AlarmBook()
    book.feed("event", {"kind": "task_failing", "task": "persist", "error": "E\n",
                        "up_ms": 77, "utc": 1_700_000_000})
    a = book.get("task_failing:persist")
    d = json.loads(bytes(payloads.alarm(w, a)))
    assert d == dict(a.record(), v=payloads.V)
    assert d["detail"] == "E\n" and d["ack_required"] is True
    book.ack("task_failing:persist", "console")
    assert bytes(payloads.alarm(w, book.get("task_failing:persist"))) == b""


def test_payloads_identical_in_micropython(mp):
    """The same snapshot, alarm and state give the same bytes on the unix port."""
    src = r"""
import json
from heatgw import payloads
from heatgw.payloads import Snapshot, Writer
from heatgw.alarms import AlarmBook
s = Snapshot()
for i, v in enumerate(LIMBS):
    s.limbs[i] = v
for n in ("supply", "return", "sink_return"):
    s.configured[n] = True
    s.reasons[n] = None
s.temps_c["supply"] = 45.5
s.temps_c["return"] = 35.25
s.temps_c["sink_return"] = None
s.reasons["sink_return"] = "short"
s.flow_m3h, s.flow_why, s.power_w, s.power_why = 5.5, None, 63250.0, None
s.active, s.latched, s.heap_free, s.boot, s.up_ms = ("maintenance",), (), 1, 2, 3
w = Writer(1024)
print(json.dumps(bytes(payloads.telemetry(w, s, 9)).decode()))
b = AlarmBook()
b.feed("event", {"kind": "crash", "task": "sampler", "error": "E", "up_ms": 5, "utc": 6})
print(json.dumps(bytes(payloads.alarm(w, b.get("crash:sampler"))).decode()))
print(json.dumps(bytes(payloads.state(w, "reuse", "recovered", (), (), True, None, 1, 2,
                                      utc=3, fault="crash:x")).decode()))
class _Cal:
    def __init__(self, cal):
        self.cal = cal
CAL_SENSORS = {"return": _Cal((("channel", "two_point", "pair"), None, 3, 1.0010561,
                               -0.3712, 0.0031)),
               "supply": _Cal((("channel",), 1790000000, 3, 0.9990559, -1.2719, 0.0)),
               "it_coolant": _Cal(None)}
print(json.dumps(bytes(payloads.state(w, "bypass", "maintenance", (), (), False, None, 4, 5,
                                      sensors=CAL_SENSORS)).decode()))
"""
    s = snapshot(active=("maintenance",), latched=(), heap_free=1, boot=2, up_ms=3, utc=None)
    s.configured["it_coolant"] = False
    s.temps_c["it_coolant"] = None
    s.temps_c["sink_return"] = None
    s.reasons["sink_return"] = "short"
    s.state, s.reason, s.relay_reuse = "bypass", "boot", False
    got = mp.run_json(f"LIMBS = {list(s.limbs)!r}\n" + src)
    w = Writer(1024)
    assert got[0] == bytes(payloads.telemetry(w, s, 9)).decode()
    b = AlarmBook()
    b.feed("event", {"kind": "crash", "task": "sampler", "error": "E", "up_ms": 5, "utc": 6})
    assert got[1] == bytes(payloads.alarm(w, b.get("crash:sampler"))).decode()
    assert got[2] == bytes(payloads.state(w, "reuse", "recovered", (), (), True, None, 1, 2,
                                          utc=3, fault="crash:x")).decode()
    validate(T.telemetry, got[0].encode())  # each against its JSON Schema
    validate(T.alarm("crash:sampler"), got[1].encode())
    validate(T.state, got[2].encode())
    assert got[3] == bytes(payloads.state(w, "bypass", "maintenance", (), (), False, None, 4,
                                          5, sensors=CAL_SENSORS)).decode()
    validate(T.state, got[3].encode())


def test_snapshot_reads_the_meter_limbs(mp):
    """take_meter copies the kernel's limbs in the right order: the telemetry's totals
    equal HeatMeter.totals() rounded down, for totals far beyond 2**30."""
    src = r"""
import json
from heatgw import fluid, payloads
from heatgw.meter import HeatMeter
from heatgw.payloads import Snapshot, Writer
m = HeatMeter(fluid.water(), meter_in_return=True, cutoff_k=0.2)
m.restore({"energy_nj": 315360000000000000000000000, "volume_ul": 1300000000000123,
           "time_ms": 315360000000, "error_ms": 1234567, "low_dt_ms": 999})
m.add(70000, 50000, 100000, 1000)  # 0.1 L at dT 20 K: integrated on take_meter's flush
s = Snapshot()
s.take_meter(m)
s.heap_free = 4096  # take() sets it in the node; null has no reason, the schema refuses it
print(json.dumps(m.totals()))
print(json.dumps(bytes(payloads.telemetry(Writer(1024), s, 1)).decode()))
print(json.dumps([s.power_w, s.power_why, m.last_power_w]))
"""
    totals, text, power = mp.run_json(src)
    d = validate(T.telemetry, text.encode())
    raw = text
    assert totals["volume_ul"] == 1300000000000123 + 100000
    assert f'"energy_wh":{floor_dec(totals["energy_nj"], NJ_PER_WH, 3)},' in raw
    assert f'"volume_l":{floor_dec(totals["volume_ul"], 10**6, 3)},' in raw
    assert f'"time_s":{floor_dec(totals["time_ms"], 1000, 3)},' in raw
    assert f'"error_s":{floor_dec(totals["error_ms"], 1000, 3)},' in raw
    assert f'"low_dt_s":{floor_dec(totals["low_dt_ms"], 1000, 3)},' in raw
    assert power[0] == power[2] and power[0] > 0 and power[1] is None
    assert d["power_w"] is None and d["power_why"] == "supply:not_configured"


def test_config_hash(tmp_path, mp):
    data = json.dumps({"version": 2, "node_id": "x" * 300}).encode()
    p = tmp_path / "config.json"
    p.write_bytes(data)
    want = hashlib.sha256(data).hexdigest()[:8]
    assert payloads.config_hash(str(p)) == want
    assert payloads.config_hash(str(tmp_path / "missing.json")) is None
    out = mp.run_code(f"from heatgw.payloads import config_hash\nprint(config_hash({str(p)!r}))")
    assert out.strip() == want


# -- topics ---------------------------------------------------------------------------


def test_topics_built_once():
    t = Topics("heatgw/eu", "site-1", "gw_07")
    assert t.status == "heatgw/eu/site-1/gw_07/status"
    assert t.telemetry.endswith("/gw_07/telemetry") and t.event.endswith("/event")
    assert t.state.endswith("/state") and t.cmd.endswith("/cmd")
    assert t.cmd_ack == "heatgw/eu/site-1/gw_07/cmd/ack"
    assert t.alarm("sensor_fault:supply") == "heatgw/eu/site-1/gw_07/alarm/sensor_fault:supply"
    assert t.alarm_filter == "heatgw/eu/site-1/gw_07/alarm/+"
    assert [x[0] for x in t.all()] == ["status", "telemetry", "event", "state", "alarm",
                                       "cmd", "cmd_ack"]


@pytest.mark.parametrize("prefix,site,node", [
    ("heat+gw", "s", "n"), ("heatgw", "s#", "n"), ("heatgw", "s", "n\x00"),
    ("heatgw", "s/t", "n"), ("", "s", "n"), ("a//b", "s", "n"), ("/a", "s", "n"),
    ("a/", "s", "n"), ("$SYS", "s", "n"), ("a/b/c/d/e", "s", "n"), ("heatgw", "", "n"),
    ("heatgw", "s", "n" * 33), ("heatgw", None, "n"), ("heatgw", "s", "nö"),
])
def test_topics_reject_bad_names(prefix, site, node):
    with pytest.raises(ValueError):
        Topics(prefix, site, node)


def test_bad_alarm_id_rejected():
    t = Topics("heatgw", "s", "n")
    for bad in ("a+b", "a#", "A", "a/b", "", "x" * 49):
        with pytest.raises(ValueError):
            t.alarm(bad)


def test_topics_in_micropython(mp):
    src = r"""
from heatgw.topics import Topics
t = Topics("heatgw", "site", "node")
print(t.cmd_ack)
for args in (("heat+gw", "s", "n"), ("heatgw", "s/x", "n"), ("heatgw", "s", "n#")):
    try:
        Topics(*args)
        print("accepted")
    except ValueError as e:
        print("ValueError")
"""
    assert mp.run_code(src).split() == ["heatgw/site/node/cmd/ack"] + ["ValueError"] * 3


def test_snapshot_take_from_a_gateway(mp):
    """take() reads what heatgw.app.Gateway holds: inputs, meter, fail-safe, relays."""
    src = r"""
import json
from heatgw import fluid, payloads
from heatgw.failsafe import FailSafe, Inputs
from heatgw.meter import HeatMeter
from heatgw.payloads import Snapshot, Writer


class Gw:
    pass


gw = Gw()
gw.inputs = Inputs(("supply", "return", "it_coolant"))
gw.inputs.temps_c.update({"supply": 60.5, "return": 40.25, "it_coolant": None})
gw.inputs.temp_reasons.update({"supply": None, "return": None, "it_coolant": "short"})
gw.inputs.flow_m3h = 2.5
gw.inputs.flow_reason = None
gw.flow = object()
gw.meter = HeatMeter(fluid.water(), meter_in_return=True, cutoff_k=0.2)
gw.meter.add(60500, 40250, 10000, 1000)
gw.failsafe = FailSafe({}, sensors_cfg={}, flow_cfg=None, now_ms=0, latched=("valve_stuck",))
gw.relay_reuse = False
gw.boot_id = 7
gw.uptime_ms = 1234
s = Snapshot()
s.take(gw, heap_free=5000, utc=1760000000)
print(json.dumps(bytes(payloads.telemetry(Writer(1024), s, 1)).decode()))
"""
    (text,) = mp.run_json(src)
    d = validate(T.telemetry, text.encode())
    assert (d["supply_c"], d["return_c"], d["dt_k"]) == (60.5, 40.25, 20.25)
    assert (d["it_coolant_c"], d["it_coolant_why"]) == (None, "short")
    assert (d["sink_return_c"], d["sink_return_why"]) == (None, "not_configured")
    assert d["flow_m3h"] == 2.5 and d["power_w"] > 0 and d["power_why"] is None
    assert d["volume_l"] == 0.01
    assert (d["state"], d["reason"], d["latched"]) == ("bypass", "boot", ["valve_stuck"])
    assert (d["boot"], d["up_ms"], d["utc"], d["heap_free"]) == (7, 1234, 1760000000, 5000)
