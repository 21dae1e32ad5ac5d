"""Datasets for MIRAGE: WFDB records, the PTB-XL database and the generic manifest format.

:func:`load_items` opens either kind of folder; :class:`MirageDataset` turns items into model
inputs through the shared pipeline (:mod:`engine.pipeline`).
"""

from __future__ import annotations

from pathlib import Path

from engine.data.items import Item, check_disjoint, class_counts, split_by_folds, split_by_name, split_by_patient
from engine.data.manifest import find_manifest, read_manifest
from engine.data.ptbxl import is_ptbxl, read_ptbxl
from engine.errors import DatasetError

__all__ = [
    "Item",
    "check_disjoint",
    "class_counts",
    "load_items",
    "read_manifest",
    "read_ptbxl",
    "split_by_folds",
    "split_by_name",
    "split_by_patient",
]


def load_items(data: str | Path, labs: str | Path | None = None) -> list[Item]:
    """Items of a PTB-XL folder or of a manifest (CSV file or folder with ``manifest.csv``).

    Raises:
        DatasetError: ``data`` is neither.
    """
    if is_ptbxl(data):
        return read_ptbxl(data)
    if find_manifest(data) is not None:
        return read_manifest(data, labs)
    raise DatasetError(f"{data} is neither a PTB-XL folder (ptbxl_database.csv + scp_statements.csv) nor a manifest (manifest.csv)")
