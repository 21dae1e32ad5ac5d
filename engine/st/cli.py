"""``mirage measure``: ST level per lead of recorded ECGs, as a CSV and optional median-beat plots.

Records are read like ``mirage evaluate`` reads them (:func:`engine.data.wfdb_io.read_record`,
leads mapped by name with :func:`engine.signal.leads.to_standard_leads`, or resampled to the
stream's model rate with :func:`engine.pipeline.to_model_rate` under ``--rate model``): WFDB
records, PTB-XL folders and manifests. ``--validate`` reproduces the numbers of docs/ST.md.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import sys
import textwrap
from pathlib import Path

import numpy as np

from engine.config import LEADS
from engine.errors import MirageError
from engine.st.measure import WINDOW_FLAGS, StMeasurement, measure_st

log = logging.getLogger(__name__)

COLUMNS = ("record", "lead", "st_j60_uv", "st_j80_uv", "st_j60_mm", "hr_bpm", "qrs_ms", "n_beats", "fs", "quality")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mirage measure",
        description=textwrap.fill(
            "Measure the ST level of every lead of 12-lead ECG records: beats are detected on all leads, the "
            "median beat of the clean beats is delineated on one QRS onset and J point common to all leads, "
            "and ST is read at J+60 ms and J+80 ms against the PR-segment baseline (AHA/ACC/HRS 2009), in uV "
            "(100 uV = 1 mm at standard gain). Writes one CSV row per record and lead with the columns "
            + ", ".join(COLUMNS) + ". 'quality' lists why a value cannot be trusted: window flags "
            + ", ".join(WINDOW_FLAGS) + " and lead flags missing:L, flat:L, noisy:L (that lead's values are empty). "
            "With --validate, measures simulated patients against their known ST and the PTB-XL sample "
            "(lead physics, ST depression AUROC) and writes OUT/validation.json.", width=100
        ),
        epilog=("examples: mirage measure ../shared/data/ptbxl-sample/records500/00000/00001_hr --out st.csv --png plots/\n"
                "          mirage measure ../shared/data/ptbxl-sample --out st.csv --rate model\n"
                "          mirage measure --validate --data ../shared/data/ptbxl-sample --out runs/st-validation"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("records", nargs="*", type=Path, help="WFDB records (with or without .hea), PTB-XL folders or manifests")
    p.add_argument("--out", type=Path, required=True, help="CSV to write (with --validate: a folder)")
    p.add_argument("--png", type=Path, metavar="DIR", help="also draw each record's median beats with J point and ST marked into DIR")
    p.add_argument("--rate", choices=("native", "model"), default="native",
                   help="measure at the record's own rate, or resampled to the stream's model rate (100 Hz) (default: native)")
    p.add_argument("--offset-s", type=float, default=0.0, help="start of the measured window in each record, seconds (default: 0)")
    p.add_argument("--window-s", type=float, default=10.0, help="length of the measured window, seconds (default: 10)")
    p.add_argument("--validate", action="store_true", help="run the validation of docs/ST.md instead of measuring records")
    p.add_argument("--data", type=Path, help="with --validate: a PTB-XL folder with ptbxl_database.csv (skipped when absent)")
    p.add_argument("--patients", type=int, default=200, help="with --validate: simulated patients per noise level (default: 200)")
    return p


def expand(paths: list[Path]) -> list[tuple[str, Path]]:
    """``(record id, WFDB path)`` of every record named: a record, a PTB-XL folder or a manifest.

    Raises:
        DatasetError: a folder that is neither PTB-XL nor a manifest, or a malformed one.
    """
    from engine.data.manifest import find_manifest, read_manifest
    from engine.data.ptbxl import is_ptbxl, read_ptbxl
    from engine.data.wfdb_io import record_base
    from engine.errors import DatasetError

    out: list[tuple[str, Path]] = []
    for p in paths:
        if p.is_dir() and is_ptbxl(p):
            out += [(it.record_id, it.path) for it in read_ptbxl(p)]
        elif p.is_dir() or p.suffix.lower() == ".csv":
            if find_manifest(p) is None:
                raise DatasetError(f"{p} is neither a WFDB record, a PTB-XL folder nor a manifest")
            out += [(it.record_id, it.path) for it in read_manifest(p)]
        else:
            base = record_base(p)
            out.append((base.name, base))
    return out


def measure_record(path: Path, rate: str, offset_s: float, window_s: float) -> StMeasurement:
    """Read one WFDB record and measure ``window_s`` seconds of it from ``offset_s``.

    Raises:
        DatasetError, SignalError: unreadable record, unknown leads, too short.
    """
    from engine.config import MirageConfig
    from engine.data.wfdb_io import read_record
    from engine.pipeline import to_model_rate
    from engine.signal.leads import to_standard_leads

    rec = read_record(path)
    if rate == "model":
        cfg = MirageConfig()
        x, fs = to_model_rate(rec.signal, rec.fs, rec.leads, cfg, allow_missing=True), float(cfg.fs)
    else:
        x, fs = to_standard_leads(rec.signal, rec.leads, allow_missing=True), rec.fs
    start = int(round(max(0.0, offset_s) * fs))
    return measure_st(x[:, start : start + int(round(window_s * fs))], fs)


def rows_of(record: str, m: StMeasurement) -> list[dict[str, object]]:
    """The CSV rows of one measurement, one per lead."""
    window = [q for q in m.quality if ":" not in q]

    def num(v: float, nd: int = 1) -> str:
        return f"{v:.{nd}f}" if np.isfinite(v) else ""

    rows = []
    for k, lead in enumerate(LEADS):
        q = window + [f for f in m.quality if f.endswith(f":{lead}")]
        rows.append({"record": record, "lead": lead, "st_j60_uv": num(m.st_j60_uv[k]), "st_j80_uv": num(m.st_j80_uv[k]),
                     "st_j60_mm": num(m.st_j60_uv[k] / 100.0, 2), "hr_bpm": num(m.hr_bpm), "qrs_ms": num(m.qrs_ms),
                     "n_beats": m.n_beats, "fs": num(m.fs, 0), "quality": ";".join(q)})
    return rows


def _measure(args: argparse.Namespace) -> int:
    from engine.st.plot import plot_median_beats

    records = expand(args.records)
    if not records:
        print("mirage measure: give at least one record, PTB-XL folder or manifest", file=sys.stderr)
        return 2
    failed = 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS)
        writer.writeheader()
        for name, path in records:
            try:
                m = measure_record(path, args.rate, args.offset_s, args.window_s)
            except MirageError as exc:
                print(f"mirage measure: {name}: {exc}", file=sys.stderr)
                failed += 1
                continue
            writer.writerows(rows_of(name, m))
            if args.png is not None and m.median_beats.shape[1]:
                plot_median_beats(m, args.png / f"{name}.png", title=name)
    print(json.dumps({"records": len(records), "measured": len(records) - failed, "failed": failed, "out": str(args.out)}))
    return 1 if failed else 0


def _validate(args: argparse.Namespace) -> int:
    from engine.st.report import run_validation

    summary = run_validation(args.out, data=args.data, patients=args.patients)
    print(json.dumps(summary, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    """``mirage measure``: 0 when every record was measured, 1 when some failed, 2 on bad options."""
    args = parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        return _validate(args) if args.validate else _measure(args)
    except MirageError as exc:
        print(f"mirage measure: {exc}", file=sys.stderr)
        return 2
