"""The heat recovery ratio, the compute load's power and energy, the heat meter check
(heatgw.recovery, recschema, the recovery keys of the telemetry payload).

- In the real micropython binary (also the 32-bit single-float build): the limb arithmetic
  against Python's integers, our heat in mWh from the meter's limbs, the pairing of an
  energy register (growth, a reset, a jump, a stale gap), power integration and the MQTT
  source's parser and faults, and a control tick that allocates nothing.
- A plant scenario (host_tools.harness) whose compute load is metered by a pymodbus SDM630
  that follows the plant's IT load (host_tools/plantmeters.py): the node's hourly and
  cumulative ratio against the plant's IF97 heat over its true compute energy; a heat
  meter reading the plant's true heat agrees with our metering, one reading 10 % high
  raises heat_meter_mismatch.
- The whole node (tests/nodedriver.py) with a real mosquitto and a paho publisher as the
  site's IT monitoring: the MQTT compute source, stale and malformed messages, in the
  published telemetry (validated against its JSON Schema).
- The totals across a reboot: from the flash queue's newest telemetry record.
"""

import json
import time
from fractions import Fraction
from pathlib import Path

from host_tools.harness import run_scenario
from host_tools.paths import REPO
from tests.nodedriver import BASE, Node, check_healthy, config, messages

INVALID = -0x20000000
SCENARIO = REPO / "scenarios" / "compute_ratio.json"


def _cfg(modbus_port=502, **recovery):
    cfg = json.loads((REPO / "scenarios" / "default_config.json").read_text())
    cfg["modbus"] = {"buses": {"lan": {"type": "tcp", "host": "127.0.0.1",
                                       "port": modbus_port}},
                     "meters": {"compute": {"bus": "lan", "slave": 1, "model": "sdm630",
                                            "role": "compute", "period_s": 5}}}
    cfg["recovery"] = recovery or {"compute": {"source": "modbus"}}
    return cfg


def _checked(cfg, tmp_path):
    """The configuration as the node fills it (host_tools.config_check: the firmware's
    own validator and cross-checks)."""
    from host_tools.config_check import check

    path = Path(tmp_path) / "config.json"
    path.write_text(json.dumps(cfg))
    filled, errors, _ = check(path)
    assert errors == [], errors
    return filled


# -- in the binary: arithmetic, pairing, the MQTT parser --------------------------------

LOGIC = r"""
import json, micropython, random
import board
from heatgw import clock, start
from heatgw.modbus import Modbus
from heatgw.recovery import Recovery, _add, _add_big, _add_diff
from heatgw import recovery as R

CFG = json.loads(CFG_JSON)
res = {}


class Gw:  # what Recovery reads of heatgw.app.Gateway
    def __init__(self, cfg):
        self.meter = start.build_meter(cfg["meter"])
        self.modbus = Modbus(start.modbus_plan(cfg), board) if cfg.get("modbus") else None
        self.uptime_ms = 0
        self.events = []
        self.records = []

    def event(self, ev):
        self.events.append(ev)

    def emit(self, kind, rec):
        self.records.append(rec)


def locked(fn):
    fn()
    micropython.heap_lock()
    try:
        for _ in range(50):
            fn()
        ok = "ok"
    except MemoryError:
        ok = "allocates"
    micropython.heap_unlock()
    return ok


# 2-limb sums against Python's integers (long ints on every port)
random.seed(7)
M = (1 << 30) - 1
a = [0, 0]
big = 0
bad = 0
for k in range(3000):
    d = random.getrandbits(30) if k % 3 else random.getrandbits(8)
    _add(a, 0, d)
    big += d
    if a[0] > M or a[0] < 0 or (a[1] << 30) + a[0] != big:
        bad += 1
b = [0, 0]
bb = 0
for k in range(300):
    d = (random.getrandbits(20) << 20) | random.getrandbits(20)
    _add_big(b, 0, d)
    bb += d
    if b[0] > M or (b[1] << 30) + b[0] != bb:
        bad += 1
acc = [0, 0]
ab = 0
for k in range(1000):
    lo_hi = [random.getrandbits(30), random.getrandbits(20)]
    x = (lo_hi[1] << 30) + lo_hi[0]
    y = ((random.getrandbits(25) << 25) | random.getrandbits(25)) % (x + 1)
    c = [y & M, y >> 30]
    _add_diff(acc, 0, lo_hi, 0, c, 0)
    ab += x - y
    if acc[0] > M or (acc[1] << 30) + acc[0] != ab:
        bad += 1
res["limb_mismatches"] = bad

# our heat in mWh from the meter's limbs: floor(nJ / 3.6e9), exactly
gw = Gw(CFG)
rec = Recovery(CFG, gw)
st = gw.meter._st
from heatgw import meterkernel as k
bad = 0
q = [0, 0, 0, 0]
for n in range(400):
    top = random.getrandbits(18) if n % 2 else random.getrandbits(30)  # up to 2**90 nJ
    limbs = (random.getrandbits(30), random.getrandbits(30), top)
    for i in range(3):
        st[k.ST_E0 + i] = limbs[i]
    st[k.ST_ERR0] = n
    nj = (limbs[2] << 60) + (limbs[1] << 30) + limbs[0]
    rec._heat(q)
    if (q[1] << 30) + q[0] != nj // 3600000000 or q[2] != n or q[0] > M:
        bad += 1
res["heat_mismatches"] = bad
for i in range(k.ST_E0, k.STATE_WORDS):
    st[i] = 0

# an energy register: growth, a reset, a jump, a stale gap (all float32-exact kWh)
m = gw.modbus.meters["compute"]
ie = m.names.index("energy_kwh")
ip = m.names.index("power_w")
T0 = (1 << 30) - 22_000  # the ticks wrap at 2**30 ms inside the run
now = [T0]


def at(ms):
    return clock.ticks_add(T0, ms)


def reading(t_ms, e_kwh, p_w):  # as the poller stores a good poll, at t_ms
    run(t_ms - 1)
    t = at(t_ms)
    m.vals[ie] = e_kwh
    m.vals[ip] = p_w
    m.why[ie] = m.why[ip] = None
    m.valid[ie] = m.valid[ip] = t
    m.valid_ms = t
    m.fault = None


def run(to_ms):  # control ticks every second up to to_ms, one second of heat metered each
    while clock.ticks_diff(at(to_ms), clock.ticks_add(now[0], 1000)) >= 0:
        now[0] = clock.ticks_add(now[0], 1000)
        gw.meter.add(70000, 60000, 2_000_000, 1000)  # 2 L/s at 10 K
        gw.uptime_ms += 1000
        rec.tick(now[0])


def heat_mwh():
    return gw.meter.totals()["energy_nj"] // 3600000000


trace = []
rec.auto = False
e = 1000.0
step = 3 / 64  # kWh per 5 s: 46875 mWh
reading(0, e, 33750.0)
run(1000)  # the tick that sees it: our heat then is the pair's start
h0 = heat_mwh()
for i in range(1, 5):
    e += step
    reading(i * 5000 - 500, e, 33750.0)
    run(i * 5000)
h4 = heat_mwh()
rec.close(now[0])
trace.append(["iv1", rec.ext[R.X_IV], rec.interval_why, rec.ext[R.X_POWER], rec.compute_why])
res["iv1_expected_ppm"] = [h4 - h0, 4 * 46875]
e = 999.0  # the register fell: a reset or a replaced meter, adds nothing
reading(24_500, e, 33750.0)
run(25_000)
h5 = heat_mwh()
e += step
reading(29_500, e, 33750.0)
run(30_000)
h6 = heat_mwh()
e += 100.0  # 100 kWh in 5 s: 72 MW, above max_kw: a jump, adds nothing
reading(34_500, e, 33750.0)
run(35_000)
h7 = heat_mwh()
e += step
reading(39_500, e, 33750.0)
run(40_000)
h8 = heat_mwh()
rec.close(now[0])
trace.append(["iv2", rec.ext[R.X_IV], rec.interval_why])
run(130_000)  # no reading for 90 s: stale (the meter's stale_s: 60 s)
trace.append(["stale", rec._power(now[0])[1], rec._iv_why])
e += 1.0  # the register is exact across the gap: in the totals, in no window
reading(134_500, e, 33750.0)
run(135_000)
h9 = heat_mwh()
rec.close(now[0])
trace.append(["iv3", rec.ext[R.X_IV], rec.interval_why, rec.ext[R.X_POWER], rec.compute_why])
t = rec.totals()
res["totals"] = t
res["expected_heat"] = (h4 - h0) + (h6 - h5) + (h8 - h7) + (h9 - h8)
res["expected_compute"] = 6 * 46875 + 1000000
res["resets"] = rec.resets
res["trace"] = trace
res["ratio_total"] = rec.ratio_total
res["compute_energy_wh"] = rec.compute_energy_wh


def tick_no_reading():
    rec.tick(now[0])


res["tick_no_reading"] = locked(tick_no_reading)
later = [clock.ticks_add(now[0], 70_000)]


def tick_stale():  # the stale branch (windows marked) allocates nothing either
    rec.tick(later[0])


res["tick_stale"] = locked(tick_stale)

# the MQTT source: trapezoids in integer mWh, faults change nothing, one parse a second
MCFG = json.loads(CFG_JSON)
MCFG["modbus"] = None
MCFG["mqtt"] = {"host": "127.0.0.1", "site": "s"}
MCFG["recovery"] = {"compute": {"source": "mqtt", "topic": "it/power", "path": "data.0.watts",
                                "scale": 1000.0, "stale_s": 30, "max_bytes": 64,
                                "max_kw": 2000.0}}
g2 = Gw(MCFG)
r2 = Recovery(MCFG, g2)
r2.auto = False
mt = [T0]


def msg(payload, dt_ms):
    mt[0] = clock.ticks_add(mt[0], dt_ms)
    r2.mqtt_in(memoryview(payload), mt[0])
    r2.mqtt_parse(mt[0])
    r2.tick(mt[0])
    return [r2.mqtt_fault, r2.mqtt_faults, r2._mw]


out = []
out.append(msg(b'{"data": [{"watts": 1.0}]}', 0))
out.append(msg(b'{"data": [{"watts": 2.0}]}', 2000))
out.append(msg(b'{"data": [{"watts": 3}]}', 2000))
res["mqtt_after_3"] = [r2.totals()["compute_mwh"], r2.totals()["integrated"]]
for bad_msg in (b"not json", b'{"data": []}', b'{"data": [{"watts": "3"}]}',
                b'{"data": [{"watts": true}]}', b'{"data": [{"watts": -1}]}',
                b'{"data": [{"watts": 9e9}]}', b'{"data": [{"watts": 1}], "pad": "' +
                b"x" * 64 + b'"}', b'{"data": [{"watt": 5}]}'):
    out.append(msg(bad_msg, 2000))
res["mqtt_msgs"] = out
res["mqtt_after_faults"] = [r2.totals()["compute_mwh"], r2._mw, len(g2.events)]
# a flood: 100 messages within a second are parsed once, the newest
for i in range(100):
    r2.mqtt_in(memoryview(b'{"data": [{"watts": %d}]}' % (i + 1)), mt[0])
    r2.mqtt_parse(mt[0])
res["flood"] = [r2.mqtt_skipped, r2._mw, r2.mqtt_pending]
mt[0] = clock.ticks_add(mt[0], 1000)
r2.mqtt_parse(mt[0])
res["flood_after"] = [r2._mw, r2.mqtt_pending]
copy = memoryview(b'{"data": [{"watts": 7}]}')


def copy_in():
    r2.mqtt_in(copy, mt[0])


res["mqtt_in"] = locked(copy_in)
print(json.dumps(res))
"""


def test_arithmetic_pairing_and_the_mqtt_parser_in_the_binary(mp, tmp_path):
    """One run of the binary under test ($MICROPYTHON: the 32-bit single-float build too):
    - 2-limb sums (the totals, 30 bits a limb) against Python's integers: 4300 random adds,
      none differs, no limb ever reaches 2**30;
    - our heat in mWh from the meter's 90-bit nJ limbs: 400 random totals, exactly
      floor(nJ / 3.6e9), and the error time beside it;
    - an energy register's pairs (float32-exact kWh, ticks across the 2**30 wrap): the
      growth counts to the mWh; a fall (reset) and a jump beyond max_kw add nothing and
      leave the window without a ratio; a reading after a stale gap counts in the totals
      (the register is exact across it) and in no window; the interval's ratio is our heat
      over the register's growth;
    - the MQTT source: trapezoids in integer mWh, flagged integrated; every malformed
      message a named fault that changes nothing; a flood of 100 messages in a second is
      parsed once (the newest), the rest skipped;
    - a control tick allocates nothing (with and without the stale branch), nor does the
      client callback's copy of a message."""
    cfg = _checked(_cfg(), tmp_path)
    r = mp.run_json(f"CFG_JSON = {json.dumps(json.dumps(cfg))}\n" + LOGIC, timeout=300)[0]
    assert r["limb_mismatches"] == 0
    assert r["heat_mismatches"] == 0
    heat, elec = r["iv1_expected_ppm"]
    trace = {t[0]: t[1:] for t in r["trace"]}
    want = round(Fraction(heat * 10**6, elec))
    assert abs(trace["iv1"][0] - want) <= 1, (trace["iv1"], want)  # float32: +-1 ppm
    assert trace["iv1"][1] is None
    assert trace["iv1"][2:] == [33750, None]  # the meter's power
    assert trace["iv2"] == [INVALID, "meter_reset"]
    assert trace["stale"] == ["stale", "stale"]
    assert trace["iv3"][:2] == [INVALID, "stale"]
    assert r["resets"] == 2
    t = r["totals"]
    assert t["compute_mwh"] == r["expected_compute"] == 1_281_250, r
    assert t["ratio_heat_mwh"] == r["expected_heat"], r
    assert t["integrated"] is False
    assert r["compute_energy_wh"] == 1281
    assert abs(r["ratio_total"] - r["expected_heat"] / 1_281_250) < 1e-6
    assert r["tick_no_reading"] == r["tick_stale"] == "ok"
    # MQTT: 1, 2, 3 kW 2 s apart: (1+2)/2 kW x 2 s = 833.3 mWh -> 833; 1388.9 -> 1389
    assert r["mqtt_after_3"] == [833 + 1389, True]
    faults = [m[0] for m in r["mqtt_msgs"][3:]]
    assert faults == ["bad_json", "no_path", "not_number", "not_number", "bad_value",
                      "bad_value", "too_large", "no_path"], faults
    assert [m[1] for m in r["mqtt_msgs"][3:]] == list(range(1, 9))
    assert all(m[2] == 3000.0 for m in r["mqtt_msgs"][2:])  # nothing changed
    # the faults added no energy; one event (at most one a minute)
    assert r["mqtt_after_faults"][:2] == [833 + 1389, 3000.0]
    assert r["mqtt_after_faults"][2] == 1
    assert r["flood"] == [99, 3000.0, True]  # within the second: none parsed yet
    assert r["flood_after"] == [100_000.0, False]  # then the newest, once
    assert r["mqtt_in"] == "ok"


# -- a plant scenario: the ratio against the plant's truth ------------------------------


def _hours_and_total(summary):
    r = summary["recovery"]
    return r, r["hours"], r["total"]


def test_the_ratio_matches_the_plants_truth_hourly_and_cumulatively(tmp_path):
    """scenarios/compute_ratio.json (3 h of plant time): the IT load steps 60 -> 100 -> 50
    -> 90 kW with 10-minute ramps, metered by a pymodbus SDM630 that follows it in node
    time (host_tools/plantmeters.py), polled every 5 s; a heat meter reading the plant's
    true heat. Each hour's ratio and the cumulative one match the plant's IF97 heat over
    the IT load's true energy, over the spans the node's pairs covered, within 0.5 %; the
    node's compute energy is the IT load's to 0.05 %; the heat meter agrees with our
    metering within the meter's own error (0.5 %), no alarm."""
    summary, h = run_scenario(SCENARIO, workdir=tmp_path / "node")
    r, hours, total = _hours_and_total(summary)
    assert len(hours) == 3, hours
    for row in hours:
        assert row["why"] is None and row["boot"] == 1, row
        assert 715 <= row["pairs"] <= 721, row  # a pair per 5 s poll
        assert abs(row["error_pct"]) < 0.5, row
        # the register's growth over the same span is the IT load's energy
        assert abs(row["node_compute_kwh"] / row["true_compute_kwh"] - 1) < 5e-4, row
    assert abs(total["error_pct"]) < 0.5, total
    assert abs(total["node_compute_kwh"] / total["true_compute_kwh"] - 1) < 5e-4, total
    assert total["integrated"] is False  # an energy register: metered, not estimated
    # the three hours differ (ramps up and down): the check would see a stuck ratio
    ratios = [row["node_ratio"] for row in hours]
    assert max(ratios) - min(ratios) > 0.1, ratios
    hc = total["heat_check"]
    assert hc["mismatch"] is False and hc["why"] is None, hc
    assert abs(hc["diff_pct"]) < 0.5 and hc["own_kwh"] > 100, hc
    kinds = [e.get("kind") for e in h.node_events]
    assert "heat_check" not in kinds and "crash" not in kinds
    assert summary["modbus"]["meters"]["compute"]["failed"] == 0
    assert r["compute_meter"]["reads"] >= 2 * 10800 / 5 - 2  # power and energy each poll
    print("\ncompute_ratio: hours " + ", ".join(
        f"{row['node_ratio']:.4f} vs {row['true_ratio']:.4f} ({row['error_pct']:+.3f} %)"
        for row in hours) + f"; total {total['node_ratio']:.4f} vs "
        f"{total['true_ratio']:.4f} ({total['error_pct']:+.3f} %); compute "
        f"{total['node_compute_kwh']:.3f} vs {total['true_compute_kwh']:.3f} kWh; heat meter "
        f"{hc['diff_pct']:+.3f} %; wall {summary['wall_s']} s")


def test_a_heat_meter_reading_ten_percent_high_raises_the_mismatch_alarm(tmp_path):
    """The same plant for 25 minutes with a heat meter that reads 10 % high (gain 1.1) and
    recovery.heat_check.limit_pct 5, min_kwh 5: once both totals pass 5 kWh the node
    raises heat_meter_mismatch (a `heat_check` event, the alarm in the alarm book) with
    the difference near +10 %; the ratio is untouched by it."""
    sc = json.loads(SCENARIO.read_text())
    sc["name"] = "heat_meter_high"
    sc["duration_s"] = 1500
    sc["heat_meter"]["gain"] = 1.1
    sc["config"] = {"recovery": {"heat_check": {"meter": "heatmeter", "limit_pct": 5.0,
                                                "min_kwh": 5.0}}}
    path = tmp_path / "heat_meter_high.json"
    path.write_text(json.dumps(sc))
    summary, h = run_scenario(path, workdir=tmp_path / "node")
    evs = [e for e in h.node_events if e.get("kind") == "heat_check"]
    assert [e["state"] for e in evs] == ["mismatch"], evs
    assert 9.0 < evs[0]["diff_pct"] < 11.0, evs
    assert evs[0]["own_kwh"] >= 5.0 and evs[0]["meter_kwh"] >= 5.0
    print(f"\nheat meter 10 % high: mismatch at t = {evs[0]['harness_t_s']:.0f} s, "
          f"{evs[0]['diff_pct']:+.2f} % ({evs[0]['meter_kwh']} vs {evs[0]['own_kwh']} kWh)")


# -- the whole node: the MQTT compute source through a real broker ----------------------

TOPIC = "site/it/rack-1/power"
MQTT_BODY = r"""
await up()
r = gw.recovery
out(ready=True)
while True:
    line = sys.stdin.readline().strip()
    if line == "end":
        break
    await asyncio.sleep_ms(int(line))
    now = clk.ticks_ms()
    out(rec=r.record(), arr=r._marr, mt=r._mt, mw=r._mw, power=r._power(now), now=now,
        fault=r.mqtt_fault, faults=r.mqtt_faults)
"""


class ItMonitoring:
    """The site's IT monitoring: a paho client that publishes the rack's power."""

    def __init__(self, broker):
        import paho.mqtt.client as mqtt

        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="it-monitoring")
        self.c.connect("127.0.0.1", broker.port, keepalive=30)
        self.c.loop_start()

    def publish(self, payload):
        info = self.c.publish(TOPIC, payload, qos=1)
        info.wait_for_publish(10)
        time.sleep(0.2)  # the broker passes it on to the node (loopback: ~1 ms)

    def close(self):
        self.c.disconnect()
        self.c.loop_stop()


def test_the_mqtt_compute_source_with_stale_and_malformed_messages(tmp_path):
    """The whole node with recovery.compute.source mqtt (the path power.total_kw, scale
    1000, stale_s 30) and a real mosquitto; a paho client publishes as the site's IT
    monitoring, each message at a known node time (the node waits on its stdin meanwhile).
    - 40 kW every 5 s: compute_w 40000, the energy the trapezoids of the arrival times to
      the mWh, flagged integrated;
    - not JSON, a string, a missing key, a 600-byte message: bad_json, not_number,
      no_path, too_large; nothing changes (power and energy), a `compute` event;
    - 40 s without a message: no value, reason stale, in the published telemetry too
      (compute_w null, compute_why and ratio_interval_why "stale"); the gap is not
      integrated; the next two messages integrate again;
    every message the upstream got is valid against its JSON Schema."""
    from tests.brokers import Broker, Subscriber

    cfg = config(0)
    with Broker(tmp_path / "mosquitto") as b:
        cfg["mqtt"]["port"] = b.port
        cfg["recovery"] = {"compute": {"source": "mqtt", "topic": TOPIC,
                                       "path": "power.total_kw", "scale": 1000.0,
                                       "stale_s": 30}}
        sub = Subscriber(b, [BASE + "/telemetry", BASE + "/event"])
        it = ItMonitoring(b)
        node = Node(tmp_path, cfg, MQTT_BODY)
        node.wait_for("R ", timeout=120)  # ready: connected and subscribed

        def step(payload, ms):
            if payload is not None:
                it.publish(payload)
            node.go(str(ms))
            return json.loads(node.wait_for("R ")[2:])

        kw40 = json.dumps({"power": {"total_kw": 40.0}, "rack": "r1"})
        s = [step(kw40, 5000) for _ in range(7)]
        bad = [step(p, 5000) for p in (b"{bad json", json.dumps({"power": {"total_kw": "x"}}),
                                       json.dumps({"power": {}}),
                                       json.dumps({"power": {"total_kw": 1}, "pad": "x" * 600}))]
        stale = step(None, 40_000)
        back = [step(json.dumps({"power": {"total_kw": 50}}), 5000) for _ in range(2)]
        node.go("end")
        r = node.result()
        msgs = messages(sub)  # each one validated against its schema
        sub.close()
        it.close()
    check_healthy(r)
    arr = [x["arr"] for x in s]
    assert len(set(arr)) == 7  # each message arrived (and was stamped) once
    assert all(x["mw"] == 40000.0 and x["power"] == [40000.0, None] for x in s)
    spans = [(arr[i + 1] - arr[i]) % (1 << 30) for i in range(6)]
    want = sum(int(40000.0 * sp / 3600 + 0.5) for sp in spans)  # trapezoids, mWh
    e40 = s[-1]["rec"]["totals"]["compute_mwh"]
    assert abs(e40 - want) <= 6 and e40 > 0, (e40, want)  # float32: 1 mWh a pair
    assert s[-1]["rec"]["totals"]["integrated"] is True
    assert [x["fault"] for x in bad] == ["bad_json", "not_number", "no_path", "too_large"]
    assert [x["faults"] for x in bad] == [1, 2, 3, 4]
    for x in bad:  # nothing changed: the last good value, its time, the energy so far
        assert x["mw"] == 40000.0 and x["mt"] == arr[-1], x
    assert stale["power"] == [None, "stale"], stale
    assert stale["rec"]["compute_why"] == "stale" and stale["rec"]["compute_w"] is None
    assert back[0]["power"] == [50000.0, None]
    e_gap = back[0]["rec"]["totals"]["compute_mwh"]
    assert e_gap == bad[-1]["rec"]["totals"]["compute_mwh"], "the stale gap was integrated"
    sp = (back[1]["arr"] - back[0]["arr"]) % (1 << 30)
    assert abs(back[1]["rec"]["totals"]["compute_mwh"] - e_gap
               - int(50000.0 * sp / 3600 + 0.5)) <= 1
    tele = [json.loads(m[1]) for m in msgs if m[0] == BASE + "/telemetry"]
    assert tele and all("compute_w" in d and "ratio_total" in d for d in tele)
    assert any(d["compute_w"] == 40000 and d["compute_why"] is None for d in tele)
    gone = [d for d in tele if d["compute_why"] == "stale"]
    assert gone and all(d["compute_w"] is None and d["ratio_interval_why"] == "stale"
                        for d in gone), gone
    assert all(d["compute_energy_integrated"] for d in tele if d["compute_energy_wh"] > 0)
    evs = [json.loads(m[1]) for m in msgs if m[0] == BASE + "/event"]
    # the event's queue record: kind "other", its text the event's kind and main fields
    assert any(e["kind"] == "other" and e["text"].startswith("compute source=mqtt")
               and "fault=bad_json" in e["text"] for e in evs), [e["text"] for e in evs]


# -- the totals across reboots -----------------------------------------------------------

REBOOT_BODY = r"""
r = gw.recovery
out(boot=gw.boot_id, at_boot=r.totals())
await asyncio.sleep_ms(RUN_MS)
q = tel.q
s = q.last_totals()
out(boot=gw.boot_id, now=r.totals(), queue=s[1].get("recovery") if s else None,
    pairs=r.pairs)
if KILL:
    raise SystemExit  # power lost: no orderly stop, no save
"""


def test_the_totals_survive_a_reboot_from_the_queue_and_the_state_record(tmp_path):
    """The compute energy and the ratio's heat are persisted beside the heat totals. A
    node that loses power 65 s after boot (no save since the boot's) comes back with the
    totals of its flash queue's newest telemetry record (version-0x52 records carry
    them), not the boot save's zeros; after an orderly stop the next boot has the
    shutdown save's (newer than the queue's)."""
    from tests.brokers import free_port
    from tests.modbus_peers import PymodbusTCP, f32, sdm630

    e = [12345.75]

    async def grow(fc, start, address, count, registers, values):
        if start <= 0x48 < start + len(registers):  # the energy register: 0.5 kWh a poll
            e[0] += 0.5
            registers[0x48 - start:0x4A - start] = f32(e[0])
        return None

    srv = PymodbusTCP([sdm630(1, 36000.0, e[0], action=grow)])
    try:
        cfg = _cfg(srv.port)
        cfg["mqtt"] = config(free_port())["mqtt"]  # no broker: the records wait on flash
        flash = tmp_path / "flash.bin"

        def boot(run_ms, kill):
            body = REBOOT_BODY.replace("RUN_MS", str(run_ms)).replace("KILL", str(kill))
            n = Node(tmp_path, cfg, body, flash=flash)
            first = json.loads(n.wait_for("R ")[2:])
            second = json.loads(n.wait_for("R ")[2:])
            n.proc.wait(60)
            return first, second

        a0, a1 = boot(65_000, True)
        b0, b1 = boot(30_000, False)
        c0, _ = boot(1_000, False)
    finally:
        srv.stop()
    assert a0["at_boot"]["compute_mwh"] == 0 and a1["pairs"] >= 11
    assert a1["now"]["compute_mwh"] > 5_000_000  # ~0.5 kWh a poll
    q = a1["queue"]
    assert q is not None and 0 < q["compute_mwh"] <= a1["now"]["compute_mwh"]
    # the power cut: back with the queue's newest record, not the boot save's zeros
    assert b0["boot"] == a1["boot"] + 1
    assert b0["at_boot"] == q, (b0, q)
    assert b1["now"]["compute_mwh"] > q["compute_mwh"]  # and it counts on from there
    # the orderly stop saved the newest totals: the next boot has them
    assert c0["at_boot"]["compute_mwh"] >= b1["now"]["compute_mwh"]
    assert c0["at_boot"]["compute_mwh"] - b1["now"]["compute_mwh"] < 1_000_000


# -- the queue's extended records and the payload ---------------------------------------

QUEUE = r"""
import json
from heatgw.recqueue import RecordQueue, KIND_TELEMETRY, KIND_EVENT
from array import array
D = DIR
INVALID = -0x20000000


def tel(i, ext=None):
    f = {"boot": 3, "up_ms": i * 10000, "utc": None,
         "totals": {"energy_nj": i * 1000003, "volume_ul": i * 7, "time_ms": i * 10000}}
    if ext is not None:
        f["ext"] = ext
    return f


q = RecordQueue(D, 40)
for i in range(3):
    q.append(KIND_TELEMETRY, tel(i))
q.close()
q = RecordQueue(D, 40, ext=True)
x = array("i", [41250, 5 + (1 << 29), 3, 7, 9, 812345, INVALID, 11, 0, (1 << 30) - 1, 2, 1])
q.append(KIND_TELEMETRY, tel(3, x))
q.append(KIND_EVENT, {"boot": 3, "up_ms": 1, "code": "boot", "text": "hello"})
q.append(KIND_TELEMETRY, tel(5, x))
bad = 0
try:
    q.append(KIND_TELEMETRY, tel(6, array("i", [0] * 11)))
except ValueError:
    bad += 1
q.close()
q = RecordQueue(D, 40)
q.append(KIND_TELEMETRY, tel(6))
out = []
for s in range(1, q.next_seq):
    r = q.get(s)
    out.append([s, r["kind"], list(r["ext"]) if "ext" in r else None,
                r["totals"].get("recovery") if "totals" in r else None])
print(json.dumps({"recs": out, "bad": bad, "last": q.last_totals()[0]}))
"""


def test_queue_records_with_the_extension_and_switching_formats(mp, tmp_path):
    """A queue made with ext=True writes version-0x52 records of 152 bytes (the recovery
    values after the 100 bytes of a 0x51 record, then the CRC), checked here against an
    independent codec (struct, zlib); segments of both formats read back in one queue, so
    switching the feature on or off keeps the backlog: seqs contiguous, each record as
    written. A wrong extension is refused (nothing stored)."""
    import struct
    import zlib

    d = tmp_path / "q"
    r = mp.run_json(QUEUE.replace("DIR", repr(str(d))))[0]
    recs = r["recs"]
    assert [x[0] for x in recs] == list(range(1, 8))
    assert r["bad"] == 1 and r["last"] == 7
    x = [41250, 5 + (1 << 29), 3, 7, 9, 812345, INVALID, 11, 0, (1 << 30) - 1, 2, 1]
    by = {s: (ext, tot) for s, _k, ext, tot in recs}
    for s in (1, 2, 3, 7):
        assert by[s] == (None, None), by[s]
    assert by[5][1] is None  # an event
    for s in (4, 6):
        assert by[s][0] == x
        assert by[s][1] == {"compute_mwh": 5 + (1 << 29) + (3 << 30),
                            "ratio_heat_mwh": 7 + (9 << 30), "heat_meter_mwh": 11,
                            "heat_own_mwh": (1 << 30) - 1 + (2 << 30), "integrated": True}
    # the bytes on flash, read by an independent codec
    segs = sorted(p for p in d.iterdir() if p.name.startswith("seg"))
    sizes = sorted(p.stat().st_size for p in segs)
    assert sizes == [104, 3 * 104, 3 * 152], sizes
    raw = next(p for p in segs if p.stat().st_size == 3 * 152).read_bytes()
    for k in range(3):
        rec = raw[k * 152:(k + 1) * 152]
        assert rec[0] == 0x52
        assert struct.unpack_from("<I", rec, 148)[0] == zlib.crc32(rec[:148])
    ext = struct.unpack_from("<iIIIIiiIIIIB3x", raw, 100)
    assert list(ext) == x
    assert raw[152 + 100:152 + 148] == bytes(48)  # an event's extension: zeros


PAYLOAD = r"""
import json, board
from heatgw import start, payloads
from heatgw.modbus import Modbus
from heatgw.recovery import Recovery
from heatgw.recqueue import RecordQueue, KIND_TELEMETRY
from heatgw import recovery as R

CFG = json.loads(CFG_JSON)


class Gw:
    def __init__(self, cfg):
        self.meter = start.build_meter(cfg["meter"])
        self.modbus = Modbus(start.modbus_plan(cfg), board)
        self.uptime_ms = 0

    def event(self, ev):
        pass

    def emit(self, kind, rec):
        pass


gw = Gw(CFG)
rec = Recovery(CFG, gw)
rec.restore({"compute_mwh": 123456789012, "ratio_heat_mwh": 98765432101,
             "heat_meter_mwh": 5000000, "heat_own_mwh": 4900000, "integrated": False})
x = rec.ext
x[R.X_POWER] = 41250
x[R.X_IV] = 812345
rec.interval_why = None
rec.compute_why = None
rec.heat_why = None
m = gw.modbus.meters["compute"]
for i in range(len(m.names)):
    m.vals[i] = 41250.5 if m.names[i] == "power_w" else 12345.75
    m.valid[i] = board.clock.ticks_ms()
    m.why[i] = None
m.valid_ms = board.clock.ticks_ms()
gw.modbus.snapshot(board.clock.ticks_ms())
q = RecordQueue(DIR, 40, ext=True)
seq = q.append(KIND_TELEMETRY, {"boot": 1, "up_ms": 0, "utc": None, "ext": x,
                                "totals": {"energy_nj": 0, "volume_ul": 0}})
stored = q.get(seq)["ext"]
out = []
for live, vals in ((True, x), (False, stored)):
    w = payloads.Writer(2048)
    snap = payloads.Snapshot()
    snap.heap_free = 40000
    payloads.telemetry(w, snap, seq)
    w.n -= 1
    rec.write(w, vals, live)
    gw.modbus.write_meters(w, live)
    w.raw(b"}")
    out.append(bytes(w.value()).decode())
print(json.dumps(out))
"""


def test_the_payload_live_and_from_the_backlog(mp, tmp_path):
    """The recovery keys and the Modbus meters in a telemetry payload, as heatgw.telemetry
    writes them (after payloads.telemetry, before its closing brace), live and from the
    queue record: both valid against the JSON Schema; the same numbers (totals beyond
    2**30 mWh printed exactly from their limbs; the ratios from ppm and from the stored
    totals), the backlog's reasons "invalid" where a value is null, its meters all null."""
    from tests.payload_schemas import validate

    cfg = _cfg(heat_check={}, compute={"source": "modbus"})
    cfg["modbus"]["meters"]["heat"] = {"bus": "lan", "slave": 2, "role": "heat",
                                       "registers": {"energy_kwh": {
                                           "address": 0, "fc": 4, "type": "float32"}}}
    cfg = _checked(cfg, tmp_path)
    code = (f"CFG_JSON = {json.dumps(json.dumps(cfg))}\nDIR = {str(tmp_path / 'q')!r}\n"
            + PAYLOAD)
    live, backlog = (json.loads(s) for s in mp.run_json(code)[0])
    for doc in (live, backlog):
        validate(BASE + "/telemetry", json.dumps(doc).encode())
    assert live["compute_w"] == backlog["compute_w"] == 41250
    assert live["compute_why"] is None and backlog["compute_why"] is None
    assert live["compute_energy_wh"] == backlog["compute_energy_wh"] == 123456789.012
    assert live["ratio_heat_wh"] == 98765432.101
    assert live["ratio_interval"] == backlog["ratio_interval"] == 0.8123
    assert live["ratio_hour"] is None and live["ratio_hour_why"] == "not_ready"
    assert backlog["ratio_hour"] is None and backlog["ratio_hour_why"] == "invalid"
    assert live["ratio_total"] == backlog["ratio_total"] == round(98765432101 / 123456789012, 4)
    assert live["heat_meter_diff_kwh"] == backlog["heat_meter_diff_kwh"] == 0.1
    assert live["heat_meter_diff_pct"] == backlog["heat_meter_diff_pct"] == 2.04
    assert live["meters"]["compute"] == {"energy_kwh": 12345.75, "power_w": 41250.5,
                                         "fault": None}
    assert live["meters"]["heat"] == {"energy_kwh": None, "fault": "not_ready"}
    assert backlog["meters"]["compute"] == {"energy_kwh": None, "power_w": None,
                                            "fault": "invalid"}
    print(f"\npayload: {len(json.dumps(live, separators=(',', ':')))} bytes with the "
          "recovery keys and two meters")


# -- Home Assistant discovery ------------------------------------------------------------


def test_home_assistant_entities_for_the_recovery_keys_and_the_meters(tmp_path):
    """With a recovery section and Modbus meters, discovery adds: compute power (W, power,
    measurement), compute energy (kWh, energy, total_increasing, the template in kWh), the
    three ratios (no unit: a fraction), the heat meter difference (% and kWh), and one
    sensor per meter value, its class from the value's name; every config valid against
    its schema, every template reading a key the payload has; removals delete them all."""
    import sys

    from host_tools.paths import FIRMWARE
    from tests.payload_schemas import validate

    sys.path.insert(0, str(FIRMWARE))
    from heatgw import hadisc
    from heatgw.topics import Topics

    cfg = _cfg(compute={"source": "modbus"}, heat_check={})
    cfg["modbus"]["meters"]["heat-m"] = {"bus": "lan", "slave": 2, "role": "heat",
                                         "registers": {
                                             "energy_kwh": {"address": 0, "fc": 4,
                                                            "type": "float32"},
                                             "pressure_bar": {"address": 2, "fc": 4,
                                                              "type": "int16",
                                                              "scale": 0.01}}}
    cfg = _checked(cfg, tmp_path)
    t = Topics("heatgw", "s1", "heatgw-sim")
    cfgs = {topic.split("/")[3]: (topic, json.loads(p))
            for topic, p in hadisc.configs(t, "homeassistant", cfg=cfg)}
    for topic, c in cfgs.values():
        validate(topic, json.dumps(c).encode())
    c = {k: v[1] for k, v in cfgs.items()}
    assert (c["compute_w"]["device_class"], c["compute_w"]["unit_of_measurement"]) == (
        "power", "W")
    e = c["compute_energy_wh"]
    assert (e["device_class"], e["unit_of_measurement"], e["state_class"]) == (
        "energy", "kWh", "total_increasing")
    assert e["value_template"] == "{{ value_json.compute_energy_wh / 1000 }}"
    for k in ("ratio_interval", "ratio_hour", "ratio_total"):
        assert "unit_of_measurement" not in c[k] and "device_class" not in c[k], c[k]
        assert c[k]["value_template"] == "{{ value_json." + k + " }}"
    assert c["heat_meter_diff_pct"]["unit_of_measurement"] == "%"
    m = c["meter_compute_power_w"]
    assert m["value_template"] == "{{ value_json.meters['compute'].power_w }}"
    assert m["device_class"] == "power"
    assert c["meter_heat-m_energy_kwh"]["state_class"] == "total_increasing"
    p = c["meter_heat-m_pressure_bar"]
    assert "device_class" not in p and "unit_of_measurement" not in p
    assert len(cfgs) == len(hadisc.ENTITIES) + 5 + 2 + 2 + 2
    removed = [topic for topic, _ in hadisc.removals(t, "homeassistant", cfg=cfg)]
    assert sorted(removed) == sorted(v[0] for v in cfgs.values())
    # without the sections nothing is added
    plain = list(hadisc.configs(t, "homeassistant"))
    assert len(plain) == len(hadisc.ENTITIES)


# -- the configuration -------------------------------------------------------------------

BAD_RECOVERY = [
    ({"recovery": {}}, "recovery: set compute, heat_check or both"),
    ({"recovery": {"compute": {"source": "modbus", "meter": "nosuch"}}},
     "recovery.compute.meter: 'nosuch' is not one of modbus.meters"),
    ({"recovery": {"compute": {"source": "modbus"}}, "modbus.meters.compute.role": "pump"},
     "recovery.compute.meter: no meter of role compute in modbus.meters"),
    ({"recovery": {"compute": {"source": "modbus"}},
      "modbus.meters.other": {"bus": "lan", "slave": 2, "model": "sdm120", "role": "compute"}},
     "recovery.compute.meter: compute, other all have role compute: name the one to use"),
    ({"recovery": {"compute": {"source": "modbus", "meter": "compute"}},
      "modbus.meters.compute.role": "pump"},
     "recovery.compute.meter: modbus.meters.compute has role pump, not compute"),
    ({"recovery": {"compute": {"source": "mqtt", "path": "a.b"}}},
     "recovery.compute.topic: required with recovery.compute"),
    ({"recovery": {"compute": {"source": "mqtt", "topic": "it/p"}}},
     "recovery.compute.path: required with recovery.compute"),
    ({"recovery": {"compute": {"source": "mqtt", "topic": "it/p", "path": "a..b"}}},
     "recovery.compute.path: 'a..b' has an empty part"),
    ({"recovery": {"compute": {"source": "mqtt", "topic": "it/+/p", "path": "a"}}},
     'recovery.compute.topic: character "+" not allowed'),
    ({"recovery": {"compute": {"source": "mqtt", "topic": "it/p", "path": "a"}},
      "mqtt": None}, "recovery.compute.source: mqtt needs the mqtt section"),
    ({"recovery": {"compute": {"source": "mqtt", "topic": "it/p", "path": "a",
                               "max_bytes": 2048}}},
     "recovery.compute.max_bytes: 2048 is above the maximum 512 B"),
    ({"recovery": {"compute": {"source": "serial"}}},
     'recovery.compute.source: "serial" is not allowed'),
    ({"recovery": {"heat_check": {"limit_pct": 0}}},
     "recovery.heat_check.limit_pct: 0 is below the minimum 0.1 %"),
    ({"recovery": {"heat_check": {}}},
     "recovery.heat_check.meter: no meter of role heat in modbus.meters"),
    ({"recovery": {"compute": {"source": "modbus"}, "ratio": 1}},
     "recovery.ratio: unknown key"),
]


def _doc(over):
    cfg = _cfg()
    cfg["mqtt"] = {"host": "127.0.0.1", "site": "s1"}
    cfg.pop("recovery")
    for path, value in over.items():
        *parents, last = path.split(".")
        d = cfg
        for p in parents:
            d = d[p]
        d[last] = value
    return cfg


def test_the_recovery_section_is_checked_alike_on_the_device_and_the_host(mp, tmp_path):
    """A good section (the compute meter named by its role, filled in; the MQTT source's
    defaults) and 15 mistakes, each refused with an error naming the key, the same on the
    node (micropython, heatgw.config.load) and the host (host_tools.config_check)."""
    from host_tools.config_check import check

    good = [_doc({"recovery": {"compute": {"source": "modbus"}}}),
            _doc({"recovery": {"compute": {"source": "mqtt", "topic": "it/rack-1/power",
                                           "path": "data.0.watts"}}})]
    docs = good + [_doc(over) for over, _ in BAD_RECOVERY]
    paths = []
    for i, doc in enumerate(docs):
        p = tmp_path / f"c{i}.json"
        p.write_text(json.dumps(doc))
        paths.append(str(p))
    on_node = mp.run_json(f"PATHS = {paths!r}\n" + r"""
import json
from heatgw import config
for p in PATHS:
    cfg, errors, source, _ = config.load(p, save=False)
    print(json.dumps([source, errors, cfg if source == "file" else None]))
""")
    for i, p in enumerate(paths):
        cfg, errors, _mig = check(p)
        assert on_node[i] == ["file" if cfg else "default", errors, cfg], p
        if i < len(good):
            assert errors == [], errors
            continue
        want = BAD_RECOVERY[i - len(good)][1]
        assert any(e.startswith(want) for e in errors), (want, errors)
    assert on_node[0][2]["recovery"]["compute"]["meter"] == "compute"  # from its role
    c = on_node[1][2]["recovery"]["compute"]
    assert (c["scale"], c["stale_s"], c["max_bytes"], c["max_kw"]) == (1.0, 60, 512, 2000.0)


def test_the_recovery_code_is_loaded_only_when_configured(mp, tmp_path):
    """A node without the section imports neither heatgw.recovery nor recschema; with it,
    recschema is dropped after boot and heatgw.recovery stays (gw.recovery)."""
    plain = _doc({})
    plain["modbus"] = None
    plain["mqtt"] = None
    cfgs = {"plain": plain, "with": _doc({"recovery": {"compute": {"source": "modbus"}}})}
    got = {}
    for name, cfg in cfgs.items():
        cfg["mqtt"] = None
        got[name] = json.loads(mp.run_code(f"CFG = {json.dumps(json.dumps(cfg))}\n" + r"""
import json, sys, board
with open(board.data_dir() + "/config.json", "w") as f:
    f.write(CFG)
from heatgw import start
gw, asyncio = start.build()
print(json.dumps([gw.recovery is not None, "heatgw.recovery" in sys.modules,
                  "heatgw.recschema" in sys.modules]))
""").splitlines()[-1])  # the node prints its events before
    assert got["plain"] == [False, False, False]
    assert got["with"] == [True, True, False]


# -- the complete-node day (tests/siteday.py: the `modbus` feature is the compute source) --


def test_day_heat_recovery_ratio_against_the_plant(complete_node_day):
    """The day's compute meter (the harness's SDM630 following the IT load, polled every
    10 s) is the node's compute source: every completed hour with a ratio matches the
    plant's IF97 heat over the IT load's true energy within 0.5 % (an hour whose true heat
    is 0, the node in bypass, reads 0), as does the cumulative ratio; every telemetry
    record carries the recovery keys and the meters, and the energy register's growth
    gives a ratio in nearly every 10 s interval (the poll and the record share a period:
    an interval without a pair of its own reads no_reading)."""
    day = complete_node_day
    r = day.summary["recovery"]
    assert r is not None, "no recovery record from the node"
    hours = r["hours"]
    assert len(hours) >= day.summary["duration_s"] // 3600 - 1, len(hours)
    for row in hours:
        assert row["boot"] == 1 and row["why"] is None, row
        if row["true_ratio"]:
            assert abs(row["error_pct"]) < 0.5, row
        else:
            assert row["node_ratio"] < 1e-3, row
    t = r["total"]
    assert abs(t["error_pct"]) < 0.5 and t["integrated"] is False, t
    tele = [d for _, k, d in day.records() if k == "telemetry"]
    assert tele and all("ratio_total" in d and "compute_energy_wh" in d for d in tele)
    assert all(sorted(d["meters"]["compute"]) == ["energy_kwh", "fault", "power_w"]
               for d in tele)
    with_iv = [d for d in tele if d["ratio_interval"] is not None]
    whys = {}
    for d in tele:
        whys[d["ratio_interval_why"]] = whys.get(d["ratio_interval_why"], 0) + 1
    assert len(with_iv) >= 0.95 * len(tele), whys
    last = tele[-1]
    print(f"\nday: {len(hours)} hours, ratio error " + ", ".join(
        f"{row['error_pct']:+.3f}" for row in hours if row["true_ratio"]) +
        f" %; total {t['node_ratio']:.4f} vs {t['true_ratio']:.4f} ({t['error_pct']:+.3f} %)"
        f"; compute {last['compute_energy_wh'] / 1000:.3f} kWh; intervals {whys}")
