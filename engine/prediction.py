"""The inference seam: what every backend returns (:class:`Prediction`) and promises (:class:`Predictor`).

Torch-free on purpose: the stream worker, the benchmarks and every backend in ``trt/`` (ONNX
Runtime, TensorRT, torch variants) import this module and nothing heavier. The one factory that
builds a backend by name is ``trt.backends.make_predictor``; the PyTorch eager predictor is
``engine.predictor.TorchPredictor``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from engine.config import MirageConfig
from engine.errors import SignalError


@dataclass
class Prediction:
    """MI probabilities ``(B,)`` and per-lead contribution weights ``(B, 12)``, numpy float32."""

    probs: np.ndarray
    lead_weights: np.ndarray


@runtime_checkable
class Predictor(Protocol):
    """Anything that scores a batch of MIRAGE inputs (numpy float32 in, :class:`Prediction` out)."""

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
