"""The worker measures ST on every scored window (issue #19): windows and MI alerts carry it, st_change alerts go out.

Real windowing, conversion, ST measurement (engine.st on the 100 Hz model-rate window) and
policies; the predictor is the crafted seam of test_processor (p from the signal amplitude).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
import pytest

from engine.config import LEADS, PRESETS
from engine.st.testing import ST_INDEP, beat_train, true_st_uv
from stream.core.schema import Alert, EcgChunk
from stream.settings import Settings
from stream.worker.processor import ModelInfo, StreamProcessor

FS = 500
T0 = 1_700_000_000 * 10**9


CFG = PRESETS["tiny"]
INFO = ModelInfo("mirage-tiny", "0.1.0", "abc123", threshold=0.5)


@dataclass
class Pred:
    probs: np.ndarray
    lead_weights: np.ndarray


class FixedPredictor:
    """The same MI probability for every window (the ST path is what is under test)."""

    name = "fixed"
    config = CFG

    def __init__(self, p: float) -> None:
        self.p = p

    def predict(self, ecg, image, labs, lab_mask) -> Pred:
        return Pred(np.full(ecg.shape[0], self.p, np.float32), np.ones((ecg.shape[0], 12), np.float32))


def settings(**kw) -> Settings:
    return Settings(**{**dict(threshold_start=0.5, threshold_end=0.3, k_of_n_k=2, k_of_n_n=3, max_batch=4, cooldown_s=0.0), **kw})


def record(seconds: int, st_from_s: int | None = None, shift_mv: float = 0.0) -> np.ndarray:
    """(12, seconds*FS) hand-built beats; from ``st_from_s`` on, the inferior ST plateau is ``shift_mv`` higher."""
    x = beat_train(FS, seconds=seconds, wander_mv=0.05, seed=3)
    if st_from_s is not None:
        st = ST_INDEP.copy()
        st[1] += shift_mv  # lead II; III and aVF follow through Einthoven / Goldberger
        y = beat_train(FS, st=st, seconds=seconds, wander_mv=0.05, seed=3)
        x[:, st_from_s * FS:] = y[:, st_from_s * FS:]
    return x.astype(np.float32)


def chunks(rec: np.ndarray, bed: str = "B1") -> list[tuple[EcgChunk, tuple[str, int]]]:
    n = rec.shape[1] // FS
    return [(EcgChunk(bed, f"pat-{bed}", s, T0 + s * 10**9, FS, LEADS, rec[:, s * FS:(s + 1) * FS]), (bed, s)) for s in range(n)]


async def test_windows_and_mi_alerts_carry_the_st_vector_measured_off_the_event_loop(monkeypatch) -> None:
    threads: set[str] = set()
    import stream.worker.st_stage as st_stage

    real = st_stage.measure_st

    def spy(x, fs, *a, **k):
        threads.add(threading.current_thread().name)
        assert x.shape == (12, 1000) and fs == 100.0  # the model-rate window
        return real(x, fs, *a, **k)

    monkeypatch.setattr(st_stage, "measure_st", spy)
    proc = StreamProcessor(FixedPredictor(0.95), INFO, settings())
    try:
        res = await proc.process(chunks(record(20)))
    finally:
        proc.close()
    assert res.scored and all(s.window.st is not None for s in res.scored)
    assert threads and all(t.startswith("mirage-st") for t in threads)
    st = res.scored[-1].window.st
    assert st["j60_uv"][LEADS.index("II")] == pytest.approx(true_st_uv()[LEADS.index("II")], abs=40.0)
    assert st["baseline_uv"] == [None] * 12  # still learning the reference
    mi = [a for a in res.alerts if a.alert_type == "mi" and a.phase == "start"]
    assert mi and mi[0].st is not None and len(mi[0].st["j60_uv"]) == 12
    assert Alert.from_bytes(mi[0].to_bytes()).st == mi[0].st


async def test_sustained_st_elevation_raises_st_change_on_the_alerts_path_and_discharge_ends_it() -> None:
    s = settings(st_learn_s=16, st_min_windows=4, st_sustain_s=20, st_end_s=10)
    proc = StreamProcessor(FixedPredictor(0.05), INFO, s)  # no MI: only the ST alarm
    try:
        res = await proc.process(chunks(record(90, st_from_s=30, shift_mv=0.2)))
        st_alerts = [a for a in res.alerts if a.kind == "st_change"]
        assert [a.phase for a in st_alerts][:1] == ["start"]
        a = st_alerts[0]
        assert a.alert_type == "st" and {"II", "III", "aVF"} <= set(a.top_leads)
        assert a.window_end_ns - (T0 + 30 * 10**9) >= 20 * 10**9  # held for st_sustain_s first
        assert a.st["delta_uv"][LEADS.index("II")] == pytest.approx(200.0, abs=40.0)
        assert a.threshold_start == 100.0
        # the bed leaves (end of stream): its open st_change episode ends
        eos = EcgChunk("B1", "pat-B1", 90, T0 + 90 * 10**9, FS, LEADS, np.zeros((12, FS), np.float32), end_of_stream=True)
        res2 = await proc.process([(eos, ("B1", 90))])
        assert [(x.kind, x.phase) for x in res2.alerts if x.alert_type == "st"] == [("st_change", "end")]
        assert res2.alerts[-1].alert_id == a.alert_id
    finally:
        proc.close()


async def test_st_can_be_switched_off() -> None:
    proc = StreamProcessor(FixedPredictor(0.95), INFO, settings(st_enabled=False))
    try:
        res = await proc.process(chunks(record(14)))
    finally:
        proc.close()
    assert res.scored and all(s.window.st is None for s in res.scored)
    assert all(a.st is None for a in res.alerts)


class FakeRedis:
    """The few asyncio-Redis calls the ST stage makes (set/delete in a pipeline, mget, get)."""

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}

    def pipeline(self, transaction: bool = False) -> "FakeRedis":
        return self

    def set(self, key: str, value: str, ex: int | None = None) -> None:
        self.data[key] = value.encode()

    def delete(self, key: str) -> None:
        self.data.pop(key, None)

    async def execute(self) -> list:
        return []

    async def mget(self, keys: list[str]) -> list[bytes | None]:
        return [self.data.get(k) for k in keys]


async def test_a_restarted_worker_keeps_the_baseline_and_the_dashboard_view_is_in_redis() -> None:
    """The reference is restored from Redis, so ST that is already raised at the restart still alarms."""
    import json

    from stream.core.st import ST_VIEW_KEY
    from stream.worker.st_stage import StStage

    s = settings(st_learn_s=16, st_min_windows=4, st_sustain_s=20, st_end_s=10)
    redis = FakeRedis()
    rec = record(90, st_from_s=30, shift_mv=0.2)
    first = StreamProcessor(FixedPredictor(0.05), INFO, s)
    first.st = StStage(s, CFG.fs, INFO, first.clock, redis)
    try:
        await first.process(chunks(rec[:, :30 * FS]))  # baseline learned on normal ST, then the worker dies
        await first.save_state()
    finally:
        first.close()
    view = json.loads(redis.data[ST_VIEW_KEY.format(bed_id="B1")])
    assert view["baseline_uv"][LEADS.index("II")] is not None and len(view["trend"]["t_ns"]) >= 1
    second = StreamProcessor(FixedPredictor(0.05), INFO, s)
    second.st = StStage(s, CFG.fs, INFO, second.clock, redis)
    try:
        items = [it for it in chunks(rec) if it[0].seq >= 30]
        res = await second.process(items)
    finally:
        second.close()
    assert [a.phase for a in res.alerts if a.kind == "st_change"][:1] == ["start"]
