"""Measured justification of the layout: how far a synthetic ST shift moves the rendered trace.

A synthetic 12-lead window (Gaussian P, Q, R, S, T waves per beat, after McSharry et al.,
"A dynamical model for generating synthetic electrocardiogram signals", IEEE TBME 2003) gets an
ST shift of ``s`` mV between the J point and the end of the T wave. Both windows go through the
real pipeline conditioning (zero-phase band-pass) and are rendered; the vertical ink centroid of
every pixel column in the ST segment is compared between the two images. Because the renderer
computes exact area coverage, the centroid moves by ``s * px_per_mv`` pixels wherever the trace
is not clipped; the 3x4 page (10 px/mV) moves half as far as the 6x2 layout (20 px/mV).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.config import LEADS
from engine.render.layout import GRID_6X2, PAGE_3X4, Layout
from engine.render.numpy_renderer import render_batch

# Per-lead gains of the P/QRS/T template (a plausible normal axis; V1 and aVR mostly negative).
LEAD_GAINS = np.array([0.6, 1.0, 0.4, -0.8, 0.2, 0.7, -0.6, 0.8, 0.9, 1.0, 0.9, 0.7])
_WAVES = (  # (amplitude mV, centre s from R, width s)
    (0.12, -0.20, 0.025),  # P
    (-0.08, -0.03, 0.008),  # Q
    (0.9, 0.0, 0.010),  # R
    (-0.2, 0.03, 0.008),  # S
    (0.3, 0.28, 0.05),  # T
)
J_OFFSET_S = 0.06
ST_END_S = 0.36


def synthetic_window(fs: float, window_s: float = 10.0, *, hr_bpm: float = 72.0, st_shift_mv: float = 0.0, st_leads: tuple[str, ...] = LEADS) -> np.ndarray:
    """A clean synthetic 12-lead window (12, T) in mV with an optional ST shift on ``st_leads``."""
    T = int(round(fs * window_s))  # noqa: N806
    t = np.arange(T) / fs
    rr = 60.0 / hr_bpm
    beats = np.arange(0.35, window_s, rr)
    template = np.zeros(T)
    st = np.zeros(T)
    ramp = 0.02
    for r in beats:
        for amp, mu, sd in _WAVES:
            template += amp * np.exp(-0.5 * ((t - r - mu) / sd) ** 2)
        # ST plateau with raised-cosine edges from the J point to the end of the T wave.
        u = t - r
        rise = np.clip((u - J_OFFSET_S) / ramp, 0, 1)
        fall = np.clip((ST_END_S - u) / ramp, 0, 1)
        st += 0.5 * (1 - np.cos(np.pi * np.minimum(rise, fall)))
    out = LEAD_GAINS[:, None] * template[None, :]
    mask = np.array([name in st_leads for name in LEADS], dtype=float)[:, None]
    return out + st_shift_mv * mask * st[None, :]


def segment_columns(layout: Layout, lead: str, start_s: float, end_s: float, window_s: float = 10.0, hr_bpm: float = 72.0) -> np.ndarray:
    """Pixel columns of ``lead``'s first cell lying ``start_s..end_s`` after each R peak."""
    cell = layout.cells_of(lead)[0]
    beats = np.arange(0.35, window_s, 60.0 / hr_bpm)
    cols: list[int] = []
    t0, t1 = cell.t0 * window_s, cell.t1 * window_s
    pps = layout.px_per_s(cell, window_s)
    for r in beats:
        a, b = r + start_s, r + end_s
        if a >= t0 and b <= t1:
            cols.extend(range(int(np.ceil((a - t0) * pps)), int(np.floor((b - t0) * pps))))
    return cell.left + np.array(cols, dtype=int)


def ink_centroid(image: np.ndarray, top: int, height: int, cols: np.ndarray) -> np.ndarray:
    """Ink-weighted mean row (pixel centres at r + 0.5) of each column in a cell."""
    block = image[top : top + height, cols]  # (H, C)
    rows = np.arange(top, top + height)[:, None] + 0.5
    return (block * rows).sum(axis=0) / np.maximum(block.sum(axis=0), 1e-12)


@dataclass(frozen=True)
class StShiftRow:
    shift_mv: float
    px_6x2: float
    px_3x4: float


def measure_st_shift(shift_mv: float, layout: Layout, lead: str = "V2", fs: float = 100.0, condition: bool = True) -> float:
    """How far (pixels, up = positive) the ST segment of ``lead`` moves for an ST shift of ``shift_mv``.

    Measured as clinicians read it, against the isoelectric TP segment of the same image:
    (TP centroid - ST centroid) of the shifted window minus that of the unshifted window.
    """
    from engine.pipeline import condition_windows

    x = np.stack([synthetic_window(fs, st_shift_mv=0.0), synthetic_window(fs, st_shift_mv=shift_mv)])
    x = condition_windows(x, fs) if condition else x.astype(np.float32)
    img = render_batch(x, fs, layout=layout)[:, 0]
    cell = layout.cells_of(lead)[0]
    st_cols = segment_columns(layout, lead, J_OFFSET_S + 0.04, J_OFFSET_S + 0.12)  # mid ST, before T
    tp_cols = segment_columns(layout, lead, 0.46, 0.54)  # after T, before the next P

    def elevation(im: np.ndarray) -> float:
        ref = ink_centroid(im, cell.top, cell.height, tp_cols).mean()
        return float(ref - ink_centroid(im, cell.top, cell.height, st_cols).mean())

    return elevation(img[1]) - elevation(img[0])


def st_shift_table(shifts: tuple[float, ...] = (0.05, 0.1, 0.15, 0.2), lead: str = "V2") -> list[StShiftRow]:
    """The ST-shift table of ``docs/RENDERER.md`` (6x2 layout vs the 3x4 page)."""
    return [StShiftRow(s, measure_st_shift(s, GRID_6X2, lead), measure_st_shift(s, PAGE_3X4, lead)) for s in shifts]


def format_table(rows: list[StShiftRow]) -> str:
    """Markdown table of :func:`st_shift_table` rows."""
    lines = ["| ST shift (mV) | 6x2 layout (px) | 3x4 page (px) | ratio |", "| --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r.shift_mv:.2f} | {r.px_6x2:.2f} | {r.px_3x4:.2f} | {r.px_6x2 / r.px_3x4:.2f} |")
    return "\n".join(lines)


def plot_st_validation(path: str, rows: list[StShiftRow] | None = None, fs: float = 100.0) -> None:
    """Save a figure: the two layouts' images of an ST-elevated window and the measured shifts."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from engine.pipeline import condition_windows

    rows = rows if rows is not None else st_shift_table()
    x = condition_windows(synthetic_window(fs, st_shift_mv=0.2, st_leads=("V1", "V2", "V3", "V4"))[None], fs)
    fig = Figure(figsize=(12, 4.2), dpi=110)
    FigureCanvasAgg(fig)
    for k, layout in enumerate((GRID_6X2, PAGE_3X4)):
        ax = fig.add_subplot(1, 3, k + 1)
        ax.imshow(render_batch(x, fs, layout=layout)[0, 0], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(f"{layout.name}: {layout.mv_per_px:.2f} mV/px (0.2 mV ST up in V1-V4)", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    ax = fig.add_subplot(1, 3, 3)
    shifts = [r.shift_mv for r in rows]
    ax.plot(shifts, [r.px_6x2 for r in rows], "o-", label="6x2 (MIRAGE)")
    ax.plot(shifts, [r.px_3x4 for r in rows], "s-", label="3x4 page")
    ax.set_xlabel("ST shift (mV)")
    ax.set_ylabel("ST segment moves (px, vs TP)")
    ax.set_title("measured after the pipeline band-pass, lead V2", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
