"""Console commands `reboot` and `factory-reset`."""

HELP = """reboot          restart the node (asks to confirm): the application stops in order
                (relays safe, totals saved, as Ctrl-C does), then a hard reset. A
                reboot asked here is planned: it never counts towards safe mode.
factory-reset   erase the configuration (config.*), the calibration (calibration.*) and
                the secrets (secrets.*: Wi-Fi and MQTT passwords, the command key), then
                restart (asks to confirm). The node comes back unconfigured (bypass, no
                network) and needs provisioning again. Kept: the metered totals, the
                event log, the command counter (no old command can be replayed), the
                telemetry queue, the reset history, the code."""

import os  # noqa: E402

ERASE = ("config.", "calibration.", "secrets.")  # file name prefixes in the data folder


async def run(con, args):
    if args:
        con.error("%s takes no arguments" % con.cmd)
        return
    import board

    from heatgw import bootloop

    if con.cmd == "reboot":
        if not await con.confirm("Restart the node now? Relays go safe, totals are "
                                 "saved."):
            return
        con.event({"kind": "console", "cmd": "reboot"})
        con.out("reboot: stopping the application, then a reset")
        bootloop.restart(con.gw, "reboot")
        return
    if not await con.confirm("ERASE the configuration, calibration and secrets and "
                             "restart? The node will need provisioning again."):
        return
    data = board.data_dir()
    gone = []
    for name in os.listdir(data or "/"):
        if any(name.startswith(p) for p in ERASE):
            try:
                os.remove(data + "/" + name)
                gone.append(name)
            except OSError as e:
                con.error("factory-reset: %s: %r" % (name, e))
    con.event({"kind": "console", "cmd": "factory-reset", "removed": gone})
    con.out("factory-reset: removed %s; restarting" % (", ".join(gone) or "nothing"))
    bootloop.restart(con.gw, "factory-reset")
