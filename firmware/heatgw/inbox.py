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

MAINTENANCE = "maintenance"
SINK_AVAILABLE = "sink_available"
TRIP_RESET = "trip_reset"
WHATS = (MAINTENANCE, SINK_AVAILABLE, TRIP_RESET)
BOARD = "board"
_MAX_SOURCE = 16  # characters in a source name
_MAX_SOURCES = 8  # distinct sources holding a state (maintenance, sink statement)


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
        self._board_maint = None  # the board levels the descriptions were made for
        self._board_sink = 0  # (0: none yet; None is a valid "not wired")
        self._remote_off = False  # some source says the sink is unavailable
        self._remote_on = False  # some source says it is available
        self._none = []  # drain()'s shared empty result: read-only
        self._empty = (self._none, self._none)  # a tuple made once: returning allocates not
        self.maintenance_by = None  # "board,console": who holds maintenance
        self.sink_by = None  # who makes the sink unavailable (or available)

    def post(self, source, what, value=True):
        """Queue a request; ValueError (nothing queued) if it is malformed or the inbox
        is full (the control task drains it every tick)."""
        if type(source) is not str or not source or len(source) > _MAX_SOURCE:
            raise ValueError("inbox: source must be a name of 1..%d characters, got %r"
                             % (_MAX_SOURCE, source))
        if source == BOARD:
            raise ValueError("inbox: source 'board' is the board's own inputs")
        if what not in WHATS:
            raise ValueError("inbox: unknown request %r; have %s" % (what, ", ".join(WHATS)))
        if what == MAINTENANCE and value is not True and value is not False:
            raise ValueError("inbox: maintenance takes True or False, got %r" % (value,))
        if what == SINK_AVAILABLE and value is not True and value is not False \
                and value is not None:
            raise ValueError("inbox: sink_available takes True, False or None, got %r"
                             % (value,))
        if what == TRIP_RESET:
            value = True
        size = len(self._src)
        if what != TRIP_RESET:
            known = self._holders()
            if source not in known and len(known) >= _MAX_SOURCES:
                raise ValueError("inbox: more than %d sources" % _MAX_SOURCES)
        if self._n >= size:
            raise ValueError("inbox: full (%d requests); try again next tick" % size)
        i = (self._head + self._n) % size
        self._src[i] = source
        self._what[i] = what
        self._val[i] = value
        self._n += 1

    def _holders(self):
        # sources holding a state, or about to (queued); resets hold nothing
        s = list(self._maint)
        for k in self._sink:
            if k not in s:
                s.append(k)
        size = len(self._src)
        for j in range(self._n):
            i = (self._head + j) % size
            k = self._src[i]
            if self._what[i] != TRIP_RESET and k not in s:
                s.append(k)
        return s

    def pending(self):
        return self._n

    def drain(self):
        """Apply every queued request: (events, resets). events: a "request" event for
        each request that changed its source's state; resets: the sources of posted
        latch resets, in order. Both are the same shared empty list when nothing was
        queued: treat them as read-only."""
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
            old = table.get(src)
            if what == MAINTENANCE and not val:
                val = None  # released: the source holds nothing
            if old == val:
                continue  # a repeated statement (a heartbeat) is no event
            if val is None:
                del table[src]
            else:
                table[src] = val
            events.append({"kind": "request", "source": src, "what": what, "value": val})
            self._board_sink = 0  # descriptions are made again at the next merge
        self._remote_off = False in self._sink.values()
        self._remote_on = True in self._sink.values()
        return events, resets

    def merge(self, inputs, board):
        """Write the merged maintenance and sink_available into `inputs` (and who asked
        into `maintenance_by` / `sink_by`, which the fail-safe's events carry); `board`
        maps board input names to their levels (a missing name: not wired)."""
        bm = board.get(MAINTENANCE) is True
        bs = board.get(SINK_AVAILABLE)
        remote_off = self._remote_off
        remote_on = self._remote_on
        inputs.maintenance = bm or bool(self._maint)
        if remote_off:
            sink = False
        elif bs is None:
            sink = True if remote_on else None
        else:
            sink = bs is True
        inputs.sink_available = sink
        if bm is not self._board_maint or bs is not self._board_sink:
            self._describe(bm, bs, remote_off)
        inputs.maintenance_by = self.maintenance_by
        inputs.sink_by = self.sink_by

    def _describe(self, bm, bs, remote_off):
        # Only when a level or a request changed: the steady state allocates nothing.
        self._board_maint = bm
        self._board_sink = bs
        who = [BOARD] if bm else []
        who.extend(sorted(self._maint))
        self.maintenance_by = ",".join(who) if who else None
        if remote_off:
            who = sorted(k for k, v in self._sink.items() if not v)
        elif bs is None:
            who = sorted(self._sink)
        else:
            who = [BOARD]
        self.sink_by = ",".join(who) if who else None
