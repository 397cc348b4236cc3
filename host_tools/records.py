"""The record store: what `heatgw monitor` receives (and a simulated run writes), in SQLite
(the embedded default) or PostgreSQL, with one schema for both (README, "Monitoring and
records").

    store = open_store("site.sqlite")             # or "postgresql://user@host/db"
    item = classify(topic, payload_bytes)          # None: not a heatgw topic
    new = store.add(item, received=time.time())    # False: a duplicate, ignored
    store.commit()
    store.rows(site, node)                         # the records, in seq order
    missing_ranges(seqs)                           # [[first, last], ...] not received

A record is one message of the node's flash queue (`.../telemetry`, `.../event`): it has a
`seq` that one counter per node assigns to every telemetry, event and alarm record, so a
missing seq is a lost record. The whole JSON payload is kept (fields that later firmware
adds are stored without a schema change); the columns that are queried are copied out and
indexed: site, node, kind (`telemetry` or `event`), seq, boot, up_ms, utc, the event's own
kind, `resent`. Storing is idempotent on (site, node, kind, seq): a QoS 1 duplicate or a
record the node sent again (`"resent": true`, after a `resend` command) is not stored twice;
a resent record fills the gap it was sent for. The node's retained messages and its other
topics (`status`, `state`, `alarm/<id>`, `cmd/ack`) are kept as the latest per topic.

A seq seen again with a different boot or up_ms is no duplicate: the node's queue began
again (a wiped or replaced flash). It is kept in `conflicts` (never dropped silently) and
counted.
"""

import json
import os
import sqlite3
from bisect import bisect_left

SCHEMA_VERSION = 1
RECORD_KINDS = ("telemetry", "event")
# the node's other topics (README "Topics"); `cmd` is a command to the node, not from it
LATEST_TAILS = ("status", "state")

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

# PostgreSQL: the same tables; payloads as jsonb (queried with ->>), times as double
_PG_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    site TEXT NOT NULL, node TEXT NOT NULL, kind TEXT NOT NULL, seq BIGINT NOT NULL,
    boot INTEGER, up_ms BIGINT, utc BIGINT, event TEXT,
    resent BOOLEAN NOT NULL DEFAULT FALSE, received DOUBLE PRECISION NOT NULL,
    topic TEXT NOT NULL, payload JSONB NOT NULL,
    PRIMARY KEY (site, node, kind, seq));
CREATE INDEX IF NOT EXISTS records_node_seq ON records (site, node, seq);
CREATE INDEX IF NOT EXISTS records_node_utc ON records (site, node, utc);
CREATE TABLE IF NOT EXISTS latest (
    site TEXT NOT NULL, node TEXT NOT NULL, topic TEXT NOT NULL,
    retained BOOLEAN NOT NULL, received DOUBLE PRECISION NOT NULL, payload TEXT NOT NULL,
    PRIMARY KEY (site, node, topic));
CREATE TABLE IF NOT EXISTS conflicts (
    site TEXT NOT NULL, node TEXT NOT NULL, kind TEXT NOT NULL, seq BIGINT NOT NULL,
    received DOUBLE PRECISION NOT NULL, topic TEXT NOT NULL, payload JSONB NOT NULL);
CREATE TABLE IF NOT EXISTS node_config (
    site TEXT NOT NULL, node TEXT NOT NULL, config JSONB NOT NULL, source TEXT,
    PRIMARY KEY (site, node));
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
# one lock id for the schema's creation: monitors starting together on one database
_PG_SCHEMA_LOCK = 0x68656174  # "heat"


class RecordError(ValueError):
    """A message on a heatgw topic that is not a valid record (the reason is the text)."""


class Item:
    """One classified message: `kind` is `telemetry` or `event` (a record, with seq, boot,
    up_ms, utc, event, resent and the parsed `doc`), or `latest` (status, state,
    alarm/<id>, cmd/ack: kept as the newest per topic)."""

    __slots__ = ("topic", "site", "node", "tail", "kind", "payload", "doc", "seq", "boot",
                 "up_ms", "utc", "event", "resent", "retained")

    def __init__(self, topic, site, node, tail, kind, payload, retained=False):
        self.topic, self.site, self.node, self.tail = topic, site, node, tail
        self.kind, self.payload, self.retained = kind, payload, retained
        self.doc = None
        self.seq = self.boot = self.up_ms = self.utc = self.event = None
        self.resent = False


def parse_topic(topic):
    """(site, node, tail) of a node's topic `<prefix>/<site>/<node>/<tail>` (prefix 1..4
    levels; tail `telemetry`, `event`, `status`, `state`, `alarm/<id>`, `cmd`, `cmd/ack`),
    or None for any other topic."""
    parts = topic.split("/")
    if len(parts) >= 5 and parts[-2] == "alarm":
        head, tail = parts[:-2], "alarm/" + parts[-1]
    elif len(parts) >= 5 and parts[-2:] == ["cmd", "ack"]:
        head, tail = parts[:-2], "cmd/ack"
    elif len(parts) >= 4 and parts[-1] in RECORD_KINDS + LATEST_TAILS + ("cmd",):
        head, tail = parts[:-1], parts[-1]
    else:
        return None
    if len(head) < 3 or len(head) > 6 or not all(head):
        return None
    return head[-2], head[-1], tail


def _int(doc, key, required=True, lo=0):
    v = doc.get(key)
    if v is None and not required:
        return None
    if type(v) is not int or v < lo:
        raise RecordError(f"{key} is {v!r}: not an integer >= {lo}")
    return v


def _unstorable(v):
    """Why a parsed JSON value holds a string no store can keep, or None."""
    if isinstance(v, dict):
        return next(filter(None, map(_unstorable, [*v.keys(), *v.values()])), None)
    if isinstance(v, list):
        return next(filter(None, map(_unstorable, v)), None)
    if isinstance(v, str):
        if "\x00" in v:
            return "a NUL character in a string"
        try:
            v.encode("utf-8")
        except UnicodeEncodeError:
            return "a lone UTF-16 surrogate in a string"
    return None


def classify(topic, payload, retained=False):
    """The Item for a message, None for a topic that is no node's (or a command to one).
    RecordError when a record's payload is not JSON or lacks a valid seq, boot, up_ms."""
    where = parse_topic(topic)
    if where is None or where[2] == "cmd":
        return None
    site, node, tail = where
    payload = bytes(payload)
    if tail not in RECORD_KINDS:
        return Item(topic, site, node, tail, "latest", payload, retained)
    it = Item(topic, site, node, tail, tail, payload, retained)
    try:
        doc = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as e:
        raise RecordError(f"{topic}: not JSON ({e})") from None
    if not isinstance(doc, dict):
        raise RecordError(f"{topic}: not a JSON object")
    # what a store cannot hold is refused here, alike for both (and acknowledged, so it
    # never comes back to stop a recorder): NUL in a string (PostgreSQL's text and jsonb
    # refuse it) and lone UTF-16 surrogates (\ud800: no UTF-8 for them)
    why = _unstorable(doc)
    if why:
        raise RecordError(f"{topic}: {why}")
    try:
        it.seq = _int(doc, "seq", lo=1)
        it.boot = _int(doc, "boot")
        it.up_ms = _int(doc, "up_ms")
        it.utc = _int(doc, "utc", required=False)
    except RecordError as e:
        raise RecordError(f"{topic}: {e}") from None
    it.event = doc.get("kind") if tail == "event" else None
    it.resent = doc.get("resent") is True
    it.doc = doc
    return it


# -- seq ranges ---------------------------------------------------------------------------


class SeqRanges:
    """The seqs seen of one node as sorted, disjoint [first, last] ranges: memory grows
    with the number of holes, not of records."""

    def __init__(self):
        self.ranges = []  # [[first, last], ...] sorted
        self.count = 0

    def add(self, seq):
        """Add seq; False if it was already there."""
        r = self.ranges
        i = bisect_left(r, [seq + 1]) - 1  # the last range starting at or before seq
        if i >= 0 and r[i][0] <= seq <= r[i][1]:
            return False
        self.count += 1
        joins_left = i >= 0 and r[i][1] == seq - 1
        joins_right = i + 1 < len(r) and r[i + 1][0] == seq + 1
        if joins_left and joins_right:
            r[i][1] = r[i + 1][1]
            del r[i + 1]
        elif joins_left:
            r[i][1] = seq
        elif joins_right:
            r[i + 1][0] = seq
        else:
            r.insert(i + 1, [seq, seq])
        return True

    def first(self):
        return self.ranges[0][0] if self.ranges else None

    def last(self):
        return self.ranges[-1][1] if self.ranges else None

    def missing(self):
        """[[first, last], ...] between the first and the last seq seen."""
        r = self.ranges
        return [[r[i][1] + 1, r[i + 1][0] - 1] for i in range(len(r) - 1)]

    def missing_count(self):
        return sum(b - a + 1 for a, b in self.missing())


def missing_ranges(seqs):
    """[[first, last], ...] of the seqs absent between min(seqs) and max(seqs)."""
    s = SeqRanges()
    for q in seqs:
        s.add(q)
    return s.missing()


# -- stores -------------------------------------------------------------------------------


def _identity(payload):
    """What makes two copies of one record the same record: boot and up_ms (a resent
    copy differs in its reasons and `resent`, never in these)."""
    if isinstance(payload, dict):  # PostgreSQL hands jsonb back parsed
        doc = payload
    else:
        try:
            doc = json.loads(payload)
        except (ValueError, TypeError):
            return None
    return doc.get("boot"), doc.get("up_ms")


class Store:
    """What SQLite and PostgreSQL share: add (idempotent), commit, read back."""

    dialect = None
    ph = "?"

    def __init__(self):
        self.added = 0  # records stored
        self.duplicates = 0  # records already there (QoS 1 duplicates, resent copies)
        self.conflicts = 0  # a seq seen again with another boot/up_ms: queue restarted

    def _sql(self, text):
        return text.replace("?", self.ph)

    def _exec(self, sql, args=()):
        return self.conn.execute(self._sql(sql), args)

    def add(self, item, received):
        """Store one Item (in the open transaction). True: a new record or a latest-topic
        message; False: a duplicate of a stored record (ignored) or a conflict (kept in
        `conflicts`)."""
        text = item.payload.decode("utf-8", "replace")
        if item.kind == "latest":  # plain text: what a store cannot hold is replaced
            text = text.replace("\x00", "\ufffd")
            self._exec("INSERT INTO latest (site, node, topic, retained, received, payload) "
                       "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (site, node, topic) DO UPDATE "
                       "SET retained = EXCLUDED.retained, received = EXCLUDED.received, "
                       "payload = EXCLUDED.payload",
                       (item.site, item.node, item.topic, bool(item.retained), received,
                        text))
            return True
        cur = self._exec(
            "INSERT INTO records (site, node, kind, seq, boot, up_ms, utc, event, resent, "
            "received, topic, payload) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (site, node, kind, seq) DO NOTHING",
            (item.site, item.node, item.kind, item.seq, item.boot, item.up_ms, item.utc,
             item.event, bool(item.resent), received, item.topic, text))
        if cur.rowcount == 1:
            self.added += 1
            return True
        row = self._exec("SELECT payload FROM records WHERE site = ? AND node = ? AND "
                         "kind = ? AND seq = ?",
                         (item.site, item.node, item.kind, item.seq)).fetchone()
        if row is not None and _identity(row[0]) != (item.boot, item.up_ms):
            self.conflicts += 1
            self._exec("INSERT INTO conflicts (site, node, kind, seq, received, topic, "
                       "payload) VALUES (?, ?, ?, ?, ?, ?, ?)",
                       (item.site, item.node, item.kind, item.seq, received, item.topic,
                        text))
        else:
            self.duplicates += 1
        return False

    def commit(self):
        self.conn.commit()

    def close(self):
        self.conn.close()

    def set_meta(self, key, value):
        self._exec("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE "
                   "SET value = EXCLUDED.value", (key, str(value)))

    def meta(self):
        return dict(self._exec("SELECT key, value FROM meta").fetchall())

    def set_node_config(self, site, node, config, source):
        """The node's configuration (config.json as a dict): the simulator knows it; the
        report reads Modbus roles from it."""
        self._exec("INSERT INTO node_config (site, node, config, source) VALUES (?, ?, ?, ?) "
                   "ON CONFLICT (site, node) DO UPDATE SET config = EXCLUDED.config, "
                   "source = EXCLUDED.source", (site, node, json.dumps(config), source))

    def node_configs(self):
        out = {}
        for site, node, cfg, _src in self._exec(
                "SELECT site, node, config, source FROM node_config").fetchall():
            out[(site, node)] = cfg if isinstance(cfg, dict) else json.loads(cfg)
        return out

    def nodes(self):
        """[(site, node), ...] with records or latest messages, sorted."""
        rows = self._exec("SELECT DISTINCT site, node FROM records UNION "
                          "SELECT DISTINCT site, node FROM latest").fetchall()
        return sorted((r[0], r[1]) for r in rows)

    def rows(self, site, node):
        """The node's records in seq order: dicts with the indexed columns and `doc`."""
        out = []
        for (kind, seq, boot, up_ms, utc, event, resent, received, payload) in self._exec(
                "SELECT kind, seq, boot, up_ms, utc, event, resent, received, payload "
                "FROM records WHERE site = ? AND node = ? ORDER BY seq",
                (site, node)).fetchall():
            doc = payload if isinstance(payload, dict) else json.loads(payload)
            out.append({"kind": kind, "seq": seq, "boot": boot, "up_ms": up_ms, "utc": utc,
                        "event": event, "resent": bool(resent), "received": received,
                        "doc": doc})
        return out

    def latest(self, site, node):
        """{topic tail: (payload text, received)} of the node's latest-topic messages."""
        out = {}
        for topic, received, payload in self._exec(
                "SELECT topic, received, payload FROM latest WHERE site = ? AND node = ?",
                (site, node)).fetchall():
            where = parse_topic(topic)
            out[where[2] if where else topic] = (payload, received)
        return out

    def count(self, site=None, node=None):
        if site is None:
            return self._exec("SELECT count(*) FROM records").fetchone()[0]
        return self._exec("SELECT count(*) FROM records WHERE site = ? AND node = ?",
                          (site, node)).fetchone()[0]


class SqliteStore(Store):
    dialect = "sqlite"
    ph = "?"

    def __init__(self, path):
        super().__init__()
        self.path = str(path)
        self.conn = sqlite3.connect(self.path, check_same_thread=False)
        # WAL: readers (a report while recording) never block the writer; NORMAL: a
        # commit is durable against a process crash, and costs no fsync per commit
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.executescript(_SQLITE_SCHEMA)
        ver = self.meta().get("schema_version")
        if ver is not None and int(ver) != SCHEMA_VERSION:
            raise RecordError(f"{self.path}: record schema {ver}, this tool writes "
                              f"{SCHEMA_VERSION}")
        self.set_meta("schema_version", SCHEMA_VERSION)
        self.commit()

    def close(self):
        # fold the write-ahead log into the file: a stopped recorder leaves one file that
        # can be copied or mailed as it is
        try:
            self.conn.execute("PRAGMA busy_timeout = 0")  # never wait for it at the end
            self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error:
            pass  # another reader holds it: its last close folds it in
        self.conn.close()

    def __repr__(self):
        return f"SQLite {self.path}"


class PgStore(Store):
    dialect = "postgresql"
    ph = "%s"

    def __init__(self, url):
        super().__init__()
        import psycopg

        self.url = url
        self.conn = psycopg.connect(url, connect_timeout=10)
        with self.conn.transaction():
            self.conn.execute("SELECT pg_advisory_xact_lock(%s)", (_PG_SCHEMA_LOCK,))
            for stmt in _PG_SCHEMA.split(";"):
                if stmt.strip():
                    self.conn.execute(stmt)
            row = self.conn.execute(
                "SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            if row is not None and int(row[0]) != SCHEMA_VERSION:
                raise RecordError(f"record schema {row[0]} in the database, this tool "
                                  f"writes {SCHEMA_VERSION}")
            self.set_meta("schema_version", SCHEMA_VERSION)

    def __repr__(self):
        return "PostgreSQL " + redact_url(self.url)


def redact_url(url):
    """The URL without a password (for messages)."""
    from urllib.parse import urlsplit, urlunsplit

    u = urlsplit(url)
    if u.password is None:
        return url
    host = u.hostname or ""
    if u.port:
        host += f":{u.port}"
    return urlunsplit((u.scheme, f"{u.username}:***@{host}", u.path, u.query, u.fragment))


def is_pg_url(target):
    return str(target).startswith(("postgresql://", "postgres://"))


def open_store(target, create=True):
    """A Store for a SQLite file path or a postgresql:// URL. With create=False a SQLite
    file must exist (a report reads it)."""
    if is_pg_url(target):
        return PgStore(target)
    if not create and not os.path.isfile(target):
        raise RecordError(f"{target}: no such record file")
    return SqliteStore(target)
