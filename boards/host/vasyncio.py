"""Virtual time for asyncio on the host board.

The unix port's asyncio keeps its run queue in C (`_asyncio`), keyed by the real
`mp_hal_ticks_ms()`, so it cannot run on a virtual clock. This module gives `asyncio.core`
a run queue and Task written in Python against the same contract (Task.state / .data /
.ph_key, TaskQueue.push/pop/peek/remove), keyed by the board's virtual clock, and lets a
`wait(dt_ms)` callback decide how virtual time advances when every task is idle.
"""

import asyncio
from asyncio import core


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


def install(ticks_ms, ticks_diff, ticks_add, wait):
    """Run asyncio on a virtual clock; `wait(dt_ms)` is called when no task is runnable
    (dt_ms = -1: nothing scheduled) and must poll real I/O without blocking and move the
    clock forward by at most dt_ms."""
    core.ticks = ticks_ms
    core.ticks_diff = ticks_diff
    core.ticks_add = ticks_add
    core.Task = Task
    core.TaskQueue = TaskQueue
    core._task_queue = TaskQueue()
    io = core._io_queue
    poll = io.wait_io_event

    def wait_io_event(dt):
        poll(0)
        if dt != 0:
            wait(dt)

    io.wait_io_event = wait_io_event
    return asyncio
