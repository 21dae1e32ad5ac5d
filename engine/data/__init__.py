"""Datasets for MIRAGE: WFDB records, the PTB-XL database and the generic manifest format.

:func:`load_items` opens either kind of folder; :class:`MirageDataset` turns items into model
inputs through the shared pipeline (:mod:`engine.pipeline`).
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Sequence

from engine.data.items import Item, check_disjoint, class_counts, patient_bucket, split_by_folds, split_by_name, split_by_patient
from engine.data.manifest import find_manifest, read_manifest
from engine.data.ptbxl import is_ptbxl, read_ptbxl
from engine.errors import DatasetError

log = logging.getLogger(__name__)

HASH_FOLDS = 8  # folds made by patient hash when sources are combined or a source has none

__all__ = [
    "Item",
    "check_disjoint",
    "class_counts",
    "load_items",
    "load_sources",
    "with_patient_folds",
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


def _ptbxl_patient(patient_id: str) -> str:
    """One spelling of a PTB-XL patient id across readers ("ptbxl-p15709" and "15709.0" alike)."""
    text = patient_id.removeprefix("ptbxl-p")
    try:
        return f"ptbxl-p{int(float(text))}"
    except ValueError:
        return f"ptbxl-p{text}"


def load_sources(sources: Sequence[str | Path], labs: str | Path | None = None, *, n_folds: int = HASH_FOLDS) -> list[Item]:
    """Items of several PTB-XL folders and/or manifests, as one deduplicated, patient-consistent list.

    * A PTB-XL ECG (an item with ``ecg_id``) given by two sources - e.g. ``ptbxl-sample`` at 500 Hz
      and ``ptbxl100`` at 100 Hz - is kept once, from the first source that lists it (both rates go
      through :func:`engine.pipeline.to_model_rate`, so the model sees the same input either way).
    * PTB-XL patient ids are spelled one way across readers, so splits stay patient-wise across
      sources; PTB-XL record ids become ``ptbxl-<ecg_id>``.
    * With one source, its folds (PTB-XL ``strat_fold``, a manifest ``fold``) or their absence are
      kept. With several, every item gets fold ``1 + hash(patient) mod n_folds``
      (:func:`with_patient_folds`): a patient's records share one fold whichever source they came
      from.

    ``labs`` applies to manifests only (as in :func:`load_items`).

    Raises:
        DatasetError: no source, a source that is neither kind, or two records with one record id.
    """
    if not sources:
        raise DatasetError("no data source given")
    merged: list[Item] = []
    seen_ecg: set[int] = set()
    seen_rec: set[str] = set()
    dropped = 0
    for src in sources:
        for it in load_items(src, labs):
            if it.ecg_id is not None:
                if it.ecg_id in seen_ecg:
                    dropped += 1
                    continue
                seen_ecg.add(it.ecg_id)
                it = dataclasses.replace(it, record_id=f"ptbxl-{it.ecg_id}", patient_id=_ptbxl_patient(it.patient_id))
            if it.record_id in seen_rec:
                raise DatasetError(f"record id {it.record_id!r} appears in two sources ({src}); give each record once")
            seen_rec.add(it.record_id)
            merged.append(it)
    if dropped:
        log.info("dropped %d PTB-XL ECG(s) given by more than one source (ecg_id already read)", dropped)
    if len(sources) > 1:
        merged = with_patient_folds(merged, n_folds)
    return merged


def with_patient_folds(items: Sequence[Item], n_folds: int = HASH_FOLDS) -> list[Item]:
    """``items`` with fold ``1 + hash(patient) mod n_folds`` (patient-wise by construction)."""
    log.info("folds: 1 + hash(patient) mod %d over %d records", n_folds, len(items))
    return [dataclasses.replace(it, fold=1 + patient_bucket(it.patient_id, n_folds)) for it in items]
