"""Console command `selftest`: the arithmetic and sensor self-test."""

HELP = """selftest      the on-device self-test (heatgw.selftest): the metering kernel against
              EN 1434 (1 m3 at 70/50 C), allocation-free sampling, meter semantics,
              IEC 60751 check values, in this CPU's integers and floats; then each
              sensor: the converter answers and keeps its configuration, no latched chip
              fault, a valid reading within its range. It reads and computes only: it
              never drives a relay or writes a converter. Ends with PASS or FAIL n."""

from heatgw import clock  # noqa: E402


async def run(con, args):
    if args:
        con.error("selftest takes no arguments")
        return
    from heatgw import selftest

    await con.sleep(0)
    ok = selftest.run(out=con.out)
    selftest = None
    gw = con.gw
    if gw is None:
        con.out("selftest: sensors skipped (safe mode)")
        return
    fails = 0
    now = clock.ticks_ms()
    ins = gw.inputs
    for name, s in gw.sensors.items():
        await con.sleep(0)
        chip = s.adc.faults()
        why = ins.temp_reasons.get(name)
        t = ins.temps_c.get(name)
        valid = ins.temp_valid_ms.get(name)
        age = None if valid is None else clock.ticks_diff(now, valid)
        good = not chip and why is None and t is not None and age is not None and \
            age <= 3 * gw.tick_ms
        fails += 0 if good else 1
        con.out("selftest: sensor_%s %s chip %s reading %s age %s" % (
            name, "ok" if good else "FAIL", ",".join(chip) or "ok",
            "%.3f C" % t if t is not None else why, "-" if age is None else "%d ms" % age))
    con.out("selftest: sensors %s" % ("PASS" if not fails else "FAIL %d" % fails))
    con.out("selftest: %s" % ("PASS" if ok and not fails else "FAIL"))
