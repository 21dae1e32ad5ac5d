"""Synthetic training records from the patient simulator (:mod:`simulators.ecg`).

The live demo replays simulated patients, so the shipped model also sees simulated ECGs in
training: half MI (a random territory of :data:`simulators.mi.TERRITORIES`, onset between 2 min
and 6 h before the window, log-uniform, ST size 0.1-0.4 mV), half not (normal sinus rhythm, or one
of the ST confounders: LBBB, early repolarisation, sinus tachycardia), with random heart rate,
axis, amplitude and noise. Each record is generated at 500 Hz and mapped to the model rate with
:func:`engine.pipeline.to_model_rate`, the path a recorded ECG takes.

About half of the synthetic patients also carry a full lab panel at the time of the window, drawn
with the simulator's own lab model (:class:`simulators.labs.LabPatient`: reference baselines plus
Bateman release kinetics after the infarct onset), so an MI minutes old still has a normal
troponin, as in the live demo. One in eight non-MI patients with labs has chronic kidney disease
(troponin I 26-120 ng/L above the 99th percentile, creatinine x2-4), so troponin helps but never
decides alone. Every synthetic patient is its own patient id, so patient splits stay valid.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from engine.config import LEADS, MirageConfig
from engine.data.dataset import WindowSet
from engine.data.items import Item
from engine.data.wfdb_io import cut_window
from engine.errors import DatasetError
from engine.labs import encode_labs
from engine.pipeline import to_model_rate

TROPONIN_I = "89579-7"
CREATININE = "2160-0"
_SOURCE_FS = 500.0


def simulator_available() -> bool:
    """True when engineer D's simulator package can be imported."""
    try:
        import simulators.ecg  # noqa: F401
        import simulators.mi  # noqa: F401
    except ImportError:
        return False
    return True


def _draw_panel(rng: np.random.Generator, mi_onset_s: float | None) -> dict[str, float]:
    """A full lab panel at t = 0 (the window), canonical units keyed by LOINC."""
    from simulators.labs import LabPatient

    patient = LabPatient.draw(rng, mi_onset_s=mi_onset_s)
    panel = {loinc: patient.true_value(loinc, 0.0) for loinc in patient.baseline}
    if mi_onset_s is None and rng.random() < 0.125:  # chronic kidney disease: troponin up without MI
        panel[TROPONIN_I] = float(rng.uniform(26.0, 120.0))
        panel[CREATININE] = panel[CREATININE] * float(rng.uniform(2.0, 4.0))
    return panel


def synthetic_windows(n: int, cfg: MirageConfig, *, seed: int = 0, mi_fraction: float = 0.5, lab_fraction: float = 0.5) -> WindowSet:
    """Generate ``n`` labelled synthetic windows (see the module docstring).

    Raises:
        DatasetError: the simulator package is not installed, or ``n`` < 1.
    """
    if n < 1:
        raise DatasetError(f"synthetic record count must be >= 1, got {n}")
    if not simulator_available():
        raise DatasetError("--synthetic needs the patient simulator (simulators.ecg), which is not installed")
    from simulators.ecg import HeartParams, PatientSpec, synthesize
    from simulators.mi import CONFOUNDERS, TERRITORIES, MiSpec
    from simulators.noise import NoiseSpec

    rng = np.random.default_rng(seed)
    windows = np.empty((n, len(LEADS), cfg.T), dtype=np.float32)
    labs = np.zeros((n, cfg.lab_dim), dtype=np.float32)
    mask = np.zeros((n, cfg.lab_dim), dtype=np.float32)
    items: list[Item] = []
    territories = sorted(TERRITORIES)
    for i in range(n):
        is_mi = bool(rng.random() < mi_fraction)
        mi = None
        confounders: tuple[str, ...] = ()
        if is_mi:
            onset = -math.exp(rng.uniform(math.log(120.0), math.log(6 * 3600.0)))
            mi = MiSpec(territories[int(rng.integers(len(territories)))], onset_s=onset, st_mv=float(rng.uniform(0.1, 0.4)))
        elif rng.random() < 0.5:
            confounders = (CONFOUNDERS[int(rng.integers(len(CONFOUNDERS)))],)
        hr = (100.0, 140.0) if "tachycardia" in confounders else (50.0, 100.0)
        noise = NoiseSpec(baseline_mv=float(rng.uniform(0.0, 0.15)), emg_mv=float(rng.uniform(0.0, 0.03)), powerline_mv=float(rng.uniform(0.0, 0.01)))
        spec = PatientSpec(heart=HeartParams.draw(rng, hr_bpm=hr), mi=mi, confounders=confounders, noise=noise)
        rec = synthesize(spec, fs=_SOURCE_FS, duration_s=cfg.window_s, seed=int(rng.integers(2**31)))
        x = to_model_rate(rec.signal, rec.fs, rec.leads, cfg)
        windows[i] = cut_window(x, cfg.fs, cfg)
        lab_values: dict[str, float] = {}
        if rng.random() < lab_fraction:
            lab_values = _draw_panel(rng, None if mi is None else mi.onset_s)
        labs[i], mask[i] = encode_labs(lab_values)
        items.append(Item(record_id=f"synthetic-{seed}-{i}", path=Path(f"synthetic/{seed}/{i}"), label=int(is_mi),
                          patient_id=f"synthetic-{seed}-p{i}", labs=lab_values, source="synthetic"))
    labels = np.asarray([it.label for it in items], dtype=np.int64)
    return WindowSet(windows, labels, labs, mask, items)
