"""What `heatgw sim` shows while it runs (host_tools/sim.py): a live view on a terminal
(rich), or plain progress lines for a log or a pipe.

    render(sim)            # a rich renderable: header, progress bar, a panel per node, keys
    plain_header(sim)      # the first plain line
    plain_progress(sim)    # the plain lines due now (progress, relay changes, injections)

Per node, from the harness (the plant and the relay coils, read live): the temperatures,
flow, thermal power into the building and the compute load's power, the relay and its
reason; from the broker (the run's recorder, host_tools.simrecord: the monitor's): the
node's metered energy, power and heat recovery ratio, status, alarms, records and gaps;
from the node's console: its own word on the link to the broker.
"""

import time

from host_tools.sim import KEYS, PLAIN_STEPS, clock_text

PANELS_MAX = 3  # more nodes: one table line each
SEVERITY_STYLE = {"critical": "bold red", "major": "red", "minor": "yellow", "info": "cyan"}


def _f(v, digits, unit=""):
    if v is None:
        return "—"
    return f"{v:.{digits}f}" + (f" {unit}" if unit else "")


def _why(tel, key):
    """The node's reason for an invalid value in its newest telemetry, or None."""
    if not tel or tel.get(key) is not None:
        return None
    return tel.get(key.rsplit("_", 1)[0] + "_why")


def node_values(sim, n):
    """Everything the view shows of one node, as plain values."""
    h = n.h
    p = h.plant
    view = sim.recorder.nodes.get((n.site, n.node_id)) if sim.recorder else None
    tel = view.telemetry if view else None
    state, reason = n.relay()
    mq = h.mqtt_by_boot[max(h.mqtt_by_boot)] if h.mqtt_by_boot else {}
    load_j = p.load_j_total
    heat_j = p.heat_to_building_j_model
    return {
        "t_s": h.vt / 1000.0, "end_s": h.end_vt / 1000.0, "state": state, "reason": reason,
        "temps": [("supply", p.supply_c, _why(tel, "supply_c")),
                  ("return", p.return_c, _why(tel, "return_c")),
                  ("sink return", p.sink_return_c, _why(tel, "sink_return_c")),
                  ("IT coolant", p.it_coolant_c, _why(tel, "it_coolant_c"))],
        "flow_m3h": p.flow_m3h, "dt_k": p.supply_c - p.return_c,
        "thermal_kw": p.q_hx_kw, "compute_kw": p.load_kw,
        "node_power_kw": None if not tel or tel.get("power_w") is None
        else tel["power_w"] / 1000.0,
        "node_compute_kw": None if not tel or tel.get("compute_w") is None
        else tel["compute_w"] / 1000.0,
        "energy_kwh": None if not tel else tel.get("energy_wh", 0) / 1000.0,
        "plant_kwh": heat_j / 3.6e6,
        "ratio_hour": tel.get("ratio_hour") if tel else None,
        "ratio_total": tel.get("ratio_total") if tel else None,
        "plant_ratio": heat_j / load_j if load_j > 0 else None,
        "active": (tel or {}).get("active") or [],
        "alarms": sorted(((a.get("severity", "?"), aid, bool(a.get("active")))
                          for aid, a in (view.alarms.items() if view else ())),
                         key=lambda x: x[1]),
        "status": view.status if view else None,
        "records": view.seqs.count if view else 0,
        "gaps": view.seqs.missing_count() if view else 0,
        "published": mq.get("published"), "acked": mq.get("acked"),
        "mqtt_line": n.mqtt_line,
        "event": view.last_event if view else None,
        "faults": n.faults(),
        "error": n.error,
        "done": not n.thread.is_alive(),
    }


def _node_panel(sim, n, v, selected):
    from rich.panel import Panel
    from rich.table import Table

    t = Table.grid(padding=(0, 1))
    t.add_column(style="cyan", no_wrap=True)
    t.add_column(overflow="fold")
    relay = "[bold green]REUSE[/]" if v["state"] == "reuse" else "[bold yellow]BYPASS[/]"
    t.add_row("relay", f"{relay} ({v['reason']})")
    for label, val, why in v["temps"]:
        node = f"  [red]node: {why}[/]" if why else ""
        t.add_row(label, _f(val, 2, "°C") + node)
    t.add_row("flow", f"{_f(v['flow_m3h'], 2, 'm³/h')} · ΔT {_f(v['dt_k'], 2, 'K')}")
    t.add_row("thermal", f"{_f(v['thermal_kw'], 1, 'kW')} (node {_f(v['node_power_kw'], 1)})")
    t.add_row("compute", f"{_f(v['compute_kw'], 1, 'kW')} (meter "
                         f"{_f(v['node_compute_kw'], 1)})")
    t.add_row("energy", f"{_f(v['energy_kwh'], 3, 'kWh')} metered · plant "
                        f"{_f(v['plant_kwh'], 1)}")
    t.add_row("recovery", f"hour {_f(v['ratio_hour'], 3)} · total {_f(v['ratio_total'], 3)}"
                          f" · plant {_f(v['plant_ratio'], 3)}")
    if v["alarms"]:
        t.add_row("alarms", ", ".join(
            f"[{SEVERITY_STYLE.get(sev, 'white')}]{aid}[/]" + ("" if act else " (cleared)")
            for sev, aid, act in v["alarms"]))
    else:
        t.add_row("alarms", "none")
    status = v["status"] or "?"
    t.add_row("mqtt", f"[{'green' if status == 'online' else 'red'}]{status}[/] · "
                      f"{v['records']} records · gaps {v['gaps']}")
    t.add_row("", f"node: {v['mqtt_line']}")
    if v["faults"]:
        t.add_row("faults", "[magenta]" + ", ".join(v["faults"]) + "[/]")
    if v["event"]:
        seq, kind, text = v["event"]
        t.add_row("event", f"#{seq} {kind} {text}"[:56])
    if v["error"]:
        t.add_row("FAILED", f"[bold red]{v['error'].splitlines()[0][:120]}[/]")
    title = f"[bold]{n.index + 1} {n.name}[/]" + (" [reverse]selected[/]" if selected else "")
    return Panel(t, title=title, title_align="left", width=62,
                 border_style="bold" if selected else "dim")


def _node_table(sim, rows):
    from rich.table import Table

    t = Table(header_style="bold", pad_edge=False)
    for col in ("#", "node", "sim time", "relay", "supply", "return", "flow", "thermal kW",
                "compute kW", "energy kWh", "ratio", "alarms", "mqtt", "records", "faults"):
        t.add_column(col, no_wrap=True)
    for n, v in rows:
        relay = ("[green]reuse[/]" if v["state"] == "reuse" else "[yellow]bypass[/]") + \
            f" ({v['reason']})"
        t.add_row(("> " if n.index == sim.selected else "") + str(n.index + 1), n.node_id,
                  clock_text(v["t_s"]), relay, _f(v["temps"][0][1], 1),
                  _f(v["temps"][1][1], 1), _f(v["flow_m3h"], 2), _f(v["thermal_kw"], 1),
                  _f(v["compute_kw"], 1), _f(v["energy_kwh"], 1), _f(v["ratio_total"], 3),
                  str(len(v["alarms"])), v["status"] or "?",
                  f"{v['records']} ({v['gaps']} gaps)", ", ".join(v["faults"]) or "—")
    return t


def render(sim, final=False):
    from rich.console import Group
    from rich.progress_bar import ProgressBar
    from rich.table import Table
    from rich.text import Text

    for n in sim.nodes:
        n.follow_console()
    rows = [(n, node_values(sim, n)) for n in sim.nodes]
    wall = time.monotonic() - sim.wall0
    broker = "[green]up[/]" if sim.broker_up else "[bold red]DOWN[/]"
    head = Text.from_markup(
        f"[bold]heatgw sim[/] · {sim.sc['name']} · broker {sim.broker_addr} {broker} "
        f"({sim.broker_note}) · {wall:.0f} s")
    bars = Table.grid(padding=(0, 1))
    bars.add_column(no_wrap=True)
    bars.add_column()
    bars.add_column(no_wrap=True)
    for n, v in rows:
        ran = time.monotonic() - n.started if n.started else 0
        speed = v["t_s"] / ran if ran > 0 else 0
        bars.add_row(n.node_id, ProgressBar(total=max(v["end_s"], 1), completed=v["t_s"],
                                            width=40),
                     f"{clock_text(v['t_s'])} of {clock_text(v['end_s'])} simulated · "
                     f"×{speed:,.0f}" + (" · done" if v["done"] else ""))
    parts = [head, bars]
    if len(rows) <= PANELS_MAX:
        from rich.columns import Columns

        parts.append(Columns([_node_panel(sim, n, v, n.index == sim.selected
                                          and len(rows) > 1) for n, v in rows]))
    else:
        parts.append(_node_table(sim, rows))
    if not final:
        keys = "  ".join(f"[bold]{k}[/] {label}" for k, (_, label) in KEYS.items())
        sel = f"  [bold]1-{len(rows)}[/] node" if len(rows) > 1 else ""
        parts.append(Text.from_markup(f"{keys}{sel}  [bold]:[/] command  [bold]q[/] quit"))
        if sim.prompt is not None:
            parts.append(Text(f": {sim.prompt}_", style="bold"))
        elif sim.message:
            parts.append(Text(sim.message, style="italic"))
    return Group(*parts)


def plain_header(sim):
    return (f"heatgw sim: {sim.sc['name']}, {len(sim.nodes)} node"
            f"{'s' if len(sim.nodes) > 1 else ''}, {clock_text(sim.sc['duration_s'])} "
            f"simulated; broker {sim.broker_addr} ({sim.broker_note}); record "
            f"{sim.record_path}")


def _progress_line(sim, n, v):
    pct = 100.0 * v["t_s"] / v["end_s"] if v["end_s"] else 100.0
    temps = " ".join(f"{label.replace(' ', '_')} {_f(val, 1)}" + (f"({why})" if why else "")
                     for label, val, why in v["temps"][:2])
    return (f"[{pct:3.0f}%] {clock_text(v['t_s'])} {n.node_id}: {v['state'].upper()} "
            f"({v['reason']}) {temps} °C flow {_f(v['flow_m3h'], 2)} m³/h thermal "
            f"{_f(v['thermal_kw'], 1)} kW compute {_f(v['compute_kw'], 1)} kW energy "
            f"{_f(v['energy_kwh'], 3)} kWh ratio {_f(v['ratio_total'], 3)} alarms "
            f"{len(v['alarms'])} mqtt {v['status'] or '?'} records {v['records']}"
            + (f" faults: {', '.join(v['faults'])}" if v["faults"] else ""))


def plain_progress(sim):
    """The plain lines due now: each node's relay changes and injected events as they
    happen, what the run did (broker, commands), and a progress line per node every
    1/PLAIN_STEPS of the run."""
    out = []
    for n in sim.nodes:
        n.follow_console()
        h = n.h
        trs = h.transitions
        while n.seen_transitions < len(trs):
            tr = trs[n.seen_transitions]
            if tr.get("reason") is None and tr is trs[-1] and n.thread.is_alive():
                break  # the node's state event names the reason in a moment
            n.seen_transitions += 1
            out.append(f"       {clock_text(tr['t_s'])} {n.node_id}: relay "
                       f"{tr['state'].upper()} ({tr.get('reason')})")
        while n.seen_injected < len(h.injected):
            ev = h.injected[n.seen_injected]
            n.seen_injected += 1
            what = " ".join(f"{k}={v}" for k, v in ev.items() if k not in ("t_s", "do"))
            out.append(f"       {clock_text(ev['t_s'])} {n.node_id}: injected {ev['do']}"
                       + (f" {what}" if what else ""))
        step = max(1, h.end_vt // PLAIN_STEPS)
        done = not n.thread.is_alive()
        if h.vt >= n.plain_next or (done and n.plain_next <= h.end_vt):
            n.plain_next = (h.vt // step + 1) * step if not done else h.end_vt + 1
            out.append(_progress_line(sim, n, node_values(sim, n)))
        if done and n.error and not getattr(n, "error_said", False):
            n.error_said = True
            out.append(f"       {n.node_id}: FAILED: {n.error.splitlines()[0]}")
    seen = getattr(sim, "_log_seen", 0)
    for wall, text in sim.log[seen:]:
        out.append(f"       [{wall:5.1f} s] {text}")
    sim._log_seen = len(sim.log)
    return out
