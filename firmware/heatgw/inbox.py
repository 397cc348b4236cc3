"""One inbox for every request to the fail-safe: pure logic, no I/O, no clock reads.

    inbox.post("console", "maintenance", True)   # any task; raises on a bad request
    events, resets = inbox.drain()                # the control task, every tick
    inbox.merge(inputs, board_levels)             # board inputs + remote requests

A request is (source, what, value); `source` is who asks ("console", "mqtt", "modbus",
...; "board" is the board's own inputs and cannot be posted). `what`:
- "maintenance", value True/False: that source holds (or releases) maintenance.
- "sink_available", value True/False/None: that source says the heat sink is (not)
  available; None withdraws its statement.
- "trip_reset", value True: a technician's latch reset (an edge; the value is ignored).

Merge, evaluated every tick so that the stricter side always wins:
- maintenance = the board's key OR any source holding maintenance;
- sink_available = False while any source says False; otherwise the board's contact;
  a source's True counts only where no contact is wired (board None), so the network can
  never override an open contact;
- trip_reset: the board's input is a level (the fail-safe detects its edge); a posted
  reset is returned by drain() for the control task to apply at once.

The queue is preallocated (post and drain allocate nothing in the steady state); a bad
or excess request raises ValueError and changes nothing. Runs on MicroPython and CPython.
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


class Inbox:
    def __init__(self, size=8):
        if type(size) is not int or size < 1:
            raise ValueError("inbox size must be an int >= 1")
        self._src = [None] * size
        self._what = [None] * size
        self._val = [None] * size
        self._head = 0  # next to drain
        self._n = 0
        self._maint = {}  # source -> True while it holds maintenance
        self._sink = {}  # source -> True/False: its sink statement
        self._off = False  # some source says the sink is unavailable
        self._on = False  # some source says it is available
        self._seen = None  # (board maintenance, board sink) the *_by strings were made for
        self._none = []  # drain()'s shared empty result: read-only
        self._empty = (self._none, self._none)  # made once: returning it allocates nothing
        self.maintenance_by = None  # "board,console": who holds maintenance
        self.sink_by = None  # who makes the sink unavailable (or available)

    def post(self, source, what, value=True):
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
        size = len(self._src)
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
        self._n += 1

    def drain(self):
        """Apply every queued request: (events, resets). events: a "request" event for
        each request that changed its source's state (a repeated one, a heartbeat, is
        none); resets: the sources of posted latch resets, in order. Both are the same
        shared empty list when nothing was queued: treat them as read-only."""
        if self._n == 0:
            if self._none:
                self._none.clear()
            return self._empty
        events = []
        resets = []
        size = len(self._src)
        while self._n:
            i = self._head
            src, what, val = self._src[i], self._what[i], self._val[i]
            self._src[i] = self._what[i] = self._val[i] = None
            self._head = (i + 1) % size
            self._n -= 1
            if what == TRIP_RESET:
                resets.append(src)
                continue
            table = self._maint if what == MAINTENANCE else self._sink
            if val is False and what == MAINTENANCE:
                val = None  # released: the source holds nothing
            if table.get(src) == val:
                continue
            if val is None:
                del table[src]
            else:
                table[src] = val
            events.append({"kind": "request", "source": src, "what": what, "value": val})
            self._seen = None  # the *_by strings are made again at the next merge
        self._off = False in self._sink.values()
        self._on = True in self._sink.values()
        return events, resets

    def merge(self, inputs, board):
        """Write the merged maintenance and sink_available into `inputs`, and who asked
        into its maintenance_by / sink_by (the fail-safe's events carry them); `board`
        maps board input names to their levels (a missing name: not wired)."""
        bm = board.get(MAINTENANCE) is True
        bs = board.get(SINK_AVAILABLE)
        inputs.maintenance = bm or bool(self._maint)
        if self._off:
            inputs.sink_available = False
        elif bs is None:
            inputs.sink_available = True if self._on else None
        else:
            inputs.sink_available = bs is True
        seen = self._seen
        if seen is None or seen[0] is not bm or seen[1] is not bs:
            self._describe(bm, bs)  # only on a change: the steady state allocates nothing
        inputs.maintenance_by = self.maintenance_by
        inputs.sink_by = self.sink_by

    def _describe(self, bm, bs):
        self._seen = (bm, bs)
        who = sorted(self._maint)
        if bm:
            who.insert(0, BOARD)
        self.maintenance_by = ",".join(who) or None
        if self._off:
            who = sorted(k for k in self._sink if not self._sink[k])
        elif bs is None:
            who = sorted(self._sink)
        else:
            who = [BOARD]
        self.sink_by = ",".join(who) or None
