"""MIRAGE: Multimodal Integration via Representational Alignment using Graphormer and Encoders.

``forward(ecg (B,12,T), image (B,1,224,224), labs (B,D_lab), lab_mask (B,D_lab)) -> MirageOutput``.
The ECG branch (:mod:`engine.model.graphormer`) gives ``z_ts``, the image branch
(:mod:`engine.model.vit`) gives ``z_img``; FiLM (:mod:`engine.model.film`) from the labs modulates
every layer of both; :mod:`engine.model.fusion` fuses them; ``softmax(W_cls z + b)`` classifies
MI / no MI. Training adds the symmetric InfoNCE between ``z_ts`` and ``z_img``
(:mod:`engine.losses`). Ablation switches in :class:`engine.config.MirageConfig` turn a branch or
FiLM off.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from engine.config import MirageConfig
from engine.model.film import FiLMGenerator
from engine.model.fusion import FusionEncoder
from engine.model.graphormer import GraphormerEncoder
from engine.model.vit import VisionTransformer


@dataclass
class MirageOutput:
    """What one forward pass returns (all tensors)."""

    logits: torch.Tensor  # (B, 2)
    probs: torch.Tensor  # (B,) MI probability = softmax(logits)[:, 1]
    z_ts: torch.Tensor  # (B, D) ECG-branch CLS
    z_img: torch.Tensor  # (B, D) image-branch CLS
    lead_weights: torch.Tensor  # (B, 12) CLS -> lead attention of the last Graphormer block
    aux_logits: torch.Tensor | None = None  # (B, aux_classes) superclass logits, when the config has aux heads


def calibrated(logits: torch.Tensor, temperature: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    """``logits / T`` with ``offset`` added to the MI logit: ``(B, 2) -> (B, 2)`` (see engine.train.calibrate)."""
    shift = torch.stack([torch.zeros_like(offset), offset])  # (2,)
    return logits / temperature + shift


class Mirage(nn.Module):
    """The MIRAGE classifier; see the module docstring."""

    def __init__(self, cfg: MirageConfig) -> None:
        super().__init__()
        self.cfg = cfg
        D = cfg.embed_dim
        self.ecg = GraphormerEncoder(cfg) if cfg.use_ecg_branch else None
        self.img = VisionTransformer(cfg) if cfg.use_img_branch else None
        self.film_ecg = FiLMGenerator(cfg.lab_dim, cfg.film_hidden, D, cfg.ecg_depth) if cfg.use_film and self.ecg is not None else None
        self.film_img = FiLMGenerator(cfg.lab_dim, cfg.film_hidden, D, cfg.img_depth) if cfg.use_film and self.img is not None else None
        n_branches = int(self.ecg is not None) + int(self.img is not None)
        self.fusion = FusionEncoder(D, cfg.num_heads, cfg.fusion_depth, cfg.mlp_ratio, cfg.dropout, n_branches)
        self.head = nn.Linear(D, cfg.num_classes)  # W_cls, b
        # Auxiliary multi-label heads (named improvement): every record also teaches its other findings.
        self.aux_head = nn.Linear(D, cfg.aux_classes) if cfg.aux_classes > 0 else None
        # Temperature scaling (Guo et al., ICML 2017), fitted on validation data after training and
        # stored with the weights, so every backend exported from the model gives calibrated probs.
        self.register_buffer("temperature", torch.ones(()))
        self.register_buffer("logit_offset", torch.zeros(()))  # added to the MI logit (calibration)
        self.apply(self._zero_biases)

    @staticmethod
    def _zero_biases(m: nn.Module) -> None:
        # Linear layers start without offsets (timm/nanoGPT do the same); weights keep PyTorch's
        # default init, and the FiLM generators set their own small init (near the identity).
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)

    def forward_features(self, ecg: torch.Tensor, image: torch.Tensor, labs: torch.Tensor, lab_mask: torch.Tensor
                         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return ``(fused (B, D), z_ts (B, D), z_img (B, D), lead_weights (B, L))``."""
        B = ecg.shape[0]
        cls_vecs: list[torch.Tensor] = []
        seqs: list[torch.Tensor] = []
        z_ts = z_img = torch.zeros(B, self.cfg.embed_dim, dtype=ecg.dtype, device=ecg.device)
        lead_weights = torch.zeros(B, self.cfg.n_leads, dtype=ecg.dtype, device=ecg.device)
        if self.ecg is not None:
            g, b = self.film_ecg(labs, lab_mask) if self.film_ecg is not None else (None, None)
            h_ts, lead_weights = self.ecg(ecg, g, b)  # (B, 1+L, D), (B, L)
            z_ts = h_ts[:, 0]
            cls_vecs.append(z_ts)
            seqs.append(h_ts)
        if self.img is not None:
            g, b = self.film_img(labs, lab_mask) if self.film_img is not None else (None, None)
            h_img = self.img(image, g, b)  # (B, 1+N, D)
            z_img = h_img[:, 0]
            cls_vecs.append(z_img)
            seqs.append(h_img)
        return self.fusion(cls_vecs, seqs), z_ts, z_img, lead_weights

    def forward_head(self, fused: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, 2)`` from the fused position-0 vector."""
        return calibrated(self.head(fused), self.temperature, self.logit_offset)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # type: ignore[no-untyped-def]
        # Checkpoints written before temperature scaling existed load with T = 1 (unchanged probs).
        state_dict.setdefault(prefix + "temperature", torch.ones(()))
        state_dict.setdefault(prefix + "logit_offset", torch.zeros(()))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, ecg: torch.Tensor, image: torch.Tensor, labs: torch.Tensor, lab_mask: torch.Tensor) -> MirageOutput:
        """Score a batch.

        Args:
            ecg: conditioned 12-lead windows ``(B, 12, T)`` float32 (``engine.pipeline.model_inputs``).
            image: rendered ECG images ``(B, 1, 224, 224)`` in ``[0, 1]``.
            labs: encoded labs ``(B, D_lab)`` (``engine.labs.encode_labs``).
            lab_mask: 1 where a lab is present, 0 where missing ``(B, D_lab)``.

        Returns:
            :class:`MirageOutput`.
        """
        fused, z_ts, z_img, lead_weights = self.forward_features(ecg, image, labs, lab_mask)
        logits = self.forward_head(fused)
        aux = self.aux_head(fused) if self.aux_head is not None else None
        return MirageOutput(logits, logits.softmax(dim=-1)[:, 1], z_ts, z_img, lead_weights, aux)


def count_parameters(model: nn.Module) -> int:
    """Number of parameters of ``model`` (trainable or not)."""
    return sum(p.numel() for p in model.parameters())
