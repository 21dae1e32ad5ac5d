"""The reference every reader knows: a plain 12-channel 1-D ResNet on the conditioned ECG.

Not MIRAGE: no lead tokens, no image, no labs. It is the yardstick of docs/MODEL.md, trained with
the same data, folds, losses and schedule as the MIRAGE variants (``MirageConfig.arch =
"resnet1d"``), in the style of the 1-D residual networks that lead the PTB-XL benchmark
(Strodthoff et al., IEEE JBHI 25(5), 2021). It returns a :class:`engine.model.mirage.MirageOutput`
so training, evaluation and export treat it like any other model; ``z_ts``/``z_img`` are zeros
(no contrastive loss) and ``lead_weights`` uniform.
"""

from __future__ import annotations

import torch
from torch import nn

from engine.config import MirageConfig
from engine.model.lead_resnet import BasicBlock1d
from engine.model.mirage import MirageOutput, calibrated


class ResNet1d(nn.Module):
    """``(B, 12, T) -> MirageOutput``; ``width`` = ``cfg.resnet_width * 4`` first-stage channels."""

    def __init__(self, cfg: MirageConfig) -> None:
        super().__init__()
        self.cfg = cfg
        c1 = 4 * cfg.resnet_width
        c2 = 2 * c1
        self.stem = nn.Sequential(
            nn.Conv1d(cfg.n_leads, c1, 15, stride=2, padding=7, bias=False), nn.BatchNorm1d(c1), nn.ReLU(inplace=True),
            nn.MaxPool1d(3, stride=2, padding=1),
        )
        self.stages = nn.Sequential(BasicBlock1d(c1, c1, 7), BasicBlock1d(c1, c2, 7, stride=2), BasicBlock1d(c2, c2, 5), BasicBlock1d(c2, c2, 5, stride=2))
        self.drop = nn.Dropout(cfg.dropout)
        self.head = nn.Linear(2 * c2, cfg.num_classes)
        self.aux_head = nn.Linear(2 * c2, cfg.aux_classes) if cfg.aux_classes > 0 else None
        self.register_buffer("temperature", torch.ones(()))
        self.register_buffer("logit_offset", torch.zeros(()))  # added to the MI logit (calibration)

    def forward(self, ecg: torch.Tensor, image: torch.Tensor, labs: torch.Tensor, lab_mask: torch.Tensor) -> MirageOutput:
        """Score a batch; ``image``, ``labs`` and ``lab_mask`` are accepted and ignored."""
        B = ecg.shape[0]
        y = self.stages(self.stem(ecg))  # (B, C2, T/16)
        f = self.drop(torch.cat([y.mean(dim=-1), y.amax(dim=-1)], dim=-1))  # (B, 2*C2)
        logits = calibrated(self.head(f), self.temperature, self.logit_offset)  # (B, 2)
        aux = self.aux_head(f) if self.aux_head is not None else None
        zeros = torch.zeros(B, self.cfg.embed_dim, dtype=ecg.dtype, device=ecg.device)
        weights = torch.full((B, self.cfg.n_leads), 1.0 / self.cfg.n_leads, dtype=ecg.dtype, device=ecg.device)
        return MirageOutput(logits, logits.softmax(dim=-1)[:, 1], zeros, zeros, weights, aux)
