"""Change the configuration of a running node: the one path behind the console's `config`
command (heatgw.con_config) and the MQTT command config_set (heatgw.telemetry).

    value, err = typed("control.sink_return_max_c", "42.5")  # the technician's text, typed
    value, err = checked("control.sink_return_max_c", 42.5)  # a JSON value (MQTT)
    doc, cfg, errors, base = pending(path, running, staged, hold_ms)
    data, errors = prepare(path, running, staged, hold_ms)   # the sealed file, or why not
    commit(path, data)                                       # written (atomic), read back

`staged` is a list of [dotted key, value]: changes each checked against its schema node
when it was staged (type, range, allowed values). They apply, in order, to the base: the
document of config.json as written when it is a valid configuration (so changes saved
before and not yet running are kept), else a copy of the running configuration. Saving
validates the whole result (heatgw.schema: every key and the cross-field rules, and the
board's dead-man hold against control.tick_ms, as the next boot will) and writes it
sealed (heatgw.seal: SHA-256 over the text) through config.json.new and a rename:
an invalid configuration is never written, and a power cut leaves the old file or the
new one. A saved configuration takes effect at the next boot.

Heap: a running node cannot hold the whole schema as well (heatgw.config_schema is 17 KB
of dicts even from ROMFS). So the schema comes from heatgw.config_parts, generated from
config_schema.py, one top-level section at a time: SCHEMA below is a root node whose keys
are built on demand, and heatgw.schema.validate() walks it exactly as it walks
config_schema.SCHEMA (the same code; a test proves the sections equal on the binary).
Neither heatgw.config nor heatgw.config_schema is imported here. Loaded on demand and
dropped by the caller. Nothing here prints a secret: the configuration holds none (they
are in secrets.json), and any key named like one is shown as <secret>.
"""

import json

from heatgw import cfgfile, config_parts
from heatgw.schema import check, validate

# Sections whose schema lives in a module of its own, loaded only when a document has the
# section (as heatgw.config.load installs them): name -> (module, its schema node).
_OWN = {"modbus": ("mbschema", "MODBUS"), "recovery": ("recschema", "RECOVERY"),
        "analog": ("anschema", "ANALOG"), "bms": ("bmsschema", "BMS")}


class _Sections:
    """The root's keys: each section's node built when it is looked up, then dropped. A
    section of _OWN is config_schema's stub unless the document has it: then its own
    module's, as heatgw.config.load does it."""

    def __init__(self, present=()):
        self.present = present  # the _OWN sections the document has

    def __contains__(self, name):
        return name in config_parts.SECTIONS

    def __iter__(self):
        return iter(config_parts.NAMES)

    def __len__(self):
        return len(config_parts.NAMES)

    def __getitem__(self, name):
        if name in self.present and name in _OWN:
            mod, node = _OWN[name]
            return getattr(__import__("heatgw." + mod, None, None, (node,)), node)
        return config_parts.SECTIONS[name]()

    def get(self, name, default=None):
        return self[name] if name in self else default


def _root(doc=None):
    root = dict(config_parts.ROOT)
    present = tuple(k for k in _OWN if type(doc) is dict and doc.get(k) is not None)
    root["keys"] = _Sections(present)
    rules = config_parts.rules()
    if "recovery" in present:  # its root rules come with its section (recschema.install)
        from heatgw import recschema

        rules = rules + recschema.RULES
    root["rules"] = rules
    return root


def validate_doc(doc):
    """(cfg, errors) as heatgw.config gives them for a current document: the schema one
    section at a time, then the cross-checks of Modbus, of the analog section, of the bms
    section, of the sink sources and of the recovery section when the document has them."""
    cfg, errs = validate(doc, _root(doc))
    if not errs and cfg and (cfg.get("modbus") or (cfg.get("flow") or {}).get("type") == "modbus"):
        from heatgw import mbplan

        errs = mbplan.check(cfg)
    if not errs and cfg and cfg.get("analog"):
        from heatgw import anschema

        errs = anschema.check(cfg)
    if not errs and cfg and cfg.get("bms"):
        from heatgw import bmsschema

        errs = bmsschema.check(cfg)
    if not errs and cfg and [v for v in (cfg["control"].get("sink_sources") or {}).values()
                             if v is not None]:
        from heatgw.inbox import source_errors

        errs = source_errors(cfg)
    if not errs and cfg and cfg.get("recovery"):
        from heatgw import recschema

        errs = recschema.check(cfg)
    return cfg, errs


HIDDEN = "<secret>"
_SECRET_WORDS = ("password", "secret", "token", "psk", "_key")
_NONE = object()  # "absent" in a diff


def is_secret(key):
    last = key.split(".")[-1].lower()
    for w in _SECRET_WORDS:
        if w in last:
            return True
    return False


def show(key, value):
    """A value as the console prints it: canonical JSON, a secret-like key masked."""
    if value is _NONE:
        return "(absent)"
    if is_secret(key):
        return HIDDEN
    if type(value) is dict:
        return "{" + ", ".join(["%s: %s" % (k, show(key + "." + k, value[k]))
                                for k in sorted(value)]) + "}"
    return cfgfile.dumps(value)


def node(key):
    """(schema node, None) of a dotted key, or (None, error). Under an object whose members
    the installer names (Modbus buses, meters, registers: "items"), any name leads to the
    node of such a member."""
    n = {"type": "object", "keys": _Sections((key.split(".")[0],))}
    done = ""
    for seg in key.split("."):
        keys = n.get("keys") if n.get("type") == "object" else None
        items = n.get("items") if n.get("type") == "object" else None
        if items is not None and not keys:
            n = items
        elif not keys:
            return None, "%s: %s is a value, it has no keys" % (key, done)
        elif seg not in keys:
            return None, "%s: unknown key; %s has %s" % (
                key, done or "the configuration", ", ".join(sorted(keys)))
        else:
            n = keys[seg]
        done = seg if not done else done + "." + seg
    return n, None


def checked(key, value):
    """(value, None) when value (a JSON value) is valid for key on its own, else (None,
    the error). The value is kept as given (the file keeps what was written)."""
    if type(key) is not str or not key:
        return None, "the key must be a dotted name, e.g. control.sink_return_max_c"
    if key == "version":
        return None, "version: set by the firmware"
    n, err = node(key)
    if err is not None:
        return None, err
    _, errs = check(value, n, key)
    if errs:
        return None, errs[0]
    return value, None


def typed(key, text):
    """(value, None) or (None, error): the text typed for key, read by its schema node's
    type (a string may be typed as is) and checked."""
    n, err = node(key)
    if err is not None:
        return None, err
    if n.get("type") == "str" and text[:1] != '"' and text != "null":
        return checked(key, text)
    from heatgw import strictjson

    raw = text.encode()
    err, pairs = strictjson.check(raw)
    if err is not None:
        return None, "%s: %s is not a JSON value (%s)" % (key, text[:40], err)
    if pairs:
        raw = strictjson.join_pairs(raw)
    strictjson = None
    return checked(key, json.loads(raw))


def copy(v):
    if type(v) is dict:
        return {k: copy(v[k]) for k in v}
    if type(v) is list:
        return [copy(x) for x in v]
    return v


def put(doc, key, value):
    """Set a dotted key in doc, making absent (or null) parent objects."""
    segs = key.split(".")
    d = doc
    for seg in segs[:-1]:
        nxt = d.get(seg)
        if type(nxt) is not dict:
            nxt = {}
            d[seg] = nxt
        d = nxt
    d[segs[-1]] = value


def get(doc, key):
    v = doc
    for seg in key.split("."):
        if type(v) is not dict or seg not in v:
            return _NONE
        v = v[seg]
    return v


def base(path, running):
    """(document, "file") of config.json when it is a valid configuration, else (a copy
    of the running configuration, "running")."""
    raw, err = cfgfile.read(path)
    if err is None:
        doc, err, _sealed = cfgfile.parse(raw, path)
        raw = None
        if err is None and type(doc) is dict and not validate_doc(doc)[1]:
            return doc, "file"
    return copy(running), "running"


def pending(path, running, staged, hold_ms=None):
    """(doc, cfg, errors, base): the base with the staged changes applied, its filled
    configuration (defaults in; a value that fails its own check left out) and the errors
    the next boot would refuse it for."""
    doc, src = base(path, running)
    for key, value in staged:
        put(doc, key, copy(value))
    cfg, errs = validate_doc(doc)
    if cfg is None:
        cfg = {}
    if not errs and hold_ms:
        from heatgw.start import dead_man_error

        err = dead_man_error(cfg["control"]["tick_ms"], hold_ms)
        if err is not None:
            errs.append(err)
    return doc, cfg, errs, src


def diff(a, b, prefix="", out=None):
    """[(key, value in a, value in b)] for every leaf that differs (absent: _NONE)."""
    if out is None:
        out = []
    if type(a) is dict and type(b) is dict:
        for k in sorted(set(a) | set(b)):
            diff(a.get(k, _NONE), b.get(k, _NONE), prefix + "." + k if prefix else k, out)
    elif a != b or type(a) is not type(b):
        out.append((prefix, a, b))
    return out


def prepare(path, running, staged, hold_ms=None):
    """(the sealed file's bytes, []) for the pending configuration, or (None, errors)."""
    doc, _cfg, errs, _src = pending(path, running, staged, hold_ms)
    _cfg = None  # the filled copy is not written: the file keeps what was written
    if errs:
        return None, errs
    text = cfgfile.text(doc)
    doc = None
    data = cfgfile.seal(text)
    text = None
    if len(data) > cfgfile.MAX_BYTES:
        return None, ["the configuration would be %d bytes, the node reads at most %d"
                      % (len(data), cfgfile.MAX_BYTES)]
    return data, []


def commit(path, data):
    """Write the sealed file (config.json.new, then a rename) unless path already holds
    it; read it back. (written, None) or (False, the error): nothing changed then."""
    try:
        if cfgfile.same(path, data):
            return False, None
        cfgfile.write(path, data)
        if not cfgfile.same(path, data):
            return False, "read back: %s does not hold what was written" % path
        err = None
    except Exception as e:  # noqa: BLE001 - OSError (flash full, worn), MemoryError
        return False, "cannot write %s (%r): the old file stays" % (path, e)
    return (err is None), err


def set_one(path, running, key, value, hold_ms=None):
    """The MQTT command config_set: one key checked, the whole configuration validated,
    written sealed. (True, (key, running value, new value)) or (False, error)."""
    v, err = checked(key, value)
    if err is not None:
        return False, err
    data, errs = prepare(path, running, [[key, v]], hold_ms)
    if data is None:
        return False, errs[0] if len(errs) == 1 else "%s (and %d more)" % (errs[0],
                                                                            len(errs) - 1)
    _wrote, err = commit(path, data)
    if err is not None:
        return False, err
    return True, (key, get(running, key), v)
