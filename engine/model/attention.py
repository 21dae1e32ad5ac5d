"""Multi-head self-attention with an additive bias (timm-style, ``fused_attn`` switch).

The bias (Graphormer's spatial encoding, Ying et al., "Do Transformers Really Perform Bad for
Graph Representation?", NeurIPS 2021) is added to ``QK^T / sqrt(d)`` before the softmax. The fused
path hands it straight to ``F.scaled_dot_product_attention(..., attn_mask=bias)``; the manual
path computes the same thing explicitly and is kept for export and for returning the attention
probabilities (``need_weights``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Attention(nn.Module):
    """Multi-head self-attention over ``(B, N, D)`` tokens with an optional additive bias.

    Args:
        embed_dim: token width ``D``.
        num_heads: heads ``H``; ``D`` must be divisible by ``H``.
        qkv_bias: learn a bias in the QKV projection.
        attn_drop: dropout on attention probabilities (training only).
        proj_drop: dropout after the output projection.
        fused_attn: use ``F.scaled_dot_product_attention``; False selects the manual path.
    """

    def __init__(self, embed_dim: int, num_heads: int, *, qkv_bias: bool = True, attn_drop: float = 0.0,
                 proj_drop: float = 0.0, fused_attn: bool = True) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.fused_attn = fused_attn
        self.qkv = nn.Linear(embed_dim, 3 * embed_dim, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(embed_dim, embed_dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None = None, need_weights: bool = False
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Attend.

        Args:
            x: tokens ``(B, N, D)``.
            bias: additive attention bias broadcastable to ``(B, H, N, N)``.
            need_weights: also return the attention probabilities ``(B, H, N, N)`` (manual path).

        Returns:
            ``(out (B, N, D), weights or None)``.
        """
        B, N, D = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)  # (3, B, H, N, Dh)
        q, k, v = qkv.unbind(0)  # each (B, H, N, Dh)
        drop = self.attn_drop if self.training else 0.0
        weights: torch.Tensor | None = None
        if self.fused_attn and not need_weights:
            mask = None if bias is None else bias.to(q.dtype)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=drop)  # (B, H, N, Dh)
        else:
            scores = (q * self.scale) @ k.transpose(-2, -1)  # (B, H, N, N)
            if bias is not None:
                scores = scores + bias.to(scores.dtype)
            weights = scores.softmax(dim=-1)
            out = F.dropout(weights, drop, self.training) @ v  # (B, H, N, Dh)
        out = out.transpose(1, 2).reshape(B, N, D)  # (B, N, D)
        return self.proj_drop(self.proj(out)), weights
