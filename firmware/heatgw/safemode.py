"""Safe mode: what the node runs instead of the application after a boot loop.

heatgw.start runs it when heatgw.bootloop says so (N watchdog/crash resets within M
minutes). Lean on purpose: no sensors, no meter, no fail-safe tasks, no watchdog. The
relays stay de-energised (boot.py drove them safe; nothing here drives a relay, and
nothing toggles the dead-man output, so its hardware keeps the relay drivers off). What
runs: the console (heatgw.console, with the commands that make sense without the
application), and with an `mqtt` section the network (heatgw.net) and an MQTT client
whose retained status (.../status) says `safe_mode` instead of `online` (the will still
says `offline`). Events go to the event log on flash as usual (kind "safe_mode" first).

The technician leaves it at the console with `safemode clear` (asks to confirm; the node
restarts and the application starts), or at the REPL after Ctrl-C:
`from heatgw import bootloop; bootloop.clear()` and a reset.
"""

import json

from heatgw import clock
from heatgw.events import EventLog
from heatgw.store import SlotStore


class SafeMode:
    def __init__(self, board, cfg, why, hist):
        self.board = board
        self.cfg = cfg
        self.why = why
        self.hist = hist  # the reset history (heatgw.bootloop record)
        board.relays_safe()
        data = board.data_dir()
        self.log = EventLog(data, 32)
        self.boot_id = _next_boot(data)
        self._t = clock.ticks_ms()
        self._up_s = 0
        self._up_ms = 0
        self._tasks = []
        self._aio = None
        self.net = None
        self.client = None

    def uptime_ms(self):
        now = clock.ticks_ms()
        d = clock.ticks_diff(now, self._t)
        self._t = now
        ms = self._up_ms + (d if d > 0 else 0)
        self._up_s += ms // 1000
        self._up_ms = ms % 1000
        return self._up_s * 1000 + self._up_ms

    def event(self, ev):
        ev["boot"] = self.boot_id
        ev["up_ms"] = self.uptime_ms()
        ev["utc"] = clock.utc_s()
        try:
            self.log.append(ev)
        except Exception as e:  # noqa: BLE001 - the log must not stop safe mode
            print("event log: append failed:", repr(e))
        print("event:", json.dumps(ev))
        obs = getattr(self.board, "observer", None)
        if obs is not None:
            obs("event", ev)

    def add_task(self, name, coro_fn):
        self._tasks.append((name, coro_fn))
        if self._aio is not None:
            self._aio.create_task(self._keep(name, coro_fn))

    async def _keep(self, name, coro_fn):
        aio = self._aio
        while True:  # a crash is an event; restarted after 5 s
            try:
                await coro_fn(aio)
                return
            except Exception as e:  # noqa: BLE001
                self.event({"kind": "task", "task": name, "state": "crashed",
                            "error": repr(e)[:120]})
            await aio.sleep_ms(5000)

    async def main(self, asyncio):
        self._aio = asyncio
        for name, fn in self._tasks:
            asyncio.create_task(self._keep(name, fn))
        await asyncio.Event().wait()


def _next_boot(data):
    """Count this boot in the state record (totals and latched trips kept as they are),
    so boot ids stay unique; 0 when the node has none yet."""
    store = SlotStore(data + "/state.a", data + "/state.b")
    try:
        _, payload = store.load()
        st = json.loads(payload) if payload else None
        if type(st) is not dict or type(st.get("boot")) is not int:
            return 0
        st["boot"] += 1
        store.save(json.dumps(st).encode())
        return st["boot"]
    except (OSError, ValueError) as e:
        print("state: safe mode cannot count the boot:", repr(e))
        return 0


def _mqtt(sm, asyncio):
    """Network and an MQTT client that says safe_mode on the status topic."""
    import board

    from heatgw import mqtt, secrets

    m = sm.cfg["mqtt"]
    try:
        s = secrets.load(board.data_dir() + "/secrets.json")
    except secrets.SecretsError as e:  # names keys, never values
        print("secrets: %s" % (e,))
        s = secrets.Secrets()
    kinds = getattr(board, "NET_INTERFACES", ())
    if kinds:
        from heatgw.net import Net

        sm.net = Net(board, s if kinds[0] == "wlan" else None, sm.event,
                     broker_host=m["host"],
                     broker_port=m.get("port") or (8883 if m.get("tls") else 1883))
        sm.add_task("net", sm.net.run)
    pw = s.get("mqtt_password")
    c = mqtt.from_config(m, sm.cfg["node_id"], None if pw is None else pw.reveal(),
                         inflight=1)
    c.subs = ()  # no commands in safe mode
    c.online = b"safe_mode"
    sm.client = c
    aw = getattr(board, "awaits_replies", None)
    if aw is not None:
        aw(c.awaiting_reply)
    net = sm.net

    async def client(aio):
        while net is not None and not (net.up and net.broker_ip):
            await aio.sleep_ms(250)
        if net is not None:
            c._addr = None  # resolved by heatgw.net
            c.host = net.broker_ip
        await c.run()

    sm.add_task("mqtt", client)


def run(board, cfg, why, hist):
    from heatgw import start

    asyncio = start.asyncio_for(board)
    print("SAFE MODE (%s): application not started; relays safe. At the console: "
          "safemode, safemode clear" % why)
    sm = SafeMode(board, cfg, why, hist)
    sm.event({"kind": "safe_mode", "why": why, "boots": hist["boots"]})
    if cfg.get("mqtt"):
        try:
            _mqtt(sm, asyncio)
        except Exception as e:  # noqa: BLE001 - a bad CA file: the console still runs
            print("safe mode: mqtt:", repr(e))
    start.add_console(board, None, asyncio, safe=sm)
    try:
        asyncio.run(sm.main(asyncio))
    except KeyboardInterrupt:
        from heatgw import bootstate

        bootstate.app = "stopped"  # in order: nothing to save, relays were never driven
        print("safe mode stopped")
        hold = getattr(board, "hold_watchdog", None)
        if hold is not None:
            hold()
    return sm
