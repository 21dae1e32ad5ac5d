"""The Predictor seam: TorchPredictor parity with the module, dtype, input checks, backend choice."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from engine.checkpoint import load_checkpoint, save_checkpoint
from engine.config import get_preset
from engine.errors import ConfigError, SignalError
from engine.model import Mirage
from engine.prediction import Prediction, Predictor
from engine.predictor import TorchPredictor
from trt.backends import make_predictor

CFG = get_preset("tiny")


@pytest.fixture
def saved(tmp_path: Path) -> tuple[Path, Mirage]:
    torch.manual_seed(0)
    model = Mirage(CFG).eval()
    path = tmp_path / "m.pt"
    save_checkpoint(path, model, CFG, threshold=0.5, metrics={})
    return path, model


def _batch(B: int = 3) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(0)
    return (rng.normal(size=(B, 12, CFG.T)).astype(np.float32), rng.random((B, 1, 224, 224), dtype=np.float32),
            rng.normal(size=(B, CFG.lab_dim)).astype(np.float32), np.ones((B, CFG.lab_dim), np.float32))


def test_torch_predictor_matches_the_module(saved) -> None:
    path, model = saved
    pred = make_predictor("torch", path)
    assert isinstance(pred, Predictor) and pred.name == "torch" and pred.config == CFG
    batch = _batch()
    out = pred.predict(*batch)
    with torch.no_grad():
        ref = model(*[torch.from_numpy(a) for a in batch])
    assert isinstance(out, Prediction)
    assert out.probs.dtype == np.float32 and out.probs.shape == (3,)
    assert out.lead_weights.dtype == np.float32 and out.lead_weights.shape == (3, 12)
    np.testing.assert_allclose(out.probs, ref.probs.numpy(), atol=1e-6)
    np.testing.assert_allclose(out.lead_weights, ref.lead_weights.numpy(), atol=1e-6)
    assert isinstance(TorchPredictor(model), Predictor)  # config taken from the module


def test_bfloat16_predictor_is_close_and_leaves_the_checkpoint_alone(saved) -> None:
    loaded = load_checkpoint(saved[0])
    batch = _batch()
    fp32 = make_predictor("torch", loaded).predict(*batch)
    bf16 = make_predictor("torch", loaded, dtype="bf16").predict(*batch)
    assert bf16.probs.dtype == np.float32
    np.testing.assert_allclose(bf16.probs, fp32.probs, atol=0.05)
    assert next(loaded.model.parameters()).dtype == torch.float32  # cast a copy, not the caller's module
    with pytest.raises(ConfigError, match="'float8'"):
        TorchPredictor(loaded, dtype="float8")


def test_wrong_input_shapes_name_the_array(saved) -> None:
    pred = make_predictor("torch", saved[0])
    ecg, image, labs, mask = _batch()
    with pytest.raises(SignalError, match=r"ecg has shape \(3, 12, 500\).*\(3, 12, 1000\)"):
        pred.predict(ecg[:, :, :500], image, labs, mask)
    with pytest.raises(SignalError, match=r"lab_mask has shape \(3, 6\)"):
        pred.predict(ecg, image, labs, mask[:, :6])


def test_unknown_backend_and_options_are_config_errors(saved) -> None:
    with pytest.raises(ConfigError, match="quantum-annealer"):
        make_predictor("quantum-annealer", saved[0])
    with pytest.raises(ConfigError, match=r"'torch' does not take options \['colour'\]"):
        make_predictor("torch", saved[0], colour="red")


@pytest.mark.slow
def test_torch_compile_matches_eager(saved) -> None:
    path, _ = saved
    batch = _batch(2)
    eager = make_predictor("torch", path).predict(*batch)
    compiled = make_predictor("torch-compile", path)
    assert compiled.name == "torch-compile"
    np.testing.assert_allclose(compiled.predict(*batch).probs, eager.probs, atol=1e-4)
