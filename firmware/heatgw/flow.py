"""Flow from a pulse-output meter: volume for the heat meter, rate for the fail-safe.

    pf = PulseFlow(counter, litres_per_pulse=0.1, clock=clock)
    vol_ul, flow_m3h, reason = pf.sample(now_ms)

Volume is exact: whole pulses times the pulse value in µL (an integer, so the total
never drifts). The rate is measured edge to edge (pulses between the first and last
edge of the window over the time between those edges), so it does not jitter with the
sampling phase; between pulses it is bounded by "one pulse since the last edge", which
sees a stopped pump within a fraction of a second.
"""

_MASK = 0x3FFFFFFF


def count_diff(a, b):
    """a - b for pulse counts that wrap at 2**30 (lib/pulsecounter's convention)."""
    return (a - b) & _MASK

_UL_PER_L = 1_000_000
_MS_PER_H = 3_600_000


class PulseFlow:
    def __init__(self, counter, *, litres_per_pulse, now_ms, ticks_diff):
        ul = litres_per_pulse * _UL_PER_L
        ul_per_pulse = int(ul + 0.5)
        if ul_per_pulse < 1 or abs(ul - ul_per_pulse) > 1e-6 * ul:
            raise ValueError("litres_per_pulse not whole µL")
        self.ul_per_pulse = ul_per_pulse
        self._counter = counter
        self._diff = ticks_diff
        count, edge = counter.read()
        self._count = count  # count at the previous sample
        self._ref_count = count  # edge-to-edge reference
        self._ref_ms = edge
        self._start_ms = now_ms
        self.flow_m3h = 0.0

    def _m3h(self, pulses, ms):
        # L/ms -> m³/h: pulses * µL / ms * 3.6e6 ms/h / 1e9 µL/m³
        return pulses * self.ul_per_pulse * (_MS_PER_H / 1e9) / ms

    def sample(self, now_ms):
        """(volume_ul since the last sample, flow_m3h, reason)."""
        count, edge = self._counter.read()
        pulses = count_diff(count, self._count)
        self._count = count
        vol_ul = pulses * self.ul_per_pulse
        diff = self._diff
        if pulses and edge is not None:
            if self._ref_ms is not None:
                n = count_diff(count, self._ref_count)
                span = diff(edge, self._ref_ms)
                if n and span > 0:
                    self.flow_m3h = self._m3h(n, span)
            self._ref_count = count
            self._ref_ms = edge
        # Between pulses the flow is at most one pulse per gap since the last edge.
        since = self._ref_ms if self._ref_ms is not None else self._start_ms
        gap = diff(now_ms, since)
        if gap > 0:
            bound = self._m3h(1, gap)
            if bound < self.flow_m3h:
                self.flow_m3h = bound
        return vol_ul, self.flow_m3h, None
