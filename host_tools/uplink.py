"""The node's telemetry under the harness: the broker it is given, what it is provisioned
with, and the summary's `mqtt` block.

    up = Uplink("127.0.0.1:1883", user="node", password_file="pw.txt", ca_file="ca.pem",
                ha_prefix="homeassistant")
    cfg["mqtt"] = up.config_section(cfg.get("mqtt"))     # host, port, site, user, tls, HA
    up.secrets()          # {"mqtt_password": ...} for the node's secrets.json (or {})
    up.ca_der()           # the CA certificate as DER for the node's file system (or None)
    mqtt_block(records)   # the summary's mqtt block from each boot's last `mqtt` record

The password is read from its file only, kept out of every repr and message, and goes to
the provisioning process on its stdin (never a command line). The CA may be PEM or DER;
the node reads DER (heatgw.mqttsetup.tls_context).
"""

import ssl
from pathlib import Path

DEFAULT_SITE = "sim"  # the site id in the topics unless the scenario's mqtt section has one
NODE_DATA_DIR = "/flash"  # the host board's board.data_dir() (the provisioning checks it)
CA_NAME = "ca.der"
# the node's `mqtt` record (heatgw.telemetry.Telemetry.record), and how boots combine
MQTT_KEYS = ("published", "acked", "retransmitted", "reconnects", "queued_max", "dropped",
             "first_seq", "last_seq", "worst_tick_late_ms")
_SUM = ("published", "acked", "retransmitted", "reconnects", "dropped")
_MAX = ("queued_max", "last_seq", "worst_tick_late_ms")


class UplinkError(ValueError):
    """A bad broker option: the run does not start."""


def parse_address(text):
    """"HOST:PORT" -> (host, port); UplinkError with what is wrong."""
    host, sep, port = str(text).rpartition(":")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise UplinkError(f"--broker {text!r}: expected HOST:PORT (port 1..65535)")
    return host, int(port)


class Uplink:
    def __init__(self, broker, *, user=None, password_file=None, ca_file=None,
                 ha_prefix=None):
        self.host, self.port = parse_address(broker)
        self.user = user or None
        self.ca_file = Path(ca_file) if ca_file else None
        self.ha_prefix = ha_prefix or None
        self._password = None
        if password_file is not None:
            if self.user is None:
                raise UplinkError("--mqtt-password-file needs --mqtt-user (the node sends a "
                                  "password only with a user name)")
            try:
                text = Path(password_file).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as e:
                raise UplinkError(f"--mqtt-password-file {password_file}: cannot be read "
                                  f"({type(e).__name__})") from None
            self._password = text.rstrip("\r\n")  # the file's line ending is not part of it
            if not self._password:
                raise UplinkError(f"--mqtt-password-file {password_file}: empty")
        self._der = None
        if self.ca_file is not None:
            self._der = _der(self.ca_file)

    def __repr__(self):  # never the password
        return (f"<Uplink {self.host}:{self.port} user={self.user} "
                f"tls={self.ca_file is not None}>")

    def config_section(self, scenario_mqtt=None):
        """The node's `mqtt` section: the scenario's own (if any) with this broker."""
        m = dict(scenario_mqtt or {})
        m["host"] = self.host
        m["port"] = self.port
        m.setdefault("site", DEFAULT_SITE)
        if self.user:
            m["username"] = self.user
        if self._der is not None:
            m["tls"] = {"ca_file": f"{NODE_DATA_DIR}/{CA_NAME}"}
        if self.ha_prefix:
            m["ha_discovery_prefix"] = self.ha_prefix
        return m

    def secrets(self):
        """The node's secrets.json entries this broker needs (the raw password)."""
        return {} if self._password is None else {"mqtt_password": self._password}

    def ca_der(self):
        return self._der


def _der(path):
    try:
        data = path.read_bytes()
    except OSError as e:
        raise UplinkError(f"--ca {path}: cannot be read ({e.strerror})") from None
    if b"-----BEGIN CERTIFICATE-----" in data:
        try:
            return ssl.PEM_cert_to_DER_cert(data.decode("ascii"))
        except (ValueError, UnicodeDecodeError):
            raise UplinkError(f"--ca {path}: not a PEM certificate") from None
    if data[:1] != b"\x30":  # a DER certificate is an ASN.1 SEQUENCE
        raise UplinkError(f"--ca {path}: neither a PEM nor a DER certificate")
    return data


def topic_base(mqtt_cfg, node_id):
    return f"{mqtt_cfg.get('prefix') or 'heatgw'}/{mqtt_cfg['site']}/{node_id}"


def mqtt_block(last_by_boot):
    """The summary's `mqtt` block: exactly the node's record keys, over every boot (each
    boot's last record: counters summed, highs the largest, first_seq the first boot's
    that published). None when the node never emitted one."""
    recs = [r for _, r in sorted(last_by_boot.items())]
    if not recs:
        return None
    out = {k: sum(r.get(k) or 0 for r in recs) for k in _SUM}
    out.update({k: max(r.get(k) or 0 for r in recs) for k in _MAX})
    firsts = [r["first_seq"] for r in recs if r.get("first_seq")]
    out["first_seq"] = min(firsts) if firsts else 0
    return {k: out[k] for k in MQTT_KEYS}


def net_worst(last_by_boot):
    """The longest real time the node's network side held the CPU in one go (its record's
    worst_net_real_us, the largest over the boots): (ms, where), or (None, None)."""
    recs = [r for r in last_by_boot.values() if r.get("worst_net_where")]
    if not recs:
        return None, None
    r = max(recs, key=lambda r: r["worst_net_real_us"])
    return r["worst_net_real_us"] / 1000.0, r["worst_net_where"]


def uplink_summary(mqtt_cfg, node_id, block):
    """Where the records went, and whether the broker was reached: a broker that cannot
    be reached is no failure of the run, the records wait on the node's flash."""
    if not mqtt_cfg:
        return None
    reached = bool(block and block["acked"])
    return {"broker": f"{mqtt_cfg['host']}:{mqtt_cfg.get('port') or 'default'}",
            "tls": bool(mqtt_cfg.get("tls")), "username": mqtt_cfg.get("username"),
            "ha_discovery_prefix": mqtt_cfg.get("ha_discovery_prefix"),
            "topic_base": topic_base(mqtt_cfg, node_id), "reached": reached,
            "note": None if reached else
            "the broker acknowledged nothing (unreachable, refusing or never up): the "
            "records stay queued on the node's flash"}
