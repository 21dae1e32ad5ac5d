"""Prometheus metrics of the stream worker and its ``/metrics`` + ``/healthz`` HTTP endpoint.

Metric names follow the Prometheus naming conventions (base units: seconds; ``_total`` for
counters). Each worker owns a private ``CollectorRegistry`` so several workers (or tests) in one
process never collide.

=================================== ========= ===============================================
name                                type      meaning
=================================== ========= ===============================================
mirage_chunks_total{result}         counter   chunks consumed (ok, duplicate, out_of_order, ...)
mirage_windows_total                counter   windows scored (rate = windows/s)
mirage_batch_size                   histogram windows per model batch
mirage_inference_seconds            histogram pipeline + model time per batch
mirage_e2e_latency_seconds          histogram chunk completing a window published -> outputs produced
mirage_alerts_total{type,phase}     counter   alert events produced
mirage_deadletters_total{reason}    counter   messages sent to the dead-letter topic
mirage_redis_errors_total           counter   lab-cache / snapshot failures (scored without labs)
mirage_beds                         gauge     beds with an open window buffer
mirage_buffered_samples             gauge     samples held in window buffers (memory)
mirage_last_batch_timestamp_seconds gauge     wall time of the last scored batch
=================================== ========= ===============================================

``/healthz`` answers 200 with a JSON body while the worker is consuming and its last progress is
recent, 503 otherwise (for Kubernetes liveness/readiness probes).
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any, Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

log = logging.getLogger(__name__)

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class StreamMetrics:
    """All worker metrics in one private registry."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.chunks = Counter("mirage_chunks", "ECG chunks consumed, by result", ["result"], registry=r)
        self.windows = Counter("mirage_windows", "windows scored by the model", registry=r)
        self.batch_size = Histogram("mirage_batch_size", "windows per model batch", buckets=_BATCH_BUCKETS, registry=r)
        self.inference = Histogram("mirage_inference_seconds", "pipeline + model seconds per batch", buckets=_LATENCY_BUCKETS, registry=r)
        self.e2e = Histogram("mirage_e2e_latency_seconds", "last chunk of a window published -> outputs produced",
                             buckets=_LATENCY_BUCKETS, registry=r)
        self.alerts = Counter("mirage_alerts", "alert events produced", ["type", "phase"], registry=r)
        self.deadletters = Counter("mirage_deadletters", "messages sent to the dead-letter topic", ["reason"], registry=r)
        self.redis_errors = Counter("mirage_redis_errors", "lab cache or snapshot failures", registry=r)
        self.beds = Gauge("mirage_beds", "beds with an open window buffer", registry=r)
        self.buffered = Gauge("mirage_buffered_samples", "samples held in window buffers", registry=r)
        self.last_batch = Gauge("mirage_last_batch_timestamp_seconds", "wall time of the last scored batch", registry=r)
        self.started = time.time()
        self.last_progress = time.time()

    def observe_batch(self, size: int, seconds: float) -> None:
        self.batch_size.observe(size)
        self.inference.observe(seconds)
        self.windows.inc(size)
        self.last_batch.set(time.time())

    def progress(self) -> None:
        self.last_progress = time.time()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class MetricsServer:
    """aiohttp server for ``/metrics`` and ``/healthz`` (started only when a port is configured).

    Args:
        metrics: the worker's metrics.
        healthy: ``() -> (ok, details)``; ``/healthz`` returns 200 when ok else 503.
        host: bind address (loopback by default: expose through the pod, not the world).
        port: TCP port (0 = pick one; see :attr:`port` after start).
    """

    def __init__(self, metrics: StreamMetrics, healthy: Callable[[], tuple[bool, dict[str, Any]]], host: str = "127.0.0.1", port: int = 0) -> None:
        self.metrics = metrics
        self.healthy = healthy
        self.host = host
        self.port = port
        self._runner: Any = None

    async def start(self) -> None:
        from aiohttp import web

        async def metrics_handler(_req: web.Request) -> web.Response:
            return web.Response(body=self.metrics.exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST})

        async def health_handler(_req: web.Request) -> web.Response:
            ok, details = self.healthy()
            return web.Response(status=200 if ok else 503, text=json.dumps({"ok": ok, **details}), content_type="application/json")

        app = web.Application()
        app.router.add_get("/metrics", metrics_handler)
        app.router.add_get("/healthz", health_handler)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        sockets = site._server.sockets if site._server else []  # type: ignore[union-attr]
        if sockets:
            self.port = int(sockets[0].getsockname()[1])
        log.info("metrics on http://%s:%d/metrics", self.host, self.port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
