"""Datasets: PTB-XL labelling, patient-wise splits, WFDB windows, manifest + labs, cached inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import wfdb

from engine.config import LEADS, get_preset
from engine.data import Item, check_disjoint, load_items, read_manifest, split_by_folds, split_by_patient
from engine.data.dataset import MirageDataset, augment_windows, cache_key
from engine.data.ptbxl import diagnostic_classes, label_codes, read_ptbxl
from engine.data.wfdb_io import cut_window, load_window, read_record
from engine.errors import DatasetError

CFG = get_preset("tiny")


def write_record(folder: Path, name: str, signal_mv: np.ndarray, fs: int = 500, leads: tuple[str, ...] = LEADS, units: str = "mV") -> Path:
    """Write a WFDB record (L, S) in ``units`` and return its base path."""
    folder.mkdir(parents=True, exist_ok=True)
    scale = 1000.0 if units == "uV" else 1.0
    wfdb.wrsamp(
        name, fs=fs, units=[units] * len(leads), sig_name=list(leads), p_signal=(signal_mv.T * scale).astype(np.float64),
        fmt=["16"] * len(leads), adc_gain=[1000.0 / scale] * len(leads), baseline=[0] * len(leads), write_dir=str(folder),
    )
    return folder / name


def sine_record(seconds: float = 10.0, fs: int = 500, freq: float = 1.0, amp: float = 1.0, n_leads: int = 12) -> np.ndarray:
    t = np.arange(int(seconds * fs)) / fs
    return np.stack([amp * np.sin(2 * np.pi * freq * t + k) for k in range(n_leads)])


# ---------------------------------------------------------------- PTB-XL


def test_ptbxl_sample_labels(ptbxl_dir: Path) -> None:
    items = read_ptbxl(ptbxl_dir)
    n_mi = sum(it.label for it in items)
    assert 45 <= n_mi <= 55, n_mi  # the sample carries about 49 MI statements
    assert len(items) >= 340
    assert {it.fold for it in items} <= set(range(1, 9))
    assert sum(bool(it.norm) for it in items) > 150
    # PTB-XL's strat_fold is patient-wise: no patient in two folds
    by_fold: dict[int, set[str]] = {}
    for it in items:
        by_fold.setdefault(int(it.fold), set()).add(it.patient_id)
    folds = sorted(by_fold)
    for i, a in enumerate(folds):
        for b in folds[i + 1 :]:
            assert not by_fold[a] & by_fold[b]


def test_ptbxl_label_rule(ptbxl_dir: Path) -> None:
    classes = diagnostic_classes(ptbxl_dir)
    assert classes["IMI"] == "MI" and classes["NORM"] == "NORM"
    assert label_codes({"IMI": 35.0, "SR": 0.0}, classes) == (True, False, True)
    assert label_codes({"NORM": 100.0, "SR": 0.0}, classes) == (False, True, True)
    assert label_codes({"SR": 0.0}, classes) == (False, False, False)  # rhythm only: unlabelled
    assert label_codes({"ASMI": 0.0}, classes)[0]  # any likelihood counts


def test_ptbxl_window_is_model_rate(ptbxl_dir: Path) -> None:
    items = read_ptbxl(ptbxl_dir)
    rec = read_record(items[0].path)
    assert rec.fs == 500 and rec.signal.shape == (12, 5000)
    w = load_window(items[0].path, CFG)
    assert w.shape == (12, CFG.T) and w.dtype == np.float32
    assert np.isfinite(w).all() and 0.05 < np.abs(w).max() < 10  # millivolts


def test_ptbxl_missing_files(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="not found"):
        read_ptbxl(tmp_path)


# ---------------------------------------------------------------- splits


def _items(n_patients: int, per_patient: int) -> list[Item]:
    return [
        Item(record_id=f"r{p}-{k}", path=Path(f"x/{p}-{k}"), label=(p % 3 == 0), patient_id=f"p{p}", fold=1 + p % 5)
        for p in range(n_patients)
        for k in range(per_patient)
    ]


def test_patient_split_keeps_patients_together() -> None:
    items = _items(200, 3)
    train, val, test = split_by_patient(items, 0.15, 0.15, seed=1)
    assert len(train) + len(val) + len(test) == len(items)
    check_disjoint(train=train, val=val, test=test)
    for part in (train, val, test):
        pats = {it.patient_id for it in part}
        assert all(sum(it.patient_id == p for it in part) == 3 for p in list(pats)[:10])
    assert 0.55 < len(train) / len(items) < 0.85
    # stable: the same seed gives the same split, another seed another one
    assert [it.record_id for it in split_by_patient(items, 0.15, 0.15, seed=1)[1]] == [it.record_id for it in val]
    assert [it.record_id for it in split_by_patient(items, 0.15, 0.15, seed=2)[1]] != [it.record_id for it in val]


def test_fold_split_rejects_patient_in_two_folds() -> None:
    items = _items(20, 1)
    train, val, test = split_by_folds(items, [4], [5])
    assert {it.fold for it in val} == {4} and {it.fold for it in test} == {5}
    leaky = items + [Item(record_id="leak", path=Path("x/leak"), label=0, patient_id=val[0].patient_id, fold=1)]
    with pytest.raises(DatasetError, match="both split"):
        split_by_folds(leaky, [4], [5])
    with pytest.raises(DatasetError, match="both validation and test"):
        split_by_folds(items, [4], [4])


# ---------------------------------------------------------------- WFDB windows


def test_window_units_rate_and_offset(tmp_path: Path) -> None:
    sig = sine_record(seconds=12.0, freq=1.0, amp=1.5)
    base = write_record(tmp_path, "uv", sig, units="uV")
    rec = read_record(base.with_suffix(".hea"))
    assert rec.fs == 500 and np.allclose(rec.signal, sig, atol=2e-3)  # uV converted to mV
    w0 = load_window(base, CFG)
    w2 = load_window(base, CFG, offset_s=2.0)
    w9 = load_window(base, CFG, offset_s=9.0)  # pulled back to fit: same as offset 2 s
    assert w0.shape == (12, 1000)
    t = np.arange(1000) / 100.0
    assert np.allclose(w0[0, 50:-50], 1.5 * np.sin(2 * np.pi * t[50:-50]), atol=0.02)
    assert np.allclose(w2, w9)
    assert not np.allclose(w0[0, :200], w2[0, :200])


def test_window_derives_limb_leads_and_pads(tmp_path: Path) -> None:
    eight = ("I", "II", "V1", "V2", "V3", "V4", "V5", "V6")
    sig = sine_record(seconds=9.0, n_leads=8)  # 90 % of a window: padded
    base = write_record(tmp_path, "eight", sig, leads=eight)
    w = load_window(base, CFG)
    i, ii, iii = w[LEADS.index("I")], w[LEADS.index("II")], w[LEADS.index("III")]
    assert np.allclose(iii, ii - i, atol=1e-5)
    assert np.all(w[:, 900:] == w[:, 899:900])  # last value held
    with pytest.raises(DatasetError, match="shorter"):
        cut_window(np.zeros((12, 500)), 100, CFG)


# ---------------------------------------------------------------- manifest + labs


def _manifest(tmp_path: Path) -> Path:
    root = tmp_path / "ds"
    for k in range(4):
        write_record(root / "rec", f"r{k}", sine_record(seconds=12.0, amp=0.5 + k))
    (root / "manifest.csv").write_text(
        "record,label,patient_id,split,mi_onset_s,age\n"
        "rec/r0,MI,P1,train,1.5,61\n"
        "rec/r1.hea,other,P1,train,,61\n"
        "rec/r2,1,P2,val,,70\n"
        "rec/r3,0,P3,test,,44\n"
    )
    (root / "labs.csv").write_text(
        "patient_id,record,loinc,value,unit,time\n"
        "P1,,89579-7,0.05,ng/mL,2024-01-01T10:00:00Z\n"
        "P1,,89579-7,0.2,ng/mL,2024-01-01T12:00:00Z\n"
        "P1,,89579-7,0.01,ng/mL,2024-01-01T08:00:00Z\n"
        ",rec/r2,2823-3,4.1,mEq/L,\n"
        "P3,,99999-9,1,mg/dL,\n"
    )
    return root


def test_manifest_reading(tmp_path: Path) -> None:
    root = _manifest(tmp_path)
    items = load_items(root)
    assert [it.label for it in items] == [1, 0, 1, 0]
    assert [it.split for it in items] == ["train", "train", "val", "test"]
    assert items[0].offset_s == 1.5 and items[1].offset_s == 0.0  # MI onset used only for MI records
    assert items[0].labs == {"89579-7": pytest.approx(200.0)}  # latest result, ng/mL -> ng/L
    assert items[1].labs == items[0].labs  # by patient
    assert items[2].labs == {"2823-3": pytest.approx(4.1)}  # by record
    assert items[3].labs == {}  # unknown LOINC skipped
    assert read_manifest(root / "manifest.csv")[1].record_id == "rec/r1"


def test_manifest_errors_name_the_row(tmp_path: Path) -> None:
    root = _manifest(tmp_path)
    (root / "bad.csv").write_text("record,label,patient_id\nrec/r0,maybe,P1\n")
    with pytest.raises(DatasetError, match=r"row 2: label 'maybe'"):
        read_manifest(root / "bad.csv")
    (root / "nohdr.csv").write_text("record,label,patient_id\nrec/missing,1,P1\n")
    with pytest.raises(DatasetError, match="not found"):
        read_manifest(root / "nohdr.csv")
    (root / "cols.csv").write_text("record,label\nrec/r0,1\n")
    with pytest.raises(DatasetError, match="patient_id"):
        read_manifest(root / "cols.csv")
    (root / "badlabs.csv").write_text("patient_id,loinc,value,unit\nP1,89579-7,3,furlongs\n")
    with pytest.raises(DatasetError, match="row 2"):
        read_manifest(root / "manifest.csv", root / "badlabs.csv")


# ---------------------------------------------------------------- dataset


def test_dataset_aligned_and_cached(tmp_path: Path) -> None:
    items = load_items(_manifest(tmp_path))
    ds = MirageDataset.from_items(items, CFG, cache_dir=tmp_path / "cache", progress=False)
    ecg, image, labs, mask, label = ds[2]
    assert ecg.shape == (12, CFG.T) and image.shape == (1, 224, 224) and labs.shape == (CFG.lab_dim,)
    assert int(label) == 1 and float(mask.sum()) == 1.0
    assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0
    # amplitude ordering survives the pipeline (record k has amplitude 0.5 + k)
    amps = [float(ds[i][0].abs().max()) for i in range(4)]
    assert amps == sorted(amps)
    cached = list((tmp_path / "cache").glob("inputs-*.npz"))
    assert len(cached) == 1 and cache_key(items, CFG) in cached[0].name
    again = MirageDataset.from_items(items, CFG, cache_dir=tmp_path / "cache", progress=False)
    assert np.array_equal(again.inputs.image, ds.inputs.image)
    b = ds.batch([0, 3])
    assert b[1].shape == (2, 1, 224, 224) and b[4].tolist() == [1, 0]


def test_augmentation_is_seeded_and_label_free(tmp_path: Path) -> None:
    x = np.random.default_rng(0).normal(size=(3, 12, CFG.T)).astype(np.float32)
    a = augment_windows(x, CFG.fs, np.random.default_rng(5))
    b = augment_windows(x, CFG.fs, np.random.default_rng(5))
    assert a.shape == x.shape and np.array_equal(a, b) and not np.allclose(a, x)


def test_synthetic_windows() -> None:
    from engine.data.synthetic import simulator_available, synthetic_windows

    if not simulator_available():
        pytest.skip("simulators.ecg not installed")
    ws = synthetic_windows(12, CFG, seed=3)
    assert ws.windows.shape == (12, 12, CFG.T) and np.isfinite(ws.windows).all()
    assert 0 < ws.labels.sum() < 12
    assert len({it.patient_id for it in ws.items}) == 12
    again = synthetic_windows(12, CFG, seed=3)
    assert np.array_equal(ws.windows, again.windows)


def test_training_split_rules(ptbxl_dir: Path) -> None:
    from engine.training_run import split_items

    items = read_ptbxl(ptbxl_dir)
    train, val, test, how = split_items(items, None, None, seed=0)
    assert {it.fold for it in val} == {7} and {it.fold for it in test} == {8}  # the two highest folds
    assert {it.fold for it in train} == set(range(1, 7)) and "val=[7]" in how
    check_disjoint(train=train, val=val, test=test)
    train, val, test, _ = split_items(items, [5, 6], [8], seed=0)
    assert {it.fold for it in val} == {5, 6} and len(train) + len(val) + len(test) == len(items)
    # no folds, no split column: patient hash
    plain = [Item(f"r{i}", Path(f"x/{i}"), i % 2, f"p{i // 2}") for i in range(200)]
    train, val, test, how = split_items(plain, None, None, seed=0)
    assert "patient hash" in how
    check_disjoint(train=train, val=val, test=test)


def test_labs_reported_after_the_window_are_ignored(tmp_path: Path) -> None:
    root = tmp_path / "sim"
    write_record(root / "rec", "a", sine_record(seconds=40.0))
    (root / "manifest.csv").write_text("record,label,patient_id,mi_onset_s,window_start_s\nrec/a,1,P9,5,20\n")
    (root / "labs.csv").write_text(
        "record,patient_id,loinc,value,unit,time,reported_s\n"
        "rec/a,P9,89579-7,10,ng/L,-3600,-600\n"  # available before the window
        "rec/a,P9,89579-7,90,ng/L,0,25\n"  # reported during the window (20-30 s): used
        "rec/a,P9,89579-7,900,ng/L,10,45\n"  # reported after the window ends: ignored
    )
    (item,) = read_manifest(root)
    assert item.offset_s == 20.0
    assert item.labs == {"89579-7": pytest.approx(90.0)}
