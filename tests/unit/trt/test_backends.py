"""Backend selection: clear errors for unknown/unavailable backends; ORT fp32 and int8 agree with torch."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from trt.backends import BACKENDS, create, unavailable_reason
from trt.errors import BackendError, BackendUnavailableError
from trt.export import example_inputs

pytest.importorskip("engine.model", reason="engine.model (engineer A) not in the tree yet")
pytest.importorskip("engine.checkpoint", reason="engine.checkpoint (engineer A) not in the tree yet")


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    from trt.bench import random_init_checkpoint

    return random_init_checkpoint("tiny", seed=0)  # the bench test below uses the same one


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch) -> None:
    monkeypatch.setenv("MIRAGE_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "mirage-cache"))


def _torch_probs(loaded, feed):
    with torch.inference_mode():
        out = loaded.model.eval()(*(torch.from_numpy(feed[k]) for k in ("ecg", "image", "labs", "lab_mask")))
    return out.probs.numpy(), out.lead_weights.numpy()


def test_unknown_backend_lists_choices(loaded) -> None:
    with pytest.raises(BackendError, match="'onnxruntime-int8'") as err:
        create("tensorrtt", loaded)
    assert "tensorrtt" in str(err.value)


def test_unknown_option_is_named(loaded) -> None:
    with pytest.raises(BackendError, match="bogus"):
        create("onnxruntime", loaded, bogus=1)


@pytest.mark.skipif(unavailable_reason("tensorrt") is None, reason="TensorRT and CUDA are present here")
def test_tensorrt_without_it_says_what_is_missing(loaded) -> None:
    with pytest.raises(BackendUnavailableError) as err:
        create("tensorrt", loaded)
    msg = str(err.value)
    assert "tensorrt" in msg.lower() and ("module" in msg or "CUDA" in msg)
    with pytest.raises(BackendUnavailableError, match="no-such.plan"):
        create("tensorrt", loaded, plan_path="/nonexistent/no-such.plan")


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is present here")
def test_cuda_backends_say_cuda_is_missing(loaded) -> None:
    for name in ("torch-cuda", "torch-cuda-bf16"):
        with pytest.raises(BackendUnavailableError, match="CUDA"):
            create(name, loaded)
        assert "CUDA" in (unavailable_reason(name) or "")


def test_every_backend_is_described() -> None:
    assert {"onnxruntime", "onnxruntime-int8", "tensorrt", "torch-cuda", "torch-cuda-bf16"} <= set(BACKENDS)
    assert unavailable_reason("onnxruntime") is None


def test_onnxruntime_matches_torch(loaded) -> None:
    pred = create("onnxruntime", loaded, threads=1)
    feed = example_inputs(loaded.config, batch=5, seed=4)
    out = pred.predict(feed["ecg"], feed["image"], feed["labs"], feed["lab_mask"])
    probs, weights = _torch_probs(loaded, feed)
    assert out.probs.dtype == np.float32 and out.probs.shape == (5,)
    np.testing.assert_allclose(out.probs, probs, atol=1e-4)
    np.testing.assert_allclose(out.lead_weights, weights, atol=1e-4)


def test_int8_is_close_to_fp32(loaded) -> None:
    """int8 (7-bit weights, per channel; uint8 activations per tensor) stays near fp32.

    Tolerance: each quantised GEMM adds ~1% relative noise (activation step = range/255, weight
    step = range/127); through the tiny model's 3 blocks logits move a few percent, so MI
    probabilities move by well under 0.05. The AUROC cost on real data is what the bench reports.
    """
    pred = create("onnxruntime-int8", loaded, threads=1)
    feed = example_inputs(loaded.config, batch=16, seed=6)
    out = pred.predict(feed["ecg"], feed["image"], feed["labs"], feed["lab_mask"])
    probs, _ = _torch_probs(loaded, feed)
    diff = np.abs(out.probs - probs)
    assert diff.max() < 0.05
    assert diff.max() > 0.0  # it really is a different (quantised) graph


@pytest.mark.slow
def test_bench_runs_and_prints_json_last(capsys, tmp_path: Path) -> None:
    from trt.bench import bench_main

    rc = bench_main(["--preset", "tiny", "--batches", "1,2", "--seconds", "0.2", "--backends", "onnxruntime,tensorrt",
                     "--limit", "8", "--data", str(tmp_path / "absent"), "--out", str(tmp_path / "b.json"),
                     "--plot", str(tmp_path / "b.png")])
    assert rc == 0
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {"baseline_windows_per_s", "best_windows_per_s", "best_backend", "speedup", "auroc_delta"} <= set(last)
    assert last["baseline_windows_per_s"] > 0 and last["best_windows_per_s"] >= last["baseline_windows_per_s"]
    assert set(last["backends"]["onnxruntime"]["per_batch"]) == {"1", "2"}
    # batch invariance is measured per backend; fp32 ONNX Runtime is invariant, so it may serve the stream
    assert last["backends"]["onnxruntime"]["batch_invariance_max_abs"] <= 1e-4
    assert last["backends"]["onnxruntime"]["batch_invariant"] is True
    assert last["best_batch_invariant_backend"] in {"torch", "onnxruntime"}
    if unavailable_reason("tensorrt"):
        assert "skipped" in last["backends"]["tensorrt"]
    assert json.loads((tmp_path / "b.json").read_text())["best_backend"] == last["best_backend"]
    assert (tmp_path / "b.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_gpu_bench_arithmetic_on_cpu(loaded) -> None:
    """The roofline report: FLOPs counted, matmul rate measured, throughput below the ceiling."""
    from trt.gpu_bench import model_flops, run

    flops = model_flops(loaded.model, loaded.config)
    cfg = loaded.config
    # at least the patch embedding: 196 patches x (P*P -> D) multiply-adds
    assert flops >= 2 * cfg.num_patches * cfg.patch_size**2 * cfg.embed_dim
    report = run(loaded, device="cpu", batches=[2], seconds=0.2, backends=["torch"])
    row = report["backends"]["torch"]["2"]
    assert report["gflops_per_window"] == round(flops / 1e9, 4)
    assert report["matmul_tflops"]["fp32"] > 0
    assert 0 < row["fraction_of_ceiling"] < 1


@pytest.mark.slow
def test_int8_auroc_change_on_ptbxl_within_budget(ptbxl_dir: Path, shipped_checkpoint) -> None:
    """The shipped checkpoint's int8 backend keeps AUROC within 0.005 of fp32 on the PTB-XL sample."""
    from engine.data.calibration import eval_inputs
    from trt.backends import make_predictor
    from trt.bench import all_probs, auroc

    shipped = shipped_checkpoint
    inputs, labels, _ = eval_inputs(shipped.config, ptbxl=ptbxl_dir, limit=400)
    fp32 = all_probs(make_predictor("torch", shipped), inputs)
    int8 = all_probs(create("onnxruntime-int8", shipped), inputs)
    assert abs(auroc(int8, labels) - auroc(fp32, labels)) <= 0.005
