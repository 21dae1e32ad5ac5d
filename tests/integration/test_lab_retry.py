"""No lab lost (issue 18): a lab result sent while Redis is down reaches Redis when it returns.

Real worker process, real broker and Redis (:class:`deploy.services.EmbeddedServices`, stopped and
started on the same port); helpers and fixtures from :mod:`test_faults`. Measured outcomes are
tabled in docs/RELIABILITY.md.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
import test_faults
from test_faults import (
    TNI,
    make_settings,
    mi_alerts,
    record,
    report,
    send_chunks,
    started_beds,
    wait_for_async,
)
from topic_reader import collect

from stream.core.schema import LabResult

pytestmark = [pytest.mark.integration]

# The fixtures of test_faults, shared (a worker checkpoint; a broker and Redis this test may stop).
tiny_checkpoint = test_faults.tiny_checkpoint
private_services = test_faults.private_services


async def test_lab_sent_while_redis_is_down_is_stored_when_it_returns_and_named_in_the_next_alert(
        private_services, unique: str, tmp_path: Path, tiny_checkpoint: str) -> None:
    """Issue 18 "no lab lost": the labs agent retries the Redis write with capped backoff and acks
    the lab only once Redis holds it (so its offset is not committed before)."""
    import redis.asyncio as aioredis

    from stream.kafka import producer
    from stream.tools.demo import WorkerProcess
    from stream.worker.store import lab_key

    s = await make_settings(private_services.bootstrap, private_services.redis_url, unique, partitions=1,
                            checkpoint=tiny_checkpoint)
    prod, worker, t0 = producer(s), WorkerProcess(s, tmp_path / "w"), time.time_ns()
    await prod.start()
    try:
        await worker.wait_ready(120)
        private_services.stop_redis()
        lab = LabResult("pat-bed-lab", TNI, 900.0, "ng/L", t0 - 300 * 10**9)
        await prod.send_and_wait(s.topic_labs, lab.to_bytes(), key=b"pat-bed-lab")
        await asyncio.sleep(3.0)  # the worker tries, fails and backs off meanwhile
        private_services.start_redis()  # empty (in memory): only the retried write can bring the lab back
        back = time.monotonic()
        r = aioredis.from_url(s.redis_url)
        stored_s = await wait_for_async(lambda: r.hexists(lab_key("pat-bed-lab"), TNI), 30, "the lab retried into Redis")
        await r.aclose()
        await send_chunks(prod, s, {"bed-lab": record(0.3, 14, 5)}, range(14), t0)
        got = await collect(s, s.topic_alerts, lambda xs: "bed-lab" in started_beds(xs), 60)
        alert = next(a for a in mi_alerts(got) if a.bed_id == "bed-lab" and a.phase == "start")
        assert worker.proc.poll() is None, "the worker died while Redis was down"
    finally:
        await prod.stop()
        await asyncio.to_thread(worker.stop)
    assert alert.labs_available is True and [x["loinc"] for x in alert.labs] == [TNI]
    assert "could not write a lab result to Redis" in worker.logfile.read_text()
    report("lab_retry", stored_after_redis_back_s=round(stored_s, 2), alert_after_redis_back_s=round(time.monotonic() - back, 1))
