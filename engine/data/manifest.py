"""The generic dataset format: a manifest CSV of WFDB records plus an optional labs CSV.

Format (full description with examples in docs/DATA.md):

``manifest.csv`` - one row per record; required columns ``record`` (WFDB record path relative to
the manifest's folder, with or without ``.hea``, or a DICOM ECG file ``.dcm``), ``label`` (``1``/``0``, ``MI``/``other``,
``true``/``false``) and ``patient_id``; optional ``split`` (train/val/test), ``fold`` (integer),
``norm`` (0/1), ``sttc``/``cd``/``hyp`` (0/1: with ``norm`` and ``label`` the five PTB-XL
superclass flags that train the auxiliary heads), ``ecg_id`` (a PTB-XL ECG's id: the same ECG
given by two sources is used once), ``mi_onset_s`` (seconds into the record; an MI record's window starts there),
``window_start_s`` (explicit window start, wins over ``mi_onset_s``), ``age``, ``sex`` and any
other column (kept out of the model).

``labs.csv`` - one row per lab result; columns ``patient_id`` or ``record`` (which the result
belongs to), ``loinc``, ``value``, ``unit`` and optional ``time`` (ISO 8601 or seconds). Values are
converted to the schema's canonical units with :mod:`engine.labs`; per record and LOINC code the
latest result (by ``time``, then file order) is used - when times are seconds on the record's
clock (or a ``reported_s`` column gives when each result was published), only results available
by the end of the record's window count, so a window never sees a troponin drawn after it. Unknown LOINC codes are skipped with one
warning; an unconvertible unit or an implausible value is an error naming the row.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import pandas as pd

from engine.data.items import Item
from engine.data.wfdb_io import record_file
from engine.errors import DatasetError, LabError
from engine.labs import LAB_BY_LOINC, lab_feature

log = logging.getLogger(__name__)

MANIFEST_CSV = "manifest.csv"
LABS_CSV = "labs.csv"
_POSITIVE = {"1", "1.0", "mi", "true", "yes", "pos", "positive"}
_NEGATIVE = {"0", "0.0", "other", "norm", "normal", "false", "no", "neg", "negative", "non-mi", "no-mi"}


def parse_label(value: object, where: str) -> int:
    """1 for MI, 0 for anything else labelled; raise :class:`DatasetError` for blanks and unknowns."""
    text = str(value).strip().lower()
    if text in _POSITIVE:
        return 1
    if text in _NEGATIVE:
        return 0
    raise DatasetError(f"{where}: label {value!r} is not one of 1/0, MI/other, true/false")


def find_manifest(path: str | Path) -> Path | None:
    """The manifest CSV for ``path`` (a CSV file, or a folder holding ``manifest.csv``), else None."""
    p = Path(path)
    if p.is_file() and p.suffix.lower() == ".csv":
        return p
    if (p / MANIFEST_CSV).is_file():
        return p / MANIFEST_CSV
    return None


def _optional_float(value: object) -> float | None:
    if value is None or (isinstance(value, float) and math.isnan(value)) or str(value).strip() == "":
        return None
    return float(value)


def _time_key(value: object) -> float:
    """Sort key for a lab time: seconds, or an ISO timestamp as epoch seconds; blank sorts first."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or str(value).strip() in ("", "nan"):
        return -math.inf
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        ts = pd.Timestamp(str(value))
        if ts.tzinfo is None:
            ts = ts.tz_localize("UTC")
        return ts.timestamp()


LabRow = tuple[float, int, str, float, "float | None"]  # (sort key, file row, LOINC, canonical value, available at s)


def read_labs(path: str | Path) -> tuple[dict[str, list[LabRow]], dict[str, list[LabRow]]]:
    """Read a labs CSV into (by_patient, by_record): id -> results sorted oldest first.

    A result's *available* time is ``reported_s`` when that column exists, else ``time``, and
    only when it is a number (seconds on the record's clock); ISO timestamps sort but never
    filter.

    Raises:
        DatasetError: missing columns, a unit that cannot be converted or an implausible value.
    """
    p = Path(path)
    df = pd.read_csv(p, dtype={"patient_id": str, "record": str, "loinc": str, "unit": str, "time": str})
    missing = {"loinc", "value", "unit"} - set(df.columns)
    if missing or not ({"patient_id", "record"} & set(df.columns)):
        raise DatasetError(f"{p}: labs CSV needs columns loinc, value, unit and patient_id or record; has {list(df.columns)}")
    unknown: set[str] = set()
    by_patient: dict[str, list[LabRow]] = {}
    by_record: dict[str, list[LabRow]] = {}
    for i, r in enumerate(df.to_dict("records"), start=2):
        loinc = str(r["loinc"]).strip()
        if loinc not in LAB_BY_LOINC:
            unknown.add(loinc)
            continue
        try:
            value = lab_feature(loinc).to_canonical(float(r["value"]), str(r["unit"]))
            key = _time_key(r.get("time"))
        except (LabError, ValueError) as exc:
            raise DatasetError(f"{p} row {i}: {exc}") from exc
        avail = _numeric(r.get("reported_s")) if "reported_s" in df.columns else _numeric(r.get("time"))
        row: LabRow = (key, i, loinc, value, avail)
        rec, pid = _optional_str(r.get("record")), _optional_str(r.get("patient_id"))
        if rec is not None:
            by_record.setdefault(_strip_ext(rec), []).append(row)
        elif pid is not None:
            by_patient.setdefault(pid, []).append(row)
    if unknown:
        log.warning("%s: skipped results with LOINC codes outside the lab schema: %s", p.name, sorted(unknown))
    for table in (by_patient, by_record):
        for rows in table.values():
            rows.sort(key=lambda t: (t[0], t[1]))
    return by_patient, by_record


def labs_until(rows: list[LabRow], until_s: float) -> dict[str, float]:
    """Latest value per LOINC among ``rows`` available by ``until_s`` (rows without a numeric time always count)."""
    out: dict[str, float] = {}
    for _, _, loinc, value, avail in rows:  # oldest first: later results overwrite
        if avail is None or avail <= until_s:
            out[loinc] = value
    return out


def _numeric(value: object) -> float | None:
    try:
        v = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _optional_str(value: object) -> str | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    text = str(value).strip()
    return text or None


def _strip_ext(record: str) -> str:
    return record[: -len(".hea")] if record.endswith(".hea") else record


def read_manifest(path: str | Path, labs_path: str | Path | None = None, *, window_s: float = 10.0) -> list[Item]:
    """Read a manifest (file or folder) and its labs into items.

    Args:
        path: the manifest CSV, or a folder holding ``manifest.csv``.
        labs_path: a labs CSV; default ``labs.csv`` next to the manifest when it exists.
        window_s: the model window, so labs reported after a window's end are not given to it.

    Raises:
        DatasetError: missing file or columns, bad labels, a record whose header is absent.
    """
    manifest = find_manifest(path)
    if manifest is None:
        raise DatasetError(f"no manifest at {path} (expected a .csv file or a folder with {MANIFEST_CSV})")
    root = manifest.parent
    df = pd.read_csv(manifest, dtype={"record": str, "patient_id": str, "split": str, "label": str})
    missing = {"record", "label", "patient_id"} - set(df.columns)
    if missing:
        raise DatasetError(f"{manifest}: missing required column(s) {sorted(missing)}; has {list(df.columns)}")
    if labs_path is None and (root / LABS_CSV).is_file():
        labs_path = root / LABS_CSV
    by_patient, by_record = read_labs(labs_path) if labs_path is not None else ({}, {})
    items: list[Item] = []
    seen: set[str] = set()
    for i, r in enumerate(df.to_dict("records"), start=2):
        where = f"{manifest} row {i}"
        rec = _optional_str(r["record"])
        pid = _optional_str(r["patient_id"])
        if rec is None or pid is None:
            raise DatasetError(f"{where}: record and patient_id must not be blank")
        rec = _strip_ext(rec)
        if rec in seen:
            raise DatasetError(f"{where}: record {rec!r} is listed twice")
        seen.add(rec)
        wfdb_path = root / rec
        if not record_file(wfdb_path).is_file():
            kind = "DICOM file" if record_file(wfdb_path) == wfdb_path else "WFDB header"
            raise DatasetError(f"{where}: {kind} {record_file(wfdb_path)} not found")
        label = parse_label(r["label"], where)
        fold = _optional_float(r.get("fold"))
        norm = _optional_float(r.get("norm"))
        start = _optional_float(r.get("window_start_s"))
        onset = _optional_float(r.get("mi_onset_s"))
        if start is None:
            start = onset if (label == 1 and onset is not None) else 0.0
        until = float(start) + window_s
        flags = [_optional_float(r.get(k)) for k in ("sttc", "cd", "hyp")]
        classes = None
        if norm is not None and all(f is not None for f in flags):
            classes = (int(bool(norm)), label, *(int(bool(f)) for f in flags))  # NORM, MI, STTC, CD, HYP
        ecg_id = _optional_float(r.get("ecg_id"))
        labs = {**labs_until(by_patient.get(pid, []), until), **labs_until(by_record.get(rec, []), until)}  # a record's own results win
        items.append(
            Item(
                record_id=rec,
                path=wfdb_path,
                label=label,
                patient_id=pid,
                fold=None if fold is None else int(fold),
                split=_optional_str(r.get("split")),
                norm=None if norm is None else bool(norm),
                offset_s=float(start),
                labs=labs,
                source="manifest",
                ecg_id=None if ecg_id is None else int(ecg_id),
                classes=classes,  # type: ignore[arg-type]
            )
        )
    if not items:
        raise DatasetError(f"{manifest} lists no records")
    log.info("manifest %s: %d records (%d MI), %d with labs", manifest.name, len(items), sum(it.label for it in items), sum(bool(it.labs) for it in items))
    return items


def write_manifest(items: list[Item], path: str | Path) -> Path:
    """Write ``items`` as a manifest CSV (record paths relative to its folder); returns the path."""
    p = Path(path)
    root = p.parent
    rows = []
    for it in items:
        try:
            rel = it.path.resolve().relative_to(root.resolve())
        except ValueError:
            raise DatasetError(f"record {it.path} is not under the manifest folder {root}") from None
        rows.append({"record": rel.as_posix(), "label": it.label, "patient_id": it.patient_id, "split": it.split or "",
                     "fold": "" if it.fold is None else it.fold, "window_start_s": it.offset_s})
    pd.DataFrame(rows).to_csv(p, index=False)
    return p
