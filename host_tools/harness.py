"""Run the gateway firmware on the host board against the simulated plant, in lockstep.

The harness owns virtual time, the plant (host_tools/plant.py), the relays' physical
state, the watchdog and the power. The node is the real application on the MicroPython
unix port (boards/host/node.py: boot.py then main.py); it talks to the harness over a
loopback socket (protocol in boards/host/link.py) and cannot tell it is not on a chip:
it reads emulated MAX31865 chips whose resistances come from the plant, a pulse input
whose pulses are the plant's flow, and board-level inputs the scenario drives.

Everything the summary says about *when* a trip condition appeared is computed here from
the values the harness served (quantised as the chip quantises them), never reported by
the node. The plant's true delivered heat comes from host_tools/trueheat.py (IAPWS-IF97).

    python -m host_tools.harness scenarios/sink_lost.json --out result.json
"""

import argparse
import json
import math
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from host_tools.paths import REPO, micropypath, micropython_cmd
from host_tools.plant import Plant, PlantParams
from host_tools.trueheat import true_heat_kwh

R_REF_OHM = 4300.0  # boards/host: the emulated converters' reference resistor
_CVD_A = 3.9083e-3
_CVD_B = -5.775e-7
TICK0_BEFORE_WRAP_MS = 60_000  # node ticks start 1 min before the 2**30 wrap
DEFAULT_STEP_S = 5  # plant step: its time constants are >= 15 min, the node still ticks 1 s
REBOOT_MS = 1_000  # virtual time from reset/power-on until the node runs boot.py
REAL_TIMEOUT_S = 60.0  # a node that says nothing this long (real time) is broken
HANG_TIMEOUT_S = 3.0  # after an injected hang: real seconds before the watchdog "fires"

DEFAULT_CONFIG = {
    "version": 1,
    "node_id": "heatgw-sim",
    "sensors": {
        name: {"r0_ohm": 1000, "wires": 4, "offset_k": 0.0, "min_c": 0.0, "max_c": 120.0,
               "critical": name in ("sink_return", "it_coolant")}
        for name in ("supply", "return", "sink_return", "it_coolant")
    },
    "flow": {"type": "pulse", "litres_per_pulse": 0.1, "max_m3h": 15.0, "critical": True},
    "meter": {"fluid": "water", "mass_fraction": 0.0, "meter_in_return": True,
              "cutoff_k": 0.2},
    "control": {
        "tick_ms": 1000,
        "sink_return_max_c": 40.0, "sink_return_hyst_k": 2.0,
        "it_coolant_max_c": 46.0, "it_coolant_hyst_k": 2.0,
        "sink_flow_min_m3h": 3.0, "sink_flow_hyst_m3h": 0.5,
        "sink_signal": True,
        "stale_s": 5,
        "valve_travel_s": 45,
        "recover_s": 120,
        "min_dwell_s": 600,
    },
    "persist": {"interval_s": 300},
    "supervisor": {"watchdog_ms": 5000, "stall_s": 3},
}


# -- sensors as the chip sees them -------------------------------------------------------

def pt_ohm(t_c, r0=1000.0):
    """IEC 60751 resistance (t >= 0 °C branch; the loops never go below freezing)."""
    return r0 * (1.0 + _CVD_A * t_c + _CVD_B * t_c * t_c)


def pt_temp_c(r_ohm, r0=1000.0):
    ratio = r_ohm / r0
    return (-_CVD_A + math.sqrt(_CVD_A * _CVD_A - 4 * _CVD_B * (1.0 - ratio))) / (2 * _CVD_B)


def seen_temp_c(t_c, r0=1000.0):
    """The temperature a MAX31865 reports for a true t_c (nearest 15-bit code)."""
    code = int(pt_ohm(t_c, r0) * 32768 / R_REF_OHM + 0.5)
    return pt_temp_c(code * R_REF_OHM / 32768, r0)


# -- scenario --------------------------------------------------------------------------

def deep_merge(base, over):
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


class Profile:
    """Piecewise-linear profile from [[t_s, value], ...]; `repeat_s` makes it periodic."""

    def __init__(self, points, repeat_s=None):
        if isinstance(points, (int, float)):
            points = [[0, points]]
        self.points = sorted((float(t), float(v)) for t, v in points)
        self.repeat_s = repeat_s

    def __call__(self, t_s):
        if self.repeat_s:
            t_s %= self.repeat_s
        pts = self.points
        if t_s <= pts[0][0]:
            return pts[0][1]
        for (t0, v0), (t1, v1) in zip(pts, pts[1:], strict=False):
            if t_s < t1:
                return v0 + (v1 - v0) * (t_s - t0) / (t1 - t0)
        return pts[-1][1]


def load_scenario(path):
    sc = json.loads(Path(path).read_text())
    if not isinstance(sc, dict) or "duration_s" not in sc:
        raise ValueError(f"{path}: a scenario is an object with at least duration_s")
    sc.setdefault("name", Path(path).stem)
    sc["events"] = expand_events(sc.get("events", []))
    return sc


def expand_events(events):
    """A `power_cut_series` event stands for `count` power cuts `every_s` apart, cycling
    through the lists `at_flash_op` (None: between writes) and `torn_bytes`."""
    out = []
    for ev in events:
        if ev.get("do") != "power_cut_series":
            out.append(ev)
            continue
        ops = ev.get("at_flash_op", [None])
        torn = ev.get("torn_bytes", [0])
        for i in range(int(ev["count"])):
            out.append({"t_s": ev["t_s"] + i * ev["every_s"], "do": "power_cut",
                        "off_s": ev.get("off_s", 2), "at_flash_op": ops[i % len(ops)],
                        "torn_bytes": torn[i % len(torn)]})
    return out


# -- the node process ------------------------------------------------------------------

class NodeGone(Exception):
    pass


class Node:
    """One run of the firmware process, from reset to power-off."""

    def __init__(self, harness):
        self.h = harness
        env = dict(os.environ)
        env["MICROPYPATH"] = harness.micropypath
        env["HEATGW_LINK"] = f"127.0.0.1:{harness.port}"
        env["HEATGW_FLASH"] = str(harness.flash_path)
        self.proc = subprocess.Popen(
            # -m: the module path decides (precompiled first when asked), not the
            # script's own folder
            [*micropython_cmd(), "-m", "node"],
            cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=harness.console,
            stderr=subprocess.STDOUT,
        )
        harness.listener.settimeout(REAL_TIMEOUT_S)
        try:
            self.sock, _ = harness.listener.accept()
        except TimeoutError as e:
            self.proc.kill()
            raise RuntimeError("node did not connect; see the console log") from e
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.settimeout(REAL_TIMEOUT_S)
        self.rfile = self.sock.makefile("rb")
        self.wdt_timeout_ms = None
        self.last_feed_vt = None

    def readline(self, timeout_s):
        self.sock.settimeout(timeout_s)
        try:
            line = self.rfile.readline()
        except TimeoutError:
            return None
        if not line:
            raise NodeGone(f"node exited with {self.proc.wait()}")
        return line.decode().rstrip("\n")

    def send(self, text):
        try:
            self.sock.sendall(text.encode())
        except OSError as e:
            raise NodeGone(str(e)) from e

    def kill(self):
        try:
            self.proc.kill()
        except ProcessLookupError:
            pass
        self.proc.wait()
        self.rfile.close()
        self.sock.close()


# -- the harness -----------------------------------------------------------------------

class Harness:
    def __init__(self, scenario, workdir, *, mpy=False):
        self.sc = scenario
        self.mpy = mpy
        extra = []
        if mpy:  # precompiled modules first (host_tools.build_mpy builds them)
            from host_tools.build_mpy import build, host_mpy_dir

            if not build(["host"]):
                raise RuntimeError("mpy-cross failed for the host board")
            extra.append(host_mpy_dir())
        self.micropypath = micropypath("host", extra)
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.cfg = deep_merge(DEFAULT_CONFIG, scenario.get("config", {}))
        self.ctl = self.cfg["control"]
        self.tick_ms = self.ctl["tick_ms"]
        self.step_ms = int(scenario.get("step_s", DEFAULT_STEP_S) * 1000)
        self.end_vt = int(scenario["duration_s"] * 1000)
        self.params = PlantParams(**scenario.get("plant", {}))
        self.plant = Plant(self.params, **scenario.get("initial", {}))
        self.load = Profile(scenario.get("load_kw", 100.0), scenario.get("repeat_s"))
        self.demand = Profile(scenario.get("demand_kw", 100.0), scenario.get("repeat_s"))
        self.events = sorted(scenario.get("events", []), key=lambda e: e["t_s"])
        self.utc0 = scenario.get("start_utc", 1_790_000_000)
        self.flash_path = self.workdir / "flash.bin"
        self.console_path = self.workdir / "console.log"
        self.vt = 0
        # physical state the harness owns
        self.coils = {"reuse": False, "cooler_inhibit": False}
        self.inputs = {"sink_available": True, "maintenance": False, "trip_reset": False,
                       "valve_at_reuse": False}
        self.inputs.update(scenario.get("inputs", {}))
        self.pump_on = True
        self.valve_stuck = False
        self.faults = {}  # rtd -> injected fault
        self.overrides = {}  # rtd -> wave dict (served instead of the plant)
        self.lpp_l = self.cfg["flow"]["litres_per_pulse"] if self.cfg.get("flow") else 0.1
        self.volume_l = 0.0
        self.pulses = 0
        self.edge_vt = None
        self.flow_lps = 0.0
        self.served = {}  # what the node was last told
        # results
        self.transitions = []
        self.conditions = {}  # reason -> onset vt (active conditions, harness view)
        self.condition_log = []
        self._cond_state = {}
        self.node_events = []
        self.saves = []
        self.restores = []
        self.boots = []
        self.cuts = []
        self.peak_heap = 0
        self.heap_log = []  # (t_s, peak, sample point, min largest free) as they change
        self.heap_by_boot = {}  # boot number -> the node's last heap record in it
        self.flash = None
        self.last_status = None
        self.final_totals = None
        self.node = None
        self._pending_reason = None
        self._next_step_vt = 0
        self._valve_disagree_vt = None
        self._inflight = None
        self._last_saved = None
        self._awaiting_restore = None
        self._horizon = 0
        self._cond_dirty = True
        self._lines_dirty = True

    # -- profiles and served values ----------------------------------------------------

    def _true_temps(self):
        p = self.plant
        return {"supply": p.supply_c, "return": p.return_c, "sink_return": p.sink_return_c,
                "it_coolant": p.it_coolant_c}

    def _served_temps(self):
        temps = self._true_temps()
        t_s = self.vt / 1000.0
        for name, w in self.overrides.items():
            phase = 2 * math.pi * (t_s - w["t0_s"]) / w["period_s"]
            if w.get("wave", "sine") == "square":
                temps[name] = w["mean_c"] + (w["amp_k"] if math.sin(phase) >= 0 else -w["amp_k"])
            else:
                temps[name] = w["mean_c"] + w["amp_k"] * math.sin(phase)
        return temps

    def _update_pulses(self, vt):
        """Pulses the meter has given by vt (the flow rate is constant since _flow_vt)."""
        vol = self.volume_l + self.flow_lps * (vt - self._flow_vt) / 1000.0
        n = int(vol / self.lpp_l + 1e-9)
        if n > self.pulses and self.flow_lps > 0:
            t_edge_ms = (n * self.lpp_l - self.volume_l) / self.flow_lps * 1000.0
            self.edge_vt = self._flow_vt + max(0, int(math.ceil(t_edge_ms - 1e-6)))
            self.pulses = n

    def _flow_to(self, vt):
        self._update_pulses(vt)
        self.volume_l += self.flow_lps * (vt - self._flow_vt) / 1000.0
        self._flow_vt = vt

    def _service_lines(self):
        """Value lines for the node: only what changed since the last step."""
        out = []
        if self._lines_dirty:
            self._lines_dirty = False
            self._value_lines(out)
        self._update_pulses(self.vt)
        edges = self._edges_before(self._horizon)
        if edges or self.served.get(("p",)) != (self.pulses, self.edge_vt):
            self.served[("p",)] = (self.pulses, self.edge_vt)
            out.append(f"p {self.pulses} {'-' if self.edge_vt is None else self.edge_vt}"
                       f"{''.join(f' {e}' for e in edges)}\n")
        return out

    def _edges_before(self, horizon):
        """Pulse edges in (vt, horizon): the flow is constant until the next step."""
        out = []
        if self.flow_lps <= 0:
            return out
        n = self.pulses
        while True:
            n += 1
            t_ms = (n * self.lpp_l - self.volume_l) / self.flow_lps * 1000.0
            edge = self._flow_vt + max(0, int(math.ceil(t_ms - 1e-6)))
            if edge >= horizon:
                return out
            if edge > self.vt:
                out.append(edge)

    def _horizon_now(self):
        """Until when nothing served changes: next plant step, event, watchdog, end."""
        h = min(self._next_step_vt, self.end_vt)
        if self.events:
            h = min(h, int(self.events[0]["t_s"] * 1000))
        expiry = self._wdt_expiry()
        if expiry is not None:
            h = min(h, expiry)
        return max(h, self.vt)

    def _wdt_expiry(self):
        """When the node's watchdog fires unless fed again (None: not started)."""
        node = self.node
        if node is None or node.wdt_timeout_ms is None:
            return None
        return node.last_feed_vt + node.wdt_timeout_ms

    def _value_lines(self, out):
        for name, t in self._served_temps().items():
            r = f"{pt_ohm(t):.4f}"
            if self.served.get(("r", name)) != r:
                self.served[("r", name)] = r
                out.append(f"r {name} {r}\n")
        for name, fault in self.faults.items():
            if self.served.get(("f", name)) != fault:
                self.served[("f", name)] = fault
                out.append(f"f {name} {fault}\n")
        for name, on in self.inputs.items():
            if name == "valve_at_reuse":
                on = bool(self.plant.valve_at_reuse)
            # inputs are contacts to ground: active level 0
            level = "0" if on else "1"
            if self.served.get(("d", name)) != level:
                self.served[("d", name)] = level
                out.append(f"d {name} {level}\n")

    # -- conditions (the harness's own view) -------------------------------------------

    def _set_condition(self, reason, active, onset_vt=None):
        if active and reason not in self.conditions:
            self.conditions[reason] = self.vt if onset_vt is None else onset_vt
            self.condition_log.append({"reason": reason,
                                       "t_s": self.conditions[reason] / 1000.0,
                                       "reuse_at_onset": self.coils["reuse"]})
        elif not active and reason in self.conditions:
            del self.conditions[reason]
            for c in reversed(self.condition_log):
                if c["reason"] == reason and "cleared_t_s" not in c:
                    c["cleared_t_s"] = self.vt / 1000.0
                    break

    def _hyst(self, reason, value, limit, hyst, above):
        was = self._cond_state.get(reason, False)
        if above:
            now = value > limit if not was else value >= limit - hyst
        else:
            now = value < limit if not was else value <= limit + hyst
        self._cond_state[reason] = now
        self._set_condition(reason, now)

    def _evaluate_conditions(self):
        ctl = self.ctl
        if not self._cond_dirty:
            self._timed_conditions(ctl)
            return
        self._cond_dirty = False
        temps = self._served_temps()
        sensors = self.cfg.get("sensors") or {}
        seen = {n: seen_temp_c(t) for n, t in temps.items()}
        if "sink_return" in sensors and self.faults.get("sink_return", "none") == "none":
            self._hyst("sink_return_high", seen["sink_return"], ctl["sink_return_max_c"],
                       ctl["sink_return_hyst_k"], True)
        if "it_coolant" in sensors and self.faults.get("it_coolant", "none") == "none":
            self._hyst("it_coolant_high", seen["it_coolant"], ctl["it_coolant_max_c"],
                       ctl["it_coolant_hyst_k"], True)
        for name, sc in sensors.items():
            if sc.get("critical"):
                f = self.faults.get(name, "none")
                self._set_condition(f"sensor_fault:{name}", f != "none")
        if ctl.get("sink_signal"):
            self._set_condition("sink_unavailable", not self.inputs["sink_available"])
        self._set_condition("maintenance", bool(self.inputs["maintenance"]))
        self._timed_conditions(ctl)

    def _timed_conditions(self, ctl):
        """Conditions that appear with the passage of time alone (no pulse for a while,
        valve travel overdue)."""
        if self.cfg.get("flow"):
            q_min_lps = ctl["sink_flow_min_m3h"] / 3.6
            low = self.flow_lps * 3.6 < ctl["sink_flow_min_m3h"]
            if low and "sink_flow_low" not in self.conditions:
                # visible once no pulse came for one pulse at the minimum flow
                since = self.edge_vt if self.edge_vt is not None else 0
                onset = max(self.vt, since + int(math.ceil(self.lpp_l / q_min_lps * 1000)))
                if onset <= self.vt:
                    self._set_condition("sink_flow_low", True, onset)
            elif not low:
                self._set_condition("sink_flow_low", False)
        # valve: command (reuse coil) vs end switch, beyond the travel time
        if bool(self.plant.valve_at_reuse) == self.coils["reuse"]:
            self._valve_disagree_vt = None
            self._set_condition("valve_stuck", False)
        else:
            if self._valve_disagree_vt is None:
                self._valve_disagree_vt = self.vt
            due = self._valve_disagree_vt + ctl["valve_travel_s"] * 1000
            if self.vt >= due:
                self._set_condition("valve_stuck", True, due)

    # -- relays ------------------------------------------------------------------------

    def _coil(self, name, energised, reason=None):
        if self.coils.get(name) == energised:
            return
        self.coils[name] = energised
        if energised and self.boots and "first_energise_t_s" not in self.boots[-1]:
            self.boots[-1]["first_energise_t_s"] = self.vt / 1000.0
        if name != "reuse":
            return
        state = "reuse" if energised else "bypass"
        tr = {"t_s": self.vt / 1000.0, "state": state, "reason": reason}
        if state == "bypass":
            onsets = [v for v in self.conditions.values()]
            tr["condition_t_s"] = min(onsets) / 1000.0 if onsets else None
            tr["conditions"] = sorted(self.conditions)
        self.transitions.append(tr)
        if reason is None:
            self._pending_reason = tr

    def _all_coils_off(self, reason):
        # relay inputs float: the modules' pull-ups hold every coil off
        for name in list(self.coils):
            self._coil(name, False, reason if name == "reuse" else None)

    # -- node messages -----------------------------------------------------------------

    def _at(self, vt_text):
        """A node message stamped vt: bring the harness to that instant first."""
        vt = int(vt_text)
        if vt > self.vt:
            self._advance_to(vt)

    def _handle(self, line):
        op = line[:1]
        if op == "P":
            _, name, level, vt = line.split()
            self._at(vt)
            self._coil(name, level == "0")  # active-low modules
        elif op == "F":
            self._at(line.split()[1])
            self.node.last_feed_vt = self.vt
        elif op == "W":
            _, timeout, vt = line.split()
            self._at(vt)
            self.node.wdt_timeout_ms = int(timeout)
            self.node.last_feed_vt = self.vt
        elif op == "O":
            _, kind, vt, payload = line.split(" ", 3)
            self._at(vt)
            self._record(kind, json.loads(payload))
        elif op == "X":
            _, vt, payload = line.split(" ", 2)
            self._at(vt)
            self.cuts[-1]["info"] = json.loads(payload)
            self._cut_landed(self.cuts[-1])
            return "cut"
        elif op == "I":
            arg = line.split()[1]
            return None if arg == "-" else int(arg)
        elif op == "H":
            pass
        else:
            raise RuntimeError(f"node sent {line!r}")
        return "more"

    def _record(self, kind, rec):
        t_s = self.vt / 1000.0
        if kind == "event":
            rec["harness_t_s"] = t_s
            self.node_events.append(rec)
            kind = rec.get("kind")
            tr = self._pending_reason
            if tr is not None and kind == "state":
                if tr["state"] == rec.get("state"):
                    tr["reason"] = rec.get("reason")
                    tr["node_reasons"] = rec.get("reasons")
                self._pending_reason = None
            elif tr is not None and kind == "crash" and tr["state"] == "bypass":
                tr["reason"] = f"crash:{rec.get('task')}"  # the task's guard dropped it
                self._pending_reason = None
        elif kind == "saving":
            self._inflight = {"seq": rec["seq"], "totals": rec["totals"]}
        elif kind == "saved":
            self._inflight = None
            self.saves.append({"t_s": t_s, "seq": rec["seq"], "why": rec.get("why"),
                               "totals": rec["totals"]})
            self._last_saved = {"seq": rec["seq"], "totals": rec["totals"]}
            if rec.get("why") == "shutdown":
                self.final_totals = rec["totals"]
        elif kind == "restored":
            self.restores.append({"t_s": t_s, **rec})
            cut = self._awaiting_restore
            if cut is not None:
                self._awaiting_restore = None
                got = {"seq": rec["seq"], "totals": rec["totals"]}
                cut["restored"] = got
                # Equal to the last completed save; or, when the cut fell on the very
                # last flash operation of a save and it landed, to that save (it is
                # then complete on flash, just not acknowledged).
                cut["restored_is"] = ("last_saved" if got == cut["last_saved"] else
                                      "inflight" if got == cut["inflight"] else "other")
        elif kind == "flash":
            self.flash = rec
        elif kind == "heap":  # heatgw.heapmon: this boot's figures so far
            self.peak_heap = max(self.peak_heap, rec["peak_heap_bytes"])
            self.heap_log.append((t_s, rec["peak_heap_bytes"], rec.get("peak_at"),
                                  rec.get("min_largest_free_bytes")))
            self.heap_by_boot[len(self.boots)] = rec
        elif kind == "status":
            self.last_status = rec
            self.peak_heap = max(self.peak_heap, rec.get("peak_heap_bytes", 0))

    # -- time --------------------------------------------------------------------------

    def _step_plant(self):
        """At a step boundary B = vt: integrate [B - step, B) with the relays as they are,
        then serve the plant's state at B until the next boundary."""
        dt_s = self.step_ms / 1000.0
        t0_s = (self.vt - self.step_ms) / 1000.0
        self._flow_to(self.vt)
        self.plant.step(dt_s, load_kw=self.load(t0_s), demand_kw=self.demand(t0_s),
                        reuse_relay=self.coils["reuse"],
                        cooler_inhibit_relay=self.coils["cooler_inhibit"],
                        building_pump_on=self.pump_on, valve_stuck=self.valve_stuck)
        self.flow_lps = self.plant.flow_m3h / 3.6
        self._next_step_vt += self.step_ms
        self._mark_dirty()

    def _mark_dirty(self):
        self._cond_dirty = True
        self._lines_dirty = True

    def _advance_to(self, vt):
        """Move time to vt: step the plant on its grid, apply scenario events."""
        while True:
            self.vt = max(self.vt, min(self._next_step_vt, vt))
            if self.vt == self._next_step_vt:
                self._step_plant()
            while self.events and int(self.events[0]["t_s"] * 1000) <= self.vt:
                self._apply_event(self.events.pop(0))
                self._mark_dirty()
            self._evaluate_conditions()
            if self.vt >= vt:
                return

    def _apply_event(self, ev):
        do = ev["do"]
        if do == "sink_lost":
            self.pump_on = False
            self.inputs["sink_available"] = False
        elif do == "sink_restored":
            self.pump_on = True
            self.inputs["sink_available"] = True
        elif do == "pump":
            self.pump_on = bool(ev["on"])
        elif do == "input":
            self.inputs[ev["name"]] = bool(ev["value"])
        elif do == "sensor_fault":
            self.faults[ev["sensor"]] = ev.get("fault", "open")
        elif do == "override":
            if ev.get("off"):
                self.overrides.pop(ev["sensor"], None)
            else:
                self.overrides[ev["sensor"]] = {**ev, "t0_s": ev["t_s"]}
        elif do == "valve_stuck":
            self.valve_stuck = bool(ev.get("stuck", True))
        elif do == "power_cut":
            self._pending_cut = ev
        elif do == "hang_control":
            self._pending_hang = True
            self._set_condition("control_hung", True)
        elif do == "bus_error":
            self._pending_bus_error = True
            self._set_condition("task_crash", True)
        elif do == "trip_reset":
            self.inputs["trip_reset"] = True
            self.events.append({"t_s": ev["t_s"] + ev.get("hold_s", 2), "do": "input",
                                "name": "trip_reset", "value": False})
            self.events.sort(key=lambda e: e["t_s"])
        else:
            raise ValueError(f"unknown scenario event {do!r}")

    # -- run ---------------------------------------------------------------------------

    def _provision(self):
        """Write config.json into the node's flash, as an installer's deploy would.
        Scenario keys: `config_text` writes that text verbatim (a broken file),
        `"config_file": null` writes none."""
        text = self.sc.get("config_text", json.dumps(self.cfg))
        if "config_file" in self.sc and self.sc["config_file"] is None:
            text = None
        code = "import board\nd = board.data_dir()\n"
        if text is not None:
            code += ("with open(d + '/config.json', 'w') as f:\n"
                     f"    f.write({json.dumps(text)})\n")
        if self.sc.get("safeboot_file"):
            code += "open(d + '/SAFEBOOT', 'w').close()\n"
        code += "print('provisioned')\n"
        env = dict(os.environ, MICROPYPATH=self.micropypath,
                   HEATGW_FLASH=str(self.flash_path))
        env.pop("HEATGW_LINK", None)
        out = subprocess.run([*micropython_cmd(), "-c", code], cwd=REPO, env=env,
                             capture_output=True, text=True, timeout=60, check=False)
        if "provisioned" not in out.stdout:
            raise RuntimeError(f"provisioning failed: {out.stdout}{out.stderr}")

    def _boot_node(self, cause):
        self.node = Node(self)
        self.served = {}
        self._lines_dirty = True
        line = self.node.readline(REAL_TIMEOUT_S)
        if line is None or not line.startswith("H"):
            raise RuntimeError(f"node said {line!r} instead of hello")
        tick0 = (1 << 30) - TICK0_BEFORE_WRAP_MS
        self._horizon = self._horizon_now()
        lines = [f"B {self.vt} {tick0} {1 if self.sc.get('safe_boot') else 0}\n",
                 f"A {self.vt} {self._horizon} {self.utc0 + self.vt // 1000}\n"]
        lines += self._service_lines()
        self.node.send("".join(lines) + ".\n")
        self.boots.append({"t_s": self.vt / 1000.0, "cause": cause,
                           "coils_at_boot": dict(self.coils)})

    def _power_off(self, reason):
        if self.node is not None:
            self.node.kill()
            self.node = None
        self._all_coils_off(reason)

    def run(self):
        wall0 = time.monotonic()
        if self.flash_path.exists():
            self.flash_path.unlink()
        self._provision()
        self._flow_vt = 0
        self._next_step_vt = self.step_ms
        self._pending_cut = None
        self._pending_hang = False
        self._pending_bus_error = False
        self._step_plant_first()
        self.console = open(self.console_path, "wb")
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(1)
        self.port = self.listener.getsockname()[1]
        try:
            self._boot_node("power_on")
            self._loop()
            self._shutdown_node()
        finally:
            if self.node is not None:
                self.node.kill()
            self.listener.close()
            self.console.close()
        return self._summary(time.monotonic() - wall0)

    def _step_plant_first(self):
        # served values for [0, step): the plant's initial state
        self.flow_lps = self.plant.flow_m3h / 3.6
        self._evaluate_conditions()

    def _loop(self):
        while self.vt < self.end_vt:
            if self.node is None:  # powered off: the plant runs on, relays safe
                self._advance_to(min(self._off_until, self.end_vt))
                if self.vt >= self._off_until:
                    self._boot_node(self._off_cause)
                continue
            timeout = HANG_TIMEOUT_S if self._hang_sent else REAL_TIMEOUT_S
            line = self.node.readline(timeout)
            if line is None:
                if not self._hang_sent:
                    raise RuntimeError("node stopped answering (real-time timeout)")
                self._watchdog_fires_after_hang()
                continue
            r = self._handle(line)
            if r == "more":
                continue
            if r == "cut":
                self.cuts[-1]["cut_vt"] = self.vt
                self._power_off("power_cut")
                self._off_until = self.vt + self._cut_off_ms
                self._off_cause = "power_cut"
                continue
            self._idle(r)

    _hang_sent = False
    _cut_off_ms = 0

    def _idle(self, deadline):
        node = self.node
        target = self._horizon_now()
        if deadline is not None:
            target = max(min(target, deadline), self.vt)
        expiry = self._wdt_expiry()
        if expiry is not None and expiry <= target:
            self._advance_to(expiry)
            self._reset("watchdog")
            return
        self._advance_to(target)
        if self._pending_cut is not None:
            ev, self._pending_cut = self._pending_cut, None
            self._cut_off_ms = int(ev.get("off_s", 10) * 1000)
            if ev.get("at_flash_op") is None:
                self.cuts.append({"t_s": self.vt / 1000.0, "at_flash_op": None,
                                  "saves_before": len(self.saves)})
                self._cut_landed(self.cuts[-1])
                self._power_off("power_cut")
                self._off_until = self.vt + self._cut_off_ms
                self._off_cause = "power_cut"
                return
            self.cuts.append({"t_s": self.vt / 1000.0, "at_flash_op": ev["at_flash_op"],
                              "torn_bytes": ev.get("torn_bytes", 0),
                              "saves_before": len(self.saves)})
            node.send(f"k {ev['at_flash_op']} {ev.get('torn_bytes', 0)}\n")
        if self._pending_bus_error:
            self._pending_bus_error = False
            node.send("e\n")
        if self._pending_hang:
            self._pending_hang = False
            self._hang_sent = True
            node.send("h\n")
        if self.vt >= self.end_vt:
            return
        self._horizon = self._horizon_now()
        node.send(f"A {self.vt} {self._horizon}\n" + "".join(self._service_lines()) + ".\n")

    def _cut_landed(self, cut):
        cut["cut_t_s"] = self.vt / 1000.0
        cut["inside_save"] = self._inflight is not None
        cut["inflight"] = self._inflight
        cut["last_saved"] = self._last_saved
        cut["restored"] = None
        self._inflight = None
        self._awaiting_restore = cut

    def _watchdog_fires_after_hang(self):
        node = self.node
        if node.wdt_timeout_ms is None:
            raise RuntimeError("node hung before starting its watchdog")
        expiry = max(self.vt, node.last_feed_vt + node.wdt_timeout_ms)
        self._advance_to(expiry)  # relays stay as the hung node left them
        self._hang_sent = False
        self._reset("watchdog")

    def _reset(self, cause):
        self._power_off(cause)
        self._set_condition("control_hung", False)
        self._set_condition("task_crash", False)
        self._off_until = self.vt + REBOOT_MS
        self._off_cause = cause

    def _shutdown_node(self):
        """Orderly stop at the end: the node saves its totals (s: KeyboardInterrupt)."""
        if self.node is None:
            return
        self.node.send(f"A {self.vt} {self.vt}\ns\n.\n")
        while True:
            try:
                line = self.node.readline(REAL_TIMEOUT_S)
            except NodeGone:
                break
            if line is None or line.startswith("I"):
                break  # stopped (a node with nothing to run just idles on)
            if line[:1] in "OP":
                self._handle(line)
        self.node.kill()
        self.node = None

    # -- summary -----------------------------------------------------------------------

    def _flash_summary(self):
        """Flash wear of the last boot's run (the node reports it at the orderly stop)."""
        f = self.flash
        if not f:
            return None
        days = max(self.end_vt, 1) / 86_400_000
        return {"ops": f["ops"], "erases": f["erases"],
                "bytes_programmed": f["bytes_programmed"],
                "erases_per_day": f["erases"] / days,
                "max_block_erases": max(f["block_erases"]),
                "saves": len(self.saves)}

    def _console_count(self, text):
        """Console lines naming text: also what the node could not count itself (boot)."""
        try:
            data = self.console_path.read_bytes()
        except OSError:
            return None
        return sum(1 for line in data.splitlines() if text.encode() in line)

    def _summary(self, wall_s):
        totals = self.final_totals or (self.saves[-1]["totals"] if self.saves else None)
        metered = None
        if totals:
            metered = {
                "energy_kwh": totals["energy_nj"] / 3.6e15,
                "volume_m3": totals["volume_ul"] / 1e9,
                "error_time_s": totals["error_ms"] / 1000.0,
                "low_dt_time_s": totals["low_dt_ms"] / 1000.0,
                "time_s": totals["time_ms"] / 1000.0,
            }
        heat = true_heat_kwh(self.plant.log)
        # Every condition that appeared while the reuse coil was energised, and when the
        # coil dropped after it (None: never, within the scenario).
        trips = []
        for c in self.condition_log:
            if not c["reuse_at_onset"]:
                continue
            off = next((tr["t_s"] for tr in self.transitions
                        if tr["state"] == "bypass" and tr["t_s"] >= c["t_s"]), None)
            trips.append({"reason": c["reason"], "condition_t_s": c["t_s"],
                          "bypass_t_s": off,
                          "latency_s": None if off is None else round(off - c["t_s"], 3)})
        summary = {
            "scenario": self.sc["name"],
            "duration_s": self.end_vt / 1000.0,
            "control_tick_s": self.tick_ms / 1000.0,
            "relay_transitions": self.transitions,
            "conditions": self.condition_log,
            "trips": trips,
            "metered": metered,
            "plant": {
                "heat_delivered_kwh": heat,
                "max_it_coolant_c": self.plant.max_it_coolant_c,
                "it_coolant_limit_c": self.params.it_coolant_limit_c,
                "volume_m3": self.plant.volume_m3_total,
            },
            "heat_error_pct": (100.0 * (metered["energy_kwh"] - heat) / heat
                               if metered and heat > 0 else None),
            "peak_heap_bytes": self.peak_heap,
            "min_largest_free_bytes": min(
                (r["min_largest_free_bytes"] for r in self.heap_by_boot.values()
                 if r.get("min_largest_free_bytes") is not None), default=None),
            "memory_errors": sum(r.get("memory_errors", 0) for r in self.heap_by_boot.values()),
            "console_memory_errors": self._console_count("MemoryError"),
            "heap_peaks": self.heap_log[-20:],
            "boots": self.boots,
            "saves": len(self.saves),
            "restores": self.restores,
            "power_cuts": self.cuts,
            "flash": self._flash_summary(),
            "node_events": len(self.node_events),
            "last_status": self.last_status,
            "wall_s": round(wall_s, 2),
            "console_log": str(self.console_path),
        }
        return summary


def run_scenario(path, out=None, workdir=None, *, mpy=False):
    sc = load_scenario(path)
    if workdir is None:
        workdir = tempfile.mkdtemp(prefix=f"heatgw-{sc['name']}-")
    h = Harness(sc, workdir, mpy=mpy)
    summary = h.run()
    if out:
        Path(out).write_text(json.dumps(summary, indent=1) + "\n")
    return summary, h


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("scenario")
    ap.add_argument("--out", help="write the JSON summary here")
    ap.add_argument("--workdir", help="flash image and console log (default: a temp dir)")
    ap.add_argument("--mpy", action="store_true",
                    help="run precompiled modules (build/mpy/host), as a device runs frozen code")
    args = ap.parse_args(argv)
    summary, _ = run_scenario(args.scenario, args.out, args.workdir, mpy=args.mpy)
    brief = {k: summary[k] for k in ("scenario", "metered", "plant", "heat_error_pct",
                                      "peak_heap_bytes", "min_largest_free_bytes",
                                      "memory_errors", "wall_s")}
    brief["relay_transitions"] = len(summary["relay_transitions"])
    print(json.dumps(brief, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
