"""Console command `status`: one screen of the node's state."""

HELP = """status        one screen: node, firmware, boot id and uptime; the fail-safe state, the
              relays and why; temperatures, delta T, flow, power, energy, volume; latched
              trips and alarms; network and MQTT; heap; the console's own counts and
              the longest real time one read of the port took (with the line assembly).
              Takes no arguments."""

import gc  # noqa: E402

from heatgw import FW_VERSION, clock  # noqa: E402


def uptime(ms):
    s = ms // 1000
    return "%dd %02d:%02d:%02d" % (s // 86400, s // 3600 % 24, s // 60 % 60, s % 60)


def temp(ins, name):
    if name not in ins.temps_c:
        return "-"
    t = ins.temps_c[name]
    if t is None:
        return "fault (%s)" % ins.temp_reasons.get(name)
    return "%.2f C" % t


def net_lines(con, tel, cfg):
    """Network and MQTT in two lines (status, and safe mode's status)."""
    net = getattr(tel, "net", None) if tel is not None else None
    if net is None:
        con.out("network  %s" % ("none configured" if tel is None else "the host's"))
    else:
        con.out("network  %s %s  ip %s  broker %s  utc %s" % (
            net.kind, "up" if net.up else "down", net.ip, net.broker_ip,
            "synced" if net.utc_synced else "not set"))
    c = getattr(tel, "client", None) if tel is not None else None
    m = cfg.get("mqtt") or {}
    if not m:
        con.out("mqtt     not configured")
    elif c is None:
        con.out("mqtt     %s:%s  not started" % (m.get("host"), m.get("port") or "-"))
    else:
        con.out("mqtt     %s:%s  %s  published %d acked %d reconnects %d" % (
            m.get("host"), c.port, c.state, c.published, c.acked, c.reconnects))


async def run(con, args):
    if args:
        con.error("status takes no arguments")
        return
    gw = con.gw
    if gw is None:
        s = con.safe
        con.out("SAFE MODE: the application is not running; relays safe (de-energised)")
        con.out("why      %s" % s.why)
        con.out("node     %s  firmware %s  boot %d  up %s" % (
            s.cfg.get("node_id"), FW_VERSION, s.boot_id, uptime(s.uptime_ms())))
        net_lines(con, s, s.cfg)
        con.out("leave    safemode clear (asks to confirm), then the node restarts")
        return
    fs = gw.failsafe
    ins = gw.inputs
    m = gw.meter
    tel = getattr(gw, "telemetry", None)
    con.out("node     %s  firmware %s  boot %d  up %s  utc %s" % (
        gw.cfg.get("node_id"), FW_VERSION, gw.boot_id, uptime(gw.uptime_ms), clock.utc_s()))
    con.out("state    %s  because %s%s" % (fs.state, fs.cause,
                                             "  FAULT " + gw.fault if gw.fault else ""))
    con.out("relays   %s  (every relay %s)" % (
        "reuse: heat to the building" if gw.relay_reuse else "bypass: heat to the dry cooler",
        "energised" if gw.relay_reuse else "de-energised"))
    con.out("temps    supply %s  return %s  sink_return %s  it_coolant %s" % (
        temp(ins, "supply"), temp(ins, "return"), temp(ins, "sink_return"),
        temp(ins, "it_coolant")))
    ts = ins.temps_c.get("supply")
    tr = ins.temps_c.get("return")
    flow = ins.flow_m3h
    con.out("dT       %s   flow %s" % (
        "-" if ts is None or tr is None else "%.3f K" % (ts - tr),
        ("fault (%s)" % ins.flow_reason) if ins.flow_reason else
        ("-" if flow is None else "%.3f m3/h" % flow)))
    p = m.last_power_w
    con.out("meter    power %s  energy %.3f kWh  volume %.3f m3  error time %d s" % (
        "-" if p is None else "%.3f kW" % (p / 1000), m.energy_kwh, m.volume_m3,
        m.error_time_s))
    con.out("trips    active %s  latched %s" % (
        ",".join(fs.active) or "none", ",".join(fs.latched) or "none"))
    con.out("inputs   maintenance %s  sink %s" % (
        ins.maintenance_by or "off",
        "-" if ins.sink_available is None else
        ("available" if ins.sink_available else "unavailable") +
        (" (%s)" % ins.sink_by if ins.sink_by else "")))
    if tel is not None:
        held, active, unacked = tel.book.counts()
        con.out("alarms   %d held, %d active, %d waiting for ack" % (held, active, unacked))
    else:
        con.out("alarms   (no telemetry: see alarms)")
    net_lines(con, tel, gw.cfg)
    gc.collect()
    con.out("heap     %d used, %d free; peak %d; worst tick late %d ms" % (
        gc.mem_alloc(), gc.mem_free(), gw.heap.peak_bytes, gw.worst_tick_late_ms))
    c = con.c
    con.out("console  %d lines, %d refused or failed; longest read+assembly %d us" % (
        c.lines, c.errors, c.worst_us))
