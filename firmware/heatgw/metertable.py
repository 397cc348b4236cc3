"""The heat meter's table, checked against the kernel's contract and built once, when a
HeatMeter is made (heatgw.meter loads this and drops it again: the checks and their
messages need no RAM while the node runs).

    tab, n, t0_mc, t_min_mc, t_max_mc, cutoff_mk = build(table, t_min_c, t_max_c,
                                                         cutoff_k, batch_len)

tab holds the n grid points from t0_mc (h relative to the first) that the range reads:
the whole table without a range, fewer with one (the sensors' range: heatgw.start).

table: a heatgw.fluid FluidTable (t0_mc, STEP_SHIFT 9, n, h_q64, rho_q32, t_min_mc,
t_max_mc). The effective range is the table's intersected with t_min_c..t_max_c (°C, None:
no limit). tab is array('i'): h then rho (heatgw.meterkernel's table). ValueError for
anything that breaks the contract (heatgw.meterkernel: the kernel does not check again).
"""

from array import array

from heatgw import meterkernel as _k
from heatgw.meter import c_to_mc

_CODE_MAX = 0x3FFFFFFF  # temperature codes (mK absolute) stay below 2**30 (small ints)


def build(table, t_min_c, t_max_c, cutoff_k, batch_len):
    if table.STEP_SHIFT != _k.STEP_SHIFT:
        raise ValueError("table grid step must be 2**9 mK")
    if not 1 <= batch_len <= 4096:
        raise ValueError("batch_len must be 1..4096")
    n = table.n
    h = table.h_q64
    rho = table.rho_q32
    if n < 2 or len(h) < n or len(rho) < n:
        raise ValueError("table too short")
    t0 = table.t0_mc
    t_min = table.t_min_mc
    t_max = table.t_max_mc
    cfg = c_to_mc(t_min_c)
    if cfg is not None and cfg > t_min:
        t_min = cfg
    cfg = c_to_mc(t_max_c)
    if cfg is not None and cfg < t_max:
        t_max = cfg
    if t_min < t0:
        t_min = t0
    if t_max < t_min:
        raise ValueError("empty temperature range")
    if t_min + _k.K_OFFSET_MC < 1 or t_max + _k.K_OFFSET_MC > _CODE_MAX:
        raise ValueError("range outside kernel codes")
    k_min = (t_min - t0) >> _k.STEP_SHIFT
    k_max = ((t_max - t0) >> _k.STEP_SHIFT) + 1
    if k_max > n - 1:
        raise ValueError("t_max at the end of the table")
    cutoff = c_to_mc(cutoff_k)
    if cutoff is None or not 1 <= cutoff < 0x20000000:
        raise ValueError("cutoff_k must be > 0")
    # The kernel's table contract (see heatgw.meterkernel), checked over the whole table;
    # the kernel gets the grid points k_min..k_max only (what the range can read), h
    # relative to h[k_min]: the kernel uses only differences of h, so every total is the
    # same as with the whole table.
    tab = array("i")
    prev = 0
    for k in range(n):
        v = h[k]
        if not 0 <= v < 0x4000000 or v < prev or v - prev >= 0x200000:
            raise ValueError("h_q64 breaks the contract at %d" % k)
        prev = v
        if k_min <= k <= k_max:
            tab.append(v - h[k_min])
    rho_max = 0
    prev = rho[0]
    for k in range(n):
        v = rho[k]
        if not 0 < v < 0x10000 or abs(v - prev) >= 0x200000:
            raise ValueError("rho_q32 breaks contract at %d" % k)
        prev = v
        if k_min <= k <= k_max:
            if v > rho_max:
                rho_max = v
            tab.append(v)
    if rho_max * (h[k_max] - h[k_min]) >= 1 << 41:
        raise ValueError("rho*dh >= 2**41 (>= 2**30 J/m3)")
    return tab, k_max - k_min + 1, t0 + (k_min << _k.STEP_SHIFT), t_min, t_max, cutoff
