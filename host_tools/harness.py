"""Run the gateway firmware on the host board against the simulated plant, in lockstep.

The harness owns virtual time, the plant (host_tools/plant.py), the relays' physical
state, the watchdog and the power. The node is the real application on the MicroPython
unix port; it cannot tell it is not on a chip. Who does what:

    scenario.py   scenario files, the default node configuration, profiles, events
    sensors.py    the RTDs as the chip sees them (the firmware's own heatgw/rtd.py)
    nodeproc.py   the node process: spawn, read its lines, kill; NodeFailed
    linkcodec.py  the lines of the link (opcodes: boards/host/linkproto.py)
    world.py      what the node's chips and pins read: served values, pulse edges
    oracle.py     when each trip condition appeared, from what was served
    summary.py    the JSON summary
    uplink.py     telemetry: the broker, the node's mqtt section and secrets, the mqtt block
    romfs.py      the node's code as a ROMFS image (--romfs)
    harness.py    this: the lockstep loop, relays, power, watchdog, and the CLI

A run fails (NodeFailed; the CLI exits 1 with the reason on stderr) when the node does
not run as a device would: it never connects or says hello, exits unexpectedly, its
application stops ("main: application stopped") or never starts. A node that boots into
its safe state (no or a broken configuration) runs; a safe boot the scenario asks for is
expected not to start the application.

    python -m host_tools.harness scenarios/sink_lost.json --out result.json [--mpy]
    python -m host_tools.harness SCENARIO --broker HOST:PORT [--mqtt-user U
        --mqtt-password-file F] [--ca CA_FILE] [--ha-prefix homeassistant] [--romfs]

With --broker the node's configuration gets an `mqtt` section for that broker and its
secrets file the password (read from F only, never printed); --ca turns on TLS with
server verification (the CA goes onto the node's flash as DER). A broker that cannot be
reached is no failure: the records stay queued on the node's flash and the summary says so.
--romfs runs the node's code from a ROMFS image (host_tools/romfs.py) that the host board
mounts at boot; the node's heap grows by the image's size and the summary's heap figures
do not count it (`romfs_image_bytes`).

--serial auto|PATH gives the node a serial port (host_tools/serialport.py; PATH: a
symlink to it): its console, Ctrl-C, the REPL and mpremote, as on a board (README "The
host board's serial port"). A Ctrl-C there stops the application in order and leaves the
node at its REPL, where virtual time follows real time (the rest of the scenario then
takes as long in real time); a reset asked there restarts the node process: a soft reset
keeps the watchdog running (the board holds it fed), a hard reset is a reset.
"""

import argparse
import binascii
import json
import math
import os
import queue
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from host_tools import linkcodec as lc
from host_tools import mpinfo
from host_tools.deadman import DeadMan
from host_tools.nodeproc import REAL_TIMEOUT_S, Node, NodeFailed, NodeGone, console_tail
from host_tools.oracle import Oracle
from host_tools.paths import FIRMWARE, REPO, micropypath, micropython_cmd
from host_tools.plant import Plant, PlantParams
from host_tools.scenario import Profile, load_scenario, node_config
from host_tools.serialport import SerialPort
from host_tools.summary import summary
from host_tools.trueheat import true_heat_series
from host_tools.uplink import CA_NAME, NODE_DATA_DIR, Uplink, UplinkError
from host_tools.world import EVENTS as WORLD_EVENTS
from host_tools.world import World

TICK0_BEFORE_WRAP_MS = 60_000  # node ticks start 1 min before the 2**30 wrap
DEFAULT_STEP_S = 5  # plant step: its time constants are >= 15 min, the node still ticks 1 s
REBOOT_MS = 1_000  # virtual time from reset/power-on until the node runs boot.py
HANG_TIMEOUT_S = 3.0  # after an injected hang: real seconds before the watchdog "fires"
APP_STOPPED = "main: application stopped"  # main.py's line when start.run() raised
# events Harness.inject() takes while a run goes on (the plant's and the board's world;
# `trip_reset`: the technician's reset input)
INJECTABLE = (*WORLD_EVENTS, "trip_reset", "power_cut", "bus_error")


def heap_bytes(arg):
    """The unix port's `-X heapsize=` value in bytes: N[w][K|M], w = words of 4 bytes
    scaled to the binary's word size (ports/unix/main.c)."""
    m = re.fullmatch(r"(0x[0-9a-fA-F]+|\d+)([wW]?)([kKmM]?)", arg)
    if not m:
        raise ValueError(f"-X heapsize={arg}: not N[w][K|M]")
    n = int(m.group(1), 0) * {"": 1, "k": 1024, "m": 1 << 20}[m.group(3).lower()]
    if m.group(2):
        n = n * (mpinfo.word_bits() // 8) // 4
    return n


def split_heapsize(cmd):
    """(cmd without its -X heapsize options, the last heapsize given or None)."""
    out, heap, i = [], None, 0
    while i < len(cmd):
        a = cmd[i]
        if a == "-X" and i + 1 < len(cmd) and cmd[i + 1].startswith("heapsize="):
            heap = cmd[i + 1][len("heapsize="):]
            i += 2
            continue
        if a.startswith("-Xheapsize="):
            heap = a[len("-Xheapsize="):]
        else:
            out.append(a)
        i += 1
    return out, heap


def _seal(data):
    """The configuration sealed as the node and provisioning write it (heatgw.seal)."""
    if str(FIRMWARE) not in sys.path:
        sys.path.insert(0, str(FIRMWARE))
    from heatgw.seal import seal

    return seal(data)


# The installer's deploy, on the node's own interpreter and file system (stdin: a JSON doc).
_PROVISION = """
import binascii, board, json, sys
p = json.loads(sys.stdin.read())
d = board.data_dir()
if d != p["data_dir"]:
    raise SystemExit("the node's data directory is %s, not %s" % (d, p["data_dir"]))
if p["config"] is not None:
    with open(d + "/config.json", "wb") as f:
        f.write(binascii.unhexlify(p["config"]))
if p["ca"]:
    with open(d + "/" + p["ca_name"], "wb") as f:
        f.write(binascii.unhexlify(p["ca"]))
if p["secrets"]:
    from heatgw import secrets
    secrets.save(d + "/secrets.json", p["secrets"])
if p["safeboot"]:
    open(d + "/SAFEBOOT", "w").close()
if p["calibration"] is not None:
    with open(d + "/calibration.json", "w") as f:
        f.write(p["calibration"])
print("provisioned")
"""


_PROBES = {}  # (command, path, image) -> the host board's import cost in bytes


def host_board_probe(cmd, path, env):
    """What importing the host board costs the heap of this binary with this module path
    (boards/host/node.py with HEATGW_HOST_PROBE=1 measures it and stops before boot.py), once
    per process for each binary and path."""
    key = (tuple(cmd), path, env.get("HEATGW_ROMFS"))
    if key not in _PROBES:
        penv = dict(os.environ, **env, MICROPYPATH=path, HEATGW_HOST_PROBE="1")
        penv.pop("HEATGW_LINK", None)
        proc = subprocess.run([*cmd, "-m", "node"], cwd=REPO, env=penv, capture_output=True,
                              text=True, timeout=60, check=False)
        m = re.search(r"^host_board_bytes (\d+)$", proc.stdout, re.M)
        if proc.returncode != 0 or not m:
            raise RuntimeError(f"host board probe failed (exit {proc.returncode}):\n"
                               f"{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
        _PROBES[key] = int(m.group(1))
    return _PROBES[key]


class Harness:
    def __init__(self, scenario, workdir, *, mpy=False, module_dirs=(), uplink=None,
                 romfs=False, heapsize=None, serial=None, serial_trace=False,
                 external=None, detach=False, node_env=None):
        """`module_dirs`: folders searched before the firmware (a test's stand-ins);
        `uplink`: host_tools.uplink.Uplink, the broker the node's telemetry goes to;
        `romfs`: the node's code from a ROMFS image (implies precompiled modules; it is
        first on the node's path, before `module_dirs`);
        `heapsize`: the node's `-X heapsize=` (default: $MICROPYTHON_ARGS'), to which
        --romfs adds the image;
        `serial`: "auto" or a path for a symlink: the node gets a serial port (`serial`,
        a SerialPort, made here: its `path` is known before run()); `serial_trace`: it
        keeps what was typed (tests);
        `external`: fn(event, t_s) for scenario events the harness does not know (e.g.
        `heatgw sim`'s broker_down): called in lockstep, the node waits meanwhile; it
        returns False for an event it does not know either;
        `detach`: the node process in its own session (a Ctrl-C at the terminal of an
        interactive tool does not reach it; the tool stops the run).;
        `node_env`: more environment for the node (e.g. HEATGW_IO_LEAD_MS for a feature
        whose peer is a client of the node's)."""
        self.sc = scenario
        self.external = external
        self.detach = detach
        self._injected = queue.SimpleQueue()  # events inject() queued from other threads
        self.injected = []  # {t_s, do, ...}: each injected event as it was applied
        self.mpy = mpy or romfs
        self.uplink = uplink
        extra = [str(d) for d in module_dirs]
        self.provision_path = micropypath("host", extra)  # the installer's tools: source
        self.romfs = None
        if romfs:  # the application from the image only (host_tools/romfs.py)
            from host_tools.romfs import host_romfs

            self.romfs = host_romfs()
            self.micropypath = os.pathsep.join(
                [*extra, *map(str, self.romfs.path_dirs), ".frozen"])
        else:
            if mpy:  # precompiled modules first (host_tools.build_mpy builds them)
                from host_tools.build_mpy import build, host_mpy_dir

                if not build(["host"]):
                    raise RuntimeError("mpy-cross failed for the host board")
                extra.append(host_mpy_dir())
            self.micropypath = micropypath("host", extra)
        self.node_cmd, self.node_env = self._node_cmd(heapsize)
        self.node_env.update(node_env or {})
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.cfg = node_config(scenario)
        if uplink is not None:
            self.cfg["mqtt"] = uplink.config_section(self.cfg.get("mqtt"))
        # the compute load's electricity meter, a pymodbus SDM630 whose registers follow
        # the plant's IT load, and a heat meter that reads its true heat (host_tools/
        # plantmeters.py; scenario keys compute_meter, heat_meter)
        self.compute_meter = None
        self.recovery_log = []  # the node's `recovery` records (heatgw.recovery: hours)
        cm = scenario.get("compute_meter")
        if cm:
            from host_tools.plantmeters import PlantMeters

            self.compute_meter = PlantMeters(cm, heat=scenario.get("heat_meter"))
            self.cfg = self.compute_meter.node_config(
                self.cfg, cm.get("meter", "compute"), cm.get("period_s", 5))
        self.ctl = self.cfg["control"]
        self.tick_ms = self.ctl["tick_ms"]
        self.step_ms = int(scenario.get("step_s", DEFAULT_STEP_S) * 1000)
        self.end_vt = int(scenario["duration_s"] * 1000)
        self.params = PlantParams(**scenario.get("plant", {}))
        self.plant = Plant(self.params, **scenario.get("initial", {}))
        if self.compute_meter is not None:  # what it serves for [0, step)
            self.compute_meter.stepped(0.0, self.plant.load_kw * 1000.0,
                                       self.plant.load_j_total)
        self.load = Profile(scenario.get("load_kw", 100.0), scenario.get("repeat_s"))
        self.demand = Profile(scenario.get("demand_kw", 100.0), scenario.get("repeat_s"))
        self.events = sorted(scenario.get("events", []), key=lambda e: e["t_s"])
        self.utc0 = scenario.get("start_utc", 1_790_000_000)
        self.safe_boot_expected = bool(scenario.get("safe_boot")
                                       or scenario.get("safeboot_file"))
        self.flash_path = self.workdir / "flash.bin"
        self.console_path = self.workdir / "console.log"
        self.vt = 0
        self.world = World(self.plant, self.cfg, scenario)
        self.oracle = Oracle(self.cfg)
        # the relay coils: physical state the harness owns (see _on_pin)
        self.coils = {"reuse": False, "cooler_inhibit": False}
        self.pins = dict.fromkeys(self.coils, False)  # relay pins the node drives active
        # the valve's 0-10 V command (analog.valve.output "pwm"): None while the node has
        # none (the actuator then opens fully while the reuse relay powers it)
        self.valve_out_duty = None
        self.valve_out_full_v = 10.0
        self.dead_man = DeadMan()  # the monostable that enables the relay drivers
        self.pin_log = []  # [t_s, relay, level]: every relay pin level the node drove
        self.hangs = []  # t_s at which each injected hang was sent
        self.technician = []  # {t_s, typed}: the calibration steps typed at the console
        self.console_typed = []  # {t_s, typed}: the `console` events' lines
        # results
        self.transitions = []
        self.node_events = []
        self.saves = []
        self.restores = []
        self.boots = []
        self.cuts = []
        self.watchdog_starts = []  # (t_s, timeout_ms) each time a node started its watchdog
        self.peak_heap = 0
        self.host_board_bytes = None  # what the host board's modules cost (node.py)
        self.heap_log = []  # (t_s, peak, sample point, min largest free) as they change
        self.heap_by_boot = {}  # boot number -> the node's last heap record in it
        self.mqtt_by_boot = {}  # boot number -> the node's last `mqtt` record in it
        self.modbus_by_boot = {}  # boot number -> the node's last `modbus` record in it
        self.analog_by_boot = {}  # boot number -> the node's last `analog` record in it
        self.bms_by_boot = {}  # boot number -> the node's last `bms` record in it
        self.flash = None
        self.last_status = None
        self.final_totals = None
        self.node = None
        self._pending_reason = None
        self._next_step_vt = 0
        self._inflight = None
        self._last_saved = None
        self._awaiting_restore = None
        self._horizon = 0
        self._pending_cut = None  # a power_cut event, acted on when the node next idles
        self._pending_hang = False
        self._pending_bus_error = False
        self._pending_node_lines = []  # injections sent when the node next idles
        self._hang_sent = False  # the node was told to hang: its silence is expected
        self._cut_off_ms = 0
        self._off_until = 0  # powered off until then, to boot with _off_cause
        self._off_cause = None
        self.serial = None
        if not serial and any(ev.get("do") in ("technician", "console")
                              for ev in self.events):
            serial = "auto"  # someone types at the console: a port to type at
        if serial:
            self.serial = SerialPort(link=None if serial == "auto" else serial,
                                     trace=serial_trace)
        self.repl_entries = []  # {t_s, mode, main_ran, app, safe_boot} each time
        self.resets = []  # {t_s, kind} for every reset asked at the serial port
        self._stop_requested = False

    def _node_cmd(self, heapsize):
        """The node's command line and extra environment. The heap the node is given
        (`heapsize`, else $MICROPYTHON_ARGS') is the node's own: the harness adds what a
        board does not keep in its heap (README, "Heap accounting on the host board"):
        with ROMFS the image (boards/host/node.py reads it into one buffer; rounded up
        to 4 KB, $HEATGW_ROMFS names it), and always the host board's own modules, as a
        probe of the same binary and path measures them (host_board_probe)."""
        cmd, given = split_heapsize(micropython_cmd())
        heap = heapsize or given
        env = {}
        self.romfs_image_bytes = None
        if self.romfs is not None:
            size = self.romfs.image_bytes
            self.romfs_image_bytes = size
            env["HEATGW_ROMFS"] = str(self.romfs.image)
        self.host_board_probe_bytes = None
        if heap is not None:
            n = heap_bytes(heap)
            if self.romfs_image_bytes:
                n += 4096 * math.ceil(self.romfs_image_bytes / 4096)
            self.host_board_probe_bytes = host_board_probe(cmd, self.micropypath, env)
            n += self.host_board_probe_bytes
            heap = f"{n // 1024}K" if n % 1024 == 0 else str(n)
        self.heapsize = heap  # None: the binary's default heap
        if heap is not None:
            cmd += ["-X", f"heapsize={heap}"]
        return cmd, env

    # -- time --------------------------------------------------------------------------

    def _horizon_now(self):
        """Until when nothing served changes: next plant step, event, watchdog, end.
        (Coils change nothing served: the plant takes them at its steps.)"""
        h = min(self._next_step_vt, self.end_vt)
        if self.events:
            h = min(h, int(self.events[0]["t_s"] * 1000))
        expiry = self._wdt_expiry()
        if expiry is not None:
            h = min(h, expiry)
        return max(h, self.vt)

    def _wdt_expiry(self):
        """When the node's watchdog fires unless fed again (None: not started)."""
        node = self.node
        if node is None or node.wdt_timeout_ms is None:
            return None
        return node.last_feed_vt + node.wdt_timeout_ms

    def _step_plant(self):
        """At a step boundary B = vt: integrate [B - step, B) with the relays as they are,
        then serve the plant's state at B until the next boundary."""
        dt_s = self.step_ms / 1000.0
        t0_s = (self.vt - self.step_ms) / 1000.0
        w = self.world
        w.flow_to(self.vt)
        duty = self.valve_out_duty
        cmd = 1.0 if duty is None else duty / 65535 * self.valve_out_full_v / 10.0
        self.plant.step(dt_s, load_kw=self.load(t0_s), demand_kw=self.demand(t0_s),
                        reuse_relay=self.coils["reuse"],
                        cooler_inhibit_relay=self.coils["cooler_inhibit"],
                        building_pump_on=w.pump_on, valve_stuck=w.valve_stuck,
                        valve_cmd=cmd)
        w.plant_stepped()
        cm = self.compute_meter
        if cm is not None:  # the load over the next step, energy so far; the step's heat
            cm.stepped(self.vt / 1000.0, self.plant.load_kw * 1000.0, self.plant.load_j_total)
            if cm.heat is not None:
                cm.heat_stepped(float(true_heat_series(self.plant.log[-1:])[0]))
        self._next_step_vt += self.step_ms
        self._mark_dirty()

    def _mark_dirty(self):
        self.oracle.dirty = True
        self.world.lines_dirty = True

    def _advance_to(self, vt):
        """Move time to vt: step the plant on its grid, let the hardware act, apply
        scenario events, bring the oracle up to date."""
        while True:
            stop = min(self._next_step_vt, vt)
            hw = self._hardware_due()
            if hw is not None:
                stop = min(stop, max(hw, self.vt))
            self.vt = max(self.vt, stop)
            if self.vt == self._next_step_vt:
                self._step_plant()
            if hw is not None and hw <= self.vt:
                self._hardware_at()
            while self.events and int(self.events[0]["t_s"] * 1000) <= self.vt:
                self._apply_event(self.events.pop(0))
                self._mark_dirty()
            self.oracle.evaluate(self.vt, self.world, self.coils["reuse"])
            if self.vt >= vt:
                return

    def _set_condition(self, reason, active):
        self.oracle.set(reason, active, self.vt, self.coils["reuse"])

    def _apply_event(self, ev):
        do = ev["do"]
        if do in WORLD_EVENTS:
            self.world.apply_event(ev, self.vt)
        elif do == "power_cut":
            self._pending_cut = ev
        elif do == "hang_control":
            self._pending_hang = True
            self._set_condition("control_hung", True)
        elif do == "bus_error":
            self._pending_bus_error = True
            self._set_condition("task_crash", True)
        elif do == "watchdog_error":  # the next watchdog feed raises: the supervisor dies
            self._pending_node_lines.append(lc.WDT_ERROR)
            self._set_condition("task_crash", True)
        elif do == "flash_error":  # the next `ops` flash programs/erases fail (0: none)
            self._pending_node_lines.append(lc.flash_error(int(ev["ops"])))
        elif do == "console":  # a line typed at the console (a technician's command)
            line = ev["line"] + "\r"
            self.console_typed.append({"t_s": self.vt / 1000.0, "typed": line})
            self.serial.type_now(line.encode())
        elif do == "technician":  # a calibration step typed at the console
            line = self._technician_line(ev)
            self.technician.append({"t_s": self.vt / 1000.0, "typed": line})
            self.serial.type_now(line.encode())
        elif do == "trip_reset":
            self.world.inputs["trip_reset"] = True
            self.events.append({"t_s": ev["t_s"] + ev.get("hold_s", 2), "do": "input",
                                "name": "trip_reset", "value": False})
            self.events.sort(key=lambda e: e["t_s"])
        elif self.external is None or self.external(ev, self.vt / 1000.0) is False:
            raise ValueError(f"unknown scenario event {do!r}")

    def _technician_line(self, ev):
        """What the technician types at the console for a `technician` event (the console's
        `calibrate`, heatgw/con_calibrate.py), with `yes` where the step asks to confirm.
        `ref: "bath"` is what the reference thermometer in the sensors' bath reads."""
        call = ev["call"]
        if call == "begin":
            names = " ".join(ev["sensors"])
            return f"calibrate begin {ev['method']} {names} n={int(ev.get('n', 30))}\ryes\r"
        if call == "measure":
            ref = ev.get("ref")
            if ref == "bath":
                ref = self.world.bath_c() + float(self.sc.get("reference_error_k", 0.0))
            return "calibrate measure" + ("" if ref is None else f" {float(ref)!r}") + "\r"
        if call == "clear":
            return f"calibrate clear {ev['sensor']}\ryes\r"
        if call == "finish":
            return "calibrate finish\ryes\r"
        if call == "release":
            return "calibrate release " + " ".join(ev.get("sensors") or ()) + "\r"
        if call in ("abort", "status"):
            return f"calibrate {call}\r"
        raise ValueError(f"technician: unknown call {call!r}")

    # -- relays: pins -> coils ---------------------------------------------------------
    # The node drives pins (P lines); the harness owns what the coils do. A coil is
    # energised while its pin is active (active-low modules, floating = off) AND the
    # dead-man monostable is up (host_tools/deadman.py: an edge on the "deadman" pin
    # within the board's hold time). The monostable acts by itself at a virtual time,
    # even while the node hangs: _advance_to stops at _hardware_due and calls
    # _hardware_at, which drops the coils (reason "dead_man"), so the due time moves to
    # None. Coils change only through _coil / _all_coils_off, which keep the
    # transitions and boots.

    def _on_pin(self, name, level):
        """The node set pin `name` to `level` (0/1) at self.vt."""
        if name == "deadman":
            self.dead_man.set_level(level, self.vt)
        elif name == "valve_out":  # the valve's 0-10 V command: a duty, not a coil
            self.valve_out_duty = level
            self.pin_log.append([self.vt / 1000.0, name, level])
            return
        else:
            self.pins[name] = level == 0  # active-low modules
            self.pin_log.append([self.vt / 1000.0, name, level])
        self._update_coils()

    def _update_coils(self, reason=None):
        up = self.dead_man.up(self.vt)
        for name, active in self.pins.items():
            self._coil(name, active and up, reason if name == "reuse" else None)

    def _hardware_due(self):
        """The next vt at which hardware between pins and coils acts (None: none)."""
        if not any(self.coils.values()):
            return None  # nothing to drop
        return self.dead_man.expiry()

    def _hardware_at(self):
        """_hardware_due() has come: the monostable runs out and drops the coils."""
        if any(self.coils.values()) and not self.dead_man.up(self.vt):
            self.dead_man.drops_t_s.append(self.vt / 1000.0)
        self._update_coils("dead_man")

    def _coil(self, name, energised, reason=None):
        if self.coils.get(name) == energised:
            return
        self.coils[name] = energised
        if energised and self.boots and "first_energise_t_s" not in self.boots[-1]:
            self.boots[-1]["first_energise_t_s"] = self.vt / 1000.0
        if name != "reuse":
            return
        state = "reuse" if energised else "bypass"
        tr = {"t_s": self.vt / 1000.0, "state": state, "reason": reason}
        if state == "bypass":
            onsets = list(self.oracle.conditions.values())
            tr["condition_t_s"] = min(onsets) / 1000.0 if onsets else None
            tr["conditions"] = sorted(self.oracle.conditions)
        self.transitions.append(tr)
        if reason is None:
            self._pending_reason = tr  # the node's next state event names it

    def _all_coils_off(self, reason):
        # relay inputs float: the modules' pull-ups hold every coil off (and the
        # dead-man output floats: no more edges); the valve's 0-10 V command falls to 0
        if self.valve_out_duty is not None:
            self.valve_out_duty = 0
        for name in list(self.coils):
            self.pins[name] = False
            self._coil(name, False, reason if name == "reuse" else None)
        self.dead_man.power_off()

    # -- node messages -----------------------------------------------------------------

    def _at(self, vt):
        """A node message stamped vt: bring the harness to that instant first."""
        if vt > self.vt:
            self._advance_to(vt)

    def _handle(self, line):
        """One node line: "more" (read on), "cut" (power cut reached) or the deadline of
        an idle node (None: no task waits)."""
        op, args = lc.parse(line)
        if op == lc.PIN:
            name, level, vt = args
            self._at(vt)
            self._on_pin(name, level)
        elif op == lc.WDT_FEED:
            self._at(args[0])
            self.node.last_feed_vt = self.vt
        elif op == lc.WDT_START:
            timeout, vt = args
            self._at(vt)
            self.node.wdt_timeout_ms = timeout
            self.node.last_feed_vt = self.vt
            self.watchdog_starts.append((self.vt / 1000.0, timeout))
        elif op == lc.RECORD:
            kind, vt, rec = args
            self._at(vt)
            self._record(kind, rec)
        elif op == lc.CUT_REACHED:
            vt, info = args
            self._at(vt)
            self.cuts[-1]["info"] = info
            self._cut_landed(self.cuts[-1])
            return "cut"
        elif op == lc.DEAD_MAN:
            hold_ms, vt = args
            self._at(vt)
            self.dead_man.hold_ms = hold_ms
        elif op == lc.IDLE:
            if args[0] is None:
                self._check_app_runs()
            return args[0]
        return "more"

    def _check_app_runs(self):
        """The node idles with no task waiting: fine for a safe boot; otherwise the
        application stopped or never started."""
        text = self.console_path.read_text(errors="replace")  # the node writes it directly
        if APP_STOPPED in text:
            line = next(ln for ln in text.splitlines() if APP_STOPPED in ln)
            raise NodeFailed(f"the application crashed at boot: {line.strip()}")
        if not self.node.app_booted and not self.safe_boot_expected:
            raise NodeFailed("the node never reached the application (no boot record) "
                             "and no task runs")

    def _record(self, kind, rec):
        t_s = self.vt / 1000.0
        if kind == "event":
            rec["harness_t_s"] = t_s
            self.node_events.append(rec)
            kind = rec.get("kind")
            if kind in ("boot", "safe_mode"):  # the application, or safe mode instead
                self.node.app_booted = True
            tr = self._pending_reason
            if tr is not None and kind == "state":
                if tr["state"] == rec.get("state"):
                    tr["reason"] = rec.get("reason")
                    tr["node_reasons"] = rec.get("reasons")
                self._pending_reason = None
            elif tr is not None and kind == "crash" and tr["state"] == "bypass":
                tr["reason"] = f"crash:{rec.get('task')}"  # the task's guard dropped it
                self._pending_reason = None
        elif kind == "saving":
            self._inflight = {"seq": rec["seq"], "totals": rec["totals"]}
        elif kind == "saved":
            self._inflight = None
            self.saves.append({"t_s": t_s, "seq": rec["seq"], "why": rec.get("why"),
                               "totals": rec["totals"]})
            self._last_saved = {"seq": rec["seq"], "totals": rec["totals"]}
            if rec.get("why") == "shutdown":
                self.final_totals = rec["totals"]
        elif kind == "restored":
            self.restores.append({"t_s": t_s, **rec})
            cut = self._awaiting_restore
            boot = len(self.boots)
            if (cut is None and rec.get("from") == "queue" and self.cuts
                    and self.cuts[-1].get("restored_boot") == boot):
                cut = self.cuts[-1]  # telemetry's queue had newer totals: the boot took them
            if cut is not None:
                self._awaiting_restore = None
                got = {"seq": rec["seq"], "totals": rec["totals"]}
                cut["restored"] = got
                cut["restored_from"] = rec.get("from", "state")
                cut["restored_boot"] = boot
                # Equal to the last completed save; or, when the cut fell on the very
                # last flash operation of a save and it landed, to that save (it is
                # then complete on flash, just not acknowledged); or newer, from the
                # telemetry queue's newest record ("queue").
                cut["restored_is"] = ("queue" if rec.get("from") == "queue" else
                                      "last_saved" if got == cut["last_saved"] else
                                      "inflight" if got == cut["inflight"] else "other")
        elif kind == "flash":
            self.flash = rec
        elif kind == "host_board":  # boards/host/node.py: its own modules' heap, per boot
            self.host_board_bytes = max(self.host_board_bytes or 0, rec["bytes"])
        elif kind == "repl":  # the node sits at its REPL (serial port): why
            self.node.at_repl = True
            self.repl_entries.append({"t_s": t_s, "boot": len(self.boots), **rec})
            if rec.get("main_ran") and rec.get("app") != "stopped" \
                    and not rec.get("safe_boot"):
                raise NodeFailed("the application stopped or never started and the node "
                                 "sits at its REPL (see the console)")
        elif kind == "heap":  # heatgw.heapmon: this boot's figures so far
            self.peak_heap = max(self.peak_heap, rec["peak_heap_bytes"])
            self.heap_log.append((t_s, rec["peak_heap_bytes"], rec.get("peak_at"),
                                  rec.get("min_largest_free_bytes")))
            self.heap_by_boot[len(self.boots)] = rec
        elif kind == "mqtt":  # heatgw.telemetry: this boot's counters so far
            self.mqtt_by_boot[len(self.boots)] = rec
        elif kind == "modbus":  # heatgw.modbus: this boot's meters and counters so far
            self.modbus_by_boot[len(self.boots)] = rec
        elif kind == "bms":  # heatgw.bms: the building's server, this boot's counters
            self.bms_by_boot[len(self.boots)] = rec
        elif kind == "recovery":  # heatgw.recovery: an hour's ratio, with its span
            self.recovery_log.append({"t_s": t_s, "boot": len(self.boots), **rec})
        elif kind == "analog":  # heatgw.analog: this boot's inputs, every minute
            self.analog_by_boot[len(self.boots)] = rec
        elif kind == "status":
            self.last_status = rec
            self.peak_heap = max(self.peak_heap, rec.get("peak_heap_bytes", 0))

    # -- power, boot, watchdog ---------------------------------------------------------

    def _provision(self):
        """Write config.json (and with a broker secrets.json and the CA) into the node's
        flash, as an installer's deploy would: the configuration sealed, as
        host_tools.provision writes it. Scenario keys: `config_text` writes that text
        verbatim, unsealed (a broken or hand-edited file), `"config_file": null` writes none,
        `calibration_file` (an object) is written as calibration.json. What is written
        goes to the provisioning process on its stdin (a password never on a command
        line); secrets.json through the firmware's own heatgw.secrets.save (validated)."""
        text = self.sc.get("config_text", json.dumps(self.cfg))
        if "config_file" in self.sc and self.sc["config_file"] is None:
            text = None
        up = self.uplink
        der = up.ca_der() if up is not None else None
        data = None if text is None else text.encode()
        if data is not None and "config_text" not in self.sc:
            data = _seal(data)  # as host_tools.provision writes it
        doc = {"config": None if data is None else binascii.hexlify(data).decode(),
               "data_dir": NODE_DATA_DIR,
               "secrets": up.secrets() if up is not None else {},
               "ca": None if der is None else binascii.hexlify(der).decode(),
               "ca_name": CA_NAME,
               "safeboot": bool(self.sc.get("safeboot_file")),
               "calibration": (None if self.sc.get("calibration_file") is None
                               else json.dumps(self.sc["calibration_file"]))}
        env = dict(os.environ, MICROPYPATH=self.provision_path,
                   HEATGW_FLASH=str(self.flash_path))
        env.pop("HEATGW_LINK", None)
        out = subprocess.run([*micropython_cmd(), "-c", _PROVISION], cwd=REPO, env=env,
                             input=json.dumps(doc), capture_output=True, text=True,
                             timeout=60, check=False)
        if "provisioned" not in out.stdout:
            raise NodeFailed(f"provisioning failed: {out.stdout}{out.stderr}")

    def _boot_node(self, cause, env=None):
        extra = dict(self.node_env)
        extra.update(env or {})
        self.node = Node(micropypath=self.micropypath, listener=self.listener,
                         flash_path=self.flash_path, console=self.console,
                         console_path=self.console_path, cmd=self.node_cmd,
                         env=extra, serial=self.serial,
                         detach=self.detach and self.serial is None)
        self.world.forget_served()
        try:
            line = self.node.readline(REAL_TIMEOUT_S)
        except NodeGone as e:
            raise NodeFailed(f"{e} before saying hello") from e
        if line is None or not line.startswith(lc.HELLO):
            raise NodeFailed(f"node said {line!r} instead of hello")
        tick0 = (1 << 30) - TICK0_BEFORE_WRAP_MS
        self._horizon = self._horizon_now()
        lines = [lc.boot(self.vt, tick0, self.sc.get("safe_boot"), cause),
                 lc.advance(self.vt, self._horizon, self.utc0 + self.vt // 1000)]
        lines += self.world.service_lines(self.vt, self._horizon)
        self.node.send("".join(lines) + lc.END)
        self.boots.append({"t_s": self.vt / 1000.0, "cause": cause,
                           "coils_at_boot": dict(self.coils)})

    def _power_off(self, reason):
        if self.node is not None:
            self.node.kill()
            self.node = None
        self._all_coils_off(reason)

    def _reset(self, cause):
        self._power_off(cause)
        self._set_condition("control_hung", False)
        self._set_condition("task_crash", False)
        self._off_until = self.vt + REBOOT_MS
        self._off_cause = cause

    def _watchdog_fires_after_hang(self):
        node = self.node
        if node.wdt_timeout_ms is None:
            raise NodeFailed("node hung before starting its watchdog")
        expiry = max(self.vt, node.last_feed_vt + node.wdt_timeout_ms)
        self._advance_to(expiry)  # relays stay as the hung node left them
        self._hang_sent = False
        self._reset("watchdog")

    def _node_reset(self, gone):
        """The node process ended for a reset asked at its serial port (linkcodec.proto
        EXIT_*). A soft reset restarts it at once with the watchdog running on (a board's
        cannot be stopped; the new boot.py holds it fed), the relays as they are (the
        application stopped: safe); a hard reset is a reset (relays off, watchdog gone).
        Anything else is a failure."""
        rc = gone.returncode
        p = lc.proto
        if self.serial is None or rc not in (p.EXIT_SOFT_RESET, p.EXIT_SOFT_RESET_RAW,
                                             p.EXIT_HARD_RESET):
            raise NodeFailed(f"{gone} unexpectedly") from gone
        old = self.node
        old.kill()
        self.node = None
        if rc == p.EXIT_HARD_RESET:
            self.resets.append({"t_s": self.vt / 1000.0, "kind": "hard"})
            self._reset("hard_reset")
            return
        raw = rc == p.EXIT_SOFT_RESET_RAW
        self.resets.append({"t_s": self.vt / 1000.0, "kind": "soft_raw" if raw else "soft"})
        env = {"HEATGW_RESET": "soft"}
        if raw:
            env["HEATGW_REPL"] = "raw"
        if old.wdt_timeout_ms is not None:
            env["HEATGW_WDT_MS"] = str(old.wdt_timeout_ms)
        self._boot_node("soft_reset", env)
        self.node.wdt_timeout_ms = old.wdt_timeout_ms
        self.node.last_feed_vt = old.last_feed_vt

    def inject(self, event):
        """Queue a scenario event (a dict with `do` and its keys, no `t_s`) from any
        thread: the harness applies it at the node's next idle point, stamped with that
        instant (the run is lockstep: the node never sees the world change behind the
        time it was given). Raises ValueError at once for an event no one knows."""
        do = event.get("do")
        if do not in INJECTABLE and (self.external is None or not isinstance(do, str)):
            raise ValueError(f"cannot inject {do!r}")
        self._injected.put(dict(event))

    def _drain_injected(self):
        """Apply what inject() queued, now (the node idles at self.vt)."""
        while True:
            try:
                ev = self._injected.get_nowait()
            except queue.Empty:
                return
            ev["t_s"] = self.vt / 1000.0
            self.injected.append(dict(ev))
            self.events.insert(0, ev)  # due now: _advance_to applies it
            self._advance_to(self.vt)

    def request_stop(self):
        """End the run at the node's next request for time (another thread may call it:
        a test done with a node that sits at its REPL, where time runs in real time)."""
        self._stop_requested = True

    def _cut_landed(self, cut):
        cut["cut_t_s"] = self.vt / 1000.0
        cut["inside_save"] = self._inflight is not None
        cut["inflight"] = self._inflight
        cut["last_saved"] = self._last_saved
        cut["restored"] = None
        self._inflight = None
        self._awaiting_restore = cut

    def _cut_power(self):
        self._power_off("power_cut")
        self._off_until = self.vt + self._cut_off_ms
        self._off_cause = "power_cut"

    # -- run ---------------------------------------------------------------------------

    def run(self):
        """Run the scenario; its summary. NodeFailed when the node did not run."""
        wall0 = time.monotonic()
        if self.flash_path.exists():
            self.flash_path.unlink()
        self._provision()
        self.world.flow_vt = 0
        self._next_step_vt = self.step_ms
        # served values for [0, step): the plant's initial state
        self.world.plant_stepped()
        self.oracle.evaluate(self.vt, self.world, self.coils["reuse"])
        self.console = open(self.console_path, "wb")
        if self.serial is not None:
            self.serial.console = self.console  # the port's bridge writes the log
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(1)
        try:
            self._boot_node("power_on")
            self._loop()
            self._shutdown_node()
        except NodeFailed as e:
            self.console.flush()
            raise NodeFailed(f"{self.sc['name']}: {e} at t = {self.vt / 1000.0:.3f} s\n"
                             f"--- node console ({self.console_path}), last lines:\n"
                             f"{console_tail(self.console_path)}") from e
        finally:
            if self.node is not None:
                self.node.kill()
            self.listener.close()
            if self.compute_meter is not None:
                self.compute_meter.stop()
            if self.serial is not None:
                self.serial.close()
            self.console.close()
        return summary(self, time.monotonic() - wall0)

    def _loop(self):
        """Lockstep: read the node until it idles, then move time for it (_idle)."""
        while self.vt < self.end_vt:
            if self.node is None:  # powered off: the plant runs on, relays safe
                self._advance_to(min(self._off_until, self.end_vt))
                if self.vt >= self._off_until:
                    self._boot_node(self._off_cause)
                continue
            timeout = HANG_TIMEOUT_S if self._hang_sent else REAL_TIMEOUT_S
            try:
                line = self.node.readline(timeout)
            except NodeGone as e:
                self._node_reset(e)
                continue
            if line is None:
                if not self._hang_sent:
                    raise NodeFailed("node stopped answering (real-time timeout)")
                self._watchdog_fires_after_hang()
                continue
            r = self._handle(line)
            if r == "more":
                continue
            if r == "cut":
                self.cuts[-1]["cut_vt"] = self.vt
                self._cut_power()
                continue
            self._idle(r)

    def _idle(self, deadline):
        """The node idles until `deadline` (None: no task waits): move time to the
        horizon or the deadline, act on what falls due, then send the next step."""
        node = self.node
        if self._stop_requested:
            # the node may have moved its own time up to the horizon it was given (it
            # asks only beyond it): end there, never behind the node
            self.end_vt = min(self.end_vt, max(self.vt, self._horizon))
        target = self._horizon_now()
        if deadline is not None:
            target = max(min(target, deadline), self.vt)
        expiry = self._wdt_expiry()
        if expiry is not None and expiry <= target:
            self._advance_to(expiry)
            self._reset("watchdog")
            return
        self._advance_to(target)
        self._drain_injected()
        if self._pending_cut is not None:
            ev, self._pending_cut = self._pending_cut, None
            self._cut_off_ms = int(ev.get("off_s", 10) * 1000)
            if ev.get("at_flash_op") is None:
                self.cuts.append({"t_s": self.vt / 1000.0, "at_flash_op": None,
                                  "saves_before": len(self.saves)})
                self._cut_landed(self.cuts[-1])
                self._cut_power()
                return
            self.cuts.append({"t_s": self.vt / 1000.0, "at_flash_op": ev["at_flash_op"],
                              "torn_bytes": ev.get("torn_bytes", 0),
                              "saves_before": len(self.saves)})
            node.send(lc.cut_at(ev["at_flash_op"], ev.get("torn_bytes", 0)))
        if self._pending_bus_error:
            self._pending_bus_error = False
            node.send(lc.BUS_ERROR)
        if self._pending_node_lines:
            node.send("".join(self._pending_node_lines))
            self._pending_node_lines = []
        if self._pending_hang:
            self._pending_hang = False
            self._hang_sent = True
            self.hangs.append(self.vt / 1000.0)
            node.send(lc.HANG)
        if self.vt >= self.end_vt:
            return
        self._horizon = self._horizon_now()
        node.send(lc.advance(self.vt, self._horizon)
                  + "".join(self.world.service_lines(self.vt, self._horizon)) + lc.END)

    def _shutdown_node(self):
        """Orderly stop at the end: the node saves its totals (s: KeyboardInterrupt)."""
        if self.node is None:
            return
        if not (self.node.app_booted or self.node.at_repl or self.safe_boot_expected):
            raise NodeFailed("the node never reached the application (no boot record)")
        self.node.send(lc.advance(self.vt, self.vt) + lc.STOP + lc.END)
        while True:
            try:
                line = self.node.readline(REAL_TIMEOUT_S)
            except NodeGone:
                break
            if line is None or line.startswith(lc.IDLE):
                break  # stopped (a node with nothing to run just idles on)
            if line[:1] in (lc.RECORD, lc.PIN):
                self._handle(line)
        self.node.kill()
        self.node = None


def run_scenario(path, out=None, workdir=None, *, mpy=False, module_dirs=(), uplink=None,
                 romfs=False, heapsize=None, serial=None, node_env=None):
    """Run one scenario file: (summary, harness). NodeFailed when the node did not run.
    uplink / romfs / heapsize / serial / node_env: see Harness."""
    sc = load_scenario(path)
    if workdir is None:
        workdir = tempfile.mkdtemp(prefix=f"heatgw-{sc['name']}-")
    h = Harness(sc, workdir, mpy=mpy, module_dirs=module_dirs, uplink=uplink, romfs=romfs,
                heapsize=heapsize, serial=serial, node_env=node_env)
    if h.serial is not None:
        print(f"harness: the node's serial port is {h.serial.name} ({h.serial.path})",
              file=sys.stderr, flush=True)
    summary_ = h.run()
    if out:
        Path(out).write_text(json.dumps(summary_, indent=1) + "\n")
    return summary_, h


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("scenario")
    ap.add_argument("--out", help="write the JSON summary here")
    ap.add_argument("--workdir", help="flash image and console log (default: a temp dir)")
    ap.add_argument("--mpy", action="store_true",
                    help="run precompiled modules (build/mpy/host), as a device runs frozen code")
    ap.add_argument("--broker", metavar="HOST:PORT",
                    help="telemetry on: the node publishes its records to this broker")
    ap.add_argument("--mqtt-user", metavar="U", help="the node's broker user name")
    ap.add_argument("--mqtt-password-file", metavar="F",
                    help="the broker password, from this file only (into the node's "
                         "secrets file; never printed)")
    ap.add_argument("--ca", metavar="CA_FILE",
                    help="TLS with server verification against this CA (PEM or DER)")
    ap.add_argument("--ha-prefix", metavar="PREFIX",
                    help="Home Assistant discovery prefix, e.g. homeassistant")
    ap.add_argument("--romfs", action="store_true",
                    help="the node's code from a ROMFS image mounted at boot (implies --mpy)")
    ap.add_argument("--serial", metavar="auto|PATH",
                    help="give the node a serial port (a pty; PATH: a symlink to it): "
                         "console, Ctrl-C, REPL, mpremote")
    args = ap.parse_args(argv)
    uplink = None
    try:
        if args.broker:
            uplink = Uplink(args.broker, user=args.mqtt_user,
                            password_file=args.mqtt_password_file, ca_file=args.ca,
                            ha_prefix=args.ha_prefix)
        elif args.mqtt_user or args.mqtt_password_file or args.ca or args.ha_prefix:
            raise UplinkError("--mqtt-user, --mqtt-password-file, --ca and --ha-prefix "
                              "need --broker")
    except UplinkError as e:
        print(f"harness: {e}", file=sys.stderr)
        return 2
    try:
        summary_, _ = run_scenario(args.scenario, args.out, args.workdir, mpy=args.mpy,
                                   uplink=uplink, romfs=args.romfs, serial=args.serial)
    except NodeFailed as e:
        if args.out:  # a summary left from an earlier run must not pass for this one
            Path(args.out).unlink(missing_ok=True)
        print(f"harness: FAILED: {e}", file=sys.stderr)
        return 1
    brief = {k: summary_[k] for k in ("scenario", "metered", "plant", "heat_error_pct",
                                       "peak_heap_bytes", "min_largest_free_bytes",
                                       "memory_errors", "wall_s")}
    brief["relay_transitions"] = len(summary_["relay_transitions"])
    for k in ("romfs_image_bytes", "mqtt", "uplink", "net_worst_real_ms", "net_worst_where",
              "modbus", "bms"):
        if summary_.get(k) is not None:
            brief[k] = summary_[k]
    print(json.dumps(brief, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
