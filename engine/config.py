"""MIRAGE hyper-parameters as one frozen dataclass, with named presets.

Every hyper-parameter of the paper is a field: width ``d`` (``embed_dim``), heads, the depths of
the Graphormer (ECG) branch, the ViT (image) branch and the fusion Transformer, patch size ``P``,
InfoNCE temperature ``tau``, loss weights ``lambda_cls``/``lambda_con``, window length ``T`` (from
``fs`` and ``window_s``) and the lab width ``D_lab`` (from the lab schema).

Improvements over the paper are named options that are *off* in the ``paper`` preset.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from engine.errors import ConfigError

LEAD_ENCODERS: tuple[str, ...] = ("linear", "resnet")
# The PTB-XL diagnostic superclasses, in the order of the auxiliary heads (Wagner et al. 2020).
SUPERCLASSES: tuple[str, ...] = ("NORM", "MI", "STTC", "CD", "HYP")
LEADS: tuple[str, ...] = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")


@dataclass(frozen=True)
class MirageConfig:
    """All MIRAGE hyper-parameters. ``T = round(fs * window_s)``."""

    name: str = "default"
    # signal / window
    fs: int = 100  # model sampling rate, Hz
    window_s: float = 10.0  # window length, seconds (T = fs * window_s)
    hop_s: float = 2.0  # stream hop between windows, seconds
    n_leads: int = 12
    image_size: int = 224
    in_chans: int = 1
    # widths
    embed_dim: int = 192  # d
    num_heads: int = 4
    mlp_ratio: float = 4.0
    ecg_depth: int = 4  # Graphormer blocks
    img_depth: int = 4  # ViT blocks
    fusion_depth: int = 2  # fusion Transformer blocks
    patch_size: int = 16  # P
    dropout: float = 0.1
    num_classes: int = 2
    # labs
    lab_dim: int = 7  # D_lab, must equal the lab schema's feature count
    lab_schema_version: int = 1
    film_hidden: int = 64
    # loss
    tau: float = 0.07
    lambda_cls: float = 1.0
    lambda_con: float = 0.1
    # named improvements over the paper (all off in the paper preset)
    conv_stem: bool = False  # a small temporal conv stem per lead before the linear projection
    arch: str = "mirage"  # "mirage", or "resnet1d": the plain 1-D ResNet reference (engine.model.resnet1d)
    lead_encoder: str = "linear"  # "linear" (paper: W_proj over the whole window) or "resnet" (shared 1-D ResNet per lead)
    resnet_width: int = 16  # first-stage channels of the "resnet" lead encoder
    aux_classes: int = 0  # auxiliary multi-label heads (5 = PTB-XL superclasses NORM, MI, STTC, CD, HYP); 0 = none
    lambda_aux: float = 1.0  # weight of the auxiliary BCE in the training loss
    use_ecg_branch: bool = True  # ablation switches
    use_img_branch: bool = True
    use_film: bool = True
    use_spatial_bias: bool = True  # the Graphormer's learnable B (ablation: off = plain attention over the leads)
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.embed_dim % self.num_heads:
            raise ConfigError(f"embed_dim={self.embed_dim} is not divisible by num_heads={self.num_heads}")
        if self.image_size % self.patch_size:
            raise ConfigError(f"image_size={self.image_size} is not divisible by patch_size={self.patch_size}")
        if self.fs <= 0 or self.window_s <= 0 or self.hop_s <= 0:
            raise ConfigError(f"fs={self.fs}, window_s={self.window_s}, hop_s={self.hop_s} must all be > 0")
        if self.n_leads != 12:
            raise ConfigError(f"n_leads={self.n_leads}: MIRAGE is defined over the 12 standard leads")
        if self.tau <= 0:
            raise ConfigError(f"tau={self.tau} must be > 0")
        if self.arch not in ("mirage", "resnet1d"):
            raise ConfigError(f"arch={self.arch!r}: choose 'mirage' or 'resnet1d'")
        if self.lead_encoder not in LEAD_ENCODERS:
            raise ConfigError(f"lead_encoder={self.lead_encoder!r}: choose one of {LEAD_ENCODERS}")
        if self.lead_encoder == "resnet" and self.conv_stem:
            raise ConfigError("conv_stem=True and lead_encoder='resnet' both tokenise the leads: choose one")
        if self.aux_classes < 0 or self.resnet_width < 1:
            raise ConfigError(f"aux_classes={self.aux_classes} must be >= 0 and resnet_width={self.resnet_width} >= 1")
        if not (self.use_ecg_branch or self.use_img_branch):
            raise ConfigError("at least one of use_ecg_branch / use_img_branch must be on")

    @property
    def T(self) -> int:  # noqa: N802 - the paper's letter
        """Samples per lead in one window."""
        return int(round(self.fs * self.window_s))

    @property
    def hop(self) -> int:
        """Samples between consecutive stream windows."""
        return int(round(self.fs * self.hop_s))

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "MirageConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown MirageConfig fields {unknown}")
        return cls(**data)

    def replace(self, **changes: Any) -> "MirageConfig":
        return dataclasses.replace(self, **changes)


PRESETS: dict[str, MirageConfig] = {
    # Paper-faithful, sized for real use (about 5 M parameters).
    "paper": MirageConfig(name="paper"),
    # Same architecture as 'paper'; the project's default for training and the stream.
    "default": MirageConfig(name="default"),
    # A smaller paper-faithful model for CPU-bound sites and small datasets.
    "small": MirageConfig(name="small", embed_dim=128, num_heads=4, ecg_depth=2, img_depth=2, fusion_depth=1, patch_size=16),
    # The shipped recipe (docs/MODEL.md): small widths, patch 32, a shared 1-D ResNet per lead as the
    # tokeniser and auxiliary heads for the five PTB-XL superclasses; every paper component kept.
    "ptbxl": MirageConfig(name="ptbxl", embed_dim=128, num_heads=4, ecg_depth=2, img_depth=2, fusion_depth=1, patch_size=32,
                          lead_encoder="resnet", aux_classes=5),
    # For unit tests: seconds on a CPU.
    "tiny": MirageConfig(name="tiny", embed_dim=32, num_heads=2, ecg_depth=1, img_depth=1, fusion_depth=1, patch_size=32, film_hidden=16, dropout=0.0),
}


def get_preset(name: str) -> MirageConfig:
    """Return a named preset, or raise :class:`ConfigError` naming the choices."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}") from None
