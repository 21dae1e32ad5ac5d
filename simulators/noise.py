"""Artefacts of a bedside ECG, generated per electrode so lead algebra still holds.

Noise is added to the nine electrode potentials (RA, LA, LL, V1-V6) and reaches the leads through
the same differences a real amplifier takes (see :func:`simulators.vcg.electrodes_to_independent`),
so Einthoven's and Goldberger's equations still hold on the noisy signal. Kinds and typical sizes
follow the MIT-BIH Noise Stress Test Database (Moody, Muldrow & Mark, Computers in Cardiology 1984)
and AAMI EC13 / IEC 60601-2-27 test signals:

* baseline wander: respiration-locked and slow drift sinusoids (< 0.5 Hz), ~0.1-0.3 mV;
* EMG (muscle) noise: high-pass filtered Gaussian noise, tens of microvolts, larger on limb electrodes;
* powerline interference: 50 or 60 Hz plus a small third harmonic;
* motion bursts: 0.5-3 s of large low-frequency excursions on a few electrodes (Poisson events);
* lead-off: an electrode detaches for seconds; the leads that use it read NaN (or flat 0).

Everything is seeded and streamable: :class:`NoiseSource` produces consecutive blocks whose
concatenation does not depend on the block sizes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np
from scipy import signal as sps

from engine.config import LEADS
from simulators.errors import SimulatorError
from simulators.vcg import ELECTRODES

# Leads that read an electrode (limb electrodes feed the two bipolar leads that use them and all
# three augmented leads, whose Goldberger terminal uses every limb electrode).
LEADS_OF_ELECTRODE: dict[str, tuple[str, ...]] = {
    "RA": ("I", "II", "aVR", "aVL", "aVF"),
    "LA": ("I", "III", "aVR", "aVL", "aVF"),
    "LL": ("II", "III", "aVR", "aVL", "aVF"),
    **{v: (v,) for v in ("V1", "V2", "V3", "V4", "V5", "V6")},
}


@dataclass(frozen=True)
class NoiseSpec:
    """Noise levels and event rates. All zero = a clean signal."""

    baseline_mv: float = 0.08  # amplitude of baseline wander per electrode
    emg_mv: float = 0.01  # RMS of muscle noise per electrode
    powerline_mv: float = 0.005  # amplitude of mains interference per electrode
    powerline_hz: float = 50.0  # 50 (Europe) or 60 (Americas)
    motion_per_min: float = 0.0  # motion bursts per minute
    motion_mv: float = 0.8  # peak size of a motion burst
    lead_off_per_min: float = 0.0  # electrode detachments per minute
    lead_off_s: tuple[float, float] = (2.0, 8.0)  # duration range of a detachment
    lead_off_mode: str = "nan"  # "nan" (gap) or "flat" (amplifier reads 0)

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, float) and (not math.isfinite(v) or v < 0):
                raise SimulatorError(f"noise {f.name}={v!r} must be a finite number >= 0")
        if self.powerline_hz not in (50.0, 60.0):
            raise SimulatorError(f"noise powerline_hz={self.powerline_hz!r} must be 50 or 60")
        if self.lead_off_mode not in ("nan", "flat"):
            raise SimulatorError(f"noise lead_off_mode={self.lead_off_mode!r} must be 'nan' or 'flat'")
        lo, hi = self.lead_off_s
        if not (0 < lo <= hi):
            raise SimulatorError(f"noise lead_off_s={self.lead_off_s!r} must be (min, max) with 0 < min <= max")

    @classmethod
    def clean(cls) -> "NoiseSpec":
        return cls(baseline_mv=0.0, emg_mv=0.0, powerline_mv=0.0)


@dataclass(frozen=True)
class Burst:
    """A motion burst on some electrodes: Hann-windowed sum of low-frequency sinusoids."""

    start_s: float
    dur_s: float
    electrodes: tuple[int, ...]
    freqs: tuple[float, ...]
    phases: tuple[float, ...]
    amp_mv: float


@dataclass(frozen=True)
class LeadOff:
    """An electrode detached from ``start_s`` for ``dur_s`` seconds."""

    start_s: float
    dur_s: float
    electrode: str


def _poisson_times(rng: np.random.Generator, rate_per_min: float, duration_s: float) -> list[float]:
    if rate_per_min <= 0:
        return []
    n = int(rng.poisson(rate_per_min * duration_s / 60.0))
    return sorted(float(x) for x in rng.uniform(0.0, duration_s, n))


class NoiseSource:
    """Streaming electrode noise and lead-off mask for one patient.

    Args:
        spec: noise levels.
        fs: sampling rate (Hz).
        duration_s: length of the session (events are scheduled within it).
        seed: seed; the same seed gives the same noise.
        resp_hz: respiration rate, which the baseline wander follows.
    """

    def __init__(self, spec: NoiseSpec, fs: float, duration_s: float, seed: int, resp_hz: float = 0.25) -> None:
        self.spec, self.fs = spec, float(fs)
        rng = np.random.default_rng([seed, 0x4E01])
        n_e = len(ELECTRODES)
        # Baseline: one respiration-locked and two slow drift components per electrode.
        self._bw_f = np.stack([np.full(n_e, resp_hz), rng.uniform(0.02, 0.06, n_e), rng.uniform(0.06, 0.12, n_e)])
        self._bw_a = spec.baseline_mv * np.stack([rng.uniform(0.3, 0.6, n_e), rng.uniform(0.3, 0.8, n_e), rng.uniform(0.1, 0.4, n_e)])
        self._bw_p = rng.uniform(0, 2 * np.pi, (3, n_e))
        self._pl_a = spec.powerline_mv * rng.uniform(0.5, 1.5, n_e)
        self._pl_p = rng.uniform(0, 2 * np.pi, n_e)
        self._emg_scale = spec.emg_mv * np.array([1.5, 1.5, 1.5] + [1.0] * 6)
        self._emg_rng = np.random.default_rng([seed, 0x4E02])
        self._sos = sps.butter(2, 20.0, "highpass", fs=self.fs, output="sos") if self.fs > 60 else None
        self._zi = np.zeros((self._sos.shape[0], n_e, 2)) if self._sos is not None else None
        ev = np.random.default_rng([seed, 0x4E03])
        self.bursts: list[Burst] = []
        for t in _poisson_times(ev, spec.motion_per_min, duration_s):
            k = int(ev.integers(1, 4))
            self.bursts.append(Burst(t, float(ev.uniform(0.5, 3.0)), tuple(int(i) for i in ev.choice(n_e, k, replace=False)),
                                     tuple(float(f) for f in ev.uniform(0.5, 6.0, 3)), tuple(float(p) for p in ev.uniform(0, 2 * np.pi, 3)),
                                     float(spec.motion_mv * ev.uniform(0.4, 1.0))))
        self.lead_offs: list[LeadOff] = [
            LeadOff(t, float(ev.uniform(*spec.lead_off_s)), str(ev.choice(ELECTRODES)))
            for t in _poisson_times(ev, spec.lead_off_per_min, duration_s)
        ]
        self.pos = 0

    def read(self, n: int) -> np.ndarray:
        """The next ``n`` samples of electrode noise, ``(9, n)`` mV."""
        t = (self.pos + np.arange(n)) / self.fs
        out = np.zeros((len(ELECTRODES), n))
        if n == 0:
            return out
        if self.spec.baseline_mv > 0:
            for k in range(3):
                out += self._bw_a[k][:, None] * np.sin(2 * np.pi * self._bw_f[k][:, None] * t[None, :] + self._bw_p[k][:, None])
        if self.spec.powerline_mv > 0:
            ph = 2 * np.pi * self.spec.powerline_hz * t[None, :] + self._pl_p[:, None]
            out += self._pl_a[:, None] * (np.sin(ph) + 0.15 * np.sin(3 * ph))
        if self.spec.emg_mv > 0:
            w = self._emg_rng.standard_normal((n, len(ELECTRODES))).T  # row-major draw: block-size independent
            if self._sos is not None:
                w, self._zi = sps.sosfilt(self._sos, w, axis=1, zi=self._zi)
            out += self._emg_scale[:, None] * w
        for b in self.bursts:
            lo, hi = b.start_s, b.start_s + b.dur_s
            m = (t >= lo) & (t < hi)
            if not m.any():
                continue
            tt = t[m]
            env = np.sin(np.pi * (tt - lo) / b.dur_s) ** 2
            wave = sum(np.sin(2 * np.pi * f * tt + p) for f, p in zip(b.freqs, b.phases)) / 3.0
            for e in b.electrodes:
                out[e, m] += b.amp_mv * env * wave
        self.pos += n
        return out

    def lead_off_mask(self, start: int, n: int) -> np.ndarray:
        """``(12, n)`` bool, True where a lead is disconnected, for samples ``start .. start+n``."""
        mask = np.zeros((len(LEADS), n), dtype=bool)
        if not self.lead_offs:
            return mask
        t = (start + np.arange(n)) / self.fs
        for ev in self.lead_offs:
            m = (t >= ev.start_s) & (t < ev.start_s + ev.dur_s)
            if m.any():
                for lead in LEADS_OF_ELECTRODE[ev.electrode]:
                    mask[LEADS.index(lead), m] = True
        return mask
