"""``mirage measure --validate``: the numbers and figures of docs/ST.md, in one run.

Writes ``OUT/validation.json`` and PNG figures: simulated truth against measurement
(``st_truth.png``), Einthoven residuals on PTB-XL (``st_einthoven.png``), the deepest ST
depression of STD_ and NORM records (``st_std_vs_norm.png``), and median-beat examples. The
beat-detector comparison of :mod:`engine.st.beats` runs the library detectors that are installed
(``wfdb.processing`` always; ``neurokit2`` when present) on the same simulated windows.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np

from engine.st.measure import measure_st
from engine.st.validate import (
    deepest_depression,
    lead_physics_residuals,
    measure_ptbxl,
    ptbxl_summary,
    simulated_cases,
    truth_errors,
    wide_flagged,
)

log = logging.getLogger(__name__)


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _detectors(n: int = 40) -> dict[str, dict[str, float]]:
    """Sensitivity, PPV (75 ms tolerance, lead II for single-lead detectors) and ms/window on 10 s
    simulated windows (45-150 bpm, strong wander and muscle noise, motion in every fourth)."""
    from wfdb import processing as wp

    from engine.signal.resample import resample
    from engine.st.beats import detect_beats
    from simulators.ecg import HeartParams, PatientSpec, synthesize
    from simulators.noise import NoiseSpec

    detectors = {"engine.st (12 leads)": lambda x, fs: detect_beats(x, fs),
                 "wfdb xqrs (II)": lambda x, fs: wp.xqrs_detect(x[1], fs, verbose=False),
                 "wfdb gqrs (II)": lambda x, fs: np.asarray(wp.gqrs_detect(x[1], fs))}
    try:
        import neurokit2 as nk

        detectors["neurokit2 (II)"] = lambda x, fs: np.asarray(nk.ecg_peaks(nk.ecg_clean(x[1], sampling_rate=fs), sampling_rate=fs)[1]["ECG_R_Peaks"])
    except ImportError:
        log.info("neurokit2 not installed: left out of the detector comparison")
    rng = np.random.default_rng(1)
    out: dict[str, dict[str, float]] = {}
    for fs in (100.0, 500.0):
        tally = {name: np.zeros(4) for name in detectors}  # tp, fn, fp, seconds
        for k in range(n):
            noise = NoiseSpec(baseline_mv=0.15, emg_mv=0.03, motion_per_min=3.0 if k % 4 == 0 else 0.0)
            ecg = synthesize(PatientSpec(heart=HeartParams.draw(rng, hr_bpm=(45.0, 150.0)), noise=noise), fs=500.0, duration_s=10.0, seed=k)
            x = ecg.signal.astype(np.float64) if fs == 500.0 else resample(ecg.signal.astype(np.float64), 500.0, fs)
            truth = ecg.r_times[(ecg.r_times > 0.2) & (ecg.r_times < 9.8)]
            for name, fn in detectors.items():
                t0 = time.perf_counter()
                try:
                    found = np.asarray(fn(x, fs), dtype=np.float64) / fs
                except Exception:  # a library detector that fails on a window counts as finding nothing
                    found = np.zeros(0)
                tally[name][3] += time.perf_counter() - t0
                found = found[(found > 0.2) & (found < 9.8)]
                hit = np.array([np.any(np.abs(found - t) < 0.075) for t in truth])
                tally[name][:3] += (hit.sum(), (~hit).sum(), sum(not np.any(np.abs(truth - f) < 0.075) for f in found))
        for name, (tp, fn_, fp, sec) in tally.items():
            out[f"{name} @ {fs:.0f} Hz"] = {"sensitivity": tp / max(1.0, tp + fn_), "ppv": tp / max(1.0, tp + fp), "ms_per_window": 1000.0 * sec / n}
    return out


def speed_ms(repeats: int = 200) -> float:
    """Median ms of :func:`measure_st` on one 10 s, 12-lead window at 100 Hz (one core)."""
    from engine.signal.resample import resample
    from simulators.ecg import PatientSpec, synthesize

    x = resample(synthesize(PatientSpec(), fs=500.0, duration_s=10.0, seed=7).signal.astype(np.float64), 500.0, 100.0)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        measure_st(x, 100.0)
        times.append(time.perf_counter() - t0)
    return 1000.0 * float(np.median(times))


def _truth_figure(cases, out: Path) -> None:
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(9, 4.2))
    for ax, fs in zip(axes, (100.0, 500.0)):
        t, m = [], []
        for c in cases:
            meas = c.measured[fs]
            if not c.wide and meas.measurable:
                ok = meas.lead_ok
                t.append(c.truth_j60[ok])
                m.append(meas.st_j60_uv[ok])
        t, m = np.concatenate(t), np.concatenate(m)
        ax.plot(t, m, ".", ms=2, alpha=0.5)
        lim = [min(t.min(), m.min()), max(t.max(), m.max())]
        ax.plot(lim, lim, "k-", lw=0.7)
        ax.set(title=f"{fs:.0f} Hz: |error| mean {np.abs(m - t).mean():.1f} uV", xlabel="true ST at J+60 (uV)", ylabel="measured (uV)")
        ax.grid(True, lw=0.3)
    fig.tight_layout()
    fig.savefig(out / "st_truth.png", dpi=80)
    plt.close(fig)


def _ptbxl_figures(res, out: Path) -> None:
    plt = _plt()
    ok = res.measurable & np.isfinite(res.st_j60[:, :6]).all(axis=1)
    resid = lead_physics_residuals(res.st_j60[ok])
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    ax.hist(resid[:, 0], bins=60, color="tab:blue")
    ax.set(title="PTB-XL: ST(III) - (ST(II) - ST(I)) at J+60", xlabel="residual (uV)", ylabel="records")
    fig.tight_layout()
    fig.savefig(out / "st_einthoven.png", dpi=80)
    plt.close(fig)
    sel = res.measurable & (res.std ^ res.norm)
    score = deepest_depression(res.st_j60[sel])
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    bins = np.linspace(-100, 300, 41)
    ax.hist(score[~res.std[sel]], bins=bins, alpha=0.6, density=True, label=f"NORM (n={int((~res.std[sel]).sum())})")
    ax.hist(score[res.std[sel]], bins=bins, alpha=0.6, density=True, label=f"STD_ (n={int(res.std[sel].sum())})")
    ax.set(title="deepest ST depression at J+60 (leads but aVR)", xlabel="-min ST (uV)", ylabel="density")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "st_std_vs_norm.png", dpi=80)
    plt.close(fig)


def run_validation(out: str | Path, data: str | Path | None = None, patients: int = 200, detectors: bool = True) -> dict[str, object]:
    """Run every check, write ``OUT/validation.json`` and the figures; return the summary."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    summary: dict[str, object] = {"speed_ms_per_window_100hz": speed_ms()}
    for hard in (False, True):
        cases = simulated_cases(patients, hard=hard)
        key = "simulated_hard_noise" if hard else "simulated"
        summary[key] = {f"{fs:.0f}Hz": {**truth_errors(cases, fs), **wide_flagged(cases, fs)} for fs in (100.0, 500.0)}
        if not hard:
            _truth_figure(cases, out)
    if data is not None and (Path(data) / "ptbxl_database.csv").is_file():
        for fs in (500.0, 100.0):
            res = measure_ptbxl(data, fs)
            summary[f"ptbxl_{fs:.0f}Hz"] = ptbxl_summary(res)
            if fs == 500.0:
                _ptbxl_figures(res, out)
    else:
        log.warning("no PTB-XL folder given (--data): lead-physics and STD_ checks skipped")
    if detectors:
        summary["beat_detectors"] = _detectors()
    (out / "validation.json").write_text(json.dumps(summary, indent=2, default=float))
    return summary
