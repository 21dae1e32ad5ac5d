"""The one seam between the stream and inference: :class:`Predictor`.

PyTorch (here), ONNX Runtime and TensorRT (``trt.backends``) all implement it: numpy float32 in,
:class:`Prediction` out. The stream never knows which one runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from engine.checkpoint import LoadedCheckpoint, load_checkpoint
from engine.config import MirageConfig
from engine.errors import ConfigError


@dataclass
class Prediction:
    """MI probabilities ``(B,)`` and per-lead contribution weights ``(B, 12)``."""

    probs: np.ndarray
    lead_weights: np.ndarray


@runtime_checkable
class Predictor(Protocol):
    """Anything that scores a batch of MIRAGE inputs."""

    name: str
    config: MirageConfig

    def predict(self, ecg: np.ndarray, image: np.ndarray, labs: np.ndarray, lab_mask: np.ndarray) -> Prediction:
        """Score ``ecg (B,12,T)``, ``image (B,1,224,224)``, ``labs``/``lab_mask (B,D_lab)``."""
        ...


class TorchPredictor:
    """PyTorch eager (optionally ``torch.compile``-d) on CPU or CUDA.

    Args:
        model: a :class:`LoadedCheckpoint` or a ``Mirage`` module.
        config: the module's config (taken from the checkpoint when one is given).
        device: ``"cpu"`` or ``"cuda[:N]"``.
        compile: wrap in ``torch.compile``.
        threads: ``torch.set_num_threads`` for this process (None leaves it).
    """

    def __init__(self, model: LoadedCheckpoint | torch.nn.Module, config: MirageConfig | None = None, *,
                 device: str = "cpu", compile: bool = False, threads: int | None = None, name: str | None = None) -> None:
        if isinstance(model, LoadedCheckpoint):
            config = model.config
            model = model.model
        if config is None:
            config = getattr(model, "cfg", None)
        if config is None:
            raise ConfigError("TorchPredictor needs a config with a bare module")
        if threads:
            torch.set_num_threads(int(threads))
        self.config = config
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self._fn = torch.compile(self.model) if compile else self.model
        self.name = name or ("torch-compile" if compile else "torch")

    def predict(self, ecg: np.ndarray, image: np.ndarray, labs: np.ndarray, lab_mask: np.ndarray) -> Prediction:
        t = [torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).to(self.device) for a in (ecg, image, labs, lab_mask)]
        with torch.inference_mode():
            out = self._fn(*t)
        return Prediction(out.probs.float().cpu().numpy().astype(np.float32),
                          out.lead_weights.float().cpu().numpy().astype(np.float32))


def make_predictor(backend: str, checkpoint: str | Path | LoadedCheckpoint | None = None, **opts: Any) -> Predictor:
    """Build the predictor named ``backend`` for a checkpoint (path, loaded, or None = shipped).

    ``"torch"`` is PyTorch eager here (``device=`` in opts); every other name goes to
    ``trt.backends.create``, which names what is missing when a backend cannot run here.
    """
    loaded = checkpoint if isinstance(checkpoint, LoadedCheckpoint) else load_checkpoint(checkpoint)
    if backend == "torch":
        return TorchPredictor(loaded, device=str(opts.pop("device", "cpu")), threads=opts.pop("threads", None))
    try:
        from trt import backends
    except ImportError as exc:  # pragma: no cover - trt ships with the package
        raise ConfigError(f"inference backend {backend!r} needs the trt package, which failed to import: {exc}") from None
    return backends.create(backend, loaded, **opts)
