"""The JSON summary of a scenario run (README, "Scenarios": what each key means)."""

import re

import numpy as np

from host_tools.trueheat import true_heat_kwh, true_heat_series
from host_tools.uplink import mqtt_block, net_worst, uplink_summary


def flash_summary(h):
    """Flash wear of the last boot's run (the node reports it at the orderly stop)."""
    f = h.flash
    if not f:
        return None
    days = max(h.end_vt, 1) / 86_400_000
    return {"ops": f["ops"], "erases": f["erases"],
            "bytes_programmed": f["bytes_programmed"],
            "erases_per_day": f["erases"] / days,
            "max_block_erases": f["max_block_erases"],
            "saves": len(h.saves),
            "pulses": f.get("pulses")}  # the pulse input: edges, irqs, collapsed by masking


def trips(condition_log, transitions):
    """Every condition that appeared while the reuse coil was energised, and when the
    coil dropped after it (None: never, within the scenario)."""
    out = []
    for c in condition_log:
        if not c["reuse_at_onset"]:
            continue
        off = next((tr["t_s"] for tr in transitions
                    if tr["state"] == "bypass" and tr["t_s"] >= c["t_s"]), None)
        out.append({"reason": c["reason"], "condition_t_s": c["t_s"], "bypass_t_s": off,
                    "latency_s": None if off is None else round(off - c["t_s"], 3)})
    return out


def phases(h):
    """Metered against true heat over each of the scenario's `phases` ([{"name", "from_s",
    "to_s"}]): the meter's totals from the node's saves (the first at or after from_s, the
    last at or before to_s; from_s 0 is the empty meter), the plant's IF97 heat over the
    same span (a plant step the span cuts counted in part). A phase must not span a power
    cut or reset (the metering lost there is not the meter's error): `spans_reboot` says."""
    out = {}
    if not h.sc.get("phases"):
        return out
    log = h.plant.log
    rec = np.asarray(log, dtype=np.float64)
    heat_j = true_heat_series(log)
    for ph in h.sc["phases"]:
        t0, t1 = float(ph["from_s"]), float(ph["to_s"])
        if t0 <= 0:
            a_t, a_nj = 0.0, 0
        else:
            first = next((x for x in h.saves if x["t_s"] >= t0), None)
            if first is None:
                out[ph["name"]] = None
                continue
            a_t, a_nj = first["t_s"], first["totals"]["energy_nj"]
        last = [x for x in h.saves if a_t < x["t_s"] <= t1]
        if not last:
            out[ph["name"]] = None
            continue
        b_t, b_nj = last[-1]["t_s"], last[-1]["totals"]["energy_nj"]
        share = np.clip((np.minimum(b_t, rec[:, 0] + rec[:, 1]) - np.maximum(a_t, rec[:, 0]))
                        / rec[:, 1], 0.0, 1.0)
        true_kwh = float(np.sum(heat_j * share)) / 3.6e6
        metered_kwh = (b_nj - a_nj) / 3.6e15
        out[ph["name"]] = {
            "from_s": a_t, "to_s": b_t, "metered_kwh": metered_kwh, "true_kwh": true_kwh,
            "heat_error_pct": 100.0 * (metered_kwh - true_kwh) / true_kwh if true_kwh > 0
            else None,
            "spans_reboot": any(a_t < b["t_s"] <= b_t for b in h.boots[1:]),
        }
    return out


def _span_heat_j(rec, heat_j, a_t, b_t):
    """The plant's IF97 heat (J) over [a_t, b_t], a step the span cuts counted in part."""
    share = np.clip((np.minimum(b_t, rec[:, 0] + rec[:, 1]) - np.maximum(a_t, rec[:, 0]))
                    / rec[:, 1], 0.0, 1.0)
    return float(np.sum(heat_j * share))


def recovery(h):
    """The heat recovery ratio (heatgw.recovery's hourly `recovery` records) against the
    plant's truth: IF97 heat over each hour's span (the control ticks that saw its first
    and last compute readings) divided by the compute meter's true energy over the same
    span (host_tools.plantmeters: the plant's IT load, integrated exactly); and the
    cumulative ratio of the last hour's record against the truth since the first pair.
    None without recovery records; the truth only with a harness compute meter."""
    if not h.recovery_log:
        return None
    cm = h.compute_meter
    rec = np.asarray(h.plant.log, dtype=np.float64) if h.plant.log else None
    heat_j = true_heat_series(h.plant.log) if rec is not None else None
    hours = []
    for r in h.recovery_log:
        node = None if r["hour_ppm"] == -0x20000000 else r["hour_ppm"] / 1e6
        row = {"t_s": r["t_s"], "boot": r["boot"], "node_ratio": node, "why": r["why"],
               "pairs": r["pairs"], "node_heat_kwh": r["heat_mwh"] / 1e6,
               "node_compute_kwh": r["elec_mwh"] / 1e6}
        span = r.get("span_ago_ms")
        if span is not None and cm is not None:
            a_t, b_t = r["t_s"] - span[0] / 1000.0, r["t_s"] - span[1] / 1000.0
            q = _span_heat_j(rec, heat_j, a_t, b_t)
            e = cm.energy_j(b_t) - cm.energy_j(a_t)
            true = q / e if e > 0 else None
            row.update({"from_s": a_t, "to_s": b_t, "true_heat_kwh": q / 3.6e6,
                        "true_compute_kwh": e / 3.6e6, "true_ratio": true,
                        "error_pct": None if node is None or not true
                        else 100.0 * (node - true) / true})
        hours.append(row)
    last = h.recovery_log[-1]
    tot = last["record"]["totals"]
    node_total = last["record"]["ratio_total"]
    total = {"t_s": last["t_s"], "node_ratio": node_total,
             "node_compute_kwh": tot["compute_mwh"] / 1e6,
             "node_heat_kwh": tot["ratio_heat_mwh"] / 1e6, "integrated": tot["integrated"]}
    first = last.get("first_pair_ago_ms")
    if first is not None and cm is not None and last["boot"] == 1:
        a_t, b_t = last["t_s"] - first / 1000.0, last["t_s"] - last["last_pair_ago_ms"] / 1000.0
        q = _span_heat_j(rec, heat_j, a_t, b_t)
        e = cm.energy_j(b_t) - cm.energy_j(a_t)
        true = q / e if e > 0 else None
        total.update({"from_s": a_t, "to_s": b_t, "true_heat_kwh": q / 3.6e6,
                      "true_compute_kwh": e / 3.6e6, "true_ratio": true,
                      "error_pct": None if node_total is None or not true
                      else 100.0 * (node_total - true) / true})
    hc = last["record"].get("heat_check")
    if hc is not None:  # the heat meter check: its and our heat over the compared spans
        m, own = tot["heat_meter_mwh"] / 1e6, tot["heat_own_mwh"] / 1e6
        total["heat_check"] = {**hc, "meter_kwh": m, "own_kwh": own,
                               "diff_pct": 100.0 * (m - own) / own if own > 0 else None}
    out = {"hours": hours, "total": total}
    if cm is not None:
        out["compute_meter"] = {"model": cm.model, "reads": cm.reads,
                                "energy_kwh": cm.energy_kwh, "power_w": cm.power_w}
        if cm.heat is not None:
            out["heat_meter"] = {"reads": cm.heat_reads, "energy_kwh": cm.heat_kwh,
                                 "gain": cm.heat_gain, "true_kwh": cm.heat_j / 3.6e6}
    return out


def console_count(path, text):
    """Console lines naming text: also what the node could not count itself (boot)."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    return sum(1 for line in data.splitlines() if text.encode() in line)


_QSTR_INFO = re.compile(rb"qstr pool: n_pool=(\d+), n_qstr=(\d+), n_str_data_bytes=(\d+), "
                        rb"n_total_bytes=(\d+)")


def qstr_figures(path):
    """The node's names at the run's end, as the host board printed them
    (micropython.qstr_info() once the application stopped, boards/host/node.py): pools, names,
    their text and the pools' bytes in the heap; None when it did not print them."""
    try:
        found = _QSTR_INFO.findall(path.read_bytes())
    except OSError:
        return None
    if not found:
        return None
    pools, names, text, total = map(int, found[-1])
    return {"pools": pools, "qstrs": names, "text_bytes": text, "bytes": total}


def summary(h, wall_s):
    """The summary of the finished run of Harness h."""
    totals = h.final_totals or (h.saves[-1]["totals"] if h.saves else None)
    metered = None
    if totals:
        metered = {
            "energy_kwh": totals["energy_nj"] / 3.6e15,
            "volume_m3": totals["volume_ul"] / 1e9,
            "error_time_s": totals["error_ms"] / 1000.0,
            "low_dt_time_s": totals["low_dt_ms"] / 1000.0,
            "time_s": totals["time_ms"] / 1000.0,
        }
    heat = true_heat_kwh(h.plant.log)
    # Not the node's (README, "Heap accounting on the host board"): with --romfs the
    # image, one buffer in the heap (a board maps its ROMFS partition instead), and the
    # host board's own modules (a board has hardware and a frozen board file instead).
    img = (h.romfs_image_bytes or 0) + (h.host_board_bytes or 0)
    mqtt = mqtt_block(h.mqtt_by_boot)
    net_ms, net_where = net_worst(h.mqtt_by_boot)
    return {
        "scenario": h.sc["name"],
        "duration_s": h.end_vt / 1000.0,
        "control_tick_s": h.tick_ms / 1000.0,
        "relay_transitions": h.transitions,
        "pin_transitions": h.pin_log,
        "dead_man": h.dead_man.summary(),
        "hangs_t_s": h.hangs,
        "conditions": h.oracle.log,
        "trips": trips(h.oracle.log, h.transitions),
        "metered": metered,
        "plant": {
            "heat_delivered_kwh": heat,
            "max_it_coolant_c": h.plant.max_it_coolant_c,
            "it_coolant_limit_c": h.params.it_coolant_limit_c,
            "volume_m3": h.plant.volume_m3_total,
        },
        "heat_error_pct": (100.0 * (metered["energy_kwh"] - heat) / heat
                           if metered and heat > 0 else None),
        "peak_heap_bytes": h.peak_heap - img if h.peak_heap else 0,
        "min_largest_free_bytes": min(
            (r["min_largest_free_bytes"] for r in h.heap_by_boot.values()
             if r.get("min_largest_free_bytes") is not None), default=None),
        "memory_errors": sum(r.get("memory_errors", 0) for r in h.heap_by_boot.values()),
        "console_memory_errors": console_count(h.console_path, "MemoryError"),
        # the names interned at the end (README, "Names (qstrs)"): a pool more is one block
        # as large as all before it
        "qstr": qstr_figures(h.console_path),
        "heap_peaks": [[t, peak - img, at, free] for t, peak, at, free in h.heap_log[-20:]],
        "heapsize": h.heapsize,
        "romfs_image_bytes": h.romfs_image_bytes,
        "host_board_bytes": h.host_board_bytes,
        "mqtt": mqtt,
        # heatgw.modbus: the last boot's last `modbus` record (None without Modbus)
        "modbus": h.modbus_by_boot[max(h.modbus_by_boot)] if h.modbus_by_boot else None,
        # heatgw.analog: the last boot's last `analog` record (None without analogue inputs)
        "analog": h.analog_by_boot[max(h.analog_by_boot)] if h.analog_by_boot else None,
        # heatgw.bms: the last boot's last `bms` record (None without the server)
        "bms": h.bms_by_boot[max(h.bms_by_boot)] if h.bms_by_boot else None,
        "uplink": uplink_summary(h.cfg.get("mqtt"), h.cfg.get("node_id"), mqtt),
        # real, not virtual: a blocking call would stall a real board (goal <= 50 ms)
        "net_worst_real_ms": net_ms,
        "net_worst_where": net_where,
        "phases": phases(h),
        # heatgw.recovery's hours against the plant's truth (with a compute_meter)
        "recovery": recovery(h),
        "technician": h.technician,  # the calibration steps typed at the console
        "console_typed": h.console_typed,  # the `console` events' lines
        "injected": h.injected,  # events injected while the run went on (heatgw sim)
        "boots": h.boots,
        "saves": len(h.saves),
        "restores": h.restores,
        "power_cuts": h.cuts,
        "flash": flash_summary(h),
        "node_events": len(h.node_events),
        "last_status": h.last_status,
        "wall_s": round(wall_s, 2),
        "console_log": str(h.console_path),
        # with --serial: when the node sat at its REPL and why, the resets asked there
        "serial": None if getattr(h, "serial", None) is None else {
            "repl_entries": h.repl_entries, "resets": h.resets,
            "ctrl_c_merged": h.serial.ctrl_c_merged, "out_dropped": h.serial.out_dropped},
    }
