"""QRS onset and J point of a median beat on one fiducial common to all leads, and pacing spikes.

AHA/ACC/HRS 2009 recommendations for the standardization and interpretation of the ECG (part VI,
acute ischaemia/infarction, Wagner et al., Circulation 119, 2009) and IEC 60601-2-51 measure
intervals and ST deviation from *global* fiducials: QRS onset is the earliest onset in any lead
and the J point the latest QRS end in any lead, found on the simultaneous median beats. We find
both on the spatial velocity of the median beats, ``SV(t) = sqrt(sum_L (dV_L/dt)^2)``, the
classic vectorcardiographic delineator (e.g. Laguna et al., "Automatic detection of wave
boundaries in multilead ECG signals", Comput. Biomed. Res. 27, 1994, uses the same multilead
principle): inside the QRS the heart vector moves fast, in the PR and ST segments it is nearly
still, so the QRS starts and ends where SV crosses a fraction of its QRS peak. One fiducial for
all leads is what keeps lead algebra: ST(III) = ST(II) - ST(I) holds for the measurement because
each lead is read at the same instants.

Crossings are interpolated between samples, so the J point is found to a fraction of the 10 ms
sample of the stream's 100 Hz windows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class DelineationSettings:
    """Thresholds of the delineator.

    Attributes:
        sv_frac: QRS boundaries are where SV falls below this fraction of its QRS peak.
        peak_search_s: the SV peak is looked for this far either side of the beat fiducial.
        onset_search_s: QRS onset is at most this long before the fiducial.
        j_search_s: the J point is at most this long after the fiducial.
        still_s: below the threshold for this long (at least one sample) to count as the segment.
        spike_mv: a pacing spike jumps at least this much in one sample (only seen at >= 500 Hz).
    """

    sv_frac: float = 0.1
    peak_search_s: float = 0.06
    onset_search_s: float = 0.15
    j_search_s: float = 0.2
    still_s: float = 0.02
    spike_mv: float = 1.0


DEFAULT_DELINEATION = DelineationSettings()


@dataclass(frozen=True)
class Fiducials:
    """QRS onset and J point relative to the beat fiducial, in seconds (NaN where not found)."""

    onset_s: float
    j_s: float

    @property
    def qrs_ms(self) -> float:
        return 1000.0 * (self.j_s - self.onset_s)

    @property
    def found(self) -> bool:
        return bool(np.isfinite(self.onset_s) and np.isfinite(self.j_s))


def spatial_velocity(median_beats: np.ndarray, fs: float) -> np.ndarray:
    """SV of (L, W) median beats in mV/s: (W - 1,), entry ``i`` between samples ``i`` and ``i + 1``."""
    d = np.diff(median_beats, axis=1) * fs  # (L, W-1)
    return np.sqrt(np.sum(d * d, axis=0))


def _first_still(sv: np.ndarray, start: int, stop: int, step: int, thr: float, run: int) -> float:
    """Index (fractional) where ``sv`` first falls below ``thr`` for ``run`` entries, walking by ``step``."""
    i = start
    while (i - stop) * step < 0:
        ahead = sv[i : i + run * step : step] if step > 0 else sv[max(i - run + 1, 0) : i + 1][::-1]
        if ahead.size == run and np.all(ahead < thr):
            prev = sv[i - step]
            frac = (prev - thr) / (prev - sv[i]) if prev != sv[i] else 0.0
            return float(i - step + step * frac)
        i += step
    return float("nan")


def delineate(median_beats: np.ndarray, fs: float, zero: int, settings: DelineationSettings = DEFAULT_DELINEATION) -> Fiducials:
    """QRS onset and J point of (L, W) median beats whose fiducial is sample ``zero``.

    Args:
        median_beats: usable leads only, mV; any baseline (SV is a derivative).
        fs: sampling rate of the beats in Hz.
        zero: the sample of the beat fiducial (the QRS energy peak).
        settings: thresholds.

    Returns:
        :class:`Fiducials` in seconds from the fiducial (NaN when a boundary is not found).
    """
    sv = spatial_velocity(median_beats, fs)
    W = sv.size
    reach = max(1, int(round(settings.peak_search_s * fs)))
    lo, hi = max(0, zero - reach), min(W, zero + reach + 1)
    if hi <= lo:
        return Fiducials(float("nan"), float("nan"))
    peak = lo + int(np.argmax(sv[lo:hi]))
    thr = settings.sv_frac * float(sv[peak])
    run = max(1, int(round(settings.still_s * fs)))
    first = max(1, zero - int(round(settings.onset_search_s * fs)))
    last = min(W - 1, zero + int(round(settings.j_search_s * fs)))
    # SV entry i lies between samples i and i + 1, hence the half sample.
    on = _first_still(sv, peak - 1, first - 1, -1, thr, run)
    j = _first_still(sv, peak + 1, last, 1, thr, run)
    return Fiducials(onset_s=(on + 0.5 - zero) / fs, j_s=(j + 0.5 - zero) / fs)


def pacing_spikes(x: np.ndarray, fs: float, settings: DelineationSettings = DEFAULT_DELINEATION) -> int:
    """Number of pacemaker-spike-like events in ``x`` (L, T) mV: a jump of ``spike_mv`` in one sample
    that reverses within two samples, in any lead (only resolvable at 500 Hz and above; at 100 Hz
    the anti-alias filter has removed the spike, and the monitor's pacer flag must be used)."""
    if fs < 500:
        return 0
    d = np.diff(x, axis=1)  # (L, T-1)
    big = np.abs(d) >= settings.spike_mv
    rev = np.zeros_like(big)
    for k in (1, 2):
        rev[:, :-k] |= (np.abs(d[:, k:]) >= 0.5 * settings.spike_mv) & (np.sign(d[:, k:]) == -np.sign(d[:, :-k]))
    hits = np.flatnonzero(np.any(big & rev, axis=0))
    if hits.size == 0:
        return 0
    # One spike spans a few samples and several leads: count distinct events 20 ms apart.
    return int(1 + np.count_nonzero(np.diff(hits) > 0.02 * fs))
