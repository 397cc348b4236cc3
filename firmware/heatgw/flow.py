"""Flow from a pulse-output meter: volume for the heat meter, rate and faults for the
fail-safe.

    pf = PulseFlow(counter, pulses_per_litre=450, now_ms=t, ticks_diff=time.ticks_diff)
    vol_ul, flow_m3h, reason = pf.sample(now_ms)

`counter` is a pulse input driver (lib/pulsecounter, pcntcounter, piocounter): read() ->
(count wrapping at 2**30, ticks_ms of the latest pulse or None), active().

Volume is exact: the K-factor is a fraction (litres_per_pulse: whole uL per pulse;
pulses_per_litre: 1e9 / (pulses per 1000 L) uL per pulse, e.g. 20000/9 uL at 450 imp/L),
and the part of a uL that a sample's pulses leave over is carried to the next sample in
integers, never rounded away: after N pulses the total is exactly floor(N * uL per pulse).
Every intermediate stays a small int on a 31-bit port (the pulses are taken in chunks).

Rate, in m3/h:
- from pulse timing at low rates: pulses between the reference edge (the last one of an
  earlier sample) and the latest edge, over the time between those edges; it does not
  jitter with the sampling phase and needs no whole pulse per sample;
- from the count over the sample's window when it holds COUNTS_MIN pulses or more (+-1
  pulse is then within 2 %): a hardware counter's count is exact even when its timestamp
  interrupt came late (masked by a flash operation), and edge times then may lag it;
  fewer pulses without a newer edge time wait for the next edge time to span them;
- between pulses it is at most one pulse per gap since the last edge, which sees a
  stopped pump within a fraction of a second; after `zero_after_s` without a pulse it is
  0.0. (Not in a window of COUNTS_MIN pulses or more, nor one whose pulses came without
  a newer edge time: a lagging edge time is no proof of silence.)

Reasons (the fail-safe's sensor_fault:flow when the meter is critical): "input_stuck" when
the input has stayed at its active level for `stuck_active_s` without a pulse (a shorted
cable, a dead open collector). A rate above the meter's rating is not judged here: the
fail-safe calls it flow_implausible.
"""

_MASK = 0x3FFFFFFF
_UL_PER_L = 1_000_000
_MS_PER_H = 3_600_000
_NUM_PPL = 1_000_000_000  # uL per pulse = _NUM_PPL / (pulses per 1000 L)
COUNTS_MIN = 50  # pulses in a window from which the rate comes from the count
STUCK = "input_stuck"


def k_factor(litres_per_pulse=None, pulses_per_litre=None):
    """(num, den): uL per pulse = num / den, in lowest terms; exactly one argument (in
    whole uL, or in whole 0.001 pulses, as the schema's `step` has checked)."""
    if (litres_per_pulse is None) == (pulses_per_litre is None):
        raise ValueError("give litres_per_pulse or pulses_per_litre")
    x = litres_per_pulse * _UL_PER_L if pulses_per_litre is None else pulses_per_litre * 1000
    n = int(x + 0.5)
    if n < 1 or abs(x - n) > 1e-6 * x or n > 1_000_000_000:
        raise ValueError("K-factor not a whole number of uL or 0.001 pulses")
    if pulses_per_litre is None:
        return n, 1
    a, b = _NUM_PPL, n
    while b:
        a, b = b, a % b
    return _NUM_PPL // a, n // a


class PulseFlow:
    def __init__(self, counter, *, now_ms, ticks_diff, litres_per_pulse=None,
                 pulses_per_litre=None, zero_after_s=None, stuck_active_s=None):
        num, den = k_factor(litres_per_pulse, pulses_per_litre)
        self._den = den
        self._q = num // den  # whole uL per pulse
        self._r = num % den  # and r/den uL more
        self._rem = 0  # carried: rem/den uL not yet given out (0 <= rem < den)
        self._chunk = max(1, _MASK // den - 1)  # pulses per step: rem + n * r < 2**30
        # m3/h per (pulse per ms): uL/pulse * 3.6e6 ms/h / 1e9 uL/m3
        self._m3h_k = num * (_MS_PER_H / 1e9) / den
        self._zero_ms = int(zero_after_s * 1000) if zero_after_s else 0
        self._stuck_ms = int(stuck_active_s * 1000) if stuck_active_s else 0
        self._counter = counter
        self._diff = ticks_diff
        count, edge = counter.read()
        self._count = count  # count at the previous sample
        self._edge = edge  # edge time at the previous sample
        self._ref_count = count  # pulse-timing reference
        self._ref_ms = edge
        self._start_ms = now_ms
        self._prev_ms = now_ms  # the previous sample
        self._active_ms = None  # since when the input is seen active without a pulse
        self.flow_m3h = 0.0

    def _m3h(self, pulses, ms):
        return pulses * self._m3h_k / ms

    def volume_ul(self, pulses):
        """uL for `pulses` more pulses, the fraction of a uL carried to the next call."""
        vol = pulses * self._q
        r = self._r
        if r:
            den = self._den
            rem = self._rem
            chunk = self._chunk
            while pulses > 0:
                n = pulses if pulses < chunk else chunk
                rem += n * r
                vol += rem // den
                rem %= den
                pulses -= n
            self._rem = rem
        return vol

    def sample(self, now_ms):
        """(volume_ul since the last sample, flow_m3h, reason or None)."""
        count, edge = self._counter.read()
        pulses = (count - self._count) & _MASK  # counts wrap at 2**30
        self._count = count
        diff = self._diff
        win = diff(now_ms, self._prev_ms)
        self._prev_ms = now_ms
        vol_ul = 0
        silence = True  # the last edge time says when the last pulse came
        if pulses:
            vol_ul = self.volume_ul(pulses)
            if pulses >= COUNTS_MIN:
                if win > 0:  # the count over the window
                    self.flow_m3h = self._m3h(pulses, win)
                self._ref_count = count
                self._ref_ms = edge
                silence = False  # pulses all through: an edge time may lag them
            elif edge is not None and edge != self._edge:
                if self._ref_ms is not None:  # pulse timing: edge to edge
                    n = (count - self._ref_count) & _MASK
                    span = diff(edge, self._ref_ms)
                    if n and span > 0:
                        self.flow_m3h = self._m3h(n, span)
                self._ref_count = count
                self._ref_ms = edge
            else:
                # pulses without a newer edge time (a late timestamp interrupt): too few
                # to count a rate from, and no time of the last one; the next edge time
                # spans them
                silence = False
        self._edge = edge
        if silence:
            # Since the last pulse the flow is at most one pulse per gap; zero after
            # zero_after_s.
            since = self._ref_ms if self._ref_ms is not None else self._start_ms
            gap = diff(now_ms, since)
            if gap > 0:
                if self._zero_ms and gap >= self._zero_ms:
                    self.flow_m3h = 0.0
                else:
                    bound = self._m3h(1, gap)
                    if bound < self.flow_m3h:
                        self.flow_m3h = bound
        reason = None
        if self._stuck_ms:
            if pulses or not self._counter.active():
                self._active_ms = None
            elif self._active_ms is None:
                self._active_ms = now_ms
            elif diff(now_ms, self._active_ms) >= self._stuck_ms:
                reason = STUCK
        return vol_ul, self.flow_m3h, reason
