"""Write a Triton Inference Server model repository for MIRAGE.

Layout (Triton "Model Repository" docs)::

    DIR/
      mirage_onnx/config.pbtxt      platform onnxruntime_onnx
      mirage_onnx/1/model.onnx
      mirage_trt/config.pbtxt       platform tensorrt_plan   (only with --plan)
      mirage_trt/1/model.plan

Each ``config.pbtxt`` declares the four inputs and the outputs without the batch axis
(``max_batch_size > 0`` makes Triton add it), turns on dynamic batching with preferred sizes and a
short queue delay (the stream already micro-batches; Triton merges requests from several
workers), and one instance on the GPU (or CPU for ONNX with ``kind="cpu"``). ``probs`` is ``(B,)``
in the graph: it is declared ``dims: [1]`` with ``reshape: { shape: [] }``, Triton's documented
way to serve a per-sample scalar. A TensorRT model's ``max_batch_size`` is capped at the plan's
profile maximum (read from the plan's metadata JSON).
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from engine.config import MirageConfig
from trt.errors import TritonRepoError

log = logging.getLogger(__name__)

ONNX_MODEL = "mirage_onnx"
PLAN_MODEL = "mirage_trt"


@dataclass(frozen=True)
class TritonOptions:
    """Serving knobs written into every ``config.pbtxt``."""

    max_batch_size: int = 128
    preferred_batch_sizes: tuple[int, ...] = (8, 32)
    max_queue_delay_us: int = 2000
    instances: int = 1
    kind: str = "gpu"  # "gpu" or "cpu" (ONNX only; a plan always runs on the GPU)

    def __post_init__(self) -> None:
        if self.max_batch_size < 1:
            raise TritonRepoError(f"max_batch_size={self.max_batch_size} must be >= 1")
        if self.kind not in ("gpu", "cpu"):
            raise TritonRepoError(f"kind={self.kind!r}; choose gpu or cpu")
        if self.instances < 1 or self.max_queue_delay_us < 0:
            raise TritonRepoError(f"instances={self.instances}, max_queue_delay_us={self.max_queue_delay_us} out of range")


def _dims(values: Sequence[int]) -> str:
    return "[ " + ", ".join(str(int(v)) for v in values) + " ]"


def config_pbtxt(name: str, platform: str, cfg: MirageConfig, options: TritonOptions, *, kind: str) -> str:
    """The text of one ``config.pbtxt`` (protobuf text format of Triton's ``ModelConfig``)."""
    preferred = sorted({b for b in options.preferred_batch_sizes if 1 <= b <= options.max_batch_size})
    inputs = [
        ("ecg", (cfg.n_leads, cfg.T)),
        ("image", (cfg.in_chans, cfg.image_size, cfg.image_size)),
        ("labs", (cfg.lab_dim,)),
        ("lab_mask", (cfg.lab_dim,)),
    ]
    lines = [
        f'name: "{name}"',
        f'platform: "{platform}"',
        f"max_batch_size: {options.max_batch_size}",
        "input [",
    ]
    lines.append(",\n".join(f'  {{ name: "{n}" data_type: TYPE_FP32 dims: {_dims(d)} }}' for n, d in inputs))
    lines += [
        "]",
        "output [",
        '  { name: "probs" data_type: TYPE_FP32 dims: [ 1 ] reshape: { shape: [ ] } },',
        f'  {{ name: "lead_weights" data_type: TYPE_FP32 dims: {_dims((cfg.n_leads,))} }},',
        f'  {{ name: "logits" data_type: TYPE_FP32 dims: {_dims((cfg.num_classes,))} }}',
        "]",
        "dynamic_batching {",
    ]
    if preferred:
        lines.append(f"  preferred_batch_size: {_dims(preferred)}")
    lines += [
        f"  max_queue_delay_microseconds: {options.max_queue_delay_us}",
        "}",
        f"instance_group [ {{ count: {options.instances} kind: {'KIND_GPU' if kind == 'gpu' else 'KIND_CPU'} }} ]",
    ]
    return "\n".join(lines) + "\n"


def _plan_max_batch(plan: Path) -> int | None:
    meta = plan.with_name(plan.name + ".json")
    if not meta.is_file():
        return None
    try:
        return int(json.loads(meta.read_text())["profile"]["max"])
    except (ValueError, KeyError, TypeError) as exc:
        raise TritonRepoError(f"plan metadata {meta} is unreadable: {exc}") from exc


def write_repository(
    out_dir: str | Path,
    cfg: MirageConfig,
    *,
    onnx_path: str | Path | None = None,
    plan_path: str | Path | None = None,
    options: TritonOptions | None = None,
) -> list[Path]:
    """Write the repository; returns the model directories written.

    Raises:
        TritonRepoError: neither file given, a file missing, or a bad option (names it).
    """
    options = options or TritonOptions()
    if onnx_path is None and plan_path is None:
        raise TritonRepoError("give an ONNX file (--onnx), a TensorRT plan (--plan) or both")
    out = Path(out_dir)
    written: list[Path] = []
    jobs = []
    if onnx_path is not None:
        jobs.append((ONNX_MODEL, "onnxruntime_onnx", Path(onnx_path), "model.onnx", options.kind, options))
    if plan_path is not None:
        plan = Path(plan_path)
        plan_options = options
        cap = _plan_max_batch(plan) if plan.is_file() else None
        if cap is not None and cap < options.max_batch_size:
            log.info("max_batch_size %d capped at the plan profile max %d", options.max_batch_size, cap)
            plan_options = TritonOptions(cap, options.preferred_batch_sizes, options.max_queue_delay_us, options.instances, "gpu")
        jobs.append((PLAN_MODEL, "tensorrt_plan", plan, "model.plan", "gpu", plan_options))
    for name, platform, src, filename, kind, opts in jobs:
        if not src.is_file():
            raise TritonRepoError(f"{src} does not exist (needed for Triton model {name})")
        model_dir = out / name
        (model_dir / "1").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, model_dir / "1" / filename)
        (model_dir / "config.pbtxt").write_text(config_pbtxt(name, platform, cfg, opts, kind=kind))
        written.append(model_dir)
        log.info("wrote Triton model %s (%s)", model_dir, platform)
    return written
