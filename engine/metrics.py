"""Binary classification metrics for MI detection, in plain numpy.

* ROC curve / AUROC: trapezoidal area under (FPR, TPR) over all distinct score thresholds; ties
  count half (equivalent to the Mann-Whitney U statistic).
* PR curve / AUPRC: average precision, ``sum_k (R_k - R_{k-1}) P_k`` (no interpolation; the
  estimator scikit-learn's ``average_precision_score`` uses).
* Operating points: sensitivity at >= 90 % specificity and specificity at >= 90 % sensitivity,
  the threshold achieving them (a rule "alarm when score >= threshold").
* ECE: expected calibration error over equal-width probability bins (Guo et al., "On
  Calibration of Modern Neural Networks", ICML 2017).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.errors import MirageError


class MetricError(MirageError, ValueError):
    """Metric inputs are unusable (names the problem and the values' shape)."""


def _check(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y).astype(np.int64).ravel()
    s = np.asarray(s, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise MetricError(f"labels {y.shape} and scores {s.shape} differ in length")
    if not np.isin(y, (0, 1)).all():
        raise MetricError(f"labels must be 0/1, got values {np.unique(y)[:5]}")
    if not np.isfinite(s).all():
        raise MetricError("scores contain non-finite values")
    return y, s


def _require_both(y: np.ndarray) -> None:
    if y.sum() == 0 or y.sum() == len(y):
        raise MetricError(f"need both classes, got {int(y.sum())} positives of {len(y)}")


def roc_curve(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds): point k is the rule ``score >= thresholds[k]``; starts at (0, 0) with +inf."""
    y, s = _check(y, s)
    _require_both(y)
    order = np.argsort(-s, kind="mergesort")
    s_sorted, y_sorted = s[order], y[order]
    distinct = np.r_[np.nonzero(np.diff(s_sorted))[0], len(s) - 1]  # last index of each score level
    tp = np.cumsum(y_sorted)[distinct]
    fp = (distinct + 1) - tp
    tpr = np.r_[0.0, tp / y.sum()]
    fpr = np.r_[0.0, fp / (len(y) - y.sum())]
    return fpr, tpr, np.r_[np.inf, s_sorted[distinct]]


def auroc(y: np.ndarray, s: np.ndarray) -> float:
    fpr, tpr, _ = roc_curve(y, s)
    return float(np.trapezoid(tpr, fpr))


def pr_curve(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(precision, recall, thresholds) at every distinct threshold, recall increasing, starting at (1, 0)."""
    y, s = _check(y, s)
    _require_both(y)
    order = np.argsort(-s, kind="mergesort")
    s_sorted, y_sorted = s[order], y[order]
    distinct = np.r_[np.nonzero(np.diff(s_sorted))[0], len(s) - 1]
    tp = np.cumsum(y_sorted)[distinct]
    precision = tp / (distinct + 1)
    recall = tp / y.sum()
    return np.r_[1.0, precision], np.r_[0.0, recall], np.r_[np.inf, s_sorted[distinct]]


def auprc(y: np.ndarray, s: np.ndarray) -> float:
    """Average precision (step-wise area under the PR curve)."""
    precision, recall, _ = pr_curve(y, s)
    return float(np.sum(np.diff(recall) * precision[1:]))


@dataclass(frozen=True)
class OperatingPoint:
    """A threshold and what it achieves: alarm when ``score >= threshold``."""

    threshold: float
    sensitivity: float
    specificity: float


def sens_at_spec(y: np.ndarray, s: np.ndarray, min_spec: float = 0.9) -> OperatingPoint:
    """The most sensitive threshold whose specificity is at least ``min_spec``."""
    fpr, tpr, thr = roc_curve(y, s)
    ok = (1.0 - fpr) >= min_spec - 1e-12
    k = int(np.flatnonzero(ok)[np.argmax(tpr[ok])])  # ok[0] is always True (threshold +inf)
    return OperatingPoint(_finite_threshold(thr, k, s), float(tpr[k]), float(1.0 - fpr[k]))


def spec_at_sens(y: np.ndarray, s: np.ndarray, min_sens: float = 0.9) -> OperatingPoint:
    """The most specific threshold whose sensitivity is at least ``min_sens``."""
    fpr, tpr, thr = roc_curve(y, s)
    ok = tpr >= min_sens - 1e-12
    cand = np.flatnonzero(ok)
    k = int(cand[np.argmin(fpr[cand])])
    return OperatingPoint(_finite_threshold(thr, k, s), float(tpr[k]), float(1.0 - fpr[k]))


def _finite_threshold(thr: np.ndarray, k: int, s: np.ndarray) -> float:
    """The +inf 'never alarm' point as a usable number just above the highest score."""
    if np.isfinite(thr[k]):
        return float(thr[k])
    return float(np.nextafter(np.max(s), np.inf))


def at_threshold(y: np.ndarray, s: np.ndarray, threshold: float) -> OperatingPoint:
    """Sensitivity and specificity of the rule ``score >= threshold`` (nan for an absent class)."""
    y, s = _check(y, s)
    pred = s >= threshold
    pos, neg = y == 1, y == 0
    sens = float(pred[pos].mean()) if pos.any() else float("nan")
    spec = float((~pred[neg]).mean()) if neg.any() else float("nan")
    return OperatingPoint(float(threshold), sens, spec)


def calibration_bins(y: np.ndarray, p: np.ndarray, n_bins: int = 10) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per equal-width bin of predicted probability: (mean predicted, observed positive rate, count)."""
    y, p = _check(y, p)
    if (p < 0).any() or (p > 1).any():
        raise MetricError(f"probabilities must lie in [0, 1], got range {p.min():.3g}..{p.max():.3g}")
    idx = np.minimum((p * n_bins).astype(np.int64), n_bins - 1)
    count = np.bincount(idx, minlength=n_bins).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        conf = np.bincount(idx, weights=p, minlength=n_bins) / count
        acc = np.bincount(idx, weights=y, minlength=n_bins) / count
    return conf, acc, count


def ece(y: np.ndarray, p: np.ndarray, n_bins: int = 10) -> float:
    """Expected calibration error: sum over bins of (count/N) * |observed rate - mean predicted|."""
    conf, acc, count = calibration_bins(y, p, n_bins)
    used = count > 0
    return float(np.sum(count[used] / count.sum() * np.abs(acc[used] - conf[used])))


def hysteresis_end(start: float, y: np.ndarray, s: np.ndarray, ratio: float = 0.8) -> float:
    """A lower "alarm ends" threshold: ``ratio`` x start, never below the median negative score.

    An alarm that starts at ``start`` should not flap when the score dips just below it; it ends
    only once the score falls clearly back towards where negatives live.
    """
    y, s = _check(y, s)
    floor = float(np.median(s[y == 0])) if (y == 0).any() else 0.0
    return float(min(start, max(ratio * start, floor)))


def summary(y: np.ndarray, p: np.ndarray, threshold: float | None = None) -> dict[str, float | int]:
    """All the report numbers for labels ``y`` and MI probabilities ``p``.

    ``threshold`` is the deployed operating threshold; None uses the 90 %-specificity point of
    this data (then sensitivity/specificity "at threshold" are optimistic by construction).
    """
    y, p = _check(y, p)
    _require_both(y)
    op90 = sens_at_spec(y, p, 0.9)
    sp90 = spec_at_sens(y, p, 0.9)
    thr = op90.threshold if threshold is None else float(threshold)
    at = at_threshold(y, p, thr)
    return {
        "n": int(len(y)),
        "n_pos": int(y.sum()),
        "n_neg": int(len(y) - y.sum()),
        "auroc": auroc(y, p),
        "auprc": auprc(y, p),
        "prevalence": float(y.mean()),
        "sens_at_spec90": op90.sensitivity,
        "spec_at_sens90": sp90.specificity,
        "threshold_spec90": op90.threshold,
        "threshold": thr,
        "sensitivity": at.sensitivity,
        "specificity": at.specificity,
        "ece": ece(y, p),
    }
