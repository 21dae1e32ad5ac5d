"""MLLP transport (HL7 v2 Minimal Lower Layer Protocol, HL7 v2.6 Appendix C) and a durable outbox.

Frame: ``0x0B`` + message bytes + ``0x1C 0x0D``. The client sends one message, waits for the
receiver's ACK^R41 on the same connection, and reconnects on any error. Delivery is
at-least-once: :class:`Outbox` (SQLite, WAL, ``synchronous=FULL``) holds every message until an
accepting ACK (MSA-1 ``AA``/``CA``) arrives, so neither a receiver outage nor a bridge restart
drops an alert; :func:`backoff_s` spaces the retries (exponential, capped, with jitter).
A receiver answering ``AR``/``CR`` (reject) is retried too, and the reply is logged: an alarm
must not disappear because the alarm manager refused it once.
"""

from __future__ import annotations

import asyncio
import logging
import random
import sqlite3
import ssl
import time
from dataclasses import dataclass
from pathlib import Path

from stream.consumers.hl7.pcd04 import AckResult, parse_ack
from stream.errors import WireError

log = logging.getLogger(__name__)

START = b"\x0b"
END = b"\x1c\x0d"
MAX_FRAME = 1024 * 1024


class MllpError(ConnectionError):
    """The receiver could not be reached or did not answer with a valid ACK (names host:port)."""


def frame(message: str) -> bytes:
    return START + message.encode("utf-8") + END


async def read_frame(reader: asyncio.StreamReader, max_bytes: int = MAX_FRAME) -> str:
    """Read one MLLP frame (bytes before the start byte are skipped, as receivers do)."""
    await reader.readuntil(START)
    data = await reader.readuntil(END)
    if len(data) > max_bytes:
        raise WireError("too_large", f"MLLP frame of {len(data)} bytes")
    return data[:-len(END)].decode("utf-8", errors="replace")


def backoff_s(attempt: int, base_s: float = 0.5, cap_s: float = 60.0, rng: random.Random | None = None) -> float:
    """Delay before retry ``attempt`` (1 = first retry): base * 2^(attempt-1), capped, +-20 % jitter."""
    raw = min(cap_s, base_s * (2 ** max(0, attempt - 1)))
    r = (rng or random).uniform(0.8, 1.2)
    return min(cap_s, raw * r)


def tls_context(cafile: str | None = None, certfile: str | None = None, keyfile: str | None = None) -> ssl.SSLContext:
    """A client TLS context for MLLP over TLS: verifies the receiver (system CAs or ``cafile``,
    host name checked), TLS 1.2 or newer, and presents ``certfile``/``keyfile`` for mutual TLS."""
    ctx = ssl.create_default_context(cafile=cafile or None)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if certfile:
        ctx.load_cert_chain(certfile, keyfile or None)
    return ctx


class MllpClient:
    """One persistent MLLP connection to an alarm manager.

    Args:
        host, port: receiver address.
        ack_timeout_s: how long to wait for the ACK of one message.
        connect_timeout_s: TCP (and TLS handshake) timeout.
        ssl_context: MLLP over TLS when given (see :func:`tls_context`).
    """

    def __init__(self, host: str, port: int, *, ack_timeout_s: float = 10.0, connect_timeout_s: float = 5.0,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.host, self.port = host, port
        self.ack_timeout_s = ack_timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.ssl_context = ssl_context
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}"

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self._reader is None or self._writer is None or self._writer.is_closing():
            try:
                self._reader, self._writer = await asyncio.wait_for(
                    asyncio.open_connection(self.host, self.port, ssl=self.ssl_context), timeout=self.connect_timeout_s)
            except (OSError, asyncio.TimeoutError) as exc:  # ssl.SSLError is an OSError
                raise MllpError(f"cannot connect to MLLP receiver {self.where}: {exc or type(exc).__name__}") from None
        return self._reader, self._writer

    async def send(self, message: str) -> AckResult:
        """Send one message and return the parsed ACK (accepted or not); raise :class:`MllpError`."""
        reader, writer = await self._connect()
        try:
            writer.write(frame(message))
            await writer.drain()
            reply = await asyncio.wait_for(read_frame(reader), timeout=self.ack_timeout_s)
            return parse_ack(reply)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, asyncio.TimeoutError, WireError) as exc:
            await self.close()
            raise MllpError(f"no valid ACK from {self.where}: {type(exc).__name__} {exc}") from None

    async def close(self) -> None:
        writer, self._reader, self._writer = self._writer, None, None
        if writer is not None:
            writer.close()
            try:
                await writer.wait_closed()
            except (OSError, ConnectionError):
                pass


@dataclass
class OutboxItem:
    """One message waiting for an accepting ACK."""

    event_id: str
    message: str
    lane: str
    attempts: int
    next_try: float
    created: float
    last_error: str


class Outbox:
    """Durable queue of HL7 messages (SQLite file), keyed by the alert's ``event_id``.

    ``add`` is idempotent (a redelivered alert event is stored once); ``done`` records the ACK and
    removes the item from the pending set; the sent rows stay as the delivery log.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(self.path), isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS outbox (event_id TEXT PRIMARY KEY, message TEXT NOT NULL, lane TEXT NOT NULL, "
            "created REAL NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, next_try REAL NOT NULL, "
            "last_error TEXT NOT NULL DEFAULT '', sent REAL, ack_code TEXT)")
        self._db.execute("CREATE INDEX IF NOT EXISTS outbox_pending ON outbox (sent, created)")

    def add(self, event_id: str, message: str, lane: str = "", now: float | None = None) -> bool:
        """Store a message; False if this event id is already stored (duplicate).

        ``lane`` orders delivery: messages of one lane (a bed) go out in the order added.
        """
        now = time.time() if now is None else now
        cur = self._db.execute("INSERT OR IGNORE INTO outbox (event_id, message, lane, created, next_try) "
                               "VALUES (?,?,?,?,?)", (event_id, message, lane, now, now))
        return cur.rowcount == 1

    def pending(self, limit: int = 1000) -> list[OutboxItem]:
        """Undelivered messages, oldest first."""
        rows = self._db.execute(
            "SELECT event_id, message, lane, attempts, next_try, created, last_error FROM outbox "
            "WHERE sent IS NULL ORDER BY created, rowid LIMIT ?", (limit,)).fetchall()
        return [OutboxItem(*r) for r in rows]

    def due(self, now: float | None = None, limit: int = 1000) -> list[OutboxItem]:
        """Messages to send now: per lane, the oldest pending ones up to the first that is not yet due
        (a later alert of a bed never overtakes an earlier one waiting for its retry)."""
        now = time.time() if now is None else now
        blocked: set[str] = set()
        out: list[OutboxItem] = []
        for item in self.pending(limit):
            if item.lane in blocked:
                continue
            if item.next_try > now:
                blocked.add(item.lane)
                continue
            out.append(item)
        return out

    def next_due(self, limit: int = 1000) -> float | None:
        """When the earliest lane head becomes due (None when nothing is pending)."""
        heads: dict[str, float] = {}
        for item in self.pending(limit):
            heads.setdefault(item.lane, item.next_try)
        return min(heads.values()) if heads else None

    def done(self, event_id: str, ack_code: str, now: float | None = None) -> None:
        self._db.execute("UPDATE outbox SET sent=?, ack_code=?, attempts=attempts+1 WHERE event_id=?",
                         (time.time() if now is None else now, ack_code, event_id))

    def failed(self, event_id: str, error: str, next_try: float) -> int:
        """Record a failed attempt; returns the attempt count so far."""
        self._db.execute("UPDATE outbox SET attempts=attempts+1, next_try=?, last_error=? WHERE event_id=?",
                         (next_try, error[:500], event_id))
        row = self._db.execute("SELECT attempts FROM outbox WHERE event_id=?", (event_id,)).fetchone()
        return int(row[0]) if row else 0

    def pending_count(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM outbox WHERE sent IS NULL").fetchone()[0])

    def sent_count(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM outbox WHERE sent IS NOT NULL").fetchone()[0])

    def close(self) -> None:
        self._db.close()
