"""The record of a simulated run: `heatgw monitor --record`'s recorder (host_tools.monitor,
host_tools.records) run inside `heatgw sim`, on the run's broker, from before the first
node boots.

    rec = Recorder("run.sqlite", "127.0.0.1:1883", "sim").start()   # subscribed on return
    rec.nodes[("sim", "gw-1")]       # the monitor's NodeState: telemetry, status, alarms, seqs
    rec.wait_for({("sim", "gw-1"): 812}, timeout_s=20)   # every seq up to 812 stored
    rec.finish(configs={("sim", "gw-1"): cfg}, meta={...})   # node configs, meta; closed

The monitor stores every message as it does for a site (README "Monitoring and records":
idempotent on seq, acknowledged after commit) with a persistent session under its own
client id, so a broker outage the run makes loses nothing with mosquitto (its store keeps
the session); amqtt forgets sessions at a restart, and what it held for the recorder then
is lost (the gap shows in the record). At the end the record gets what only the simulator
knows: each node's configuration (the report reads the Modbus meters' roles from it) and
the writer, `heatgw sim`, with the scenario.
"""

import argparse
import os
import threading
import time

from host_tools import records
from host_tools.monitor import Monitor

SUBSCRIBE_TIMEOUT_S = 10.0


class Recorder:
    def __init__(self, path, broker, site, prefix="heatgw", client_id=None):
        self.path = str(path)
        args = argparse.Namespace(
            broker=broker, site=site, prefix=prefix, topic=None, record=self.path, db=None,
            share=None, client_id=client_id or f"heatgw-sim-{os.getpid()}", user=None,
            password_file=None, ca=None, view="plain", stats=None)
        self._devnull = open(os.devnull, "w")  # noqa: SIM115 - closed in finish()
        self.mon = Monitor(args, out=self._devnull, err=self._devnull)
        self.error = None
        self._thread = threading.Thread(target=self._run, name="recorder", daemon=True)

    def _run(self):
        try:
            self.mon.run()
        except Exception as e:  # noqa: BLE001 - said at the end (the run goes on)
            self.error = str(e)

    def start(self):
        self._thread.start()
        deadline = time.monotonic() + SUBSCRIBE_TIMEOUT_S
        while not self.mon.link_note.startswith("subscribed"):
            if self.error or not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the recorder could not subscribe at {self.mon.host}:"
                                   f"{self.mon.port}: {self.error or self.mon.link_note}")
            time.sleep(0.02)
        return self

    @property
    def nodes(self):
        """{(site, node): liveview.NodeState}: what arrived of each node."""
        return self.mon.fleet.nodes

    @property
    def link(self):
        return self.mon.link_note

    def wait_for(self, last_seqs, timeout_s=20.0):
        """Wait until each node's record holds `last` records ({(site, node): last}: its
        seqs 1..last); the nodes still short when the time is up ({} when none)."""
        deadline = time.monotonic() + timeout_s
        while True:
            short = {}
            for key, last in last_seqs.items():
                n = self.nodes.get(key)
                if last and (n is None or n.seqs.count < last):
                    short[key] = last
            if not short or time.monotonic() > deadline or not self._thread.is_alive():
                return short
            time.sleep(0.05)

    def stop(self):
        """Stop the monitor: what came is committed and acknowledged."""
        self.mon.stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)

    def finish(self, configs=(), meta=None):
        """Stop; store each node's configuration ({(site, node): config}) and the meta."""
        self.stop()
        self._devnull.close()
        store = records.open_store(self.path)
        try:
            for (site, node), cfg in dict(configs).items():
                store.set_node_config(site, node, cfg, "sim")
            store.set_meta("writer", "heatgw sim")
            for k, v in (meta or {}).items():
                store.set_meta(k, v)
            store.commit()
        finally:
            store.close()
