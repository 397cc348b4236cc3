"""`heatgw monitor BROKER`: every node of a site, live, and every record into a store.

    heatgw monitor 127.0.0.1:1883 --site site1                 # live view
    heatgw monitor broker.lan --site site1 --record site1.sqlite
    heatgw monitor broker.lan:8883 --ca ca.pem --user ops --password-file ~/.heatgw/pw \\
        --db postgresql://heatgw@db.lan/fleet --share recorders --client-id rec-1

Subscribes (QoS 1) to `<prefix>/<site>/#` (`--site`), to `<prefix>/#` (the whole fleet
under a prefix), or to `--topic` filters; `--share GROUP` makes each an MQTT shared
subscription `$share/GROUP/<filter>` (MQTT 3.1.1 as mosquitto >= 1.6, EMQX, VerneMQ and
HiveMQ support it), so several monitors split one fleet's messages. On a terminal it draws
one panel per node (rich); otherwise one plain line per message.

Storing (`--record FILE`: SQLite; `--db URL`: PostgreSQL; host_tools.records): a message
is acknowledged to the broker only after the transaction holding it was committed
(paho's manual acks, in the order received as MQTT requires), so with a persistent
session (`--client-id`, clean session off) a monitor that dies loses nothing: the broker
sends again what was not acknowledged, and the store ignores what it already has.

Credentials: `--user` with the password from `--password-file` (its text without the
final line ending) or asked at the terminal; never on the command line. A PostgreSQL
password belongs in ~/.pgpass or $PGPASSFILE, not in the URL. `--ca FILE` turns on TLS
(the broker's certificate verified against FILE; port 8883 by default).

Stops on Ctrl-C or SIGTERM: commits, acknowledges, disconnects, prints a summary (and
writes it as JSON with `--stats FILE`). Exit status 0; 1 when the broker refused the
login or the store failed; 2 for a bad option.
"""

import argparse
import getpass
import json
import os
import queue
import signal
import socket
import sys
import threading
import time

from host_tools import records
from host_tools.liveview import Fleet

DEFAULT_PORT = 1883
DEFAULT_TLS_PORT = 8883
BATCH_MAX = 500  # messages per transaction at most
BATCH_S = 0.2  # a transaction is committed at least this often (and acks sent)
REFRESH_S = 0.25


class MonitorError(Exception):
    """A clear reason to stop (exit 1), e.g. the broker refused the login."""


class UsageError(Exception):
    """A bad option (exit 2)."""


def parse_broker(text, tls):
    """(host, port) of HOST, HOST:PORT, [IPv6]:PORT; the port defaults by TLS."""
    port = ""
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest:
            if not rest.startswith(":"):
                raise UsageError(f"broker {text!r}: give [ADDRESS]:PORT")
            port = rest[1:]
    elif text.count(":") == 1:
        host, port = text.split(":")
    else:
        host = text
    if not host:
        raise UsageError(f"broker {text!r}: give HOST or HOST:PORT")
    if port or text.endswith(":"):
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise UsageError(f"broker {text!r}: the port must be 1..65535")
        return host, int(port)
    return host, DEFAULT_TLS_PORT if tls else DEFAULT_PORT


def read_password(args):
    """The broker password: from --password-file, else asked at the terminal, else None
    (no --user). Never from the command line."""
    if not args.user:
        if args.password_file:
            raise UsageError("--password-file needs --user")
        return None
    if args.password_file:
        try:
            with open(args.password_file, encoding="utf-8") as f:
                text = f.read()
        except OSError as e:
            raise UsageError(f"--password-file: {e.strerror}: {args.password_file}") from None
        return text[:-1] if text.endswith("\n") else text
    if not sys.stdin.isatty():
        raise UsageError("--user without --password-file, and no terminal to ask the "
                         "password at")
    return getpass.getpass(f"MQTT password for {args.user}: ")


def filters(args):
    """The subscription filters, shared when --share is given."""
    if args.topic:
        base = list(args.topic)
    elif args.site:
        base = [f"{args.prefix}/{args.site}/#"]
    else:
        base = [f"{args.prefix}/#"]
    for f in base:
        if not f or "\0" in f or f.startswith("$share/"):
            raise UsageError(f"topic filter {f!r}: give a plain filter (--share makes it a "
                             "shared subscription)")
    if args.share:
        if not args.share or any(c in args.share for c in "/+#"):
            raise UsageError(f"--share {args.share!r}: a group name without / + #")
        return [f"$share/{args.share}/{f}" for f in base]
    return base


# CONNACK codes that a retry cannot change (MQTT 3.1.1 return codes, and the MQTT 5 reason
# codes paho maps them to): client id rejected, bad user name or password, not authorised
_LOGIN_REFUSED = (2, 4, 5, 133, 134, 135)


class Monitor:
    """The MQTT client (paho, its network thread), the message queue and the main loop
    that stores, acknowledges and draws."""

    def __init__(self, args, out=sys.stdout, err=sys.stderr):
        self.args = args
        self.out, self.err = out, err
        self.tls = bool(args.ca)
        self.host, self.port = parse_broker(args.broker, self.tls)
        self.subs = filters(args)
        if args.share and not args.client_id:
            raise UsageError("--share needs --client-id: a shared subscription keeps its "
                             "persistent session under a client id that is the same at "
                             "every restart (one per monitor)")
        if args.db and records.redact_url(args.db) != args.db:
            raise UsageError("--db: a password in the URL is seen by every user (ps); put "
                             "it in ~/.pgpass or $PGPASSFILE")
        if args.db and not records.is_pg_url(args.db):
            raise UsageError("--db takes a postgresql://... URL (--record FILE for SQLite)")
        self.password = read_password(args)
        self.stores = []
        self.q = queue.Queue()
        self.fleet = Fleet()
        self.stop = threading.Event()
        self.fatal = None
        self.connected = False
        self.connects = 0
        self.link_note = "connecting"
        self.notes = queue.Queue()  # link changes, printed as plain lines by the main loop
        self.bad = 0
        self.live = args.view == "live" or (args.view == "auto" and out.isatty())

    def _client(self):
        import paho.mqtt.client as mqtt

        a = self.args
        persistent = bool(a.client_id)
        cid = a.client_id or f"heatgw-monitor-{socket.gethostname()}-{os.getpid()}"
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=cid,
                        clean_session=not persistent, manual_ack=bool(self.stores))
        if a.user:
            c.username_pw_set(a.user, self.password)
        if self.tls:
            c.tls_set(ca_certs=a.ca)
        c.reconnect_delay_set(0.1, 5)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_connect_fail = self._on_connect_fail
        c.on_subscribe = self._on_subscribe
        c.on_message = self._on_message
        return c

    # paho's network thread ------------------------------------------------------------

    def _on_connect(self, client, userdata, flags, rc, props=None):
        if rc != 0:
            code = getattr(rc, "value", rc)
            why = str(rc).lower()
            self._note(f"broker refused: {why}")
            if code in _LOGIN_REFUSED:
                self.fatal = f"broker {self.host}:{self.port} refused the login: {why}"
                self.stop.set()
            return
        self.connected = True
        self.connects += 1
        self._note(f"connected to {self.host}:{self.port}"
                   + (" (session resumed)" if flags.session_present else ""))
        for f in self.subs:  # again at every connection (a lost session lost them)
            client.subscribe(f, qos=1)

    def _on_subscribe(self, client, userdata, mid, reason_codes, props=None):
        bad = [str(rc) for rc in reason_codes if rc.is_failure]
        if bad:
            self._note(f"subscription refused by the broker: {', '.join(bad)}")
        else:
            self._note("subscribed to " + " ".join(self.subs))

    def _note(self, text):
        self.link_note = text
        self.notes.put(text)

    def _on_connect_fail(self, client, userdata):
        self._note(f"cannot connect to {self.host}:{self.port}, retrying")

    def _on_disconnect(self, client, userdata, flags, rc, props=None):
        self.connected = False
        if not self.stop.is_set():
            self._note(f"disconnected ({str(rc).lower()}), reconnecting")

    def _on_message(self, client, userdata, m):
        self.q.put((m.topic, bytes(m.payload), m.retain, m.mid, m.qos, time.time()))

    # the main thread --------------------------------------------------------------------

    def open_stores(self):
        a = self.args
        try:
            if a.record:
                self.stores.append(records.open_store(a.record))
            if a.db:
                self.stores.append(records.open_store(a.db))
        except Exception as e:  # noqa: BLE001 - any store failure is a clear exit
            raise MonitorError(f"cannot open the record store: {e}") from None
        for s in self.stores:
            s.set_meta("writer", "heatgw monitor")
            s.set_meta(f"subscription:{','.join(self.subs)}",
                       f"{self.host}:{self.port} since {time.strftime('%Y-%m-%dT%H:%M:%S')}")
            s.commit()

    def header(self):
        where = ", ".join(str(s) for s in self.stores) or "nothing (no --record/--db)"
        dup = sum(n.duplicates for n in self.fleet.nodes.values())
        stored = self.stores[0].added if self.stores else 0
        return (f"heatgw monitor · {self.host}:{self.port}{' TLS' if self.tls else ''} · "
                f"{' '.join(self.subs)} · {self.link_note} · {self.fleet.messages} messages"
                f" · {stored} records stored in {where} · {dup} duplicates ignored")

    def _print(self, lines):
        for ln in lines:
            print(ln, file=self.out, flush=True)

    def _handle(self, msg):
        topic, payload, retain, _mid, _qos, received = msg
        try:
            item = records.classify(topic, payload, retain)
        except records.RecordError as e:
            self.bad += 1
            return self.fleet.bad_message(str(e))
        if item is None:
            return []
        try:
            for s in self.stores:
                s.add(item, received)
        except Exception as e:  # noqa: BLE001 - not stored: not acknowledged, stop
            raise MonitorError(f"the record store failed: {e}") from None
        return self.fleet.feed(item, received)

    def _flush(self, client, acks):
        try:
            for s in self.stores:
                s.commit()
        except Exception as e:  # noqa: BLE001 - nothing is acked that was not committed
            raise MonitorError(f"the record store failed: {e}") from None
        for mid, qos in acks:
            if qos > 0:
                client.ack(mid, qos)
        acks.clear()

    def run(self):
        self.open_stores()
        client = self._client()
        try:
            client.connect_async(self.host, self.port, keepalive=30)
        except (OSError, ValueError) as e:
            raise MonitorError(f"broker {self.host}:{self.port}: {e}") from None
        client.loop_start()
        live = None
        if self.live:
            from rich.console import Console
            from rich.live import Live

            live = Live(self.fleet.render(self.header()), console=Console(file=self.out),
                        refresh_per_second=1 / REFRESH_S, auto_refresh=False)
            live.start()
        acks = []
        batch_t = None
        drawn = 0.0
        try:
            while not self.stop.is_set():
                try:
                    msg = self.q.get_nowait()
                except queue.Empty:
                    # nothing waiting: commit and acknowledge what came at once (the
                    # broker sends no more than its in-flight window, e.g. mosquitto's
                    # 20, before it has our acknowledgements), then wait
                    if acks:
                        if self.stores:
                            self._flush(client, acks)
                        acks.clear()
                        batch_t = None
                    try:
                        msg = self.q.get(timeout=0.05)
                    except queue.Empty:
                        msg = None
                while not self.notes.empty():
                    note = self.notes.get()
                    if not live:
                        self._print([f"{time.strftime('%H:%M:%S')} monitor: {note}"])
                if msg is not None:
                    lines = self._handle(msg)
                    if not live:
                        self._print(lines)
                    acks.append((msg[3], msg[4]))
                    if batch_t is None:
                        batch_t = time.monotonic()
                if acks and (len(acks) >= BATCH_MAX or msg is None
                             or time.monotonic() - batch_t >= BATCH_S):
                    if self.stores:
                        self._flush(client, acks)
                    acks.clear()
                    batch_t = None
                if live and time.monotonic() - drawn >= REFRESH_S:
                    live.update(self.fleet.render(self.header()), refresh=True)
                    drawn = time.monotonic()
            # stopping: store what already came, then ack it
            while True:
                try:
                    msg = self.q.get_nowait()
                except queue.Empty:
                    break
                lines = self._handle(msg)
                if not live:
                    self._print(lines)
                acks.append((msg[3], msg[4]))
            if self.stores and acks:
                self._flush(client, acks)
        finally:
            if live:
                live.update(self.fleet.render(self.header()), refresh=True)
                live.stop()
            client.disconnect()
            client.loop_stop()
            for s in self.stores:
                try:
                    s.close()
                except Exception:  # noqa: BLE001, S110 - closing after a failure
                    pass
        if self.fatal:
            raise MonitorError(self.fatal)
        return self.stats()

    def stats(self):
        nodes = {}
        for (site, node), n in sorted(self.fleet.nodes.items()):
            nodes[f"{site}/{node}"] = {
                "records": n.records, "first_seq": n.seqs.first(), "last_seq": n.seqs.last(),
                "missing": n.seqs.missing(), "duplicates": n.duplicates, "resent": n.resent,
                "status": n.status, "alarms": sorted(n.alarms)}
        s0 = self.stores[0] if self.stores else None
        return {"messages": self.fleet.messages, "bad": self.bad, "connects": self.connects,
                "stored": s0.added if s0 else 0,
                "store_duplicates": s0.duplicates if s0 else 0,
                "conflicts": s0.conflicts if s0 else 0, "nodes": nodes}


def summary_text(st):
    lines = [f"monitor: {st['messages']} messages, {st['stored']} records stored, "
             f"{st['store_duplicates']} duplicates ignored, {st['bad']} bad, "
             f"{len(st['nodes'])} nodes"]
    for name, n in st["nodes"].items():
        miss = n["missing"]
        gaps = "no gap" if not miss else "missing " + ", ".join(
            f"{a}-{b}" if a != b else str(a) for a, b in miss)
        lines.append(f"  {name}: seq {n['first_seq']}..{n['last_seq']}, {n['records']} "
                     f"records, {gaps}, {n['duplicates']} duplicates")
    if st["conflicts"]:
        lines.append(f"  {st['conflicts']} records arrived again with other content: a "
                     "node's queue began again (kept in the `conflicts` table)")
    return "\n".join(lines)


def build_parser():
    ap = argparse.ArgumentParser(
        description="Show every node of a site live; store every record (SQLite or "
                    "PostgreSQL).")
    ap.add_argument("broker", metavar="BROKER", help="HOST or HOST:PORT (1883; 8883 with --ca)")
    ap.add_argument("--site", help="the site: subscribe to PREFIX/SITE/# (default: every site)")
    ap.add_argument("--prefix", default="heatgw", help="topic prefix (default: heatgw)")
    ap.add_argument("--topic", action="append", metavar="FILTER",
                    help="subscribe to this filter instead (repeatable)")
    ap.add_argument("--record", metavar="FILE", help="store every record in this SQLite file")
    ap.add_argument("--db", metavar="URL", help="store every record in PostgreSQL "
                    "(postgresql://user@host:port/db; password in ~/.pgpass)")
    ap.add_argument("--share", metavar="GROUP",
                    help="shared subscription $share/GROUP/...: monitors of one group split "
                         "the messages (needs --client-id)")
    ap.add_argument("--client-id", metavar="ID",
                    help="a fixed client id: a persistent session (nothing lost while the "
                         "monitor restarts)")
    ap.add_argument("--user", help="broker user name")
    ap.add_argument("--password-file", metavar="FILE",
                    help="the broker password (else asked at the terminal)")
    ap.add_argument("--ca", metavar="FILE", help="TLS: verify the broker against this CA")
    ap.add_argument("--view", choices=("auto", "live", "plain"), default="auto",
                    help="live panels (terminal) or plain lines (default: by stdout)")
    ap.add_argument("--stats", metavar="FILE", help="write the summary as JSON at the end")
    return ap


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        mon = Monitor(args)
    except UsageError as e:
        print(f"heatgw monitor: {e}", file=sys.stderr)
        return 2

    def _stop(signum, frame):
        mon.stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        st = mon.run()
    except MonitorError as e:
        print(f"heatgw monitor: {e}", file=sys.stderr)
        return 1
    print(summary_text(st), file=sys.stderr)
    if args.stats:
        with open(args.stats, "w") as f:
            json.dump(st, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
