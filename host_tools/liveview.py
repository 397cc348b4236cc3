"""What `heatgw monitor` shows: every node of a site, live (rich, on a terminal), or one
plain line per message (a log, a pipe, a file).

    fleet = Fleet()
    lines = fleet.feed(item, received)   # host_tools.records.Item -> plain lines
    fleet.render(header)                 # a rich renderable: one panel per node

The node's values come from its newest telemetry record (a record from the backlog or a
resent one arriving later never replaces a newer one); gaps are the seqs missing between
the first and the last seen (records, per node: README "Monitoring and records").
"""

import json
import time

from host_tools.records import SeqRanges

# newest telemetry keys the view knows how to show; any other key is kept in the record
PANELS_MAX = 6  # more nodes than this: one table line per node instead of a panel each
PANEL_WIDTH = 58
TEMPS = (("supply_c", "supply"), ("return_c", "return"), ("sink_return_c", "sink return"),
         ("it_coolant_c", "IT coolant"))


def _num(doc, key, digits, scale=1.0, unit=""):
    """'45.31 °C', or '— (why)' for an invalid value, '' when the key is absent."""
    if key not in doc:
        return ""
    v = doc.get(key)
    if v is None:
        why = doc.get(key.rsplit("_", 1)[0] + "_why")
        return "—" + (f" ({why})" if why else "")
    try:
        return f"{float(v) * scale:.{digits}f}" + (f" {unit}" if unit else "")
    except (TypeError, ValueError):
        return str(v)


def _ago(t, now):
    if t is None:
        return "never"
    s = max(0.0, now - t)
    if s < 120:
        return f"{s:.0f} s ago"
    if s < 7200:
        return f"{s / 60:.0f} min ago"
    return f"{s / 3600:.1f} h ago"


def _ranges_text(ranges, limit=3):
    parts = [f"{a}" if a == b else f"{a}–{b}" for a, b in ranges[:limit]]
    if len(ranges) > limit:
        parts.append(f"+{len(ranges) - limit} more")
    return ", ".join(parts)


class NodeState:
    """What the monitor knows of one node."""

    def __init__(self, site, node):
        self.site, self.node = site, node
        self.status = None  # online / offline (retained, the last will)
        self.state = None  # the retained state document
        self.telemetry = None  # the newest telemetry record's document
        self.telemetry_seq = 0
        self.last_seen = None
        self.seqs = SeqRanges()
        self.records = 0
        self.duplicates = 0
        self.resent = 0
        self.alarms = {}  # id -> alarm document (retained; removed by an empty payload)
        self.last_event = None  # (seq, kind, text)

    @property
    def name(self):
        return f"{self.site}/{self.node}"


class Fleet:
    """Every node seen, fed one classified message at a time."""

    def __init__(self):
        self.nodes = {}
        self.messages = 0
        self.bad = 0
        self.started = time.time()

    def node(self, site, node):
        key = (site, node)
        if key not in self.nodes:
            self.nodes[key] = NodeState(site, node)
        return self.nodes[key]

    def bad_message(self, text):
        self.bad += 1
        return [f"{time.strftime('%H:%M:%S')} bad message: {text}"]

    def feed(self, item, received):
        """Update from one Item; the plain lines that say what came."""
        self.messages += 1
        n = self.node(item.site, item.node)
        n.last_seen = received
        stamp = time.strftime("%H:%M:%S", time.localtime(received))
        who = f"{stamp} {n.name}"
        if item.kind in ("telemetry", "event"):
            new = n.seqs.add(item.seq)
            if not new:
                n.duplicates += 1
                return [f"{who} #{item.seq} duplicate (ignored)"]
            n.records += 1
            n.resent += item.resent
            d = item.doc
            tag = " resent" if item.resent else ""
            if item.kind == "telemetry":
                if item.seq > n.telemetry_seq:
                    n.telemetry, n.telemetry_seq = d, item.seq
                return [f"{who} #{item.seq}{tag} {self.telemetry_line(d)} "
                        f"gaps={n.seqs.missing_count()}"]
            n.last_event = (item.seq, d.get("kind"), d.get("text", ""))
            extra = ""
            if d.get("kind") == "queue_drop":
                extra = f" lost {d.get('first_seq')}–{d.get('last_seq')}"
            return [f"{who} #{item.seq}{tag} event {d.get('kind')}: {d.get('text', '')}{extra}"]
        tail = item.tail
        text = item.payload.decode("utf-8", "replace")
        if tail == "status":
            n.status = text
            return [f"{who} status {text}"]
        if tail == "state":
            try:
                n.state = json.loads(text)
            except ValueError:
                return self.bad_message(f"{item.topic}: state is not JSON")
            return [f"{who} state {n.state.get('state')} ({n.state.get('reason')}) "
                    f"fw {n.state.get('fw')} config {n.state.get('config_hash')}"]
        if tail.startswith("alarm/"):
            aid = tail[6:]
            if not text:
                n.alarms.pop(aid, None)
                return [f"{who} alarm {aid} removed"]
            try:
                a = json.loads(text)
            except ValueError:
                return self.bad_message(f"{item.topic}: alarm is not JSON")
            n.alarms[aid] = a
            what = "active" if a.get("active") else "cleared, awaiting ack"
            return [f"{who} alarm {aid} {a.get('severity')} {what}"]
        if tail == "cmd/ack":
            return [f"{who} command answer {text}"]
        return []

    @staticmethod
    def telemetry_line(d):
        state = d.get("state")
        reason = d.get("reason")
        parts = [f"{state}({reason})" if reason else str(state)]
        for key, label, digits, scale, unit in (
                ("supply_c", "supply", 2, 1, ""), ("return_c", "return", 2, 1, ""),
                ("dt_k", "dT", 2, 1, ""), ("flow_m3h", "flow", 3, 1, ""),
                ("power_w", "P_kW", 2, 1e-3, ""), ("energy_wh", "E_kWh", 3, 1e-3, ""),
                ("compute_w", "compute_kW", 2, 1e-3, ""),
                ("ratio_interval", "ratio", 3, 1, "")):
            if key in d:
                parts.append(f"{label}={_num(d, key, digits, scale, unit).replace(' ', '')}")
        if d.get("active"):
            parts.append("active=" + ",".join(d["active"]))
        return " ".join(parts)

    # -- the rich view ---------------------------------------------------------------------

    def render(self, header):
        from rich.columns import Columns
        from rich.console import Group
        from rich.text import Text

        now = time.time()
        head = Text(header, style="bold")
        if not self.nodes:
            return Group(head, Text("waiting for the first message ...", style="dim"))
        nodes = [n for _k, n in sorted(self.nodes.items())]
        if len(nodes) > PANELS_MAX:  # a fleet: one line per node
            return Group(head, self._fleet_table(nodes, now))
        return Group(head, Columns([self._panel(n, now) for n in nodes]))

    def _fleet_table(self, nodes, now):
        from rich.table import Table

        t = Table(expand=False, pad_edge=False, header_style="bold")
        for col in ("node", "status", "relay", "supply °C", "return °C", "ΔT K", "flow m³/h",
                    "power kW", "energy kWh", "alarms", "seen", "seq", "gaps"):
            t.add_column(col, no_wrap=True)
        for n in nodes:
            d = n.telemetry or {}
            relay = (f"{'[green]reuse' if d.get('state') == 'reuse' else '[yellow]bypass'}"
                     f"[/] ({d.get('reason')})") if d else "—"
            t.add_row(n.name, n.status or "?", relay,
                      _num(d, "supply_c", 2), _num(d, "return_c", 2), _num(d, "dt_k", 2),
                      _num(d, "flow_m3h", 3), _num(d, "power_w", 2, 1e-3),
                      _num(d, "energy_wh", 3, 1e-3), str(len(n.alarms)),
                      _ago(n.last_seen, now), f"{n.seqs.first()}..{n.seqs.last()}",
                      str(n.seqs.missing_count()))
        return t

    def _panel(self, n, now):
        from rich.panel import Panel
        from rich.table import Table

        d = n.telemetry or {}
        t = Table.grid(padding=(0, 1))
        t.add_column(style="cyan", no_wrap=True)
        t.add_column(overflow="fold")
        online = n.status or "?"
        t.add_row("status", f"[{'green' if online == 'online' else 'red'}]{online}[/] · "
                            f"seen {_ago(n.last_seen, now)}")
        if d:
            reuse = d.get("state") == "reuse"
            relay = "[bold green]REUSE[/]" if reuse else "[bold yellow]BYPASS[/]"
            t.add_row("relay", f"{relay} ({d.get('reason')})")
            for key, label in TEMPS:
                t.add_row(label, _num(d, key, 2, unit="°C"))
            t.add_row("ΔT", _num(d, "dt_k", 2, unit="K"))
            t.add_row("flow", _num(d, "flow_m3h", 3, unit="m³/h"))
            t.add_row("power", _num(d, "power_w", 2, 1e-3, "kW"))
            t.add_row("energy", _num(d, "energy_wh", 3, 1e-3, "kWh"))
            t.add_row("volume", _num(d, "volume_l", 3, 1e-3, "m³"))
            if "compute_w" in d:
                t.add_row("compute", _num(d, "compute_w", 2, 1e-3, "kW"))
                t.add_row("ratio (h)", _num(d, "ratio_hour", 3))
            if "valve_pct" in d:
                t.add_row("valve", _num(d, "valve_pct", 1, unit="%"))
            for name, vals in sorted((d.get("meters") or {}).items()):
                shown = " ".join(f"{k}={v}" for k, v in vals.items()
                                 if k != "fault" and v is not None)
                t.add_row(f"meter {name}", (shown or "—") + (f" ({vals['fault']})"
                                                             if vals.get("fault") else ""))
            if d.get("active"):
                t.add_row("trips", ", ".join(d["active"]))
        else:
            t.add_row("relay", "no telemetry yet")
        held = [f"{a.get('severity', '?')}:{aid}" for aid, a in sorted(n.alarms.items())]
        t.add_row("alarms", (f"[red]{len(held)}[/] " + ", ".join(held)) if held else "none")
        if n.last_event:
            seq, kind, text = n.last_event
            t.add_row("event", f"#{seq} {kind} {text}"[:60])
        missing = n.seqs.missing()
        gaps = "none" if not missing else \
            f"[red]{sum(b - a + 1 for a, b in missing)}[/] ({_ranges_text(missing)})"
        t.add_row("seq", f"{n.seqs.first()}..{n.seqs.last()} · {n.records} records · "
                         f"dup {n.duplicates}")
        t.add_row("gaps", gaps)
        return Panel(t, title=f"[bold]{n.name}[/]", title_align="left", width=PANEL_WIDTH)
