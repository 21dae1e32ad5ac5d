"""Metrics against known answers, and ``mirage evaluate`` end to end on a toy set with a known answer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.stats import mannwhitneyu

from engine import metrics as M
from engine.data import Item
from engine.errors import DatasetError
from engine.evaluate import select_items


def test_auroc_perfect_random_and_inverted() -> None:
    y = np.array([0, 0, 0, 1, 1])
    assert M.auroc(y, np.array([0.1, 0.2, 0.3, 0.8, 0.9])) == 1.0
    assert M.auroc(y, np.array([0.9, 0.8, 0.7, 0.2, 0.1])) == 0.0
    assert M.auroc(y, np.full(5, 0.5)) == 0.5  # ties count half
    assert M.auprc(y, np.array([0.1, 0.2, 0.3, 0.8, 0.9])) == 1.0


def test_auroc_equals_mann_whitney_and_ap_bounds() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    s = np.round(rng.normal(size=400) + 0.8 * y, 1)  # rounding creates ties
    u = mannwhitneyu(s[y == 1], s[y == 0]).statistic
    assert M.auroc(y, s) == pytest.approx(u / (y.sum() * (len(y) - y.sum())), abs=1e-12)
    ap = M.auprc(y, s)
    assert y.mean() < ap < 1.0


def test_average_precision_hand_computed() -> None:
    # ranking: 1, 0, 1, 0 -> precision at recall steps: 1/1, 2/3 -> AP = 0.5*1 + 0.5*2/3
    y = np.array([1, 0, 1, 0])
    s = np.array([0.9, 0.8, 0.7, 0.1])
    assert M.auprc(y, s) == pytest.approx(0.5 + 0.5 * 2 / 3)


def test_operating_points() -> None:
    y = np.array([0] * 10 + [1] * 10)
    s = np.r_[np.linspace(0.0, 0.9, 10), np.linspace(0.5, 1.0, 10)]
    op = M.sens_at_spec(y, s, 0.9)
    assert op.specificity >= 0.9
    at = M.at_threshold(y, s, op.threshold)
    assert at.sensitivity == pytest.approx(op.sensitivity) and at.specificity == pytest.approx(op.specificity)
    # no threshold with spec >= 0.9 can be more sensitive
    for thr in np.unique(s):
        a = M.at_threshold(y, s, thr)
        if a.specificity >= 0.9:
            assert a.sensitivity <= op.sensitivity + 1e-12
    sp = M.spec_at_sens(y, s, 0.9)
    assert sp.sensitivity >= 0.9
    assert M.at_threshold(y, s, sp.threshold).specificity == pytest.approx(sp.specificity)


def test_ece_and_errors() -> None:
    y = np.array([0, 1] * 50)
    assert M.ece(y, np.full(100, 0.5)) == pytest.approx(0.0)
    assert M.ece(y, np.full(100, 0.95)) == pytest.approx(0.45)
    with pytest.raises(M.MetricError, match="both classes"):
        M.auroc(np.zeros(4), np.arange(4.0))
    with pytest.raises(M.MetricError, match="differ"):
        M.auroc(np.zeros(4), np.arange(3.0))
    end = M.hysteresis_end(0.6, y, np.linspace(0, 1, 100))
    assert end < 0.6


def test_select_items_negatives_and_folds() -> None:
    items = [
        Item("a", Path("a"), 1, "p1", fold=9, norm=False),
        Item("b", Path("b"), 0, "p2", fold=9, norm=True),
        Item("c", Path("c"), 0, "p3", fold=9, norm=False),
        Item("d", Path("d"), 0, "p4", fold=3, norm=True),
    ]
    assert [it.record_id for it in select_items(items, "all", [9])] == ["a", "b", "c"]
    assert [it.record_id for it in select_items(items, "norm", [9])] == ["a", "b"]
    with pytest.raises(DatasetError, match="negatives"):
        select_items(items, "some")
    no_norm = [Item("x", Path("x"), 0, "p", norm=None), Item("y", Path("y"), 1, "q", norm=None)]
    with pytest.raises(DatasetError, match="NORM"):
        select_items(no_norm, "norm")
