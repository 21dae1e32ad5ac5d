"""ECG paper for people: a standard 12-lead page as PNG (matplotlib, Agg backend).

Follows the conventional paper ECG (AHA/ACC/HRS 2007 recommendations; IEC 60601-2-25 display):
25 mm/s and 10 mm/mV on a pink grid of 1 mm minor and 5 mm major squares; a 3x4 arrangement
(I, II, III | aVR, aVL, aVF | V1-V3 | V4-V6, each column a consecutive quarter of the window)
with a full-length lead II rhythm strip below; a 1 mV x 200 ms calibration pulse at the start of
every row; lead labels; a footer stating speed, gain and filter. Used for alert snapshots, the
``mirage render`` command and reports - never as model input (see ``engine.render.layout``).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from engine.config import LEADS
from engine.errors import SignalError

MM_PER_S = 25.0
MM_PER_MV = 10.0
ROW_MM = 35.0  # baseline-to-baseline distance of the rows
CAL_MM = 10.0  # room for the calibration pulse at the start of each row
MARGIN_MM = 5.0
GRID = ((("I", "aVR", "V1", "V4"), ("II", "aVL", "V2", "V5"), ("III", "aVF", "V3", "V6")))
MINOR_COLOUR = "#f6c6c6"
MAJOR_COLOUR = "#e58f8f"


def _grid(ax, width_mm: float, height_mm: float) -> None:
    from matplotlib.collections import LineCollection

    for step, colour, lw in ((1.0, MINOR_COLOUR, 0.3), (5.0, MAJOR_COLOUR, 0.7)):
        xs = np.arange(0.0, width_mm + 1e-9, step)
        ys = np.arange(0.0, height_mm + 1e-9, step)
        segs = [((x, 0.0), (x, height_mm)) for x in xs] + [((0.0, y), (width_mm, y)) for y in ys]
        ax.add_collection(LineCollection(segs, colors=colour, linewidths=lw, zorder=0))


def _cal_pulse(ax, x0: float, y0: float) -> None:
    # 1 mV high, 200 ms (5 mm) wide, as printed at the start of each row.
    xs = [x0, x0 + 2.0, x0 + 2.0, x0 + 7.0, x0 + 7.0, x0 + 9.0]
    ys = [y0, y0, y0 + MM_PER_MV, y0 + MM_PER_MV, y0, y0]
    ax.plot(xs, ys, color="black", linewidth=0.9, solid_joinstyle="miter", zorder=3)


def render_paper_png(
    x: np.ndarray,
    fs: float,
    path: str | Path | None = None,
    title: str = "",
    *,
    filtered: bool = True,
    dpi: int = 150,
) -> bytes:
    """Draw one 12-lead window on ECG paper and return PNG bytes.

    Args:
        x: (12, T) leads in mV in :data:`engine.config.LEADS` order.
        fs: sampling rate in Hz.
        path: also write the PNG here when given.
        title: printed above the page (keep patient identifiers out of it in logs and alerts).
        filtered: apply the pipeline's 0.5-40 Hz zero-phase band-pass first (as printed in the
            footer); pass False for a signal that is already conditioned.
        dpi: output resolution (150 dpi is about 6 px per mm).

    Returns:
        The PNG file content.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[0] != len(LEADS) or arr.shape[1] < 4:
        raise SignalError(f"render_paper_png expects a (12, T) window in mV, got shape {arr.shape}")
    if fs <= 0:
        raise SignalError(f"sampling rate must be positive, got fs={fs}")
    if filtered:
        from engine.pipeline import condition_windows

        arr = condition_windows(arr, fs).astype(np.float64)
    T = arr.shape[1]  # noqa: N806
    seconds = T / fs
    col_s = seconds / 4.0
    width_mm = 2 * MARGIN_MM + CAL_MM + seconds * MM_PER_S
    height_mm = 2 * MARGIN_MM + 4 * ROW_MM + 8.0
    fig = Figure(figsize=(width_mm / 25.4, height_mm / 25.4), dpi=dpi, facecolor="white")
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0.0, 0.0, 1.0, 1.0))
    ax.set_xlim(0, width_mm)
    ax.set_ylim(0, height_mm)
    ax.set_axis_off()
    _grid(ax, width_mm, height_mm)
    t_mm = np.arange(T) / fs * MM_PER_S
    x0 = MARGIN_MM + CAL_MM
    for row in range(4):
        y0 = height_mm - MARGIN_MM - 8.0 - ROW_MM * (row + 0.5)
        _cal_pulse(ax, MARGIN_MM, y0)
        if row < 3:
            for col, name in enumerate(GRID[row]):
                n0, n1 = int(round(col * col_s * fs)), min(int(round((col + 1) * col_s * fs)) + 1, T)
                lead = arr[LEADS.index(name)]
                ax.plot(x0 + t_mm[n0:n1], y0 + lead[n0:n1] * MM_PER_MV, color="black", linewidth=0.7, zorder=2)
                ax.text(x0 + col * col_s * MM_PER_S + 1.0, y0 + 0.45 * ROW_MM - 3.0, name, fontsize=8, zorder=4)
                if col:
                    xb = x0 + col * col_s * MM_PER_S
                    ax.plot([xb, xb], [y0 - 3.0, y0 + 3.0], color="black", linewidth=0.9, zorder=3)
        else:
            ax.plot(x0 + t_mm, y0 + arr[LEADS.index("II")] * MM_PER_MV, color="black", linewidth=0.7, zorder=2)
            ax.text(x0 + 1.0, y0 + 0.45 * ROW_MM - 3.0, "II (rhythm)", fontsize=8, zorder=4)
    if title:
        ax.text(MARGIN_MM, height_mm - MARGIN_MM - 2.0, title, fontsize=9, weight="bold", va="center")
    band = "0.5-40 Hz" if filtered else "as given"
    footer = f"{MM_PER_S:g} mm/s   {MM_PER_MV:g} mm/mV   filter {band}   fs {fs:g} Hz   {seconds:g} s"
    ax.text(width_mm - MARGIN_MM, height_mm - MARGIN_MM - 2.0, footer, fontsize=7, ha="right", va="center")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, facecolor="white")
    data = buf.getvalue()
    if path is not None:
        Path(path).write_bytes(data)
    return data
