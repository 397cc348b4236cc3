"""The node configuration: one JSON file, validated against heatgw.config_schema.

    cfg, errors, source, migration = load("config.json")

source is "file" when the file parsed and validated, else "default": then cfg is a fresh
copy of DEFAULT (no sensors, no flow, so the node stays bypassed with reason no_config)
and errors says why, one clear line each. A file of an older format version is migrated
first (heatgw.migrate, imported only then); migration is None, or the event that reports
it. load() never raises.
"""

import json
import os

from heatgw.config_schema import SCHEMA, VERSION
from heatgw.schema import _num, validate

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


def _parse(path):
    """(doc, None) or (None, error)."""
    try:
        # size first: read(n) would allocate n bytes up front, even for a short file
        size = os.stat(path)[6]
        if size > MAX_BYTES:
            return None, "%s: larger than %d bytes" % (path, MAX_BYTES)
        with open(path, "rb") as f:
            raw = f.read(size + 1)
    except OSError as e:
        if e.args and e.args[0] == 2:  # ENOENT
            return None, "%s: not found" % path
        return None, "%s: cannot read (%s)" % (path, e)
    if len(raw) > MAX_BYTES:  # grew since stat
        return None, "%s: larger than %d bytes" % (path, MAX_BYTES)
    if raw[:3] == b"\xef\xbb\xbf":  # UTF-8 BOM written by some editors
        raw = raw[3:]
    try:
        text = raw.decode("utf-8")
    except MemoryError:
        raise
    except Exception:
        return None, "%s: not UTF-8 text" % path
    if not text.strip():
        return None, "%s: file is empty" % path
    try:
        return json.loads(text), None
    except MemoryError:  # not the file's fault: load() reports it as such
        raise
    except Exception as e:  # ValueError, and RecursionError for absurd nesting on CPython
        return None, "%s: not valid JSON (%s)" % (path, e)


def load(path, save=True):
    """(cfg, errors, source, migration): source "file" if the file is valid (after any
    migration), else DEFAULT and "default". migration is None for a current file, else the
    event {"kind": "config", "migrated": [1, 2], "notes": [...], "needs": [key, ...],
    "saved": bool}; with save, a migrated file that validates is written back once
    (heatgw.migrate.save)."""
    try:
        doc, err = _parse(path)
        if err is not None:
            return default(), [err], "default", None
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
        if type(doc) is dict and doc.get("modbus") is not None:
            from heatgw import mbschema  # the section's schema, only when there is one

            mbschema.install(SCHEMA)
        if type(doc) is dict and doc.get("bms") is not None:
            from heatgw import bmsschema  # the building's server, only when there is one

            bmsschema.install(SCHEMA)
        if type(doc) is dict and doc.get("recovery") is not None:
            from heatgw import recschema  # the ratio's section, only when there is one

            recschema.install(SCHEMA)
        cfg, errors = validate(doc, SCHEMA)
        if not errors and (cfg.get("modbus") or (cfg.get("flow") or {}).get("type") == "modbus"):
            from heatgw import mbplan  # the Modbus cross-checks (dropped with the rest)

            errors = mbplan.check(cfg)
        if not errors and cfg.get("bms"):
            errors = bmsschema.check(cfg)
        if not errors:
            errors = sink_errors(cfg)
        if not errors and cfg.get("recovery"):
            from heatgw import recschema

            errors = recschema.check(cfg)  # fills in the meters named by their roles
        if mig is not None:
            errors = migrate.errors(needs, errors)
        if errors:
            return default(), errors, "default", mig
        if mig is not None and save:
            migrate.save(path, doc, mig)
        return cfg, [], "file", mig
    except Exception as e:  # MemoryError included: fall back, say why
        try:
            return default(), ["%s: loading failed (%r)" % (path, e)], "default", None
        except Exception:
            return _OOM


def sink_errors(cfg):
    """A remote sink source needs the part it comes through: modbus the bms section
    (its heartbeat register), mqtt the mqtt section (signed sink commands)."""
    errors = []
    ss = cfg["control"].get("sink_sources") or {}
    for name, part in (("modbus", "bms"), ("mqtt", "mqtt")):
        if ss.get(name) is not None and not cfg.get(part):
            errors.append("control.sink_sources.%s: needs a %s section (the source comes "
                          "through it)" % (name, part))
    return errors


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
