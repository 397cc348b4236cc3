"""The calibration procedure, one step per call: what the console's `calibrate` runs.

    cp.begin(gw, "channel", ("supply", "return"))  # sensors out of the pipe
    cp.measure(gw, 1000.0)        # the first precision resistor at both sensors' terminals
    done, text = cp.poll(gw)      # every tick (or so) until done: n conversions averaged
    cp.measure(gw, 1385.0)        # the second resistor; poll() again
    cp.finish(gw)                 # computes, saves calibration.json, applies
    cp.begin(gw, "two_point", ("supply", "return"))   # then measure(gw, <reference °C>)
    cp.begin(gw, "pair", ("supply", "return"))        # one bath: measure(gw) once
    cp.release(gw)                # the sensors are back in the pipe: metering resumes

Every call returns the text to show, or raises ValueError with a one-line reason and
changes nothing but what the reason says (a failed point is dropped; measure it again).
Nothing here touches a relay or the fail-safe: the control task runs on throughout.

Maintenance: begin, measure, finish and clear refuse unless the node is in maintenance
(the board's key, or `maintenance on` through the command inbox) and the relays are in
bypass, and poll drops a running measurement when maintenance ends. The procedure does
not switch maintenance itself: taking the node out of service is the technician's
explicit step, and leaving it is too (a procedure that switched it back could put
reuse back while a sensor still hangs in a bath).

Out of the pipe: from begin until release, each named sensor reports `calibrating`
instead of a temperature (its rtd.TemperatureSensor.capture is set), also between the
steps and sessions: the meter counts error time instead of metering a resistor or a bath, and
a critical sensor trips the fail-safe's sensor fault (maintenance holds bypass anyway).
A reboot puts every sensor back in service (the flag is not persisted).

The session lives on the Gateway (gw.cal_session), so this module may be dropped between
calls. One session at a time, over 1..4 sensors at once (a resistor set or a bath for
each): channel and two_point take two points, pair one and exactly two sensors (the
second gets the offset). A channel calibration drops the sensor's two-point and every
pair that involves it (they were measured through the old channel); a two-point drops
the pairs that involve the sensor (README "Calibration").
"""

from heatgw import calibration as cal
from heatgw import clock

N_DEFAULT = 30  # conversions per point: 30 s at a 1 s tick
_NEED = {cal.CHANNEL: 2, cal.TWO_POINT: 2, cal.PAIR: 1}


def _session(gw):
    s = getattr(gw, "cal_session", None)
    if s is None:
        raise ValueError("no calibration open: begin one first")
    return s


def _maintenance(gw):
    if gw.inputs.maintenance is not True or gw.relay_reuse:
        raise ValueError("maintenance is off: switch it on first (the sensors leave the "
                         "pipe; the relays must be in bypass)")


def _sensor(gw, name):
    s = gw.sensors.get(name)
    if s is None:
        raise ValueError("no sensor %r; configured: %s" % (name, ", ".join(gw.sensors)))
    return s


def _doc(gw):
    return cal.load(gw.board.data_dir())


def begin(gw, method, names, n=N_DEFAULT, source="console"):
    """Open a calibration of `method` over the sensors `names`; they leave service."""
    if method not in cal.METHODS:
        raise ValueError("unknown method %r: %s" % (method, ", ".join(cal.METHODS)))
    s = getattr(gw, "cal_session", None)
    if s is not None:
        raise ValueError("a %s calibration of %s is open: finish or abort it first"
                         % (s["method"], ",".join(s["names"])))
    _maintenance(gw)
    names = tuple(names)
    if not 1 <= len(names) <= 4 or len(set(names)) != len(names):
        raise ValueError("name 1 to 4 different sensors")
    if method == cal.PAIR and len(names) != 2:
        raise ValueError("a pair is two sensors: the reference, then the one to offset")
    if type(n) is not int or not cal.N_MIN <= n <= cal.N_MAX:
        raise ValueError("conversions per point: %d..%d" % (cal.N_MIN, cal.N_MAX))
    sensors = [_sensor(gw, x) for x in names]
    doc = _doc(gw)
    entries = {}
    for i, name in enumerate(names):
        sen = sensors[i]
        e = doc["sensors"].get(name) or {}
        if method != cal.CHANNEL and e:  # measured through what the file holds
            try:
                cal.check(sen, e)
            except ValueError as x:
                raise ValueError("%s: its calibration is not valid (%s): calibrate its "
                                 "channel again or clear it" % (name, x)) from None
        entries[name] = e
    for sen in sensors:
        if sen.capture is None:
            sen.capture = [0, 0, 0, 32767, 0, 0, None]  # out of service, not measuring
    gw.cal_session = {"method": method, "names": names, "n": n, "points": [],
                      "ref": None, "busy": False, "source": source, "entries": entries}
    who = ", ".join(names)
    if method == cal.CHANNEL:
        what = ("fit the first precision resistor (e.g. 1000.0 ohm) at the terminals of "
                "%s in place of the sensor, then measure <ohm>" % who)
    elif method == cal.TWO_POINT:
        what = ("put %s with the reference thermometer into the first bath; when it is "
                "stable, measure <reference C>" % who)
    else:
        what = ("put %s into one stirred bath; when it is stable, measure" % who)
    return "%s calibration of %s: out of service until release. %s" % (method, who, what)


def measure(gw, ref=None):
    """Start averaging the next point's conversions; `ref`: the stated resistor (ohm,
    channel), the reference thermometer's reading (°C, two_point), None (pair)."""
    s = _session(gw)
    _maintenance(gw)
    if s["busy"]:
        raise ValueError("still measuring: poll until done")
    method = s["method"]
    points = s["points"]
    if len(points) >= _NEED[method]:
        raise ValueError("every point is measured: finish")
    if method == cal.PAIR:
        if ref is not None:
            raise ValueError("a pair needs no reference value")
    else:
        if type(ref) not in (int, float):
            raise ValueError("measure needs the %s" % ("resistor's value in ohm"
                             if method == cal.CHANNEL else "reference temperature in C"))
        ref = float(ref)
        if method == cal.CHANNEL:
            for name in s["names"]:
                adc = gw.sensors[name].adc
                cal.check_resistor(adc.r0_ohm, adc.r_ref_ohm, ref)
            span = cal.CH_SPAN_MIN * gw.sensors[s["names"][0]].r0_ohm
        else:
            if not cal.REF_MIN_C <= ref <= cal.REF_MAX_C:
                raise ValueError("reference %.2f C outside %d..%d C"
                                 % (ref, cal.REF_MIN_C, cal.REF_MAX_C))
            span = cal.TP_SPAN_MIN_K
        if points and not abs(ref - points[0][0]) >= span:
            raise ValueError("%g is too close to the first point %g: at least %g apart"
                             % (ref, points[0][0], span))
    n = s["n"]
    for name in s["names"]:
        c = gw.sensors[name].capture  # wanted, n, sum, min, max, faults, first fault
        c[1] = c[2] = c[4] = c[5] = 0
        c[3] = 32767
        c[6] = None
        c[0] = n  # the sampler's next reading starts filling it
    s["ref"] = ref
    s["busy"] = True
    return "measuring %s: %d conversions, about %d s" % (
        ", ".join(s["names"]), n, (n * gw.tick_ms + 999) // 1000)


def _stop(gw, s):
    for name in s["names"]:
        gw.sensors[name].capture[0] = 0  # still out of service, no longer measuring
    s["busy"] = False


def poll(gw):
    """(done, text) of the running measurement; done with the point's result, or a
    ValueError when it failed (the point is dropped: measure it again)."""
    s = getattr(gw, "cal_session", None)
    if s is None or not s["busy"]:
        return True, "not measuring"
    sensors = [gw.sensors[name] for name in s["names"]]
    if gw.inputs.maintenance is not True:
        _stop(gw, s)
        raise ValueError("maintenance ended: the measurement is dropped")
    left = 0
    for sen in sensors:
        c = sen.capture
        if c[5]:
            left = 0
            break
        left = max(left, c[0] - c[1])
    if left:
        return False, "%d conversions to go" % left
    try:
        point = _point(s, sensors)
    finally:
        _stop(gw, s)
    s["points"].append(point)
    ref, values, spreads = point
    unit = "ohm" if s["method"] == cal.CHANNEL else "C"
    text = ", ".join("%s %.3f %s (spread %d LSB)" % (name, values[i], unit, spreads[i])
                     for i, name in enumerate(s["names"]))
    left = _NEED[s["method"]] - len(s["points"])
    return True, "point %d: %s; %s" % (len(s["points"]), text,
                                       "next: measure" if left else "next: finish")


def _point(s, sensors):
    """(ref, readings, spreads) of a finished capture; ValueError when implausible."""
    method = s["method"]
    ref = s["ref"]
    values, spreads = [], []
    for i, name in enumerate(s["names"]):
        sen = sensors[i]
        try:
            code, spread = cal.mean_code(sen.capture)
            adc = sen.adc
            if method == cal.CHANNEL:
                v = code * adc.r_ref_ohm / 32768
                cal.channel_point(adc.r0_ohm, adc.r_ref_ohm, ref, v)
            else:
                # through the stages before this method; a pair's reference: all of them
                before = None if method == cal.PAIR and not values else method
                v = cal.reading_c(sen.r0_ohm, adc.r_ref_ohm, s["entries"][name], code,
                                  before)
                if method == cal.TWO_POINT:
                    cal.two_point_point(ref, v)
                elif not sen.min_c <= v <= sen.max_c:
                    raise ValueError("reads %.2f C, outside its %g..%g C"
                                     % (v, sen.min_c, sen.max_c))
        except ValueError as e:
            raise ValueError("%s: %s" % (name, e)) from None
        values.append(v)
        spreads.append(spread)
    return ref, values, spreads


def finish(gw):
    """Compute the calibration from the points, save it (calibration.json) and apply it;
    the sensors stay out of service until release."""
    s = _session(gw)
    _maintenance(gw)
    if s["busy"]:
        raise ValueError("still measuring: poll until done")
    method = s["method"]
    points = s["points"]
    need = _NEED[method]
    if len(points) < need:
        raise ValueError("%d of %d points measured" % (len(points), need))
    names = s["names"]
    utc = clock.utc_s()
    date = cal.stamp(utc, gw.boot_id, gw.uptime_ms // 1000)
    new = []
    for i, name in enumerate(names):
        sen = gw.sensors[name]
        e = {"method": method, "date": date, "n": s["n"]}
        try:
            if method == cal.CHANNEL:
                refs = [points[0][0], points[1][0]]
                reads = [points[0][1][i], points[1][1][i]]
                adc = sen.adc
                g, o = cal.channel(adc.r0_ohm, adc.r_ref_ohm, refs, reads)
                e.update(r0_ohm=adc.r0_ohm, wires=adc.wires, r_ref_ohm=adc.r_ref_ohm,
                         ref_ohm=refs, read_ohm=reads, gain=g, offset_ohm=o)
            elif method == cal.TWO_POINT:
                refs = [points[0][0], points[1][0]]
                reads = [points[0][1][i], points[1][1][i]]
                g, o = cal.two_point(refs, reads)
                e.update(ref_c=refs, read_c=reads, gain=g, offset_k=o)
            elif i == 1:  # the pair's offset goes to its second sensor
                reads = points[0][1]
                e.update({"with": names[0], "read_c": list(reads),
                          "offset_k": cal.pair(reads[0], reads[1])})
            else:
                continue
        except ValueError as x:
            raise ValueError("%s: %s (nothing saved)" % (name, x)) from None
        new.append((name, e))
    data = gw.board.data_dir()
    doc = cal.load(data)
    dropped = []
    for name, e in new:
        dropped += cal.record(doc, name, e)
    try:
        cal.save(data, doc)
    except OSError as x:
        raise ValueError("cannot write %s (%r): nothing saved" % (cal.FILE, x)) from None
    _done, errors = cal.apply(gw.sensors, doc)
    gw.cal_session = None
    gw.event({"kind": "calibration", "source": s["source"], "result": "saved",
              "method": method, "sensors": [x[0] for x in new], "dropped": dropped})
    out = []
    for name, e in new:
        if method == cal.CHANNEL:
            out.append("%s: gain %.6f, offset %+.3f ohm" % (name, e["gain"],
                                                            e["offset_ohm"]))
        elif method == cal.TWO_POINT:
            out.append("%s: gain %.6f, offset %+.3f K" % (name, e["gain"], e["offset_k"]))
        else:
            out.append("%s: offset %+.3f K to read as %s" % (name, e["offset_k"],
                                                            e["with"]))
    if dropped:
        out.append("dropped (measured through what changed): " + ", ".join(dropped))
    for x in errors:
        out.append("not applied: " + x)
    out.append("saved; %s stay out of service until release" % ", ".join(names))
    return "; ".join(out)


def abort(gw):
    """Drop the open session (nothing saved); its sensors stay out of service."""
    s = getattr(gw, "cal_session", None)
    if s is None:
        return "no calibration open"
    _stop(gw, s)
    gw.cal_session = None
    return "%s calibration of %s aborted: nothing saved" % (s["method"], ",".join(s["names"]))


def release(gw, names=None, source="console"):
    """The sensors (default: every one out of service) are back in the pipe."""
    s = getattr(gw, "cal_session", None)
    if names is None:
        names = [n for n, sen in gw.sensors.items() if sen.capture is not None]
    names = list(names)
    for name in names:
        _sensor(gw, name)
        if s is not None and name in s["names"]:
            raise ValueError("%s is in the open %s calibration: finish or abort it first"
                             % (name, s["method"]))
    if not names:
        return "no sensor is out of service"
    for name in names:
        gw.sensors[name].capture = None
    gw.event({"kind": "calibration", "source": source, "result": "released",
              "sensors": names})
    return "%s back in service" % ", ".join(names)


def clear(gw, name, source="console"):
    """Remove sensor `name`'s calibration (and the pairs that refer to it)."""
    _maintenance(gw)
    _sensor(gw, name)
    if getattr(gw, "cal_session", None) is not None:
        raise ValueError("a calibration is open: finish or abort it first")
    data = gw.board.data_dir()
    doc = cal.load(data)
    dropped = cal.remove(doc, name)
    if not dropped:
        return "%s has no calibration" % name
    try:
        cal.save(data, doc)
    except OSError as x:
        raise ValueError("cannot write %s (%r): nothing changed" % (cal.FILE, x)) from None
    cal.apply(gw.sensors, doc)
    gw.event({"kind": "calibration", "source": source, "result": "cleared",
              "sensors": [name], "dropped": dropped})
    return "cleared: " + ", ".join(dropped)


def status(gw):
    """One line: the open session and the sensors out of service."""
    out = []
    s = getattr(gw, "cal_session", None)
    if s is not None:
        out.append("%s calibration of %s: %d of %d points%s" % (
            s["method"], ",".join(s["names"]), len(s["points"]), _NEED[s["method"]],
            ", measuring" if s["busy"] else ""))
    away = [n for n, sen in gw.sensors.items() if sen.capture is not None]
    out.append("out of service: " + (", ".join(away) if away else "none"))
    return "; ".join(out)
