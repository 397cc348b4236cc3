"""What the node's chips and pins read: the served world (CPython).

The plant's temperatures (or a scenario's override wave) as RTD resistances, injected
sensor faults, the board inputs, and the flow meter's pulses with the edges due before
the horizon. It remembers what it last served, so each step sends only what changed.

What calibration corrects (a scenario's `sensor_model`, host_tools/sensors.py; ideal
without one): each sensor's class tolerance and 2-wire leads in the resistance served,
each chip's fitted reference resistor and noise (`R` lines, once per boot). A technician's
physical steps take a sensor out of the pipe: `rtd_resistor` (a precision resistor at its
terminals), `rtd_bath` (the sensor in a bath), `rtd_installed` (back in the pipe).

Analogue inputs (host_tools/ain.py): the valve's position feedback, the loop pressure and
tank level transmitters, served as the signal at each configured channel (`a` lines);
events `pressure` (the loop's fill pressure: `bar`, over `ramp_s`), `level` (`pct`) and
`analog_fault` (`input`: a configured input or "valve"; `fault`: open, high, none).
"""

import math

from host_tools import linkcodec
from host_tools.ain import Transmitters
from host_tools.sensors import IDEAL, pt_ohm, sensor_models

# scenario events that change the world (the harness handles the others)
EVENTS = ("sink_lost", "sink_restored", "pump", "input", "sensor_fault", "override",
          "valve_stuck", "rtd_resistor", "rtd_bath", "rtd_installed", "pressure", "level",
          "analog_fault")


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
        self.lpp_l = (cfg.get("flow") or {}).get("litres_per_pulse") or 0.1
        self.volume_l = 0.0  # through the meter up to flow_vt
        self.flow_vt = 0
        self.flow_lps = 0.0  # constant from flow_vt to the next plant step
        self.pulses = 0
        self.edge_vt = None  # the last pulse edge
        self.served = {}  # what the node was last told
        self.lines_dirty = True
        self.ain = Transmitters(cfg.get("analog"), scenario)  # analogue inputs

    def forget_served(self):
        """A new boot: the node knows nothing yet."""
        self.served = {}
        self.lines_dirty = True

    # -- plant side --------------------------------------------------------------------

    def plant_stepped(self):
        self.flow_lps = self.plant.flow_m3h / 3.6
        self.lines_dirty = True

    def flow_to(self, vt):
        self.update_pulses(vt)
        self.volume_l += self.flow_lps * (vt - self.flow_vt) / 1000.0
        self.flow_vt = vt

    def apply_event(self, ev):
        """Apply a scenario event of EVENTS."""
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
        elif do == "pressure":
            self.plant.set_fill(float(ev["bar"]), float(ev.get("ramp_s", 0)))
        elif do == "level":
            self.plant.tank_level_pct = float(ev["pct"])
        elif do == "analog_fault":
            if ev["input"] not in self.ain.items:
                raise ValueError(f"analog_fault: {ev['input']!r} is not a configured input")
            if ev.get("fault", "open") not in ("open", "high", "none"):
                raise ValueError(f"analog_fault: fault {ev['fault']!r}: open, high or none")
            self.ain.faults[ev["input"]] = ev.get("fault", "open")
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
        """Pulse edges in (vt, horizon): the flow is constant until the next step."""
        out = []
        if self.flow_lps <= 0:
            return out
        n = self.pulses
        while True:
            n += 1
            t_ms = (n * self.lpp_l - self.volume_l) / self.flow_lps * 1000.0
            edge = self.flow_vt + max(0, int(math.ceil(t_ms - 1e-6)))
            if edge >= horizon:
                return out
            if edge > vt:
                out.append(edge)

    def service_lines(self, vt, horizon):
        """Value lines for the node at vt: only what changed since the last step."""
        out = []
        if self.lines_dirty:
            self.lines_dirty = False
            self._value_lines(vt, out)
        self.update_pulses(vt)
        edges = self.edges_before(vt, horizon)
        if edges or self.served.get(("p",)) != (self.pulses, self.edge_vt):
            self.served[("p",)] = (self.pulses, self.edge_vt)
            out.append(linkcodec.pulses(self.pulses, self.edge_vt, edges))
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
        for name in self.ain.items:
            kind, x = self.ain.signal(name, self.plant)
            ch = self.ain.channel(name)
            sig = (kind, x, self.ain.noise_lsb)
            if self.served.get(("a", ch)) != sig:
                self.served[("a", ch)] = sig
                out.append(linkcodec.analog(ch, kind, x, self.ain.noise_lsb))
        for name, on in self.inputs.items():
            if name == "valve_at_reuse":
                on = bool(self.plant.valve_at_reuse)
            # inputs are contacts to ground: active level 0
            level = "0" if on else "1"
            if self.served.get(("d", name)) != level:
                self.served[("d", name)] = level
                out.append(linkcodec.input_level(name, level))
