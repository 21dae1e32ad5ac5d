"""ONNX Runtime predictors: fp32 and int8 (dynamic quantisation) on the CPU.

Dynamic quantisation (ONNX Runtime ``quantize_dynamic``) stores the weights of every ``MatMul``
and ``Gemm`` as int8 (per output channel) and quantises activations to uint8 per call from their
observed range, so no calibration set is needed. On x86 ONNX Runtime runs the u8 x s8 products
with AVX2 (``vpmaddubsw``) or AVX-512 VNNI where the CPU has it. Convolutions (the ViT patch
embedding) and attention score products stay fp32: the first is a small share of the FLOPs and
the second has no constant operand. The accuracy cost is measured, not assumed: ``mirage bench
infer`` reports the AUROC change on labelled PTB-XL windows.

Weights are quantised with ``reduce_range`` (7-bit): x86 CPUs without VNNI multiply u8 x s8 with
``vpmaddubsw``, which saturates the int16 sum of two products when both weights are near +-127
(ONNX Runtime quantisation docs, "saturation"). Measured on this project's AVX2 CPU with a
default-size model: full-range weights moved probabilities by up to 0.2, 7-bit weights by 0.02,
at the same speed.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from engine.config import MirageConfig
from engine.prediction import Prediction
from trt.errors import BackendUnavailableError, ExportError
from trt.export import INPUT_NAMES, OUTPUT_NAMES

log = logging.getLogger(__name__)

QUANTIZED_OPS: tuple[str, ...] = ("MatMul", "Gemm")


def _require_ort():
    try:
        import onnxruntime
    except ImportError as exc:  # pragma: no cover - a dependency of the project
        raise BackendUnavailableError(f"the onnxruntime module is not installed ({exc}); pip install onnxruntime") from exc
    return onnxruntime


def session_options(threads: int | None = None, *, optimize: bool = True, spinning: bool = False):
    """ONNX Runtime session options for a latency-bound service on a few shared cores.

    Args:
        threads: intra-op threads (``None``: one per available core).
        optimize: full graph optimisation (constant folding, LayerNorm/GELU/attention fusion).
        spinning: let idle worker threads spin; faster on an idle machine, wasteful on a shared one.
    """
    ort = _require_ort()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(threads or len(os.sched_getaffinity(0)))
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    )
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    opts.log_severity_level = 3
    return opts


def quantize_int8(
    src: str | Path,
    dst: str | Path,
    *,
    op_types: Sequence[str] = QUANTIZED_OPS,
    per_channel: bool = True,
    reduce_range: bool = True,
) -> Path:
    """Write a dynamically quantised (int8 weights, uint8 activations) copy of ``src`` to ``dst``.

    Raises:
        ExportError: quantisation failed (names the file).
    """
    _require_ort()
    from onnxruntime.quantization import QuantType, quantize_dynamic

    src, dst = Path(src), Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.WARNING))  # the quantiser logs one INFO line per tensor on the root logger
    try:
        quantize_dynamic(
            str(src),
            str(dst),
            op_types_to_quantize=list(op_types),
            per_channel=per_channel,
            reduce_range=reduce_range,
            weight_type=QuantType.QInt8,
            extra_options={"MatMulConstBOnly": True},
        )
    except Exception as exc:  # noqa: BLE001 - the quantiser raises many types
        raise ExportError(f"int8 quantisation of {src} failed: {type(exc).__name__}: {exc}") from exc
    finally:
        root.setLevel(level)
    log.info("quantised %s -> %s in %.1f s (%.1f -> %.1f MB)", src.name, dst.name, time.perf_counter() - t0,
             src.stat().st_size / 1e6, dst.stat().st_size / 1e6)
    return dst


class OrtPredictor:
    """A :class:`engine.prediction.Predictor` running an ONNX file with ONNX Runtime.

    Args:
        onnx_path: the exported graph (``trt.export.export_onnx``), fp32 or int8.
        config: the model configuration the graph was exported from.
        name: backend name shown in benchmarks and logs.
        threads: intra-op threads (``None``: all available cores).
        optimize: full graph optimisation.
        providers: ONNX Runtime execution providers (default CPU only).
    """

    def __init__(
        self,
        onnx_path: str | Path,
        config: MirageConfig,
        *,
        name: str = "onnxruntime",
        threads: int | None = None,
        optimize: bool = True,
        providers: Sequence[str] = ("CPUExecutionProvider",),
    ) -> None:
        ort = _require_ort()
        path = Path(onnx_path)
        if not path.is_file():
            raise BackendUnavailableError(f"ONNX file {path} does not exist; run 'mirage export --out {path}'")
        self.name = name
        self.config = config
        self.path = path
        self._session = ort.InferenceSession(str(path), session_options(threads, optimize=optimize), providers=list(providers))
        got = [i.name for i in self._session.get_inputs()]
        if tuple(got) != INPUT_NAMES:
            raise ExportError(f"{path}: inputs are {got}, expected {list(INPUT_NAMES)}")

    def predict(self, ecg: np.ndarray, image: np.ndarray, labs: np.ndarray, lab_mask: np.ndarray):
        """MI probability and lead weights for a batch (numpy float32 in and out)."""
        feed = {
            name: np.ascontiguousarray(arr, dtype=np.float32)
            for name, arr in zip(INPUT_NAMES, (ecg, image, labs, lab_mask))
        }
        probs, lead_weights = self._session.run(list(OUTPUT_NAMES[:2]), feed)
        return Prediction(probs=probs.astype(np.float32, copy=False), lead_weights=lead_weights.astype(np.float32, copy=False))

    def __repr__(self) -> str:
        return f"OrtPredictor(name={self.name!r}, path={str(self.path)!r})"
