"""Checkpoints: one ``torch.save`` of plain data, loaded with ``weights_only=True``.

A checkpoint carries the weights, the full :class:`MirageConfig`, the lab schema, the renderer and
preprocessing versions the model was trained with, the decision threshold(s) chosen on validation
data, validation metrics and free-form ``extra`` (training command, split, history). Loading checks
the format version and the lab schema, so a stale or foreign file fails loudly with the file named.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import io
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from engine.config import MirageConfig
from engine.errors import CheckpointError, ConfigError
from engine.labs import schema_dict

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
_PACKAGE_DIR = Path(__file__).resolve().parent / "checkpoints"
# Top-level keys that 'extra' may set (training code passes them there).
_PROMOTED = ("thresholds", "renderer_version", "preprocessing_version", "lab_schema")


def default_checkpoint_path() -> Path:
    """The shipped checkpoint inside the package."""
    return _PACKAGE_DIR / "mirage-default.pt"


def _versions() -> tuple[str, str]:
    try:
        from engine.pipeline import PREPROCESSING_VERSION, RENDERER_VERSION

        return str(RENDERER_VERSION), str(PREPROCESSING_VERSION)
    except ImportError:  # pragma: no cover - the pipeline is part of the package
        return "unknown", "unknown"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def save_checkpoint(path: str | Path, model: torch.nn.Module, cfg: MirageConfig, *, threshold: float,
                    metrics: dict[str, Any] | None = None, extra: dict[str, Any] | None = None) -> str:
    """Write a checkpoint atomically and return its SHA-256.

    Args:
        path: destination ``.pt``.
        model: the trained :class:`engine.model.Mirage`.
        cfg: its config.
        threshold: decision threshold from validation data (alerts start at or above it).
        metrics: validation metrics (plain data).
        extra: anything else (plain data); keys ``thresholds``, ``renderer_version``,
            ``preprocessing_version``, ``lab_schema`` also set the top-level fields.
    """
    if not (0.0 <= float(threshold) <= 1.0):
        raise CheckpointError(f"{path}: threshold {threshold!r} is not a probability")
    renderer, preprocessing = _versions()
    try:
        mirage_version = importlib.metadata.version("mirage-monitor")
    except importlib.metadata.PackageNotFoundError:  # a source tree that was never installed
        mirage_version = "unknown"

    payload: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "config": cfg.to_dict(),
        "state_dict": {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
        "lab_schema": schema_dict(),
        "renderer_version": renderer,
        "preprocessing_version": preprocessing,
        "threshold": float(threshold),
        "thresholds": {"start": float(threshold), "end": round(float(threshold) * 0.8, 6)},
        "metrics": metrics or {},
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "mirage_version": mirage_version,
        "extra": extra or {},
    }
    for key in _PROMOTED:
        if extra and key in extra:
            payload[key] = extra[key]
    buf = io.BytesIO()
    torch.save(payload, buf)
    data = buf.getvalue()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(out)
    return _sha256(data)


@dataclass
class LoadedCheckpoint:
    """A loaded checkpoint: the model (eval mode) and everything saved with it."""

    model: torch.nn.Module
    config: MirageConfig
    threshold: float
    metadata: dict[str, Any] = field(default_factory=dict)
    sha256: str = ""
    path: Path | None = None

    @property
    def thresholds(self) -> dict[str, float]:
        """``{"start": .., "end": ..}`` hysteresis thresholds for the alert policy."""
        t = self.metadata.get("thresholds") or {}
        start = float(t.get("start", self.threshold))
        return {"start": start, "end": float(t.get("end", start * 0.8))}


def load_checkpoint(path: str | Path | None = None, map_location: str | torch.device = "cpu") -> LoadedCheckpoint:
    """Load a checkpoint (``None`` = the shipped default) or raise :class:`CheckpointError` naming the file."""
    from engine.model import build_model

    p = Path(path) if path is not None else default_checkpoint_path()
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        hint = " (the shipped checkpoint is missing: train one with 'mirage train')" if path is None else ""
        raise CheckpointError(f"checkpoint {p} does not exist{hint}") from None
    except OSError as exc:
        raise CheckpointError(f"checkpoint {p} cannot be read: {exc.strerror}") from None
    try:
        payload = torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt files
        raise CheckpointError(f"checkpoint {p} is corrupt or not a MIRAGE checkpoint: {type(exc).__name__}: {str(exc)[:200]}") from None
    if not isinstance(payload, dict) or "state_dict" not in payload or "config" not in payload:
        raise CheckpointError(f"checkpoint {p} is not a MIRAGE checkpoint (no config/state_dict)")
    version = payload.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(f"checkpoint {p} has format_version {version!r}; this build reads {FORMAT_VERSION}")
    schema = payload.get("lab_schema") or {}
    if schema.get("version") != schema_dict()["version"] or [f.get("loinc") for f in schema.get("features", [])] != [
            f["loinc"] for f in schema_dict()["features"]]:
        raise CheckpointError(f"checkpoint {p} was trained with lab schema version {schema.get('version')!r} "
                              f"(features {[f.get('loinc') for f in schema.get('features', [])]}), incompatible with this build's "
                              f"version {schema_dict()['version']}")
    try:
        cfg = MirageConfig.from_dict(dict(payload["config"]))
    except (ConfigError, TypeError) as exc:
        raise CheckpointError(f"checkpoint {p} has an invalid config: {exc}") from None
    model = build_model(cfg)
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as exc:
        raise CheckpointError(f"checkpoint {p}: weights do not match its config: {str(exc)[:300]}") from None
    model.eval()
    meta = {k: v for k, v in payload.items() if k != "state_dict"}
    _warn_on_version_drift(p, meta)
    return LoadedCheckpoint(model, cfg, float(payload.get("threshold", 0.5)), meta, _sha256(data), p)


def _warn_on_version_drift(path: Path, meta: dict[str, Any]) -> None:
    """Warn when the image renderer or the conditioning changed since the checkpoint was trained.

    The model still loads (a site may knowingly run an older checkpoint), but its inputs now differ
    from what it learned on, so its scores may be off: the warning names both versions.
    """
    for key, now in zip(("renderer_version", "preprocessing_version"), _versions()):
        saved = str(meta.get(key, "unknown"))
        if "unknown" not in (saved, now) and saved != now:
            log.warning("checkpoint %s was trained with %s %r; this build has %r", path, key, saved, now)


def model_version(loaded: LoadedCheckpoint) -> str:
    """A short human-readable model version, e.g. ``mirage-small-3f2a9c1d0b4e``."""
    return f"mirage-{loaded.config.name}-{loaded.sha256[:12]}"
