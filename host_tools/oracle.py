"""The fail-safe oracle: when each trip condition appeared, from what the harness served.

Never from the node's reports: temperatures as the chip quantises them (host_tools.sensors),
faults and inputs as injected, the flow as pulses the node could have seen, the valve's
end switch against the reuse coil. The summary's `conditions` and `trips` come from here.
"""

import math
from bisect import bisect_right

from host_tools.config_check import SCHEMA  # (puts firmware/ on sys.path)
from host_tools.sensors import seen_temp_c

_FLOW_KEYS = SCHEMA["keys"]["flow"]["keys"]


def _flow_key(cfg, key):
    """flow.<key> of the node's configuration, or the schema's default."""
    v = cfg["flow"].get(key)
    return _FLOW_KEYS[key].get("default") if v is None else v


class Oracle:
    def __init__(self, cfg):
        self.cfg = cfg
        self.ctl = cfg["control"]
        self.conditions = {}  # reason -> onset vt (active conditions)
        self.log = []  # every condition: reason, t_s, reuse_at_onset, cleared_t_s
        self.dirty = True  # served values changed since the last full evaluation
        self._hyst_state = {}
        self._valve_disagree_vt = None

    def set(self, reason, active, vt, reuse_on, onset_vt=None):
        """Condition `reason` is (in)active at vt; `reuse_on`: the reuse coil's state."""
        if active and reason not in self.conditions:
            self.conditions[reason] = vt if onset_vt is None else onset_vt
            self.log.append({"reason": reason, "t_s": self.conditions[reason] / 1000.0,
                             "reuse_at_onset": reuse_on})
        elif not active and reason in self.conditions:
            del self.conditions[reason]
            for c in reversed(self.log):
                if c["reason"] == reason and "cleared_t_s" not in c:
                    c["cleared_t_s"] = vt / 1000.0
                    break

    def evaluate(self, vt, world, reuse_on):
        """Bring every condition up to vt (the full set only after served values changed)."""
        if self.dirty:
            self.dirty = False
            self._served_conditions(vt, world, reuse_on)
        self._timed_conditions(vt, world, reuse_on)

    def _hyst(self, reason, value, limit, hyst, above, vt, reuse_on):
        was = self._hyst_state.get(reason, False)
        if above:
            now = value > limit if not was else value >= limit - hyst
        else:
            now = value < limit if not was else value <= limit + hyst
        self._hyst_state[reason] = now
        self.set(reason, now, vt, reuse_on)

    def _served_conditions(self, vt, world, reuse_on):
        ctl = self.ctl
        temps = world.served_temps(vt)
        sensors = self.cfg.get("sensors") or {}
        faults = world.faults
        seen = {n: seen_temp_c(t) for n, t in temps.items()}
        if "sink_return" in sensors and faults.get("sink_return", "none") == "none":
            self._hyst("sink_return_high", seen["sink_return"], ctl["sink_return_max_c"],
                       ctl["sink_return_hyst_k"], True, vt, reuse_on)
        if "it_coolant" in sensors and faults.get("it_coolant", "none") == "none":
            self._hyst("it_coolant_high", seen["it_coolant"], ctl["it_coolant_max_c"],
                       ctl["it_coolant_hyst_k"], True, vt, reuse_on)
        for name, sc in sensors.items():
            if sc.get("critical"):
                f = faults.get(name, "none")
                self.set(f"sensor_fault:{name}", f != "none", vt, reuse_on)
        if ctl.get("sink_signal"):
            self.set("sink_unavailable", not world.inputs["sink_available"], vt, reuse_on)
        self.set("maintenance", bool(world.inputs["maintenance"]), vt, reuse_on)

    def _rate_above(self, world, max_m3h, vt):
        """The first t in (flow change, vt] at which the pulses served make a rate above
        max_m3h visible over one control tick, measured as the node measures a tick's
        window (heatgw.flow): pulses from the last edge at or before t - tick to the last
        edge at or before t, edge to edge; by their count over the tick from COUNTS_MIN
        pulses. The rate only changes at an edge, or a tick after one (when that edge
        leaves the window), so those are the instants tried. None: not yet."""
        from heatgw.flow import COUNTS_MIN  # the firmware's own figure

        tick = self.ctl["tick_ms"]
        edges = world.edges
        lpp_ul = world.lpp_l * 1e6
        start = world.flow_change_vt
        cands = sorted({e for e in edges if start < e <= vt}
                       | {e + tick for e in edges if start < e + tick <= vt})
        for t in cands:
            j = bisect_right(edges, t)  # edges[:j] are at or before t
            i = bisect_right(edges, t - tick)  # edges[:i] are at or before t - tick
            n = j - i  # pulses in (t - tick, t]
            if n <= 0 or i == 0:
                continue
            if n >= COUNTS_MIN:
                m3h = n * lpp_ul * 3.6e-3 / tick  # uL/ms -> m3/h
            else:
                span = edges[j - 1] - edges[i - 1]
                m3h = n * lpp_ul * 3.6e-3 / span if span > 0 else 0.0
            if m3h > max_m3h:
                return t
        return None

    def _timed_conditions(self, vt, world, reuse_on):
        """Conditions that appear with the passage of time alone (no pulse for a while,
        a tick of pulses above the meter's rating, valve travel overdue)."""
        ctl = self.ctl
        if self.cfg.get("flow"):
            q_min_lps = ctl["sink_flow_min_m3h"] / 3.6
            low = world.flow_lps * 3.6 < ctl["sink_flow_min_m3h"]
            if low and "sink_flow_low" not in self.conditions:
                # visible once no pulse came for one pulse at the minimum flow, or for
                # flow.zero_after_s (the node then reads zero), whichever is first
                since = world.edge_vt if world.edge_vt is not None else 0
                wait_ms = int(math.ceil(world.lpp_l / q_min_lps * 1000))
                zero_s = _flow_key(self.cfg, "zero_after_s")
                if zero_s:
                    wait_ms = min(wait_ms, int(zero_s * 1000))
                onset = max(vt, since + wait_ms)
                if onset <= vt:
                    self.set("sink_flow_low", True, vt, reuse_on, onset)
            elif not low:
                self.set("sink_flow_low", False, vt, reuse_on)
            max_m3h = self.cfg["flow"]["max_m3h"]
            high = world.flow_lps * 3.6 > max_m3h
            if high and "flow_implausible" not in self.conditions:
                onset = self._rate_above(world, max_m3h, vt)
                if onset is not None:
                    self.set("flow_implausible", True, vt, reuse_on, onset)
            elif not high:
                self.set("flow_implausible", False, vt, reuse_on)
        # valve: command (reuse coil) vs end switch, beyond the travel time
        if bool(world.plant.valve_at_reuse) == reuse_on:
            self._valve_disagree_vt = None
            self.set("valve_stuck", False, vt, reuse_on)
        else:
            if self._valve_disagree_vt is None:
                self._valve_disagree_vt = vt
            due = self._valve_disagree_vt + ctl["valve_travel_s"] * 1000
            if vt >= due:
                self.set("valve_stuck", True, vt, reuse_on, due)
