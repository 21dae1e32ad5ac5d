"""trt room: compiled inference for MIRAGE.

ONNX export with faithfulness checks (:mod:`trt.export`), ONNX Runtime fp32/int8 predictors
(:mod:`trt.ort_backend`), the mixed-precision ONNX rewrite (:mod:`trt.precision`), the TensorRT 10
plan builder and runner (:mod:`trt.builder`, :mod:`trt.runner`), PyTorch CPU/CUDA variants
(:mod:`trt.torch_backends`), backend selection by name (:mod:`trt.backends`), the Triton model
repository writer (:mod:`trt.triton`) and the benchmarks (:mod:`trt.bench`, :mod:`trt.gpu_bench`).
The package is named ``trt``; TensorRT itself is always imported as ``import tensorrt``.
"""
