"""Choose an inference backend by name: ``create(backend, loaded_checkpoint, **opts) -> Predictor``.

``engine.predictor.make_predictor`` builds ``"torch"`` (eager fp32 CPU) itself and calls
:func:`create` for every other name. Compiled artefacts (the ONNX export, its int8 copy, TensorRT
plans) are cached under ``$MIRAGE_CACHE_DIR`` (default ``~/.cache/mirage/compiled``) keyed by
the checkpoint's SHA-256, so a new checkpoint never reuses an old graph.

A backend that cannot run here raises :class:`BackendUnavailableError` naming what is missing
(the ``tensorrt`` module, a CUDA GPU, a plan file); an unknown name raises
:class:`BackendError` listing the choices.
"""

from __future__ import annotations

import copy
import logging
import os
from pathlib import Path
from typing import Any

from trt.errors import BackendError, BackendUnavailableError

log = logging.getLogger(__name__)

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


def cache_dir() -> Path:
    """Where compiled artefacts live (``$MIRAGE_CACHE_DIR`` or ``~/.cache/mirage/compiled``)."""
    root = os.environ.get("MIRAGE_CACHE_DIR")
    return Path(root) if root else Path.home() / ".cache" / "mirage" / "compiled"


def _key(loaded: Any) -> str:
    sha = getattr(loaded, "sha256", None)
    if not sha:
        raise BackendError("the loaded checkpoint has no sha256; load it with engine.checkpoint.load_checkpoint")
    return str(sha)[:16]


# ONNX Runtime gets opset 20 (native Gelu: one kernel instead of Erf/Div/Add/Mul, measured ~5-8%
# faster int8 here); TensorRT plans are built from opset 18, which every TensorRT 10 parser reads.
ORT_OPSET = 20
TENSORRT_OPSET = 18


def onnx_for(loaded: Any, *, onnx_path: str | Path | None = None, opset: int = TENSORRT_OPSET, fast: bool = False) -> Path:
    """The checkpoint's ONNX export at ``opset``, exporting (with checks) on first use.

    With ``fast`` the module is first rewritten (``trt.rewrite.fast_export_module``: conv stem as
    2-D convolutions) and the graph is checked against the *original* torch model (1e-4).
    """
    if onnx_path is not None:
        path = Path(onnx_path)
        if not path.is_file():
            raise BackendUnavailableError(f"ONNX file {path} does not exist; run 'mirage export --out {path}'")
        return path
    suffix = ""
    if fast:
        from trt.rewrite import REWRITE_VERSION

        suffix = f"-fast{REWRITE_VERSION}"
    path = cache_dir() / f"mirage-{_key(loaded)}-op{opset}{suffix}.onnx"
    if not path.is_file():
        from trt.export import check_parity, export_onnx

        log.info("exporting the checkpoint to %s (first use)", path)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        if fast:
            from trt.rewrite import fast_export_module

            module, rewrites = fast_export_module(loaded.model)
            log.info("export rewrites: %s", rewrites or "none")
            export_onnx(module, loaded.config, tmp, opset=opset)
            check_parity(loaded.model, tmp, cfg=loaded.config)  # the rewritten graph vs the original model
        else:
            export_onnx(loaded.model, loaded.config, tmp, opset=opset)
        tmp.replace(path)
    return path


def int8_for(loaded: Any, *, onnx_path: str | Path | None = None) -> Path:
    """The int8 (dynamic quantisation) copy of the checkpoint's ONNX export."""
    from trt.ort_backend import quantize_int8

    src = onnx_for(loaded, onnx_path=onnx_path, opset=ORT_OPSET)
    dst = src.with_name(src.stem + ".int8.onnx")
    if not dst.is_file() or dst.stat().st_mtime < src.stat().st_mtime:
        quantize_int8(src, dst)
    return dst


def int8_static_for(loaded: Any, *, onnx_path: str | Path | None = None, calibration: Any = None) -> Path:
    """The static QDQ int8 copy of the checkpoint's rewritten ONNX export, calibrated on first use.

    Args:
        loaded: the loaded checkpoint.
        onnx_path: quantise this fp32 ONNX file instead of the cached rewritten export.
        calibration: model inputs to calibrate on (``ModelInputs``-like); default: every 4th
            window of the shared PTB-XL sample (synthetic windows when it is absent).
    """
    from trt.ort_static import calibration_feeds, default_calibration, feeds_digest, quantize_int8_static

    src = onnx_for(loaded, onnx_path=onnx_path, opset=ORT_OPSET, fast=True)
    if calibration is None:
        calibration, source = default_calibration(loaded.config)
        log.info("static int8 calibration: %s", source)
    feeds = calibration_feeds(calibration)
    dst = src.with_name(f"{src.stem}.int8s-{feeds_digest(feeds)}.onnx")
    if not dst.is_file() or dst.stat().st_mtime < src.stat().st_mtime:
        tmp = dst.with_name(f"{dst.stem}.{os.getpid()}.tmp.onnx")
        quantize_int8_static(src, tmp, feeds)
        tmp.replace(dst)
    return dst


def _create_tensorrt(loaded: Any, opts: dict[str, Any]):
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
        require_tensorrt()  # before exporting anything, say what is missing
        onnx_path = opts.pop("onnx_path", None)
        build_opts = BuildOptions(**opts)
        opts.clear()
        src = onnx_for(loaded, onnx_path=onnx_path)
        plan = build_plan(src, src.with_name(f"{src.stem}.{build_opts.precision}.plan"), build_opts)
    if opts:
        raise BackendError(f"backend 'tensorrt' does not take options {sorted(opts)}")
    return TensorRTPredictor(plan, loaded.config, name="tensorrt", cuda_graphs=cuda_graphs)


def create(backend: str, loaded_checkpoint: Any, **opts: Any):
    """Build the named backend's predictor for a loaded checkpoint.

    Args:
        backend: one of :data:`BACKENDS`.
        loaded_checkpoint: ``engine.checkpoint.LoadedCheckpoint`` (model, config, sha256, ...).
        **opts: backend options: ``threads`` (CPU backends), ``onnx_path`` (ONNX Runtime,
            TensorRT), ``calibration`` (``onnxruntime-int8-static``: model inputs to calibrate on), ``plan_path``/``precision``/``min_batch``/``opt_batch``/``max_batch``/
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
            path = int8_static_for(loaded_checkpoint, onnx_path=onnx_path, calibration=calibration)
        else:
            path = onnx_for(loaded_checkpoint, onnx_path=onnx_path, opset=ORT_OPSET, fast=backend == "onnxruntime-opt")
        return OrtPredictor(path, loaded_checkpoint.config, name=backend, threads=threads)
    if backend == "tensorrt":
        return _create_tensorrt(loaded_checkpoint, opts)
    from trt.torch_backends import create_torch_backend

    # A private copy: a backend moves/compiles its module and must not disturb the caller's.
    return create_torch_backend(backend, copy.deepcopy(loaded_checkpoint.model), loaded_checkpoint.config, **opts)


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
