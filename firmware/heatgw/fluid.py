"""Heat-transfer fluid tables for EN 1434 heat metering: enthalpy and density on a grid.

A FluidTable is what the metering kernel (heatgw.meterkernel) integrates against:
    name        str
    t0_mc       grid start, m°C; grid points θ_i = t0_mc + i · 512 m°C (0.512 K)
    STEP_SHIFT  9: the kernel indexes with (t_mc − t0_mc) >> 9 and interpolates
                linearly with the low 9 bits
    n           number of grid points
    h_q64       array('i'): h(θ_i) − h(θ_0), 1/64 J/kg, rounded to nearest
    rho_q32     array('i'): ρ(θ_i), 1/32 kg/m³, rounded to nearest
    t_min_mc, t_max_mc  valid range (m°C); t_max_mc < the last grid point
    mass_fraction       glycol mass fraction, None for water
All values are integers < 2**26, h non-decreasing.

Fluids and sources
    water()     IAPWS-IF97 at 1.6 MPa (EN 1434's standard pressure), 0 … 150 °C;
                t0 = 0, n = 294. Tabulated by host_tools/gen_fluid_tables.py from the
                `iapws` package, stored as integer tuples in heatgw.fluid_data.
    propylene_glycol(x), ethylene_glycol(x)
                aqueous glycol, x = mass fraction 0 … 0.6; Melinder (2010),
                "Properties of Secondary Working Fluids for Indirect Systems" (IIR), as
                implemented in CoolProp's INCOMP::MPG / INCOMP::MEG. Valid from the
                freezing point (rounded up to 0.1 K) to 100 °C, CoolProp's range for these
                correlations. The table is computed here from Melinder's polynomials
                (coefficients recovered from CoolProp by the generator, 42 numbers per
                glycol): ρ directly, h = ∫ cp dt by Simpson's rule, exact for Melinder's
                cubic cp(t). Grid aligned with water's (t0 a multiple of 512 m°C).

Accuracy (tests/test_fluid.py, micropython against iapws / CoolProp on the host)
    water k-factor within 0.05 % of IF97 for every pair 5 … 130 °C, ΔΘ 0.5 … 80 K,
    both meter positions (worst measured 0.0035 %, at 5 … 6 °C where cp bends most);
    glycol ρ within 0.005 % and mean cp over any interval ≥ 0.5 K within 0.02 % of
    CoolProp (worst measured 0.0016 % and 0.012 %, the latter at −51 °C in 60 % MEG).
    The residue is the linear interpolation on the 0.512 K grid, the same one the
    kernel uses. Melinder's ρ and cp do not depend on pressure.
    Single-precision floats (ESP32, RP2040) enter only the glycol construction, where a
    float32 build differs from a float64 one by at most 3/64 J/kg in h and 1/32 kg/m³
    in ρ (tested by numpy.float32 emulation), and k_kwh_per_m3k, where all table
    arithmetic is exact integer work until a few float operations at the end.

RAM: a table holds 2 · n int32 (water n = 294, glycols n = 197 … 297: ≈ 2.4 KB).
Build a table once and keep it; heatgw.meter copies what it needs, so the table may be
dropped after that. Building one imports heatgw.fluid_data (≈ 9.8 KB from an .mpy on
the 64-bit host, about half that on the 32-bit targets) and forgets it again
afterwards, so only the table stays; frozen into the firmware, the data live in flash.

Floats appear only while a glycol table is built and in the display / commissioning
helpers (k_kwh_per_m3k, enthalpy_j_per_kg, density_kg_m3); the meter uses the kernel.
"""

try:
    from micropython import const
except ImportError:  # CPython (host tools, tests): const() is the identity on ints
    const = int

import math
from array import array

STEP_SHIFT = 9
STEP_MC = 512  # 1 << STEP_SHIFT
_FRAC = const(511)


class FluidTable:
    STEP_SHIFT = STEP_SHIFT  # the module constant, seen by the kernel via table.STEP_SHIFT

    def __init__(self, name, t0_mc, t_min_mc, t_max_mc, h_q64, rho_q32, mass_fraction=None):
        n = len(h_q64)
        if n < 2 or len(rho_q32) != n:
            raise ValueError("fluid table: h and rho need the same length >= 2")
        if not t0_mc <= t_min_mc <= t_max_mc:
            raise ValueError("fluid table: need t0 <= t_min <= t_max")
        if ((t_max_mc - t0_mc) >> STEP_SHIFT) + 1 > n - 1:
            raise ValueError("fluid table: t_max has no right neighbour on the grid")
        self.name = name
        self.t0_mc = t0_mc
        self.n = n
        self.h_q64 = h_q64
        self.rho_q32 = rho_q32
        self.t_min_mc = t_min_mc
        self.t_max_mc = t_max_mc
        self.mass_fraction = mass_fraction

    def __repr__(self):
        return "<FluidTable %s %d..%d m°C n=%d>" % (
            self.name, self.t_min_mc, self.t_max_mc, self.n)


def _load():
    from heatgw import fluid_data

    return fluid_data


def _unload():
    # heatgw.fluid_data is only needed while a table is built: forget the module so
    # its constants (≈ 4 KB loaded from an .mpy on a 32-bit port) can be collected.
    # Frozen into the firmware they live in flash and this frees next to nothing.
    import sys

    import heatgw

    sys.modules.pop("heatgw.fluid_data", None)
    try:
        del heatgw.fluid_data
    except AttributeError:
        pass


def water():
    """Water, IAPWS-IF97 at 1.6 MPa, valid 0 … 150 °C."""
    d = _load()
    try:
        return FluidTable("water", d.WATER_T0_MC, d.WATER_T_MIN_MC, d.WATER_T_MAX_MC,
                          array("i", d.WATER_H_Q64), array("i", d.WATER_RHO_Q32))
    finally:
        _unload()


def propylene_glycol(mass_fraction):
    """Aqueous propylene glycol (Melinder 2010 / CoolProp INCOMP::MPG), x = 0 … 0.6."""
    d = _load()
    try:
        return _glycol("propylene glycol", d, d.MPG_RHO, d.MPG_CP, d.MPG_TFREEZE,
                       mass_fraction)
    finally:
        _unload()


def ethylene_glycol(mass_fraction):
    """Aqueous ethylene glycol (Melinder 2010 / CoolProp INCOMP::MEG), x = 0 … 0.6."""
    d = _load()
    try:
        return _glycol("ethylene glycol", d, d.MEG_RHO, d.MEG_CP, d.MEG_TFREEZE,
                       mass_fraction)
    finally:
        _unload()


FLUIDS = ("water", "propylene_glycol", "ethylene_glycol")


def table_for(fluid, mass_fraction=None):
    """The table for a configured fluid: "water" (no mass fraction), or "propylene_glycol" /
    "ethylene_glycol" with its mass fraction. Anything else raises a clear ValueError."""
    if fluid == "water":
        if mass_fraction:
            raise ValueError("fluid water takes no mass_fraction (got %r)" % (mass_fraction,))
        return water()
    if fluid in ("propylene_glycol", "ethylene_glycol"):
        if mass_fraction is None:
            raise ValueError("fluid %s needs a mass_fraction (e.g. 0.3 for 30 %%)" % fluid)
        build = propylene_glycol if fluid == "propylene_glycol" else ethylene_glycol
        return build(mass_fraction)
    raise ValueError("unknown fluid %r; one of %s" % (fluid, ", ".join(FLUIDS)))


def _horner(coeffs, z, num):
    s = num(0)
    for k in range(len(coeffs) - 1, -1, -1):
        s = s * z + num(coeffs[k])
    return s


def _glycol(label, d, rho_c, cp_c, tf_c, mass_fraction, num=float):
    # num: the float type; tests pass numpy.float32 to emulate the targets' floats
    x = num(mass_fraction)
    if not d.GLYCOL_X_MIN <= x <= d.GLYCOL_X_MAX:
        raise ValueError("%s: mass fraction must be %g ... %g (e.g. 0.3 for 30 %%), got %r"
                         % (label, d.GLYCOL_X_MIN, d.GLYCOL_X_MAX, mass_fraction))
    xx = (x - num(d.GLYCOL_XC)) / num(d.GLYCOL_XS)
    tc = num(d.GLYCOL_TC)
    ts = num(d.GLYCOL_TS)
    # polynomials in U = (t - TC) / TS for this concentration
    rho_u = [_horner(row, xx, num) for row in rho_c]
    cp_u = [_horner(row, xx, num) for row in cp_c]
    # valid from the freezing point rounded up to 0.1 K (tiny margin for rounding)
    t_min = math.ceil(_horner(tf_c, xx, num) * 10 + num(0.001)) * 100
    t_max = d.GLYCOL_T_MAX_C * 1000
    t0 = (t_min // STEP_MC) * STEP_MC
    n = (t_max - t0) // STEP_MC + 2
    # cp at every grid point and half point (0.256 K steps)
    half = STEP_MC // 2
    w = num(64 * STEP_MC) / 6000  # Simpson weight: 64 [1/64 J/kg] · 0.512 K / 6
    h = array("i", [0] * n)
    rho = array("i", [0] * n)
    acc = 0  # h in 1/64 J/kg, integer part ...
    frac = num(0)  # ... and the fraction carried (keeps float32 sums exact enough)
    cp_prev = num(0)
    for i in range(n):
        u = (num(t0 + i * STEP_MC) / 1000 - tc) / ts
        rho[i] = int(_horner(rho_u, u, num) * 32 + num(0.5))
        cp = _horner(cp_u, u, num)
        if i:
            um = (num(t0 + i * STEP_MC - half) / 1000 - tc) / ts
            frac += (cp_prev + 4 * _horner(cp_u, um, num) + cp) * w
            whole = int(frac)
            acc += whole
            frac -= whole
            h[i] = acc + (1 if frac >= 0.5 else 0)
        cp_prev = cp
    pct = "%g" % (x * 100)
    return FluidTable("%s %s%%" % (label, pct), t0, t_min, t_max, h, rho, mass_fraction=x)


# -- float helpers for display and commissioning (the meter itself uses the kernel) --------


def _mc(table, t_c):
    t = round(t_c * 1000)
    if not table.t_min_mc <= t <= table.t_max_mc:
        raise ValueError("%s: %r °C outside %g ... %g °C" % (
            table.name, t_c, table.t_min_mc / 1000, table.t_max_mc / 1000))
    return t


def _h_diff_q64(table, a_mc, b_mc):
    """h(a) − h(b) in 1/64 J/kg (float), interpolated like the kernel but without
    truncation; the large parts are integer differences, exact."""
    h = table.h_q64
    xa = a_mc - table.t0_mc
    xb = b_mc - table.t0_mc
    ia = xa >> STEP_SHIFT
    ib = xb >> STEP_SHIFT
    part = (h[ia + 1] - h[ia]) * (xa & _FRAC) - (h[ib + 1] - h[ib]) * (xb & _FRAC)
    return (h[ia] - h[ib]) + part / STEP_MC


def _rho_q32(table, t_mc):
    r = table.rho_q32
    x = t_mc - table.t0_mc
    i = x >> STEP_SHIFT
    return r[i] + (r[i + 1] - r[i]) * (x & _FRAC) / STEP_MC


def enthalpy_j_per_kg(table, t_c):
    """h(t) − h(t0) in J/kg (linear interpolation); only differences are meaningful."""
    t = _mc(table, t_c)
    return _h_diff_q64(table, t, table.t0_mc) / 64


def density_kg_m3(table, t_c):
    """ρ(t) in kg/m³ (linear interpolation)."""
    return _rho_q32(table, _mc(table, t_c)) / 32


def k_kwh_per_m3k(table, supply_c, return_c, meter_in_return):
    """EN 1434 heat coefficient k = (h(θf) − h(θr)) / (ΔΘ · v(θ at the volume sensor)),
    kWh/(m³·K). Temperatures in °C (resolved to 1 m°C). meter_in_return: the volume
    sensor is in the return (cold) pipe; else in the flow (hot) pipe. With θf == θr the
    limit ρ·dh/dθ is returned; with θf < θr the same formula holds (k > 0)."""
    tf = _mc(table, supply_c)
    tr = _mc(table, return_c)
    if tf == tr:
        x = tf - table.t0_mc
        i = x >> STEP_SHIFT
        dh = (table.h_q64[i + 1] - table.h_q64[i]) / STEP_MC  # 1/64 J/kg per mK
    else:
        dh = _h_diff_q64(table, tf, tr) / (tf - tr)
    rho = _rho_q32(table, tr if meter_in_return else tf)
    # (1/64 J/kg per mK) · (1/32 kg/m³) → J/(m³·K): × 1000 / 2048; J → kWh: / 3.6e6
    return dh * rho / 7372800
