"""Median beats of the 12 leads with QRS onset, J point, the PR baseline and the ST readings marked.

Drawn as an ECG reader expects (AHA/ACC/HRS 2007, part I): the 12 leads in a 4 x 3 grid, 1 mm
per 0.1 mV on the vertical axis label, time from the beat fiducial in ms. matplotlib's Agg
backend, so it runs without a display (servers, CI).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from engine.config import LEADS
from engine.st.measure import DEFAULT_ST, StMeasurement, StSettings

# Standard 12-lead page order: columns I-III, aVR-aVF, V1-V3, V4-V6.
_GRID: tuple[tuple[str, ...], ...] = (("I", "aVR", "V1", "V4"), ("II", "aVL", "V2", "V5"), ("III", "aVF", "V3", "V6"))


def plot_median_beats(m: StMeasurement, path: str | Path, title: str = "", settings: StSettings = DEFAULT_ST) -> Path:
    """Write a PNG of the window's median beats with the fiducials and ST levels marked.

    Args:
        m: a measurement whose ``median_beats`` are filled (any measurement that found beats).
        path: the PNG to write (folders are created).
        title: a line above the grid (record name, heart rate, ...).
        settings: the settings the measurement used (for the beat's time axis).

    Returns:
        The path written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(3, 4, figsize=(11, 6.5), sharex=True, sharey=True)
    W = m.median_beats.shape[1]
    t_ms = 1000.0 * (np.arange(W) / m.fs - settings.pre_s)
    for r, row in enumerate(_GRID):
        for c, name in enumerate(row):
            ax = axes[r, c]
            k = LEADS.index(name)
            if W:
                ax.plot(t_ms, m.median_beats[k], color="black", lw=1.0)
            ax.axhline(0.0, color="tab:blue", lw=0.6, ls="--")  # PR baseline
            if np.isfinite(m.j_s):
                for t_s, color in ((m.onset_s, "tab:gray"), (m.j_s, "tab:red")):
                    ax.axvline(1000.0 * t_s, color=color, lw=0.7)
                for dt, val, marker in ((0.06, m.st_j60_uv[k], "o"), (0.08, m.st_j80_uv[k], "s")):
                    if np.isfinite(val):
                        ax.plot(1000.0 * (m.j_s + dt), val / 1000.0, marker, color="tab:red", ms=4)
            val = m.st_j60_uv[k]
            label = f"{name}  ST {val:+.0f} uV ({val / 100.0:+.1f} mm)" if np.isfinite(val) else f"{name}  ST n/a"
            ax.set_title(label, fontsize=8, loc="left")
            ax.grid(True, lw=0.3, alpha=0.5)
    for ax in axes[-1]:
        ax.set_xlabel("ms from QRS fiducial", fontsize=8)
    for ax in axes[:, 0]:
        ax.set_ylabel("mV", fontsize=8)
    head = title or "median beats"
    flags = ", ".join(m.quality) if m.quality else "ok"
    fig.suptitle(f"{head}   HR {m.hr_bpm:.0f} bpm   QRS {m.qrs_ms:.0f} ms   beats {m.n_beats}   quality: {flags}\n"
                 "grey: QRS onset, red line: J point, o: J+60 ms, s: J+80 ms, dashed: PR baseline", fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=80)
    plt.close(fig)
    return out
