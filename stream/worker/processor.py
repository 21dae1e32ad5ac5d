"""The stream worker's orchestration core, testable without Kafka.

One call of :meth:`StreamProcessor.process` takes a batch of decoded chunks (each with an opaque
*token*: the Kafka event the worker acknowledges later) and does, in order:

1. chunks -> their bed's :class:`stream.core.session.BedSession` (window buffer via
   :class:`stream.core.windower.Windower`, admission, pending tokens) -> windows;
2. windows -> :class:`stream.core.batcher.MicroBatcher` -> batches of at most ``max_batch``;
3. labs for each batch from :class:`stream.worker.store.LabCache` (one Redis round trip);
4. the model call, :meth:`StreamProcessor._score`: :func:`engine.pipeline.model_inputs` +
   ``Predictor.predict`` in an executor thread, so the event loop keeps heart-beating to the broker
   while the model works;
5. :class:`stream.core.policy.AlertPolicy` -> :class:`stream.core.schema.Alert` objects; on an episode
   start the window is drawn on ECG paper and stored in Redis (``mirage:snapshot:{alert_id}``);
   chunk arrivals, window quality, worker lag and backend errors feed
   :class:`stream.core.technical.TechnicalMonitor` (technical alarms: no data, leads off, poor signal,
   backend failed, falling behind), whose events join the alerts; a bed is discharged only by
   :meth:`stream.core.session.BedSession.discharge` (end of stream, ``idle_discharge_s`` of
   silence, another patient, partition revoked), which ends its episodes;
6. the tokens that are now *safe to acknowledge*: a chunk is released only when every window
   containing its samples has been scored (so a restart from the committed offset rebuilds every
   window that has not produced its output: at-least-once, see docs/STREAMING.md).

The caller sends the alerts, awaits the broker's acknowledgement, and only then acks the
released tokens.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from engine.config import LEADS, MirageConfig
from engine.pipeline import model_inputs
from engine.prediction import Predictor
from stream.core.admission import REASON_END_OF_STREAM, REASON_PATIENT_CHANGE
from stream.core.batcher import MicroBatcher
from stream.core.policy import KIND_MI, PolicyConfig, PolicyEvent
from stream.core.schema import Alert, EcgChunk
from stream.core.session import REASON_REVOKED, BedSession, BedSessions
from stream.core.technical import TechnicalConfig
from stream.core.windower import EcgWindow, Windower, convert_windows
from stream.settings import Settings
from stream.worker.st_stage import StStage  # issue #19
from stream.worker.store import LabCache, PatientLabs, PolicyStateStore, empty_labs

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelInfo:
    """What alerts say about the model that produced them."""

    name: str
    version: str
    checkpoint_sha: str
    threshold: float = 0.5
    thresholds: dict[str, float] = field(default_factory=dict)


@dataclass
class Scored:
    """One scored window (for metrics, validation and the demo)."""

    window: EcgWindow
    probability: float

    def latency_s(self, done_ns: int) -> float:
        """Seconds from the arrival of the chunk that completed the window to ``done_ns``."""
        return max(0.0, (done_ns - self.window.last_arrival_ns) / 1e9) if self.window.last_arrival_ns else 0.0


@dataclass
class ProcessResult:
    """Outputs of one :meth:`StreamProcessor.process` call."""

    alerts: list[Alert] = field(default_factory=list)
    release: list[Any] = field(default_factory=list)
    scored: list[Scored] = field(default_factory=list)
    dropped: dict[str, int] = field(default_factory=dict)
    snapshots: list[tuple[str, EcgWindow]] = field(default_factory=list)  # (alert_id, window) of episode starts


def policy_config(settings: Settings, info: ModelInfo) -> PolicyConfig:
    """Thresholds from Settings when set (non-zero), else from the checkpoint."""
    start = settings.threshold_start or info.thresholds.get("start", 0.0) or info.threshold
    end = settings.threshold_end or info.thresholds.get("end", 0.0) or max(0.0, start - 0.1)
    end = min(end, start)
    return PolicyConfig(threshold_start=start, threshold_end=end, k=settings.k_of_n_k, n=settings.k_of_n_n,
                        cooldown_s=settings.cooldown_s, escalate_probability=settings.escalate_probability)


def _segments(items: Sequence[tuple]) -> list[Sequence[tuple]]:
    """Split a call's items where a bed starts over (a chunk after its end of stream, or naming
    another patient): the earlier part is scored first, so the discharge ends the episode on the
    bed's newest window and the next patient starts a session of their own."""
    parts: list[Sequence[tuple]] = []
    start, seen = 0, {}  # bed -> patient of the current part; "" once its stream ended
    for i, item in enumerate(items):
        chunk = item[0]
        if seen.get(chunk.bed_id, chunk.patient_id) != chunk.patient_id:
            parts.append(items[start:i])
            start, seen = i, {}
        seen[chunk.bed_id] = "" if chunk.end_of_stream else chunk.patient_id
    parts.append(items[start:])
    return parts


def _patient(session: BedSession) -> str | None:
    """The patient the session is monitoring (None before anything is known)."""
    for part in (session.admission, session.buffer, session.episode):
        if part is not None:
            return part.patient_id
    return None


class StreamProcessor:
    """Chunks in, alerts and releasable tokens out.

    Args:
        predictor: an ``engine.prediction.Predictor`` (``trt.backends.make_predictor``), or any
            object with its ``name``/``config``/``predict``.
        info: model name/version/checkpoint sha and its thresholds.
        settings: stream settings (batching, hop, policy overrides, staleness).
        labcache: the lab store, or None to score without labs.
        executor: where the model runs (a one-thread pool by default).
        snapshot: ``(window) -> PNG bytes`` for episode starts, or None to skip snapshots.
        clock: ``() -> ns`` wall clock (alert emission time, lab ages).
        fallback: ``() -> predictor`` building the fallback backend (``Settings.fallback_backend``);
            used from the first batch the primary fails on, with a ``backend_failed`` technical
            alarm carrying the advisory "fallback backend ... in use".
    """

    def __init__(self, predictor: Predictor, info: ModelInfo, settings: Settings, *, labcache: LabCache | None = None,
                 executor: Executor | None = None, snapshot: Callable[[EcgWindow], bytes] | None = None,
                 clock: Callable[[], int] | None = None, metrics: Any | None = None,
                 fallback: Callable[[], Predictor] | None = None) -> None:
        self.predictor = predictor
        self._fallback = fallback
        self.on_fallback = False
        self.cfg: MirageConfig = predictor.config
        self.info = info
        self.settings = settings
        self.labcache = labcache
        self.executor = executor or ThreadPoolExecutor(max_workers=1, thread_name_prefix="mirage-model")
        # Snapshots get their own thread: drawing ECG paper must not queue in front of the model.
        self.snapshot_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mirage-snapshot")
        self.snapshot = snapshot
        self.clock = clock or time.time_ns
        self.metrics = metrics
        # One session per bed holds its buffer, pending tokens, episode, technical state and admission
        # (stream/core/session.py); the cores below work on the sessions' state.
        self.sessions = BedSessions(
            lambda beds: Windower(self.cfg, hop_s=settings.hop_s, idle_s=settings.idle_discharge_s, clock=self.clock,
                                  convert=False, beds=beds),
            policy_config(settings, info),
            TechnicalConfig.from_settings(settings, model_name=info.name, model_version=info.version,
                                          checkpoint_sha=info.checkpoint_sha),
            self._end_alerts, self.clock)
        # Windows are cut by the windower and converted (resampling, quality flags) a micro-batch at a
        # time in _score_batches, overlapped with the model thread scoring the previous micro-batch.
        self.windower = self.sessions.windower
        self.policy = self.sessions.policy
        self.technical = self.sessions.technical
        self.batcher: MicroBatcher[EcgWindow] = MicroBatcher(settings.max_batch, settings.max_wait_ms / 1000.0)
        self.policy_store = PolicyStateStore(labcache.client, settings.consumer_group) if labcache is not None else None
        self.windows_scored = 0
        self.chunks_seen = 0
        # issue #19: ST per window (own thread), per-bed baseline and st_change alerts (stream/worker/st_stage.py)
        self.st = StStage(settings, self.cfg.fs, info, self.clock, labcache.client if labcache is not None else None)

    # -- the steps ------------------------------------------------------------------------------
    async def process(self, items: Sequence[tuple[EcgChunk, Any] | tuple[EcgChunk, Any, int | None]]) -> ProcessResult:
        """Process decoded chunks (with tokens and optional arrival times); see the module docstring."""
        result = ProcessResult()
        await self._restore([item[0].bed_id for item in items])
        self._observe_lag(items)
        for part in _segments(items):
            windows = self._route(part, result)  # 1. chunks -> their beds' sessions -> windows
            batches = self.batcher.extend(windows) + self.batcher.flush()  # 2. micro-batches
            await self._score_batches(batches, result)  # 3-5. labs, the model (self._score), apply
            for bed_id in [b for b, s in self.sessions.sessions.items() if s.ending_ns is not None]:
                # End of stream: discharged once the windows its last chunk completed are scored.
                alerts, tokens = self.sessions.discharge(bed_id, REASON_END_OF_STREAM, self.sessions.sessions[bed_id].ending_ns)
                result.alerts.extend(alerts)
                result.release.extend(tokens)
        result.alerts.extend(self.tick())  # technical alarms, idle discharges
        result.release.extend(self.sessions.take_releasable())  # 6. tokens safe to acknowledge
        return result

    def _route(self, items: Sequence[tuple[EcgChunk, Any] | tuple[EcgChunk, Any, int | None]],
               result: ProcessResult) -> list[EcgWindow]:
        """Each chunk to its bed's session (window buffer, admission, pending tokens); the windows it completes."""
        windows: list[EcgWindow] = []
        for item in items:
            windows.extend(self._ingest(item[0], item[1], item[2] if len(item) > 2 else None, result))
        return windows

    def _observe_lag(self, items: Sequence[tuple[EcgChunk, Any] | tuple[EcgChunk, Any, int | None]]) -> None:
        arrivals = [item[2] for item in items if len(item) > 2 and item[2] is not None]
        if arrivals:
            self.technical.on_lag(max(0.0, (self.clock() - max(arrivals)) / 1e9), self.clock())

    def _ingest(self, chunk: EcgChunk, token: Any, arrival_ns: int | None, result: ProcessResult) -> list[EcgWindow]:
        self.chunks_seen += 1
        bed_id = chunk.bed_id
        session = self.sessions.get(bed_id)
        if session is not None and _patient(session) not in (None, chunk.patient_id):
            # Another patient in the bed: the previous patient is discharged, so is their episode.
            alerts, tokens = self.sessions.discharge(bed_id, REASON_PATIENT_CHANGE)
            result.alerts.extend(alerts)
            result.release.extend(tokens)
        push = self.windower.push(chunk, arrival_ns)
        if push.dropped:
            result.dropped[push.dropped] = result.dropped.get(push.dropped, 0) + 1
            result.release.append(token)
            return push.windows
        now = self.clock()
        session = self.sessions.open(bed_id)
        session.dirty = True
        if chunk.end_of_stream:
            session.ending_ns = now  # discharged (technical episodes end at this time) after scoring
        else:
            self.technical.on_chunk(bed_id, chunk.patient_id, now, data_ns=chunk.end_ns)
        if push.reset or push.discharged:
            # The old buffer is gone: its chunks can never contribute to a window again.
            result.release.extend(t for _, t in session.pending)
            session.pending.clear()
        if push.discharged:
            result.release.append(token)
        else:
            end = self.windower.end_index(bed_id)
            session.pending.append((int(end if end is not None else 0), token))
        return push.windows

    def tick(self) -> list[Alert]:
        """Technical-alarm events due now (the worker also calls this from a 1 s timer: no data).

        Also the one idle timer (:meth:`BedSessions.expire`): beds silent past ``idle_discharge_s``
        (possibly with no chunk arriving at all) are discharged, their technical episodes and MI
        episode end; their held chunks are released by the next :meth:`process`.
        """
        now = self.clock()
        mi_ends = self.sessions.expire(now)
        return self.technical.tick(now) + mi_ends

    async def _restore(self, bed_ids: list[str]) -> None:
        """Load the persisted record of beds this worker has no session for yet.

        Done before their chunks are ingested, so a restarted worker (or the new owner after a
        rebalance) continues episodes with the same ids.
        """
        fresh = sorted(set(b for b in bed_ids if b not in self.sessions))
        if not fresh:
            return
        for bed_id in fresh:
            self.sessions.open(bed_id)  # looked up once: not again while the session lives
        await self.st.restore(fresh)  # issue #19
        if self.policy_store is not None:
            self.sessions.restore(await self.policy_store.load(fresh))

    async def save_state(self) -> bool:
        """Persist the records of beds that changed (after the alerts are produced)."""
        await self.st.save()  # issue #19: ST baseline/episode state and the dashboard's ST view
        records = self.sessions.take_records()
        if self.policy_store is None or not records:
            return True
        return await self.policy_store.save(records)

    async def _score_batches(self, batches: list[list[EcgWindow]], result: ProcessResult) -> None:
        """Score micro-batches in order, two stages overlapped.

        Batch k+1 is converted (model rate, 12 leads, quality flags) and its labs are read on the
        event loop while the model thread scores batch k; conversion holds the GIL, the backend
        mostly does not, so the two use both cores. Results are applied strictly in batch order.
        """
        loop = asyncio.get_running_loop()
        pending: tuple[list[EcgWindow], list[PatientLabs], Any, Predictor] | None = None
        try:
            for batch in batches:
                # On the event loop: in the model thread its many short numpy calls wait on the GIL
                # behind the Kafka client thread (measured slower).
                convert_windows(batch, self.cfg)
                self.st.start(batch)  # issue #19: ST measured in its own thread while the model scores
                if self.labcache is not None:
                    labs = await self.labcache.read_batch([(w.patient_id, w.end_ns) for w in batch])
                else:
                    labs = [empty_labs() for _ in batch]
                used = self.predictor
                future = loop.run_in_executor(self.executor, self._score, batch, labs, used)
                previous, pending = pending, (batch, labs, future, used)
                if previous is not None:
                    await self._finish_batch(*previous, result)
            if pending is not None:
                last, pending = pending, None
                await self._finish_batch(*last, result)
        finally:
            if pending is not None:
                # This call failed before the queued batch was applied (the worker stops, nothing of
                # it is acknowledged); retrieve its outcome so it is not reported as never retrieved.
                pending[2].add_done_callback(lambda f: None if f.cancelled() else f.exception())

    async def _finish_batch(self, batch: list[EcgWindow], labs: list[PatientLabs], future: Any, used: Predictor,
                            result: ProcessResult) -> None:
        loop = asyncio.get_running_loop()
        try:
            probs, lead_w, infer_s = await future
        except Exception as exc:
            # used is not self.predictor: an earlier batch of this call already switched to the
            # fallback, so this one is simply scored again with it.
            if used is self.predictor:
                if self._fallback is None or self.on_fallback:
                    # The caller stops the worker (nothing acked); the technical alarm goes out first.
                    self.technical.on_backend_error(exc, False, t_ns=self.clock())
                    raise
                await loop.run_in_executor(self.executor, self._switch_to_fallback, exc, "on a batch")
                self.technical.on_backend_error(exc, self.predictor.name, t_ns=self.clock())
            probs, lead_w, infer_s = await loop.run_in_executor(self.executor, self._score, batch, labs, self.predictor)
        else:
            if not self.on_fallback:
                self.technical.on_backend_ok(self.clock())
        if self.metrics is not None:
            self.metrics.observe_batch(len(batch), infer_s)
        result.alerts.extend(await self.st.finish(batch))  # issue #19: w.st set, st_change alerts
        for i, w in enumerate(batch):
            session = self.sessions.open(w.bed_id)
            session.last_window = w
            session.dirty = True
            if session.ending_ns is None:  # an ended stream's last windows raise no technical alarm
                self.technical.on_window(w.bed_id, w.patient_id, w.end_ns, w.flags, window_seq=w.seq)
            for ev in self.policy.update(w.bed_id, w.patient_id, float(probs[i]), w.seq, w.end_ns):
                alert = self._alert(ev, w, float(probs[i]), lead_w[i], labs[i])
                result.alerts.append(alert)
                if ev.phase == "start":
                    result.snapshots.append((ev.alert_id, w))
            result.scored.append(Scored(w, float(probs[i])))
        self.windows_scored += len(batch)

    def _switch_to_fallback(self, exc: Exception, when: str) -> None:
        """Build the fallback backend and score with it from now on (runs in the model thread)."""
        log.error("backend %s failed %s (%s: %s); switching to the fallback backend", self.predictor.name, when,
                  type(exc).__name__, str(exc)[:200])
        self.predictor = self._fallback()  # type: ignore[misc]  # callers check it is set
        self.on_fallback = True

    def _score(self, batch: list[EcgWindow], labs: list[PatientLabs],
               predictor: Predictor) -> tuple[np.ndarray, np.ndarray, float]:
        """The model call: (probabilities, lead weights, seconds) of a converted batch (runs in the model thread)."""
        t0 = time.perf_counter()
        x = np.stack([w.signal for w in batch])  # (B, 12, T)
        lab_v = np.stack([p.values for p in labs]).astype(np.float32)  # (B, D_lab)
        lab_m = np.stack([p.mask for p in labs]).astype(np.float32)
        inputs = model_inputs(x, self.cfg, lab_v, lab_m)
        pred = predictor.predict(inputs.ecg, inputs.image, inputs.labs, inputs.lab_mask)
        probs = np.asarray(pred.probs, dtype=np.float64).reshape(-1)
        lead_w = np.asarray(pred.lead_weights, dtype=np.float64).reshape(len(batch), -1)
        return probs, lead_w, time.perf_counter() - t0

    async def store_snapshots(self, snapshots: list[tuple[str, EcgWindow]]) -> int:
        """Draw each episode-start window on ECG paper and store it in Redis; returns how many were stored.

        Called by the worker *after* the alerts are produced: a snapshot is for people looking
        at the dashboard, it must not delay the alert itself.
        """
        if self.snapshot is None or self.labcache is None:
            return 0
        stored = 0
        for alert_id, w in snapshots:
            stored += await self._store_snapshot(alert_id, w)
        return stored

    def warmup(self) -> None:
        """Run the pipeline and the model once on a blank window (first-batch latency, lazy imports)."""
        from stream.worker.store import empty_labs as _empty

        blank = EcgWindow("warmup", "warmup", 0, 0, 0, np.zeros((len(LEADS), self.cfg.T), np.float32))
        try:
            self._score([blank], [_empty()], self.predictor)
        except Exception as exc:
            # A backend that cannot even score a blank window (GPU gone, bad plan) is the same fault
            # as one failing at run time: use the fallback from the start and say so on every bed.
            if self._fallback is None or self.on_fallback:
                raise
            self._switch_to_fallback(exc, "at warm-up")
            self.technical.on_backend_error(exc, self.predictor.name, t_ns=self.clock())
            self._score([blank], [_empty()], self.predictor)
        if self.snapshot is not None:
            try:
                self.snapshot(blank)
            except Exception as exc:
                log.warning("ECG-paper snapshot renderer failed on warm-up (%s): snapshots disabled", exc)
                self.snapshot = None

    async def _store_snapshot(self, alert_id: str, w: EcgWindow) -> bool:
        try:
            loop = asyncio.get_running_loop()
            png = await loop.run_in_executor(self.snapshot_executor, self.snapshot, w)
            await self.labcache.store_snapshot(alert_id, png)  # type: ignore[union-attr]
            return True
        except Exception as exc:  # a snapshot is a convenience: never lose the alert over it
            log.warning("could not store snapshot for alert %s: %s", alert_id, exc)
            return False

    # -- alerts --------------------------------------------------------------------------------
    def _alert(self, ev: PolicyEvent, w: EcgWindow, p: float | None, lead_w: np.ndarray | None, labs: PatientLabs) -> Alert:
        top: list[str] = []
        if lead_w is not None and lead_w.size == len(LEADS) and np.isfinite(lead_w).all():
            top = [LEADS[j] for j in np.argsort(-lead_w, kind="stable")[:3]]
        pc = self.policy.config
        return Alert(
            alert_id=ev.alert_id, alert_type="mi", kind=KIND_MI, phase=ev.phase, bed_id=w.bed_id, patient_id=w.patient_id,
            probability=None if p is None else round(float(p), 4), threshold_start=pc.threshold_start,
            threshold_end=pc.threshold_end, window_start_ns=w.start_ns, window_end_ns=w.end_ns, window_seq=ev.window_seq,
            model_name=self.info.name, model_version=self.info.version, checkpoint_sha=self.info.checkpoint_sha,
            level=ev.level, labs=list(labs.used), labs_available=labs.available, quality_flags=list(w.flags),
            top_leads=top, advisories=list(labs.advisories), emitted_ns=self.clock(), st=w.st,
        )

    def _end_alerts(self, bed_id: str, events: list[PolicyEvent], last: EcgWindow | None) -> list[Alert]:
        """The alerts of a bed's discharge (:meth:`BedSession.discharge`): its MI ``end``, on the last scored
        window, and the ``end`` of its open ``st_change`` episode (its ST state is dropped here too, #19)."""
        # Without a window (discharged right after a restart, before any was scored) there is
        # nothing to put on the alert: see the limits in docs/STREAMING.md.
        return [self._alert(ev, last, None, None, empty_labs()) for ev in events if last is not None] + self.st.end(bed_id, last)

    # -- housekeeping --------------------------------------------------------------------------
    def forget_beds(self, keep: Callable[[str], bool]) -> list[Any]:
        """Discharge beds for which ``keep(bed_id)`` is False as revoked (partitions moved away).

        Nothing ends (the new owner continues their episodes from the persisted record). Returns
        their pending tokens: they must NOT be acked (the new owner re-reads them), the caller
        simply drops them.
        """
        dropped: list[Any] = []
        for bed_id in self.sessions.bed_ids():
            if not keep(bed_id):
                dropped.extend(self.sessions.discharge(bed_id, REASON_REVOKED)[1])
                self.st.forget(bed_id)  # issue #19: nothing ends, the new owner restores it from Redis
        return dropped

    def close(self) -> None:
        self.executor.shutdown(wait=True)
        self.snapshot_executor.shutdown(wait=True)
        self.st.close()  # issue #19

