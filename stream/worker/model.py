"""What a worker serves: the predictor for ``Settings.backend``, its alert metadata and a fallback.

Shared by ``mirage worker`` and the tools that score offline what a worker scores live
(``mirage validate``). Backends come from the one factory, ``trt.backends.make_predictor``; a
worker only loads compiled artefacts (a missing static int8 model or TensorRT plan is an error
that names the command that builds it).
"""

from __future__ import annotations

import importlib
import logging
from typing import Any, Callable

from engine.prediction import Predictor
from stream.errors import SettingsError
from stream.settings import Settings
from stream.worker.processor import ModelInfo

log = logging.getLogger(__name__)


def _import(spec: str) -> Any:
    module, _, name = spec.partition(":")
    if not module or not name:
        raise SettingsError(f"--predictor must look like 'package.module:factory', got {spec!r}")
    return getattr(importlib.import_module(module), name)


def load_model(settings: Settings, predictor_spec: str = "") -> tuple[Predictor, ModelInfo, Callable[[], Predictor] | None]:
    """The predictor, its alert metadata and a fallback factory, from the checkpoint and ``Settings.backend``.

    The fallback factory (None without ``Settings.fallback_backend``) builds the fallback backend
    for the same checkpoint when the primary fails at run time; if the primary cannot even be
    created, the fallback is used from the start.

    ``predictor_spec`` (``module:factory``) replaces the checkpoint with a site-provided predictor:
    ``factory(settings)`` returns an object with ``name``, ``config``, ``predict`` and optionally
    ``info`` (a :class:`ModelInfo`). With ``Settings.fallback_backend`` its fallback is the
    checkpoint (``Settings.checkpoint``, default the shipped one) on that backend, which must
    take the same window (``fs``, ``T``).
    """
    from engine.checkpoint import load_checkpoint, model_version
    from trt.backends import make_predictor

    if predictor_spec:
        pred = _import(predictor_spec)(settings)
        info = getattr(pred, "info", None) or ModelInfo(pred.name, "custom", "", 0.5)
        if not settings.fallback_backend:
            return pred, info, None

        # Loaded now (a wrong path or an incompatible checkpoint fails at start), built when needed.
        fb_loaded = load_checkpoint(settings.checkpoint or None)
        if (fb_loaded.config.fs, fb_loaded.config.T) != (pred.config.fs, pred.config.T):
            raise SettingsError(f"fallback checkpoint takes {fb_loaded.config.T} samples at {fb_loaded.config.fs} Hz, "
                                f"the --predictor model {pred.config.T} at {pred.config.fs} Hz")
        return pred, info, lambda: make_predictor(settings.fallback_backend, fb_loaded)

    loaded = load_checkpoint(settings.checkpoint or None)
    opts = backend_opts(settings, settings.backend)
    try:
        pred = make_predictor(settings.backend, loaded, **opts)
    except Exception as exc:
        if not settings.fallback_backend:
            raise
        log.warning("backend %r failed (%s); falling back to %r", settings.backend, exc, settings.fallback_backend)
        pred = make_predictor(settings.fallback_backend, loaded, **backend_opts(settings, settings.fallback_backend))
    thresholds = {k: float(v) for k, v in loaded.thresholds.items()}
    info = ModelInfo(f"mirage-{loaded.config.name}", model_version(loaded), str(loaded.sha256), float(loaded.threshold), thresholds)
    def build_fallback() -> Predictor:
        return make_predictor(settings.fallback_backend, loaded)

    use_fallback = bool(settings.fallback_backend) and settings.fallback_backend != settings.backend
    return pred, info, (build_fallback if use_fallback else None)


def backend_opts(settings: Settings, backend: str) -> dict[str, Any]:
    """Options for ``make_predictor``: the device, and ``Settings.threads`` for CPU backends
    (several workers on one host, Kafka scale-out, must not each start a thread per core)."""
    opts: dict[str, Any] = {"device": settings.device} if settings.device and settings.device != "cpu" else {}
    if settings.threads and backend != "tensorrt":
        opts["threads"] = int(settings.threads)
    return opts
