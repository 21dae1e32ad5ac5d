"""``mirage train`` and ``mirage evaluate``: the model room's door (see :mod:`mirage.cli`).

Each function builds its own argparse parser, so ``mirage train --help`` explains the options.
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
from pathlib import Path

from engine.config import PRESETS
from engine.errors import MirageError

log = logging.getLogger(__name__)

DEFAULT_CACHE = Path(".mirage/cache")


def _cache_arg(value: str) -> Path | None:
    """``--cache ''`` disables the cache (``Path('')`` would silently mean the current folder)."""
    return Path(value) if value.strip() else None


class _DefaultsFormatter(argparse.HelpFormatter):
    """Shows '(default: X)' only for options whose default means something (not None/False)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        shown = action.default is not None and action.default is not False and action.default != argparse.SUPPRESS
        if shown and "%(default)" not in text and action.option_strings:
            text += " (default: %(default)s)"
        return text


def _folds(text: str) -> list[int]:
    if text.strip().lower() == "none":
        return []  # e.g. --test-fold none: train on every fold but the validation fold
    try:
        return [int(t) for t in text.replace(" ", "").split(",") if t]
    except ValueError:
        raise argparse.ArgumentTypeError(f"folds must be comma-separated integers, got {text!r}") from None


def train_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mirage train",
        description=(
            "Train MIRAGE on a PTB-XL folder or a manifest dataset (see docs/DATA.md) and write a checkpoint "
            "with its 90%-specificity alarm threshold. Splits are patient-wise: PTB-XL strat_fold (default: "
            "the two highest folds are validation and test), a manifest 'split' column, or a patient hash. "
            "Progress is saved every epoch to CKPT.state; --resume continues an interrupted run."
        ),
        formatter_class=_DefaultsFormatter,
        epilog="example: mirage train --data ../shared/data/ptbxl-sample --synthetic 400 --out runs/mirage.pt",
    )
    p.add_argument("--data", type=Path, action="append",
                   help="PTB-XL folder (ptbxl_database.csv, scp_statements.csv, records500/) or manifest CSV/folder; repeat to combine sources "
                        "(a PTB-XL ECG given twice is read once, from the first source; combined sources are split by patient hash)")
    p.add_argument("--labs", type=Path, help="labs CSV for a manifest (default: labs.csv next to it)")
    p.add_argument("--out", type=Path, required=True, help="checkpoint to write (.pt); training state goes to OUT.state")
    p.add_argument("--preset", default="small", help="model preset: " + ", ".join(PRESETS) + " (ptbxl = the shipped recipe, docs/MODEL.md)")
    p.add_argument("--epochs", type=int, default=30, help="maximum epochs")
    p.add_argument("--batch-size", type=int, default=32, help="samples per optimisation step")
    p.add_argument("--lr", type=float, default=5e-4, help="peak AdamW learning rate (warm-up then cosine)")
    p.add_argument("--weight-decay", type=float, default=0.05, help="AdamW weight decay")
    p.add_argument("--patience", type=int, default=8, help="early stop after this many epochs without better validation AUROC")
    p.add_argument("--seed", type=int, default=0, help="seeds python, numpy, torch and the splits of synthetic data")
    p.add_argument("--val-fold", type=_folds, help="validation fold(s), e.g. 7 or 6,7 (datasets with folds; default: second-highest fold)")
    p.add_argument("--test-fold", type=_folds,
                   help="held-out test fold(s) (datasets with folds; default: highest fold; 'none' = no test split, to ship a model trained on "
                        "all folds but the validation fold)")
    p.add_argument("--synthetic", type=int, default=0, metavar="N", help="add N simulated patients (half MI) from simulators.ecg")
    p.add_argument("--no-augment", action="store_true", help="turn off amplitude/shift/wander/noise augmentation")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--cache", type=_cache_arg, default=DEFAULT_CACHE, help="folder for cached rendered inputs ('' to disable)")
    p.add_argument("--resume", action="store_true", help="continue from OUT.state if it exists")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def train_main(argv: list[str]) -> int:
    """``mirage train``: returns 0 on success, 2 on bad data or options."""
    args = train_parser().parse_args(argv)
    from engine.config import get_preset
    from engine.train import TrainOptions
    from engine.training_run import DataPlan, run_training

    if not args.data and args.synthetic <= 0:
        print("mirage train: give --data DIR and/or --synthetic N", file=sys.stderr)
        return 2
    try:
        cfg = get_preset(args.preset)
        opts = TrainOptions(
            epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay, patience=args.patience,
            seed=args.seed, augment=not args.no_augment, threads=args.threads, progress=not args.no_progress,
        )
        plan = DataPlan(data=tuple(args.data or ()) or None, labs=args.labs, val_folds=None if args.val_fold is None else tuple(args.val_fold),
                        test_folds=None if args.test_fold is None else tuple(args.test_fold), synthetic=args.synthetic, cache_dir=args.cache)
        summary = run_training(plan, cfg, opts, args.out, resume=args.resume, command="mirage train " + shlex.join(argv))
    except MirageError as exc:
        print(f"mirage train: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({k: summary[k] for k in ("checkpoint", "sha256", "thresholds", "metrics", "seconds")}, indent=2, default=float))
    return 0


def evaluate_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mirage evaluate",
        description=(
            "Evaluate a checkpoint on a labelled PTB-XL folder or manifest. Writes REPORT_DIR/report.json "
            "(n_pos, n_neg, auroc, auprc, sens_at_spec90, spec_at_sens90, the checkpoint's threshold with the "
            "sensitivity/specificity it gives, ECE), predictions.csv, roc.png, pr.png and reliability.png. "
            "Positive = MI; negatives = every other labelled record, or only NORM with --negatives norm."
        ),
        formatter_class=_DefaultsFormatter,
        epilog="example: mirage evaluate --data ../shared/data/ptbxl-sample --folds 8 --out runs/report",
    )
    p.add_argument("--checkpoint", type=Path, help="checkpoint (.pt); default: the shipped engine/checkpoints/mirage-default.pt")
    p.add_argument("--data", type=Path, required=True, help="PTB-XL folder or manifest CSV/folder")
    p.add_argument("--labs", type=Path, help="labs CSV for a manifest (default: labs.csv next to it)")
    p.add_argument("--out", type=Path, required=True, help="report folder")
    p.add_argument("--negatives", choices=("all", "norm"), default="all", help="which non-MI records count as negatives")
    p.add_argument("--folds", type=_folds, help="comma-separated folds to evaluate, e.g. 9,10 (datasets with folds)")
    p.add_argument("--cache", type=_cache_arg, default=DEFAULT_CACHE, help="folder for cached rendered inputs ('' to disable)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def evaluate_main(argv: list[str]) -> int:
    """``mirage evaluate``: returns 0 on success, 2 on bad data, options or checkpoint."""
    args = evaluate_parser().parse_args(argv)
    from engine.evaluate import evaluate

    try:
        report = evaluate(
            args.checkpoint, args.data, args.out, negatives=args.negatives, folds=args.folds, labs=args.labs,
            cache_dir=args.cache, progress=not args.no_progress,
        )
    except MirageError as exc:
        print(f"mirage evaluate: {exc}", file=sys.stderr)
        return 2
    keys = ("n_pos", "n_neg", "auroc", "auprc", "sens_at_spec90", "spec_at_sens90", "threshold", "sensitivity", "specificity", "ece")
    print(json.dumps({k: report[k] for k in keys}, indent=2))
    return 0
