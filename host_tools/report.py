"""`heatgw report RECORD`: the commissioning report of a site from its record.

    heatgw report site1.sqlite                          # -> site1-report/report.html ...
    heatgw report run.sqlite --summary run.json --config config.json --factors uk.json
    heatgw report postgresql://heatgw@db/fleet --site site1 --out site1-report

RECORD is a record store (host_tools.records): the SQLite file `heatgw monitor --record`
writes (a simulated run writes the same), or a PostgreSQL URL (`monitor --db`). Writes into
--out (default: beside the record, `<name>-report/`): report.html with its PNG plots,
report.json (every figure the HTML shows, computed by host_tools.reportdata), and
report.pdf through headless Chromium where it is installed (else a clear note, and the
rest is written). Prints the path of each file it wrote.

--summary takes a harness summary JSON (a simulated run): the plant's truth is shown beside
the metered figures. --config gives a node's configuration (config.json; `NODE=FILE` for
one node of several), from which the report takes the Modbus meter of role `pump` for the
loop's own electricity; a simulated record may carry it already. --factors names the CO₂
factor file (host_tools.co2: every factor with its source, year and calorific basis); the
default set is printed in the report with its sources.

Exit status 0; 2 for a bad option, an unreadable record or factor file.
"""

import argparse
import datetime
import html
import json
import sys
from pathlib import Path

from host_tools import chromium, co2, records
from host_tools.reportdata import compute

CSS = """
@page { size: A4; margin: 14mm; }
body { font-family: "DejaVu Sans", Arial, sans-serif; font-size: 10.5pt; color: #222;
       max-width: 1100px; margin: 1em auto; }
h1 { font-size: 18pt; margin-bottom: 0.2em; } h2 { font-size: 14pt; margin-top: 1.4em;
border-bottom: 1px solid #999; } h3 { font-size: 11.5pt; margin-top: 1.1em; }
table { border-collapse: collapse; margin: 0.4em 0 0.8em 0; }
td, th { border: 1px solid #bbb; padding: 2px 7px; text-align: left; vertical-align: top; }
th { background: #eee; } td.n { text-align: right; font-variant-numeric: tabular-nums; }
img { max-width: 100%; page-break-inside: avoid; }
.note { color: #555; font-size: 9.5pt; } .est { color: #8a5a00; font-weight: bold; }
.bad { color: #b00; font-weight: bold; } .ok { color: #070; font-weight: bold; }
section.node { page-break-before: always; }
"""


def _f(v, digits=1, unit=""):
    if v is None:
        return "—"
    if isinstance(v, float) and v != v:
        return "—"
    s = f"{v:,.{digits}f}" if isinstance(v, (int, float)) else str(v)
    return s + (f" {unit}" if unit else "")


def _e(text):
    return html.escape(str(text), quote=True)


def _table(rows, head=None, numeric=()):
    out = ["<table>"]
    if head:
        out.append("<tr>" + "".join(f"<th>{_e(h)}</th>" for h in head) + "</tr>")
    for row in rows:
        cells = []
        for i, c in enumerate(row):
            cls = ' class="n"' if i in numeric else ""
            cells.append(f"<td{cls}>{c}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def _hms(s):
    if s is None:
        return "—"
    s = float(s)
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{int(h)} h {int(m):02d} min {sec:04.1f} s" if h else f"{int(m)} min {sec:04.1f} s"


def _when(t_s, span):
    """A time in the record: UTC where the node's clock was set, else seconds of uptime."""
    if t_s is None:
        return "before the record"
    if span["axis"] == "utc":
        t = datetime.datetime.fromtimestamp(span["t0"] + t_s, datetime.UTC)
        return f"{t:%Y-%m-%d %H:%M:%S} UTC (+{_hms(t_s)})"
    return f"+{_hms(t_s)}"


def _factor_rows(c):
    rows = []
    for label, f in (("fuel emission factor", c["fuel_factor"]),
                     ("boiler efficiency", c["boiler_efficiency"]),
                     ("electricity emission factor", c["electricity_factor"])):
        if f is None:
            continue
        rows.append([_e(label), _e(f"{f['value']} {f.get('unit', '')}"),
                     _e(f.get("basis", "—")), _e(f["year"]), _e(f["source"])])
    return rows


def _co2_html(c, what):
    s = [f'<p class="est">{_e(c["label"])}.</p>',
         _table([["heat delivered (metered)", _f(c["heat_kwh"], 2, "kWh")],
                 [f"{_e(c['fuel'])} a boiler would have burnt (heat ÷ η)",
                  _f(c["fuel_kwh"], 2, "kWh")],
                 ["<b>avoided CO₂e (estimate)</b>", f"<b>{_f(c['avoided_kg'], 1, 'kg')}</b>"],
                 ["electricity of the loop's own pumps and controls",
                  _f(c["pump_kwh"], 2, "kWh")],
                 ["its CO₂e (estimate)", _f(c["pump_kg"], 1, "kg")],
                 ["<b>net avoided CO₂e (estimate)</b>",
                  f"<b>{_f(c['net_kg'], 1, 'kg')}</b>" if c["net_kg"] is not None
                  else "— (no pump meter: the loop's own electricity is not known)"]],
                numeric=(1,)),
         f"<p class='note'>{_e(what)} Factors: {_e(c['factors'])}.</p>",
         _table(_factor_rows(c), head=["factor", "value", "calorific basis", "year",
                                       "source"])]
    return "\n".join(s)


def _node_html(name, d, plots, out_dir):
    sp, h, comp = d["span"], d["heat"], d["completeness"]
    s = [f'<section class="node"><h2>Node {_e(name)}</h2>']
    s.append(_table([
        ["record", f"seq {comp['first_seq']} … {comp['last_seq']}, "
                   f"{sp['telemetry_records']} telemetry and {sp['event_records']} event "
                   f"records, boots {', '.join(str(b) for b in sp['boots'])}"],
        ["span", f"{_hms(sp['duration_s'])} from {_when(0.0, sp)}"],
        ["<b>heat delivered (metered)</b>", f"<b>{_f(h['energy_kwh'], 3, 'kWh')}</b>"],
        ["volume", _f(h["volume_m3"], 3, "m³")],
        ["meter totals at start / end", f"{_f(h['meter_start_kwh'], 3, 'kWh')} / "
                                        f"{_f(h['meter_end_kwh'], 3, 'kWh')}"],
        ["mean thermal power while metering", _f(h["mean_power_kw"], 2, "kW")],
        ["time in reuse / bypass", f"{_hms(h['reuse_time_s'])} / {_hms(h['bypass_time_s'])}"],
        ["error time (a sensor fault: heat not metered)", _hms(h["error_time_s"])],
        ["time below the ΔT cutoff", _hms(h["low_dt_time_s"])],
    ]))
    for key in ("temps", "dt_flow", "power", "energy", "ratio"):
        if key in plots:
            s.append(f'<img src="{_e(plots[key].relative_to(out_dir))}" alt="{_e(key)}">')

    s.append("<h3>Heat recovery ratio</h3>")
    c = d["compute"]
    if c is None:
        s.append("<p class='note'>Not available: this record has no compute energy (the node "
                 "has no compute meter configured, or its firmware does not publish it).</p>")
    else:
        est = ' <span class="est">(estimate: compute power integrated over time)</span>' \
            if c["estimate"] else ""
        s.append(_table([
            ["compute load's electricity", _f(c["energy_kwh"], 3, "kWh") + est],
            ["heat over the same spans", _f(c["ratio_heat_kwh"], 3, "kWh")],
            ["<b>heat recovery ratio over the record</b>",
             f"<b>{_f(c['ratio'], 3)}</b>" + est],
            ["the node's ratio since commissioning (last record)",
             _f(c["node_ratio_total"], 3) + (f" ({_e(c['node_ratio_total_why'])})"
                                             if c["node_ratio_total_why"] else "")],
        ]))
        if c["hours"]:
            vals = [h["ratio"] for h in c["hours"]]
            rows = [[_e(_when(h["t_s"], sp)), _f(h["ratio"], 4)] for h in c["hours"][:48]]
            if len(c["hours"]) > 48:
                rows.append([f"… {len(c['hours']) - 48} more hours", ""])
            s.append(f"<p>Each completed hour ({len(vals)}): {_f(min(vals), 3)} to "
                     f"{_f(max(vals), 3)}.</p>")
            s.append(_table(rows, head=["hour completed", "ratio"], numeric=(1,)))

    s.append("<h3>The loop's own electricity (pumps and controls)</h3>")
    p = d["pump"]
    if p["energy_kwh"] is None:
        s.append(f"<p class='note'>Not shown: {_e(p['note'])}.</p>")
    else:
        rows = [[_e(m["meter"]), _f(m["energy_kwh"], 3, "kWh"), _e(m["method"])]
                for m in p["meters"]]
        share = 100.0 * p["energy_kwh"] / h["energy_kwh"] if h["energy_kwh"] else None
        rows.append(["<b>total</b>", f"<b>{_f(p['energy_kwh'], 3, 'kWh')}</b>",
                     f"beside {_f(h['energy_kwh'], 3, 'kWh')} of heat: "
                     f"{_f(share, 2, '%')}"])
        s.append(_table(rows, head=["meter (role pump)", "electricity", "how"]))

    s.append("<h3>Relay transitions</h3>")
    tr = d["transitions"]
    if tr:
        s.append(_table([[_e(_when(t["t_s"], sp)), f"#{t['seq']}",
                          f"<b>{_e(t['state'])}</b>",
                          _e(t["reason"]) if not t.get("implied") else
                          _e(f"the node restarted (boot {t['boot']}): power cut, reset or "
                             f"watchdog; the relays were safe from the moment it stopped, "
                             f"after {_when(t['since_t_s'], sp)}")] for t in tr],
                        head=["when", "record", "relay", "reason"]))
    else:
        s.append("<p class='note'>No transition in this record.</p>")
    s.append("<h3>Alarms</h3>")
    al = d["alarms"]
    if al:
        s.append(_table([[_e(a["id"]), _e(_when(a["raised_t_s"], sp)),
                          _e(_when(a["cleared_t_s"], sp)) if a["cleared_t_s"] is not None
                          else "—", _e(_when(a["acked_t_s"], sp)) if a["acked_t_s"] is not None
                          else "—", str(a["count"])] for a in al],
                        head=["alarm", "raised", "cleared", "acknowledged", "times"]))
    else:
        s.append("<p class='note'>No alarm in this record.</p>")

    s.append("<h3>Data completeness</h3>")
    pct = comp["percent"]
    cls = "ok" if comp["missing_count"] == 0 else "bad"
    ranges = ", ".join(f"{a}–{b}" if a != b else str(a) for a, b in comp["missing"]) or "none"
    rows = [["records received", f"{comp['received']} of {comp['expected']} "
                                 f"(seq {comp['first_seq']} … {comp['last_seq']})"],
            ["<b>completeness</b>", f'<span class="{cls}">{_f(pct, 3, "%")}</span>'],
            ["gaps (missing seq)", f"{comp['missing_count']}: {_e(ranges)}"],
            ["received again on request (resent)", str(comp["resent_received"])]]
    if comp["dropped_by_node"]:
        rows.append(["dropped by the node's queue (overflow: never sent)",
                     _e(", ".join(f"{a}–{b} ({n})" for a, b, n in comp["dropped_by_node"]))])
    if "truth_last_seq" in comp:
        rows.append(["the node published up to (simulation)",
                     f"seq {comp['truth_last_seq']}: {_f(comp['truth_percent'], 3, '%')} "
                     f"received, {comp['after_last_received']} after the last received"])
    s.append(_table(rows))
    s.append("<p class='note'>Every telemetry, event and alarm record of a node carries the "
             "next number of one counter kept on flash; a missing number is a lost record. A "
             "gap can be refilled while the node still holds the records: send it a signed "
             "<code>resend</code> command.</p>")

    if "truth" in d:
        t, chk = d["truth"], d["truth_check"]
        s.append("<h3>Simulation: the plant's truth</h3>")
        s.append(_table([
            ["scenario", _e(t["scenario"])],
            ["the plant's heat (IAPWS-IF97, whole run)", _f(t["plant_heat_kwh"], 3, "kWh")],
            ["the node's meter at its stop", _f(t["node_final_metered_kwh"], 3, "kWh")],
            ["this record's heat against the plant's", _f(chk["heat_vs_plant_pct"], 3, "%")],
            ["the record ends before the run's stop by",
             _hms(chk["record_ends_s_before_stop"])],
        ]))
    s.append("<h3>Avoided CO₂ at this node</h3>")
    s.append(_co2_html(d["co2"], "From this node's metered heat only."))
    s.append("</section>")
    return "\n".join(s)


def render_html(data, plots, source, out_dir, title):
    site = data["site"]
    now = datetime.datetime.now(datetime.UTC)
    s = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
         f"<title>{_e(title)}</title><style>{CSS}</style></head><body>",
         f"<h1>{_e(title)}</h1>",
         f"<p class='note'>Made {now:%Y-%m-%d %H:%M} UTC by heatgw report from "
         f"{_e(source)}. Figures marked <span class='est'>estimate</span> are estimates; "
         "all others are what the nodes measured. report.json beside this file holds every "
         "figure.</p>",
         "<h2>Site summary</h2>"]
    rows = []
    for name, d in data["nodes"].items():
        c = d["compute"]
        rows.append([_e(name), _f(d["heat"]["energy_kwh"], 3), _f(d["heat"]["volume_m3"], 3),
                     _f(c["energy_kwh"], 3) if c else "—",
                     (_f(c["ratio"], 3) + (" (est.)" if c["estimate"] else "")) if c else "—",
                     _f(d["pump"]["energy_kwh"], 3), str(len(d["transitions"])),
                     str(len(d["alarms"])), _f(d["completeness"]["percent"], 2)])
    rows.append(["<b>site</b>", f"<b>{_f(site['heat_kwh'], 3)}</b>",
                 _f(site["volume_m3"], 3), _f(site["compute_kwh"], 3),
                 _f(site["ratio"], 3) + (" (est.)" if site["ratio_estimate"] else ""),
                 _f(site["pump_kwh"], 3), "", "",
                 _f(100.0 * site["records"] / (site["records"] + site["missing"])
                    if site["records"] else None, 2)])
    s.append(_table(rows, head=["node", "heat, kWh", "volume, m³", "compute, kWh",
                                "heat recovery ratio", "pumps, kWh", "transitions", "alarms",
                                "completeness, %"], numeric=(1, 2, 3, 4, 5, 6, 7, 8)))
    s.append("<h3>Avoided CO₂, whole site</h3>")
    s.append(_co2_html(site["co2"], "From the metered heat of every node only; heat that "
                       "was not metered (error time) is not estimated."))
    for name, d in data["nodes"].items():
        s.append(_node_html(name, d, plots.get(name, {}), out_dir))
    s.append("</body></html>")
    return "\n".join(s)


def parse_configs(items):
    """--config [NODE=|SITE/NODE=]FILE ... -> {(site|None, node|None): config}."""
    out = {}
    for it in items or ():
        who, sep, path = it.rpartition("=")
        key = (None, None)
        if sep:
            site, _, node = who.rpartition("/")
            key = (site or None, node)
        try:
            with open(path, encoding="utf-8") as f:
                out[key] = json.load(f)
        except (OSError, ValueError) as e:
            raise ValueError(f"--config {it}: {e}") from None
    return out


def _safe(name):
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)


def write_report(store, out_dir, factors, configs=None, summary=None, only=None,
                 source="", title=None, pdf=True, out=sys.stdout):
    """Compute, plot, write; the paths written ({"html", "json", "pdf", "plots"}) and the
    PDF note when there is none."""
    from host_tools import reportplots

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    configs = dict(configs or {})
    for (site, node), cfg in store.node_configs().items():
        configs.setdefault((site, node), cfg)
    data, series = compute(store, factors, configs, summary, only)
    if not data["nodes"]:
        raise ValueError("the record holds no node's records")
    sites = sorted({n.split("/")[0] for n in data["nodes"]})
    title = title or f"Commissioning report: heat reuse at site {', '.join(sites)}"
    plots = {name: reportplots.plot_node(series[name], out_dir, _safe(name))
             for name in data["nodes"]}
    written = {"plots": [str(p) for v in plots.values() for p in v.values()]}
    data["source"] = source
    data["generated_utc"] = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    data["plots"] = {n: {k: p.name for k, p in v.items()} for n, v in plots.items()}
    jpath = out_dir / "report.json"
    jpath.write_text(json.dumps(data, indent=1, allow_nan=False, default=str))
    hpath = out_dir / "report.html"
    hpath.write_text(render_html(data, plots, source, out_dir, title), encoding="utf-8")
    written.update(html=str(hpath), json=str(jpath), pdf=None, pdf_note=None)
    if pdf:
        exe = chromium.find()
        if exe is None:
            written["pdf_note"] = ("PDF not written: Chromium is not installed (Debian: "
                                   "apt-get install chromium; or set HEATGW_CHROMIUM)")
        else:
            try:
                written["pdf"] = str(chromium.print_pdf(exe, hpath, out_dir / "report.pdf"))
            except chromium.ChromiumError as e:
                written["pdf_note"] = f"PDF not written: {e}"
    return written


def build_parser():
    ap = argparse.ArgumentParser(
        description="Write the commissioning report of a record.")
    ap.add_argument("record", metavar="RECORD", nargs="?",
                    help="a record: SQLite file (monitor --record) or postgresql:// URL")
    ap.add_argument("--out", metavar="DIR", help="output folder (default: <RECORD>-report)")
    ap.add_argument("--summary", metavar="JSON",
                    help="a harness summary (simulated run): the plant's truth beside it")
    ap.add_argument("--config", action="append", metavar="[NODE=]FILE",
                    help="a node's config.json (its pump meter); repeatable")
    ap.add_argument("--factors", metavar="FILE",
                    help="CO2 factors (JSON: source, year, basis of each); default: built in")
    ap.add_argument("--print-factors", action="store_true",
                    help="print the default factor set as JSON (a template) and exit")
    ap.add_argument("--site", help="only this site")
    ap.add_argument("--node", action="append", help="only this node (repeatable)")
    ap.add_argument("--title", help="the report's title")
    ap.add_argument("--no-pdf", action="store_true", help="skip the PDF")
    return ap


def main(argv=None):
    ap = build_parser()
    args = ap.parse_args(argv)
    if args.print_factors:
        print(json.dumps(co2.DEFAULT_FACTORS, indent=1))
        return 0
    if args.record is None:
        ap.error("give a RECORD")
    try:
        factors = co2.load_factors(args.factors)
        configs = parse_configs(args.config)
        summary = None
        if args.summary:
            with open(args.summary, encoding="utf-8") as f:
                summary = json.load(f)
        store = records.open_store(args.record, create=False)
    except (co2.FactorError, ValueError, OSError, records.RecordError) as e:
        print(f"heatgw report: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001 - e.g. a database that cannot be reached
        print(f"heatgw report: cannot open {records.redact_url(args.record)}: {e}",
              file=sys.stderr)
        return 2
    if args.out:
        out_dir = Path(args.out)
    elif records.is_pg_url(args.record):
        out_dir = Path("report")
    else:
        p = Path(args.record)
        out_dir = p.with_name(p.stem + "-report")
    only = None
    if args.site or args.node:
        only = [k for k in store.nodes() if (not args.site or k[0] == args.site)
                and (not args.node or k[1] in args.node)]
    try:
        w = write_report(store, out_dir, factors, configs, summary, only,
                         source=records.redact_url(args.record), title=args.title,
                         pdf=not args.no_pdf)
    except ValueError as e:
        print(f"heatgw report: {e}", file=sys.stderr)
        return 2
    finally:
        store.close()
    print(f"report: {w['html']}")
    print(f"data:   {w['json']}")
    for p in w["plots"]:
        print(f"plot:   {p}")
    if w["pdf"]:
        print(f"pdf:    {w['pdf']}")
    elif w["pdf_note"]:
        print(f"note:   {w['pdf_note']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
