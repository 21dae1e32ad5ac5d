"""Signal quality flags per lead and a verdict per window ("can MIRAGE evaluate this?").

IEC 60601-2-27 requires bedside monitors to raise technical alarms for lead-off and signal
conditions that make analysis unreliable; these checks are the analysis-side counterpart. Each is
simple, explainable and computed on the raw window (before conditioning):

* ``missing:L`` - lead L has non-finite samples (not sent, lead off, or a gap in the stream).
* ``flat:L`` - lead L is (near-)constant: robust amplitude (99th-1st percentile) below
  ``flat_mv``, or an exactly constant run of at least ``flat_run_s`` (a disconnected electrode
  or a stuck amplifier).
* ``saturated:L`` - lead L reaches the amplifier rail (``|x| >= rail_mv``), sits on its own
  extreme value (within ``saturated_tol_mv``) for ``saturated_run_s`` or longer, or shows flat-topped plateaus (2+ identical
  samples at the extreme) in ``saturated_plateaus`` or more places (clipped R or S waves); the
  plateau rules apply only to an extreme at least half the lead's range away from its median.
* ``noisy:L`` - broadband noise (muscle, mains, electrode motion): the robust standard deviation
  of the second difference, ``1.4826 * MAD / sqrt(6)`` (exact for white noise), above
  ``noise_mv``. The ECG itself barely contributes: its second difference is small except in
  the QRS, which the median ignores.

A window is *evaluable* when at most ``max_bad_leads`` leads carry a flag.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.config import LEADS
from engine.errors import SignalError


@dataclass(frozen=True)
class QualityThresholds:
    """Thresholds of the quality checks, in mV and seconds."""

    flat_mv: float = 0.02
    flat_run_s: float = 1.0
    rail_mv: float = 10.0
    saturated_run_s: float = 0.2
    saturated_tol_mv: float = 1e-3
    saturated_min_range_mv: float = 0.3
    saturated_plateaus: int = 3
    noise_mv: float = 0.05
    max_bad_leads: int = 2


DEFAULT_THRESHOLDS = QualityThresholds()


@dataclass(frozen=True)
class QualityReport:
    """Flags of one window and its verdict."""

    flags: tuple[str, ...]
    bad_leads: tuple[str, ...]
    evaluable: bool


def _runs(mask: np.ndarray) -> np.ndarray:
    """Lengths of the runs of True in a 1-D boolean array."""
    padded = np.concatenate(([False], mask, [False])).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    return edges[1::2] - edges[::2]


def _longest_run(mask: np.ndarray) -> int:
    """Length of the longest run of True in a 1-D boolean array."""
    runs = _runs(mask)
    return int(runs.max()) if runs.size else 0


def _clipped(v: np.ndarray, extreme: float, fs: float, th: QualityThresholds) -> bool:
    """Pinned at ``extreme``: one long plateau, or plateaus of 2+ identical samples in 3+ beats."""
    if _longest_run(np.abs(v - extreme) <= th.saturated_tol_mv) >= th.saturated_run_s * fs:
        return True
    return int((_runs(np.abs(v - extreme) <= 1e-6) >= 2).sum()) >= th.saturated_plateaus


def lead_flags(x: np.ndarray, fs: float, name: str, th: QualityThresholds = DEFAULT_THRESHOLDS) -> list[str]:
    """Flags of one lead ``x`` (T,) in mV sampled at ``fs`` Hz."""
    finite = np.isfinite(x)
    flags: list[str] = []
    if not finite.all():
        flags.append(f"missing:{name}")
    v = x[finite]
    if v.size < 3:
        return flags
    lo, hi = np.percentile(v, [1.0, 99.0])
    const_run = _longest_run(np.abs(np.diff(v)) < 1e-6) + 1
    if hi - lo < th.flat_mv or const_run >= th.flat_run_s * fs:
        flags.append(f"flat:{name}")
        return flags
    vmin, vmax = float(v.min()), float(v.max())
    span = vmax - vmin
    # A rail is the lead's dominant excursion: an extreme close to the median (a rounded trough
    # that happens to repeat a quantised value) is not clipping.
    med = float(np.median(v))
    clipped = span >= th.saturated_min_range_mv and any(
        abs(ext - med) >= 0.5 * span and _clipped(v, ext, fs, th) for ext in (vmax, vmin)
    )
    if max(abs(vmin), abs(vmax)) >= th.rail_mv or clipped:
        flags.append(f"saturated:{name}")
    d2 = np.diff(v, n=2)
    noise = 1.4826 * float(np.median(np.abs(d2 - np.median(d2)))) / np.sqrt(6.0)
    if noise > th.noise_mv:
        flags.append(f"noisy:{name}")
    return flags


def assess(window: np.ndarray, fs: float, th: QualityThresholds = DEFAULT_THRESHOLDS) -> QualityReport:
    """Quality flags and verdict of one raw window (12, T) in mV, leads in :data:`LEADS` order."""
    arr = np.asarray(window, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[0] != len(LEADS):
        raise SignalError(f"quality checks expect a (12, T) window in mV, got shape {arr.shape}")
    if fs <= 0:
        raise SignalError(f"sampling rate must be positive, got fs={fs}")
    flags: list[str] = []
    bad: list[str] = []
    for name, lead in zip(LEADS, arr):
        f = lead_flags(lead, fs, name, th)
        if f:
            bad.append(name)
            flags.extend(f)
    return QualityReport(flags=tuple(flags), bad_leads=tuple(bad), evaluable=len(bad) <= th.max_bad_leads)


def quality_flags(window: np.ndarray, fs: float, th: QualityThresholds = DEFAULT_THRESHOLDS) -> list[str]:
    """The flags of :func:`assess` as a list, e.g. ``["flat:V3", "noisy:V1"]``."""
    return list(assess(window, fs, th).flags)
