"""The MIRAGE network, one layer per file, and the plain 1-D ResNet reference."""

from __future__ import annotations

from torch import nn

from engine.config import MirageConfig
from engine.model.mirage import Mirage, MirageOutput, count_parameters

__all__ = ["Mirage", "MirageOutput", "build_model", "count_parameters"]


def build_model(cfg: MirageConfig) -> nn.Module:
    """The network ``cfg`` describes: :class:`Mirage`, or the ``resnet1d`` reference."""
    if cfg.arch == "resnet1d":
        from engine.model.resnet1d import ResNet1d

        return ResNet1d(cfg)
    return Mirage(cfg)
