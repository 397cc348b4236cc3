"""Provision a node: its configuration and secrets, from flags or a few questions, validated
with the node's own schema, written sealed to the device with the real mpremote, read back.

    python -m host_tools.provision --port /dev/ttyACM0 --node gw-07 --site plant \\
        --mains-hz 50 --sensor supply:1000:4 --sensor return:1000:4 \\
        --sensor sink_return:1000:3 --sensor it_coolant:1000:3 --flow 0.1:15 \\
        --meter-in return --fluid water --set control.sink_return_max_c=42 \\
        --broker 10.0.0.5:1883 --mqtt-user gw07 --mqtt-password-file gw07.pw \\
        --command-key-file gw07.key --yes --reset
    python -m host_tools.provision --port PORT -i        the same, asked question by question
    python -m host_tools.provision --port PORT --show    the device's configuration (masked)
    python -m host_tools.provision --out DIR ...          the two files into DIR, no device

What it does, in this order:
1. builds config.json from the flags (or the answers; `--from FILE` starts from a file,
   `--from-device` from the device's current one) and the secrets given now (the MQTT and
   Wi-Fi passwords, the command key);
2. validates them with the node's own code (host_tools.config_check: the schema, strict
   JSON, the seal; heatgw.secrets): a bad flag or value is a clear error, exit 2, and
   nothing is written (the configuration is checked before the device is even opened);
3. reads the device's config.json (`mpremote connect PORT fs cp :config.json ...`; the
   REPL's working directory is the node's data folder) and shows the difference key by
   key; stages the secrets given as secrets.json.in (sealed) and lets the node merge them
   with its secrets.json (a secret not given is kept) and say, by name only, what would
   be added or changed: secret values never travel back over the serial line (whatever
   logs it), not even read back;
4. after confirmation (or --yes) writes config.json sealed (heatgw.seal: SHA-256) as
   config.json.new, renamed on the device (atomic on littlefs), and has the node write
   its merged secrets.json (heatgw.secrets.save: sealed, atomic); a new command key also
   drops the node's command counter (it belongs to the key); `--tls-ca FILE` copies the
   broker's CA as ca.der. Cancelled: the staged file is removed, nothing changes;
5. reads config.json back (identical bytes, seal matches) and has the node check its
   secrets.json (loads, seal matches, the names), and prints the configuration on the
   device (secrets as names). The node runs it from its next boot (`--reset` resets it).

mpremote stops a running application when it connects (Ctrl-C: relays safe, totals saved,
as README "The host board's serial port" says), so the node sits at its REPL afterwards
until it is reset.

Passwords never travel on a command line and are never printed: they come from a file
(`--mqtt-password-file`, `--wifi-password-file`, the first line) or a prompt without echo,
go to the device in a temporary file (mode 600, deleted after), and the output names keys
only. Exit: 0 done, 1 the device failed, 2 bad flags or an invalid configuration.
"""

import argparse
import getpass
import json
import os
import secrets as _random
import subprocess
import sys
import tempfile
from pathlib import Path

from host_tools import config_check  # noqa: F401 - puts firmware/ on sys.path
from host_tools.paths import FIRMWARE

if str(FIRMWARE) not in sys.path:
    sys.path.insert(0, str(FIRMWARE))

from heatgw import cfgedit, config  # noqa: E402
from heatgw import secrets as node_secrets  # noqa: E402
from heatgw.config_schema import VERSION  # noqa: E402

SENSORS = ("supply", "return", "sink_return", "it_coolant")


class ProvisionError(Exception):
    """A bad flag or value: exit 2, nothing written."""


class DeviceError(Exception):
    """mpremote or the device failed: exit 1."""


# -- the device, through the real mpremote ---------------------------------------------

class Device:
    """Files in the node's data folder (the REPL's working directory), with mpremote."""

    def __init__(self, port, timeout=120):
        self.port = port
        self.timeout = timeout
        self.tmp = tempfile.mkdtemp(prefix="heatgw-provision-")
        os.chmod(self.tmp, 0o700)

    def _run(self, *args):
        cmd = [sys.executable, "-m", "mpremote", "connect", self.port, *args]
        try:
            r = subprocess.run(cmd, capture_output=True, timeout=self.timeout, check=False)
        except subprocess.TimeoutExpired:
            raise DeviceError(f"mpremote on {self.port}: no answer in {self.timeout} s") \
                from None
        return r.returncode, r.stdout.decode(errors="replace"), \
            r.stderr.decode(errors="replace")

    def get(self, names):
        """{name: bytes or None (absent)} of files on the device, in one session."""
        args = []
        local = {}
        for n in names:
            local[n] = os.path.join(self.tmp, "get-" + n)
            if os.path.exists(local[n]):
                os.remove(local[n])
        # one session: a file that is absent makes mpremote stop, so ask which exist first
        rc, out, err = self._run("exec", "import os\nprint('FILES', sorted(os.listdir()))")
        if rc != 0 or "FILES" not in out:
            raise DeviceError(f"mpremote on {self.port}: cannot list the node's files "
                              f"({(err or out).strip()[-300:]})")
        have = json.loads(out[out.index("FILES") + 6:].strip().splitlines()[0]
                          .replace("'", '"'))
        for n in names:
            if n in have:
                if args:
                    args.append("+")
                args += ["fs", "cp", ":" + n, local[n]]
        if args:
            rc, out, err = self._run(*args)
            if rc != 0:
                raise DeviceError(f"mpremote on {self.port}: reading failed "
                                  f"({(err or out).strip()[-300:]})")
        got = {}
        for n in names:
            if n in have:
                with open(local[n], "rb") as f:
                    got[n] = f.read()
                os.remove(local[n])
            else:
                got[n] = None
        return got

    def put(self, files, rename=True):
        """Write {name: bytes} as name.new, then rename each over name on the device
        (atomic on littlefs); rename False: as name itself. One mpremote session. The
        local copies are private (mode 600) and removed at once."""
        args = []
        for n, data in files.items():
            p = os.path.join(self.tmp, "put-" + n)
            fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            if args:
                args.append("+")
            args += ["fs", "cp", p, ":" + n + (".new" if rename else "")]
        code = ["import os"]
        for n in files:
            if rename:
                code.append(f"os.rename({n + '.new'!r}, {n!r})")
        code.append("print('PROVISIONED')")
        args += ["+", "exec", "\n".join(code)]
        try:
            rc, out, err = self._run(*args)
        finally:
            for n in files:
                p = os.path.join(self.tmp, "put-" + n)
                if os.path.exists(p):
                    os.remove(p)
        if rc != 0 or "PROVISIONED" not in out:
            raise DeviceError(f"mpremote on {self.port}: writing failed "
                              f"({(err or out).strip()[-300:]})")

    def exec(self, code, marker):
        """Run code on the device; the text after the line starting with marker."""
        rc, out, err = self._run("exec", code)
        if rc != 0 or marker not in out:
            raise DeviceError(f"mpremote on {self.port}: {(err or out).strip()[-400:]}")
        return out[out.index(marker) + len(marker):].strip().splitlines()[0]

    def reset(self):
        rc, out, err = self._run("reset")
        if rc != 0:
            raise DeviceError(f"mpremote reset on {self.port}: {(err or out).strip()[-300:]}")

    def close(self):
        for p in Path(self.tmp).glob("*"):
            p.unlink()
        os.rmdir(self.tmp)


# -- building the two files ------------------------------------------------------------

def _num(text, what):
    try:
        v = json.loads(text)
    except ValueError:
        v = None
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ProvisionError(f"{what}: {text!r} is not a number")
    return v


def _sensor(spec):
    """NAME:R0:WIRES[:noncritical] -> (name, sensor object)."""
    parts = spec.split(":")
    if len(parts) not in (3, 4) or parts[0] not in SENSORS:
        raise ProvisionError(f"--sensor {spec}: expected NAME:R0:WIRES[:noncritical], NAME "
                             f"one of {', '.join(SENSORS)} (e.g. sink_return:1000:3)")
    s = {"r0_ohm": _num(parts[1], f"--sensor {spec}: R0"),
         "wires": _num(parts[2], f"--sensor {spec}: WIRES")}
    if len(parts) == 4:
        if parts[3] != "noncritical":
            raise ProvisionError(f"--sensor {spec}: the 4th part can only be noncritical")
        s["critical"] = False
    return parts[0], s


def _set_value(spec):
    key, eq, text = spec.partition("=")
    if not eq or not key:
        raise ProvisionError(f"--set {spec}: expected KEY=VALUE, e.g. "
                             "control.sink_return_max_c=42")
    if key.split(".")[0] in ("version", "secrets") or cfgedit.is_secret(key):
        raise ProvisionError(f"--set {key}: not settable here (secrets go to secrets.json "
                             "through their own flags)")
    value, err = cfgedit.typed(key, text)
    if err is not None:
        raise ProvisionError(f"--set {spec}: {err}")
    return key, value


def build_config(ns, base):
    """The configuration document from the flags on top of base (a dict)."""
    doc = cfgedit.copy(base)
    doc["version"] = VERSION
    if ns.node:
        doc["node_id"] = ns.node
    if ns.mains_hz is not None:
        cfgedit.put(doc, "site.mains_hz", _num(ns.mains_hz, "--mains-hz"))
    if ns.sensor:
        doc["sensors"] = {}
        for spec in ns.sensor:
            name, s = _sensor(spec)
            if name in doc["sensors"]:
                raise ProvisionError(f"--sensor {name}: given twice")
            doc["sensors"][name] = s
    if ns.no_flow:
        doc["flow"] = None
    elif ns.flow:
        lpp, colon, mx = ns.flow.partition(":")
        if not colon:
            raise ProvisionError(f"--flow {ns.flow}: expected LITRES_PER_PULSE:MAX_M3H, "
                                 "e.g. 0.1:15")
        doc["flow"] = {"type": "pulse", "litres_per_pulse": _num(lpp, "--flow: litres"),
                       "max_m3h": _num(mx, "--flow: max m3/h")}
    if ns.meter_in:
        cfgedit.put(doc, "meter.meter_in_return", ns.meter_in == "return")
    if ns.fluid:
        name, colon, frac = ns.fluid.partition(":")
        cfgedit.put(doc, "meter.fluid", name)
        cfgedit.put(doc, "meter.mass_fraction",
                    _num(frac, f"--fluid {ns.fluid}: mass fraction") if colon else 0.0)
    for flag, key in (("sink_return_max", "control.sink_return_max_c"),
                      ("it_coolant_max", "control.it_coolant_max_c"),
                      ("sink_flow_min", "control.sink_flow_min_m3h")):
        v = getattr(ns, flag)
        if v is not None:
            cfgedit.put(doc, key, _num(v, "--" + flag.replace("_", "-")))
    if ns.no_broker:
        doc["mqtt"] = None
    elif ns.broker:
        host, colon, port = ns.broker.rpartition(":")
        if not colon:
            host, port = ns.broker, None
        m = doc.get("mqtt") if isinstance(doc.get("mqtt"), dict) else {}
        m["host"] = host
        m["port"] = _num(port, f"--broker {ns.broker}: port") if port else None
        doc["mqtt"] = m
    if ns.site:
        if not isinstance(doc.get("mqtt"), dict):
            raise ProvisionError("--site: the site names the node's MQTT topics: give "
                                 "--broker too")
        doc["mqtt"]["site"] = ns.site
    if ns.mqtt_user:
        if not isinstance(doc.get("mqtt"), dict):
            raise ProvisionError("--mqtt-user: give --broker too")
        doc["mqtt"]["username"] = ns.mqtt_user
    if ns.tls_ca:
        if not isinstance(doc.get("mqtt"), dict):
            raise ProvisionError("--tls-ca: give --broker too")
        doc["mqtt"]["tls"] = {"ca_file": "ca.der"}
    for spec in ns.set or ():
        key, value = _set_value(spec)
        cfgedit.put(doc, key, value)
    return doc


def check_config(doc):
    """The sealed bytes of doc when the node would run it, else ProvisionError with the
    node's own errors (host_tools.config_check on the very bytes to be written)."""
    data = config.seal(config.text(doc))
    with tempfile.TemporaryDirectory() as d:
        p = os.path.join(d, "config.json")
        with open(p, "wb") as f:
            f.write(data)
        cfg, errors, _mig = config_check.check(p)
    if errors:
        raise ProvisionError("the configuration is invalid (nothing written):\n  " +
                             "\n  ".join(e.replace(p, "config.json") for e in errors))
    return data, cfg


def _first_line(path, what):
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeError) as e:
        raise ProvisionError(f"{what} {path}: cannot be read ({e.__class__.__name__})") \
            from None
    line = text.split("\n")[0].rstrip("\r")
    if not line:
        raise ProvisionError(f"{what} {path}: the first line is empty")
    return line


def _ask_secret(prompt, interactive):
    if not interactive:
        return None
    v = getpass.getpass(prompt)
    return v or None


def build_secrets(ns, interactive):
    """(values, notes): the secrets given now ({key: raw value as in the file}), from
    files and prompts; the node keeps the others it has."""
    values = {}
    notes = []
    if ns.mqtt_password_file:
        values["mqtt_password"] = _first_line(ns.mqtt_password_file, "--mqtt-password-file")
    elif ns.mqtt_user:
        pw = _ask_secret(f"MQTT password for {ns.mqtt_user} (empty: keep the node's): ",
                         interactive)
        if pw is not None:
            values["mqtt_password"] = pw
    if ns.wifi_ssid:
        values["wifi_ssid"] = ns.wifi_ssid
        if ns.wifi_open:
            values["wifi_password"] = ""
        elif ns.wifi_password_file:
            values["wifi_password"] = _first_line(ns.wifi_password_file,
                                                  "--wifi-password-file")
        else:
            pw = _ask_secret(f"Wi-Fi password for {ns.wifi_ssid}: ", interactive)
            if pw is None:
                raise ProvisionError("--wifi-ssid: give --wifi-password-file or --wifi-open "
                                     "(passwords are never taken on the command line), or "
                                     "run with -i")
            values["wifi_password"] = pw
    if ns.command_key_file:
        p = Path(ns.command_key_file)
        if p.exists():
            from host_tools.command import CommandError, read_key

            try:
                values["command_key"] = read_key(str(p)).hex()
            except CommandError as e:
                raise ProvisionError(f"--command-key-file: {e}") from None
        else:
            key = _random.token_bytes(32)
            fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(key.hex() + "\n")
            values["command_key"] = key.hex()
            notes.append(f"a new command key was written to {p} (mode 600): sign the "
                         "node's commands with it (host_tools.command --key-file)")
    errs = [e for e in (node_secrets._check(k, values[k]) for k in sorted(values)) if e]
    if errs:
        raise ProvisionError("; ".join("secrets.json: " + e for e in errs))
    return values, notes


def secrets_bytes(values):
    """A secrets file's bytes as heatgw.secrets.save writes it (sealed), made in a private
    temporary folder (heatgw.secrets checks the values, the cross-key rules included)."""
    with tempfile.TemporaryDirectory() as d:
        os.chmod(d, 0o700)
        p = os.path.join(d, "secrets.json")
        try:
            node_secrets.save(p, values)
        except node_secrets.SecretsError as e:
            raise ProvisionError(str(e).replace(p, "secrets.json")) from None
        with open(p, "rb") as f:
            return f.read()


# Run on the node (mpremote exec): merge the staged secrets (secrets.json.in, sealed) into
# its secrets.json and say what changes, by key name only; nothing secret is printed, so
# nothing secret travels back over the serial line. MODE: preview, commit, cancel, check.
ON_NODE = r"""
import json, os
from heatgw import seal, secrets
IN = "secrets.json.in"


def hexed(v):
    import binascii
    return binascii.hexlify(v).decode() if type(v) is bytes else v


def main(mode):
    if mode == "cancel":
        try:
            os.remove(IN)
        except OSError:
            pass
        return {"cancelled": True}
    out = {}
    try:
        old = secrets.load("secrets.json")
    except secrets.SecretsError as e:  # its text names keys, never values
        out["bad"] = str(e)
        old = secrets.Secrets()
    if mode == "check":
        out["names"] = old.names()
        try:
            with open("secrets.json", "rb") as f:
                out["sealed"] = seal.check(f.read()) is True
        except OSError:
            out["sealed"] = None
        return out
    with open(IN, "rb") as f:
        raw = f.read()
    if seal.check(raw) is not True:
        return {"error": "the staged secrets arrived damaged (seal mismatch)"}
    new = json.loads(raw)
    new.pop("sha256")
    new.pop("version", None)
    vals = {}
    for k in old.names():
        vals[k] = hexed(old.get(k).reveal())
    status = {}
    for k in new:
        status[k] = "added" if k not in vals else ("same" if vals[k] == new[k] else
                                                   "changed")
        vals[k] = new[k]
    for k in vals:
        if k not in status:
            status[k] = "kept"
    try:
        secrets.from_dict(vals, "secrets.json")
    except secrets.SecretsError as e:
        return {"error": str(e)}
    out["status"] = status
    if mode == "commit":
        secrets.save("secrets.json", vals)
        os.remove(IN)
        out["counter_reset"] = status.get("command_key") in ("added", "changed")
        if out["counter_reset"]:  # the counter belongs to the key (heatgw.command)
            for n in ("cmdctr.a", "cmdctr.b"):
                try:
                    os.remove(n)
                except OSError:
                    pass
    return out


print("SECRETS " + json.dumps(main(MODE)))
"""


def on_node(dev, mode):
    r = json.loads(dev.exec(f"MODE = {mode!r}\n" + ON_NODE, "SECRETS "))
    if r.get("error"):
        raise DeviceError("the node refused the secrets: " + r["error"])
    return r


# -- showing -----------------------------------------------------------------------------

def describe(raw, name):
    """(parsed document or None, one line about the device's file)."""
    if raw is None:
        return None, f"{name}: none on the device"
    doc, err, sealed = config.parse(raw, name)
    if err is not None:
        return None, f"{name}: {err.split(': ', 1)[1]}"
    return doc, f"{name}: {'sealed, seal matches' if sealed else 'no seal (edited by hand)'}"


def _filled(doc):
    """What the node runs for doc: the filled configuration; the default without one."""
    if doc is None:
        return config.default()
    cfg, errs, source, _ = config.from_doc(cfgedit.copy(doc), "config.json", save=False)
    return cfg if source == "file" else doc


def diff_lines(old_doc, new_cfg, status):
    lines = []
    for k, a, b in cfgedit.diff(_filled(old_doc), new_cfg):
        lines.append(f"  {k}: {cfgedit.show(k, a)} -> {cfgedit.show(k, b)}")
    for k in sorted(status):
        if status[k] in ("added", "changed"):
            lines.append(f"  secrets.json {k}: {status[k]} (values never shown)")
    return lines


def shown(cfg, secret_names):
    lines = []
    for k, v in _leaves("", cfg, []):
        lines.append(f"  {k} = {cfgedit.show(k, v)}")
    lines.append("  secrets.json: " + (", ".join(f"{n} = {cfgedit.HIDDEN}"
                                                for n in secret_names) or "none"))
    return lines


def _leaves(key, v, out):
    if isinstance(v, dict) and v:
        for k in sorted(v):
            _leaves(f"{key}.{k}" if key else k, v[k], out)
    else:
        out.append((key, v))
    return out


# -- the command -----------------------------------------------------------------------

QUESTIONS = (
    ("node", "Node id (letters, digits, - and _)", None),
    ("mains_hz", "Mains frequency at the site, Hz (50 or 60)", "50"),
    ("sensors", "Sensors NAME:R0:WIRES, space separated (e.g. supply:1000:4 ...; - for "
                "none)", "-"),
    ("flow", "Flow meter LITRES_PER_PULSE:MAX_M3H (- for none)", "-"),
    ("meter_in", "Flow meter in the return or the flow pipe (return/flow)", "return"),
    ("fluid", "Fluid (water, propylene_glycol:0.3, ethylene_glycol:0.25)", "water"),
    ("sink_return_max", "Bypass when the sink return is above, C", "45"),
    ("it_coolant_max", "Bypass (latching) when the IT coolant is above, C", "44"),
    ("sink_flow_min", "Bypass when the sink flow is below, m3/h", "3"),
    ("broker", "MQTT broker HOST[:PORT] (- for no telemetry)", "-"),
    ("site", "Site id for the MQTT topics", None),
    ("mqtt_user", "MQTT user name (- for anonymous)", "-"),
    ("wifi_ssid", "Wi-Fi network name (- for a wired node)", "-"),
)


def ask(ns, inp=input):
    """Fill the namespace from questions (the flags already given are not asked)."""
    for attr, q, default in QUESTIONS:
        if attr == "sensors":
            if ns.sensor:
                continue
        elif getattr(ns, attr) not in (None, False):
            continue
        if attr in ("site", "mqtt_user") and not ns.broker:
            continue
        a = inp(f"{q}" + (f" [{default}]" if default else "") + ": ").strip() or default
        if a in (None, "-"):
            continue
        if attr == "sensors":
            ns.sensor = a.split()
        else:
            setattr(ns, attr, a)


def parser():
    p = argparse.ArgumentParser(prog="python -m host_tools.provision", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--port", help="the node's serial port (mpremote connect PORT)")
    where.add_argument("--out", help="write config.json and secrets.json into this folder "
                                     "instead (no device)")
    p.add_argument("-i", "--interactive", action="store_true",
                   help="ask for what the flags do not give (passwords without echo)")
    p.add_argument("--show", action="store_true",
                   help="only show the device's configuration (secrets masked)")
    p.add_argument("--from", dest="from_file", help="start from this config.json")
    p.add_argument("--from-device", action="store_true",
                   help="start from the device's current config.json")
    p.add_argument("--node", help="node_id (letters, digits, - and _)")
    p.add_argument("--site", help="site id in the MQTT topics")
    p.add_argument("--mains-hz", help="50 or 60: the RTD converters' mains filter")
    p.add_argument("--sensor", action="append",
                   help="NAME:R0:WIRES[:noncritical], NAME supply, return, sink_return, "
                        "it_coolant (repeat; replaces every sensor)")
    p.add_argument("--flow", help="LITRES_PER_PULSE:MAX_M3H of the pulse flow meter")
    p.add_argument("--no-flow", action="store_true", help="no flow meter")
    p.add_argument("--meter-in", choices=("return", "flow"),
                   help="the pipe the flow meter sits in")
    p.add_argument("--fluid", help="water, or propylene_glycol:FRACTION, "
                                   "ethylene_glycol:FRACTION (mass fraction, e.g. 0.3)")
    p.add_argument("--sink-return-max", help="control.sink_return_max_c, C")
    p.add_argument("--it-coolant-max", help="control.it_coolant_max_c, C")
    p.add_argument("--sink-flow-min", help="control.sink_flow_min_m3h, m3/h")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="any other key, e.g. control.recover_s=60 (repeat)")
    p.add_argument("--broker", help="MQTT broker HOST[:PORT]")
    p.add_argument("--no-broker", action="store_true", help="no telemetry (mqtt null)")
    p.add_argument("--tls-ca", help="the broker's CA certificate (PEM or DER): TLS, copied "
                                    "to the node as ca.der")
    p.add_argument("--mqtt-user", help="MQTT user name")
    p.add_argument("--mqtt-password-file", help="the MQTT password: this file's first line")
    p.add_argument("--wifi-ssid", help="Wi-Fi network name")
    p.add_argument("--wifi-password-file", help="the Wi-Fi password: this file's first line")
    p.add_argument("--wifi-open", action="store_true", help="an open Wi-Fi network")
    p.add_argument("--command-key-file",
                   help="the node's command key (64 hex digits or a secrets.json); made "
                        "here (mode 600) when the file does not exist")
    p.add_argument("--dry-run", action="store_true", help="show the difference, write nothing")
    p.add_argument("--yes", action="store_true", help="write without asking")
    p.add_argument("--reset", action="store_true", help="reset the node afterwards "
                                                        "(mpremote reset): it boots the new "
                                                        "configuration")
    return p


def _ca_der(path):
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise ProvisionError(f"--tls-ca {path}: cannot be read ({e.strerror})") from None
    if b"-----BEGIN CERTIFICATE-----" in data:
        import ssl

        return ssl.PEM_cert_to_DER_cert(data.decode("ascii", "replace"))
    return data


def run(ns, out=print, inp=input):
    interactive = ns.interactive
    if interactive:
        ask(ns, inp)
    dev = Device(ns.port) if ns.port else None
    try:
        if ns.show:
            if dev is None:
                raise ProvisionError("--show needs --port")
            doc, line = describe(dev.get(["config.json"])["config.json"], "config.json")
            out(line)
            chk = on_node(dev, "check")
            for x in shown(_filled(doc), chk["names"]):
                out(x)
            if chk.get("bad"):
                out("secrets.json: " + chk["bad"])
            return 0
        base = {}
        current = None
        if ns.from_file:
            try:
                raw = Path(ns.from_file).read_bytes()
            except OSError as e:
                raise ProvisionError(f"--from {ns.from_file}: {e.strerror}") from None
            base, err, _ = config.parse(raw, ns.from_file)
            if err is not None:
                raise ProvisionError(err)
        elif ns.from_device:
            if dev is None:
                raise ProvisionError("--from-device needs --port")
            current = dev.get(["config.json"])["config.json"]
            base, line = describe(current, "config.json")
            if base is None:
                raise ProvisionError(f"--from-device: {line}")
        doc = build_config(ns, base)
        data, cfg = check_config(doc)
        ca = _ca_der(ns.tls_ca) if ns.tls_ca else None
        values, notes = build_secrets(ns, interactive)
        if dev is None:
            sdata = secrets_bytes(values)
            Path(ns.out).mkdir(parents=True, exist_ok=True)
            for name, b in (("config.json", data), ("secrets.json", sdata)):
                fd = os.open(Path(ns.out) / name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
                             0o600)
                with os.fdopen(fd, "wb") as f:
                    f.write(b)
            if ca is not None:
                (Path(ns.out) / "ca.der").write_bytes(ca)
            out(f"wrote {ns.out}/config.json ({len(data)} bytes, sealed) and "
                f"{ns.out}/secrets.json ({', '.join(sorted(values)) or 'no secrets'}; "
                "values not shown)")
            for n in notes:
                out("note: " + n)
            return 0
        staged = secrets_bytes(values) if values else None
        # validated: now the device
        if current is None:
            current = dev.get(["config.json"])["config.json"]
        old_doc, line = describe(current, "config.json")
        if staged is not None:
            dev.put({"secrets.json.in": staged}, rename=False)
            status = on_node(dev, "preview")["status"]
        else:
            status = dict.fromkeys(on_node(dev, "check")["names"], "kept")
        out(f"device {ns.port}: {line}; secrets.json: "
            f"{', '.join(sorted(k for k in status if status[k] != 'added')) or 'none'}")
        changes = diff_lines(old_doc, cfg, status)
        if current == data and not ca and not changes:
            if staged is not None:
                on_node(dev, "cancel")
            out("no changes: the device already holds this configuration and these secrets")
            return 0
        out("changes on the device:" if changes else "changes on the device: none in the "
            "values (the files are rewritten sealed)")
        for x in changes:
            out(x)
        for n in notes:
            out("note: " + n)
        if "mqtt_password" not in status and isinstance(cfg.get("mqtt"), dict) and \
                cfg["mqtt"].get("username"):
            out("note: the node has no MQTT password: give --mqtt-password-file")
        if ns.dry_run or not (ns.yes or inp("Write the configuration and the secrets to "
                                            "the device? [y/N] ").strip().lower()
                              in ("y", "yes")):
            if staged is not None:
                on_node(dev, "cancel")
            out("dry run: nothing written" if ns.dry_run else "cancelled: nothing written")
            return 0
        files = {"config.json": data}
        if ca is not None:
            files["ca.der"] = ca
        dev.put(files)
        committed = on_node(dev, "commit") if staged is not None else {}
        back = dev.get(["config.json"])["config.json"]
        chk = on_node(dev, "check")
        if back != data or config.unseal(back) is not True:
            raise DeviceError("read back: config.json on the device differs from what was "
                              "written")
        if staged is not None and (chk.get("bad") or chk.get("sealed") is not True):
            raise DeviceError("read back: secrets.json: " + (chk.get("bad") or "no seal"))
        out(f"written and read back: config.json ({len(data)} bytes, sealed, seal matches); "
            f"secrets.json checked by the node: {', '.join(chk['names']) or 'none'}"
            f"{', sealed, seal matches' if chk.get('sealed') else ''}")
        if committed.get("counter_reset"):
            out("the node's command counter was reset with the new key: the signer's "
                "counter file starts afresh")
        out("configuration on the device (secrets masked):")
        for x in shown(cfg, chk["names"]):
            out(x)
        if ns.reset:
            dev.reset()
            out("reset: the node boots the new configuration")
        else:
            out("it takes effect at the node's next boot (--reset, or `reboot` at the "
                "console)")
        return 0
    finally:
        if dev is not None:
            dev.close()


def main(argv=None):
    ns = parser().parse_args(argv)
    try:
        return run(ns)
    except ProvisionError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except DeviceError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
