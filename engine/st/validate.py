"""How well :func:`engine.st.measure.measure_st` measures: simulator truth, lead physics, PTB-XL labels.

Three checks, reported in docs/ST.md (``mirage measure --validate`` reproduces them):

1. **Truth on simulated patients** (:mod:`simulators.ecg`, whose injury current is a known
   vector, :mod:`simulators.mi`). The truth of one patient is its noise-free signal at 1 kHz,
   the same seed (so the same beats): global QRS onset and J point are delineated on its median
   beat around the simulator's own R times, and the true ST of each lead is the noise-free signal
   at J+60 / J+80 ms (the model's isoelectric line is exactly 0 mV). The measurement sees the noisy
   signal (baseline wander, muscle noise, mains) at 500 Hz and resampled to the stream's 100 Hz.
   A sum-of-Gaussians beat has no exact J point, so the J definition (spatial velocity below 10 %
   of its QRS peak) is shared; what is tested is everything else: detection, alignment, filtering,
   resampling, wander removal, noise, and the J point found on degraded signals.
2. **Lead physics on PTB-XL**: Einthoven (III = II - I) and Goldberger (aVR = -(I+II)/2,
   aVL = I - II/2, aVF = II - I/2) must hold for the measured ST levels; the residual is in uV.
3. **ST depression on PTB-XL**: records with the SCP statement ``STD_`` (non-specific ST
   depression) against ``NORM`` records; score = the deepest ST at J+60 ms (or J+80) over the 11
   leads other than aVR (aVR mirrors the others and is normally depressed), AUROC.
"""

from __future__ import annotations

import ast
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.config import LEADS
from engine.metrics import auroc
from engine.signal.leads import to_standard_leads
from engine.signal.resample import resample
from engine.st.beats import sample_beats
from engine.st.delineate import delineate
from engine.st.measure import DEFAULT_ST, StMeasurement, measure_st

log = logging.getLogger(__name__)

TRUTH_FS = 1000.0
_I, _II, _III, _AVR, _AVL, _AVF = (LEADS.index(n) for n in ("I", "II", "III", "aVR", "aVL", "aVF"))


@dataclass(frozen=True)
class SimCase:
    """One simulated patient: measured and true ST (uV, (12,)) at J+60 and J+80, per rate."""

    seed: int
    territory: str
    wide: bool
    truth_j60: np.ndarray
    truth_j80: np.ndarray
    truth_qrs_ms: float
    measured: dict[float, StMeasurement]


def _spec(rng: np.random.Generator, hard: bool):  # -> PatientSpec (simulators imported lazily)
    from simulators.ecg import HeartParams, PatientSpec
    from simulators.mi import MiSpec
    from simulators.noise import NoiseSpec

    mi = None
    if rng.random() < 0.6:
        territory = str(rng.choice(["anterior", "septal", "inferior", "lateral", "posterior"]))
        mi = MiSpec(territory, onset_s=-float(rng.uniform(300.0, 3600.0)), st_mv=float(rng.uniform(0.1, 0.4)))
    u = rng.random()
    confounders = ("lbbb",) if u < 0.1 else ("early_repol",) if u < 0.2 else ()
    noise = NoiseSpec(baseline_mv=0.2, emg_mv=0.03, powerline_mv=0.01) if hard else NoiseSpec()
    return PatientSpec(heart=HeartParams.draw(rng, hr_bpm=(50.0, 110.0)), mi=mi, confounders=confounders, noise=noise)


def true_st(spec, seed: int, duration_s: float = 10.0) -> tuple[np.ndarray, np.ndarray, float]:
    """True ST (uV, (12,)) at J+60 and J+80 and the true QRS width (ms) of a simulated patient."""
    from dataclasses import replace

    from simulators.ecg import synthesize
    from simulators.noise import NoiseSpec

    clean = synthesize(replace(spec, noise=NoiseSpec.clean()), fs=TRUTH_FS, duration_s=duration_s, seed=seed)
    x = clean.signal.astype(np.float64)
    pre, post = DEFAULT_ST.pre_s, 0.45
    r = clean.r_times[(clean.r_times >= pre) & (clean.r_times <= duration_s - post)] * TRUTH_FS
    offsets = np.arange(-round(pre * TRUTH_FS), round(post * TRUTH_FS) + 1, dtype=np.float64)
    med = np.median(sample_beats(x, r, offsets), axis=0)
    fid = delineate(med, TRUTH_FS, int(round(pre * TRUTH_FS)))
    if not fid.found:  # e.g. LBBB: the discordant ST-T never lets the heart vector rest
        nan = np.full(len(LEADS), np.nan)
        return nan, nan.copy(), float("nan")
    vals = sample_beats(x, r, TRUTH_FS * np.array([fid.j_s + 0.06, fid.j_s + 0.08]))  # (B, 12, 2)
    level = 1000.0 * np.median(vals, axis=0)
    return level[:, 0], level[:, 1], fid.qrs_ms


def simulated_cases(n: int = 100, seed: int = 0, hard: bool = False, rates: tuple[float, ...] = (100.0, 500.0)) -> list[SimCase]:
    """Simulate ``n`` patients (60 % MI of random territory and size, 10 % LBBB, 10 % early
    repolarisation) and measure each at ``rates``; ``hard`` uses 2.5x wander and 3x muscle noise."""
    from simulators.ecg import synthesize

    rng = np.random.default_rng([seed, int(hard)])
    cases: list[SimCase] = []
    for k in range(n):
        spec = _spec(rng, hard)
        s = seed * 10_000 + k
        noisy = synthesize(spec, fs=500.0, duration_s=10.0, seed=s).signal.astype(np.float64)
        measured = {fs: measure_st(noisy if fs == 500.0 else resample(noisy, 500.0, fs), fs) for fs in rates}
        t60, t80, qrs = true_st(spec, s)
        cases.append(SimCase(s, spec.mi.territory if spec.mi else "none", "lbbb" in spec.confounders, t60, t80, qrs, measured))
    return cases


def truth_errors(cases: list[SimCase], fs: float) -> dict[str, float]:
    """Error of the measured ST against the truth over every measured lead of narrow-QRS patients."""
    e60, e80, dqrs, n_meas, n = [], [], [], 0, 0
    for c in cases:
        if c.wide:
            continue
        n += 1
        m = c.measured[fs]
        if not m.measurable:
            continue
        n_meas += 1
        ok = m.lead_ok
        e60.append(m.st_j60_uv[ok] - c.truth_j60[ok])
        e80.append(m.st_j80_uv[ok] - c.truth_j80[ok])
        dqrs.append(m.qrs_ms - c.truth_qrs_ms)
    a60, a80 = np.abs(np.concatenate(e60)), np.abs(np.concatenate(e80))
    return {"fs": fs, "patients": n, "measurable": n_meas, "leads": int(a60.size),
            "j60_mae_uv": float(a60.mean()), "j60_p95_uv": float(np.percentile(a60, 95)), "j60_max_uv": float(a60.max()),
            "j60_bias_uv": float(np.concatenate(e60).mean()),
            "j80_mae_uv": float(a80.mean()), "j80_p95_uv": float(np.percentile(a80, 95)),
            "qrs_bias_ms": float(np.mean(dqrs)), "qrs_mae_ms": float(np.mean(np.abs(dqrs)))}


def wide_flagged(cases: list[SimCase], fs: float) -> dict[str, int]:
    """How many LBBB patients were kept out of ST measurement (``wide_qrs`` or ``no_j_point``: they must be)."""
    wide = [c for c in cases if c.wide]
    return {"lbbb": len(wide), "not_measurable": sum(not c.measured[fs].measurable for c in wide)}


def lead_physics_residuals(st: np.ndarray) -> np.ndarray:
    """(N, 4) residuals of Einthoven and Goldberger for (N, 12) ST values: III, aVR, aVL, aVF."""
    i, ii = st[:, _I], st[:, _II]
    return np.stack([st[:, _III] - (ii - i), st[:, _AVR] + (i + ii) / 2.0, st[:, _AVL] - (i - ii / 2.0), st[:, _AVF] - (ii - i / 2.0)], axis=1)


@dataclass(frozen=True)
class PtbxlResult:
    """Measurements of PTB-XL records: ids, (N, 12) ST at J+60 and J+80, measurable, STD_ and NORM flags."""

    ecg_ids: np.ndarray
    st_j60: np.ndarray
    st_j80: np.ndarray
    measurable: np.ndarray
    std: np.ndarray
    norm: np.ndarray
    n_beats: np.ndarray


def measure_ptbxl(folder: str | Path, fs: float = 500.0, limit: int | None = None) -> PtbxlResult:
    """Measure the first 10 s of every record of a PTB-XL folder (500 Hz records), at ``fs``."""
    import pandas as pd

    from engine.data.wfdb_io import read_record

    root = Path(folder)
    db = pd.read_csv(root / "ptbxl_database.csv")
    rows = []
    for rec in db.itertuples(index=False):
        path = root / str(rec.filename_hr)
        if not path.with_suffix(".hea").is_file():
            continue
        codes = ast.literal_eval(str(rec.scp_codes))
        r = read_record(path)
        x = to_standard_leads(r.signal, r.leads)[:, : int(10 * r.fs)]
        if fs != r.fs:
            x = resample(x, r.fs, fs)
        m = measure_st(x, fs)
        rows.append((int(rec.ecg_id), m, "STD_" in codes, "NORM" in codes))
        if limit and len(rows) >= limit:
            break
    return PtbxlResult(np.array([r[0] for r in rows]), np.stack([r[1].st_j60_uv for r in rows]), np.stack([r[1].st_j80_uv for r in rows]),
                       np.array([r[1].measurable for r in rows]), np.array([r[2] for r in rows]), np.array([r[3] for r in rows]),
                       np.array([r[1].n_beats for r in rows]))


def deepest_depression(st: np.ndarray) -> np.ndarray:
    """(N,) score: minus the lowest ST over the 11 leads other than aVR (higher = more depressed)."""
    others = [k for k in range(len(LEADS)) if k != _AVR]
    with np.errstate(all="ignore"):
        return -np.nanmin(np.where(np.isnan(st[:, others]), np.inf, st[:, others]), axis=1)


def ptbxl_summary(res: PtbxlResult) -> dict[str, float | int]:
    """Einthoven/Goldberger residuals and the STD_ vs NORM AUROC of measured PTB-XL records."""
    ok = res.measurable & np.isfinite(res.st_j60[:, [_I, _II, _III, _AVR, _AVL, _AVF]]).all(axis=1)
    resid = np.abs(lead_physics_residuals(res.st_j60[ok]))
    out: dict[str, float | int] = {"records": int(res.ecg_ids.size), "measurable": int(res.measurable.sum()),
                                   "einthoven_mae_uv": float(resid[:, 0].mean()), "einthoven_p95_uv": float(np.percentile(resid[:, 0], 95)),
                                   "einthoven_max_uv": float(resid[:, 0].max()),
                                   "goldberger_mae_uv": float(resid[:, 1:].mean()), "goldberger_p95_uv": float(np.percentile(resid[:, 1:], 95))}
    sel = res.measurable & (res.std ^ res.norm)  # STD_ records against NORM records (never both)
    y = res.std[sel].astype(int)
    out.update({"std_n": int(y.sum()), "norm_n": int((1 - y).sum()),
                "auroc_std_vs_norm_j60": auroc(y, deepest_depression(res.st_j60[sel])),
                "auroc_std_vs_norm_j80": auroc(y, deepest_depression(res.st_j80[sel]))})
    return out
