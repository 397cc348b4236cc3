"""Start the gateway application: the order matters on a small heap.

main.py calls `run()`. The configuration is loaded and validated first, while almost
nothing else is in RAM, and the validator and its schema (~28 KB) are dropped before the
application is even imported; the application then builds the meter first (its fluid
table is built from generated data that is dropped again) and the rest after.
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


def load_config(path):
    """(cfg, errors, source, configured, migration); the validator is forgotten afterwards
    (the console reloads it when a technician edits the configuration)."""
    from heatgw import config

    cfg, errors, source, migration = config.load(path)
    configured = config.is_configured(cfg)
    config = None
    for name in ("config", "schema", "config_schema", "migrate"):
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


def run():
    import gc

    import board

    from heatgw import bootstate

    if bootstate.safe_boot:
        print("safe boot (%s): application not started; relays safe" % bootstate.reason)
        return None
    install = getattr(board, "install_asyncio", None)
    if install is not None:
        asyncio = install()
    else:
        import asyncio
    cfg, errors, source, configured, migration = load_config(
        board.data_dir() + "/config.json")
    for err in errors:
        print("config:", err)
    if source != "file":
        print("config: running the default configuration: no sensors, relays in bypass")
    gc.collect()
    meter = build_meter(cfg["meter"])
    gc.collect()
    from heatgw.app import Gateway

    observer = getattr(board, "observer", None)
    gw = Gateway(board, cfg, cfg_source=source, cfg_errors=errors, configured=configured,
                 sinks=(observer,) if observer else (), meter=meter)
    if migration:  # after the boot event, in the same log
        gw.event(migration)
    gc.collect()
    try:
        asyncio.run(gw.run(asyncio))
    except KeyboardInterrupt:
        print("stopping: saving state")
        gw.shutdown()
    return gw
