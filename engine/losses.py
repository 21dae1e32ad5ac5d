"""MIRAGE's training loss: ``lambda_cls * CE + lambda_con * L_con``.

``L_con`` is the symmetric InfoNCE (CLIP; Radford et al., ICML 2021; van den Oord et al., 2018)
between the ECG-branch CLS ``z_ts`` and the image-branch CLS ``z_img`` over the batch: cosine
similarities divided by the temperature ``tau``, cross-entropy with the matching pair as the target,
averaged over the two directions (ts -> img and img -> ts).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from engine.config import MirageConfig

if TYPE_CHECKING:
    from engine.model import MirageOutput


def info_nce(z_ts: torch.Tensor, z_img: torch.Tensor, tau: float) -> torch.Tensor:
    """Symmetric InfoNCE of two ``(B, D)`` embeddings whose row ``i`` is a positive pair.

    Args:
        z_ts: ECG-branch embeddings ``(B, D)``.
        z_img: image-branch embeddings ``(B, D)``.
        tau: temperature.

    Returns:
        Scalar: the mean of the ts->img and img->ts cross-entropies over cosine/tau logits.
    """
    a = F.normalize(z_ts, dim=-1)
    b = F.normalize(z_img, dim=-1)
    logits = a @ b.t() / tau  # (B, B) cosine / tau
    target = torch.arange(logits.shape[0], device=logits.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))


def mirage_loss(out: MirageOutput, target: torch.Tensor, cfg: MirageConfig, class_weights: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, dict[str, float]]:
    """``lambda_cls * CE(logits, target) + lambda_con * InfoNCE(z_ts, z_img)``.

    Args:
        out: the model's output (reads ``logits``, ``z_ts``, ``z_img``).
        target: class indices ``(B,)`` (1 = MI).
        cfg: supplies ``lambda_cls``, ``lambda_con``, ``tau`` and the branch switches.
        class_weights: optional per-class CE weights ``(2,)`` (torch's weighted mean).

    The contrastive term is skipped (0) when a branch is ablated, ``lambda_con`` is 0, or the batch
    has a single sample.

    Returns:
        ``(total, {"cls": ce, "con": infonce})``.
    """
    ce = F.cross_entropy(out.logits, target, weight=class_weights)
    total = cfg.lambda_cls * ce
    con = torch.zeros((), dtype=ce.dtype, device=ce.device)
    if cfg.lambda_con > 0 and cfg.use_ecg_branch and cfg.use_img_branch and target.shape[0] > 1:
        con = info_nce(out.z_ts, out.z_img, cfg.tau)
        total = total + cfg.lambda_con * con
    return total, {"cls": float(ce.detach()), "con": float(con.detach())}
