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

from heatgw.config_schema import SCHEMA, VERSION
from heatgw.schema import _num, validate

MAX_BYTES = 8192  # heatgw.cfgfile.MAX_BYTES (a test holds them equal)
GOOD = ".good"  # heatgw.cfgfile.GOOD


# The file's helpers (heatgw.cfgfile) under their names here too, imported when first
# used: a node's heap at import is the schema's (tests/test_config.py, the starved load).
def _read(path):
    from heatgw import cfgfile

    return cfgfile.read(path)


def parse(raw, path):
    from heatgw import cfgfile

    return cfgfile.parse(raw, path)


def keep_good(path, sealed):
    from heatgw import cfgfile

    return cfgfile.keep_good(path, sealed)


def write(path, data):
    from heatgw import cfgfile

    cfgfile.write(path, data)


def same(path, data):
    from heatgw import cfgfile

    return cfgfile.same(path, data)


def seal(text):
    from heatgw import seal as s

    return s.seal(text)


def unseal(raw):
    from heatgw import seal as s

    return s.check(raw)


def text(doc):
    from heatgw import cfgfile

    return cfgfile.text(doc)


def dumps(cfg):
    from heatgw import cfgfile

    return cfgfile.dumps(cfg)

SENSOR_NAMES = ("supply", "return", "sink_return", "it_coolant")

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


def _load(path, save):
    """(cfg, errors, source, migration, sealed, found): load() plus whether the file was
    sealed and whether it exists; the file's bytes are dropped before it is validated."""
    raw, err = _read(path)
    if err is not None:
        return default(), [err], "default", None, False, not err.endswith(": not found")
    doc, err, sealed = parse(raw, path)
    raw = None
    if err is not None:
        return default(), [err], "default", None, sealed, True
    cfg, errors, source, mig = from_doc(doc, path, save)
    return cfg, errors, source, mig, sealed, True


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
    if type(doc) is dict and doc.get("modbus") is not None:
        from heatgw import mbschema  # the section's schema, only when there is one

        mbschema.install(SCHEMA)
    if type(doc) is dict and doc.get("analog") is not None:
        from heatgw import anschema  # the analog section's schema and checks

        anschema.install(SCHEMA)
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
    if not errors and cfg.get("analog"):
        from heatgw import anschema

        errors = anschema.check(cfg)
    if not errors and cfg.get("bms"):
        from heatgw import bmsschema

        errors = bmsschema.check(cfg)
    if not errors and _remote_sink(cfg):
        # the control task's module, resident from boot on: imported only when needed
        from heatgw.inbox import source_errors

        errors = source_errors(cfg)
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
        cfg, errors, source, mig, sealed, found = _load(path, save)
        events = [mig] if mig else []
        if source != "default":  # the node's configuration: resident from now on
            _share(cfg, {})
        if source == "file":
            if not sealed and not (mig and mig["saved"]):  # a migrated file is resealed
                events.append({"kind": "config", "integrity": "none", "file": path,
                               "note": "no seal (edited by hand?): accepted; `config "
                                       "save` seals it"})
            if mig is None:  # a migrated file was rewritten: kept at the next boot
                err = keep_good(path, sealed)
                if err is not None:
                    events.append({"kind": "config", "file": path + GOOD, "error": err})
            return cfg, [], "file", events
        if not found:
            return cfg, errors, source, events
        good = _load(path + GOOD, False)
        if good[2] == "file":
            _share(good[0], {})
            return good[0], errors, "last_good", events
        return cfg, errors, "default", events
    except Exception as e:  # MemoryError included
        try:
            return default(), ["%s: loading failed (%r)" % (path, e)], "default", []
        except Exception:
            return _OOM[0], _OOM[1], "default", []


def _share(v, seen):
    # Equal floats and strings in the configuration become one object (0.0 and 120.0 come
    # once per sensor: 32 bytes each on the 64-bit host). The configuration stays resident.
    # Run on the loaded configuration only (boot()), once the document it came from is
    # gone: the `seen` table then adds nothing to the loading's peak.
    for k in v:
        x = v[k]
        t = type(x)
        if t is dict:
            _share(x, seen)
        elif t is float or t is str:
            y = seen.get(x)
            if y is None:
                seen[x] = x
            elif type(y) is t:  # (0.0 == 0 == False: the same type only)
                v[k] = y


def _remote_sink(cfg):
    """A remote sink source is configured (control.sink_sources: a timeout not null)."""
    ss = cfg["control"].get("sink_sources") or {}
    for v in ss.values():
        if v is not None:
            return True
    return False


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


