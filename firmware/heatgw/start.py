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
    """(cfg, errors, source, configured, migration); the validator is forgotten
    afterwards (the console reloads it when a technician edits the configuration). A
    configuration whose control tick does not fit the board's dead-man hold time is
    refused: the node runs the default configuration (bypass) and says why."""
    from heatgw import config

    cfg, errors, source, migration = config.load(path)
    if source == "file" and dead_man_hold_ms is not None:
        err = dead_man_error(cfg["control"]["tick_ms"], dead_man_hold_ms)
        if err is not None:
            cfg, errors, source = config.default(), [err], "default"
    configured = config.is_configured(cfg)
    config = None
    for name in ("config", "schema", "config_schema", "migrate", "mbschema", "mbplan",
                 "bmsschema", "recschema"):
        _forget(name)
    return cfg, errors, source, configured, migration


def build_meter(meter_cfg):
    """The heat meter for the configured fluid. Build it early on a small heap: its
    table comes from generated data (~10 KB) that is dropped again right after."""
    from heatgw import fluid
    from heatgw.meter import HeatMeter

    table = fluid.table_for(meter_cfg["fluid"], meter_cfg["mass_fraction"])
    m = HeatMeter(table, meter_in_return=meter_cfg["meter_in_return"],
                  cutoff_k=meter_cfg["cutoff_k"])
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


def build():
    """(gw, asyncio): the application, built in heap order, not yet running. With an
    `mqtt` section the telemetry (heatgw.telemetry: the flash queue, alarms, the mqtt
    task) is built before the Gateway, so the boot restores totals from the queue and
    its boot event is queued; without one nothing of it is imported."""
    import gc

    import board

    install = getattr(board, "install_asyncio", None)
    if install is not None:
        asyncio = install()
    else:
        import asyncio
    cfg, errors, source, configured, migration = load_config(
        board.data_dir() + "/config.json", getattr(board, "DEAD_MAN_HOLD_MS", 0))
    for err in errors:
        print("config:", err)
    if source != "file":
        print("config: running the default configuration: no sensors, relays in bypass")
    gc.collect()
    plan = None
    if cfg.get("modbus"):
        plan = modbus_plan(cfg)
        gc.collect()
    meter = build_meter(cfg["meter"])
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
    if migration:  # after the boot event, in the same log
        gw.event(migration)
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
    # The console's stand-in on the host board (its calibration scenarios): a task that
    # runs the harness's technician steps (boards/host/technician.py).
    hook = getattr(board, "technician", None)
    if hook is not None:
        task = hook(gw)
        if task is not None:
            gw.add_task("technician", task)
    gc.collect()
    return gw, asyncio


def run():
    from heatgw import bootstate

    if bootstate.safe_boot:
        print("safe boot (%s): application not started; relays safe" % bootstate.reason)
        return None
    gw, asyncio = build()
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
    finally:
        micropython.kbd_intr(3)
        hold = getattr(board, "hold_watchdog", None)
        if hold is not None:
            hold()
        bootstate.app = "stopped"
