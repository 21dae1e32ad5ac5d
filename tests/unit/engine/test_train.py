"""Training: a 2-epoch tiny run on generated WFDB data writes a loadable checkpoint; resume continues it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.train import choose_thresholds, class_weights, state_path, warmup_cosine

pytest.importorskip("engine.model", reason="engine.model (engineer A) is not in the tree yet")
pytest.importorskip("engine.checkpoint", reason="engine.checkpoint (engineer A) is not in the tree yet")

from test_data import write_record  # noqa: E402 (tests/unit/* are on sys.path: tests/unit/conftest.py)

from engine.checkpoint import load_checkpoint  # noqa: E402
from engine.cli import evaluate_main, train_main  # noqa: E402


def toy_dataset(root: Path, n: int = 32, seed: int = 0) -> Path:
    """A separable toy manifest: MI records carry a large 6 Hz oscillation, others a small one."""
    rng = np.random.default_rng(seed)
    t = np.arange(5000) / 500.0
    rows = ["record,label,patient_id,split"]
    for i in range(n):
        label = i % 2
        amp = 2.0 if label else 0.2
        sig = np.stack([amp * np.sin(2 * np.pi * 6.0 * t + rng.uniform(0, 6.28)) + rng.normal(0, 0.02, t.size) for _ in range(12)])
        write_record(root / "rec", f"r{i}", sig)
        split = "train" if i < n // 2 else ("val" if i < 3 * n // 4 else "test")
        rows.append(f"rec/r{i},{label},P{i},{split}")
    (root / "manifest.csv").write_text("\n".join(rows) + "\n")
    return root


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return toy_dataset(tmp_path_factory.mktemp("toy"))


def _train(toy: Path, out: Path, epochs: int, *extra: str) -> int:
    return train_main(["--data", str(toy), "--out", str(out), "--preset", "tiny", "--epochs", str(epochs), "--seed", "3", "--no-progress",
                       "--cache", "", "--batch-size", "8", *extra])


def test_train_writes_loadable_checkpoint_and_resumes(toy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "ck.pt"
    assert _train(toy, out, 2) == 0
    summary = json.loads(capsys.readouterr().out)
    assert out.is_file() and state_path(out).is_file()
    loaded = load_checkpoint(out)
    assert loaded.config.name == "tiny"
    assert summary["thresholds"]["start"] == pytest.approx(loaded.threshold)
    assert summary["thresholds"]["end"] <= summary["thresholds"]["start"]
    assert 0 <= summary["metrics"]["val"]["all"]["auroc"] <= 1
    state = torch.load(state_path(out), map_location="cpu", weights_only=False)
    assert state["epoch"] == 1 and len(state["history"]) == 2
    first = state["history"]

    # the same seed reproduces the same run
    again = tmp_path / "again.pt"
    assert _train(toy, again, 2) == 0
    capsys.readouterr()
    assert torch.load(state_path(again), map_location="cpu", weights_only=False)["history"][0]["train_loss"] == pytest.approx(first[0]["train_loss"], rel=1e-5)

    # resume: continues at epoch 2 and keeps the history of the first two
    assert _train(toy, out, 3, "--resume") == 0
    capsys.readouterr()
    state = torch.load(state_path(out), map_location="cpu", weights_only=False)
    assert state["epoch"] == 2 and len(state["history"]) == 3
    assert state["history"][:2] == first
    assert load_checkpoint(out).model is not None


def test_evaluate_known_answers(toy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "ck.pt"
    assert _train(toy, out, 3) == 0
    capsys.readouterr()
    rep_dir = tmp_path / "report"
    assert evaluate_main(["--checkpoint", str(out), "--data", str(toy), "--out", str(rep_dir), "--no-progress", "--cache", ""]) == 0
    report = json.loads((rep_dir / "report.json").read_text())
    for key in ("n_pos", "n_neg", "auroc", "auprc", "sens_at_spec90", "spec_at_sens90", "threshold", "sensitivity", "specificity", "ece"):
        assert key in report
    assert report["n_pos"] == 16 and report["n_neg"] == 16
    assert report["auroc"] >= 0.9  # a 10x amplitude difference is trivially separable
    assert {"roc.png", "pr.png", "reliability.png"} <= {p.name for p in rep_dir.iterdir()}
    assert (rep_dir / "roc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # a model whose weights are all zero scores every record 0.5: AUROC 0.5, AUPRC = prevalence
    loaded = load_checkpoint(out)
    with torch.no_grad():
        for p in loaded.model.parameters():
            p.zero_()
    from engine import metrics as M
    from engine.data import load_items
    from engine.data.dataset import MirageDataset
    from engine.train import predict_dataset

    ds = MirageDataset.from_items(load_items(toy), loaded.config, progress=False)
    probs = predict_dataset(loaded.model, ds)
    assert np.allclose(probs, 0.5)
    assert M.auroc(ds.labels, probs) == 0.5 and M.auprc(ds.labels, probs) == pytest.approx(0.5)


def test_train_rejects_missing_data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert train_main(["--out", str(tmp_path / "x.pt")]) == 2
    assert "--data" in capsys.readouterr().err
    assert train_main(["--data", str(tmp_path), "--out", str(tmp_path / "x.pt"), "--no-progress"]) == 2


def test_schedule_weights_thresholds() -> None:
    f = warmup_cosine(100, 0.1)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0) and f(99) < 0.01
    w = class_weights(np.array([0, 0, 0, 1]))
    assert w.tolist() == pytest.approx([4 / 6, 2.0])
    y = np.array([0] * 20 + [1] * 5)
    p = np.r_[np.linspace(0, 0.5, 20), np.linspace(0.4, 1.0, 5)]
    th = choose_thresholds(y, p)
    assert ((p[y == 0] < th["start"]).mean()) >= 0.9
    assert th["end"] <= th["start"]
