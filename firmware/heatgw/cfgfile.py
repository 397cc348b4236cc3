"""The configuration file on flash, without its schema: read, parse, write, keep.

    raw, err = read(path)            # bytes (BOM dropped), size-limited; or the error
    doc, err, sealed = parse(raw, path)   # seal checked, strict JSON, "sha256" removed
    write(path, data)                # path.new, then a rename: atomic on littlefs
    err = keep_good(path, sealed)    # path.good: the sealed copy of path, if it changed
    text(doc), dumps(value)          # the canonical text the node and provisioning write

heatgw.config (the boot), heatgw.cfgedit (the console, MQTT config_set) and the host tools
share these; none of them needs the schema, so a running node that saves its
configuration does not load heatgw.config (which builds DEFAULT from the whole schema).
Runs unchanged on MicroPython and CPython.
"""

import json
import os

from heatgw.seal import (
    HEAD,
    seal,  # noqa: F401 - cfgfile.seal: the writers' name for it
)
from heatgw.seal import check as unseal

MAX_BYTES = 8192  # a full config is ~1.5 KB; refuse anything that could exhaust the heap
GOOD = ".good"  # config.json.good: the last configuration that loaded at boot, sealed
_ENOENT = 2
_CHUNK = 256


def read(path):
    """(raw bytes without a BOM, None) or (None, error)."""
    try:
        # size first: read(n) would allocate n bytes up front, even for a short file
        size = os.stat(path)[6]
        if size > MAX_BYTES:
            return None, "%s: larger than %d bytes" % (path, MAX_BYTES)
        with open(path, "rb") as f:
            raw = f.read(size + 1)
    except OSError as e:
        if e.args and e.args[0] == _ENOENT:
            return None, "%s: not found" % path
        return None, "%s: cannot read (%s)" % (path, e)
    if len(raw) > MAX_BYTES:  # grew since stat
        return None, "%s: larger than %d bytes" % (path, MAX_BYTES)
    if raw[:3] == b"\xef\xbb\xbf":  # UTF-8 BOM written by some editors
        raw = raw[3:]
    return raw, None


def _drop(name):
    import sys

    import heatgw

    if sys.modules.pop("heatgw." + name, None) is not None:
        try:
            delattr(heatgw, name)
        except (AttributeError, KeyError):
            pass


def parse(raw, path):
    """(doc, None, sealed) or (None, error, sealed) for a file's bytes: its seal checked,
    then read as CPython's json reads it (heatgw.strictjson, loaded for the check and
    dropped again before the document is built); sealed is True when the file carried a
    matching seal (its "sha256" member is removed)."""
    sealed = unseal(raw)
    if sealed is not True and sealed is not False:
        return None, "%s: %s" % (path, sealed), False
    if not raw.strip():
        return None, "%s: file is empty" % path, False
    from heatgw import strictjson

    err, pairs = strictjson.check(raw)
    if err is None and pairs:
        raw = strictjson.join_pairs(raw)
    strictjson = None
    _drop("strictjson")
    if err is not None:
        return None, "%s: not valid JSON (%s)" % (path, err), sealed
    try:
        doc = json.loads(raw)  # bytes: no decoded copy (checked UTF-8, starts with ASCII)
    except MemoryError:  # not the file's fault: the caller reports it as such
        raise
    except Exception as e:  # checked above: only a parser that disagrees gets here
        return None, "%s: not valid JSON (%s)" % (path, e), sealed
    if sealed:
        doc.pop("sha256", None)
    return doc, None, sealed


def write(path, data):
    """data (bytes) to path through path + ".new" and a rename (atomic on littlefs: a power
    cut leaves the old file or the new one, whole). OSError propagates, the temporary file
    removed."""
    tmp = path + ".new"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.rename(tmp, path)
    except OSError:
        try:
            os.remove(tmp)
        except OSError:
            pass
        raise


def same(path, data):
    """True when the file at path holds exactly data (read in chunks)."""
    try:
        f = open(path, "rb")
    except OSError:
        return False
    try:
        buf = bytearray(_CHUNK)
        pos = 0
        while True:
            n = f.readinto(buf)
            if not n:
                return pos == len(data)
            if data[pos:pos + n] != buf[:n]:
                return False
            pos += n
    finally:
        f.close()


def _body(f, buf):
    """The offset of what seal() keeps of an unsealed file: after a BOM, the whitespace,
    the "{" and a newline right after it."""
    pos = 0
    while True:
        n = f.readinto(buf)
        if not n:
            return pos
        i = 3 if pos == 0 and buf[:3] == b"\xef\xbb\xbf" else 0
        while i < n and buf[i] != 0x7B:
            i += 1
        if i < n:
            if i + 1 < n:
                return pos + i + (2 if buf[i + 1] == 0x0A else 1)
            f.seek(pos + n)  # the "{" ends the chunk: look at the next byte
            nl = f.read(1)
            return pos + i + (2 if nl == b"\n" else 1)
        pos += n


def _stream(path, sealed, buf, sink):
    """Feed sink(bytes) the sealed copy of the file at path, in chunks: the file as it is
    when sealed, else the seal line (its hash from a first pass) and the body."""
    import binascii
    import hashlib

    with open(path, "rb") as f:
        if sealed:
            start = 3 if f.read(3) == b"\xef\xbb\xbf" else 0
        else:
            start = _body(f, buf)
            h = hashlib.sha256()
            f.seek(start)
            while True:
                n = f.readinto(buf)
                if not n:
                    break
                h.update(memoryview(buf)[:n])
            sink(HEAD + binascii.hexlify(h.digest()) + b'",\n')
        f.seek(start)
        while True:
            n = f.readinto(buf)
            if not n:
                return
            sink(bytes(memoryview(buf)[:n]))


class _Compare:
    def __init__(self, f):
        self.f = f
        self.equal = True

    def __call__(self, data):
        if self.equal and self.f.read(len(data)) != data:
            self.equal = False


def keep_good(path, sealed):
    """Make path + GOOD the sealed copy of the file at path (it just loaded), unless it
    already is: no flash write on a boot that changes nothing. Streamed in 256-byte
    chunks (never the file in RAM); written as path.good.new and renamed (atomic). None,
    or the error when it cannot be written (the node runs anyway)."""
    good = path + GOOD
    buf = bytearray(_CHUNK)
    try:
        try:
            with open(good, "rb") as g:
                cmp = _Compare(g)
                _stream(path, sealed, buf, cmp)
                if cmp.equal and not g.read(1):
                    return None
        except OSError:  # no copy yet
            pass
        tmp = good + ".new"
        try:
            with open(tmp, "wb") as out:
                _stream(path, sealed, buf, out.write)
            os.rename(tmp, good)
        except OSError:
            try:
                os.remove(tmp)
            except OSError:
                pass
            raise
    except Exception as e:  # OSError, MemoryError
        return "not kept (%r)" % (e,)
    return None


def _dump(v, out):
    if type(v) is dict:
        out.append("{")
        first = True
        for k in sorted(v):
            if not first:
                out.append(",")
            first = False
            out.append(json.dumps(k))
            out.append(":")
            _dump(v[k], out)
        out.append("}")
    elif type(v) is list or type(v) is tuple:
        out.append("[")
        for i, x in enumerate(v):
            if i:
                out.append(",")
            _dump(x, out)
        out.append("]")
    else:
        out.append(json.dumps(v))


def dumps(cfg):
    """Canonical JSON: keys sorted, no spaces (MicroPython's json has no sort_keys)."""
    out = []
    _dump(cfg, out)
    return "".join(out)


def text(doc):
    """A document as the node and provisioning write it (before seal()): one top-level
    key a line, keys sorted, values canonical (dumps)."""
    return "{\n" + ",\n".join(["  %s: %s" % (json.dumps(k), dumps(doc[k]))
                                for k in sorted(doc)]) + "\n}\n"

