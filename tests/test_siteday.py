"""Checks on the complete-node day (tests/siteday.py): the one simulated 24 h day of the
suite, with every feature the node has, run once and shared. Each test checks one part:
metering against the plant, the heap, telemetry delivery, Home Assistant discovery.
A later feature adds its test here (or in its own module) on the same fixture."""

import json
import math
from collections import Counter

import pytest

from host_tools import mpinfo
from host_tools.harness import heap_bytes
from host_tools.paths import FIRMWARE
from tests.nodedriver import LATE_MAX_MS
from tests.siteday import BUDGET_HOST64_KB


def test_day_meter_agrees_with_the_plant(complete_node_day):
    day = complete_node_day
    s = day.summary
    text = day.console.read_text()
    assert "Traceback" not in text, text[-3000:]
    print(f"day: metered {s['metered']['energy_kwh']:.3f} kWh, plant "
          f"{s['plant']['heat_delivered_kwh']:.3f} kWh, error {s['heat_error_pct']:+.4f} %, "
          f"{s['wall_s']} s")
    assert s["duration_s"] == 86400
    assert [b["cause"] for b in s["boots"]] == ["power_on"]
    assert s["plant"]["heat_delivered_kwh"] > 500  # a real day of reuse, not a bypassed one
    assert abs(s["heat_error_pct"]) < 0.5
    assert s["metered"]["error_time_s"] == 0
    assert s["plant"]["max_it_coolant_c"] <= s["plant"]["it_coolant_limit_c"]


def test_day_heap_without_memory_errors_or_crashed_tasks(complete_node_day):
    day = complete_node_day
    s = day.summary
    budget = day.heap_budget_bytes
    print(f"day heap: peak {s['peak_heap_bytes']} B, smallest largest free block "
          f"{s['min_largest_free_bytes']} B, in -X heapsize={s['heapsize']} (ROMFS image "
          f"{s['romfs_image_bytes']} B and host board {s['host_board_bytes']} B not "
          f"counted), budget {budget} B")
    assert s["romfs_image_bytes"] > 0  # the code ran from the image
    assert s["min_largest_free_bytes"] is not None and s["min_largest_free_bytes"] > 0
    assert s["memory_errors"] == 0 and s["console_memory_errors"] == 0
    kinds = day.event_kinds()
    crashed = [e for e in day.harness.node_events
               if e.get("kind") == "task" and e.get("state") == "crashed"]
    assert "crash" not in kinds and "task_failing" not in kinds and not crashed, crashed[:3]
    assert 0 < s["peak_heap_bytes"]


@pytest.mark.xfail(strict=True, reason=(
    "the complete node's own peak is 187.8 KB from ROMFS on the 64-bit host (image and "
    "host board not counted), above 144 KB (90 % of 160K): ~2,530 qstrs in 7 pools (28.4 "
    "KB); the day runs in siteday.RUN_HEAP_HOST64_KB"))
def test_day_heap_peak_is_under_90_percent_of_the_budget(complete_node_day):
    s = complete_node_day.summary
    # the live heap after gc.collect() leaves 10 % of the budget for transients
    assert 0 < s["peak_heap_bytes"] < 0.9 * complete_node_day.heap_budget_bytes
    # and the node ran in the budget itself: only the image and the host board came on top
    assert mpinfo.heap_kb(BUDGET_HOST64_KB) * 1024 == complete_node_day.heap_budget_bytes
    assert heap_bytes(s["heapsize"]) == (complete_node_day.heap_budget_bytes
                                         + 4096 * math.ceil(s["romfs_image_bytes"] / 4096)
                                         + s["host_board_bytes"])


def test_day_telemetry_delivers_every_record_once_in_seq_without_retransmission(
        complete_node_day):
    day = complete_node_day
    m = day.summary["mqtt"]
    recs = day.records()
    counts = Counter(seq for seq, _, _ in recs)
    print(f"day mqtt: {m}; {len(recs)} queue records received, "
          f"{sum(1 for _, k, _ in recs if k == 'telemetry')} telemetry")
    assert day.summary["uplink"]["reached"]
    assert m["retransmitted"] == 0 and m["reconnects"] == 0 and m["dropped"] == 0
    assert m["worst_tick_late_ms"] <= LATE_MAX_MS
    assert m["first_seq"] == 1
    assert [s for s, n in counts.items() if n > 1] == []  # exactly once
    assert sorted(counts) == list(range(m["first_seq"], m["last_seq"] + 1))  # no gap
    assert m["acked"] >= m["published"] - 1  # at most the last one in flight at the stop
    tele = [d for _, k, d in recs if k == "telemetry"]
    every_s = day.harness.cfg.get("telemetry", {}).get("interval_s", 10)
    assert len(tele) >= day.summary["duration_s"] // every_s - 2  # all day long
    assert all(d["v"] == 1 and "energy_wh" in d for d in tele)


def test_day_home_assistant_discovery_configs_are_retained_for_the_device(complete_node_day):
    import sys

    sys.path.insert(0, str(FIRMWARE))
    from heatgw.hadisc import ENTITIES, more_entities

    day = complete_node_day
    node, site = day.harness.cfg["node_id"], day.harness.cfg["mqtt"]["site"]
    # the device's entities and those its recovery, modbus and analog sections add
    expected = {f"homeassistant/{comp}/{site}_{node}/{obj}/config"
                for obj, comp, *_ in ENTITIES + tuple(more_entities(day.harness.cfg))}
    retained = {t: json.loads(p) for t, p, retain, *_ in day.retained
                if t.startswith("homeassistant/") and retain and p}
    assert set(retained) == expected
    for cfg in retained.values():
        assert cfg["availability_topic"] == day.base + "/status"
        assert cfg["state_topic"] == day.base + "/telemetry"
        assert cfg["device"]["identifiers"] == [f"heatgw_{site}_{node}"]
    # the upstream saw them live too, once per connection (one connection all day)
    live = [t for t, *_ in day.messages if t in expected]
    assert sorted(live) == sorted(expected)
    status = [p for t, p, retain, *_ in day.retained if t == day.base + "/status"]
    assert status == [b"offline"]  # the node stopped: its own offline, retained
