"""Read a topic from the beginning until a condition holds: the one helper the live tests share."""

from __future__ import annotations

import time
from typing import Callable

from stream.settings import Settings


async def collect(s: Settings, topic: str, until: Callable[[list], bool], timeout_s: float) -> list:
    """Every record of ``topic`` (from the earliest offset, no group) until ``until(records)`` or the timeout."""
    from stream.kafka import consumer

    c = consumer(s, topic, group_id=None, auto_offset_reset="earliest")
    await c.start()
    got: list = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline and not until(got):
            for recs in (await c.getmany(timeout_ms=200)).values():
                got.extend(recs)
    finally:
        await c.stop()
    return got
