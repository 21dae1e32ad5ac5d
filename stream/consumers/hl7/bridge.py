"""Alerts topic -> HL7 v2 ORU^R40 over MLLP to an alarm manager (IHE PCD ACM "Alert Reporter").

Two loops share one durable :class:`~stream.consumers.hl7.mllp.Outbox`:

* the *intake* reads ``mirage.alerts`` in the consumer group ``mirage-hl7-bridge``, builds the
  PCD-04 message of each alert event and stores it in the outbox (idempotent on ``event_id``),
  and only then commits the Kafka offset: a crash between the two re-reads the alert, which the
  outbox ignores as a duplicate. Nothing read is lost.
* the *sender* sends due messages oldest first over one MLLP connection and waits for each
  ACK^R41. On a connection error, timeout or a rejecting ACK it records the attempt, schedules
  the next try with exponential backoff, and stops the sweep so later events of a bed never
  overtake an earlier one (head-of-line order, as alarm managers expect start before end).

An alert is never dropped silently: every failed attempt is logged (warning; error from
``alarm_after`` attempts on) and counted (``mirage_hl7_failures_total``,
``mirage_hl7_pending``), and the message stays in the outbox until an accepting ACK arrives.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from aiokafka import AIOKafkaConsumer
from prometheus_client import CollectorRegistry, Counter, Gauge

from stream.consumers.hl7.mllp import MllpClient, MllpError, Outbox, OutboxItem, backoff_s
from stream.consumers.hl7.pcd04 import Endpoint, build_oru_r40, escape
from stream.core.schema import Alert
from stream.errors import WireError
from stream.settings import Settings

log = logging.getLogger(__name__)


class BridgeMetrics:
    """Counters of the bridge in a registry of its own (several bridges may share a process)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.received = Counter("mirage_hl7_alerts_received", "Alert events read from the alerts topic", registry=self.registry)
        self.invalid = Counter("mirage_hl7_alerts_invalid", "Alert events that could not be decoded", registry=self.registry)
        self.sent = Counter("mirage_hl7_sent", "Messages accepted by the receiver (AA/CA)", registry=self.registry)
        self.failures = Counter("mirage_hl7_failures", "Failed send attempts (no ACK, error, reject)", ["reason"],
                                registry=self.registry)
        self.pending = Gauge("mirage_hl7_pending", "Messages in the outbox awaiting an accepting ACK", registry=self.registry)


class Hl7Bridge:
    """Forward alert events to an MLLP receiver, durably.

    Args:
        settings: broker and topic settings.
        client: the MLLP connection to the alarm manager.
        outbox: the durable outbox.
        group: consumer group (committed offsets: a restart resumes where it stopped).
        endpoint: MSH sender/receiver identity.
        backoff_base_s, backoff_cap_s: retry spacing.
        alarm_after: from this many failed attempts on, each failure is logged as an error.
        metrics: counters (a fresh registry by default).
    """

    def __init__(self, settings: Settings, client: MllpClient, outbox: Outbox, *, group: str = "mirage-hl7-bridge",
                 endpoint: Endpoint | None = None, backoff_base_s: float = 0.5, backoff_cap_s: float = 60.0,
                 alarm_after: int = 5, metrics: BridgeMetrics | None = None) -> None:
        self.settings = settings
        self.client = client
        self.outbox = outbox
        self.group = group
        self.endpoint = endpoint or Endpoint()
        self.backoff_base_s = backoff_base_s
        self.backoff_cap_s = backoff_cap_s
        self.alarm_after = alarm_after
        self.metrics = metrics or BridgeMetrics()
        self._wake = asyncio.Event()
        self._consumer: AIOKafkaConsumer | None = None
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def tasks(self) -> list[asyncio.Task[None]]:
        """The running intake and sender loops (empty before :meth:`start`)."""
        return list(self._tasks)

    # -- intake ----------------------------------------------------------------------------------
    def enqueue(self, value: bytes | None) -> bool:
        """Turn one raw alerts-topic message into an outbox entry; False if invalid or duplicate."""
        self.metrics.received.inc()
        try:
            if value is None:
                raise WireError("empty", "message without value")
            alert = Alert.from_bytes(value)
            message = build_oru_r40(alert, alert.event_id, now_ns=time.time_ns(), endpoint=self.endpoint)
        except WireError as exc:
            self.metrics.invalid.inc()
            log.error("alert event could not be turned into HL7 (%s): not forwarded", exc.reason)
            return False
        added = self.outbox.add(alert.event_id, message, lane=alert.bed_id)
        if added:
            self._wake.set()
        self.metrics.pending.set(self.outbox.pending_count())
        return added

    async def _intake(self) -> None:
        consumer = self._consumer
        if consumer is None:
            raise RuntimeError("bridge is not started")
        while True:
            try:
                batches = await consumer.getmany(timeout_ms=500, max_records=200)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("hl7 bridge fetch failed (%s); retrying", type(exc).__name__)
                await asyncio.sleep(1.0)
                continue
            for records in batches.values():
                for rec in records:
                    self.enqueue(rec.value)
            if batches:
                await consumer.commit()  # after the outbox holds them (SQLite synchronous=FULL)

    # -- sender ----------------------------------------------------------------------------------
    async def send_due(self) -> int:
        """One sweep over due messages, oldest first per bed. A rejected message holds back the
        later ones of its bed until its retry; a transport failure ends the sweep. Returns sent count."""
        n = 0
        held: set[str] = set()
        for item in self.outbox.due():
            if item.lane in held:
                continue
            try:
                ack = await self.client.send(item.message)
            except MllpError as exc:
                self._failed(item, "transport", str(exc))
                break
            if ack.control_id != escape(item.event_id):  # an ACK for some other message: do not trust it
                self._failed(item, "transport", f"ACK for control id {ack.control_id[:80]!r}, sent {item.event_id!r}")
                await self.client.close()
                break
            if ack.accepted:
                self.outbox.done(item.event_id, ack.code)
                self.metrics.sent.inc()
                n += 1
            else:
                self._failed(item, "rejected", f"MSA-1 {ack.code} {ack.text[:120]}")
                held.add(item.lane)
        self.metrics.pending.set(self.outbox.pending_count())
        return n

    def _failed(self, item: OutboxItem, reason: str, detail: str) -> None:
        attempt = item.attempts + 1
        delay = backoff_s(attempt, self.backoff_base_s, self.backoff_cap_s)
        self.outbox.failed(item.event_id, detail, time.time() + delay)
        self.metrics.failures.labels(reason).inc()
        level = logging.ERROR if attempt >= self.alarm_after else logging.WARNING
        log.log(level, "HL7 alert %s not delivered (attempt %d: %s); retry in %.1f s, %d waiting",
                item.event_id, attempt, detail, delay, self.outbox.pending_count())

    async def _sender(self) -> None:
        while True:
            self._wake.clear()  # before the sweep: an alert enqueued during it wakes the next one
            await self.send_due()
            nxt = self.outbox.next_due()
            wait = self.backoff_cap_s if nxt is None else max(0.0, nxt - time.time())
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=max(0.01, wait))
            except asyncio.TimeoutError:
                pass

    # -- lifecycle -------------------------------------------------------------------------------
    async def start(self) -> None:
        s = self.settings
        self._consumer = AIOKafkaConsumer(
            s.topic_alerts, group_id=self.group, auto_offset_reset="earliest", enable_auto_commit=False,
            session_timeout_ms=int(s.session_timeout_s * 1000),
            heartbeat_interval_ms=max(100, int(s.session_timeout_s * 1000 / 3)),
            fetch_max_wait_ms=s.fetch_max_wait_ms, max_partition_fetch_bytes=s.max_message_bytes,
            **s.kafka_client_kwargs())
        await self._consumer.start()
        pending = self.outbox.pending_count()
        if pending:
            log.warning("hl7 bridge starts with %d undelivered messages in the outbox", pending)
        self._tasks = [asyncio.create_task(self._intake(), name="hl7-intake"),
                       asyncio.create_task(self._sender(), name="hl7-sender")]
        log.info("hl7 bridge: %s -> MLLP %s (group %s)", s.topic_alerts, self.client.where, self.group)

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            try:
                await t
            except asyncio.CancelledError:
                pass
            except Exception as exc:  # already fatal for the CLI; stopping must still release all
                log.error("hl7 bridge loop %s had failed: %r", t.get_name(), exc)
        self._tasks = []
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None
        await self.client.close()

    def stats(self) -> dict[str, Any]:
        return {"pending": self.outbox.pending_count(), "sent": self.outbox.sent_count()}
