"""Checkpoints: round trip, what is saved, and corrupt / foreign / incompatible files named in errors."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.checkpoint import FORMAT_VERSION, default_checkpoint_path, load_checkpoint, model_version, save_checkpoint
from engine.config import get_preset
from engine.errors import CheckpointError
from engine.labs import schema_dict
from engine.model import Mirage


@pytest.fixture
def saved(tmp_path: Path) -> tuple[Path, Mirage, object, str]:
    cfg = get_preset("tiny")
    torch.manual_seed(0)
    model = Mirage(cfg).eval()
    with torch.no_grad():
        model.ecg.spatial_bias.normal_(0, 1.0)  # not the init: the file must carry it
    path = tmp_path / "m.pt"
    sha = save_checkpoint(path, model, cfg, threshold=0.37, metrics={"auroc": 0.8}, extra={"command": "x"})
    return path, model, cfg, sha


def _batch(cfg, B: int = 3) -> list[torch.Tensor]:
    rng = np.random.default_rng(0)
    arrays = (rng.normal(size=(B, 12, cfg.T)), rng.random((B, 1, 224, 224)), rng.normal(size=(B, cfg.lab_dim)),
              np.ones((B, cfg.lab_dim)))
    return [torch.from_numpy(a.astype(np.float32)) for a in arrays]


def test_round_trip_gives_identical_outputs(saved) -> None:
    path, model, cfg, sha = saved
    loaded = load_checkpoint(path)
    assert loaded.sha256 == sha and loaded.path == path and loaded.config == cfg
    assert loaded.threshold == pytest.approx(0.37) and not loaded.model.training
    assert loaded.thresholds == {"start": pytest.approx(0.37), "end": pytest.approx(0.296)}
    assert model_version(loaded) == f"mirage-tiny-{sha[:12]}"
    x = _batch(cfg)
    with torch.no_grad():
        a, b = model(*x), loaded.model(*x)
    assert torch.equal(a.logits, b.logits) and torch.equal(a.lead_weights, b.lead_weights)


def test_saved_metadata(saved) -> None:
    from engine.pipeline import PREPROCESSING_VERSION
    from engine.render import RENDERER_VERSION

    meta = load_checkpoint(saved[0]).metadata
    assert meta["format_version"] == FORMAT_VERSION and meta["lab_schema"] == schema_dict()
    assert meta["renderer_version"] == RENDERER_VERSION and meta["preprocessing_version"] == PREPROCESSING_VERSION
    assert meta["metrics"] == {"auroc": 0.8} and meta["extra"] == {"command": "x"}
    assert meta["config"]["name"] == "tiny" and meta["created"].endswith("Z")
    assert "state_dict" not in meta


def test_thresholds_from_extra_override_the_default_hysteresis(tmp_path: Path) -> None:
    cfg = get_preset("tiny")
    path = tmp_path / "t.pt"
    save_checkpoint(path, Mirage(cfg), cfg, threshold=0.6, metrics={}, extra={"thresholds": {"start": 0.6, "end": 0.4}})
    assert load_checkpoint(path).thresholds == {"start": 0.6, "end": 0.4}
    with pytest.raises(CheckpointError, match="bad.pt.*threshold 1.5"):
        save_checkpoint(tmp_path / "bad.pt", Mirage(cfg), cfg, threshold=1.5, metrics={})
    assert not (tmp_path / "bad.pt").exists()


def test_corrupt_truncated_missing_and_foreign_files_name_the_file(saved, tmp_path: Path) -> None:
    path = saved[0]
    bad = tmp_path / "corrupt.pt"
    bad.write_bytes(path.read_bytes()[:300])
    with pytest.raises(CheckpointError, match="corrupt.pt.*corrupt"):
        load_checkpoint(bad)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="garbage.pt"):
        load_checkpoint(garbage)
    with pytest.raises(CheckpointError, match="missing.pt.*does not exist"):
        load_checkpoint(tmp_path / "missing.pt")
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    with pytest.raises(CheckpointError, match="foreign.pt.*not a MIRAGE checkpoint"):
        load_checkpoint(foreign)


def test_incompatible_files_are_refused(saved, tmp_path: Path) -> None:
    payload = torch.load(saved[0], weights_only=True)
    cases = {
        "future.pt": ({"format_version": 99}, "format_version 99"),
        "stale-labs.pt": ({"lab_schema": {"version": 0, "features": []}}, "lab schema"),
        "bad-config.pt": ({"config": {**payload["config"], "no_such_field": 1}}, "invalid config.*no_such_field"),
        "wrong-weights.pt": ({"config": {**payload["config"], "embed_dim": 64}}, "weights do not match"),
    }
    for name, (change, message) in cases.items():
        path = tmp_path / name
        torch.save({**payload, **change}, path)
        with pytest.raises(CheckpointError, match=f"{name}.*{message}"):
            load_checkpoint(path)


def test_a_renderer_change_since_training_is_a_warning(saved, tmp_path: Path, caplog) -> None:
    payload = torch.load(saved[0], weights_only=True)
    old = tmp_path / "old-renderer.pt"
    torch.save({**payload, "renderer_version": "renderer-from-last-year"}, old)
    with caplog.at_level(logging.WARNING, logger="engine.checkpoint"):
        load_checkpoint(saved[0])
        assert not caplog.records
        loaded = load_checkpoint(old)
    assert loaded.metadata["renderer_version"] == "renderer-from-last-year"
    assert len(caplog.records) == 1 and "renderer-from-last-year" in caplog.text and "old-renderer.pt" in caplog.text


def test_default_checkpoint_path_is_in_the_package() -> None:
    path = default_checkpoint_path()
    assert path.name == "mirage-default.pt" and path.parent.name == "checkpoints" and path.parent.parent.name == "engine"
