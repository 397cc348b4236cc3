"""Fuzz input for the technician console (heatgw.console), made in CPython, seeded.

    data, n = corpus(seed, lines=10_000)   # bytes as typed, how many lines it holds

Line kinds, mixed: commands from the console's table with random arguments; the same
with bytes flipped, inserted or deleted (binary included); random printable text; random
bytes; overlong lines; floods without an end of line; half lines that run into the next;
empty and blank lines; CR, LF and CRLF endings; backspaces; the REPL's Ctrl-A, B, D, E.
Never Ctrl-C (0x03: it stops the application, by design) and never a line that the
console would read as `yes` (the confirmation word: typed after a command that asks, it
is meant to change state) - `lines_as_read` models the console's line assembly to make
sure, backspaces and merged half lines included.
"""

import random

COMMANDS = ("help", "status", "sensors", "watch", "relay", "alarms", "ack", "log", "config",
            "calibrate", "maintenance", "selftest", "net", "mqtt", "safemode", "reboot",
            "factory-reset")
WORDS = ("on", "off", "clear", "get", "set", "save", "diff", "--help", "-h", "1", "0", "-1",
         "64", "65", "20", "999999999999999999999", "supply", "return", "sink_return",
         "it_coolant", "control.tick_ms", "mqtt.host", "node_id", "trip", "state", "no",
         "YES", "y", "Yes", "yeah", "channel", "two_point", "pair", "abort", "1385.0",
         "nan", "inf", "-0", "1e309", "'", '"', "\\", "%s", "%d", "{}", "[]", "null")
LINE_MAX = 120  # heatgw.console.LINE_MAX
CTRL_REPL = b"\x01\x02\x04\x05"
_ENDS = (b"\r", b"\n", b"\r\n")


def _binary(r, n):
    return bytes(b for b in r.randbytes(n) if b != 3)


def _line(r):
    k = r.random()
    if k < 0.30:  # a command with random arguments
        words = [r.choice(COMMANDS)] + [r.choice(WORDS) for _ in range(r.randrange(4))]
        return " ".join(words).encode()
    if k < 0.50:  # the same, mutated
        b = bytearray(" ".join([r.choice(COMMANDS)] + [r.choice(WORDS) for _ in
                                                       range(r.randrange(3))]).encode())
        for _ in range(r.randrange(1, 4)):
            op = r.randrange(3)
            i = r.randrange(len(b) + 1)
            if op == 0 and b:
                b[min(i, len(b) - 1)] = r.choice([x for x in range(256) if x != 3])
            elif op == 1:
                b[i:i] = _binary(r, r.randrange(1, 4))
            elif b:
                del b[min(i, len(b) - 1)]
        return bytes(b).replace(b"\r", b"").replace(b"\n", b"")
    if k < 0.62:  # printable text
        return bytes(r.randrange(32, 127) for _ in range(r.randrange(0, 100)))
    if k < 0.80:  # binary garbage
        return _binary(r, r.randrange(1, 200)).replace(b"\r", b"").replace(b"\n", b"")
    if k < 0.86:  # overlong
        return bytes(r.randrange(33, 127) for _ in range(r.randrange(LINE_MAX + 1, 2000)))
    if k < 0.88:  # a flood: garbage without an end of line for a while
        return _binary(r, r.randrange(2000, 8000)).replace(b"\r", b"").replace(b"\n", b"")
    if k < 0.93:  # blank
        return b" " * r.randrange(0, 5) + b"\t" * r.randrange(0, 2)
    if k < 0.96:  # backspaces
        b = r.choice(COMMANDS).encode()
        return b + b"\x08" * r.randrange(1, 6) + b"\x7f" * r.randrange(0, 3) + b"xy"
    return r.choice(COMMANDS).encode() + bytes([r.choice(CTRL_REPL)]) + b"status"


def lines_as_read(data, spans=None):
    """The lines heatgw.console assembles from `data` (str, or None for a line it
    refuses), as its _assemble does: CR, LF, CRLF end a line; tab is a space; backspace
    and DEL edit; Ctrl-A/B/D/E end the line as refused; other bytes, or more than
    LINE_MAX characters, refuse it. `spans`, a list: gets (start, end) of each line."""
    out = []
    cur = bytearray()
    bad = False
    cr = False
    start = 0
    for i, c in enumerate(data):
        if c in (10, 13):
            if c == 10 and cr:
                cr = False
                start = i + 1
                continue
            cr = c == 13
            out.append(None if bad else cur.decode())
            if spans is not None:
                spans.append((start, i))
            start = i + 1
            cur = bytearray()
            bad = False
            continue
        cr = False
        if 32 <= c < 127 or c == 9:
            if len(cur) < LINE_MAX:
                cur.append(32 if c == 9 else c)
            else:
                bad = True
        elif c in (8, 127):
            if cur and not bad:
                cur.pop()
        elif c in CTRL_REPL:
            out.append(None)
            if spans is not None:
                spans.append((start, i))
            start = i + 1
            cur = bytearray()
            bad = False
        else:
            bad = True
    return out


def corpus(seed, lines=10_000, skip=()):
    """(bytes as typed, the number of lines in it): `lines` generated lines, none read
    as the confirmation word and none holding it at all (so that input lost to a full
    ring cannot make one either); `skip`: commands left out."""
    r = random.Random(seed)
    parts = []
    while len(parts) < lines:
        body = _line(r).replace(b"yes", b"yEs")
        if skip and body.split(b" ")[0] in skip:
            continue
        end = b"" if r.random() < 0.03 else r.choice(_ENDS)  # 3 %: a half line
        parts.append(body + end)
    parts.append(b"\r")
    data = bytearray(b"".join(parts))
    spans = []
    read = lines_as_read(data, spans)
    for x, (a, b) in zip(read, spans, strict=True):
        if x is not None and x.strip() == "yes":  # never the confirmation word
            data[a:b] = data[a:b].replace(b"y", b"Y")
    data = bytes(data)
    read = lines_as_read(data)
    if any(x is not None and x.strip() == "yes" for x in read):
        raise AssertionError("the corpus holds the confirmation word")
    return data, len(read)
