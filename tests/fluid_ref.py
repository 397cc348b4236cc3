"""IAPWS-IF97 reference for the meter tests (CPython, iapws).

`water_table()` builds a table in heatgw.fluid's FluidTable layout (grid of 512 mK
from t0, h minus h(t0) in 1/64 J/kg, rho in 1/32 kg/m³, at 1.6 MPa), so the meter
can be tested before / independently of heatgw.fluid. `reference_heat_j()` is the
EN 1434 definition Q = V · ρ(θ at the volume sensor) · (h(θf) − h(θr)) evaluated
directly with iapws at the exact temperatures.
"""

from functools import cache

from iapws import IAPWS97

P_MPA = 1.6
STEP_SHIFT = 9


@cache
def props(t_c):
    """(h in J/kg, rho in kg/m³) of water at t_c °C and 1.6 MPa."""
    w = IAPWS97(T=273.15 + t_c, P=P_MPA)
    return w.h * 1000.0, w.rho


class RefTable:
    STEP_SHIFT = STEP_SHIFT

    def __init__(self, t0_mc, h_q64, rho_q32, t_min_mc, t_max_mc):
        self.t0_mc = t0_mc
        self.n = len(h_q64)
        self.h_q64 = list(h_q64)
        self.rho_q32 = list(rho_q32)
        self.t_min_mc = t_min_mc
        self.t_max_mc = t_max_mc


def water_table(t0_mc=0, t_max_mc=150_000):
    n = ((t_max_mc - t0_mc) >> STEP_SHIFT) + 2  # t_max has a right neighbour
    temps = [(t0_mc + (k << STEP_SHIFT)) / 1000.0 for k in range(n)]
    h0 = props(temps[0])[0]
    h_q64 = [round((props(t)[0] - h0) * 64) for t in temps]
    rho_q32 = [round(props(t)[1] * 32) for t in temps]
    return RefTable(t0_mc, h_q64, rho_q32, t0_mc, t_max_mc)


def reference_heat_j(tf_c, tr_c, in_return, volume_m3):
    hf, rf = props(tf_c)
    hr, rr = props(tr_c)
    return volume_m3 * (rr if in_return else rf) * (hf - hr)


def mp_table_source(table, name="TABLE"):
    """MicroPython source that defines `name`, a FluidTable-like object."""
    return "\n".join([
        "from array import array",
        "class _RefTable:",
        f"    STEP_SHIFT = {table.STEP_SHIFT}",
        f"{name} = _RefTable()",
        f"{name}.t0_mc = {table.t0_mc}",
        f"{name}.n = {table.n}",
        f"{name}.t_min_mc = {table.t_min_mc}",
        f"{name}.t_max_mc = {table.t_max_mc}",
        f"{name}.h_q64 = array('i', {list(table.h_q64)!r})",
        f"{name}.rho_q32 = array('i', {list(table.rho_q32)!r})",
        "",
    ])
