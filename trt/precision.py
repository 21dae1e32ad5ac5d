"""Rewrite an fp32 ONNX graph into a mixed-precision one for a strongly typed TensorRT build.

A strongly typed TensorRT network (``NetworkDefinitionCreationFlag.STRONGLY_TYPED``) takes every
tensor's type from the graph: builder precision flags are not allowed, so reduced precision must
be written into the ONNX file. This pass does it conservatively ("cast sandwich"): only the
matrix products (``MatMul``, ``Gemm``, ``Conv``) run in fp16 or bf16; their constant weights are
stored in that type, their activation inputs are cast down and their outputs cast back to fp32.
Everything else (LayerNorm, softmax, the GELU, residual adds, the FiLM ``gamma * H + beta``, the
attention bias add) stays fp32, which is where reduced precision loses accuracy in Transformers
(NVIDIA, "Mixed precision training", Micikevicius et al. 2018; TensorRT developer guide,
"Strongly typed networks"). TensorRT fuses the casts into the neighbouring kernels.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from trt.errors import ExportError

log = logging.getLogger(__name__)

LOW_PRECISION_OPS: dict[str, tuple[str, ...]] = {
    "fp16": ("MatMul", "Gemm", "Conv"),
    # ONNX admits bfloat16 for Conv only from opset 22; the patch embedding stays fp32 below that.
    "bf16": ("MatMul", "Gemm"),
}
PRECISIONS: tuple[str, ...] = ("fp32", "tf32", "fp16", "bf16")


def _onnx_type(precision: str) -> int:
    import onnx

    if precision == "fp16":
        return onnx.TensorProto.FLOAT16
    if precision == "bf16":
        return onnx.TensorProto.BFLOAT16
    raise ExportError(f"precision={precision!r} has no reduced ONNX type; choose fp16 or bf16")


def _convert_initializer(init, to: int):
    import onnx
    from onnx import numpy_helper

    arr = numpy_helper.to_array(init).astype(np.float32)
    if to == onnx.TensorProto.FLOAT16:
        out = numpy_helper.from_array(arr.astype(np.float16), init.name)
    else:  # bf16: round to nearest even on the top 16 bits of the fp32 pattern
        bits = arr.view(np.uint32)
        rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)
        out = onnx.helper.make_tensor(init.name, onnx.TensorProto.BFLOAT16, arr.shape, rounded.tobytes(), raw=True)
    return out


def to_mixed_precision(model, precision: str, *, ops: tuple[str, ...] | None = None):
    """Return a copy of ``model`` (an ``onnx.ModelProto``) whose ``ops`` compute in ``precision``.

    Graph inputs and outputs keep fp32, so callers and the Triton config do not change.

    Raises:
        ExportError: unknown precision, or the rewritten graph fails ``onnx.checker``.
    """
    import onnx
    from onnx import helper

    to = _onnx_type(precision)
    ops = LOW_PRECISION_OPS[precision] if ops is None else ops
    model = onnx.ModelProto.FromString(model.SerializeToString())  # deep copy
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    consumers: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            consumers[name] = consumers.get(name, 0) + 1
    low_inits: dict[str, str] = {}  # fp32 initializer -> its reduced copy
    new_nodes = []
    count = 0
    for node in graph.node:
        if node.op_type not in ops or node.domain not in ("", "ai.onnx"):
            new_nodes.append(node)
            continue
        count += 1
        for idx, name in enumerate(node.input):
            if not name:
                continue
            init = inits.get(name)
            if init is not None and init.data_type == onnx.TensorProto.FLOAT:
                if name not in low_inits:
                    low = _convert_initializer(init, to)
                    low.name = f"{name}__{precision}"
                    graph.initializer.append(low)
                    low_inits[name] = low.name
                node.input[idx] = low_inits[name]
            else:
                cast_out = f"{name}__to_{precision}__{count}_{idx}"
                new_nodes.append(helper.make_node("Cast", [name], [cast_out], to=to, name=f"{cast_out}__cast"))
                node.input[idx] = cast_out
        casts_back = []
        for idx, name in enumerate(node.output):
            low_out = f"{name}__{precision}"
            node.output[idx] = low_out
            casts_back.append(helper.make_node("Cast", [low_out], [name], to=onnx.TensorProto.FLOAT, name=f"{name}__to_fp32"))
        new_nodes.append(node)
        new_nodes.extend(casts_back)
    # fp32 initializers no longer read by any node are dropped (they were only GEMM weights)
    still_used = {name for node in new_nodes for name in node.input}
    keep = [i for i in graph.initializer if i.name in still_used]
    del graph.initializer[:]
    graph.initializer.extend(keep)
    del graph.node[:]
    graph.node.extend(new_nodes)
    # value_info shapes recorded for fp32 outputs of rewritten nodes are still correct (the Cast
    # back restores the name); drop them anyway so shape inference recomputes every type.
    del graph.value_info[:]
    try:
        model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
        onnx.checker.check_model(model)
    except Exception as exc:  # noqa: BLE001
        raise ExportError(f"mixed-precision ({precision}) graph is invalid: {exc}") from exc
    log.info("mixed precision %s: %d nodes (%s) in %s, %d weights converted", precision, count, "/".join(ops), precision, len(low_inits))
    return model


def write_mixed_precision(src: str | Path, dst: str | Path, precision: str) -> Path:
    """Read ``src``, rewrite it with :func:`to_mixed_precision`, write ``dst``; returns ``dst``."""
    import onnx

    model = onnx.load(str(src))
    out = to_mixed_precision(model, precision)
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(out, str(dst))
    return dst
