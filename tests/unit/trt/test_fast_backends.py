"""onnxruntime-opt (rewritten conv stem) and onnxruntime-int8-static (calibrated QDQ int8):
parity with torch, batch invariance, clear errors, and the bench's stream eligibility rule."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from trt.backends import create
from trt.errors import BackendError, ExportError
from trt.export import INPUT_NAMES, example_inputs

pytest.importorskip("engine.model", reason="engine.model not in the tree")


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch) -> None:
    monkeypatch.setenv("MIRAGE_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "mirage-cache-fast"))


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    """A random-init tiny model *with* the conv stem (the shipped checkpoint has one)."""
    from engine.checkpoint import load_checkpoint, save_checkpoint
    from engine.config import get_preset
    from engine.model import Mirage

    cfg = dataclasses.replace(get_preset("tiny"), conv_stem=True)
    torch.manual_seed(3)
    model = Mirage(cfg).eval()
    with torch.no_grad():  # non-trivial stem and biases, so a wrong rewrite shows
        for p in model.ecg.stem.parameters():
            p.add_(0.1 * torch.randn_like(p))
    path = tmp_path_factory.mktemp("ckpt") / "tiny-stem.pt"
    save_checkpoint(path, model, cfg, threshold=0.5, metrics={})
    return load_checkpoint(path)


def _feed(cfg, batch: int, seed: int) -> dict[str, np.ndarray]:
    return example_inputs(cfg, batch=batch, seed=seed)


def _torch(model, feed):
    with torch.inference_mode():
        out = model.eval()(*(torch.from_numpy(feed[k]) for k in INPUT_NAMES))
    return out


def _predict(pred, feed, sl=slice(None)):
    return pred.predict(*(feed[k][sl] for k in INPUT_NAMES))


def test_rewritten_module_computes_the_same_function(loaded) -> None:
    from engine.model.graphormer import ConvStem
    from trt.rewrite import ConvStem2d, fast_export_module

    fast, done = fast_export_module(loaded.model)
    assert done == ["ecg.stem: Conv1d stem -> 2-D NCHWc convolutions"]
    assert isinstance(fast.ecg.stem, ConvStem2d)
    assert isinstance(loaded.model.ecg.stem, ConvStem)  # the caller's module is untouched
    feed = _feed(loaded.config, 4, seed=1)
    a, b = _torch(loaded.model, feed), _torch(fast, feed)
    for name in ("logits", "probs", "lead_weights", "z_ts"):
        np.testing.assert_allclose(getattr(b, name).numpy(), getattr(a, name).numpy(), atol=1e-5, err_msg=name)
    # The stem itself, alone: same output to float rounding (it is not the identity).
    x = torch.from_numpy(feed["ecg"])
    with torch.inference_mode():
        ref, got = loaded.model.ecg.stem(x), fast.ecg.stem(x)
    assert float((ref - x).abs().max()) > 1e-3
    assert float((got - ref).abs().max()) < 1e-5


def test_rewrite_names_a_layer_it_does_not_know() -> None:
    from trt.rewrite import ConvStem2d

    stem = SimpleNamespace(net=nn.Sequential(nn.Conv1d(1, 4, 9, padding=4), nn.BatchNorm1d(4), nn.Conv1d(4, 1, 9, padding=4)))
    with pytest.raises(ExportError, match="layer 1 is BatchNorm1d"):
        ConvStem2d(stem)
    strided = SimpleNamespace(net=nn.Sequential(nn.Conv1d(1, 4, 9, padding=4, stride=2), nn.Conv1d(4, 1, 9, padding=4)))
    with pytest.raises(ExportError, match="stride-1"):
        ConvStem2d(strided)


def test_onnxruntime_opt_matches_torch_and_has_2d_convs(loaded) -> None:
    import onnx

    pred = create("onnxruntime-opt", loaded, threads=1)
    feed = _feed(loaded.config, 5, seed=4)
    out = _predict(pred, feed)
    ref = _torch(loaded.model, feed)
    np.testing.assert_allclose(out.probs, ref.probs.numpy(), atol=1e-4)
    np.testing.assert_allclose(out.lead_weights, ref.lead_weights.numpy(), atol=1e-4)
    graph = onnx.load(str(pred.path)).graph
    inits = {i.name: i for i in graph.initializer}
    conv_ranks = [len(inits[n.input[1]].dims) for n in graph.node if n.op_type == "Conv"]
    assert len(conv_ranks) == 4 and set(conv_ranks) == {4}  # 3 stem convs + patch embedding, all 2-D


def test_int8_static_is_batch_invariant_and_close_to_torch(loaded) -> None:
    import onnx

    calibration = SimpleNamespace(**_feed(loaded.config, 24, seed=7))
    pred = create("onnxruntime-int8-static", loaded, threads=1, calibration=calibration)
    feed = _feed(loaded.config, 8, seed=9)
    together = _predict(pred, feed).probs
    alone = np.concatenate([_predict(pred, feed, slice(i, i + 1)).probs for i in range(8)])
    assert np.max(np.abs(together - alone)) <= 1e-6  # fixed scales: a window never sees its batch-mates
    # Batch-mates that are very different (10x the ECG amplitude) change nothing either.
    loud = {k: v.copy() for k, v in feed.items()}
    loud["ecg"][1:] *= 10.0
    assert abs(float(_predict(pred, loud).probs[0]) - float(together[0])) <= 1e-6
    ref = _torch(loaded.model, feed).probs.numpy()
    diff = np.abs(together - ref)
    assert diff.max() < 0.05 and diff.max() > 0.0  # a quantised graph, near fp32
    ops = {n.op_type for n in onnx.load(str(pred.path)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops


def test_int8_static_calibration_changes_the_file(loaded) -> None:
    a = create("onnxruntime-int8-static", loaded, threads=1, calibration=SimpleNamespace(**_feed(loaded.config, 8, seed=1)))
    b = create("onnxruntime-int8-static", loaded, threads=1, calibration=SimpleNamespace(**_feed(loaded.config, 8, seed=2)))
    assert a.path != b.path and a.path.is_file() and b.path.is_file()


def test_int8_static_is_built_offline_and_only_loaded_by_a_server(loaded, tmp_path, monkeypatch) -> None:
    """Without a build the factory refuses and names the command; after one it loads exactly that file."""
    from trt.artifacts import build_int8_static
    from trt.errors import BackendUnavailableError

    monkeypatch.setenv("MIRAGE_CACHE_DIR", str(tmp_path))
    with pytest.raises(BackendUnavailableError, match="mirage build-int8"):
        create("onnxruntime-int8-static", loaded)
    built = build_int8_static(loaded, calibration=SimpleNamespace(**_feed(loaded.config, 8, seed=4)), source="test feed")
    served = create("onnxruntime-int8-static", loaded, threads=1)
    assert served.path == built
    # A second build with other calibration data replaces what servers load, under a new name.
    rebuilt = build_int8_static(loaded, calibration=SimpleNamespace(**_feed(loaded.config, 8, seed=5)), source="test feed")
    assert rebuilt != built and create("onnxruntime-int8-static", loaded, threads=1).path == rebuilt


def test_int8_static_clear_errors(loaded) -> None:
    empty = SimpleNamespace(**{k: v[:0] for k, v in _feed(loaded.config, 2, seed=0).items()})
    with pytest.raises(BackendError, match="at least one window; got 0"):
        create("onnxruntime-int8-static", loaded, calibration=empty)
    with pytest.raises(BackendError, match=r"does not take options \['calibration'\]"):
        create("onnxruntime-opt", loaded, calibration=empty)
    with pytest.raises(BackendError, match=r"\['bogus'\]"):
        create("onnxruntime-int8-static", loaded, bogus=1)


def test_summary_keeps_batch_variant_backends_out_of_the_stream_choice() -> None:
    from trt.bench import BackendResult, summary

    def res(name: str, wps: float, inv: float, delta: float = 0.0) -> BackendResult:
        return BackendResult(name, auroc=0.7 + delta, auroc_delta=delta, max_prob_diff=0.0,
                             per_batch={8: {"windows_per_s": wps}}, batch_invariance=inv)

    out = summary([res("torch", 100.0, 1e-7), res("fast-but-variant", 300.0, 6e-3), res("static", 250.0, 0.0),
                   res("inaccurate", 400.0, 0.0, delta=-0.01)], max_auroc_change=0.005)
    assert out["best_backend"] == "fast-but-variant" and out["best_batch_invariant"] is False
    assert out["best_batch_invariant_backend"] == "static"
    assert out["best_batch_invariant_speedup"] == 2.5
    out = summary([res("torch", 100.0, 1e-7), res("fast-but-variant", 300.0, 6e-3)], max_auroc_change=0.005)
    assert out["best_batch_invariant_backend"] == "torch" and out["best_batch_invariant_speedup"] == 1.0


@pytest.mark.slow
def test_shipped_checkpoint_fast_backends_on_ptbxl(ptbxl_dir: Path, shipped_checkpoint) -> None:
    """Shipped checkpoint, 48 PTB-XL windows: opt within 1e-4 of torch; static int8 batch-invariant, near torch."""
    from engine.data.calibration import eval_inputs
    from trt.backends import make_predictor
    from trt.bench import all_probs, batch_invariance

    shipped = shipped_checkpoint
    inputs, _, _ = eval_inputs(shipped.config, ptbxl=ptbxl_dir, limit=48)
    base = all_probs(make_predictor("torch", shipped), inputs)
    opt = create("onnxruntime-opt", shipped, threads=1)
    assert np.max(np.abs(all_probs(opt, inputs) - base)) <= 1e-4
    static = create("onnxruntime-int8-static", shipped, threads=1,
                    calibration=SimpleNamespace(**{k: getattr(inputs, k)[::4] for k in INPUT_NAMES}))
    assert batch_invariance(static, inputs) <= 1e-6
    assert np.max(np.abs(all_probs(static, inputs) - base)) < 0.05
