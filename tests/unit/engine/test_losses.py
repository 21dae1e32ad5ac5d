"""MIRAGE loss: InfoNCE against a hand computation, the weighted sum, class weights, ablations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from engine.config import get_preset
from engine.losses import info_nce, mirage_loss
from engine.model import MirageOutput


def _output(logits: torch.Tensor, z_ts: torch.Tensor, z_img: torch.Tensor) -> MirageOutput:
    """A ``MirageOutput`` with values chosen by the test."""
    B = logits.shape[0]
    return MirageOutput(logits, logits.softmax(-1)[:, 1], z_ts, z_img, torch.full((B, 12), 1 / 12))


def _ce(rows: np.ndarray) -> float:
    """Mean cross-entropy of each row against its own index (numpy, no torch)."""
    return float(np.mean([np.log(np.exp(r).sum()) - r[i] for i, r in enumerate(rows)]))


def test_info_nce_matches_hand_computation() -> None:
    z_ts = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    z_img = torch.tensor([[1.0, 1.0], [0.0, -1.0]])
    tau = 0.5
    # Cosines: ts0.img0 = 1/sqrt(2), ts0.img1 = 0, ts1.img0 = 1/sqrt(2), ts1.img1 = -1; divided by tau:
    r = math.sqrt(2)
    s = np.array([[r, 0.0], [r, -2.0]])
    a = z_ts.numpy() / np.linalg.norm(z_ts.numpy(), axis=1, keepdims=True)
    b = z_img.numpy() / np.linalg.norm(z_img.numpy(), axis=1, keepdims=True)
    np.testing.assert_allclose(a @ b.T / tau, s, atol=1e-6)
    # Row-wise cross-entropy written out: ts -> img uses rows of s, img -> ts uses its columns.
    hand_ts = 0.5 * ((math.log(math.exp(r) + 1) - r) + (math.log(math.exp(r) + math.exp(-2)) + 2))
    hand_img = 0.5 * ((math.log(math.exp(r) + math.exp(r)) - r) + (math.log(1 + math.exp(-2)) + 2))
    expected = 0.5 * (hand_ts + hand_img)
    assert 0.5 * (_ce(s) + _ce(s.T)) == pytest.approx(expected, rel=1e-9)
    assert float(info_nce(z_ts, z_img, tau)) == pytest.approx(expected, rel=1e-5)


def test_info_nce_is_symmetric_scale_invariant_and_rewards_alignment() -> None:
    g = torch.Generator().manual_seed(0)
    z = torch.randn(8, 16, generator=g)
    other = torch.randn(8, 16, generator=g)
    aligned = float(info_nce(z, 3.0 * z, 0.1))  # cosine ignores the scale
    assert aligned == pytest.approx(float(info_nce(z, z, 0.1)), rel=1e-5)
    assert float(info_nce(z, other, 0.1)) == pytest.approx(float(info_nce(other, z, 0.1)), rel=1e-5)
    assert aligned < float(info_nce(z, other, 0.1))


def test_mirage_loss_is_the_weighted_sum() -> None:
    cfg = get_preset("tiny").replace(lambda_cls=2.0, lambda_con=0.5, tau=0.2)
    g = torch.Generator().manual_seed(1)
    out = _output(torch.randn(4, 2, generator=g), torch.randn(4, 8, generator=g), torch.randn(4, 8, generator=g))
    y = torch.tensor([0, 1, 1, 0])
    total, parts = mirage_loss(out, y, cfg)
    logits = out.logits.numpy()
    ce = float(np.mean([np.log(np.exp(r).sum()) - r[c] for r, c in zip(logits, y.numpy())]))
    con = float(info_nce(out.z_ts, out.z_img, 0.2))
    assert parts["cls"] == pytest.approx(ce, rel=1e-5) and parts["con"] == pytest.approx(con, rel=1e-6)
    assert float(total) == pytest.approx(2.0 * ce + 0.5 * con, rel=1e-5)


def test_class_weights_change_the_cross_entropy() -> None:
    cfg = get_preset("tiny").replace(lambda_con=0.0)
    out = _output(torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 0.0]]), torch.zeros(3, 4), torch.zeros(3, 4))
    y = torch.tensor([1, 1, 0])
    plain, _ = mirage_loss(out, y, cfg)
    weighted, parts = mirage_loss(out, y, cfg, class_weights=torch.tensor([1.0, 3.0]))
    per = [math.log(1 + math.exp(2.0)), math.log(1 + math.exp(-1.0)), math.log(1 + math.exp(-1.0))]
    assert float(plain) == pytest.approx(sum(per) / 3, rel=1e-5)
    # torch's weighted mean: sum(w_i * l_i) / sum(w_i)
    assert float(weighted) == pytest.approx((3 * per[0] + 3 * per[1] + per[2]) / 7, rel=1e-5)
    assert parts["con"] == 0.0


@pytest.mark.parametrize("switch", ["use_ecg_branch", "use_img_branch"])
def test_contrastive_term_is_skipped_with_a_branch_off(switch: str) -> None:
    cfg = get_preset("tiny").replace(**{switch: False})
    out = _output(torch.zeros(2, 2), torch.randn(2, 4), torch.randn(2, 4))
    total, parts = mirage_loss(out, torch.tensor([0, 1]), cfg)
    assert parts["con"] == 0.0 and float(total) == pytest.approx(math.log(2.0), rel=1e-6)
