"""Start the gateway application: the order matters on a small heap.

main.py calls `run()`. The configuration is loaded and validated first, while almost
nothing else is in RAM, and the validator and its schema (~28 KB) are dropped before the
application is even imported; then the Modbus poll plan, when configured (its planning
code and umodbus are dropped again); the application then builds the meter first (its
fluid table is built from generated data that is dropped again) and the rest after.
"""


def _forget(name):
    """Drop heatgw.<name> from the module cache so its code can be collected."""
    import sys

    import heatgw

    sys.modules.pop("heatgw." + name, None)
    try:
        delattr(heatgw, name)
    except (AttributeError, KeyError):  # not imported (MicroPython raises KeyError)
        pass


def dead_man_error(tick_ms, hold_ms):
    """None when the board's dead-man hold time fits the control tick, else the error.
    The hold must cover one tick (a healthy node retriggers it in time) and at most 1.5
    (a hung node's coils drop within 1.5 ticks): tick_ms <= hold_ms <= 1.5 * tick_ms."""
    if type(hold_ms) is not int or hold_ms <= 0:
        return "board: DEAD_MAN_HOLD_MS must be a positive int (ms), got %r" % (hold_ms,)
    if type(tick_ms) is not int or tick_ms <= 0:
        return "control.tick_ms must be a positive int (ms), got %r" % (tick_ms,)
    if tick_ms <= hold_ms and 2 * hold_ms <= 3 * tick_ms:
        return None
    return ("control.tick_ms = %d does not fit the board's dead-man hold of %d ms: "
            "need tick_ms <= %d <= 1.5 * tick_ms, i.e. tick_ms in %d..%d"
            % (tick_ms, hold_ms, hold_ms, (2 * hold_ms + 2) // 3, hold_ms))


def load_config(path, dead_man_hold_ms=None):
    """(cfg, errors, source, configured, events): heatgw.config.boot() (config.json, else
    its last good copy, else the default; events: the config events to report after the
    boot event); the validator is forgotten afterwards (the console reloads it when a
    technician edits the configuration). A configuration whose control tick does not fit
    the board's dead-man hold time is refused: the node runs the default configuration
    (bypass) and says why."""
    from heatgw import config

    cfg, errors, source, events = config.boot(path)
    if source != "default" and dead_man_hold_ms is not None:
        err = dead_man_error(cfg["control"]["tick_ms"], dead_man_hold_ms)
        if err is not None:
            cfg, errors, source = config.default(), errors + [err], "default"
    configured = config.is_configured(cfg)
    config = None
    for name in ("config", "cfgfile", "schema", "config_schema", "migrate", "strictjson",
                 "seal", "mbschema", "mbplan", "bmsschema", "recschema", "anschema"):
        _forget(name)
    return cfg, errors, source, configured, events


def build_meter(meter_cfg, sensors_cfg=None):
    """The heat meter for the configured fluid. Build it early on a small heap: its
    table comes from generated data (~10 KB) that is dropped again right after. Its
    range is that of the supply and return sensors (a reading outside is invalid from
    the sensor anyway), so it keeps only that part of the table."""
    from heatgw import fluid
    from heatgw.meter import HeatMeter

    lo = hi = None
    for name in ("supply", "return"):
        s = (sensors_cfg or {}).get(name)
        if s:
            lo = s["min_c"] if lo is None else min(lo, s["min_c"])
            hi = s["max_c"] if hi is None else max(hi, s["max_c"])
    table = fluid.table_for(meter_cfg["fluid"], meter_cfg["mass_fraction"])
    m = HeatMeter(table, meter_in_return=meter_cfg["meter_in_return"],
                  cutoff_k=meter_cfg["cutoff_k"], t_min_c=lo, t_max_c=hi)
    table = fluid = None
    _forget("fluid")  # the meter copied its table; the node never rebuilds it
    return m


def modbus_plan(cfg):
    """The Modbus poll plan (heatgw.mbplan: register maps, request PDUs; with an RTU bus
    the CRC table, from umodbus.const), built while the heap is nearly empty; the planning
    code, lib/sdm and umodbus are dropped again."""
    import sys

    from heatgw import mbplan

    plan = mbplan.plan(cfg)
    mbplan = None
    for bus in plan:
        if bus[1]["type"] == "rtu":
            import mbrtu  # the RTU driver stays: its CRC table, made from umodbus's

            mbrtu.crc_table()
            break
    _forget("mbplan")
    for name in ("sdm", "umodbus.const", "umodbus.version", "umodbus"):
        sys.modules.pop(name, None)
    return plan


def apply_calibration(gw, data_dir):
    """Apply calibration.json to the sensors, if there is one, before the first reading
    (heatgw.calibration, dropped again: the sensors keep only their trims)."""
    import os

    try:
        os.stat(data_dir + "/calibration.json")
    except OSError:
        return
    from heatgw import calibration

    ev = calibration.apply_file(gw.sensors, data_dir)
    calibration = None
    _forget("calibration")
    if ev is not None:
        gw.event(ev)


def asyncio_for(board):
    """The asyncio the node runs on: the board's (the host board's virtual time) or the
    port's own."""
    install = getattr(board, "install_asyncio", None)
    if install is not None:
        return install()
    import asyncio

    return asyncio


def config_for(board):
    """load_config() of the board's config.json, its errors printed."""
    loaded = load_config(board.data_dir() + "/config.json",
                         getattr(board, "DEAD_MAN_HOLD_MS", 0))
    for err in loaded[1]:
        print("config:", err)
    for ev in loaded[4]:
        if ev.get("integrity") == "none":
            print("config: warning: %s has no seal (edited by hand?): accepted; `config "
                  "save` seals it" % ev["file"])
    if loaded[2] == "last_good":
        print("config: config.json refused: running the last good configuration "
              "(config.json.good)")
    elif loaded[2] != "file":
        print("config: running the default configuration: no sensors, relays in bypass")
    return loaded


def build(loaded=None):
    """(gw, asyncio): the application, built in heap order, not yet running. With an
    `mqtt` section the telemetry (heatgw.telemetry: the flash queue, alarms, the mqtt
    task) is built before the Gateway, so the boot restores totals from the queue and
    its boot event is queued; without one nothing of it is imported. `loaded`: what
    config_for() returned (run() loads it first, for the boot-loop check)."""
    import gc

    import board

    asyncio = asyncio_for(board)
    cfg, errors, source, configured, events = loaded or config_for(board)
    loaded = None
    gc.collect()
    plan = None
    if cfg.get("modbus"):
        plan = modbus_plan(cfg)
        gc.collect()
    meter = build_meter(cfg["meter"], cfg.get("sensors"))
    gc.collect()
    from heatgw.app import Gateway

    sinks = []
    observer = getattr(board, "observer", None)
    if observer:
        sinks.append(observer)
    tel = None
    if cfg.get("mqtt"):
        from heatgw.telemetry import Telemetry

        tel = Telemetry(board, cfg)
        sinks.append(tel.sink)
    gw = Gateway(board, cfg, meter, cfg_source=source, cfg_errors=errors,
                 configured=configured, sinks=sinks, queue=tel.q if tel else None,
                 modbus_plan=plan)
    for ev in events:  # after the boot event, in the same log
        gw.event(ev)
    if gw.sensors:
        apply_calibration(gw, board.data_dir())
    if tel is not None:
        tel.attach(gw)
        kinds = getattr(board, "NET_INTERFACES", ())
        if kinds:  # the link (Wi-Fi/Ethernet; the host's own on the host board) and DNS
            from heatgw.net import Net

            m = cfg["mqtt"]
            net = Net(board, tel.read_secrets() if kinds[0] == "wlan" else None, gw.event,
                      broker_host=m["host"],
                      broker_port=m.get("port") or (8883 if m.get("tls") else 1883))
            gw.add_task("net", net.run)
            tel.net = net
    add_console(board, gw, asyncio)
    gc.collect()
    return gw, asyncio


def add_console(board, gw, asyncio, safe=None):
    """The technician's console (heatgw.console) as a restartable task, when the board
    has a console port (board.console_in(), board contract); None otherwise."""
    cin = getattr(board, "console_in", None)
    port = cin() if cin is not None else None
    if port is None:
        return None
    from heatgw.console import Console

    con = Console(gw, port, asyncio, safe=safe)
    (gw if gw is not None else safe).add_task("console", con.run)
    return con


def preload_names():
    """Intern the names every boot interns, first, while the heap is empty: heatgw.qstrs,
    generated by the build (host_tools/qstr_preload.py), is only their list. MicroPython
    grows its name pools by doubling (the 7th is one 9 KB block on a 32-bit board): opened
    by chance in the middle of the application's import, on a heap the configuration's load
    has cut into pieces, it may find no such block. From source there is no list: nothing
    to do."""
    try:
        __import__("heatgw.qstrs")
    except ImportError:
        return
    _forget("qstrs")


def run():
    """The node: safe boot (pin, flag file) stops here; then the configuration, the
    boot-loop check (heatgw.bootloop: enough watchdog/crash resets in a row start safe
    mode, heatgw.safemode, instead of the application), then the application."""
    import board

    from heatgw import bootstate

    if bootstate.safe_boot:
        print("safe boot (%s): application not started; relays safe" % bootstate.reason)
        return None
    preload_names()
    loaded = config_for(board)
    from heatgw import bootloop

    timer = bootloop.boot(board, loaded[0])  # safe mode runs there, instead of the app
    if timer is None or timer is True:
        _forget("bootloop")
        bootloop = None
    if timer is True:
        return None  # safe mode ran (and was stopped)
    gw, asyncio = build(loaded)
    loaded = None
    if timer is not None:  # a counted reset in the history: time this run
        gw.add_task("resets", timer(gw))
    bootstate.app = "running"
    try:
        asyncio.run(gw.run(asyncio))
    except KeyboardInterrupt:
        stop(gw)
    return gw


def stop(gw):
    """The orderly stop (Ctrl-C at the serial port, the harness's end of a run): relays
    safe and totals saved (Gateway.shutdown), then a started watchdog is held fed from a
    timer while the node sits at its REPL (board.hold_watchdog): it cannot be stopped, and
    mpremote must not be cut short. Safe: the control task is gone, nothing toggles the
    dead-man output, so its hardware keeps every coil off. A second Ctrl-C (mpremote sends
    one per command) cannot cut the save short."""
    import board
    import micropython

    from heatgw import bootstate

    micropython.kbd_intr(-1)
    try:
        print("stopping: saving state")
        gw.shutdown()
        from heatgw import bootloop  # a reset from the REPL is the technician's: planned

        bootloop.planned_reset(board, "stopped")
        bootloop = None
        _forget("bootloop")
    finally:
        micropython.kbd_intr(3)
        hold = getattr(board, "hold_watchdog", None)
        if hold is not None:
            hold()
        bootstate.app = "stopped"

