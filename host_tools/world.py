"""What the node's chips and pins read: the served world (CPython).

The plant's temperatures (or a scenario's override wave) as RTD resistances, injected
sensor faults, the board inputs, and the flow meter's pulses due before the horizon (each
pulse low for the meter's pulse width: `pulse_ms`, at most half the period). It remembers
what it last served, so each step sends only what changed. The flow through the meter is
the plant's, or a `flow` event's override (a burst above the meter's rating).

What calibration corrects (a scenario's `sensor_model`, host_tools/sensors.py; ideal
without one): each sensor's class tolerance and 2-wire leads in the resistance served,
each chip's fitted reference resistor and noise (`R` lines, once per boot). A technician's
physical steps take a sensor out of the pipe: `rtd_resistor` (a precision resistor at its
terminals), `rtd_bath` (the sensor in a bath), `rtd_installed` (back in the pipe).
"""

import math
from collections import deque

from host_tools import linkcodec
from host_tools.sensors import IDEAL, pt_ohm, sensor_models

# scenario events that change the world (the harness handles the others)
EVENTS = ("sink_lost", "sink_restored", "pump", "input", "sensor_fault", "override",
          "valve_stuck", "rtd_resistor", "rtd_bath", "rtd_installed", "flow")
PULSE_MS = 5  # the meter's pulse width (low time) unless the scenario says (`pulse_ms`)
EDGES_KEPT_MS = 10_000  # the pulse edges kept for the oracle: more than two control ticks


class World:
    def __init__(self, plant, cfg, scenario):
        self.plant = plant
        self.inputs = {"sink_available": True, "maintenance": False, "trip_reset": False,
                       "valve_at_reuse": False}
        self.inputs.update(scenario.get("inputs", {}))
        self.pump_on = True  # the building pump (plant input)
        self.valve_stuck = False  # the diverting valve is seized (plant input)
        self.faults = {}  # rtd -> injected fault
        self.overrides = {}  # rtd -> wave dict (served instead of the plant)
        self.models = sensor_models(scenario.get("sensor_model"), cfg.get("sensors") or {})
        self.attached = {}  # rtd -> ("resistor", ohm) / ("bath", °C): out of the pipe
        flow = cfg.get("flow") or {}
        # a pulse meter is configured: its pulses are served (a Modbus meter has none)
        self.metered = bool(flow) and flow.get("type", "pulse") == "pulse"
        ppl = flow.get("pulses_per_litre")
        self.lpp_l = 1.0 / ppl if ppl else flow.get("litres_per_pulse") or 0.1
        self.pulse_ms = int(scenario.get("pulse_ms", PULSE_MS))
        self.volume_l = 0.0  # through the meter up to flow_vt
        self.flow_vt = 0
        self.flow_lps = 0.0  # constant from flow_vt to the next plant step or flow event
        self.flow_override_m3h = None  # a `flow` event's meter flow instead of the plant's
        self.flow_change_vt = 0  # when flow_lps last changed
        self.pulses = 0  # pulses the meter gave up to the last update_pulses
        self.edge_vt = None  # the last pulse edge
        self.sent = 0  # pulses sent to the node (the next one sent is sent + 1)
        self.sent_lists = deque()  # the edges of the last steps (the oracle's flow windows)
        self.served = {}  # what the node was last told
        self.lines_dirty = True

    def forget_served(self):
        """A new boot: the node knows nothing yet."""
        self.served = {}
        self.lines_dirty = True

    # -- plant side --------------------------------------------------------------------

    def plant_stepped(self):
        self._set_flow()
        self.lines_dirty = True

    def _set_flow(self):
        m3h = self.flow_override_m3h
        lps = (self.plant.flow_m3h if m3h is None else m3h) / 3.6
        if lps != self.flow_lps:
            self.flow_lps = lps
            self.flow_change_vt = self.flow_vt

    def flow_to(self, vt):
        self.update_pulses(vt)
        self.volume_l += self.flow_lps * (vt - self.flow_vt) / 1000.0
        self.flow_vt = vt

    def apply_event(self, ev, vt=None):
        """Apply a scenario event of EVENTS at vt (the harness's time)."""
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
        elif do in ("rtd_resistor", "rtd_bath", "rtd_installed"):
            names = ev["sensors"]
            for name in names:
                if name not in self.models:
                    raise ValueError(f"{do}: {name!r} is not a configured sensor")
                if do == "rtd_installed":
                    self.attached.pop(name, None)
                elif do == "rtd_resistor":
                    self.attached[name] = ("resistor", float(ev["ohm"]))
                else:
                    self.attached[name] = ("bath", float(ev["temp_c"]))
        elif do == "flow":  # the meter's flow: `m3h`, or back to the plant's (`off`)
            self.flow_to(int(ev["t_s"] * 1000) if vt is None else vt)
            self.flow_override_m3h = None if ev.get("off") else float(ev["m3h"])
            self._set_flow()
        else:
            raise ValueError(f"not a world event: {do!r}")
        self.lines_dirty = True

    # -- served values -----------------------------------------------------------------

    def true_temps(self):
        p = self.plant
        return {"supply": p.supply_c, "return": p.return_c, "sink_return": p.sink_return_c,
                "it_coolant": p.it_coolant_c}

    def served_temps(self, vt):
        temps = self.true_temps()
        t_s = vt / 1000.0
        for name, w in self.overrides.items():
            phase = 2 * math.pi * (t_s - w["t0_s"]) / w["period_s"]
            if w.get("wave", "sine") == "square":
                temps[name] = w["mean_c"] + (w["amp_k"] if math.sin(phase) >= 0 else -w["amp_k"])
            else:
                temps[name] = w["mean_c"] + w["amp_k"] * math.sin(phase)
        return temps

    def update_pulses(self, vt):
        """Pulses the meter has given by vt (the flow rate is constant since flow_vt)."""
        vol = self.volume_l + self.flow_lps * (vt - self.flow_vt) / 1000.0
        n = int(vol / self.lpp_l + 1e-9)
        if n > self.pulses and self.flow_lps > 0:
            t_edge_ms = (n * self.lpp_l - self.volume_l) / self.flow_lps * 1000.0
            self.edge_vt = self.flow_vt + max(0, int(math.ceil(t_edge_ms - 1e-6)))
            self.pulses = n

    def edges_before(self, vt, horizon):
        """Pulse edges in [vt, horizon) not sent yet: the flow is constant until then."""
        out = []
        n = self.sent + 1
        lpp, vol, fvt, lps = self.lpp_l, self.volume_l, self.flow_vt, self.flow_lps
        while True:
            due_l = n * lpp - vol
            if due_l <= 1e-9:
                edge = fvt
            elif lps <= 0:
                break
            else:
                edge = fvt + int(math.ceil(due_l / lps * 1000.0 - 1e-6))
            if edge >= horizon:
                break
            out.append(edge if edge > vt else vt)
            n += 1
        self.sent = n - 1
        if out:  # kept for the oracle, a step's list at a time
            self.sent_lists.append(out)
            while self.sent_lists[0][-1] < out[-1] - EDGES_KEPT_MS:
                self.sent_lists.popleft()
        return out

    @property
    def edges(self):
        """The pulse edges sent lately (EDGES_KEPT_MS and more), in time order."""
        return [e for lst in self.sent_lists for e in lst]

    def low_ms(self):
        """The meter's pulse low time at the current flow: its width, at most half the
        period (at least 1 ms: the host's time is whole ms)."""
        if self.flow_lps <= 0:
            return self.pulse_ms
        half = int(self.lpp_l / self.flow_lps * 500.0)
        return max(1, min(self.pulse_ms, half))

    def level_at(self, vt):
        """The pulse input's level at vt (0 while a pulse is low)."""
        e = self.edge_vt
        return 0 if e is not None and e <= vt < e + self.low_ms() else 1

    def service_lines(self, vt, horizon):
        """Value lines for the node at vt: only what changed since the last step."""
        out = []
        if self.lines_dirty:
            self.lines_dirty = False
            self._value_lines(vt, out)
        if not self.metered:
            return out
        self.update_pulses(vt)
        level = "-"
        if ("p",) not in self.served:  # after a boot: the pulses while off never reach it
            self.served[("p",)] = True
            self.sent = self.pulses
            level = self.level_at(vt)
        edges = self.edges_before(vt, horizon)
        if edges or level != "-":
            out.append(linkcodec.pulses(level, self.low_ms(), edges))
        return out

    def bath_c(self):
        """The temperature of the bath the sensors out of the pipe are in (what the
        reference thermometer beside them reads); ValueError unless exactly one."""
        baths = {v for kind, v in self.attached.values() if kind == "bath"}
        if len(baths) != 1:
            raise ValueError(f"a reference reading needs one bath; sensors in {sorted(baths)}")
        return baths.pop()

    def terminal_ohm(self, name, t_c):
        """What the chip of sensor `name` measures while its pipe is at t_c."""
        model = self.models.get(name, IDEAL)
        kind, v = self.attached.get(name, ("pipe", t_c))
        if model is IDEAL:
            return v if kind == "resistor" else pt_ohm(v)
        return model.terminal_ohm(v if kind == "resistor" else model.element_ohm(v))

    def _value_lines(self, vt, out):
        for name, m in self.models.items():
            if m.r_ref_dev_pct or m.noise_lsb:
                chip = (m.r_ref_ohm, m.noise_lsb)
                if self.served.get(("c", name)) != chip:
                    self.served[("c", name)] = chip
                    out.append(linkcodec.chip(name, f"{chip[0]:.4f}", chip[1]))
        for name, t in self.served_temps(vt).items():
            r = f"{self.terminal_ohm(name, t):.4f}"
            if self.served.get(("r", name)) != r:
                self.served[("r", name)] = r
                out.append(linkcodec.rtd_ohm(name, r))
        for name, fault in self.faults.items():
            if self.served.get(("f", name)) != fault:
                self.served[("f", name)] = fault
                out.append(linkcodec.rtd_fault(name, fault))
        for name, on in self.inputs.items():
            if name == "valve_at_reuse":
                on = bool(self.plant.valve_at_reuse)
            # inputs are contacts to ground: active level 0
            level = "0" if on else "1"
            if self.served.get(("d", name)) != level:
                self.served[("d", name)] = level
                out.append(linkcodec.input_level(name, level))
