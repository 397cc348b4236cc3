"""A building management system's stand-in: a pymodbus client that polls the node's Modbus
TCP server (heatgw.bms) and writes its sink heartbeat, in a process of its own (so its
Python work never competes with the harness's for one interpreter).

    python -m tests.bmsclient PORT PERIOD_S     # polls until a line (or EOF) on stdin,
                                                # then prints what it saw as one JSON line

Each round: read the 45 input registers, write the heartbeat register (0) with a counter
1..65535 (never 0: "available"), sleep PERIOD_S. A connection that fails is counted and
made again; before the node listens (and after it stopped) connecting is only retried.
"""

import json
import select
import sys
import threading
import time

from pymodbus.client import ModbusTcpClient


def poll(port, period_s, stop):
    st = {"reads": 0, "failed": 0, "writes": 0, "write_failed": 0, "connects": 0,
          "first_uptime_s": None, "last_uptime_s": None, "max_gap_s": 0, "energy_back": 0,
          "last_energy_wh": None, "last": None}
    c = None
    hb = 0
    while not stop.is_set():
        if c is None:
            c = ModbusTcpClient("127.0.0.1", port=port, timeout=2, retries=0)
            if not c.connect():  # not listening (yet, or any more)
                c = None
                time.sleep(0.05)
                continue
            st["connects"] += 1
        try:
            r = c.read_input_registers(0, count=45)
            if r.isError():
                st["failed"] += 1
            else:
                regs = r.registers
                up = regs[8] << 16 | regs[9]
                wh = regs[19] << 48 | regs[20] << 32 | regs[21] << 16 | regs[22]
                if st["last_uptime_s"] is not None:
                    st["max_gap_s"] = max(st["max_gap_s"], up - st["last_uptime_s"])
                    st["energy_back"] += wh < st["last_energy_wh"]
                else:
                    st["first_uptime_s"] = up
                st["reads"] += 1
                st["last_uptime_s"], st["last_energy_wh"], st["last"] = up, wh, regs
            hb = hb % 65535 + 1
            ok = not c.write_register(0, hb).isError()
            st["writes" if ok else "write_failed"] += 1
        except Exception:  # noqa: BLE001 - the connection went: counted, made again
            st["failed"] += 1
            c.close()
            c = None
        time.sleep(period_s)
    if c is not None:
        c.close()
    return st


def main():
    port, period_s = int(sys.argv[1]), float(sys.argv[2])
    stop = threading.Event()
    out = []
    t = threading.Thread(target=lambda: out.append(poll(port, period_s, stop)), daemon=True)
    t.start()
    select.select([sys.stdin], [], [])
    stop.set()
    t.join(10)
    print(json.dumps(out[0] if out else None), flush=True)


if __name__ == "__main__":
    main()
