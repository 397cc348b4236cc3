"""IAPWS-IF97 reference for the meter tests (CPython, iapws).

`RefTable` carries a FluidTable's data (read from the micropython binary) into the
CPython range proof. `reference_heat_j()` is the EN 1434 definition
Q = V · ρ(θ at the volume sensor) · (h(θf) − h(θr)), evaluated directly with iapws
at the exact temperatures.
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


def reference_heat_j(tf_c, tr_c, in_return, volume_m3):
    hf, rf = props(tf_c)
    hr, rr = props(tr_c)
    return volume_m3 * (rr if in_return else rf) * (hf - hr)
