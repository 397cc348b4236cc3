"""heatgw.heapmon in the real micropython binary: live peak, largest free block, MemoryErrors.

Heap sizes are scaled to the binary under test (host_tools.mpinfo), never by `wK`.
"""

import json

from host_tools import harness, mpinfo
from host_tools.harness import run_scenario

PEAK = """
import gc, json
from heatgw.heapmon import HeapMonitor
m = HeapMonitor()
base = m.sample("base")
big = bytearray(20000)  # a deliberate, temporary peak, alive at the sample point
peak = m.sample("peak")
big = None
after = m.sample("after")
print(json.dumps({"base": base, "peak": peak, "after": after, "peak_bytes": m.peak_bytes,
                  "peak_at": m.peak_at, "samples": m.samples, "changed": m.changed}))
"""


def test_sample_sees_a_temporary_peak_alive_at_the_sample_point(mp):
    r = mp.run_json(PEAK, heapsize=mpinfo.heapsize(160))[0]
    assert r["peak"] - r["base"] >= 20000
    assert r["after"] < r["peak"] - 19000  # collected: garbage is not counted as live
    assert r["peak_bytes"] == r["peak"] and r["peak_at"] == "peak"
    assert r["samples"] == 3 and r["changed"]


FRAG = """
import gc, json
from heatgw.heapmon import HeapMonitor
m = HeapMonitor()
gc.collect()
free0 = gc.mem_free()
lf0 = m.largest_free()
chunks = []
try:  # fill the heap with 1 KB chunks...
    while True:
        chunks.append(bytearray(1024))
except MemoryError:
    pass
for i in range(0, len(chunks), 2):  # ...and free every other one: holes of ~1 KB
    chunks[i] = None
gc.collect()
free1 = gc.mem_free()
lf1 = m.largest_free()
print(json.dumps({"free0": free0, "lf0": lf0, "free1": free1, "lf1": lf1,
                  "min": m.min_largest_free_bytes, "probes": m.probes,
                  "gc_on": gc.isenabled(), "n": len(chunks)}))
"""


def test_largest_free_block_is_below_mem_free_and_shrinks_when_fragmented(mp):
    r = mp.run_json(FRAG, heapsize=mpinfo.heapsize(160))[0]
    assert 0 < r["lf0"] <= r["free0"]
    assert r["lf0"] > r["free0"] // 2  # a fresh heap: one big free tail
    # Fragmented: a third of the heap and more is free, but only in holes of ~1 KB.
    assert r["free1"] > 30_000, r
    assert 1024 - 256 <= r["lf1"] < 4096, r
    assert r["min"] == r["lf1"] and r["probes"] == 2
    assert r["gc_on"]  # the probe turns automatic collection back on


def test_largest_free_respects_its_cap(mp):
    r = mp.run_json("""
import json
from heatgw.heapmon import HeapMonitor
print(json.dumps(HeapMonitor(cap_bytes=4000).largest_free()))
""", heapsize=mpinfo.heapsize(160))[0]
    assert 4000 - 256 <= r <= 4000


COUNTS = """
import json
from heatgw.heapmon import HeapMonitor
m = HeapMonitor()
for i in range(61):
    m.tick()
ticks = [m.samples, m.probes]
m.caught(MemoryError("x"))
m.caught(OSError(5))
m.sink("event", {"kind": "crash", "task": "sampler", "error": "MemoryError('y')"})
m.sink("event", {"kind": "crash", "task": "sampler", "error": "OSError(5,)"})
m.sink("event", {"kind": "state"})
m.sink("saving", {"seq": 1})
m.sink("status", {})
rec = m.record()
print(json.dumps({"ticks": ticks, "rec": rec, "samples": m.samples, "probes": m.probes}))
"""


def test_sample_points_probes_and_memory_errors_are_counted(mp):
    r = mp.run_json(COUNTS, heapsize=mpinfo.heapsize(160))[0]
    # Every 10th pass samples, the first one included; a probe every 6 samples.
    assert r["ticks"] == [7, 1]
    rec = r["rec"]
    assert rec["memory_errors"] == 2  # the caught one and the task that died of one
    assert r["samples"] == 7 + 4 and r["probes"] == 2  # events and a save sample
    assert rec["peak_at"] in ("pass", "event", "saving")
    assert 0 < rec["min_largest_free_bytes"] < rec["heap_total_bytes"] - rec["peak_heap_bytes"]
    assert rec["heap_total_bytes"] <= mpinfo.heap_kb(160) * 1024


def test_node_reports_heap_figures_to_the_harness(tmp_path, monkeypatch):
    monkeypatch.setenv("MICROPYTHON_ARGS", f"-X heapsize={mpinfo.heapsize(160)}")
    sc = {"name": "heap20", "duration_s": 1200, "load_kw": 100, "demand_kw": 100}
    path = tmp_path / "heap20.json"
    path.write_text(json.dumps(sc))
    s, _ = run_scenario(path, workdir=tmp_path / "w", mpy=True)  # as the node runs
    assert s["memory_errors"] == 0 and s["console_memory_errors"] == 0
    heap_bytes = mpinfo.heap_kb(160) * 1024
    # the node had the budget to itself: the host board's modules came on top, as this
    # boot measured them (the harness's probe before it found the same)
    assert s["host_board_bytes"] > 10 * 1024
    assert harness.heap_bytes(s["heapsize"]) == heap_bytes + s["host_board_bytes"]
    assert 0 < s["peak_heap_bytes"] < heap_bytes
    assert 0 < s["min_largest_free_bytes"] < heap_bytes - s["peak_heap_bytes"]
    points = {p[2] for p in s["heap_peaks"]}
    assert "pass" in points or "event" in points  # sampled from boot on
    # the node's own status counts everything in its heap, the host board too
    assert 0 < s["last_status"]["peak_heap_bytes"] - s["host_board_bytes"] <= s["peak_heap_bytes"]
    # the names it interned, as the host board printed them at the end: pools of 20, 40, ...
    # entries (MICROPY_ALLOC_QSTR_ENTRIES_INIT = 10), the last one at least started
    q = s["qstr"]
    assert 20 * (2 ** (q["pools"] - 1) - 1) < q["qstrs"] <= 20 * (2 ** q["pools"] - 1), q
    assert 0 < q["text_bytes"] < q["bytes"], q


def test_heapbudget_measures_import_costs_and_the_romfs_saving():
    from host_tools import heapbudget

    heapbudget.build_mpy_for_binary()
    app = heapbudget.import_cost("heatgw.app", [heapbudget.mpy_dir()])
    assert "heatgw.failsafe" in app["deps"] and "heatgw.heapmon" in app["deps"]
    assert 0 < app["own"] < app["with_deps"]  # its imports are not charged to it
    rom = heapbudget.romfs_costs()
    # ROMFS keeps bytecode and constants in the image: the import costs less heap.
    assert 0 < rom["romfs"] < rom["mpy_files"] - 10 * 1024, rom
