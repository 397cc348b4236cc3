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
No mosquitto: a "skipped" line. Then the Modbus drivers (modbus_bench()) against
pymodbus SDM630s over TCP and over RTU on a pty pair, 300 reads each: the longest real time
spent inside one Modbus call (on the host board a blocking call costs no virtual time, so
this is what a target would feel; measured, not a limit). Then the host board's serial port
(serial_bench()): a node on the bench (host_tools/benchnode.py) at its REPL: the longest
real time of one `board.console_in().readinto()` over 2000 reads with nothing waiting and
200 with 32 bytes waiting, and the real mpremote copying a 32 KB file onto it (KB/s); and
the console (console_bench()): a bench node running its application, 300 lines of the
console's fuzz corpus typed at its port, the longest real time of one step of the console
task's read + line assembly (what its `status` reports). The host board's pulse input
(pulse_bench()): emulated edges per second of real time. One tick of the analogue inputs
(analog_bench()). Then the node's Modbus TCP server (bms_bench(): heatgw.bms,
lib/modbus/mbserver): the whole node standalone with a `bms` section, a pymodbus client
reading its 45 input registers, writing the heartbeat and reading it back, 300 rounds: the
longest real time spent in one server step (a request's parse, the register snapshot and
the answer's write; an accept, a read, a close) and the client's mean round trip. Last line:

    viper_speedup=<x> alloc_bytes_per_batch=<n> drain_records_per_s=<x>
    wire_bytes_per_record=<n> net_worst_real_ms=<x> modbus_worst_call_us=<n>
    console_read_worst_us=<n> console_step_worst_us=<n> mpremote_cp_kb_s=<x>
    pulse_edges_per_s=<x> bms_worst_request_us=<n>
    (one line; drain, wire and net "skipped" without mosquitto)
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


PULSE_BENCH = r"""
import board, json, time
clk = board.clock
pin = board.flow_pin()
pc = board.flow_pulse_counter()
N = %(n)d
t0 = time.ticks_us()
for s in range(N // 1000):  # 1000 pulses (40 ms period, 5 ms low) a step, as the link sends
    for i in range(1000):
        pin.add_pulse(clk.vt + 1 + i * 40, 5)
    t = clk.vt + 40_000
    while clk.vt < t:  # the node's clock moving in 10 ms steps, running what is due
        clk.sleep_ms(10)
dt = time.ticks_diff(time.ticks_us(), t0)
print(json.dumps({"pulses": pc.count(), "edges": pin.edges, "irqs": pin.irqs, "us": dt}))
"""


def pulse_bench(n=100_000):
    """The host board's pulse input: emulated edges per second of real time (scheduling
    them, running them as the clock moves, the driver's interrupt handler on each falling
    edge), for the hardware-counter and the interrupt-counter driver."""
    out = {}
    with tempfile.TemporaryDirectory() as d:
        for counter in ("counter", "irq"):
            env = {"HEATGW_PULSE_COUNTER": counter, "HEATGW_FLASH": d + "/flash.bin"}
            old = {k: os.environ.get(k) for k in env}
            os.environ.update(env)
            try:
                r = mprun.run_json(PULSE_BENCH % {"n": n}, timeout=300)[-1]
            finally:
                for k, v in old.items():
                    if v is None:
                        os.environ.pop(k)
                    else:
                        os.environ[k] = v
            r["edges_per_s"] = r["edges"] / (r["us"] / 1e6)
            out[counter] = r
    return out


def print_pulse_bench(r):
    for counter, x in r.items():
        print(f"pulse input ({counter}): {x['edges']} emulated edges ({x['pulses']} pulses "
              f"counted, {x['irqs']} interrupts) in {x['us'] / 1000:.0f} ms real: "
              f"{x['edges_per_s'] / 1e6:.2f} M edges/s (a simulated day at 0.1 L a pulse "
              f"and 8.7 m3/h has 4.2 M)")


MODBUS = r"""
import board, json, time
asyncio = board.install_asyncio()
from heatgw import clock
from mbrtu import RTUMaster
from mbtcp import TCPMaster


async def main():
    u, de = board.rs485("rs485", 9600, None, 1)
    out = {}
    for kind, m in (("tcp", TCPMaster("127.0.0.1", %(port)d, clock=clock,
                                      on_send=board.io_sent)),
                    ("rtu", RTUMaster(u, baudrate=9600, clock=clock, de=de,
                                      on_send=board.io_sent))):
        ok = 0
        t0 = time.ticks_us()
        v0 = board.clock.vt
        for i in range(%(n)d):
            pdu = b"\x04\x00\x34\x00\x02" if i %% 2 else b"\x04\x00\x48\x00\x02"
            ok += await m.transact(1, pdu, 1000) == 0
        out[kind] = {"ok": ok, "worst_us": m.worst_us, "where": m.worst_where,
                     "real_us": time.ticks_diff(time.ticks_us(), t0),
                     "virtual_ms": board.clock.vt - v0}
        m.close()
    print(json.dumps(out))

asyncio.run(main())
"""


def modbus_bench(n=300):
    """The Modbus drivers (lib/modbus) against pymodbus SDM630s, over TCP and over RTU on
    a pty pair (the node's host board: vasyncio, the pty UART shim): per transport the
    longest real time spent inside one Modbus call (a synchronous stretch of the driver:
    send, parse, a read, DE's last bits, connect) and the mean real time of a request."""
    try:
        from tests.modbus_peers import PtyLine, PymodbusRTU, PymodbusTCP, sdm630
    except ImportError as e:
        return {"skipped": f"tests.modbus_peers not importable ({e})"}
    devices = [sdm630(1, 41250.5, 123456.75)]
    with PymodbusTCP(devices) as srv, PtyLine() as line, \
            PymodbusRTU(line.peer_path, devices):
        old = os.environ.get("HEATGW_RS485")
        os.environ["HEATGW_RS485"] = line.node_path
        try:
            out = mprun.run_code(MODBUS % {"port": srv.port, "n": n}, timeout=300)
        finally:
            if old is None:
                os.environ.pop("HEATGW_RS485")
            else:
                os.environ["HEATGW_RS485"] = old
    r = json.loads(out.strip().splitlines()[-1])
    r["n"] = n
    return r


def print_modbus_bench(r):
    if "skipped" in r:
        print(f"modbus: skipped: {r['skipped']}")
        return
    for kind in ("tcp", "rtu"):
        k = r[kind]
        print(f"modbus {kind}: {k['ok']}/{r['n']} reads of a pymodbus SDM630, "
              f"{k['real_us'] / r['n'] / 1000:.2f} ms real per request; longest real time "
              f"inside one Modbus call: {k['worst_us']} us ({k['where']})")


_SERIAL_READS = """
import board, time
cin = board.console_in()
buf = bytearray(64)
worst = [0, 0]
for i in range(2200):
    if i == 2000:
        print("send")
    if i >= 2000:
        while cin.any() < 32:
            cin.wait_input(50)
    t = time.ticks_us()
    n = cin.readinto(buf)
    d = time.ticks_diff(time.ticks_us(), t)
    k = 0 if i < 2000 else 1
    if d > worst[k]:
        worst[k] = d
    if i >= 2000 and i < 2199:
        print("more")
print("worst", worst[0], worst[1])
"""


def serial_bench(kb=32):
    """The host board's serial port: console read times and mpremote's copy speed."""
    import subprocess
    import time

    from host_tools.benchnode import BenchNode

    with tempfile.TemporaryDirectory() as tmp:
        node = BenchNode(Path(tmp) / "node", safe_boot=True)
        try:
            time.sleep(1)
            src = Path(tmp) / "blob.txt"
            src.write_text("".join(f"{i:07d}\n" for i in range(kb * 128)))
            mpr = [str(Path(sys.executable).parent / "mpremote"), "connect", node.name]
            t = time.monotonic()
            cp = subprocess.run([*mpr, "fs", "cp", str(src), ":blob.txt"],
                                capture_output=True, timeout=300, check=False)
            cp_s = time.monotonic() - t
            script = Path(tmp) / "reads.py"
            script.write_text(_SERIAL_READS.replace("cin.wait_input", "board.serial_port()"
                                                    ".wait_input"))
            p = subprocess.Popen([*mpr, "run", str(script)], stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT)
            worst = None
            for line in p.stdout:
                if line.startswith((b"send", b"more")):
                    node.port.write(b"x" * 32)
                elif line.startswith(b"worst"):
                    worst = [int(x) for x in line.split()[1:3]]
            p.wait(120)
        finally:
            node.close()
    return {"cp_ok": cp.returncode == 0, "bytes": kb * 1024,
            "cp_s": cp_s, "worst_us": worst}


def console_bench(lines=300):
    """The console task's read + line assembly step (heatgw.console next_line: the port's
    readinto, echo, the refusals) in real time, on a node on the bench running its
    application: the longest of every step while `lines` lines of the fuzz corpus
    (tests/console_fuzz.py, `watch` left out) are typed at the port, paced like a fast
    typist's paste, as the node's `status` reports it. The commands themselves run outside
    this step (heatgw.con_table, loaded per line)."""
    import re
    import time

    from host_tools.benchnode import BenchNode
    from tests.console_fuzz import corpus

    data, n = corpus(11, lines=lines, skip=(b"watch", b"reboot", b"factory-reset"))
    cfg = json.loads((REPO / "scenarios" / "default_config.json").read_text())
    with tempfile.TemporaryDirectory() as tmp:
        node = BenchNode(Path(tmp) / "node", config=cfg)
        try:
            log = node.console_path
            give_up = time.monotonic() + 60
            while b"heatgw> " not in log.read_bytes() and time.monotonic() < give_up:
                time.sleep(0.1)
            for i in range(0, len(data), 64):
                node.port.write(data[i:i + 64])
                time.sleep(0.01)
            found = None
            give_up = time.monotonic() + 120
            while found is None and time.monotonic() < give_up:
                node.port.write(b"\rstatus\r")
                time.sleep(1)
                found = re.findall(rb"console  (\d+) lines, (\d+) refused or failed; longest "
                                   rb"read\+assembly (\d+) us", log.read_bytes())
                found = found[-1] if found else None
        finally:
            node.close()
    if found is None:
        return {"failed": True, "lines": n}
    return {"lines_typed": n, "bytes": len(data), "lines": int(found[0]),
            "refused": int(found[1]), "worst_us": int(found[2])}


def print_console_bench(r):
    if r.get("failed"):
        print("console (host board): FAILED: no status answer")
        return
    print(f"console (host board, application running): {r['lines_typed']} fuzz lines "
          f"({r['bytes']} B) typed, {r['lines']} read at the prompt, {r['refused']} refused; "
          f"longest read + assembly step {r['worst_us']} us real")


def print_serial_bench(r):
    w = r["worst_us"] or ["?", "?"]
    print(f"serial port (host board): console_in().readinto() longest {w[0]} us real with "
          f"nothing waiting (2000 reads), {w[1]} us with 32 bytes waiting (200 reads)")
    ok = "" if r["cp_ok"] else " (FAILED)"
    print(f"mpremote fs cp of {r['bytes']} B onto the node: {r['cp_s']:.2f} s, "
          f"{r['bytes'] / 1024 / r['cp_s']:.1f} KB/s{ok}")


ANALOG_BENCH = """
import json, time, micropython
import board
from heatgw.analog import Analog
from heatgw.failsafe import Inputs
cfg = {"samples": 16,
       "valve": {"channel": "ain1", "signal": "4-20mA", "break_ma": 3.6, "over_ma": 21.0},
       "inputs": {"p": {"channel": "ain2", "kind": "pressure", "signal": "4-20mA",
                        "value_lo": 0.0, "value_hi": 6.0, "unit": "bar", "break_ma": 3.6,
                        "over_ma": 21.0},
                  "t": {"channel": "ain3", "kind": "level", "signal": "0-10V",
                        "value_lo": 0.0, "value_hi": 2.0, "unit": "m"}}}
for ch, k, x in (("ain1", "ma", 12.0), ("ain2", "ma", 9.0), ("ain3", "v", 8.0)):
    board.adc_channel(ch).set_signal(k, x, 3)
an = Analog(cfg, board)
ins = Inputs((), an.names())
best = None
for r in range(5):
    t = time.ticks_us()
    for i in range(1000):
        an.sample(ins, i)
    us = time.ticks_diff(time.ticks_us(), t) / 1000
    best = us if best is None or us < best else best
print(json.dumps({"tick_us": best}))
"""


def analog_bench():
    """µs of one tick of the analogue inputs (heatgw.analog: valve and two inputs, 16
    conversions each, sorted and converted) on the host board's emulated converters:
    the interpreter's share (a target adds its conversions: ~48 x the ADC's read time)."""
    return mprun.run_json(ANALOG_BENCH)[-1]


# the README's telemetry example (heatgw/site1/gw-07/telemetry): what a node publishes
TEL_EXAMPLE = {
    "v": 1, "seq": 10234, "boot": 12, "up_ms": 86400000, "utc": 1764621000,
    "supply_c": 45.31, "supply_why": None, "return_c": 35.12, "return_why": None,
    "sink_return_c": 33.90, "sink_return_why": None, "it_coolant_c": None,
    "it_coolant_why": "open", "dt_k": 10.19, "dt_why": None, "flow_m3h": 5.500,
    "flow_why": None, "power_w": 65120, "power_why": None, "energy_wh": 2256515.774,
    "volume_l": 98765.432, "time_s": 86400.000, "error_s": 12.000, "low_dt_s": 3600.500,
    "state": "bypass", "relay_reuse": False, "reason": "sensor_fault:it_coolant",
    "valve_cmd_pct": 0, "valve_pct": 0.4, "valve_why": None,
    "inputs": {"loop_pressure": {"value": 1.902, "why": None},
               "tank_level": {"value": None, "why": "wire_break"}},
    "active": ["sensor_fault:it_coolant"], "latched": [], "heap_free": 41232}
MONITOR_AHEAD = 400  # published but not yet stored, at most: below mosquitto's queue (1000)


def monitor_bench(n=6000, nodes=60):
    """`heatgw monitor` recording a fleet's telemetry: records/s stored (committed and
    acknowledged) into SQLite, and into PostgreSQL where its server is installed; the
    publisher keeps at most MONITOR_AHEAD records ahead of the store. {"skipped": why}
    without mosquitto."""
    try:
        import paho.mqtt.client as mqtt

        from tests import brokers, pgserver
    except ImportError as e:
        return {"skipped": f"tests.brokers not importable ({e})"}
    if not os.access(brokers.MOSQUITTO, os.X_OK):
        return {"skipped": f"no mosquitto ({brokers.MOSQUITTO})"}
    import signal
    import subprocess
    import time

    out = {"n": n, "nodes": nodes}

    def one(d, target, count):
        with brokers.Broker(Path(d) / "mosquitto") as b:
            log = Path(d) / "monitor.out"
            with open(log, "w") as f:
                mon = subprocess.Popen(
                    [sys.executable, "-m", "host_tools.cli", "monitor", f"127.0.0.1:{b.port}",
                     "--view", "plain", *target], cwd=REPO, stdout=f,
                    stderr=subprocess.PIPE, text=True)
            try:
                deadline = time.monotonic() + 20
                while "monitor: subscribed" not in log.read_text():
                    if time.monotonic() > deadline or mon.poll() is not None:
                        raise RuntimeError("monitor not up: " + log.read_text()[-500:])
                    time.sleep(0.05)
                c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-pub")
                c.connect("127.0.0.1", b.port)
                c.loop_start()
                t0 = time.monotonic()
                stored = 0
                for i in range(n):
                    d_ = dict(TEL_EXAMPLE, seq=i // nodes + 1, up_ms=(i // nodes) * 10_000)
                    c.publish(f"heatgw/bench/n{i % nodes:03d}/telemetry", json.dumps(d_),
                              qos=1)
                    while i - stored >= MONITOR_AHEAD:
                        time.sleep(0.002)
                        stored = count()
                while stored < n and time.monotonic() - t0 < 120:
                    time.sleep(0.002)
                    stored = count()
                dt = time.monotonic() - t0
                c.disconnect()
                c.loop_stop()
                return {"stored": stored, "s": dt, "rate": stored / dt}
            finally:
                mon.send_signal(signal.SIGTERM)
                mon.communicate(timeout=30)

    with tempfile.TemporaryDirectory() as d:
        path = str(Path(d) / "bench.sqlite")
        out["sqlite"] = one(d, ["--record", path], _count_sqlite(path))
    if pgserver.pg_bin("initdb") and pgserver.pg_bin("pg_ctl"):
        try:
            with pgserver.PgServer() as pg, tempfile.TemporaryDirectory() as d:
                url = pg.create_db("bench")
                out["postgresql"] = one(d, ["--db", url], _count_pg(url))
        except BaseException as e:  # noqa: BLE001 - pytest's skip too: no user to run it as
            if isinstance(e, KeyboardInterrupt):
                raise
            out["postgresql"] = {"skipped": str(e)}
    else:
        out["postgresql"] = {"skipped": "no PostgreSQL server installed"}
    return out


def _count_sqlite(path):
    """count() of the records table, on one reader connection."""
    import sqlite3

    db = []

    def count():
        if not db:
            db.append(sqlite3.connect(path, isolation_level=None))
        try:
            return db[0].execute("SELECT count(*) FROM records").fetchone()[0]
        except sqlite3.Error:
            return 0
    return count


def _count_pg(url):
    import psycopg

    conn = psycopg.connect(url, autocommit=True)

    def count():
        try:
            return conn.execute("SELECT count(*) FROM records").fetchone()[0]
        except psycopg.Error:
            return 0
    return count


def print_monitor_bench(r):
    if "skipped" in r:
        print(f"monitor: skipped: {r['skipped']}")
        return
    parts = []
    for name in ("sqlite", "postgresql"):
        x = r.get(name) or {}
        parts.append(f"{name} skipped ({x['skipped']})" if "skipped" in x else
                     f"{name} {x['rate']:.0f} records/s ({x['stored']}/{r['n']} in "
                     f"{x['s']:.2f} s)")
    print(f"monitor: {r['n']} telemetry records of {r['nodes']} nodes recorded "
          f"(stored, committed, acknowledged): " + ", ".join(parts))


BMS_NODE = r"""
import board, json, sys
d = board.data_dir()
with open(d + "/config.json", "w") as f:
    f.write(CFG)
board.input_pin("sink_available").level = 0
for name, r in (("supply", 1270.75125), ("return", 1193.97125), ("sink_return", 1136.08),
                ("it_coolant", 1155.4)):
    board.rtd_chip(name).set_resistance(r)
from heatgw import start
gw, asyncio = start.build()


async def main():
    asyncio.create_task(gw.run(asyncio))
    while gw.bms.server.ls is None:
        await asyncio.sleep_ms(10)
    print(json.dumps({"ready": True}))
    sys.stdin.readline()  # the client connects meanwhile
    while gw.bms.server.requests < N:
        await asyncio.sleep_ms(100)
    gw.shutdown()
    print(json.dumps(gw.bms.record()))

asyncio.run(main())
"""


def bms_bench(n=300):
    """The node's Modbus TCP server against pymodbus's client: the longest real time in
    one server step (on the host board a blocking step costs no virtual time: this is
    what a target would feel; measured, not a limit) and the client's mean round trip."""
    import subprocess
    import time

    try:
        from pymodbus.client import ModbusTcpClient

        from tests.brokers import free_port
    except ImportError as e:
        return {"skipped": f"pymodbus not importable ({e})"}
    port = free_port()
    cfg = json.loads((REPO / "scenarios" / "default_config.json").read_text())
    cfg["bms"] = {"port": port, "clients": {"bms": "127.0.0.1"}}
    cfg["control"]["sink_sources"] = {"modbus": 60}
    with tempfile.TemporaryDirectory() as tmp:
        env = mprun.mp_env()
        env["HEATGW_FLASH"] = str(Path(tmp) / "flash.bin")
        code = f"CFG = {json.dumps(cfg)!r}\nN = {3 * n}\n" + BMS_NODE
        proc = subprocess.Popen([*mprun.micropython_cmd(), "-c", code], cwd=REPO, env=env,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        def line():  # the node's own JSON lines, not its console's events
            while True:
                ln = proc.stdout.readline()
                if not ln or ln.startswith("{"):
                    return json.loads(ln)

        try:
            line()
            c = ModbusTcpClient("127.0.0.1", port=port, timeout=3, retries=0)
            c.connect()
            proc.stdin.write("go\n")
            proc.stdin.flush()
            t0 = time.perf_counter()
            ok = 0
            for i in range(n):
                ok += not c.read_input_registers(0, count=45).isError()
                ok += not c.write_register(0, i % 65535 + 1).isError()
                ok += not c.read_holding_registers(0, count=1).isError()
            rt = (time.perf_counter() - t0) / (3 * n)
            c.close()
            rec = line()
            proc.wait(60)
        finally:
            if proc.poll() is None:
                proc.kill()
    return {"n": n, "ok": ok, "round_trip_ms": rt * 1000, "worst_us": rec["worst_request_us"],
            "where": rec["worst_request_where"], "requests": rec["requests"]}


def print_bms_bench(r):
    if "skipped" in r:
        print(f"bms: skipped: {r['skipped']}")
        return
    print(f"bms server: {r['ok']}/{3 * r['n']} requests of pymodbus's client answered "
          f"(a read of the 45 input registers, a heartbeat write, its read-back), "
          f"{r['round_trip_ms']:.2f} ms mean round trip; longest real time in one server "
          f"step: {r['worst_us']} us ({r['where']})")


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
    pulses = pulse_bench()
    print_pulse_bench(pulses)
    d = drain_bench()
    print_drain_bench(d)
    mb = modbus_bench()
    print_modbus_bench(mb)
    rate = "skipped" if "skipped" in d else f"{d['rate']:.0f}"
    wire = "skipped" if "skipped" in d else f"{d['wire_avg']:.0f}"
    net = "skipped" if "skipped" in d else f"{d['mqtt']['worst_net_real_us'] / 1000:.2f}"
    mbw = "skipped" if "skipped" in mb else max(mb[k]["worst_us"] for k in ("tcp", "rtu"))
    ab = analog_bench()
    print(f"analogue inputs (valve + 2, 16 conversions each): {ab['tick_us']:.1f} us per "
          f"tick on the host board's emulated converters")
    sb = serial_bench()
    print_serial_bench(sb)
    cb = console_bench()
    print_console_bench(cb)
    print_monitor_bench(monitor_bench())
    read_us = max(sb["worst_us"]) if sb["worst_us"] else "failed"
    con_us = "failed" if cb.get("failed") else cb["worst_us"]
    cp_kb_s = f"{sb['bytes'] / 1024 / sb['cp_s']:.1f}" if sb["cp_ok"] else "failed"
    bb = bms_bench()
    print_bms_bench(bb)
    bmsw = "skipped" if "skipped" in bb else bb["worst_us"]
    print(f"viper_speedup={speedup:.1f} alloc_bytes_per_batch={r['alloc']} "
          f"drain_records_per_s={rate} wire_bytes_per_record={wire} "
          f"net_worst_real_ms={net} modbus_worst_call_us={mbw} "
          f"console_read_worst_us={read_us} console_step_worst_us={con_us} "
          f"mpremote_cp_kb_s={cp_kb_s} "
          f"pulse_edges_per_s={pulses['counter']['edges_per_s']:.0f} "
          f"bms_worst_request_us={bmsw}")
    return 0 if r["same"] and r["locked"] else 1


if __name__ == "__main__":
    sys.exit(main())
