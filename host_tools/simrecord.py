"""The record of a simulated run: every message the nodes publish, received from the
broker by a subscriber of its own and stored in SQLite in the record format of `heatgw
monitor --record` (README "Monitoring and records"), so `heatgw report` reads it as it
reads a monitor's.

    rec = Recorder("run.sqlite", "127.0.0.1:1883", ["heatgw/sim/#"])
    rec.start()                       # subscribed (QoS 1, persistent session) on return
    rec.nodes[("sim", "gw-1")]        # NodeView: newest telemetry, status, alarms, seqs
    rec.wait_for({("sim", "gw-1"): 812}, timeout_s=20)   # every seq up to 812 stored
    rec.finish(configs={("sim", "gw-1"): cfg})            # node configs, meta; closed

The format (one SQLite file): `records` (every telemetry and event record, primary key
site, node, kind, seq: a QoS 1 duplicate is stored once; a seq seen again with another boot
or up_ms goes to `conflicts`), `latest` (the newest status, state, alarm/<id> and cmd/ack
message per topic), `node_config` (each node's config.json: the report reads the Modbus
meters' roles from it) and `meta` (schema_version 1, the writer).

The subscriber keeps a persistent session (clean session off, its own client id) and
subscribes before any node boots, so nothing published is missed, even across a broker
outage with mosquitto (its store keeps the session); amqtt forgets sessions at a restart,
and what it held for the subscriber at that moment is lost (the gap shows in the record).
"""

import json
import queue
import sqlite3
import threading
import time
from bisect import bisect_left

SCHEMA_VERSION = 1
RECORD_KINDS = ("telemetry", "event")

_SQLITE_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    site TEXT NOT NULL, node TEXT NOT NULL, kind TEXT NOT NULL, seq INTEGER NOT NULL,
    boot INTEGER, up_ms INTEGER, utc INTEGER, event TEXT,
    resent INTEGER NOT NULL DEFAULT 0, received REAL NOT NULL,
    topic TEXT NOT NULL, payload TEXT NOT NULL,
    PRIMARY KEY (site, node, kind, seq));
CREATE INDEX IF NOT EXISTS records_node_seq ON records (site, node, seq);
CREATE INDEX IF NOT EXISTS records_node_utc ON records (site, node, utc);
CREATE TABLE IF NOT EXISTS latest (
    site TEXT NOT NULL, node TEXT NOT NULL, topic TEXT NOT NULL,
    retained INTEGER NOT NULL, received REAL NOT NULL, payload TEXT NOT NULL,
    PRIMARY KEY (site, node, topic));
CREATE TABLE IF NOT EXISTS conflicts (
    site TEXT NOT NULL, node TEXT NOT NULL, kind TEXT NOT NULL, seq INTEGER NOT NULL,
    received REAL NOT NULL, topic TEXT NOT NULL, payload TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS node_config (
    site TEXT NOT NULL, node TEXT NOT NULL, config TEXT NOT NULL, source TEXT,
    PRIMARY KEY (site, node));
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


def parse_topic(topic):
    """(site, node, tail) of a node's topic `<prefix>/<site>/<node>/<tail>` (prefix 1..4
    levels), or None."""
    parts = topic.split("/")
    if len(parts) >= 5 and parts[-2] == "alarm":
        head, tail = parts[:-2], "alarm/" + parts[-1]
    elif len(parts) >= 5 and parts[-2:] == ["cmd", "ack"]:
        head, tail = parts[:-2], "cmd/ack"
    elif len(parts) >= 4 and parts[-1] in RECORD_KINDS + ("status", "state", "cmd"):
        head, tail = parts[:-1], parts[-1]
    else:
        return None
    if len(head) < 3 or len(head) > 6 or not all(head):
        return None
    return head[-2], head[-1], tail


class SeqRanges:
    """The seqs seen of one node as sorted, disjoint [first, last] ranges."""

    def __init__(self):
        self.ranges = []
        self.count = 0

    def add(self, seq):
        """Add seq; False if it was there already."""
        r = self.ranges
        i = bisect_left(r, [seq + 1]) - 1
        if i >= 0 and r[i][0] <= seq <= r[i][1]:
            return False
        self.count += 1
        left = i >= 0 and r[i][1] == seq - 1
        right = i + 1 < len(r) and r[i + 1][0] == seq + 1
        if left and right:
            r[i][1] = r[i + 1][1]
            del r[i + 1]
        elif left:
            r[i][1] = seq
        elif right:
            r[i + 1][0] = seq
        else:
            r.insert(i + 1, [seq, seq])
        return True

    def missing_count(self):
        r = self.ranges
        return sum(r[i + 1][0] - r[i][1] - 1 for i in range(len(r) - 1))

    def last(self):
        return self.ranges[-1][1] if self.ranges else None


class NodeView:
    """What the record's subscriber knows of one node, for the live view."""

    def __init__(self, site, node):
        self.site, self.node = site, node
        self.status = None  # online / offline (retained; the last will)
        self.telemetry = None  # the newest telemetry document
        self.telemetry_seq = 0
        self.alarms = {}  # id -> alarm document (retained; an empty payload removes it)
        self.events = []  # (seq, kind, text) of the newest events
        self.seqs = SeqRanges()
        self.duplicates = 0
        self.last_seen = None


class RunStore:
    """The record file (SQLite, the module doc's tables)."""

    def __init__(self, path):
        self.path = str(path)
        self.conn = sqlite3.connect(self.path, check_same_thread=False)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.executescript(_SQLITE_SCHEMA)
        self.set_meta("schema_version", SCHEMA_VERSION)
        self.conn.commit()
        self.added = self.duplicates = self.conflicts = self.bad = 0

    def set_meta(self, key, value):
        self.conn.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) "
                          "DO UPDATE SET value = excluded.value", (key, str(value)))

    def set_node_config(self, site, node, config, source):
        self.conn.execute("INSERT INTO node_config (site, node, config, source) VALUES "
                          "(?, ?, ?, ?) ON CONFLICT (site, node) DO UPDATE SET "
                          "config = excluded.config, source = excluded.source",
                          (site, node, json.dumps(config), source))

    def add(self, site, node, tail, topic, payload, retained, received):
        """Store one message; (kind, doc): kind `telemetry`/`event` for a new record,
        `latest`, `duplicate`, `conflict` or `bad` (doc None)."""
        text = payload.decode("utf-8", "replace")
        if tail not in RECORD_KINDS:
            self.conn.execute(
                "INSERT INTO latest (site, node, topic, retained, received, payload) VALUES "
                "(?, ?, ?, ?, ?, ?) ON CONFLICT (site, node, topic) DO UPDATE SET "
                "retained = excluded.retained, received = excluded.received, "
                "payload = excluded.payload",
                (site, node, topic, int(bool(retained)), received, text))
            return "latest", None
        try:
            doc = json.loads(text)
            seq, boot, up_ms = doc["seq"], doc["boot"], doc["up_ms"]
            utc = doc.get("utc")
            if not all(type(v) is int and v >= 0 for v in (seq, boot, up_ms)) or seq < 1 \
                    or (utc is not None and type(utc) is not int):
                raise ValueError
        except (ValueError, KeyError, TypeError):
            self.bad += 1
            return "bad", None
        cur = self.conn.execute(
            "INSERT INTO records (site, node, kind, seq, boot, up_ms, utc, event, resent, "
            "received, topic, payload) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (site, node, kind, seq) DO NOTHING",
            (site, node, tail, seq, boot, up_ms, utc,
             doc.get("kind") if tail == "event" else None, int(doc.get("resent") is True),
             received, topic, text))
        if cur.rowcount == 1:
            self.added += 1
            return tail, doc
        row = self.conn.execute("SELECT payload FROM records WHERE site = ? AND node = ? "
                                "AND kind = ? AND seq = ?", (site, node, tail, seq)).fetchone()
        old = json.loads(row[0]) if row else {}
        if (old.get("boot"), old.get("up_ms")) != (boot, up_ms):
            self.conflicts += 1
            self.conn.execute("INSERT INTO conflicts (site, node, kind, seq, received, topic, "
                              "payload) VALUES (?, ?, ?, ?, ?, ?, ?)",
                              (site, node, tail, seq, received, topic, text))
            return "conflict", doc
        self.duplicates += 1
        return "duplicate", doc

    def count(self, site, node):
        return self.conn.execute("SELECT count(*) FROM records WHERE site = ? AND node = ?",
                                 (site, node)).fetchone()[0]

    def commit(self):
        self.conn.commit()

    def close(self):
        try:
            self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error:
            pass
        self.conn.close()


class Recorder:
    """A paho subscriber (its own network thread) storing every message into a RunStore
    and keeping a NodeView per node; `link` says the subscription's state."""

    def __init__(self, path, broker, filters, client_id=None):
        host, _, port = broker.rpartition(":")
        self.host, self.port = host, int(port)
        self.filters = list(filters)
        self.client_id = client_id or f"heatgw-sim-recorder-{time.time_ns() % 10**9}"
        self.store = RunStore(path)
        self.path = self.store.path
        self.nodes = {}
        self.messages = 0
        self.link = "connecting"
        self.connected = False
        self.lock = threading.Lock()
        self._subscribed = queue.Queue()
        self._client = None

    def start(self, timeout_s=10.0):
        import paho.mqtt.client as mqtt

        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.client_id,
                        clean_session=False)
        c.reconnect_delay_set(0.05, 1.0)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_subscribe = lambda *a: self._subscribed.put(True)
        c.on_message = self._on_message
        self._client = c
        c.connect(self.host, self.port, keepalive=30)
        c.loop_start()
        try:
            self._subscribed.get(timeout=timeout_s)
        except queue.Empty:
            self.stop()
            raise RuntimeError(f"the record's subscriber could not subscribe at "
                               f"{self.host}:{self.port} within {timeout_s:.0f} s") from None
        return self

    def _on_connect(self, client, userdata, flags, rc, props=None):
        if rc.is_failure:
            self.link = f"refused: {rc}"
            return
        self.connected = True
        self.link = "subscribed"
        for f in self.filters:  # again after every reconnect
            client.subscribe(f, qos=1)

    def _on_disconnect(self, client, userdata, flags, rc, props=None):
        self.connected = False
        self.link = "broker gone, reconnecting"

    def node(self, site, node):
        key = (site, node)
        if key not in self.nodes:
            self.nodes[key] = NodeView(site, node)
        return self.nodes[key]

    def _on_message(self, client, userdata, m):
        where = parse_topic(m.topic)
        if where is None or where[2] == "cmd":
            return
        site, node, tail = where
        now = time.time()
        payload = bytes(m.payload)
        with self.lock:
            self.messages += 1
            kind, doc = self.store.add(site, node, tail, m.topic, payload, m.retain, now)
            self.store.commit()
            n = self.node(site, node)
            n.last_seen = now
            if kind in RECORD_KINDS:
                n.seqs.add(doc["seq"])
                if kind == "telemetry" and doc["seq"] > n.telemetry_seq:
                    n.telemetry, n.telemetry_seq = doc, doc["seq"]
                elif kind == "event":
                    n.events = (n.events + [(doc["seq"], doc.get("kind"),
                                             doc.get("text", ""))])[-6:]
            elif kind == "duplicate":
                n.duplicates += 1
            elif tail == "status":
                n.status = payload.decode("utf-8", "replace")
            elif tail.startswith("alarm/"):
                if payload:
                    try:
                        n.alarms[tail[6:]] = json.loads(payload)
                    except ValueError:
                        pass
                else:
                    n.alarms.pop(tail[6:], None)

    def count(self, site, node):
        with self.lock:
            return self.store.count(site, node)

    def wait_for(self, last_seqs, timeout_s=20.0):
        """Wait until every node's seqs 1..last are stored ({(site, node): last}); the
        nodes still missing some when the time is up (an empty dict: none)."""
        deadline = time.monotonic() + timeout_s
        while True:
            with self.lock:
                short = {k: last for k, last in last_seqs.items() if last and
                         self.node(*k).seqs.count < last}
            if not short or time.monotonic() > deadline:
                return short
            time.sleep(0.05)

    def stop(self):
        if self._client is not None:
            self._client.disconnect()
            self._client.loop_stop()
            self._client = None

    def finish(self, configs=(), meta=None):
        """Stop the subscriber; store each node's configuration ({(site, node): cfg}) and
        the meta; close the file."""
        self.stop()
        with self.lock:
            for (site, node), cfg in dict(configs).items():
                self.store.set_node_config(site, node, cfg, "heatgw sim")
            self.store.set_meta("writer", "heatgw sim")
            for k, v in (meta or {}).items():
                self.store.set_meta(k, v)
            self.store.commit()
            self.store.close()
