"""Reference windows for calibrating and benchmarking compiled backends.

Static int8 calibration (``mirage build-int8``), ``mirage bench infer`` and the export parity
checks all need the same thing: real 12-lead windows through ``engine.pipeline.model_inputs``,
from the shared PTB-XL sample when it is present, else synthetic windows (and the caller is told
which, so a build records its source).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path

import numpy as np

from engine.config import MirageConfig
from engine.data.manifest import find_manifest
from engine.errors import DatasetError
from engine.pipeline import ModelInputs, model_inputs

log = logging.getLogger(__name__)

CALIBRATION_WINDOWS = 96  # PTB-XL windows used for int8 calibration (every 4th of the first 384 records)
CALIBRATION_STRIDE = 4


def shared_ptbxl() -> Path:
    """The shared PTB-XL sample: ``$MIRAGE_SHARED_DATA/ptbxl-sample`` or ``<repo>/../shared/data/ptbxl-sample``."""
    root = os.environ.get("MIRAGE_SHARED_DATA")
    base = Path(root) if root else Path(__file__).resolve().parents[3] / "shared" / "data"
    return base / "ptbxl-sample"


def ptbxl_windows(root: Path, cfg: MirageConfig, *, limit: int) -> tuple[np.ndarray, np.ndarray]:
    """One window of up to ``limit`` labelled records (a PTB-XL folder or a manifest) at the model rate, and their MI labels.

    Uses the project's readers (``engine.data``): the same labelling and windowing as training.
    """
    from engine.data import load_items
    from engine.data.wfdb_io import load_window

    windows, labels = [], []
    for item in load_items(root):
        try:
            windows.append(load_window(item.path, cfg, item.offset_s))
        except DatasetError as exc:
            log.debug("skipping a record: %s", exc)
            continue
        labels.append(int(item.label))
        if len(windows) >= limit:
            break
    return np.stack(windows).astype(np.float32), np.asarray(labels)


def synthetic_windows(cfg: MirageConfig, n: int, *, seed: int = 0) -> np.ndarray:
    """``n`` crude periodic 12-lead windows ``(n, 12, T)`` in mV (a QRS-like shape plus noise)."""
    rng = np.random.default_rng(seed)
    t = np.arange(cfg.T) / cfg.fs
    beats = np.sin(2 * np.pi * 1.2 * t) ** 15
    windows = beats[None, None, :] * rng.uniform(0.3, 1.5, (n, 12, 1)) + 0.02 * rng.standard_normal((n, 12, cfg.T))
    return windows.astype(np.float32)


def eval_inputs(cfg: MirageConfig, *, ptbxl: Path | None, limit: int, seed: int = 0) -> tuple[ModelInputs, np.ndarray | None, str]:
    """Model inputs and their MI labels (``None`` for synthetic data), and a line naming the source."""
    if ptbxl is not None and ((ptbxl / "ptbxl_database.csv").is_file() or find_manifest(ptbxl) is not None):
        windows, labels = ptbxl_windows(ptbxl, cfg, limit=limit)
        return model_inputs(windows, cfg), labels, f"{ptbxl.name} ({len(labels)} records, {int(labels.sum())} MI)"
    return model_inputs(synthetic_windows(cfg, limit, seed=seed), cfg), None, f"synthetic ({limit} windows; no labels)"


def calibration_inputs(cfg: MirageConfig, *, root: Path | None = None,
                       limit: int = CALIBRATION_STRIDE * CALIBRATION_WINDOWS) -> tuple[ModelInputs, str]:
    """Calibration windows: every 4th record of a PTB-XL folder (default the shared sample), else synthetic windows."""
    root = root or shared_ptbxl()
    inputs, _, source = eval_inputs(cfg, ptbxl=root if root.is_dir() else None, limit=limit)
    every = {f.name: getattr(inputs, f.name)[::CALIBRATION_STRIDE] for f in dataclasses.fields(inputs)}
    return ModelInputs(**every), f"{source}, every {CALIBRATION_STRIDE}th window"
