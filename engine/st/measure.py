"""ST level of every lead of one 12-lead window: J+60 and J+80 ms against the PR-segment baseline.

Follows the AHA/ACC/HRS 2009 recommendations for the standardization and interpretation of the
ECG, part VI (Wagner et al., Circulation 119:e262, 2009): ST deviation is measured at the J point
or a fixed time after it (J+60 ms, J+80 ms) relative to the PR segment, on global fiducials from
the simultaneous median beats of the leads; ST criteria do not apply to wide QRS (bundle branch
block, ventricular pacing). IEC 60601-2-27 (ECG monitors) and IEC 60601-2-51 set the
same J-point/isoelectric conventions for monitors that display ST.

Steps, per (12, T) window at any rate >= 100 Hz:

1. gaps bridged (readings there are dropped), zero-phase 40 Hz low-pass; no high-pass, because
   a high-pass shifts the ST segment (AHA/ACC/HRS 2007, part I);
2. beats: :func:`engine.st.beats.detect_beats` on all usable leads at once; premature beats and
   beats whose QRS differs from the rest are left out;
3. global QRS onset and J point on the median beats (:mod:`engine.st.delineate`);
4. baseline: the PR level of every beat (mean over ``pr_window_s`` before QRS onset) is a knot of
   a cubic spline through the window, which removes baseline wander the way Meyer & Keiser
   ("Electrocardiogram baseline noise estimation and removal using cubic splines", Comput.
   Biomed. Res. 10, 1977) describe; only beats with a knot on both sides are measured;
5. ST of each beat at J+60 and J+80 ms minus the spline there; the median over beats, in uV.

Quality flags say why a window or lead cannot be trusted: ``no_beats``, ``too_few_beats``,
``no_j_point``, ``wide_qrs``, ``paced``, and per lead ``missing:L``, ``flat:L``, ``noisy:L``.
Window-level flags make :attr:`StMeasurement.measurable` false (the values are still filled
where they could be computed, for display); a flagged lead's values are NaN.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
from scipy.interpolate import CubicSpline

from engine.config import LEADS
from engine.errors import SignalError
from engine.signal.filters import FilterSpec, condition
from engine.st.beats import DEFAULT_BEATS, BeatSettings, detect_beats, heart_rate, premature, qrs_correlation, sample_beats
from engine.st.delineate import DEFAULT_DELINEATION, DelineationSettings, delineate, pacing_spikes

WINDOW_FLAGS = ("no_beats", "too_few_beats", "no_j_point", "wide_qrs", "paced")
_NAN12 = np.full(len(LEADS), np.nan)


@dataclass(frozen=True)
class StSettings:
    """What :func:`measure_st` does.

    Attributes:
        lowpass_hz: zero-phase low-pass before measuring (no high-pass: it would move the ST).
        pre_s / post_s: the median beat spans fiducial - pre_s .. fiducial + post_s.
        pr_window_s: the PR baseline is the mean over (onset - a, onset - b).
        min_beats: fewer clean, bracketed beats flag ``too_few_beats``.
        wide_qrs_ms: QRS at least this wide flags ``wide_qrs`` (AHA: ST criteria do not apply).
        missing_frac: a lead with more gap than this is ``missing``.
        flat_mv: a lead whose range is below this is ``flat`` (electrode off reading 0).
        noisy_uv: a lead whose beat-to-beat ST spread (1.4826 MAD) exceeds this is ``noisy``.
        min_spikes: this many pacing spikes flag ``paced``.
    """

    lowpass_hz: float = 40.0
    pre_s: float = 0.3
    post_s: float = 0.45
    pr_window_s: tuple[float, float] = (0.03, 0.01)
    min_beats: int = 3
    wide_qrs_ms: float = 120.0
    missing_frac: float = 0.2
    flat_mv: float = 0.02
    noisy_uv: float = 100.0
    min_spikes: int = 3
    beats: BeatSettings = DEFAULT_BEATS
    delineation: DelineationSettings = DEFAULT_DELINEATION


DEFAULT_ST = StSettings()


@dataclass(frozen=True)
class StMeasurement:
    """ST levels of one window, leads in :data:`engine.config.LEADS` order.

    Attributes:
        st_j60_uv: (12,) ST at J+60 ms minus the PR baseline, uV (NaN where a lead is flagged).
        st_j80_uv: (12,) the same at J+80 ms.
        hr_bpm: heart rate from the median RR of all detected beats.
        qrs_ms: global QRS duration (onset to J point).
        quality: flags, e.g. ``("too_few_beats",)`` or ``("noisy:V1",)``; empty when all is well.
        n_beats: beats the ST values are the median of.
        fs: the window's sampling rate.
        median_beats: (12, W) median beats in mV, PR baseline at 0 (for plots); W may be 0.
        onset_s / j_s: QRS onset and J point, s from the beat fiducial (sample ``pre_s * fs``).
    """

    st_j60_uv: np.ndarray
    st_j80_uv: np.ndarray
    hr_bpm: float
    qrs_ms: float
    quality: tuple[str, ...]
    n_beats: int
    fs: float
    median_beats: np.ndarray = field(default_factory=lambda: np.zeros((len(LEADS), 0)), repr=False, compare=False)
    onset_s: float = float("nan")
    j_s: float = float("nan")

    @property
    def measurable(self) -> bool:
        """True when no window-level flag is set (single leads may still be flagged)."""
        return not any(q in WINDOW_FLAGS for q in self.quality)

    @property
    def lead_ok(self) -> np.ndarray:
        """(12,) bool: the window is measurable and the lead's J+60 value is finite."""
        return np.isfinite(self.st_j60_uv) & self.measurable

    def as_dict(self) -> dict[str, object]:
        """JSON-able summary (per-lead values by lead name, NaN as None)."""
        def clean(v: float) -> float | None:
            return round(float(v), 1) if np.isfinite(v) else None

        return {"st_j60_uv": {n: clean(v) for n, v in zip(LEADS, self.st_j60_uv)},
                "st_j80_uv": {n: clean(v) for n, v in zip(LEADS, self.st_j80_uv)},
                "hr_bpm": clean(self.hr_bpm), "qrs_ms": clean(self.qrs_ms), "quality": list(self.quality), "n_beats": self.n_beats}


def _empty(flags: list[str], fs: float, hr: float = float("nan")) -> StMeasurement:
    return StMeasurement(_NAN12.copy(), _NAN12.copy(), hr, float("nan"), tuple(flags), 0, fs)


def measure_st(window: np.ndarray, fs: float, settings: StSettings = DEFAULT_ST, *, paced: bool = False) -> StMeasurement:
    """Measure the ST level of every lead of one window.

    Args:
        window: (12, T) raw leads in mV in :data:`LEADS` order (NaN where samples are missing).
        fs: sampling rate in Hz, at least 100.
        settings: thresholds and windows.
        paced: the monitor reports a pacemaker (its pacer flag); flags ``paced``.

    Raises:
        SignalError: wrong shape or a rate below 100 Hz.
    """
    x = np.asarray(window, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] != len(LEADS):
        raise SignalError(f"ST measurement expects a (12, T) window in mV, got shape {x.shape}")
    if not (np.isfinite(fs) and fs >= 100.0):
        raise SignalError(f"ST measurement needs a sampling rate of at least 100 Hz, got fs={fs}")
    if x.shape[1] < 2 * fs:
        raise SignalError(f"ST measurement needs at least 2 s of signal, got {x.shape[1]} samples at {fs} Hz")
    flags: list[str] = []
    gaps = ~np.isfinite(x)
    gap_frac = gaps.mean(axis=1)
    usable = gap_frac <= settings.missing_frac
    flags += [f"missing:{LEADS[i]}" for i in np.flatnonzero(~usable)]
    if not usable.any():
        return _empty(flags + ["no_beats"], fs)
    xf = condition(np.where(usable[:, None], x, 0.0), fs, FilterSpec(highpass_hz=None, lowpass_hz=settings.lowpass_hz))
    span = np.ptp(xf, axis=1)
    flat = usable & (span < settings.flat_mv)
    flags += [f"flat:{LEADS[i]}" for i in np.flatnonzero(flat)]
    usable &= ~flat
    if paced or pacing_spikes(np.where(gaps, 0.0, x)[usable], fs, settings.delineation) >= settings.min_spikes:
        flags.append("paced")

    pos = detect_beats(xf[usable], fs, settings.beats)
    hr = heart_rate(pos, fs)
    pre, post = int(round(settings.pre_s * fs)), int(round(settings.post_s * fs))
    inside = (pos - pre >= 0) & (pos + post <= x.shape[1] - 2)
    if pos.size == 0:
        return _empty(flags + ["no_beats"], fs, hr)
    offsets = np.arange(-pre, post + 1, dtype=np.float64)
    keep = inside & ~premature(pos, fs, settings.beats)
    if keep.sum() < settings.min_beats:
        return _empty(flags + ["too_few_beats"], fs, hr)
    beats = sample_beats(xf, pos[keep], offsets)  # (B, 12, W)
    qrs = (pre - int(0.06 * fs), pre + int(0.08 * fs))
    corr = qrs_correlation(beats[:, usable], *qrs)
    good = corr >= settings.beats.min_corr
    if good.sum() < settings.min_beats:
        return _empty(flags + ["too_few_beats"], fs, hr)
    pos, beats = pos[keep][good], beats[good]
    med = np.median(beats, axis=0)  # (12, W)
    fid = delineate(med[usable], fs, pre, settings.delineation)
    if not fid.found:
        return StMeasurement(_NAN12.copy(), _NAN12.copy(), hr, float("nan"), tuple(flags + ["no_j_point"]), int(pos.size), fs, med)
    if fid.qrs_ms >= settings.wide_qrs_ms:
        flags.append("wide_qrs")

    # Baseline knots: each beat's PR level, at the middle of its PR window.
    a, b = settings.pr_window_s
    pr_off = fs * (fid.onset_s - np.linspace(a, b, 5))
    knots_t = pos + fs * (fid.onset_s - 0.5 * (a + b))  # (B,) samples
    knots_v = sample_beats(xf, pos, pr_off).mean(axis=2)  # (B, 12)
    st_off = fs * np.array([fid.j_s + 0.06, fid.j_s + 0.08])
    st_t = pos[:, None] + st_off[None, :]  # (B, 2)
    vals = sample_beats(xf, pos, st_off)  # (B, 12, 2)
    bracketed = st_t[:, 1] <= knots_t[-1]
    if bracketed.sum() < settings.min_beats:
        return _empty(flags + ["too_few_beats"], fs, hr)
    base = CubicSpline(knots_t, knots_v, axis=0)(st_t[bracketed])  # (Bb, 2, 12)
    st = 1000.0 * (vals[bracketed] - np.transpose(base, (0, 2, 1)))  # (Bb, 12, 2) uV
    hole = sample_beats(gaps.astype(np.float64), pos[bracketed], st_off) > 0  # a reading inside a gap
    st[hole] = np.nan
    # np.nanmedian goes through masked arrays (slow): only pay for it when a reading fell in a gap.
    median = np.nanmedian if hole.any() else np.median
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN leads stay NaN
        level = median(st, axis=0)  # (12, 2)
        spread = 1.4826 * median(np.abs(st[:, :, 0] - level[None, :, 0]), axis=0)
    noisy = usable & (spread > settings.noisy_uv)
    flags += [f"noisy:{LEADS[i]}" for i in np.flatnonzero(noisy)]
    level[~usable | noisy] = np.nan
    med = np.median(beats - knots_v[:, :, None], axis=0)  # display: each beat on its own PR level
    return StMeasurement(level[:, 0].copy(), level[:, 1].copy(), hr, fid.qrs_ms, tuple(flags), int(bracketed.sum()), fs, med,
                         fid.onset_s, fid.j_s)
