"""``mirage predict``: score ECG recordings without labels (CSV, JSON lines, annotated ECG pages).

The door of :mod:`engine.predict` (see :mod:`mirage.cli`). Reads WFDB (any format ``wfdb`` reads,
FLAC 516 included) and DICOM 12-lead ECGs (PS3.3 12-Lead ECG IOD), maps leads by name (AHA/ACC/HRS
names and common aliases, case-insensitive) and ignores extra signals. Exit status: 0 every record
scored, 1 some record could not be scored (its row says why), 2 bad options, inputs or checkpoint.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Sequence, TextIO

from engine.errors import MirageError

if TYPE_CHECKING:
    import numpy as np

    from engine.predict import PredictionRow

log = logging.getLogger(__name__)

CSV_LIST_SEP = ";"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mirage predict",
        description=(
            "Score ECG recordings without labels with a MIRAGE checkpoint, through the stream's input pipeline. "
            "PATH may be a WFDB record (x or x.hea; FLAC format 516 too), a DICOM 12-lead ECG (.dcm), a manifest "
            "(CSV with a 'record' column, labels optional), a PTB-XL folder or any folder (every .hea and .dcm below it). "
            "One row per record: mi_probability, alarm (probability >= the checkpoint's threshold on an evaluable "
            "window), threshold, top_leads (the 3 leads with the largest model lead weights), quality_flags (per-lead "
            "missing/flat/saturated/noisy, ignored:NAME for extra signals such as Frank leads vx/vy/vz), backend, "
            "checkpoint_sha256, and error for a record that could not be scored (the run goes on)."
        ),
        epilog=(
            "examples:\n"
            "  mirage predict ../shared/data/ptbxl-sample/records500/00000 --out predictions.csv\n"
            "  mirage predict ecg.dcm --json\n"
            "  mirage predict manifest.csv --all-windows --png pages/\n"
            "exit status: 0 all scored, 1 some record failed, 2 bad options/inputs/checkpoint"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="records, DICOM files, manifests or folders")
    p.add_argument("--out", type=Path, help="CSV to write (default predictions.csv unless --json)")
    p.add_argument("--json", action="store_true", help="print one JSON object per record (JSON lines) on stdout")
    p.add_argument("--png", type=Path, metavar="DIR", help="write an annotated ECG-paper page per record that alarms")
    p.add_argument("--checkpoint", type=Path, help="checkpoint (.pt); default: the shipped engine/checkpoints/mirage-default.pt")
    p.add_argument("--backend", default="torch", help="inference backend: torch, torch-compile, onnxruntime, onnxruntime-int8-static, ... (default: torch)")
    p.add_argument("--threads", type=int, help="CPU threads for the backend")
    p.add_argument("--all-windows", action="store_true", help="score every 10 s window with a 2 s hop (as the stream does) and report the most suspicious one")
    p.add_argument("--hop", type=float, default=2.0, help="window hop in seconds with --all-windows (default: 2)")
    p.add_argument("--batch-size", type=int, default=32, help="windows per model call (default: 32)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def _csv_value(value: object) -> object:
    if isinstance(value, list):
        return CSV_LIST_SEP.join(str(v) for v in value)
    return "" if value is None else value


def _page_name(record: str) -> str:
    """A file name for a record's page: its last two path parts, e.g. ``00000_00077_hr``."""
    tail = "/".join(Path(record).parts[-2:])
    return re.sub(r"[^A-Za-z0-9._-]+", "_", tail).strip("_") or "record"


def _write_page(folder: Path, row: PredictionRow, window: np.ndarray, fs: float) -> Path:
    """ECG paper of the scored window, annotated with probability, threshold, top leads and flags."""
    from engine.render.paper import render_paper_png

    flags = ", ".join(row.quality_flags) or "none"
    title = (f"{row.record}   MI probability {row.mi_probability:.3f} >= threshold {row.threshold:.3f}   "
             f"top leads {', '.join(row.top_leads)}   window {row.window_start_s:g} s   flags {flags}")
    path = folder / f"{_page_name(row.record)}.png"
    render_paper_png(window, fs, path, title=title)
    return path


def run(args: argparse.Namespace, stdout: TextIO) -> int:
    """Score and write; returns the exit status (see the module docstring)."""
    from tqdm.auto import tqdm

    from engine.checkpoint import load_checkpoint
    from engine.predict import PredictionRow, find_records, predict_records
    from trt.backends import make_predictor

    items = find_records(args.paths)
    if not items:
        raise MirageError(f"no records found in {args.paths}")
    loaded = load_checkpoint(args.checkpoint)
    opts = {"threads": args.threads} if args.threads else {}
    predictor = make_predictor(args.backend, loaded, **opts)
    out_path = args.out if (args.out or args.json) else Path("predictions.csv")
    fields = list(PredictionRow.__dataclass_fields__)
    fh = writer = None
    if out_path is not None:
        out_path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(out_path, "w", newline="")
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
    if args.png:
        args.png.mkdir(parents=True, exist_ok=True)
    failed = alarms = 0
    bar = tqdm(total=len(items), desc="scoring", unit="rec", disable=args.no_progress, file=sys.stderr)
    try:
        rows = predict_records(items, predictor, loaded.threshold, hop_s=args.hop if args.all_windows else None,
                               batch_size=args.batch_size, checkpoint_sha256=loaded.sha256)
        for row, window in rows:
            bar.update(1)
            failed += bool(row.error)
            alarms += bool(row.alarm)
            if writer is not None:
                writer.writerow({k: _csv_value(v) for k, v in row.as_dict().items()})
            if args.json:
                print(json.dumps(row.as_dict()), file=stdout, flush=True)
            if args.png and row.alarm and window is not None:
                _write_page(args.png, row, window, predictor.config.fs)
    finally:
        bar.close()
        if fh is not None:
            fh.close()
    log.info("%d record(s): %d alarm(s), %d not scored%s", len(items), alarms, failed, f"; CSV {out_path}" if out_path else "")
    if failed:
        print(f"mirage predict: {failed} of {len(items)} record(s) could not be scored (see the error column)", file=sys.stderr)
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    """``mirage predict``: 0 all scored, 1 some record failed, 2 bad options, inputs or checkpoint."""
    args = parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    if args.batch_size < 1 or args.hop <= 0:
        print("mirage predict: --batch-size must be >= 1 and --hop > 0", file=sys.stderr)
        return 2
    try:
        return run(args, sys.stdout)
    except MirageError as exc:
        print(f"mirage predict: {exc}", file=sys.stderr)
        return 2
