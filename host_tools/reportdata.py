"""The figures of the commissioning report, computed from a record (host_tools.records):
what `heatgw report` writes as report.json beside the HTML, so every figure the HTML shows
can be checked from data (README, "The commissioning report").

    data, series = compute(store, factors, configs={(site, node): config}, summary=None)

Per node: the span of the record; heat delivered and volume (sums of the meter totals'
increases between consecutive telemetry records, so a meter restart never counts
backwards); ΔT and flow, thermal and compute power over time (`series`, for the plots);
the heat recovery ratio where the telemetry carries the compute load's energy; relay
transitions with their reasons and alarms (from the node's events); data completeness from
seq; the loop's own pump electricity where the node's configuration has a Modbus meter of
role `pump`; avoided CO₂ (host_tools.co2) from the metered heat. With a harness summary
(a simulated run), the plant's truth beside it.
"""

import math

from host_tools import co2 as co2mod
from host_tools.records import SeqRanges

HOUR_MS = 3_600_000  # heatgw.recovery's hour: node time, counted from boot
TEMPS = ("supply_c", "return_c", "sink_return_c", "it_coolant_c")
SERIES_KEYS = TEMPS + ("dt_k", "flow_m3h", "power_w", "energy_wh", "compute_w",
                       "ratio_interval", "ratio_hour")


def parse_text(text):
    """The key=value pairs of an event's text (`reason=maintenance state=bypass`)."""
    out = {}
    for part in (text or "").split():
        k, sep, v = part.partition("=")
        if sep:
            out[k] = v
    return out


def node_times(rows):
    """Each row's time in s (UTC where the node's clock was set, else uptime continued
    across boots) and the axis: ("utc" | "uptime", t0). Within one boot the time comes from
    up_ms (ms), placed on UTC by the boot's first row that has one."""
    ref = {}
    for r in rows:
        if r["utc"] is not None and r["boot"] not in ref:
            ref[r["boot"]] = r["utc"] - r["up_ms"] / 1000.0
    axis = "utc" if ref else "uptime"
    out = []
    prev_end = 0.0
    cur_boot, base = None, None
    for r in rows:
        if r["boot"] != cur_boot:
            cur_boot = r["boot"]
            base = ref.get(cur_boot)
            if base is None:  # no clock this boot: go on from where the last boot ended
                base = prev_end - r["up_ms"] / 1000.0 if out else -r["up_ms"] / 1000.0
        t = base + r["up_ms"] / 1000.0
        out.append(t)
        prev_end = max(prev_end, t)
    t0 = min(out) if out else 0.0
    return out, (axis, t0)


def _increase(values):
    """Sum of the increases between consecutive numbers (None skipped), and how many times
    the total fell (a meter restarted or replaced: that step adds nothing)."""
    total, falls, prev = 0.0, 0, None
    for v in values:
        if v is None:
            continue
        if prev is not None:
            if v >= prev:
                total += v - prev
            else:
                falls += 1
        prev = v
    return total, falls


def _first_last(values):
    vals = [v for v in values if v is not None]
    return (vals[0], vals[-1]) if vals else (None, None)


def _completeness(rows, truth_last=None):
    s = SeqRanges()
    for r in rows:
        s.add(r["seq"])
    drops = []
    for r in rows:
        if r["kind"] == "event" and r["event"] == "queue_drop":
            d = r["doc"]
            drops.append([d.get("first_seq"), d.get("last_seq"), d.get("count")])
    missing = s.missing()
    expected = (s.last() - s.first() + 1) if s.count else 0
    out = {
        "first_seq": s.first(), "last_seq": s.last(), "expected": expected,
        "received": s.count, "missing": missing, "missing_count": s.missing_count(),
        "percent": 100.0 * s.count / expected if expected else None,
        "dropped_by_node": drops,
        "resent_received": sum(1 for r in rows if r["resent"]),
    }
    if truth_last is not None:  # a simulated run: the node's own last published seq
        got = s.count
        out["truth_last_seq"] = truth_last
        out["truth_percent"] = 100.0 * got / truth_last if truth_last else None
        out["after_last_received"] = max(0, truth_last - (s.last() or 0))
    return out


def _transitions(rows, times, axis_t0):
    """Relay state changes the node decided (its `state` and `supervisor` events), with
    reasons; and the drop to bypass that a restart during reuse implies (power cut, reset,
    watchdog: the relays are de-energised from that moment; boot.py keeps them safe): placed
    at the new boot, with `since_t_s`, the last moment the record heard the old boot."""
    out = []
    state = None
    prev_boot, prev_t = None, None
    for r, t in zip(rows, times, strict=True):
        new_boot = prev_boot is not None and r["boot"] != prev_boot
        last_heard = prev_t
        prev_boot, prev_t = r["boot"], t
        if new_boot and state == "reuse":
            state = "bypass"
            out.append({"seq": r["seq"], "boot": r["boot"], "up_ms": r["up_ms"],
                        "utc": r["utc"], "t_s": round(t - axis_t0, 3), "state": "bypass",
                        "reason": "restart", "implied": True,
                        "since_t_s": round(last_heard - axis_t0, 3)})
        if r["kind"] != "event":
            continue
        ev = r["event"]
        kv = parse_text(r["doc"].get("text"))
        new = kv.get("state") if ev in ("state", "supervisor") else None
        if ev == "boot" and state is None:
            state = "bypass"  # the first boot of the record: safe state, no change
        if new not in ("reuse", "bypass") or new == state:
            continue
        state = new
        out.append({"seq": r["seq"], "boot": r["boot"], "up_ms": r["up_ms"], "utc": r["utc"],
                    "t_s": round(t - axis_t0, 3), "state": new,
                    "reason": kv.get("reason") or ev})
    return out


def _alarms(rows, times, axis_t0):
    """Alarm episodes from the node's alarm events (`<id> raise|clear|ack|remove|update`):
    raised, cleared, acked and removed times; raised again while held counts up. An
    episode raised before the record began has raised_t_s None."""
    held, done = {}, []
    for r, t in zip(rows, times, strict=True):
        if r["kind"] != "event" or r["event"] != "alarm":
            continue
        aid, _, what = (r["doc"].get("text") or "").rpartition(" ")
        if not aid:
            continue
        ts = round(t - axis_t0, 3)
        ep = held.get(aid)
        if ep is None:
            ep = held[aid] = {"id": aid, "code": r["doc"].get("code"), "raised_t_s": None,
                              "raised_seq": None, "cleared_t_s": None, "acked_t_s": None,
                              "removed_t_s": None, "count": 0}
        if what == "raise":
            ep["count"] += 1
            if ep["raised_t_s"] is None:
                ep["raised_t_s"], ep["raised_seq"] = ts, r["seq"]
            ep["cleared_t_s"] = None
        elif what == "clear":
            ep["cleared_t_s"] = ts
        elif what == "ack":
            ep["acked_t_s"] = ts
        elif what == "remove":
            ep["removed_t_s"] = ts
            done.append(held.pop(aid))
    return sorted(done + list(held.values()),
                  key=lambda e: (e["raised_t_s"] is not None, e["raised_t_s"] or 0))


def _pump(tel, times, config):
    """The loop's own electricity: the meters of role pump in the node's configuration,
    from their energy register (exact) or their power integrated (an estimate)."""
    if config is None:
        return {"meters": [], "energy_kwh": None,
                "note": "no node configuration given (report --config): the pump meter's "
                        "role is not known"}
    meters = ((config.get("modbus") or {}).get("meters") or {})
    names = sorted(n for n, m in meters.items() if (m or {}).get("role") == "pump")
    if not names:
        return {"meters": [], "energy_kwh": None,
                "note": "no Modbus meter of role pump is configured"}
    out, total, estimate = [], 0.0, False
    for name in names:
        vals = [((r["doc"].get("meters") or {}).get(name) or {}) for r in tel]
        energy = [v.get("energy_kwh") for v in vals]
        e, falls = _increase(energy)
        if any(x is not None for x in energy):
            out.append({"meter": name, "energy_kwh": e, "method": "energy register",
                        "estimate": False, "resets": falls})
            total += e
            continue
        power = [v.get("power_w") for v in vals]
        if any(x is not None for x in power):
            e = _integrate(times, power) / 3.6e6
            out.append({"meter": name, "energy_kwh": e, "estimate": True,
                        "method": "power integrated over the telemetry samples (estimate)"})
            total += e
            estimate = True
            continue
        out.append({"meter": name, "energy_kwh": None, "estimate": False,
                    "method": "no reading in the record"})
    have = [m for m in out if m["energy_kwh"] is not None]
    return {"meters": out, "energy_kwh": total if have else None, "estimate": estimate,
            "note": None if have else "the pump meter sent no reading in this record"}


def _integrate(times, watts, max_gap_s=None):
    """J from power samples: trapezoids between consecutive valid samples no further apart
    than 3 median intervals (a gap is not bridged)."""
    pts = [(t, w) for t, w in zip(times, watts, strict=True) if w is not None]
    if len(pts) < 2:
        return 0.0
    gaps = sorted(b[0] - a[0] for a, b in zip(pts, pts[1:], strict=False))
    limit = max_gap_s or 3 * gaps[len(gaps) // 2]
    j = 0.0
    for (ta, wa), (tb, wb) in zip(pts, pts[1:], strict=False):
        if 0 < tb - ta <= limit:
            j += (wa + wb) / 2 * (tb - ta)
    return j


def _compute(tel, times, t0):
    """The heat recovery ratio over the record, where telemetry carries heatgw.recovery's
    totals: the heat of the counted pairs over the compute load's energy; and the node's
    ratio of each completed hour (`ratio_hour`, as it first appears in the telemetry)."""
    if not any("compute_energy_wh" in r["doc"] for r in tel):
        return None
    ce, ce_falls = _increase([r["doc"].get("compute_energy_wh") for r in tel])
    rh, _ = _increase([r["doc"].get("ratio_heat_wh") for r in tel])
    integrated = any(r["doc"].get("compute_energy_integrated") for r in tel)
    last = tel[-1]["doc"]
    hours, prev = [], None
    for r, t in zip(tel, times, strict=True):  # each completed hour, when it first shows:
        v = r["doc"].get("ratio_hour")  # a new value, or the same an hour later
        again = hours and hours[-1]["boot"] == r["boot"] and \
            r["up_ms"] - hours[-1]["up_ms"] >= HOUR_MS - 5_000
        if v is not None and (v != prev or again):
            hours.append({"seq": r["seq"], "boot": r["boot"], "up_ms": r["up_ms"],
                          "t_s": round(t - t0, 3), "ratio": v})
        prev = v
    return {
        "energy_kwh": ce / 1000.0,
        "ratio_heat_kwh": rh / 1000.0,
        "ratio": rh / ce if ce > 0 else None,
        "estimate": integrated,
        "method": "compute power integrated over time (estimate)" if integrated
                  else "the compute meter's energy register",
        "meter_resets": ce_falls,
        "node_ratio_total": last.get("ratio_total"),
        "node_ratio_total_why": last.get("ratio_total_why"),
        "node_ratio_hour": last.get("ratio_hour"),
        "hours": hours,
    }


def compute_node(rows, latest, config, factors, truth=None):
    """The report's figures for one node, and its time series for the plots."""
    times, (axis, t0) = node_times(rows)
    tel = [r for r in rows if r["kind"] == "telemetry"]
    tt = [t for r, t in zip(rows, times, strict=True) if r["kind"] == "telemetry"]
    docs = [r["doc"] for r in tel]
    energy, e_falls = _increase([d.get("energy_wh") for d in docs])
    volume, _ = _increase([d.get("volume_l") for d in docs])
    err, _ = _increase([d.get("error_s") for d in docs])
    low, _ = _increase([d.get("low_dt_s") for d in docs])
    mt, _ = _increase([d.get("time_s") for d in docs])
    e0, e1 = _first_last([d.get("energy_wh") for d in docs])
    reuse_s = bypass_s = 0.0
    for i in range(len(tt) - 1):  # each sample's state until the next sample
        span = tt[i + 1] - tt[i]
        if docs[i].get("state") == "reuse":
            reuse_s += span
        else:
            bypass_s += span
    heat_kwh = energy / 1000.0
    pump = _pump(tel, tt, config)
    data = {
        "span": {
            "axis": axis, "t0": t0, "first_utc": rows[0]["utc"] if rows else None,
            "last_utc": rows[-1]["utc"] if rows else None,
            "duration_s": (max(times) - min(times)) if times else 0.0,
            "boots": sorted({r["boot"] for r in rows}),
            "telemetry_records": len(tel),
            "event_records": len(rows) - len(tel),
            "first_telemetry_seq": tel[0]["seq"] if tel else None,
            "last_telemetry_seq": tel[-1]["seq"] if tel else None,
        },
        "heat": {
            "energy_kwh": heat_kwh, "volume_m3": volume / 1000.0,
            "meter_start_kwh": None if e0 is None else e0 / 1000.0,
            "meter_end_kwh": None if e1 is None else e1 / 1000.0,
            "metered_time_s": mt, "error_time_s": err, "low_dt_time_s": low,
            "meter_restarts": e_falls,
            "mean_power_kw": heat_kwh / (mt / 3600.0) if mt > 0 else None,
            "reuse_time_s": reuse_s, "bypass_time_s": bypass_s,
        },
        "compute": _compute(tel, tt, t0),
        "pump": pump,
        "transitions": _transitions(rows, times, t0),
        "alarms": _alarms(rows, times, t0),
        "events": {},
        "completeness": _completeness(rows, truth and truth.get("node_last_seq")),
        "latest": {k: v[0] for k, v in latest.items() if k in ("status", "state")},
    }
    for r in rows:
        if r["kind"] == "event":
            data["events"][r["event"]] = data["events"].get(r["event"], 0) + 1
    data["co2"] = co2mod.avoided(heat_kwh, pump["energy_kwh"], factors)
    if truth is not None:
        data["truth"] = truth
        ph = truth.get("plant_heat_kwh")
        end = max(times) - t0 if times else 0.0
        data["truth_check"] = {
            # the record ends at the node's last published telemetry; a run's heat after
            # it (up to one telemetry interval) is in the plant's and the node's totals
            "record_ends_s_before_stop": (truth["duration_s"] - end)
            if truth.get("duration_s") is not None and axis == "utc" else None,
            "heat_vs_plant_pct": 100.0 * (heat_kwh - ph) / ph if ph else None,
            "heat_vs_node_final_kwh": (heat_kwh - truth["node_final_metered_kwh"])
            if truth.get("node_final_metered_kwh") is not None else None,
        }
    series = {"t_s": [t - t0 for t in tt], "axis": axis, "t0": t0,
              "reuse": [d.get("state") == "reuse" for d in docs]}
    for k in SERIES_KEYS:
        vals = [d.get(k) for d in docs]
        series[k] = [math.nan if v is None else float(v) for v in vals]
        series["has_" + k] = any(v is not None for v in vals)
    return data, series


def truth_from_summary(summary):
    """((site, node), truth) from a harness summary (host_tools/summary.py): the plant's
    heat, the node's final meter and last published seq, the relay transitions."""
    base = ((summary.get("uplink") or {}).get("topic_base") or "").split("/")
    key = (base[-2], base[-1]) if len(base) >= 3 else None
    mq = summary.get("mqtt") or {}
    truth = {
        "scenario": summary.get("scenario"), "duration_s": summary.get("duration_s"),
        "plant_heat_kwh": (summary.get("plant") or {}).get("heat_delivered_kwh"),
        "plant_volume_m3": (summary.get("plant") or {}).get("volume_m3"),
        "node_final_metered_kwh": (summary.get("metered") or {}).get("energy_kwh"),
        "node_last_seq": mq.get("last_seq"),
        "relay_transitions": summary.get("relay_transitions"),
        "recovery": summary.get("recovery"),
    }
    return key, truth


def compute(store, factors, configs=None, summary=None, only=None):
    """report.json's content and the series per node: {"nodes": {"site/node": ...},
    "site": totals, ...}. `only`: [(site, node)] to report."""
    configs = configs or {}
    truth_key, truth = truth_from_summary(summary) if summary else (None, None)
    nodes, series = {}, {}
    for site, node in store.nodes():
        if only and (site, node) not in only:
            continue
        rows = store.rows(site, node)
        if not rows:
            continue
        cfg = configs.get((site, node), configs.get((None, node), configs.get((None, None))))
        t = truth if (site, node) == truth_key else None
        d, s = compute_node(rows, store.latest(site, node), cfg, factors, t)
        name = f"{site}/{node}"
        nodes[name], series[name] = d, s
    heat = sum(d["heat"]["energy_kwh"] for d in nodes.values())
    pumps = [d["pump"]["energy_kwh"] for d in nodes.values()
             if d["pump"]["energy_kwh"] is not None]
    comp = [d["compute"] for d in nodes.values() if d["compute"]]
    ce = sum(c["energy_kwh"] for c in comp)
    rh = sum(c["ratio_heat_kwh"] for c in comp)
    total = {
        "nodes": len(nodes), "heat_kwh": heat,
        "volume_m3": sum(d["heat"]["volume_m3"] for d in nodes.values()),
        "compute_kwh": ce if comp else None,
        "ratio": rh / ce if comp and ce > 0 else None,
        "ratio_estimate": any(c["estimate"] for c in comp),
        "pump_kwh": sum(pumps) if pumps else None,
        "records": sum(d["completeness"]["received"] for d in nodes.values()),
        "missing": sum(d["completeness"]["missing_count"] for d in nodes.values()),
    }
    total["co2"] = co2mod.avoided(heat, total["pump_kwh"], factors)
    return {"nodes": nodes, "site": total, "factors": factors,
            "truth_node": "/".join(truth_key) if truth_key else None}, series
