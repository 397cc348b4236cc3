"""Modbus configuration: the cross-checks the schema cannot state, and the poll plan.

    errors = check(cfg)     # heatgw.config.load, after the schema (device and host alike)
    buses = plan(cfg)       # heatgw.modbus, at construction (device only)

Loaded at boot and dropped again: nothing here runs while the node polls.

check() (plain Python: CPython runs it too, in host_tools.config_check):
- a meter's bus is in modbus.buses; an RTU slave id is 1 ... 247;
- a TCP bus has a host, an IPv4 address; an RTU bus has none;
- a meter reads something (a model, registers or both); each value's registers fit the
  address space; no scale is 0;
- a meter's role has its value: compute and pump power_w or energy_kwh, heat energy_kwh,
  flow volume_m3;
- a meter's name is not an RTD channel's or "flow" (they share sensor_fault:<name>);
- stale_s is longer than period_s, and than a poll whose every request times out;
- flow.type "modbus" names a meter of role flow.

plan(): per bus, its meters with their values and the fewest requests that read them:
values of one function code whose registers are adjacent or overlap share a request of
at most 125 registers; each request's PDU (5 bytes) is built once here. Not with
umodbus.functions' builders (read_holding_registers & co.): they are this one
struct.pack, and importing them interns 169 identifiers (umodbus.functions, .typing,
.const), ~2.5 KB of heap for good on 64 bits (qstrs are never freed), and takes 22 KB
while it loads.
"""

try:
    from micropython import const
except ImportError:  # CPython (host tools, tests): const() is the identity on ints
    const = int

SENSORS = ("supply", "return", "sink_return", "it_coolant", "flow")
MODEL_VALUES = ("energy_kwh", "power_w")  # what the built-in maps read (lib/sdm)
_TYPES = ("int16", "uint16", "int32", "uint32", "float32")  # mbcore's type codes
_MAX_REGS = const(125)  # registers one read request may ask for
_ROLE_NEEDS = {"compute": ("power_w", "energy_kwh"), "pump": ("power_w", "energy_kwh"),
               "heat": ("energy_kwh",), "flow": ("volume_m3",)}


def _words(typ):
    return 1 if _TYPES.index(typ) < 2 else 2


def _values(meter, maps=None):
    """{name: (address, fc, type, word_order, byte_order, scale, unit)} of a meter: the
    model's (maps: lib/sdm's MAPS, on the device) overlaid by its own registers."""
    out = {}
    model = meter.get("model")
    if model is not None:
        if maps is None:
            for name in MODEL_VALUES:
                out[name] = (0, 4, "float32", "big", "big", 1.0, "")
        else:
            for name, addr, fc, typ, wo, bo, scale, unit in maps[model]:
                out[name] = (addr, fc, typ, wo, bo, scale, unit)
    for name, r in (meter.get("registers") or {}).items():
        out[name] = (r["address"], r["fc"], r["type"], r["word_order"], r["byte_order"],
                     r["scale"], r["unit"])
    return out


def blocks(values):
    """The read requests for {name: (address, fc, type, ...)}: a list of
    (fc, first address, register count, [(name, register offset), ...]), adjacent or
    overlapping registers of one function code in one request of at most 125."""
    items = sorted((v[1], v[0], _words(v[2]), name) for name, v in values.items())
    out = []
    for fc, addr, words, name in items:
        b = out[-1] if out else None
        end = addr + words
        if b is not None and b[0] == fc and addr <= b[1] + b[2] and end - b[1] <= _MAX_REGS:
            b[2] = max(b[2], end - b[1])
            b[3].append((name, addr - b[1]))
        else:
            out.append([fc, addr, words, [(name, 0)]])
    return out


def check(cfg):
    """Error strings (empty: fine) for a configuration the schema has passed."""
    from heatgw.schema import ipv4  # loaded already: the schema has just run (not plan())

    errs = []
    mb = cfg.get("modbus")
    if not mb:
        if (cfg.get("flow") or {}).get("type") == "modbus":
            errs.append("flow.meter: flow.type modbus needs a modbus section with that meter")
        return errs
    buses = mb.get("buses") or {}
    meters = mb.get("meters") or {}
    for name in sorted(buses):
        b = buses[name]
        p = "modbus.buses." + name
        if b["type"] == "tcp":
            if b.get("host") is None:
                errs.append(p + ".host: required for a tcp bus (the server's IPv4 address)")
            elif not ipv4(b["host"]):
                errs.append("%s.host: %r is not an IPv4 address like 192.168.1.20"
                            % (p, b["host"]))
        elif b.get("host") is not None:
            errs.append(p + ".host: only for a tcp bus")
    for name in sorted(meters):
        m = meters[name]
        p = "modbus.meters." + name
        if name in SENSORS:
            errs.append(p + ": the name is taken (an RTD channel's or flow's); choose another")
        bus = buses.get(m["bus"])
        if bus is None:
            errs.append("%s.bus: %r is not one of modbus.buses (%s)"
                        % (p, m["bus"], ", ".join(sorted(buses))))
        elif bus["type"] == "rtu" and not 1 <= m["slave"] <= 247:
            errs.append("%s.slave: %d is not an RTU slave id (1 ... 247)" % (p, m["slave"]))
        vals = _values(m)
        if not vals:
            errs.append(p + ": reads nothing: set model or registers")
            continue
        for vn, r in sorted((m.get("registers") or {}).items()):
            if r["address"] + _words(r["type"]) > 65536:
                errs.append("%s.registers.%s.address: %d: its registers run past 65535"
                            % (p, vn, r["address"]))
            if r["scale"] == 0:
                errs.append("%s.registers.%s.scale: 0 makes every value 0" % (p, vn))
        role = m.get("role")
        if role is not None:
            needs = _ROLE_NEEDS[role]
            if not [v for v in needs if v in vals]:
                errs.append("%s.role: %s needs the value %s" % (p, role, " or ".join(needs)))
        if m["stale_s"] <= m["period_s"]:
            errs.append("%s.stale_s: %d s must be longer than period_s (%d s): else every "
                        "value reads stale between two polls" % (p, m["stale_s"], m["period_s"]))
        poll_ms = len(blocks(vals)) * (m["retries"] + 1) * m["timeout_ms"]
        if poll_ms >= m["stale_s"] * 1000:
            errs.append("%s.stale_s: %d s is shorter than one poll that times out (%d ms: "
                        "requests x (retries + 1) x timeout_ms)" % (p, m["stale_s"], poll_ms))
    flow = cfg.get("flow")
    if flow and flow.get("type") == "modbus":
        m = meters.get(flow.get("meter"))
        if m is None:
            errs.append("flow.meter: %r is not one of modbus.meters" % (flow.get("meter"),))
        elif m.get("role") != "flow":
            errs.append("flow.meter: modbus.meters.%s has role %s, not flow"
                        % (flow["meter"], m.get("role")))
    return errs


def plan(cfg):
    """[(bus name, bus config, [(meter name, meter config, names, units, requests)])]
    with requests = ((pdu, ((value index, byte offset, type code, order, scale), ...)),
    ...), names sorted. Device only (lib/sdm)."""
    from struct import pack

    from sdm import MAPS

    mb = cfg["modbus"]
    out = []
    for bname in sorted(mb["buses"]):
        ms = []
        for name in sorted(mb["meters"]):
            m = mb["meters"][name]
            if m["bus"] != bname:
                continue
            vals = _values(m, MAPS)
            names = tuple(sorted(vals))
            units = tuple(vals[n][6] for n in names)
            reqs = []
            for fc, addr, count, members in blocks(vals):
                pdu = pack(">BHH", fc, addr, count)  # function code, address, quantity
                spec = []
                for vn, off in members:
                    _a, _fc, typ, wo, bo, scale, _u = vals[vn]
                    order = (1 if wo == "little" else 0) | (2 if bo == "little" else 0)
                    spec.append((names.index(vn), 2 * off, _TYPES.index(typ), order,
                                 1 if scale == 1 else scale))
                reqs.append((pdu, tuple(spec)))
            ms.append((name, m, names, units, tuple(reqs)))
        if ms:
            out.append((bname, mb["buses"][bname], ms))
    return out
