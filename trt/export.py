"""Export MIRAGE to ONNX with a dynamic batch axis, and prove the graph is faithful.

The graph has four named inputs ``ecg (B,12,T)``, ``image (B,1,224,224)``, ``labs (B,D_lab)``,
``lab_mask (B,D_lab)`` and three named outputs ``probs (B,)``, ``lead_weights (B,12)``,
``logits (B,2)``; ``B`` is symbolic (``batch``) so one file serves every batch size (ONNX IR,
opset 18; ONNX Runtime and TensorRT 10 both read it).

Faithfulness is checked, not assumed: ``onnx.checker`` (full check with shape inference), the
input/output names and the symbolic batch axis, and ONNX Runtime parity against PyTorch at two
batch sizes (fp32, max |difference| <= 1e-4 by default). The Graphormer spatial bias is an
additive float mask; the torch.export based exporter cannot decompose
``scaled_dot_product_attention`` with a float mask under a dynamic batch, so export switches every
attention layer to its manual ``softmax(QK^T/sqrt(d) + B) V`` path (timm's ``fused_attn`` flag,
kept for exactly this). If the dynamo exporter still fails, the TorchScript exporter is used and
the report says which one produced the file.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np
import torch
from torch import nn

from engine.config import MirageConfig
from trt.errors import ExportError, ParityError

log = logging.getLogger(__name__)

INPUT_NAMES: tuple[str, ...] = ("ecg", "image", "labs", "lab_mask")
OUTPUT_NAMES: tuple[str, ...] = ("probs", "lead_weights", "logits")
BATCH_DIM = "batch"
DEFAULT_OPSET = 18
# Attribute names attention modules use to choose SDPA over the manual path (timm: fused_attn).
_FUSED_FLAGS: tuple[str, ...] = ("fused_attn", "use_sdpa", "use_fused_attn")


class ExportWrapper(nn.Module):
    """Adapts ``Mirage.forward -> MirageOutput`` to the tuple of tensors ONNX needs."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, ecg: torch.Tensor, image: torch.Tensor, labs: torch.Tensor, lab_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        out = self.model(ecg, image, labs, lab_mask)
        return out.probs, out.lead_weights, out.logits


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_onnx` wrote and how it was checked."""

    path: Path
    sha256: str
    opset: int
    exporter: str  # "dynamo" or "torchscript"
    seconds: float
    parity: dict[str, float] = field(default_factory=dict)  # output name -> max |onnx - torch|

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "sha256": self.sha256,
            "opset": self.opset,
            "exporter": self.exporter,
            "seconds": round(self.seconds, 3),
            "parity_max_abs": self.parity,
        }


def example_inputs(cfg: MirageConfig, batch: int = 2, seed: int = 0) -> dict[str, np.ndarray]:
    """Plausibly scaled random inputs of the right shapes (used only to trace the graph).

    Half the lab features are present so FiLM is not the identity while tracing.
    """
    rng = np.random.default_rng(seed)
    mask = np.zeros((batch, cfg.lab_dim), dtype=np.float32)
    mask[:, ::2] = 1.0
    return {
        "ecg": (0.3 * rng.standard_normal((batch, cfg.n_leads, cfg.T))).astype(np.float32),
        "image": rng.random((batch, cfg.in_chans, cfg.image_size, cfg.image_size), dtype=np.float32),
        "labs": (rng.standard_normal((batch, cfg.lab_dim)) * mask).astype(np.float32),
        "lab_mask": mask,
    }


@contextlib.contextmanager
def manual_attention(model: nn.Module) -> Iterator[int]:
    """Switch every attention layer to its manual path while the block runs; yields how many."""
    changed: list[tuple[nn.Module, str, Any]] = []
    for module in model.modules():
        for flag in _FUSED_FLAGS:
            if isinstance(getattr(module, flag, None), bool):
                changed.append((module, flag, getattr(module, flag)))
                setattr(module, flag, False)
    try:
        yield len(changed)
    finally:
        for module, flag, value in changed:
            setattr(module, flag, value)


def torch_outputs(model: nn.Module, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The reference: PyTorch outputs by ONNX output name (inference mode, float32 numpy)."""
    with torch.inference_mode():
        out = ExportWrapper(model)(*(torch.from_numpy(np.ascontiguousarray(inputs[n])) for n in INPUT_NAMES))
    return {name: t.float().cpu().numpy() for name, t in zip(OUTPUT_NAMES, out)}


def _export_dynamo(wrapper: nn.Module, args: tuple[torch.Tensor, ...], opset: int) -> bytes:
    batch = torch.export.Dim(BATCH_DIM, min=1, max=65536)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            wrapper,
            args,
            None,
            input_names=list(INPUT_NAMES),
            output_names=list(OUTPUT_NAMES),
            dynamic_shapes={name: {0: batch} for name in INPUT_NAMES},
            opset_version=opset,
            dynamo=True,
            verbose=False,
        )
    return program.model_proto.SerializeToString()


def _export_torchscript(wrapper: nn.Module, args: tuple[torch.Tensor, ...], opset: int, tmp: Path) -> bytes:
    axes = {name: {0: BATCH_DIM} for name in (*INPUT_NAMES, *OUTPUT_NAMES)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            wrapper,
            args,
            str(tmp),
            input_names=list(INPUT_NAMES),
            output_names=list(OUTPUT_NAMES),
            dynamic_axes=axes,
            opset_version=opset,
            dynamo=False,
        )
    return tmp.read_bytes()


def export_onnx(
    model: nn.Module,
    cfg: MirageConfig,
    path: str | Path,
    *,
    opset: int = DEFAULT_OPSET,
    parity_inputs: Mapping[str, np.ndarray] | None = None,
    atol: float = 1e-4,
    exporter: str = "auto",
) -> ExportResult:
    """Export ``model`` to ``path`` and check it (see the module docstring).

    Args:
        model: an ``engine.model.Mirage`` (or anything with its forward signature and output fields).
        cfg: its configuration (shapes of the example inputs).
        path: where to write the ``.onnx`` file (one file, weights inside).
        opset: ONNX opset.
        parity_inputs: real model inputs for the parity check (e.g. PTB-XL windows through
            ``engine.pipeline.model_inputs``); random inputs of two batch sizes when ``None``.
        atol: largest allowed max |ONNX Runtime - PyTorch| on any output.
        exporter: ``"auto"`` (dynamo, then TorchScript), ``"dynamo"`` or ``"torchscript"``.

    Raises:
        ExportError: both exporters failed or the graph fails a check.
        ParityError: ONNX Runtime disagrees with PyTorch by more than ``atol``.
    """
    if exporter not in ("auto", "dynamo", "torchscript"):
        raise ExportError(f"exporter={exporter!r}: choose auto, dynamo or torchscript")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    was_training = model.training
    model.eval()
    wrapper = ExportWrapper(model).eval()
    trace = example_inputs(cfg, batch=2)
    args = tuple(torch.from_numpy(trace[n]) for n in INPUT_NAMES)
    t0 = time.perf_counter()
    data: bytes | None = None
    used = ""
    errors: list[str] = []
    quiet = [logging.getLogger(n) for n in ("onnxscript", "onnx_ir", "torch.onnx", "torch._dynamo", "torch.export")]
    levels = [q.level for q in quiet]
    for q in quiet:  # the exporter logs every rewrite at INFO
        q.setLevel(logging.WARNING)
    try:
        with manual_attention(model) as n_switched:
            log.debug("export: %d attention layers on the manual path", n_switched)
            if exporter in ("auto", "dynamo"):
                try:
                    data, used = _export_dynamo(wrapper, args, opset), "dynamo"
                except Exception as exc:  # noqa: BLE001 - the exporter raises many types; we fall back
                    errors.append(f"dynamo: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}")
                    log.warning("dynamo ONNX export failed (%s); trying the TorchScript exporter", errors[-1])
            if data is None and exporter in ("auto", "torchscript"):
                try:
                    data, used = _export_torchscript(wrapper, args, opset, path), "torchscript"
                except Exception as exc:  # noqa: BLE001
                    errors.append(f"torchscript: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}")
    finally:
        model.train(was_training)
        for q, level in zip(quiet, levels):
            q.setLevel(level)
    if data is None:
        raise ExportError(f"ONNX export of {type(model).__name__} failed: {'; '.join(errors)}")
    path.write_bytes(data)
    seconds = time.perf_counter() - t0
    check_onnx(path)
    parity = check_parity(model, path, parity_inputs, atol=atol, cfg=cfg)
    result = ExportResult(path, file_sha256(path), opset, used, seconds, parity)
    log.info("exported %s (%s, opset %d) in %.1f s; parity %s", path.name, used, opset, seconds, parity)
    return result


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file (identifies the graph a TensorRT plan was built from)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_onnx(path: str | Path) -> None:
    """Run ``onnx.checker`` (with shape inference) and check names and the symbolic batch axis.

    Raises:
        ExportError: naming the check that failed and the value found.
    """
    import onnx

    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as exc:  # noqa: BLE001 - onnx raises ValidationError and InferenceError
        raise ExportError(f"{path}: onnx.checker failed: {exc}") from exc
    graph = onnx.load(str(path), load_external_data=False).graph
    inputs = [i.name for i in graph.input]
    outputs = [o.name for o in graph.output]
    if tuple(inputs) != INPUT_NAMES:
        raise ExportError(f"{path}: inputs are {inputs}, expected {list(INPUT_NAMES)}")
    if tuple(outputs) != OUTPUT_NAMES:
        raise ExportError(f"{path}: outputs are {outputs}, expected {list(OUTPUT_NAMES)}")
    for value in (*graph.input, *graph.output):
        dim0 = value.type.tensor_type.shape.dim[0]
        if not dim0.dim_param or dim0.dim_value:
            raise ExportError(f"{path}: {value.name} has a fixed batch axis ({dim0.dim_value}); expected symbolic")


def onnx_outputs(path: str | Path, inputs: Mapping[str, np.ndarray], *, optimize: bool = True) -> dict[str, np.ndarray]:
    """Run the graph once with ONNX Runtime on CPU (full graph optimisation unless ``optimize=False``)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    )
    opts.log_severity_level = 3
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    feed = {n: np.ascontiguousarray(inputs[n], dtype=np.float32) for n in INPUT_NAMES}
    return dict(zip(OUTPUT_NAMES, session.run(list(OUTPUT_NAMES), feed)))


def check_parity(
    model: nn.Module,
    path: str | Path,
    inputs: Mapping[str, np.ndarray] | None = None,
    *,
    atol: float = 1e-4,
    cfg: MirageConfig | None = None,
) -> dict[str, float]:
    """Max |ONNX Runtime - PyTorch| per output; raises :class:`ParityError` above ``atol``.

    With ``inputs=None`` two random batches (3 and 1 samples, neither the traced size) are used,
    which also proves the batch axis is really dynamic.
    """
    if inputs is None:
        if cfg is None:
            raise ExportError("check_parity needs cfg when no inputs are given")
        batches = [example_inputs(cfg, batch=3, seed=1), example_inputs(cfg, batch=1, seed=2)]
    else:
        batches = [inputs]
    was_training = model.training
    model.eval()
    worst: dict[str, float] = {name: 0.0 for name in OUTPUT_NAMES}
    try:
        for batch in batches:
            ref = torch_outputs(model, batch)
            got = onnx_outputs(path, batch)
            for name in OUTPUT_NAMES:
                if got[name].shape != ref[name].shape:
                    raise ParityError(f"{path}: output {name} has shape {got[name].shape}, torch gives {ref[name].shape}")
                worst[name] = max(worst[name], float(np.max(np.abs(got[name] - ref[name]))))
    finally:
        model.train(was_training)
    bad = {k: v for k, v in worst.items() if not v <= atol}
    if bad:
        raise ParityError(f"{path}: ONNX Runtime differs from PyTorch by {bad} (> atol {atol})")
    return worst
