"""On-device self-test: is the metering arithmetic right on this CPU?

Runs in a few hundred milliseconds on the targets. It checks what differs between the
64-bit host and a 32-bit board: the viper kernel's integer arithmetic (1 m³ of water at
70/50 °C must give EN 1434's 22.959 kWh with the meter in the return pipe and 22.720 kWh in
the flow pipe), allocation-free sampling under heap_lock, meter semantics (negative ΔΘ and
faulty sensors never integrate energy) and the IEC 60751 check values in the float
precision of this port. Each check prints one line; the last line is `selftest: PASS` or
`selftest: FAIL <n>`.
"""

import gc
import sys
import time

import micropython

from heatgw import fluid, rtd
from heatgw.meter import HeatMeter

# (θf m°C, θr m°C, meter_in_return, expected Wh for 1 m³): IF97 at 1.6 MPa.
_EN1434_CASES = ((70000, 50000, True, 22959), (70000, 50000, False, 22720))
_WH_TOLERANCE = 2  # 0.01 %
# IEC 60751 check values (PT1000): °C -> Ω
_RTD_CHECKS = ((-50.0, 803.0628), (0.0, 1000.0), (100.0, 1385.055), (200.0, 1758.56))


def _integrate_m3(table, tf_mc, tr_mc, in_return):
    m = HeatMeter(table, meter_in_return=in_return, cutoff_k=0.5)
    micropython.heap_lock()
    try:
        for _ in range(250):
            m.add(tf_mc, tr_mc, 4_000_000, 1000)  # 250 x 4 L = 1 m³
        m.flush()
    finally:
        micropython.heap_unlock()
    return m


def run(out=print):
    failures = 0

    def check(name, ok, detail):
        nonlocal failures
        if not ok:
            failures += 1
        out("selftest: %s %s %s" % (name, "ok" if ok else "FAIL", detail))

    out("selftest: %s %s, small ints %d bits" % (
        sys.platform, sys.implementation.name, 31 if sys.maxsize >> 31 == 0 else 63))
    gc.collect()
    table = fluid.water()
    for tf, tr, in_return, want_wh in _EN1434_CASES:
        t0 = time.ticks_us()
        m = _integrate_m3(table, tf, tr, in_return)
        us = time.ticks_diff(time.ticks_us(), t0)
        wh = m.energy_wh
        check("en1434_%d_%d_%s" % (tf // 1000, tr // 1000, "return" if in_return else "flow"),
              abs(wh - want_wh) <= _WH_TOLERANCE and m.volume_l == 1000,
              "%d Wh (want %d), %d L, %d us/sample" % (wh, want_wh, m.volume_l, us // 250))

    m = HeatMeter(table, meter_in_return=True, cutoff_k=0.5)
    m.add(50000, 70000, 1_000_000, 1000)  # swapped sensors: negative ΔΘ
    m.add(None, 50000, 1_000_000, 1000)  # supply sensor faulted
    m.add(60000, 59800, 1_000_000, 1000)  # ΔΘ below the cutoff
    check("semantics", m.energy_nj == 0 and m.volume_l == 3 and m.negative_dt_time_s == 1
          and m.error_time_s == 1 and m.low_dt_time_s == 2,
          "E=%d nJ V=%d L neg=%d s err=%d s low=%d s" % (
              m.energy_nj, m.volume_l, m.negative_dt_time_s, m.error_time_s,
              m.low_dt_time_s))

    worst_k = 0.0
    for t_c, r_ohm in _RTD_CHECKS:
        worst_k = max(worst_k, abs(rtd.temp_c(r_ohm, 1000) - t_c))
    check("rtd_iec60751", worst_k < 0.002, "worst %.4f K" % worst_k)

    gc.collect()
    out("selftest: heap %d used, %d free" % (gc.mem_alloc(), gc.mem_free()))
    out("selftest: PASS" if failures == 0 else "selftest: FAIL %d" % failures)
    return failures == 0
