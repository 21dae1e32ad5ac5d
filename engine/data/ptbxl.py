"""Read the PTB-XL 12-lead ECG database into labelled :class:`~engine.data.items.Item` lists.

PTB-XL (Wagner et al., "PTB-XL, a large publicly available electrocardiography dataset",
Scientific Data 7, 154 (2020); CC BY 4.0) ships ``ptbxl_database.csv`` (one row per ECG:
``ecg_id``, ``patient_id``, ``scp_codes`` as a dict literal of SCP-ECG statement -> likelihood,
``strat_fold`` 1-10, ``filename_hr`` for the 500 Hz record), ``scp_statements.csv`` (per statement
its ``diagnostic_class``: NORM, MI, STTC, CD, HYP) and ``records500/``.

Labelling rules (documented in docs/DATA.md):

* MI (label 1): any key of ``scp_codes`` whose ``diagnostic_class`` is ``"MI"`` (any likelihood,
  including 0 = "unknown likelihood" statements, as the brief of the dataset's authors does for
  the diagnostic superclasses).
* NORM flag: the ``NORM`` statement is present.
* A record is *labelled* when it has at least one diagnostic statement (any ``diagnostic_class``);
  records with only rhythm/form statements are left out, as in the PTB-XL benchmark.
* Splits use ``strat_fold`` (the authors' patient-wise stratified folds; fold 9 and 10 are the
  recommended validation and test folds of the full database) and are re-checked for patient
  overlap.
"""

from __future__ import annotations

import ast
import logging
from pathlib import Path

import pandas as pd

from engine.config import SUPERCLASSES
from engine.data.items import Item
from engine.errors import DatasetError

log = logging.getLogger(__name__)

DATABASE_CSV = "ptbxl_database.csv"
STATEMENTS_CSV = "scp_statements.csv"


def is_ptbxl(folder: str | Path) -> bool:
    """True when ``folder`` looks like a PTB-XL folder (has both CSV files)."""
    p = Path(folder)
    return (p / DATABASE_CSV).is_file() and (p / STATEMENTS_CSV).is_file()


def _parse_codes(text: object, row: int) -> dict[str, float]:
    try:
        codes = ast.literal_eval(str(text))
    except (ValueError, SyntaxError) as exc:
        raise DatasetError(f"{DATABASE_CSV} row {row}: scp_codes {text!r} is not a dict literal") from exc
    if not isinstance(codes, dict):
        raise DatasetError(f"{DATABASE_CSV} row {row}: scp_codes {text!r} is not a dict")
    return {str(k): float(v) for k, v in codes.items()}


def diagnostic_classes(folder: str | Path) -> dict[str, str]:
    """SCP statement -> diagnostic class (only statements that have one)."""
    path = Path(folder) / STATEMENTS_CSV
    if not path.is_file():
        raise DatasetError(f"PTB-XL statements file not found: {path}")
    st = pd.read_csv(path, index_col=0)
    if "diagnostic_class" not in st.columns:
        raise DatasetError(f"{path} has no 'diagnostic_class' column (columns: {list(st.columns)})")
    st = st[st["diagnostic_class"].notna()]
    return {str(k): str(v) for k, v in st["diagnostic_class"].items()}


def superclass_flags(codes: dict[str, float], classes: dict[str, str]) -> tuple[int, int, int, int, int]:
    """(NORM, MI, STTC, CD, HYP) flags: 1 when any statement of that diagnostic class is present."""
    diag = {classes[c] for c in codes if c in classes}
    return tuple(int(k in diag) for k in SUPERCLASSES)  # type: ignore[return-value]


def label_codes(codes: dict[str, float], classes: dict[str, str]) -> tuple[bool, bool, bool]:
    """(is_mi, is_norm, is_labelled) for one record's SCP codes (rules in the module docstring)."""
    diag = [classes[c] for c in codes if c in classes]
    return "MI" in diag, "NORM" in codes, bool(diag)


def read_ptbxl(folder: str | Path, *, rate: int = 500, require_files: bool = True) -> list[Item]:
    """Read a PTB-XL folder into labelled items (unlabelled records are dropped).

    Args:
        folder: the folder holding ``ptbxl_database.csv``, ``scp_statements.csv`` and ``records500/``.
        rate: 500 (``filename_hr``) or 100 (``filename_lr``).
        require_files: skip rows whose WFDB header is absent (a partial download or a sample); when
            False, keep them (for label-only use).

    Raises:
        DatasetError: missing files or columns, or malformed ``scp_codes``.
    """
    root = Path(folder)
    db_path = root / DATABASE_CSV
    if not db_path.is_file():
        raise DatasetError(f"PTB-XL database file not found: {db_path}")
    classes = diagnostic_classes(root)
    db = pd.read_csv(db_path)
    col = {500: "filename_hr", 100: "filename_lr"}.get(rate)
    if col is None:
        raise DatasetError(f"rate={rate}: PTB-XL has records at 500 or 100 Hz")
    need = {"ecg_id", "patient_id", "scp_codes", "strat_fold", col}
    if need - set(db.columns):
        raise DatasetError(f"{db_path} lacks columns {sorted(need - set(db.columns))}")
    items: list[Item] = []
    skipped_files = skipped_unlabelled = 0
    for row, rec in enumerate(db.itertuples(index=False), start=2):  # row 1 is the header
        codes = _parse_codes(rec.scp_codes, row)
        is_mi, is_norm, labelled = label_codes(codes, classes)
        if not labelled:
            skipped_unlabelled += 1
            continue
        path = root / str(getattr(rec, col))
        if require_files and not path.with_suffix(".hea").is_file():
            skipped_files += 1
            continue
        items.append(
            Item(
                record_id=f"ptbxl-{int(rec.ecg_id)}",
                path=path,
                label=int(is_mi),
                patient_id=f"ptbxl-p{int(float(rec.patient_id))}",
                fold=int(rec.strat_fold),
                norm=is_norm,
                source="ptbxl",
                ecg_id=int(rec.ecg_id),
                classes=superclass_flags(codes, classes),
            )
        )
    log.info(
        "PTB-XL: %d labelled records (%d MI, %d NORM); skipped %d without diagnostic statements, %d without files",
        len(items), sum(it.label for it in items), sum(bool(it.norm) for it in items), skipped_unlabelled, skipped_files,
    )
    if not items:
        raise DatasetError(f"no usable labelled records in {root}")
    return items
