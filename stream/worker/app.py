"""The stream worker: a faust-streaming app with two thin agents around :mod:`stream.worker.processor`.

* **chunks agent** (``Settings.topic_chunks``, key = bed): takes up to a few hundred events or
  ``max_wait_ms`` worth with ``stream.noack_take`` (faust acks nothing by itself), decodes each
  chunk (undecodable ones go to the dead-letter topic and are acked), hands the batch to
  :meth:`StreamProcessor.process`, sends the resulting alerts with an aiokafka producer
  (``acks=all``) and **awaits** the broker's acknowledgement, and only then acks the events the
  processor released. faust commits, per partition, the highest *contiguous* acked offset, so the
  committed offset never passes a chunk whose windows have not produced their outputs:
  at-least-once (docs/STREAMING.md has the full argument).
* **labs agent** (``Settings.topic_labs``, key = patient): validates each
  :class:`stream.core.schema.LabResult` and writes it to the Redis lab cache (newer wins),
  retrying through a Redis outage with capped backoff, and acks it only once Redis holds it: no
  lab is lost (:meth:`stream.worker.store.LabCache.write_retrying`).

The model runs in a one-thread executor inside the processor, so the event loop keeps
heart-beating while a batch is scored. Scale-out = start more workers with the same
``consumer_group``: Kafka splits the partitions (beds) between them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections import deque
from pathlib import Path
from typing import Any, Callable

from engine.prediction import Predictor
from stream.core.schema import LabResult, decode_chunk
from stream.errors import WindowError, WireError
from stream.kafka import faust_app
from stream.kafka import producer as make_producer
from stream.settings import Settings
from stream.worker.deadletter import DeadLetter, DeadLetterSink
from stream.worker.metrics import MetricsServer, StreamMetrics
from stream.worker.processor import ModelInfo, ProcessResult, StreamProcessor
from stream.worker.store import PERMANENT_ERRORS, LabCache

log = logging.getLogger(__name__)

MAX_LATENCY_SAMPLES = 200_000
# Chunks stamped further than this from the worker's clock are dead letters (reason bad_timestamp):
# a gateway with an unset clock (1970) or a corrupt stamp would otherwise be windowed and alerted on
# with nonsense times, and lab staleness judged against them. Generous, so accelerated replays
# (virtual clock running ahead) and catching up on a retained backlog stay well inside it.
MAX_CLOCK_SKEW_S = 30 * 24 * 3600.0


def check_timestamp(start_ns: int, now_ns: int, max_skew_s: float = MAX_CLOCK_SKEW_S) -> None:
    """Raise ``WireError("bad_timestamp")`` when ``start_ns`` is implausibly far from ``now_ns``."""
    skew_s = (int(start_ns) - int(now_ns)) / 1e9
    if abs(skew_s) > max_skew_s:
        raise WireError("bad_timestamp", f"start_ns {start_ns} is {skew_s / 86400:+.0f} days from this worker's clock "
                                         f"(limit {max_skew_s / 86400:.0f} days)")


def redis_client(settings: Settings) -> Any:
    """A ``redis.asyncio`` client from the settings, failing fast (the stream must not wait on labs)."""
    import redis.asyncio as aioredis
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    kw: dict[str, Any] = dict(socket_timeout=1.0, socket_connect_timeout=1.0, retry=Retry(NoBackoff(), 1))
    if settings.redis_password:
        kw["password"] = settings.redis_password
    if settings.redis_ssl and settings.redis_url.startswith("redis://"):
        return aioredis.from_url("rediss://" + settings.redis_url[len("redis://"):], **kw)
    return aioredis.from_url(settings.redis_url, **kw)


def paper_snapshot(cfg_fs: float) -> Any:
    """``(window) -> PNG`` drawing the window on ECG paper, or None if the renderer is missing."""
    try:
        from engine.render import render_paper_png
    except (ImportError, AttributeError) as exc:
        log.warning("ECG-paper snapshots disabled: %s", exc)
        return None

    def draw(window: Any) -> bytes:
        return render_paper_png(window.signal, cfg_fs, None, title=f"{window.bed_id} window {window.seq}")

    return draw


class StreamWorker:
    """Everything one worker process runs: faust app, processor, producer, Redis, metrics.

    Args:
        settings: the stream settings.
        predictor: the model behind the ``Predictor`` seam.
        info: model name/version/sha/thresholds for alerts and the policy.
        stats_path: if set, a JSON summary is rewritten there every second and at shutdown
            (used by ``mirage demo`` and tests: counts, latency samples, ready flag).
        fallback: builds the fallback backend when the primary fails at run time.
    """

    def __init__(self, settings: Settings, predictor: Predictor, info: ModelInfo, *, stats_path: str | Path | None = None,
                 fallback: Callable[[], Predictor] | None = None) -> None:
        self.settings = settings
        self.metrics = StreamMetrics()
        self.redis = redis_client(settings)
        self.labcache = LabCache(self.redis, settings.lab_staleness_s)
        self.processor = StreamProcessor(predictor, info, settings, labcache=self.labcache,
                                         snapshot=paper_snapshot(predictor.config.fs), metrics=self.metrics,
                                         fallback=fallback)
        self.stats_path = Path(stats_path) if stats_path else None
        self.producer: Any = None
        self.deadletters: DeadLetterSink | None = None
        self.metrics_server: MetricsServer | None = None
        self._start_lock = asyncio.Lock()
        self.assigned = False
        self.failed: BaseException | None = None
        self.partitions: list[str] = []  # chunk partitions this worker owns
        self.counts: dict[str, int] = {"chunks": 0, "labs": 0, "alerts": 0, "deadletters": 0, "windows": 0, "batches": 0}
        self.latencies_ms: list[float] = []
        self.consume_lag_ms: list[float] = []  # broker timestamp -> the agent has the chunk
        self.bed_partition: dict[str, Any] = {}
        self._background: set[asyncio.Future] = set()
        self.scored_seqs: dict[str, deque[int]] = {}  # last window seqs scored per bed (stats, tests)
        self.app = self._build_app()

    # -- resources -------------------------------------------------------------------------------
    async def _ensure_started(self) -> None:
        if self.producer is not None:
            return
        async with self._start_lock:
            if self.producer is not None:
                return
            prod = make_producer(self.settings)
            await prod.start()
            await asyncio.get_running_loop().run_in_executor(self.processor.executor, self.processor.warmup)
            self.deadletters = DeadLetterSink(prod, self.settings.topic_deadletter, self.metrics)
            if self.settings.metrics_port:
                self.metrics_server = MetricsServer(self.metrics, self.health, self.settings.metrics_host, self.settings.metrics_port)
                await self.metrics_server.start()
            self.producer = prod

    async def _stop_resources(self) -> None:
        if self._background:
            await asyncio.wait(list(self._background), timeout=10)
        self.write_stats(final=True)
        if self.metrics_server is not None:
            await self.metrics_server.stop()
        if self.producer is not None:
            await self.producer.stop()
            self.producer = None
        try:
            await self.redis.aclose()
        except Exception as exc:
            log.debug("closing redis: %s", exc)
        self.processor.close()

    def health(self) -> tuple[bool, dict[str, Any]]:
        age = time.time() - self.metrics.last_progress
        ok = self.assigned and self.producer is not None
        return ok, {"assigned": self.assigned, "last_progress_s": round(age, 1), **self.counts}

    # -- faust wiring ----------------------------------------------------------------------------
    def _build_app(self) -> Any:
        s = self.settings
        app = faust_app(s)
        app.stop_hooks.append(self._stop_resources)
        chunks_topic = app.topic(s.topic_chunks, value_type=bytes, key_type=bytes, value_serializer="raw", key_serializer="raw")
        labs_topic = app.topic(s.topic_labs, value_type=bytes, key_type=bytes, value_serializer="raw", key_serializer="raw")
        take_n = max(64, 4 * s.max_batch)
        within = max(0.001, s.max_wait_ms / 1000.0)

        async def chunks_agent(stream: Any) -> None:
            async for events in stream.noack_take(take_n, within=within):
                await self._ensure_started()
                try:
                    await self.handle_chunk_events(events)
                except Exception as exc:
                    # Unacked chunks would stall the committed offset while later ones are scored;
                    # stop instead: the supervisor restarts the worker, which re-reads from the
                    # committed offset (at-least-once holds).
                    log.exception("processing failed; stopping the worker so it restarts from the committed offset")
                    self.failed = exc
                    await self._send_alerts(self.processor.tick(), best_effort=True)  # backend_failed
                    await self.app.crash(exc)
                    return

        async def labs_agent(stream: Any) -> None:
            async for events in stream.noack_take(take_n, within=within):
                await self._ensure_started()
                await self.handle_lab_events(events)

        @app.task
        async def start_resources() -> None:
            # Producer, model warm-up and /metrics before the first chunk, not on it.
            await self._ensure_started()
            self.write_stats()

        app.agent(chunks_topic, name="mirage-chunks")(chunks_agent)
        app.agent(labs_topic, name="mirage-labs")(labs_agent)

        @app.on_partitions_assigned.connect
        async def on_assigned(sender: Any, assigned: Any, **_kw: Any) -> None:
            self.assigned = True
            self.partitions = sorted(f"{tp.topic}:{tp.partition}" for tp in assigned if tp.topic == s.topic_chunks)
            self.write_stats()

        @app.on_partitions_revoked.connect
        async def on_revoked(sender: Any, revoked: Any, **_kw: Any) -> None:
            gone = set(revoked)
            dropped = self.processor.forget_beds(lambda bed: self.bed_partition.get(bed) not in gone)
            if dropped:
                log.info("partitions revoked: dropped state of beds holding %d unacked chunks", len(dropped))

        @app.timer(1.0)
        async def housekeeping() -> None:
            if self.producer is not None:
                # Timer-driven technical alarms (a bed that went silent produces no chunk to react to).
                await self._send_alerts(self.processor.tick(), best_effort=True)
            self.metrics.beds.set(len(self.processor.windower.beds))
            self.metrics.buffered.set(self.processor.windower.buffered_samples())
            self.write_stats()

        return app

    # -- the two agents' bodies (also called directly by tests) ----------------------------------
    async def handle_chunk_events(self, events: list[Any]) -> ProcessResult:
        """Decode, process, produce outputs, then ack what is safe to ack."""
        s = self.settings
        items: list[tuple[Any, Any, int | None]] = []
        now_ns = time.time_ns()
        for ev in events:
            msg = ev.message
            try:
                chunk = decode_chunk(ev.value, max_bytes=s.max_message_bytes)
                self.processor.windower.window_samples(chunk.fs)  # the window must be whole samples at this rate
                check_timestamp(chunk.start_ns, now_ns)
            except (WireError, WindowError) as exc:
                reason, detail = (exc.reason, exc.detail) if isinstance(exc, WireError) else ("unsupported_rate", str(exc))
                await self._dead_letter(ev, reason, detail)
                ev.ack()
                self.metrics.chunks.labels(result="dead_letter").inc()
                continue
            self.bed_partition[chunk.bed_id] = msg.tp
            ts = getattr(msg, "timestamp", None)
            ts_ns = int(ts * 1e9) if ts else None
            if ts_ns and len(self.consume_lag_ms) < MAX_LATENCY_SAMPLES:
                self.consume_lag_ms.append((now_ns - ts_ns) / 1e6)
            items.append((chunk, ev, ts_ns))
        self.counts["chunks"] += len(events)
        result = await self.processor.process(items)
        for reason, n in result.dropped.items():
            self.metrics.chunks.labels(result=reason).inc(n)
        self.metrics.chunks.labels(result="ok").inc(len(items) - sum(result.dropped.values()))
        await self._send_alerts(result.alerts)
        done_ns = time.time_ns()  # outputs of every window in this batch are produced
        # After the alerts (a crash in between re-emits the same ids), before the acks.
        if not await self.processor.save_state():
            self.metrics.redis_errors.inc()
        for sc in result.scored:
            seqs = self.scored_seqs.setdefault(sc.window.bed_id, deque(maxlen=100))
            seqs.append(sc.window.seq)
            lat = sc.latency_s(done_ns)
            self.metrics.e2e.observe(lat)
            if len(self.latencies_ms) < MAX_LATENCY_SAMPLES:
                self.latencies_ms.append(lat * 1000.0)
        if result.snapshots:
            # Drawn in the background: people look at snapshots, the next batch must not wait for them.
            task = asyncio.ensure_future(self._snapshots(result.snapshots))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
        if result.scored:
            self.counts["windows"] += len(result.scored)
            self.counts["batches"] += 1
        for token in result.release:
            token.ack()
        self.metrics.progress()
        return result

    async def _send_alerts(self, alerts: list[Any], best_effort: bool = False) -> None:
        """Send alerts (key = bed) and wait until the broker acknowledged every one (acks=all)."""
        if not alerts or self.producer is None:
            return
        try:
            futures = [await self.producer.send(self.settings.topic_alerts, value=a.to_bytes(), key=a.bed_id.encode("utf-8"))
                       for a in alerts]
            await asyncio.gather(*futures)
        except Exception:
            if not best_effort:
                raise
            log.exception("could not send %d alerts", len(alerts))
            return
        for a in alerts:
            self.metrics.alerts.labels(type=a.alert_type, phase=a.phase).inc()
            log.info("alert %s %s %s level=%d p=%s", a.alert_type, a.phase, a.alert_id, a.level, a.probability)
        self.counts["alerts"] += len(alerts)

    async def _snapshots(self, snapshots: list[Any]) -> None:
        if await self.processor.store_snapshots(snapshots) < len(snapshots):
            self.metrics.redis_errors.inc()

    async def handle_lab_events(self, events: list[Any]) -> None:
        for ev in events:
            try:
                lab = LabResult.from_bytes(ev.value)
            except WireError as exc:
                await self._dead_letter(ev, exc.reason, exc.detail)
                ev.ack()
                continue
            try:
                tries = await self.labcache.write_retrying(lab, on_error=self._lab_write_failed)
            except PERMANENT_ERRORS as exc:  # the lab itself cannot be stored: retrying cannot help
                await self._dead_letter(ev, "bad_lab", f"{type(exc).__name__}: {str(exc)[:200]}")
                ev.ack()
                continue
            if tries > 1:
                log.info("lab result stored in Redis after %d tries", tries)
            self.counts["labs"] += 1
            ev.ack()  # only now may its offset be committed: Redis holds it
        self.metrics.progress()

    def _lab_write_failed(self, exc: BaseException, tries: int) -> None:
        self.metrics.redis_errors.inc()
        if tries == 1 or tries % 20 == 0:  # not a line per try through a long outage
            log.warning("could not write a lab result to Redis (%s), try %d; retrying, not acknowledged",
                        type(exc).__name__, tries)

    async def _dead_letter(self, ev: Any, reason: str, detail: str) -> None:
        msg = ev.message
        value = ev.value if isinstance(ev.value, (bytes, bytearray)) else (msg.value or b"")
        letter = DeadLetter(key=msg.key if isinstance(msg.key, (bytes, type(None))) else None, value=bytes(value),
                            reason=reason, detail=detail, source_topic=msg.topic, source_partition=msg.partition,
                            source_offset=msg.offset)
        if self.deadletters is None:  # _ensure_started runs before any event is handled
            raise RuntimeError("dead-letter sink used before the worker started")
        await self.deadletters.send(letter)
        self.counts["deadletters"] += 1

    # -- stats for the demo ----------------------------------------------------------------------
    def write_stats(self, final: bool = False) -> None:
        if self.stats_path is None:
            return
        lat = sorted(self.latencies_ms)
        lag = sorted(self.consume_lag_ms)

        def q(p: float, xs: list[float] = lat) -> float | None:
            return round(xs[min(len(xs) - 1, int(p * len(xs)))], 2) if xs else None

        data = {"ready": self.assigned and self.producer is not None, "final": final, "pid": os.getpid(), "partitions": self.partitions, **self.counts,
                "p50_latency_ms": q(0.50), "p99_latency_ms": q(0.99), "latency_samples": len(lat),
                "p50_consume_lag_ms": q(0.5, lag), "p99_consume_lag_ms": q(0.99, lag),
                "windower": dict(self.processor.windower.counts),
                "scored_seqs": {b: list(v) for b, v in self.scored_seqs.items()}, "redis_errors": self.labcache.errors}
        tmp = self.stats_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data))
        tmp.replace(self.stats_path)

    def run(self) -> int:
        """Run the worker until SIGINT/SIGTERM; returns the exit code."""
        import faust

        worker = faust.Worker(self.app, loglevel=logging.getLogger().getEffectiveLevel() or logging.INFO,
                              redirect_stdouts=False, override_logging=False)
        try:
            worker.execute_from_commandline()
        except SystemExit as exc:
            code = int(exc.code or 0)
        else:
            code = 0
        return 1 if self.failed is not None else code
