"""Strict JSON: accept exactly the texts CPython's json.loads accepts, so that the node and
the host tools judge a configuration file alike.

    err, pairs = check(raw)     # raw: the file's bytes (UTF-8, without a BOM)
    if err is None and pairs:   # escaped surrogate pairs: CPython joins them, MicroPython
        raw = join_pairs(raw)   # keeps two characters; joined here, both read one

MicroPython's json is lenient: it takes missing and doubled commas ('[1 2,,3]' gives
[1, 2, 3]), trailing commas, leading zeros, '1.', unknown escapes ('\\x' gives 'x') and
invalid UTF-8 (surrogates, overlong forms). A single flipped byte can so turn
'"sink_return_max_c": 40.0,' into '40.05' and the node would take it. check() runs before
MicroPython's json.loads and refuses all of that, with the position:
"line 12 column 5: expected ',' or '}' after a member".

The grammar is RFC 8259 as CPython reads it with the defaults (strict=True): whitespace is
space, tab, LF, CR; no control character in a string; escapes \\" \\\\ \\/ \\b \\f \\n \\r \\t
\\uXXXX; numbers -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?; the text is strict UTF-8
(no surrogates, no overlong forms, nothing above U+10FFFF). Two differences, neither
changes a verdict on a configuration: NaN, Infinity and -Infinity (CPython reads them, the
schema refuses every non-finite number anyway) are refused here; nesting deeper than
MAX_DEPTH (no configuration nests more than 3) is refused, never recursed into.

No recursion and no allocation while scanning (an error allocates its message). Runs
unchanged on MicroPython and CPython. Loaded on demand (heatgw.config at boot and at a
configuration save) and dropped again.
"""

MAX_DEPTH = 16


class _Bad(Exception):
    pass


def _ws(buf, i, n):
    while i < n:
        c = buf[i]
        if c != 0x20 and c != 0x0A and c != 0x0D and c != 0x09:
            return i
        i += 1
    return i


def _hex4(buf, i, n):
    """The value of 4 hex digits at i, or -1."""
    if i + 4 > n:
        return -1
    v = 0
    for j in range(i, i + 4):
        c = buf[j]
        if 0x30 <= c <= 0x39:
            d = c - 0x30
        elif 0x61 <= c <= 0x66:
            d = c - 0x57
        elif 0x41 <= c <= 0x46:
            d = c - 0x37
        else:
            return -1
        v = v * 16 + d
    return v


def _cont(buf, i, n, lo, hi, more):
    """Check a UTF-8 sequence's continuation bytes from i: the first in lo..hi, then `more`
    in 0x80..0xBF. The index after them."""
    if i >= n or not lo <= buf[i] <= hi:
        raise _Bad(i, "invalid UTF-8")
    i += 1
    while more:
        if i >= n or not 0x80 <= buf[i] <= 0xBF:
            raise _Bad(i, "invalid UTF-8")
        i += 1
        more -= 1
    return i


def _string(buf, i, n):
    """Scan the string whose opening quote is at i: (index after it, escaped pairs)."""
    pairs = 0
    i += 1
    while True:
        if i >= n:
            raise _Bad(i, "unterminated string")
        c = buf[i]
        if c == 0x22:  # "
            return i + 1, pairs
        if c == 0x5C:  # backslash
            e = buf[i + 1] if i + 1 < n else 0
            if e in b'"\\/bfnrt':
                i += 2
                continue
            if e != 0x75:  # u
                raise _Bad(i, "invalid escape in a string")
            v = _hex4(buf, i + 2, n)
            if v < 0:
                raise _Bad(i, "\\u needs 4 hex digits")
            i += 6
            # CPython joins a high surrogate and a low one that follows as an escape
            if 0xD800 <= v <= 0xDBFF and i + 1 < n and buf[i] == 0x5C and \
                    buf[i + 1] == 0x75 and 0xDC00 <= _hex4(buf, i + 2, n) <= 0xDFFF:
                pairs += 1
                i += 6
        elif c < 0x20:
            raise _Bad(i, "control character in a string (write it as an escape)")
        elif c < 0x80:
            i += 1
        elif 0xC2 <= c <= 0xDF:
            i = _cont(buf, i + 1, n, 0x80, 0xBF, 0)
        elif c == 0xE0:
            i = _cont(buf, i + 1, n, 0xA0, 0xBF, 1)
        elif c == 0xED:  # U+D800..U+DFFF are not characters
            i = _cont(buf, i + 1, n, 0x80, 0x9F, 1)
        elif 0xE1 <= c <= 0xEF:
            i = _cont(buf, i + 1, n, 0x80, 0xBF, 1)
        elif c == 0xF0:
            i = _cont(buf, i + 1, n, 0x90, 0xBF, 2)
        elif 0xF1 <= c <= 0xF3:
            i = _cont(buf, i + 1, n, 0x80, 0xBF, 2)
        elif c == 0xF4:  # up to U+10FFFF
            i = _cont(buf, i + 1, n, 0x80, 0x8F, 2)
        else:
            raise _Bad(i, "invalid UTF-8")


def _digits(buf, i, n):
    """The index after one or more digits at i."""
    if i >= n or not 0x30 <= buf[i] <= 0x39:
        raise _Bad(i, "expected a digit")
    i += 1
    while i < n and 0x30 <= buf[i] <= 0x39:
        i += 1
    return i


def _number(buf, i, n):
    if buf[i] == 0x2D:  # -
        i += 1
    if i < n and buf[i] == 0x30:  # a single 0, never 01
        i += 1
    else:
        i = _digits(buf, i, n)
    if i < n and buf[i] == 0x2E:  # .
        i = _digits(buf, i + 1, n)
    if i < n and (buf[i] == 0x65 or buf[i] == 0x45):  # e E
        i += 1
        if i < n and (buf[i] == 0x2B or buf[i] == 0x2D):
            i += 1
        i = _digits(buf, i, n)
    return i


def _word(buf, i, n, word):
    for j in range(len(word)):
        if i + j >= n or buf[i + j] != word[j]:
            raise _Bad(i, "expected a value")
    return i + len(word)


def _scan(buf):
    n = len(buf)
    stack = bytearray(MAX_DEPTH)  # the open containers: 0x7B { or 0x5B [
    depth = 0
    pairs = 0
    i = _ws(buf, 0, n)
    while True:
        # a value at i
        if i >= n:
            raise _Bad(i, "expected a value")
        c = buf[i]
        if c == 0x7B or c == 0x5B:
            if depth == MAX_DEPTH:
                raise _Bad(i, "nested deeper than %d" % MAX_DEPTH)
            stack[depth] = c
            depth += 1
            i = _ws(buf, i + 1, n)
            if i < n and buf[i] == c + 2:  # {} or []
                depth -= 1
                i += 1
            elif c == 0x7B:
                i, pairs = _key(buf, i, n, pairs)
                continue
            else:
                continue
        elif c == 0x22:
            i, p = _string(buf, i, n)
            pairs += p
        elif c == 0x2D or 0x30 <= c <= 0x39:
            if c == 0x2D and i + 1 < n and buf[i + 1] == 0x49:  # -Infinity
                raise _Bad(i, "NaN and Infinity are not finite numbers")
            i = _number(buf, i, n)
        elif c == 0x74:
            i = _word(buf, i, n, b"true")
        elif c == 0x66:
            i = _word(buf, i, n, b"false")
        elif c == 0x6E:
            i = _word(buf, i, n, b"null")
        elif c == 0x4E or c == 0x49:  # NaN, Infinity: CPython reads them
            raise _Bad(i, "NaN and Infinity are not finite numbers")
        else:
            raise _Bad(i, "expected a value")
        # after a value: close containers, or a comma and the next member
        while True:
            i = _ws(buf, i, n)
            if depth == 0:
                if i < n:
                    raise _Bad(i, "extra data after the JSON value")
                return pairs
            top = stack[depth - 1]
            c = buf[i] if i < n else 0
            if c == top + 2:  # } or ]
                depth -= 1
                i += 1
                continue
            if c != 0x2C:
                raise _Bad(i, "expected ',' or '%s'" % ("}" if top == 0x7B else "]"))
            i = _ws(buf, i + 1, n)
            if top == 0x7B:
                i, pairs = _key(buf, i, n, pairs)
            break


def _key(buf, i, n, pairs):
    """A member's key and its colon at i: (index of the value, pairs)."""
    if i >= n or buf[i] != 0x22:
        raise _Bad(i, "expected a key in double quotes")
    i, p = _string(buf, i, n)
    i = _ws(buf, i, n)
    if i >= n or buf[i] != 0x3A:
        raise _Bad(i, "expected ':' after a key")
    return _ws(buf, i + 1, n), pairs + p


def _where(buf, i):
    line = 1
    start = 0
    for j in range(min(i, len(buf))):
        if buf[j] == 0x0A:
            line += 1
            start = j + 1
    return "line %d column %d" % (line, i - start + 1)


def check(buf):
    """(None, pairs) when buf (bytes) is a JSON text CPython accepts, pairs the number of
    escaped surrogate pairs in its strings; else ("line L column C: why", 0)."""
    try:
        return None, _scan(buf)
    except _Bad as e:
        return "%s: %s" % (_where(buf, e.args[0]), e.args[1]), 0


def join_pairs(buf):
    """buf (a checked text) with every escaped surrogate pair written as the one character
    it stands for (4 bytes of UTF-8), as CPython reads it."""
    out = bytearray()
    n = len(buf)
    i = 0
    instr = False
    while i < n:
        c = buf[i]
        if c == 0x22:
            instr = not instr
        elif instr and c == 0x5C:
            hi = _hex4(buf, i + 2, n) if buf[i + 1] == 0x75 else -1
            lo = _hex4(buf, i + 8, n) if 0xD800 <= hi <= 0xDBFF and i + 7 < n and \
                buf[i + 6] == 0x5C and buf[i + 7] == 0x75 else -1
            if 0xDC00 <= lo <= 0xDFFF:
                cp = 0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
                out.append(0xF0 | cp >> 18)
                out.append(0x80 | (cp >> 12) & 0x3F)
                out.append(0x80 | (cp >> 6) & 0x3F)
                out.append(0x80 | cp & 0x3F)
                i += 12
                continue
            out.append(c)  # any other escape: copied with the character it escapes
            out.append(buf[i + 1])
            i += 2
            continue
        out.append(c)
        i += 1
    return bytes(out)
