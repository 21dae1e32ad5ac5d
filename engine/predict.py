"""Score unlabelled ECG recordings with a checkpoint: one row per record (``mirage predict``).

Inputs are found by :func:`find_records` (WFDB records, DICOM 12-lead ECGs, manifests, PTB-XL
folders, plain folders) and read with :func:`engine.data.wfdb_io.read_record` (leads mapped by
name, extra signals ignored and flagged). Each record goes the stream's way: ``to_model_rate``,
10 s windows, :func:`engine.pipeline.model_inputs` (no labs: FiLM is the identity), one
:class:`engine.predictor.Predictor`. By default a record is scored on its first window; with
``hop_s`` every window of ``cfg.window_s`` seconds every ``hop_s`` seconds is scored (the stream's
2 s hop) and the record reports its most suspicious window.

The alarm follows the stream's rule for one window: probability at or above the checkpoint's
start threshold, on a window that is evaluable (at most ``max_bad_leads`` leads flagged,
IEC 60601-2-27 lead-off and quality checks of :mod:`engine.signal.quality`). The leads that drove
the score are the three largest of the model's ``lead_weights`` (CLS-to-lead attention).
A record that cannot be read or mapped to 12 leads gets a row with ``error`` set; the run goes on.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from engine.config import LEADS, MirageConfig
from engine.data.wfdb_io import EcgRecord, cut_window, read_record
from engine.errors import DatasetError, MirageError
from engine.prediction import Predictor
from engine.signal.leads import ignored_flags
from engine.signal.quality import assess

log = logging.getLogger(__name__)

TOP_LEADS = 3


@dataclass(frozen=True)
class RecordInput:
    """A record to score: its path and the id printed for it (relative to what the user named)."""

    record: str
    path: Path
    offset_s: float = 0.0


@dataclass
class PredictionRow:
    """One output row (CSV column order = field order)."""

    record: str
    path: str
    mi_probability: float | None = None
    alarm: bool | None = None
    threshold: float = 0.0
    top_leads: list[str] = field(default_factory=list)
    lead_weights: list[float] = field(default_factory=list)
    quality_flags: list[str] = field(default_factory=list)
    evaluable: bool | None = None
    extra_signals: list[str] = field(default_factory=list)
    format: str = ""
    fs: float | None = None
    duration_s: float | None = None
    window_start_s: float | None = None
    windows: int = 0
    backend: str = ""
    checkpoint_sha256: str = ""
    error: str = ""

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def _folder_records(folder: Path) -> list[RecordInput]:
    heads = {p.with_suffix("") for p in folder.rglob("*.hea")}
    dicoms = {p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in (".dcm", ".dicom")}
    return [RecordInput(p.relative_to(folder).as_posix(), p) for p in sorted(heads | dicoms)]


def _manifest_records(manifest: Path) -> list[RecordInput]:
    import pandas as pd

    df = pd.read_csv(manifest, dtype=str).fillna("")
    if "record" not in df.columns:
        raise DatasetError(f"{manifest}: a manifest needs a 'record' column; has {list(df.columns)}")
    out = []
    for row in df.to_dict("records"):
        rec = row["record"].strip().removesuffix(".hea")
        if not rec:
            continue
        start = row.get("window_start_s", "").strip()
        out.append(RecordInput(rec, manifest.parent / rec, float(start) if start else 0.0))
    return out


def find_records(paths: Sequence[str | Path]) -> list[RecordInput]:
    """The records named by ``paths``: record files, manifests, PTB-XL folders or plain folders.

    * a DICOM file, a WFDB ``.hea`` file or record path without extension: that record;
    * a ``.csv`` file or a folder holding ``manifest.csv``: its ``record`` column (labels optional);
    * a PTB-XL folder (``ptbxl_database.csv``): its records;
    * any other folder: every ``*.hea`` and ``*.dcm`` below it, sorted (none: a warning).

    Any other path is returned as a record, so that reading it fails in its own row.

    Raises:
        DatasetError: a manifest without a ``record`` column, or an unreadable PTB-XL folder.
    """
    from engine.data.manifest import find_manifest
    from engine.data.ptbxl import is_ptbxl, read_ptbxl

    out: list[RecordInput] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir() and is_ptbxl(p):
            out += [RecordInput(it.record_id, it.path) for it in read_ptbxl(p)]
        elif (p.is_dir() or p.suffix.lower() == ".csv") and find_manifest(p) is not None:
            out += _manifest_records(find_manifest(p))  # type: ignore[arg-type]
        elif p.is_dir():
            found = _folder_records(p)
            if not found:
                log.warning("%s: folder holds no WFDB (.hea) or DICOM (.dcm) records", p)
            out += found
        else:  # a record, or a path that is none: its row will say why it was not scored
            out.append(RecordInput(str(raw), p))
    return out


def window_starts(n_samples: int, fs: float, cfg: MirageConfig, hop_s: float | None) -> list[float]:
    """Window starts in seconds: ``[0]``, or every ``hop_s`` while a whole window fits."""
    if not hop_s or n_samples <= cfg.T:
        return [0.0]
    hop = max(1, int(round(hop_s * fs)))
    return [k / fs for k in range(0, n_samples - cfg.T + 1, hop)]


@dataclass
class _Pending:
    row: PredictionRow
    windows: np.ndarray  # (W, 12, T) raw mV at cfg.fs; a strided view for --all-windows, not a copy
    starts: list[float]
    probs: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    weights: np.ndarray = field(default_factory=lambda: np.zeros((0, len(LEADS)), np.float32))
    best: int = 0


def _prepare(item: RecordInput, cfg: MirageConfig, hop_s: float | None) -> tuple[_Pending | None, PredictionRow]:
    from engine.pipeline import to_model_rate

    row = PredictionRow(record=item.record, path=str(item.path))
    try:
        rec: EcgRecord = read_record(item.path)
        row.format, row.fs, row.duration_s = rec.source_format, rec.fs, round(rec.duration_s, 3)
        row.extra_signals = list(rec.extra_signals)
        x = to_model_rate(rec.signal, rec.fs, rec.leads, cfg)  # (12, S) at cfg.fs
        if hop_s and x.shape[1] > cfg.T:
            starts = window_starts(x.shape[1], cfg.fs, cfg, hop_s)
            hop = max(1, int(round(hop_s * cfg.fs)))
            view = np.lib.stride_tricks.sliding_window_view(x, cfg.T, axis=1)[:, ::hop]  # (12, W, T)
            windows = view.transpose(1, 0, 2)  # (W, 12, T)
        else:
            starts = [item.offset_s]
            windows = cut_window(x, cfg.fs, cfg, item.offset_s)[None]  # (1, 12, T)
    except MirageError as exc:
        row.error = str(exc)
        log.warning("record %s not scored: %s", item.record, exc)
        return None, row
    return _Pending(row, windows, starts), row


def _finish(p: _Pending, cfg: MirageConfig, threshold: float) -> None:
    p.best = best = int(np.argmax(p.probs))
    row = p.row
    report = assess(p.windows[best], cfg.fs)
    order = np.argsort(-p.weights[best])[:TOP_LEADS]
    row.mi_probability = round(float(p.probs[best]), 6)
    row.window_start_s = round(float(p.starts[best]), 3)
    row.windows = len(p.starts)
    row.top_leads = [LEADS[k] for k in order]
    row.lead_weights = [round(float(w), 4) for w in p.weights[best]]
    row.quality_flags = list(report.flags) + ignored_flags(row.extra_signals)
    row.evaluable = bool(report.evaluable)
    row.alarm = bool(report.evaluable and p.probs[best] >= threshold)


def _score(todo: list[_Pending], predictor: Predictor, batch_size: int) -> None:
    """Fill ``probs``/``weights`` of every pending record, ``batch_size`` windows per predictor call."""
    from engine.pipeline import model_inputs

    refs = [(p, j) for p in todo for j in range(len(p.starts))]
    probs: list[np.ndarray] = []
    weights: list[np.ndarray] = []
    for k in range(0, len(refs), batch_size):
        chunk = np.stack([p.windows[j] for p, j in refs[k:k + batch_size]]).astype(np.float32)  # (B, 12, T)
        inputs = model_inputs(chunk, predictor.config)
        pred = predictor.predict(inputs.ecg, inputs.image, inputs.labs, inputs.lab_mask)
        probs.append(pred.probs)
        weights.append(pred.lead_weights)
    all_p, all_w = np.concatenate(probs), np.concatenate(weights)
    k = 0
    for p in todo:
        n = len(p.starts)
        p.probs, p.weights = all_p[k:k + n], all_w[k:k + n]
        k += n


def predict_records(items: Iterable[RecordInput], predictor: Predictor, threshold: float, *, hop_s: float | None = None,
                    batch_size: int = 32, checkpoint_sha256: str = "") -> Iterator[tuple[PredictionRow, np.ndarray | None]]:
    """Score each record; yields ``(row, window)`` in input order.

    ``window`` is the scored (or, with ``hop_s``, the most suspicious) raw window (12, T) in mV
    at ``cfg.fs``, None when the record failed. Windows of several records share predictor calls
    of ``batch_size`` windows.
    """
    cfg = predictor.config
    pending: list[tuple[_Pending | None, PredictionRow]] = []

    def flush() -> Iterator[tuple[PredictionRow, np.ndarray | None]]:
        todo = [p for p, _ in pending if p is not None]
        if todo:
            _score(todo, predictor, batch_size)
            for p in todo:
                _finish(p, cfg, threshold)
        for p, row in pending:
            row.threshold, row.backend, row.checkpoint_sha256 = round(float(threshold), 6), predictor.name, checkpoint_sha256
            yield row, None if p is None else np.asarray(p.windows[p.best], dtype=np.float32)
        pending.clear()

    n_windows = 0
    for item in items:
        p, row = _prepare(item, cfg, hop_s)
        pending.append((p, row))
        n_windows += 0 if p is None else len(p.starts)
        if n_windows >= batch_size:
            yield from flush()
            n_windows = 0
    yield from flush()
