"""The Transformer feed-forward block (Vaswani et al., 2017), GELU as in ViT."""

from __future__ import annotations

import torch
from torch import nn


class Mlp(nn.Module):
    """``Linear -> GELU -> Dropout -> Linear -> Dropout`` on the last axis."""

    def __init__(self, embed_dim: int, mlp_ratio: float = 4.0, drop: float = 0.0) -> None:
        super().__init__()
        hidden = int(embed_dim * mlp_ratio)
        self.fc1 = nn.Linear(embed_dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, embed_dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(..., D) -> (..., D)``."""
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))
