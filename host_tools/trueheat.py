"""The plant's TRUE delivered heat, independent of the firmware's metering code (CPython).

Per plant log record (t_s, dt_s, volume_m3, supply_c, return_c), with the volume measured
in the return leg (EN 1434 definition):

    Q = volume_m3 · ρ(return_c) · (h(supply_c) − h(return_c))

h and ρ = 1/v are the IAPWS-IF97 region-1 (liquid water) basic equation of the `iapws`
package at `pressure_mpa`. `iapws.iapws97._Region1(T_K, P_MPa)` costs ~130 µs a call
(it evaluates every property with small numpy sums): 2 × 86,400 calls would take ~20 s.
So `region1_h_rho()` evaluates the very same equation — iapws's own coefficient arrays
(`iapws.iapws97.Const.Region1_*`, `R`) and _Region1's expressions for h and v — for all
distinct temperatures of a log at once with numpy. Identical temperatures share one
evaluation (np.unique), nothing else is shared or interpolated. The tests check it
against `_Region1` and the `IAPWS97` class.
"""

import numpy as np
from iapws import iapws97

PRESSURE_MPA = 0.3
_K0 = 273.15
_CHUNK = 8192  # rows per vectorised evaluation (bounds the temporary N×34 arrays)

_N = iapws97.Const.Region1_n
_LI = iapws97.Const.Region1_Li
_LJ = iapws97.Const.Region1_Lj
_LI_1 = iapws97.Const.Region1_Li_less_1
_LJ_1 = iapws97.Const.Region1_Lj_less_1


def region1_h_rho(t_c, pressure_mpa=PRESSURE_MPA):
    """(h in J/kg, ρ in kg/m³) arrays of liquid water at temperatures t_c (°C, array-like).

    Same equation and coefficients as iapws97._Region1 (h = τ·γ_τ·R·T,
    v = π·γ_π·R·T/P). Raises ValueError outside the liquid region at this pressure.
    """
    t_k = np.asarray(t_c, dtype=np.float64) + _K0
    if t_k.size == 0:
        return np.empty(0), np.empty(0)
    t_sat_k = iapws97._TSat_P(pressure_mpa)
    if not (t_k.min() >= 273.15 and t_k.max() < t_sat_k):
        raise ValueError(
            f"temperature outside the liquid region at {pressure_mpa} MPa: "
            f"{t_k.min() - _K0:.3f}..{t_k.max() - _K0:.3f} °C"
        )
    pr = pressure_mpa / 16.53
    a = 7.1 - pr
    a_li = a**_LI  # π-terms do not depend on T
    a_li_1 = a**_LI_1
    h = np.empty(t_k.shape)
    v = np.empty(t_k.shape)
    flat_t, flat_h, flat_v = t_k.reshape(-1), h.reshape(-1), v.reshape(-1)
    for lo in range(0, flat_t.size, _CHUNK):
        tk = flat_t[lo : lo + _CHUNK]
        tr = 1386.0 / tk
        b = (tr - 1.222)[:, None]
        gp = -np.sum(_N * _LI * a_li_1 * b**_LJ, axis=1)
        gt = np.sum(_N * _LJ * a_li * b**_LJ_1, axis=1)
        flat_v[lo : lo + _CHUNK] = pr * gp * iapws97.R * tk / pressure_mpa / 1000.0
        flat_h[lo : lo + _CHUNK] = tr * gt * iapws97.R * tk * 1000.0  # kJ/kg -> J/kg
    return h, 1.0 / v


def true_heat_series(log, pressure_mpa=PRESSURE_MPA):
    """Heat delivered in each log record, J (numpy array, same order as the log)."""
    if len(log) == 0:
        return np.empty(0)
    rec = np.asarray(log, dtype=np.float64)
    if rec.ndim != 2 or rec.shape[1] != 5:
        raise ValueError("log records must be (t_s, dt_s, volume_m3, supply_c, return_c)")
    volume_m3, supply_c, return_c = rec[:, 2], rec[:, 3], rec[:, 4]
    heat_j = np.zeros(len(rec))
    # Records without volume or ΔΘ carry no heat: no property evaluation needed.
    live = (volume_m3 != 0.0) & (supply_c != return_c)
    if not live.any():
        return heat_j
    temps, inv = np.unique(np.concatenate((supply_c[live], return_c[live])), return_inverse=True)
    h_j_kg, rho_kg_m3 = region1_h_rho(temps, pressure_mpa)
    n = int(live.sum())
    i_sup, i_ret = inv[:n], inv[n:]
    heat_j[live] = volume_m3[live] * rho_kg_m3[i_ret] * (h_j_kg[i_sup] - h_j_kg[i_ret])
    return heat_j


def true_heat_kwh(log, pressure_mpa=PRESSURE_MPA):
    """Total true heat of a plant log, kWh."""
    return float(np.sum(true_heat_series(log, pressure_mpa))) / 3.6e6
