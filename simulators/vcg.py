"""The cardiac dipole: beats as sums of Gaussian waves in the Frank X, Y, Z leads, projected to 12 leads.

Model (McSharry et al., "A dynamical model for generating synthetic electrocardiogram signals",
IEEE Trans. Biomed. Eng. 50(3), 2003; and its 3-D extension, Sameni et al., "Multichannel ECG and
noise modeling", EURASIP J. Adv. Signal Process. 2007): each beat is a sum of P, Q, R, S and T
events, each a Gaussian in time with a *vector* amplitude in the Frank orthogonal leads
(X: right -> left, Y: head -> foot, Z: front -> back). Wave times are fixed offsets from the R peak;
the repolarisation waves scale with ``sqrt(RR)`` (Bazett) so QT shortens at fast rates.

The 12-lead ECG is the projection of that vector loop through the Dower transform (Dower et al.,
"On deriving the electrocardiogram from vectorcardiographic leads", Clin. Cardiol. 3, 1980), which
gives the eight independent leads I, II and V1-V6. III, aVR, aVL and aVF are then *derived*, so
Einthoven (III = II - I) and Goldberger (aVR = -(I+II)/2, aVL = I - II/2, aVF = II - I/2) hold
exactly, as they do in every real electrocardiograph.

Besides Gaussians a beat may carry :class:`Plateau` events: a vector held from one time to another
with soft edges. The ST-segment current of injury of an infarct and the diffuse ST elevation of early
repolarisation are plateaus; because they are vectors, reciprocal ST depression comes out of the
projection rather than being painted onto chosen leads.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from engine.config import LEADS

# Dower transform, rows I, II, V1..V6; columns Frank X, Y, Z (Dower 1980, Table 1).
DOWER = np.array(
    [
        [0.632, -0.235, 0.059],
        [0.235, 1.066, -0.132],
        [-0.515, 0.157, -0.917],
        [0.044, 0.164, -1.387],
        [0.882, 0.098, -1.277],
        [1.213, 0.127, -0.601],
        [1.125, 0.127, -0.086],
        [0.831, 0.076, 0.230],
    ]
)
INDEPENDENT_LEADS: tuple[str, ...] = ("I", "II", "V1", "V2", "V3", "V4", "V5", "V6")
ELECTRODES: tuple[str, ...] = ("RA", "LA", "LL", "V1", "V2", "V3", "V4", "V5", "V6")


@dataclass(frozen=True)
class Wave:
    """A Gaussian event: ``vector * exp(-(t - center)^2 / (2 sigma^2))``, times relative to the R peak (s)."""

    name: str
    center: float
    sigma: float
    vector: tuple[float, float, float]  # mV in Frank X, Y, Z


@dataclass(frozen=True)
class Plateau:
    """A vector held from ``start`` to ``end`` (s from R) with logistic edges of width ``rise``/``fall``.

    ``shape`` is ``"dome"`` (flat / slightly convex, the injury current of an infarct) or
    ``"concave"`` (rising towards the T wave, as in early repolarisation).
    """

    name: str
    start: float
    end: float
    rise: float
    fall: float
    vector: tuple[float, float, float]
    shape: str = "dome"


Event = Wave | Plateau


def unit(v: tuple[float, float, float] | np.ndarray) -> np.ndarray:
    """``v`` scaled to length 1."""
    a = np.asarray(v, dtype=np.float64)
    n = float(np.linalg.norm(a))
    return a / n if n > 0 else a


def normal_beat(rr_s: float, pr_s: float = 0.16, qt_scale: float = 1.0) -> list[Event]:
    """The P-QRS-T events of one normal sinus beat with the given preceding RR interval.

    Amplitudes give a normal frontal axis (~+50 deg), R-wave progression V1 -> V4 with transition at
    V3, and upright T waves in I, II, V2-V6 (Goldberger, Clinical Electrocardiography, 9th ed.).
    """
    qt = math.sqrt(max(rr_s, 0.25)) * qt_scale  # Bazett
    pr = pr_s * (0.8 + 0.2 * math.sqrt(max(rr_s, 0.25)))
    return [
        Wave("P", -pr, 0.022, (0.07, 0.12, -0.03)),
        Wave("Q", -0.022, 0.007, (-0.12, 0.02, -0.18)),
        Wave("R", 0.0, 0.011, (0.95, 0.75, 0.25)),
        Wave("S", 0.028, 0.011, (-0.30, -0.15, 0.55)),
        Wave("T1", 0.24 * qt, 0.055 * qt, (0.22, 0.20, -0.15)),
        Wave("T2", 0.31 * qt, 0.035 * qt, (0.14, 0.12, -0.09)),
    ]


def t_end(events: list[Event]) -> float:
    """End of the T wave (s from R): the last T Gaussian's centre plus two sigmas."""
    ts = [e for e in events if isinstance(e, Wave) and e.name.startswith("T")]
    return max(e.center + 2.0 * e.sigma for e in ts) if ts else 0.35


def rotation(frontal_deg: float, horizontal_deg: float) -> np.ndarray:
    """Rotation of the heart's electrical axis: about Z (frontal plane) then about Y (horizontal plane)."""
    a, b = math.radians(frontal_deg), math.radians(horizontal_deg)
    rz = np.array([[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0], [0.0, 0.0, 1.0]])
    ry = np.array([[math.cos(b), 0.0, math.sin(b)], [0.0, 1.0, 0.0], [-math.sin(b), 0.0, math.cos(b)]])
    return ry @ rz


def transform(events: list[Event], matrix: np.ndarray, scale: float = 1.0) -> list[Event]:
    """Every event's vector multiplied by ``scale * matrix``."""
    out: list[Event] = []
    for e in events:
        v = tuple(float(x) for x in scale * (matrix @ np.asarray(e.vector)))
        out.append(replace(e, vector=v))  # type: ignore[arg-type]
    return out


def support(events: list[Event]) -> tuple[float, float]:
    """The time span (s from R) outside which a beat's events are negligible."""
    lo, hi = 0.0, 0.0
    for e in events:
        if isinstance(e, Wave):
            lo, hi = min(lo, e.center - 5 * e.sigma), max(hi, e.center + 5 * e.sigma)
        else:
            lo, hi = min(lo, e.start - 6 * e.rise), max(hi, e.end + 6 * e.fall)
    return lo, hi


def render_events(events: list[Event], tau: np.ndarray, sigma_aa: float = 0.0) -> np.ndarray:
    """Evaluate the events at times ``tau`` (s from R): ``(3, n)`` Frank X, Y, Z in mV.

    ``sigma_aa`` widens every Gaussian as if it had passed a Gaussian anti-alias filter of that
    width (the convolution of two Gaussians is a Gaussian; area is kept), so low sampling rates
    do not alias the narrow QRS.
    """
    out = np.zeros((3, tau.size))
    for e in events:
        if isinstance(e, Wave):
            s = math.sqrt(e.sigma**2 + sigma_aa**2)
            g = (e.sigma / s) * np.exp(-0.5 * ((tau - e.center) / s) ** 2)
        else:
            rise = max(e.rise, sigma_aa)
            fall = max(e.fall, sigma_aa)
            up = 0.5 * (1.0 + np.tanh((tau - e.start) / (2 * rise)))
            down = 0.5 * (1.0 + np.tanh((e.end - tau) / (2 * fall)))
            g = up * down
            if e.shape == "concave":
                frac = np.clip((tau - e.start) / max(e.end - e.start, 1e-3), 0.0, 1.0)
                g = g * (0.35 + 0.65 * frac**2)
        out += np.outer(np.asarray(e.vector), g)
    return out


def project(vcg: np.ndarray) -> np.ndarray:
    """Frank ``(3, n)`` -> the eight independent leads I, II, V1..V6, ``(8, n)``."""
    return DOWER @ vcg


def derive_12(indep: np.ndarray) -> np.ndarray:
    """The eight independent leads ``(8, n)`` -> 12 leads in :data:`engine.config.LEADS` order.

    III, aVR, aVL, aVF are computed from I and II with Einthoven's and Goldberger's equations.
    """
    i, ii = indep[0], indep[1]
    derived = {
        "I": i,
        "II": ii,
        "III": ii - i,
        "aVR": -(i + ii) / 2.0,
        "aVL": i - ii / 2.0,
        "aVF": ii - i / 2.0,
    }
    for k, name in enumerate(INDEPENDENT_LEADS[2:]):
        derived[name] = indep[2 + k]
    return np.stack([derived[name] for name in LEADS])


def electrodes_to_independent(e: np.ndarray) -> np.ndarray:
    """Electrode potentials ``(9, n)`` (RA, LA, LL, V1..V6) -> the eight independent leads.

    I = LA - RA, II = LL - RA, Vi = Vi - WCT with Wilson's central terminal WCT = (RA + LA + LL) / 3.
    """
    ra, la, ll = e[0], e[1], e[2]
    wct = (ra + la + ll) / 3.0
    return np.concatenate([np.stack([la - ra, ll - ra]), e[3:] - wct])
