"""Checkpoint round trip, corrupt/incompatible files, and the Predictor seam."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.checkpoint import load_checkpoint, model_version, save_checkpoint
from engine.config import get_preset
from engine.errors import CheckpointError, ConfigError
from engine.model import Mirage
from engine.predictor import Predictor, TorchPredictor, make_predictor


@pytest.fixture
def saved(tmp_path):
    cfg = get_preset("tiny")
    torch.manual_seed(0)
    model = Mirage(cfg).eval()
    path = tmp_path / "m.pt"
    sha = save_checkpoint(path, model, cfg, threshold=0.37, metrics={"auroc": 0.8}, extra={"command": "x"})
    return path, model, cfg, sha


def _batch(cfg, B=3):
    rng = np.random.default_rng(0)
    return (rng.normal(size=(B, 12, cfg.T)).astype(np.float32), rng.random((B, 1, 224, 224), dtype=np.float32),
            rng.normal(size=(B, cfg.lab_dim)).astype(np.float32), np.ones((B, cfg.lab_dim), np.float32))


def test_round_trip_gives_identical_outputs(saved) -> None:
    path, model, cfg, sha = saved
    loaded = load_checkpoint(path)
    assert loaded.sha256 == sha and loaded.config == cfg and loaded.threshold == pytest.approx(0.37)
    assert loaded.thresholds == {"start": pytest.approx(0.37), "end": pytest.approx(0.296)}
    assert loaded.metadata["metrics"] == {"auroc": 0.8} and loaded.metadata["lab_schema"]["version"] == 1
    assert model_version(loaded).startswith("mirage-tiny-")
    x = [torch.from_numpy(a) for a in _batch(cfg)]
    with torch.no_grad():
        assert torch.equal(model(*x).logits, loaded.model(*x).logits)


def test_corrupt_truncated_and_foreign_files_name_the_file(saved, tmp_path) -> None:
    path = saved[0]
    bad = tmp_path / "corrupt.pt"
    bad.write_bytes(path.read_bytes()[:300])
    with pytest.raises(CheckpointError, match="corrupt.pt"):
        load_checkpoint(bad)
    with pytest.raises(CheckpointError, match="missing.pt.*does not exist"):
        load_checkpoint(tmp_path / "missing.pt")
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    with pytest.raises(CheckpointError, match="foreign.pt.*not a MIRAGE checkpoint"):
        load_checkpoint(foreign)


def test_incompatible_versions_are_refused(saved, tmp_path) -> None:
    payload = torch.load(saved[0], weights_only=True)
    payload["format_version"] = 99
    old = tmp_path / "future.pt"
    torch.save(payload, old)
    with pytest.raises(CheckpointError, match="future.pt.*format_version 99"):
        load_checkpoint(old)
    payload["format_version"] = 1
    payload["lab_schema"] = {"version": 0, "features": []}
    stale = tmp_path / "stale-labs.pt"
    torch.save(payload, stale)
    with pytest.raises(CheckpointError, match="stale-labs.pt.*lab schema"):
        load_checkpoint(stale)


def test_torch_predictor_matches_the_module(saved) -> None:
    path, model, cfg, _ = saved
    pred = make_predictor("torch", path)
    assert isinstance(pred, Predictor) and pred.name == "torch"
    batch = _batch(cfg)
    out = pred.predict(*batch)
    with torch.no_grad():
        ref = model(*[torch.from_numpy(a) for a in batch])
    np.testing.assert_allclose(out.probs, ref.probs.numpy(), atol=1e-6)
    assert out.probs.dtype == np.float32 and out.lead_weights.shape == (3, 12)
    assert isinstance(TorchPredictor(model, cfg), Predictor)


def test_unknown_backend_error_names_it(saved) -> None:
    with pytest.raises((ConfigError, ValueError)) as err:
        make_predictor("quantum-annealer", saved[0])
    assert "quantum-annealer" in str(err.value)
