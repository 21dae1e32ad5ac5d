"""Myocardial infarction by territory, its evolution over time, and the confounders that mimic it.

An acute coronary occlusion makes the ischaemic zone a source of *injury current* during the ST
segment; on the body surface it is a dipole pointing from healthy towards injured myocardium
(Holland & Brooks, "TQ-ST segment mapping", Am. J. Cardiol. 40, 1977). We add that dipole to the
vectorcardiogram between the J point and the end of T (:class:`simulators.vcg.Plateau`), so the
leads facing the territory show ST elevation and the opposite leads show reciprocal depression
purely from the lead-field projection (e.g. inferior: ST up in II, III, aVF, ST down in aVL and I).

Evolution with time since onset ``t`` (Thygesen et al., Fourth Universal Definition of MI,
Circulation 138, 2018; Goldberger, Clinical Electrocardiography, ch. 9):

* hyperacute T waves within minutes, fading over about an hour (``hyperacute``);
* ST elevation developing over a few minutes, persisting for hours, resolving over days (``st``);
* pathological Q waves (loss of forces towards the territory) from about 2-6 h, established by 12 h (``q``);
* T-wave inversion from about 6-24 h (``t_inversion``).

Confounders (ST changes that are not an infarct): left bundle branch block (wide QRS with discordant
ST-T), early repolarisation (diffuse concave ST elevation with a J notch and no reciprocal
depression except aVR), and sinus tachycardia (handled as a heart rate in :mod:`simulators.ecg`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from simulators.errors import SimulatorError
from simulators.vcg import Event, Plateau, Wave, t_end, unit

# Injury-current directions in Frank coordinates (X left, Y foot, Z back).
TERRITORIES: dict[str, tuple[float, float, float]] = {
    "anterior": (0.25, -0.30, -1.0),  # LAD: V1-V4 up, reciprocal inferior
    "septal": (-0.30, 0.0, -1.0),  # proximal septal: V1-V2 up
    "inferior": (-0.25, 1.0, 0.0),  # RCA: II, III, aVF up; aVL, I down
    "lateral": (1.0, -0.35, 0.15),  # circumflex / diagonal: I, aVL, V5-V6 up; III, aVF down
    "posterior": (0.0, 0.1, 1.0),  # posterior: ST depression V1-V3 (reciprocal of posterior leads)
}
CONFOUNDERS: tuple[str, ...] = ("lbbb", "early_repol", "tachycardia")
_EARLY_REPOL_DIR = (0.8, 0.5, -0.5)  # chosen so aVL ~ 0: diffuse elevation, only aVR depressed


@dataclass(frozen=True)
class MiSpec:
    """An infarct: territory, onset (s relative to the stream start; negative = before), ST size (mV)."""

    territory: str
    onset_s: float
    st_mv: float = 0.25

    def __post_init__(self) -> None:
        if self.territory not in TERRITORIES:
            raise SimulatorError(f"unknown MI territory {self.territory!r}; choose one of {sorted(TERRITORIES)}")
        if not (0.0 < self.st_mv <= 2.0) or not math.isfinite(self.onset_s):
            raise SimulatorError(f"MI st_mv={self.st_mv} must be in (0, 2] and onset_s={self.onset_s} finite")

    @property
    def direction(self) -> np.ndarray:
        return unit(TERRITORIES[self.territory])


@dataclass(frozen=True)
class MiStage:
    """How far each ECG sign of an infarct has developed, each in [0, 1]."""

    hyperacute: float
    st: float
    q: float
    t_inversion: float


def _logistic(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def mi_stage(t_since_onset_s: float) -> MiStage:
    """The stage of the ECG signs ``t_since_onset_s`` seconds after occlusion (all 0 before onset)."""
    t = t_since_onset_s
    if t <= 0:
        return MiStage(0.0, 0.0, 0.0, 0.0)
    hour = 3600.0
    hyper = (1.0 - math.exp(-t / 60.0)) * math.exp(-t / 2400.0)
    st = (1.0 - math.exp(-t / 180.0)) * math.exp(-max(0.0, t - 12 * hour) / (24 * hour))
    q = _logistic((t - 5 * hour) / (1.2 * hour))
    tinv = _logistic((t - 14 * hour) / (3 * hour))
    return MiStage(hyper, st, q, tinv)


def apply_mi(events: list[Event], mi: MiSpec, t_beat_s: float) -> list[Event]:
    """The beat's events with the infarct's signs at time ``t_beat_s`` (s from stream start) added."""
    stage = mi_stage(t_beat_s - mi.onset_s)
    if stage == MiStage(0.0, 0.0, 0.0, 0.0):
        return events
    u = mi.direction
    a = mi.st_mv
    out: list[Event] = []
    for e in events:
        if isinstance(e, Wave) and e.name == "R" and stage.q > 0:
            # Necrosis removes the forces towards the territory.
            toward = max(0.0, float(np.dot(e.vector, u)))
            e = replace(e, vector=tuple(np.asarray(e.vector) - 0.6 * stage.q * toward * u))
        if isinstance(e, Wave) and e.name == "T1":
            boost = stage.hyperacute * 2.2 * a - stage.t_inversion * 2.6 * a
            e = replace(e, vector=tuple(np.asarray(e.vector) + boost * u), sigma=e.sigma * (1.0 + 0.25 * stage.hyperacute))
        out.append(e)
    end = t_end(events)
    if stage.st > 0:
        out.append(Plateau("ST-injury", 0.040, end - 0.02, 0.006, 0.03, tuple(stage.st * a * u)))
    if stage.q > 0:
        out.append(Wave("Q-path", -0.016, 0.013, tuple(-0.35 * stage.q * u)))
    return out


def apply_confounders(events: list[Event], confounders: tuple[str, ...]) -> list[Event]:
    """The beat's events with LBBB and/or early repolarisation morphology (tachycardia is a rate)."""
    for c in confounders:
        if c not in CONFOUNDERS:
            raise SimulatorError(f"unknown confounder {c!r}; choose from {list(CONFOUNDERS)}")
    out = list(events)
    end = t_end(events)
    if "lbbb" in confounders:
        # Septum activated right-to-left: no septal q, broad notched R leftward-posterior, QRS ~140 ms.
        out = [e for e in out if not (isinstance(e, Wave) and e.name in ("Q", "R", "S"))]
        main = unit((0.75, 0.25, 0.65))
        out += [
            Wave("R-lbbb1", -0.015, 0.022, tuple(1.0 * main)),
            Wave("R-lbbb2", 0.045, 0.026, tuple(1.1 * unit((0.8, 0.1, 0.6)))),
        ]
        # Secondary repolarisation change: ST-T discordant to the QRS.
        out = [replace(e, vector=tuple(np.asarray(e.vector) * 0.3 - 0.35 * main)) if isinstance(e, Wave) and e.name == "T1" else e
               for e in out]
        out.append(Plateau("ST-lbbb", 0.10, end - 0.02, 0.01, 0.03, tuple(-0.16 * main)))
    if "early_repol" in confounders:
        d = unit(_EARLY_REPOL_DIR)
        out.append(Wave("J-notch", 0.046, 0.007, tuple(0.09 * d)))
        out.append(Plateau("ST-early-repol", 0.045, end - 0.03, 0.006, 0.04, tuple(0.14 * d), shape="concave"))
        out = [replace(e, vector=tuple(np.asarray(e.vector) * 1.3)) if isinstance(e, Wave) and e.name.startswith("T") else e
               for e in out]
    return out
