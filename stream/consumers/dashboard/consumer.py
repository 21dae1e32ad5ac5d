"""Kafka side of the dashboard: read alerts and acknowledgements, publish acknowledgements.

Every dashboard instance reads the whole alerts topic and the whole acks topic *from the
beginning* in a consumer group of its own (``mirage-dashboard-<random>`` unless ``group`` is
given): each instance must see every alert (a group shared between instances would split the
partitions between them), and reading from the start rebuilds the ward state after a restart.
Offsets are never committed for the same reason.

An acknowledgement clicked on any page is published to the acks topic (key = bed); every
instance, including the one that published it, applies it when it reads it back, so all open
pages of all instances converge on the same state. The publishing instance also applies it
at once so its own pages answer without a broker round trip (deduplicated by ``ack_id``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from typing import Any, Callable

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from stream.consumers.dashboard.state import Ack, WardState
from stream.core.schema import Alert
from stream.errors import WireError
from stream.settings import Settings

log = logging.getLogger(__name__)


class DashboardFeed:
    """Consumes alerts + acks into a :class:`WardState`; calls ``on_change(bed_id)`` on changes.

    Args:
        settings: broker address, security, topic names, timeouts.
        state: the ward state this feed writes.
        on_change: called (on the event loop) with the bed id whose view changed.
        group: consumer group id; default a fresh one per instance.
        on_caught_up: called once when the first read from the beginning has caught up.
    """

    def __init__(self, settings: Settings, state: WardState, on_change: Callable[[str], None],
                 group: str | None = None, on_caught_up: Callable[[], None] | None = None) -> None:
        self.settings = settings
        self.on_caught_up = on_caught_up
        self.state = state
        self.on_change = on_change
        self.group = group or f"mirage-dashboard-{uuid.uuid4().hex[:12]}"
        self.instance = uuid.uuid4().hex[:8]
        self.counts: dict[str, int] = {"alerts": 0, "acks": 0, "invalid": 0, "duplicates": 0, "acks_published": 0}
        self.caught_up = asyncio.Event()
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        s = self.settings
        kw = s.kafka_client_kwargs()
        self._consumer = AIOKafkaConsumer(
            s.topic_alerts, s.topic_acks, group_id=self.group, auto_offset_reset="earliest",
            enable_auto_commit=False, session_timeout_ms=int(s.session_timeout_s * 1000),
            heartbeat_interval_ms=max(100, int(s.session_timeout_s * 1000 / 3)),
            fetch_max_wait_ms=s.fetch_max_wait_ms, max_partition_fetch_bytes=s.max_message_bytes, **kw)
        self._producer = AIOKafkaProducer(acks="all", enable_idempotence=False, linger_ms=0, **kw)
        await self._producer.start()
        await self._consumer.start()
        self._task = asyncio.create_task(self._run(), name="dashboard-feed")
        log.info("dashboard feed reading %s and %s from the beginning (group %s)", s.topic_alerts, s.topic_acks, self.group)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        if self._consumer is not None:
            await self._consumer.stop()
        if self._producer is not None:
            await self._producer.stop()

    async def _run(self) -> None:
        consumer = self._consumer
        if consumer is None:
            raise RuntimeError("dashboard feed is not started")
        while True:
            try:
                batches = await consumer.getmany(timeout_ms=500, max_records=500)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # broker gone for a while: keep trying, the page shows staleness
                log.warning("dashboard feed fetch failed (%s); retrying", type(exc).__name__)
                await asyncio.sleep(1.0)
                continue
            if not batches and consumer.assignment() and not self.caught_up.is_set():
                self.caught_up.set()
                log.info("dashboard caught up: %d alerts, %d acknowledgements read", self.counts["alerts"], self.counts["acks"])
                if self.on_caught_up is not None:
                    self.on_caught_up()
            for tp, records in batches.items():
                for rec in records:
                    self.handle(tp.topic, rec.value)

    def handle(self, topic: str, value: bytes | None) -> str | None:
        """Apply one raw message from ``topic``; return the changed bed (or None)."""
        try:
            if value is None:
                raise WireError("empty", "message without value")
            if topic == self.settings.topic_acks:
                ack = Ack.from_mapping(json.loads(value.decode("utf-8")))
                self.counts["acks"] += 1
                bed = self.state.apply_ack(ack)
            else:
                alert = Alert.from_bytes(value)
                self.counts["alerts"] += 1
                bed = self.state.apply_alert(alert)
        except (WireError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            self.counts["invalid"] += 1
            reason = exc.reason if isinstance(exc, WireError) else type(exc).__name__
            log.warning("dashboard skipped an invalid message on %s (%s)", topic, reason)
            return None
        self.counts["duplicates"] = self.state.duplicates
        if bed is not None:
            self.on_change(bed)
        return bed

    async def acknowledge(self, alert_id: str, by: str = "") -> Ack:
        """Publish an acknowledgement of ``alert_id`` and apply it here at once.

        Raises:
            KeyError: no alert with that id is known to this dashboard.
        """
        ep = self.state.episode(alert_id)
        if ep is None:
            raise KeyError(alert_id)
        ack = Ack(ack_id=f"ack-{uuid.uuid4().hex}", alert_id=alert_id, bed_id=ep.bed_id,
                  acked_ns=time.time_ns(), by=by[:64])
        if self._producer is None:
            raise RuntimeError("dashboard feed is not started")
        payload: dict[str, Any] = ack.to_dict()
        await self._producer.send_and_wait(self.settings.topic_acks, json.dumps(payload).encode("utf-8"),
                                           key=ep.bed_id.encode("utf-8"))
        self.counts["acks_published"] += 1
        bed = self.state.apply_ack(ack)
        if bed is not None:
            self.on_change(bed)
        log.info("alert %s acknowledged", alert_id)
        return ack
