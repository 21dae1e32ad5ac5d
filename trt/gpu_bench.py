"""Throughput per backend and batch on an NVIDIA machine, next to the ceiling the hardware allows.

``python -m trt.gpu_bench [--checkpoint CKPT] [--batches 1,8,32,128,512]``

The ceiling is roofline-style: ``windows/s <= matmul rate / FLOPs per window``, where FLOPs per
window are counted by ``torch.utils.flop_counter.FlopCounterMode`` on one forward pass (matmuls
and convolutions, the work that dominates a Transformer) and the matmul rate is measured on this
device with large square matmuls in each precision (not the datasheet's peak). The ratio
``windows_per_s / ceiling`` says how much of the device a backend uses; small batches are bound by
launch overhead (what CUDA graphs and TensorRT remove), large ones by the GEMMs.

Runs on the CPU too (``--device cpu``), which is how its arithmetic is tested here; on a GPU it
times ``torch-cuda``, ``torch-cuda-bf16``, ``torch-cuda-fp16`` and ``tensorrt`` where present.
Inputs are synthetic: throughput does not depend on the values.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from typing import Any

import numpy as np
import torch

from trt.export import INPUT_NAMES, example_inputs

log = logging.getLogger(__name__)

GPU_BACKENDS: tuple[str, ...] = ("torch-cuda", "torch-cuda-bf16", "torch-cuda-fp16", "tensorrt")
CPU_BACKENDS: tuple[str, ...] = ("torch", "onnxruntime", "onnxruntime-int8")


def model_flops(model: torch.nn.Module, cfg: Any) -> int:
    """FLOPs of one window's forward pass (counted at batch 1; a multiply-add is 2 FLOPs)."""
    from torch.utils.flop_counter import FlopCounterMode

    feed = example_inputs(cfg, batch=1)
    device = next(model.parameters()).device
    with FlopCounterMode(display=False) as counter:  # grad mode on: its module tracker hooks need autograd
        model(*(torch.from_numpy(feed[n]).to(device) for n in INPUT_NAMES))
    return int(counter.get_total_flops())


def matmul_rate(device: str, dtype: torch.dtype, *, n: int = 4096, seconds: float = 1.0) -> float:
    """Measured FLOP/s of an ``n x n`` matmul on ``device`` in ``dtype``."""
    dev = torch.device(device)
    if dev.type == "cpu":
        n = min(n, 1024)
    a = torch.randn(n, n, device=dev, dtype=dtype)
    b = torch.randn(n, n, device=dev, dtype=dtype)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    with torch.inference_mode():
        a @ b
        sync()
        iters, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            a @ b
            iters += 1
        sync()
        elapsed = time.perf_counter() - t0
    return 2.0 * n**3 * iters / elapsed


def _time(predictor: Any, feed: dict[str, np.ndarray], seconds: float) -> float:
    args = [feed[n] for n in INPUT_NAMES]
    for _ in range(3):
        predictor.predict(*args)
    calls, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds or calls < 3:
        predictor.predict(*args)  # returns host numpy arrays: includes the device sync and copies
        calls += 1
    return calls * len(args[0]) / (time.perf_counter() - t0)


def run(loaded: Any, *, device: str, batches: list[int], seconds: float, backends: list[str]) -> dict[str, Any]:
    """Measure and return the report (also used by the unit test on the CPU)."""
    from trt.backends import create, make_predictor, unavailable_reason

    cfg = loaded.config
    flops = model_flops(loaded.model, cfg)
    rates = {"fp32": matmul_rate(device, torch.float32)}
    if torch.device(device).type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        rates["tf32"] = matmul_rate(device, torch.float32)
        rates["bf16"] = matmul_rate(device, torch.bfloat16)
        rates["fp16"] = matmul_rate(device, torch.float16)
    precision_of = {"torch-cuda": "tf32", "torch-cuda-bf16": "bf16", "torch-cuda-fp16": "fp16", "tensorrt": "fp16"}
    report: dict[str, Any] = {
        "device": torch.cuda.get_device_name() if torch.device(device).type == "cuda" else "cpu",
        "model": cfg.name,
        "gflops_per_window": round(flops / 1e9, 4),
        "matmul_tflops": {k: round(v / 1e12, 3) for k, v in rates.items()},
        "backends": {},
    }
    for name in backends:
        reason = None if name == "torch" else unavailable_reason(name)
        if reason:
            report["backends"][name] = {"skipped": reason}
            continue
        try:
            pred = make_predictor("torch", loaded.path) if name == "torch" else create(name, loaded, build=True)
        except Exception as exc:  # noqa: BLE001 - report and go on
            report["backends"][name] = {"skipped": f"{type(exc).__name__}: {exc}"[:300]}
            continue
        rate = rates.get(precision_of.get(name, "fp32"), rates["fp32"])
        ceiling = rate / flops
        rows = {}
        for batch in batches:
            wps = _time(pred, example_inputs(cfg, batch=batch), seconds)
            rows[str(batch)] = {"windows_per_s": round(wps, 1), "ceiling_windows_per_s": round(ceiling, 1), "fraction_of_ceiling": round(wps / ceiling, 4)}
        report["backends"][name] = rows
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m trt.gpu_bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", help="checkpoint (default: the shipped one)")
    p.add_argument("--preset", help="random-init model of this preset instead of a checkpoint")
    p.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    p.add_argument("--batches", default="1,8,32,128,512", help="comma-separated batch sizes")
    p.add_argument("--seconds", type=float, default=3.0, help="timing seconds per backend and batch")
    p.add_argument("--backends", help="comma-separated (default: the GPU backends, or the CPU ones with --device cpu)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from trt.bench import load_checkpoint_or_preset

    loaded = load_checkpoint_or_preset(args.checkpoint, args.preset)
    if args.device.startswith("cuda"):
        loaded.model.to(args.device)
    backends = args.backends.split(",") if args.backends else list(GPU_BACKENDS if args.device.startswith("cuda") else CPU_BACKENDS)
    report = run(loaded, device=args.device, batches=[int(b) for b in args.batches.split(",")], seconds=args.seconds, backends=backends)
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
