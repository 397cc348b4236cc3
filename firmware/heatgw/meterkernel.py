"""Heat-meter integration kernel: the one viper hot loop of heatgw.

`integrate(samples, n, table, state) -> flags` integrates a batch of `n` samples
into exact multi-limb totals. It allocates nothing (proved under heap_lock by
tests/test_meterkernel.py) and is fed only by heatgw.meter.HeatMeter, which
validates everything the contract below demands; the kernel itself does not
re-check its inputs.

32-bit safety
-------------
ESP32 and RP2040 viper ints are 32 bits and wrap silently; the 64-bit unix port
hides that. Every intermediate below stays inside [-2**31, 2**31 - 1] for any input
that meets the contract; tests/range_proof.py runs this very source under CPython
with range-checked integers on worst-case inputs to prove it. Constants stay
< 2**30 (mpy-cross -march=xtensawin/armv6m rejects larger ones in viper code).

Every word the kernel reads (samples, table, state) is >= 0: a ptr32 load is
sign-extended on a 32-bit target but zero-extended on the 64-bit unix port, so a
negative word would read differently on host and target. That is why
temperatures are absolute (milli-kelvin) and INVALID is 0.

Samples: array('i'), SAMPLE_WORDS words per sample, interleaved
    [S_SUPPLY] supply (flow) temperature, mK absolute (m°C + 273150); INVALID = 0
    [S_RETURN] return temperature, mK absolute; INVALID = 0
    [S_VOL]    volume increment since the previous sample, µL, 0 <= v <= VOL_MAX_UL
    [S_DT]     tick delta since the previous sample, ms, 0 <= dt <= DT_MAX_MS

    VOL_MAX_UL = 2**27 - 1 µL (134.2 L): 36 m³/h (qs of a DN40 meter) for 13.4 s,
    so 10 s samples at 36 m³/h (100 L = 1e8 µL) fit; HeatMeter.add splits any
    larger increment into several samples.
    Temperature codes: valid ones lie in [1, 2**30); -50..200 °C is 223150..473150.

Table: array('i'), 2·N words: h[0..N) then rho[N..2N), grid t0 + k·512 mK
    h   specific enthalpy minus h(t0), 1/64 J/kg, 0 <= h < 2**26, non-decreasing,
        h[k+1] - h[k] < 2**21
    rho density, 1/32 kg/m³, 0 < rho < 2**16, |rho[k+1] - rho[k]| < 2**21
    and rho_max · (h(t_max) - h(t_min)) < 2**41 over the configured range, so the
    energy density e = rho·Δh/2048 < 2**30 J/m³ (water 0→150 °C: 32000 · 4.05e7
    ≈ 2**40.2; 1062 kg/m³ glycol: 34000 · 4.1e7 ≈ 2**40.3).

State: array('i'), STATE_WORDS words (parameters, then totals; every total is a
little-endian run of base-2**30 limbs, all limbs but the top one < 2**30)
    ST_T0       grid start, mK absolute (t0 >= 0)
    ST_N        table length N (rho starts at table[N])
    ST_TMIN     lowest valid temperature, mK absolute, >= max(t0, 1)
    ST_TMAX     highest valid temperature, mK absolute, (t_max - t0) >> 9 <= N - 2
    ST_CUTOFF   ΔΘ cutoff, mK, 1 <= cutoff < 2**29
    ST_IN_RETURN  1: volume sensor in the return pipe (rho at θr), 0: in the flow pipe
    ST_E0..E2   energy, nJ (limbs of 2**0, 2**30, 2**60 nJ)
    ST_V0..V1   volume, µL (2**30 µL ≈ 1073.7 L per high unit)
    ST_TIME0..1 all time seen, ms
    ST_ERR0..1  error time, ms: a sensor INVALID or a temperature outside [tmin, tmax]
    ST_LOW0..1  low-ΔΘ time, ms: valid temperatures, ΔΘ < cutoff (negative included)
    ST_NEG0..1  negative-ΔΘ time, ms: valid temperatures, ΔΘ <= -cutoff
    Top limbs must be < 2**30 on entry and n <= 2**16, so a top limb never passes
    2**30 + 2**16 inside a call.

Per sample: volume and time always accumulate. Energy accumulates only with both
temperatures valid and in range and ΔΘ >= cutoff:
    E [nJ] = V [µL] · e [J/m³],  e = rho(θ at the volume sensor) · (h(θf) - h(θr)) >> 11
(1/32 · 1/64 = 1/2048), h and rho interpolated linearly on the 512 mK grid
(rounded to nearest). ΔΘ is bounded only by the table range (water: 150 K; the
proof covers 0→130 and 20→150 °C). Negative ΔΘ is reported (FLAG_NEGATIVE and its
own time), never added to or subtracted from the energy.

Intermediates (all >= 0 unless noted):
    x = θ - t0 < 2**30; k = x >> 9; f = x & 511 < 2**9
    (h[k+1] - h[k]) · f + 256 < 2**21 · 2**9 = 2**30 (rho: signed, |·| < 2**30)
    ΔΘ = θf - θr, |ΔΘ| < 2**30;  Δh < 2**26 (h is non-decreasing)
    Δh = a1·2**14 + a0: rho·a0 < 2**16 · 2**14 = 2**30; rho·a1 < 2**16 · 2**12 = 2**28
    e = (rho·a1 << 3) + (rho·a0 >> 11) = (rho·Δh) >> 11 < 2**30 (table contract)
    e = e1·2**15 + e0 (e1, e0 < 2**15); V = w1·2**15 + w0 (w1 < 2**12, w0 < 2**15)
    mid = e1·w0 + e0·w1 < 2**30 + 2**27;  lo = e0·w0 + ((mid & 0x7FFF) << 15) < 2**31
    E0 + (lo & M30) < 2**31;  E1 + 2 + (mid >> 15) + e1·w1 < 2**30 + 2**17 + 2**27
    time/volume low limbs: < 2**30 + 2**27 before their carry.

Totals over 10 years at the gateway's rated maximum (1 MW, 36 m³/h):
    energy 1e6 W · 3.156e8 s = 3.156e14 J = 3.156e23 nJ ≈ 2**78.1 → E2 ≈ 2.7e5
    volume 3.156e6 m³ = 3.156e15 µL ≈ 2**51.5                     → V1 ≈ 2.9e6
    time   3.156e11 ms ≈ 2**38.2                                   → TIME1 ≈ 294
    Every top limb stays far below 2**30; the resolution stays 1 nJ, 1 µL, 1 ms.
    Capacity (top limb 2**30): 2**90 nJ ≈ 39,000 years at 1 MW; 2**60 µL ≈
    3,650 years at 36 m³/h; 2**60 ms ≈ 36 million years.

Returns the OR of FLAG_* for the batch.
"""

import micropython
from micropython import const

# sample layout
S_SUPPLY = const(0)
S_RETURN = const(1)
S_VOL = const(2)
S_DT = const(3)
SAMPLE_WORDS = const(4)

INVALID = const(0)  # temperature code of a missing / faulty reading (0 K)
K_OFFSET_MC = const(273150)  # temperature code = m°C + K_OFFSET_MC
VOL_MAX_UL = const(0x7FFFFFF)  # 2**27 - 1
DT_MAX_MS = const(60000)
STEP_SHIFT = const(9)

# state layout
ST_T0 = const(0)
ST_N = const(1)
ST_TMIN = const(2)
ST_TMAX = const(3)
ST_CUTOFF = const(4)
ST_IN_RETURN = const(5)
ST_E0 = const(6)
ST_E1 = const(7)
ST_E2 = const(8)
ST_V0 = const(9)
ST_V1 = const(10)
ST_TIME0 = const(11)
ST_TIME1 = const(12)
ST_ERR0 = const(13)
ST_ERR1 = const(14)
ST_LOW0 = const(15)
ST_LOW1 = const(16)
ST_NEG0 = const(17)
ST_NEG1 = const(18)
STATE_WORDS = const(19)

# returned flags
FLAG_NEGATIVE = const(1)  # ΔΘ <= -cutoff seen (not integrated)
FLAG_FAULT = const(2)  # a temperature was INVALID (sensor fault)
FLAG_RANGE = const(4)  # a valid temperature was outside [tmin, tmax]
FLAG_LOW = const(8)  # ΔΘ < cutoff seen (negative included)
FLAG_ENERGY = const(16)  # some energy was integrated

_M30 = const(0x3FFFFFFF)
_M15 = const(0x7FFF)
_M14 = const(0x3FFF)
_FRAC = const(511)
_HALF = const(256)  # rounds the interpolation to nearest


@micropython.viper
def integrate(samples: ptr32, n: int, table: ptr32, state: ptr32) -> int:
    t0 = state[ST_T0]
    nt = state[ST_N]
    tmin = state[ST_TMIN]
    tmax = state[ST_TMAX]
    cutoff = state[ST_CUTOFF]
    inret = state[ST_IN_RETURN]
    ncut = 0 - cutoff
    e0 = state[ST_E0]
    e1 = state[ST_E1]
    e2 = state[ST_E2]
    v0 = state[ST_V0]
    v1 = state[ST_V1]
    tm0 = state[ST_TIME0]
    tm1 = state[ST_TIME1]
    er0 = state[ST_ERR0]
    er1 = state[ST_ERR1]
    lw0 = state[ST_LOW0]
    lw1 = state[ST_LOW1]
    ng0 = state[ST_NEG0]
    ng1 = state[ST_NEG1]
    flags = 0
    i = 0
    end = n * SAMPLE_WORDS
    while i < end:
        ts = samples[i + S_SUPPLY]
        tr = samples[i + S_RETURN]
        vol = samples[i + S_VOL]
        dt = samples[i + S_DT]
        i += SAMPLE_WORDS
        v0 += vol
        v1 += v0 >> 30
        v0 &= _M30
        tm0 += dt
        tm1 += tm0 >> 30
        tm0 &= _M30
        if ts < tmin or ts > tmax or tr < tmin or tr > tmax:
            er0 += dt
            er1 += er0 >> 30
            er0 &= _M30
            if ts == INVALID or tr == INVALID:
                flags |= FLAG_FAULT
            else:
                flags |= FLAG_RANGE
            continue
        d = ts - tr
        if d < cutoff:
            lw0 += dt
            lw1 += lw0 >> 30
            lw0 &= _M30
            flags |= FLAG_LOW
            if d <= ncut:
                ng0 += dt
                ng1 += ng0 >> 30
                ng0 &= _M30
                flags |= FLAG_NEGATIVE
            continue
        if vol == 0:
            continue
        # h(θf), h(θr): linear interpolation on the 512 mK grid
        xs = ts - t0
        k = xs >> 9
        a = table[k]
        hs = a + (((table[k + 1] - a) * (xs & _FRAC) + _HALF) >> 9)
        xr = tr - t0
        k = xr >> 9
        a = table[k]
        dh = hs - a - (((table[k + 1] - a) * (xr & _FRAC) + _HALF) >> 9)
        if dh <= 0:
            continue
        # rho at the volume sensor
        xm = xs
        if inret:
            xm = xr
        k = nt + (xm >> 9)
        a = table[k]
        rho = a + (((table[k + 1] - a) * (xm & _FRAC) + _HALF) >> 9)
        # energy density, J/m³ = (rho * dh) >> 11 without a product over 2**30
        ev = ((rho * (dh >> 14)) << 3) + ((rho * (dh & _M14)) >> 11)
        # E [nJ] = ev * vol, 15-bit limbs, into base-2**30 limbs
        hi = ev >> 15
        lo = ev & _M15
        w1 = vol >> 15
        w0 = vol & _M15
        mid = hi * w0 + lo * w1
        low = lo * w0 + ((mid & _M15) << 15)
        e0 += low & _M30
        e1 += (e0 >> 30) + (low >> 30) + (mid >> 15) + hi * w1
        e0 &= _M30
        e2 += e1 >> 30
        e1 &= _M30
        flags |= FLAG_ENERGY
    state[ST_E0] = e0
    state[ST_E1] = e1
    state[ST_E2] = e2
    state[ST_V0] = v0
    state[ST_V1] = v1
    state[ST_TIME0] = tm0
    state[ST_TIME1] = tm1
    state[ST_ERR0] = er0
    state[ST_ERR1] = er1
    state[ST_LOW0] = lw0
    state[ST_LOW1] = lw1
    state[ST_NEG0] = ng0
    state[ST_NEG1] = ng1
    return flags
