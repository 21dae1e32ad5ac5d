"""Baseline-wander removal, band-pass and mains notch, identical offline and in the stream.

Filtering is **windowed and zero-phase**: each window (12, T) at the model rate is filtered on its
own with ``scipy.signal.sosfiltfilt`` (forward-backward second-order sections, odd extension of
``2 * fs / highpass_hz`` samples at each edge). Training, evaluation and the stream all call
:func:`condition` on the same windows, so their inputs are bit-identical; nothing depends on what
came before the window.

Defaults follow AHA/ACC/HRS 2007 (Kligfield et al.) for zero-phase filtering: a 0.5 Hz
high-pass (at most 0.67 Hz keeps ST segments undistorted when the filter is bidirectional) that
removes baseline wander, and a 40 Hz low-pass (the model rate is 100 Hz). Mains interference at
50/60 Hz is above the 100 Hz model rate's Nyquist frequency and is removed by the resampler's
anti-aliasing filter; the optional notch (``notch_hz``) is for model rates where it is in band.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass

import numpy as np
from scipy import signal as sps

from engine.errors import SignalError
from engine.signal.resample import bridge_gaps

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FilterSpec:
    """What :func:`condition` does. ``None`` switches a stage off."""

    highpass_hz: float | None = 0.5
    lowpass_hz: float | None = 40.0
    notch_hz: float | None = None  # 50.0 or 60.0 where mains is below Nyquist
    notch_q: float = 30.0
    order: int = 2  # Butterworth order of each edge (doubled by the forward-backward pass)


DEFAULT_FILTER = FilterSpec()


@functools.lru_cache(maxsize=64)
def design(spec: FilterSpec, fs: float) -> np.ndarray | None:
    """Second-order sections for ``spec`` at ``fs`` Hz (cached); ``None`` when nothing applies."""
    nyq = fs / 2.0
    hp = spec.highpass_hz if spec.highpass_hz and spec.highpass_hz < nyq else None
    lp = spec.lowpass_hz if spec.lowpass_hz and spec.lowpass_hz < nyq else None
    parts: list[np.ndarray] = []
    if hp and lp:
        if hp >= lp:
            raise SignalError(f"highpass_hz={hp} must be below lowpass_hz={lp}")
        parts.append(sps.butter(spec.order, [hp, lp], btype="bandpass", fs=fs, output="sos"))
    elif hp:
        parts.append(sps.butter(spec.order, hp, btype="highpass", fs=fs, output="sos"))
    elif lp:
        parts.append(sps.butter(spec.order, lp, btype="lowpass", fs=fs, output="sos"))
    if spec.notch_hz:
        if spec.notch_hz < nyq:
            b, a = sps.iirnotch(spec.notch_hz, spec.notch_q, fs=fs)
            parts.append(sps.tf2sos(b, a))
        else:
            log.debug("notch at %s Hz skipped: above Nyquist (%s Hz)", spec.notch_hz, nyq)
    return np.concatenate(parts, axis=0) if parts else None


def condition(x: np.ndarray, fs: float, spec: FilterSpec = DEFAULT_FILTER) -> np.ndarray:
    """Zero-phase filter every lead of ``x`` (..., T) over the whole window.

    Gaps (NaN) are bridged by linear interpolation before filtering and stay bridged; flag them
    with the quality checks *before* conditioning.

    Returns:
        float64 array of the same shape.
    """
    arr = np.asarray(x, dtype=np.float64)
    if fs <= 0 or not np.isfinite(fs):
        raise SignalError(f"sampling rate must be positive, got fs={fs}")
    if arr.shape[-1] < 2:
        raise SignalError(f"cannot filter a window of {arr.shape[-1]} samples")
    arr, _ = bridge_gaps(arr)
    sos = design(spec, float(fs))
    if sos is None:
        return arr.copy()
    reach = 2.0 * fs / spec.highpass_hz if spec.highpass_hz else 3.0 * fs / (spec.lowpass_hz or fs)
    padlen = int(min(arr.shape[-1] - 1, round(reach)))
    return sps.sosfiltfilt(sos, arr, axis=-1, padtype="odd", padlen=padlen)
