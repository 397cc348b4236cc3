"""Virtual time for asyncio on the host board.

The unix port's asyncio keeps its run queue in C (`_asyncio`), keyed by the real
`mp_hal_ticks_ms()`, so it cannot run on a virtual clock. This module gives `asyncio.core`
a run queue and Task written in Python against the same contract (Task.state / .data /
.ph_key, TaskQueue.push/pop/peek/remove), keyed by the board's virtual clock, and lets a
`wait(dt_ms)` callback decide how virtual time advances when every task is idle.

Real sockets in virtual time (README, host board). A peer (broker, Modbus server, a pty)
answers in real time, so while a reply is awaited virtual time follows real time:
- after the node sends (asyncio Stream.write, a stream ready for writing, or `sent()`),
  a reply is awaited for up to REPLY_MS real; after data arrives, more of it for
  GRACE_MS real (the rest of a reply in several segments);
- while a reply is awaited, virtual time advances by the real time elapsed (never past
  the next deadline), so a peer answering in 100 ms real takes 100 ms virtual;
- once nothing arrived within the window, virtual time jumps to the next deadline as
  without sockets: a dead peer's 30 s timeout costs REPLY_MS real, an idle open socket
  costs nothing;
- pipelined requests: data that came answers one of them, not all. A client that knows
  what it still awaits says so (`awaits(fn)`, the board's `awaits_replies`): when the
  grace after data ends and fn() is true, the window stays open for REPLY_MS after that
  data (MQTT: three SUBACKs arrive while the first PUBLISH's PUBACK is still due);
- bound: a peer that trickles or floods data keeps the window open, and virtual time
  then runs at real time, never slower: its timeouts fire on time.
- a server's clients talk first (a BMS polling the node's Modbus server): a server
  registers its sockets (`serving(sock, kind)`, the board's io_serving). What arrives on
  them is a request, never a reply: it opens no window. While a client is connected,
  virtual time runs at most LEAD_MS ahead of the last request (or connect) heard from a
  client, then follows real time until the next one: a healthy client polling every P
  real ms is seen every P + LEAD_MS virtual ms at most, and a connected idle client
  holds the clock to real time instead of letting it run away (LEAD_MS = 0: real time
  while a client is connected).
Without registered streams nothing of this runs: time is as deterministic as before.
"""

import asyncio
import os
import sys
import time
from asyncio import core

from micropython import const

REPLY_MS = const(500)  # real ms a healthy peer may take to start answering what was sent
GRACE_MS = const(10)  # real ms between the parts of one reply
LEAD_MS = const(0)  # virtual ms a server may run ahead of its connected clients' last word
_IDLE_MAX_MS = const(1000)  # no deadline at all: real wait per turn, virtual follows
_IN = const(1)  # select.POLLIN
_OUT = const(4)  # select.POLLOUT

_open = False  # a reply is awaited: virtual time follows real time
_until = 0  # real ticks_ms: the window ends then
_mark = 0  # real ticks_ms up to which the real time is counted in virtual time
_reply_ms = REPLY_MS
_grace_ms = GRACE_MS
_graced = False  # the window was last set by data that came (grace), not by a send
_awaits = []  # callables: True while their client still awaits a reply (awaits())
_served = []  # a server's sockets (serving()): what they receive is a request
_conns = []  # the accepted connections among them: a client is connected
_lead_ms = LEAD_MS
_heard = 0  # virtual ticks of the last request (or connect) a server heard
_leadwin = False  # the window is open only because the lead is used up


def _expect(ms, graced=False):
    # Open the window, or move its end, to real now + ms: a send awaits a reply
    # (REPLY_MS), data that came (the reply has started) shortens it to the grace.
    global _open, _until, _mark, _graced, _leadwin
    _leadwin = False
    now = time.ticks_ms()
    if not _open:
        _open = True
        _mark = now
    _until = time.ticks_add(now, ms)
    _graced = graced


def awaits(fn):
    """Register fn(): True while its client awaits a reply it has asked for. Checked when
    the grace after data ends, after the tasks have read that data. A client that writes
    through asyncio streams imports asyncio.stream before it registers, so Stream.write is
    hooked before its first write too (a CONNECT written before any stream waited would
    open no reply window); one that waits on the poller before each write (heatgw.mqtt)
    needs no stream, and the node then holds none of asyncio.stream (1.7 KB)."""
    _awaits.append(fn)
    _hook_write()


def _awaited():
    for fn in _awaits:
        if fn():
            return True
    return False


def sent():
    """The node sent something its peer will answer (for code writing to a raw socket:
    asyncio streams call this themselves)."""
    _expect(_reply_ms)


def serving(sock, kind):
    """A server's socket: kind "listen" (accepting) or "conn" (a client's connection),
    None once closed. Data on it is a request (no reply window); while a connection is
    registered, virtual time runs at most the lead ahead of the last request heard."""
    global _heard
    for lst in (_served, _conns):
        i = len(lst)
        while i:
            i -= 1
            if lst[i] is sock:
                lst.pop(i)
    if kind is not None:
        _served.append(sock)
        if kind == "conn":
            _conns.append(sock)
            _heard = core.ticks()


def _jump(dt):
    # How far virtual time may jump now (at most dt): all of it without a connected
    # client; else what is left of the lead after the last request heard.
    if not _conns:
        return dt
    left = _lead_ms - core.ticks_diff(core.ticks(), _heard)
    if left <= 0:
        return 0
    return dt if dt < left else left


def _served_by(s):
    for x in _served:
        if x is s:
            return True
    return False


class TaskQueue:
    """Tasks ordered by ph_key (ticks), FIFO among equal keys. A sorted list: the
    application has a handful of tasks, so O(n) insertion costs less than a heap."""

    def __init__(self):
        self._q = []

    def peek(self):
        q = self._q
        return q[0] if q else None

    def push(self, task, key=None):
        task.ph_key = core.ticks() if key is None else key
        task.data = None  # the contract: a queued task waits on nothing else
        q = self._q
        diff = core.ticks_diff
        i = len(q)
        while i and diff(q[i - 1].ph_key, task.ph_key) > 0:
            i -= 1
        q.insert(i, task)

    def pop(self):
        return self._q.pop(0)

    def remove(self, task):
        self._q.remove(task)


class Task:
    """A coroutine scheduled on the queue; `state` follows asyncio.core's contract: True
    while running with nobody waiting, a TaskQueue of waiters, a callable (gather), False
    or None when done."""

    def __init__(self, coro, globals=None):
        self.coro = coro
        self.data = None
        self.state = True
        self.ph_key = 0

    def __iter__(self):
        if not self.state:
            self.state = False  # finished: mark the result as awaited
        elif self.state is True:
            self.state = TaskQueue()
        elif type(self.state) is not TaskQueue:
            raise RuntimeError("can't wait")
        return self

    def __next__(self):
        if not self.state:
            raise self.data
        self.state.push(core.cur_task)
        core.cur_task.data = self

    def done(self):
        return not self.state

    def cancel(self):
        if not self.state:
            return False
        if self is core.cur_task:
            raise RuntimeError("can't cancel self")
        while isinstance(self.data, Task):
            self = self.data
        if hasattr(self.data, "remove"):
            self.data.remove(self)  # waiting on another queue: move it to the run queue
            core._task_queue.push(self)
        elif core.ticks_diff(self.ph_key, core.ticks()) > 0:
            core._task_queue.remove(self)  # sleeping: bring it forward to now
            core._task_queue.push(self)
        self.data = core.CancelledError
        return True


_wait = None  # the board's wait(dt_ms)
_write = None  # asyncio.stream.Stream.write, once hooked


def _dispatch():
    # asyncio's own IOQueue.wait_io_event(0), also saying what came: a stream ready for
    # writing opens the reply window, data (or an error) shortens it to the grace; on a
    # server's socket (serving()) it is a request: the lead starts again.
    global _heard
    io = core._io_queue
    q = core._task_queue
    for s, ev in io.poller.ipoll(0):
        sm = io.map[id(s)]
        if ev & ~_OUT and sm[0] is not None:
            q.push(sm[0])
            sm[0] = None
        if ev & ~_IN and sm[1] is not None:
            q.push(sm[1])
            sm[1] = None
        if sm[0] is None and sm[1] is None:
            io._dequeue(s)
        else:
            io.poller.modify(s, _OUT if sm[0] is None else _IN)
        if _served and _served_by(s):
            if _open:
                _follow()  # the real time until this request, first
            _heard = core.ticks()
        elif ev == _OUT:
            _expect(_reply_ms)
        else:
            _expect(_grace_ms, True)


def _follow():
    # Count the real time since the mark in virtual time, never past the next deadline.
    global _mark
    now = time.ticks_ms()
    el = time.ticks_diff(now, _mark)
    _mark = now
    t = core.ticks()
    for task in core._task_queue._q:
        d = core.ticks_diff(task.ph_key, t)
        if d > 0:  # the first task after now (the queue is in time order)
            if d < el:
                el = d
            break
    if el > 0:
        _wait(el)


def _wait_io_event(dt):
    global _open, _leadwin
    io = core._io_queue
    _dispatch()
    if not io.map and not _open:
        if dt != 0:
            _wait(dt)  # no real I/O: virtual time only, deterministic
        return
    if _open:
        _follow()
        if _leadwin and _jump(1) > 0:
            _open = _leadwin = False  # a client spoke (or left): the lead again
        elif time.ticks_diff(_until, _mark) <= 0:
            if _graced and _awaited():  # more replies are due: wait for them as for any
                _expect(_reply_ms - _grace_ms)
            else:
                _open = False  # nothing came in time: a dead or idle peer
    t = core._task_queue.peek()
    if dt == 0 or t is not None and core.ticks_diff(t.ph_key, core.ticks()) <= 0:
        return  # runnable now
    if not io.map:
        _open = False
        _wait(dt)
        return
    if not _open:
        if dt > 0:
            j = _jump(dt)
            if j > 0:
                _wait(j)  # no reply awaited: time jumps (up to a connected client's lead)
                return
            _expect(dt)  # a client is connected and the lead is used up: real time
            _leadwin = True
        else:
            _expect(_IDLE_MAX_MS)  # nothing scheduled: only a peer can wake the node
    ms = time.ticks_diff(_until, _mark)
    if 0 < dt < ms:
        ms = dt
    for _ in io.poller.ipoll(ms):
        break  # something came: _follow() counts the wait, _dispatch() serves it
    _follow()
    _dispatch()


def _stream_write(self, buf):
    _write(self, buf)
    _expect(_reply_ms)


_last = None  # the socket last made prompt (no Nagle)


def _hook_write():
    # A stream's write usually goes out at once, never waiting on the poller, so
    # Stream.write itself says "sent". Hooked once asyncio.stream is loaded (not before:
    # importing it costs 1.9 KB of heap): when a client registers (awaits) or, for code
    # that does not, where every stream waits.
    global _write
    if _write is None:
        m = sys.modules.get("asyncio.stream")
        if m is not None:
            _write = m.Stream.write
            m.Stream.write = _stream_write


def _enqueue(s, idx):
    global _last
    _hook_write()
    if s is not _last:
        # No Nagle on the node's side: a small write after one the peer does not answer
        # (an MQTT QoS 0 publish) would wait for the peer's delayed ACK, ~40 ms, a gap
        # a target absorbs in real time but GRACE_MS here reads as a dead peer.
        _last = s
        try:
            s.setsockopt(6, 1, 1)  # IPPROTO_TCP, TCP_NODELAY
        except (AttributeError, OSError):
            pass  # not TCP, or TLS-wrapped (no setsockopt)
    type(core._io_queue)._enqueue(core._io_queue, s, idx)


def _ms(value, env, default):
    if value is None:
        value = int(os.getenv(env) or default)
    if not 0 <= value < 60_000:
        raise ValueError("%s: %d ms is not in 0..59999" % (env, value))
    return value


def install(ticks_ms, ticks_diff, ticks_add, wait, reply_ms=None, grace_ms=None,
            lead_ms=None):
    """Run asyncio on a virtual clock; `wait(dt_ms)` is called when no task is runnable
    (dt_ms = -1: nothing scheduled) and must poll real I/O without blocking and move the
    clock forward by at most dt_ms. reply_ms / grace_ms: the real-time windows above
    (default: $HEATGW_IO_REPLY_MS / $HEATGW_IO_GRACE_MS, else REPLY_MS / GRACE_MS);
    lead_ms: a server's lead over its clients (default $HEATGW_IO_LEAD_MS, else LEAD_MS)."""
    global _wait, _reply_ms, _grace_ms, _lead_ms
    _wait = wait
    _reply_ms = _ms(reply_ms, "HEATGW_IO_REPLY_MS", REPLY_MS)
    _grace_ms = _ms(grace_ms, "HEATGW_IO_GRACE_MS", GRACE_MS)
    _lead_ms = _ms(lead_ms, "HEATGW_IO_LEAD_MS", LEAD_MS)
    core.ticks = ticks_ms
    core.ticks_diff = ticks_diff
    core.ticks_add = ticks_add
    core.Task = Task
    core.TaskQueue = TaskQueue
    core._task_queue = TaskQueue()
    io = core._io_queue
    io.wait_io_event = _wait_io_event
    io._enqueue = _enqueue
    return asyncio
