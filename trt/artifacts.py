"""Compiled artefacts of a checkpoint: where they live, how they are built, how a server finds them.

Two kinds, by what they depend on:

* **Derived on first use** (exact, deterministic functions of the checkpoint alone): the ONNX
  export (:func:`onnx_for`, optionally rewritten) and its dynamically quantised int8 copy
  (:func:`int8_for`). Any machine derives the same file.
* **Built offline** (they depend on data or on the GPU they were built on): the calibrated static
  int8 model (:func:`build_int8_static`, ``mirage build-int8``) and TensorRT plans
  (``mirage build-engine``). A server only *finds* them (:func:`int8_static_path`,
  :func:`tensorrt_plan_path`) and, when one is missing, says which command builds it. So two
  workers never serve different int8 models because one of them lacked the calibration data.

Everything sits under ``$MIRAGE_CACHE_DIR`` (default ``~/.cache/mirage/compiled``), named by the
checkpoint's SHA-256 prefix, so a new checkpoint never reuses an old graph. A built int8 model is
versioned by its calibration digest, and a small JSON manifest names the one a server loads.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from trt.errors import BackendError, BackendUnavailableError

log = logging.getLogger(__name__)

# ONNX Runtime gets opset 20 (native Gelu: one kernel instead of Erf/Div/Add/Mul, measured ~5-8%
# faster int8 here); TensorRT plans are built from opset 18, which every TensorRT 10 parser reads.
ORT_OPSET = 20
TENSORRT_OPSET = 18


def cache_dir() -> Path:
    """Where compiled artefacts live (``$MIRAGE_CACHE_DIR`` or ``~/.cache/mirage/compiled``)."""
    root = os.environ.get("MIRAGE_CACHE_DIR")
    return Path(root) if root else Path.home() / ".cache" / "mirage" / "compiled"


def checkpoint_key(loaded: Any) -> str:
    """The artefact key of a loaded checkpoint: the first 16 hex digits of its SHA-256."""
    sha = getattr(loaded, "sha256", None)
    if not sha:
        raise BackendError("the loaded checkpoint has no sha256; load it with engine.checkpoint.load_checkpoint")
    return str(sha)[:16]


def onnx_for(loaded: Any, *, onnx_path: str | Path | None = None, opset: int = TENSORRT_OPSET, fast: bool = False) -> Path:
    """The checkpoint's ONNX export at ``opset``, exporting (with checks) on first use.

    With ``fast`` the module is first rewritten (``trt.rewrite.fast_export_module``: conv stem as
    2-D convolutions) and the graph is checked against the *original* torch model (1e-4).
    """
    if onnx_path is not None:
        path = Path(onnx_path)
        if not path.is_file():
            raise BackendUnavailableError(f"ONNX file {path} does not exist; run 'mirage export --out {path}'")
        return path
    suffix = ""
    if fast:
        from trt.rewrite import REWRITE_VERSION

        suffix = f"-fast{REWRITE_VERSION}"
    path = cache_dir() / f"mirage-{checkpoint_key(loaded)}-op{opset}{suffix}.onnx"
    if not path.is_file():
        from trt.export import check_parity, export_onnx

        log.info("exporting the checkpoint to %s (first use)", path)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        if fast:
            from trt.rewrite import fast_export_module

            module, rewrites = fast_export_module(loaded.model)
            log.info("export rewrites: %s", rewrites or "none")
            export_onnx(module, loaded.config, tmp, opset=opset)
            check_parity(loaded.model, tmp, cfg=loaded.config)  # the rewritten graph vs the original model
        else:
            export_onnx(loaded.model, loaded.config, tmp, opset=opset)
        tmp.replace(path)
    return path


def int8_for(loaded: Any, *, onnx_path: str | Path | None = None) -> Path:
    """The int8 (dynamic quantisation) copy of the checkpoint's ONNX export."""
    from trt.ort_backend import quantize_int8

    src = onnx_for(loaded, onnx_path=onnx_path, opset=ORT_OPSET)
    dst = src.with_name(src.stem + ".int8.onnx")
    if not dst.is_file() or dst.stat().st_mtime < src.stat().st_mtime:
        quantize_int8(src, dst)
    return dst


def _int8_static_manifest(loaded: Any, onnx_path: str | Path | None) -> Path:
    if onnx_path is not None:
        src = Path(onnx_path)
        return src.with_name(f"{src.stem}.int8s.json")
    from trt.rewrite import REWRITE_VERSION

    return cache_dir() / f"mirage-{checkpoint_key(loaded)}-op{ORT_OPSET}-fast{REWRITE_VERSION}.int8s.json"


def build_int8_static(loaded: Any, *, onnx_path: str | Path | None = None, calibration: Any = None,
                      source: str = "calibration inputs given by the caller") -> Path:
    """Offline build step: calibrate and write the static QDQ int8 model, and make it the current one.

    Args:
        loaded: the loaded checkpoint.
        onnx_path: quantise this fp32 ONNX file instead of the cached rewritten export.
        calibration: model inputs to calibrate on (``ModelInputs``-like); default
            :func:`engine.data.calibration.calibration_inputs` (the shared PTB-XL sample, synthetic
            windows when it is absent: the manifest records which).
        source: what ``calibration`` is, for the manifest (when it is given).

    Returns:
        The int8 ONNX file (named by the calibration digest).
    """
    from trt.ort_static import calibration_feeds, feeds_digest, quantize_int8_static

    src = onnx_for(loaded, onnx_path=onnx_path, opset=ORT_OPSET, fast=True)
    if calibration is None:
        from engine.data.calibration import calibration_inputs

        calibration, source = calibration_inputs(loaded.config)
    log.info("static int8 calibration: %s", source)
    feeds = calibration_feeds(calibration)
    digest = feeds_digest(feeds)
    dst = src.with_name(f"{src.stem}.int8s-{digest}.onnx")
    if not dst.is_file() or dst.stat().st_mtime < src.stat().st_mtime:
        tmp = dst.with_name(f"{dst.stem}.{os.getpid()}.tmp.onnx")
        quantize_int8_static(src, tmp, feeds)
        tmp.replace(dst)
    manifest = _int8_static_manifest(loaded, onnx_path)
    record = {"model": dst.name, "calibration_digest": digest, "calibration_source": source,
              "checkpoint_sha256": str(loaded.sha256), "source_onnx": src.name}
    tmp_manifest = manifest.with_name(f"{manifest.name}.{os.getpid()}.tmp")
    tmp_manifest.write_text(json.dumps(record, indent=1) + "\n")
    tmp_manifest.replace(manifest)
    return dst


def int8_static_path(loaded: Any, *, onnx_path: str | Path | None = None) -> Path:
    """The current built static int8 model of the checkpoint (never builds one).

    Raises:
        BackendUnavailableError: none was built for this checkpoint (names the command that builds it).
    """
    manifest = _int8_static_manifest(loaded, onnx_path)
    build = "mirage build-int8" + (f" --onnx {onnx_path}" if onnx_path is not None else "")
    if not manifest.is_file():
        raise BackendUnavailableError(
            f"no calibrated int8 model for checkpoint {checkpoint_key(loaded)} (looked for {manifest}); "
            f"build it offline with '{build} --checkpoint CHECKPOINT' (same MIRAGE_CACHE_DIR) before starting workers")
    try:
        record = json.loads(manifest.read_text())
        path = manifest.with_name(str(record["model"]))
    except (OSError, ValueError, KeyError) as exc:
        raise BackendUnavailableError(f"int8 manifest {manifest} is unreadable ({exc}); rebuild with '{build}'") from exc
    if not path.is_file():
        raise BackendUnavailableError(f"int8 model {path} named by {manifest} is missing; rebuild with '{build}'")
    log.info("static int8 model %s (calibration %s)", path.name, record.get("calibration_source", "?"))
    return path


def tensorrt_plan_path(loaded: Any, precision: str) -> Path:
    """Where the checkpoint's TensorRT plan for ``precision`` is looked for (``mirage build-engine --out``)."""
    return cache_dir() / f"mirage-{checkpoint_key(loaded)}-op{TENSORRT_OPSET}.{precision}.plan"
