"""What the console's `sensors` shows of each sensor's calibration (loaded on demand).

    for line in calshow.describe("supply", sensor=gw.sensors["supply"]):
        print(line)

    supply: channel 2026-09-22 00:20Z n=60 ref_ohm=1000/1385 read_ohm=1002.218/1387.582
      gain=0.9990564 offset_ohm=-1.272255        (one line per calibration in the file)
    supply: applied channel,two_point: R = 0.9940351 R_raw +2.6322 ohm, +0.0000 K
"""

from heatgw import calibration as cal

_SHOW = ("with", "ref_ohm", "read_ohm", "ref_c", "read_c", "gain", "offset_ohm", "offset_k")


def date_text(d):
    """"2026-09-21 10:00Z", or "boot 3 + 1234 s" when the clock was not set."""
    utc = d.get("utc")
    if type(utc) is not int:
        return "boot %s + %s s" % (d.get("boot"), d.get("up_s"))
    days, s = divmod(utc, 86400)
    # civil date from days since 1970-01-01 (H. Hinnant's algorithm): no time module,
    # whose epoch is 2000 on some ports
    z = days + 719468
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    month = mp + 3 if mp < 10 else mp - 9
    return "%04d-%02d-%02d %02d:%02dZ" % (yoe + era * 400 + (month <= 2), month,
                                         doy - (153 * mp + 2) // 5 + 1, s // 3600,
                                         s // 60 % 60)


def _text(v):
    if type(v) is list:
        return "/".join([_text(x) for x in v])
    return "%.7g" % v if type(v) is float else str(v)


def describe(name, data_dir=None, sensor=None):
    """Lines for sensor `name`: each calibration in the file (method, date, conversions
    averaged, references, readings, result), then what it applies when `sensor` (its
    rtd.TemperatureSensor) is given."""
    if data_dir is None:
        import board

        data_dir = board.data_dir()
    try:
        entries = cal.load(data_dir)["sensors"].get(name) or {}
    except ValueError as e:
        return ["%s: %s" % (name, e)]
    out = []
    for m in cal.METHODS:
        e = entries.get(m)
        if type(e) is dict:
            d = e.get("date")
            line = "%s: %s %s n=%s" % (name, m, date_text(d if type(d) is dict else {}),
                                      e.get("n"))
            for k in _SHOW:
                if k in e:
                    line += " %s=%s" % (k, _text(e[k]))
            out.append(line)
    if sensor is not None:
        c = sensor.cal
        if c is None:
            out.append("%s: not calibrated%s" % (name, " (the file's entries are not "
                                                  "applied)" if entries else ""))
        else:
            out.append("%s: applied %s: R = %.7g R_raw %+.4f ohm, %+.4f K"
                       % (name, ",".join(c[0]), c[3], c[4], c[5]))
        if sensor.offset_k:
            out.append("%s: configuration offset_k %+.3f K on top" % (name, sensor.offset_k))
    elif not out:
        out.append("%s: not calibrated" % name)
    return out
