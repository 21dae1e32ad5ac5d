"""Labelled record references and patient-wise splitting, shared by the PTB-XL and manifest readers.

A dataset is a list of :class:`Item`: where the record lives, its binary MI label, the patient it
belongs to and optional fold / split / labs. Splits are always made over *patients*, never over
records, so no patient's ECGs appear on both sides of a train/validation/test boundary (the
leakage PTB-XL's ``strat_fold`` was designed to prevent; Wagner et al., Scientific Data 7, 154,
2020, section "Usage Notes").
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from engine.errors import DatasetError


@dataclass(frozen=True)
class Item:
    """One labelled record.

    Attributes:
        record_id: a unique, non-identifying id of the record within its dataset.
        path: the WFDB record path without extension, or a DICOM ECG file.
        label: 1 = myocardial infarction, 0 = other.
        patient_id: the patient the record belongs to (used only for splitting, never logged).
        fold: a fold number when the dataset has folds (PTB-XL ``strat_fold``), else None.
        split: an explicit split name ("train", "val", "test") when the dataset names one.
        norm: True when the record is a normal ECG (PTB-XL NORM statement), None when unknown.
        offset_s: start of the model window inside the record, seconds.
        labs: canonical-unit lab values keyed by LOINC code.
        source: which reader produced the item ("ptbxl", "manifest", "synthetic").
        ecg_id: the PTB-XL ``ecg_id`` when the record is a PTB-XL ECG (used to drop a record given
            twice, e.g. at 500 Hz and at 100 Hz), else None.
        classes: the five PTB-XL diagnostic superclass flags (NORM, MI, STTC, CD, HYP; 1/0) when
            known, for the auxiliary heads; None when unknown.
    """

    record_id: str
    path: Path
    label: int
    patient_id: str
    fold: int | None = None
    split: str | None = None
    norm: bool | None = None
    offset_s: float = 0.0
    labs: dict[str, float] = field(default_factory=dict)
    source: str = "manifest"
    ecg_id: int | None = None
    classes: tuple[int, int, int, int, int] | None = None


def patients_of(items: Iterable[Item]) -> set[str]:
    return {it.patient_id for it in items}


def check_disjoint(**splits: Sequence[Item]) -> None:
    """Raise :class:`DatasetError` when a patient appears in two of the named splits."""
    names = list(splits)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            shared = patients_of(splits[a]) & patients_of(splits[b])
            if shared:
                raise DatasetError(f"{len(shared)} patient(s) appear in both split {a!r} and split {b!r}")


def patient_bucket(patient_id: str, n_buckets: int, seed: int = 0) -> int:
    """A stable bucket 0..n_buckets-1 for a patient (hash of seed and id, independent of order)."""
    digest = hashlib.sha256(f"{seed}:{patient_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % n_buckets


def split_by_folds(items: Sequence[Item], val_folds: Sequence[int], test_folds: Sequence[int]) -> tuple[list[Item], list[Item], list[Item]]:
    """(train, val, test) by fold number; items without a fold raise. Checks patients are disjoint."""
    missing = [it.record_id for it in items if it.fold is None]
    if missing:
        raise DatasetError(f"{len(missing)} item(s) have no fold (first: {missing[0]!r}); use a patient split instead")
    overlap = set(val_folds) & set(test_folds)
    if overlap:
        raise DatasetError(f"fold(s) {sorted(overlap)} are both validation and test folds")
    val = [it for it in items if it.fold in val_folds]
    test = [it for it in items if it.fold in test_folds]
    train = [it for it in items if it.fold not in val_folds and it.fold not in test_folds]
    check_disjoint(train=train, val=val, test=test)
    return train, val, test


def split_by_patient(items: Sequence[Item], val_frac: float = 0.15, test_frac: float = 0.15, seed: int = 0) -> tuple[list[Item], list[Item], list[Item]]:
    """(train, val, test) by hashing patient ids into 100 buckets; every record of a patient lands together."""
    if not (0 <= val_frac < 1 and 0 <= test_frac < 1 and val_frac + test_frac < 1):
        raise DatasetError(f"val_frac={val_frac} and test_frac={test_frac} must be in [0, 1) and sum below 1")
    train, val, test = [], [], []
    for it in items:
        b = patient_bucket(it.patient_id, 100, seed) / 100.0
        (test if b < test_frac else val if b < test_frac + val_frac else train).append(it)
    return train, val, test


def split_by_name(items: Sequence[Item]) -> dict[str, list[Item]]:
    """Group items by their explicit ``split`` column; checks patients are disjoint between groups."""
    groups: dict[str, list[Item]] = {}
    for it in items:
        groups.setdefault(it.split or "", []).append(it)
    check_disjoint(**{k or "(none)": v for k, v in groups.items()})
    return groups


def class_counts(items: Sequence[Item]) -> tuple[int, int]:
    """(n_pos, n_neg)."""
    pos = sum(1 for it in items if it.label == 1)
    return pos, len(items) - pos
