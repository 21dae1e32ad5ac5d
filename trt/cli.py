"""Door of the compiled-inference room: ``mirage export``, ``build-int8``, ``build-engine``, ``triton-repo``.

Each function takes ``argv`` (without the subcommand), builds its own argparse parser and returns
an exit code: 0 done, 2 bad arguments, 3 a backend is unavailable here (TensorRT/CUDA missing),
1 anything else that failed (export, parity, build).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from trt.bench import load_checkpoint_or_preset
from trt.errors import BackendUnavailableError, InferenceError

log = logging.getLogger(__name__)

# Largest allowed max |plan - torch fp32| on probabilities, per precision: fp32 plans differ only by
# kernel order; fp16 keeps 10 mantissa bits in GEMMs (inputs ~1e-3 relative), bf16 keeps 7.
PLAN_ATOL: dict[str, float] = {"fp32": 1e-4, "tf32": 5e-3, "fp16": 1e-2, "bf16": 3e-2}


def real_inputs(cfg: Any, data: Path | None, n: int) -> dict[str, Any] | None:
    """``n`` PTB-XL windows through the shared pipeline, as an ONNX feed; ``None`` without data."""
    if data is None or not (data / "ptbxl_database.csv").is_file():
        return None
    from engine.data.calibration import ptbxl_windows
    from engine.pipeline import model_inputs

    windows, _ = ptbxl_windows(data, cfg, limit=n)
    mi = model_inputs(windows, cfg)
    return {"ecg": mi.ecg, "image": mi.image, "labs": mi.labs, "lab_mask": mi.lab_mask}


def export_main(argv: list[str]) -> int:
    """``mirage export``: checkpoint -> ONNX (checked, parity-tested), optionally its int8 copy."""
    p = argparse.ArgumentParser(
        prog="mirage export",
        description=(
            "Export a MIRAGE checkpoint to ONNX with a dynamic batch axis (inputs ecg, image, labs, lab_mask; "
            "outputs probs, lead_weights, logits). The graph is checked with onnx.checker and ONNX Runtime must "
            "match PyTorch within --atol on real PTB-XL windows (random ones when the sample is absent)."
        ),
    )
    p.add_argument("--checkpoint", help="checkpoint file (default: the shipped engine/checkpoints/mirage-default.pt)")
    p.add_argument("--preset", help="export a random-init model of this preset instead of a checkpoint (for testing)")
    p.add_argument("--out", required=True, type=Path, help="ONNX file to write, e.g. model.onnx")
    p.add_argument("--opset", type=int, default=18, help="ONNX opset (default: 18)")
    p.add_argument("--exporter", choices=("auto", "dynamo", "torchscript"), default="auto", help="torch exporter (default: auto = dynamo, then TorchScript)")
    p.add_argument("--atol", type=float, default=1e-4, help="max |ONNX Runtime - PyTorch| allowed on any output (default: 1e-4)")
    p.add_argument("--data", type=Path, default=None, help="PTB-XL folder for the parity check (default: the shared sample if present)")
    p.add_argument("--parity-windows", type=int, default=16, help="real windows in the parity check (default: 16)")
    p.add_argument("--int8", type=Path, help="also write an int8 dynamically quantised copy here")
    args = p.parse_args(argv)
    from engine.data.calibration import shared_ptbxl
    from trt.export import export_onnx
    from trt.ort_backend import quantize_int8

    try:
        loaded = load_checkpoint_or_preset(args.checkpoint, args.preset)
        feed = real_inputs(loaded.config, args.data or shared_ptbxl(), args.parity_windows)
        result = export_onnx(loaded.model, loaded.config, args.out, opset=args.opset, parity_inputs=feed, atol=args.atol, exporter=args.exporter)
        report = {**result.to_dict(), "parity_data": "PTB-XL" if feed is not None else "random", "checkpoint_sha256": loaded.sha256}
        if args.int8:
            report["int8"] = str(quantize_int8(args.out, args.int8))
    except InferenceError as exc:
        print(f"mirage export: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(report))
    return 0


def build_engine_main(argv: list[str]) -> int:
    """``mirage build-engine``: ONNX -> TensorRT plan (+ metadata JSON), parity-checked vs PyTorch."""
    from trt.precision import PRECISIONS

    p = argparse.ArgumentParser(
        prog="mirage build-engine",
        description=(
            "Build a strongly typed TensorRT 10 plan from the ONNX export, with one optimisation profile "
            "(--min/--opt/--max batch) and a timing cache. fp16/bf16 run GEMMs and convolutions in reduced "
            "precision and keep LayerNorm/softmax in fp32. A metadata JSON beside the plan records the ONNX "
            "hash, TensorRT version, GPU and precision; a current plan is reused, a stale one rebuilt. Needs an "
            "NVIDIA GPU and the tensorrt module (exit code 3 when they are missing)."
        ),
    )
    p.add_argument("--onnx", required=True, type=Path, help="ONNX file from 'mirage export'")
    p.add_argument("--out", required=True, type=Path, help="plan file to write, e.g. model.plan")
    p.add_argument("--precision", choices=PRECISIONS, default="fp16", help="compute precision (default: fp16)")
    p.add_argument("--min", dest="min_batch", type=int, default=1, help="smallest batch of the profile (default: 1)")
    p.add_argument("--opt", dest="opt_batch", type=int, default=32, help="batch the kernels are tuned for (default: 32)")
    p.add_argument("--max", dest="max_batch", type=int, default=128, help="largest batch of the profile (default: 128)")
    p.add_argument("--workspace-mib", type=int, default=4096, help="builder workspace limit in MiB (default: 4096)")
    p.add_argument("--timing-cache", type=Path, help="timing cache file, read if present and updated (default: <out>.cache)")
    p.add_argument("--force", action="store_true", help="rebuild even if the existing plan is current")
    p.add_argument("--checkpoint", help="checkpoint the ONNX came from, for the parity check (default: the shipped one)")
    p.add_argument("--no-parity", action="store_true", help="skip the parity check against PyTorch")
    p.add_argument("--atol", type=float, help="max |plan - torch| on probs (default by precision: " + ", ".join(f"{k} {v}" for k, v in PLAN_ATOL.items()) + ")")
    args = p.parse_args(argv)
    from engine.data.calibration import shared_ptbxl
    from trt.builder import BuildOptions, build_plan
    from trt.runner import parity_vs_torch

    try:
        options = BuildOptions(
            precision=args.precision, min_batch=args.min_batch, opt_batch=args.opt_batch, max_batch=args.max_batch,
            workspace_mib=args.workspace_mib, timing_cache=str(args.timing_cache or args.out.with_name(args.out.name + ".cache")),
        )
        plan = build_plan(args.onnx, args.out, options, force=args.force)
        report: dict[str, Any] = {"plan": str(plan), "precision": args.precision, "profile": [args.min_batch, args.opt_batch, args.max_batch]}
        if not args.no_parity:
            loaded = load_checkpoint_or_preset(args.checkpoint)
            feed = real_inputs(loaded.config, shared_ptbxl(), min(16, args.max_batch))
            if feed is None:
                from trt.export import example_inputs

                feed = example_inputs(loaded.config, batch=min(8, args.max_batch))
            atol = args.atol if args.atol is not None else PLAN_ATOL[args.precision]
            report["parity_max_abs"] = parity_vs_torch(plan, loaded.model, feed, atol=atol)
    except BackendUnavailableError as exc:
        print(f"mirage build-engine: {exc}", file=sys.stderr)
        return 3
    except InferenceError as exc:
        print(f"mirage build-engine: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(report))
    return 0


def build_int8_main(argv: list[str]) -> int:
    """``mirage build-int8``: the offline build step of the ``onnxruntime-int8-static`` backend."""
    p = argparse.ArgumentParser(
        prog="mirage build-int8",
        description=(
            "Calibrate and write the static QDQ int8 ONNX model that workers with backend onnxruntime-int8-static "
            "load (workers never calibrate). Calibration windows come from the PTB-XL sample (--data, default the "
            "shared one) or synthetic windows when it is absent; the manifest beside the model records which, and "
            "the file name carries the calibration digest. Output: $MIRAGE_CACHE_DIR (default ~/.cache/mirage/compiled)."
        ),
    )
    p.add_argument("--checkpoint", help="checkpoint file (default: the shipped engine/checkpoints/mirage-default.pt)")
    p.add_argument("--onnx", type=Path, help="quantise this fp32 ONNX file instead of the cached rewritten export")
    p.add_argument("--data", type=Path, help="PTB-XL folder to calibrate on (default: the shared sample if present)")
    args = p.parse_args(argv)
    from engine.data.calibration import calibration_inputs
    from trt.artifacts import build_int8_static

    try:
        loaded = load_checkpoint_or_preset(args.checkpoint)
        calibration, source = calibration_inputs(loaded.config, root=args.data)
        path = build_int8_static(loaded, onnx_path=args.onnx, calibration=calibration, source=source)
    except InferenceError as exc:
        print(f"mirage build-int8: {exc}", file=sys.stderr)
        return 1
    print(json.dumps({"model": str(path), "checkpoint_sha256": loaded.sha256, "calibration": source}))
    return 0


def triton_repo_main(argv: list[str]) -> int:
    """``mirage triton-repo``: write a Triton model repository from the ONNX file and/or a plan."""
    p = argparse.ArgumentParser(
        prog="mirage triton-repo",
        description=(
            "Write a Triton Inference Server model repository: mirage_onnx (onnxruntime_onnx) from --onnx and "
            "mirage_trt (tensorrt_plan) from --plan, each with config.pbtxt (named inputs/outputs, dynamic "
            "batching) and version 1. Serve with: tritonserver --model-repository DIR"
        ),
    )
    p.add_argument("--onnx", type=Path, help="ONNX file from 'mirage export'")
    p.add_argument("--plan", type=Path, help="TensorRT plan from 'mirage build-engine'")
    p.add_argument("--out", required=True, type=Path, help="repository folder to write")
    p.add_argument("--checkpoint", help="checkpoint whose config gives the tensor shapes (default: the shipped one)")
    p.add_argument("--preset", help="take shapes from this preset instead of a checkpoint")
    p.add_argument("--max-batch", type=int, default=128, help="max_batch_size (default: 128; capped at the plan profile)")
    p.add_argument("--preferred", default="8,32", help="dynamic batching preferred sizes (default: 8,32)")
    p.add_argument("--delay-us", type=int, default=2000, help="max queue delay in microseconds (default: 2000)")
    p.add_argument("--instances", type=int, default=1, help="model instances (default: 1)")
    p.add_argument("--kind", choices=("gpu", "cpu"), default="gpu", help="where the ONNX model runs (default: gpu)")
    args = p.parse_args(argv)
    from engine.config import get_preset
    from trt.triton import TritonOptions, write_repository

    try:
        cfg = get_preset(args.preset) if args.preset else load_checkpoint_or_preset(args.checkpoint).config
        preferred = tuple(int(b) for b in args.preferred.split(",") if b.strip())
        options = TritonOptions(args.max_batch, preferred, args.delay_us, args.instances, args.kind)
        written = write_repository(args.out, cfg, onnx_path=args.onnx, plan_path=args.plan, options=options)
    except (InferenceError, ValueError) as exc:
        print(f"mirage triton-repo: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({"repository": str(args.out), "models": [d.name for d in written]}))
    return 0
