"""Benchmark the heat-meter kernel on the host's micropython: viper vs plain bytecode.

Runs ONE micropython process ($MICROPYTHON, see host_tools.paths) that integrates the
same batches with heatgw.meterkernel.integrate (viper) and with a bytecode twin made
from the very same source (the `@micropython.viper` line removed; bytecode ignores
the ptr32/int annotations). Prints µs per sample for each, the speed-up and the heap
bytes allocated per viper batch (gc.mem_alloc delta; then again under heap_lock).
Timing figures are printed, never asserted. Then, in a second process, the store-and-
forward queue (heatgw.recqueue) on the host's NOR-flash model (boards/host/flashdev.py)
with each target's littlefs geometry: µs and flash operations per appended record
(append + its ack), extrapolated to a day of 10 s telemetry (queue_bench()). Then, in a
third process, the backlog drain (drain_bench()): the whole node (heatgw.start.build, host
board standalone, vasyncio's virtual time with real sockets) boots with N telemetry records
already queued on its flash and its real Telemetry task sends them to a real mosquitto
started for the run (tests/brokers.py) on loopback: records/s over real wall time from the
first backlog PUBLISH to the last backlog PUBACK, and the encoded size of every telemetry
PUBLISH (the client's own packet: fixed header, topic, packet id, payload) plus its 4-byte
PUBACK; and the longest real time the node's network side held the CPU in one go during
the drain and before it (heatgw.clock.took: virtual time does not see a blocking call).
No mosquitto: a "skipped" line. Last line:

    viper_speedup=<x> alloc_bytes_per_batch=<n> drain_records_per_s=<x>
    wire_bytes_per_record=<n> net_worst_real_ms=<x>
    (one line; the last three "skipped" without mosquitto)
"""

import json
import os
import random
import sys
import tempfile
from pathlib import Path

from host_tools import mprun
from host_tools.paths import FIRMWARE, REPO

KERNEL_SRC = FIRMWARE / "heatgw" / "meterkernel.py"
VIPER_LINE = "@micropython.viper\n"


def twin_prelude():
    """MicroPython source defining `bc_integrate`, the bytecode twin of the kernel."""
    path, line = str(KERNEL_SRC), VIPER_LINE
    return (
        "def _make_twin():\n"
        f"    with open({path!r}) as f:\n"
        "        src = f.read()\n"
        f"    if src.count({line!r}) != 1:\n"
        "        raise RuntimeError('kernel source: expected one viper decorator')\n"
        "    ns = {}\n"
        f"    exec(src.replace({line!r}, ''), ns)\n"
        "    return ns['integrate']\n"
        "bc_integrate = _make_twin()\n"
    )


def batch(rng, n):
    """n samples: mostly valid 10..130 °C pairs, a few faults / low / negative ΔΘ."""
    out = []
    for _ in range(n):
        tr = rng.randint(10_000, 120_000)
        ts = tr + rng.randint(3_000, 30_000)
        r = rng.random()
        if r < 0.03:
            ts = 0
        elif r < 0.06:
            ts, tr = tr, ts
        elif r < 0.08:
            ts = tr + 100
        k = 273_150
        out += [ts + k if ts else 0, tr + k, rng.randint(0, 3_000_000), rng.randint(900, 1100)]
    return out


BENCH = r"""
import gc, micropython, time
from array import array
from heatgw import fluid
from heatgw import meterkernel as mk
W = fluid.water()  # the production table, IF97 at 1.6 MPa
tab = array('i', list(W.h_q64) + list(W.rho_q32))
samples = array('i', %(samples)r)
N = %(n)d
REPS = %(reps)d
ROUNDS = %(rounds)d

def state():
    st = array('i', [0] * mk.STATE_WORDS)
    st[mk.ST_T0] = 273150
    st[mk.ST_N] = W.n
    st[mk.ST_TMIN] = 273150
    st[mk.ST_TMAX] = 273150 + 150000
    st[mk.ST_CUTOFF] = 200
    st[mk.ST_IN_RETURN] = 1
    return st

def run(fn, reps):
    st = state()
    f = 0
    t = time.ticks_us()
    for _ in range(reps):
        f |= fn(samples, N, tab, st)
    dt = time.ticks_diff(time.ticks_us(), t)
    return dt, st, f

def alloc(fn):
    st = state()
    fn(samples, N, tab, st)
    gc.collect()
    a = gc.mem_alloc()
    fn(samples, N, tab, st)
    b = gc.mem_alloc()
    micropython.heap_lock()
    try:
        fn(samples, N, tab, st)
        locked = 1
    except MemoryError:
        locked = 0
    micropython.heap_unlock()
    return b - a, locked

%(twin)s
sv = state()
sb = state()
fv = mk.integrate(samples, N, tab, sv)
fb = bc_integrate(samples, N, tab, sb)
same = 1 if (fv == fb and list(sv) == list(sb)) else 0
run(mk.integrate, 2)
run(bc_integrate, 2)
tv = tb = 1 << 40
for _ in range(ROUNDS):  # interleaved rounds, best of each: robust to a busy host
    tv = min(tv, run(mk.integrate, REPS)[0])
    tb = min(tb, run(bc_integrate, REPS // %(ratio)d)[0])
ab, locked = alloc(mk.integrate)
print('{"viper_us": %%d, "bc_us": %%d, "same": %%d, "alloc": %%d, "locked": %%d}' %% (
    tv, tb, same, ab, locked))
"""


QUEUE_BENCH = r"""
import json, os, time
from flashdev import FlashDev, mount
from heatgw.recqueue import RecordQueue, KIND_TELEMETRY, REC_LEN, default_capacity
IMG = %(img)r
N = %(n)d
res = {}
for name, blocks, prog in %(geoms)r:
    try:
        os.remove(IMG)
    except OSError:
        pass
    dev = FlashDev(IMG, block_size=4096, block_count=blocks)
    mount(dev, "/fl", readsize=32, progsize=prog, lookahead=32)
    cap = default_capacity(4096 * blocks)
    q = RecordQueue("/fl/q", cap)
    f = {"boot": 3, "up_ms": 12345678, "utc": 1764620000,
         "totals": {"energy_nj": 10 ** 15, "volume_ul": 10 ** 9, "time_ms": 10 ** 7},
         "supply_mc": 61000, "return_mc": 51000, "sink_return_mc": 41000,
         "coolant_mc": 31000, "flow_ml_h": 1000000, "power_w": 50000, "relay": 1,
         "heap_free": 40000}
    for _ in range(20):  # past the first, short files
        q.mark_acked(q.append(KIND_TELEMETRY, f))
    w0 = dev.wear()
    o, p, e, b = dev.ops, dev.programs, dev.erases, dev.bytes_programmed
    t = time.ticks_us()
    for _ in range(N):
        q.mark_acked(q.append(KIND_TELEMETRY, f))
    dt = time.ticks_diff(time.ticks_us(), t)
    w1 = dev.wear()
    res[name] = {"capacity": cap, "us": dt // N, "ops": (dev.ops - o) / N,
                 "erases": (dev.erases - e) / N, "bytes": (dev.bytes_programmed - b) / N,
                 "max_block_erases": max(w1[i] - w0[i] for i in range(blocks)),
                 "blocks": blocks, "rec_len": REC_LEN}
    dev.close()
# The queue's own CPU cost (pack, CRC, file calls) on the host's file system, no flash model.
q = RecordQueue(IMG + ".d", 9451)
t = time.ticks_us()
for _ in range(N):
    q.mark_acked(q.append(KIND_TELEMETRY, f))
res["cpu_us"] = time.ticks_diff(time.ticks_us(), t) // N
os.remove(IMG)
print(json.dumps(res))
"""

# name, 4 KB blocks of the file system, littlefs program size of MicroPython's mount there
QUEUE_GEOMETRIES = (("esp32", 512, 32), ("picow", 212, 256))
RECORDS_PER_DAY = 86400 // 10


def queue_bench(n=300):
    """Append+ack cost of the record queue per target geometry: a dict per board with
    µs, flash ops, erases and bytes programmed per record and their per-day figures."""
    with tempfile.TemporaryDirectory() as d:
        code = QUEUE_BENCH % {"img": d + "/q.img", "n": n, "geoms": QUEUE_GEOMETRIES}
        r = mprun.run_json(code, timeout=600)[-1]
    cpu = r.pop("cpu_us")
    for g in r.values():
        g["cpu_us"] = cpu
        g["erases_per_day"] = round(g["erases"] * RECORDS_PER_DAY)
        g["kb_per_day"] = round(g["bytes"] * RECORDS_PER_DAY / 1024)
        g["erases_per_block_day"] = round(g["erases_per_day"] / g["blocks"], 1)
    return r


def print_queue_bench(r):
    for name, g in r.items():
        print(f"queue ({name}: {g['blocks']} blocks, capacity {g['capacity']} records of "
              f"{g['rec_len']} B): {g['us']} us/append on the host flash model "
              f"({g['cpu_us']} us without it), "
              f"{g['ops']:.1f} flash ops, {g['erases']:.2f} erases, {g['bytes']:.0f} B "
              f"programmed per record; per day of 10 s telemetry: {g['erases_per_day']} "
              f"erases ({g['erases_per_block_day']} per block), {g['kb_per_day']} KB")


DRAIN = r"""
import board, json, time
from heatgw import recqueue as rq
CFG = %(cfg)r
N = %(n)d
d = board.data_dir()
with open(d + "/config.json", "w") as f:
    f.write(CFG)
with open(d + "/secrets.json", "w") as f:
    f.write(%(secrets)r)
# The backlog: N telemetry records, as the tick writes them, on the board's flash.
q = rq.RecordQueue(d + "/q", rq.capacity_for(d))
f = {"boot": 3, "up_ms": 12345678, "utc": 1764620000,
     "totals": {"energy_nj": 10 ** 15, "volume_ul": 10 ** 9, "time_ms": 10 ** 7},
     "supply_mc": 61000, "return_mc": 51000, "sink_return_mc": 41000, "coolant_mc": 31000,
     "flow_ml_h": 1000000, "power_w": 50000, "relay": 1, "reason": 0, "active": 0,
     "latched": 0, "heap_free": 40000}
for i in range(N):
    f["up_ms"] += 10000
    f["utc"] += 10
    q.append(rq.KIND_TELEMETRY, f)
last = q.next_seq - 1
q.close()
q = None
from heatgw import clock, start
gw, asyncio = start.build()
tel = gw.telemetry
t = [0, 0]  # real ticks_us: first backlog PUBLISH, last backlog PUBACK
before = [0, None]  # the longest network stretch before the drain (boot, connect)
sizes = []  # encoded telemetry PUBLISH packets, bytes
acked = [0]
c = tel.client
pub = c.publish


def wpub(topic, mv, retain=False, qos=1):
    pid = pub(topic, mv, retain, qos)
    if pid and topic == tel.t_tel:
        if not t[0]:
            t[0] = time.ticks_us()
            # from here on the record's worst_net_* is the drain's
            before[0], before[1] = clock.net_worst_us, clock.net_worst_where
            clock.net_worst_us = 0
        i = c._pid.index(pid)  # the slot: its header, then the payload it refers to
        sizes.append(c._len[i] + len(c._msg[i]))
    return pid


c.publish = wpub
mark = tel.q.mark_acked


def wmark(seq):
    mark(seq)
    if seq <= last:
        acked[0] += 1
        t[1] = time.ticks_us()


tel.q.mark_acked = wmark


async def main():
    asyncio.create_task(gw.run(asyncio))
    t0 = time.ticks_us()
    while acked[0] < N and time.ticks_diff(time.ticks_us(), t0) < 120_000_000:
        await asyncio.sleep_ms(50)
    gw.shutdown()
    print(json.dumps({"n": N, "acked": acked[0], "us": time.ticks_diff(t[1], t[0]),
                      "sizes": sizes, "vt_ms": board.clock.vt,
                      "unreadable": tel.unreadable, "mqtt": tel.record(),
                      "net_before_us": before[0], "net_before_where": before[1]}))
asyncio.run(main())
"""


def drain_bench(n=500):
    """The node's backlog drain to a local mosquitto: a dict with records/s and the
    telemetry PUBLISH sizes, or {"skipped": why}."""
    try:
        from tests import brokers
    except ImportError as e:  # pytest or paho missing: the rest of the bench still runs
        return {"skipped": f"tests.brokers not importable ({e})"}
    if not os.access(brokers.MOSQUITTO, os.X_OK):
        return {"skipped": f"no mosquitto ({brokers.MOSQUITTO})"}
    with tempfile.TemporaryDirectory() as d:
        cfg = json.loads((REPO / "scenarios" / "default_config.json").read_text())
        with brokers.Broker(Path(d) / "mosquitto") as b:
            cfg["mqtt"] = {"host": "127.0.0.1", "port": b.port, "keepalive_s": 30,
                           "site": "s1"}
            cfg["telemetry"] = {"interval_s": 10}
            code = DRAIN % {"cfg": json.dumps(cfg), "n": n, "secrets": json.dumps(
                {"version": 1, "command_key": bytes(range(32)).hex()})}
            old = os.environ.get("HEATGW_FLASH")
            os.environ["HEATGW_FLASH"] = d + "/flash.bin"
            try:
                out = mprun.run_code(code, timeout=300)
            finally:
                if old is None:
                    os.environ.pop("HEATGW_FLASH")
                else:
                    os.environ["HEATGW_FLASH"] = old
    r = json.loads(out.strip().splitlines()[-1])
    sizes = r.pop("sizes")
    r["publishes"] = len(sizes)
    r["wire_avg"] = sum(sizes) / len(sizes) if sizes else 0
    r["wire_max"] = max(sizes, default=0)
    r["rate"] = r["acked"] / (r["us"] / 1e6) if r["us"] > 0 else 0.0
    return r


PUBACK_BYTES = 4


def print_drain_bench(r):
    if "skipped" in r:
        print(f"drain: skipped: {r['skipped']}")
        return
    m = r["mqtt"]
    print(f"drain: {r['acked']}/{r['n']} backlog telemetry records acked in "
          f"{r['us'] / 1000:.0f} ms real (first PUBLISH to last PUBACK, one in flight, "
          f"node on vasyncio, local mosquitto): {r['rate']:.0f} records/s "
          f"(virtual {r['vt_ms']} ms in all; published {m['published']}, acked "
          f"{m['acked']}, retransmitted {m['retransmitted']}, reconnects {m['reconnects']})")
    print(f"wire: telemetry PUBLISH {r['wire_avg']:.1f} B average, {r['wire_max']} B max "
          f"over {r['publishes']} (fixed header + topic + packet id + JSON payload), "
          f"+ {PUBACK_BYTES} B PUBACK back")
    print(f"network side, longest real time in one loop iteration or network call "
          f"(heatgw.clock.took; goal <= 50 ms): {m['worst_net_real_us'] / 1000:.2f} ms "
          f"({m['worst_net_where']}) during the drain, {r['net_before_us'] / 1000:.2f} ms "
          f"({r['net_before_where']}) before it (boot, connect)")


def main(argv=None):
    rng = random.Random(1434)
    n = 64  # samples per batch
    reps = 1000  # viper batches per round; the bytecode twin runs reps // ratio of them
    ratio = 20
    rounds = 7
    code = BENCH % {"samples": batch(rng, n), "n": n, "reps": reps,
                    "ratio": ratio, "rounds": rounds, "twin": twin_prelude()}
    r = mprun.run_json(code)[-1]
    viper_us = r["viper_us"] / (reps * n)
    bc_us = r["bc_us"] / ((reps // ratio) * n)
    speedup = bc_us / viper_us
    print(f"micropython: {' '.join(mprun.micropython_cmd())}")
    print(f"batch: {n} samples; best of {rounds} rounds of {reps} viper batches and "
          f"{reps // ratio} bytecode batches")
    print(f"bytecode twin: {bc_us:.4f} us/sample")
    print(f"viper kernel:  {viper_us:.4f} us/sample")
    print(f"same totals and flags from both: {'yes' if r['same'] else 'NO'}")
    print(f"heap_lock around the viper batch: {'ok' if r['locked'] else 'MemoryError'}")
    print_queue_bench(queue_bench())
    d = drain_bench()
    print_drain_bench(d)
    rate = "skipped" if "skipped" in d else f"{d['rate']:.0f}"
    wire = "skipped" if "skipped" in d else f"{d['wire_avg']:.0f}"
    net = "skipped" if "skipped" in d else f"{d['mqtt']['worst_net_real_us'] / 1000:.2f}"
    print(f"viper_speedup={speedup:.1f} alloc_bytes_per_batch={r['alloc']} "
          f"drain_records_per_s={rate} wire_bytes_per_record={wire} "
          f"net_worst_real_ms={net}")
    return 0 if r["same"] and r["locked"] else 1


if __name__ == "__main__":
    sys.exit(main())
