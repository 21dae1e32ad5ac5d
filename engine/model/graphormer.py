"""The ECG branch: a Graphormer encoder over the 12 lead tokens plus a CLS (virtual) token.

Each lead's whole window is one token, ``h_l = W_proj x_l + b`` (one ``W_proj`` shared by all
leads), plus a learnable lead embedding. A learnable spatial bias ``B`` (one ``13 x 13`` matrix per
head; row/column 0 is the CLS token, Graphormer's virtual node) is built once per forward pass
and added to ``QK^T`` before the softmax in every layer (Ying et al., NeurIPS 2021). FiLM from
the labs modulates the tokens after every block. The CLS output is ``z_ts``.

Two named improvements replace or precede the paper's linear tokeniser (both off in the paper
preset): ``conv_stem`` runs a small residual temporal convolution per lead before the projection;
``lead_encoder="resnet"`` (:mod:`engine.model.lead_resnet`) makes each lead's token with a shared
1-D ResNet and temporal pooling instead of ``W_proj``.
"""

from __future__ import annotations

import torch
from torch import nn

from engine.config import MirageConfig
from engine.errors import ConfigError
from engine.model.block import Block
from engine.model.film import film_at
from engine.model.lead_resnet import LeadResNet


class ConvStem(nn.Module):
    """Residual per-lead temporal convolutions ``(B, L, T) -> (B, L, T)`` (same for every lead)."""

    def __init__(self, channels: int = 16, kernel: int = 9) -> None:
        super().__init__()
        pad = kernel // 2
        self.net = nn.Sequential(
            nn.Conv1d(1, channels, kernel, padding=pad), nn.GELU(),
            nn.Conv1d(channels, channels, kernel, padding=pad), nn.GELU(),
            nn.Conv1d(channels, 1, kernel, padding=pad),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, L, T) -> (B, L, T)``: each lead plus its convolved residual."""
        B, L, T = x.shape
        y = self.net(x.reshape(B * L, 1, T))  # (B*L, 1, T)
        return x + y.reshape(B, L, T)  # (B, L, T)


class GraphormerEncoder(nn.Module):
    """Lead tokens + CLS through ``cfg.ecg_depth`` biased-attention blocks."""

    def __init__(self, cfg: MirageConfig) -> None:
        super().__init__()
        D, H, L = cfg.embed_dim, cfg.num_heads, cfg.n_leads
        if cfg.ecg_depth < 1:
            raise ConfigError(f"ecg_depth={cfg.ecg_depth}: the ECG branch needs at least one Graphormer block")
        self.stem = ConvStem() if cfg.conv_stem else None
        # h_l = W_proj x_l + b (paper), or the shared per-lead ResNet tokeniser
        self.proj: nn.Module = LeadResNet(D, cfg.resnet_width) if cfg.lead_encoder == "resnet" else nn.Linear(cfg.T, D)
        self.lead_embed = nn.Parameter(torch.zeros(1, L, D))
        self.cls_token = nn.Parameter(torch.zeros(1, 1, D))
        self.spatial_bias = nn.Parameter(torch.zeros(H, L + 1, L + 1), requires_grad=cfg.use_spatial_bias)  # (H, 13, 13)
        self.blocks = nn.ModuleList(Block(D, H, cfg.mlp_ratio, cfg.dropout) for _ in range(cfg.ecg_depth))
        self.norm = nn.LayerNorm(D)
        nn.init.trunc_normal_(self.lead_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        if cfg.use_spatial_bias:
            nn.init.trunc_normal_(self.spatial_bias, std=0.02)

    def forward(self, ecg: torch.Tensor, gammas: torch.Tensor | None = None, betas: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode.

        Args:
            ecg: ``(B, L, T)``.
            gammas: FiLM scales ``(depth, B, D)``, or None for no FiLM.
            betas: FiLM shifts ``(depth, B, D)``.

        Returns:
            ``(tokens (B, 1+L, D), lead_weights (B, L))``. ``lead_weights`` is the CLS row of the last
            block's attention over the 12 lead tokens, averaged over heads and renormalised over the
            leads (the CLS self-weight dropped), so each row sums to 1.
        """
        x = self.stem(ecg) if self.stem is not None else ecg
        h = self.proj(x) + self.lead_embed  # (B, L, D): h_l = W_proj x_l + b, plus the lead embedding
        h = torch.cat([self.cls_token.expand(h.shape[0], -1, -1), h], dim=1)  # (B, 1+L, D)
        bias = self.spatial_bias.unsqueeze(0)  # (1, H, 1+L, 1+L): built once, handed to every block
        *body, last = self.blocks
        for i, blk in enumerate(body):
            h, _ = blk(h, bias, gamma=film_at(gammas, i), beta=film_at(betas, i))
        # The last block runs the manual attention path so its probabilities can be returned.
        h, weights = last(h, bias, gamma=film_at(gammas, len(body)), beta=film_at(betas, len(body)), need_weights=True)
        cls_to_leads = weights[:, :, 0, 1:].mean(dim=1)  # (B, L)
        # The clamp keeps a row finite if every lead weight underflows (a huge CLS self-bias, fp16).
        total = cls_to_leads.sum(dim=-1, keepdim=True).clamp_min(torch.finfo(cls_to_leads.dtype).tiny)  # (B, 1)
        lead_weights = cls_to_leads / total  # (B, L), rows sum to 1
        return self.norm(h), lead_weights
