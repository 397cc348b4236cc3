"""A bounded ring of events (JSON-serialisable dicts) whose numbering survives a reboot.

EventLog(capacity=32)
    append(event) -> seq   stores a copy of the dict with "seq" set; seq increases by one
                           per event for the life of the device (restore() carries it over)
    events()               the kept events, oldest first (copies of the list, same dicts)
    dropped                events pushed out because the ring was full
    to_state()             {"next_seq": int, "dropped": int, "events": [...]}
    restore(state)         takes a to_state() dict; garbage never raises: each field that
                           is unusable starts empty, and next_seq never goes below an
                           event already kept, so numbers are never reused

Events are kept as their compact JSON text (bytes), not as dicts: 32 events cost ~7 KB
instead of ~22 KB of a small heap, and `state_parts()` hands them to the store as they
are.

Pure logic: no clock, no I/O; runs on MicroPython and CPython.
"""

import json

_SEP = (",", ":")  # compact JSON: the kept text is ~10 % smaller


def _count(v):
    # A non-negative int that is not a bool.
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


class EventLog:
    def __init__(self, capacity=32):
        if not _count(capacity) or capacity < 1:
            raise ValueError("capacity must be a positive int")
        self.capacity = capacity
        self.next_seq = 1
        self.dropped = 0
        self._events = []

    def append(self, event):
        if not isinstance(event, dict):
            raise TypeError("an event is a dict")
        seq = self.next_seq
        ev = dict(event)
        ev["seq"] = seq
        text = json.dumps(ev, separators=_SEP).encode()  # TypeError/ValueError: not JSON
        self.next_seq = seq + 1
        if len(self._events) >= self.capacity:
            self._events.pop(0)
            self.dropped += 1
        self._events.append(text)
        return seq

    def events(self):
        return [json.loads(t) for t in self._events]

    def __len__(self):
        return len(self._events)

    def to_state(self):
        return {"next_seq": self.next_seq, "dropped": self.dropped,
                "events": self.events()}

    def state_parts(self):
        """to_state() as JSON, in bytes parts (the kept events are not copied)."""
        parts = [('{"next_seq": %d, "dropped": %d, "events": ['
                  % (self.next_seq, self.dropped)).encode()]
        for i, text in enumerate(self._events):
            if i:
                parts.append(b", ")
            parts.append(text)
        parts.append(b"]}")
        return parts

    def restore(self, state):
        self.next_seq = 1
        self.dropped = 0
        self._events = []
        if not isinstance(state, dict):
            return
        evs = state.get("events")
        kept = []
        last = 0
        if isinstance(evs, list):
            for ev in evs:
                # Keep well-formed events in increasing seq order; skip the rest.
                if isinstance(ev, dict) and _count(ev.get("seq")) and ev["seq"] > last:
                    kept.append(ev)
                    last = ev["seq"]
        extra = len(kept) - self.capacity
        if extra > 0:  # a smaller ring than before: keep the newest
            kept = kept[extra:]
        self._events = [json.dumps(ev, separators=_SEP).encode() for ev in kept]
        dropped = state.get("dropped")
        self.dropped = dropped if _count(dropped) else 0
        if extra > 0:
            self.dropped += extra
        nxt = state.get("next_seq")
        self.next_seq = max(nxt if _count(nxt) else 1, last + 1, 1)
