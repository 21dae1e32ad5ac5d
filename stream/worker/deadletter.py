"""Dead letters: messages the worker cannot use go to ``Settings.topic_deadletter``, unchanged.

A poison message must never stop a bedside monitor, and must never be silently lost either
(the "dead letter channel" of Hohpe & Woolf, Enterprise Integration Patterns). The raw value is
forwarded byte for byte with the original key, plus headers:

* ``mirage-reason`` - a short code (``bad_magic``, ``truncated``, ``bad_json``, ...; the
  :class:`stream.errors.WireError` reason, or ``processing_error``);
* ``mirage-detail`` - one line of detail (never waveform data);
* ``mirage-source-topic`` - where the message came from;
* ``mirage-source-partition`` / ``mirage-source-offset`` - to find the original.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

MAX_DETAIL = 500


@dataclass(frozen=True)
class DeadLetter:
    """One message to forward to the dead-letter topic."""

    key: bytes | None
    value: bytes
    reason: str
    detail: str
    source_topic: str
    source_partition: int = -1
    source_offset: int = -1

    def headers(self) -> list[tuple[str, bytes]]:
        return [
            ("mirage-reason", self.reason.encode("utf-8")),
            ("mirage-detail", self.detail[:MAX_DETAIL].encode("utf-8", "replace")),
            ("mirage-source-topic", self.source_topic.encode("utf-8")),
            ("mirage-source-partition", str(self.source_partition).encode()),
            ("mirage-source-offset", str(self.source_offset).encode()),
        ]


class DeadLetterSink:
    """Send dead letters with an aiokafka producer and count them.

    Args:
        producer: a started ``AIOKafkaProducer``.
        topic: the dead-letter topic.
        metrics: optional :class:`stream.worker.metrics.StreamMetrics`.
    """

    def __init__(self, producer: Any, topic: str, metrics: Any | None = None) -> None:
        self.producer = producer
        self.topic = topic
        self.metrics = metrics
        self.count = 0

    async def send(self, letter: DeadLetter) -> None:
        """Forward ``letter`` and wait for the broker's acknowledgement."""
        value = letter.value if isinstance(letter.value, (bytes, bytearray)) else bytes(str(letter.value), "utf-8")
        await self.producer.send_and_wait(self.topic, value=bytes(value), key=letter.key, headers=letter.headers())
        self.count += 1
        if self.metrics is not None:
            self.metrics.deadletters.labels(reason=letter.reason).inc()
        log.warning("dead letter from %s[%d]@%d: %s", letter.source_topic, letter.source_partition, letter.source_offset, letter.reason)
