"""MQTT brokers a tool starts for itself: mosquitto if it is installed, else amqtt.

    b = local_broker(directory)          # Mosquitto, or Amqtt when mosquitto is missing
    b.start(); b.address                 # "127.0.0.1:<port>", loopback only
    b.stop(); b.start()                  # an outage and the broker back on the same port
    b.stop()

Each broker is a subprocess run from a configuration written into `directory` (its log
file is there too): one listener on 127.0.0.1, anonymous clients allowed (nothing but this
machine reaches it). mosquitto keeps its sessions in a persistence file in `directory`,
written when it stops in order (SIGTERM), so a persistent subscriber's queued messages
survive an outage that `stop()`/`start()` makes; amqtt (PyPI amqtt, pure Python, in the
venv: the embedded default) keeps sessions and retained messages in RAM only, so a restart
forgets them (README "Brokers: mosquitto and amqtt").

mosquitto is looked up as `$HEATGW_MOSQUITTO` (a path; empty: never use mosquitto), else
`mosquitto` on PATH. Debian installs it in /usr/sbin, which a user's PATH may not hold:
then amqtt runs, and the message says how to get mosquitto instead.

`detach=True` starts the broker in its own session: a Ctrl-C at the terminal (SIGINT to the
whole foreground process group) does not take the broker down with the tool; the tool
stops it.

tests/brokers.py builds the suite's brokers (users, TLS) on these classes.
"""

import getpass
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

START_TIMEOUT_S = 10.0


class BrokerError(RuntimeError):
    """A broker could not be started (the reason is the text)."""


def free_port():
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def mosquitto_exe():
    """The mosquitto binary to run, or None: $HEATGW_MOSQUITTO, else `mosquitto` on PATH."""
    env = os.environ.get("HEATGW_MOSQUITTO")
    if env is not None:
        return env if env and os.access(env, os.X_OK) else None
    return shutil.which("mosquitto")


def amqtt_exe():
    """amqtt's console script beside this Python (the venv's)."""
    return os.path.join(os.path.dirname(sys.executable), "amqtt")


class BrokerProcess:
    """A broker in a subprocess on loopback ports: start (and wait until it listens),
    running, pause, kill, restart, stop, log_text. Subclasses write their configuration
    and say how to start it (`_popen`)."""

    name = "broker"
    persistent = False  # keeps sessions and retained messages across a restart

    def __init__(self, directory, port=None, detach=False):
        self.dir = str(directory)
        os.makedirs(self.dir, exist_ok=True)
        self.port = port or free_port()
        self.tls_port = None
        self.detach = detach
        self.proc = None
        self.log = os.path.join(self.dir, self.name + ".log")

    @property
    def address(self):
        return f"127.0.0.1:{self.port}"

    def _write(self, name, data):
        p = os.path.join(self.dir, name)
        with open(p, "wb") as f:
            f.write(data if isinstance(data, bytes) else data.encode())
        return p

    def _popen(self):
        raise NotImplementedError

    def _spawn(self, cmd, **kw):
        return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, start_new_session=self.detach,
                                **kw)

    def start(self):
        self.proc = self._popen()
        deadline = time.monotonic() + START_TIMEOUT_S
        for port in filter(None, (self.port, self.tls_port)):
            while True:
                if self.proc.poll() is not None:
                    err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                    self._reap()
                    raise BrokerError(f"{self.name} exited at start: {err}"
                                      f"{self.log_text()[-2000:]}")
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        self.kill()
                        raise BrokerError(f"{self.name} does not listen on {port} after "
                                          f"{START_TIMEOUT_S:.0f} s") from None
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
        """SIGTERM: an orderly stop (mosquitto writes its store)."""
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


class Mosquitto(BrokerProcess):
    """mosquitto from a generated mosquitto.conf. `listen`: the listener and security lines
    (default: one anonymous listener on 127.0.0.1:port); the rest is common: replies
    without Nagle's delay, persistence in `directory`, a full log there."""

    name = "mosquitto"
    persistent = True  # its store, written at save() (SIGUSR1) and on an orderly stop

    def __init__(self, directory, port=None, exe=None, listen=None, detach=False):
        super().__init__(directory, port, detach)
        self.exe = exe or mosquitto_exe()
        if not self.exe:
            raise BrokerError("mosquitto is not installed (not on PATH; $HEATGW_MOSQUITTO "
                              "names it)")
        lines = list(listen) if listen is not None else [
            f"listener {self.port} 127.0.0.1", "allow_anonymous true"]
        # Replies at once, not held by Nagle until the node's delayed ACK (~40 ms): on
        # the host board a gap that long inside a reply reads as a dead broker
        # (boards/host/vasyncio.py, GRACE_MS). A target takes it in real time.
        lines.append("set_tcp_nodelay true")
        lines += ["persistence true", f"persistence_location {self.dir}/",
                  "autosave_interval 3600",  # saved on SIGUSR1 (save()), not behind our back
                  f"log_dest file {self.log}", "log_type all"]
        if os.geteuid() == 0:  # as root mosquitto would drop to the `mosquitto` user
            lines.append(f"user {getpass.getuser()}")
        self.conf = self._write("mosquitto.conf", "\n".join(lines) + "\n")

    def _popen(self):
        return self._spawn([self.exe, "-c", self.conf], stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE)

    def save(self):
        """Write the persistence store now (SIGUSR1), and wait until it is there."""
        db = os.path.join(self.dir, "mosquitto.db")
        before = os.stat(db).st_mtime_ns if os.path.exists(db) else 0
        self.proc.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + 5
        while not os.path.exists(db) or os.stat(db).st_mtime_ns == before:
            if time.monotonic() > deadline:
                raise BrokerError("mosquitto did not save its store")
            time.sleep(0.02)


class Amqtt(BrokerProcess):
    """amqtt (PyPI amqtt, pure Python on asyncio): an MQTT 3.1.1 broker written
    independently of mosquitto, run as `amqtt -c <generated yaml>` in a subprocess (so a
    stop or a kill is a real signal). `listeners` and `plugins`: amqtt's configuration
    sections (default: one anonymous listener on 127.0.0.1:port). No persistence: its core
    keeps sessions and retained messages in RAM only, so a restart forgets them all."""

    name = "amqtt"
    persistent = False

    def __init__(self, directory, port=None, listeners=None, plugins=None, detach=False):
        import yaml

        super().__init__(directory, port, detach)
        self.exe = amqtt_exe()
        if not os.access(self.exe, os.X_OK):
            raise BrokerError(f"amqtt is not installed in this environment ({self.exe}; "
                              "pip install -r requirements.txt)")
        if listeners is None:
            listeners = {"default": {"type": "tcp", "bind": f"127.0.0.1:{self.port}"}}
        if plugins is None:
            plugins = {"amqtt.plugins.logging_amqtt.EventLoggerPlugin": {},
                       "amqtt.plugins.logging_amqtt.PacketLoggerPlugin": {},
                       "amqtt.plugins.authentication.AnonymousAuthPlugin":
                           {"allow_anonymous": True}}
        self.conf = self._write("amqtt.yaml", yaml.safe_dump(
            {"listeners": listeners, "plugins": plugins}, sort_keys=False))

    def _popen(self):
        with open(self.log, "ab") as log:  # amqtt logs to stderr
            return self._spawn([self.exe, "-c", self.conf], stdout=subprocess.DEVNULL,
                               stderr=log)

    def save(self):
        raise NotImplementedError("amqtt (core) has no persistent store to save")


def local_broker(directory, port=None, detach=False):
    """(broker, note): mosquitto if installed, else amqtt, not yet started; the note says
    which and why (None: mosquitto)."""
    exe = mosquitto_exe()
    if exe:
        return Mosquitto(directory, port, exe=exe, detach=detach), None
    why = ("$HEATGW_MOSQUITTO is empty" if os.environ.get("HEATGW_MOSQUITTO") == ""
           else "mosquitto is not on PATH")
    if os.environ.get("HEATGW_MOSQUITTO") is None and os.access("/usr/sbin/mosquitto",
                                                                os.X_OK):
        why += " (it is in /usr/sbin: add that to PATH to use it)"
    return Amqtt(directory, port, detach=detach), f"{why}: the embedded amqtt runs instead"
