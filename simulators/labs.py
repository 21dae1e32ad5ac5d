"""Lab results of a synthetic patient: baselines, infarct kinetics, draw schedules and turnaround.

Markers and units are those of :mod:`engine.labs` (LOINC keyed, canonical units).

Baselines (healthy adults) are drawn per patient:

* hs-cTnI: lognormal, median 3 ng/L, 99th percentile ~26 ng/L (Abbott Architect hs-cTnI;
  Apple et al., "Cardiac troponin assays: guide to understanding analytical characteristics",
  Clin. Chem. 63, 2017 / IFCC C-CB table).
* hs-cTnT: lognormal, median 5 ng/L, 99th percentile 14 ng/L (Roche Elecsys; Saenger et al.,
  Clin. Chim. Acta 412, 2011).
* CK-MB mass: lognormal, median 1.5 ng/mL, upper reference ~5 ng/mL.
* D-dimer: lognormal, median 250 ng/mL FEU (cut-off 500; Righini et al., JAMA 311, 2014).
* WBC normal, 7.0 +- 1.8 x10^3/uL; potassium normal, 4.2 +- 0.3 mmol/L; creatinine lognormal,
  median 0.9 mg/dL (reference intervals: Tietz, Clinical Guide to Laboratory Tests).

Infarct kinetics, ``t`` hours after onset (release into and clearance from plasma as a
one-compartment model with first-order input, a Bateman function, after a short lag):
troponin is detectable above the 99th percentile within ~1-3 h, peaks ~12-24 h and falls slowly
over days (``tau_in`` 5 h, ``tau_out`` 60 h); CK-MB rises later and clears faster, back to
normal in 2-3 days (``tau_in`` 5 h, ``tau_out`` 14 h) (Thygesen et al., Fourth Universal
Definition of MI, 2018; ESC 0h/1h algorithm, Collet et al., Eur. Heart J. 42, 2021). WBC rises a
little (reactive leukocytosis).

Draws: at presentation (full panel), at 1 h and 3 h (troponin, ESC 0h/1h and 0h/3h algorithms),
then every 6-8 h (full panel). Each result is reported after a 45-60 min turnaround, so a
result has ``observed_ns`` (specimen time) and ``reported_ns`` (when it is published).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from engine.labs import LAB_FEATURES, lab_feature
from simulators.errors import SimulatorError

TNI, TNT, CKMB, DDIMER, WBC, K, CREAT = (f.loinc for f in LAB_FEATURES)
TROPONINS = {"I": (TNI,), "T": (TNT,), "both": (TNI, TNT)}
# (median, log-sd) for lognormal baselines; (mean, sd) for normal ones.
_LOGNORMAL = {TNI: (3.0, 0.93), TNT: (5.0, 0.44), CKMB: (1.5, 0.52), DDIMER: (250.0, 0.6), CREAT: (0.9, 0.2)}
_NORMAL = {WBC: (7.0, 1.8), K: (4.2, 0.3)}
# Peak of the infarct increment (lognormal median, log-sd) and kinetics (lag h, tau_in h, tau_out h).
_PEAK = {TNI: (4000.0, 1.0), TNT: (1500.0, 1.0), CKMB: (60.0, 0.8), WBC: (4.0, 0.3)}
KINETICS = {TNI: (0.5, 5.0, 60.0), TNT: (0.5, 5.0, 60.0), CKMB: (1.0, 5.0, 14.0), WBC: (1.0, 4.0, 30.0)}
_CV = {TNI: 0.06, TNT: 0.06, CKMB: 0.07, DDIMER: 0.08, WBC: 0.03, K: 0.02, CREAT: 0.04}  # analytical CV


@dataclass(frozen=True)
class LabSchedule:
    """When specimens are drawn (hours from presentation) and how long results take."""

    initial_h: tuple[float, ...] = (0.0, 1.0, 3.0)
    repeat_h: tuple[float, float] = (6.0, 8.0)  # later draws every U(6, 8) h
    turnaround_min: tuple[float, float] = (45.0, 60.0)
    troponin: str = "I"  # "I", "T" or "both"

    def __post_init__(self) -> None:
        if self.troponin not in TROPONINS:
            raise SimulatorError(f"lab troponin={self.troponin!r} must be one of {sorted(TROPONINS)}")
        if not self.initial_h or any(h < 0 for h in self.initial_h):
            raise SimulatorError(f"lab initial_h={self.initial_h!r} must be non-empty hours >= 0")
        lo, hi = self.repeat_h
        if not (0 < lo <= hi):
            raise SimulatorError(f"lab repeat_h={self.repeat_h!r} must be (min, max) with 0 < min <= max")
        lo, hi = self.turnaround_min
        if not (0 <= lo <= hi):
            raise SimulatorError(f"lab turnaround_min={self.turnaround_min!r} must be (min, max) with 0 <= min <= max")


@dataclass(frozen=True)
class LabDraw:
    """One result: marker, value in the canonical unit, specimen and report times (s from stream start)."""

    loinc: str
    value: float
    unit: str
    observed_s: float
    reported_s: float


def bateman(t_h: float, lag_h: float, tau_in: float, tau_out: float) -> float:
    """Normalised (peak = 1) one-compartment curve with first-order input, ``t_h`` hours after onset."""
    t = t_h - lag_h
    if t <= 0:
        return 0.0
    t_peak = math.log(tau_out / tau_in) * tau_in * tau_out / (tau_out - tau_in)
    peak = math.exp(-t_peak / tau_out) - math.exp(-t_peak / tau_in)
    return (math.exp(-t / tau_out) - math.exp(-t / tau_in)) / peak


def hours_to_cross(loinc: str, baseline: float, peak: float, threshold: float) -> float | None:
    """Hours after onset when ``baseline + peak * curve`` first exceeds ``threshold`` (None if never within 72 h)."""
    for i in range(0, 72 * 60):
        t = i / 60.0
        if baseline + peak * bateman(t, *KINETICS[loinc]) > threshold:
            return t
    return None


@dataclass
class LabPatient:
    """One patient's lab trajectory: baselines, infarct onset and size. Values are noise-free truths."""

    baseline: dict[str, float]
    peak: dict[str, float] = field(default_factory=dict)
    mi_onset_s: float | None = None

    @classmethod
    def draw(cls, rng: np.random.Generator, mi_onset_s: float | None = None, size: float = 1.0) -> "LabPatient":
        """Draw baselines from the reference distributions; with an onset, an infarct of relative ``size``."""
        base: dict[str, float] = {}
        for f in LAB_FEATURES:
            if f.loinc in _LOGNORMAL:
                med, sd = _LOGNORMAL[f.loinc]
                base[f.loinc] = float(med * math.exp(sd * rng.standard_normal()))
            else:
                mu, sd = _NORMAL[f.loinc]
                base[f.loinc] = float(max(0.1, mu + sd * rng.standard_normal()))
        base[TNI] = min(base[TNI], 20.0)  # a reference patient is below the 99th percentile
        base[TNT] = min(base[TNT], 12.0)
        peak: dict[str, float] = {}
        if mi_onset_s is not None:
            for loinc, (med, sd) in _PEAK.items():
                peak[loinc] = float(size * med * math.exp(sd * rng.standard_normal()))
        return cls(base, peak, mi_onset_s)

    def true_value(self, loinc: str, t_s: float) -> float:
        """The noise-free concentration at ``t_s`` seconds from stream start (canonical unit)."""
        v = self.baseline[loinc]
        if self.mi_onset_s is not None and loinc in self.peak:
            v += self.peak[loinc] * bateman((t_s - self.mi_onset_s) / 3600.0, *KINETICS[loinc])
        return v


def draw_times(schedule: LabSchedule, presentation_s: float, until_s: float, rng: np.random.Generator) -> list[tuple[float, bool]]:
    """Specimen times (s) up to ``until_s`` with a flag: True = full panel, False = troponin only."""
    out: list[tuple[float, bool]] = []
    for k, h in enumerate(schedule.initial_h):
        out.append((presentation_s + h * 3600.0, k == 0))
    t = out[-1][0]
    while True:
        t += float(rng.uniform(*schedule.repeat_h)) * 3600.0
        if t > until_s:
            break
        out.append((t, True))
    return [(s, full) for s, full in out if s <= until_s]


def simulate_labs(patient: LabPatient, schedule: LabSchedule, presentation_s: float, until_s: float, seed: int) -> list[LabDraw]:
    """All results whose specimen is taken by ``until_s``, sorted by report time.

    Results of specimens taken before the stream starts (``presentation_s < 0``) have negative
    times: they already sit in the record when monitoring begins.
    """
    rng = np.random.default_rng([seed, 0x1AB])
    tropo = TROPONINS[schedule.troponin]
    draws: list[LabDraw] = []
    for t_obs, full in draw_times(schedule, presentation_s, until_s, rng):
        turnaround = float(rng.uniform(*schedule.turnaround_min)) * 60.0
        markers = [f.loinc for f in LAB_FEATURES if full and f.loinc not in (TNI, TNT)] + list(tropo)
        for loinc in markers:
            feat = lab_feature(loinc)
            true = patient.true_value(loinc, t_obs)
            value = max(0.0, true * (1.0 + _CV[loinc] * float(rng.standard_normal())))
            value = min(value, feat.plausible_max)
            digits = 2 if value < 10 else 1 if value < 1000 else 0
            draws.append(LabDraw(loinc, round(value, digits), feat.unit, t_obs, t_obs + turnaround))
    draws.sort(key=lambda d: (d.reported_s, d.loinc))
    return draws
