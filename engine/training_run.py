"""One training run end to end: data folder -> patient-wise splits -> :func:`engine.train.fit` -> checkpoint.

Split rules (never by record; a patient is never in two splits):

* a dataset with folds (PTB-XL ``strat_fold``, or a manifest ``fold`` column): validation fold
  ``val_fold`` and test fold ``test_fold``, default the two highest folds present (9 and 10 on
  the full PTB-XL, 7 and 8 on the 353-record sample); every other fold trains;
* a manifest with a ``split`` column: its train / val / test rows;
* otherwise a hash of the patient id: 70 / 15 / 15 %.

Synthetic records (``synthetic > 0``) are split 70 / 15 / 15 by their own patient ids and added to
each split, so the threshold is chosen on real and synthetic validation data alike. The checkpoint
stores the validation metrics and, when the test split is not empty, the held-out test metrics
per source (real / synthetic) - those are the numbers to report.
"""

from __future__ import annotations

import logging
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from engine import metrics as M
from engine.config import MirageConfig
from engine.data import Item, class_counts, load_sources, split_by_folds, split_by_name, split_by_patient
from engine.data.dataset import MirageDataset, WindowSet
from engine.data.items import check_disjoint
from engine.errors import DatasetError
from engine.labs import schema_dict
from engine.pipeline import PREPROCESSING_VERSION, RENDERER_VERSION
from engine.train import TrainOptions, TrainResult, choose_thresholds, fit, predict_dataset, state_path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DataPlan:
    """Where the data comes from and how it is split."""

    data: Path | Sequence[Path] | None  # one source, or several (engine.data.load_sources)
    labs: Path | None = None
    val_folds: tuple[int, ...] | None = None
    test_folds: tuple[int, ...] | None = None
    synthetic: int = 0
    cache_dir: Path | None = None


def split_items(items: Sequence[Item], val_folds: Sequence[int] | None, test_folds: Sequence[int] | None, seed: int) -> tuple[list[Item], list[Item], list[Item], str]:
    """(train, val, test, description) following the module's split rules."""
    if all(it.fold is not None for it in items):
        folds = sorted({int(it.fold) for it in items if it.fold is not None})
        if len(folds) < 3 and (not val_folds or test_folds is None):
            raise DatasetError(f"only folds {folds}: need at least 3 folds or explicit --val-fold/--test-fold")
        vf = [folds[-2]] if not val_folds else list(val_folds)
        tf = [folds[-1]] if test_folds is None else list(test_folds)  # () = no test split
        train, val, test = split_by_folds(items, vf, tf)
        return train, val, test, f"folds: val={vf} test={tf} train={[f for f in folds if f not in vf + tf]}"
    if all(it.split for it in items):
        groups = split_by_name(items)
        unknown = set(groups) - {"train", "val", "test"}
        if unknown:
            raise DatasetError(f"split column has values {sorted(unknown)}; expected train, val, test")
        return groups.get("train", []), groups.get("val", []), groups.get("test", []), "manifest split column"
    train, val, test = split_by_patient(items, 0.15, 0.15, seed)
    return train, val, test, f"patient hash 70/15/15 (seed {seed})"


def _split_windows(ws: WindowSet, seed: int) -> tuple[WindowSet, WindowSet, WindowSet]:
    train, val, test = split_by_patient(ws.items, 0.15, 0.15, seed)
    pos = {it.record_id: i for i, it in enumerate(ws.items)}
    return tuple(ws.subset([pos[it.record_id] for it in part]) for part in (train, val, test))  # type: ignore[return-value]


def build_datasets(plan: DataPlan, cfg: MirageConfig, seed: int, progress: bool = True) -> tuple[MirageDataset, MirageDataset, MirageDataset, dict[str, Any]]:
    """Read, split and render the data of ``plan``; returns (train, val, test, split description)."""
    from engine.data.synthetic import synthetic_windows

    parts: dict[str, list[MirageDataset]] = {"train": [], "val": [], "test": []}
    desc: dict[str, Any] = {}
    if plan.data is not None:
        sources = [plan.data] if isinstance(plan.data, (str, Path)) else list(plan.data)
        items = load_sources(sources, plan.labs)
        train, val, test, how = split_items(items, plan.val_folds, plan.test_folds, seed)
        check_disjoint(train=train, val=val, test=test)
        desc["real"] = {"source": [str(s) for s in sources], "rule": how, **{k: dict(zip(("n_pos", "n_neg"), class_counts(v))) for k, v in (("train", train), ("val", val), ("test", test))}}
        for name, part in (("train", train), ("val", val), ("test", test)):
            if part:
                parts[name].append(MirageDataset.from_items(part, cfg, cache_dir=plan.cache_dir, progress=progress, images=False))
    if plan.synthetic > 0:
        ws = synthetic_windows(plan.synthetic, cfg, seed=seed + 7919)
        syn = _split_windows(ws, seed)
        desc["synthetic"] = {"n": plan.synthetic, "rule": "patient hash 70/15/15", **{k: {"n_pos": int(w.labels.sum()), "n_neg": int(len(w) - w.labels.sum())} for k, w in zip(("train", "val", "test"), syn)}}
        for name, w in zip(("train", "val", "test"), syn):
            if len(w):
                parts[name].append(MirageDataset(w, cfg, progress=progress))
    if not parts["train"]:
        raise DatasetError("no training data: give --data and/or --synthetic N")
    out = []
    for name in ("train", "val", "test"):
        ps = parts[name]
        out.append(MirageDataset.concat(ps) if ps else None)
    if out[1] is None:
        raise DatasetError("the validation split is empty: choose another --val-fold or add data")
    return out[0], out[1], out[2], desc  # type: ignore[return-value]


def metrics_by_source(ds: MirageDataset, probs: np.ndarray, threshold: float) -> dict[str, Any]:
    """Report numbers for all of ``ds`` and per source ("real" / "synthetic") where both classes exist."""
    out: dict[str, Any] = {}
    src = np.asarray(["synthetic" if it.source == "synthetic" else "real" for it in ds.items])
    for name, sel in (("all", np.ones(len(src), bool)), ("real", src == "real"), ("synthetic", src == "synthetic")):
        y = ds.labels[sel]
        if len(y) and 0 < y.sum() < len(y):
            out[name] = M.summary(y, probs[sel], threshold)
    return out


def run_training(plan: DataPlan, cfg: MirageConfig, opts: TrainOptions, out: str | Path, *, resume: bool = False, command: str = "") -> dict[str, Any]:
    """Train on ``plan`` and save the checkpoint ``out`` (+ ``out.state``); returns its metrics."""
    from engine.checkpoint import save_checkpoint

    t0 = time.perf_counter()
    train_ds, val_ds, test_ds, split_desc = build_datasets(plan, cfg, opts.seed, opts.progress)
    log.info("data: %d train, %d val, %d test samples (%.1f s)", len(train_ds), len(val_ds), 0 if test_ds is None else len(test_ds), time.perf_counter() - t0)
    result: TrainResult = fit(cfg, train_ds, val_ds, opts, state_file=state_path(out), resume=resume)
    thresholds = choose_thresholds(val_ds.labels, result.val_probs)
    metrics: dict[str, Any] = {"val": metrics_by_source(val_ds, result.val_probs, thresholds["start"]), "best_epoch": result.best_epoch, "epochs_run": len(result.history)}
    if test_ds is not None:
        metrics["test"] = metrics_by_source(test_ds, predict_dataset(result.model, test_ds), thresholds["start"])
    seconds = time.perf_counter() - t0
    extra = {
        "thresholds": thresholds,
        "lab_schema": schema_dict(),
        "renderer_version": RENDERER_VERSION,
        "preprocessing_version": PREPROCESSING_VERSION,
        "split": split_desc,
        "train_options": asdict(opts),
        "history": [asdict(h) for h in result.history],
        "command": command,
        "train_seconds": round(seconds, 1),
        "torch": str(torch.__version__),
        "host": platform.machine(),
    }
    sha = save_checkpoint(out, result.model, cfg, threshold=thresholds["start"], metrics=metrics, extra=extra)
    log.info("saved %s (sha256 %s) in %.0f s", out, sha[:12], seconds)
    return {"checkpoint": str(out), "sha256": sha, "thresholds": thresholds, "metrics": metrics, "split": split_desc, "seconds": seconds}
