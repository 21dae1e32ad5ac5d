"""The audit trail: every alert decision, kept append-only in SQLite by a consumer of the alerts topic.

Medical-device software must be able to reconstruct *why* an alarm was (or was not) raised
(IEC 62304 5.1.9/9 problem resolution, IEC 60601-1-8 6.12 alarm-system logging; FDA 21 CFR
Part 11 11.10(e) for audit trails: "secure, computer-generated, time-stamped", never
obscuring earlier entries). :class:`AuditStore` keeps one row per alert event with what the
decision rested on: the window (sequence number and time span), the MI probability and the
start/end thresholds, the policy state (phase, level, episode), model name/version and the
checkpoint hash, the labs used (with their ages) and the quality flags, plus the raw message
and where it came from (topic, partition, offset).

Guarantees:

* **Append-only.** ``BEFORE UPDATE`` / ``BEFORE DELETE`` triggers ``RAISE(ABORT)`` on both
  tables, so no code path (ours or an ad-hoc ``sqlite3`` session) can edit history silently.
  Anyone with write access to the file could still drop the triggers, so each row also carries a
  SHA-256 **hash chain** over the previous row's hash and its own content:
  :meth:`AuditStore.verify` finds any edited, inserted or removed row.
* **Exactly one row per event.** ``event_id`` is UNIQUE (``alert_id:phase:window_seq``,
  identical on a replayed duplicate); duplicates are skipped with ``ON CONFLICT DO NOTHING``.
* **Durable before acknowledged.** WAL journal with ``synchronous=FULL``: a transaction is on
  disk when ``commit`` returns. :class:`AuditConsumer` commits its Kafka offsets only after that,
  so a crash re-reads (and deduplicates) rather than loses events.
* Indexed by bed and time (``window_end_ns``, the end of the window the decision was made on).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

from stream.core.schema import Alert
from stream.errors import AuditError, WireError
from stream.settings import Settings

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
GENESIS = "0" * 64

_COLUMNS = ("event_id", "alert_id", "alert_type", "kind", "phase", "bed_id", "patient_id", "window_seq",
            "window_start_ns", "window_end_ns", "emitted_ns", "probability", "threshold_start", "threshold_end",
            "level", "model_name", "model_version", "checkpoint_sha", "labs_json", "labs_available",
            "quality_flags_json", "advisories_json", "policy_json", "alert_json", "source_topic", "source_partition",
            "source_offset", "recorded_ns", "row_hash")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS audit_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS audit_events (
    row_id INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL UNIQUE, alert_id TEXT NOT NULL, alert_type TEXT NOT NULL, kind TEXT NOT NULL,
    phase TEXT NOT NULL, bed_id TEXT NOT NULL, patient_id TEXT NOT NULL, window_seq INTEGER NOT NULL,
    window_start_ns INTEGER NOT NULL, window_end_ns INTEGER NOT NULL, emitted_ns INTEGER NOT NULL,
    probability REAL, threshold_start REAL, threshold_end REAL, level INTEGER NOT NULL,
    model_name TEXT NOT NULL, model_version TEXT NOT NULL, checkpoint_sha TEXT NOT NULL,
    labs_json TEXT NOT NULL, labs_available INTEGER NOT NULL, quality_flags_json TEXT NOT NULL,
    advisories_json TEXT NOT NULL, policy_json TEXT NOT NULL, alert_json TEXT NOT NULL,
    source_topic TEXT, source_partition INTEGER, source_offset INTEGER,
    recorded_ns INTEGER NOT NULL, row_hash TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_events_bed_time ON audit_events (bed_id, window_end_ns);
CREATE INDEX IF NOT EXISTS audit_events_time ON audit_events (window_end_ns);
CREATE INDEX IF NOT EXISTS audit_events_alert ON audit_events (alert_id);
CREATE TABLE IF NOT EXISTS audit_rejects (
    row_id INTEGER PRIMARY KEY AUTOINCREMENT, source_topic TEXT, source_partition INTEGER, source_offset INTEGER,
    reason TEXT NOT NULL, raw BLOB, recorded_ns INTEGER NOT NULL
);
"""
_TRIGGERS = "\n".join(
    f"CREATE TRIGGER IF NOT EXISTS {table}_no_{op.lower()} BEFORE {op} ON {table} "
    f"BEGIN SELECT RAISE(ABORT, 'audit trail is append-only: {op} on {table} refused'); END;"
    for table in ("audit_events", "audit_rejects") for op in ("UPDATE", "DELETE"))


@dataclass(frozen=True)
class SourcePosition:
    """Where an event was read: topic, partition, offset (None when it did not come from Kafka)."""

    topic: str | None = None
    partition: int | None = None
    offset: int | None = None


@dataclass(frozen=True)
class AuditRecord:
    """One row of the trail: the alert event plus its provenance."""

    row_id: int
    alert: Alert
    policy: dict[str, Any]
    source: SourcePosition
    recorded_ns: int
    row_hash: str

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able form (``mirage audit query --json``)."""
        from dataclasses import asdict

        return {"row_id": self.row_id, "recorded_ns": self.recorded_ns, "policy": self.policy,
                "source": asdict(self.source), "row_hash": self.row_hash, "alert": asdict(self.alert)}


@dataclass
class AppendResult:
    """What one :meth:`AuditStore.append` call wrote."""

    inserted: int = 0
    duplicates: int = 0
    event_ids: list[str] = field(default_factory=list)


def policy_state(alert: Alert) -> dict[str, Any]:
    """The policy state an event records: episode, phase, level, thresholds, active after the event."""
    return {"alert_id": alert.alert_id, "phase": alert.phase, "level": alert.level, "active": alert.phase != "end",
            "threshold_start": alert.threshold_start, "threshold_end": alert.threshold_end}


def _row_hash(prev: str, alert_json: str, recorded_ns: int) -> str:
    return hashlib.sha256(f"{prev}\n{recorded_ns}\n{alert_json}".encode("utf-8")).hexdigest()


class AuditStore:
    """The append-only SQLite audit trail (see the module docstring).

    Args:
        path: the database file (created with its folder unless ``create`` is False).
        create: False to refuse a missing file (queries), raising :class:`AuditError`.
    """

    def __init__(self, path: str | Path, *, create: bool = True) -> None:
        self.path = Path(path)
        if not create and not self.path.is_file():
            raise AuditError(f"audit database {self.path} does not exist")
        try:
            if create:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False)
        except (OSError, sqlite3.Error) as exc:
            raise AuditError(f"cannot open audit database {self.path}: {exc}") from None
        try:
            self._init_schema()
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise AuditError(f"audit database {self.path} is corrupt or not an SQLite database: {exc}") from None
        except AuditError:
            self._db.close()
            raise

    def _init_schema(self) -> None:
        db = self._db
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("PRAGMA busy_timeout=5000")
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if tables and "audit_meta" not in tables:
            raise AuditError(f"{self.path} is an SQLite database but not a MIRAGE audit trail (tables {sorted(tables)})")
        db.executescript(_SCHEMA + _TRIGGERS)
        row = db.execute("SELECT value FROM audit_meta WHERE key='schema_version'").fetchone()
        if row is None:
            db.execute("INSERT INTO audit_meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        elif row[0] != str(SCHEMA_VERSION):
            raise AuditError(f"audit database {self.path} has schema version {row[0]}, this build reads {SCHEMA_VERSION}")

    def __enter__(self) -> "AuditStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._db.close()

    # -- writing --------------------------------------------------------------------------------
    def append(self, events: Sequence[Alert | tuple[Alert, SourcePosition]], recorded_ns: int | None = None) -> AppendResult:
        """Write events in one durable transaction; events already recorded (same ``event_id``) are skipped."""
        result = AppendResult()
        now = time.time_ns() if recorded_ns is None else int(recorded_ns)
        try:
            self._db.execute("BEGIN IMMEDIATE")  # the write lock before reading the chain's tail
            try:
                row = self._db.execute("SELECT row_hash FROM audit_events ORDER BY row_id DESC LIMIT 1").fetchone()
                prev = row[0] if row else GENESIS
                for item in events:
                    alert, src = item if isinstance(item, tuple) else (item, SourcePosition())
                    values = self._values(alert, src, now, prev)
                    cur = self._db.execute(
                        f"INSERT INTO audit_events ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))}) "
                        "ON CONFLICT(event_id) DO NOTHING", values)
                    if cur.rowcount == 1:
                        prev = values[-1]
                        result.inserted += 1
                        result.event_ids.append(alert.event_id)
                    else:
                        result.duplicates += 1
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise AuditError(f"cannot write audit database {self.path}: {exc}") from None
        return result

    @staticmethod
    def _values(alert: Alert, src: SourcePosition, now: int, prev: str) -> tuple[Any, ...]:
        alert_json = alert.to_bytes().decode("utf-8")
        dumps = json.dumps
        return (alert.event_id, alert.alert_id, alert.alert_type, alert.kind, alert.phase, alert.bed_id, alert.patient_id,
                alert.window_seq, alert.window_start_ns, alert.window_end_ns, alert.emitted_ns, alert.probability,
                alert.threshold_start, alert.threshold_end, alert.level, alert.model_name, alert.model_version,
                alert.checkpoint_sha, dumps(alert.labs), int(alert.labs_available), dumps(alert.quality_flags),
                dumps(alert.advisories), dumps(policy_state(alert)), alert_json, src.topic, src.partition, src.offset,
                now, _row_hash(prev, alert_json, now))

    def reject(self, src: SourcePosition, reason: str, raw: bytes | None, recorded_ns: int | None = None) -> None:
        """Record a message on the alerts topic that is not a valid alert (kept, never silently dropped)."""
        try:
            self._db.execute("INSERT INTO audit_rejects (source_topic, source_partition, source_offset, reason, raw, recorded_ns) "
                             "VALUES (?, ?, ?, ?, ?, ?)", (src.topic, src.partition, src.offset, reason[:500], raw,
                                                           time.time_ns() if recorded_ns is None else recorded_ns))
        except sqlite3.Error as exc:
            raise AuditError(f"cannot write audit database {self.path}: {exc}") from None

    # -- reading --------------------------------------------------------------------------------
    def query(self, *, bed_id: str | None = None, since_ns: int | None = None, until_ns: int | None = None,
              alert_type: str | None = None, alert_id: str | None = None, limit: int | None = None) -> list[AuditRecord]:
        """Rows matching every given filter, oldest window first; times bound ``window_end_ns`` (until exclusive)."""
        where, args = [], []
        for column, op, value in (("bed_id", "=", bed_id), ("window_end_ns", ">=", since_ns), ("window_end_ns", "<", until_ns),
                                  ("alert_type", "=", alert_type), ("alert_id", "=", alert_id)):
            if value is not None:
                where.append(f"{column} {op} ?")
                args.append(value)
        sql = "SELECT row_id, alert_json, policy_json, source_topic, source_partition, source_offset, recorded_ns, row_hash FROM audit_events"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY window_end_ns, row_id"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        try:
            rows = self._db.execute(sql, args).fetchall()
        except sqlite3.DatabaseError as exc:
            raise AuditError(f"cannot read audit database {self.path}: {exc}") from None
        return [AuditRecord(r[0], Alert.from_bytes(r[1].encode("utf-8")), json.loads(r[2]), SourcePosition(r[3], r[4], r[5]),
                            r[6], r[7]) for r in rows]

    def count(self, table: str = "audit_events") -> int:
        """Number of rows in ``audit_events`` (or ``audit_rejects``)."""
        if table not in ("audit_events", "audit_rejects"):
            raise AuditError(f"unknown audit table {table!r}")
        return int(self._db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])

    def _chain(self) -> Iterator[tuple[int, str, int, str]]:
        yield from self._db.execute("SELECT row_id, alert_json, recorded_ns, row_hash FROM audit_events ORDER BY row_id")

    def verify(self) -> int:
        """Recompute the hash chain; return the number of rows, or raise :class:`AuditError` at the first bad row."""
        prev, n = GENESIS, 0
        try:
            for row_id, alert_json, recorded_ns, row_hash in self._chain():
                if _row_hash(prev, alert_json, recorded_ns) != row_hash:
                    raise AuditError(f"audit database {self.path}: hash chain broken at row {row_id} "
                                     "(a row was edited, inserted or removed)")
                prev, n = row_hash, n + 1
        except sqlite3.DatabaseError as exc:
            raise AuditError(f"cannot read audit database {self.path}: {exc}") from None
        return n


class AuditConsumer:
    """Keep the trail from the alerts topic: read, write durably, then commit the offsets.

    Args:
        settings: broker settings and the alerts topic name.
        store: the trail to append to.
        group: the consumer group (its own, so it reads every alert independently of other readers).
        max_records: largest batch written in one transaction.
    """

    def __init__(self, settings: Settings, store: AuditStore, *, group: str = "mirage-audit", max_records: int = 500) -> None:
        self.settings = settings
        self.store = store
        self.group = group
        self.max_records = max_records
        self.messages = 0
        self.inserted = 0
        self.duplicates = 0
        self.rejected = 0
        self._consumer: Any = None

    async def start(self) -> None:
        """Connect and join the group (reads from the earliest offset when the group has none)."""
        from stream.kafka import consumer

        self._consumer = consumer(self.settings, self.settings.topic_alerts, group_id=self.group,
                                  enable_auto_commit=False, auto_offset_reset="earliest")
        await self._consumer.start()

    async def stop(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None

    async def poll_once(self, timeout_ms: int = 500) -> int:
        """Read one batch, append it, commit its offsets; return the number of messages handled."""
        from aiokafka.structs import OffsetAndMetadata

        if self._consumer is None:
            raise AuditError("AuditConsumer.poll_once called before start()")
        batches = await self._consumer.getmany(timeout_ms=timeout_ms, max_records=self.max_records)
        events: list[tuple[Alert, SourcePosition]] = []
        offsets: dict[Any, OffsetAndMetadata] = {}
        handled = 0
        for tp, records in batches.items():
            for rec in records:
                src = SourcePosition(rec.topic, rec.partition, rec.offset)
                try:
                    events.append((Alert.from_bytes(rec.value or b""), src))
                except WireError as exc:
                    log.warning("rejected message at %s[%d]@%d: %s", rec.topic, rec.partition, rec.offset, exc.reason)
                    await asyncio.to_thread(self.store.reject, src, str(exc), rec.value)
                    self.rejected += 1
                handled += 1
            if records:
                offsets[tp] = OffsetAndMetadata(records[-1].offset + 1, "")
        if events:
            # SQLite's fsync runs off the event loop so heartbeats continue.
            res = await asyncio.to_thread(self.store.append, events)
            self.inserted += res.inserted
            self.duplicates += res.duplicates
        if offsets:
            await self._consumer.commit(offsets)  # only now: the rows are on disk
        self.messages += handled
        return handled

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Poll until ``stop`` is set (or forever); errors propagate with the offsets uncommitted."""
        stop = stop or asyncio.Event()
        while not stop.is_set():
            await self.poll_once()

    def stats(self) -> dict[str, int]:
        return {"messages": self.messages, "inserted": self.inserted, "duplicates": self.duplicates, "rejected": self.rejected}
