"""Lab cache: newer-wins writes (Lua in a real Redis), staleness, one round trip, Redis down.

Redis here is a real ``redis-server`` on a Unix socket in a temp folder (no network).
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from deploy.services import redis_binary
from engine.labs import LAB_FEATURES, encode_labs
from stream.core.schema import LabResult
from stream.worker.store import LabCache, lab_key, select_labs

S = 10**9
NOW = 1_800_000_000 * S
TNI = "89579-7"
K = "2823-3"


@pytest.fixture(scope="module")
def redis_socket(tmp_path_factory):
    d = tmp_path_factory.mktemp("redis")
    sock = d / "redis.sock"
    proc = subprocess.Popen([str(redis_binary()), "--port", "0", "--unixsocket", str(sock), "--save", "",
                             "--appendonly", "no", "--dir", str(d)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while not sock.exists():
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            pytest.skip("redis-server did not start")
        time.sleep(0.02)
    yield str(sock)
    proc.terminate()
    proc.wait(timeout=5)


@pytest.fixture
async def client(redis_socket: str):
    c = aioredis.Redis(unix_socket_path=redis_socket)
    await c.flushdb()
    yield c
    await c.aclose()


def lab(value: float, observed_s: float, loinc: str = TNI, unit: str = "ng/L", patient: str = "p1") -> LabResult:
    return LabResult(patient, loinc, value, unit, int(NOW + observed_s * S))


async def test_newer_result_wins_whatever_the_arrival_order(client) -> None:
    cache = LabCache(client, staleness_s=3600)
    assert await cache.write(lab(50.0, -60))
    assert not await cache.write(lab(10.0, -120))  # older result arrives late: kept out
    [got] = await cache.read_batch([("p1", NOW)])
    assert got.used[0]["value"] == 50.0 and got.used[0]["age_s"] == 60.0
    assert await cache.write(lab(0.2, -10, unit="ng/mL"))  # newer, other unit -> canonical 200 ng/L
    [got] = await cache.read_batch([("p1", NOW)])
    assert got.used[0]["value"] == pytest.approx(200.0)
    expected, mask = encode_labs({TNI: 200.0})
    np.testing.assert_allclose(got.values, expected, rtol=1e-6)
    np.testing.assert_array_equal(got.mask, mask)
    assert await client.ttl(lab_key("p1")) > 0


async def test_stale_labs_are_excluded_and_reported(client) -> None:
    cache = LabCache(client, staleness_s=3600)
    await cache.write(lab(50.0, -7200))  # 2 h old
    await cache.write(lab(4.1, -60, loinc=K, unit="mmol/L"))
    [got] = await cache.read_batch([("p1", NOW)])
    assert [u["loinc"] for u in got.used] == [K]
    assert got.advisories == [f"stale_lab:{TNI}"]
    idx = [f.loinc for f in LAB_FEATURES].index(TNI)
    assert got.mask[idx] == 0 and got.available


async def test_batch_read_is_per_patient_and_at_the_window_time(client) -> None:
    cache = LabCache(client, staleness_s=100)
    await cache.write(lab(30.0, -50, patient="a"))
    res = await cache.read_batch([("a", NOW), ("b", NOW), ("a", NOW + 200 * S)])
    assert len(res[0].used) == 1 and res[1].used == [] and res[1].mask.sum() == 0
    assert res[2].used == [] and res[2].advisories == [f"stale_lab:{TNI}"]


async def test_redis_down_means_labs_unavailable_not_an_error(tmp_path: Path) -> None:
    dead = aioredis.Redis(unix_socket_path=str(tmp_path / "nothing.sock"), socket_connect_timeout=0.2,
                          retry=Retry(NoBackoff(), 0))
    cache = LabCache(dead, staleness_s=100)
    res = await cache.read_batch([("a", NOW), ("b", NOW)])
    assert [r.available for r in res] == [False, False]
    assert all(r.mask.sum() == 0 for r in res) and cache.errors == 1
    await dead.aclose()


def test_select_labs_skips_malformed_entries() -> None:
    got = select_labs({TNI: b"not json", K: b'{"v": 4.0, "o": %d}' % NOW}, NOW, 10)
    assert [u["loinc"] for u in got.used] == [K]


async def test_saved_bed_state_lets_a_new_processor_continue_the_episode(client) -> None:
    """PolicyStateStore + StreamProcessor: a restarted worker ends the episode it did not start, same id."""
    from test_processor import INFO, AmplitudePredictor, bed_record, chunks, settings

    from stream.worker.processor import StreamProcessor

    rec = np.concatenate([bed_record(1.0, 16, 1), bed_record(0.02, 10, 2)], axis=1)  # loud 16 s, then quiet
    cs = chunks("b", rec, range(26))
    first = StreamProcessor(AmplitudePredictor(), INFO, settings(), labcache=LabCache(client, 3600))
    res = await first.process([(c, c.seq) for c in cs[:14]])
    assert await first.save_state()
    [start] = [a for a in res.alerts if a.alert_type == "mi"]
    second = StreamProcessor(AmplitudePredictor(), INFO, settings(), labcache=LabCache(client, 3600))
    res2 = await second.process([(c, c.seq) for c in cs[6:]])  # re-read from an uncommitted offset
    mi = [(a.phase, a.alert_id) for a in res2.alerts if a.alert_type == "mi"]
    # no second start: the episode goes on (a level update as the signal fades) and ends, same id
    assert mi[-1] == ("end", start.alert_id) and {i for _, i in mi} == {start.alert_id}
    assert "start" not in [p for p, _ in mi]
    first.close()
    second.close()


async def test_saved_bed_state_is_per_consumer_group(client) -> None:
    """Two deployments (consumer groups) sharing one Redis never continue each other's episodes."""
    from stream.worker.store import PolicyStateStore

    ward_a, ward_b = PolicyStateStore(client, "mirage-ward-a"), PolicyStateStore(client, "mirage-ward-b")
    assert await ward_a.save({"bed-7": {"policy": {"active_id": "mi-x"}, "technical": None}})
    assert (await ward_a.load(["bed-7"]))["bed-7"]["policy"]["active_id"] == "mi-x"
    assert await ward_b.load(["bed-7"]) == {}
    assert await client.exists("mirage:policy:mirage-ward-a:bed-7") and not await client.exists("mirage:policy:bed-7")
    assert await ward_a.save({"bed-7": None}) and await ward_a.load(["bed-7"]) == {}


async def test_write_retrying_waits_with_capped_backoff_until_redis_takes_the_lab(client) -> None:
    """Issue 18 "no lab lost": Redis refuses twice, then takes it; the waits double from 0.1 s."""
    from redis.exceptions import ConnectionError as RedisConnectionError

    from stream.worker.store import backoff_s

    cache = LabCache(client, staleness_s=3600)
    real, refusals, sleeps, errors = cache._script, [RedisConnectionError("refused")] * 2, [], []

    async def flaky(**kw):
        if refusals:
            raise refusals.pop()
        return await real(**kw)

    async def sleep(s: float) -> None:
        sleeps.append(s)

    cache._script = flaky
    tries = await cache.write_retrying(lab(900.0, -60), on_error=lambda e, n: errors.append((type(e).__name__, n)), sleep=sleep)
    assert tries == 3 and sleeps == [0.1, 0.2] and errors == [("ConnectionError", 1), ("ConnectionError", 2)]
    assert await client.hexists(lab_key("p1"), TNI) and cache.errors == 2
    assert [backoff_s(n) for n in (1, 2, 3, 6, 7, 50)] == [0.1, 0.2, 0.4, 3.2, 5.0, 5.0]


async def test_write_retrying_does_not_retry_a_lab_that_cannot_be_stored(client) -> None:
    cache = LabCache(client, staleness_s=3600)

    async def broken(**kw):
        raise ValueError("not storable")

    async def sleep(s: float) -> None:
        raise AssertionError("retried a data error")

    cache._script = broken
    with pytest.raises(ValueError, match="not storable"):
        await cache.write_retrying(lab(900.0, -60), sleep=sleep)
