"""Audit consumer against the real broker: every published alert event becomes exactly one durable row."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from deploy.services import create_topics_async
from stream.consumers.audit import AuditConsumer, AuditStore
from stream.core.schema import Alert, make_alert_id
from stream.core.technical import TechnicalConfig, TechnicalMonitor
from stream.errors import AuditError
from stream.settings import Settings

pytestmark = pytest.mark.integration

S = 1_000_000_000
T0 = 1_795_000_000 * S


@pytest.fixture
def settings(services, unique) -> Settings:
    return Settings(bootstrap_servers=services.bootstrap, topic_alerts=f"alerts-{unique}", session_timeout_s=6.0)


def mi_event(bed: str, phase: str, seq: int, prob: float | None) -> Alert:
    return Alert(alert_id=make_alert_id("mi", "mi_suspected", bed, f"P-{bed}", T0), alert_type="mi", kind="mi_suspected",
                 phase=phase, bed_id=bed, patient_id=f"P-{bed}", probability=prob, threshold_start=0.6, threshold_end=0.45,
                 window_start_ns=T0 + (seq * 2 - 10) * S, window_end_ns=T0 + seq * 2 * S, window_seq=seq,
                 model_name="mirage", model_version="0.1.0", checkpoint_sha="cd" * 32, emitted_ns=T0 + seq * 2 * S)


def technical_events() -> list[Alert]:
    """Real technical alerts: bed B2 goes silent, then a backend failure with a fallback, then data returns."""
    m = TechnicalMonitor(TechnicalConfig(no_data_s=10, model_name="mirage", model_version="0.1.0"))
    m.on_chunk("B2", "P-B2", T0)
    m.on_chunk("B3", "P-B3", T0)
    out = m.tick(T0 + 11 * S)  # two no_data starts
    m.on_backend_error(RuntimeError("lost GPU"), fallback_used="onnxruntime", t_ns=T0 + 12 * S)
    m.on_chunk("B2", "P-B2", T0 + 13 * S)
    m.on_chunk("B3", "P-B3", T0 + 13 * S, end_of_stream=True)
    return out + m.tick(T0 + 13 * S)  # B2: no_data end + backend start; B3: no_data end (discharged)


async def publish(settings: Settings, values: list[tuple[bytes, bytes]]) -> None:
    prod = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, acks="all")
    await prod.start()
    try:
        for key, value in values:
            await prod.send_and_wait(settings.topic_alerts, value, key=key)
    finally:
        await prod.stop()


async def consume_until(consumer: AuditConsumer, n: int, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while consumer.messages < n:
        if time.monotonic() > deadline:
            raise AssertionError(f"consumed {consumer.messages} of {n} messages in {timeout_s} s: {consumer.stats()}")
        await consumer.poll_once(timeout_ms=200)


async def test_every_alert_event_is_one_row_and_offsets_resume(settings: Settings, unique: str, tmp_path: Path) -> None:
    await create_topics_async(settings.bootstrap_servers, {settings.topic_alerts: 2})
    events = [mi_event("B1", "start", 5, 0.91), mi_event("B1", "update", 6, 0.95), mi_event("B1", "end", 9, 0.2),
              *technical_events()]
    assert {a.kind for a in events} >= {"no_data", "backend_failed", "mi_suspected"}
    published = events + [events[0]]  # N events including one duplicate
    await publish(settings, [(a.bed_id.encode(), a.to_bytes()) for a in published] + [(b"junk", b"{not an alert")])
    db = tmp_path / "audit.sqlite"
    with AuditStore(db) as store:
        consumer = AuditConsumer(settings, store, group=f"audit-{unique}")
        await consumer.start()
        try:
            await consume_until(consumer, len(published) + 1)
        finally:
            await consumer.stop()
        assert store.count() == len(published) - 1 == len(events)
        assert consumer.stats() == {"messages": len(published) + 1, "inserted": len(events), "duplicates": 1, "rejected": 1}
        assert store.count("audit_rejects") == 1
        rows = store.query()
        assert sorted(r.alert.event_id for r in rows) == sorted(a.event_id for a in events)
        by_id = {a.event_id: a for a in events}
        assert all(r.alert == by_id[r.alert.event_id] for r in rows)  # every field survived the broker
        assert all(r.source.topic == settings.topic_alerts and r.source.offset is not None for r in rows)
        b1 = store.query(bed_id="B1")
        assert [(r.alert.phase, r.alert.probability) for r in b1] == [("start", 0.91), ("update", 0.95), ("end", 0.2)]
        early = store.query(until_ns=T0 + 12 * S)
        assert {(r.alert.bed_id, r.alert.kind, r.alert.phase) for r in early} == {
            ("B1", "mi_suspected", "start"), ("B2", "no_data", "start"), ("B3", "no_data", "start")}
        assert [r.alert.kind for r in store.query(bed_id="B2", alert_type="technical", since_ns=T0 + 13 * S)] == [
            "no_data", "backend_failed"]
        assert store.verify() == len(events)

        # Offsets were committed after the write: a new consumer of the group reads only what is new.
        later = [mi_event("B4", "start", 20, 0.88)]
        await publish(settings, [(a.bed_id.encode(), a.to_bytes()) for a in later])
        again = AuditConsumer(settings, store, group=f"audit-{unique}")
        await again.start()
        try:
            await consume_until(again, 1)
            await again.poll_once(timeout_ms=500)
        finally:
            await again.stop()
        assert again.stats() == {"messages": 1, "inserted": 1, "duplicates": 0, "rejected": 0}
        assert store.count() == len(events) + 1


def rows_in(db: Path) -> int:
    try:
        with AuditStore(db, create=False) as store:
            return store.count()
    except (AuditError, sqlite3.Error):  # the consumer may be creating the schema right now
        return -1


@pytest.mark.slow
def test_cli_run_consumes_and_query_prints(settings: Settings, unique: str, tmp_path: Path) -> None:
    asyncio.run(create_topics_async(settings.bootstrap_servers, {settings.topic_alerts: 1}))
    events = technical_events()
    asyncio.run(publish(settings, [(a.bed_id.encode(), a.to_bytes()) for a in events]))
    db = tmp_path / "cli.sqlite"
    env = dict(os.environ, MIRAGE_BOOTSTRAP_SERVERS=settings.bootstrap_servers, MIRAGE_TOPIC_ALERTS=settings.topic_alerts)
    proc = subprocess.Popen([sys.executable, "-m", "mirage.cli", "audit", "run", "--db", str(db), "--group", f"cli-{unique}"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (db.exists() and rows_in(db) == len(events)):
            time.sleep(0.5)
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    res = subprocess.run([sys.executable, "-m", "mirage.cli", "audit", "query", "--db", str(db), "--bed", "B2"],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and "backend_failed" in res.stdout and "fallback backend onnxruntime in use" in res.stdout
    assert f"{sum(a.bed_id == 'B2' for a in events)} row(s)" in res.stdout
