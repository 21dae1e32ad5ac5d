"""Dashboard service against the real broker and Redis: auth, live SSE, acknowledge across
instances through the acks topic, ECG snapshot from Redis, state rebuilt after a restart."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any, AsyncIterator

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from aiokafka import AIOKafkaProducer

from deploy.services import create_topics_async
from stream.consumers.dashboard.app import create_app
from stream.core.schema import Alert
from stream.settings import Settings

pytestmark = pytest.mark.integration

TOKEN = "ward-7-token-for-tests-0123456789"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
S = 1_000_000_000


def mi_start(bed: str, alert_id: str, *, level: int = 2, alert_type: str = "mi", kind: str = "mi_suspected") -> Alert:
    t = time.time_ns()
    return Alert(alert_id=alert_id, alert_type=alert_type, kind=kind, phase="start", bed_id=bed, patient_id="PSEUDO-9",
                 probability=0.87 if alert_type == "mi" else None, threshold_start=0.5, threshold_end=0.3,
                 window_start_ns=t - 10 * S, window_end_ns=t, window_seq=5, model_name="mirage", model_version="1",
                 checkpoint_sha="abc", level=level,
                 labs=[{"loinc": "89579-7", "name": "hs-troponin I", "value": 250.0, "unit": "ng/L", "age_s": 900}],
                 quality_flags=["noisy:V1"], top_leads=["V2", "V3"], emitted_ns=t)


async def publish(settings: Settings, *alerts: Alert) -> None:
    prod = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers)
    await prod.start()
    try:
        for a in alerts:
            await prod.send_and_wait(settings.topic_alerts, a.to_bytes(), key=a.bed_id.encode())
    finally:
        await prod.stop()


async def sse_events(resp: aiohttp.ClientResponse) -> AsyncIterator[tuple[str, Any]]:
    event, data = "message", []
    while True:
        line = (await resp.content.readline()).decode()
        if line == "":
            return
        line = line.rstrip("\n")
        if line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].strip())
        elif line == "" and data:
            yield event, json.loads("\n".join(data))
            event, data = "message", []


async def wait_bed(events: AsyncIterator[tuple[str, Any]], bed: str, state: str, timeout: float = 30.0) -> dict:
    async def find() -> dict:
        async for event, data in events:
            views = data["beds"] if event == "snapshot" else [data] if event == "bed" else []
            for v in views:
                if v["bed_id"] == bed and v["state"] == state:
                    return v
        raise AssertionError("event stream closed")

    return await asyncio.wait_for(find(), timeout)


async def state_of(session: aiohttp.ClientSession, url: str, bed: str) -> str | None:
    async with session.get(url + "/api/state", headers=BEARER) as r:
        beds = {b["bed_id"]: b for b in (await r.json())["beds"]}
    return beds[bed]["state"] if bed in beds else None


async def until_state(session: aiohttp.ClientSession, url: str, bed: str, state: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while (got := await state_of(session, url, bed)) != state:
        if time.monotonic() > deadline:
            raise AssertionError(f"bed {bed} is {got!r}, expected {state!r}")
        await asyncio.sleep(0.1)


@pytest.fixture
def settings(services, unique) -> Settings:
    return Settings(bootstrap_servers=services.bootstrap, redis_url=services.redis_url,
                    topic_alerts=f"alerts-{unique}", topic_acks=f"acks-{unique}")


async def test_nothing_is_served_without_the_token(settings: Settings) -> None:
    await create_topics_async(settings.bootstrap_servers, {settings.topic_alerts: 1, settings.topic_acks: 1})
    server = TestServer(create_app(settings, TOKEN))
    await server.start_server()
    url = str(server.make_url("")).rstrip("/")
    try:
        # unsafe=True: keep cookies for an IP-address host (127.0.0.1), as a browser does
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as s:
            for path in ("/", "/static/app.js", "/static/app.css", "/api/state", "/api/events",
                         "/api/snapshot/mi-x.png", "/static/../state.py"):
                async with s.get(url + path, allow_redirects=False) as r:
                    assert r.status == 401, path
                    assert "ward" not in (await r.text()).lower() or path == "/"
            async with s.get(url + "/", headers={"Authorization": "Bearer wrong-token-wrong-token"}) as r:
                assert r.status == 401
            async with s.post(url + "/api/ack", json={"alert_id": "x"}) as r:
                assert r.status == 401
            async with s.get(url + "/", headers={"Accept": "text/html"}, allow_redirects=False) as r:
                assert r.status == 302 and r.headers["Location"] == "/login"
            async with s.get(url + "/login") as r:
                assert r.status == 200 and 'type="password"' in await r.text()
            async with s.post(url + "/login", data={"token": "nope"}, allow_redirects=False) as r:
                assert r.status == 401 and "mirage_session" not in r.cookies
            async with s.post(url + "/login", data={"token": TOKEN}, allow_redirects=False) as r:
                assert r.status == 303
                cookie = r.headers["Set-Cookie"]
                assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and TOKEN not in cookie
            async with s.get(url + "/static/app.js") as r:  # the session cookie now opens everything
                assert r.status == 200 and "EventSource" in await r.text()
                assert r.headers["Content-Security-Policy"].startswith("default-src 'self'")
            async with s.get(url + "/", headers=BEARER) as r:
                assert r.status == 200 and 'aria-live="assertive"' in await r.text()
    finally:
        await server.close()


async def test_live_alert_ack_across_instances_snapshot_and_restart(settings: Settings, services) -> None:
    import redis.asyncio as aioredis

    await create_topics_async(settings.bootstrap_servers, {settings.topic_alerts: 1, settings.topic_acks: 1})
    s1, s2 = TestServer(create_app(settings, TOKEN)), TestServer(create_app(settings, TOKEN))
    await s1.start_server()
    await s2.start_server()
    u1, u2 = (str(s.make_url("")).rstrip("/") for s in (s1, s2))
    alert = mi_start("B7", "mi-dashboard-test-1")
    tech = mi_start("B8", "technical-dashboard-test-1", alert_type="technical", kind="leads_off", level=1)
    png = b"\x89PNG\r\n\x1a\n" + b"fake-ecg-snapshot"
    r = aioredis.from_url(services.redis_url)
    await r.set(f"mirage:snapshot:{alert.alert_id}", png, ex=60)
    await r.aclose()
    try:
        async with aiohttp.ClientSession() as s:
            async with s.get(u2 + "/api/events", headers=BEARER, timeout=aiohttp.ClientTimeout(total=90)) as ev:
                events = sse_events(ev)
                first = await asyncio.wait_for(events.__anext__(), 10)
                assert first[0] == "snapshot" and first[1]["beds"] == []
                await publish(settings, alert, alert, tech)  # a duplicate of the start, and a technical alert
                seen = await wait_bed(events, "B7", "mi_suspected", timeout=40)
                assert seen["mi"]["probability"] == pytest.approx(0.87) and seen["mi"]["level"] == 2
                assert seen["mi"]["labs"][0]["age_s"] == 900 and seen["mi"]["quality_flags"] == ["noisy:V1"]
                await until_state(s, u1, "B7", "mi_suspected")
                # B8's technical alert was published after B7's start and its duplicate (one partition,
                # in order): once it is there, everything before it has been consumed too.
                await until_state(s, u1, "B8", "quiet")
                async with s.get(u1 + "/api/state", headers=BEARER) as resp:
                    snap = await resp.json()
                b8 = next(b for b in snap["beds"] if b["bed_id"] == "B8")
                assert b8["state"] == "quiet" and b8["technical"][0]["kind"] == "leads_off"
                assert snap["counts"]["duplicates"] >= 1
                async with s.get(u1 + f"/api/snapshot/{alert.alert_id}.png", headers=BEARER) as resp:
                    assert resp.status == 200 and resp.content_type == "image/png" and await resp.read() == png
                async with s.get(u1 + "/api/snapshot/mi-unknown.png", headers=BEARER) as resp:
                    assert resp.status == 404
                async with s.post(u1 + "/api/ack", data="alert_id=x", headers={**BEARER, "Content-Type": "application/x-www-form-urlencoded"}) as resp:
                    assert resp.status == 415
                async with s.post(u1 + "/api/ack", json={"alert_id": "mi-unknown"}, headers=BEARER) as resp:
                    assert resp.status == 404
                # acknowledge on instance 1; instance 2's open page sees it through the acks topic
                async with s.post(u1 + "/api/ack", json={"alert_id": alert.alert_id, "by": "RN Kim"}, headers=BEARER) as resp:
                    assert resp.status == 200
                acked = await wait_bed(events, "B7", "acknowledged", timeout=30)
                assert acked["mi"]["acked_by"] == "RN Kim"
    finally:
        await s1.close()
        await s2.close()
    # a restarted dashboard rebuilds the ward from the beginning of both topics
    s3 = TestServer(create_app(settings, TOKEN))
    await s3.start_server()
    try:
        async with aiohttp.ClientSession() as s:
            await until_state(s, str(s3.make_url("")).rstrip("/"), "B7", "acknowledged", timeout=40)
    finally:
        await s3.close()


async def test_ended_episode_turns_quiet_on_open_pages_after_retention(settings: Settings) -> None:
    await create_topics_async(settings.bootstrap_servers, {settings.topic_alerts: 1, settings.topic_acks: 1})
    server = TestServer(create_app(settings, TOKEN, ended_retention_s=2.0, expire_every_s=0.2))
    await server.start_server()
    url = str(server.make_url("")).rstrip("/")
    try:
        async with aiohttp.ClientSession() as s:
            deadline = time.monotonic() + 40
            while True:  # the instance has read both topics to their end
                async with s.get(url + "/api/state", headers=BEARER) as r:
                    if (await r.json())["caught_up"]:
                        break
                assert time.monotonic() < deadline, "dashboard never caught up"
                await asyncio.sleep(0.1)
            async with s.get(url + "/api/events", headers=BEARER, timeout=aiohttp.ClientTimeout(total=60)) as ev:
                events = sse_events(ev)
                start = mi_start("B5", "mi-expiry-test", level=1)  # times taken now: retention counts from here
                end = Alert(**{**start.__dict__, "phase": "end", "window_seq": 9, "event_id": ""})
                await publish(settings, start, end)
                ended = await wait_bed(events, "B5", "ended", timeout=40)
                assert ended["mi"]["ended_ns"] is not None
                quiet = await wait_bed(events, "B5", "quiet", timeout=10)  # pushed without any new message
                assert quiet["mi"] is None
    finally:
        await server.close()


@pytest.mark.slow
async def test_worker_alert_reaches_the_dashboard_with_its_snapshot(settings: Settings, services, unique, tmp_path) -> None:
    """The full path: ECG chunks -> the real ``mirage worker`` process -> alerts topic -> dashboard,
    with the worker's ECG-paper snapshot served by the dashboard. The worker scores with engineer E's
    test predictor seam (``tests/integration/test_worker.py``: MI probability from ECG amplitude),
    so the alert does not depend on a trained checkpoint being present."""
    from pathlib import Path

    import numpy as np
    from aiokafka import AIOKafkaProducer

    from stream.core.schema import EcgChunk, encode_chunk
    from stream.tools.demo import WorkerProcess

    s = settings.replace(topic_chunks=f"chunks-{unique}", topic_labs=f"labs-{unique}", topic_deadletter=f"dl-{unique}",
                         consumer_group=f"w-{unique}", max_batch=8, cooldown_s=0.0)
    await create_topics_async(s.bootstrap_servers, {s.topic_chunks: 1, s.topic_labs: 1, s.topic_alerts: 1,
                                                    s.topic_deadletter: 1, s.topic_acks: 1})
    worker = WorkerProcess(s, tmp_path / "w", predictor="test_worker:make_predictor",
                           env={"PYTHONPATH": str(Path(__file__).parent)})
    server = TestServer(create_app(s, TOKEN))
    await server.start_server()
    url = str(server.make_url("")).rstrip("/")
    fs, n, leads = 500, 500, ("I", "II", "V1", "V2", "V3", "V4", "V5", "V6")
    t = np.arange(14 * fs) / fs
    rec = (1.0 * np.sin(2 * np.pi * 5 * t)[None, :] * np.linspace(0.5, 1.5, 8)[:, None]).astype(np.float32)
    prod = AIOKafkaProducer(bootstrap_servers=s.bootstrap_servers, acks="all")
    await prod.start()
    try:
        await worker.wait_ready(90)
        t0 = time.time_ns()
        for seq in range(14):
            chunk = EcgChunk("bed-w", "pat-w", seq, t0 + seq * 10**9, fs, leads, rec[:, seq * n:(seq + 1) * n])
            await prod.send(s.topic_chunks, encode_chunk(chunk), key=b"bed-w")
        await prod.flush()
        async with aiohttp.ClientSession() as session:
            await until_state(session, url, "bed-w", "mi_suspected", timeout=90)
            async with session.get(url + "/api/state", headers=BEARER) as r:
                bed = next(b for b in (await r.json())["beds"] if b["bed_id"] == "bed-w")
            alert_id = bed["mi"]["alert_id"]
            assert bed["mi"]["probability"] > 0.5 and len(bed["mi"]["top_leads"]) == 3
            deadline = time.monotonic() + 30  # the worker draws the snapshot in the background
            while True:
                async with session.get(url + f"/api/snapshot/{alert_id}.png", headers=BEARER) as r:
                    if r.status == 200:
                        assert (await r.read())[:8] == b"\x89PNG\r\n\x1a\n"
                        break
                assert time.monotonic() < deadline, "the worker's snapshot never reached the dashboard"
                await asyncio.sleep(0.3)
            async with session.post(url + "/api/ack", json={"alert_id": alert_id}, headers=BEARER) as r:
                assert r.status == 200
            await until_state(session, url, "bed-w", "acknowledged", timeout=10)
    finally:
        await prod.stop()
        await server.close()
        code = await asyncio.to_thread(worker.stop)
    assert code in (0, -15), worker.logfile.read_text()[-3000:]
