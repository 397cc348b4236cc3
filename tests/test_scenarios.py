"""The gateway application on the host board against the simulated plant (issue 3).

Every scenario runs the real firmware (boot.py, main.py, heatgw.*) in the real
`micropython` binary, in lockstep with host_tools.harness, which owns the plant, time,
relays, watchdog and power. When a trip condition appeared is the harness's own view of
the values it served; the node never reports it.
"""

import json

import pytest

from host_tools.harness import run_scenario
from host_tools.paths import REPO

SCENARIOS = REPO / "scenarios"
_cache = {}


def run(name, tmp_path_factory, **kw):
    """Run scenarios/<name>.json once per session; (summary, harness)."""
    key = (name, tuple(sorted(kw.items())))
    if key not in _cache:
        work = tmp_path_factory.mktemp(name)
        _cache[key] = run_scenario(SCENARIOS / f"{name}.json", workdir=work, **kw)
    return _cache[key]


def console(h):
    return h.console_path.read_text()


# scenario -> the reasons (harness view) that must trip reuse in it
TRIP_CATALOGUE = {
    "sink_lost": {"sink_unavailable"},
    "pump_failure": {"sink_flow_low"},
    "weekend_low_demand": {"sink_return_high"},
    "sensor_faults": {"sensor_fault:it_coolant", "sensor_fault:sink_return"},
    "valve_stuck": {"valve_stuck", "sink_unavailable"},
    "over_temperature": {"it_coolant_high"},
    "maintenance": {"maintenance"},
    "chatter": {"sink_return_high"},
    "task_crash": {"task_crash"},
    "supervisor_crash": {"task_crash"},
    "flow_burst": {"flow_implausible"},
}


@pytest.mark.parametrize("name", sorted(TRIP_CATALOGUE))
def test_each_trip_bypasses_within_one_control_tick(name, tmp_path_factory):
    s, h = run(name, tmp_path_factory)
    assert "Traceback" not in console(h), console(h)[-3000:]
    tick_s = s["control_tick_s"]
    assert tick_s <= 1.0
    seen = {t["reason"] for t in s["trips"]}
    assert TRIP_CATALOGUE[name] <= seen, (seen, s["conditions"])
    for t in s["trips"]:
        # a condition that appears while reuse runs: the relay drops no later than the
        # control tick after it (from the harness's clock, not the node's report)
        assert t["bypass_t_s"] is not None, t
        assert 0 <= t["latency_s"] <= tick_s, t
    # every drop to bypass during the run has a cause the harness saw, and the node named
    drops = [tr for tr in s["relay_transitions"] if tr["state"] == "bypass"
             and tr["t_s"] < s["duration_s"]]
    assert drops
    for tr in drops:
        assert tr["condition_t_s"] is not None, tr
        assert tr["reason"], tr
    # the reuse loop never took the IT coolant over its limit
    assert s["plant"]["max_it_coolant_c"] <= s["plant"]["it_coolant_limit_c"]


def test_flow_bursts_above_the_rating_trip_and_every_pulse_is_metered(tmp_path_factory):
    """Two bursts above the meter's 15 m3/h (20 m3/h, then 180 m3/h = 500 Hz at 0.1 L a
    pulse, the input's maximum) each trip flow_implausible within a tick (the catalogue
    test above) and clear when the flow is back; the node metered every pulse served,
    exactly (the host board's default counter is the hardware one)."""
    s, h = run("flow_burst", tmp_path_factory)
    trips = [t for t in s["trips"] if t["reason"] == "flow_implausible"]
    assert [round(t["condition_t_s"]) for t in trips] == [1501, 2401], trips
    clears = [e for e in h.node_events if e.get("kind") == "clear"
              and e.get("reason") == "flow_implausible"]
    # clear once a tick's window holds the plant's flow only: within two ticks of the end
    ends = [1560.3, 2430.7]
    assert len(clears) == 2 and all(0 < c["harness_t_s"] - end <= 2 * s["control_tick_s"]
                                    for c, end in zip(clears, ends, strict=True)), clears
    served = h.world.sent  # pulses of 0.1 L the harness sent the node (none after 2990 s)
    assert served > 2990 * 8.7 / 3.6 / 0.1  # the plant's flow, and the bursts on top
    assert h.final_totals["volume_ul"] == served * 100_000


def test_trips_recover_after_delay_and_dwell(tmp_path_factory):
    s, h = run("sink_lost", tmp_path_factory)
    cfg = h.cfg["control"]
    states = [(tr["t_s"], tr["state"]) for tr in s["relay_transitions"]]
    back = [t for t, st in states if st == "reuse" and 4200 < t < 7200]
    assert len(back) == 1
    # the sink came back at 4200 s: reuse only after recover_s of all-clear
    assert back[0] >= 4200 + cfg["recover_s"]
    assert back[0] <= 4200 + cfg["recover_s"] + 30


def test_no_chattering_one_reenable_per_min_dwell(tmp_path_factory):
    s, h = run("chatter", tmp_path_factory)
    dwell_s = h.cfg["control"]["min_dwell_s"]
    trips = [t for t in s["trips"] if t["reason"] == "sink_return_high"]
    reuse = [tr["t_s"] for tr in s["relay_transitions"] if tr["state"] == "reuse"]
    in_wave = [t for t in reuse if 900 <= t <= 8100]
    # the wave crosses the limit ~17 times; reuse is re-enabled at most once per dwell
    assert len(trips) >= 2
    assert len(in_wave) <= (8100 - 900) / dwell_s + 1
    for a, b in zip(reuse, reuse[1:], strict=False):
        assert b - a >= dwell_s, reuse


def test_severe_trips_latch_until_technician_reset(tmp_path_factory):
    s, h = run("over_temperature", tmp_path_factory)
    latch = [e for e in h.node_events if e.get("kind") == "latch"]
    assert latch and latch[0]["reason"] == "it_coolant_high"
    latched_at = latch[0]["harness_t_s"]
    reuse_after = [tr["t_s"] for tr in s["relay_transitions"]
                   if tr["state"] == "reuse" and tr["t_s"] > latched_at]
    # the coolant cools within minutes of the trip, but reuse waits for the reset (5400 s)
    cleared = [e for e in h.node_events if e.get("kind") == "clear"
               and e.get("reason") == "it_coolant_high"]
    assert cleared and cleared[0]["harness_t_s"] < 5400 - 600
    assert reuse_after and reuse_after[0] >= 5400
    resets = [e for e in h.node_events if e.get("kind") == "reset"]
    assert any(e.get("result") == "cleared" for e in resets)

    s, h = run("valve_stuck", tmp_path_factory)
    stuck = [e for e in h.node_events if e.get("kind") == "latch"
             and e.get("reason") == "valve_stuck"]
    assert stuck
    reuse_after = [tr["t_s"] for tr in s["relay_transitions"]
                   if tr["state"] == "reuse" and tr["t_s"] > stuck[0]["harness_t_s"]]
    assert len(stuck) == 2  # seized at the bypass end, then at the reuse end
    # the second latch holds the bypass until the reset at 4200 s (valve freed at 3600 s)
    reuse_after = [t for t in reuse_after if t > stuck[1]["harness_t_s"]]
    assert reuse_after and reuse_after[0] >= 4200
    assert s["plant"]["max_it_coolant_c"] < s["plant"]["it_coolant_limit_c"]


def test_latched_trip_survives_reboot(tmp_path_factory, tmp_path):
    sc = json.loads((SCENARIOS / "over_temperature.json").read_text())
    sc["name"] = "over_temperature_cut"
    sc["events"] = [{"t_s": 4000, "do": "power_cut", "off_s": 5}]
    sc["duration_s"] = 5000
    path = tmp_path / "sc.json"
    path.write_text(json.dumps(sc))
    s, h = run_scenario(path, workdir=tmp_path / "w")
    latch = [e for e in h.node_events if e.get("kind") == "latch"]
    assert latch and latch[0]["harness_t_s"] < 4000
    assert h.restores and h.restores[-1]["latched"] == ["it_coolant_high"]
    reuse_after = [tr for tr in s["relay_transitions"]
                   if tr["state"] == "reuse" and tr["t_s"] > latch[0]["harness_t_s"]]
    assert reuse_after == []


def active_pins(s, t0_s, t1_s):
    """Relay pin levels the node drove to active in (t0, t1): harness-observed `P` lines
    (the host board's relay modules are active-low)."""
    return [p for p in s["pin_transitions"] if t0_s < p[0] < t1_s and p[2] == 0]


def test_hung_control_bypass_by_dead_man_within_1_5_ticks_then_watchdog(tmp_path_factory):
    s, h = run("hung_control", tmp_path_factory)
    tick_s = s["control_tick_s"]
    wdt_s = h.cfg["supervisor"]["watchdog_ms"] / 1000.0
    assert s["dead_man"]["hold_ms"] == 1400
    assert [b["cause"] for b in s["boots"]] == ["power_on", "watchdog"]
    reboot = s["boots"][1]
    assert [ms for _, ms in h.watchdog_starts] == [h.cfg["supervisor"]["watchdog_ms"]] * 2
    (hang_s,) = s["hangs_t_s"]
    # the node was in reuse when it hung; the dead-man monostable dropped the coils
    # within 1.5 control ticks of the hang, without any firmware ...
    drop = next(tr for tr in s["relay_transitions"]
                if tr["state"] == "bypass" and tr["t_s"] >= hang_s)
    assert drop["reason"] == "dead_man"
    assert 0 < drop["t_s"] - hang_s <= 1.5 * tick_s
    assert s["dead_man"]["drops_t_s"] == [drop["t_s"]]
    hang = next(t for t in s["trips"] if t["reason"] == "control_hung")
    assert hang["latency_s"] <= 1.5 * tick_s
    # ... while the hung node's relay pins still asked for reuse until the reset
    assert not [p for p in s["pin_transitions"] if hang_s <= p[0] < reboot["t_s"]]
    # the watchdog still reset the node (its timeout after the last feed)
    assert hang_s + wdt_s - tick_s <= reboot["t_s"] <= hang_s + wdt_s + 2 * tick_s
    # the new boot starts with every coil off and keeps them off through its dwell
    assert not any(reboot["coils_at_boot"].values())
    assert reboot["first_energise_t_s"] - reboot["t_s"] >= h.cfg["control"]["min_dwell_s"]
    assert "Traceback" not in console(h)


def test_task_crash_is_logged_relays_drop_and_watchdog_resets(tmp_path_factory):
    s, h = run("task_crash", tmp_path_factory)
    crash = [e for e in h.node_events if e.get("kind") == "crash"]
    assert crash and crash[0]["task"] == "sampler" and "OSError" in crash[0]["error"]
    drop = next(tr for tr in s["relay_transitions"] if tr["state"] == "bypass")
    assert drop["reason"] == "crash:sampler" and drop["t_s"] - 900 <= s["control_tick_s"]
    assert [b["cause"] for b in s["boots"]] == ["power_on", "watchdog"]
    # at the relay pins: released at the crash, never active again until the reset
    assert active_pins(s, drop["t_s"] - 0.001, s["boots"][1]["t_s"]) == []
    assert [p[2] for p in s["pin_transitions"] if p[0] == drop["t_s"]] == [1, 1]
    assert not any(s["boots"][1]["coils_at_boot"].values())
    # the new boot runs normally again: reuse returns after its dwell
    assert s["relay_transitions"][-2]["state"] == "reuse"


def test_no_relay_is_energised_after_the_supervisor_crashes(tmp_path_factory):
    # The control task outlives the supervisor and drives the relays every tick: the
    # fault latch must keep every pin released until the watchdog resets the node.
    s, h = run("supervisor_crash", tmp_path_factory)
    crash = [e for e in h.node_events if e.get("kind") == "crash"]
    assert [(e["task"], "OSError" in e["error"]) for e in crash] == [("supervisor", True)]
    drop = next(tr for tr in s["relay_transitions"] if tr["state"] == "bypass")
    assert drop["reason"] == "crash:supervisor"
    assert 0 <= drop["t_s"] - 600 <= s["control_tick_s"]
    assert [b["cause"] for b in s["boots"]] == ["power_on", "watchdog"]
    reboot_s = s["boots"][1]["t_s"]
    assert active_pins(s, drop["t_s"] - 0.001, reboot_s) == []
    # the control task did run on (it would have re-energised them): the dead-man
    # output stopped at the crash, though the supervisor never fed the watchdog again
    assert reboot_s - drop["t_s"] >= h.cfg["supervisor"]["watchdog_ms"] / 1000.0 - 1.0
    assert s["relay_transitions"][-2]["state"] == "reuse"  # the new boot controls again
    assert "Traceback" not in console(h)


def test_a_restartable_task_crash_leaves_reuse_running(tmp_path_factory):
    s, h = run("persist_crash", tmp_path_factory)
    ev = h.node_events
    crashed = [e for e in ev if e.get("kind") == "task" and e.get("state") == "crashed"]
    assert len(crashed) >= 5 and {e["task"] for e in crashed} == {"persist"}
    assert all("OSError" in e["error"] for e in crashed)
    # capped exponential backoff between restarts
    delays = [e["restart_in_ms"] for e in crashed]
    assert delays[:7] == [1000, 2000, 4000, 8000, 16000, 32000, 60000]
    assert set(delays[6:]) == {60000}
    failing = [e for e in ev if e.get("kind") == "task_failing"]
    assert len(failing) == 1 and failing[0]["task"] == "persist"
    assert failing[0]["harness_t_s"] == crashed[4]["harness_t_s"]
    # no critical fault, no reset; the relays stayed energised from reuse to the end
    assert not [e for e in ev if e.get("kind") == "crash"]
    assert [b["cause"] for b in s["boots"]] == ["power_on"]
    assert [tr["state"] for tr in s["relay_transitions"]] == ["reuse", "bypass"]
    assert s["relay_transitions"][1]["reason"] == "shutdown"
    assert [p for p in s["pin_transitions"] if 300.5 < p[0] < s["duration_s"]] == []
    # metering went on through the failure, and the first save after the flash came
    # back (790 s) succeeded and holds it
    saves = [x for x in h.saves if x["why"] == "interval"]
    during = [x for x in saves if 590 <= x["t_s"] < 790]
    after = [x for x in saves if x["t_s"] >= 790]
    assert during == [] and after
    before = [x for x in saves if x["t_s"] < 590][-1]
    assert after[0]["totals"]["energy_nj"] > before["totals"]["energy_nj"]
    assert after[0]["t_s"] - 790 <= 60 + 1
    assert s["last_status"]["flash_errors"] > 0
    assert "Traceback" not in console(h)


def test_100_power_cuts_totals_intact_monotonic_equal_last_save(tmp_path):
    ops = list(range(1, 9))  # a save of the state record takes ~7 flash operations
    sc = {
        "name": "power_cuts_100", "duration_s": 100 * 25 + 60,
        "initial": {"tank_c": 37.8, "it_feed_c": 40.0}, "load_kw": 100, "demand_kw": 100,
        "config": {"persist": {"interval_s": 10},
                   "control": {"recover_s": 10, "min_dwell_s": 10, "stale_s": 2}},
        "events": [{"t_s": 30, "do": "power_cut_series", "count": 100, "every_s": 25,
                    "off_s": 2, "at_flash_op": ops + [None] * 2,
                    "torn_bytes": [0, 5, 16, 33, 64]}],
    }
    path = tmp_path / "sc.json"
    path.write_text(json.dumps(sc))
    s, h = run_scenario(path, workdir=tmp_path / "w")
    cuts = s["power_cuts"]
    assert len(cuts) == 100
    assert all("cut_t_s" in c for c in cuts), [c for c in cuts if "cut_t_s" not in c][:3]
    inside = [c for c in cuts if c["inside_save"]]
    torn = sum(1 for c in inside if c["info"]["torn_bytes"] < c["info"]["len"])
    print(f"power cuts: {len(cuts)}, inside a save: {len(inside)} ({torn} torn mid-write), "
          f"restored the in-flight save: {sum(c['restored_is'] == 'inflight' for c in cuts)}")
    assert len(inside) >= 60
    last_energy = 0
    for c in cuts:
        assert c["restored"] is not None, c  # never corrupt: a record always comes back
        if c["restored_is"] == "inflight":
            assert c["inside_save"], c  # only a save whose last write landed
        else:
            assert c["restored_is"] == "last_saved", c
        energy = c["restored"]["totals"]["energy_nj"]
        assert energy >= last_energy  # never backward
        last_energy = energy
    assert "Traceback" not in console(h)


def test_bad_or_missing_config_runs_default_and_stays_bypassed(tmp_path):
    cases = ({"config_text": '{"version": 1, "sensors": {"supply": {'},
             {"config_text": '{"version": 1, "control": {"tick_ms": 5000}}'},
             {"config_file": None})
    why = ("not valid JSON", "control.tick_ms: 5000 is above the maximum", "not found")
    for i, extra in enumerate(cases):
        sc = {"name": f"cfg{i}", "duration_s": 900, "load_kw": 100, "demand_kw": 100, **extra}
        path = tmp_path / f"sc{i}.json"
        path.write_text(json.dumps(sc))
        s, h = run_scenario(path, workdir=tmp_path / f"w{i}")
        text = console(h)
        assert why[i] in text, text[:2000]
        assert "running the default configuration" in text
        assert "Traceback" not in text
        assert s["relay_transitions"] == []  # never left the safe state
        assert [b["cause"] for b in s["boots"]] == ["power_on"]  # and never crashed


def test_safe_boot_stops_the_application_before_the_watchdog(tmp_path):
    for i, extra in enumerate(({"safe_boot": True}, {"safeboot_file": True})):
        sc = {"name": f"safe{i}", "duration_s": 120, "load_kw": 100, "demand_kw": 100, **extra}
        path = tmp_path / f"sc{i}.json"
        path.write_text(json.dumps(sc))
        s, h = run_scenario(path, workdir=tmp_path / f"w{i}")
        assert "safe boot" in console(h)
        assert s["relay_transitions"] == [] and s["saves"] == 0
        assert [b["cause"] for b in s["boots"]] == ["power_on"]
        assert h.watchdog_starts == []  # no watchdog was started


def test_deterministic_and_make_scenario_writes_the_summary(tmp_path_factory, tmp_path):
    import subprocess

    first, _ = run("maintenance", tmp_path_factory)
    out = tmp_path / "maintenance.json"
    proc = subprocess.run(
        ["make", "-s", "scenario", f"SCENARIO={SCENARIOS / 'maintenance.json'}", f"OUT={out}",
         "MPY=0"], cwd=REPO, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    again = json.loads(out.read_text())
    for key in ("relay_transitions", "trips", "metered", "plant", "boots", "conditions"):
        assert again[key] == first[key], key
    for key in ("control_tick_s", "peak_heap_bytes"):
        assert key in again
    assert set(again["metered"]) >= {"energy_kwh", "volume_m3", "error_time_s",
                                     "low_dt_time_s"}
    assert set(again["plant"]) >= {"heat_delivered_kwh", "max_it_coolant_c",
                                   "it_coolant_limit_c"}


def _true_kwh_until(plant_log, t_s):
    """The plant's true heat delivered before t_s (kWh): each log record covers
    [t, t + dt), a record the instant cuts is counted in part."""
    import numpy as np

    from host_tools.trueheat import true_heat_series

    rec = np.asarray(plant_log, dtype=np.float64)
    share = np.clip((t_s - rec[:, 0]) / rec[:, 1], 0.0, 1.0)
    return float(np.sum(true_heat_series(plant_log) * share)) / 3.6e6


def test_a_power_cut_loses_one_telemetry_interval_with_the_queue_not_a_save_interval(
        tmp_path):
    # The same 20 s cut at 100 kW, with telemetry (restore from the newer of the state
    # record and the flash queue; no broker needed) and without (the state record only).
    sc = json.loads((SCENARIOS / "power_cut_100kw.json").read_text())
    assert sc["config"]["mqtt"]  # telemetry on, as shipped
    runs = {}
    for name, mqtt in (("queue", sc["config"]["mqtt"]), ("state", None)):
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(dict(sc, config=dict(sc["config"], mqtt=mqtt))))
        runs[name] = run_scenario(path, workdir=tmp_path / name, mpy=True)
    lost = {}
    for name, (s, h) in runs.items():
        (cut,) = s["power_cuts"]
        assert cut["restored_from"] == name, cut
        got = cut["restored"]["totals"]
        truth_kwh = _true_kwh_until(h.plant.log, cut["cut_t_s"])
        lost[name] = {"s": cut["cut_t_s"] - got["time_ms"] / 1000,
                      "kwh": truth_kwh - got["energy_nj"] / 3.6e15,
                      "run_kwh": s["plant"]["heat_delivered_kwh"] - s["metered"]["energy_kwh"],
                      "run_pct": s["heat_error_pct"]}
        assert s["metered"]["time_s"] > 3000 and "Traceback" not in console(h)
    print("power cut 20 s at 100 kW, metering lost before the cut / over the run: "
          + "; ".join(f"{k}: {v['s']:.1f} s, {v['kwh']:.3f} kWh / {v['run_kwh']:.3f} kWh "
                      f"({v['run_pct']:+.2f} %)" for k, v in lost.items()))
    tick_s = runs["queue"][1].tick_ms / 1000
    interval_s = runs["queue"][1].cfg["telemetry"]["interval_s"]
    save_s = runs["state"][1].cfg["persist"]["interval_s"]
    assert 0 <= lost["queue"]["s"] <= interval_s + tick_s  # at most one telemetry interval
    assert interval_s < lost["state"]["s"] <= save_s + tick_s  # up to one save interval
    # what the restore lost is what the plant delivered in the lost time (~100 kW)
    for v in lost.values():
        assert 0 <= v["kwh"] <= v["s"] * 110 / 3600 + 0.01
    # the rest of the run meters alike: the runs differ by exactly what the restores lost
    diff = runs["queue"][0]["metered"]["energy_kwh"] - runs["state"][0]["metered"]["energy_kwh"]
    assert abs(diff - (lost["state"]["kwh"] - lost["queue"]["kwh"])) < 0.02
