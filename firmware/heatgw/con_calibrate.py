"""Console command `calibrate`: heatgw.calprocedure, one step per line (README
"Calibration", The procedure)."""

HELP = """calibrate                       the open session and the sensors out of service
calibrate begin METHOD SENSOR.. [n=N]
        METHOD channel (two precision resistors at the sensors' ends of their cables),
        two_point (a reference thermometer, two baths 10 K or more apart) or pair (both
        sensors in one bath: the second gets the first's reading). n: conversions per
        point (default 30, one per control tick). Needs maintenance on (relays in
        bypass); the sensors leave service (they read `calibrating`) until release.
        Asks to confirm.
calibrate measure [REF]   REF: the resistor in ohm (channel), the reference's reading
        in C (two_point), nothing (pair). Waits for the n conversions and shows each
        sensor's mean and spread; a key stops the wait (the measurement goes on).
calibrate wait            wait for a running measurement to end
calibrate finish          compute, save (calibration.json) and apply; asks to confirm
calibrate abort           drop the open session: nothing is saved
calibrate release [SENSOR..]   the sensors are back in the pipe (default: all)
calibrate clear SENSOR    remove a sensor's calibration; asks to confirm
Then `maintenance off`. `sensors` shows what each sensor applies."""

STEPS = ("status", "begin", "measure", "wait", "finish", "abort", "release", "clear")


async def run(con, args):
    step = args[0] if args else "status"
    if step not in STEPS:
        con.error("calibrate takes %s" % "|".join(STEPS))
        return
    from heatgw import calprocedure as cp

    gw = con.gw
    rest = args[1:]
    try:
        if step == "begin":
            await _begin(con, cp, gw, rest)
        elif step == "measure":
            if len(rest) > 1:
                raise ValueError("measure takes one reference value at most")
            ref = None
            if rest:
                try:
                    ref = float(rest[0])
                except ValueError:
                    raise ValueError("%r is not a number" % rest[0][:20]) from None
                if ref != ref or ref in (float("inf"), float("-inf")):
                    raise ValueError("the reference must be a finite number")
            con.out("calibrate: " + cp.measure(gw, ref))
            await _wait(con, cp, gw)
        elif step == "wait":
            _none(rest)
            await _wait(con, cp, gw)
        elif step == "finish":
            _none(rest)
            if await con.confirm("Save and apply this calibration?"):
                con.out("calibrate: " + cp.finish(gw))
        elif step == "clear":
            if len(rest) != 1:
                raise ValueError("clear takes one sensor")
            if await con.confirm("Remove %s's calibration?" % rest[0][:20]):
                con.out("calibrate: " + cp.clear(gw, rest[0]))
        elif step == "release":
            con.out("calibrate: " + cp.release(gw, rest or None))
        elif step == "abort":
            _none(rest)
            con.out("calibrate: " + cp.abort(gw))
        else:
            _none(rest)
            con.out("calibrate: " + cp.status(gw))
    except ValueError as e:
        con.error("calibrate %s: %s" % (step, e))


def _none(rest):
    if rest:
        raise ValueError("takes no arguments")


async def _begin(con, cp, gw, rest):
    n = 30
    if rest and rest[-1].startswith("n="):
        v = rest.pop()[2:]
        if not v.isdigit() or len(v) > 4:
            raise ValueError("n=N: N conversions per point")
        n = int(v)
    if len(rest) < 2:
        raise ValueError("begin METHOD SENSOR [SENSOR..] [n=N]")
    method, names = rest[0], rest[1:]
    if not await con.confirm("Take %s out of service for a %s calibration?"
                             % (", ".join(x[:20] for x in names), method[:20])):
        return
    con.out("calibrate: " + cp.begin(gw, method, names, n=n))


async def _wait(con, cp, gw):
    """Poll the measurement every tick until it is done; a key ends the wait."""
    said = None
    while True:
        await con.sleep(gw.tick_ms)
        done, text = cp.poll(gw)  # ValueError: the point failed (dropped)
        if done:
            con.out("calibrate: " + text)
            return
        left = text.split(" ", 1)[0]
        if left != said and left.endswith("0"):  # every 10 conversions
            said = left
            con.out("calibrate: " + text)
        if con.pressed():
            con.out("calibrate: stopped waiting; the measurement goes on (calibrate wait, "
                    "or calibrate abort)")
            return
