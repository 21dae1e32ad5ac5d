"""MIRAGE's fusion: ``z_global = W_f [z_ts; z_img] + b_f``, then a Transformer encoder over
``[z_global; H_ts; H_img]``; position 0 feeds the classifier."""

from __future__ import annotations

import torch
from torch import nn

from engine.model.block import Block


class FusionEncoder(nn.Module):
    """Fuse branch CLS vectors into ``z_global`` and attend over it plus both token sequences.

    Args:
        embed_dim: ``D``.
        num_heads: ``H``.
        depth: fusion blocks.
        mlp_ratio: MLP hidden width as a multiple of ``D``.
        drop: dropout in the blocks.
        n_branches: 2 normally; 1 in a single-branch ablation.
    """

    def __init__(self, embed_dim: int, num_heads: int, depth: int, mlp_ratio: float, drop: float, n_branches: int) -> None:
        super().__init__()
        self.w_f = nn.Linear(n_branches * embed_dim, embed_dim)  # W_f, b_f
        self.blocks = nn.ModuleList(Block(embed_dim, num_heads, mlp_ratio, drop) for _ in range(depth))
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, cls_vectors: list[torch.Tensor], token_seqs: list[torch.Tensor]) -> torch.Tensor:
        """Fuse.

        Args:
            cls_vectors: the branches' CLS outputs, each ``(B, D)`` (``z_ts`` then ``z_img``).
            token_seqs: the branches' token sequences, each ``(B, N_i, D)``.

        Returns:
            The normalised position-0 (``z_global``) output ``(B, D)``.
        """
        z_global = self.w_f(torch.cat(cls_vectors, dim=-1))  # (B, D)
        h = torch.cat([z_global.unsqueeze(1), *token_seqs], dim=1)  # (B, 1 + N_ts + N_img, D)
        for blk in self.blocks:
            h, _ = blk(h)
        return self.norm(h[:, 0])  # (B, D)
