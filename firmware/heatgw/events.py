"""Bounded event log on flash: every event is written the moment it happens.

    log = EventLog("/flash", per_file=32)
    seq = log.append({"kind": "state", "state": "bypass", "reason": "sink_unavailable"})
    log.events()        # the kept events, oldest first (read back from flash)
    for ev in log.each(): ...   # the same, one at a time

Two files, `events.0` and `events.1`, take turns: events are appended to the current one
until it holds `per_file`, then the other is truncated and becomes current. So between
`per_file` and `2 * per_file` of the newest events survive any reboot, and nothing of
the log stays in RAM (a 64 KB heap cannot spare it). One line per event:
`<json>\\t<crc32 of the json, 8 hex digits>\\n`; a line whose CRC does not match (a write
cut short by a power failure) is skipped when reading. `seq` numbers every event and
carries on across reboots (the highest kept seq + 1).
"""

import json

from heatgw.store import crc32

_NAMES = ("/events.0", "/events.1")


def _parse(line):
    """The event dict of one stored line, or None when torn or foreign."""
    try:
        text, crc = line.rstrip(b"\n").rsplit(b"\t", 1)
        if int(crc, 16) != crc32(text):
            return None
        ev = json.loads(text)
    except (ValueError, TypeError):
        return None
    if not isinstance(ev, dict) or not isinstance(ev.get("seq"), int):
        return None
    return ev


class EventLog:
    def __init__(self, directory, per_file=32):
        if per_file < 1:
            raise ValueError("per_file must be >= 1")
        self.per_file = per_file
        self.paths = (directory + _NAMES[0], directory + _NAMES[1])
        self.errors = 0  # appends that failed (flash full or failing): counted, not fatal
        last = [0, 0]
        counts = [0, 0]
        for i in (0, 1):
            for ev in self._read(i):
                counts[i] += 1
                last[i] = ev["seq"]
        self.current = 0 if last[0] >= last[1] else 1
        self.count = counts[self.current]
        self.next_seq = max(last) + 1

    def _read(self, i):
        try:
            f = open(self.paths[i], "rb")
        except OSError:
            return
        try:
            while True:
                line = f.readline()
                if not line:
                    return
                ev = _parse(line)
                if ev is not None:
                    yield ev
        finally:
            f.close()

    def append(self, event):
        """Stamp `seq`, write the event to flash, return the seq. Raises TypeError for an
        event that is not a JSON-serialisable dict; a flash error is counted in
        `errors` and the event is dropped (the control loop must not die of it)."""
        if not isinstance(event, dict):
            raise TypeError("an event is a dict")
        seq = self.next_seq
        event["seq"] = seq
        text = json.dumps(event).encode()
        self.next_seq = seq + 1
        mode = "ab"
        if self.count >= self.per_file:
            self.current ^= 1
            self.count = 0
            mode = "wb"  # the older file starts over
        try:
            f = open(self.paths[self.current], mode)
            try:
                f.write(text)
                f.write(b"\t%08x\n" % crc32(text))
            finally:
                f.close()
            self.count += 1
        except OSError:
            self.errors += 1
        return seq

    def events(self):
        """Every kept event, oldest first."""
        older = self.current ^ 1
        return list(self._read(older)) + list(self._read(self.current))

    def each(self):
        """Every kept event, oldest first, read from flash one at a time (the console
        shows 64 events without holding them in RAM)."""
        for i in (self.current ^ 1, self.current):
            yield from self._read(i)
