"""The model image layout: where each lead is drawn and at what calibrated scale.

A standard 3x4 ECG page (IEC 60601-2-25 / AHA: 25 mm/s, 10 mm/mV) squeezed into 224 px gives about
1 px per mm, i.e. 0.1 mV and 45 ms per pixel: a 1 mm (0.1 mV) ST shift moves the trace by one
pixel, which a 16 px ViT patch barely sees. MIRAGE's model image therefore uses a **6x2 layout**
with its own calibrated scale (see ``docs/RENDERER.md`` for the measured comparison):

* 6 rows x 2 columns of cells, each cell 37 px tall and 112 px wide, with a 1 px margin above
  and below (6 * 37 + 2 = 224).
* Left column: limb leads I, II, III, aVR, aVL, aVF over the first half of the window;
  right column: V1-V6 over the second half (the time-sequential convention of paper ECGs).
* Vertical scale 20 px/mV (0.05 mV per pixel; equivalent to 2 px per mm at 10 mm/mV): a 0.1 mV
  ST shift moves the trace 2 px, twice the 3x4 page.
* 0 mV sits 21.5 px below the cell top (the centre of the cell's row 21), so a cell shows
  +1.075 mV .. -0.775 mV; excursions beyond are clipped at the cell edge (R and S peaks may be
  cut, the ST segment and T wave are kept).
* Time base: each cell shows ``T/2`` samples over 112 px; for the 10 s window that is 5 s, i.e.
  22.4 px/s (0.896 px per mm at 25 mm/s, 44.6 ms per pixel).
* Trace: white ink on a black background (value = ink coverage in [0, 1]); line width 1 px with
  exact area anti-aliasing; no grid (the grid belongs to the paper rendering for people).

A second layout, :data:`PAGE_3X4`, reproduces the classic page at the same image size; it exists
only to measure the difference (``engine.render.validation``).
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.config import LEADS
from engine.errors import ConfigError


@dataclass(frozen=True)
class Cell:
    """One rectangle of the image showing one lead over one fraction of the window.

    Attributes:
        lead: index into :data:`engine.config.LEADS`.
        top: first pixel row of the cell.
        left: first pixel column of the cell.
        height: rows in the cell.
        width: columns in the cell.
        t0: start of the shown segment as a fraction of the window (0..1).
        t1: end of the shown segment as a fraction of the window (0..1).
    """

    lead: int
    top: int
    left: int
    height: int
    width: int
    t0: float
    t1: float


@dataclass(frozen=True)
class Layout:
    """A complete image layout: size, cells, vertical scale, baseline and line width."""

    name: str
    image_size: int
    cells: tuple[Cell, ...]
    px_per_mv: float
    baseline_px: float  # 0 mV, in pixels below each cell's top edge
    line_width_px: float = 1.0

    def __post_init__(self) -> None:
        for c in self.cells:
            if c.top < 0 or c.left < 0 or c.top + c.height > self.image_size or c.left + c.width > self.image_size:
                raise ConfigError(f"layout {self.name!r}: cell {c} does not fit a {self.image_size} px image")
            if not 0.0 <= c.t0 < c.t1 <= 1.0:
                raise ConfigError(f"layout {self.name!r}: cell {c} has a bad time span {c.t0}..{c.t1}")
        for i, a in enumerate(self.cells):
            for b in self.cells[i + 1 :]:
                if a.top < b.top + b.height and b.top < a.top + a.height and a.left < b.left + b.width and b.left < a.left + a.width:
                    raise ConfigError(f"layout {self.name!r}: cells {a} and {b} overlap")
        if self.px_per_mv <= 0 or self.line_width_px <= 0:
            raise ConfigError(f"layout {self.name!r}: px_per_mv={self.px_per_mv}, line_width_px={self.line_width_px} must be > 0")

    @property
    def mv_per_px(self) -> float:
        return 1.0 / self.px_per_mv

    def cells_of(self, lead: str) -> list[Cell]:
        """Every cell that shows ``lead`` (by name)."""
        idx = LEADS.index(lead)
        return [c for c in self.cells if c.lead == idx]

    def y_of(self, cell: Cell, mv: float) -> float:
        """Continuous pixel coordinate (row i covers [i, i+1)) of ``mv`` millivolts in ``cell``."""
        return cell.top + self.baseline_px - mv * self.px_per_mv

    def px_per_s(self, cell: Cell, window_s: float) -> float:
        """Horizontal scale of ``cell`` for a window of ``window_s`` seconds."""
        return cell.width / ((cell.t1 - cell.t0) * window_s)

    def describe(self, window_s: float = 10.0) -> dict[str, float | str]:
        """The calibrated scale in pixels and in paper equivalents (25 mm/s, 10 mm/mV)."""
        c = self.cells[0]
        pps = self.px_per_s(c, window_s)
        return {
            "layout": self.name,
            "px_per_mv": self.px_per_mv,
            "mv_per_px": self.mv_per_px,
            "px_per_mm_vertical_at_10mm_per_mv": self.px_per_mv / 10.0,
            "px_per_s": pps,
            "ms_per_px": 1000.0 / pps,
            "px_per_mm_horizontal_at_25mm_per_s": pps / 25.0,
            "cell_height_px": c.height,
            "cell_width_px": c.width,
            "mv_range_up": self.baseline_px / self.px_per_mv,
            "mv_range_down": (c.height - self.baseline_px) / self.px_per_mv,
        }


def _grid_6x2() -> Layout:
    cells = []
    for lead in range(12):
        col, row = divmod(lead, 6)
        cells.append(Cell(lead=lead, top=1 + 37 * row, left=112 * col, height=37, width=112, t0=0.5 * col, t1=0.5 * (col + 1)))
    return Layout(name="6x2", image_size=224, cells=tuple(cells), px_per_mv=20.0, baseline_px=21.5)


def _page_3x4() -> Layout:
    # Classic page: rows (I aVR V1 V4), (II aVL V2 V5), (III aVF V3 V6) each 2.5 s, then a 10 s
    # rhythm strip of lead II; 56 px per row at ~1 px/mm -> 10 px/mV (0.1 mV per pixel).
    grid = (("I", "aVR", "V1", "V4"), ("II", "aVL", "V2", "V5"), ("III", "aVF", "V3", "V6"))
    cells = []
    for row, names in enumerate(grid):
        for col, name in enumerate(names):
            cells.append(Cell(lead=LEADS.index(name), top=56 * row, left=56 * col, height=56, width=56, t0=0.25 * col, t1=0.25 * (col + 1)))
    cells.append(Cell(lead=LEADS.index("II"), top=168, left=0, height=56, width=224, t0=0.0, t1=1.0))
    return Layout(name="3x4", image_size=224, cells=tuple(cells), px_per_mv=10.0, baseline_px=32.5)


GRID_6X2: Layout = _grid_6x2()
PAGE_3X4: Layout = _page_3x4()
DEFAULT_LAYOUT: Layout = GRID_6X2
LAYOUTS: dict[str, Layout] = {"6x2": GRID_6X2, "3x4": PAGE_3X4}


def get_layout(name: str) -> Layout:
    """Return a named layout or raise :class:`ConfigError` naming the choices."""
    try:
        return LAYOUTS[name]
    except KeyError:
        raise ConfigError(f"unknown layout {name!r}; choose one of {sorted(LAYOUTS)}") from None
