"""The pulse input drivers on the real micropython binary, driven by the host board's
emulated pin (boards/host/pulse_emu.py): lib/pulsecounter (interrupt counter) and
lib/pcntcounter (hardware counter, here over the host's emulated machine.Counter).

- the interrupt handlers count, stamp and set the ThreadSafeFlag without allocating
  (heap locked), and wrap at 2**30;
- a hard interrupt where the port has one (rp2, the host), soft where Pin.irq refuses
  `hard` (esp32);
- the flag wakes an asyncio task;
- a bounce shorter than the minimum width is not counted, by either driver;
- interrupts masked by flash operations: the interrupt counter loses the pulses that
  collapse into one pending interrupt (and the loss is seen), the hardware counter is exact.
"""

import json

import pytest

PRELUDE = r"""
import json
import micropython
import board
clk = board.clock
pin = board.flow_pin()


def train(t0, n, period, low, bounce=0):
    # n pulses from t0; with bounce, each edge chatters: low 1 ms, high 1 ms, then the
    # real level (a reed contact), at make and at break
    for i in range(n):
        t = t0 + i * period
        if bounce:
            pin.add_pulse(t, 1)  # a 1 ms low, then high for 1 ms: bounce at make
            pin.add_pulse(t + 2, low)
            pin.add_pulse(t + 2 + low + 1, 1)  # bounce at break: 1 ms high, 1 ms low
        else:
            pin.add_pulse(t, low)


def run(ms, step=100):
    # time passes in steps (the node idles); the pin's transitions run on the way
    end = clk.vt + ms
    while clk.vt < end:
        clk.sleep_ms(min(step, end - clk.vt))
"""


def run(mp, code, monkeypatch, tmp_path, counter="irq", **env):
    monkeypatch.setenv("HEATGW_FLASH", str(tmp_path / "flash.bin"))
    monkeypatch.setenv("HEATGW_PULSE_COUNTER", counter)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    out = mp.run_code(PRELUDE + code)
    return [json.loads(ln[2:]) for ln in out.splitlines() if ln.startswith("R ")]


def test_irq_handlers_allocate_nothing_and_wrap_at_2_30(mp, monkeypatch, tmp_path):
    """Both interrupt counters and the hardware counter's timestamp handler run with the
    heap locked (as a hard interrupt does): count, stamp, ThreadSafeFlag.set()."""
    (r,) = run(mp, r"""
import asyncio
from pulsecounter import PulseCounter
from pcntcounter import PcntCounter
from pulse_emu import Counter, PulsePin
res = {}
for name in ("falling", "debounced", "pcnt"):
    p = PulsePin(clk)  # one pin per driver; the clock runs the one it knows
    clk.pin = p
    flag = asyncio.ThreadSafeFlag()
    if name == "pcnt":
        pc = PcntCounter(Counter(0, p), p, flag=flag, clock=clk)
    else:
        pc = PulseCounter(p, min_pulse_us=2000 if name == "debounced" else 0, flag=flag,
                          clock=clk)
        pc._count = 0x3FFFFFFE  # two pulses before the wrap
    t0 = clk.vt + 10
    for i in range(4):
        p.add_pulse(t0 + 10 * i, 5)

    def edges():
        # in a function: a new global would grow the globals dict under the lock
        micropython.heap_lock()
        try:
            clk.sleep_ms(60)  # 8 transitions, each running the handler at its instant
        except MemoryError:
            micropython.heap_unlock()
            return False
        micropython.heap_unlock()
        return True

    ok = edges()
    res[name] = [ok, pc.read(), p.irqs, flag.state, pc.hard, t0 + 30]
print("R", json.dumps(res))
""", monkeypatch, tmp_path)
    assert sorted(r) == ["debounced", "falling", "pcnt"]
    for name, (ok, (count, edge), irqs, flag, hard, last_fall) in r.items():
        assert ok, f"{name}: the handler allocated"
        assert flag == 1 and hard is True, name
        if name == "pcnt":
            assert count == 4 and irqs == 4
        else:  # 0x3FFFFFFE + 4 wraps to 2
            assert count == 2, (name, count)
            assert irqs == (8 if name == "debounced" else 4)
        assert edge == last_fall, name  # every driver stamps the last pulse's fall


def test_hard_irq_where_the_port_has_one_soft_where_not(mp, monkeypatch, tmp_path):
    (r,) = run(mp, r"""
from pulsecounter import PulseCounter
from pcntcounter import PcntCounter
from pulse_emu import Counter, PulsePin


class Esp32Pin(PulsePin):
    # esp32's Pin.irq(handler, trigger, wake): no `hard` (TypeError, as the port raises)
    def irq(self, handler=None, trigger=12, **kw):
        if kw:
            raise TypeError("unexpected keyword argument")
        PulsePin.irq(self, handler, trigger)


out = {}
for cls in (PulsePin, Esp32Pin):
    for drv in ("irq", "pcnt"):
        p = cls(clk)
        clk.pin = p
        pc = (PulseCounter(p, clock=clk) if drv == "irq"
              else PcntCounter(Counter(0, p), p, clock=clk))
        p.add_pulse(clk.vt + 5, 2)
        clk.sleep_ms(10)
        out[cls.__name__ + ":" + drv] = [pc.hard, p.hard, pc.count()]
print("R", json.dumps(out))
""", monkeypatch, tmp_path)
    assert r == {"PulsePin:irq": [True, True, 1], "PulsePin:pcnt": [True, True, 1],
                 "Esp32Pin:irq": [False, False, 1], "Esp32Pin:pcnt": [False, False, 1]}


def test_flag_wakes_a_waiting_task(mp, monkeypatch, tmp_path):
    """The hand-off: a task awaiting the driver's ThreadSafeFlag runs after a pulse (the
    unix port's real asyncio; the emulated edge comes from the clock)."""
    (r,) = run(mp, r"""
import asyncio
flag = asyncio.ThreadSafeFlag()
pc = board.flow_pulse_counter(flag=flag)
woke = []


async def waiter():
    while True:
        await flag.wait()
        woke.append(pc.read())


async def main():
    asyncio.create_task(waiter())
    await asyncio.sleep_ms(5)
    before = list(woke)
    for k in range(3):
        pin.add_pulse(clk.vt + 3, 2)
        clk.sleep_ms(10)  # the edge interrupts: the handler sets the flag
        await asyncio.sleep_ms(5)
    print("R", json.dumps({"before": before, "woke": woke}))
asyncio.run(main())
""", monkeypatch, tmp_path)
    assert r["before"] == []
    assert [c for c, _t in r["woke"]] == [1, 2, 3]


@pytest.mark.parametrize("counter", ["irq", "counter"])
def test_bounce_shorter_than_the_minimum_width_is_not_counted(mp, monkeypatch, tmp_path,
                                                              counter):
    """A reed contact chattering at make and break (1 ms lows and highs) with real pulses
    of 20 ms: with min_pulse_us = 5000 every pulse counts once; without, the chatter adds
    falling edges (three per pulse)."""
    out = []
    for min_us in (5000, 0):
        (r,) = run(mp, f"MIN_US = {min_us}\n" + r"""
pc = board.flow_pulse_counter(min_pulse_us=MIN_US)
train(clk.vt + 10, 500, 50, 20, bounce=True)
run(500 * 50 + 100)
print("R", json.dumps([pc.count(), pin.edges]))
""", monkeypatch, tmp_path, counter)
        out.append(r)
    (debounced, edges), (raw, _) = out
    assert edges == 500 * 6
    assert debounced == 500
    assert raw == 1500


@pytest.mark.parametrize("counter", ["irq", "counter"])
def test_pulses_while_flash_operations_mask_interrupts(mp, monkeypatch, tmp_path, counter):
    """500 Hz for 20 s (10,000 pulses) while the node writes files on its flash (littlefs
    programs and erases; the host board masks interrupts 45 ms per erase, 1 ms per
    program, as an RP2040 runs them with interrupts off). The interrupt counter loses the
    pulses that collapse into one pending interrupt, and the loss is seen: its count plus
    the collapsed edges is the number sent. The hardware counter counts every one."""
    (r,) = run(mp, r"""
import os
pc = board.flow_pulse_counter()
d = board.data_dir()
dev = board.flash_device()
ops0 = (dev.programs, dev.erases)
sent = 0
for s in range(20):
    train(clk.vt, 500, 2, 1)  # this second's pulses: 2 ms period, 1 ms low
    sent += 500
    for k in range(10):
        if k == 3:  # a telemetry-sized write, and a new file: programs and erases
            with open(d + "/t%d" % (s % 4), "wb") as f:
                f.write(bytes(range(256)) * 24)
        run(100, 100)
run(10)
print("R", json.dumps({"count": pc.count(), "sent": sent, "collapsed": pin.collapsed,
                       "irqs": pin.irqs, "programs": dev.programs - ops0[0],
                       "erases": dev.erases - ops0[1], "mask": board.FLASH_IRQ_MASK_MS}))
""", monkeypatch, tmp_path, counter)
    assert r["sent"] == 10_000 and r["mask"] == [45, 1]
    assert r["erases"] >= 10 and r["programs"] >= 20, r
    if counter == "counter":
        assert r["count"] == 10_000, r  # the hardware counter: exact
    else:
        lost = r["sent"] - r["count"]
        assert lost > 100, r  # ~22 pulses per 45 ms erase
        assert lost == r["collapsed"], r  # each lost pulse is an edge that collapsed
    print(counter, r)


def test_no_masking_without_flash_operations_and_with_the_mask_off(mp, monkeypatch,
                                                                     tmp_path):
    """The same train with the mask off (HEATGW_FLASH_IRQ_MASK=0,0): the interrupt counter
    counts every pulse too, so the loss above is the masking's."""
    (r,) = run(mp, r"""
pc = board.flow_pulse_counter()
d = board.data_dir()
for s in range(5):
    train(clk.vt, 500, 2, 1)
    with open(d + "/t", "wb") as f:
        f.write(bytes(range(256)) * 24)
    run(1000)
run(10)
print("R", json.dumps([pc.count(), pin.collapsed]))
""", monkeypatch, tmp_path, "irq", HEATGW_FLASH_IRQ_MASK="0,0")
    assert r == [2500, 0]
