"""The calibration procedure, one step per call: what the console's `calibrate` runs.

    cp.begin(gw, "channel", ("supply", "return"))  # the sensors leave service
    cp.measure(gw, 1000.0)        # the first precision resistor at both sensors' terminals
    done, text = cp.poll(gw)      # every tick (or so) until done: n conversions averaged
    cp.measure(gw, 1385.0)        # the second resistor; poll() again
    cp.finish(gw)                 # computes, saves calibration.json, applies
    cp.begin(gw, "two_point", ("supply", "return"))  # then measure(gw, <reference °C>) x2
    cp.begin(gw, "pair", ("supply", "return"))       # one bath: measure(gw) once
    cp.release(gw)                # the sensors are back in the pipe: metering resumes

Every call returns the text to show, or raises ValueError with a one-line reason and
changes nothing but what the reason says (a failed point is dropped: measure it again).
Nothing here touches a relay or the fail-safe: the control task runs on throughout.

Maintenance: begin, measure, finish and clear refuse unless the node is in maintenance
(the board's key, or `maintenance on` through the command inbox) and the relays are in
bypass, and poll drops a running measurement when maintenance ends. The procedure never
switches maintenance itself: taking the node out of service is the technician's explicit
step, and so is putting it back (a procedure that did could return to reuse while a
sensor still hangs in a bath).

Out of the pipe: from begin until release, each named sensor reports `calibrating`
instead of a temperature (its rtd.TemperatureSensor.capture is set), also between steps
and sessions: the meter counts error time instead of metering a resistor or a bath, and a
critical sensor trips the fail-safe's sensor fault (maintenance holds bypass anyway). A
reboot puts every sensor back in service (the flag is not persisted).

The session lives on the Gateway (gw.cal_session): this module and heatgw.calibration
may be dropped between calls. One session at a time, over 1..4 sensors at once (a
resistor set or a bath each): channel and two_point take two points, pair one point and
exactly two sensors (the second gets the offset). A new channel drops the sensor's
two-point and every pair that involves it (they were measured through the old channel);
a new two-point drops the pairs that involve the sensor.
"""

from heatgw import calibration as cal
from heatgw import clock, rtd

N_DEFAULT = 30  # conversions per point: 30 s at a 1 s tick


def _session(gw):
    s = getattr(gw, "cal_session", None)
    if s is None:
        raise ValueError("no calibration open: begin one first")
    return s


def _maintenance(gw):
    if gw.inputs.maintenance is not True or gw.relay_reuse:
        raise ValueError("maintenance is off: switch it on first (the sensors leave the "
                         "pipe; the relays must be in bypass)")


def _need(method):
    return 1 if method == cal.PAIR else 2


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
    for name in names:
        if name not in gw.sensors:
            raise ValueError("no sensor %r; configured: %s" % (name, ", ".join(gw.sensors)))
    table = cal.load(gw.board.data_dir())["sensors"]
    entries = {}
    for name in names:
        e = table.get(name) or {}
        if method != cal.CHANNEL and e:  # measured through what the file holds
            try:
                cal.check(gw.sensors[name], e)
            except ValueError as x:
                raise ValueError("%s: its calibration is not valid (%s): calibrate its "
                                 "channel again or clear it" % (name, x)) from None
        entries[name] = e
    for name in names:
        sen = gw.sensors[name]
        if sen.capture is None:
            sen.capture = [0, 0, 0, 32767, 0, 0, None]  # out of service, not measuring
    gw.cal_session = {"method": method, "names": names, "n": n, "points": [],
                      "ref": None, "busy": False, "source": source, "entries": entries}
    return "%s of %s: out of service until release; next: measure %s" % (
        method, ", ".join(names), ("<ohm> with a precision resistor at each sensor's "
                                   "terminals") if method == cal.CHANNEL else
        "<reference C> in a stable bath" if method == cal.TWO_POINT else
        "with both in one stirred bath")


def measure(gw, ref=None):
    """Start averaging the next point's conversions; `ref`: the stated resistor (ohm,
    channel), the reference thermometer's reading (°C, two_point), None (pair)."""
    s = _session(gw)
    _maintenance(gw)
    if s["busy"]:
        raise ValueError("still measuring: poll until done")
    method = s["method"]
    points = s["points"]
    if len(points) >= _need(method):
        raise ValueError("every point is measured: finish")
    if method == cal.PAIR:
        if ref is not None:
            raise ValueError("a pair needs no reference value")
    else:
        if type(ref) not in (int, float):
            raise ValueError("measure needs the %s" % ("resistor's value in ohm"
                             if method == cal.CHANNEL else "reference temperature in C"))
        ref = float(ref)
        for name in s["names"]:
            adc = gw.sensors[name].adc
            cal.check_ref(method, adc.r0_ohm, adc.r_ref_ohm, ref)
        span = (cal.CH_SPAN_MIN * gw.sensors[s["names"][0]].r0_ohm if method == cal.CHANNEL
                else cal.TP_SPAN_MIN_K)
        if points and not abs(ref - points[0][0]) >= span:
            raise ValueError("%g is too close to the first point %g: at least %g apart"
                             % (ref, points[0][0], span))
    for name in s["names"]:
        c = gw.sensors[name].capture  # wanted, n, sum, min, max, faults, first fault
        c[1] = c[2] = c[4] = c[5] = 0
        c[3] = 32767
        c[6] = None
        c[0] = s["n"]  # the sampler's next reading starts filling it
    s["ref"] = ref
    s["busy"] = True
    return "measuring %s: %d conversions, about %d s" % (
        ", ".join(s["names"]), s["n"], (s["n"] * gw.tick_ms + 999) // 1000)


def _stop(gw, s):
    for name in s["names"]:
        gw.sensors[name].capture[0] = 0  # still out of service, no longer measuring
    s["busy"] = False


def _reading_c(sen, entries, code, before):
    """What the sensor reads (°C, without the configuration's offset_k) for an averaged
    `code` through its stages before the method `before` (None: all of them)."""
    r = code * sen.adc.r_ref_ohm / 32768
    e = entries.get(cal.CHANNEL)
    if e:
        r = e["gain"] * r + e["offset_ohm"]
    e = entries.get(cal.TWO_POINT)
    if e and before != cal.TWO_POINT:
        g, o = cal.two_point_ohm(sen.r0_ohm, e["ref_c"], e["read_c"])
        r = g * r + o
    t = rtd.temp_c(r, sen.r0_ohm)
    e = entries.get(cal.PAIR)
    return t + e["offset_k"] if e and before is None else t


def poll(gw):
    """(done, text) of the running measurement; done with the point's result, or a
    ValueError when it failed (the point is dropped: measure it again)."""
    s = getattr(gw, "cal_session", None)
    if s is None or not s["busy"]:
        return True, "not measuring"
    if gw.inputs.maintenance is not True:
        _stop(gw, s)
        raise ValueError("maintenance ended: the measurement is dropped")
    left = 0
    for name in s["names"]:
        c = gw.sensors[name].capture
        if c[5]:  # a conversion failed: the point has failed, say where
            _stop(gw, s)
            try:
                cal.mean_code(c)
            except ValueError as e:
                raise ValueError("%s: %s" % (name, e)) from None
        left = max(left, c[0] - c[1])
    if left:
        return False, "%d conversions to go" % left
    method = s["method"]
    ref = s["ref"]
    values, text = [], []
    try:
        for name in s["names"]:
            sen = gw.sensors[name]
            try:
                code, spread = cal.mean_code(sen.capture)
                if method == cal.CHANNEL:
                    v = code * sen.adc.r_ref_ohm / 32768
                    cal.point(method, sen.r0_ohm, sen.adc.r_ref_ohm, ref, v)
                else:
                    # through the stages before this method; a pair's reference: all
                    v = _reading_c(sen, s["entries"][name], code,
                                   None if method == cal.PAIR and not values else method)
                    if method == cal.TWO_POINT:
                        cal.point(method, sen.r0_ohm, 0, ref, v)
                    elif not sen.min_c <= v <= sen.max_c:
                        raise ValueError("reads %.2f C, outside %g..%g C"
                                         % (v, sen.min_c, sen.max_c))
            except ValueError as e:
                raise ValueError("%s: %s" % (name, e)) from None
            values.append(v)
            text.append("%s %.3f (spread %d LSB)" % (name, v, spread))
    finally:
        _stop(gw, s)
    s["points"].append((ref, values))
    return True, "point %d: %s; next: %s" % (
        len(s["points"]), ", ".join(text),
        "finish" if len(s["points"]) >= _need(method) else "measure")


def _entry(method, sen, points, i, s):
    # one sensor's new entry from the session's points (ValueError: refused)
    e = {"method": method, "n": s["n"]}
    if method == cal.PAIR:
        reads = points[0][1]
        e.update({"with": s["names"][0], "read_c": reads,
                  "offset_k": cal.pair(reads[0], reads[1])})
        return e
    refs = [points[0][0], points[1][0]]
    reads = [points[0][1][i], points[1][1][i]]
    adc = sen.adc
    g, o = cal.line(method, adc.r0_ohm, adc.r_ref_ohm, refs, reads)
    if method == cal.CHANNEL:
        e.update(r0_ohm=adc.r0_ohm, wires=adc.wires, r_ref_ohm=adc.r_ref_ohm,
                 ref_ohm=refs, read_ohm=reads, gain=g, offset_ohm=o)
    else:
        e.update(ref_c=refs, read_c=reads, gain=g, offset_k=o)
    return e


def _drop(table, name, method):
    """Remove what a new entry of `method` (None: removing all) of sensor `name`
    invalidates: its later stages, and every other sensor's pair that refers to it."""
    mine = table.get(name) or {}
    out = []
    for m in cal.METHODS[0 if method is None else cal.METHODS.index(method) + 1:]:
        if m in mine:
            del mine[m]
            out.append(name + "." + m)
    for other, ent in table.items():
        p = ent.get(cal.PAIR)
        if other != name and p and p.get("with") == name:
            del ent[cal.PAIR]
            out.append(other + "." + cal.PAIR)
    return out


def finish(gw):
    """Compute the calibration from the points, save it (calibration.json) and apply it;
    the sensors stay out of service until release."""
    s = _session(gw)
    _maintenance(gw)
    if s["busy"]:
        raise ValueError("still measuring: poll until done")
    method = s["method"]
    points = s["points"]
    if len(points) < _need(method):
        raise ValueError("%d of %d points measured" % (len(points), _need(method)))
    names = s["names"][1:] if method == cal.PAIR else s["names"]  # a pair: the second
    utc = clock.utc_s()
    date = {"utc": None if utc is None else int(utc), "boot": gw.boot_id,
            "up_s": gw.uptime_ms // 1000}
    new = []
    for i, name in enumerate(names):
        try:
            e = _entry(method, gw.sensors[name], points, i, s)
        except ValueError as x:
            raise ValueError("%s: %s (nothing saved)" % (name, x)) from None
        e["date"] = date
        new.append((name, e))
    data = gw.board.data_dir()
    doc = cal.load(data)
    table = doc["sensors"]
    dropped = []
    for name, e in new:
        dropped += _drop(table, name, method)
        table.setdefault(name, {})[method] = e
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
        out.append("%s %s %s" % (name, method, " ".join(
            "%s %+.6g" % (k, e[k]) for k in ("gain", "offset_ohm", "offset_k") if k in e)))
    if dropped:
        out.append("dropped (measured through what changed): " + ", ".join(dropped))
    for x in errors:
        out.append("not applied: " + x)
    out.append("saved; out of service until release")
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
        if name not in gw.sensors:
            raise ValueError("no sensor %r" % (name,))
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
    if name not in gw.sensors:
        raise ValueError("no sensor %r" % (name,))
    if getattr(gw, "cal_session", None) is not None:
        raise ValueError("a calibration is open: finish or abort it first")
    data = gw.board.data_dir()
    doc = cal.load(data)
    dropped = _drop(doc["sensors"], name, None)
    if not dropped:
        return "%s has no calibration" % name
    doc["sensors"].pop(name, None)
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
    s = getattr(gw, "cal_session", None)
    away = [n for n, sen in gw.sensors.items() if sen.capture is not None]
    return "%sout of service: %s" % (
        "" if s is None else "%s calibration of %s: %d of %d points%s; " % (
            s["method"], ",".join(s["names"]), len(s["points"]), _need(s["method"]),
            ", measuring" if s["busy"] else ""),
        ", ".join(away) if away else "none")
