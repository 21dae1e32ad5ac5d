"""Run a TensorRT plan: a context manager with a named ``feed_dict``, a CUDA stream, CUDA graphs.

Follows the TensorRT 10 execution API (``Runtime.deserialize_cuda_engine``,
``IExecutionContext.set_input_shape`` / ``set_tensor_address`` / ``execute_async_v3``) and
Polygraphy's ``TrtRunner`` shape: activate on ``__enter__``, free on ``__exit__``,
``infer(feed_dict) -> {output name: array}``. Device buffers and the stream are torch CUDA
tensors/streams (torch is already a dependency; no second CUDA binding to install).

With ``cuda_graphs=True`` the first call at each batch size runs once eagerly (TensorRT may
allocate then), then captures ``execute_async_v3`` into a CUDA graph over static buffers for that
batch size; later calls copy inputs in and replay the graph, removing per-kernel launch cost.

Verified here: nothing executes (no TensorRT, no GPU in this workplace); the code follows the
documented API and its tests skip with the reason.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from engine.prediction import Prediction
from trt.builder import require_tensorrt
from trt.errors import PlanError
from trt.export import INPUT_NAMES, OUTPUT_NAMES

log = logging.getLogger(__name__)


def _torch_dtype(tensorrt, dtype):
    import torch

    table = {tensorrt.float32: torch.float32, tensorrt.float16: torch.float16, tensorrt.int32: torch.int32, tensorrt.bool: torch.bool}
    if hasattr(tensorrt, "bfloat16"):
        table[tensorrt.bfloat16] = torch.bfloat16
    try:
        return table[dtype]
    except KeyError:
        raise PlanError(f"plan tensor type {dtype} is not supported by the runner") from None


class TensorRTRunner:
    """Loads a plan and runs it on one GPU.

    Args:
        plan_path: a plan from :func:`trt.builder.build_plan`.
        cuda_graphs: capture one CUDA graph per batch size and replay it.
        device: CUDA device index.

    Use as ``with TensorRTRunner(path) as runner: out = runner.infer({"ecg": ..., ...})``.
    """

    def __init__(self, plan_path: str | Path, *, cuda_graphs: bool = False, device: int = 0) -> None:
        self.plan_path = Path(plan_path)
        if not self.plan_path.is_file():
            raise PlanError(f"TensorRT plan {self.plan_path} does not exist; build it with 'mirage build-engine'")
        self.cuda_graphs = cuda_graphs
        self.device = device
        self._tensorrt: Any = None
        self._engine: Any = None
        self._context: Any = None
        self._stream: Any = None
        self._graphs: dict[int, tuple[Any, dict[str, Any], dict[str, Any]]] = {}
        self._eager: dict[int, tuple[dict[str, Any], dict[str, Any]]] = {}  # device buffers per batch size
        self.min_batch = self.max_batch = 0

    # -- lifecycle -------------------------------------------------------------------------------
    def __enter__(self) -> "TensorRTRunner":
        import torch

        self._tensorrt = tensorrt = require_tensorrt()
        torch.cuda.set_device(self.device)
        runtime = tensorrt.Runtime(tensorrt.Logger(tensorrt.Logger.WARNING))
        self._engine = runtime.deserialize_cuda_engine(self.plan_path.read_bytes())
        if self._engine is None:
            raise PlanError(
                f"TensorRT {tensorrt.__version__} could not deserialize {self.plan_path} "
                "(built by another TensorRT version or for another GPU? rebuild with 'mirage build-engine')"
            )
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        missing = [n for n in (*INPUT_NAMES, *OUTPUT_NAMES[:2]) if n not in names]
        if missing:
            raise PlanError(f"{self.plan_path}: tensors {missing} missing; plan has {names}")
        self._context = self._engine.create_execution_context()
        self._stream = torch.cuda.Stream(device=self.device)
        min_shape, _, max_shape = self._engine.get_tensor_profile_shape(INPUT_NAMES[0], 0)
        self.min_batch, self.max_batch = int(min_shape[0]), int(max_shape[0])
        return self

    def __exit__(self, *exc: object) -> None:
        self._graphs.clear()
        self._eager.clear()
        self._context = None
        self._engine = None
        self._stream = None

    # -- running ---------------------------------------------------------------------------------
    def _buffers(self, batch: int) -> tuple[dict[str, Any], dict[str, Any]]:
        import torch

        tensorrt = self._tensorrt
        inputs, outputs = {}, {}
        for name in INPUT_NAMES:
            shape = (batch, *tuple(self._engine.get_tensor_shape(name))[1:])
            self._context.set_input_shape(name, shape)
            dtype = _torch_dtype(tensorrt, self._engine.get_tensor_dtype(name))
            inputs[name] = torch.empty(shape, dtype=dtype, device=f"cuda:{self.device}")
        for i in range(self._engine.num_io_tensors):
            name = self._engine.get_tensor_name(i)
            if self._engine.get_tensor_mode(name) != tensorrt.TensorIOMode.OUTPUT:
                continue
            shape = tuple(self._context.get_tensor_shape(name))
            dtype = _torch_dtype(tensorrt, self._engine.get_tensor_dtype(name))
            outputs[name] = torch.empty(shape, dtype=dtype, device=f"cuda:{self.device}")
        for name, buf in (*inputs.items(), *outputs.items()):
            self._context.set_tensor_address(name, buf.data_ptr())
        return inputs, outputs

    def _execute(self) -> None:
        if not self._context.execute_async_v3(self._stream.cuda_stream):
            raise PlanError(f"execute_async_v3 failed for {self.plan_path}")

    def infer(self, feed_dict: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one batch; ``feed_dict`` maps every input name to a float32 array."""
        import torch

        if self._context is None:
            raise PlanError("TensorRTRunner.infer called outside 'with TensorRTRunner(...)'")
        missing = [n for n in INPUT_NAMES if n not in feed_dict]
        if missing:
            raise PlanError(f"feed_dict lacks inputs {missing}; needs {list(INPUT_NAMES)}")
        batch = int(np.shape(feed_dict[INPUT_NAMES[0]])[0])
        if not self.min_batch <= batch <= self.max_batch:
            raise PlanError(f"batch {batch} is outside the plan's profile {self.min_batch}..{self.max_batch}")
        with torch.cuda.stream(self._stream):
            if self.cuda_graphs and batch in self._graphs:
                graph, inputs, outputs = self._graphs[batch]
                self._set_input_shapes_and_addresses(inputs, outputs)
                for name in INPUT_NAMES:
                    inputs[name].copy_(torch.from_numpy(np.ascontiguousarray(feed_dict[name])))
                graph.replay()
            else:
                if batch in self._eager:
                    inputs, outputs = self._eager[batch]
                    self._set_input_shapes_and_addresses(inputs, outputs)
                else:
                    inputs, outputs = self._eager.setdefault(batch, self._buffers(batch))
                for name in INPUT_NAMES:
                    inputs[name].copy_(torch.from_numpy(np.ascontiguousarray(feed_dict[name])))
                self._execute()
                if self.cuda_graphs:
                    self._stream.synchronize()
                    graph = torch.cuda.CUDAGraph()
                    with torch.cuda.graph(graph, stream=self._stream):
                        self._execute()
                    self._graphs[batch] = (graph, inputs, outputs)
                    del self._eager[batch]  # the graph owns these buffers now
            result = {name: buf.float().cpu().numpy() for name, buf in outputs.items()}
        self._stream.synchronize()
        return result

    def _set_input_shapes_and_addresses(self, inputs: dict[str, Any], outputs: dict[str, Any]) -> None:
        # A captured graph replays fixed addresses; the context must agree for later eager calls.
        for name, buf in inputs.items():
            self._context.set_input_shape(name, tuple(buf.shape))
            self._context.set_tensor_address(name, buf.data_ptr())
        for name, buf in outputs.items():
            self._context.set_tensor_address(name, buf.data_ptr())


class TensorRTPredictor:
    """A :class:`engine.prediction.Predictor` over a :class:`TensorRTRunner` (kept open)."""

    def __init__(self, plan_path: str | Path, config, *, name: str = "tensorrt", cuda_graphs: bool = True) -> None:
        self.name = name
        self.config = config
        self._runner = TensorRTRunner(plan_path, cuda_graphs=cuda_graphs).__enter__()

    def predict(self, ecg: np.ndarray, image: np.ndarray, labs: np.ndarray, lab_mask: np.ndarray):
        """MI probability and lead weights for a batch (split into plan-sized chunks if larger)."""
        arrays = dict(zip(INPUT_NAMES, (ecg, image, labs, lab_mask)))
        step = self._runner.max_batch
        probs, weights = [], []
        for start in range(0, len(ecg), step):
            out = self._runner.infer({k: np.asarray(v[start:start + step], dtype=np.float32) for k, v in arrays.items()})
            probs.append(out["probs"].reshape(-1))
            weights.append(out["lead_weights"])
        return Prediction(probs=np.concatenate(probs).astype(np.float32), lead_weights=np.concatenate(weights).astype(np.float32))

    def close(self) -> None:
        self._runner.__exit__(None, None, None)


def parity_vs_torch(plan_path: str | Path, model, inputs: Mapping[str, np.ndarray], *, atol: float) -> dict[str, float]:
    """Max |TensorRT - PyTorch fp32| per output on ``inputs``; raises :class:`PlanError` above ``atol``.

    Run at build time (``mirage build-engine`` does) so a plan that lost accuracy is never shipped.
    """
    from trt.export import torch_outputs

    ref = torch_outputs(model, inputs)
    with TensorRTRunner(plan_path) as runner:
        got = runner.infer(inputs)
    diffs = {name: float(np.max(np.abs(got[name].reshape(ref[name].shape) - ref[name]))) for name in OUTPUT_NAMES if name in got}
    bad = {k: v for k, v in diffs.items() if not v <= atol}
    if bad:
        raise PlanError(f"{plan_path}: TensorRT differs from PyTorch by {bad} (> atol {atol})")
    return diffs
