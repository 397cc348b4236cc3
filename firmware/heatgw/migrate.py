"""Configuration migrations: a file of an older format version is brought to
heatgw.config_schema.VERSION at load, step by step, and the node reports it as an event.

Imported by heatgw.config.load only for such a file, and forgotten with the validator
(heatgw.start), so a current file costs no heap for it.

Each schema change that adds a required key or renames one bumps VERSION and adds one
step: STEPS[n - FIRST] takes a version-n document to version n + 1 in place, touching
only what that change is about, and returns (notes, needs): notes say what it did, needs
are (key, message) for what it cannot guess; the technician must set those keys, and until
then the file is refused like any invalid one (default configuration, bypass).
"""

import json
import os

from heatgw.config_schema import VERSION
from heatgw.schema import _num

FIRST = 1  # the oldest version this firmware migrates from

_MAINS = ("site.mains_hz: set it to 50 or 60, the mains frequency at the site, which the "
          "RTD converters filter out: a version-1 file does not say (its firmware assumed "
          "50 Hz); until then the node stays in bypass (no_config)")


def _v1(doc):
    """1 -> 2: the MAX31865 mains filter became site.mains_hz, required with any sensor.
    50 and 60 Hz are both plausible for a version-1 file: ask, do not guess."""
    doc["version"] = 2
    site = doc.get("site")
    if type(site) is dict and "mains_hz" in site:  # set by the technician, as asked
        return ["site.mains_hz: already set"], []
    sensors = doc.get("sensors")
    if type(sensors) is dict and sensors:
        return [], [("site.mains_hz", _MAINS)]
    return ["site.mains_hz: not needed, no sensor configured"], []


STEPS = (_v1,)


def upgrade(doc, version):
    """Migrate doc (a dict) in place from version to VERSION.

    Returns (record, needs): record is the event {"kind": "config", "migrated": [1, 2],
    "notes": [...], "needs": [key, ...], "saved": False}, or None for a version that no
    step starts from; needs is a list of (key, message)."""
    if not FIRST <= version < VERSION:
        return None, [("version", "version: %s is not a known version: this firmware reads "
                                  "%d to %d" % (_num(version), FIRST, VERSION))]
    rec = {"kind": "config", "migrated": [version], "notes": [], "needs": [], "saved": False}
    needs = []
    while version < VERSION:
        notes, more = STEPS[version - FIRST](doc)
        version += 1
        rec["migrated"].append(version)
        for n in notes:
            rec["notes"].append("v%d: %s" % (version, n))
        for key, _ in more:
            rec["needs"].append(key)
        needs += more
    return rec, needs


def errors(needs, errs):
    """The migration's message first for each key it cannot fill, instead of the
    validator's plain "required"."""
    keys = [k for k, _ in needs]
    return [m for _, m in needs] + [e for e in errs if e.partition(":")[0] not in keys]


def text(doc):
    """The document as JSON, one top-level key a line (keys sorted), for a text editor."""
    from heatgw.config import dumps

    return "{\n" + ",\n".join(["  %s: %s" % (json.dumps(k), dumps(doc[k]))
                               for k in sorted(doc)]) + "\n}\n"


def save(path, doc, rec):
    """Write the migrated document over path, once, after it validated: the next boot
    loads it as is (migrating on every boot would report it every boot; writing on every
    boot would wear the flash). Written by the node, it is sealed (heatgw.config.seal).
    The old file is kept as path.v<old version>. The new file replaces the old by a
    rename, atomic on littlefs: a power cut leaves one or the other.
    Never raises: a node that cannot write runs the migrated configuration anyway."""
    backup = "%s.v%d" % (path, rec["migrated"][0])
    tmp = path + ".new"
    try:
        buf = memoryview(bytearray(256))
        with open(path, "rb") as src, open(backup, "wb") as dst:
            while True:
                n = src.readinto(buf)
                if not n:
                    break
                dst.write(buf[:n])
        from heatgw.config import seal

        with open(tmp, "wb") as f:
            f.write(seal(text(doc)))  # written by the node: sealed (heatgw.config)
        os.rename(tmp, path)
    except Exception as e:  # MemoryError, a full or read-only file system
        rec["notes"].append("not saved (%r): migrated again at the next boot" % (e,))
        try:
            os.remove(tmp)
        except Exception:
            pass
        return
    rec["saved"] = True
    rec["notes"].append("saved as version %d; the old file is %s" % (VERSION, backup))
