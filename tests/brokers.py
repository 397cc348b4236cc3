"""Real brokers for the tests, shared by the whole suite, and a paho-mqtt upstream.

    with Broker(tmp_path, users={"node": "pw"}, tls=True) as b:   # mosquitto
        b.port, b.tls_port, b.ca_der            # loopback ports; the CA for the device
        b.save(); b.kill(); b.restart()          # SIGUSR1 store, SIGKILL, same ports
    with AmqttBroker(tmp_path, users=..., tls=...) as b: ...   # amqtt, same interface
        # but no store: save() refused, a restart forgets sessions and retained messages
    BROKERS["mosquitto" | "amqtt"]               # the class by name (parametrized tests)
    @pytest.fixture: broker (anonymous, plain), see mosquitto_broker below

Each broker runs as a subprocess from a temporary config: listeners on 127.0.0.1 only, an
optional password file and an optional TLS listener with a CA and a server certificate the
test makes with `cryptography`. mosquitto: persistence on in a temporary directory (a
SIGKILL loses what was not yet saved, as in the field), mosquitto_passwd -b; skips when
mosquitto is missing. amqtt: no store, argon2 password hashes (README, "Brokers: mosquitto
and amqtt", for how the two differ).
"""

import datetime
import getpass
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

MOSQUITTO = os.environ.get("HEATGW_MOSQUITTO", "/usr/sbin/mosquitto")
PASSWD = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"


def require_mosquitto():
    if not os.access(MOSQUITTO, os.X_OK):
        pytest.skip(f"mosquitto not installed ({MOSQUITTO}; apt-get install mosquitto)")


def amqtt_exe():
    return os.path.join(os.path.dirname(sys.executable), "amqtt")


def require_amqtt():
    if not os.access(amqtt_exe(), os.X_OK):
        pytest.skip("amqtt not installed in this environment (pip install -r requirements.txt)")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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


class _BrokerProcess:
    """A broker in a subprocess from a generated config, on loopback ports: what mosquitto
    and amqtt share (start, running, pause, kill, restart, stop, log_text)."""

    name = "broker"
    persistent = False  # keeps sessions and retained messages across a restart

    def __init__(self, directory, users, tls, port):
        self.dir = str(directory)
        os.makedirs(self.dir, exist_ok=True)
        self.port = port or free_port()
        self.tls_port = free_port() if tls else None
        self.users = dict(users or {})
        self.proc = None
        self.log = os.path.join(self.dir, self.name + ".log")
        self.server_pem = self.server_key = None
        if tls:
            ca_key, ca = make_ca()
            key, cert = make_server_cert(ca_key, ca)
            self.ca_der = _cert(ca, der=True)
            self.ca_pem_path = self._write("ca.pem", _cert(ca))
            self.ca_der_path = self._write("ca.der", self.ca_der)
            self.server_pem = self._write("server.pem", _cert(cert))
            self.server_key = self._write("server.key", _pem_key(key))

    def _write(self, name, data):
        p = os.path.join(self.dir, name)
        with open(p, "wb") as f:
            f.write(data if isinstance(data, bytes) else data.encode())
        return p

    def _popen(self):
        raise NotImplementedError

    def start(self):
        self.proc = self._popen()
        deadline = time.monotonic() + 10
        for port in filter(None, (self.port, self.tls_port)):
            while True:
                if self.proc.poll() is not None:
                    err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                    raise RuntimeError(f"{self.name} exited: " + err + self.log_text()[-2000:])
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"{self.name} does not listen on {port}") from None
                    time.sleep(0.02)
        return self

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def pause(self):
        """SIGSTOP: TCP still accepts bytes (the kernel does), the broker answers nothing."""
        self.proc.send_signal(signal.SIGSTOP)

    def _reap(self):
        if self.proc.stderr:
            self.proc.stderr.close()
        self.proc = None

    def kill(self):
        """SIGKILL: what was not saved is lost, as in a crash."""
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
            self._reap()

    def restart(self):
        self.kill()
        return self.start()

    def stop(self):
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self._reap()

    def log_text(self):
        try:
            with open(self.log, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


class Broker(_BrokerProcess):
    name = "mosquitto"
    persistent = True  # its store, written at save() (SIGUSR1) and on a clean stop

    def __init__(self, directory, users=None, tls=False, anonymous=None, port=None):
        require_mosquitto()
        super().__init__(directory, users, tls, port)
        lines = [f"listener {self.port} 127.0.0.1"]
        if tls:
            lines += [f"listener {self.tls_port} 127.0.0.1",
                      f"cafile {self.ca_pem_path}",
                      f"certfile {self.server_pem}",
                      f"keyfile {self.server_key}",
                      "require_certificate false"]
        if anonymous is None:
            anonymous = not self.users
        lines.append("allow_anonymous " + ("true" if anonymous else "false"))
        if self.users:
            pw = os.path.join(self.dir, "passwd")
            open(pw, "w").close()
            for u, p in self.users.items():
                subprocess.run([PASSWD, "-b", pw, u, p], check=True, capture_output=True)
            lines.append(f"password_file {pw}")
        # Replies at once, not held by Nagle until the node's delayed ACK (~40 ms): on
        # the host board a gap that long inside a reply reads as a dead broker
        # (boards/host/vasyncio.py, GRACE_MS). A target takes it in real time.
        lines.append("set_tcp_nodelay true")
        lines += ["persistence true", f"persistence_location {self.dir}/",
                  "autosave_interval 3600",  # saved on SIGUSR1 (save()), not behind our back
                  f"log_dest file {self.log}", "log_type all",
                  f"user {getpass.getuser()}"]  # as root: no drop to `mosquitto`
        self.conf = self._write("mosquitto.conf", "\n".join(lines) + "\n")

    def _popen(self):
        return subprocess.Popen([MOSQUITTO, "-c", self.conf],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def save(self):
        """Write the persistence store now (SIGUSR1), and wait until it is there."""
        db = os.path.join(self.dir, "mosquitto.db")
        before = os.stat(db).st_mtime_ns if os.path.exists(db) else 0
        self.proc.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + 5
        while not os.path.exists(db) or os.stat(db).st_mtime_ns == before:
            if time.monotonic() > deadline:
                raise RuntimeError("mosquitto did not save its store")
            time.sleep(0.02)


class AmqttBroker(_BrokerProcess):
    """amqtt (PyPI amqtt, pure Python on asyncio): a second MQTT 3.1.1 broker, written
    independently of mosquitto, run as `amqtt -c <generated yaml>` in a subprocess so that
    kill() is a real SIGKILL. Users: its FileAuthPlugin with argon2 hashes (pwdlib);
    TLS: an ssl listener. No persistence: its core keeps sessions and retained messages
    in RAM only (a store needs the contrib SessionDBPlugin and its SQL extras), so a
    restart forgets them all, and save() is refused."""

    name = "amqtt"
    persistent = False

    def __init__(self, directory, users=None, tls=False, anonymous=None, port=None):
        require_amqtt()
        import yaml
        from pwdlib import PasswordHash
        from pwdlib.hashers.argon2 import Argon2Hasher

        super().__init__(directory, users, tls, port)
        listeners = {"default": {"type": "tcp", "bind": f"127.0.0.1:{self.port}"}}
        if tls:
            listeners["tls"] = {"type": "tcp", "bind": f"127.0.0.1:{self.tls_port}",
                                "ssl": True, "certfile": self.server_pem,
                                "keyfile": self.server_key}
        if anonymous is None:
            anonymous = not self.users
        plugins = {"amqtt.plugins.logging_amqtt.EventLoggerPlugin": {},
                   "amqtt.plugins.logging_amqtt.PacketLoggerPlugin": {},
                   "amqtt.plugins.authentication.AnonymousAuthPlugin":
                       {"allow_anonymous": anonymous}}
        if self.users:
            # all auth plugins with an opinion must agree: a wrong password is refused by
            # the file plugin even where anonymous clients are allowed
            hasher = PasswordHash((Argon2Hasher(),))
            pw = self._write("passwd", "".join(f"{u}:{hasher.hash(p)}\n"
                                               for u, p in self.users.items()))
            plugins["amqtt.plugins.authentication.FileAuthPlugin"] = {"password_file": pw}
        self.conf = self._write("amqtt.yaml", yaml.safe_dump(
            {"listeners": listeners, "plugins": plugins}, sort_keys=False))

    def _popen(self):
        with open(self.log, "ab") as log:  # amqtt logs to stderr
            return subprocess.Popen([amqtt_exe(), "-c", self.conf],
                                    stdout=subprocess.DEVNULL, stderr=log)

    def save(self):
        raise NotImplementedError("amqtt (core) has no persistent store to save")


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
