"""Per-bed ST monitoring in the stream (issue #19): each window's ST vector, the bed's baseline, ``st_change`` episodes.

A pure core (no Kafka, no Redis, window times as the clock) around :mod:`engine.st`:
:class:`engine.st.StBaseline` learns each bed's reference over the first clean minutes after
admission (reset on a new patient), :class:`engine.st.StChangePolicy` decides ``st_change``
episodes (ST moved >= ``threshold_uv`` from the reference in two contiguous leads for
``sustain_s``, hysteresis on the way out; AHA practice standards, Drew et al., Circulation 110,
2004; Sandau et al., Circulation 136, 2017), and a per-bed trend keeps the last hour in 30 s
buckets for the dashboard (IEC 60601-2-27 asks an ST monitor to show the trend and the
reference it compares against).

:func:`st_vector` is the compact, JSON-able form that travels with every window and alert:
``j60_uv`` (12 values in :data:`engine.config.LEADS` order, None where a lead cannot be measured),
``hr_bpm``, ``qrs_ms``, ``quality``, ``measurable`` and, once the bed has a reference,
``baseline_uv`` and ``delta_uv``. Episode ids are :func:`stream.core.schema.make_alert_id` of
(``st``, ``st_change``, bed, patient, first window end): the formula of :mod:`engine.st.alarm`.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from engine.config import LEADS
from engine.st import KIND_ST_CHANGE, StBaseline, StBaselineSettings, StChangeConfig, StChangeEvent, StChangePolicy, StMeasurement
from stream.core.schema import Alert

ALERT_TYPE_ST = "st"
ST_VIEW_KEY = "mirage:st:{bed_id}"  # Redis: StTracker.view() JSON, written by the worker, read by the dashboard
# What the dashboard trends, by territory (aVR stands alone and is not trended).
TREND_GROUPS: dict[str, tuple[str, ...]] = {"inferior": ("II", "III", "aVF"), "lateral": ("I", "aVL", "V5", "V6"),
                                            "anterior": ("V1", "V2", "V3", "V4")}
_N = len(LEADS)

__all__ = ["ALERT_TYPE_ST", "KIND_ST_CHANGE", "ST_VIEW_KEY", "TREND_GROUPS", "StTracker", "StUpdate", "largest_change", "st_change_alert",
           "st_configs", "st_vector"]


def _uv(values: np.ndarray) -> list[float | None]:
    return [round(float(v), 1) if np.isfinite(v) else None for v in values]


def st_vector(m: StMeasurement, baseline_uv: np.ndarray | None = None, delta_uv: np.ndarray | None = None) -> dict[str, Any]:
    """The compact ST vector of one window (JSON-able; NaN as None; uV rounded to 0.1).

    Args:
        m: the window's measurement (``engine.st.measure_st``).
        baseline_uv: (12,) the bed's reference, NaN where not learned; omitted when None.
        delta_uv: (12,) change from the reference, NaN where unknown; omitted when None.
    """
    j60 = np.where(m.lead_ok, m.st_j60_uv, np.nan)
    out: dict[str, Any] = {"j60_uv": _uv(j60), "hr_bpm": _uv(np.array([m.hr_bpm]))[0],
                           "qrs_ms": _uv(np.array([m.qrs_ms]))[0], "quality": list(m.quality), "measurable": bool(m.measurable)}
    if baseline_uv is not None:
        out["baseline_uv"] = _uv(np.asarray(baseline_uv, dtype=np.float64))
    if delta_uv is not None:
        out["delta_uv"] = _uv(np.asarray(delta_uv, dtype=np.float64))
    return out


def largest_change(st: dict[str, Any] | None, n: int = 3) -> list[dict[str, Any]]:
    """The ``n`` leads with the largest absolute ST change in an ST vector, largest first.

    Returns ``[{"lead": "V2", "delta_uv": 180.0}, ...]``; empty when the vector has no change yet.
    """
    delta = (st or {}).get("delta_uv") or []
    pairs = [(LEADS[i], float(d)) for i, d in enumerate(delta[:_N]) if isinstance(d, (int, float))]
    pairs.sort(key=lambda p: -abs(p[1]))
    return [{"lead": lead, "delta_uv": d} for lead, d in pairs[:n]]


def st_configs(settings: Any) -> tuple[StChangeConfig, StBaselineSettings]:
    """The alarm and baseline settings from :class:`stream.settings.Settings` (``st_*`` fields)."""
    change = StChangeConfig(threshold_uv=settings.st_threshold_uv, end_uv=min(settings.st_end_uv, settings.st_threshold_uv),
                            sustain_s=settings.st_sustain_s, end_s=settings.st_end_s,
                            escalate_uv=max(settings.st_escalate_uv, settings.st_threshold_uv))
    return change, StBaselineSettings(learn_s=settings.st_learn_s, min_windows=settings.st_min_windows)


@dataclass
class StUpdate:
    """What one window did: its ST vector (with baseline and change) and the ``st_change`` events."""

    vector: dict[str, Any]
    events: list[StChangeEvent] = field(default_factory=list)


@dataclass
class _Trend:
    patient_id: str
    buckets: deque[tuple[int, np.ndarray, np.ndarray]] = field(default_factory=deque)  # (start_ns, sum (12,), count (12,))
    current: dict[str, Any] = field(default_factory=dict)
    updated_ns: int = 0


class StTracker:
    """ST baseline, ``st_change`` policy and last-hour trend of every bed.

    Args:
        change: alarm thresholds and timing.
        baseline: how the reference is learned.
        trend_s: how much trend is kept (window time).
        bucket_s: trend resolution: the mean of each lead's measurable values per bucket.
    """

    def __init__(self, change: StChangeConfig | None = None, baseline: StBaselineSettings | None = None,
                 trend_s: float = 3600.0, bucket_s: float = 30.0) -> None:
        self.baseline = StBaseline(baseline or StBaselineSettings())
        self.policy = StChangePolicy(change or StChangeConfig())
        self.trend_ns = int(trend_s * 1e9)
        self.bucket_ns = int(bucket_s * 1e9)
        self._trends: dict[str, _Trend] = {}

    def update(self, bed_id: str, patient_id: str, window_seq: int, window_end_ns: int, m: StMeasurement | None) -> StUpdate:
        """Feed one scored window's measurement (None: it could not be measured at all)."""
        if m is None:
            return StUpdate({}, self.policy.update(bed_id, patient_id, None, window_seq, window_end_ns))
        ref = self.baseline.update(bed_id, patient_id, m, window_end_ns)
        delta = np.where(m.lead_ok, m.st_j60_uv - ref, np.nan)
        events = self.policy.update(bed_id, patient_id, delta if np.isfinite(delta).any() else None, window_seq, window_end_ns)
        vector = st_vector(m, ref, delta)
        self._add_trend(bed_id, patient_id, window_end_ns, m, vector)
        return StUpdate(vector, events)

    def _add_trend(self, bed_id: str, patient_id: str, t_ns: int, m: StMeasurement, vector: dict[str, Any]) -> None:
        tr = self._trends.get(bed_id)
        if tr is None or tr.patient_id != patient_id:
            tr = self._trends[bed_id] = _Trend(patient_id)
        tr.current, tr.updated_ns = vector, int(t_ns)
        ok = m.lead_ok
        start = int(t_ns) - int(t_ns) % self.bucket_ns
        if not tr.buckets or tr.buckets[-1][0] != start:
            tr.buckets.append((start, np.zeros(_N), np.zeros(_N)))
        _, s, c = tr.buckets[-1]
        s[ok] += m.st_j60_uv[ok]
        c[ok] += 1
        while tr.buckets and tr.buckets[0][0] < int(t_ns) - self.trend_ns:
            tr.buckets.popleft()

    def end(self, bed_id: str, window_seq: int, window_end_ns: int) -> list[StChangeEvent]:
        """The bed was discharged (end of stream, silence, another patient): end an open episode, drop its state."""
        events = self.policy.discharge(bed_id, window_seq, window_end_ns)
        self.forget(bed_id)
        return events

    def forget(self, bed_id: str) -> None:
        """Drop a bed's state without events (partition revoked)."""
        self.baseline.forget(bed_id)
        self.policy.forget(bed_id)
        self._trends.pop(bed_id, None)

    def view(self, bed_id: str) -> dict[str, Any] | None:
        """What the dashboard shows for a bed: current ST, reference and the trend (None for an unknown bed)."""
        tr = self._trends.get(bed_id)
        if tr is None:
            return None
        trend = [(t, np.where(c > 0, s / np.maximum(c, 1), np.nan)) for t, s, c in tr.buckets]
        return {"bed_id": bed_id, "patient_id": tr.patient_id, "updated_ns": tr.updated_ns, "leads": list(LEADS),
                "groups": {k: list(v) for k, v in TREND_GROUPS.items()}, "current": tr.current,
                "baseline_uv": _uv(self.baseline.reference(bed_id)), "active_alert_id": self.policy.active(bed_id),
                "bucket_s": self.bucket_ns / 1e9, "trend": {"t_ns": [t for t, _ in trend], "j60_uv": [_uv(v) for _, v in trend]}}

    def export_state(self, bed_id: str) -> dict[str, Any] | None:
        """Baseline and policy state of a bed (JSON-able), so a restarted worker keeps the reference and episode."""
        base, pol = self.baseline.export_state(bed_id), self.policy.export_state(bed_id)
        return None if base is None and pol is None else {"baseline": base, "policy": pol}

    def import_state(self, bed_id: str, data: dict[str, Any]) -> None:
        """Restore :meth:`export_state` output (raises ``engine.errors.StateError`` on malformed state)."""
        if data.get("baseline"):
            self.baseline.import_state(bed_id, data["baseline"])
        if data.get("policy"):
            self.policy.import_state(bed_id, data["policy"])


def st_change_alert(ev: StChangeEvent, *, bed_id: str, patient_id: str, window_start_ns: int, vector: dict[str, Any],
                    config: StChangeConfig, model_name: str, model_version: str, checkpoint_sha: str, emitted_ns: int,
                    quality_flags: list[str] | None = None) -> Alert:
    """The :class:`Alert` of one ``st_change`` event (thresholds in uV; ``top_leads`` = the deviating leads)."""
    st = dict(vector)
    if not st.get("delta_uv"):
        st["delta_uv"] = _uv(ev.delta_uv)
    st["max_delta_uv"] = round(float(ev.max_delta_uv), 1)
    return Alert(alert_id=ev.alert_id, alert_type=ALERT_TYPE_ST, kind=KIND_ST_CHANGE, phase=ev.phase, bed_id=bed_id,
                 patient_id=patient_id, probability=None, threshold_start=config.threshold_uv, threshold_end=config.end_uv,
                 window_start_ns=window_start_ns, window_end_ns=ev.window_end_ns, window_seq=ev.window_seq,
                 model_name=model_name, model_version=model_version, checkpoint_sha=checkpoint_sha, level=ev.level,
                 quality_flags=list(quality_flags or []), top_leads=list(ev.leads), emitted_ns=emitted_ns, st=st)
