"""The pre-norm Transformer block (nanoGPT's two lines) with an attention bias and FiLM.

``x += Attn(LN(x), bias); x += MLP(LN(x))`` (Radford et al. 2019 / nanoGPT ``Block``), then, when
the labs give a modulation, MIRAGE's FiLM after the block: ``H <- gamma * H + beta`` (Perez et al.,
AAAI 2018), one ``(gamma, beta)`` per block, broadcast over the tokens.
"""

from __future__ import annotations

import torch
from torch import nn

from engine.model.attention import Attention
from engine.model.film import film
from engine.model.mlp import Mlp


class Block(nn.Module):
    """One pre-norm block with an optional additive attention bias and an optional FiLM.

    Args:
        embed_dim: token width ``D``.
        num_heads: heads ``H``.
        mlp_ratio: hidden width of the MLP as a multiple of ``D``.
        drop: dropout after the attention projection and in the MLP.
    """

    def __init__(self, embed_dim: int, num_heads: int, mlp_ratio: float = 4.0, drop: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(embed_dim)
        self.attn = Attention(embed_dim, num_heads, proj_drop=drop)
        self.norm2 = nn.LayerNorm(embed_dim)
        self.mlp = Mlp(embed_dim, mlp_ratio, drop)

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None = None, *, gamma: torch.Tensor | None = None,
                beta: torch.Tensor | None = None, need_weights: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Run the block.

        Args:
            x: tokens ``(B, N, D)``.
            bias: additive attention bias broadcastable to ``(B, H, N, N)``, or None.
            gamma: FiLM scale ``(B, D)``; with ``beta`` applied after the block. None skips FiLM.
            beta: FiLM shift ``(B, D)``.
            need_weights: also return the attention probabilities ``(B, H, N, N)``.

        Returns:
            ``(tokens (B, N, D), attention probabilities or None)``.
        """
        a, w = self.attn(self.norm1(x), bias, need_weights)
        x = x + a
        x = x + self.mlp(self.norm2(x))
        if gamma is not None and beta is not None:
            x = film(x, gamma, beta)
        return x, w
