"""Hand-built 12-lead beat trains with a known ST level, for tests and examples (a shipped test double).

Each beat is a Gaussian QRS, a flat ST plateau (a tanh-edged step from 40 ms to 330 ms after R) and
a late T wave, in the eight independent leads I, II, V1-V6; III, aVR, aVL and aVF are derived
with Einthoven's and Goldberger's equations, so lead algebra holds exactly, as in an
electrocardiograph. At J+60 / J+80 ms only the plateau is non-zero: the true ST is the plateau.
"""

from __future__ import annotations

import numpy as np

from engine.config import LEADS
from engine.signal.leads import derive_limb_leads

__all__ = ["QRS_INDEP", "ST_INDEP", "beat_train", "true_st_uv"]

# ST plateau per independent lead (I, II, V1..V6) in mV: inferior-like elevation, lateral depression.
ST_INDEP = np.array([-0.08, 0.15, 0.0, 0.05, 0.12, 0.2, -0.1, -0.05])
QRS_INDEP = np.array([0.8, 1.2, -0.6, -0.3, 0.5, 1.4, 1.6, 1.2])


def beat_train(fs: float, st: np.ndarray = ST_INDEP, hr: float = 70.0, seconds: float = 10.0, qrs_sigma: float = 0.012,
               wander_mv: float = 0.2, seed: int = 0) -> np.ndarray:
    """(12, T) beats built by hand: Gaussian QRS, a flat ST plateau of ``st`` mV from 40 ms to 330 ms
    after R, a late T wave, 0.3 Hz baseline wander of ``wander_mv``; limb leads derived (Einthoven)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * fs)) / fs
    indep = np.zeros((8, t.size))
    r_times = np.arange(0.4, seconds, 60.0 / hr)
    for r in r_times + rng.uniform(-0.01, 0.01, r_times.size):
        tau = t - r
        qrs = np.exp(-0.5 * (tau / qrs_sigma) ** 2) - 0.3 * np.exp(-0.5 * ((tau - 0.03) / 0.01) ** 2)
        plateau = 0.25 * (1 + np.tanh((tau - 0.04) / 0.005)) * (1 + np.tanh((0.33 - tau) / 0.01))
        twave = np.exp(-0.5 * ((tau - 0.36) / 0.035) ** 2)
        indep += np.outer(QRS_INDEP, qrs) + np.outer(st, plateau) + np.outer(0.3 * np.sign(QRS_INDEP), twave)
    indep += wander_mv * np.sin(2 * np.pi * 0.3 * t + rng.uniform(0, 6.28, (8, 1)))
    limb = derive_limb_leads(indep[0], indep[1])
    rows = {"I": indep[0], "II": indep[1], **limb, **{f"V{k}": indep[1 + k] for k in range(1, 7)}}
    return np.stack([rows[name] for name in LEADS])


def true_st_uv(st: np.ndarray = ST_INDEP) -> np.ndarray:
    """(12,) the true ST in uV of :func:`beat_train` with plateau ``st`` (8 independent leads, mV)."""
    limb = derive_limb_leads(st[:1], st[1:2])
    rows = {"I": st[0], "II": st[1], **{k: float(v[0]) for k, v in limb.items()}, **{f"V{k}": st[1 + k] for k in range(1, 7)}}
    return 1000.0 * np.array([rows[name] for name in LEADS])
