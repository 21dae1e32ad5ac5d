"""Static (calibrated) int8 QDQ quantisation for ONNX Runtime: fixed scales, batch-invariant.

ONNX Runtime ``quantize_dynamic`` (``trt.ort_backend.quantize_int8``) computes each activation's
uint8 scale per call from the range of the *whole batch*, so one window's probability moves with
its batch-mates (measured on the shipped checkpoint: 2.6e-3 to 2.8e-2). The stream needs a
window's probability to be independent of which other beds share its micro-batch. Static
quantisation (``onnxruntime.quantization.quantize_static``, QDQ format) fixes every activation
scale once, from calibration windows, so each window is computed alone in exact integer
arithmetic and fp32 elsewhere: batch-invariant by construction (checked by tests and by
``mirage bench infer``).

What is quantised (chosen by measurement on the 2-core AVX2 EPYC, shipped checkpoint):

* every ``MatMul`` with a constant weight (the Linear layers), output kept float
  (``MatMulIntegerToFloat``: no output requantisation error, one fewer pass);
* ``Conv`` with >= 8 input channels and no groups (the 16 -> 16 stem convolution: 89 % of the
  stem's multiply-adds), output uint8 so ONNX Runtime fuses it to ``QLinearConv``.

Left in fp32: the 1-channel convolutions (stem input, ViT patch embedding) and the depthwise one
(int8 was slower there), attention score products (no constant operand), LayerNorm, softmax,
GELU, FiLM. Weights are int8 per output channel with ``reduce_range`` (7-bit), activations uint8
(asymmetric): without VNNI, AVX2 multiplies u8 x s8 with ``vpmaddubsw``, whose int16 pair sums
saturate with full-range weights (ONNX Runtime quantisation docs).

Calibration (MinMax ranges) uses real windows through ``engine.pipeline.model_inputs`` and, for
each, a copy with random present labs, so FiLM-modulated activation ranges are covered too (PTB-XL
has no labs). The file name carries a hash of the calibration data.
"""

from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from trt.errors import BackendError, ExportError
from trt.export import INPUT_NAMES

log = logging.getLogger(__name__)

MIN_CONV_IN_CHANNELS = 8  # smaller convolutions were slower in int8 here (im2col + QGEMM vs NCHWc fp32)
CALIBRATION_BATCH = 8


def calibration_feeds(inputs: Any, *, batch: int = CALIBRATION_BATCH, with_labs: bool = True, seed: int = 0
                      ) -> list[dict[str, np.ndarray]]:
    """Calibration batches from model inputs (``ModelInputs``-like: ``ecg``, ``image``, ``labs``, ``lab_mask``).

    With ``with_labs`` every batch is repeated with random present labs (z-scores ~ N(0, 1.5),
    60 % present) so the FiLM-modulated activation ranges are in the calibration too.

    Raises:
        BackendError: no windows.
    """
    n = len(inputs.ecg)
    if n == 0:
        raise BackendError("static int8 calibration needs at least one window; got 0")
    rng = np.random.default_rng(seed)
    feeds = []
    for s in range(0, n, batch):
        sl = slice(s, s + batch)
        feed = {name: np.ascontiguousarray(getattr(inputs, name)[sl], dtype=np.float32) for name in INPUT_NAMES}
        feeds.append(feed)
        if with_labs:
            b, d = feed["labs"].shape
            mask = (rng.random((b, d)) < 0.6).astype(np.float32)
            feeds.append({**feed, "labs": (rng.normal(0.0, 1.5, (b, d)) * mask).astype(np.float32), "lab_mask": mask})
    return feeds


def feeds_digest(feeds: Sequence[dict[str, np.ndarray]]) -> str:
    """Short SHA-256 of the calibration data (part of the quantised file's name)."""
    h = hashlib.sha256()
    for feed in feeds:
        for name in INPUT_NAMES:
            h.update(np.ascontiguousarray(feed[name]).tobytes())
    return h.hexdigest()[:12]


def nodes_to_quantize(path: str | Path) -> list[str]:
    """Names of the nodes worth int8 here (see the module docstring): const-weight MatMul, wide Conv."""
    import onnx

    graph = onnx.load(str(path)).graph
    inits = {i.name: i for i in graph.initializer}
    names = []
    for node in graph.node:
        if node.op_type == "MatMul" and len(node.input) == 2 and node.input[1] in inits:
            names.append(node.name)
        elif node.op_type == "Conv" and len(node.input) >= 2 and node.input[1] in inits:
            group = next((a.i for a in node.attribute if a.name == "group"), 1)
            if group == 1 and inits[node.input[1]].dims[1] >= MIN_CONV_IN_CHANNELS:
                names.append(node.name)
    return names


def quantize_int8_static(src: str | Path, dst: str | Path, feeds: Sequence[dict[str, np.ndarray]]) -> Path:
    """Write a static QDQ int8 copy of ``src`` to ``dst``, calibrated on ``feeds``.

    Raises:
        BackendError: no calibration batches.
        ExportError: pre-processing or quantisation failed (names the file).
    """
    from trt.ort_backend import _require_ort

    _require_ort()
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if not feeds:
        raise BackendError("static int8 calibration needs at least one batch of windows; got none")
    src, dst = Path(src), Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    pre = dst.with_name(dst.stem + ".pre.onnx")

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it: Iterator[dict[str, np.ndarray]] = iter(feeds)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._it, None)

    reader = Reader()
    t0 = time.perf_counter()
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.WARNING))  # the quantiser logs per tensor on the root logger
    try:
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        nodes = nodes_to_quantize(pre)
        if not nodes:
            raise ExportError(f"{src}: no MatMul/Conv node to quantise")
        quantize_static(
            str(pre), str(dst), reader,
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=["MatMul", "Conv"],
            nodes_to_quantize=nodes,
            per_channel=True,
            reduce_range=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
            extra_options={"MatMulConstBOnly": True, "OpTypesToExcludeOutputQuantization": ["MatMul"]},
        )
    except (BackendError, ExportError):
        raise
    except Exception as exc:  # noqa: BLE001 - the quantiser raises many types
        raise ExportError(f"static int8 quantisation of {src} failed: {type(exc).__name__}: {exc}") from exc
    finally:
        root.setLevel(level)
        pre.unlink(missing_ok=True)
    log.info("static int8: %s -> %s (%d nodes, %d calibration batches) in %.1f s", src.name, dst.name, len(nodes),
             len(feeds), time.perf_counter() - t0)
    return dst
