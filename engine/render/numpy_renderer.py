"""Vectorised numpy renderer: a batch of 12-lead windows (B, 12, T) mV -> (B, 1, 224, 224) images.

Deterministic and exact: each pixel's value is the fraction of its area covered by the trace
(see :mod:`engine.render.geometry` for the min/max column envelope and
:mod:`engine.render.layout` for the calibrated 6x2 layout). White ink (1) on black (0).
Computation is float32 throughout; the torch renderer follows the same operations.
"""

from __future__ import annotations

import numpy as np

from engine.render.geometry import check_batch, plan
from engine.render.layout import DEFAULT_LAYOUT, Layout


def render_batch(x: np.ndarray, fs: float | None = None, *, layout: Layout = DEFAULT_LAYOUT) -> np.ndarray:
    """Render a batch of windows as model images.

    Args:
        x: (B, 12, T) leads in millivolts, in :data:`engine.config.LEADS` order. Non-finite
            samples leave a gap in the trace.
        fs: sampling rate in Hz. The image does not depend on it (each cell shows a fixed
            fraction of the window); accepted so call sites state what they render.
        layout: the image layout (default: the calibrated 6x2 layout).

    Returns:
        (B, 1, S, S) float32 in [0, 1], ``S = layout.image_size``.
    """
    x = np.ascontiguousarray(x, dtype=np.float32)
    B, T = check_batch(x.shape)  # noqa: N806
    S = layout.image_size  # noqa: N806
    out = np.zeros((B, 1, S, S), dtype=np.float32)
    if B == 0:
        return out
    has_gaps = not np.isfinite(x).all()
    half = np.float32(layout.line_width_px / 2.0)
    ppm = np.float32(layout.px_per_mv)
    base = np.float32(layout.baseline_px)
    for g in plan(layout, T):
        lead_x = x[:, g.leads, :]  # (B, K, T)
        k_idx = np.arange(len(g.leads))[:, None]
        left = lead_x[:, k_idx, g.b_lo]  # (B, K, W+1)
        right = lead_x[:, k_idx, g.b_lo + 1]
        bound = left + (right - left) * g.b_frac
        vals = lead_x[:, k_idx[..., None], g.inner]  # (B, K, W, M)
        vals = np.where(g.inner_ok, vals, bound[..., :-1, None])
        lo = np.minimum(np.minimum(vals.min(axis=-1), bound[..., :-1]), bound[..., 1:])  # (B, K, W)
        hi = np.maximum(np.maximum(vals.max(axis=-1), bound[..., :-1]), bound[..., 1:])
        h = np.float32(g.height)
        lw = half + half
        y_top = np.clip(base - hi * ppm - half, 0.0, h - lw)[:, :, None, :]  # (B, K, 1, W)
        y_bot = np.clip(base - lo * ppm + half, lw, h)[:, :, None, :]
        rows = np.arange(g.height, dtype=np.float32)[:, None]  # (H, 1)
        cov = np.minimum(rows + 1, y_bot) - np.maximum(rows, y_top)  # (B, K, H, W)
        np.clip(cov, 0.0, 1.0, out=cov)
        if has_gaps:
            cov[np.isnan(cov)] = 0.0
        for k in range(len(g.leads)):
            t, l = int(g.tops[k]), int(g.lefts[k])  # noqa: E741
            np.maximum(out[:, 0, t : t + g.height, l : l + g.width], cov[:, k], out=out[:, 0, t : t + g.height, l : l + g.width])
    return out
