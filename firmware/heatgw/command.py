"""Remote commands on <prefix>/<site>/<node>/cmd: authenticate, parse, hand on.

    cmds = Commands("n1", secrets, inbox, (d + "/cmdctr.a", d + "/cmdctr.b"),
                    secrets_path=d + "/secrets.json")
    ack, event, action = cmds.handle(payload, now_ms)   # never raises

Wire format: payload = BODY + b"." + MAC, where MAC is the 64 hex digits of
HMAC-SHA256(command_key, BODY) over the exact BODY bytes as sent (no re-serialisation),
and BODY a UTF-8 JSON object, first byte "{" and last "}":
    {"v": 1, "node": "n1", "id": "c-17", "ctr": 17, "cmd": "maintenance", "args": {"on": true}}
- v: 1; node: this node's id (a command signed for one node is refused by another);
  id: 1..32 printable ASCII characters, echoed in the ack;
  ctr: an int 1..2**30-1, strictly greater than the last accepted one;
- cmd and args: maintenance {"on": true|false}; reset (latched trips; no args);
  publish_state (no args); resend {"from_seq": a, "to_seq": b} with 0 <= a <= b < 2**30;
  rotate_key {"key": 64 hex digits: new_key XOR HMAC-SHA256(current key,
  "heatgw rotate_key <ctr>")}: the new key never travels in clear;
  config_set {"key": one of CONFIG_KEYS (thresholds and intervals only: never the
  broker, credentials, wiring or timing of the control loop), "value": a JSON value};
  sink {"available": true|false}: the MQTT source of the sink rule
  (control.sink_sources.mqtt: silent beyond its timeout = unavailable), a statement on the
  inbox stamped with now_ms.
- The payload is at most MAX_PAYLOAD (512) bytes.

Checks run cheapest and unauthenticated first: size, framing, MAC; only an authenticated
BODY is parsed, so a forger never reaches the JSON parser nor the flash. The counter is
saved (two slots, heatgw.store) BEFORE the command acts: a replay after a power cut or
reboot fails too. maintenance, reset and sink become requests on the inbox (source "mqtt"),
which the fail-safe judges like the board's inputs: no command touches a relay.
publish_state, resend and config_set are returned as the action for the caller:
("publish_state", None), ("resend", (from_seq, to_seq)), ("config_set", (key, value)):
the caller runs config_set through heatgw.cfgedit, the console's path (the value checked
against the schema, the whole configuration validated, written sealed; it takes effect
at the next boot), after this module is dropped. A key outside CONFIG_KEYS is invalid
here, before the counter is spent.

Results: ack for .../cmd/ack, {"id": id, "ok": True} or {"id": id, "ok": False,
"error": "<reason>: ..."}, id None when the message was not authenticated (its text is
not read); event: {"kind": "command", ...} or None. Rejections are counted per reason in
`counts`; their events are throttled to one per REJECT_EVENT_MS (with "suppressed": how
many went unreported since), so a flood of forgeries cannot push records out of the queue.
Nothing here prints a key or reads a clock.
"""

import json
import os
import struct

from heatgw import hmac256
from heatgw.store import SlotStore

MAX_PAYLOAD = 512  # bytes, BODY + "." + 64 hex digits
MAC_HEX = 64
VERSION = 1
CTR_MAX = 0x3FFFFFFF  # 2**30 - 1, a small int on every port (1 << 30 is a long int there)
SOURCE = "mqtt"
REJECT_EVENT_MS = 60000
ROTATE_INFO = b"heatgw rotate_key "

REASONS = ("accepted", "oversized", "malformed", "no_key", "forged", "invalid", "replayed",
           "failed", "error")
_ARGS = {"maintenance": ("on",), "reset": (), "publish_state": (), "resend":
         ("from_seq", "to_seq"), "rotate_key": ("key",), "config_set": ("key", "value"),
         "sink": ("available",)}
# The keys config_set may change: thresholds and intervals. Never secrets (they are not in
# the configuration), the broker or its credentials, sensors and wiring, the control tick,
# the watchdog or anything the dead-man hardware depends on.
CONFIG_KEYS = ("control.sink_return_max_c", "control.sink_return_hyst_k",
               "control.it_coolant_max_c", "control.it_coolant_hyst_k",
               "control.sink_flow_min_m3h", "control.sink_flow_hyst_m3h",
               "control.recover_s", "control.min_dwell_s", "telemetry.interval_s",
               "persist.interval_s")
_FIELDS = ("v", "node", "id", "ctr", "cmd", "args")
_TICKS_MAX = 0x3FFFFFFF
_TICKS_HALF = 0x20000000
# Returned when even building a rejection failed (MemoryError): shared, read-only.
_INTERNAL = ({"id": None, "ok": False, "error": "error: internal"}, None, None)


class _Reject(Exception):
    def __init__(self, reason, msg):
        super().__init__(msg)
        self.reason = reason
        self.msg = msg


def _ticks_diff(a, b):
    d = (a - b) & _TICKS_MAX
    if d >= _TICKS_HALF:
        d -= _TICKS_MAX
        d -= 1
    return d


def _why(e):
    # the same text on every port: CPython's OSError subclasses carry the errno too
    if isinstance(e, OSError) and e.args:
        return "OSError %s" % (e.args[0],)
    return type(e).__name__


def _hex64(v):
    if type(v) is not str or len(v) != 64:
        return False
    for c in v:
        if c not in "0123456789abcdefABCDEF":
            return False
    return True


def _small_int(v, lo, hi):
    return type(v) is int and lo <= v <= hi


def _text_id(v):
    if type(v) is not str or not 1 <= len(v) <= 32:
        return False
    for c in v:
        if not "!" <= c <= "~":
            return False
    return True


def wrap_key(current_key, new_key, ctr):
    """new_key XOR HMAC-SHA256(current_key, "heatgw rotate_key <ctr>") (both 32 bytes);
    its own inverse: the signer wraps, the node unwraps."""
    pad = hmac256.Key(current_key).mac(ROTATE_INFO + str(ctr).encode())
    out = bytearray(32)
    for i in range(32):
        out[i] = new_key[i] ^ pad[i]
    return bytes(out)


class Commands:
    def __init__(self, node, secrets, inbox, counter_paths, secrets_path=None):
        self.node = node
        self.secrets = secrets
        self.inbox = inbox
        self.secrets_path = secrets_path
        self.counts = dict.fromkeys(REASONS, 0)
        self._store = SlotStore(counter_paths[0], counter_paths[1], max_payload=4)
        self.last_ctr = 0
        self.counter_lost = False
        _, data = self._store.load()
        if data is not None and len(data) == 4:
            self.last_ctr = struct.unpack("<I", data)[0]
        else:
            for p in counter_paths:
                try:
                    os.stat(p)
                    # The files exist but hold no counter: replays would be accepted.
                    # Fail closed until provisioning writes a new key (forget_counter).
                    self.counter_lost = True
                except OSError:
                    pass
        self._key = None
        k = secrets.get("command_key") if secrets is not None else None
        if k is not None:
            self._key = hmac256.Key(k.reveal())
        self._last_ev_ms = None
        self.suppressed = 0

    def handle(self, payload, now_ms=None):
        """(ack, event, action) for one payload; never raises."""
        try:
            return self._handle(payload, now_ms)
        except Exception:  # MemoryError, a bug: still an answer, and counted
            try:
                self.counts["error"] += 1
                return self._rejected(None, None, "error", "error: internal", now_ms)
            except Exception:
                return _INTERNAL

    def _handle(self, payload, now_ms):
        cid = None
        cmd = None
        try:
            body, mac = self._frame(payload)
            doc = self._parse(body)
            cid = doc.get("id") if _text_id(doc.get("id")) else None
            cmd, ctr, args = self._check(doc)
            if ctr <= self.last_ctr:
                raise _Reject("replayed", "ctr %d is not above the last accepted %d"
                              % (ctr, self.last_ctr))
            self.last_ctr = ctr  # also when the save fails: no second try in this boot
            try:
                self._store.save(struct.pack("<I", ctr))
            except Exception as e:
                raise _Reject("failed", "the counter could not be saved (%s): not executed"
                              % _why(e)) from None
            action = self._act(cmd, ctr, args, now_ms)
        except _Reject as r:
            self.counts[r.reason] += 1
            return self._rejected(cid, cmd, r.reason, r.reason + ": " + r.msg, now_ms)
        self.counts["accepted"] += 1
        ev = {"kind": "command", "result": "accepted", "source": SOURCE, "cmd": cmd,
              "id": cid, "ctr": ctr}
        if cmd == "maintenance":
            ev["on"] = args["on"]
        elif cmd == "sink":
            ev["available"] = args["available"]
        elif cmd == "resend":
            ev["from_seq"] = args["from_seq"]
            ev["to_seq"] = args["to_seq"]
        elif cmd == "config_set":
            ev["key"] = args["key"]
        return {"id": cid, "ok": True}, ev, action

    def _frame(self, payload):
        if type(payload) is str and len(payload) <= MAX_PAYLOAD:  # else: too long anyway
            payload = payload.encode()
        elif not isinstance(payload, (bytes, bytearray, memoryview, str)):
            raise _Reject("malformed", "the payload must be bytes")
        n = len(payload)
        if n > MAX_PAYLOAD:
            raise _Reject("oversized", "%d bytes, the limit is %d" % (n, MAX_PAYLOAD))
        p = bytes(payload)
        if n < MAC_HEX + 3 or p[n - MAC_HEX - 1] != 0x2E:  # "."
            raise _Reject("malformed", "expected <json body>.<64 hex digits of its "
                          "HMAC-SHA256>")
        body = p[:n - MAC_HEX - 1]
        try:
            mac = bytes.fromhex(p[n - MAC_HEX:].decode())
        except Exception:  # ValueError, UnicodeError
            mac = None
        if mac is None or len(mac) != 32:
            raise _Reject("malformed", "the mac must be 64 hex digits")
        if self.counter_lost:
            raise _Reject("failed", "the command counter was lost (its files are "
                          "damaged): provision a new command key")
        if self._key is None:
            raise _Reject("no_key", "no command key provisioned: commands are refused")
        if not hmac256.equal(self._key.mac(body), mac):
            raise _Reject("forged", "the mac does not match the body (wrong key, or the "
                          "body was changed)")
        return body, mac

    def _parse(self, body):
        if body[0] != 0x7B or body[len(body) - 1] != 0x7D:  # { ... }
            raise _Reject("invalid", "the body must be a JSON object, from { to }")
        try:
            doc = json.loads(body.decode())
        except Exception:  # ValueError, UnicodeError
            doc = None
        if type(doc) is not dict:
            raise _Reject("invalid", "the body is not a JSON object")
        return doc

    def _check(self, doc):
        for k in doc:
            if k not in _FIELDS:
                raise _Reject("invalid", "unknown field %s; have %s"
                              % (json.dumps(k[:16]), ", ".join(_FIELDS)))
        if doc.get("v") != VERSION or type(doc.get("v")) is not int:
            raise _Reject("invalid", "v: must be %d" % VERSION)
        if doc.get("node") != self.node:
            raise _Reject("invalid", "node: this is node %s" % json.dumps(self.node))
        if not _text_id(doc.get("id")):
            raise _Reject("invalid", "id: must be 1..32 printable ASCII characters")
        ctr = doc.get("ctr")
        if not _small_int(ctr, 1, CTR_MAX):
            raise _Reject("invalid", "ctr: must be an int 1..%d" % CTR_MAX)
        cmd = doc.get("cmd")
        if type(cmd) is not str or cmd not in _ARGS:
            raise _Reject("invalid", "cmd: must be one of %s" % ", ".join(sorted(_ARGS)))
        args = doc.get("args", {})
        if type(args) is not dict:
            raise _Reject("invalid", "args: must be an object")
        want = _ARGS[cmd]
        for k in args:
            if k not in want:
                raise _Reject("invalid", "args: %s takes %s" % (cmd, ", ".join(want)
                                                               or "no args"))
        for k in want:
            if k not in args:
                raise _Reject("invalid", "args.%s: missing" % k)
        if cmd == "maintenance":
            if args["on"] is not True and args["on"] is not False:
                raise _Reject("invalid", "args.on: must be true or false")
        elif cmd == "sink":
            if args["available"] is not True and args["available"] is not False:
                raise _Reject("invalid", "args.available: must be true or false")
        elif cmd == "resend":
            a = args["from_seq"]
            b = args["to_seq"]
            if not (_small_int(a, 0, CTR_MAX) and _small_int(b, 0, CTR_MAX) and a <= b):
                raise _Reject("invalid", "args: from_seq and to_seq must be ints with "
                              "0 <= from_seq <= to_seq <= %d" % CTR_MAX)
        elif cmd == "rotate_key":
            k = args["key"]
            if not _hex64(k):  # never echoed
                raise _Reject("invalid", "args.key: must be 64 hex digits")
        elif cmd == "config_set":
            k = args["key"]
            if type(k) is not str or k not in CONFIG_KEYS:
                raise _Reject("invalid", "args.key: %s cannot be set remotely; one of %s"
                              % (json.dumps(k[:40]) if type(k) is str else "not a string",
                                 ", ".join(CONFIG_KEYS)))
            v = args["value"]
            if type(v) is not int and type(v) is not float:
                raise _Reject("invalid", "args.value: must be a number")
        return cmd, ctr, args

    def _act(self, cmd, ctr, args, now_ms=None):
        try:
            if cmd == "maintenance":
                self.inbox.post(SOURCE, "maintenance", args["on"])
            elif cmd == "sink":
                self.inbox.post(SOURCE, "sink_available", args["available"],
                                now_ms if type(now_ms) is int else None)
            elif cmd == "reset":
                self.inbox.post(SOURCE, "trip_reset")
        except ValueError as e:  # the inbox is full or refuses a source: nothing queued
            raise _Reject("failed", "%s" % (e,)) from None
        if cmd == "publish_state":
            return ("publish_state", None)
        if cmd == "resend":
            return ("resend", (args["from_seq"], args["to_seq"]))
        if cmd == "config_set":
            return ("config_set", (args["key"], args["value"]))
        if cmd == "rotate_key":
            self._rotate(ctr, args["key"])
        return None

    def _rotate(self, ctr, wrapped_hex):
        from heatgw import secrets as _secrets  # rare: not resident for it

        if self.secrets_path is None:
            raise _Reject("failed", "no secrets file to write the new key to")
        new = wrap_key(self.secrets.get("command_key").reveal(), bytes.fromhex(wrapped_hex),
                       ctr)
        values = self.secrets.as_dict()
        values["command_key"] = new
        try:
            _secrets.save(self.secrets_path, values)
        except Exception as e:  # OSError, MemoryError: the old key stays
            raise _Reject("failed", "the new key could not be saved (%s); the old key "
                          "stays" % _why(e)) from None
        self.secrets = _secrets.Secrets(values)
        self._key = hmac256.Key(new)

    def _rejected(self, cid, cmd, reason, error, now_ms):
        ack = {"id": cid, "ok": False, "error": error}
        if now_ms is not None and self._last_ev_ms is not None and \
                _ticks_diff(now_ms, self._last_ev_ms) < REJECT_EVENT_MS:
            self.suppressed += 1
            return ack, None, None
        self._last_ev_ms = now_ms
        ev = {"kind": "command", "result": "rejected", "source": SOURCE, "reason": reason,
              "error": error, "id": cid, "cmd": cmd, "suppressed": self.suppressed}
        self.suppressed = 0
        return ack, ev, None


def forget_counter(counter_paths):
    """Provisioning, after writing a NEW command key: drop the old key's counter (a
    counter belongs to its key), so the node accepts commands from ctr 1 again."""
    for p in counter_paths:
        try:
            os.remove(p)
        except OSError:
            pass
