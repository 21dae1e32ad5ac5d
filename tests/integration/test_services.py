"""The embedded broker and Redis really accept a produce/consume and a SET/GET."""

from __future__ import annotations

import asyncio

import pytest

pytestmark = pytest.mark.integration


def test_broker_round_trip(services, unique):
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    from deploy.services import create_topics

    topic = f"t-{unique}"
    create_topics(services.bootstrap, {topic: 1})

    async def run() -> list[bytes]:
        prod = AIOKafkaProducer(bootstrap_servers=services.bootstrap)
        await prod.start()
        for i in range(5):
            await prod.send_and_wait(topic, f"m{i}".encode(), key=b"bed-1")
        await prod.stop()
        cons = AIOKafkaConsumer(topic, bootstrap_servers=services.bootstrap, auto_offset_reset="earliest",
                                group_id=f"g-{unique}", fetch_max_wait_ms=20)
        await cons.start()
        got: list[bytes] = []
        try:
            while len(got) < 5:
                batch = await asyncio.wait_for(cons.getmany(timeout_ms=500), 20)
                for msgs in batch.values():
                    got += [m.value for m in msgs]
        finally:
            await cons.stop()
        return got

    assert asyncio.run(run()) == [f"m{i}".encode() for i in range(5)]


def test_redis_round_trip(services):
    import redis

    r = redis.Redis.from_url(services.redis_url)
    r.set("k", "v")
    assert r.get("k") == b"v"
