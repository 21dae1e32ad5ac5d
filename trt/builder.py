"""Build a TensorRT 10 plan from the ONNX export (strongly typed, explicit batch profile).

Follows the TensorRT 10 Python API (developer guide "The Build Phase", Polygraphy's
``CreateConfig``/``EngineFromNetwork``): ``Builder`` -> ``create_network`` with
``NetworkDefinitionCreationFlag.STRONGLY_TYPED`` -> ``OnnxParser`` -> ``IBuilderConfig`` with a
workspace limit, one ``IOptimizationProfile`` (explicit min/opt/max batch for every input) and a
persistent ``ITimingCache`` -> ``build_serialized_network``. In a strongly typed network the
precision comes from the graph, not from builder flags, so fp16/bf16 plans are built from the
mixed-precision rewrite of :mod:`trt.precision` (GEMMs/convs reduced, LayerNorm/softmax fp32).

A JSON file beside every plan (``model.plan.json``) records the SHA-256 of the source ONNX, the
TensorRT version, the GPU and its compute capability, the precision and the profile. A plan whose
record does not match the current ONNX file, TensorRT or GPU is stale (plans are not portable
across TensorRT versions or GPU architectures) and :func:`build_plan` rebuilds it.

Verified here: everything up to the ONNX graph. The TensorRT calls are written against the
documented API; this workplace has no TensorRT builder and no GPU to execute them.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from trt.errors import BackendUnavailableError, PlanError
from trt.export import INPUT_NAMES, file_sha256
from trt.precision import PRECISIONS, write_mixed_precision

log = logging.getLogger(__name__)


def require_tensorrt():
    """Import and return the ``tensorrt`` module, or say exactly what is missing.

    Raises:
        BackendUnavailableError: the ``tensorrt`` module is not installed, or no CUDA GPU is visible.
    """
    try:
        import tensorrt
    except ImportError as exc:
        raise BackendUnavailableError(
            f"TensorRT is not available: the 'tensorrt' Python module cannot be imported ({exc}). "
            "Install TensorRT 10+ on an NVIDIA machine: pip install 'mirage-monitor[tensorrt]'"
        ) from exc
    cuda_reason = cuda_missing_reason()
    if cuda_reason:
        raise BackendUnavailableError(f"TensorRT {tensorrt.__version__} is installed but {cuda_reason}")
    return tensorrt


def cuda_missing_reason() -> str | None:
    """``None`` when a CUDA GPU is usable through torch, else why not."""
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return "torch is not installed (used for CUDA buffers and streams)"
    if not torch.backends.cuda.is_built():
        return f"this torch build ({torch.__version__}) has no CUDA support"
    if not torch.cuda.is_available():
        return "no CUDA GPU is visible (torch.cuda.is_available() is False)"
    return None


@dataclass(frozen=True)
class BuildOptions:
    """What a plan is built for. ``min_batch <= opt_batch <= max_batch`` is checked."""

    precision: str = "fp16"
    min_batch: int = 1
    opt_batch: int = 32
    max_batch: int = 128
    workspace_mib: int = 4096
    optimization_level: int = 3  # TensorRT builder optimisation level 0-5
    timing_cache: str | None = None  # path; created if missing, updated after the build

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise PlanError(f"precision={self.precision!r}; choose one of {list(PRECISIONS)}")
        if not 1 <= self.min_batch <= self.opt_batch <= self.max_batch:
            raise PlanError(
                f"batch profile min={self.min_batch} opt={self.opt_batch} max={self.max_batch}: "
                "need 1 <= min <= opt <= max"
            )
        if not 0 <= self.optimization_level <= 5:
            raise PlanError(f"optimization_level={self.optimization_level}: TensorRT accepts 0..5")


def metadata_path(plan_path: str | Path) -> Path:
    """The JSON record beside a plan: ``model.plan`` -> ``model.plan.json``."""
    plan_path = Path(plan_path)
    return plan_path.with_name(plan_path.name + ".json")


def _gpu_identity() -> dict[str, Any]:
    import torch

    props = torch.cuda.get_device_properties(torch.cuda.current_device())
    return {"gpu": props.name, "compute_capability": f"{props.major}.{props.minor}"}


def expected_metadata(onnx_path: str | Path, options: BuildOptions, *, tensorrt_version: str, gpu: dict[str, Any]) -> dict[str, Any]:
    """The fields that must match for a plan to be reused (plus nothing time-dependent)."""
    return {
        "onnx_sha256": file_sha256(onnx_path),
        "tensorrt_version": tensorrt_version,
        "gpu": gpu.get("gpu"),
        "compute_capability": gpu.get("compute_capability"),
        "precision": options.precision,
        "profile": {"min": options.min_batch, "opt": options.opt_batch, "max": options.max_batch},
    }


def stale_reason(plan_path: str | Path, expected: dict[str, Any]) -> str | None:
    """Why the plan at ``plan_path`` cannot be reused for ``expected``, or ``None`` if it can."""
    plan_path = Path(plan_path)
    meta_path = metadata_path(plan_path)
    if not plan_path.is_file():
        return f"no plan at {plan_path}"
    if not meta_path.is_file():
        return f"no metadata file {meta_path.name} beside the plan"
    try:
        found = json.loads(meta_path.read_text())
    except (OSError, ValueError) as exc:
        return f"unreadable metadata {meta_path}: {exc}"
    for key, want in expected.items():
        if found.get(key) != want:
            return f"{key} changed: plan has {found.get(key)!r}, now {want!r}"
    return None


def _input_shapes(network) -> dict[str, tuple[int, ...]]:
    shapes = {}
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        shapes[tensor.name] = tuple(tensor.shape)
    return shapes


def build_plan(onnx_path: str | Path, plan_path: str | Path, options: BuildOptions | None = None, *, force: bool = False) -> Path:
    """Build (or reuse, when its metadata still matches) a TensorRT plan for ``onnx_path``.

    Args:
        onnx_path: the fp32 graph from ``mirage export``.
        plan_path: where to write the serialized plan; ``<plan>.json`` is written beside it.
        options: precision, batch profile, workspace, timing cache.
        force: rebuild even when the existing plan is current.

    Raises:
        BackendUnavailableError: TensorRT or CUDA is missing (names which).
        PlanError: the ONNX parser or the builder failed (carries the parser's messages).
    """
    options = options or BuildOptions()
    onnx_path, plan_path = Path(onnx_path), Path(plan_path)
    if not onnx_path.is_file():
        raise PlanError(f"ONNX file {onnx_path} does not exist; run 'mirage export --out {onnx_path}' first")
    tensorrt = require_tensorrt()
    expected = expected_metadata(onnx_path, options, tensorrt_version=tensorrt.__version__, gpu=_gpu_identity())
    reason = None if force else stale_reason(plan_path, expected)
    if not force and reason is None:
        log.info("plan %s is current; not rebuilding", plan_path)
        return plan_path
    log.info("building %s plan: %s", options.precision, reason or "forced")

    with tempfile.TemporaryDirectory() as tmp:
        source = onnx_path
        if options.precision in ("fp16", "bf16"):
            source = write_mixed_precision(onnx_path, Path(tmp) / f"model.{options.precision}.onnx", options.precision)
        trt_logger = tensorrt.Logger(tensorrt.Logger.WARNING)
        builder = tensorrt.Builder(trt_logger)
        flags = 1 << int(tensorrt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
        network = builder.create_network(flags)
        parser = tensorrt.OnnxParser(network, trt_logger)
        if not parser.parse_from_file(str(source)):
            errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
            raise PlanError(f"TensorRT ONNX parser rejected {onnx_path}: {errors}")
        config = builder.create_builder_config()
        config.set_memory_pool_limit(tensorrt.MemoryPoolType.WORKSPACE, options.workspace_mib << 20)
        config.builder_optimization_level = options.optimization_level
        if options.precision == "fp32":
            config.clear_flag(tensorrt.BuilderFlag.TF32)  # true fp32 for parity work
        profile = builder.create_optimization_profile()
        for name, shape in _input_shapes(network).items():
            if name not in INPUT_NAMES:
                raise PlanError(f"{onnx_path}: unexpected input {name!r}; expected {list(INPUT_NAMES)}")
            rest = tuple(shape[1:])
            profile.set_shape(name, (options.min_batch, *rest), (options.opt_batch, *rest), (options.max_batch, *rest))
        config.add_optimization_profile(profile)
        cache_path = Path(options.timing_cache) if options.timing_cache else None
        cache_bytes = cache_path.read_bytes() if cache_path and cache_path.is_file() else b""
        cache = config.create_timing_cache(cache_bytes)
        config.set_timing_cache(cache, ignore_mismatch=False)

        t0 = time.perf_counter()
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise PlanError(f"TensorRT failed to build a {options.precision} plan from {onnx_path} (see the TensorRT log above)")
        seconds = time.perf_counter() - t0

    plan_path.parent.mkdir(parents=True, exist_ok=True)
    plan_path.write_bytes(bytes(serialized))
    if cache_path:
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        cache_path.write_bytes(bytes(config.get_timing_cache().serialize()))
    record = {
        **expected,
        "build_seconds": round(seconds, 1),
        "built_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "options": asdict(options),
    }
    metadata_path(plan_path).write_text(json.dumps(record, indent=2) + "\n")
    log.info("built %s in %.0f s (%.1f MB)", plan_path, seconds, plan_path.stat().st_size / 1e6)
    return plan_path
