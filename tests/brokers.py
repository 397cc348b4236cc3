"""Real brokers for the tests, shared by the whole suite, and a paho-mqtt upstream.

    with Broker(tmp_path, users={"node": "pw"}, tls=True) as b:   # mosquitto
        b.port, b.tls_port, b.ca_der            # loopback ports; the CA for the device
        b.save(); b.kill(); b.restart()          # SIGUSR1 store, SIGKILL, same ports
    with AmqttBroker(tmp_path, users=..., tls=...) as b: ...   # amqtt, same interface
        # but no store: save() refused, a restart forgets sessions and retained messages
    BROKERS["mosquitto" | "amqtt"]               # the class by name (parametrized tests)
    @pytest.fixture: broker (anonymous, plain), see mosquitto_broker below

Each broker runs as a subprocess from a temporary config (the product's
host_tools.brokers.Mosquitto / Amqtt, which `heatgw sim` starts for itself): listeners on
127.0.0.1 only, here with an optional password file and an optional TLS listener with a CA
and a server certificate the test makes with `cryptography`. mosquitto: persistence on in
a temporary directory (a SIGKILL loses what was not yet saved, as in the field),
mosquitto_passwd -b; skips when mosquitto is missing. amqtt: no store, argon2 password
hashes (README, "Brokers: mosquitto and amqtt", for how the two differ).
"""

import datetime
import os
import queue
import shutil
import subprocess
import time

import pytest

from host_tools.brokers import Amqtt, Mosquitto, amqtt_exe, free_port

MOSQUITTO = os.environ.get("HEATGW_MOSQUITTO", "/usr/sbin/mosquitto")
PASSWD = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"


def require_mosquitto():
    if not os.access(MOSQUITTO, os.X_OK):
        pytest.skip(f"mosquitto not installed ({MOSQUITTO}; apt-get install mosquitto)")


def require_amqtt():
    if not os.access(amqtt_exe(), os.X_OK):
        pytest.skip("amqtt not installed in this environment (pip install -r requirements.txt)")


def make_ca(name="heatgw test CA"):
    """(key, certificate) of a self-signed CA (EC P-256)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subj = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(subj).issuer_name(subj)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False,
                                         False), critical=True)
            .sign(key, hashes.SHA256()))
    return key, cert


def make_server_cert(ca_key, ca_cert, host="localhost"):
    """(key, certificate) for the broker, signed by the CA, for `host` and 127.0.0.1."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName(
                [x509.DNSName(host), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False)
            .sign(ca_key, hashes.SHA256()))
    return key, cert


def _pem_key(key):
    from cryptography.hazmat.primitives import serialization
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _cert(cert, der=False):
    from cryptography.hazmat.primitives import serialization
    return cert.public_bytes(serialization.Encoding.DER if der else serialization.Encoding.PEM)


def _tls_files(directory):
    """A CA and a server certificate for 127.0.0.1 written into `directory`: a dict with
    ca_der (bytes), ca_pem_path, ca_der_path, server_pem, server_key."""
    os.makedirs(directory, exist_ok=True)

    def write(name, data):
        p = os.path.join(directory, name)
        with open(p, "wb") as f:
            f.write(data)
        return p

    ca_key, ca = make_ca()
    key, cert = make_server_cert(ca_key, ca)
    der = _cert(ca, der=True)
    return {"ca_der": der, "ca_pem_path": write("ca.pem", _cert(ca)),
            "ca_der_path": write("ca.der", der), "server_pem": write("server.pem", _cert(cert)),
            "server_key": write("server.key", _pem_key(key))}


class Broker(Mosquitto):
    """mosquitto (host_tools.brokers.Mosquitto) with users (a password file made with
    mosquitto_passwd -b) and an optional TLS listener; skips when mosquitto is missing."""

    def __init__(self, directory, users=None, tls=False, anonymous=None, port=None):
        require_mosquitto()
        self.users = dict(users or {})
        port = port or free_port()
        self.server_pem = self.server_key = None
        lines = [f"listener {port} 127.0.0.1"]
        tls_port = None
        if tls:
            tls_port = free_port()
            self.__dict__.update(_tls_files(str(directory)))
            lines += [f"listener {tls_port} 127.0.0.1", f"cafile {self.ca_pem_path}",
                      f"certfile {self.server_pem}", f"keyfile {self.server_key}",
                      "require_certificate false"]
        if anonymous is None:
            anonymous = not self.users
        lines.append("allow_anonymous " + ("true" if anonymous else "false"))
        if self.users:
            os.makedirs(directory, exist_ok=True)
            pw = os.path.join(str(directory), "passwd")
            open(pw, "w").close()
            for u, p in self.users.items():
                subprocess.run([PASSWD, "-b", pw, u, p], check=True, capture_output=True)
            lines.append(f"password_file {pw}")
        super().__init__(directory, port, exe=MOSQUITTO, listen=lines)
        self.tls_port = tls_port


class AmqttBroker(Amqtt):
    """amqtt (host_tools.brokers.Amqtt) with users (its FileAuthPlugin with argon2 hashes,
    pwdlib) and an optional TLS listener; no persistence: its core keeps sessions and
    retained messages in RAM only (a store needs the contrib SessionDBPlugin and its SQL
    extras), so a restart forgets them all, and save() is refused."""

    def __init__(self, directory, users=None, tls=False, anonymous=None, port=None):
        require_amqtt()
        self.users = dict(users or {})
        port = port or free_port()
        self.server_pem = self.server_key = None
        listeners = {"default": {"type": "tcp", "bind": f"127.0.0.1:{port}"}}
        tls_port = None
        if tls:
            tls_port = free_port()
            self.__dict__.update(_tls_files(str(directory)))
            listeners["tls"] = {"type": "tcp", "bind": f"127.0.0.1:{tls_port}",
                                "ssl": True, "certfile": self.server_pem,
                                "keyfile": self.server_key}
        if anonymous is None:
            anonymous = not self.users
        plugins = {"amqtt.plugins.logging_amqtt.EventLoggerPlugin": {},
                   "amqtt.plugins.logging_amqtt.PacketLoggerPlugin": {},
                   "amqtt.plugins.authentication.AnonymousAuthPlugin":
                       {"allow_anonymous": anonymous}}
        if self.users:
            from pwdlib import PasswordHash
            from pwdlib.hashers.argon2 import Argon2Hasher

            # all auth plugins with an opinion must agree: a wrong password is refused by
            # the file plugin even where anonymous clients are allowed
            hasher = PasswordHash((Argon2Hasher(),))
            os.makedirs(directory, exist_ok=True)
            pw = os.path.join(str(directory), "passwd")
            with open(pw, "w") as f:
                f.write("".join(f"{u}:{hasher.hash(p)}\n" for u, p in self.users.items()))
            plugins["amqtt.plugins.authentication.FileAuthPlugin"] = {"password_file": pw}
        super().__init__(directory, port, listeners=listeners, plugins=plugins)
        self.tls_port = tls_port


BROKERS = {"mosquitto": Broker, "amqtt": AmqttBroker}


class Subscriber:
    """A paho-mqtt upstream: every message lands in .messages (a queue of
    (topic, payload, retain, dup, qos)); clean_session=False keeps its queue at the broker
    while it is away."""

    def __init__(self, broker, topics, client_id="upstream", clean_session=True,
                 username=None, password=None):
        import paho.mqtt.client as mqtt

        self.messages = queue.Queue()
        self.connected = queue.Queue()
        self.subscribed = queue.Queue()
        self.topics = topics
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                        clean_session=clean_session)
        if username:
            c.username_pw_set(username, password)
        c.reconnect_delay_set(0.05, 0.2)
        c.on_connect = self._on_connect
        c.on_subscribe = lambda *a: self.subscribed.put(a[1])
        c.on_message = lambda c_, u, m: self.messages.put(
            (m.topic, m.payload, m.retain, m.dup, m.qos))
        self.client = c
        c.connect("127.0.0.1", broker.port, keepalive=30)
        c.loop_start()
        self.session_present = self.connected.get(timeout=10)
        for _ in topics:
            self.subscribed.get(timeout=10)

    def _on_connect(self, client, userdata, flags, rc, props=None):
        for t in self.topics:  # again after every reconnect (a lost session loses them)
            client.subscribe(t, qos=1)
        self.connected.put(flags.session_present)

    def get(self, timeout=10):
        return self.messages.get(timeout=timeout)

    def drain(self, until, timeout=10):
        """Messages until `until(msg)` is true for one (that one included)."""
        got = []
        deadline = time.monotonic() + timeout
        while True:
            m = self.messages.get(timeout=max(0.01, deadline - time.monotonic()))
            got.append(m)
            if until(m):
                return got

    def close(self):
        # DISCONNECT first: the network thread then ends at once; stopped first it sits
        # out its 1 s select() timeout
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def mosquitto_broker(tmp_path):
    """An anonymous mosquitto on a free loopback port, stopped at teardown."""
    with Broker(tmp_path / "mosquitto") as b:
        yield b
