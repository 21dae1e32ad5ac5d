"""Train MIRAGE: seeded, resumable, early-stopped on validation AUROC, thresholded at 90 % specificity.

Recipe (MIRAGE paper, section "Training"; our choices where the paper leaves them open):

* loss ``lambda_cls * CE + lambda_con * InfoNCE(z_ts, z_img)`` with the cross-entropy weighted by
  inverse class frequency of the training split (MI is ~15 % of PTB-XL), InfoNCE from
  :func:`engine.losses.info_nce`;
* AdamW (``lr``, ``weight_decay``), linear warm-up over the first ``warmup_frac`` of the steps,
  then cosine decay to zero;
* label-preserving augmentation of the raw windows (:func:`engine.data.dataset.augment_windows`),
  re-rendered through the shared pipeline every batch;
* validation AUROC after every epoch; the best epoch's weights are kept; training stops after
  ``patience`` epochs without improvement;
* every epoch writes ``CKPT.state`` (weights, optimizer, scheduler, RNG states, history), so
  ``resume=True`` continues where a stopped run left off;
* the alarm threshold is the 90 %-specificity point on validation data (``threshold`` and
  ``thresholds["start"]``), with a lower hysteresis value ``thresholds["end"]``.
"""

from __future__ import annotations

import logging
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from engine import metrics as M
from engine.config import MirageConfig
from engine.data.dataset import MirageDataset
from engine.errors import DatasetError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainOptions:
    """Optimisation settings (data and splits are chosen by :mod:`engine.cli`)."""

    epochs: int = 30
    batch_size: int = 32
    lr: float = 5e-4
    weight_decay: float = 0.05
    warmup_frac: float = 0.1
    patience: int = 8
    seed: int = 0
    augment: bool = True
    threads: int | None = None  # torch intra-op threads; None = torch's default
    calibrate: bool = True  # fit temperature + offset on validation data after training (see calibrate)
    progress: bool = True


@dataclass
class EpochLog:
    epoch: int
    train_loss: float
    train_ce: float
    train_con: float
    val_auroc: float
    val_loss: float
    seconds: float


@dataclass
class TrainResult:
    """What :func:`fit` produced: the best model (loaded), its validation scores and the history."""

    model: torch.nn.Module
    best_epoch: int
    best_val_auroc: float
    history: list[EpochLog] = field(default_factory=list)
    val_probs: np.ndarray | None = None
    stopped_early: bool = False


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU and, when present, CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def class_weights(labels: np.ndarray) -> torch.Tensor:
    """Inverse-frequency weights ``N / (2 N_c)`` (1 for an absent class)."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=2).astype(np.float64)
    w = np.where(counts > 0, counts.sum() / (2.0 * np.maximum(counts, 1)), 1.0)
    return torch.tensor(w, dtype=torch.float32)


def warmup_cosine(total_steps: int, warmup_frac: float) -> Callable[[int], float]:
    """LR multiplier: linear warm-up then cosine to zero."""
    warm = max(1, int(round(total_steps * warmup_frac)))

    def f(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        progress = min(1.0, (step - warm) / max(1, total_steps - warm))
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return f


def training_loss(out: Any, target: torch.Tensor, cfg: MirageConfig, weights: torch.Tensor, aux_target: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """``lambda_cls * weighted CE + lambda_con * InfoNCE [+ lambda_aux * masked BCE]``; returns (total, parts).

    The auxiliary term is the binary cross-entropy of the superclass heads, averaged over the
    (record, class) pairs whose flag is known (NaN targets - e.g. simulated patients - are masked).
    """
    from engine.losses import info_nce

    ce = torch.nn.functional.cross_entropy(out.logits, target, weight=weights)
    total = cfg.lambda_cls * ce
    if out.aux_logits is not None and aux_target is not None and cfg.lambda_aux > 0:
        known = ~torch.isnan(aux_target)  # (B, 5)
        if bool(known.any()):
            bce = torch.nn.functional.binary_cross_entropy_with_logits(out.aux_logits[known], aux_target[known])
            total = total + cfg.lambda_aux * bce
    con = torch.zeros((), dtype=ce.dtype)
    if cfg.lambda_con > 0 and cfg.arch == "mirage" and cfg.use_ecg_branch and cfg.use_img_branch and out.z_ts.shape[0] > 1:
        con = info_nce(out.z_ts, out.z_img, cfg.tau)
        total = total + cfg.lambda_con * con
    return total, {"ce": float(ce.detach()), "con": float(con.detach())}


def uses_image(cfg: MirageConfig) -> bool:
    """Whether a model of ``cfg`` reads the rendered image (else batches skip rendering)."""
    return cfg.arch == "mirage" and cfg.use_img_branch


@torch.no_grad()
def _run_batches(model: torch.nn.Module, ds: MirageDataset, pick: Callable[[Any], Any], batch_size: int = 64) -> list[Any]:
    """``pick(output)`` of every batch of ``ds`` in eval mode (the model's mode is restored)."""
    was_training = model.training
    model.eval()
    render = uses_image(model.cfg)
    parts = []
    for s in range(0, len(ds), batch_size):
        ecg, image, labs, mask, _ = ds.batch(range(s, min(len(ds), s + batch_size)), render=render)
        parts.append(pick(model(ecg, image, labs, mask)))
    model.train(was_training)
    return parts


def predict_dataset(model: torch.nn.Module, ds: MirageDataset, batch_size: int = 64) -> np.ndarray:
    """MI probabilities (N,) for every sample of ``ds`` (eval mode, no augmentation)."""
    probs = _run_batches(model, ds, lambda out: out.probs.float().cpu().numpy(), batch_size)
    return np.concatenate(probs) if probs else np.zeros(0, dtype=np.float32)


def calibrate(model: torch.nn.Module, val_ds: MirageDataset) -> dict[str, float]:
    """Fit the model's temperature and MI-logit offset on validation data (in place).

    Temperature scaling (Guo et al., ICML 2017) divides the logits by ``T``; because training
    weights the classes (MI is the minority), the raw probabilities are also shifted upwards, which a
    single temperature cannot undo, so an offset ``b`` is added to the MI logit as well (Platt
    scaling on the logit difference). Both minimise the validation log-loss; neither changes the
    ranking of records, so AUROC is unchanged. The values live in the model's ``temperature`` and
    ``logit_offset`` buffers and so travel into every exported backend.

    Returns:
        ``{"temperature": T, "offset": b, "nll_before": .., "nll_after": ..}``.
    """
    model.temperature.fill_(1.0)
    model.logit_offset.zero_()
    logits = torch.cat(_run_batches(model, val_ds, lambda out: out.logits.float()))
    y = torch.from_numpy(np.asarray(val_ds.labels, dtype=np.int64))
    diff = (logits[:, 1] - logits[:, 0]).double()
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    b = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_t, b], lr=0.5, max_iter=200, line_search_fn="strong_wolfe")

    def nll() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(diff / log_t.exp() + b, y.double())
        loss.backward()
        return loss

    before = float(torch.nn.functional.binary_cross_entropy_with_logits(diff, y.double()))
    if 0 < int(y.sum()) < len(y):
        opt.step(nll)
    t, off = float(log_t.detach().exp()), float(b.detach())
    if not (np.isfinite(t) and np.isfinite(off)) or not 0.05 <= t <= 20:
        t, off = 1.0, 0.0  # degenerate validation data: leave the model uncalibrated
    model.temperature.fill_(t)
    model.logit_offset.fill_(off)
    after = float(torch.nn.functional.binary_cross_entropy_with_logits(diff / t + off, y.double()))
    log.info("calibration on %d validation records: T=%.3f offset=%.3f, log-loss %.4f -> %.4f", len(y), t, off, before, after)
    return {"temperature": t, "offset": off, "nll_before": before, "nll_after": after}


def _val_score(labels: np.ndarray, probs: np.ndarray) -> tuple[float, float]:
    """(AUROC or nan, mean log-loss) on validation data."""
    p = np.clip(probs.astype(np.float64), 1e-7, 1 - 1e-7)
    loss = float(-np.mean(labels * np.log(p) + (1 - labels) * np.log(1 - p)))
    both = 0 < labels.sum() < len(labels)
    return (M.auroc(labels, probs) if both else float("nan")), loss


def _better(score: tuple[float, float], best: tuple[float, float] | None) -> bool:
    """Higher AUROC wins (ties: lower loss); without AUROC, lower loss wins."""
    if best is None:
        return True
    (a, la), (b, lb) = score, best
    if math.isnan(a) or math.isnan(b):
        return la < lb
    return a > b + 1e-9 or (abs(a - b) <= 1e-9 and la < lb)


def _rng_state() -> dict[str, Any]:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])


def state_path(ckpt: str | Path) -> Path:
    """Where the resumable training state of checkpoint ``ckpt`` lives."""
    p = Path(ckpt)
    return p.with_name(p.name + ".state")


def fit(
    cfg: MirageConfig,
    train_ds: MirageDataset,
    val_ds: MirageDataset,
    opts: TrainOptions,
    *,
    state_file: str | Path | None = None,
    resume: bool = False,
) -> TrainResult:
    """Train a fresh MIRAGE (or resume one) and return the best-on-validation model.

    Raises:
        DatasetError: empty training or validation data, or a single-class training split.
    """
    from engine.model import build_model

    if len(train_ds) == 0 or len(val_ds) == 0:
        raise DatasetError(f"need training and validation data, got {len(train_ds)} and {len(val_ds)} samples")
    if len(np.unique(train_ds.labels)) < 2:
        raise DatasetError(f"the training split has only class {int(train_ds.labels[0])}: cannot learn MI vs other")
    if opts.threads:
        torch.set_num_threads(opts.threads)
    seed_everything(opts.seed)
    model = build_model(cfg)
    optim = torch.optim.AdamW(model.parameters(), lr=opts.lr, weight_decay=opts.weight_decay)
    steps_per_epoch = math.ceil(len(train_ds) / opts.batch_size)
    sched = torch.optim.lr_scheduler.LambdaLR(optim, warmup_cosine(steps_per_epoch * opts.epochs, opts.warmup_frac))
    weights = class_weights(train_ds.labels)
    rng = np.random.default_rng(opts.seed)
    history: list[EpochLog] = []
    best: tuple[float, float] | None = None
    best_state: dict[str, torch.Tensor] | None = None
    best_epoch, bad_epochs, start_epoch = -1, 0, 0

    if resume and state_file is not None and Path(state_file).is_file():
        st = torch.load(state_file, map_location="cpu", weights_only=False)
        if st["config"] != cfg.to_dict():
            raise DatasetError(f"{state_file} was written for another model configuration; remove it or drop --resume")
        model.load_state_dict(st["model"])
        optim.load_state_dict(st["optimizer"])
        sched.load_state_dict(st["scheduler"])
        rng.bit_generator.state = st["np_generator"]
        _set_rng_state(st["rng"])
        history = [EpochLog(**h) for h in st["history"]]
        best, best_state, best_epoch, bad_epochs = st["best"], st["best_state"], st["best_epoch"], st["bad_epochs"]
        start_epoch = st["epoch"] + 1
        log.info("resumed from %s at epoch %d (best val AUROC %.4f at epoch %d)", state_file, start_epoch, best[0] if best else float("nan"), best_epoch)

    stopped_early = bad_epochs >= opts.patience
    render = uses_image(cfg)  # models without an image branch skip rendering
    # One bar over every optimisation step of the run (a resumed run starts where it stopped), so the
    # ETA is meaningful within the first minute even when an epoch takes several.
    bar = tqdm(desc="training", unit="step", disable=not opts.progress, initial=start_epoch * steps_per_epoch, total=opts.epochs * steps_per_epoch)
    for epoch in range(start_epoch, opts.epochs):
        if stopped_early:
            break
        t0 = time.perf_counter()
        model.train()
        order = rng.permutation(len(train_ds))
        sums = np.zeros(3)
        for s in range(0, len(order), opts.batch_size):
            idx = order[s : s + opts.batch_size]
            batch = train_ds.augmented_batch(idx, rng, render=render) if opts.augment else train_ds.batch(idx, render=render)
            ecg, image, labs, mask, target = batch
            out = model(ecg, image, labs, mask)
            loss, parts = training_loss(out, target, cfg, weights, torch.from_numpy(train_ds.aux[idx]))
            optim.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optim.step()
            sched.step()
            sums += np.array([float(loss.detach()), parts["ce"], parts["con"]]) * len(idx)
            bar.update(1)
        probs = predict_dataset(model, val_ds)
        score = _val_score(val_ds.labels, probs)
        entry = EpochLog(epoch, *(sums / len(order)).tolist(), score[0], score[1], time.perf_counter() - t0)
        history.append(entry)
        if _better(score, best):
            best, best_epoch, bad_epochs = score, epoch, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            bad_epochs += 1
        stopped_early = bad_epochs >= opts.patience
        bar.set_postfix(epoch=epoch, loss=f"{entry.train_loss:.3f}", val_auroc=f"{entry.val_auroc:.3f}", best=f"{best[0]:.3f}@{best_epoch}")
        log.info("epoch %d: loss %.4f (ce %.4f, con %.4f) val AUROC %.4f val loss %.4f (%.1f s)", epoch, entry.train_loss, entry.train_ce, entry.train_con, entry.val_auroc, entry.val_loss, entry.seconds)
        if state_file is not None:
            _save_state(state_file, model, optim, sched, rng, epoch, history, best, best_state, best_epoch, bad_epochs, cfg)
    bar.close()
    if stopped_early:
        log.info("early stop: no validation improvement for %d epochs (best epoch %d)", opts.patience, best_epoch)
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    if opts.calibrate:
        calibrate(model, val_ds)
    val_probs = predict_dataset(model, val_ds)
    return TrainResult(model, best_epoch, best[0] if best else float("nan"), history, val_probs, stopped_early)


def _save_state(path: str | Path, model: torch.nn.Module, optim: torch.optim.Optimizer, sched: Any, rng: np.random.Generator, epoch: int, history: list[EpochLog], best: Any, best_state: Any, best_epoch: int, bad_epochs: int, cfg: MirageConfig) -> None:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".tmp")
    torch.save(
        {
            "model": model.state_dict(),
            "optimizer": optim.state_dict(),
            "scheduler": sched.state_dict(),
            "np_generator": rng.bit_generator.state,
            "rng": _rng_state(),
            "epoch": epoch,
            "history": [asdict(h) for h in history],
            "best": best,
            "best_state": best_state,
            "best_epoch": best_epoch,
            "bad_epochs": bad_epochs,
            "config": cfg.to_dict(),
        },
        tmp,
    )
    tmp.replace(p)


def choose_thresholds(labels: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    """{"start": the 90 %-specificity threshold, "end": a lower hysteresis threshold} on validation data.

    With a single-class validation split the start threshold falls back to 0.5.
    """
    if 0 < labels.sum() < len(labels):
        start = min(1.0, M.sens_at_spec(labels, probs, 0.9).threshold)
        return {"start": float(start), "end": M.hysteresis_end(start, labels, probs)}
    return {"start": 0.5, "end": 0.4}
