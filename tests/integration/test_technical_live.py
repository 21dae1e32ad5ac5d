"""Technical alarms, admission and the audit trail in the running system (real worker process).

Each test starts ``mirage worker`` as a subprocess (:class:`stream.tools.demo.WorkerProcess`) against the
session's real Tansu broker and Redis, plays a monitor gateway by producing wire chunks, reads
the alerts topic like the dashboard does, and finally runs the real audit consumer
(:class:`stream.consumers.audit.AuditConsumer` into an SQLite :class:`stream.consumers.audit.AuditStore`) to check
that the trail holds exactly the events the worker published.

The models are real predictor classes loaded by the worker through its ``--predictor`` seam
(this module is on the child's ``PYTHONPATH``): a crafted amplitude model (loud ECG = MI) and a
backend whose ``predict`` always raises (a lost device). Limits are shrunk through ``Settings``
(``no_data_s`` etc.) so each scenario takes seconds, not minutes.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable

import numpy as np
import pytest

from engine.config import PRESETS
from engine.prediction import Prediction
from stream.core.schema import Alert, EcgChunk, LabResult, encode_chunk
from stream.settings import Settings
from stream.worker.processor import ModelInfo

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CFG = PRESETS["tiny"]
FS = 500
N = FS  # one chunk = 1 s
LEADS8 = ("I", "II", "V1", "V2", "V3", "V4", "V5", "V6")
HERE = Path(__file__).parent
ENV = {"PYTHONPATH": str(HERE)}
TNI = "89579-7"
S = 10**9


# -- models loaded by the worker subprocess (``--predictor test_technical_live:...``) ------------
class AmplitudePredictor:
    """p = sigmoid(20 (rms - 0.3 mV)) of the conditioned ECG: a loud ECG is "MI"."""

    name = "amplitude-live"
    config = CFG
    info = ModelInfo("amplitude-live", "0", "live-sha", 0.5, {"start": 0.5, "end": 0.3})

    def predict(self, ecg: np.ndarray, image: np.ndarray, labs: np.ndarray, lab_mask: np.ndarray) -> Prediction:
        rms = np.sqrt((np.nan_to_num(ecg) ** 2).mean(axis=2))  # (B, 12)
        p = 1.0 / (1.0 + np.exp(-20.0 * (rms.mean(axis=1) - 0.3)))
        w = rms / np.maximum(rms.sum(axis=1, keepdims=True), 1e-9)
        return Prediction(p.astype(np.float32), w.astype(np.float32))


class DeviceLostPredictor(AmplitudePredictor):
    """A backend that loses its device after the worker's warm-up batch: every later ``predict``
    raises, as a CUDA/TensorRT runtime does once the GPU is gone."""

    name = "device-lost"
    info = ModelInfo("device-lost", "0", "lost-sha", 0.5, {"start": 0.5, "end": 0.3})

    def __init__(self) -> None:
        self.calls = 0

    def predict(self, ecg: np.ndarray, image: np.ndarray, labs: np.ndarray, lab_mask: np.ndarray) -> Prediction:
        self.calls += 1
        if self.calls > 1:
            raise RuntimeError("simulated backend failure: device lost")
        return super().predict(ecg, image, labs, lab_mask)


def amplitude(settings: Settings) -> AmplitudePredictor:
    return AmplitudePredictor()


def device_lost(settings: Settings) -> DeviceLostPredictor:
    return DeviceLostPredictor()


# -- a monitor gateway ---------------------------------------------------------------------------
def ecg(seconds: int, amplitude_mv: float, seed: int, flat: tuple[str, ...] = ()) -> np.ndarray:
    """(8, seconds*FS) mV: a 5 Hz sine plus noise; leads in ``flat`` exactly 0 (electrode off)."""
    rng = np.random.default_rng(seed)
    t = np.arange(seconds * FS) / FS
    x = amplitude_mv * np.sin(2 * np.pi * 5 * t)[None, :] * np.linspace(0.5, 1.5, len(LEADS8))[:, None]
    x = x + rng.normal(0, 0.02, x.shape)
    for lead in flat:
        x[LEADS8.index(lead)] = 0.0
    return x.astype(np.float32)


class Gateway:
    """Sends 1 s chunks per bed with continuous sequence numbers and data time."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.t0 = time.time_ns()
        self.seq: dict[str, int] = {}
        self.last_sent_ns: dict[str, int] = {}
        self.prod: Any = None

    async def __aenter__(self) -> "Gateway":
        from aiokafka import AIOKafkaProducer

        self.prod = AIOKafkaProducer(bootstrap_servers=self.settings.bootstrap_servers, acks="all")
        await self.prod.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.prod.stop()

    async def send(self, bed: str, signal: np.ndarray, *, pace_s: float = 0.0, patient: str = "",
                   age_s: float = 0.0, leads: tuple[str, ...] = LEADS8) -> None:
        """Send ``signal`` (8, k*N) as k chunks of the bed, ``pace_s`` apart (wall clock);
        ``age_s`` > 0 stamps them that old (a gateway's backlog: the worker is behind real time)."""
        for i in range(signal.shape[1] // N):
            seq = self.seq.get(bed, 0)
            chunk = EcgChunk(bed, patient or f"pat-{bed}", seq, self.t0 + seq * S, FS, leads, signal[:, i * N:(i + 1) * N])
            stamp = int(time.time() * 1000 - age_s * 1000) if age_s else None
            await self.prod.send_and_wait(self.settings.topic_chunks, encode_chunk(chunk), key=bed.encode(),
                                          timestamp_ms=stamp)
            self.seq[bed] = seq + 1
            self.last_sent_ns[bed] = time.time_ns()
            if pace_s:
                await asyncio.sleep(pace_s)

    async def end_of_stream(self, bed: str) -> None:
        seq = self.seq.get(bed, 0)
        eos = EcgChunk(bed, f"pat-{bed}", seq, self.t0 + seq * S, FS, LEADS8, np.zeros((8, 0), np.float32), True)
        await self.prod.send_and_wait(self.settings.topic_chunks, encode_chunk(eos), key=bed.encode())
        self.seq[bed] = seq + 1


class AlertTap:
    """Reads the alerts topic from the beginning in the background (as the dashboard does)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.records: list[Any] = []
        self._task: asyncio.Task | None = None
        self._consumer: Any = None

    @property
    def alerts(self) -> list[Alert]:
        return [Alert.from_bytes(r.value) for r in self.records]

    async def start(self) -> "AlertTap":
        from stream.kafka import consumer

        self._consumer = consumer(self.settings, self.settings.topic_alerts, group_id=None, auto_offset_reset="earliest")
        await self._consumer.start()
        self._task = asyncio.create_task(self._run())
        return self

    async def _run(self) -> None:
        while True:
            for records in (await self._consumer.getmany(timeout_ms=200)).values():
                self.records.extend(records)

    async def wait_for(self, what: str, cond: Callable[[list[Alert]], Any], timeout_s: float, worker: Any = None) -> Any:
        """Wait until ``cond(alerts)`` is truthy and return its value; fail naming ``what``."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            got = cond(self.alerts)
            if got:
                return got
            if worker is not None and worker.proc.poll() is not None:
                pytest.fail(f"worker exited ({worker.proc.returncode}) while waiting for {what}:\n"
                            f"{worker.logfile.read_text()[-3000:]}")
            await asyncio.sleep(0.1)
        shown = [(a.bed_id, a.alert_type, a.kind, a.phase, a.level) for a in self.alerts]
        pytest.fail(f"no {what} within {timeout_s:.0f}s; alerts so far: {shown}")

    async def settle(self, quiet_s: float = 2.0, timeout_s: float = 20.0) -> list[Any]:
        """Wait until nothing new arrived for ``quiet_s`` (call after the worker stopped)."""
        deadline = time.monotonic() + timeout_s
        n, since = len(self.records), time.monotonic()
        while time.monotonic() < deadline and time.monotonic() - since < quiet_s:
            await asyncio.sleep(0.1)
            if len(self.records) != n:
                n, since = len(self.records), time.monotonic()
        return list(self.records)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._consumer is not None:
            await self._consumer.stop()


async def wait_chunks(worker: Any, n: int, timeout_s: float = 30.0) -> None:
    """Wait until the worker has processed ``n`` chunks (its stats file)."""
    deadline = time.monotonic() + timeout_s
    while worker.read().get("chunks", 0) < n:
        assert time.monotonic() < deadline, worker.read()
        await asyncio.sleep(0.1)


def first(alerts: list[Alert], **match: Any) -> Alert | None:
    """The first alert whose attributes equal ``match``."""
    return next((a for a in alerts if all(getattr(a, k) == v for k, v in match.items())), None)


def technical(alerts: list[Alert], bed: str) -> list[tuple[str, str, int]]:
    return [(a.kind, a.phase, a.level) for a in alerts if a.alert_type == "technical" and a.bed_id == bed]


def assert_consumers_show_technical(alerts: list[Alert], bed: str, kinds: list[str], mi_state: str) -> None:
    """The dashboard lists the bed's open technical alarms apart from its MI state; the HL7 bridge's
    PCD-04 messages mark technical alarms ``ST`` and MI alarms ``SP`` (OBX facet 1.0.0.0.7)."""
    from stream.consumers.dashboard.state import WardState
    from stream.consumers.hl7.pcd04 import build_oru_r40

    ward = WardState()
    for a in alerts:
        ward.apply_alert(a)
    view = ward.bed_view(bed, time.time_ns())
    assert [t["kind"] for t in view["technical"]] == kinds and view["state"] == mi_state, view
    assert view["needs_attention"] == (bool(kinds) or mi_state == "mi_suspected")
    for a in alerts:
        segs = build_oru_r40(a, a.event_id, now_ns=time.time_ns()).split("\r")
        [alert_type] = [f.split("|")[5] for f in segs if f.startswith("OBX|7|")]
        assert alert_type == ("ST" if a.alert_type == "technical" else "SP"), a.event_id


async def assert_audit_matches(settings: Settings, records: list[Any], db: Path, unique: str) -> None:
    """Run the real audit consumer over the topic: one row per published event, identical content."""
    from stream.consumers.audit import AuditConsumer, AuditStore

    published = {Alert.from_bytes(r.value).event_id: (r, Alert.from_bytes(r.value)) for r in records}
    assert len(published) == len(records), "the worker published an event id twice"
    with AuditStore(db) as store:
        cons = AuditConsumer(settings, store, group=f"audit-{unique}")
        await cons.start()
        try:
            deadline = time.monotonic() + 30
            while cons.messages < len(records) and time.monotonic() < deadline:
                await cons.poll_once(timeout_ms=300)
        finally:
            await cons.stop()
        rows = store.query()
        assert store.count() == len(records) and store.count("audit_rejects") == 0, cons.stats()
        assert store.verify() == len(records)
    by_event = {row.alert.event_id: row for row in rows}
    assert set(by_event) == set(published)
    for event_id, (rec, alert) in published.items():
        row = by_event[event_id]
        assert row.alert == alert, event_id
        assert (row.source.topic, row.source.partition, row.source.offset) == (rec.topic, rec.partition, rec.offset)
        assert row.policy["phase"] == alert.phase and row.policy["level"] == alert.level


@contextlib.asynccontextmanager
async def running(s: Settings, tmp_path: Path, unique: str, predictor: str, *,
                  clean_exit: bool = True) -> AsyncIterator[tuple[Any, AlertTap]]:
    """A ready worker subprocess and an alert tap; afterwards the worker is stopped and the audit
    consumer must reproduce every event it published (skipped when the body failed)."""
    from stream.tools.demo import WorkerProcess

    worker = WorkerProcess(s, tmp_path / "w", predictor=f"test_technical_live:{predictor}", env=ENV)
    tap = await AlertTap(s).start()
    try:
        await worker.wait_ready(120)
        yield worker, tap
    except BaseException:
        await asyncio.to_thread(worker.stop)
        await tap.stop()
        raise
    code = await asyncio.to_thread(worker.stop)
    records = await tap.settle()
    await tap.stop()
    if clean_exit:
        assert code in (0, -15), worker.logfile.read_text()[-3000:]
    await assert_audit_matches(s, records, tmp_path / "audit.sqlite", unique)


@pytest.fixture
def live(services, unique) -> Callable[..., Awaitable[Settings]]:
    """Settings with this test's own topics and group; keyword arguments shrink the limits."""
    from deploy.services import create_topics_async

    async def make(**changes: Any) -> Settings:
        s = Settings(bootstrap_servers=services.bootstrap, redis_url=services.redis_url, topic_chunks=f"chunks-{unique}",
                     topic_labs=f"labs-{unique}", topic_alerts=f"alerts-{unique}", topic_deadletter=f"dl-{unique}",
                     consumer_group=f"g-{unique}", max_batch=8, max_wait_ms=20, cooldown_s=0.0).replace(**changes)
        await create_topics_async(services.bootstrap, {s.topic_chunks: 2, s.topic_labs: 1, s.topic_alerts: 1, s.topic_deadletter: 1})
        return s

    return make


# -- the scenarios -------------------------------------------------------------------------------
async def test_silent_bed_raises_no_data_until_its_data_returns(live, unique, tmp_path: Path) -> None:
    """Stop one bed mid-stream: ``no_data`` starts after ``no_data_s`` while the other bed streams on;
    then silence everywhere: the 1 s timer alone raises it for the second bed and escalates the
    first to level 2 (silence must never look like "fine"); data returns: both episodes end."""
    no_data_s = 3.0
    s = await live(no_data_s=no_data_s, idle_discharge_s=600.0)
    async with running(s, tmp_path, unique, "amplitude") as (worker, tap), Gateway(s) as gw:
        for _ in range(6):
            await gw.send("bed-a", ecg(1, 0.05, gw.seq.get("bed-a", 0)))
            await gw.send("bed-b", ecg(1, 0.05, 100 + gw.seq.get("bed-b", 0)), pace_s=0.25)
        b_stopped = gw.last_sent_ns["bed-b"]
        # bed-a keeps streaming while bed-b is silent
        deadline = time.monotonic() + 40
        while first(tap.alerts, bed_id="bed-b", kind="no_data", phase="start") is None:
            assert time.monotonic() < deadline, technical(tap.alerts, "bed-b")
            await gw.send("bed-a", ecg(1, 0.05, gw.seq["bed-a"]), pace_s=0.5)
        b_start = first(tap.alerts, bed_id="bed-b", kind="no_data", phase="start")
        assert b_start.emitted_ns - b_stopped >= no_data_s * S * 0.95
        assert b_start.level == 1 and b_start.probability is None and b_start.threshold_start is None
        assert b_start.patient_id == "pat-bed-b" and b_start.model_name == "amplitude-live"
        assert technical(tap.alerts, "bed-a") == []  # a streaming bed is fine
        # now nothing arrives at all: only the worker's timer can notice
        a_stopped = gw.last_sent_ns["bed-a"]
        await tap.wait_for("no_data for bed-a and level 2 for bed-b",
                           lambda al: first(al, bed_id="bed-a", kind="no_data", phase="start")
                           and first(al, bed_id="bed-b", kind="no_data", phase="update"), 40, worker)
        a_start = first(tap.alerts, bed_id="bed-a", kind="no_data", phase="start")
        b_update = first(tap.alerts, bed_id="bed-b", kind="no_data", phase="update")
        assert a_start.emitted_ns - a_stopped >= no_data_s * S * 0.95
        assert b_update.alert_id == b_start.alert_id and b_update.level == 2
        assert b_update.emitted_ns - b_stopped >= 3 * no_data_s * S * 0.95
        assert_consumers_show_technical(tap.alerts, "bed-b", ["no_data"], "quiet")
        # data returns
        for bed in ("bed-a", "bed-b"):
            await gw.send(bed, ecg(2, 0.05, 200 + gw.seq[bed]))

        def no_data_ends(al: list[Alert]) -> list[Alert] | None:
            ends_ = [a for a in al if a.kind == "no_data" and a.phase == "end"]
            return ends_ if {a.bed_id for a in ends_} == {"bed-a", "bed-b"} else None

        ends = await tap.wait_for("no_data end on both beds", no_data_ends, 30, worker)
        assert {a.bed_id: a.alert_id for a in ends} == {"bed-a": a_start.alert_id, "bed-b": b_start.alert_id}
        assert all(a.window_end_ns >= a.window_start_ns for a in ends)
        assert technical(tap.alerts, "bed-b") == [("no_data", "start", 1), ("no_data", "update", 2), ("no_data", "end", 2)]
        assert not [a for a in tap.alerts if a.alert_type == "mi"]  # quiet ECGs: no MI


async def test_flat_leads_raise_leads_off_and_stale_labs_are_an_advisory(live, unique, tmp_path: Path) -> None:
    """Four chest electrodes off (exactly flat) for longer than ``poor_quality_s`` -> ``leads_off``
    naming the flat leads, ended by the first evaluable window; an end of stream during an open
    ``leads_off`` ends it (discharge). A loud ECG whose patient's only troponin is older than the
    staleness limit alerts MI without the lab, with a ``stale_lab`` advisory, and no technical alarm."""
    s = await live(poor_quality_s=2.0, no_data_s=60.0, lab_staleness_s=600.0)
    off = ("V1", "V2", "V3", "V4")
    async with running(s, tmp_path, unique, "amplitude") as (worker, tap), Gateway(s) as gw:
        # a troponin 2 h old (limit 10 min) for the patient in bed-hot, through the labs topic
        lab = LabResult("pat-bed-hot", TNI, 900.0, "ng/L", time.time_ns() - 7200 * S)
        await gw.prod.send_and_wait(s.topic_labs, lab.to_bytes(), key=b"pat-bed-hot")
        await asyncio.sleep(1.0)  # the labs agent writes it to Redis
        # 14 s with V1-V4 flat: windows end at 10, 12, 14 s; bad since 10 s -> leads_off at 12 s
        await gw.send("bed-f", ecg(14, 0.05, 1, flat=off))
        await gw.send("bed-e", ecg(14, 0.05, 2, flat=off))
        await gw.send("bed-hot", ecg(14, 1.0, 3))
        await tap.wait_for("leads_off on bed-f and bed-e and MI on bed-hot", lambda al: first(
            al, bed_id="bed-f", kind="leads_off", phase="start") and first(al, bed_id="bed-e", kind="leads_off")
            and first(al, bed_id="bed-hot", alert_type="mi", phase="start"), 60, worker)
        # electrodes back on bed-f: the first window without a flat run ends it; bed-e is switched off
        await gw.send("bed-f", ecg(12, 0.05, 4))
        await gw.end_of_stream("bed-e")
        await tap.wait_for("leads_off end on bed-f and bed-e", lambda al: first(
            al, bed_id="bed-f", kind="leads_off", phase="end") and first(
            al, bed_id="bed-e", kind="leads_off", phase="end"), 60, worker)
        al = tap.alerts
        start = first(al, bed_id="bed-f", kind="leads_off", phase="start")
        end = first(al, bed_id="bed-f", kind="leads_off", phase="end")
        assert start.alert_type == "technical" and start.level == 1 and start.window_seq == 1
        assert {f"flat:{lead}" for lead in off} <= set(start.quality_flags)
        assert end.alert_id == start.alert_id and end.window_seq == 7  # [14 s, 24 s): the first window without a flat run
        e_start = first(al, bed_id="bed-e", kind="leads_off", phase="start")
        assert first(al, bed_id="bed-e", kind="leads_off", phase="end").alert_id == e_start.alert_id
        assert technical(al, "bed-f") == [("leads_off", "start", 1), ("leads_off", "end", 1)]
        assert technical(al, "bed-e") == [("leads_off", "start", 1), ("leads_off", "end", 1)]
        hot = first(al, bed_id="bed-hot", alert_type="mi", phase="start")
        assert hot.labs == [] and hot.labs_available and f"stale_lab:{TNI}" in hot.advisories
        assert technical(al, "bed-hot") == []
        assert_consumers_show_technical(al, "bed-f", [], "quiet")
        assert_consumers_show_technical([a for a in al if a.phase == "start"], "bed-e", ["leads_off"], "quiet")
        assert_consumers_show_technical(al, "bed-hot", [], "mi_suspected")


async def test_one_lead_off_is_a_low_priority_leads_off_while_the_bed_is_scored(live, unique, tmp_path: Path) -> None:
    """Issue 18: a bed whose monitor also sends respiration (an extra signal, lower-case lead names)
    with V3 off (missing) for 36 s: windows are cut and scored (MI alert, flags ``missing:V3`` and
    ``ignored:RESP``), and a level-0 ``leads_off`` names V3 after ``poor_quality_s``, ending when V3
    is back. Before, the extra name made the bed unmappable (no windows) and one lead off raised nothing."""
    from stream.consumers.hl7.pcd04 import build_oru_r40

    s = await live(poor_quality_s=2.0, no_data_s=60.0)
    leads = ("i", "ii", "v1", "v2", "v3", "v4", "v5", "v6", "RESP")
    loud = ecg(48, 0.7, 7)  # loud enough for "MI", not so loud that chest leads read noisy
    loud[LEADS8.index("V3"), :36 * FS] = np.nan  # V3 off for the first 36 s
    sig = np.concatenate([loud, np.random.default_rng(0).normal(0, 1, (1, loud.shape[1])).astype(np.float32)])
    async with running(s, tmp_path, unique, "amplitude") as (worker, tap), Gateway(s) as gw:
        await gw.send("bed-v3", sig[:, :36 * FS], leads=leads)
        await tap.wait_for("leads_off start and MI on bed-v3", lambda al: first(
            al, bed_id="bed-v3", kind="leads_off", phase="start") and first(
            al, bed_id="bed-v3", alert_type="mi", phase="start"), 60, worker)
        await gw.send("bed-v3", sig[:, 36 * FS:], leads=leads)
        await tap.wait_for("leads_off end on bed-v3", lambda al: first(
            al, bed_id="bed-v3", kind="leads_off", phase="end"), 60, worker)
        al = tap.alerts
        start = first(al, bed_id="bed-v3", kind="leads_off", phase="start")
        end = first(al, bed_id="bed-v3", kind="leads_off", phase="end")
        mi = first(al, bed_id="bed-v3", alert_type="mi", phase="start")
        assert start.level == 0 and start.advisories == ["lead off: V3"] and start.quality_flags == ["missing:V3"]
        assert end.alert_id == start.alert_id and technical(al, "bed-v3") == [("leads_off", "start", 0), ("leads_off", "end", 0)]
        assert end.window_end_ns >= gw.t0 + 36 * S  # ends on the first window after V3 came back
        assert {"missing:V3", "ignored:RESP"} <= set(mi.quality_flags) and mi.probability > 0.5
        assert mi.window_end_ns <= gw.t0 + 36 * S  # scored while V3 was off
        obx1 = [f for f in build_oru_r40(start, start.event_id, now_ns=time.time_ns()).split("\r") if f.startswith("OBX|1|")]
        assert obx1[0].split("|")[8] == "PL~ST"  # low priority, technical


async def test_no_data_episode_id_is_the_same_after_a_worker_restart(live, unique, tmp_path: Path) -> None:
    """Issue 18: a worker stops after scoring a bed's chunks; its successor (same group) re-reads the
    uncommitted tail at other arrival times and raises ``no_data``: its id derives from the last
    chunk's data time, so it is the id the first worker would have raised."""
    from stream.core.schema import make_alert_id
    from stream.tools.demo import WorkerProcess

    s = await live(no_data_s=4.0)
    first_worker = WorkerProcess(s, tmp_path / "w1", predictor="test_technical_live:amplitude", env=ENV)
    tap = await AlertTap(s).start()
    try:
        await first_worker.wait_ready(120)
        async with Gateway(s) as gw:
            await gw.send("bed-nd", ecg(13, 0.05, 9))
            await wait_chunks(first_worker, 13)
        await asyncio.to_thread(first_worker.stop)  # before no_data_s of silence has passed
        assert not [a for a in tap.alerts if a.kind == "no_data"]
        second = WorkerProcess(s, tmp_path / "w2", predictor="test_technical_live:amplitude", env=ENV)
        try:
            await second.wait_ready(120)
            got = await tap.wait_for("no_data on bed-nd", lambda al: first(al, bed_id="bed-nd", kind="no_data"), 60, second)
        finally:
            await asyncio.to_thread(second.stop)
    finally:
        await tap.stop()
    assert got.alert_id == make_alert_id("technical", "no_data", "bed-nd", "pat-bed-nd", gw.t0 + 13 * S)


async def test_a_worker_behind_real_time_says_so_on_every_bed(live, unique, tmp_path: Path) -> None:
    """Chunks stamped a minute old (a backlog) put the worker more than ``behind_s`` behind: every
    monitored bed gets ``falling_behind``; fresh chunks (lag <= behind_s / 2) end it."""
    s = await live(behind_s=5.0, no_data_s=60.0)
    async with running(s, tmp_path, unique, "amplitude") as (worker, tap), Gateway(s) as gw:
        await gw.send("bed-1", ecg(2, 0.05, 12))
        await wait_chunks(worker, 2)  # bed-1 is monitored; the backlog comes in batches of its own
        await gw.send("bed-2", ecg(2, 0.05, 13), age_s=60.0)
        starts = await tap.wait_for("falling_behind on both beds", lambda al: [
            a for a in al if a.kind == "falling_behind"] if len({a.bed_id for a in al if a.kind == "falling_behind"}) == 2
            else None, 30, worker)
        assert all(a.phase == "start" and a.advisories == ["worker more than 5 s behind real time"] for a in starts)
        for bed in ("bed-1", "bed-2"):
            await gw.send(bed, ecg(1, 0.05, 14))
        ends = await tap.wait_for("falling_behind end on both beds", lambda al: [
            a for a in al if a.kind == "falling_behind" and a.phase == "end"] if len(
            {a.bed_id for a in al if a.kind == "falling_behind" and a.phase == "end"}) == 2 else None, 30, worker)
        assert {a.bed_id: a.alert_id for a in ends} == {a.bed_id: a.alert_id for a in starts}
        assert not [a for a in tap.alerts if a.kind != "falling_behind"]


async def test_failing_backend_without_fallback_says_so_before_the_worker_stops(live, unique, tmp_path: Path) -> None:
    """No fallback configured: the worker stops (nothing acked, the supervisor restarts it), but first
    every monitored bed gets ``backend_failed`` saying the windows are not being evaluated."""
    s = await live()
    async with running(s, tmp_path, unique, "device_lost", clean_exit=False) as (worker, tap), Gateway(s) as gw:
        await gw.send("bed-y", ecg(3, 0.05, 6))  # monitored, no window yet
        await wait_chunks(worker, 3)
        await gw.send("bed-x", ecg(11, 0.05, 5))  # its first window is the first real batch
        code = await asyncio.to_thread(worker.proc.wait, 90)
    assert code != 0 and "simulated backend failure: device lost" in worker.logfile.read_text()
    tech = [a for a in tap.alerts if a.alert_type == "technical"]
    assert sorted((a.bed_id, a.kind, a.phase) for a in tech) == [("bed-x", "backend_failed", "start"),
                                                                ("bed-y", "backend_failed", "start")]
    assert all(a.advisories == ["no fallback backend: windows are not being evaluated"] for a in tech)


async def test_failing_backend_falls_back_and_says_so(live, unique, tmp_path: Path) -> None:
    """The primary backend raises on every batch; ``fallback_backend=torch`` (the checkpoint in
    PyTorch) re-scores the failing batch and every later one, each monitored bed gets one
    ``backend_failed`` naming the fallback, and the worker keeps running."""
    from engine.checkpoint import save_checkpoint
    from engine.model import Mirage

    ckpt = tmp_path / "tiny.pt"
    save_checkpoint(ckpt, Mirage(CFG), CFG, threshold=0.5, metrics={})
    s = await live(fallback_backend="torch", checkpoint=str(ckpt))
    async with running(s, tmp_path, unique, "device_lost") as (worker, tap), Gateway(s) as gw:
        for bed in ("bed-1", "bed-2"):
            await gw.send(bed, ecg(10, 0.05, 6))
        await tap.wait_for("backend_failed on both beds", lambda al: len(
            {a.bed_id for a in al if a.kind == "backend_failed"}) == 2, 60, worker)
        for bed in ("bed-1", "bed-2"):
            await gw.send(bed, ecg(6, 0.05, 7))
        deadline = time.monotonic() + 60
        while sum(len(v) for v in worker.read().get("scored_seqs", {}).values()) < 8:
            assert worker.proc.poll() is None and time.monotonic() < deadline, worker.logfile.read_text()[-3000:]
            await asyncio.sleep(0.2)
        assert worker.read()["scored_seqs"] == {"bed-1": [0, 1, 2, 3], "bed-2": [0, 1, 2, 3]}
        assert worker.proc.poll() is None  # monitoring goes on
    tech = [a for a in tap.alerts if a.alert_type == "technical"]
    assert sorted((a.bed_id, a.kind, a.phase) for a in tech) == [("bed-1", "backend_failed", "start"),
                                                                ("bed-2", "backend_failed", "start")]
    assert all(a.advisories == ["fallback backend torch in use"] for a in tech)


async def test_discharge_ends_every_open_alert(live, unique, tmp_path: Path) -> None:
    """A bed in an MI episode goes silent for good: ``no_data`` starts, then after
    ``idle_discharge_s`` the bed is discharged, which ends ``no_data`` AND the MI episode (same ids);
    a discharged bed stays silent (no new ``no_data``). A new patient in a bed ends the previous
    patient's MI episode at once."""
    s = await live(no_data_s=2.0, idle_discharge_s=6.0)
    async with running(s, tmp_path, unique, "amplitude") as (worker, tap):
        async with Gateway(s) as gw:
            await gw.send("bed-i", ecg(14, 1.0, 8))
            await gw.send("bed-q", ecg(14, 0.05, 9))
            await gw.send("bed-p", ecg(12, 1.0, 10))
            p_start = await tap.wait_for("MI start on bed-p", lambda al: first(
                al, bed_id="bed-p", alert_type="mi", phase="start"), 60, worker)
            await gw.send("bed-p", ecg(1, 0.05, 11), patient="pat-next")
            p_end = await tap.wait_for("MI end on bed-p", lambda al: first(
                al, bed_id="bed-p", alert_type="mi", phase="end"), 30, worker)
        assert (p_end.alert_id, p_end.patient_id) == (p_start.alert_id, "pat-bed-p")
        mi = await tap.wait_for("MI start on bed-i", lambda al: first(al, bed_id="bed-i", alert_type="mi", phase="start"),
                                60, worker)
        await tap.wait_for("no_data start on both beds", lambda al: first(al, bed_id="bed-i", kind="no_data") and first(
            al, bed_id="bed-q", kind="no_data"), 30, worker)
        mi_end = await tap.wait_for("MI end on bed-i", lambda al: first(al, bed_id="bed-i", alert_type="mi", phase="end"),
                                    30, worker)
        await tap.wait_for("no_data end on both beds", lambda al: first(al, bed_id="bed-i", kind="no_data", phase="end")
                           and first(al, bed_id="bed-q", kind="no_data", phase="end"), 30, worker)
        await asyncio.sleep(4.0)  # > no_data_s: a discharged bed must not alarm again
    assert mi_end.alert_id == mi.alert_id
    for bed in ("bed-i", "bed-q"):
        kinds = [(k, p) for k, p, _ in technical(tap.alerts, bed)]
        assert kinds == [("no_data", "start"), ("no_data", "end")] or kinds == [
            ("no_data", "start"), ("no_data", "update"), ("no_data", "end")], (bed, kinds)
