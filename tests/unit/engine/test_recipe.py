"""Issue 16's recipe parts: per-lead ResNet tokeniser, superclass heads, calibration, the ResNet
reference, several data sources (dedup by ecg_id, patient-consistent folds), lazily rendered images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from test_data import sine_record, write_record  # tests/unit/* are on sys.path (tests/unit/conftest.py)

from engine import metrics as M
from engine.config import SUPERCLASSES, get_preset
from engine.data import load_items, load_sources, with_patient_folds
from engine.data.dataset import MirageDataset
from engine.model import Mirage, MirageOutput, build_model
from engine.model.lead_resnet import LeadResNet
from engine.pipeline import model_inputs
from engine.train import calibrate, training_loss

TINY_RESNET = get_preset("tiny").replace(lead_encoder="resnet", resnet_width=4, aux_classes=5)


def _inputs(cfg, B: int = 3, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(B, 12, cfg.T, generator=g), torch.rand(B, 1, 224, 224, generator=g), torch.zeros(B, cfg.lab_dim), torch.zeros(B, cfg.lab_dim))


# ---------------------------------------------------------------- model


def test_lead_resnet_tokens_are_shared_across_leads_and_shift_robust() -> None:
    torch.manual_seed(0)
    enc = LeadResNet(embed_dim=32, width=4).eval()
    x = torch.randn(2, 12, 1000)
    with torch.no_grad():
        tok = enc(x)
        perm = torch.randperm(12)
        assert tok.shape == (2, 12, 32)
        # one CNN for every lead: permuting the leads permutes the tokens
        torch.testing.assert_close(enc(x[:, perm]), tok[:, perm], atol=1e-5, rtol=1e-5)
        # a 0.4 s shift barely moves a pooled-CNN token; the paper's linear W_proj token changes completely
        shifted = torch.roll(x, 40, dims=-1)
        lin = torch.nn.Linear(1000, 32)
        rel_cnn = float((enc(shifted) - tok).norm() / tok.norm())
        rel_lin = float((lin(shifted) - lin(x)).norm() / lin(x).norm())
    assert rel_cnn < 0.25 < rel_lin


def test_ptbxl_preset_has_resnet_tokens_and_superclass_heads() -> None:
    cfg = get_preset("ptbxl")
    assert cfg.lead_encoder == "resnet" and cfg.aux_classes == len(SUPERCLASSES) == 5
    paper = get_preset("paper")
    assert paper.lead_encoder == "linear" and paper.aux_classes == 0 and paper.use_spatial_bias  # paper stays paper
    torch.manual_seed(0)
    out = Mirage(TINY_RESNET).eval()(*_inputs(TINY_RESNET))
    assert out.aux_logits is not None and out.aux_logits.shape == (3, 5)
    assert Mirage(get_preset("tiny")).eval()(*_inputs(get_preset("tiny"))).aux_logits is None


def test_aux_loss_ignores_unknown_flags_and_trains_the_heads() -> None:
    torch.manual_seed(0)
    model = Mirage(TINY_RESNET)
    out = model(*_inputs(TINY_RESNET))
    y = torch.tensor([0, 1, 0])
    w = torch.ones(2)
    base, _ = training_loss(out, y, TINY_RESNET, w, None)
    unknown, _ = training_loss(out, y, TINY_RESNET, w, torch.full((3, 5), float("nan")))
    assert torch.equal(base, unknown)  # NaN = unknown flags (simulated patients) add nothing
    known = torch.tensor([[1, 0, 0, 0, 0], [0, 1, 1, 0, 0], [float("nan")] * 5])
    total, _ = training_loss(out, y, TINY_RESNET, w, known)
    assert float(total) > float(base)
    total.backward()
    assert model.aux_head.weight.grad is not None and float(model.aux_head.weight.grad.abs().sum()) > 0


def test_resnet1d_reference_runs_without_contrastive_loss() -> None:
    cfg = get_preset("tiny").replace(arch="resnet1d", resnet_width=4, aux_classes=5)
    torch.manual_seed(0)
    model = build_model(cfg)
    out = model(*_inputs(cfg))
    assert isinstance(out, MirageOutput) and out.logits.shape == (3, 2) and out.aux_logits.shape == (3, 5)
    _, parts = training_loss(out, torch.tensor([0, 1, 0]), cfg, torch.ones(2))
    assert parts["con"] == 0.0
    with pytest.raises(Exception, match="arch"):
        get_preset("tiny").replace(arch="lstm")


def test_no_spatial_bias_variant_keeps_bias_at_zero() -> None:
    cfg = TINY_RESNET.replace(use_spatial_bias=False)
    model = Mirage(cfg)
    assert not model.ecg.spatial_bias.requires_grad and float(model.ecg.spatial_bias.abs().sum()) == 0.0
    assert Mirage(TINY_RESNET).ecg.spatial_bias.requires_grad


# ---------------------------------------------------------------- calibration


class _FixedLogits(torch.nn.Module):
    """A 'model' whose raw logits are given; it has the calibration buffers of the real ones."""

    def __init__(self, diff: np.ndarray) -> None:
        super().__init__()
        self.cfg = get_preset("tiny").replace(use_img_branch=False)
        self.diff = torch.tensor(diff, dtype=torch.float32)
        self.register_buffer("temperature", torch.ones(()))
        self.register_buffer("logit_offset", torch.zeros(()))

    def forward(self, ecg, image, labs, mask):  # type: ignore[no-untyped-def]
        from engine.model.mirage import calibrated

        d = self.diff[ecg[:, 0, 0].long()]
        logits = calibrated(torch.stack([torch.zeros_like(d), d], dim=1), self.temperature, self.logit_offset)
        return MirageOutput(logits, logits.softmax(-1)[:, 1], d, d, d)


class _IndexDataset:
    """Batches whose first ECG sample is the record index (so the model above can look it up)."""

    def __init__(self, labels: np.ndarray) -> None:
        self.labels = labels

    def __len__(self) -> int:
        return len(self.labels)

    def batch(self, idx, render=True):  # type: ignore[no-untyped-def]
        ix = np.asarray(list(idx))
        ecg = np.zeros((len(ix), 12, 4), np.float32)
        ecg[:, 0, 0] = ix
        return torch.from_numpy(ecg), torch.zeros(len(ix), 1, 1, 1), torch.zeros(len(ix), 7), torch.zeros(len(ix), 7), torch.from_numpy(self.labels[ix])


def test_calibration_fixes_overconfident_shifted_logits_without_changing_ranking() -> None:
    rng = np.random.default_rng(0)
    y = (rng.random(600) < 0.2).astype(np.int64)
    true_logit = rng.normal(0, 1.5, 600) + 2.0 * y - 1.5
    raw = 4.0 * true_logit + 3.0  # over-confident and shifted towards MI, as class weighting does
    model, ds = _FixedLogits(raw), _IndexDataset(y)
    before = model(*ds.batch(range(600))[:4]).probs.detach().numpy()
    res = calibrate(model, ds)  # type: ignore[arg-type]
    after = model(*ds.batch(range(600))[:4]).probs.detach().numpy()
    assert res["nll_after"] < res["nll_before"]
    assert res["temperature"] > 2.0 and res["offset"] < 0
    assert M.auroc(y, after) == pytest.approx(M.auroc(y, before))  # ranking unchanged
    assert M.ece(y, after) < M.ece(y, before)


def test_checkpoints_without_calibration_buffers_still_load() -> None:
    torch.manual_seed(0)
    model = Mirage(TINY_RESNET)
    sd = {k: v for k, v in model.state_dict().items() if k not in ("temperature", "logit_offset")}
    fresh = Mirage(TINY_RESNET)
    fresh.load_state_dict(sd)  # strict: the old format gets T = 1, offset 0
    assert float(fresh.temperature) == 1.0 and float(fresh.logit_offset) == 0.0


# ---------------------------------------------------------------- data sources


def _ptbxl_like_manifest(root: Path, rows: list[tuple[str, int, str, int]], fs: int) -> Path:
    """A manifest of PTB-XL-like records: (name, label, patient, ecg_id), superclass columns set."""
    lines = ["record,label,patient_id,norm,sttc,cd,hyp,ecg_id"]
    for k, (name, label, pid, ecg_id) in enumerate(rows):
        write_record(root / "rec", name, sine_record(seconds=10.0, fs=fs, amp=0.5 + k), fs=fs)
        lines.append(f"rec/{name},{label},{pid},{int(not label)},{k % 2},0,1,{ecg_id}")
    (root / "manifest.csv").write_text("\n".join(lines) + "\n")
    return root


def test_load_sources_dedups_by_ecg_id_and_keeps_patients_in_one_fold(tmp_path: Path) -> None:
    hi = _ptbxl_like_manifest(tmp_path / "hi", [("a", 1, "15709.0", 1), ("b", 0, "200", 2)], fs=500)
    lo = _ptbxl_like_manifest(tmp_path / "lo", [("a", 1, "15709", 1), ("c", 0, "15709", 3), ("d", 0, "301", 4)], fs=100)
    items = load_sources([hi, lo])
    assert [it.record_id for it in items] == ["ptbxl-1", "ptbxl-2", "ptbxl-3", "ptbxl-4"]  # ECG 1 read once
    assert items[0].path.parent.parent.name == "hi"  # from the first source that lists it
    assert items[0].patient_id == items[2].patient_id == "ptbxl-p15709"  # one spelling across sources
    assert items[0].fold == items[2].fold and all(1 <= it.fold <= 8 for it in items)
    assert items[0].classes == (0, 1, 0, 0, 1) and items[1].classes == (1, 0, 1, 0, 1)
    single = load_sources([lo])
    assert all(it.fold is None for it in single)  # one source keeps its own folds (none here)
    assert {it.fold for it in with_patient_folds(single)} <= set(range(1, 9))
    # 500 Hz and 100 Hz versions land in the same (12, T) model window
    ds = MirageDataset.from_items(items, get_preset("tiny"), progress=False, images=False)
    assert ds.inputs.ecg.shape == (4, 12, 1000) and np.isnan(ds.aux).sum() == 0


def test_lazily_rendered_images_equal_the_pipeline(tmp_path: Path) -> None:
    items = load_items(_ptbxl_like_manifest(tmp_path / "m", [("a", 1, "1", 1), ("b", 0, "2", 2)], fs=500))
    cfg = get_preset("tiny")
    lazy = MirageDataset.from_items(items, cfg, progress=False, images=False, cache_dir=tmp_path / "c")
    eager = MirageDataset.from_items(items, cfg, progress=False, images=True, cache_dir=tmp_path / "c")  # from the cache
    assert lazy.lazy_images and not eager.lazy_images
    ref = model_inputs(lazy.windows.windows, cfg)
    for ds in (lazy, eager):
        ecg, image, *_ = ds.batch([0, 1])
        assert np.array_equal(image.numpy(), ref.image) and np.array_equal(ecg.numpy(), ref.ecg)
    assert lazy.batch([0], render=False)[1].shape == (1, 1, 1, 1)


def test_real_sources_combine_without_double_counting(ptbxl_dir: Path) -> None:
    lo = ptbxl_dir.parent / "ptbxl100"
    if not (lo / "manifest.csv").is_file():
        pytest.skip(f"{lo} not present")
    items = load_sources([ptbxl_dir, lo])
    ids = [it.ecg_id for it in items]
    assert len(ids) == len(set(ids))
    folds: dict[str, set[int]] = {}
    for it in items:
        folds.setdefault(it.patient_id, set()).add(it.fold)
    assert all(len(f) == 1 for f in folds.values())
    assert all(it.classes is not None for it in items)
