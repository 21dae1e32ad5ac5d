"""The worker's ST stage (issue #19): measure every scored window's ST off the event loop, track it per bed.

:meth:`StStage.start` hands a converted micro-batch (model rate, 12 leads) to a one-thread
executor of its own, where :func:`engine.st.measure_st` measures each window while the model
thread scores the same batch; :meth:`StStage.finish` (on the event loop, in batch order, before
the MI policy sees the batch) attaches each window's ST vector (``EcgWindow.st``) and feeds
:class:`stream.core.st.StTracker`, returning the ``st_change`` alerts. A window that cannot be
measured, or a measurement that fails, never stops MI monitoring: it simply has no ST.

Redis (written after the alerts are produced, like the policy state)::

    mirage:st:{bed_id}                 STRING JSON  StTracker.view(): current ST, reference, last-hour
                                       trend (the dashboard reads it; TTL 1 h, written at most every
                                       ``publish_s`` of window time per bed)
    mirage:st-state:{group}:{bed_id}   STRING JSON  baseline + st_change policy state (TTL 24 h), so a
                                       restarted worker keeps the bed's reference and open episode
"""

from __future__ import annotations

import asyncio
import json
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Sequence

import numpy as np

from engine.st import StMeasurement, measure_st
from stream.core.schema import Alert
from stream.core.st import ST_VIEW_KEY, StTracker, st_change_alert, st_configs
from stream.core.windower import EcgWindow
from stream.settings import Settings

log = logging.getLogger(__name__)

VIEW_KEY = ST_VIEW_KEY
STATE_KEY = "mirage:st-state:{group}:{bed_id}"
VIEW_TTL_S = 3600
STATE_TTL_S = 24 * 3600


def measure_batch(signals: Sequence[np.ndarray | None], fs: float) -> list[StMeasurement | None]:
    """ST of each (12, T) window at ``fs`` (None where a window has no signal or cannot be measured)."""
    out: list[StMeasurement | None] = []
    for x in signals:
        try:
            out.append(None if x is None else measure_st(x, fs))
        except Exception as exc:  # noqa: BLE001  # ST is an addition: a failure must never stop MI scoring
            log.warning("ST measurement failed on a window (%s): no ST for it", type(exc).__name__)
            out.append(None)
    return out


class StStage:
    """Per-window ST measurement and per-bed ST tracking for :class:`stream.worker.processor.StreamProcessor`.

    Args:
        settings: ``st_*`` thresholds, ``st_enabled``, ``consumer_group``.
        fs: the model rate the converted windows are at.
        info: model name/version/checkpoint sha for alerts (``ModelInfo``).
        clock: ``() -> ns`` (alert emission time).
        redis: an asyncio Redis client (the lab cache's), or None to keep nothing in Redis.
        publish_s: a bed's dashboard view is written at most this often (window time).
    """

    def __init__(self, settings: Settings, fs: float, info: Any, clock: Callable[[], int], redis: Any | None = None,
                 publish_s: float = 10.0) -> None:
        self.enabled = bool(settings.st_enabled)
        self.fs = float(fs)
        self.info = info
        self.clock = clock
        self.redis = redis
        self.group = settings.consumer_group
        self.change, baseline = st_configs(settings)
        self.tracker = StTracker(self.change, baseline)
        self.publish_ns = int(publish_s * 1e9)
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mirage-st")
        self._futures: dict[int, asyncio.Future[list[StMeasurement | None]]] = {}
        self._dirty: set[str] = set()
        self._published: dict[str, int] = {}
        self.measured = 0

    def start(self, batch: list[EcgWindow]) -> None:
        """Measure a converted batch in the ST thread (call right after conversion)."""
        if self.enabled and batch:
            loop = asyncio.get_running_loop()
            self._futures[id(batch)] = loop.run_in_executor(self.executor, measure_batch, [w.signal for w in batch], self.fs)

    async def finish(self, batch: list[EcgWindow]) -> list[Alert]:
        """Attach each window's ST vector and return the batch's ``st_change`` alerts (batch order)."""
        fut = self._futures.pop(id(batch), None)
        if fut is None:
            return []
        measurements = await fut
        alerts: list[Alert] = []
        for w, m in zip(batch, measurements):
            up = self.tracker.update(w.bed_id, w.patient_id, w.seq, w.end_ns, m)
            w.st = up.vector or None
            self.measured += m is not None
            self._dirty.add(w.bed_id)
            alerts += [self._alert(ev, w.bed_id, w.patient_id, w.start_ns, up.vector, list(w.flags)) for ev in up.events]
        return alerts

    def end(self, bed_id: str, last: EcgWindow | None) -> list[Alert]:
        """The bed was discharged: the ``end`` of its open ``st_change`` episode (on its last window), state dropped."""
        if not self.enabled:
            return []
        events = self.tracker.end(bed_id, last.seq if last else -1, last.end_ns if last else self.clock())
        self._dirty.add(bed_id)
        if last is None:
            return []
        return [self._alert(ev, bed_id, last.patient_id, last.start_ns, last.st or {}, []) for ev in events]

    def forget(self, bed_id: str) -> None:
        self.tracker.forget(bed_id)
        self._published.pop(bed_id, None)

    def _alert(self, ev: Any, bed_id: str, patient_id: str, start_ns: int, vector: dict[str, Any], flags: list[str]) -> Alert:
        return st_change_alert(ev, bed_id=bed_id, patient_id=patient_id, window_start_ns=start_ns, vector=vector,
                               config=self.change, model_name=self.info.name, model_version=self.info.version,
                               checkpoint_sha=self.info.checkpoint_sha, emitted_ns=self.clock(), quality_flags=flags)

    async def restore(self, bed_ids: list[str]) -> None:
        """Load the saved baseline and episode state of beds this worker has not seen yet."""
        if not self.enabled or self.redis is None or not bed_ids:
            return
        try:
            raw = await self.redis.mget([STATE_KEY.format(group=self.group, bed_id=b) for b in bed_ids])
        except Exception as exc:  # noqa: BLE001  # Redis down: learn afresh rather than stop
            log.warning("could not load saved ST state (%s)", type(exc).__name__)
            return
        for bed_id, data in zip(bed_ids, raw):
            if data:
                try:
                    self.tracker.import_state(bed_id, json.loads(data))
                except Exception as exc:  # noqa: BLE001
                    log.warning("ignoring saved ST state of a bed: %s", exc)

    async def save(self) -> None:
        """Write the state of changed beds, and their dashboard view when due, in one Redis round trip."""
        if not self.enabled or self.redis is None or not self._dirty:
            self._dirty.clear()
            return
        pipe = self.redis.pipeline(transaction=False)
        for bed_id in sorted(self._dirty):
            state = self.tracker.export_state(bed_id)
            key = STATE_KEY.format(group=self.group, bed_id=bed_id)
            if state is None:
                pipe.delete(key)
            else:
                pipe.set(key, json.dumps(state, separators=(",", ":")), ex=STATE_TTL_S)
            view = self.tracker.view(bed_id)
            if view is not None and view["updated_ns"] - self._published.get(bed_id, -(2**62)) >= self.publish_ns:
                pipe.set(VIEW_KEY.format(bed_id=bed_id), json.dumps(view, separators=(",", ":")), ex=VIEW_TTL_S)
                self._published[bed_id] = view["updated_ns"]
        self._dirty.clear()
        try:
            await pipe.execute()
        except Exception as exc:  # noqa: BLE001  # the dashboard view is a convenience; alerts are already out
            log.warning("could not save ST state (%s)", type(exc).__name__)

    def close(self) -> None:
        self.executor.shutdown(wait=True)
