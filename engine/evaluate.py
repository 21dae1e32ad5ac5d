"""Evaluate a MIRAGE checkpoint on a labelled dataset: ``report.json`` plus ROC, PR and reliability plots.

Positives are MI records; negatives are every other labelled record (``negatives="all"``) or only
normal ECGs (``negatives="norm"``, PTB-XL's NORM statement or a manifest ``norm`` column). The
decision threshold is the checkpoint's own (chosen on its validation data), so sensitivity and
specificity "at threshold" are honest held-out numbers; ``sens_at_spec90`` / ``spec_at_sens90`` are
the best achievable on this data (an oracle threshold, reported for comparison with the
literature). Inputs go through :func:`engine.pipeline.model_inputs` like in the stream.
"""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from engine import metrics as M
from engine.data import Item, load_items
from engine.data.dataset import MirageDataset
from engine.errors import DatasetError
from engine.pipeline import PREPROCESSING_VERSION, RENDERER_VERSION

log = logging.getLogger(__name__)

NEGATIVES = ("all", "norm")


def select_items(items: Sequence[Item], negatives: str = "all", folds: Sequence[int] | None = None) -> list[Item]:
    """Filter by fold and negative definition.

    Raises:
        DatasetError: unknown ``negatives``, folds asked of a dataset without folds, or no NORM
            information when ``negatives="norm"``.
    """
    if negatives not in NEGATIVES:
        raise DatasetError(f"negatives={negatives!r}; choose one of {NEGATIVES}")
    out = list(items)
    if folds:
        if any(it.fold is None for it in out):
            raise DatasetError(f"--folds {list(folds)} given but the dataset has records without a fold")
        out = [it for it in out if it.fold in set(folds)]
    if negatives == "norm":
        if all(it.norm is None for it in out if it.label == 0):
            raise DatasetError("--negatives norm needs NORM information (PTB-XL, or a manifest 'norm' column)")
        out = [it for it in out if it.label == 1 or it.norm]
    if not out:
        raise DatasetError(f"no records left after selecting folds={list(folds or [])} negatives={negatives}")
    return out


def plot_curves(y: np.ndarray, p: np.ndarray, threshold: float, out_dir: Path, title: str = "") -> list[Path]:
    """Write roc.png, pr.png and reliability.png; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    fpr, tpr, _ = M.roc_curve(y, p)
    at = M.at_threshold(y, p, threshold)
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot(fpr, tpr, lw=2, label=f"AUROC {M.auroc(y, p):.3f}")
    ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=1)
    ax.axvline(0.1, c="tab:red", lw=0.8, ls=":", label="90 % specificity")
    ax.plot(1 - at.specificity, at.sensitivity, "o", c="tab:red", label=f"threshold {threshold:.3f}")
    ax.set(xlabel="1 - specificity", ylabel="sensitivity", title=f"ROC {title}".strip(), xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="lower right", fontsize=8)
    paths.append(_save(fig, out_dir / "roc.png"))

    precision, recall, _ = M.pr_curve(y, p)
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.step(recall, precision, where="post", lw=2, label=f"AUPRC {M.auprc(y, p):.3f}")
    ax.axhline(y.mean(), c="grey", ls="--", lw=1, label=f"prevalence {y.mean():.3f}")
    ax.set(xlabel="recall (sensitivity)", ylabel="precision (PPV)", title=f"Precision-recall {title}".strip(), xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="lower left", fontsize=8)
    paths.append(_save(fig, out_dir / "pr.png"))

    conf, acc, count = M.calibration_bins(y, p, 10)
    used = count > 0
    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(4.5, 5.5), gridspec_kw={"height_ratios": [3, 1]}, sharex=True)
    ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=1, label="perfect calibration")
    ax.plot(conf[used], acc[used], "o-", lw=2, label=f"ECE {M.ece(y, p):.3f}")
    ax.set(ylabel="observed MI rate", title=f"Reliability {title}".strip(), ylim=(0, 1.01))
    ax.legend(loc="upper left", fontsize=8)
    ax2.bar(np.arange(10) / 10 + 0.05, count, width=0.09, color="tab:blue")
    ax2.set(xlabel="predicted MI probability", ylabel="records", xlim=(0, 1))
    paths.append(_save(fig, out_dir / "reliability.png"))
    return paths


def _save(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def evaluate(
    checkpoint: str | Path | None,
    data: str | Path,
    out_dir: str | Path,
    *,
    negatives: str = "all",
    folds: Sequence[int] | None = None,
    labs: str | Path | None = None,
    cache_dir: str | Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Score ``checkpoint`` (None = the shipped one) on ``data``; write the report into ``out_dir``.

    Returns:
        The report dict also written to ``out_dir/report.json``.

    Raises:
        DatasetError: bad data selection, or the selection lacks one of the classes.
        CheckpointError: the checkpoint cannot be loaded.
    """
    from engine.checkpoint import load_checkpoint
    from engine.train import predict_dataset

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    loaded = load_checkpoint(None if checkpoint is None else Path(checkpoint))
    meta = dict(loaded.metadata or {})
    trained_renderer = meta.get("renderer_version") or (meta.get("extra") or {}).get("renderer_version")
    if trained_renderer and trained_renderer != RENDERER_VERSION:
        log.warning("checkpoint was trained on renderer %s but this build renders %s: scores may be off", trained_renderer, RENDERER_VERSION)
    items = select_items(load_items(data, labs), negatives, folds)
    y = np.asarray([it.label for it in items], dtype=np.int64)
    if y.sum() == 0 or y.sum() == len(y):
        raise DatasetError(f"the selection has {int(y.sum())} MI of {len(y)} records: need both classes to evaluate")
    ds = MirageDataset.from_items(items, loaded.config, cache_dir=cache_dir, progress=progress)
    model = loaded.model.eval()
    p = predict_dataset(model, ds).astype(np.float64)
    report: dict[str, Any] = M.summary(y, p, loaded.threshold)
    report.update(
        {
            "checkpoint": str(loaded.path),
            "checkpoint_sha256": loaded.sha256,
            "config": loaded.config.name,
            "data": str(data),
            "negatives": negatives,
            "folds": list(folds) if folds else None,
            "threshold_source": "checkpoint (validation 90 % specificity)",
            "renderer_version": RENDERER_VERSION,
            "preprocessing_version": PREPROCESSING_VERSION,
            "trained_renderer_version": trained_renderer,
        }
    )
    with open(out / "predictions.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["record_id", "label", "mi_probability"])
        for it, prob in zip(items, p):
            w.writerow([it.record_id, it.label, f"{prob:.6f}"])
    report["plots"] = [p_.name for p_ in plot_curves(y, p, float(loaded.threshold), out, title=f"({len(y)} records)")]
    (out / "report.json").write_text(json.dumps(report, indent=2, sort_keys=True))
    log.info("evaluated %d records (%d MI): AUROC %.3f AUPRC %.3f -> %s", len(y), int(y.sum()), report["auroc"], report["auprc"], out / "report.json")
    return report
