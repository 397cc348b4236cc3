"""One inbox for every request to the fail-safe: pure logic, no I/O, no clock reads.

    inbox = Inbox(sink_sources=sources(cfg["control"]))
    inbox.post("modbus", "sink_available", True, at_ms)   # any task; raises on a bad one
    events, resets = inbox.drain(now_ms)          # the control task, every tick
    inbox.merge(inputs, board_levels, now_ms)     # board inputs + remote requests

A request is (source, what, value); `source` is who asks ("console", "mqtt", "modbus",
...; "board" is the board's own inputs and cannot be posted). `what`:
- "maintenance", value True/False: that source holds (or releases) maintenance.
- "sink_available", value True/False/None: that source says the heat sink is (not)
  available; None withdraws its statement. `at_ms` (optional): the poster's ticks when it
  heard it (a Modbus write, an MQTT message); else the tick that drains it.
- "trip_reset", value True: a technician's latch reset (an edge; the value is ignored).
A request equal to the newest one of its source still queued is not queued again (a
heartbeat flood takes one slot; its time stamp moves on).

Merge, evaluated every tick with the tick's time, so that the stricter side always wins:
- maintenance = the board's key OR any source holding maintenance;
- sink_available, the sink rule (README "Fail-safe bypass"). The configured sources
  (sources(control)): the board's contact ("board") when control.sink_signal is on, and
  each remote source of control.sink_sources with the seconds it may stay silent.
  - the contact is available while it is closed;
  - a remote source is available while its last statement is True and younger than its
    timeout; one silent beyond it, or never heard since boot, is unavailable until it
    speaks again (a wrapped ticks_diff can never make it fresh);
  - sink_available is True only when every configured source is available; False when
    any is not, or when any source at all says False (configured or not); None when no
    source is configured and nobody says False;
  - a False drained in a tick counts for that tick even if the same source said True
    again before it (a 0 written and a 1 right after it still trip, once).
  inputs.sink_by names the sources that make it unavailable ("board,modbus"; when it is
  available, the configured sources), inputs.sink_silent the silent ones.
- trip_reset: the board's input is a level (the fail-safe detects its edge); a posted
  reset is returned by drain() for the control task to apply at once.

The queue is preallocated; post, and drain and merge in a tick without news, allocate
nothing. A bad or excess request raises ValueError and changes nothing. Runs on
MicroPython and CPython.
"""

try:
    from micropython import const
except ImportError:  # CPython (host tools, tests): const() is the identity on ints
    const = int

MAINTENANCE = "maintenance"
SINK_AVAILABLE = "sink_available"
TRIP_RESET = "trip_reset"
WHATS = (MAINTENANCE, SINK_AVAILABLE, TRIP_RESET)
BOARD = "board"
_MAX_SOURCES = const(8)  # sources holding a state (maintenance, a sink statement)
_TICKS_MAX = const(0x3FFFFFFF)  # ticks wrap at 2**30 on the targets
_TICKS_HALF = const(0x20000000)


def ticks_diff(a, b):
    """a - b in ticks that wrap at 2**30 (the app sets its clock's own)."""
    d = (a - b) & _TICKS_MAX
    if d >= _TICKS_HALF:
        d -= _TICKS_MAX  # two steps keep every operand a small int on 32-bit ports
        d -= 1
    return d


def sources(control):
    """((name, timeout_ms), ...) of the configured sink sources, from the `control`
    section: ("board", None) first when sink_signal is on (a level: never silent), then
    each of sink_sources ({name: timeout_s}) in name order."""
    out = []
    if control.get("sink_signal"):
        out.append((BOARD, None))
    ss = control.get("sink_sources") or {}
    for name in sorted(ss):
        if ss[name] is not None:
            out.append((name, ss[name] * 1000))
    return tuple(out)


def source_errors(cfg):
    """Configuration errors of the sink sources (heatgw.config, heatgw.cfgedit): a remote
    sink source needs the part it comes through: modbus the bms
    section (its heartbeat register), mqtt the mqtt section (signed sink commands)."""
    errors = []
    ss = cfg["control"].get("sink_sources") or {}
    for name, part in (("modbus", "bms"), ("mqtt", "mqtt")):
        if ss.get(name) is not None and not cfg.get(part):
            errors.append("control.sink_sources.%s: needs a %s section (the source comes "
                          "through it)" % (name, part))
    return errors


class Inbox:
    def __init__(self, size=8, sink_sources=()):
        if type(size) is not int or size < 1:
            raise ValueError("inbox size must be an int >= 1")
        names = []
        limits = []
        for name, ms in sink_sources:
            if type(name) is not str or not 0 < len(name) <= 16 or name in names:
                raise ValueError("inbox: sink source %r: a name of 1..16 characters, once"
                                 % (name,))
            if (ms is None) != (name == BOARD) or not (ms is None or type(ms) is int
                                                       and ms > 0):
                raise ValueError("inbox: sink source %s: timeout_ms must be an int > 0 "
                                 "(None for the board's contact only)" % name)
            names.append(name)
            limits.append(ms)
        if len(names) > _MAX_SOURCES:
            raise ValueError("inbox: more than %d sink sources" % _MAX_SOURCES)
        self._names = tuple(names)  # the configured sink sources
        self._limits = tuple(limits)
        self.ticks_diff = ticks_diff  # the app sets its clock's
        self._src = [None] * size
        self._what = [None] * size
        self._val = [None] * size
        self._at = [None] * size
        self._head = 0  # next to drain
        self._n = 0
        self._maint = {}  # source -> True while it holds maintenance
        self._sink = {}  # source -> True/False: its sink statement
        self._sink_ms = {}  # source -> ticks of its last statement; None once silent
        self._pulse = 0  # configured sources (bits) that said False in the last drain
        self._pulse_other = []  # other sources that said False in the last drain
        self._other_off = False  # a source that is not configured says False
        self._dirty = True  # the *_by strings are made again at the next merge
        self._seen = (None, -1, -1, None)  # (board key, unavailable, silent, other off)
        self._none = []  # drain()'s shared empty result: read-only
        self._empty = (self._none, self._none)  # made once: returning it allocates nothing
        self.maintenance_by = None  # "board,console": who holds maintenance
        self.sink_by = None  # who makes the sink unavailable (or: the available sources)
        self.sink_silent = None  # the configured sources silent beyond their timeout

    def post(self, source, what, value=True, at_ms=None):
        """Queue a request; ValueError (nothing queued) if it is malformed, the inbox is
        full (the control task drains it every tick) or a 9th source would hold a state."""
        if type(source) is not str or not 0 < len(source) <= 16 or source == BOARD:
            raise ValueError("inbox: source must be a name of 1..16 characters other "
                             "than 'board', got %r" % (source,))
        if what == TRIP_RESET:
            value = True
        elif what not in WHATS:
            raise ValueError("inbox: unknown request %r; have %s" % (what, ", ".join(WHATS)))
        elif not (value is True or value is False or (value is None and what != MAINTENANCE)):
            raise ValueError("inbox: %s takes True%s, got %r"
                             % (what, " or False" if what == MAINTENANCE
                                else ", False or None", value))
        if at_ms is not None and type(at_ms) is not int:
            raise ValueError("inbox: at_ms must be ticks (an int) or None")
        size = len(self._src)
        j = self._n
        while j:  # the same as its newest queued request: nothing new but the time
            j -= 1
            k = (self._head + j) % size
            if self._src[k] == source and self._what[k] == what:
                if self._val[k] is value:
                    if at_ms is not None:
                        self._at[k] = at_ms
                    return
                break
        if what != TRIP_RESET and source not in self._maint and source not in self._sink:
            n = len(self._maint) + len(self._sink)
            for j in range(self._n):  # queued statements of other sources count too
                k = (self._head + j) % size
                if self._what[k] != TRIP_RESET and self._src[k] != source:
                    n += 1
            if n >= _MAX_SOURCES:
                raise ValueError("inbox: more than %d sources" % _MAX_SOURCES)
        if self._n >= size:
            raise ValueError("inbox: full (%d requests); try again next tick" % size)
        i = (self._head + self._n) % size
        self._src[i] = source
        self._what[i] = what
        self._val[i] = value
        self._at[i] = at_ms
        self._n += 1

    def queued(self, source):
        """How many requests of `source` wait in the inbox."""
        n = 0
        size = len(self._src)
        for j in range(self._n):
            if self._src[(self._head + j) % size] == source:
                n += 1
        return n

    def drain(self, now_ms=None):
        """Apply every queued request: (events, resets). events: a "request" event for
        each request that changed its source's state (a repeated one, a heartbeat, is
        none: it only renews its source's time); resets: the sources of posted latch
        resets, in order. Both are the same shared empty list when neither happened:
        treat them as read-only (a reset comes with fresh lists)."""
        if self._n == 0:
            if self._none:
                self._none.clear()
            return self._empty
        events = None
        resets = None
        size = len(self._src)
        sink = self._sink
        recount = False  # a statement of a source that is not configured came
        while self._n:
            i = self._head
            src, what, val = self._src[i], self._what[i], self._val[i]
            at = self._at[i]
            self._src[i] = self._what[i] = self._val[i] = self._at[i] = None
            self._head = (i + 1) % size
            self._n -= 1
            if what == TRIP_RESET:
                if resets is None:
                    resets = []
                resets.append(src)
                continue
            if what == MAINTENANCE:
                table = self._maint
                if val is False:
                    val = None  # released: the source holds nothing
            else:
                table = sink
                if src not in self._names:
                    recount = True
                if val is None:
                    self._sink_ms.pop(src, None)
                else:
                    if at is None or now_ms is not None and self.ticks_diff(now_ms, at) < 0:
                        at = now_ms  # a stamp from the future is no stamp
                    self._sink_ms[src] = at
                    if val is False:
                        if src in self._names:
                            self._pulse |= 1 << self._names.index(src)
                        else:
                            self._pulse_other.append(src)
                        self._dirty = True
            if table.get(src) is val or (val is None and src not in table):
                continue
            if val is None:
                del table[src]
            else:
                table[src] = val
            if events is None:
                events = []
            events.append({"kind": "request", "source": src, "what": what, "value": val})
            self._dirty = True
        if recount:
            off = False
            for k in sink:
                if sink[k] is False and k not in self._names:
                    off = True
            self._other_off = off
        if resets is not None:
            return events or [], resets
        if events is None:
            if self._none:
                self._none.clear()
            return self._empty
        return events, self._none

    def merge(self, inputs, board, now_ms=None):
        """Write the merged maintenance and sink_available into `inputs`, and who asked
        into its maintenance_by / sink_by / sink_silent (the fail-safe's events carry
        them); `board` maps board input names to their levels (a missing name: not
        wired); now_ms: the tick's time, against which remote sources fall silent."""
        bm = board.get(MAINTENANCE) is True
        inputs.maintenance = bm or bool(self._maint)
        names = self._names
        limits = self._limits
        sink_ms = self._sink_ms
        un = self._pulse
        si = 0
        i = 0
        n = len(names)
        while i < n:
            name = names[i]
            lim = limits[i]
            if lim is None:  # the board's contact
                if board.get(SINK_AVAILABLE) is not True:
                    un |= 1 << i
            else:
                t = sink_ms.get(name)
                if t is not None and (now_ms is None or self.ticks_diff(now_ms, t) > lim):
                    sink_ms[name] = None  # silent until it speaks again
                    t = None
                if t is None:
                    si |= 1 << i
                    un |= 1 << i
                elif self._sink.get(name) is not True:
                    un |= 1 << i
            i += 1
        off = self._other_off or len(self._pulse_other) > 0
        if un or off:
            inputs.sink_available = False
        else:
            inputs.sink_available = True if n else None
        seen = self._seen
        if self._dirty or seen[0] is not bm or seen[1] != un or seen[2] != si \
                or seen[3] is not off:
            self._describe(bm, un, si, off)  # only on a change: the steady state allocates nothing
        self._pulse = 0
        if self._pulse_other:
            self._pulse_other.clear()
        inputs.maintenance_by = self.maintenance_by
        inputs.sink_by = self.sink_by
        inputs.sink_silent = self.sink_silent

    def _describe(self, bm, un, si, off):
        self._seen = (bm, un, si, off)
        self._dirty = False
        who = sorted(self._maint)
        if bm:
            who.insert(0, BOARD)
        self.maintenance_by = ",".join(who) or None
        names = self._names
        if un or off:
            who = [names[i] for i in range(len(names)) if un >> i & 1]
            for k in self._sink:
                if self._sink[k] is False and k not in who:
                    who.append(k)
            for k in self._pulse_other:
                if k not in who:
                    who.append(k)
            who.sort()
        else:
            who = list(names)
        self.sink_by = ",".join(who) or None
        self.sink_silent = ",".join([names[i] for i in range(len(names))
                                     if si >> i & 1]) or None
