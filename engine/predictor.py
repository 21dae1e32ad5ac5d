"""PyTorch eager (optionally ``torch.compile``-d) as a :class:`engine.prediction.Predictor`.

The seam itself (``Prediction``, ``Predictor``) is torch-free in ``engine.prediction``; the one
factory that builds any backend by name, this one included, is ``trt.backends.make_predictor``.
Inputs come from ``engine.pipeline.model_inputs`` (the one input pipeline of training, evaluation
and the stream).
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from engine.checkpoint import LoadedCheckpoint
from engine.config import MirageConfig
from engine.errors import ConfigError
from engine.prediction import Prediction, check_inputs

log = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
           "float16": torch.float16, "fp16": torch.float16}


def _dtype(dtype: torch.dtype | str | None) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    try:
        return _DTYPES[str(dtype).lower()]
    except KeyError:
        raise ConfigError(f"unknown dtype {dtype!r}; choose one of {sorted(_DTYPES)}") from None


class TorchPredictor:
    """PyTorch eager (optionally ``torch.compile``-d) on CPU or CUDA, under ``torch.inference_mode``.

    Args:
        model: a :class:`LoadedCheckpoint` or a ``Mirage`` module.
        config: the module's config (taken from the checkpoint or ``model.cfg`` when omitted).
        device: ``"cpu"`` or ``"cuda[:N]"``.
        dtype: run the weights in this dtype (``torch.bfloat16``, ``"fp16"``, ...); None = float32.
            Outputs are always float32.
        compile: wrap the module in ``torch.compile``.
        threads: ``torch.set_num_threads`` for this process (None leaves it).
        name: the predictor's name (default ``"torch"`` / ``"torch-compile"``).
    """

    def __init__(self, model: LoadedCheckpoint | torch.nn.Module, config: MirageConfig | None = None, *,
                 device: str = "cpu", dtype: torch.dtype | str | None = None, compile: bool = False,  # noqa: A002
                 threads: int | None = None, name: str | None = None) -> None:
        if isinstance(model, LoadedCheckpoint):
            config = model.config
            model = model.model
        if config is None:
            config = getattr(model, "cfg", None)
        if not isinstance(config, MirageConfig):
            raise ConfigError(f"TorchPredictor needs a MirageConfig with a bare module, got {type(config).__name__}")
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError(f"device {device!r} asked for, but torch.cuda.is_available() is False here")
        if threads:
            torch.set_num_threads(int(threads))
        self.config = config
        self.dtype = _dtype(dtype)
        self.model = model.to(self.device).eval()
        if self.dtype is not None:
            self.model = self.model.to(self.dtype)
        self._fn = torch.compile(self.model) if compile else self.model
        self.name = name or ("torch-compile" if compile else "torch")

    def predict(self, ecg: np.ndarray, image: np.ndarray, labs: np.ndarray, lab_mask: np.ndarray) -> Prediction:
        """Score one batch (see :class:`Predictor`); shapes are checked against the config."""
        check_inputs(self.config, ecg, image, labs, lab_mask)
        dtype = self.dtype or torch.float32
        tensors = [torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).to(self.device, dtype)
                   for a in (ecg, image, labs, lab_mask)]
        with torch.inference_mode():
            out = self._fn(*tensors)
        return Prediction(out.probs.float().cpu().numpy().astype(np.float32, copy=False),
                          out.lead_weights.float().cpu().numpy().astype(np.float32, copy=False))
