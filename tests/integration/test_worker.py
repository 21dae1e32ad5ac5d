"""The real worker process against the real broker and Redis: chunks in -> alerts out.

The model is a crafted predictor seam (loaded by the worker through ``--predictor``): the MI
probability rises with the conditioned ECG's amplitude, and a present troponin lab (from the
Redis lab cache) forces it high. Everything else is the production path: faust worker, decode,
windower, lab cache via the labs topic, pipeline, policy, alert producer, dead letters.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from topic_reader import collect

from engine.config import PRESETS
from engine.labs import LAB_FEATURES
from stream.core.schema import Alert, EcgChunk, LabResult, encode_chunk
from stream.settings import Settings
from stream.worker.processor import ModelInfo

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CFG = PRESETS["tiny"]
FS = 500
N = 500
LEADS8 = ("I", "II", "V1", "V2", "V3", "V4", "V5", "V6")
TNI = "89579-7"
TNI_INDEX = [f.loinc for f in LAB_FEATURES].index(TNI)


@dataclass
class _Pred:
    probs: np.ndarray
    lead_weights: np.ndarray


class LabAwareAmplitudePredictor:
    """p = sigmoid(20 (rms - 0.3 mV)), or 0.97 when troponin is present in the lab inputs."""

    name = "amplitude-test"
    config = CFG
    info = ModelInfo("amplitude-test", "0", "test-sha", 0.5, {"start": 0.5, "end": 0.3})

    def predict(self, ecg, image, labs, lab_mask) -> _Pred:
        rms = np.sqrt((ecg ** 2).mean(axis=2))
        if np.abs(ecg).max() > 4.0:
            raise RuntimeError("simulated backend failure")
        p = 1 / (1 + np.exp(-20 * (rms.mean(axis=1) - 0.3)))
        p = np.where(lab_mask[:, TNI_INDEX] > 0, 0.97, p)
        return _Pred(p.astype(np.float32), rms.astype(np.float32))


def make_predictor(settings: Settings) -> LabAwareAmplitudePredictor:
    return LabAwareAmplitudePredictor()


def bed_record(amplitude: float, seconds: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(seconds * FS) / FS
    x = amplitude * np.sin(2 * np.pi * 5 * t)[None, :] * np.linspace(0.5, 1.5, 8)[:, None]
    return (x + rng.normal(0, 0.005, (8, t.size))).astype(np.float32)


def chunk_bytes(bed: str, rec: np.ndarray, seq: int, t0: int) -> bytes:
    return encode_chunk(EcgChunk(bed, f"pat-{bed}", seq, t0 + seq * 10**9, FS, LEADS8, rec[:, seq * N:(seq + 1) * N]))


@pytest.fixture
def stream_settings(services, unique) -> Settings:
    from deploy.services import create_topics

    s = Settings(bootstrap_servers=services.bootstrap, redis_url=services.redis_url, topic_chunks=f"chunks-{unique}",
                 topic_labs=f"labs-{unique}", topic_alerts=f"alerts-{unique}", topic_deadletter=f"dl-{unique}",
                 consumer_group=f"g-{unique}", max_batch=8, cooldown_s=0.0, lab_staleness_s=3600.0)
    create_topics(services.bootstrap, {s.topic_chunks: 2, s.topic_labs: 1, s.topic_alerts: 1, s.topic_deadletter: 1})
    return s


async def test_worker_end_to_end(stream_settings: Settings, tmp_path: Path) -> None:
    import redis.asyncio as aioredis
    from aiokafka import AIOKafkaProducer

    from deploy.services import free_port
    from stream.tools.demo import WorkerProcess
    from stream.worker.store import lab_key

    s = stream_settings.replace(metrics_port=free_port())
    here = Path(__file__).parent
    worker = WorkerProcess(s, tmp_path / "w", predictor="test_worker:make_predictor",
                           env={"PYTHONPATH": str(here)})
    prod = AIOKafkaProducer(bootstrap_servers=s.bootstrap_servers, acks="all")
    await prod.start()
    r = aioredis.from_url(s.redis_url)
    try:
        await worker.wait_ready(90)
        t0 = time.time_ns()
        # 1. a troponin result for the patient in bed-lab arrives through the labs topic -> Redis
        lab = LabResult("pat-bed-lab", TNI, 850.0, "ng/L", t0 - 600 * 10**9)
        await prod.send_and_wait(s.topic_labs, lab.to_bytes(), key=b"pat-bed-lab")
        deadline = time.monotonic() + 30
        while not await r.hexists(lab_key("pat-bed-lab"), TNI):
            assert time.monotonic() < deadline, "lab never reached Redis"
            await asyncio.sleep(0.1)
        # 2. three beds: loud ECG (MI by the crafted model), quiet ECG, quiet ECG + troponin
        recs = {"bed-hi": bed_record(1.0, 14, 0), "bed-lo": bed_record(0.05, 14, 1), "bed-lab": bed_record(0.05, 14, 2)}
        for seq in range(14):
            for bed, rec in recs.items():
                await prod.send(s.topic_chunks, chunk_bytes(bed, rec, seq, t0), key=bed.encode())
            if seq == 5:  # 3. poison messages in the middle of the stream
                await prod.send(s.topic_chunks, b"NOT AN ECG CHUNK", key=b"bed-hi")
                odd = EcgChunk("bed-x", "pat-x", 0, t0, 333.3, LEADS8, np.zeros((8, 100), np.float32))
                await prod.send(s.topic_chunks, encode_chunk(odd), key=b"bed-x")
        await prod.flush()

        def both_started(recs_: list) -> bool:
            alerts_ = [Alert.from_bytes(x.value) for x in recs_]
            beds = {a.bed_id for a in alerts_ if a.phase == "start" and a.alert_type == "mi"}
            return {"bed-hi", "bed-lab"} <= beds

        got = await collect(s, s.topic_alerts, both_started, 60)
        alerts = [Alert.from_bytes(x.value) for x in got]
        starts = {a.bed_id: a for a in alerts if a.phase == "start" and a.alert_type == "mi"}
        assert set(starts) == {"bed-hi", "bed-lab"}, [(a.bed_id, a.phase) for a in alerts]
        assert all(x.key == a.bed_id.encode() for x, a in zip(got, alerts))
        hi, withlab = starts["bed-hi"], starts["bed-lab"]
        assert hi.model_name == "amplitude-test" and hi.checkpoint_sha == "test-sha" and hi.labs == []
        assert hi.labs_available and len(hi.top_leads) == 3
        assert hi.st is not None and len(hi.st["j60_uv"]) == 12  # issue #19: the window's ST travels with the alert
        assert [x["loinc"] for x in withlab.labs] == [TNI] and withlab.labs[0]["value"] == 850.0
        assert 590 <= withlab.labs[0]["age_s"] <= 700
        # the snapshot of the triggering window is in Redis when the renderer is available
        try:
            from engine.render import render_paper_png  # noqa: F401
        except (ImportError, AttributeError):
            pass
        else:
            deadline = time.monotonic() + 20  # drawn in the background after the alert is sent
            while (png := await r.get(f"mirage:snapshot:{hi.alert_id}")) is None and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
            assert png is not None and png[:8] == b"\x89PNG\r\n\x1a\n"
            assert 0 < await r.ttl(f"mirage:snapshot:{hi.alert_id}") <= 24 * 3600

        dls = await collect(s, s.topic_deadletter, lambda x: len(x) >= 2, 30)
        assert len(dls) == 2 and dls[0].value == b"NOT AN ECG CHUNK" and dls[0].key == b"bed-hi"
        assert dict(dls[1].headers)["mirage-reason"] == b"unsupported_rate" and dls[1].key == b"bed-x"
        headers = dict(dls[0].headers)
        assert headers["mirage-reason"] == b"truncated" or headers["mirage-reason"] == b"bad_magic"
        assert headers["mirage-source-topic"] == s.topic_chunks.encode() and headers["mirage-detail"]
        # the worker kept going after the poison message: all 3 beds x 3 windows (0, 2, 4 s) were scored
        deadline = time.monotonic() + 30
        while json.loads(worker.stats.read_text()).get("windows", 0) < 9:
            assert time.monotonic() < deadline, worker.stats.read_text()
            await asyncio.sleep(0.2)
        stats = json.loads(worker.stats.read_text())
        assert stats["chunks"] == 3 * 14 + 2 and stats["deadletters"] == 2 and stats["windows"] == 9
        # Prometheus metrics and the health check
        import aiohttp

        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{s.metrics_port}/metrics") as resp:
                text = await resp.text()
            async with http.get(f"http://127.0.0.1:{s.metrics_port}/healthz") as resp:
                health = (resp.status, await resp.json())
        assert "mirage_windows_total 9.0" in text
        assert 'mirage_deadletters_total{reason="truncated"} 1.0' in text or 'mirage_deadletters_total{reason="bad_magic"} 1.0' in text
        assert 'mirage_alerts_total{phase="start",type="mi"} 2.0' in text and "mirage_e2e_latency_seconds_count 9.0" in text
        assert health[0] == 200 and health[1]["ok"] is True
    finally:
        await prod.stop()
        await r.aclose()
        code = await asyncio.to_thread(worker.stop)
    assert code in (0, -15), (worker.logfile.read_text()[-3000:])
    final = json.loads(worker.stats.read_text())
    assert final["final"] is True


async def test_restart_rescores_every_window_not_yet_scored(stream_settings: Settings, tmp_path: Path) -> None:
    """At-least-once: a worker stopped mid-window commits only chunks whose windows were all scored,
    so its successor in the group rebuilds and scores the next window, and no window is lost; the
    episode started by the first worker is continued (same id, no second start) by the successor."""
    from aiokafka import AIOKafkaProducer

    from stream.tools.demo import WorkerProcess

    s = stream_settings
    env = {"PYTHONPATH": str(Path(__file__).parent)}
    rec = bed_record(1.0, 20, 7)
    t0 = time.time_ns()
    prod = AIOKafkaProducer(bootstrap_servers=s.bootstrap_servers, acks="all")
    await prod.start()
    first = WorkerProcess(s, tmp_path / "a", predictor="test_worker:make_predictor", env=env)
    try:
        await first.wait_ready(90)
        for seq in range(15):  # 15 s: windows 0-2 (0-14 s) complete, window 3 (6-16 s) does not
            await prod.send(s.topic_chunks, chunk_bytes("bed-r", rec, seq, t0), key=b"bed-r")
        await prod.flush()
        deadline = time.monotonic() + 30
        while json.loads(first.stats.read_text()).get("windows", 0) < 3:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.2)
        await asyncio.sleep(1.5)  # a commit interval
    finally:
        await asyncio.to_thread(first.stop)
    a = json.loads(first.stats.read_text())
    assert a["scored_seqs"]["bed-r"] == [0, 1, 2]
    second = WorkerProcess(s, tmp_path / "b", predictor="test_worker:make_predictor", env=env)
    try:
        await second.wait_ready(90)
        for seq in range(15, 20):
            await prod.send(s.topic_chunks, chunk_bytes("bed-r", rec, seq, t0), key=b"bed-r")
        eos = EcgChunk("bed-r", "pat-bed-r", 20, t0 + 20 * 10**9, FS, LEADS8, np.zeros((8, 0), np.float32), True)
        await prod.send(s.topic_chunks, encode_chunk(eos), key=b"bed-r")
        await prod.flush()
        deadline = time.monotonic() + 30
        while 5 not in json.loads(second.stats.read_text()).get("scored_seqs", {}).get("bed-r", []):
            assert time.monotonic() < deadline, second.stats.read_text()
            await asyncio.sleep(0.2)
    finally:
        await prod.stop()
        await asyncio.to_thread(second.stop)
    b = json.loads(second.stats.read_text())
    # the successor re-read from the committed offset (chunk 6 at the latest): windows 3, 4, 5 are all scored
    assert [3, 4, 5] == [x for x in b["scored_seqs"]["bed-r"] if x >= 3]
    # chunks 0-5 (consumed by windows 0-2) were committed, chunks 6-14 were not: the successor
    # re-read exactly chunks 6-19 (+ the end-of-stream chunk)
    assert b["chunks"] == 15 and b["scored_seqs"]["bed-r"][0] == 3
    def mi_ended(xs: list) -> bool:
        return any(Alert.from_bytes(x.value).phase == "end" and Alert.from_bytes(x.value).alert_type == "mi" for x in xs)

    got = await collect(s, s.topic_alerts, mi_ended, 30)
    events = [(a.phase, a.alert_id) for a in map(Alert.from_bytes, (x.value for x in got)) if a.alert_type == "mi"]
    assert [p for p, _ in events] == ["start", "end"] and events[0][1] == events[1][1]


async def test_worker_serves_a_real_checkpoint(stream_settings: Settings, tmp_path: Path, unique: str) -> None:
    """The production loading path: a tiny random-init MIRAGE saved as a checkpoint, torch backend.

    With ``threshold = 0`` every window is positive, so every bed must alert once k of n windows
    are in; the alert names the model and the checkpoint's SHA-256.

    The beds are this test's own: Redis is shared by the session, and a bed id an earlier test
    left with an open MI episode (same patient, silent for less than ``idle_discharge_s``) is
    rightly *continued* by a new worker, with no second start (that made this test fail in the
    full suite; the seq-restart fault it also uncovered is tested in test_windower/test_policy).
    """
    from aiokafka import AIOKafkaProducer

    from engine.checkpoint import save_checkpoint
    from engine.model import Mirage
    from stream.tools.demo import WorkerProcess

    ckpt = tmp_path / "tiny.pt"
    sha = save_checkpoint(ckpt, Mirage(CFG), CFG, threshold=0.0, metrics={})
    s = stream_settings.replace(checkpoint=str(ckpt))
    worker = WorkerProcess(s, tmp_path / "w")
    prod = AIOKafkaProducer(bootstrap_servers=s.bootstrap_servers, acks="all")
    await prod.start()
    try:
        await worker.wait_ready(90)
        t0 = time.time_ns()
        recs = {f"bed-{unique[:4]}-{i}": bed_record(0.3, 12, 10 + i) for i in range(2)}
        for seq in range(12):
            for bed, rec in recs.items():
                await prod.send(s.topic_chunks, chunk_bytes(bed, rec, seq, t0), key=bed.encode())
        await prod.flush()
        # Wait for a start on each bed: other MI events (an escalation update) may come first for one bed.
        got = await collect(s, s.topic_alerts, lambda xs: len({a.bed_id for a in map(lambda x: Alert.from_bytes(x.value), xs)
                                                                 if a.alert_type == "mi" and a.phase == "start"}) >= 2, 60)
    finally:
        await prod.stop()
        await asyncio.to_thread(worker.stop)
    alerts = [a for a in (Alert.from_bytes(x.value) for x in got) if a.alert_type == "mi" and a.phase == "start"]
    assert sorted(a.bed_id for a in alerts) == sorted(recs), worker.logfile.read_text()[-2000:]
    assert all(a.phase == "start" and a.window_seq == 1 and a.checkpoint_sha == sha for a in alerts)
    assert alerts[0].model_name == "mirage-tiny" and 0.0 <= alerts[0].probability <= 1.0


async def test_a_failing_model_stops_the_worker(stream_settings: Settings, tmp_path: Path) -> None:
    """A batch that cannot be scored must not be skipped: the worker exits non-zero (its chunks stay unacked)."""
    from aiokafka import AIOKafkaProducer

    from stream.tools.demo import WorkerProcess

    s = stream_settings
    env = {"PYTHONPATH": str(Path(__file__).parent)}
    worker = WorkerProcess(s, tmp_path / "w", predictor="test_worker:make_predictor", env=env)
    prod = AIOKafkaProducer(bootstrap_servers=s.bootstrap_servers, acks="all")
    await prod.start()
    try:
        await worker.wait_ready(90)
        rec = bed_record(4.0, 10, 3)  # loud enough to make the crafted backend fail
        for seq in range(10):
            await prod.send(s.topic_chunks, chunk_bytes("bed-boom", rec, seq, time.time_ns()), key=b"bed-boom")
        await prod.flush()
        code = await asyncio.to_thread(worker.proc.wait, 60)
    finally:
        await prod.stop()
        await asyncio.to_thread(worker.stop)
    assert code != 0
    assert "simulated backend failure" in worker.logfile.read_text()


async def test_two_workers_in_one_group_share_the_beds(stream_settings: Settings, tmp_path: Path) -> None:
    """Scale-out: the chunk partitions (and with them the beds) are split; every window is scored once."""
    from aiokafka import AIOKafkaProducer

    from stream.tools.demo import WorkerProcess

    s = stream_settings
    env = {"PYTHONPATH": str(Path(__file__).parent)}
    workers = [WorkerProcess(s, tmp_path / name, predictor="test_worker:make_predictor", env=env) for name in ("a", "b")]
    prod = AIOKafkaProducer(bootstrap_servers=s.bootstrap_servers, acks="all")
    await prod.start()
    try:
        for w in workers:
            await w.wait_ready(90)
        deadline = time.monotonic() + 60
        while sorted(len(w.read().get("partitions", [])) for w in workers) != [1, 1]:
            assert time.monotonic() < deadline, [w.read().get("partitions") for w in workers]
            await asyncio.sleep(0.3)
        t0 = time.time_ns()
        beds = [f"bed-{i}" for i in range(6)]
        recs = {b: bed_record(0.05, 12, 20 + i) for i, b in enumerate(beds)}
        for seq in range(12):
            for b in beds:
                await prod.send(s.topic_chunks, chunk_bytes(b, recs[b], seq, t0), key=b.encode())
        await prod.flush()
        deadline = time.monotonic() + 60
        while sum(w.read().get("windows", 0) for w in workers) < 2 * len(beds):
            assert time.monotonic() < deadline, [w.read() for w in workers]
            await asyncio.sleep(0.3)
        await asyncio.sleep(1.0)
        stats = [w.read() for w in workers]
    finally:
        await prod.stop()
        for w in workers:
            await asyncio.to_thread(w.stop)
    owned = [set(st["scored_seqs"]) for st in stats]
    assert owned[0] and owned[1] and not owned[0] & owned[1]  # both worked, no bed on both
    assert owned[0] | owned[1] == set(beds)
    assert all(seqs == [0, 1] for st in stats for seqs in st["scored_seqs"].values())
