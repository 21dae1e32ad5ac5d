"""A linear probe of the model image: how much MI signal is linearly readable from each layout.

Not a model: a sanity check of the layout choice on real data. Every PTB-XL record's first window
goes through the shared pipeline and is rendered in each layout; the image is average-pooled
(``pool`` x ``pool``), standardised, and an L2-regularised logistic regression (torch, L-BFGS) is
trained leave-one-``strat_fold``-out (PTB-XL folds are patient-wise), giving one out-of-fold score
per record and a pooled AUROC (Wagner et al., Scientific Data 7:154, 2020 for the folds/labels).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _fit_predict(xtr: np.ndarray, ytr: np.ndarray, xte: np.ndarray, l2: float) -> np.ndarray:
    import torch

    mu, sd = xtr.mean(0), xtr.std(0) + 1e-6
    a = torch.from_numpy((xtr - mu) / sd).double()
    b = torch.from_numpy(ytr).double()
    w = torch.zeros(a.shape[1], dtype=torch.float64, requires_grad=True)
    c = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    pos = float(ytr.mean())
    weight = torch.where(b > 0, 0.5 / pos, 0.5 / (1 - pos))  # balanced classes
    opt = torch.optim.LBFGS([w, c], max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = (weight * torch.nn.functional.binary_cross_entropy_with_logits(a @ w + c, b, reduction="none")).mean() + l2 * (w @ w)
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return (torch.from_numpy((xte - mu) / sd).double() @ w + c).numpy()


def linear_probe(folder: str | Path, layouts: tuple[str, ...] = ("6x2", "3x4"), pool: int = 4, l2: float = 1e-2) -> dict[str, float]:
    """Out-of-fold AUROC of MI vs rest for each layout on a PTB-XL folder (plus counts)."""
    from engine.config import get_preset
    from engine.data.ptbxl import read_ptbxl
    from engine.data.wfdb_io import load_window
    from engine.metrics import auroc
    from engine.pipeline import condition_windows
    from engine.render.layout import get_layout
    from engine.render.numpy_renderer import render_batch

    cfg = get_preset("default")
    items = read_ptbxl(folder)
    x = condition_windows(np.stack([load_window(it.path, cfg) for it in items]), cfg.fs)
    y = np.array([it.label for it in items], dtype=np.float64)
    folds = np.array([it.fold for it in items])
    out: dict[str, float] = {"n": float(len(y)), "positives": float(y.sum())}
    for name in layouts:
        img = render_batch(x, cfg.fs, layout=get_layout(name))[:, 0]
        s = img.shape[-1] // pool
        feats = img[:, : s * pool, : s * pool].reshape(len(img), s, pool, s, pool).mean(axis=(2, 4)).reshape(len(img), -1)
        scores = np.zeros(len(y))
        for f in np.unique(folds):
            te = folds == f
            scores[te] = _fit_predict(feats[~te], y[~te], feats[te], l2)
        out[f"auroc_{name}"] = auroc(y, scores)
    return out
