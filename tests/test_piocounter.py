"""lib/piocounter's PIO program, run instruction by instruction on the host: tests/rp2_emu
is a test double of `rp2` that assembles the program through the asm_pio protocol to the
RP2040's instruction words (from the datasheet) and executes them against an input
waveform in us. No RP2040 runs here; what is tested is the program's logic and the
driver's reading of X:

- every pulse counts once; a low shorter than min_pulse_us (reed bounce at make and break)
  does not; the minimum width is in 2-cycle loop turns at 1 MHz;
- the count needs no interrupt at all (the CPU's interrupt disabled throughout: exact);
- reading X through executed instructions gives a small int that wraps at 2**30;
- the interrupt handler (the edge time) allocates nothing.
"""

import json

from host_tools.paths import REPO

RP2_EMU = REPO / "tests" / "rp2_emu"

PRELUDE = r"""
import json
import micropython
import rp2
from piocounter import PioCounter


def make(times, min_us):
    wave = rp2.Wave(times)
    sm = rp2.StateMachine(0, wave)
    pc = PioCounter(sm, rp2.WavePin(wave), min_pulse_us=min_us, clock=rp2.CLOCK)
    return wave, sm, pc


def train(t0, n, period, low, bounce=False):
    # level changes (us) of n pulses; a reed's bounce: at make a 200 us low, 150 us high,
    # 100 us low, 100 us high; at break 100 us high, 300 us low
    out = []
    for i in range(n):
        t = t0 + i * period
        if bounce:
            out += [t, t + 200, t + 350, t + 450, t + 550]  # ends low: the real pulse
            e = t + 550 + low
            out += [e, e + 100, e + 400]
        else:
            out += [t, t + low]
    return out
"""


def run(mp, code):
    out = mp.run_code(PRELUDE + code, extra_path=[RP2_EMU])
    return [json.loads(ln[2:]) for ln in out.splitlines() if ln.startswith("R ")]


def test_program_counts_pulses_and_stamps_their_falling_edge(mp):
    (r,) = run(mp, r"""
wave, sm, pc = make(train(1_000_000, 200, 50_000, 20_000), 2000)
sm.run_to(1_000_000 + 200 * 50_000)
print("R", json.dumps({"read": pc.read(), "irqs": sm.irqs, "hard": [pc.hard, sm.hard],
                       "prog": sm.prog["name"], "n": len(sm.prog["words"]),
                       "turns": sm.osr, "rx": sm.rx}))
""")
    assert r["prog"] == "_count_low_pulses" and r["n"] == 8
    assert r["turns"] == 1000  # 2000 us at 1 MHz in loops of 2 cycles
    count, edge = r["read"]
    assert count == 200 and r["irqs"] == 200
    assert edge == (1_000_000 + 199 * 50_000) // 1000  # the last pulse's fall, in ms
    assert r["hard"] == [True, True] and r["rx"] == []  # the read left the FIFO empty


def test_bounce_shorter_than_the_minimum_width_is_not_counted(mp):
    (r,) = run(mp, r"""
res = []
for min_us in (2000, 0):
    t0 = rp2.now_us() + 10
    wave, sm, pc = make(train(t0, 300, 50_000, 20_000, bounce=True), min_us)
    sm.run_to(t0 + 300 * 50_000)
    res.append(pc.count())
print("R", json.dumps(res))
""")
    # debounced: one per pulse; raw: the two make bounces, the pulse, the break bounce
    assert r == [300, 1200]


def test_500_hz_with_a_half_millisecond_minimum(mp):
    (r,) = run(mp, r"""
wave, sm, pc = make(train(10, 5000, 2000, 1000), 500)
sm.run_to(10 + 5000 * 2000)
print("R", json.dumps(pc.read()))
""")
    assert r[0] == 5000


def test_a_pulse_under_way_at_start_is_not_counted(mp):
    """The program first waits for the input to be high: a low at start (a pulse half
    over, or an input stuck low) is no pulse."""
    (r,) = run(mp, r"""
wave, sm, pc = make(train(0, 3, 2000, 1000), 0)
sm.run_to(3 * 2000)
print("R", json.dumps(pc.count()))
""")
    assert r == 2


def test_the_count_needs_no_interrupt(mp):
    """With the CPU's interrupt off for the whole train (as if masked by flash operations
    all along), the count is still exact: it lives in X. Only the edge time is missing."""
    (r,) = run(mp, r"""
wave, sm, pc = make(train(10, 1000, 2000, 1000), 0)
sm.irq_enabled = False
sm.run_to(10 + 1000 * 2000)
print("R", json.dumps([pc.read(), sm.irqs]))
""")
    assert r == [[1000, None], 0]


def test_reading_x_wraps_at_2_30_in_small_ints(mp):
    """X counts down from 0 through 2**32; the executed `in x, 30` gives its low 30 bits, a
    small int on a 32-bit port. Started 3 pulses before X's zero, 5 pulses read as
    2**30 - 3 then 2, 5 apart with count_diff."""
    (r,) = run(mp, r"""
from pulsecounter import count_diff
wave, sm, pc = make(train(10, 5, 2000, 1000), 0)
sm.x = 3
before = pc.count()
sm.run_to(10 + 5 * 2000)
after = pc.count()
print("R", json.dumps([before, after, count_diff(after, before), sm.x]))
""")
    assert r == [(1 << 30) - 3, 2, 5, (1 << 32) - 2]


def test_edge_handler_allocates_nothing(mp):
    (r,) = run(mp, r"""
import asyncio
wave, sm, pc = make([], 3000)
pc.flag = asyncio.ThreadSafeFlag()


def edge():
    micropython.heap_lock()
    try:
        pc._edge(sm)
    except MemoryError:
        micropython.heap_unlock()
        return False
    micropython.heap_unlock()
    return True


print("R", json.dumps([edge(), pc.flag.state]))
""")
    assert r == [True, 1]
