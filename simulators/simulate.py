"""Write a scenario's cohort to disk as a dataset: WFDB records, a labs CSV and a manifest CSV.

The output folder is in the project's manifest format (``engine/data/manifest.py``,
``docs/DATA.md``), so ``mirage train --data``, ``mirage evaluate`` and ``mirage replay --data``
read it directly::

    OUT/
      manifest.csv   record,label,patient_id,bed_id,mi_onset_s,territory,diagnosis,confounders,
                     window_start_s,fs,duration_s
      labs.csv       record,patient_id,bed_id,loinc,value,unit,time,reported_s
      records/       <bed>.hea + <bed>.dat (WFDB format 16, 1 uV per count, 12 leads)
      paper/         <bed>.png, the first 10 s on ECG paper (with plots on)
      labs.png       troponin of every bed over the session (with plots on)

``mi_onset_s`` is seconds into the record (negative: the infarct began before the recording);
``time`` and ``reported_s`` of a lab result are its specimen and report time in seconds into the
record. ``window_start_s`` points an MI record's training window five minutes past onset (when
the ST elevation has developed), clipped to the record.
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.config import LEADS
from simulators.cohort import BedStream, build_cohort
from simulators.errors import SimulatorError
from simulators.scenario import Scenario

log = logging.getLogger(__name__)

MANIFEST_FIELDS = ("record", "label", "patient_id", "bed_id", "mi_onset_s", "territory", "diagnosis", "confounders",
                   "window_start_s", "fs", "duration_s")
LABS_FIELDS = ("record", "patient_id", "bed_id", "loinc", "value", "unit", "time", "reported_s")
WINDOW_S = 10.0
_BLOCK_S = 60.0


@dataclass
class SimulateResult:
    """Where things were written and how much."""

    out: Path
    manifest: Path
    labs_csv: Path
    records: int
    mi: int
    labs: int
    samples: int


def _window_start(onset: float | None, duration: float) -> float:
    if onset is None:
        return 0.0
    return float(np.clip(onset + 300.0, 0.0, max(0.0, duration - WINDOW_S)))


def write_record(bed: BedStream, records_dir: Path) -> tuple[str, np.ndarray]:
    """Generate the bed's whole signal and write it as a WFDB record; returns (name, first 10 s)."""
    import wfdb

    parts = []
    while True:
        x = bed.read(int(round(_BLOCK_S * bed.fs)))
        if x.shape[1] == 0:
            break
        parts.append(x)
    sig = np.concatenate(parts, axis=1).astype(np.float64) if parts else np.zeros((len(LEADS), 0))
    if sig.shape[1] == 0:
        raise SimulatorError(f"bed {bed.bed_id}: no samples to write")
    name = bed.bed_id
    if not all(ch.isalnum() or ch in "-_" for ch in name):
        raise SimulatorError(f"bed id {name!r} cannot be a WFDB record name (letters, digits, '-' and '_' only)")
    d = np.where(np.isfinite(sig), np.clip(np.rint(sig * 1000.0), -32767, 32767), -32768).astype(np.int16)
    wfdb.wrsamp(name, fs=bed.fs, units=["mV"] * len(LEADS), sig_name=list(LEADS), d_signal=d.T, fmt=["16"] * len(LEADS),
                adc_gain=[1000.0] * len(LEADS), baseline=[0] * len(LEADS), write_dir=str(records_dir),
                comments=[f"bed: {bed.bed_id}", f"label: {bed.truth.label}"])
    return name, sig[:, : int(round(WINDOW_S * bed.fs))]


def simulate(sc: Scenario, out: str | Path, *, plots: bool = True, progress: bool = False) -> SimulateResult:
    """Generate every bed of ``sc`` into ``out`` (created; existing files are overwritten)."""
    root = Path(out)
    rec_dir = root / "records"
    rec_dir.mkdir(parents=True, exist_ok=True)
    beds = build_cohort(sc)
    rows, lab_rows, firsts = [], [], []
    samples = 0
    it = beds
    if progress:
        from tqdm import tqdm

        it = tqdm(beds, unit="bed", desc=f"simulate {sc.name}")
    for bed in it:
        name, first = write_record(bed, rec_dir)
        firsts.append((bed, first))
        t = bed.truth
        samples += bed.n_samples
        rel = f"records/{name}"
        dur = bed.n_samples / bed.fs
        rows.append({"record": rel, "label": int(t.mi), "patient_id": t.patient_id, "bed_id": t.bed_id,
                     "mi_onset_s": "" if t.mi_onset_s is None else round(t.mi_onset_s, 3), "territory": t.territory,
                     "diagnosis": t.label, "confounders": ";".join(t.confounders),
                     "window_start_s": round(_window_start(t.mi_onset_s, dur), 3), "fs": bed.fs, "duration_s": dur})
        for d in bed.labs:
            lab_rows.append({"record": rel, "patient_id": t.patient_id, "bed_id": t.bed_id, "loinc": d.loinc, "value": d.value,
                             "unit": d.unit, "time": round(d.observed_s, 3), "reported_s": round(d.reported_s, 3)})
    manifest = root / "manifest.csv"
    labs_csv = root / "labs.csv"
    for path, fieldnames, data in ((manifest, MANIFEST_FIELDS, rows), (labs_csv, LABS_FIELDS, lab_rows)):
        with path.open("w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=fieldnames)
            w.writeheader()
            w.writerows(data)
    if plots:
        _plots(root, firsts, lab_rows)
    log.info("simulate %s: %d records (%d MI), %d lab results -> %s", sc.name, len(rows), sum(r["label"] for r in rows), len(lab_rows), root)
    return SimulateResult(root, manifest, labs_csv, len(rows), sum(int(r["label"]) for r in rows), len(lab_rows), samples)


def _plots(root: Path, firsts: list[tuple[BedStream, np.ndarray]], lab_rows: list[dict]) -> None:
    """ECG paper of each bed's first 10 s and one troponin-over-time figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paper = root / "paper"
    paper.mkdir(exist_ok=True)
    try:
        from engine.render import render_paper_png
    except ImportError:  # the renderer is optional for simulation
        render_paper_png = None
    if render_paper_png is not None:
        for bed, x in firsts:
            t = bed.truth
            title = f"{t.bed_id}  {t.label}{' ' + t.territory if t.territory else ''}"
            render_paper_png(np.nan_to_num(x), bed.fs, paper / f"{bed.bed_id}.png", title=title)
    tn = [r for r in lab_rows if r["loinc"] in ("89579-7", "67151-1")]
    if tn:
        fig, ax = plt.subplots(figsize=(9, 4.5))
        for bed_id in sorted({r["bed_id"] for r in tn}):
            pts = sorted((r["time"] / 3600.0, r["value"]) for r in tn if r["bed_id"] == bed_id)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=bed_id)
        ax.axhline(26.0, color="k", ls="--", lw=0.8, label="hs-cTnI 99th pct (26 ng/L)")
        ax.set_yscale("log")
        ax.set_xlabel("specimen time, hours from recording start")
        ax.set_ylabel("hs-troponin, ng/L")
        ax.set_title("Simulated troponin per bed")
        ax.legend(fontsize=7, ncol=2)
        fig.tight_layout()
        fig.savefig(root / "labs.png", dpi=100)
        plt.close(fig)
