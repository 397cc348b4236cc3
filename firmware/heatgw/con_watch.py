"""Console command `watch`: live values until a key is pressed."""

HELP = """watch [S]     one line of live values every S seconds (1..60, default 1): uptime,
              state, supply/return, delta T, flow, power, energy, sink return, IT coolant.
              Any key stops it. Control and metering run on meanwhile (the console only
              reads)."""


async def run(con, args):
    every_s = 1
    if args:
        if len(args) > 1 or not args[0].isdigit() or not 1 <= int(args[0]) <= 60:
            con.error("watch takes a period in seconds, 1..60")
            return
        every_s = int(args[0])
    gw = con.gw
    ins = gw.inputs
    m = gw.meter
    t = ins.temps_c
    con.live(True)  # someone watches: in real time (the host board under the harness)
    con.out("watch: every %d s, any key stops" % every_s)
    con.out("uptime_s state  supply_C return_C   dT_K flow_m3h power_kW energy_kWh "
            "sink_ret_C it_cool_C")
    while True:
        p = m.last_power_w
        con.out("%8d %-6s %8s %8s %6s %8s %8s %10.3f %10s %9s" % (
            gw.uptime_ms // 1000, gw.failsafe.state, _f(t.get("supply")), _f(t.get("return")),
            _f(None if t.get("supply") is None or t.get("return") is None
               else t["supply"] - t["return"]),
            _f(ins.flow_m3h), _f(None if p is None else p / 1000), m.energy_kwh,
            _f(t.get("sink_return")), _f(t.get("it_coolant"))))
        for _ in range(every_s * 10):
            await con.sleep(100)
            if con.pressed():
                con.out("watch: stopped")
                return


def _f(v):
    return "-" if v is None else "%.2f" % v
