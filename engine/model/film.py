"""FiLM from lab results (Perez et al., "FiLM: Visual Reasoning with a General Conditioning
Layer", AAAI 2018): one ``(gamma, beta)`` per layer per branch, ``H <- gamma * H + beta``.

MIRAGE's labs are values plus a missing-mask. The generator sees ``[labs * mask, mask]`` through
bias-free layers whose activation maps 0 to 0 (GELU), so with every lab missing its output is
exactly zero and the modulation is exactly the identity (gamma = 1, beta = 0): the model runs
unchanged on datasets without labs (PTB-XL).
"""

from __future__ import annotations

import torch
from torch import nn


class FiLMGenerator(nn.Module):
    """Maps ``(labs, mask)`` to per-layer ``gamma`` and ``beta``.

    Args:
        lab_dim: ``D_lab``.
        hidden: hidden width.
        embed_dim: ``D`` of the modulated tokens.
        num_layers: how many layers get their own ``(gamma, beta)``.
    """

    def __init__(self, lab_dim: int, hidden: int, embed_dim: int, num_layers: int) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.num_layers = num_layers
        self.fc1 = nn.Linear(2 * lab_dim, hidden, bias=False)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, num_layers * 2 * embed_dim, bias=False)
        nn.init.normal_(self.fc2.weight, std=0.01)  # start near the identity

    def forward(self, labs: torch.Tensor, lab_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(gamma, beta)``, each ``(num_layers, B, D)``.

        Args:
            labs: encoded lab values ``(B, D_lab)``; values where the mask is 0 are ignored.
            lab_mask: 1 where a lab is present, 0 where missing ``(B, D_lab)``.
        """
        B = labs.shape[0]
        # labs * mask, except that a NaN/inf left in a missing slot must not leak through 0 * NaN.
        present = torch.where(lab_mask > 0, labs, torch.zeros_like(labs)) * lab_mask  # (B, D_lab)
        x = torch.cat([present, lab_mask], dim=-1)  # (B, 2*D_lab)
        out = self.fc2(self.act(self.fc1(x))).reshape(B, self.num_layers, 2, self.embed_dim)  # (B, layers, 2, D)
        out = out.permute(1, 2, 0, 3)  # (layers, 2, B, D)
        return 1.0 + out[:, 0], out[:, 1]


def film(h: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """``gamma * h + beta`` with ``gamma``/``beta`` ``(B, D)`` broadcast over tokens ``(B, N, D)``."""
    return gamma[:, None, :] * h + beta[:, None, :]


def film_at(per_layer: torch.Tensor | None, i: int) -> torch.Tensor | None:
    """Layer ``i`` of a per-layer FiLM tensor ``(depth, B, D)``, or None when FiLM is off."""
    return None if per_layer is None else per_layer[i]
