"""A matplotlib implementation of the model-image layout: the speed baseline and a visual check.

It draws the same cells, scale and line width as :mod:`engine.render.numpy_renderer` with
matplotlib's Agg rasteriser (anti-aliased polylines clipped to each cell), the way most ECG image
datasets are produced. Its pixels differ slightly from the area-coverage renderer (Agg's line
joins and its own anti-aliasing), so it is a baseline for speed (``mirage bench render``) and for
eyes, not a bit-exact reference.
"""

from __future__ import annotations

import numpy as np

from engine.render.geometry import check_batch
from engine.render.layout import DEFAULT_LAYOUT, Layout


def _figure(layout: Layout):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    size = layout.image_size
    fig = Figure(figsize=(size / 100.0, size / 100.0), dpi=100, facecolor="black")
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_axes((0.0, 0.0, 1.0, 1.0))
    ax.set_xlim(0, size)
    ax.set_ylim(size, 0)
    ax.set_axis_off()
    ax.set_facecolor("black")
    return fig, canvas, ax


def _lines(ax, window: np.ndarray, layout: Layout) -> list:
    from matplotlib.patches import Rectangle

    T = window.shape[-1]  # noqa: N806
    lines = []
    for cell in layout.cells:
        n0, n1 = int(round(cell.t0 * T)), min(int(round(cell.t1 * T)) + 1, T)
        n = np.arange(n0, n1)
        xs = cell.left + (n - cell.t0 * T) * cell.width / ((cell.t1 - cell.t0) * T)
        ys = cell.top + layout.baseline_px - window[cell.lead, n0:n1] * layout.px_per_mv
        (line,) = ax.plot(xs, ys, color="white", linewidth=layout.line_width_px * 72.0 / 100.0, antialiased=True)
        line.set_clip_path(Rectangle((cell.left, cell.top), cell.width, cell.height, transform=ax.transData))
        lines.append(line)
    return lines


def _grab(canvas) -> np.ndarray:
    canvas.draw()
    rgba = np.asarray(canvas.buffer_rgba())
    return rgba[..., 0].astype(np.float32) / 255.0


def render_matplotlib(x: np.ndarray, fs: float | None = None, *, layout: Layout = DEFAULT_LAYOUT, reuse_figure: bool = False) -> np.ndarray:
    """Render (B, 12, T) mV windows with matplotlib in the given layout.

    Args:
        x: (B, 12, T) leads in mV.
        fs: sampling rate (unused, as in ``render_batch``).
        layout: the image layout.
        reuse_figure: keep one figure and only replace the line data per image (the fastest
            matplotlib can do); otherwise build a figure per image, as dataset scripts do.

    Returns:
        (B, 1, S, S) float32 in [0, 1].
    """
    arr = np.asarray(x, dtype=np.float64)
    B, T = check_batch(arr.shape)  # noqa: N806
    S = layout.image_size  # noqa: N806
    out = np.zeros((B, 1, S, S), dtype=np.float32)
    if reuse_figure and B:
        fig, canvas, ax = _figure(layout)
        lines = _lines(ax, arr[0], layout)
        for b in range(B):
            for line, cell in zip(lines, layout.cells):
                n0, n1 = int(round(cell.t0 * T)), min(int(round(cell.t1 * T)) + 1, T)
                line.set_ydata(cell.top + layout.baseline_px - arr[b, cell.lead, n0:n1] * layout.px_per_mv)
            out[b, 0] = _grab(canvas)
        return out
    for b in range(B):
        fig, canvas, ax = _figure(layout)
        _lines(ax, arr[b], layout)
        out[b, 0] = _grab(canvas)
    return out
