"""Synthetic 12-lead ECG of one patient: rhythm, morphology, infarct, confounders and noise, streamed.

Rhythm: an RR tachogram with the bimodal power spectrum of McSharry et al. (IEEE TBME 50(3),
2003): a low-frequency (Mayer wave, ~0.1 Hz) and a high-frequency (respiratory sinus arrhythmia,
at the respiration rate) Gaussian peak with a chosen LF/HF ratio, random phases, scaled to a
chosen RR standard deviation (Task Force of the ESC and NASPE, "Heart rate variability",
Circulation 93, 1996). Respiration also sways the electrical axis by a few degrees and modulates
QRS amplitude (thoracic impedance), and drives part of the baseline wander (:mod:`simulators.noise`).

Morphology and projection: :mod:`simulators.vcg`; infarct and confounders: :mod:`simulators.mi`.

:class:`EcgGenerator` streams ``(12, n)`` blocks in mV, lead order :data:`engine.config.LEADS`, at
any sampling rate; its output does not depend on how it is cut into blocks, and the same seed
gives the same signal.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from engine.config import LEADS
from simulators.errors import SimulatorError
from simulators.mi import CONFOUNDERS, MiSpec, apply_confounders, apply_mi
from simulators.noise import NoiseSource, NoiseSpec
from simulators.vcg import derive_12, electrodes_to_independent, normal_beat, project, render_events, rotation, support, transform


@dataclass(frozen=True)
class HeartParams:
    """One patient's rhythm and anatomy."""

    hr_bpm: float = 70.0
    rr_std_frac: float = 0.04  # RR standard deviation / mean RR
    lf_hf: float = 1.0  # LF/HF power ratio
    resp_hz: float = 0.25  # respiration rate (15 / min)
    axis_deg: float = 0.0  # frontal-plane rotation of the heart vector from the template
    twist_deg: float = 0.0  # horizontal-plane rotation
    amplitude: float = 1.0  # overall voltage scale (body habitus)
    pr_s: float = 0.16
    qt_scale: float = 1.0

    def __post_init__(self) -> None:
        if not (20.0 <= self.hr_bpm <= 250.0):
            raise SimulatorError(f"hr_bpm={self.hr_bpm!r} must be in 20..250")
        if not (0.0 <= self.rr_std_frac <= 0.3) or self.lf_hf <= 0:
            raise SimulatorError(f"rr_std_frac={self.rr_std_frac!r} must be in 0..0.3 and lf_hf={self.lf_hf!r} > 0")
        if not (0.05 <= self.resp_hz <= 1.0) or not (0.1 <= self.amplitude <= 5.0):
            raise SimulatorError(f"resp_hz={self.resp_hz!r} must be in 0.05..1, amplitude={self.amplitude!r} in 0.1..5")

    @classmethod
    def draw(cls, rng: np.random.Generator, hr_bpm: tuple[float, float] = (55.0, 95.0)) -> "HeartParams":
        """A plausible adult at rest (heart rate uniform in ``hr_bpm``)."""
        return cls(
            hr_bpm=float(rng.uniform(*hr_bpm)),
            rr_std_frac=float(rng.uniform(0.02, 0.06)),
            lf_hf=float(rng.uniform(0.5, 2.0)),
            resp_hz=float(rng.uniform(0.2, 0.33)),
            axis_deg=float(rng.normal(0.0, 12.0)),
            twist_deg=float(rng.normal(0.0, 8.0)),
            amplitude=float(rng.uniform(0.8, 1.2)),
            pr_s=float(rng.uniform(0.14, 0.18)),
            qt_scale=float(rng.uniform(0.95, 1.05)),
        )


@dataclass(frozen=True)
class PatientSpec:
    """Everything that defines one synthetic patient's ECG."""

    heart: HeartParams = field(default_factory=HeartParams)
    mi: MiSpec | None = None
    confounders: tuple[str, ...] = ()
    noise: NoiseSpec = field(default_factory=NoiseSpec)

    def __post_init__(self) -> None:
        bad = [c for c in self.confounders if c not in CONFOUNDERS]
        if bad:
            raise SimulatorError(f"unknown confounders {bad}; choose from {list(CONFOUNDERS)}")


def rr_tachogram(heart: HeartParams, duration_s: float, rng: np.random.Generator, grid_hz: float = 4.0) -> tuple[np.ndarray, np.ndarray]:
    """RR interval (s) sampled on a regular time grid: ``(times, rr)`` covering ``duration_s``.

    Spectral synthesis as in McSharry 2003: amplitude ``sqrt(S(f))`` with S a sum of two Gaussians
    (LF at 0.1 Hz, HF at the respiration rate, widths 0.01 Hz), uniform random phases.
    """
    n = int(2 ** math.ceil(math.log2(max(64, (duration_s + 10.0) * grid_hz))))
    f = np.fft.rfftfreq(n, 1.0 / grid_hz)
    s = heart.lf_hf * np.exp(-0.5 * ((f - 0.1) / 0.01) ** 2) + np.exp(-0.5 * ((f - heart.resp_hz) / 0.01) ** 2)
    spec = np.sqrt(s) * np.exp(1j * rng.uniform(0, 2 * np.pi, f.size))
    spec[0] = 0.0
    x = np.fft.irfft(spec, n)
    x = x / (x.std() + 1e-12)
    mean_rr = 60.0 / heart.hr_bpm
    rr = mean_rr * (1.0 + heart.rr_std_frac * x)
    rr = np.clip(rr, 0.25, 3.0)
    t = np.arange(n) / grid_hz - 5.0
    return t, rr


def beat_times(heart: HeartParams, duration_s: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """R-peak times (s from stream start) and their preceding RR intervals, covering ``-2 .. duration + 2`` s."""
    grid_t, grid_rr = rr_tachogram(heart, duration_s, rng)
    t = -2.0 + float(rng.uniform(0.0, 60.0 / heart.hr_bpm))
    times, rrs = [], []
    rr = float(np.interp(t, grid_t, grid_rr))
    while t < duration_s + 2.0:
        times.append(t)
        rrs.append(rr)
        rr = float(np.interp(t, grid_t, grid_rr))
        t += rr
    return np.asarray(times), np.asarray(rrs)


class EcgGenerator:
    """Streams one synthetic patient's 12-lead ECG.

    Args:
        spec: the patient.
        fs: sampling rate in Hz (any rate; 100, 250, 500, 1000 are typical).
        duration_s: session length; beats and noise events are scheduled within it.
        seed: seed; the same seed and spec give the same signal.
    """

    def __init__(self, spec: PatientSpec, fs: float, duration_s: float, seed: int) -> None:
        if not (fs > 0 and math.isfinite(fs)) or not (duration_s > 0 and math.isfinite(duration_s)):
            raise SimulatorError(f"fs={fs!r} and duration_s={duration_s!r} must be finite and > 0")
        self.spec, self.fs, self.duration_s = spec, float(fs), float(duration_s)
        heart = spec.heart
        if "tachycardia" in spec.confounders and heart.hr_bpm < 100:
            rng_hr = np.random.default_rng([seed, 0x7AC])
            heart = HeartParams(**{**heart.__dict__, "hr_bpm": float(rng_hr.uniform(110, 140))})
        self.heart = heart
        rng = np.random.default_rng([seed, 0xECC])
        self.r_times, self.rr = beat_times(heart, duration_s, rng)
        self._resp_phase = float(rng.uniform(0, 2 * np.pi))
        self._sigma_aa = 0.4 / self.fs
        self.noise = NoiseSource(spec.noise, fs, duration_s, seed, resp_hz=heart.resp_hz)
        self.n_total = int(round(duration_s * fs))
        self.pos = 0
        self._events: dict[int, tuple[list, float, float]] = {}  # beat -> (events, support); a beat spans blocks

    def beat_events(self, k: int) -> list:
        """The P-QRS-T events of beat ``k`` with infarct, confounders, respiration and anatomy applied."""
        h, t_r = self.heart, float(self.r_times[k])
        events = normal_beat(float(self.rr[k]), h.pr_s, h.qt_scale)
        events = apply_confounders(events, self.spec.confounders)
        if self.spec.mi is not None:
            events = apply_mi(events, self.spec.mi, t_r)
        resp = math.sin(2 * np.pi * h.resp_hz * t_r + self._resp_phase)
        rot = rotation(h.axis_deg + 3.0 * resp, h.twist_deg)
        return transform(events, rot, h.amplitude * (1.0 + 0.05 * resp))

    def _cardiac(self, start: int, n: int) -> np.ndarray:
        t = (start + np.arange(n)) / self.fs
        vcg = np.zeros((3, n))
        if n == 0:
            return vcg
        lo_t, hi_t = t[0], t[-1]
        first = max(0, int(np.searchsorted(self.r_times, lo_t - 1.5)) - 1)
        for k in range(first, len(self.r_times)):
            t_r = float(self.r_times[k])
            if t_r - 1.0 > hi_t:
                break
            if k not in self._events:
                ev = self.beat_events(k)
                self._events[k] = (ev, *support(ev))
            events, a, b = self._events[k]
            i0 = int(np.searchsorted(t, t_r + a))
            i1 = int(np.searchsorted(t, t_r + b, side="right"))
            if i1 > i0:
                vcg[:, i0:i1] += render_events(events, t[i0:i1] - t_r, self._sigma_aa)
        for k in [k for k in self._events if k < first]:
            del self._events[k]
        return vcg

    def read(self, n: int) -> np.ndarray:
        """The next ``n`` samples, ``(12, n)`` float32 mV (NaN or 0 where a lead is off)."""
        if n < 0:
            raise SimulatorError(f"read(n={n}) needs n >= 0")
        start = self.pos
        indep = project(self._cardiac(start, n)) + electrodes_to_independent(self.noise.read(n))
        out = derive_12(indep).astype(np.float32)
        mask = self.noise.lead_off_mask(start, n)
        if mask.any():
            out[mask] = np.nan if self.spec.noise.lead_off_mode == "nan" else 0.0
        self.pos += n
        return out

    def read_all(self) -> np.ndarray:
        """The rest of the session up to ``duration_s``, ``(12, S)``."""
        return self.read(max(0, self.n_total - self.pos))


@dataclass
class SyntheticEcg:
    """A generated recording: ``signal (12, S)`` mV, ``fs``, R-peak times (s) inside it, lead names."""

    signal: np.ndarray
    fs: float
    r_times: np.ndarray
    leads: tuple[str, ...] = LEADS


def synthesize(spec: PatientSpec, fs: float = 500.0, duration_s: float = 10.0, seed: int = 0) -> SyntheticEcg:
    """Generate a whole recording at once (see :class:`EcgGenerator`)."""
    gen = EcgGenerator(spec, fs, duration_s, seed)
    x = gen.read_all()
    r = gen.r_times[(gen.r_times >= 0) & (gen.r_times < duration_s)]
    return SyntheticEcg(x, float(fs), r)
