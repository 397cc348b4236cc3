"""The plant's Modbus meters as its harness serves them: the compute load's electricity
meter, an Eastron SDM630 (or SDM120), and optionally a heat meter, on one Modbus TCP server
(a real pymodbus server) whose registers follow the plant in node (virtual) time; and the
truth to judge the node's heat recovery ratio and heat meter check by.

    meters = PlantMeters({"model": "sdm630", "slave": 1, "energy_kwh": 12345.75},
                         heat={"slave": 2, "energy_kwh": 5000.0, "gain": 1.0})
    meters.port                          # the node polls 127.0.0.1:port
    meters.stepped(t_s, load_w, load_j)  # at every plant step (host_tools.harness)
    meters.heat_stepped(heat_j)          # ... with the step's true (IF97) heat
    meters.energy_j(t_s)                 # the true compute energy at any t_s (the log)
    meters.stop()

A scenario asks for them with `compute_meter` and `heat_meter` (README "Scenarios"); the
harness then adds them to the node's `modbus` section (a bus `plant` to 127.0.0.1:port;
the compute meter with role compute and the built-in map, the heat meter with role heat
and a float32 kWh register at input register 0x0100) and, unless the scenario sets them,
`recovery.compute` and `recovery.heat_check`.

The heat meter reads the plant's true heat delivered (IAPWS-IF97, host_tools/trueheat.py,
per plant step) times `gain` (1.0: a perfect meter; 1.1: one that reads 10 % high), added
to its initial `energy_kwh`, as a float32 register updated at each step.

What it serves: the plant's IT load is its electric load (every watt of the compute load
ends as heat in the IT loop, host_tools.plant). At each plant step B (the harness's
lockstep: the node runs alone from B to the next step) the registers become the load the
plant holds over [B, B + step) (total system power, W) and the plant's cumulative load
energy at B plus the initial reading (import active energy, kWh), both IEEE-754 float32,
high word first, as an SDM630 answers (REFERENCE: input registers 0x34 and 0x48). A
request gets what was set last: the server answers in real time, the node asks in virtual
time, and the two meet at the step boundaries. So a read returns the energy up to the last
step boundary: a real meter's register, too, lags by its own update interval.

The true energy between two harness times comes from the log of (t_s, cumulative J) per
step, linear within a step (the plant's load is constant over a step): exact.
"""

import asyncio
import logging
import socket
import struct
import threading

MODELS = {"sdm630": (0x34, 0x48), "sdm120": (0x0C, 0x48)}  # power, import energy


def _f32(v):
    b = struct.pack(">f", v)
    return [b[0] << 8 | b[1], b[2] << 8 | b[3]]


HEAT_REG = 0x0100  # the heat meter's energy, kWh, float32, input registers


class PlantMeters:
    def __init__(self, spec, heat=None):
        from pymodbus.server import ModbusTcpServer
        from pymodbus.simulator import DataType, SimData, SimDevice

        logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
        self.model = spec.get("model", "sdm630")
        if self.model not in MODELS:
            raise ValueError(f"compute_meter.model: {self.model!r} is not one of "
                             f"{', '.join(MODELS)}")
        self.slave = int(spec.get("slave", 1))
        self.energy0_kwh = float(spec.get("energy_kwh", 0.0))
        self.power_w = 0.0
        self.energy_kwh = self.energy0_kwh
        self.log = [(0.0, 0.0)]  # (t_s, plant load energy J) at each step boundary
        self.reads = 0
        self.heat = heat
        self.heat_j = 0.0  # the plant's true heat so far
        self.heat_kwh = None
        self.heat_reads = 0
        self.served = {}  # register address -> the value its last read returned
        p_addr, e_addr = MODELS[self.model]
        bits = [SimData(0, values=[False] * 16, datatype=DataType.BITS)]
        holding = [SimData(0xFFF0, values=[0], datatype=DataType.REGISTERS)]

        def device(slave, regmap, count):
            async def action(fc, start, address, count_, registers, values):
                # every read gets the values set last (registers of the block at `start`)
                count()
                for addr, get in regmap:
                    if start <= addr and addr + 2 <= start + len(registers):
                        v = get()
                        registers[addr - start:addr - start + 2] = _f32(v)
                        if slave == self.slave:
                            self.served[addr] = v
                return None

            inputs = [SimData(a, values=[0, 0], datatype=DataType.REGISTERS)
                      for a in sorted(a for a, _ in regmap)]
            return SimDevice(slave, simdata=(bits, list(bits), holding, inputs),
                             action=action)

        def served():
            self.reads += 1

        def heat_served():
            self.heat_reads += 1

        devs = [device(self.slave, ((p_addr, lambda: self.power_w),
                                    (e_addr, lambda: self.energy_kwh)), served)]
        if heat is not None:
            self.heat_slave = int(heat.get("slave", 2))
            self.heat0_kwh = float(heat.get("energy_kwh", 0.0))
            self.heat_gain = float(heat.get("gain", 1.0))
            self.heat_kwh = self.heat0_kwh
            devs.append(device(self.heat_slave, ((HEAT_REG, lambda: self.heat_kwh),),
                               heat_served))
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        self.port = s.getsockname()[1]
        s.close()
        self._loop = asyncio.new_event_loop()
        self._server = None
        self._error = None
        ready = threading.Event()

        def run():
            asyncio.set_event_loop(self._loop)

            async def main():
                try:
                    self._server = ModbusTcpServer(devs, address=("127.0.0.1", self.port))
                    await self._server.serve_forever(background=True)
                except Exception as e:  # noqa: BLE001 - reported below
                    self._error = e
                ready.set()
                while True:
                    await asyncio.sleep(3600)

            try:
                self._loop.run_until_complete(main())
            except RuntimeError:
                pass  # stopped

        threading.Thread(target=run, daemon=True).start()
        if not ready.wait(10) or self._error is not None:
            raise RuntimeError(f"plant meters: pymodbus server did not start: "
                               f"{self._error!r}")

    def node_config(self, cfg, name="compute", period_s=5, heat_name="heatmeter"):
        """The node configuration with these meters (module doc); cfg is not modified."""
        import copy

        cfg = copy.deepcopy(cfg)
        mb = cfg.setdefault("modbus", {"buses": {}, "meters": {}})
        mb.setdefault("buses", {})["plant"] = {"type": "tcp", "host": "127.0.0.1",
                                               "port": self.port}
        mb.setdefault("meters", {})[name] = {"bus": "plant", "slave": self.slave,
                                             "model": self.model, "role": "compute",
                                             "period_s": period_s}
        rc = cfg.setdefault("recovery", {})
        if not rc.get("compute"):
            rc["compute"] = {"source": "modbus", "meter": name}
        if self.heat is not None:
            mb["meters"][heat_name] = {
                "bus": "plant", "slave": self.heat_slave, "role": "heat",
                "period_s": int(self.heat.get("period_s", period_s)),
                "registers": {"energy_kwh": {"address": HEAT_REG, "fc": 4,
                                             "type": "float32", "unit": "kWh"}}}
            if not rc.get("heat_check"):
                rc["heat_check"] = {"meter": heat_name}
        return cfg

    def heat_stepped(self, heat_j):
        """The plant's true heat delivered over the step just integrated (J)."""
        if self.heat is not None:
            self.heat_j += heat_j
            self.heat_kwh = self.heat0_kwh + self.heat_gain * self.heat_j / 3.6e6

    def stepped(self, t_s, load_w, load_j):
        """At a plant step boundary t_s: the load held until the next one (W) and the
        plant's cumulative load energy (J) at t_s."""
        self.log.append((t_s, load_j))
        self.power_w = load_w
        self.energy_kwh = self.energy0_kwh + load_j / 3.6e6

    def energy_j(self, t_s):
        """The plant's true compute energy from t = 0 to t_s (J): linear in a step."""
        log = self.log
        lo, hi = 0, len(log) - 1
        if t_s >= log[hi][0]:
            return log[hi][1]
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if log[mid][0] <= t_s:
                lo = mid
            else:
                hi = mid
        (t0, e0), (t1, e1) = log[lo], log[hi]
        return e0 + (e1 - e0) * (t_s - t0) / (t1 - t0) if t1 > t0 else e0

    def stop(self):
        server, loop = self._server, self._loop

        async def down():
            await server.shutdown()

        try:
            if server is not None:
                asyncio.run_coroutine_threadsafe(down(), loop).result(5)
        except Exception:  # noqa: BLE001 - best effort at teardown
            pass
        loop.call_soon_threadsafe(loop.stop)
