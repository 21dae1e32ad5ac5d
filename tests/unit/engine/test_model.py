"""MIRAGE model: shapes, the spatial bias, FiLM identity and effect, ablations, learning."""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import pytest
import torch

from engine.config import PRESETS, MirageConfig, get_preset
from engine.errors import ConfigError
from engine.losses import mirage_loss
from engine.model import Mirage, count_parameters


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Two intra-op threads on a shared 2-core machine spin against each other; one is faster."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _inputs(cfg, B=2, labs=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    ecg = torch.randn(B, 12, cfg.T, generator=g)
    img = torch.rand(B, 1, cfg.image_size, cfg.image_size, generator=g)
    lab = torch.randn(B, cfg.lab_dim, generator=g)
    mask = (torch.rand(B, cfg.lab_dim, generator=g) > 0.3).float() if labs else torch.zeros(B, cfg.lab_dim)
    return ecg, img, lab, mask


def _tiny(labs: bool = False) -> tuple[MirageConfig, Mirage, tuple[torch.Tensor, ...]]:
    """A seeded tiny model in eval mode and a batch of two."""
    cfg = get_preset("tiny")
    torch.manual_seed(0)
    return cfg, Mirage(cfg).eval(), _inputs(cfg, labs=labs)


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_shapes_for_every_preset(preset: str) -> None:
    cfg = get_preset(preset)
    torch.manual_seed(0)
    model = Mirage(cfg).eval()
    B = 1 if preset in ("paper", "default") else 3
    with torch.no_grad():
        out = model(*_inputs(cfg, B))
    assert out.logits.shape == (B, 2) and out.probs.shape == (B,)
    assert out.z_ts.shape == (B, cfg.embed_dim) and out.z_img.shape == (B, cfg.embed_dim)
    assert out.lead_weights.shape == (B, 12)
    assert (model.ecg.stem is not None) == cfg.conv_stem and not get_preset("paper").conv_stem
    assert torch.all((out.probs >= 0) & (out.probs <= 1))
    # CLS -> lead attention renormalised over the 12 leads: a distribution per sample.
    torch.testing.assert_close(out.lead_weights.sum(1), torch.ones(B), atol=1e-5, rtol=0)
    assert torch.all(out.lead_weights > 0)


def test_default_preset_is_about_five_million_parameters() -> None:
    n = count_parameters(Mirage(get_preset("default")))
    assert 4.5e6 < n < 5.5e6, n


def test_spatial_bias_changes_the_output() -> None:
    cfg, model, x = _tiny()
    with torch.no_grad():
        before = model(*x).logits.clone()
        assert model.ecg.spatial_bias.shape == (cfg.num_heads, 13, 13)
        model.ecg.spatial_bias[:, 0, 1:4] += 5.0  # CLS looks at I, II, III much more
        after = model(*x).logits
    assert not torch.allclose(before, after, atol=1e-6)


def test_fused_and_manual_attention_agree_with_bias() -> None:
    cfg, model, x = _tiny()
    with torch.no_grad():
        model.ecg.spatial_bias.normal_(0, 1.0)
        fused = model(*x).logits.clone()
        for m in model.modules():
            if hasattr(m, "fused_attn"):
                m.fused_attn = False
        manual = model(*x).logits
    torch.testing.assert_close(fused, manual, atol=1e-5, rtol=1e-5)


def test_film_is_exactly_identity_when_all_labs_missing() -> None:
    cfg = get_preset("tiny")
    torch.manual_seed(0)
    model = Mirage(cfg).eval()
    ecg, img, lab, _ = _inputs(cfg)
    missing = torch.zeros_like(lab)
    with torch.no_grad():
        for gen in (model.film_ecg, model.film_img):
            gen.fc1.weight.normal_(0, 1.0)  # make FiLM strong: identity must not depend on small weights
            gen.fc2.weight.normal_(0, 1.0)
            gamma, beta = gen(lab * 100.0, missing)  # values are ignored when masked out
            assert torch.equal(gen(torch.full_like(lab, float("nan")), missing)[0], gamma)  # even NaN
            assert torch.equal(gamma, torch.ones_like(gamma)) and torch.equal(beta, torch.zeros_like(beta))
        with_film = model(ecg, img, lab, missing).logits
        no_film = Mirage(cfg.replace(use_film=False)).eval()
        no_film.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("film_")})
        without = no_film(ecg, img, lab, missing).logits
    assert torch.equal(with_film, without)


def test_film_changes_output_when_labs_present() -> None:
    cfg, model, x = _tiny(labs=True)
    with torch.no_grad():
        before = model(*x).logits.clone()
        model.film_ecg.fc2.weight.mul_(50.0)
        mid = model(*x).logits.clone()
        model.film_img.fc2.weight.mul_(50.0)
        after = model(*x).logits
    assert not torch.allclose(before, mid, atol=1e-6)
    assert not torch.allclose(mid, after, atol=1e-6)


def test_lead_weights_follow_the_spatial_bias_and_are_zero_without_the_ecg_branch() -> None:
    cfg, model, x = _tiny()
    with torch.no_grad():
        model.ecg.spatial_bias[:, 0, 1 + 4] += 20.0  # CLS -> aVL (lead index 4) dominates every head
        weights = model(*x).lead_weights
    assert torch.all(weights.argmax(dim=1) == 4) and torch.all(weights[:, 4] > 0.99)
    no_ecg = Mirage(cfg.replace(use_ecg_branch=False)).eval()
    with torch.no_grad():
        out = no_ecg(*x)
    assert torch.equal(out.lead_weights, torch.zeros(2, 12)) and torch.equal(out.z_ts, torch.zeros(2, cfg.embed_dim))


def test_film_modulates_every_block_of_both_branches() -> None:
    """gamma/beta have one (B, D) row per block; FiLM generators are bias-free."""
    cfg = get_preset("small")
    model = Mirage(cfg)
    lab, mask = torch.randn(3, cfg.lab_dim), torch.ones(3, cfg.lab_dim)
    for gen, depth in ((model.film_ecg, cfg.ecg_depth), (model.film_img, cfg.img_depth)):
        gamma, beta = gen(lab, mask)
        assert gamma.shape == beta.shape == (depth, 3, cfg.embed_dim)
        assert all(m.bias is None for m in gen.modules() if isinstance(m, torch.nn.Linear))
        assert not torch.equal(gamma, torch.ones_like(gamma)) and not torch.equal(beta, torch.zeros_like(beta))


@pytest.mark.parametrize("switch", ["use_ecg_branch", "use_img_branch", "use_film", "conv_stem"])
def test_ablations_and_options_run(switch: str) -> None:
    base = get_preset("tiny")
    cfg = base.replace(**{switch: not getattr(base, switch)})
    model = Mirage(cfg).eval()
    with torch.no_grad():
        out = model(*_inputs(cfg, labs=True))
    assert out.logits.shape == (2, 2)
    loss, parts = mirage_loss(out, torch.tensor([0, 1]), cfg)
    assert math.isfinite(float(loss))
    if switch in ("use_ecg_branch", "use_img_branch"):
        assert parts["con"] == 0.0


def test_both_branches_off_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="use_ecg_branch"):
        get_preset("tiny").replace(use_ecg_branch=False, use_img_branch=False)


def test_short_training_run_lowers_the_loss(one_thread: None) -> None:
    cfg = get_preset("tiny")
    torch.manual_seed(0)
    model = Mirage(cfg)
    g = torch.Generator().manual_seed(1)
    B = 16
    y = torch.arange(B) % 2
    t = torch.linspace(0, 10, cfg.T)
    ecg = 0.1 * torch.randn(B, 12, cfg.T, generator=g) + (y[:, None, None] * 0.8) * torch.sin(2 * math.pi * 1.2 * t)
    img = 0.1 * torch.rand(B, 1, 224, 224, generator=g) + y[:, None, None, None] * 0.5
    labs, mask = torch.zeros(B, cfg.lab_dim), torch.zeros(B, cfg.lab_dim)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(30):
        out = model(ecg, img, labs, mask)
        loss, _ = mirage_loss(out, y, cfg)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert np.mean(losses[-5:]) < 0.6 * np.mean(losses[:5]), losses


def test_dropout_acts_in_training_only() -> None:
    cfg = get_preset("tiny").replace(dropout=0.5)
    torch.manual_seed(0)
    model = Mirage(cfg)
    x = _inputs(cfg)
    with torch.no_grad():
        a, b = model(*x).logits, model(*x).logits
        model.eval()
        c, d = model(*x).logits, model(*x).logits
    assert not torch.equal(a, b) and torch.equal(c, d)
