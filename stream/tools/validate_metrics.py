"""Scoring a validation run: window, bed and record metrics from what the live system produced.

Pure functions over plain records (no Kafka, no model), so they are unit-tested on crafted runs.

Definitions (bed = one monitored stream with a ground truth from the simulator or the dataset):

* A window is *positive* when its bed has an MI and the window ends after the MI onset
  (``mi_onset_s`` relative to the stream start; an infarct present at the start has onset <= 0).
  A bed whose onset comes after the end of its stream shows no MI in this run and is scored as
  a bed without MI (a shortened scenario must not count invisible infarcts as misses).
* An MI alert (``alert_type == "mi"``, ``phase == "start"``) is a *true alert* when its bed has an
  MI and its window ends after the onset; every other MI start is a *false alert*.
* A bed with an MI is *detected* when it has a true alert; its *alert delay* is the end time of
  the first true alert's window minus ``max(onset, 0)`` (stream time, i.e. patient time: the
  replay may run faster than real time). A bed without MI is a *true negative* when it has no
  MI alert at all.
* sensitivity = detected MI beds / MI beds; specificity = quiet non-MI beds / non-MI beds;
  ppv = true alerts / all MI alerts (episode level, as a nurse sees them).
* Bed-days are stream time: a 60 s stream is 60/86400 bed-days. ``false_alerts_per_bed_day``
  and ``alarm_burden_per_bed_day`` (every alert start, MI and technical) divide by them;
  ``mi_alarm_burden_per_bed_day`` counts MI starts only. Under an accelerated replay a worker
  that cannot keep up raises ``falling_behind`` technical alarms: an artefact of the speed-up,
  which is why the MI-only burden is reported too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

DAY_S = 86400.0


@dataclass(frozen=True)
class BedInfo:
    """Ground truth and stream extent of one bed.

    Attributes:
        bed_id: the bed.
        record: the record(s) played on the bed (``a+b`` when several).
        mi: whether the bed has an MI.
        mi_onset_s: onset in seconds from the stream start (None: none, or present from the start).
        start_ns: Unix ns of the bed's first sample.
        stream_s: seconds of signal the bed streamed.
        label: the simulator's or dataset's label.
    """

    bed_id: str
    record: str
    mi: bool
    mi_onset_s: float | None
    start_ns: int
    stream_s: float
    label: str = ""

    @property
    def mi_in_stream(self) -> bool:
        """An MI that shows in the streamed signal (onset before the stream's end)."""
        return self.mi and (self.mi_onset_s is None or self.mi_onset_s < self.stream_s)

    def onset_ns(self) -> int:
        """Unix ns from which the MI is present (the stream start when it was present from the beginning)."""
        return self.start_ns + int(round(max(0.0, self.mi_onset_s or 0.0) * 1e9))


@dataclass(frozen=True)
class WindowScore:
    """One window the live system scored, with the offline probability of the same window."""

    bed_id: str
    seq: int
    end_ns: int
    probability: float
    offline: float | None = None


@dataclass(frozen=True)
class AlertEvent:
    """The fields of :class:`stream.core.schema.Alert` that scoring needs."""

    bed_id: str
    alert_type: str
    phase: str
    window_end_ns: int
    alert_id: str = ""


@dataclass
class BedResult:
    """Per-bed outcome (one row of the report)."""

    bed_id: str
    record: str
    mi: bool
    mi_onset_s: float | None
    windows: int = 0
    max_probability: float | None = None
    detected: bool = False
    alert_delay_s: float | None = None
    true_alerts: int = 0
    false_alerts: int = 0
    technical_alerts: int = 0
    false_alerts_per_bed_day: float = 0.0
    alarm_burden_per_bed_day: float = 0.0  # every alert start a nurse sees: MI and technical
    mi_alarm_burden_per_bed_day: float = 0.0
    first_alert_s: float | None = None  # first MI alert, seconds from the stream start
    extra: dict[str, Any] = field(default_factory=dict)


def window_label(bed: BedInfo, end_ns: int) -> int:
    """1 when the window ending at ``end_ns`` shows the bed's MI (it ends after the onset)."""
    return int(bed.mi_in_stream and end_ns > bed.onset_ns())


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None


def score_beds(beds: Sequence[BedInfo], windows: Sequence[WindowScore], alerts: Sequence[AlertEvent]) -> list[BedResult]:
    """Per-bed detection, delay, false alerts and alarm burden."""
    by_bed = {b.bed_id: b for b in beds}
    out: dict[str, BedResult] = {b.bed_id: BedResult(b.bed_id, b.record, b.mi_in_stream, b.mi_onset_s,
                                                     extra={"mi_after_stream": b.mi and not b.mi_in_stream}) for b in beds}
    for w in windows:
        r = out.get(w.bed_id)
        if r is None:
            continue
        r.windows += 1
        r.max_probability = w.probability if r.max_probability is None else max(r.max_probability, w.probability)
    for a in sorted(alerts, key=lambda a: a.window_end_ns):
        r, b = out.get(a.bed_id), by_bed.get(a.bed_id)
        if r is None or b is None or a.phase != "start":
            continue
        if a.alert_type != "mi":
            r.technical_alerts += 1
            continue
        t_s = (a.window_end_ns - b.start_ns) / 1e9
        if r.first_alert_s is None:
            r.first_alert_s = t_s
        if window_label(b, a.window_end_ns):
            r.true_alerts += 1
            if not r.detected:
                r.detected = True
                r.alert_delay_s = (a.window_end_ns - b.onset_ns()) / 1e9
        else:
            r.false_alerts += 1
    for r in out.values():
        days = by_bed[r.bed_id].stream_s / DAY_S
        if days > 0:
            r.false_alerts_per_bed_day = r.false_alerts / days
            r.mi_alarm_burden_per_bed_day = (r.true_alerts + r.false_alerts) / days
            r.alarm_burden_per_bed_day = (r.true_alerts + r.false_alerts + r.technical_alerts) / days
    return [out[b.bed_id] for b in beds]


def window_metrics(beds: Sequence[BedInfo], windows: Sequence[WindowScore], threshold: float) -> dict[str, Any]:
    """Window-level AUROC and sensitivity/specificity at ``threshold`` of the live probabilities."""
    from engine.metrics import auroc

    by_bed = {b.bed_id: b for b in beds}
    ws = [w for w in windows if w.bed_id in by_bed]
    y = np.array([window_label(by_bed[w.bed_id], w.end_ns) for w in ws], dtype=np.int64)
    p = np.array([w.probability for w in ws], dtype=np.float64)
    out: dict[str, Any] = {"windows": len(ws), "positive_windows": int(y.sum()), "threshold": float(threshold)}
    both = 0 < y.sum() < len(y)
    out["window_auroc"] = float(auroc(y, p)) if both else None
    pred = p >= threshold
    out["window_sensitivity"] = _ratio(int((pred & (y == 1)).sum()), int(y.sum()))
    out["window_specificity"] = _ratio(int((~pred & (y == 0)).sum()), int((y == 0).sum()))
    return out


def parity(windows: Sequence[WindowScore]) -> dict[str, Any]:
    """Largest and mean |live - offline| over the windows that have an offline probability."""
    d = np.array([abs(w.probability - w.offline) for w in windows if w.offline is not None], dtype=np.float64)
    return {"parity_windows": int(d.size), "parity_max_abs_diff": float(d.max()) if d.size else None,
            "parity_mean_abs_diff": float(d.mean()) if d.size else None}


def summarize(beds: Sequence[BedInfo], windows: Sequence[WindowScore], alerts: Sequence[AlertEvent], threshold: float,
              *, parity_target: float = 1e-4) -> dict[str, Any]:
    """The headline numbers of validate.json plus the per-bed rows."""
    rows = score_beds(beds, windows, alerts)
    mi = [r for r in rows if r.mi]
    neg = [r for r in rows if not r.mi]
    true_alerts = sum(r.true_alerts for r in rows)
    false_alerts = sum(r.false_alerts for r in rows)
    days = sum(b.stream_s for b in beds) / DAY_S
    delays = [r.alert_delay_s for r in mi if r.alert_delay_s is not None]
    technical = sum(r.technical_alerts for r in rows)
    out: dict[str, Any] = {
        "beds": len(rows),
        "records": len({r.record for r in rows}),
        "mi_beds": len(mi),
        "sensitivity": _ratio(sum(r.detected for r in mi), len(mi)),
        "specificity": _ratio(sum(r.false_alerts == 0 for r in neg), len(neg)),
        "ppv": _ratio(true_alerts, true_alerts + false_alerts),
        "true_alerts": true_alerts,
        "false_alerts": false_alerts,
        "technical_alerts": technical,
        "bed_days": days,
        "false_alerts_per_bed_day": false_alerts / days if days > 0 else None,
        "alarm_burden_per_bed_day": (true_alerts + false_alerts + technical) / days if days > 0 else None,
        "mi_alarm_burden_per_bed_day": (true_alerts + false_alerts) / days if days > 0 else None,
        "technical_alerts_per_bed_day": technical / days if days > 0 else None,
        "median_alert_delay_s": float(np.median(delays)) if delays else None,
        "max_alert_delay_s": float(max(delays)) if delays else None,
    }
    out.update(window_metrics(beds, windows, threshold))
    out.update(parity(windows))
    pmax = out["parity_max_abs_diff"]
    out["parity_target"] = parity_target
    out["parity_ok"] = bool(pmax is not None and pmax <= parity_target)
    out["per_bed"] = [_row(r) for r in rows]
    return out


def _row(r: BedResult) -> dict[str, Any]:
    def clean(v: Any) -> Any:
        return None if isinstance(v, float) and not math.isfinite(v) else v

    d = {k: clean(v) for k, v in r.__dict__.items() if k != "extra"}
    d.update(r.extra)
    return d
