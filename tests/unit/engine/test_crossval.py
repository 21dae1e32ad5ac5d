"""Cross-validation: splits are patient-wise and cover every fold once; a tiny run yields the table fields."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from engine.config import get_preset
from engine.crossval import VARIANTS, age_check, make_splits, markdown_table, report, run_variant, split_items, summarise
from engine.data.dataset import MirageDataset
from engine.data.items import Item
from engine.errors import DatasetError
from engine.train import TrainOptions


def _items(n_patients: int, folds: int, records_per_patient: int = 2) -> list[Item]:
    out = []
    for p in range(n_patients):
        for r in range(records_per_patient):
            out.append(Item(f"ptbxl-{p * 10 + r}", Path(f"x/{p}/{r}"), label=int(p % 3 == 0), patient_id=f"p{p}", fold=p % folds + 1, norm=p % 3 == 1))
    return out


def test_splits_cover_every_fold_once_as_test_and_are_disjoint() -> None:
    splits = make_splits(range(1, 9), 4)
    tested = sorted(f for s in splits for f in s.test_folds)
    assert tested == list(range(1, 9))
    for s in splits:
        sides = [set(s.train_folds), set(s.val_folds), set(s.test_folds)]
        assert set().union(*sides) == set(range(1, 9))
        assert sum(len(x) for x in sides) == 8  # no fold on two sides
        assert s.val_folds and s.train_folds


def test_split_items_keep_patients_on_one_side() -> None:
    items = _items(40, 8)
    for s in make_splits(range(1, 9), 4):
        tr, va, te = split_items(items, s)
        assert len(tr) + len(va) + len(te) == len(items)
        pats = [{items[i].patient_id for i in part} for part in (tr, va, te)]
        assert not (pats[0] & pats[1] or pats[0] & pats[2] or pats[1] & pats[2])


def test_split_items_rejects_a_patient_in_two_folds() -> None:
    items = _items(16, 8)
    split0 = make_splits(range(1, 9), 4)[0]
    assert items[0].fold in split0.test_folds
    items.append(dataclasses.replace(items[0], record_id="ptbxl-999", fold=split0.train_folds[0]))  # same patient, a train fold
    with pytest.raises(DatasetError, match="patient"):
        split_items(items, split0)


def test_make_splits_rejects_bad_counts() -> None:
    with pytest.raises(DatasetError, match="n_splits=9"):
        make_splits(range(1, 9), 9)
    with pytest.raises(DatasetError, match="at least 3 folds"):
        make_splits([1, 2], 2)


def test_age_check_detects_an_age_reader() -> None:
    rng = np.random.default_rng(0)
    age = rng.uniform(30, 90, 400)
    y = (rng.random(400) < (age - 30) / 60).astype(np.int64)  # MI more likely when older
    ids = [f"ptbxl-{i}" for i in range(400)]
    ages = dict(zip(ids, age))
    res = age_check(y, age / 100.0, ids, ages)  # a "model" that reads age alone
    assert res["age_only_auroc"] > 0.7 and abs(res["model_auroc"] - res["age_only_auroc"]) < 1e-9
    assert res["model_auroc_within_strata"] < res["model_auroc"] - 0.1  # within strata the age reader collapses


def test_tiny_two_split_crossval_produces_the_table_fields(tmp_path: Path) -> None:
    from engine.data.synthetic import simulator_available, synthetic_windows

    if not simulator_available():
        pytest.skip("simulators package not installed")
    cfg = get_preset("tiny")
    ws = synthetic_windows(24, cfg, seed=3)
    # Give the generated patients PTB-XL-like folds (4) and NORM flags.
    ws.items = [dataclasses.replace(it, fold=i % 4 + 1, norm=it.label == 0 and i % 2 == 0, source="ptbxl", record_id=f"ptbxl-{i}")
                for i, it in enumerate(ws.items)]
    real = MirageDataset(ws, cfg, progress=False)
    splits = make_splits([1, 2, 3, 4], 2)
    opts = TrainOptions(epochs=1, batch_size=8, patience=1, seed=0, threads=1, progress=False)
    results = run_variant(VARIANTS["paper"], real, None, splits, cfg, opts, tmp_path, seed=0)
    assert len(results) == 2
    assert {r["split"]["index"] for r in results} == {0, 1}
    assert (tmp_path / "paper" / "split1.json").is_file()
    tested = sorted(r["record_id"] for res in results for r in res["predictions"])
    assert tested == sorted(it.record_id for it in ws.items)  # every record scored exactly once, out of fold
    s = summarise(results)
    for key in ("auroc", "auprc", "sens_at_spec90", "ece"):
        assert key in s["mi_vs_all"] and np.isfinite(s["mi_vs_all"][key]["mean"])
    table = markdown_table({"paper": s})
    assert "`paper`" in table and "±" in table
    # the report needs ages: write a minimal PTB-XL database with them
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "ptbxl_database.csv").write_text("ecg_id,age\n" + "\n".join(f"{i},{40 + i}" for i in range(24)) + "\n")
    out = report(tmp_path, ["paper"], 2, tmp_path / "data", None, tmp_path / "fig")
    assert out["focus"] == "paper" and (tmp_path / "fig" / "reliability.png").stat().st_size > 1000
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert saved["variants"]["paper"]["age_check"]["n"] == 24
