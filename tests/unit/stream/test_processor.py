"""StreamProcessor: chunks -> windows -> batches -> predictor (off the loop) -> policy -> alerts.

The predictor here is a crafted, deterministic seam (the MI probability is a logistic function of
the conditioned ECG's amplitude), so the expected alerts are known; everything else is the real
code path (windower, pipeline.model_inputs, batcher, policy, alert building).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
import pytest

from engine.config import LEADS, PRESETS
from stream.core.schema import Alert, EcgChunk
from stream.settings import Settings
from stream.worker.processor import ModelInfo, StreamProcessor, policy_config

CFG = PRESETS["tiny"]
FS = 500
N = 500  # 1 s chunks
T0 = 1_700_000_000 * 10**9
LEADS8 = ("I", "II", "V1", "V2", "V3", "V4", "V5", "V6")


@dataclass
class Pred:
    probs: np.ndarray
    lead_weights: np.ndarray


class AmplitudePredictor:
    """p = sigmoid(20 * (rms - 0.3 mV)); lead weights = per-lead rms. Records threads and batch sizes."""

    name = "amplitude"
    config = CFG

    def __init__(self) -> None:
        self.threads: set[str] = set()
        self.batches: list[int] = []

    def predict(self, ecg, image, labs, lab_mask) -> Pred:
        assert ecg.shape[1:] == (12, CFG.T) and image.shape[1:] == (1, 224, 224)
        self.threads.add(threading.current_thread().name)
        self.batches.append(ecg.shape[0])
        rms = np.sqrt((ecg ** 2).mean(axis=2))  # (B, 12)
        p = 1 / (1 + np.exp(-20 * (rms.mean(axis=1) - 0.3)))
        return Pred(p.astype(np.float32), rms.astype(np.float32))


def bed_record(amplitude: float, seconds: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(seconds * FS) / FS
    x = amplitude * np.sin(2 * np.pi * 5 * t)[None, :] * np.linspace(0.5, 1.5, 8)[:, None]
    return (x + rng.normal(0, 0.005, (8, t.size))).astype(np.float32)


def chunks(bed: str, rec: np.ndarray, seqs, eos_at: int | None = None) -> list[EcgChunk]:
    return [EcgChunk(bed, f"pat-{bed}", s, T0 + s * 10**9, FS, LEADS8, rec[:, s * N:(s + 1) * N], s == eos_at) for s in seqs]


def settings(**kw) -> Settings:
    base = dict(threshold_start=0.5, threshold_end=0.3, k_of_n_k=2, k_of_n_n=3, max_batch=4, cooldown_s=0.0)
    base.update(kw)
    return Settings(**base)


INFO = ModelInfo("mirage-tiny", "0.1.0", "abc123", threshold=0.5)


async def test_high_amplitude_bed_alerts_low_one_does_not() -> None:
    pred = AmplitudePredictor()
    proc = StreamProcessor(pred, INFO, settings())
    hi, lo = bed_record(1.0, 16, 0), bed_record(0.05, 16, 1)
    items = []
    for a, b in zip(chunks("bed-hi", hi, range(16)), chunks("bed-lo", lo, range(16))):
        items += [(a, ("hi", a.seq)), (b, ("lo", b.seq))]
    res = await proc.process(items)
    assert len(res.scored) == 2 * 4  # windows at 0, 2, 4, 6 s per bed
    alerts: list[Alert] = res.alerts
    assert [(a.bed_id, a.phase, a.window_seq) for a in alerts] == [("bed-hi", "start", 1)]
    a = alerts[0]
    assert a.model_name == "mirage-tiny" and a.checkpoint_sha == "abc123" and a.probability > 0.9
    assert len(a.top_leads) == 3 and set(a.top_leads) <= set(LEADS)
    assert a.labs_available and a.labs == [] and a.threshold_start == 0.5
    assert Alert.from_bytes(a.to_bytes()) == a
    # the model ran in the executor thread, batches never above max_batch
    assert pred.threads == {"mirage-model_0"} and max(pred.batches) <= 4 and sum(pred.batches) == 8
    proc.close()


async def test_tokens_are_released_only_when_their_samples_are_consumed() -> None:
    proc = StreamProcessor(AmplitudePredictor(), INFO, settings())
    rec = bed_record(0.05, 20, 2)
    cs = chunks("b", rec, range(20))
    res = await proc.process([(c, c.seq) for c in cs[:9]])
    assert res.release == [] and res.scored == []  # no window yet: nothing may be acked
    res = await proc.process([(cs[9], 9)])
    assert len(res.scored) == 1
    assert res.release == [0, 1]  # the next window starts at 2 s: chunks 0-1 are fully consumed
    res = await proc.process([(c, c.seq) for c in cs[10:14]])
    assert res.release == [2, 3, 4, 5]
    dup = await proc.process([(cs[13], "dup")])
    assert dup.release == ["dup"] and dup.dropped == {"duplicate": 1}


async def test_end_of_stream_ends_the_episode_and_releases_everything() -> None:
    proc = StreamProcessor(AmplitudePredictor(), INFO, settings())
    rec = bed_record(1.0, 14, 3)
    cs = chunks("b", rec, range(14), eos_at=13)
    res = await proc.process([(c, c.seq) for c in cs])
    assert [a.phase for a in res.alerts] == ["start", "end"]
    assert res.alerts[0].alert_id == res.alerts[1].alert_id
    assert sorted(res.release) == list(range(14))


async def test_same_input_gives_same_alert_ids_after_a_restart() -> None:
    rec = np.concatenate([bed_record(0.05, 12, 4), bed_record(1.0, 10, 5)], axis=1)  # quiet 12 s, then loud
    cs = chunks("b", rec, range(22))
    first = await StreamProcessor(AmplitudePredictor(), INFO, settings()).process([(c, 0) for c in cs])
    # a restarted worker re-reads from the committed offset (chunk 3 here) with fresh state
    again = await StreamProcessor(AmplitudePredictor(), INFO, settings()).process([(c, 0) for c in cs[3:]])
    starts = [(a.window_seq, a.alert_id) for a in first.alerts if a.phase == "start"]
    assert len(starts) == 1 and starts[0][0] > 2
    assert [(a.window_seq, a.alert_id) for a in again.alerts if a.phase == "start"] == starts


def test_thresholds_come_from_settings_else_checkpoint() -> None:
    info = ModelInfo("m", "1", "sha", threshold=0.42, thresholds={"end": 0.2})
    pc = policy_config(Settings(), info)
    assert (pc.threshold_start, pc.threshold_end) == (0.42, 0.2)
    pc = policy_config(Settings(threshold_start=0.7, threshold_end=0.5), info)
    assert (pc.threshold_start, pc.threshold_end) == (0.7, 0.5)


async def test_technical_alarms_leads_off_and_no_data() -> None:
    now = [T0 + 100 * 10**9]
    proc = StreamProcessor(AmplitudePredictor(), INFO, settings(poor_quality_s=4.0, no_data_s=5.0), clock=lambda: now[0])
    rec = bed_record(0.05, 16, 6)
    rec[2:6] = np.nan  # V1-V4 off: more than max_bad_leads flagged -> not evaluable
    res = await proc.process([(c, c.seq) for c in chunks("b", rec, range(16))])
    tech = [a for a in res.alerts if a.alert_type == "technical"]
    # windows end at 10, 12, 14, 16 s: bad since 10 s, 4 s later (the 14 s window) leads_off starts
    assert [(a.kind, a.phase, a.window_seq) for a in tech] == [("leads_off", "start", 2)]
    assert "missing:V1" in tech[0].quality_flags and tech[0].probability is None
    assert not [a for a in res.alerts if a.alert_type == "mi"]
    now[0] += 6 * 10**9  # the bed goes silent
    late = proc.tick()
    assert [(a.kind, a.phase) for a in late] == [("no_data", "start")]
    assert late[0].alert_id != tech[0].alert_id and late[0].bed_id == "b"


async def test_backend_failure_raises_and_queues_a_technical_alarm() -> None:
    class Broken(AmplitudePredictor):
        def predict(self, *a):
            raise RuntimeError("GPU lost")

    proc = StreamProcessor(Broken(), INFO, settings())
    rec = bed_record(0.05, 10, 7)
    with pytest.raises(RuntimeError, match="GPU lost"):  # a failing backend must not be skipped
        await proc.process([(c, c.seq) for c in chunks("b", rec, range(10))])
    assert [(a.kind, a.phase) for a in proc.tick()] == [("backend_failed", "start")]


class GpuGone(AmplitudePredictor):
    """A primary backend whose device is gone: every call raises."""

    name = "gpu"

    def predict(self, *a):
        raise RuntimeError("CUDA error: no device")


class CpuFallback(AmplitudePredictor):
    name = "cpu-fallback"


async def test_runtime_backend_failure_switches_to_the_fallback() -> None:
    proc = StreamProcessor(GpuGone(), INFO, settings(), fallback=CpuFallback)
    rec = bed_record(1.0, 14, 8)
    res = await proc.process([(c, c.seq) for c in chunks("b", rec, range(14))])
    assert len(res.scored) == 3 and proc.on_fallback and proc.predictor.name == "cpu-fallback"
    kinds = [(a.alert_type, a.kind, a.phase) for a in res.alerts]
    assert ("mi", "mi_suspected", "start") in kinds  # monitoring went on
    [tech] = [a for a in res.alerts if a.alert_type == "technical"]
    assert (tech.kind, tech.phase) == ("backend_failed", "start") and "cpu-fallback" in " ".join(tech.advisories)


async def test_fallback_mid_call_with_several_batches_in_flight() -> None:
    """Batch k+1 is queued in the model thread while batch k is scored: when k fails and the
    worker switches to the fallback, k+1 (already submitted to the failed backend) is scored
    again with the fallback, not counted as a second failure."""
    proc = StreamProcessor(GpuGone(), INFO, settings(max_batch=1), fallback=CpuFallback)
    items = [(c, c.seq) for bed, seed in (("a", 1), ("b", 2), ("c", 3)) for c in chunks(bed, bed_record(1.0, 14, seed), range(14))]
    res = await proc.process(items)
    assert len(res.scored) == 9 and proc.on_fallback and proc.predictor.batches == [1] * 9
    tech = [a for a in res.alerts if a.alert_type == "technical"]
    assert {(a.kind, a.phase) for a in tech} == {("backend_failed", "start")}
    assert sorted(a.bed_id for a in tech) == ["a", "b", "c"]  # one alarm per bed, one switch


async def test_a_failing_backend_with_a_batch_queued_behind_it_raises_cleanly(caplog) -> None:
    """No fallback: the call raises (the worker stops, nothing acked); the batch already queued in
    the model thread behind the failed one must not leave an unretrieved exception behind."""
    import asyncio
    import gc

    proc = StreamProcessor(GpuGone(), INFO, settings(max_batch=1))
    items = [(c, c.seq) for bed, seed in (("a", 1), ("b", 2)) for c in chunks(bed, bed_record(1.0, 14, seed), range(14))]
    with pytest.raises(RuntimeError, match="no device"):
        await proc.process(items)
    await asyncio.sleep(0.2)  # let the queued batch finish in the model thread
    gc.collect()
    await asyncio.sleep(0)
    assert "never retrieved" not in caplog.text


async def test_the_next_batch_is_converted_while_the_model_scores_the_previous_one(monkeypatch) -> None:
    """Overlap, observed: every conversion after the first happens while the model thread is
    inside ``predict`` of the previous batch (a sequential loop would find the model idle)."""
    import stream.worker.processor as processor_module

    entered, release, busy = threading.Event(), threading.Event(), threading.Event()
    seen_busy: list[bool] = []

    class HoldingPredictor(AmplitudePredictor):
        def predict(self, ecg, image, labs, lab_mask) -> Pred:
            busy.set()
            entered.set()
            release.wait(1.0)  # held until the next batch's conversion has looked (or 1 s: the last batch)
            release.clear()
            out = super().predict(ecg, image, labs, lab_mask)
            busy.clear()
            return out

    real_convert = processor_module.convert_windows
    calls = [0]

    def observing_convert(batch, cfg):
        if calls[0]:
            assert entered.wait(5.0), "the previous batch never reached the model"
            seen_busy.append(busy.is_set())
            entered.clear()
            release.set()
        calls[0] += 1
        return real_convert(batch, cfg)

    monkeypatch.setattr(processor_module, "convert_windows", observing_convert)
    proc = StreamProcessor(HoldingPredictor(), INFO, settings(max_batch=2))
    items = [(c, c.seq) for bed, seed in (("a", 1), ("b", 2), ("c", 3)) for c in chunks(bed, bed_record(1.0, 14, seed), range(14))]
    res = await proc.process(items)
    assert calls[0] == 5 and seen_busy == [True] * 4
    assert [(s.window.bed_id, s.window.seq) for s in res.scored] == [(b, k) for b in "abc" for k in range(3)]


async def test_batches_are_applied_in_order() -> None:
    pred = AmplitudePredictor()
    proc = StreamProcessor(pred, INFO, settings(max_batch=2))
    items = [(c, c.seq) for bed, seed in (("a", 1), ("b", 2), ("c", 3)) for c in chunks(bed, bed_record(1.0, 14, seed), range(14))]
    res = await proc.process(items)
    assert pred.batches == [2, 2, 2, 2, 1]
    assert [(s.window.bed_id, s.window.seq) for s in res.scored] == [(b, k) for b in "abc" for k in range(3)]
    assert all(s.window.signal is not None and s.window.raw is None for s in res.scored)


async def test_idle_discharge_by_the_timer_ends_the_mi_episode() -> None:
    """No chunk at all after the bed went silent: the timer's tick discharges it past
    ``idle_discharge_s``, ending no_data AND the MI episode (same id, on the last scored window)."""
    now = [T0 + 100 * 10**9]
    proc = StreamProcessor(AmplitudePredictor(), INFO, settings(no_data_s=2.0, idle_discharge_s=6.0), clock=lambda: now[0])
    items = [(c, c.seq) for c in chunks("b", bed_record(1.0, 12, 2), range(12))]
    res = await proc.process(items)
    [start] = [a for a in res.alerts if a.alert_type == "mi"]
    assert sorted(res.release) == [0, 1, 2, 3]  # chunks 4-11 still belong to a future window
    now[0] += 3 * 10**9
    assert [(a.kind, a.phase) for a in proc.tick()] == [("no_data", "start")]
    now[0] += 4 * 10**9  # 7 s > idle_discharge_s
    events = proc.tick()
    assert [(a.alert_type, a.phase) for a in events] == [("technical", "end"), ("mi", "end")]
    assert events[1].alert_id == start.alert_id and events[1].window_seq == 1 and events[1].probability is None
    assert proc.windower.bed_ids() == [] and not proc.policy.known("b")
    assert proc.tick() == []  # a discharged bed is silent
    res = await proc.process([])  # its held chunks are released: a restart must not rebuild its windows
    assert sorted(res.release) == list(range(4, 12)) and res.alerts == []


async def test_windower_eviction_and_patient_change_end_the_mi_episode() -> None:
    now = [T0 + 100 * 10**9]
    proc = StreamProcessor(AmplitudePredictor(), INFO, settings(idle_discharge_s=5.0), clock=lambda: now[0])
    res = await proc.process([(c, c.seq) for c in chunks("b", bed_record(1.0, 12, 3), range(12))]
                             + [(c, c.seq) for c in chunks("q", bed_record(1.0, 12, 4), range(12))])
    starts = {a.bed_id: a.alert_id for a in res.alerts if a.alert_type == "mi" and a.phase == "start"}
    assert set(starts) == {"b", "q"}
    # bed q gets a new patient: the previous patient's episode ends at once
    new = EcgChunk("q", "pat-new", 12, T0 + 12 * 10**9, FS, LEADS8, bed_record(0.05, 1, 5))
    res = await proc.process([(new, "new")])
    assert [(a.bed_id, a.patient_id, a.phase, a.alert_id) for a in res.alerts if a.alert_type == "mi"] == [
        ("q", "pat-q", "end", starts["q"])]
    # bed b goes silent; a chunk of bed q arrives after idle_discharge_s: the windower evicts b first
    now[0] += 6 * 10**9
    more = EcgChunk("q", "pat-new", 13, T0 + 13 * 10**9, FS, LEADS8, bed_record(0.05, 1, 6))
    res = await proc.process([(more, "more")])
    mi = [(a.bed_id, a.phase, a.alert_id) for a in res.alerts if a.alert_type == "mi"]
    assert mi == [("b", "end", starts["b"])]
    assert [a.bed_id for a in proc.tick() if a.alert_type == "mi"] == []  # ended once, not twice


async def test_backend_failing_its_warm_up_uses_the_fallback_and_says_so() -> None:
    with pytest.raises(RuntimeError, match="no device"):  # no fallback: the worker must not start
        StreamProcessor(GpuGone(), INFO, settings()).warmup()
    proc = StreamProcessor(GpuGone(), INFO, settings(), fallback=CpuFallback)
    proc.warmup()
    assert proc.on_fallback and proc.predictor.name == "cpu-fallback"
    res = await proc.process([(c, c.seq) for c in chunks("b", bed_record(1.0, 14, 8), range(14))])
    assert len(res.scored) == 3
    [tech] = [a for a in res.alerts if a.alert_type == "technical"]
    assert (tech.kind, tech.phase) == ("backend_failed", "start") and "cpu-fallback" in " ".join(tech.advisories)
