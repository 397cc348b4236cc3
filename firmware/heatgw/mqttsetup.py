"""The node's MQTT client from its configuration, built once at boot (heatgw.telemetry
loads this and drops it again): the client, its topics and its TLS context.

    c = from_config(cfg["mqtt"], cfg["node_id"], password, cb=..., inflight=1,
                    more_subs=(b"it/power",))   # topics subscribed besides .../cmd
    ctx = tls_context("/flash/ca.der")      # TLS with server verification

The password comes from the secrets file, never from the configuration.
"""

from heatgw.mqtt import Client, MQTTError


def tls_context(ca_file):
    """An SSLContext that verifies the server against the CA certificate in `ca_file`
    (DER). MQTTError with a clear reason when the port has no ssl or the file is bad."""
    try:
        import ssl
    except ImportError:
        raise MQTTError("TLS configured but this firmware has no ssl module") from None
    try:
        with open(ca_file, "rb") as f:
            der = f.read()
    except OSError:
        raise MQTTError("TLS CA file %s cannot be read" % ca_file) from None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies the server (CERT_REQUIRED)
    try:
        ctx.load_verify_locations(cadata=der)
    except (ValueError, OSError) as e:
        raise MQTTError("TLS CA file %s is not a DER certificate (%s)" % (ca_file, e)) from None
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def topic_base(mqtt_cfg, node_id):
    """`<prefix>/<site>/<node>` from the configuration's mqtt section."""
    return "%s/%s/%s" % (mqtt_cfg["prefix"], mqtt_cfg["site"], node_id)


def from_config(mqtt_cfg, node_id, password=None, more_subs=(), **kw):
    """A Client for the validated `mqtt` section (None when it is null: no telemetry).
    The password comes from the secrets file, never from the configuration. more_subs:
    topics subscribed besides `.../cmd` and Home Assistant's status."""
    if not mqtt_cfg:
        return None
    base = topic_base(mqtt_cfg, node_id)
    subs = [base + "/cmd"]
    ha = mqtt_cfg.get("ha_discovery_prefix")
    if ha:
        subs.append(ha + "/status")
    subs += more_subs
    tls = mqtt_cfg.get("tls")
    ctx = tls_context(tls["ca_file"]) if tls else None
    port = mqtt_cfg.get("port") or (8883 if tls else 1883)
    user = mqtt_cfg.get("username")
    return Client(mqtt_cfg.get("client_id") or node_id, mqtt_cfg["host"], port,
                  keepalive_s=mqtt_cfg["keepalive_s"],
                  clean_session=mqtt_cfg["clean_session"],
                  username=user, password=password if user else None,
                  will_topic=base + "/status", subs=subs, ssl=ctx, **kw)
