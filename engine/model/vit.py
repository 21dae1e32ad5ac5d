"""The image branch: a Vision Transformer (Dosovitskiy et al., ICLR 2021) over the 1x224x224
rendered ECG, with P x P patches, a CLS token and learned positions. FiLM from the labs
modulates the tokens after every block. The CLS output is ``z_img``.
"""

from __future__ import annotations

import torch
from torch import nn

from engine.config import MirageConfig
from engine.model.block import Block
from engine.model.film import film_at


class PatchEmbed(nn.Module):
    """``(B, C, S, S)`` image to ``(B, N, D)`` patch tokens with one strided convolution."""

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, S, S) -> (B, N, D)`` with ``N = (S / P)^2``, row-major patch order."""
        x = self.proj(x)  # (B, D, S/P, S/P)
        return x.flatten(2).transpose(1, 2)  # (B, N, D)


class VisionTransformer(nn.Module):
    """Patch tokens + CLS + learned positions through ``cfg.img_depth`` blocks."""

    def __init__(self, cfg: MirageConfig) -> None:
        super().__init__()
        D = cfg.embed_dim
        self.patch_embed = PatchEmbed(cfg.patch_size, cfg.in_chans, D)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, D))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + cfg.num_patches, D))
        self.blocks = nn.ModuleList(Block(D, cfg.num_heads, cfg.mlp_ratio, cfg.dropout) for _ in range(cfg.img_depth))
        self.norm = nn.LayerNorm(D)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)

    def forward(self, image: torch.Tensor, gammas: torch.Tensor | None = None, betas: torch.Tensor | None = None
                ) -> torch.Tensor:
        """Encode ``(B, 1, S, S)`` into tokens ``(B, 1+N, D)``."""
        h = self.patch_embed(image)  # (B, N, D)
        h = torch.cat([self.cls_token.expand(h.shape[0], -1, -1), h], dim=1) + self.pos_embed  # (B, 1+N, D)
        for i, blk in enumerate(self.blocks):
            h, _ = blk(h, gamma=film_at(gammas, i), beta=film_at(betas, i))
        return self.norm(h)
