"""TensorRT plan build and runner (marked trt/gpu; skipped with the reason where absent) + pure parts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from trt.builder import BuildOptions, metadata_path, stale_reason
from trt.errors import PlanError


def _tensorrt_skip_reason() -> str | None:
    from trt.backends import unavailable_reason

    return unavailable_reason("tensorrt")


# ---- pure parts: run everywhere ----------------------------------------------------------------
def test_build_options_are_validated() -> None:
    with pytest.raises(PlanError, match="min=8 opt=4 max=16"):
        BuildOptions(min_batch=8, opt_batch=4, max_batch=16)
    with pytest.raises(PlanError, match="'int4'"):
        BuildOptions(precision="int4")


def test_stale_plan_is_detected(tmp_path: Path) -> None:
    plan = tmp_path / "m.plan"
    expected = {"onnx_sha256": "abc", "tensorrt_version": "10.9.0", "gpu": "H100", "compute_capability": "9.0", "precision": "fp16",
                "profile": {"min": 1, "opt": 32, "max": 128}}
    assert "no plan" in stale_reason(plan, expected)
    plan.write_bytes(b"x")
    assert "no metadata" in stale_reason(plan, expected)
    metadata_path(plan).write_text(json.dumps({**expected, "built_at": "t"}))
    assert stale_reason(plan, expected) is None
    assert "onnx_sha256 changed" in stale_reason(plan, {**expected, "onnx_sha256": "def"})
    assert "tensorrt_version changed" in stale_reason(plan, {**expected, "tensorrt_version": "10.10.0"})
    assert "gpu changed" in stale_reason(plan, {**expected, "gpu": "A100"})


def test_build_engine_cli_says_what_is_missing(tmp_path: Path, capsys) -> None:
    from trt.cli import build_engine_main

    if _tensorrt_skip_reason() is None:
        pytest.skip("TensorRT and CUDA are present here")
    onnx_file = tmp_path / "m.onnx"
    onnx_file.write_bytes(b"not really onnx")
    assert build_engine_main(["--onnx", str(onnx_file), "--out", str(tmp_path / "m.plan")]) == 3
    err = capsys.readouterr().err
    assert "tensorrt" in err.lower() or "CUDA" in err


# ---- real TensorRT: NVIDIA machines only ------------------------------------------------------
@pytest.mark.trt
@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp32", "fp16", "bf16"])
def test_plan_builds_matches_torch_and_is_reused(tmp_path: Path, precision: str) -> None:
    reason = _tensorrt_skip_reason()
    if reason:
        pytest.skip(f"TensorRT test needs TensorRT 10+ and a CUDA GPU: {reason}")
    from trt.bench import random_init_checkpoint
    from trt.builder import build_plan
    from trt.cli import PLAN_ATOL
    from trt.export import example_inputs, export_onnx
    from trt.runner import TensorRTRunner, parity_vs_torch

    loaded = random_init_checkpoint("tiny")
    onnx_file = tmp_path / "tiny.onnx"
    export_onnx(loaded.model, loaded.config, onnx_file)
    opts = BuildOptions(precision=precision, min_batch=1, opt_batch=4, max_batch=8, timing_cache=str(tmp_path / "cache"))
    plan = build_plan(onnx_file, tmp_path / "tiny.plan", opts)
    meta = json.loads(metadata_path(plan).read_text())
    assert meta["precision"] == precision and meta["profile"] == {"min": 1, "opt": 4, "max": 8}
    mtime = plan.stat().st_mtime_ns
    assert build_plan(onnx_file, plan, opts).stat().st_mtime_ns == mtime  # current plan reused
    feed = example_inputs(loaded.config, batch=5)
    parity_vs_torch(plan, loaded.model, feed, atol=PLAN_ATOL[precision])
    with TensorRTRunner(plan, cuda_graphs=True) as graphed, TensorRTRunner(plan) as plain:
        a = [graphed.infer(feed)["probs"] for _ in range(3)]
        b = plain.infer(feed)["probs"]
    for x in a:
        np.testing.assert_allclose(x, b, atol=1e-6)
    with pytest.raises(PlanError, match="outside the plan's profile"):
        with TensorRTRunner(plan) as runner:
            runner.infer(example_inputs(loaded.config, batch=9))
