"""Generate firmware/heatgw/fluid_data.py: the property data behind heatgw.fluid.

    .venv/bin/python -m host_tools.gen_fluid_tables            # (re)write the file
    .venv/bin/python -m host_tools.gen_fluid_tables --check    # exit 1 if it is stale

Water (the EN 1434 heat-meter fluid): IAPWS-IF97 via the `iapws` package,
IAPWS97(T=K, P=1.6), i.e. at the standard pressure of 1.6 MPa, tabulated on the
fluid table grid θ_i = i · 0.512 K from 0 °C until a point beyond 150 °C:
    h_q64[i]   = round(64 · (h(θ_i) − h(0 °C)) [J/kg])
    rho_q32[i] = round(32 / v(θ_i) [kg/m³])
Valid 0 … 150 °C (liquid water at 1.6 MPa; IF97 region 1).

Glycols: aqueous propylene glycol (MPG) and ethylene glycol (MEG), the correlations of
Melinder (2010), "Properties of Secondary Working Fluids (Secondary Refrigerants or
Coolants, Heat Transfer Fluids) for Indirect Systems", IIR, as implemented by CoolProp's
incompressible fluids INCOMP::MPG / INCOMP::MEG (CoolProp.PropsSI: 'D', 'C',
'T_freeze'). CoolProp's validity range for both: mass fraction x = 0 … 0.6, temperature
from the freezing point T_freeze(x) up to 100 °C. Melinder's correlations are
polynomials: density and specific heat are
    f(x, t) = Σ_j U^j Σ_i C[j][i] X^i,   i + j ≤ 5, j ≤ 3
and the freezing point a polynomial of degree 5 in X. Here X = (x − 0.3) / 0.3 and
U = (t − 25 °C) / 75 K (both in [−1, 1] over the range, which keeps the device's
single-precision evaluation well conditioned). Storing these 18 + 18 + 6 numbers per
fluid is far smaller than tables per concentration (a 64 KB heap matters) and exact at
every concentration, not just at grid fractions. The coefficients are not copied from
anywhere: they are recovered from CoolProp itself by exact (rational-arithmetic)
interpolation on a 6 × 4 tensor grid of CoolProp evaluations, the 6 tensor terms
outside Melinder's triangle are checked to vanish, and the resulting polynomial is
verified against CoolProp on a dense (x, t) grid over the whole valid range; the worst
relative deviation is written into the generated file's header and must be < 1e-9.

Enthalpy of the glycols is h(t) − h(t0) = ∫ cp dt (cp is CoolProp's 'C', Melinder's
isobaric specific heat). CoolProp's own 'H' for incompressibles adds a p/ρ-type term
that makes ∫cp dt and ΔH differ by up to ~0.08 % at 1.6 MPa, an artefact of its
incompressible model, so it is not used. The device builds the glycol tables from the
coefficients (heatgw.fluid.propylene_glycol / ethylene_glycol).
"""

import sys
from fractions import Fraction
from pathlib import Path

import CoolProp
import iapws
from CoolProp.CoolProp import PropsSI
from iapws import IAPWS97

from host_tools.paths import FIRMWARE

OUT = FIRMWARE / "heatgw" / "fluid_data.py"

STEP_MC = 512  # grid step, m°C (STEP_SHIFT = 9)
P_MPA = 1.6  # EN 1434 standard pressure for the water k-factor
WATER_T_MIN_MC = 0
WATER_T_MAX_MC = 150000

# Glycol polynomial variables: X = (x - XC) / XS, U = (t - TC) / TS, t in °C.
XC, XS = Fraction(3, 10), Fraction(3, 10)
TC, TS = Fraction(25), Fraction(75)
X_MIN, X_MAX = 0.0, 0.6  # CoolProp / Melinder mass-fraction range
GLYCOL_T_MAX_C = 100  # CoolProp Tmax for INCOMP::MPG / MEG
NX, NT = 6, 4  # X degree <= 5, U degree <= 3
FIT_TOL = 1e-9  # worst relative deviation from CoolProp accepted for the recovered fits
GLYCOLS = (("MPG", "propylene glycol"), ("MEG", "ethylene glycol"))


def grid_n(t0_mc, t_max_mc):
    """Number of grid points so that the last one lies beyond t_max (a right neighbour)."""
    return (t_max_mc - t0_mc) // STEP_MC + 2


# -- water ---------------------------------------------------------------------------------


def water_props(t_c):
    """(h [J/kg], v [m³/kg]) of water at t_c °C and 1.6 MPa, IAPWS-IF97."""
    w = IAPWS97(T=273.15 + t_c, P=P_MPA)
    return w.h * 1000.0, w.v


def water_table():
    t0 = WATER_T_MIN_MC
    n = grid_n(t0, WATER_T_MAX_MC)
    h0 = water_props(t0 / 1000)[0]
    hq, rq = [], []
    for i in range(n):
        h, v = water_props((t0 + i * STEP_MC) / 1000)
        hq.append(round(64 * (h - h0)))
        rq.append(round(32 / v))
    return t0, n, hq, rq


# -- glycols -------------------------------------------------------------------------------


def coolprop(fluid, what, x, t_c):
    # pressure does not enter Melinder's D, C or T_freeze; 1.6 MPa for uniformity
    return PropsSI(what, "T", 273.15 + float(t_c), "P", P_MPA * 1e6, f"INCOMP::{fluid}[{x}]")


def t_freeze_c(fluid, x):
    return PropsSI("T_freeze", "T", 300.0, "P", P_MPA * 1e6, f"INCOMP::{fluid}[{x}]") - 273.15


def _solve(a, b):
    """Exact solution of the square linear system a·c = b (Fractions, Gauss-Jordan)."""
    n = len(b)
    m = [list(row) + [rhs] for row, rhs in zip(a, b, strict=True)]
    for col in range(n):
        piv = next(r for r in range(col, n) if m[r][col] != 0)
        m[col], m[piv] = m[piv], m[col]
        p = m[col][col]
        m[col] = [v / p for v in m[col]]
        for r in range(n):
            if r != col and m[r][col] != 0:
                f = m[r][col]
                m[r] = [v - f * w for v, w in zip(m[r], m[col], strict=True)]
    return [m[r][n] for r in range(n)]


def _vander_fit(nodes, values):
    """Monomial coefficients of the polynomial through (nodes, values), exactly."""
    return _solve([[z**k for k in range(len(nodes))] for z in nodes], values)


def _x_nodes():
    # X = -1, -0.6, -0.2, 0.2, 0.6, 1  ->  x = 0, 0.12, 0.24, 0.36, 0.48, 0.6
    return [XC + XS * Fraction(2 * k - NX + 1, NX - 1) for k in range(NX)]


def _t_nodes():
    # valid at every x (above every freezing point): 1, 34, 67, 100 °C
    return [Fraction(1 + 33 * k) for k in range(NT)]


def fit_property(fluid, what):
    """C[j][i] (Fractions) with prop = Σ_j U^j Σ_i C[j][i] X^i, Melinder's triangle only."""
    xs, ts = _x_nodes(), _t_nodes()
    us = [(t - TC) / TS for t in ts]
    # per x node: coefficients in U; then per U power: coefficients in X
    b = [_vander_fit(us, [Fraction(coolprop(fluid, what, float(x), t)) for t in ts])
         for x in xs]
    big = [abs(v) for row in b for v in row]
    scale = max(big)
    coeffs = []
    for j in range(NT):
        cj = _vander_fit([(x - XC) / XS for x in xs], [b[k][j] for k in range(NX)])
        keep = NX - j if j else NX  # i + j <= 5
        for i in range(keep, NX):
            if abs(cj[i]) > FIT_TOL * scale:
                raise SystemExit(f"{fluid} {what}: term X^{i} U^{j} = {float(cj[i])} is not "
                                 "negligible: CoolProp is not Melinder's polynomial form here")
        coeffs.append(cj[:keep])
    return coeffs


def fit_t_freeze(fluid):
    xs = _x_nodes()
    return _vander_fit([(x - XC) / XS for x in xs],
                       [Fraction(t_freeze_c(fluid, float(x))) for x in xs])


def eval_poly2(coeffs, x, t_c):
    xx = (x - float(XC)) / float(XS)
    u = (t_c - float(TC)) / float(TS)
    acc = 0.0
    for row in reversed(coeffs):
        s = 0.0
        for c in reversed(row):
            s = s * xx + c
        acc = acc * u + s
    return acc


def eval_poly1(coeffs, x):
    xx = (x - float(XC)) / float(XS)
    s = 0.0
    for c in reversed(coeffs):
        s = s * xx + c
    return s


def _floats(coeffs):
    if isinstance(coeffs[0], list):
        return [[float(c) for c in row] for row in coeffs]
    return [float(c) for c in coeffs]


def fit_glycol(fluid):
    """Recover and verify the polynomials of one glycol; returns (fits, worst deviations)."""
    fits = {
        "rho": _floats(fit_property(fluid, "D")),
        "cp": _floats(fit_property(fluid, "C")),
        "tf": _floats(fit_t_freeze(fluid)),
    }
    worst = {"rho": 0.0, "cp": 0.0, "tf": 0.0}
    for k in range(61):
        x = round(0.01 * k, 2)
        tf = t_freeze_c(fluid, x)
        worst["tf"] = max(worst["tf"], abs(eval_poly1(fits["tf"], x) - tf))
        t_lo = tf + 1e-3
        for m in range(41):
            t = t_lo + (GLYCOL_T_MAX_C - t_lo) * m / 40
            for key, what in (("rho", "D"), ("cp", "C")):
                ref = coolprop(fluid, what, x, t)
                dev = abs(eval_poly2(fits[key], x, t) / ref - 1)
                worst[key] = max(worst[key], dev)
    for key in ("rho", "cp"):
        if worst[key] > FIT_TOL:
            raise SystemExit(f"{fluid} {key}: recovered polynomial deviates {worst[key]:.2e}")
    if worst["tf"] > 1e-6:
        raise SystemExit(f"{fluid} T_freeze: recovered polynomial deviates {worst['tf']:.2e} K")
    return fits, worst


# -- output --------------------------------------------------------------------------------


def _int_tuple(name, values, per_line=8):
    lines = [f"{name} = ("]
    for k in range(0, len(values), per_line):
        lines.append("    " + ", ".join(str(v) for v in values[k:k + per_line]) + ",")
    lines.append(")")
    return lines


def _float_rows(name, rows):
    lines = [f"{name} = ("]
    for j, row in enumerate(rows):
        lines.append(f"    (  # U**{j}, in powers of X")
        lines.extend(f"        {c!r}," for c in row)
        lines.append("    ),")
    lines.append(")")
    return lines


def _bound(v):
    """A round upper bound for a deviation (keeps the header stable across platforms)."""
    e = -12
    while 10.0**e < v:
        e += 1
    return f"1e{e}"


def render():
    """The complete text of firmware/heatgw/fluid_data.py."""
    t0, n, hq, rq = water_table()
    out = [
        "# GENERATED FILE - do not edit by hand.",
        "# Written by host_tools/gen_fluid_tables.py; regenerate with",
        "#     .venv/bin/python -m host_tools.gen_fluid_tables",
        "# tests/test_fluid.py fails when this file differs from a fresh generation.",
        f"# Inputs: iapws {iapws.__version__} (IAPWS-IF97), CoolProp {CoolProp.__version__}"
        " (Melinder 2010 INCOMP::MPG/MEG).",
        '"""Property data for heatgw.fluid (generated; see host_tools/gen_fluid_tables.py)."""',
        "",
        "# Water, IAPWS-IF97 at 1.6 MPa, grid t0 + i * 512 m°C:",
        "# h_q64 = 64 * (h - h(t0)) [J/kg], rho_q32 = 32 * rho [kg/m3], rounded to nearest.",
        f"WATER_T0_MC = {t0}",
        f"WATER_T_MIN_MC = {WATER_T_MIN_MC}",
        f"WATER_T_MAX_MC = {WATER_T_MAX_MC}",
        *_int_tuple("WATER_H_Q64", hq),
        *_int_tuple("WATER_RHO_Q32", rq),
        "",
        "# Glycols (Melinder 2010 via CoolProp), x = mass fraction, t in °C:",
        "#   X = (x - GLYCOL_XC) / GLYCOL_XS,  U = (t - GLYCOL_TC) / GLYCOL_TS",
        "#   rho [kg/m3], cp [J/(kg K)] = sum_j U**j * sum_i C[j][i] * X**i",
        "#   t_freeze [°C] = sum_i C[i] * X**i",
        "# valid for GLYCOL_X_MIN <= x <= GLYCOL_X_MAX, t_freeze(x) <= t <= GLYCOL_T_MAX_C.",
        f"GLYCOL_XC = {float(XC)!r}",
        f"GLYCOL_XS = {float(XS)!r}",
        f"GLYCOL_TC = {float(TC)!r}",
        f"GLYCOL_TS = {float(TS)!r}",
        f"GLYCOL_X_MIN = {X_MIN!r}",
        f"GLYCOL_X_MAX = {X_MAX!r}",
        f"GLYCOL_T_MAX_C = {GLYCOL_T_MAX_C}",
    ]
    for fluid, long_name in GLYCOLS:
        fits, worst = fit_glycol(fluid)
        out += [
            "",
            f"# {long_name} (INCOMP::{fluid}); worst deviation from CoolProp over the valid",
            f"# range: rho < {_bound(worst['rho'])}, cp < {_bound(worst['cp'])} (relative),"
            f" t_freeze < {_bound(worst['tf'])} K.",
            *_float_rows(f"{fluid}_RHO", fits["rho"]),
            *_float_rows(f"{fluid}_CP", fits["cp"]),
            f"{fluid}_TFREEZE = (",
            *(f"    {c!r}," for c in fits["tf"]),
            ")",
        ]
    return "\n".join(out) + "\n"


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    text = render()
    if "--check" in argv:
        if Path(OUT).read_text() != text:
            print(f"{OUT} is stale: run python -m host_tools.gen_fluid_tables")
            return 1
        print(f"{OUT} is up to date")
        return 0
    OUT.write_text(text)
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
