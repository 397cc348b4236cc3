"""MQTT payloads, written into one reused buffer: no big strings, exact totals.

    snap = Snapshot()                 # preallocated; filled in the control path:
    snap.take(gw, heap_free)          # copies values and the meter's limbs, formats nothing
    out = Writer(1024)                # one buffer, reused for every payload
    mv = telemetry(out, snap, seq)    # a memoryview of the JSON (valid until the next call)
    mv = state(out, ...); mv = alarm(out, a); mv = event(out, ev)

Exact totals. Energy, volume and times come from the meter's 30-bit limbs (the kernel's
state: energy in nJ over 3 limbs, volume in µL and times in ms over 2), never from a
float: `exact()` divides the limbs by small divisors (each < 2**14) in 15-bit halves and
prints base-10000 groups, so no intermediate reaches 2**30 (a long int on a 32-bit port)
whatever the total. Values are rounded down, like a meter's display: `energy_wh` to 1 mWh,
`volume_l` to 1 mL, `error_s`/`low_dt_s`/`time_s` to 1 ms. Ten years at 1 MW is 8.8e10
Wh: 14 significant digits, so a JSON reader that parses into doubles still gets the exact
decimal.

Invalid values: a temperature, ΔT, flow or power that is not valid is `null` with a reason
beside it (`"supply_c": null, "supply_why": "open"`), never a made-up number; a sensor that
is not configured reads `"not_configured"`. Every key is always present (Home Assistant's
value templates and the JSON Schema rely on it), except `utc`, present once the clock is
set.

Floats (temperatures, flow, power) are formatted with fixed decimals; on the targets they
are single precision (~7 digits), enough for every one of them.
"""

import json
from array import array

from heatgw import FW_VERSION  # noqa: F401 - the firmware's version, one place

V = 1  # payload schema version ("v" in every payload)

SENSORS = ("supply", "return", "sink_return", "it_coolant")
NOT_CONFIGURED = "not_configured"

# Offsets in Snapshot.limbs (LSB first) and the kernel state's first limb of each total.
_E, _V, _T, _ERR, _LOW = 0, 3, 5, 7, 9
_LIMBS = 11
_M15 = 0x7FFF
_HALVES = 6  # 3 limbs of 30 bits
_NJ_PER_MWH = (1000, 1000, 3600)  # 3.6e9 nJ = 1 mWh, in divisors < 2**14
_UL_PER_ML = (1000,)
_INF = float("inf")
_FIXED = (b"%.0f", b"%.1f", b"%.2f", b"%.3f")  # fixed(): decimals 0..3


class Writer:
    """A preallocated output buffer. Writing past its end raises ValueError (and the
    payload is not sent) instead of growing it."""

    def __init__(self, size=1024):
        self.buf = bytearray(size)
        self.mv = memoryview(self.buf)
        self.n = 0
        self._h = [0] * _HALVES  # exact(): the number in 15-bit halves, MSB first
        self._g = [0] * 8  # exact(): base-10000 groups, LSB first (90 bits: 28 digits)

    def reset(self):
        self.n = 0

    def raw(self, b):
        n = self.n
        end = n + len(b)
        if end > len(self.buf):
            self.n = 0
            raise ValueError("payload: longer than the %d-byte buffer" % len(self.buf))
        self.mv[n:end] = b
        self.n = end

    def value(self):
        return self.mv[:self.n]

    def key(self, k):
        # k: bytes, the key with its quotes and colon, e.g. b'"v":'
        if self.n > 1:
            self.raw(b",")
        self.raw(k)

    def str(self, s):
        if s is None:
            self.raw(b"null")
        else:
            self.raw(json.dumps(s if type(s) is str else repr(s)).encode())

    def int(self, v):
        self.raw(b"null" if v is None else b"%d" % v)

    def bool(self, v):
        self.raw(b"true" if v else b"false")

    def list(self, items):
        self.raw(b"[")
        first = True
        for s in items or ():
            if not first:
                self.raw(b",")
            first = False
            self.str(s)
        self.raw(b"]")

    def exact(self, limbs, first, count, divisors, decimals):
        """N / prod(divisors) / 10**decimals, rounded down, with `decimals` places (so
        prod(divisors) is the input units per last printed digit), where N is the
        non-negative number in limbs[first:first+count] (30 bits each, LSB first);
        decimals 0..4, each divisor 2..10000. Allocates nothing."""
        h = self._h
        nh = 2 * count
        for i in range(count):  # MSB first, two halves per limb
            v = limbs[first + count - 1 - i]
            h[2 * i] = v >> 15
            h[2 * i + 1] = v & _M15
        for d in divisors:
            _divide(h, nh, d)
        frac = _divide(h, nh, 10 ** decimals) if decimals else 0
        g = self._g
        ng = 0
        while True:
            g[ng] = _divide(h, nh, 10000)
            ng += 1
            zero = True
            for i in range(nh):
                if h[i]:
                    zero = False
                    break
            if zero:
                break
        self._digits(g[ng - 1], 0)
        for i in range(ng - 2, -1, -1):
            self._digits(g[i], 4)
        if decimals:
            self._digits(-1, 1)  # the decimal point
            self._digits(frac, decimals)

    def _digits(self, v, width):
        # v (0 <= v < 10000) in `width` digits with leading zeros, or as few as it needs
        # (width 0); v = -1 writes ".". Allocation-free, like all of exact().
        buf = self.buf
        n = self.n
        if v < 0:
            width = 1
        elif width == 0:
            width = 1 if v < 10 else 2 if v < 100 else 3 if v < 1000 else 4
        end = n + width
        if end > len(buf):
            self.n = 0
            raise ValueError("payload: longer than the %d-byte buffer" % len(buf))
        if v < 0:
            buf[n] = 46
        else:
            i = end
            while i > n:
                i -= 1
                buf[i] = 48 + v % 10
                v //= 10
        self.n = end

    def fixed(self, v, decimals):
        """A finite float or int with fixed decimals (the caller checked validity)."""
        self.raw(_FIXED[decimals] % v)


def _divide(h, nh, d):
    """h (15-bit halves, MSB first) //= d in place; returns the remainder. d < 2**15
    keeps r * 2**15 + half below 2**30."""
    r = 0
    for i in range(nh):
        x = (r << 15) | h[i]
        q = x // d
        h[i] = q
        r = x - q * d
    return r


def _finite(v):
    t = type(v)
    if t is int:
        return True
    return t is float and v == v and v != _INF and v != -_INF


class Snapshot:
    """One telemetry record's values, copied from the live objects without formatting
    (take() allocates only the meter's mean-power float); the network task formats it
    later, so the control path never waits on JSON or I/O."""

    def __init__(self, sensors=SENSORS):
        self.names = tuple(sensors)  # payload order (a dict's order differs by port)
        self.limbs = array("i", [0] * _LIMBS)
        self.configured = dict.fromkeys(sensors, False)
        self.temps_c = dict.fromkeys(sensors)
        self.reasons = dict.fromkeys(sensors, NOT_CONFIGURED)
        self.flow_m3h = None
        self.flow_why = NOT_CONFIGURED
        self.power_w = None
        self.power_why = "no_data"
        self.state = "bypass"
        self.reason = "boot"
        self.active = ()
        self.latched = ()
        self.relay_reuse = False
        self.heap_free = None
        self.boot = 0
        self.up_ms = 0
        self.utc = None

    def take(self, gw, heap_free=None, utc=None):
        """From a heatgw.app.Gateway: inputs, meter limbs, fail-safe and relay state."""
        ins = gw.inputs
        for name in self.names:
            if name in ins.temps_c:
                self.configured[name] = True
                self.temps_c[name] = ins.temps_c[name]
                self.reasons[name] = ins.temp_reasons.get(name)
        if gw.flow is not None:
            self.flow_m3h = ins.flow_m3h
            self.flow_why = ins.flow_reason
        self.take_meter(gw.meter)
        fs = gw.failsafe
        self.state = fs.state
        self.reason = fs.cause
        self.active = fs.active
        self.latched = fs.latched
        self.relay_reuse = gw.relay_reuse
        self.heap_free = heap_free
        self.boot = gw.boot_id
        self.up_ms = gw.uptime_ms
        self.utc = utc

    def take_meter(self, meter):
        """The exact totals, limb by limb from the kernel state (flushed first), and the
        last batch's mean power (None when it had no time)."""
        from heatgw import meterkernel as k  # loaded with the meter (CPython: no viper)

        meter.flush()
        st = meter._st  # the kernel's state words: read, never written, here
        lb = self.limbs
        for dst, src, n in ((_E, k.ST_E0, 3), (_V, k.ST_V0, 2), (_T, k.ST_TIME0, 2),
                            (_ERR, k.ST_ERR0, 2), (_LOW, k.ST_LOW0, 2)):
            for i in range(n):
                lb[dst + i] = st[src + i]
        p = meter.last_power_w
        self.power_w = p
        self.power_why = None if p is not None else "no_data"


_KEYS = {}  # value name -> its two keys, made once


def _measured(w, name, value, why, decimals):
    # "<name>": value, "<name>_why": null   or   "<name>": null, "<name>_why": "<why>"
    if why is None and not _finite(value):
        why = "not_finite" if value is not None else "no_data"
    keys = _KEYS.get(name)
    if keys is None:
        why_name = name.rsplit("_", 1)[0]  # supply_c -> supply_why, flow_m3h -> flow_why
        keys = _KEYS[name] = (('"%s":' % name).encode(), ('"%s_why":' % why_name).encode())
    w.key(keys[0])
    if why is None:
        w.fixed(value, decimals)
    else:
        w.raw(b"null")
    w.key(keys[1])
    w.str(why)


def _begin(w):
    w.reset()
    w.raw(b'{"v":%d' % V)


def telemetry(w, snap, seq):
    """The telemetry payload of a Snapshot; returns a memoryview into w's buffer."""
    _begin(w)
    w.key(b'"seq":')
    w.int(seq)
    w.key(b'"boot":')
    w.int(snap.boot)
    w.key(b'"up_ms":')
    w.int(snap.up_ms)
    if snap.utc is not None:
        w.key(b'"utc":')
        w.int(snap.utc)
    temps = snap.temps_c
    reasons = snap.reasons
    for name in snap.names:
        why = reasons[name] if snap.configured[name] else NOT_CONFIGURED
        _measured(w, name + "_c", temps[name], why, 2)
    dt_why = None
    for name in ("supply", "return"):
        if dt_why is None:
            if name not in temps or not snap.configured[name]:
                dt_why = name + ":" + NOT_CONFIGURED
            elif reasons[name] is not None or not _finite(temps[name]):
                dt_why = name + ":" + (reasons[name] or "no_data")
    dt = temps["supply"] - temps["return"] if dt_why is None else None
    _measured(w, "dt_k", dt, dt_why, 2)
    _measured(w, "flow_m3h", snap.flow_m3h, snap.flow_why, 3)
    _measured(w, "power_w", snap.power_w, dt_why or snap.power_why, 0)
    lb = snap.limbs
    w.key(b'"energy_wh":')
    w.exact(lb, _E, 3, _NJ_PER_MWH, 3)
    w.key(b'"volume_l":')
    w.exact(lb, _V, 2, _UL_PER_ML, 3)
    w.key(b'"time_s":')
    w.exact(lb, _T, 2, (), 3)
    w.key(b'"error_s":')
    w.exact(lb, _ERR, 2, (), 3)
    w.key(b'"low_dt_s":')
    w.exact(lb, _LOW, 2, (), 3)
    w.key(b'"state":')
    w.str(snap.state)
    w.key(b'"relay_reuse":')
    w.bool(snap.relay_reuse)
    w.key(b'"reason":')
    w.str(snap.reason)
    w.key(b'"active":')
    w.list(snap.active)
    w.key(b'"latched":')
    w.list(snap.latched)
    w.key(b'"heap_free":')
    w.int(snap.heap_free)
    w.raw(b"}")
    return w.value()


def state(w, fs_state, reason, active, latched, relay_reuse, config_hash, boot, up_ms,
          utc=None, fault=None, sensors=None):
    """The retained state payload: the current state, firmware version, config hash, and
    the calibration each sensor applies (`sensors`: name -> rtd.TemperatureSensor)."""
    _begin(w)
    w.key(b'"state":')
    w.str(fs_state)
    w.key(b'"reason":')
    w.str(reason)
    w.key(b'"relay_reuse":')
    w.bool(relay_reuse)
    w.key(b'"active":')
    w.list(active)
    w.key(b'"latched":')
    w.list(latched)
    w.key(b'"fault":')
    w.str(fault)
    w.key(b'"fw":')
    w.str(FW_VERSION)
    w.key(b'"config_hash":')
    w.str(config_hash)
    w.key(b'"boot":')
    w.int(boot)
    w.key(b'"up_ms":')
    w.int(up_ms)
    if utc is not None:
        w.key(b'"utc":')
        w.int(utc)
    w.key(b'"calibration":')
    _calibration(w, sensors)
    w.raw(b"}")
    return w.value()


def _calibration(w, sensors):
    # {"supply": {"methods": [...], "utc": .., "boot": .., "gain": .., "offset_ohm": ..,
    # "offset_k": ..}, ...}: calibrated sensors only (rtd.TemperatureSensor.cal)
    w.raw(b"{")
    sep = b""
    for name in SENSORS:
        s = sensors.get(name) if sensors else None
        c = None if s is None else s.cal
        if c is not None:
            w.raw(sep)
            sep = b","
            w.str(name)
            w.raw(b':{"methods":')
            w.list(c[0])
            w.raw(b',"utc":')
            w.int(c[1])
            w.raw(b',"boot":%d,"gain":%.6f,"offset_ohm":%.3f,"offset_k":%.3f}'
                  % (c[2], c[3], c[4], c[5]))
    w.raw(b"}")


_ALARM_KEYS = (
    (b'"id":', "id", 0), (b'"severity":', "severity", 0), (b'"source":', "source", 0),
    (b'"active":', "active", 2), (b'"ack_required":', "ack_required", 2),
    (b'"acked":', "acked", 2), (b'"acked_by":', "acked_by", 0),
    (b'"raised_up_ms":', "raised_up_ms", 1), (b'"raised_utc":', "raised_utc", 1),
    (b'"cleared_up_ms":', "cleared_up_ms", 1), (b'"cleared_utc":', "cleared_utc", 1),
    (b'"acked_up_ms":', "acked_up_ms", 1), (b'"acked_utc":', "acked_utc", 1),
    (b'"count":', "count", 1), (b'"detail":', "detail", 0),
)


def alarm(w, a):
    """The retained payload of `.../alarm/<id>`: a heatgw.alarms.Alarm, or None for an
    alarm that is gone: the empty payload, which deletes the retained message (MQTT
    3.1.1, 3.3.1.3: a retained PUBLISH with zero bytes removes the retained message)."""
    w.reset()
    if a is None or a.id is None:
        return w.value()
    w.raw(b'{"v":%d' % V)
    for key, attr, kind in _ALARM_KEYS:
        w.key(key)
        v = getattr(a, attr)
        if kind == 2:
            w.bool(v)
        elif kind == 1:
            w.int(v)
        else:
            w.str(v)
    w.raw(b"}")
    return w.value()


def event(w, ev):
    """An event dict (heatgw.app.Gateway.event: kind, boot, up_ms, utc, ...) as JSON,
    value by value (each value is small; the event is never one big string)."""
    _begin(w)
    for k in ev:
        w.key(json.dumps(k).encode() + b":")
        w.raw(json.dumps(ev[k]).encode())
    w.raw(b"}")
    return w.value()


def config_hash(path, chunk=256):
    """The first 8 hex digits of the SHA-256 of the configuration file's bytes, read in
    chunks (None if it cannot be read): the state payload's `config_hash`."""
    import binascii
    import hashlib

    h = hashlib.sha256()
    try:
        f = open(path, "rb")
    except OSError:
        return None
    try:
        buf = bytearray(chunk)
        mv = memoryview(buf)
        while True:
            n = f.readinto(buf)
            if not n:
                break
            h.update(mv[:n])
    finally:
        f.close()
    return binascii.hexlify(h.digest()[:4]).decode()
