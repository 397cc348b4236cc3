"""`heatgw sim [SCENARIO] [--nodes N]`: the gateway firmware on the host board against the
plant model and a broker, with a live view, faults injected while it runs, and at the end
the run's record and its report.

    heatgw sim                                   # scenarios/sim_day.json, one node
    heatgw sim scenarios/sink_lost.json --nodes 3
    heatgw sim --duration 1800 --inject 600:sink_lost --inject 1200:broker_down \\
        --inject 1300:broker_up --view plain

Each node is a harness (host_tools.harness: the real firmware in its own micropython
process, its own plant, lockstep, in a thread of this process) publishing to one broker:
`--broker HOST:PORT`, else the scenario configuration's `mqtt` host and port, else one this
run starts for itself (host_tools.brokers: mosquitto if installed, else the embedded amqtt)
and stops at the end. With `--nodes N` the node ids are `<node_id>-1` .. `-N` (one site).

A subscriber of the run's own (host_tools.simrecord) records every message from before the
first node boots: the record (SQLite, the format of `heatgw monitor --record`) that
`heatgw report` turns into the commissioning report. The view shows what the harness sees
(the plant's temperatures, flow, thermal and compute power, the relay coils, the node's
console) beside what arrived at the broker (the node's metered energy and ratio, its
status, alarms, records and gaps).

Faults while it runs: keys in the live view, commands typed at its prompt (`:`), lines on
stdin in the plain view, and `--inject T:COMMAND` at a simulated time. They reach the node
through the harness's scenario events (Harness.inject: applied at the node's next idle
point, in lockstep); the broker's outage is this run's broker stopped and started.
"""

import argparse
import json
import os
import re
import select
import signal
import sys
import threading
import time
from pathlib import Path

from host_tools.paths import REPO

DEFAULT_SCENARIO = REPO / "scenarios" / "sim_day.json"
DEFAULT_SENSOR = "sink_return"  # `sensor_open` without a name: a critical sensor
MAX_NODES = 16
REFRESH_S = 0.25  # live view redraws
PLAIN_STEPS = 24  # plain view: a progress line per node every 1/24 of the run

# COMMAND -> (fault, on): the faults a key or a command toggles, and what they do
COMMANDS = {
    "sink_lost": ("sink", True), "sink_restored": ("sink", False),
    "sensor_open": ("sensor", True), "sensor_ok": ("sensor", False),
    "pump_off": ("pump", True), "pump_on": ("pump", False),
    "valve_stuck": ("valve", True), "valve_free": ("valve", False),
    "maintenance_on": ("maintenance", True), "maintenance_off": ("maintenance", False),
    "trip_reset": ("reset", True),
    "broker_down": ("broker", True), "broker_up": ("broker", False),
}
# key -> (fault, what the help line says); a key toggles its fault
KEYS = {"s": ("sink", "sink lost"), "o": ("sensor", "sensor open"), "b": ("broker",
        "broker down"), "p": ("pump", "pump failure"), "v": ("valve", "valve stuck"),
        "m": ("maintenance", "maintenance"), "r": ("reset", "trip reset")}


class UsageError(ValueError):
    """A bad option or command (the text says what)."""


def fault_events(fault, on, arg=None):
    """The harness's scenario events for a fault switched on/off (README "Scenarios")."""
    if fault == "sink":
        return [{"do": "sink_lost" if on else "sink_restored"}]
    if fault == "sensor":
        return [{"do": "sensor_fault", "sensor": arg or DEFAULT_SENSOR,
                 "fault": "open" if on else "none"}]
    if fault == "pump":
        return [{"do": "pump", "on": not on}]
    if fault == "valve":
        return [{"do": "valve_stuck", "stuck": bool(on)}]
    if fault == "maintenance":
        return [{"do": "input", "name": "maintenance", "value": bool(on)}]
    if fault == "reset":
        return [{"do": "trip_reset"}]
    raise ValueError(fault)


def parse_time(text):
    """Simulated seconds from `5400`, `5400s`, `90m`, `1.5h` or `09:30` (h:m of the day)."""
    t = text.strip()
    m = re.fullmatch(r"(\d+):(\d\d)(?::(\d\d))?", t)
    if m:
        return int(m.group(1)) * 3600 + int(m.group(2)) * 60 + int(m.group(3) or 0)
    m = re.fullmatch(r"(\d+(?:\.\d*)?)([smh]?)", t)
    if not m:
        raise UsageError(f"{text!r}: not a time (5400, 5400s, 90m, 1.5h or 09:30)")
    return float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[m.group(2)]


def parse_command(text, nodes):
    """`COMMAND[:ARG][@NODE]` -> (command, arg, [node indexes]); every node without @."""
    t = text.strip()
    target = None
    if "@" in t:
        t, _, n = t.rpartition("@")
        if not n.isdigit() or not 1 <= int(n) <= nodes:
            raise UsageError(f"{text!r}: @NODE must be 1..{nodes}")
        target = [int(n) - 1]
    name, _, arg = t.partition(":")
    name = name.strip()
    if name not in COMMANDS:
        raise UsageError(f"{text!r}: no command {name!r} (one of {', '.join(COMMANDS)})")
    if arg and name not in ("sensor_open", "sensor_ok"):
        raise UsageError(f"{text!r}: {name} takes no argument")
    return name, arg or None, target if target is not None else list(range(nodes))


def parse_inject(text, nodes):
    """`T:COMMAND[:ARG][@NODE]` -> (t_s, command, arg, nodes)."""
    t, sep, rest = text.partition(":")
    m = re.match(r"(\d\d:\d\d(?::\d\d)?):(.*)", text)  # a clock time holds colons
    if m:
        t, rest, sep = m.group(1), m.group(2), ":"
    if not sep:
        raise UsageError(f"--inject {text!r}: expected T:COMMAND (e.g. 3600:sink_lost)")
    name, arg, target = parse_command(rest, nodes)
    return parse_time(t), name, arg, target


def clock_text(t_s):
    """Simulated time as the time of day ("1d 02:00:00" past a day)."""
    t = int(t_s)
    d, t = divmod(t, 86400)
    hms = f"{t // 3600:02d}:{t // 60 % 60:02d}:{t % 60:02d}"
    return f"{d}d {hms}" if d else hms


class SimNode:
    """One gateway of the run: its harness (in a thread) and what the view needs."""

    def __init__(self, index, harness, site, node_id, cfg):
        self.index, self.h, self.site, self.node_id, self.cfg = (index, harness, site,
                                                                  node_id, cfg)
        self.summary = None
        self.error = None
        self.thread = threading.Thread(target=self._run, name=f"node-{index + 1}",
                                       daemon=True)
        self._console_pos = 0
        self.mqtt_line = "not connected yet"
        self.plain_next = 0  # the next plain progress line's simulated time (ms)
        self.seen_transitions = 0
        self.seen_injected = 0
        self.started = None  # when its thread began (the speed-up counts from there)

    def _run(self):
        from host_tools.nodeproc import NodeFailed

        self.started = time.monotonic()
        try:
            self.summary = self.h.run()
        except NodeFailed as e:
            self.error = str(e)
        except Exception as e:  # noqa: BLE001 - shown, and the run exits 1
            import traceback

            self.error = f"{type(e).__name__}: {e}\n{traceback.format_exc()}"

    @property
    def name(self):
        return f"{self.site}/{self.node_id}"

    def follow_console(self):
        """The node's newest `mqtt:` console line (its link to the broker as it sees it)."""
        try:
            with open(self.h.console_path, "rb") as f:
                f.seek(self._console_pos)
                data = f.read()
        except OSError:
            return
        cut = data.rfind(b"\n")
        if cut < 0:
            return
        self._console_pos += cut + 1
        for line in data[:cut].decode("utf-8", "replace").splitlines():
            if line.startswith("mqtt: "):
                self.mqtt_line = line[6:].replace(" (retrying with backoff)", ", retrying")

    def relay(self):
        """(state, reason) of the reuse relay as the harness sees its coil."""
        trs = self.h.transitions
        state = "reuse" if self.h.coils.get("reuse") else "bypass"
        reason = trs[-1]["reason"] if trs and trs[-1]["state"] == state else "boot"
        return state, reason or "…"

    def faults(self):
        """The faults injected into this node's world that hold now (labels)."""
        w = self.h.world
        out = []
        if not w.inputs.get("sink_available", True):
            out.append("sink lost")
        elif not w.pump_on:
            out.append("pump off")
        out += [f"{s} {f}" for s, f in sorted(w.faults.items()) if f and f != "none"]
        if w.valve_stuck:
            out.append("valve stuck")
        if w.inputs.get("maintenance"):
            out.append("maintenance")
        return out

    def fault_on(self, fault, arg=None):
        w = self.h.world
        if fault == "sink":
            return not w.inputs.get("sink_available", True)
        if fault == "sensor":
            return w.faults.get(arg or DEFAULT_SENSOR, "none") != "none"
        if fault == "pump":
            return not w.pump_on
        if fault == "valve":
            return w.valve_stuck
        if fault == "maintenance":
            return bool(w.inputs.get("maintenance"))
        return False


class Sim:
    def __init__(self, args, out=sys.stdout):
        self.args = args
        self.out = out
        self.nodes = []
        self.broker = None  # this run's own broker (None: --broker / the configuration's)
        self.broker_addr = None
        self.broker_up = True
        self.broker_note = None
        self.recorder = None
        self.log = []  # (wall time, text): what happened (injections, broker, errors)
        self.selected = 0
        self.stop_asked = False
        self.prompt = None  # the text typed after ':' in the live view
        self.message = ""  # the last answer to a key or a command
        self.down_at_end = False  # the run's broker was down when the nodes stopped
        self.wall0 = time.monotonic()
        self._broker_lock = threading.Lock()

    # -- set-up ---------------------------------------------------------------------------

    def setup(self):
        from host_tools import brokers
        from host_tools.harness import Harness
        from host_tools.scenario import load_scenario
        from host_tools.uplink import DEFAULT_SITE, Uplink, UplinkError

        a = self.args
        try:
            sc = load_scenario(a.scenario)
        except (OSError, ValueError) as e:
            raise UsageError(f"scenario {a.scenario}: {e}") from None
        if a.duration is not None:
            sc["duration_s"] = parse_time(a.duration)
        self.sc = sc
        self.out_dir = Path(a.out) if a.out else (
            REPO / "out" / "sim" / f"{sc['name']}-{time.strftime('%Y%m%d-%H%M%S')}")
        self.out_dir.mkdir(parents=True, exist_ok=True)
        injects = [parse_inject(t, a.nodes) for t in a.inject or ()]
        mqtt_cfg = (sc.get("config") or {}).get("mqtt") or {}
        broker = a.broker
        if broker is None and mqtt_cfg.get("host"):
            broker = f"{mqtt_cfg['host']}:{mqtt_cfg.get('port') or 1883}"
            self.broker_note = "named in the scenario's configuration"
        if broker is None:
            self.broker, note = brokers.local_broker(self.out_dir / "broker", detach=True)
            self.broker_note = (f"{self.broker.name}, started for this run"
                                + (f" ({note})" if note else ""))
            self.broker.start()
            broker = self.broker.address
        elif self.broker_note is None:
            self.broker_note = "given with --broker"
        self.broker_addr = broker
        try:
            uplink = Uplink(broker)
        except UplinkError as e:
            raise UsageError(str(e)) from None
        site = mqtt_cfg.get("site") or DEFAULT_SITE
        prefix = mqtt_cfg.get("prefix") or "heatgw"
        self.record_path = self.out_dir / f"{sc['name']}.sqlite"
        if self.record_path.exists():
            self.record_path.unlink()
        from host_tools.simrecord import Recorder

        self.recorder = Recorder(self.record_path, broker, site, prefix).start()
        base_id = (sc.get("config") or {}).get("node_id")
        for i in range(a.nodes):
            nsc = json.loads(json.dumps(sc))
            from host_tools.scenario import node_config

            node_id = base_id or node_config(sc)["node_id"]
            if a.nodes > 1:
                node_id = f"{node_id}-{i + 1}"
            nsc.setdefault("config", {})["node_id"] = node_id
            for t_s, name, arg, target in injects:
                if name.startswith("broker_"):
                    if i == 0:  # the broker's outage on the first node's clock
                        nsc["events"].append({"t_s": t_s, "do": name})
                elif i in target:
                    fault, on = COMMANDS[name]
                    nsc["events"] += [{"t_s": t_s, **ev} for ev in fault_events(fault, on, arg)]
            nsc["events"].sort(key=lambda e: e["t_s"])
            h = Harness(nsc, self.out_dir / f"node-{node_id}", mpy=a.mpy, uplink=uplink,
                        external=self._scheduled, detach=True)
            self.nodes.append(SimNode(i, h, site, node_id, h.cfg))

    def _scheduled(self, ev, t_s):
        """A scheduled --inject the harness does not know: the broker's outage."""
        if ev["do"] in ("broker_down", "broker_up"):
            self.switch_broker(ev["do"] == "broker_down", f"at {clock_text(t_s)} (--inject)")
            return True
        return False

    # -- faults ---------------------------------------------------------------------------

    def say(self, text):
        self.message = text
        self.log.append((time.monotonic() - self.wall0, text))

    def switch_broker(self, down, why):
        with self._broker_lock:
            if self.broker is None:
                self.say(f"the broker {self.broker_addr} is not this run's: it cannot be "
                         "stopped here")
                return
            if down and self.broker.running():
                self.broker.stop()
                self.broker_up = False
                self.say(f"broker down {why}")
            elif not down and not self.broker.running():
                try:
                    self.broker.start()
                    self.broker_up = True
                    self.say(f"broker up again {why}")
                except Exception as e:  # noqa: BLE001 - said, the run goes on
                    self.say(f"the broker did not start again: {e}")

    def command(self, name, arg, targets, why="typed"):
        """Apply a command now (a key, the prompt, stdin)."""
        fault, on = COMMANDS[name]
        if fault == "broker":
            self.switch_broker(on, f"({why})")
            return
        for i in targets:
            n = self.nodes[i]
            if n.thread.is_alive():
                for ev in fault_events(fault, on, arg):
                    n.h.inject(ev)
        who = ", ".join(self.nodes[i].node_id for i in targets)
        self.say(f"{name}{':' + arg if arg else ''} -> {who} ({why})")

    def key(self, ch):
        if ch in ("q", "\x03"):
            self.request_stop("quit")
            return
        if ch.isdigit() and 1 <= int(ch) <= len(self.nodes):
            self.selected = int(ch) - 1
            self.say(f"node {ch} selected: {self.nodes[self.selected].node_id}")
            return
        if ch == ":":
            self.prompt = ""
            return
        if ch not in KEYS:
            return
        fault = KEYS[ch][0]
        if fault == "broker":
            self.switch_broker(self.broker_up, f"(key {ch})")
            return
        if fault == "reset":
            self.command("trip_reset", None, [self.selected], f"key {ch}")
            return
        on = not self.nodes[self.selected].fault_on(fault)
        name = next(c for c, v in COMMANDS.items() if v == (fault, on))
        self.command(name, None, [self.selected], f"key {ch}")

    def typed(self, line):
        line = line.strip()
        if not line:
            return
        if line in ("q", "quit", "stop"):
            self.request_stop("quit")
            return
        try:
            name, arg, targets = parse_command(line, len(self.nodes))
        except UsageError as e:
            self.say(str(e))
            return
        self.command(name, arg, targets)

    def request_stop(self, why):
        if not self.stop_asked:
            self.stop_asked = True
            self.say(f"stopping ({why}): the nodes save and stop at their next step")
            for n in self.nodes:
                n.h.request_stop()

    # -- running ----------------------------------------------------------------------------

    def running(self):
        return any(n.thread.is_alive() for n in self.nodes)

    def run(self):
        for n in self.nodes:
            n.thread.start()
        live = self.args.view == "live" or (self.args.view == "auto" and self.out.isatty())
        if live:
            self._run_live()
        else:
            self._run_plain()

    def _run_plain(self):
        from host_tools.simview import plain_header, plain_progress

        self._print(plain_header(self))
        threading.Thread(target=self._stdin_commands, daemon=True).start()
        while self.running():
            time.sleep(0.2)
            for line in plain_progress(self):
                self._print(line)
        for line in plain_progress(self):
            self._print(line)

    def _stdin_commands(self):
        try:
            for line in sys.stdin:
                self.typed(line)
        except (OSError, ValueError):
            pass

    def _print(self, line):
        print(line, file=self.out, flush=True)

    def _run_live(self):
        from rich.console import Console
        from rich.live import Live

        from host_tools.simview import render

        console = Console(file=self.out)
        keys = _Keys() if sys.stdin.isatty() else None
        try:
            with Live(render(self), console=console, screen=True, auto_refresh=False,
                      vertical_overflow="crop") as live:
                while self.running():
                    deadline = time.monotonic() + REFRESH_S
                    while keys is not None and time.monotonic() < deadline:
                        for ch in keys.read(deadline - time.monotonic()):
                            self._live_key(ch)
                    if keys is None:
                        time.sleep(REFRESH_S)
                    live.update(render(self), refresh=True)
                live.update(render(self, final=True), refresh=True)
        finally:
            if keys is not None:
                keys.restore()
        console.print(render(self, final=True))

    def _live_key(self, ch):
        if self.prompt is None:
            self.key(ch)
            return
        if ch in ("\r", "\n"):
            line, self.prompt = self.prompt, None
            self.typed(line)
        elif ch in ("\x1b", "\x03"):
            self.prompt = None
        elif ch in ("\x7f", "\b"):
            self.prompt = self.prompt[:-1]
        elif ch.isprintable():
            self.prompt += ch

    # -- the end ------------------------------------------------------------------------------

    def finish(self):
        """Wait for the record to hold what the nodes published, close it, write the
        summaries and the report; the lines to print."""
        lines = []
        down_at_end = self.broker is not None and not self.broker.running()
        if down_at_end:  # what the nodes published before it stays in the broker's store
            self.switch_broker(False, "(the run ended: for the record)")
        for n in self.nodes:
            if n.summary is not None:
                p = self.out_dir / f"summary-{n.node_id}.json"
                p.write_text(json.dumps(n.summary, indent=1) + "\n")
                n.summary_path = p
        want = {}
        for n in self.nodes:
            mq = (n.summary or {}).get("mqtt") or {}
            if mq.get("last_seq") and mq.get("acked"):
                want[(n.site, n.node_id)] = mq["last_seq"]
        # records published while the broker was down at the end stay on the nodes' flash
        short = self.recorder.wait_for(want, timeout_s=3.0 if down_at_end
                                       else self.args.record_wait)
        self.down_at_end = down_at_end
        configs = {(n.site, n.node_id): n.cfg for n in self.nodes}
        self.recorder.finish(configs, meta={"scenario": self.sc["name"],
                                            "nodes": len(self.nodes)})
        lines.append(self._result_line())
        for n in self.nodes:
            lines.append(self._node_line(n, short))
        lines.append(f"record: {self.record_path}")
        for n in self.nodes:
            if getattr(n, "summary_path", None):
                lines.append(f"summary: {n.summary_path}")
        return lines

    def _result_line(self):
        wall = time.monotonic() - self.wall0
        sim_s = max((n.h.vt for n in self.nodes), default=0) / 1000.0
        return (f"heatgw sim: {self.sc['name']}: {len(self.nodes)} node"
                f"{'s' if len(self.nodes) > 1 else ''}, {clock_text(sim_s)} simulated in "
                f"{wall:.0f} s, broker {self.broker_addr} ({self.broker_note})")

    def _node_line(self, n, short):
        if n.error:
            first = n.error.strip().splitlines()[0]
            return f"  {n.name}: FAILED: {first} (console: {n.h.console_path})"
        s = n.summary
        m = s.get("metered") or {}
        plant = (s.get("plant") or {}).get("heat_delivered_kwh")
        got = self.recorder.nodes.get((n.site, n.node_id))
        rec = got.seqs.count if got else 0
        last = (s.get("mqtt") or {}).get("last_seq") or 0
        gaps = got.seqs.missing_count() if got else 0
        text = (f"  {n.name}: metered {m.get('energy_kwh', 0):.3f} kWh (plant {plant:.3f} kWh, "
                f"{s.get('heat_error_pct') or 0:+.3f} %), "
                f"{len(s['relay_transitions'])} relay transitions, {rec} of the {last} "
                f"records it published in the record")
        if gaps:
            text += f", {gaps} missing between"
        if (n.site, n.node_id) in short:
            text += " (the record stopped waiting for the rest)"
        if self.down_at_end:
            text += "; what it measured after the broker went down waits on its flash"
        return text

    def report(self):
        """`heatgw report` on the record (it prints each file it writes); the last line:
        where the report is. With several nodes the first node's summary is the truth
        beside its figures."""
        if self.args.no_report:
            return "report: not written (--no-report); `heatgw report RECORD` writes it"
        from host_tools import report

        out = self.out_dir / "report"
        args = [str(self.record_path), "--out", str(out)]
        first = next((n for n in self.nodes if getattr(n, "summary_path", None)), None)
        if first is not None:
            args += ["--summary", str(first.summary_path)]
        if self.args.no_pdf:
            args.append("--no-pdf")
        saved = sys.argv[0]
        sys.argv[0] = "heatgw report"
        try:
            rc = report.main(args)
        except SystemExit as e:
            rc = e.code
        finally:
            sys.argv[0] = saved
        if rc:
            return f"report: heatgw report failed (exit {rc}); the record is kept"
        return f"the report: {out / 'report.html'}"

    def close(self):
        for n in self.nodes:
            if n.thread.is_alive():
                n.h.request_stop()
        for n in self.nodes:
            n.thread.join(timeout=60)
        if self.recorder is not None:
            self.recorder.stop()
        if self.broker is not None:
            self.broker.stop()


class _Keys:
    """The terminal in a raw-ish mode: single key presses, no echo, Ctrl-C as a key (not
    a signal: the run stops in order)."""

    def __init__(self):
        import termios

        self.fd = sys.stdin.fileno()
        self.saved = termios.tcgetattr(self.fd)
        mode = termios.tcgetattr(self.fd)
        mode[3] &= ~(termios.ICANON | termios.ECHO | termios.ISIG)
        mode[6][termios.VMIN] = 1
        mode[6][termios.VTIME] = 0
        termios.tcsetattr(self.fd, termios.TCSANOW, mode)

    def read(self, timeout_s):
        r, _, _ = select.select([self.fd], [], [], max(0.0, timeout_s))
        if not r:
            return ""
        return os.read(self.fd, 64).decode("utf-8", "replace")

    def restore(self):
        import termios

        termios.tcsetattr(self.fd, termios.TCSADRAIN, self.saved)


def build_parser():
    ap = argparse.ArgumentParser(
        description="Run the gateway firmware on the host board against the plant model "
                    "and a broker: a live view, faults injected while it runs, the run's "
                    "record and its report.")
    ap.add_argument("scenario", nargs="?", default=str(DEFAULT_SCENARIO),
                    help="scenario file (default: scenarios/sim_day.json, a simulated day "
                         "with a sink outage and a sensor fault)")
    ap.add_argument("--nodes", type=int, default=1, metavar="N",
                    help=f"a site of N gateways on one broker (1..{MAX_NODES})")
    ap.add_argument("--broker", metavar="HOST:PORT",
                    help="publish to this broker (default: the scenario configuration's, "
                         "else one started for the run: mosquitto, else amqtt)")
    ap.add_argument("--inject", action="append", metavar="T:COMMAND[:ARG][@NODE]",
                    help="a fault at simulated time T (5400, 90m, 1.5h, 09:30), e.g. "
                         "3600:sink_lost, 2h:sensor_open:supply@2, 5000:broker_down; "
                         "commands: " + ", ".join(COMMANDS))
    ap.add_argument("--duration", metavar="T",
                    help="simulate T instead of the scenario's duration (e.g. 30m)")
    ap.add_argument("--out", metavar="DIR",
                    help="the run's folder: record, summaries, report, node flash and "
                         "console (default: out/sim/<scenario>-<time>)")
    ap.add_argument("--view", choices=("auto", "live", "plain"), default="auto",
                    help="live view (a terminal) or plain progress lines (default: by "
                         "stdout)")
    ap.add_argument("--mpy", action=argparse.BooleanOptionalAction, default=True,
                    help="run precompiled modules, as a device runs frozen code "
                         "(default; --no-mpy: from source)")
    ap.add_argument("--no-report", action="store_true", help="write the record only")
    ap.add_argument("--no-pdf", action="store_true",
                    help="the report without its PDF (headless Chromium)")
    ap.add_argument("--record-wait", type=float, default=20.0, metavar="S",
                    help=argparse.SUPPRESS)  # how long the end waits for the record (tests)
    return ap


def main(argv=None):
    args = build_parser().parse_args(argv)
    if not 1 <= args.nodes <= MAX_NODES:
        print(f"heatgw sim: --nodes {args.nodes}: 1..{MAX_NODES}", file=sys.stderr)
        return 2
    sim = Sim(args)

    def _stop(signum, frame):
        sim.request_stop(signal.Signals(signum).name)

    old = {s: signal.signal(s, _stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            sim.setup()
        except UsageError as e:
            print(f"heatgw sim: {e}", file=sys.stderr)
            return 2
        except Exception as e:  # noqa: BLE001 - a broker or a node that cannot start
            print(f"heatgw sim: cannot start: {e}", file=sys.stderr)
            return 1
        sim.run()
        for line in sim.finish():
            print(line, flush=True)
        print(sim.report(), flush=True)
        for n in sim.nodes:
            if n.error:
                print(f"heatgw sim: {n.name} FAILED:\n{n.error}", file=sys.stderr)
        return 1 if any(n.error for n in sim.nodes) else 0
    finally:
        sim.close()
        for s, h in old.items():
            signal.signal(s, h)


if __name__ == "__main__":
    sys.exit(main())
