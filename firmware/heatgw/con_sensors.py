"""Console command `sensors`: each RTD channel as the converter and the fail-safe see it."""

HELP = """sensors       per configured sensor: type and wiring, the converter's raw 15-bit code and
              fault flag (its RTD data register), the resistance it gives, the
              temperature the fail-safe uses or why there is none (open, short,
              out_of_range, stale, ...), the chip's latched fault bits, the age of the last
              valid reading, and the calibration in effect (method, date, references).
sensors NAME  one sensor (supply, return, sink_return, it_coolant).
Reads registers only: no conversion is started, nothing is cleared."""

from heatgw import clock  # noqa: E402


async def run(con, args):
    gw = con.gw
    names = [n for n in ("supply", "return", "sink_return", "it_coolant") if n in gw.sensors]
    if len(args) > 1 or (args and args[0] not in names):
        con.error("sensors takes one of: %s" % (", ".join(names) or "(none configured)"))
        return
    if not names:
        con.out("sensors: none configured")
        return
    ins = gw.inputs
    now = clock.ticks_ms()
    for name in args or names:
        s = gw.sensors[name]
        adc = s.adc
        reg = adc.read_rtd_register()
        code = reg >> 1
        chip = adc.faults()
        t = ins.temps_c.get(name)
        why = ins.temp_reasons.get(name)
        valid = ins.temp_valid_ms.get(name)
        con.out("%-12s PT%d %d-wire  code %5d flag %d  %.3f ohm  %s  chip %s  valid %s" % (
            name, s.r0_ohm, adc.wires, code, reg & 1, adc.code_to_ohm(code),
            "%.3f C" % t if t is not None else "FAULT " + str(why),
            ",".join(chip) or "ok",
            "never" if valid is None else "%d ms ago" % clock.ticks_diff(now, valid)))
        await con.sleep(0)
        _calibration(con, name, s)


def _calibration(con, name, s):
    try:
        from heatgw import calshow
    except ImportError:
        con.out("%-12s calibration: offset_k %+.3f K (configuration)" % (name, s.offset_k))
        return
    for line in calshow.describe(name, sensor=s):
        con.out("  " + line)
