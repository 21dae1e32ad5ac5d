"""ONNX export: checked graph, named I/O, dynamic batch, ORT parity, and the spatial bias and FiLM survive."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from engine.config import get_preset
from trt.errors import ExportError
from trt.export import INPUT_NAMES, OUTPUT_NAMES, check_onnx, example_inputs, export_onnx, manual_attention, onnx_outputs, torch_outputs

Mirage = pytest.importorskip("engine.model", reason="engine.model (engineer A) not in the tree yet").Mirage

CFG = get_preset("tiny")


def _spatial_bias(model: torch.nn.Module) -> torch.nn.Parameter:
    """The Graphormer spatial bias: the one parameter shaped (heads, 13, 13) (12 leads + CLS)."""
    found = [p for p in model.parameters() if tuple(p.shape[-3:]) == (CFG.num_heads, CFG.n_leads + 1, CFG.n_leads + 1)]
    assert len(found) == 1, f"expected one spatial bias parameter, found {len(found)}"
    return found[0]


def _model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = Mirage(CFG).eval()
    with torch.no_grad():
        # Large enough that an export which dropped the bias would miss parity by far.
        _spatial_bias(model).normal_(0.0, 2.0)
    return model


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[torch.nn.Module, Path]:
    model = _model()
    path = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    result = export_onnx(model, CFG, path)
    assert result.exporter in ("dynamo", "torchscript")
    assert max(result.parity.values()) <= 1e-4
    return model, path


def test_graph_names_and_dynamic_batch(exported) -> None:
    import onnx

    _, path = exported
    check_onnx(path)  # raises on failure
    graph = onnx.load(str(path)).graph
    assert [i.name for i in graph.input] == list(INPUT_NAMES)
    assert [o.name for o in graph.output] == list(OUTPUT_NAMES)
    assert all(v.type.tensor_type.shape.dim[0].dim_param for v in (*graph.input, *graph.output))


@pytest.mark.parametrize("batch", [1, 7])
def test_parity_at_other_batch_sizes(exported, batch: int) -> None:
    model, path = exported
    feed = example_inputs(CFG, batch=batch, seed=10 + batch)
    ref, got = torch_outputs(model, feed), onnx_outputs(path, feed)
    for name in OUTPUT_NAMES:
        assert got[name].shape == ref[name].shape
        np.testing.assert_allclose(got[name], ref[name], atol=1e-4, rtol=0)


def test_parity_on_real_ptbxl_windows(exported, ptbxl_dir: Path) -> None:
    """Real windows through engine.pipeline.model_inputs (conditioned ECG + rendered image)."""
    from trt.cli import real_inputs
    from trt.export import check_parity

    model, path = exported
    feed = real_inputs(CFG, ptbxl_dir, 6)
    assert feed["ecg"].shape == (6, 12, CFG.T) and feed["image"].shape == (6, 1, 224, 224)
    worst = check_parity(model, path, feed, atol=1e-4)
    assert set(worst) == set(OUTPUT_NAMES)


def test_film_is_live_in_the_graph(exported) -> None:
    """Labs present vs all missing change the ONNX output, exactly as in torch; all-missing = identity."""
    model, path = exported
    with_labs = example_inputs(CFG, batch=4, seed=3)
    with_labs["labs"] = np.where(with_labs["lab_mask"] > 0, 3.0, 0.0).astype(np.float32)
    without = {**with_labs, "labs": np.zeros_like(with_labs["labs"]), "lab_mask": np.zeros_like(with_labs["lab_mask"])}
    a, b = onnx_outputs(path, with_labs), onnx_outputs(path, without)
    assert np.max(np.abs(a["logits"] - b["logits"])) > 1e-3
    np.testing.assert_allclose(b["logits"], torch_outputs(model, without)["logits"], atol=1e-4)


def test_spatial_bias_survives_export(exported, tmp_path: Path) -> None:
    """The spatial bias is a live weight of the graph: perturbing it in the ONNX file changes the
    output exactly as perturbing it in torch does (found by value, wherever the exporter put it)."""
    import onnx
    from onnx import numpy_helper

    model, path = exported
    bias = _spatial_bias(model).detach().numpy()
    proto = onnx.load(str(path))
    hits = [i for i in proto.graph.initializer if numpy_helper.to_array(i).size == bias.size
            and np.array_equal(numpy_helper.to_array(i).reshape(-1), bias.reshape(-1))]
    assert len(hits) == 1, f"spatial bias found {len(hits)} times among the ONNX initializers"
    delta = np.random.default_rng(0).normal(0.0, 3.0, bias.shape).astype(np.float32)
    hits[0].CopyFrom(numpy_helper.from_array((bias + delta).reshape(numpy_helper.to_array(hits[0]).shape), hits[0].name))
    path2 = tmp_path / "perturbed.onnx"
    onnx.save(proto, str(path2))
    perturbed = _model()
    with torch.no_grad():
        _spatial_bias(perturbed).add_(torch.from_numpy(delta))
    feed = example_inputs(CFG, batch=4, seed=5)
    a, b = onnx_outputs(path, feed), onnx_outputs(path2, feed)
    assert np.max(np.abs(a["lead_weights"] - b["lead_weights"])) > 1e-3
    np.testing.assert_allclose(b["lead_weights"], torch_outputs(perturbed, feed)["lead_weights"], atol=1e-4)
    np.testing.assert_allclose(b["logits"], torch_outputs(perturbed, feed)["logits"], atol=1e-4)


def test_film_weights_are_live_in_the_graph(exported, tmp_path: Path) -> None:
    """Perturbing a FiLM generator weight in the ONNX file changes the output exactly as in torch."""
    import onnx
    from onnx import numpy_helper

    model, path = exported
    name, param = next((n, p) for n, p in model.named_parameters() if n.startswith("film_img") and n.endswith("fc2.weight"))
    w = param.detach().numpy()
    proto = onnx.load(str(path))
    hits = []
    for init in proto.graph.initializer:
        arr = numpy_helper.to_array(init)
        if arr.shape == w.shape and np.array_equal(arr, w):
            hits.append((init, False))
        elif arr.shape == w.T.shape and np.array_equal(arr, w.T):  # Linear as MatMul stores W^T
            hits.append((init, True))
    assert len(hits) == 1, f"{name} found {len(hits)} times among the ONNX initializers"
    delta = np.random.default_rng(1).normal(0.0, 0.5, w.shape).astype(np.float32)
    init, transposed = hits[0]
    init.CopyFrom(numpy_helper.from_array((w + delta).T.copy() if transposed else w + delta, init.name))
    path2 = tmp_path / "film.onnx"
    onnx.save(proto, str(path2))
    perturbed = _model()
    with torch.no_grad():
        dict(perturbed.named_parameters())[name].add_(torch.from_numpy(delta))
    feed = example_inputs(CFG, batch=4, seed=8)  # half the labs present: FiLM is not the identity
    a, b = onnx_outputs(path, feed), onnx_outputs(path2, feed)
    assert np.max(np.abs(a["logits"] - b["logits"])) > 1e-4
    np.testing.assert_allclose(b["logits"], torch_outputs(perturbed, feed)["logits"], atol=1e-4)


def test_manual_attention_is_restored_after_export() -> None:
    model = _model()
    flags_before = [(m, m.fused_attn) for m in model.modules() if isinstance(getattr(m, "fused_attn", None), bool)]
    with manual_attention(model) as n:
        assert n == len(flags_before)
        assert all(m.fused_attn is False for m, _ in flags_before)
    assert all(m.fused_attn == v for m, v in flags_before)


def test_check_onnx_names_wrong_inputs(tmp_path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])
    model = helper.make_model(helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y]), opset_imports=[helper.make_opsetid("", 18)])
    path = tmp_path / "wrong.onnx"
    onnx.save(model, str(path))
    with pytest.raises(ExportError, match=r"inputs are \['x'\]"):
        check_onnx(path)


def test_mixed_precision_graph_keeps_norms_fp32(exported, tmp_path: Path) -> None:
    """fp16 rewrite: GEMMs in fp16, LayerNorm/Softmax fp32, runs in ORT close to fp32; bf16 is valid ONNX."""
    import onnx

    from trt.precision import write_mixed_precision

    _, path = exported
    feed = example_inputs(CFG, batch=3, seed=7)
    ref = onnx_outputs(path, feed)
    fp16 = write_mixed_precision(path, tmp_path / "m.fp16.onnx", "fp16")
    got = onnx_outputs(fp16, feed)
    # fp16 GEMM inputs carry ~5e-4 relative rounding; through a few tiny blocks probs move < 1e-2.
    assert np.max(np.abs(got["probs"] - ref["probs"])) < 1e-2
    bf16 = onnx.load(str(write_mixed_precision(path, tmp_path / "m.bf16.onnx", "bf16")))
    types = {i.data_type for i in bf16.graph.initializer}
    assert onnx.TensorProto.BFLOAT16 in types
    graph = onnx.shape_inference.infer_shapes(bf16).graph
    elem = {v.name: v.type.tensor_type.elem_type for v in (*graph.value_info, *graph.input, *graph.output)}
    for node in graph.node:
        if node.op_type in ("LayerNormalization", "Softmax"):
            assert elem.get(node.output[0], onnx.TensorProto.FLOAT) == onnx.TensorProto.FLOAT, node.name
    assert all(o.type.tensor_type.elem_type == onnx.TensorProto.FLOAT for o in graph.output)


@pytest.mark.slow
def test_shipped_checkpoint_exports_with_parity_on_ptbxl(ptbxl_dir: Path, tmp_path: Path, shipped_checkpoint) -> None:
    from trt.cli import real_inputs

    loaded = shipped_checkpoint
    feed = real_inputs(loaded.config, ptbxl_dir, 8)
    result = export_onnx(loaded.model, loaded.config, tmp_path / "shipped.onnx", parity_inputs=feed)
    assert max(result.parity.values()) <= 1e-4
