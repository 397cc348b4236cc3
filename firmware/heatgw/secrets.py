"""The secrets file: credentials kept apart from config.json, never printed.

    s = load(board.data_dir() + "/secrets.json")   # SecretsError on a bad file
    s.get("mqtt_password")      # a Secret, or None when the file does not set it
    s.get("command_key").reveal()                  # the raw value, at the point of use only
    s.redact(text)              # text with every secret value replaced by <secret>
    save(path, {"command_key": key_bytes, ...})    # provisioning: validated, atomic

Format (version 1): a JSON object, every key optional, nothing else allowed (save() and
provisioning write it sealed, heatgw.seal: a first line {"sha256": ...}; a sealed file
that does not match its seal is refused; one without the line is read as written):
    {"version": 1,
     "command_key": "<64 hex digits: the node's 32-byte HMAC-SHA256 command key>",
     "mqtt_password": "<1..128 characters>",
     "wifi_ssid": "<1..32 bytes UTF-8>",
     "wifi_password": "<8..63 characters, 64 hex digits, or \\"\\" for an open network>"}
A missing file is a node with no secrets (no commands accepted, no MQTT password, no
Wi-Fi). No output ever shows a value: every value is wrapped in a Secret whose str and
repr are "<secret>", json.dumps refuses it, and error messages name keys, never values
(not even their length).
"""

import json
import os

VERSION = 1
KEYS = ("command_key", "mqtt_password", "wifi_ssid", "wifi_password")
MAX_FILE = 1024  # bytes: a larger file is refused before it is parsed
HIDDEN = "<secret>"
_HEX = "0123456789abcdefABCDEF"


class SecretsError(ValueError):
    def __init__(self, errors):
        super().__init__("; ".join(errors))
        self.errors = errors


class Secret:
    """A value that never prints: reveal() it where it is used, nowhere else."""

    def __init__(self, value):
        self._v = value

    def reveal(self):
        return self._v

    def __repr__(self):
        return HIDDEN

    __str__ = __repr__


def _hex(v, n):
    if type(v) is not str or len(v) != n:
        return False
    for c in v:
        if c not in _HEX:
            return False
    return True


def _check(key, v):
    """The error for value v of key (without the value), or None."""
    if key == "command_key":
        if not _hex(v, 64):
            return "command_key: must be 64 hex digits (a 32-byte key)"
    elif key == "mqtt_password":
        if type(v) is not str or not 1 <= len(v) <= 128:
            return "mqtt_password: must be a string of 1..128 characters"
    elif key == "wifi_ssid":
        if type(v) is not str or not 1 <= len(v.encode()) <= 32:
            return "wifi_ssid: must be a string of 1..32 bytes"
    elif key == "wifi_password":
        if type(v) is not str or not (v == "" or 8 <= len(v) <= 63 or _hex(v, 64)):
            return ("wifi_password: must be 8..63 characters, 64 hex digits, or \"\" "
                    "for an open network")
    return None


def _validate(doc, what):
    """doc: a parsed file -> {key: raw value}; SecretsError naming what is wrong."""
    if type(doc) is not dict:
        raise SecretsError(["%s: must be a JSON object" % what])
    errs = []
    out = {}
    for k in sorted(doc):
        if k == "version":
            if doc[k] != VERSION or type(doc[k]) is not int:
                errs.append("%s: version: this firmware reads version %d" % (what, VERSION))
        elif k not in KEYS:
            errs.append("%s: unknown key %s; have %s"
                        % (what, json.dumps(k[:32] if type(k) is str else "?"),
                           ", ".join(KEYS)))
        else:
            e = _check(k, doc[k])
            if e:
                errs.append("%s: %s" % (what, e))
            else:
                out[k] = doc[k]
    if "wifi_password" in doc and "wifi_ssid" not in doc:
        errs.append("%s: wifi_password: needs wifi_ssid" % what)
    if errs:
        raise SecretsError(errs)
    if "command_key" in out:
        out["command_key"] = bytes.fromhex(out["command_key"])
    return out


class Secrets:
    def __init__(self, values=None):
        self._s = {}
        for k in values or ():
            v = values[k]
            self._s[k] = v if isinstance(v, Secret) else Secret(v)

    def get(self, key):
        return self._s.get(key)

    def names(self):
        return sorted(self._s)

    def as_dict(self):
        """{key: Secret}: safe to print; for save() after changing a value."""
        return dict(self._s)

    def redact(self, text):
        """text with every secret value (the key also as hex) replaced by <secret>."""
        for k in self._s:
            v = self._s[k].reveal()
            if type(v) is bytes:
                h = v.hex()
                for form in (h, h.upper()):
                    text = text.replace(form, HIDDEN)
            elif v:
                text = text.replace(v, HIDDEN)
        return text

    def __repr__(self):
        return "<Secrets: %s>" % (", ".join(self.names()) or "none")

    __str__ = __repr__


def from_dict(values, what="secrets"):
    """Secrets from {key: raw value as in the file}; SecretsError if any is invalid."""
    return Secrets(_validate(values, what))


def load(path):
    """The secrets of path; an empty Secrets when the file does not exist. SecretsError
    (naming the file and the keys, never a value) for anything else."""
    try:
        f = open(path, "rb")
    except OSError:
        try:
            os.stat(path)
        except OSError:
            return Secrets()  # no file: nothing provisioned
        raise SecretsError(["%s: cannot be read" % path]) from None
    try:
        data = f.read(MAX_FILE + 1)
    except OSError:
        raise SecretsError(["%s: cannot be read" % path]) from None
    finally:
        f.close()
    if len(data) > MAX_FILE:
        raise SecretsError(["%s: larger than %d bytes" % (path, MAX_FILE)])
    from heatgw import seal, strictjson

    sealed = seal.check(data)
    if sealed is not True and sealed is not False:
        raise SecretsError(["%s: %s" % (path, sealed)])
    # read as CPython reads it (heatgw.strictjson); its message names a position only
    err, pairs = strictjson.check(data)
    if err is None and pairs:
        data = strictjson.join_pairs(data)
    seal = strictjson = None
    _drop(("seal", "strictjson"))
    doc = None
    if err is None:
        try:
            doc = json.loads(data.decode())
        except Exception:  # ValueError, UnicodeError: the parser's message may quote it
            doc = None
    if doc is None:
        raise SecretsError(["%s: not valid JSON" % path])
    if sealed:
        doc.pop("sha256", None)
    return Secrets(_validate(doc, path))


def _drop(names):
    import sys

    import heatgw

    for n in names:
        if sys.modules.pop("heatgw." + n, None) is not None:
            try:
                delattr(heatgw, n)
            except (AttributeError, KeyError):
                pass


def _raw(v):
    return v.reveal() if isinstance(v, Secret) else v


def save(path, values):
    """Write values ({key: raw value, bytes key or Secret}; None drops a key) to path,
    atomically: validated first (SecretsError, nothing written), then path + ".new" is
    written and renamed over path (atomic on littlefs: a power cut leaves one or the
    other). OSError from the file system propagates after the temporary file is removed."""
    doc = {}
    for k in values:
        v = _raw(values[k])
        if v is None:
            continue
        if k == "command_key" and type(v) in (bytes, bytearray):
            v = bytes(v).hex() if len(v) == 32 else "?"
        doc[k] = v
    _validate(doc, path)
    doc["version"] = VERSION
    from heatgw.seal import seal

    data = seal("{\n" + ",\n".join(["  %s: %s" % (json.dumps(k), json.dumps(doc[k]))
                                     for k in sorted(doc)]) + "\n}\n")
    seal = None
    import sys

    drop = ("seal",) if "heatgw.cfgfile" in sys.modules else ("cfgfile", "seal")
    from heatgw.cfgfile import write  # the configuration's atomic write (.new, rename)

    try:
        write(path, data)
    finally:
        write = None
        _drop(drop)
