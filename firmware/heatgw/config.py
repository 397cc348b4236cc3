"""The node configuration: one JSON file, validated against heatgw.config_schema.

    cfg, errors, source, migration = load("config.json")
    cfg, errors, source, events = boot("config.json")     # the node's load at boot

source is "file" when the file parsed and validated, else "default": then cfg is a fresh
copy of DEFAULT (no sensors, no flow, so the node stays bypassed with reason no_config)
and errors says why, one clear line each. A file of an older format version is migrated
first (heatgw.migrate, imported only then); migration is None, or the event that reports
it. load() never raises.

The file is read as CPython reads it: heatgw.strictjson refuses what CPython's json
refuses (MicroPython's json alone takes missing and doubled commas, leading zeros, bad
UTF-8), so the node and host_tools.config_check give the same verdict on every file.

Integrity. A file written by the node (`config save`, MQTT config_set) or by provisioning
is sealed: its first line is

    {"sha256": "<64 hex digits>",

the SHA-256 of every byte after that line (seal()). A sealed file whose bytes do not match
is refused ("integrity check failed"), whatever it says. A file without that line (edited
by hand) is read as before; boot() accepts it with a warning. boot() also keeps the last
configuration that loaded, sealed, in config.json.good (written only when it changes, by a
rename: atomic on littlefs), and runs it (source "last_good") when config.json exists but
is refused; without one, DEFAULT.
"""

import json
import os

from heatgw.config_schema import SCHEMA, VERSION
from heatgw.schema import _num, validate
from heatgw.seal import check as unseal  # noqa: F401 - config.unseal, config.seal: the
from heatgw.seal import seal  # noqa: F401 - node's writers and readers use these names

SENSOR_NAMES = ("supply", "return", "sink_return", "it_coolant")
MAX_BYTES = 8192  # a full config is ~1.5 KB; refuse anything that could exhaust the heap

_DEFAULT_DOC = {"version": VERSION}


def default():
    """A fresh DEFAULT config (the caller may modify it)."""
    cfg, errors = validate(_DEFAULT_DOC, SCHEMA)
    if errors:  # only out of memory: validate() reports rather than raises
        raise MemoryError(errors[0])
    return cfg


DEFAULT = default()
# Returned as is when even the fallback cannot allocate: answering must not need memory.
_OOM = (DEFAULT, ["config: out of memory while loading; using DEFAULT"], "default", None)


GOOD = ".good"  # config.json.good: the last configuration that loaded at boot, sealed
_ENOENT = 2


def _read(path):
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


def parse(raw, path):
    """(doc, None, sealed) or (None, error, sealed) for a file's bytes: its seal checked,
    then read as CPython's json reads it (heatgw.strictjson: the caller drops it); sealed
    is True when the file carried a matching seal (its "sha256" member is removed)."""
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
    if err is not None:
        return None, "%s: not valid JSON (%s)" % (path, err), sealed
    try:
        doc = json.loads(raw.decode())
    except MemoryError:  # not the file's fault: load() reports it as such
        raise
    except Exception as e:  # checked above: only a parser that disagrees gets here
        return None, "%s: not valid JSON (%s)" % (path, e), sealed
    if sealed:
        doc.pop("sha256", None)
    return doc, None, sealed


def _load(path, save):
    """(cfg, errors, source, migration, raw, sealed): load() plus the file's bytes (None
    when unreadable) and whether it was sealed."""
    raw, err = _read(path)
    if err is not None:
        return default(), [err], "default", None, None, False
    doc, err, sealed = parse(raw, path)
    if err is not None:
        return default(), [err], "default", None, raw, sealed
    cfg, errors, source, mig = from_doc(doc, path, save)
    return cfg, errors, source, mig, raw, sealed


def from_doc(doc, path, save=True):
    """(cfg, errors, source, migration) for a parsed document (see load)."""
    mig = None
    ver = doc.get("version") if type(doc) is dict else None
    if type(ver) is int and ver != VERSION:  # anything else: the validator says why
        if ver > VERSION:
            return default(), ["version: %s is newer than this firmware's %d: update the "
                               "firmware, or write a version-%d file"
                               % (_num(ver), VERSION, VERSION)], "default", None
        from heatgw import migrate

        mig, needs = migrate.upgrade(doc, ver)
        if mig is None:
            return default(), [m for _, m in needs], "default", None
    cfg, errors = validate(doc, SCHEMA)
    if mig is not None:
        errors = migrate.errors(needs, errors)
    if errors:
        return default(), errors, "default", mig
    if mig is not None and save:
        migrate.save(path, doc, mig)
    return cfg, [], "file", mig


def load(path, save=True):
    """(cfg, errors, source, migration): source "file" if the file is valid (after any
    migration), else DEFAULT and "default". migration is None for a current file, else the
    event {"kind": "config", "migrated": [1, 2], "notes": [...], "needs": [key, ...],
    "saved": bool}; with save, a migrated file that validates is written back once
    (heatgw.migrate.save). A sealed file that does not match its seal is refused."""
    try:
        return _load(path, save)[:4]
    except Exception as e:  # MemoryError included: fall back, say why
        try:
            return default(), ["%s: loading failed (%r)" % (path, e)], "default", None
        except Exception:
            return _OOM


def boot(path, save=True):
    """The node's configuration at boot: (cfg, errors, source, events). source "file":
    path loaded (and path + GOOD is made its sealed copy if it is not already); an unsealed
    file is accepted with a warning event. "last_good": path exists but was refused (errors
    say why) and the last good copy loaded. "default": neither. events: the config events
    to report after the boot event (a migration, the warning). Never raises."""
    try:
        cfg, errors, source, mig, raw, sealed = _load(path, save)
        events = [mig] if mig else []
        if source == "file":
            if not sealed and not (mig and mig["saved"]):  # a migrated file is resealed
                events.append({"kind": "config", "integrity": "none", "file": path,
                               "note": "no seal (edited by hand?): accepted; `config "
                                       "save` seals it"})
            if mig is None:  # a migrated file was rewritten: kept at the next boot
                err = keep_good(path, raw, sealed)
                if err is not None:
                    events.append({"kind": "config", "file": path + GOOD, "error": err})
            return cfg, [], "file", events
        if errors[0] == "%s: not found" % path:
            return cfg, errors, source, events
        raw = None
        good = _load(path + GOOD, False)
        if good[2] == "file":
            return good[0], errors, "last_good", events
        return cfg, errors, "default", events
    except Exception as e:  # MemoryError included
        try:
            return default(), ["%s: loading failed (%r)" % (path, e)], "default", []
        except Exception:
            return _OOM[0], _OOM[1], "default", []


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


def _same(path, data):
    """True when the file at path holds exactly data (read in chunks)."""
    try:
        f = open(path, "rb")
    except OSError:
        return False
    try:
        buf = bytearray(256)
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


def keep_good(path, raw, sealed):
    """Make path + GOOD the sealed copy of raw (the file at path, which just loaded),
    unless it already is: no flash write on a boot that changes nothing. None, or the
    error when it cannot be written (the node runs anyway)."""
    try:
        data = raw if sealed else seal(raw)
        if not _same(path + GOOD, data):
            write(path + GOOD, data)
    except Exception as e:  # OSError, MemoryError
        return "not kept (%r)" % (e,)
    return None


def text(doc):
    """A document as the node and provisioning write it (before seal()): one top-level
    key a line, keys sorted, values canonical (dumps)."""
    return "{\n" + ",\n".join(["  %s: %s" % (json.dumps(k), dumps(doc[k]))
                                for k in sorted(doc)]) + "\n}\n"


def is_configured(cfg):
    """True when at least one critical sensor or a critical flow meter is configured."""
    try:
        sensors = cfg.get("sensors") or {}
        for name in SENSOR_NAMES:
            s = sensors.get(name)
            if type(s) is dict and s.get("critical") is True:
                return True
        flow = cfg.get("flow")
        return type(flow) is dict and flow.get("critical") is True
    except Exception:
        return False


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
