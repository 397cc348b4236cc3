"""The `analog` section of the configuration schema (heatgw.config_schema's format) and
the cross-checks it cannot state, kept apart so that a node without analogue inputs never
loads it: install(SCHEMA) puts it in place of config_schema's stub. heatgw.config.load
does that, and runs check(), when a document has an `analog` section; the host's tools
always install it. Loaded at boot and dropped again (heatgw.start).

check() (plain Python: CPython runs it too, in host_tools.config_check):
- each ADC channel is used once; at most 3 inputs beside the valve (the telemetry record
  keeps 3);
- the two calibration points differ in signal (by at least 10 % of the signal's range)
  and in value, and the line they make is one the node can compute
  (heatgw.analog.Linear);
- the wire-break limit is below the lower point's signal and the over-range limit above
  the upper one (a live signal never reads as a fault);
- low < high, and each limit with its hysteresis inside the value range;
- a unit that fits the kind (pressure: bar, mbar, kPa, psi; level: %, m);
- a name that is not an RTD channel's, "flow", "valve" or a Modbus meter's (they share
  sensor_fault:<name> and the fail-safe's readings);
- the valve's tolerance below 50 %; a valve output "pwm" with open_v != closed_v.
"""

try:
    from micropython import const
except ImportError:  # CPython (host tools, tests): const() is the identity on ints
    const = int

from heatgw.config_schema import _ID_CHARS

_NAME_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789_"
_SIGNALS = ["4-20mA", "0-10V", "2-10V"]
_RESERVED = ("supply", "return", "sink_return", "it_coolant", "flow", "valve")
_MAX_INPUTS = const(3)

_SIGNAL_KEYS = {
    "channel": {"type": "str", "req": True, "len": [1, 8], "chars": _ID_CHARS,
                "doc": "the board's ADC channel (ADC_CHANNELS in its board file: ain1, "
                       "ain2, ain3)"},
    "signal": {"type": "str", "req": True, "enum": _SIGNALS,
               "doc": "4-20mA (through the board's shunt), 0-10V or 2-10V (through its "
                      "divider)"},
    "signal_lo": {"type": "float", "null": True, "default": None, "min": 0.0, "max": 30.0,
                  "unit": "mA or V",
                  "doc": "the signal at the lower calibration point (the valve: closed, "
                         "0 %); null: the signal's own (4 mA, 0 V, 2 V). Measured at "
                         "commissioning: the `analog` record's signal"},
    "signal_hi": {"type": "float", "null": True, "default": None, "min": 0.0, "max": 30.0,
                  "unit": "mA or V",
                  "doc": "the signal at the upper calibration point (the valve: open, "
                         "100 %); null: the signal's own (20 mA, 10 V)"},
    "break_ma": {"type": "float", "null": True, "default": 3.6, "min": 0.0, "max": 20.0,
                 "unit": "mA", "doc": "4-20mA: below this the wire is broken "
                                      "(wire_break, no value; NAMUR NE 43: 3.6 mA); "
                                      "null: not checked"},
    "over_ma": {"type": "float", "null": True, "default": 21.0, "min": 4.0, "max": 30.0,
                "unit": "mA", "doc": "4-20mA: above this the signal is out of range "
                                     "(over_range, no value; NE 43: 21 mA); null: not "
                                     "checked"},
    "break_v": {"type": "float", "null": True, "default": None, "min": 0.0, "max": 10.0,
                "unit": "V", "doc": "0-10V / 2-10V: below this the wire is broken "
                                    "(2-10V: e.g. 1.8); null (0-10V: a broken wire reads "
                                    "0 V, a valid value): not checked"},
    "over_v": {"type": "float", "null": True, "default": 10.5, "min": 1.0, "max": 12.0,
               "unit": "V", "doc": "0-10V / 2-10V: above this the signal is out of range "
                                   "(over_range); null: not checked"},
    "critical": {"type": "bool", "default": True,
                 "doc": "a fault (wire_break, over_range, no_channel, adc_error) or a "
                        "stale reading forces bypass: sensor_fault:<name>"},
}

_VALVE = {
    "type": "object", "null": True, "default": None,
    "doc": "the diverting valve's position feedback (and command output); null: none",
    "keys": dict(_SIGNAL_KEYS, **{
        "tolerance_pct": {"type": "float", "default": 10.0, "min": 1.0, "max": 49.0,
                          "unit": "%", "doc": "commanded (0 % bypass, 100 % reuse) and "
                                              "measured may differ this much; longer than "
                                              "control.valve_travel_s beyond it: "
                                              "valve_stuck (latching)"},
        "output": {"type": "str", "default": "relay", "enum": ["relay", "pwm"],
                   "doc": "relay: the reuse relay commands the valve (as without this "
                          "section); pwm: also the board's 0-10 V output (VALVE_OUT_PIN), "
                          "open_v in reuse, closed_v in bypass"},
        "open_v": {"type": "float", "default": 10.0, "min": 0.0, "max": 10.0, "unit": "V",
                   "doc": "pwm: the command in reuse (open to the heat exchanger)"},
        "closed_v": {"type": "float", "default": 0.0, "min": 0.0, "max": 10.0, "unit": "V",
                     "doc": "pwm: the command in bypass (closed), and whenever the relays "
                            "are released"},
    }),
}

_INPUT = {
    "type": "object", "doc": "an analogue input: a pressure or level transmitter",
    "keys": dict(_SIGNAL_KEYS, **{
        "kind": {"type": "str", "req": True, "enum": ["pressure", "level"],
                 "doc": "what it measures: pressure (loop pressure) or level (a tank)"},
        "unit": {"type": "str", "req": True, "enum": ["bar", "mbar", "kPa", "psi", "%", "m"],
                 "doc": "the value's unit: pressure bar, mbar, kPa or psi; level % or m"},
        "value_lo": {"type": "float", "req": True, "min": -100000.0, "max": 100000.0,
                     "unit": "(unit)", "doc": "the value at signal_lo (e.g. 0 bar at 4 mA)"},
        "value_hi": {"type": "float", "req": True, "min": -100000.0, "max": 100000.0,
                     "unit": "(unit)", "doc": "the value at signal_hi (e.g. 6 bar at 20 mA)"},
        "low": {"type": "float", "null": True, "default": None, "min": -100000.0,
                "max": 100000.0, "unit": "(unit)",
                "doc": "bypass below this (input_low:<name>); null: no trip"},
        "high": {"type": "float", "null": True, "default": None, "min": -100000.0,
                 "max": 100000.0, "unit": "(unit)",
                 "doc": "bypass above this (input_high:<name>); null: no trip"},
        "hyst": {"type": "float", "null": True, "default": None, "min": 0.0,
                 "max": 100000.0, "unit": "(unit)",
                 "doc": "a low trip clears above low + hyst, a high one below high - hyst; "
                        "null: 2 % of the value range"},
    }),
}

ANALOG = {
    "type": "object", "null": True, "default": None,
    "doc": "analogue inputs through the board's ADC: the valve's position feedback, "
           "pressure and level transmitters; null or absent: none (nothing of it is "
           "loaded)",
    "keys": {
        "samples": {"type": "int", "default": 16, "min": 3, "max": 64, "unit": "",
                    "doc": "conversions per reading (every control tick): the mean of the "
                           "middle half"},
        "valve": _VALVE,
        "inputs": {"type": "object", "default": {}, "items": _INPUT, "len": [1, 16],
                   "chars": _NAME_CHARS, "max_items": _MAX_INPUTS,
                   "doc": "pressure and level inputs, by name (their trips' and faults' "
                          "name too: input_low:<name>, sensor_fault:<name>)"},
    },
}


def install(schema):
    """Put ANALOG into schema (config_schema.SCHEMA) in place of the stub; idempotent."""
    schema["keys"]["analog"] = ANALOG


def check(cfg):
    """The cross-checks of a validated config's `analog` section (module doc): errors."""
    from heatgw.analog import SIGNALS, UNITS, Linear, milli, pin_uv, signal_ends

    errs = []
    a = cfg.get("analog")
    if not a:
        return errs
    items = []
    if a.get("valve"):
        items.append(("analog.valve", "valve", a["valve"]))
    meters = ((cfg.get("modbus") or {}).get("meters")) or {}
    for name in sorted(a.get("inputs") or {}):
        p = "analog.inputs." + name
        c = a["inputs"][name]
        items.append((p, name, c))
        if name in _RESERVED or name in meters:
            errs.append("%s: the name is taken (an RTD channel, flow, valve or a Modbus "
                        "meter share sensor_fault:<name>)" % p)
        if c["unit"] not in UNITS[c["kind"]]:
            errs.append("%s.unit: %s is no unit of %s (%s)"
                        % (p, c["unit"], c["kind"], ", ".join(UNITS[c["kind"]])))
    used = {}
    for p, name, c in items:
        ch = c["channel"]
        if ch in used:
            errs.append("%s.channel: %s is used by %s too" % (p, ch, used[ch]))
        used[ch] = p
        lo, hi = signal_ends(c)
        cur = c["signal"] == "4-20mA"
        unit = "mA" if cur else "V"
        if lo == hi:
            errs.append("%s: signal_lo and signal_hi are both %g %s: two points need two "
                        "signals" % (p, lo, unit))
            continue
        n_lo, n_hi = SIGNALS[c["signal"]]
        if abs(hi - lo) < (n_hi - n_lo) / 10:
            errs.append("%s: signal_lo %g and signal_hi %g %s are too close: calibrate at "
                        "points at least %g %s apart (the ends of the stroke or range)"
                        % (p, lo, hi, unit, (n_hi - n_lo) / 10, unit))
            continue
        brk = c.get("break_ma") if cur else c.get("break_v")
        over = c.get("over_ma") if cur else c.get("over_v")
        if brk is not None and not brk < min(lo, hi):
            errs.append("%s: the wire-break limit %g %s must be below the signal's lower "
                        "point %g %s" % (p, brk, unit, min(lo, hi), unit))
        if over is not None and not over > max(lo, hi):
            errs.append("%s: the over-range limit %g %s must be above the signal's upper "
                        "point %g %s" % (p, over, unit, max(lo, hi), unit))
        v_lo, v_hi = (0.0, 100.0) if name == "valve" else (c["value_lo"], c["value_hi"])
        try:  # through a 100 ohm shunt / a 39k:10k divider, as the boards' front ends
            Linear(pin_uv(c["signal"], lo, 100, (39000, 10000)), milli(v_lo),
                   pin_uv(c["signal"], hi, 100, (39000, 10000)), milli(v_hi))
        except ValueError as e:
            errs.append("%s: %s" % (p, e))
            continue
        if name == "valve":
            if c["output"] == "pwm" and c["open_v"] == c["closed_v"]:
                errs.append("%s: open_v and closed_v are both %g V: the output could not "
                            "move the valve" % (p, c["open_v"]))
            continue
        vmin, vmax = min(v_lo, v_hi), max(v_lo, v_hi)
        low, high = c.get("low"), c.get("high")
        hyst = c.get("hyst")
        if hyst is None:
            hyst = (vmax - vmin) * 0.02
        if low is not None and not vmin <= low < low + hyst <= vmax:
            errs.append("%s.low: %g (clearing at %g) must lie inside the value range %g .. "
                        "%g" % (p, low, low + hyst, vmin, vmax))
        if high is not None and not vmin <= high - hyst < high <= vmax:
            errs.append("%s.high: %g (clearing at %g) must lie inside the value range %g "
                        ".. %g" % (p, high, high - hyst, vmin, vmax))
        if low is not None and high is not None and not low + hyst < high - hyst:
            errs.append("%s: low %g and high %g overlap with their hysteresis %g"
                        % (p, low, high, hyst))
    return errs
