"""``mirage predict``: unlabelled recordings in (WFDB, DICOM, manifest, folder), one row per record out."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from engine.config import LEADS
from engine.data.testing import write_dicom_ecg, write_ptb_like_record
from trt.predict_cli import main


def _synthetic(seed: int, fs: float = 500.0, seconds: float = 10.0) -> np.ndarray:
    from simulators.ecg import PatientSpec, synthesize

    return synthesize(PatientSpec(), fs=fs, duration_s=seconds, seed=seed).signal


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("predict")
    write_ptb_like_record(root / "ptb", "s0001_re", _synthetic(0, 1000.0))
    write_dicom_ecg(root / "cart" / "a.dcm", np.vstack([_synthetic(1), _synthetic(1)[:1]]), 500.0, [*LEADS, "Pacing"])
    (root / "broken.hea").write_text("broken 12 500 5000\nthis is not a header\n")
    return root


def _rows(path: Path) -> dict[str, dict[str, str]]:
    with open(path, newline="") as fh:
        return {r["record"]: r for r in csv.DictReader(fh)}


def test_folder_scores_every_record_and_one_bad_record_does_not_abort(folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "p.csv"
    assert main([str(folder), "--out", str(out), "--no-progress"]) == 1  # 1: a record failed
    rows = _rows(out)
    assert set(rows) == {"ptb/s0001_re", "cart/a.dcm", "broken"}
    assert "cannot read WFDB record" in rows["broken"]["error"] and rows["broken"]["mi_probability"] == ""
    ptb, dcm = rows["ptb/s0001_re"], rows["cart/a.dcm"]
    assert ptb["quality_flags"] == "ignored:vx;ignored:vy;ignored:vz" and ptb["extra_signals"] == "vx;vy;vz" and ptb["fs"] == "1000.0"
    assert dcm["format"] == "dicom" and dcm["extra_signals"] == "Pacing"
    for r in (ptb, dcm):
        assert 0.0 <= float(r["mi_probability"]) <= 1.0 and r["error"] == "" and r["backend"] == "torch"
        assert r["alarm"] == str(float(r["mi_probability"]) >= float(r["threshold"]) and r["evaluable"] == "True")
        assert len(r["top_leads"].split(";")) == 3 and set(r["top_leads"].split(";")) <= set(LEADS)
        assert len(r["checkpoint_sha256"]) == 64


def test_probability_is_the_stream_pipelines(folder: Path, shipped_checkpoint, capsys: pytest.CaptureFixture[str]) -> None:
    from engine.data.wfdb_io import load_window
    from engine.pipeline import model_inputs
    from trt.backends import make_predictor

    path = folder / "cart" / "a.dcm"
    assert main([str(path), "--json", "--no-progress"]) == 0
    row = json.loads(capsys.readouterr().out.strip())
    cfg = shipped_checkpoint.config
    x = model_inputs(load_window(path, cfg)[None], cfg)
    pred = make_predictor("torch", shipped_checkpoint).predict(x.ecg, x.image, x.labs, x.lab_mask)
    assert row["mi_probability"] == pytest.approx(float(pred.probs[0]), abs=1e-6)
    assert row["top_leads"] == [LEADS[k] for k in np.argsort(-pred.lead_weights[0])[:3]]
    assert row["threshold"] == pytest.approx(shipped_checkpoint.threshold, abs=1e-6)


def test_all_windows_reports_the_most_suspicious_window(tmp_path: Path, shipped_checkpoint, capsys: pytest.CaptureFixture[str]) -> None:
    from engine.data.wfdb_io import load_window
    from engine.pipeline import model_inputs
    from trt.backends import make_predictor

    base = write_ptb_like_record(tmp_path, "long", _synthetic(3, 500.0, 20.0), fs=500.0, extra=np.zeros((0, 10000)), extra_names=())
    assert main([str(base), "--json", "--all-windows", "--batch-size", "4", "--no-progress"]) == 0
    row = json.loads(capsys.readouterr().out.strip())
    assert row["windows"] == 6  # starts 0, 2, ..., 10 s
    cfg = shipped_checkpoint.config
    x = model_inputs(np.stack([load_window(base, cfg, s) for s in range(0, 11, 2)]), cfg)
    probs = make_predictor("torch", shipped_checkpoint).predict(x.ecg, x.image, x.labs, x.lab_mask).probs
    assert row["mi_probability"] == pytest.approx(float(probs.max()), abs=1e-5)
    assert row["window_start_s"] == 2.0 * int(np.argmax(probs))


def test_png_page_per_alarm_and_checkpoint_override(folder: Path, tmp_path: Path, shipped_checkpoint) -> None:
    from engine.checkpoint import save_checkpoint

    ckpt = tmp_path / "always.pt"
    save_checkpoint(ckpt, shipped_checkpoint.model, shipped_checkpoint.config, threshold=0.0)  # every evaluable record alarms
    out, pages = tmp_path / "p.csv", tmp_path / "pages"
    main([str(folder / "ptb"), str(folder / "cart" / "a.dcm"), "--out", str(out), "--png", str(pages), "--checkpoint", str(ckpt), "--no-progress"])
    rows = _rows(out)
    assert all(r["alarm"] == "True" and r["threshold"] == "0.0" for r in rows.values())
    assert sorted(p.name for p in pages.iterdir()) == ["cart_a.dcm.png", "s0001_re.png"]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 10_000 for p in pages.iterdir())


def test_manifest_without_labels_and_bad_inputs(folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (folder / "list.csv").write_text("record\nptb/s0001_re\ncart/a.dcm\n")
    assert main([str(folder / "list.csv"), "--json", "--no-progress"]) == 0
    assert [json.loads(line)["record"] for line in capsys.readouterr().out.splitlines()] == ["ptb/s0001_re", "cart/a.dcm"]
    (tmp_path / "empty").mkdir()
    assert main([str(tmp_path / "empty"), "--json", "--no-progress"]) == 2
    assert "no records found" in capsys.readouterr().err
    assert main([str(folder / "ptb"), "--json", "--backend", "no-such-backend", "--no-progress"]) == 2


def test_mirage_dispatches_predict(capsys: pytest.CaptureFixture[str]) -> None:
    from mirage.cli import COMMANDS
    from mirage.cli import main as mirage_main

    assert COMMANDS["predict"].target == "trt.predict_cli:main"
    with pytest.raises(SystemExit) as stop:
        mirage_main(["predict", "--help"])
    assert stop.value.code == 0 and "DICOM" in capsys.readouterr().out
