"""The one factory of inference backends: ``make_predictor(backend, checkpoint, **opts) -> Predictor``.

Every backend, PyTorch eager included, is wired here, so callers (the stream worker, the
benchmarks, the tests) name a backend and get an ``engine.prediction.Predictor``. Compiled
artefacts come from ``trt.artifacts``: the ONNX export and its dynamic int8 copy are derived on
first use; a calibrated static int8 model and TensorRT plans are built offline
(``mirage build-int8``, ``mirage build-engine``) and only loaded here unless the caller asks for a
build (``build=True``: the benchmarks and tests do, a worker never does).

A backend that cannot run here raises :class:`BackendUnavailableError` naming what is missing
(the ``tensorrt`` module, a CUDA GPU, a built artefact and the command that builds it); an unknown
name raises :class:`BackendError` listing the choices.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trt.artifacts import ORT_OPSET, build_int8_static, int8_for, int8_static_path, onnx_for, tensorrt_plan_path
from trt.errors import BackendError, BackendUnavailableError

if TYPE_CHECKING:
    from engine.prediction import Predictor

log = logging.getLogger(__name__)

# Built without an artefact, straight from the checkpoint's module.
TORCH_BACKENDS: dict[str, str] = {
    "torch": "PyTorch eager fp32 (CPU unless device= says otherwise)",
    "torch-compile": "torch.compile (Inductor) of the eager model",
}
BACKENDS: dict[str, str] = {
    "onnxruntime": "ONNX Runtime fp32 on the CPU (graph optimisation, intra-op threads)",
    "onnxruntime-int8": "ONNX Runtime with int8 dynamic quantisation of MatMul/Gemm weights (CPU; NOT batch-invariant)",
    "onnxruntime-opt": "ONNX Runtime fp32 of the rewritten graph (conv stem as NCHWc 2-D convolutions; torch parity 1e-4) (CPU)",
    "onnxruntime-int8-static": "ONNX Runtime static QDQ int8 of the rewritten graph (calibrated fixed scales: batch-invariant) (CPU)",
    "torch-compile": "torch.compile (Inductor) on the CPU",
    "torch-bf16": "PyTorch bf16 autocast on the CPU (fast only with AVX-512 BF16 / AMX)",
    "torch-cuda": "PyTorch eager on a CUDA GPU",
    "torch-cuda-compile": "torch.compile on a CUDA GPU",
    "torch-cuda-bf16": "PyTorch bf16 on a CUDA GPU with one CUDA graph per batch size",
    "torch-cuda-fp16": "PyTorch fp16 on a CUDA GPU with one CUDA graph per batch size",
    "tensorrt": "TensorRT plan (strongly typed; fp16 unless precision= says otherwise) on a CUDA GPU",
}


def _create_tensorrt(loaded: Any, opts: dict[str, Any], *, build: bool):
    from trt.builder import BuildOptions, build_plan, require_tensorrt
    from trt.runner import TensorRTPredictor

    plan_path = opts.pop("plan_path", None)
    cuda_graphs = bool(opts.pop("cuda_graphs", True))
    if plan_path is not None:
        plan = Path(plan_path)
        if not plan.is_file():
            raise BackendUnavailableError(f"TensorRT plan file {plan} does not exist; build it with 'mirage build-engine'")
        require_tensorrt()
    else:
        require_tensorrt()  # before exporting or looking for anything, say what is missing
        onnx_path = opts.pop("onnx_path", None)
        build_opts = BuildOptions(**opts)
        opts.clear()
        plan = tensorrt_plan_path(loaded, build_opts.precision)
        if build:
            build_plan(onnx_for(loaded, onnx_path=onnx_path), plan, build_opts)
        elif not plan.is_file():
            raise BackendUnavailableError(
                f"no TensorRT plan for checkpoint {loaded.sha256[:16]} at {plan}; build it offline on this GPU with "
                f"'mirage export --checkpoint CHECKPOINT --out M.onnx && mirage build-engine --onnx M.onnx "
                f"--precision {build_opts.precision} --out {plan}'")
    if opts:
        raise BackendError(f"backend 'tensorrt' does not take options {sorted(opts)}")
    return TensorRTPredictor(plan, loaded.config, name="tensorrt", cuda_graphs=cuda_graphs)


def create(backend: str, loaded_checkpoint: Any, *, build: bool = False, **opts: Any):
    """Build the named compiled backend's predictor for a loaded checkpoint.

    Args:
        backend: one of :data:`BACKENDS`.
        loaded_checkpoint: ``engine.checkpoint.LoadedCheckpoint`` (model, config, sha256, ...).
        build: also run the offline build step of a static int8 model or TensorRT plan (a
            worker leaves this False and only loads what ``mirage build-int8``/``build-engine`` wrote).
        **opts: backend options: ``threads`` (CPU backends), ``onnx_path`` (ONNX Runtime,
            TensorRT), ``calibration`` (``onnxruntime-int8-static``: model inputs to calibrate on;
            implies a build), ``plan_path``/``precision``/``min_batch``/``opt_batch``/``max_batch``/
            ``timing_cache``/``cuda_graphs`` (TensorRT), ``device`` (torch backends).

    Raises:
        BackendError: unknown backend or option.
        BackendUnavailableError: the backend cannot run here (names what is missing).
    """
    opts = dict(opts)
    if backend not in BACKENDS:
        raise BackendError(f"unknown inference backend {backend!r}; choose 'torch' or one of {sorted(BACKENDS)}")
    if backend.startswith("onnxruntime"):
        from trt.ort_backend import OrtPredictor

        onnx_path = opts.pop("onnx_path", None)
        threads = opts.pop("threads", None)
        calibration = opts.pop("calibration", None) if backend == "onnxruntime-int8-static" else None
        if opts:
            raise BackendError(f"backend {backend!r} does not take options {sorted(opts)}")
        if backend == "onnxruntime-int8":
            path = int8_for(loaded_checkpoint, onnx_path=onnx_path)
        elif backend == "onnxruntime-int8-static":
            if build or calibration is not None:
                path = build_int8_static(loaded_checkpoint, onnx_path=onnx_path, calibration=calibration)
            else:
                path = int8_static_path(loaded_checkpoint, onnx_path=onnx_path)
        else:
            path = onnx_for(loaded_checkpoint, onnx_path=onnx_path, opset=ORT_OPSET, fast=backend == "onnxruntime-opt")
        return OrtPredictor(path, loaded_checkpoint.config, name=backend, threads=threads)
    if backend == "tensorrt":
        return _create_tensorrt(loaded_checkpoint, opts, build=build)
    from trt.torch_backends import create_torch_backend

    # A private copy: a backend moves/compiles its module and must not disturb the caller's.
    return create_torch_backend(backend, copy.deepcopy(loaded_checkpoint.model), loaded_checkpoint.config, **opts)


def make_predictor(backend: str, checkpoint: Any = None, *, build: bool = False, **opts: Any) -> Predictor:
    """Build the predictor named ``backend`` for a checkpoint (path, loaded, or None = shipped).

    ``"torch"`` (eager) and ``"torch-compile"`` are ``engine.predictor.TorchPredictor`` (options
    ``device``, ``dtype``, ``threads``); every other name goes to :func:`create`.

    Raises:
        CheckpointError: the checkpoint cannot be loaded.
        ConfigError: the backend is unknown, cannot run here, or does not take an option (the
            message names the backend and what is missing, or the command that builds it).
    """
    from engine.checkpoint import LoadedCheckpoint, load_checkpoint
    from engine.errors import ConfigError

    loaded = checkpoint if isinstance(checkpoint, LoadedCheckpoint) else load_checkpoint(checkpoint)
    if backend in TORCH_BACKENDS:
        from engine.predictor import TorchPredictor

        unknown = sorted(set(opts) - {"device", "dtype", "threads"})
        if unknown:
            raise ConfigError(f"backend {backend!r} does not take options {unknown}")
        # Moving, casting or compiling works on a private copy, never on the caller's module.
        private = backend == "torch-compile" or opts.get("dtype") is not None or str(opts.get("device", "cpu")) != "cpu"
        model = copy.deepcopy(loaded.model) if private else loaded.model
        return TorchPredictor(model, loaded.config, device=str(opts.get("device", "cpu")), dtype=opts.get("dtype"),
                              compile=backend == "torch-compile", threads=opts.get("threads"), name=backend)
    try:
        return create(backend, loaded, build=build, **opts)
    except ConfigError:
        raise
    except (ValueError, ImportError, RuntimeError, OSError) as exc:
        # BackendError (unknown name/option) and BackendUnavailableError (what is missing).
        raise ConfigError(f"inference backend {backend!r} cannot be used: {exc}") from exc


def build_offline(backend: str, checkpoint: Any = None) -> Path | None:
    """Run ``backend``'s offline build step for a checkpoint, if it has one; the artefact's path or None.

    What ``mirage build-int8`` does, for tools that start their own workers (``mirage demo``,
    ``validate``, ``bench load``): they build, the workers they start only load.
    """
    if backend not in ("onnxruntime-int8-static", "tensorrt"):
        return None
    from engine.checkpoint import LoadedCheckpoint, load_checkpoint

    loaded = checkpoint if isinstance(checkpoint, LoadedCheckpoint) else load_checkpoint(checkpoint or None)
    if backend == "onnxruntime-int8-static":
        return build_int8_static(loaded)
    from trt.builder import BuildOptions, build_plan, require_tensorrt

    require_tensorrt()
    options = BuildOptions()
    return build_plan(onnx_for(loaded), tensorrt_plan_path(loaded, options.precision), options)
    return None


def unavailable_reason(backend: str) -> str | None:
    """``None`` when ``backend`` can run on this machine, else the reason (cheap: builds nothing)."""
    if backend not in BACKENDS:
        return f"unknown backend {backend!r}"
    missing = []
    if backend == "tensorrt":
        try:
            import tensorrt  # noqa: F401
        except ImportError as exc:
            missing.append(f"the 'tensorrt' Python module cannot be imported ({exc})")
    if backend.startswith("torch-cuda") or backend == "tensorrt":
        from trt.builder import cuda_missing_reason

        reason = cuda_missing_reason()
        if reason:
            missing.append(reason)
    if missing:
        return "; ".join(missing)
    if backend.startswith("onnxruntime"):
        try:
            import onnxruntime  # noqa: F401
        except ImportError as exc:  # pragma: no cover - a dependency
            return f"onnxruntime cannot be imported ({exc})"
    return None
