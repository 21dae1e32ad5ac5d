"""The one seam between the stream and inference: :class:`Predictor`.

PyTorch (here), ONNX Runtime and TensorRT (``trt.backends``) all implement it: numpy float32 in,
:class:`Prediction` out. The stream never knows which one runs. Inputs come from
``engine.pipeline.model_inputs`` (the one input pipeline of training, evaluation and the stream).
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from engine.checkpoint import LoadedCheckpoint, load_checkpoint
from engine.config import MirageConfig
from engine.errors import ConfigError, SignalError

log = logging.getLogger(__name__)

# Backends this module builds itself; every other name goes to trt.backends.create.
LOCAL_BACKENDS: dict[str, str] = {
    "torch": "PyTorch eager fp32 (CPU unless device= says otherwise)",
    "torch-compile": "torch.compile (Inductor) of the eager model",
}
_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
           "float16": torch.float16, "fp16": torch.float16}


@dataclass
class Prediction:
    """MI probabilities ``(B,)`` and per-lead contribution weights ``(B, 12)``, numpy float32."""

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


def check_inputs(cfg: MirageConfig, ecg: np.ndarray, image: np.ndarray, labs: np.ndarray, lab_mask: np.ndarray) -> int:
    """Check a batch against ``cfg`` and return its size ``B``.

    Raises:
        SignalError: an array has the wrong shape (names the array, its shape and the expected one).
    """
    B = int(np.shape(ecg)[0]) if np.ndim(ecg) else 0
    expected = {
        "ecg": (B, cfg.n_leads, cfg.T),
        "image": (B, cfg.in_chans, cfg.image_size, cfg.image_size),
        "labs": (B, cfg.lab_dim),
        "lab_mask": (B, cfg.lab_dim),
    }
    for name, arr in zip(expected, (ecg, image, labs, lab_mask)):
        if tuple(np.shape(arr)) != expected[name]:
            raise SignalError(f"{name} has shape {tuple(np.shape(arr))}; model '{cfg.name}' expects {expected[name]}")
    return B


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


def make_predictor(backend: str, checkpoint: str | Path | LoadedCheckpoint | None = None, **opts: Any) -> Predictor:
    """Build the predictor named ``backend`` for a checkpoint (path, loaded, or None = shipped).

    ``"torch"`` (eager) and ``"torch-compile"`` are built here (options ``device``, ``dtype``,
    ``threads``); every other name goes to ``trt.backends.create(backend, loaded, **opts)``.

    Raises:
        CheckpointError: the checkpoint cannot be loaded.
        ConfigError: the backend is unknown, cannot run here, or does not take an option (the
            message names the backend and what is missing).
    """
    loaded = checkpoint if isinstance(checkpoint, LoadedCheckpoint) else load_checkpoint(checkpoint)
    if backend in LOCAL_BACKENDS:
        unknown = sorted(set(opts) - {"device", "dtype", "threads"})
        if unknown:
            raise ConfigError(f"backend {backend!r} does not take options {unknown}")
        # Moving, casting or compiling works on a private copy, never on the caller's module.
        private = backend == "torch-compile" or opts.get("dtype") is not None or str(opts.get("device", "cpu")) != "cpu"
        model = copy.deepcopy(loaded.model) if private else loaded.model
        return TorchPredictor(model, loaded.config, device=str(opts.get("device", "cpu")), dtype=opts.get("dtype"),
                              compile=backend == "torch-compile", threads=opts.get("threads"), name=backend)
    try:
        from trt import backends
    except ImportError as exc:
        raise ConfigError(f"inference backend {backend!r} is not built here and trt.backends cannot be imported "
                          f"({exc}); built-in backends: {sorted(LOCAL_BACKENDS)}") from None
    try:
        return backends.create(backend, loaded, **opts)
    except ConfigError:
        raise
    except (ValueError, ImportError, RuntimeError, OSError) as exc:
        # trt raises BackendError (unknown name/option) and BackendUnavailableError (what is missing).
        raise ConfigError(f"inference backend {backend!r} cannot be used: {exc}") from exc
