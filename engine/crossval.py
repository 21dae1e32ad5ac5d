"""Patient-wise cross-validation and ablations of MIRAGE on PTB-XL (plus simulated patients).

Protocol (docs/MODEL.md):

* **Splits.** PTB-XL's ``strat_fold`` keeps every patient in one fold (Wagner et al., Scientific
  Data 7, 154, 2020), so splits made of whole folds are patient-wise. The folds present (1-8 in
  the 353-record sample) are paired into ``n_splits`` test groups; split ``k`` tests on group
  ``k``, validates (early stopping + the 90 %-specificity threshold) on the last fold of group
  ``k - 1`` and trains on every other fold. Each fold is tested exactly once.
* **Synthetic patients** (variants with ``synthetic=True``): ``N`` simulated patients
  (:func:`engine.data.synthetic.synthetic_windows`, generated once) are hashed by patient into
  70/15/15 train/val/test and added to the train and validation sides; test numbers are reported
  on PTB-XL only (synthetic test numbers separately).
* **Metrics** per split on the real test folds (:mod:`engine.metrics`): MI vs all others and MI vs
  NORM - AUROC, AUPRC, sensitivity at 90 % specificity, sensitivity/specificity at the validation
  threshold, ECE (Guo et al., ICML 2017). Out-of-fold predictions are pooled for the ROC and
  reliability plots and for the age check: an age-only baseline (score = age) and the model's
  AUROC within age strata (MI patients are older than NORM in PTB-XL, so a model reading age alone
  would look good overall but not within a stratum).
* **Variants** (:data:`VARIANTS`) share folds and seeds, so differences are the ablated part.

Training itself is :func:`engine.train.fit` (B's trainer), unchanged; this module only chooses
the data of each split and scores the result.
"""

from __future__ import annotations

import json
import sys
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from engine import metrics as M
from engine.evaluate import _save  # the figure writer of `mirage evaluate` (tight layout, Agg, closed)
from engine.config import MirageConfig, get_preset
from engine.data.dataset import MirageDataset, WindowSet
from engine.data.items import Item, check_disjoint, split_by_patient
from engine.errors import ConfigError, DatasetError
from engine.pipeline import ModelInputs

log = logging.getLogger(__name__)

AGE_BINS: tuple[float, ...] = (0.0, 55.0, 65.0, 75.0, 200.0)


@dataclass(frozen=True)
class Variant:
    """One configuration of the ablation table."""

    name: str
    description: str
    changes: dict[str, Any] = field(default_factory=dict)  # MirageConfig fields changed from the preset
    synthetic: bool = False
    augment: bool = True


RESNET_AUX: dict[str, Any] = {"lead_encoder": "resnet", "aux_classes": 5}

VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in (
        Variant("paper", "paper-faithful MIRAGE (both branches, FiLM, InfoNCE), PTB-XL only"),
        Variant("ecg_only", "Graphormer (ECG) branch only", {"use_img_branch": False}),
        Variant("img_only", "ViT (image) branch only", {"use_ecg_branch": False}),
        Variant("no_con", "without the contrastive loss (lambda_con = 0)", {"lambda_con": 0.0}),
        Variant("no_augment", "without training augmentation", augment=False),
        Variant("conv_stem", "improvement: temporal conv stem per lead", {"conv_stem": True}),
        Variant("synthetic", "improvement: + simulated patients (with labs) mixed into training", synthetic=True),
        Variant("synthetic_no_film", "+ simulated patients, without FiLM (labs ignored)", {"use_film": False}, synthetic=True),
        Variant("synthetic_conv_stem", "+ simulated patients and conv stem", {"conv_stem": True}, synthetic=True),
        Variant("synthetic_img_only", "+ simulated patients, ViT (image) branch only", {"use_ecg_branch": False}, synthetic=True),
        # Issue 16: the shared per-lead ResNet tokeniser and the superclass heads, and their ablations.
        Variant("resnet_aux", "improvement: per-lead 1-D ResNet tokeniser + 5 superclass heads (the `ptbxl` preset)", RESNET_AUX),
        Variant("resnet_no_aux", "per-lead ResNet tokeniser, MI head only", {"lead_encoder": "resnet"}),
        Variant("resnet_aux_ecg_only", "`resnet_aux` without the image branch", {**RESNET_AUX, "use_img_branch": False}),
        Variant("resnet_aux_no_bias", "`resnet_aux` without the Graphormer spatial bias", {**RESNET_AUX, "use_spatial_bias": False}),
        Variant("resnet_aux_synthetic", "`resnet_aux` + simulated patients (with labs) mixed into training", RESNET_AUX, synthetic=True),
        Variant("resnet1d", "reference: plain 12-channel 1-D ResNet (0.6 M parameters), 5 superclass heads", {"arch": "resnet1d", "aux_classes": 5}),
    )
}


@dataclass(frozen=True)
class Split:
    """Folds of one cross-validation split."""

    index: int
    train_folds: tuple[int, ...]
    val_folds: tuple[int, ...]
    test_folds: tuple[int, ...]


def make_splits(folds: Sequence[int], n_splits: int) -> list[Split]:
    """Group the sorted ``folds`` into ``n_splits`` consecutive test groups (see module docstring).

    Raises:
        DatasetError: fewer than 3 folds, or ``n_splits`` not in 2..len(folds).
    """
    fs = sorted(set(int(f) for f in folds))
    if len(fs) < 3:
        raise DatasetError(f"cross-validation needs at least 3 folds, got {fs}")
    if not 2 <= n_splits <= len(fs):
        raise DatasetError(f"n_splits={n_splits} must be between 2 and the number of folds ({len(fs)})")
    groups = [[int(x) for x in g] for g in np.array_split(np.asarray(fs), n_splits)]
    out = []
    for k, test in enumerate(groups):
        prev = groups[k - 1]
        val = [prev[-1]] if prev[-1] not in test else [f for f in fs if f not in test][:1]
        train = [f for f in fs if f not in test and f not in val]
        out.append(Split(k, tuple(train), tuple(val), tuple(test)))
    return out


def split_items(items: Sequence[Item], split: Split) -> tuple[list[int], list[int], list[int]]:
    """Indices (train, val, test) of ``items`` for ``split``; checks no patient crosses sides."""
    side = {**{f: 0 for f in split.train_folds}, **{f: 1 for f in split.val_folds}, **{f: 2 for f in split.test_folds}}
    parts: tuple[list[int], list[int], list[int]] = ([], [], [])
    for i, it in enumerate(items):
        if it.fold is None:
            raise DatasetError(f"item {it.record_id!r} has no fold: cross-validation needs folded data")
        if it.fold in side:
            parts[side[it.fold]].append(i)
    check_disjoint(train=[items[i] for i in parts[0]], val=[items[i] for i in parts[1]], test=[items[i] for i in parts[2]])
    return parts


def subset(ds: MirageDataset, idx: Sequence[int], cfg: MirageConfig) -> MirageDataset:
    """Rows ``idx`` of ``ds`` as a dataset for ``cfg`` (precomputed inputs are reused, not re-rendered)."""
    ix = np.asarray(idx, dtype=np.int64)
    x = ds.inputs
    image = x.image if ds.lazy_images else x.image[ix]  # lazily rendered datasets keep no images
    return MirageDataset(ds.windows.subset(ix), cfg, ModelInputs(x.ecg[ix], image, x.labs[ix], x.lab_mask[ix]))


def synthetic_dataset(n: int, cfg: MirageConfig, seed: int, cache_dir: Path | None) -> MirageDataset:
    """``n`` simulated patients through the shared pipeline (cached as an .npz when ``cache_dir``)."""
    from engine.data.synthetic import synthetic_windows

    f = None if cache_dir is None else Path(cache_dir) / f"synthetic-{n}-{seed}-{cfg.fs}-{cfg.T}.npz"
    ws = synthetic_windows(n, cfg, seed=seed) if f is None or not f.is_file() else None
    if ws is None:
        z = np.load(f)  # type: ignore[arg-type]
        items = [Item(f"synthetic-{seed}-{i}", Path(f"synthetic/{seed}/{i}"), int(z["labels"][i]), f"synthetic-{seed}-p{i}", source="synthetic") for i in range(n)]
        ws = WindowSet(z["windows"], z["labels"], z["labs"], z["lab_mask"], items)
        return MirageDataset(ws, cfg, ModelInputs(z["ecg"], z["image"], z["labs"], z["lab_mask"]))
    ds = MirageDataset(ws, cfg, progress=False)
    if f is not None:
        f.parent.mkdir(parents=True, exist_ok=True)
        np.savez(f, windows=ws.windows, labels=ws.labels, labs=ws.labs, lab_mask=ws.lab_mask, ecg=ds.inputs.ecg, image=ds.inputs.image)
    return ds


def read_ages(folder: str | Path | Sequence[str | Path]) -> dict[str, float]:
    """record_id (``ptbxl-<ecg_id>``) -> age in years, from ``ptbxl_database.csv`` (NaN rows dropped).

    ``folder`` may list several sources; ages come from those that are PTB-XL folders (manifests
    carry no age), and are empty when none is.
    """
    import pandas as pd

    if not isinstance(folder, (str, Path)):
        return {k: v for f in folder for k, v in read_ages(f).items()}
    if not (Path(folder) / "ptbxl_database.csv").is_file():
        return {}
    db = pd.read_csv(Path(folder) / "ptbxl_database.csv", usecols=["ecg_id", "age"])
    # PTB-XL codes ages over 89 as 300 (de-identification); treat them as 90.
    return {f"ptbxl-{int(e)}": float(min(a, 90.0)) for e, a in zip(db["ecg_id"], db["age"]) if np.isfinite(a)}


def score(y: np.ndarray, p: np.ndarray, threshold: float) -> dict[str, float | int] | None:
    """:func:`engine.metrics.summary` at ``threshold``, or None when a class is absent."""
    y = np.asarray(y, dtype=np.int64)
    if len(y) == 0 or y.sum() == 0 or y.sum() == len(y):
        return None
    return M.summary(y, p, threshold)


def run_split(variant: Variant, split: Split, real: MirageDataset, syn: MirageDataset | None, cfg: MirageConfig, opts: Any, seed: int) -> dict[str, Any]:
    """Train ``variant`` on one split and return its scores and test predictions."""
    from engine.train import choose_thresholds, fit, predict_dataset

    tr, va, te = split_items(real.items, split)
    train_parts, val_parts = [subset(real, tr, cfg)], [subset(real, va, cfg)]
    syn_test = None
    if variant.synthetic:
        if syn is None:
            raise ConfigError(f"variant {variant.name!r} needs synthetic data: pass synthetic > 0")
        s_tr, s_va, s_te = split_by_patient(syn.items, 0.15, 0.15, seed)
        pos = {it.record_id: i for i, it in enumerate(syn.items)}
        train_parts.append(subset(syn, [pos[it.record_id] for it in s_tr], cfg))
        val_parts.append(subset(syn, [pos[it.record_id] for it in s_va], cfg))
        syn_test = subset(syn, [pos[it.record_id] for it in s_te], cfg)
    train_ds, val_ds, test_ds = MirageDataset.concat(train_parts), MirageDataset.concat(val_parts), subset(real, te, cfg)
    t0 = time.perf_counter()
    result = fit(cfg, train_ds, val_ds, opts)
    thr = choose_thresholds(val_ds.labels, result.val_probs)["start"]
    p = predict_dataset(result.model, test_ds).astype(np.float64)
    y = test_ds.labels
    norm = np.asarray([bool(it.norm) or it.label == 1 for it in test_ds.items])
    out: dict[str, Any] = {
        "split": asdict(split),
        "n_train": len(train_ds),
        "n_val": len(val_ds),
        "threshold": thr,
        "best_epoch": result.best_epoch,
        "seconds": round(time.perf_counter() - t0, 1),
        "mi_vs_all": score(y, p, thr),
        "mi_vs_norm": score(y[norm], p[norm], thr),
        "predictions": [{"record_id": it.record_id, "label": int(it.label), "norm": bool(it.norm), "p": float(q)} for it, q in zip(test_ds.items, p)],
    }
    if syn_test is not None and len(syn_test):
        out["synthetic_test"] = score(syn_test.labels, predict_dataset(result.model, syn_test).astype(np.float64), thr)
    return out


def variant_config(base: MirageConfig, variant: Variant) -> MirageConfig:
    """The preset ``base`` with the variant's changes applied (name kept, changes in ``extra``)."""
    return base.replace(**variant.changes, extra={**base.extra, "variant": variant.name})


def run_variant(variant: Variant, real: MirageDataset, syn: MirageDataset | None, splits: Sequence[Split], base: MirageConfig, opts: Any, out_dir: Path, seed: int) -> list[dict[str, Any]]:
    """All splits of one variant; each split's result is written to ``out_dir/<variant>/split<k>.json``
    and reused when already there (a stopped run resumes at the next split)."""
    cfg = variant_config(base, variant)
    folder = out_dir / variant.name
    folder.mkdir(parents=True, exist_ok=True)
    results = []
    for sp in splits:
        f = folder / f"split{sp.index}.json"
        if f.is_file():
            results.append(json.loads(f.read_text()))
            continue
        v_opts = opts.__class__(**{**asdict(opts), "augment": opts.augment and variant.augment})
        r = run_split(variant, sp, real, syn, cfg, v_opts, seed)
        r.update(variant=variant.name, description=variant.description, config=cfg.to_dict(), train_options=asdict(v_opts))
        f.write_text(json.dumps(r, indent=1))
        a = r["mi_vs_all"] or {}
        log.info("%s split %d: MI-vs-all AUROC %.3f (%.0f s)", variant.name, sp.index, a.get("auroc", float("nan")), r["seconds"])
        results.append(r)
    return results


def pooled(results: Sequence[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Out-of-fold (labels, probabilities, norm flags, record ids) over all splits of a variant."""
    rows = [r for res in results for r in res["predictions"]]
    return (
        np.asarray([r["label"] for r in rows], dtype=np.int64),
        np.asarray([r["p"] for r in rows], dtype=np.float64),
        np.asarray([r["norm"] for r in rows], dtype=bool),
        [r["record_id"] for r in rows],
    )


def age_check(y: np.ndarray, p: np.ndarray, record_ids: Sequence[str], ages: dict[str, float], bins: Sequence[float] = AGE_BINS) -> dict[str, Any]:
    """Age-only baseline AUROC vs the model's, overall and within age strata (pooled out-of-fold)."""
    a = np.asarray([ages.get(r, np.nan) for r in record_ids])
    ok = np.isfinite(a)
    y, p, a = y[ok], p[ok], a[ok]
    out: dict[str, Any] = {"n": int(ok.sum()), "age_only_auroc": None, "model_auroc": None, "strata": []}
    if 0 < y.sum() < len(y):
        out["age_only_auroc"] = M.auroc(y, a)
        out["model_auroc"] = M.auroc(y, p)
    aucs, weights = [], []
    for lo, hi in zip(bins[:-1], bins[1:]):
        sel = (a >= lo) & (a < hi)
        ys = y[sel]
        row: dict[str, Any] = {"age": f"{lo:g}-{hi:g}" if hi < 200 else f">={lo:g}", "n": int(sel.sum()), "n_pos": int(ys.sum()), "model_auroc": None, "age_only_auroc": None}
        if 0 < ys.sum() < len(ys):
            row["model_auroc"] = M.auroc(ys, p[sel])
            row["age_only_auroc"] = M.auroc(ys, a[sel])
            aucs.append(row["model_auroc"])
            weights.append(int(ys.sum()))
        out["strata"].append(row)
    out["model_auroc_within_strata"] = float(np.average(aucs, weights=weights)) if aucs else None
    return out


def summarise(results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Mean and sd over splits of every scalar metric, plus pooled out-of-fold numbers."""
    out: dict[str, Any] = {"n_splits": len(results), "seconds": float(sum(r["seconds"] for r in results))}
    for task in ("mi_vs_all", "mi_vs_norm", "synthetic_test"):
        rows = [r[task] for r in results if r.get(task)]
        if not rows:
            continue
        keys = [k for k in ("auroc", "auprc", "sens_at_spec90", "sensitivity", "specificity", "ece") if k in rows[0]]
        out[task] = {k: {"mean": float(np.mean([r[k] for r in rows])), "sd": float(np.std([r[k] for r in rows], ddof=1)) if len(rows) > 1 else 0.0} for k in keys}
        out[task]["n_folds_scored"] = len(rows)
    y, p, norm, _ = pooled(results)
    if 0 < y.sum() < len(y):
        out["pooled_mi_vs_all"] = M.summary(y, p)
        keep = norm | (y == 1)  # MI vs NORM: positives plus the normal ECGs
        out["pooled_mi_vs_norm"] = M.summary(y[keep], p[keep])
    return out


def _fmt(s: dict[str, Any] | None, task: str, key: str) -> str:
    v = (s or {}).get(task, {}).get(key)
    return "n/a" if v is None else f"{v['mean']:.3f} ± {v['sd']:.3f}"


def markdown_table(summaries: dict[str, dict[str, Any]], variants: dict[str, Variant] = VARIANTS) -> str:
    """The ablation table (mean ± sd over splits) as GitHub markdown."""
    head = ("| variant | what | MI vs all AUROC | AUPRC | sens @ 90 % spec | sens / spec at the validation threshold | ECE | MI vs NORM AUROC | "
            "sens @ 90 % spec (NORM) | pooled AUROC | train s |")
    lines = [head, "| " + " | ".join(["---"] * 11) + " |"]
    for name, s in summaries.items():
        pa = s.get("pooled_mi_vs_all", {}).get("auroc")
        lines.append(
            f"| `{name}` | {variants[name].description if name in variants else ''} | {_fmt(s, 'mi_vs_all', 'auroc')} | {_fmt(s, 'mi_vs_all', 'auprc')} | "
            f"{_fmt(s, 'mi_vs_all', 'sens_at_spec90')} | {_fmt(s, 'mi_vs_all', 'sensitivity')} / {_fmt(s, 'mi_vs_all', 'specificity')} | "
            f"{_fmt(s, 'mi_vs_all', 'ece')} | {_fmt(s, 'mi_vs_norm', 'auroc')} | "
            f"{_fmt(s, 'mi_vs_norm', 'sens_at_spec90')} | {'n/a' if pa is None else f'{pa:.3f}'} | {s['seconds']:.0f} |"
        )
    return "\n".join(lines)


def plot_figures(all_results: dict[str, list[dict[str, Any]]], focus: str, ages: dict[str, float], fig_dir: Path) -> list[Path]:
    """roc.png (pooled out-of-fold ROC per variant), reliability.png and age.png for ``focus``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    fig, ax = plt.subplots(figsize=(5, 5))
    for name, res in all_results.items():
        y, p, _, _ = pooled(res)
        fpr, tpr, _ = M.roc_curve(y, p)
        ax.plot(fpr, tpr, lw=2.2 if name == focus else 1, label=f"{name} {M.auroc(y, p):.3f}")
    ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=1)
    ax.axvline(0.1, c="tab:red", lw=0.8, ls=":")
    ax.set(xlabel="1 - specificity", ylabel="sensitivity", title="Out-of-fold ROC, PTB-XL MI vs all", xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="lower right", fontsize=7)
    paths.append(_save(fig, fig_dir / "roc.png"))

    y, p, _, ids = pooled(all_results[focus])
    conf, acc, count = M.calibration_bins(y, p, 10)
    used = count > 0
    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(5, 5.5), gridspec_kw={"height_ratios": [3, 1]}, sharex=True)
    ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=1, label="perfect calibration")
    ax.plot(conf[used], acc[used], "o-", lw=2, label=f"{focus}: ECE {M.ece(y, p):.3f}")
    ax.set(ylabel="observed MI rate", title="Reliability (out-of-fold, PTB-XL)", ylim=(0, 1.01))
    ax.legend(loc="upper left", fontsize=8)
    ax2.bar(np.arange(10) / 10 + 0.05, count, width=0.09)
    ax2.set(xlabel="predicted MI probability", ylabel="records", xlim=(0, 1))
    paths.append(_save(fig, fig_dir / "reliability.png"))

    a = np.asarray([ages.get(r, np.nan) for r in ids])
    ok = np.isfinite(a)
    fig, ax = plt.subplots(figsize=(5, 4))
    for lab, c, txt in ((0, "tab:blue", "other"), (1, "tab:red", "MI")):
        sel = ok & (y == lab)
        ax.scatter(a[sel], p[sel], s=10, c=c, alpha=0.6, label=txt)
    ax.set(xlabel="age (years)", ylabel="predicted MI probability", title=f"{focus}: score vs age (out-of-fold)")
    ax.legend(fontsize=8)
    paths.append(_save(fig, fig_dir / "age.png"))
    return paths


def load_results(out_dir: Path, names: Sequence[str], n_splits: int) -> dict[str, list[dict[str, Any]]]:
    """Finished variants (all ``n_splits`` split files present) under ``out_dir``."""
    found = {}
    for name in names:
        files = [out_dir / name / f"split{k}.json" for k in range(n_splits)]
        if all(f.is_file() for f in files):
            found[name] = [json.loads(f.read_text()) for f in files]
    return found


def report(out_dir: Path, names: Sequence[str], n_splits: int, data: Path | Sequence[Path], focus: str | None, fig_dir: Path | None) -> dict[str, Any]:
    """Aggregate finished variants: ``summary.json``, ``table.md`` and (optionally) figures."""
    results = load_results(out_dir, names, n_splits)
    if not results:
        raise DatasetError(f"no finished variant under {out_dir} (looked for {list(names)} with {n_splits} splits)")
    ages = read_ages(data)
    summaries = {n: summarise(r) for n, r in results.items()}
    for n, r in results.items():
        y, p, _, ids = pooled(r)
        summaries[n]["age_check"] = age_check(y, p, ids, ages)
    focus = focus if focus in results else max(summaries, key=lambda n: summaries[n].get("pooled_mi_vs_all", {}).get("auroc", 0.0))
    out = {"variants": summaries, "focus": focus, "table": markdown_table(summaries)}
    if fig_dir is not None:
        out["figures"] = [str(p) for p in plot_figures(results, focus, ages, fig_dir)]
    (out_dir / "summary.json").write_text(json.dumps(out, indent=1))
    (out_dir / "table.md").write_text(out["table"] + "\n")
    return out


def crossval_parser() -> Any:
    import argparse

    p = argparse.ArgumentParser(
        prog="mirage crossval",
        description=(
            "Patient-wise cross-validation and ablations of MIRAGE on a PTB-XL folder (folds grouped into "
            "--splits test groups; validation = last fold of the previous group; train = the rest). Each "
            "variant x split writes OUT/VARIANT/splitK.json (reused on re-runs, so a stopped run resumes); "
            "then OUT/summary.json and OUT/table.md (mean ± sd over splits, pooled out-of-fold AUROC, "
            "age-only baseline and within-age-strata AUROC) and, with --figures, roc.png, reliability.png, "
            "age.png. --ship trains the chosen variant on the default folds (train 1-6, val 7, test 8 on the "
            "sample) with engine.training_run and writes a checkpoint."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        epilog="example: mirage crossval --data ../shared/data/ptbxl-sample --variants paper,ecg_only --epochs 6 --out runs/cv",
    )
    p.add_argument("--data", type=Path, action="append", required=True,
                   help="PTB-XL folder or manifest; repeat to combine sources (deduplicated by ecg_id; then folds = patient hash mod 8)")
    p.add_argument("--subset", type=float, default=1.0, help="screening: keep this fraction of patients (hash-chosen, same for every variant)")
    p.add_argument("--out", type=Path, default=Path("runs/crossval"), help="results folder")
    p.add_argument("--variants", default="paper", help=f"comma-separated, or 'all': {', '.join(VARIANTS)}")
    p.add_argument("--splits", type=int, default=4, help="number of test groups of folds")
    p.add_argument("--preset", default="small", help="model preset the variants change")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="change a preset field for every variant, e.g. --set patch_size=32 (repeatable)")
    p.add_argument("--epochs", type=int, default=6, help="epochs per training run")
    p.add_argument("--batch-size", type=int, default=32, help="samples per step")
    p.add_argument("--lr", type=float, default=5e-4, help="peak learning rate")
    p.add_argument("--seed", type=int, default=0, help="seed of every run (same for all variants)")
    p.add_argument("--synthetic", type=int, default=300, help="simulated patients for the synthetic variants")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 is ~10x faster than 2 on a shared, overloaded 2-core machine: measured)")
    p.add_argument("--cache", type=Path, default=Path(".mirage/cache"), help="cache of rendered inputs")
    p.add_argument("--only-splits", help="run just these split indices (e.g. 2,3), so several processes can share one variant's splits; "
                   "the report still needs every split")
    p.add_argument("--report-only", action="store_true", help="only aggregate finished variants")
    p.add_argument("--figures", type=Path, help="write roc/reliability/age PNGs here (e.g. docs/figures)")
    p.add_argument("--focus", help="variant drawn in the reliability and age plots (default: best pooled AUROC)")
    p.add_argument("--ship", metavar="VARIANT", help="train VARIANT on the default folds and write --ship-out")
    p.add_argument("--ship-out", type=Path, default=Path("runs/ship/mirage.pt"), help="checkpoint written by --ship")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def _names(text: str) -> list[str]:
    names = list(VARIANTS) if text == "all" else [t for t in text.replace(" ", "").split(",") if t]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise ConfigError(f"unknown variant(s) {unknown}; choose from {list(VARIANTS)}")
    return names


def _with_sets(cfg: MirageConfig, sets: Sequence[str]) -> MirageConfig:
    """``cfg`` with ``FIELD=VALUE`` overrides (VALUE parsed as JSON, e.g. 32, 0.1, true)."""
    changes: dict[str, Any] = {}
    for s in sets:
        key, sep, value = s.partition("=")
        if not sep or key not in cfg.to_dict():
            raise ConfigError(f"--set {s!r}: expected FIELD=VALUE with FIELD a MirageConfig field")
        try:
            changes[key] = json.loads(value)
        except json.JSONDecodeError:
            changes[key] = value
    return cfg.replace(**changes) if changes else cfg


def crossval_main(argv: list[str]) -> int:
    """``mirage crossval``: 0 on success, 2 on bad data or options."""
    from engine.data import load_sources, with_patient_folds
    from engine.data.items import patient_bucket
    from engine.errors import MirageError
    from engine.train import TrainOptions

    args = crossval_parser().parse_args(argv)
    try:
        names = _names(args.variants)
        base = _with_sets(get_preset(args.preset), args.set)
        opts = TrainOptions(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, patience=args.epochs, seed=args.seed, threads=args.threads, progress=not args.no_progress)
        cache = args.cache if str(args.cache) else None
        if args.ship:
            from engine.training_run import DataPlan, run_training

            v = VARIANTS[_names(args.ship)[0]]
            plan = DataPlan(data=tuple(args.data), synthetic=args.synthetic if v.synthetic else 0, cache_dir=cache)
            ship_opts = TrainOptions(**{**asdict(opts), "augment": v.augment})
            res = run_training(plan, variant_config(base, v), ship_opts, args.ship_out, command="mirage crossval " + " ".join(argv))
            print(json.dumps({k: res[k] for k in ("checkpoint", "sha256", "thresholds", "metrics", "seconds")}, indent=1, default=float))
            return 0
        if not args.report_only:
            items = load_sources(args.data)
            if any(it.fold is None for it in items):
                items = with_patient_folds(items)
            if args.subset < 1.0:
                items = [it for it in items if patient_bucket(it.patient_id, 1000, seed=1) < args.subset * 1000]
                log.info("screening subset: %d records (%d MI) of %.0f %% of the patients", len(items), sum(it.label for it in items), 100 * args.subset)
            real = MirageDataset.from_items(items, base, cache_dir=cache, progress=not args.no_progress, images=False)
            splits = make_splits([it.fold for it in items if it.fold is not None], args.splits)
            if args.only_splits:
                wanted = {int(k) for k in args.only_splits.split(",") if k.strip()}
                splits = [sp for sp in splits if sp.index in wanted]
            syn = None
            if any(VARIANTS[n].synthetic for n in names) and args.synthetic > 0:
                syn = synthetic_dataset(args.synthetic, base, args.seed + 7919, cache)
            for n in names:
                run_variant(VARIANTS[n], real, syn, splits, base, opts, args.out, args.seed)
        if args.only_splits and not args.report_only:
            print(f"splits {args.only_splits} of {names} written under {args.out}; run again without --only-splits (or with --report-only) for the table")
            return 0
        out = report(args.out, list(VARIANTS), args.splits, args.data, args.focus, args.figures)
    except MirageError as exc:
        print(f"mirage crossval: {exc}", file=sys.stderr)
        return 2
    print(out["table"])
    return 0
