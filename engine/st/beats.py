"""Beat detection on a multi-lead window and the choice of clean beats for a median beat.

Detection follows the energy-envelope family of QRS detectors (Pan & Tompkins, "A real-time QRS
detection algorithm", IEEE TBME 32(3), 1985), made multi-lead as in the spatial-velocity
detectors of ST monitors: the 5-25 Hz band-passed derivative of every usable lead is squared and
summed, smoothed over 80 ms, and its peaks above a fraction of the window's robust peak level
and at least a refractory period apart are beats. Summing leads means a beat that is small in one
lead is still seen in the others, and one noisy lead cannot invent beats the others do not show.

Why not a library detector: ``wfdb.processing.XQRS``/``gqrs`` and ``neurokit2.ecg_peaks`` were
measured on the same simulated windows (docs/ST.md, "Beat detection"): on noisy 10 s windows at
the stream's 100 Hz this detector found every beat with no false one where the library detectors
missed 1-6 %, at a third of neurokit2's time and a quarter to a tenth of wfdb's, and it reads all 12
leads at once, which a single-lead library detector does not.

A beat is *clean* (used for the median beat, per AHA/ACC/HRS 2009 ST recommendations, which
measure on representative sinus beats) when it is not premature (RR below ``premature_frac`` of
the median RR: an ectopic) and its QRS correlates with the window's median QRS.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from scipy import signal as sps


@dataclass(frozen=True)
class BeatSettings:
    """Thresholds of beat detection and selection.

    Attributes:
        band_hz: pass band of the detection filter (QRS energy).
        smooth_s: length of the moving average over the squared derivative.
        refractory_s: two beats are at least this far apart (250 ms: at most 240 bpm).
        height_frac: a peak counts when above this fraction of the envelope's 99th percentile.
        premature_frac: a beat whose preceding RR is below this fraction of the median RR is ectopic.
        min_corr: a beat whose QRS correlates below this with the median QRS is not used.
    """

    band_hz: tuple[float, float] = (5.0, 25.0)
    smooth_s: float = 0.08
    refractory_s: float = 0.25
    height_frac: float = 0.3
    premature_frac: float = 0.8
    min_corr: float = 0.9


DEFAULT_BEATS = BeatSettings()


@functools.lru_cache(maxsize=16)
def _band(fs: float, lo: float, hi: float) -> np.ndarray:
    hi = min(hi, 0.45 * fs)
    return sps.butter(2, [lo, hi], btype="bandpass", fs=fs, output="sos")


def qrs_envelope(x: np.ndarray, fs: float, settings: BeatSettings = DEFAULT_BEATS) -> np.ndarray:
    """The multi-lead QRS energy envelope of ``x`` (L, T) mV: (T,), largest inside QRS complexes."""
    bp = sps.sosfiltfilt(_band(float(fs), *settings.band_hz), x, axis=-1)
    d = np.diff(bp, axis=-1, prepend=bp[:, :1]) * fs  # (L, T) mV/s
    energy = np.sum(d * d, axis=0)  # (T,)
    n = max(1, int(round(settings.smooth_s * fs)))
    return np.convolve(energy, np.ones(n) / n, mode="same")


def detect_beats(x: np.ndarray, fs: float, settings: BeatSettings = DEFAULT_BEATS) -> np.ndarray:
    """Fiducial times of the beats in ``x`` (L, T) mV, in samples (float: sub-sample by parabola).

    The fiducial is the peak of :func:`qrs_envelope`, the centre of QRS energy across leads; it
    is the same point of every beat of one morphology, which is what averaging needs.

    Returns:
        (N,) float64 sample positions, ascending; empty when no beat is found.
    """
    env = qrs_envelope(x, fs, settings)
    ref = float(np.percentile(env, 99.0))
    if not np.isfinite(ref) or ref <= 0:
        return np.zeros(0)
    peaks, _ = sps.find_peaks(env, height=settings.height_frac * ref, distance=max(1, int(settings.refractory_s * fs)))
    if peaks.size == 0:
        return np.zeros(0)
    # Parabolic interpolation of the envelope peak: the 10 ms grid of 100 Hz would otherwise
    # jitter the beats by up to +-5 ms when they are averaged.
    inner = (peaks > 0) & (peaks < env.size - 1)
    pos = peaks.astype(np.float64)
    p = peaks[inner]
    a, b, c = env[p - 1], env[p], env[p + 1]
    den = a - 2.0 * b + c
    with np.errstate(divide="ignore", invalid="ignore"):
        delta = np.where(den < 0, 0.5 * (a - c) / den, 0.0)
    pos[inner] += np.clip(delta, -0.5, 0.5)
    return pos


def sample_beats(x: np.ndarray, positions: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """``x`` (L, T) read at ``positions[b] + offsets[w]`` (samples, fractional) by linear interpolation.

    Returns:
        (B, L, W) float64; the caller keeps every read inside ``[0, T - 1]``.
    """
    t = positions[:, None] + offsets[None, :]  # (B, W)
    i0 = np.clip(np.floor(t).astype(np.int64), 0, x.shape[1] - 2)
    w = np.clip(t - i0, 0.0, 1.0)
    lo, hi = x[:, i0], x[:, i0 + 1]  # (L, B, W)
    return np.transpose(lo * (1.0 - w) + hi * w, (1, 0, 2))


def premature(positions: np.ndarray, fs: float, settings: BeatSettings = DEFAULT_BEATS) -> np.ndarray:
    """(N,) bool: beats whose preceding RR is below ``premature_frac`` of the median RR (ectopics)."""
    out = np.zeros(positions.size, dtype=bool)
    if positions.size < 3:
        return out
    rr = np.diff(positions)
    out[1:] = rr < settings.premature_frac * float(np.median(rr))
    return out


def qrs_correlation(beats: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """(B,) Pearson correlation of each beat's QRS (samples ``lo:hi`` of all leads) with their median."""
    seg = beats[:, :, lo:hi]
    # Each lead's own offset removed: baseline wander moves the leads independently.
    seg = (seg - seg.mean(axis=2, keepdims=True)).reshape(beats.shape[0], -1)  # (B, L*w)
    ref = np.median(seg, axis=0)
    ref = ref - ref.mean()
    num = seg @ ref
    den = np.linalg.norm(seg, axis=1) * np.linalg.norm(ref)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / den, 0.0)


def heart_rate(positions: np.ndarray, fs: float) -> float:
    """Heart rate in bpm from the median RR of the beats (NaN with fewer than two beats)."""
    if positions.size < 2:
        return float("nan")
    return 60.0 * fs / float(np.median(np.diff(positions)))
