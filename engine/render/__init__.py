"""ECG rendering: the fast model-image renderer (numpy and torch) and ECG paper for people.

``render_batch`` turns (B, 12, T) windows in mV into (B, 1, 224, 224) float32 images in the
calibrated 6x2 layout of :mod:`engine.render.layout`; ``render_batch_torch`` draws the same
images with torch on any device; ``render_paper_png`` draws a standard ECG page (25 mm/s,
10 mm/mV, pink grid) as PNG bytes. ``RENDERER_VERSION`` changes whenever the model image changes,
so checkpoints can refuse images drawn differently from the ones they were trained on.
"""

from __future__ import annotations

from typing import Any

from engine.render.layout import DEFAULT_LAYOUT, Layout, get_layout
from engine.render.numpy_renderer import render_batch

RENDERER_VERSION = "6x2-20pxmV-aa1-v1"

__all__ = ["DEFAULT_LAYOUT", "Layout", "RENDERER_VERSION", "get_layout", "render_batch", "render_batch_torch", "render_paper_png"]

_LAZY = {
    # torch and matplotlib are imported only when these are used.
    "render_batch_torch": "engine.render.torch_renderer",
    "render_paper_png": "engine.render.paper",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
