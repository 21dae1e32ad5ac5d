"""PyTorch predictors beyond plain eager fp32 CPU: torch.compile, bf16 autocast, CUDA, CUDA graphs.

* ``torch-compile``: ``torch.compile`` (Inductor, C++/OpenMP codegen on the CPU); compiled once per
  batch size with ``dynamic=False`` because the stream uses a few fixed micro-batch sizes.
* ``torch-bf16``: CPU autocast to bfloat16. Worth it only on CPUs with native bf16 dot products
  (AVX-512 BF16 or AMX); elsewhere oneDNN emulates and it is slower (the bench shows which).
* ``torch-cuda``: eager fp32 (TF32 matmuls) on a CUDA GPU.
* ``torch-cuda-bf16``: bf16 weights and autocast on the GPU, one CUDA graph per batch size over
  static input buffers, so a micro-batch costs one graph launch instead of hundreds of kernels
  (PyTorch "CUDA Graphs" notes; ``torch.cuda.graphs``).

All follow :class:`engine.prediction.Predictor`: numpy float32 in, ``Prediction`` out.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import numpy as np
import torch
from torch import nn

from engine.prediction import Prediction
from trt.errors import BackendError, BackendUnavailableError

log = logging.getLogger(__name__)


def _prediction(probs: torch.Tensor, lead_weights: torch.Tensor) -> Prediction:
    return Prediction(
        probs=probs.detach().float().cpu().numpy().reshape(-1).astype(np.float32),
        lead_weights=lead_weights.detach().float().cpu().numpy().astype(np.float32),
    )


class TorchModulePredictor:
    """Runs a MIRAGE module on a device, optionally compiled, in autocast, or through CUDA graphs.

    Args:
        model: an ``engine.model.Mirage`` (moved to ``device`` and put in eval mode).
        config: its configuration.
        name: backend name.
        device: ``"cpu"`` or ``"cuda"`` / ``"cuda:N"``.
        autocast: ``None`` (fp32) or ``torch.bfloat16`` / ``torch.float16``.
        compile: wrap the model in ``torch.compile``.
        cuda_graphs: capture one CUDA graph per batch size (CUDA only).
        threads: CPU threads for this process (``torch.set_num_threads``); ``None`` leaves it.
    """

    def __init__(
        self,
        model: nn.Module,
        config: Any,
        *,
        name: str,
        device: str = "cpu",
        autocast: torch.dtype | None = None,
        compile: bool = False,  # noqa: A002 - mirrors torch.compile
        cuda_graphs: bool = False,
        threads: int | None = None,
    ) -> None:
        self.name = name
        self.config = config
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise BackendUnavailableError(f"backend {name!r} needs CUDA, but torch.cuda.is_available() is False here")
        if cuda_graphs and self.device.type != "cuda":
            raise BackendError(f"backend {name!r}: cuda_graphs needs a CUDA device, got {device!r}")
        if threads:
            torch.set_num_threads(int(threads))
        self.model = model.to(self.device).eval()
        self.autocast = autocast
        self.cuda_graphs = cuda_graphs
        self._forward = torch.compile(self.model, dynamic=False) if compile else self.model
        self._graphs: dict[int, tuple[torch.cuda.CUDAGraph, list[torch.Tensor], Any]] = {}

    def _autocast(self):
        if self.autocast is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast)

    def _run(self, *tensors: torch.Tensor):
        with self._autocast():
            out = self._forward(*tensors)
        return out.probs, out.lead_weights

    def _graph_run(self, host: list[torch.Tensor]):
        batch = host[0].shape[0]
        if batch not in self._graphs:
            static = [t.to(self.device) for t in host]
            side = torch.cuda.Stream(device=self.device)
            side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(side):  # warm-up outside capture (allocator, autotuning)
                for _ in range(2):
                    self._run(*static)
            torch.cuda.current_stream(self.device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                outputs = self._run(*static)
            self._graphs[batch] = (graph, static, outputs)
            log.debug("%s: captured a CUDA graph for batch %d", self.name, batch)
        graph, static, outputs = self._graphs[batch]
        for dst, src in zip(static, host):
            dst.copy_(src, non_blocking=True)
        graph.replay()
        return outputs

    def predict(self, ecg: np.ndarray, image: np.ndarray, labs: np.ndarray, lab_mask: np.ndarray):
        """MI probability and lead weights for a batch (numpy float32 in and out)."""
        host = [torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)) for a in (ecg, image, labs, lab_mask)]
        with torch.inference_mode():
            if self.cuda_graphs:
                probs, weights = self._graph_run(host)
            else:
                probs, weights = self._run(*(t.to(self.device, non_blocking=True) for t in host))
            return _prediction(probs, weights)


def cpu_has_native_bf16() -> bool:
    """True when the CPU advertises native bf16 dot products (AVX-512 BF16 or AMX-BF16)."""
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


TORCH_BACKENDS: dict[str, dict[str, Any]] = {
    "torch-compile": {"device": "cpu", "compile": True},
    "torch-bf16": {"device": "cpu", "autocast": torch.bfloat16},
    "torch-cuda": {"device": "cuda"},
    "torch-cuda-compile": {"device": "cuda", "compile": True},
    "torch-cuda-bf16": {"device": "cuda", "autocast": torch.bfloat16, "cuda_graphs": True},
    "torch-cuda-fp16": {"device": "cuda", "autocast": torch.float16, "cuda_graphs": True},
}


def create_torch_backend(name: str, model: nn.Module, config: Any, **opts: Any) -> TorchModulePredictor:
    """A :class:`TorchModulePredictor` configured as the named backend (``opts`` override)."""
    if name not in TORCH_BACKENDS:
        raise BackendError(f"unknown torch backend {name!r}; choose one of {sorted(TORCH_BACKENDS)}")
    settings = {**TORCH_BACKENDS[name], **opts}
    unknown = set(settings) - {"device", "autocast", "compile", "cuda_graphs", "threads"}
    if unknown:
        raise BackendError(f"backend {name!r} does not take options {sorted(unknown)}")
    if str(settings["device"]).startswith("cuda") and not torch.cuda.is_available():
        raise BackendUnavailableError(
            f"backend {name!r} needs a CUDA GPU: torch {torch.__version__} reports none "
            f"({'no CUDA in this build' if not torch.backends.cuda.is_built() else 'no device visible'})"
        )
    return TorchModulePredictor(model, config, name=name, **settings)

