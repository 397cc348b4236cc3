"""tests/brokers.py: mosquitto and amqtt behind one interface, and where they differ.

Each case runs against both brokers with a paho-mqtt client (or, where paho would hide
it, a few raw MQTT 3.1.1 packets). Where the brokers differ the expectation is written
per broker (EXPECT), each one a row of the README's "Brokers: mosquitto and amqtt"; a new
amqtt that changes one fails here, so the README is brought up to date with it.
"""

import queue
import socket
import ssl
import struct
import time

import paho.mqtt.client as mqtt
import pytest

from tests.brokers import BROKERS, Subscriber, make_ca

# How each broker behaves where they differ (README, "Brokers: mosquitto and amqtt").
EXPECT = {
    "mosquitto": {"store": True, "anonymous_session": True, "inflight_redelivered": True,
                  "offline_retain_flag": False, "retained_again_on_resume": False},
    "amqtt": {"store": False, "anonymous_session": False, "inflight_redelivered": False,
              "offline_retain_flag": True, "retained_again_on_resume": True},
}


@pytest.fixture(params=["mosquitto", "amqtt"])
def kind(request):
    return request.param  # BROKERS[kind](...) skips when that broker is not installed


def client(b, cid, username=None, password=None, clean=True, tls_ca=None):
    """A connected, looping paho client, or the connect's failure as an exception."""
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=cid, clean_session=clean)
    if username:
        c.username_pw_set(username, password)
    c.reconnect_delay_set(0.05, 0.2)  # a refused client's thread then ends at once
    port = b.port
    if tls_ca:
        c.tls_set(ca_certs=tls_ca)  # server verification on (paho's default)
        port = b.tls_port
    done = queue.Queue()
    c.on_connect = lambda *a: done.put(a[3])
    c.connect("127.0.0.1", port, keepalive=30)
    c.loop_start()
    rc = done.get(timeout=10)
    if rc.is_failure:
        stop(c)  # or paho tries again
        raise ConnectionRefusedError(str(rc))
    return c


def stop(c):
    c.disconnect()
    c.loop_stop()


def publish(b, topic, payload, retain=False, **kw):
    c = client(b, "pub", **kw)
    c.publish(topic, payload, qos=1, retain=retain).wait_for_publish(5)
    c.disconnect()
    c.loop_stop()


def first(sub, timeout=2):
    try:
        return sub.get(timeout)
    except queue.Empty:
        return None


def test_users_with_a_password_file(tmp_path, kind):
    with BROKERS[kind](tmp_path / kind, users={"node": "right"}) as b:
        stop(client(b, "ok", "node", "right"))
        for user, pw in (("node", "wrong"), ("nobody", "right"), (None, None)):
            with pytest.raises(ConnectionRefusedError):
                client(b, "bad", user, pw)


def test_tls_with_the_tests_ca_and_server_verification(tmp_path, kind):
    with BROKERS[kind](tmp_path / kind, tls=True) as b:
        stop(client(b, "tls", tls_ca=b.ca_pem_path))
        other = tmp_path / "other_ca.pem"
        from cryptography.hazmat.primitives import serialization
        other.write_bytes(make_ca("another CA")[1].public_bytes(serialization.Encoding.PEM))
        with pytest.raises(ssl.SSLCertVerificationError):
            client(b, "tls", tls_ca=str(other))


def test_retained_messages_will_and_a_sigkill(tmp_path, kind):
    with BROKERS[kind](tmp_path / kind) as b:
        publish(b, "t/ret", b"r1", retain=True)
        sub = Subscriber(b, ["t/#"], client_id="s1")
        assert first(sub)[1:3] == (b"r1", True)  # from the store: retain flag set
        sub.close()
        publish(b, "t/ret", b"", retain=True)  # an empty retained payload deletes it
        sub = Subscriber(b, ["t/#"], client_id="s2")
        assert first(sub, 0.5) is None
        sub.close()
        # the last will, on a connection that ends without DISCONNECT, retained
        watcher = Subscriber(b, ["w/#"], client_id="watch")
        s, connack = _raw_connect(b, "willer", will=("w/status", b"offline"))
        assert connack == (0x20, b"\x00\x00")
        s.close()
        assert first(watcher, 10)[:3] == ("w/status", b"offline", False)  # live: flag 0
        watcher.close()
        sub = Subscriber(b, ["w/#"], client_id="s4")
        assert first(sub)[:3] == ("w/status", b"offline", True)  # and retained
        sub.close()
        publish(b, "k/ret", b"kept", retain=True)
        if b.persistent:
            b.save()
        else:
            with pytest.raises(NotImplementedError):
                b.save()
        b.restart()  # SIGKILL, then the same ports
        sub = Subscriber(b, ["k/#"], client_id="s3")
        got = first(sub, 0.5)
        sub.close()
        assert (got is not None and got[1] == b"kept") is EXPECT[kind]["store"]


def _offline_queue(b, username=None, password=None, away_s=0.2):
    """A persistent-session subscriber away for away_s while a QoS 1 message is published:
    (session present on return, the message it then got or None)."""
    kw = {"username": username, "password": password}
    sub = Subscriber(b, ["p/#"], client_id="ps", clean_session=False, **kw)
    sub.close()
    time.sleep(away_s)
    publish(b, "p/x", b"q1", username=username, password=password)
    sub = Subscriber(b, ["p/#"], client_id="ps", clean_session=False, **kw)
    got = first(sub, 0.5)
    sub.close()
    return sub.session_present, got


def test_persistent_sessions_keep_messages_while_away(tmp_path, kind):
    exp = EXPECT[kind]
    with BROKERS[kind](tmp_path / kind, users={"u": "pw"}) as b:
        present, got = _offline_queue(b, "u", "pw")
        assert present is True and got[:2] == ("p/x", b"q1") and got[4] == 1
        assert got[2] is exp["offline_retain_flag"]  # MQTT-3.3.1-9 says False
    with BROKERS[kind](tmp_path / (kind + "-anon")) as b:  # anonymous clients
        # amqtt drops a disconnected anonymous session in its session monitor, which
        # runs once a second: away longer than that
        present, got = _offline_queue(b, away_s=1.5)
        assert present is exp["anonymous_session"]
        assert (got is not None) is exp["anonymous_session"]


# -- a raw subscriber: paho would PUBACK for us --------------------------------------


def _str(s):
    s = s.encode()
    return struct.pack(">H", len(s)) + s


def _packet(first_byte, body):
    n, length = len(body), b""
    while True:
        d, n = n % 128, n // 128
        length += bytes([d | (0x80 if n else 0)])
        if not n:
            return bytes([first_byte]) + length + body


def _read(s):
    h = s.recv(1)
    if not h:
        return None
    n, mult = 0, 1
    while True:
        d = s.recv(1)[0]
        n += (d & 127) * mult
        mult *= 128
        if not d & 128:
            break
    data = b""
    while len(data) < n:
        data += s.recv(n - len(data))
    return h[0], data


def _raw_connect(b, cid="raw", will=None):
    """CONNECT: with user u/pw and clean session 0, or anonymous and clean with a will
    (topic, message) at QoS 1, retained."""
    s = socket.create_connection(("127.0.0.1", b.port), timeout=3)
    if will:
        flags = 0x02 | 0x04 | 0x08 | 0x20
        payload = _str(cid) + _str(will[0]) + struct.pack(">H", len(will[1])) + will[1]
    else:
        flags = 0xC0
        payload = _str(cid) + _str("u") + _str("pw")
    s.sendall(_packet(0x10, _str("MQTT") + bytes([4, flags]) + struct.pack(">H", 30)
                      + payload))
    return s, _read(s)

def _resume(b, s):
    """Drop connection s, resume the session (clean session 0): what the broker sends
    then, until 0.5 s pass without a packet."""
    s.close()
    time.sleep(0.3)
    s, connack = _raw_connect(b)
    assert connack == (0x20, b"\x01\x00")  # session present
    s.settimeout(0.5)
    again = []
    try:
        while (p := _read(s)) is not None:
            again.append(p)
    except TimeoutError:
        pass
    s.close()
    return again



def test_an_unacknowledged_qos1_delivery_after_a_reconnect(tmp_path, kind):
    """MQTT-4.4.0-1: on a reconnect with clean session 0 the server re-sends the PUBLISH
    the client had not acknowledged, with DUP set."""
    with BROKERS[kind](tmp_path / kind, users={"u": "pw"}) as b:
        s, _ = _raw_connect(b)
        s.sendall(_packet(0x82, struct.pack(">H", 1) + _str("r/#") + b"\x01"))
        assert _read(s)[0] == 0x90  # SUBACK
        publish(b, "r/x", b"m1", username="u", password="pw")
        assert _read(s)[0] & 0xF6 == 0x32  # PUBLISH QoS 1, never acknowledged
        again = _resume(b, s)  # a redelivery comes at once
        redelivered = [p for p in again if p[0] & 0xF0 == 0x30 and p[1].endswith(b"m1")]
        assert bool(redelivered) is EXPECT[kind]["inflight_redelivered"], again
        assert all(p[0] & 0x08 for p in redelivered)  # DUP


def test_retained_messages_on_resuming_a_session(tmp_path, kind):
    """MQTT 3.1.1 sends a topic's retained message when a client subscribes (3.3.1.3),
    not when it resumes a session that has the subscription."""
    with BROKERS[kind](tmp_path / kind, users={"u": "pw"}) as b:
        publish(b, "z/ret", b"R", retain=True, username="u", password="pw")
        s, _ = _raw_connect(b)
        s.sendall(_packet(0x82, struct.pack(">H", 1) + _str("z/#") + b"\x00"))  # QoS 0
        assert _read(s)[0] == 0x90
        assert _read(s) == (0x31, _str("z/ret") + b"R")  # on subscribe, retain flag set
        again = _resume(b, s)
        want = [(0x31, _str("z/ret") + b"R")] if EXPECT[kind]["retained_again_on_resume"] else []
        assert again == want
