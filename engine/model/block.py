"""The pre-norm Transformer block (nanoGPT's two lines), with an optional attention bias."""

from __future__ import annotations

import torch
from torch import nn

from engine.model.attention import Attention
from engine.model.mlp import Mlp


class Block(nn.Module):
    """``x += Attn(LN(x), bias); x += MLP(LN(x))``.

    Args:
        embed_dim: ``D``.
        num_heads: ``H``.
        mlp_ratio: hidden width of the MLP as a multiple of ``D``.
        drop: dropout after attention projection and in the MLP.
    """

    def __init__(self, embed_dim: int, num_heads: int, mlp_ratio: float = 4.0, drop: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(embed_dim)
        self.attn = Attention(embed_dim, num_heads, proj_drop=drop)
        self.norm2 = nn.LayerNorm(embed_dim)
        self.mlp = Mlp(embed_dim, mlp_ratio, drop)

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None = None, need_weights: bool = False
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        a, w = self.attn(self.norm1(x), bias, need_weights)
        x = x + a
        x = x + self.mlp(self.norm2(x))
        return x, w
