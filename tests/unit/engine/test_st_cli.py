"""``mirage measure``: CSV rows per record and lead, median-beat PNGs, errors, dispatch."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from engine.config import LEADS
from engine.st.cli import COLUMNS, main
from engine.st.testing import beat_train, true_st_uv


def _write(folder: Path, name: str, x: np.ndarray, fs: int) -> Path:
    import wfdb

    # Eight independent leads only, with a monitor's spellings: the reader derives the limb leads.
    keep = [LEADS.index(n) for n in ("I", "II", "V1", "V2", "V3", "V4", "V5", "V6")]
    wfdb.wrsamp(name, fs=fs, units=["mV"] * 8, sig_name=["DI", "DII", "V1", "V2", "V3", "V4", "V5", "V6"], p_signal=x[keep].T,
                fmt=["16"] * 8, adc_gain=[1000.0] * 8, baseline=[0] * 8, write_dir=str(folder))
    return folder / name


@pytest.mark.parametrize("rate", ["native", "model"])
def test_measure_writes_rows_and_png(tmp_path: Path, rate: str) -> None:
    rec = _write(tmp_path, "syn", beat_train(500.0), 500)
    out, png = tmp_path / "st.csv", tmp_path / "png"
    assert main([str(rec) + ".hea", "--out", str(out), "--png", str(png), "--rate", rate]) == 0
    rows = list(csv.DictReader(out.open()))
    assert tuple(rows[0].keys()) == COLUMNS
    assert [r["lead"] for r in rows] == list(LEADS) and {r["record"] for r in rows} == {"syn"}
    got = np.array([float(r["st_j60_uv"]) for r in rows])
    np.testing.assert_allclose(got, true_st_uv(), atol=25.0)
    assert rows[0]["fs"] == ("500" if rate == "native" else "100") and rows[0]["quality"] == ""
    assert (png / "syn.png").stat().st_size > 10_000


def test_measure_reports_unreadable_records(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = _write(tmp_path, "ok", beat_train(500.0), 500)
    out = tmp_path / "st.csv"
    assert main([str(good), str(tmp_path / "absent"), "--out", str(out)]) == 1
    assert "absent" in capsys.readouterr().err
    assert len(list(csv.DictReader(out.open()))) == 12
    assert main([str(tmp_path), "--out", str(out)]) == 2  # a folder that is neither PTB-XL nor a manifest


def test_flagged_values_are_empty_and_flags_named(tmp_path: Path) -> None:
    x = beat_train(500.0)
    x[LEADS.index("V4")] = 0.0
    rec = _write(tmp_path, "flat", x, 500)
    out = tmp_path / "st.csv"
    assert main([str(rec), "--out", str(out)]) == 0
    v4 = next(r for r in csv.DictReader(out.open()) if r["lead"] == "V4")
    assert v4["st_j60_uv"] == "" and v4["quality"] == "flat:V4"


def test_mirage_dispatches_measure(capsys: pytest.CaptureFixture[str]) -> None:
    from mirage.cli import main as mirage_main

    with pytest.raises(SystemExit) as exc:
        mirage_main(["measure", "--help"])
    assert exc.value.code == 0
    assert "J+60" in capsys.readouterr().out
