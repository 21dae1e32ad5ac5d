"""The validation report: ``validate.json``, ``report.md``, ``report.html`` and their plots.

Plots (matplotlib, Agg backend): ROC of the live per-window probabilities against the window
labels (:func:`stream.tools.validate_metrics.window_label`), a histogram of the alert delays of the
detected MI beds, and per-bed timelines (probability over stream time with the start threshold,
MI onset and alert starts/ends), the view a clinician reviewing the run would want.
"""

from __future__ import annotations

import base64
import html
import json
import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np

log = logging.getLogger(__name__)

MAX_TIMELINES = 24
HEADLINE = ("sensitivity", "specificity", "ppv", "false_alerts_per_bed_day", "alarm_burden_per_bed_day", "mi_alarm_burden_per_bed_day",
            "median_alert_delay_s", "window_auroc", "parity_max_abs_diff", "parity_max_abs_diff_live_labs",
            "windows", "records", "beds")


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1e-2 and v != 0 else f"{v:.3f}"
    return str(v)


def plot_roc(y: Sequence[int], p: Sequence[float], threshold: float, path: Path) -> Path | None:
    """ROC of the window probabilities, with the operating point at ``threshold``; None if one class only."""
    from engine.metrics import auroc, roc_curve

    ya, pa = np.asarray(y, np.int64), np.asarray(p, np.float64)
    if ya.size == 0 or ya.min() == ya.max():
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fpr, tpr, _ = roc_curve(ya, pa)
    pred = pa >= threshold
    sens = (pred & (ya == 1)).sum() / max(1, (ya == 1).sum())
    fp = (pred & (ya == 0)).sum() / max(1, (ya == 0).sum())
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot(fpr, tpr, lw=2, label=f"live windows, AUROC {auroc(ya, pa):.3f}")
    ax.plot([0, 1], [0, 1], ls=":", c="grey")
    ax.plot([fp], [sens], "o", c="C3", label=f"threshold {threshold:.2f}")
    ax.set_xlabel("1 - specificity (windows)")
    ax.set_ylabel("sensitivity (windows)")
    ax.set_title(f"ROC of per-window MI probability (n={ya.size})")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_delays(delays: Sequence[float], path: Path) -> Path | None:
    """Histogram of alert delays (s of patient time from MI onset); None when nothing was detected."""
    if not delays:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.hist(delays, bins=max(5, min(30, len(delays))), color="C0", edgecolor="white")
    ax.axvline(float(np.median(delays)), c="C3", ls="--", label=f"median {np.median(delays):.1f} s")
    ax.set_xlabel("alert delay from MI onset (s, stream time)")
    ax.set_ylabel("MI beds")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_timelines(per_bed: list[dict[str, Any]], alerts: list[dict[str, Any]], threshold: float, path: Path) -> Path | None:
    """Per-bed probability over time, threshold, onset and alert events (at most :data:`MAX_TIMELINES` beds)."""
    rows = [r for r in per_bed if r.get("timeline")]
    if not rows:
        return None
    rows = sorted(rows, key=lambda r: (not r["mi"], r["bed_id"]))[:MAX_TIMELINES]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(rows)
    fig, axes = plt.subplots(n, 1, figsize=(8, 0.9 * n + 0.8), sharex=True, squeeze=False)
    for ax, r in zip(axes[:, 0], rows):
        t, p = np.asarray(r["timeline"], np.float64).T
        ax.plot(t, p, lw=1.4, c="C3" if r["mi"] else "C0")
        ax.axhline(threshold, c="grey", ls=":", lw=1)
        if r["mi"]:
            ax.axvline(max(0.0, r.get("mi_onset_s") or 0.0), c="k", ls="--", lw=1)
        for a in alerts:
            if a["bed_id"] == r["bed_id"] and a["type"] == "mi" and a["phase"] in ("start", "end"):
                ax.plot([a["t_s"]], [1.02], "v" if a["phase"] == "start" else "^", c="C1" if a["phase"] == "start" else "C2", ms=6)
        ax.set_ylim(-0.05, 1.1)
        label = f"{r['bed_id']} {'MI' if r['mi'] else ''}"
        ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=7)
        ax.tick_params(labelsize=7)
    axes[-1, 0].set_xlabel("stream time (s); dashed = MI onset, dotted = start threshold, orange v = alert start, green ^ = end")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def markdown(summary: dict[str, Any], plots: dict[str, Path]) -> str:
    """The report as Markdown (plots referenced by file name)."""
    lines = [f"# MIRAGE validation through the live system: {summary.get('source', '')}", "",
             f"Model {summary.get('model')} {summary.get('model_version')} (checkpoint {str(summary.get('checkpoint_sha256'))[:12]}), "
             f"backend {summary.get('backend')}, replay speed {summary.get('speed')}x; "
             f"{summary.get('beds')} beds, {summary.get('windows')} windows, {summary.get('alert_events')} alert events.", "",
             "| metric | value |", "| --- | --- |"]
    lines += [f"| {k} | {_fmt(summary.get(k))} |" for k in HEADLINE]
    lines += ["", f"Parity target {summary.get('parity_target')}: **{'met' if summary.get('parity_ok') else 'NOT met'}** "
              f"({summary.get('windows_signal_identical')} of {summary.get('live_windows')} windows bit-identical to the offline "
              f"windows, {summary.get('windows_labs_identical')} with identical labs).", ""]
    for name, p in plots.items():
        lines += [f"![{name}]({p.name})", ""]
    lines += ["## Per bed", "", "| bed | record | MI | onset s | windows | max p | detected | delay s | false alerts | false/bed-day | burden/bed-day |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in summary.get("per_bed", []):
        lines.append(f"| {r['bed_id']} | {r['record']} | {_fmt(r['mi'])} | {_fmt(r['mi_onset_s'])} | {r['windows']} | "
                     f"{_fmt(r['max_probability'])} | {_fmt(r['detected'])} | {_fmt(r['alert_delay_s'])} | {r['false_alerts']} | "
                     f"{_fmt(r['false_alerts_per_bed_day'])} | {_fmt(r['alarm_burden_per_bed_day'])} |")
    return "\n".join(lines) + "\n"


def to_html(md_text: str, plots: dict[str, Path]) -> str:
    """A self-contained HTML page (plots inlined) from the Markdown report's content."""
    body: list[str] = []
    in_table = False
    for line in md_text.splitlines():
        if line.startswith("|"):
            cells = [html.escape(c.strip()) for c in line.strip("|").split("|")]
            if set("".join(cells)) <= set("- "):
                continue
            if not in_table:
                body.append("<table>")
                in_table = True
                body.append("<tr>" + "".join(f"<th>{c}</th>" for c in cells) + "</tr>")
            else:
                body.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
            continue
        if in_table:
            body.append("</table>")
            in_table = False
        if line.startswith("!["):
            name = line[2:line.index("]")]
            data = base64.b64encode(plots[name].read_bytes()).decode()
            body.append(f'<p><img alt="{html.escape(name)}" src="data:image/png;base64,{data}"></p>')
        elif line.startswith("## "):
            body.append(f"<h2>{html.escape(line[3:])}</h2>")
        elif line.startswith("# "):
            body.append(f"<h1>{html.escape(line[2:])}</h1>")
        elif line.strip():
            body.append(f"<p>{html.escape(line).replace('**', '')}</p>")
    if in_table:
        body.append("</table>")
    style = ("body{font-family:sans-serif;max-width:1000px;margin:2em auto}table{border-collapse:collapse;font-size:13px}"
             "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}img{max-width:100%}")
    return f"<!doctype html><html><head><meta charset='utf-8'><title>MIRAGE validation</title><style>{style}</style></head><body>{''.join(body)}</body></html>"


def write_report(summary: dict[str, Any], alerts: list[dict[str, Any]], out_dir: Path,
                 window_labels: tuple[list[int], list[float]] | None = None) -> dict[str, Path]:
    """Write validate.json, report.md, report.html and the plots; return the written paths by name."""
    out_dir.mkdir(parents=True, exist_ok=True)
    threshold = float(summary.get("threshold") or 0.5)
    plots: dict[str, Path] = {}
    if window_labels is not None:
        p = plot_roc(window_labels[0], window_labels[1], threshold, out_dir / "roc.png")
        if p:
            plots["roc"] = p
    delays = [r["alert_delay_s"] for r in summary.get("per_bed", []) if r.get("alert_delay_s") is not None]
    p = plot_delays(delays, out_dir / "alert_delays.png")
    if p:
        plots["alert delays"] = p
    p = plot_timelines(summary.get("per_bed", []), alerts, threshold, out_dir / "timelines.png")
    if p:
        plots["timelines"] = p
    files = {"json": out_dir / "validate.json", "md": out_dir / "report.md", "html": out_dir / "report.html"}
    files["json"].write_text(json.dumps({**summary, "alerts": alerts}, indent=1))
    md_text = markdown(summary, plots)
    files["md"].write_text(md_text)
    files["html"].write_text(to_html(md_text, plots))
    log.info("validation report written to %s", out_dir)
    return {**files, **plots}
