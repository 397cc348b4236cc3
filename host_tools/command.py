"""Sign (and optionally publish) a command for a node's <prefix>/<site>/<node>/cmd topic.

    python -m host_tools.command --key-file K --counter-file C --node n1 maintenance on
    python -m host_tools.command ... --site plant --broker 127.0.0.1:1883 reset
    python -m host_tools.command ... resend 120 180
    python -m host_tools.command ... rotate_key --new-key-file K2
    python -m host_tools.command ... config_set control.sink_return_max_c 42.5
    python -m host_tools.command ... sink available      # or: sink unavailable

Prints the signed payload (BODY.MAC, see firmware/heatgw/command.py), or with --broker
publishes it with QoS 1 and, unless --ack-timeout 0, waits for the node's answer on
.../cmd/ack and prints it (exit 1 when the node refused). The counter file holds the last
counter used for this node; it is incremented and saved BEFORE anything is printed or
sent, so no counter is ever used twice. The key file is either the node's secrets.json
(its command_key) or a file holding the key as 64 hex digits. Nothing prints a key.
Signing uses CPython's hmac: an implementation independent of the node's.
"""

import argparse
import hashlib
import hmac
import json
import os
import secrets as _random
import sys
import tempfile

from host_tools.paths import FIRMWARE

MAX_PAYLOAD = 512
ROTATE_INFO = b"heatgw rotate_key "


class CommandError(Exception):
    pass


def body(node, cid, ctr, cmd, args=None):
    """The compact JSON body (the signer's choice: the node verifies the bytes as sent)."""
    doc = {"v": 1, "node": node, "id": cid, "ctr": ctr, "cmd": cmd}
    if args:
        doc["args"] = args
    return json.dumps(doc, separators=(",", ":")).encode()


def sign(key, data):
    """BODY + b"." + hex HMAC-SHA256(key, BODY)."""
    return data + b"." + hmac.new(key, data, hashlib.sha256).hexdigest().encode()


def wrap_key(current_key, new_key, ctr):
    pad = hmac.new(current_key, ROTATE_INFO + str(ctr).encode(), hashlib.sha256).digest()
    return bytes(a ^ b for a, b in zip(new_key, pad, strict=True))


def read_key(path):
    """The 32-byte key of a secrets.json (command_key) or of a file of 64 hex digits."""
    try:
        text = open(path, encoding="utf-8").read()
    except OSError as e:
        raise CommandError(f"{path}: cannot be read ({e.strerror})") from None
    except UnicodeError:
        raise CommandError(f"{path}: not text") from None
    if text.lstrip().startswith("{"):
        sys.path.insert(0, str(FIRMWARE))
        try:
            from heatgw import secrets as node_secrets
        finally:
            sys.path.remove(str(FIRMWARE))
        try:
            s = node_secrets.load(path)
        except node_secrets.SecretsError as e:
            raise CommandError(str(e)) from None
        k = s.get("command_key")
        if k is None:
            raise CommandError(f"{path}: has no command_key")
        return k.reveal()
    h = text.strip()
    if len(h) != 64 or any(c not in "0123456789abcdefABCDEF" for c in h):
        raise CommandError(f"{path}: must hold 64 hex digits (a 32-byte key) or be a "
                           "secrets.json")
    return bytes.fromhex(h)


def _write_atomic(path, text, mode=0o600):
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def next_counter(path):
    """Increment the counter file (missing: starts at 0) and return the new counter."""
    try:
        text = open(path, encoding="utf-8").read().strip()
    except FileNotFoundError:
        text = "0"
    except OSError as e:
        raise CommandError(f"{path}: cannot be read ({e.strerror})") from None
    if not text.isdigit():
        raise CommandError(f"{path}: must hold the last counter used, a whole number")
    ctr = int(text) + 1
    if ctr > (1 << 30) - 1:
        raise CommandError(f"{path}: the counter is exhausted; provision a new key")
    _write_atomic(path, f"{ctr}\n", 0o644)
    return ctr


def _args(ns):
    c = ns.cmd
    if c == "maintenance":
        return {"on": ns.state == "on"}
    if c == "sink":
        return {"available": ns.state == "available"}
    if c == "resend":
        if not 0 <= ns.from_seq <= ns.to_seq <= (1 << 30) - 1:
            raise CommandError("resend: need 0 <= FROM <= TO <= 2**30-1")
        return {"from_seq": ns.from_seq, "to_seq": ns.to_seq}
    if c == "config_set":
        try:
            value = json.loads(ns.value)
        except ValueError:
            raise CommandError(f"config_set: VALUE must be a number, got {ns.value!r}") \
                from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise CommandError(f"config_set: VALUE must be a number, got {ns.value!r}")
        return {"key": ns.key, "value": value}
    return None


def _new_key(path):
    if os.path.exists(path):
        return read_key(path)
    k = _random.token_bytes(32)
    _write_atomic(path, k.hex() + "\n")
    print(f"new key written to {path}; use it as --key-file once the node has acked",
          file=sys.stderr)
    return k


def build(ns):
    """(topic, payload, id) for the parsed arguments; increments the counter file."""
    key = read_key(ns.key_file)
    args = _args(ns)
    new = _new_key(ns.new_key_file) if ns.cmd == "rotate_key" else None
    ctr = next_counter(ns.counter_file)
    cid = ns.id or f"{ns.cmd}-{ctr}"
    if new is not None:
        args = {"key": wrap_key(key, new, ctr).hex()}
    payload = sign(key, body(ns.node, cid, ctr, ns.cmd, args))
    if len(payload) > MAX_PAYLOAD:
        raise CommandError(f"the payload is {len(payload)} bytes, the node takes at most "
                           f"{MAX_PAYLOAD}: use a shorter --node or --id")
    return f"{ns.prefix}/{ns.site}/{ns.node}/cmd", payload, cid


def publish(ns, topic, payload, cid):
    """Publish with QoS 1; return the node's ack (a dict) or None if none is awaited."""
    import threading

    import paho.mqtt.client as mqtt

    host, _, port = ns.broker.rpartition(":")
    if not host or not port.isdigit():
        raise CommandError(f"--broker: expected host:port, got {ns.broker!r}")
    got = {}
    done = threading.Event()
    subscribed = threading.Event()

    def on_message(client, userdata, msg):
        try:
            ack = json.loads(msg.payload)
        except ValueError:
            return
        if isinstance(ack, dict) and ack.get("id") in (cid, None):
            got.update(ack)
            done.set()

    cl = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"heatgw-cmd-{os.getpid()}")
    if ns.username:
        pw = open(ns.password_file).read().strip() if ns.password_file else None
        cl.username_pw_set(ns.username, pw)
    if ns.ca_file:
        cl.tls_set(ca_certs=ns.ca_file)
    cl.on_message = on_message
    cl.on_subscribe = lambda *a: subscribed.set()
    try:
        cl.connect(host, int(port), keepalive=30)
    except OSError as e:
        raise CommandError(f"--broker {ns.broker}: cannot connect ({e})") from None
    cl.loop_start()
    try:
        if ns.ack_timeout > 0:
            cl.subscribe(topic + "/ack", qos=1)
            if not subscribed.wait(ns.ack_timeout):
                raise CommandError("the broker did not confirm the ack subscription")
        info = cl.publish(topic, payload, qos=1)
        info.wait_for_publish(timeout=max(ns.ack_timeout, 5.0))
        if not info.is_published():
            raise CommandError("the broker did not acknowledge the command")
        if ns.ack_timeout <= 0:
            return None
        if not done.wait(ns.ack_timeout):
            raise CommandError(f"no answer on {topic}/ack within {ns.ack_timeout} s")
        return got
    finally:
        cl.loop_stop()
        cl.disconnect()


def parser():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--key-file", required=True, help="secrets.json or 64 hex digits")
    p.add_argument("--counter-file", required=True, help="the last counter used (text)")
    p.add_argument("--node", required=True)
    p.add_argument("--site", default="site")
    p.add_argument("--prefix", default="heatgw")
    p.add_argument("--id", help="the command id (default <cmd>-<ctr>)")
    p.add_argument("--broker", help="host:port: publish instead of printing")
    p.add_argument("--username")
    p.add_argument("--password-file")
    p.add_argument("--ca-file", help="CA certificate: TLS with server verification")
    p.add_argument("--ack-timeout", type=float, default=10.0,
                   help="seconds to wait for the node's ack (0: do not wait)")
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("maintenance")
    m.add_argument("state", choices=("on", "off"))
    sub.add_parser("reset", help="reset latched trips (the fail-safe decides)")
    sub.add_parser("publish_state")
    r = sub.add_parser("resend")
    r.add_argument("from_seq", type=int)
    r.add_argument("to_seq", type=int)
    cs = sub.add_parser("config_set", help="one configuration key (thresholds, intervals: "
                        "the node's command.CONFIG_KEYS); saved for the node's next boot")
    cs.add_argument("key", help="e.g. control.sink_return_max_c")
    cs.add_argument("value", help="a number, e.g. 42.5")
    s = sub.add_parser("sink", help="the MQTT source of the sink rule: say it again "
                       "within control.sink_sources.mqtt")
    s.add_argument("state", choices=("available", "unavailable"))
    k = sub.add_parser("rotate_key")
    k.add_argument("--new-key-file", required=True,
                   help="the new key (made and written here if the file does not exist)")
    return p


def main(argv=None):
    ns = parser().parse_args(argv)
    try:
        topic, payload, cid = build(ns)
        if not ns.broker:
            print(payload.decode())
            return 0
        ack = publish(ns, topic, payload, cid)
    except CommandError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if ack is None:
        print(f"published to {topic}")
        return 0
    print(json.dumps(ack))
    return 0 if ack.get("ok") is True else 1


if __name__ == "__main__":
    sys.exit(main())
