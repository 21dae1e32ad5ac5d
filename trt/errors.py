"""Errors raised by the compiled-inference room (``trt/``). Messages carry the offending value."""

from __future__ import annotations

from engine.errors import MirageError


class InferenceError(MirageError, RuntimeError):
    """Base class for errors of the compiled-inference room."""


class ExportError(InferenceError):
    """Exporting a model to ONNX failed, or the exported graph is not faithful (names the check)."""


class ParityError(ExportError):
    """A compiled model disagrees with PyTorch by more than the tolerance (names both numbers)."""


class BackendError(InferenceError, ValueError):
    """An unknown backend name, or a backend option that does not apply (names the value and choices)."""


class BackendUnavailableError(InferenceError):
    """A backend cannot run here: names what is missing (a Python module, CUDA, a plan file)."""


class PlanError(InferenceError):
    """A TensorRT plan cannot be built, loaded or run (names the file and the reason)."""


class TritonRepoError(InferenceError, ValueError):
    """A Triton model repository cannot be written from the given files (names the path)."""
