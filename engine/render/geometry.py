"""The sampling plan shared by the numpy and torch renderers (so both draw the same image).

For a layout and a window length ``T`` the plan says, for every pixel column of every cell, which
samples of the lead fall in it. The trace is the piecewise-linear curve through the samples; the
ink in one pixel column is the vertical span between the curve's minimum and maximum over that
column (including the curve's values where it enters and leaves the column), widened by the line
width. Because neighbouring columns share their boundary values the drawn line is continuous,
however many samples fall in one column (the min/max "envelope" method of fast waveform
displays).

Cells of equal size are grouped so each group renders as one vectorised operation.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from engine.errors import SignalError
from engine.render.layout import Layout


@dataclass(frozen=True)
class CellGroup:
    """Cells of one size, with their precomputed sample indices.

    Attributes:
        height, width: cell size in pixels.
        tops, lefts: (K,) cell positions.
        leads: (K,) lead index of each cell.
        b_lo: (K, W+1) int64 left sample of each column boundary (for linear interpolation).
        b_frac: (K, W+1) float32 fraction towards ``b_lo + 1``.
        inner: (M, K, W) int64 indices of samples inside each column, padded with the column's
            first inside sample.
        inner_ok: (M, K, W) bool, False at padding; only set when some column has no sample
            inside (then padding must be masked), else ``None``.
        pixel0: (K, W) int64 flat index (``row * S + column``) of each column's top pixel.
    """

    height: int
    width: int
    tops: np.ndarray
    lefts: np.ndarray
    leads: np.ndarray
    b_lo: np.ndarray
    b_frac: np.ndarray
    inner: np.ndarray
    inner_ok: np.ndarray | None
    pixel0: np.ndarray


@functools.lru_cache(maxsize=32)
def plan(layout: Layout, T: int) -> tuple[CellGroup, ...]:  # noqa: N803 - the project's letter
    """Precompute the sampling plan of ``layout`` for windows of ``T`` samples (cached)."""
    if T < 2:
        raise SignalError(f"a window needs at least 2 samples per lead to draw, got T={T}")
    sizes: dict[tuple[int, int], list] = {}
    for cell in layout.cells:
        sizes.setdefault((cell.height, cell.width), []).append(cell)
    groups = []
    last = T - 1
    for (h, w), cells in sizes.items():
        # Sample positions: sample n sits at position n; the window spans [0, T), clamped at T-1.
        start = np.array([c.t0 * T for c in cells])[:, None]
        step = np.array([(c.t1 - c.t0) * T / w for c in cells])[:, None]
        bounds = np.clip(start + step * np.arange(w + 1)[None, :], 0.0, last)  # (K, W+1)
        b_lo = np.minimum(np.floor(bounds), last - 1).astype(np.int64)
        b_frac = (bounds - b_lo).astype(np.float32)
        first = np.ceil(bounds[:, :-1] - 1e-9).astype(np.int64)  # (K, W)
        stop = np.floor(bounds[:, 1:] + 1e-9).astype(np.int64)
        m = int(math.ceil(float(step.max()))) + 1
        inner = first[None] + np.arange(m)[:, None, None]  # (M, K, W)
        ok = (inner <= stop[None]) & (inner <= last)
        # Padding repeats the column's first inside sample (harmless to a min/max); columns with
        # no sample inside (more pixels than samples) need the mask instead.
        has_inner = first <= np.minimum(stop, last)
        inner = np.minimum(np.where(ok, inner, first[None]), last)
        inner_ok = None if has_inner.all() else ok
        tops = np.array([c.top for c in cells])
        lefts = np.array([c.left for c in cells])
        pixel0 = (tops * layout.image_size + lefts)[:, None] + np.arange(w)[None, :]
        groups.append(
            CellGroup(
                height=h,
                width=w,
                tops=tops,
                lefts=lefts,
                leads=np.array([c.lead for c in cells]),
                b_lo=b_lo,
                b_frac=b_frac,
                inner=inner,
                inner_ok=inner_ok,
                pixel0=pixel0.astype(np.int64),
            )
        )
    return tuple(groups)


def check_batch(shape: tuple[int, ...]) -> tuple[int, int]:
    """Validate a (B, 12, T) batch shape and return (B, T), or raise :class:`SignalError`."""
    if len(shape) != 3 or shape[1] != 12:
        raise SignalError(f"render expects a (B, 12, T) batch of leads in mV, got shape {tuple(shape)}")
    return int(shape[0]), int(shape[2])
