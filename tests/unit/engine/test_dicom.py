"""DICOM 12-lead ECG in (PS3.3 12-Lead ECG IOD): pydicom's own sample file and files we write.

``waveform_ecg.dcm`` ships in the pydicom wheel: a 12-Lead ECG Waveform Storage object, RHYTHM
group of 12 channels x 10 000 samples at 1000 Hz (10 s, 1.25 uV per count) plus a MEDIAN BEAT group.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from engine.config import LEADS, get_preset
from engine.data import load_items
from engine.data.dicom_io import is_dicom, read_dicom_waveform
from engine.data.testing import write_dicom_ecg
from engine.data.wfdb_io import load_window, read_record
from engine.errors import DatasetError

CFG = get_preset("default")


@pytest.fixture(scope="module")
def pydicom_ecg() -> Path:
    pydicom = pytest.importorskip("pydicom")
    path = Path(pydicom.__file__).parent / "data" / "test_files" / "waveform_ecg.dcm"
    if not path.is_file():
        pytest.skip(f"{path} is not in this pydicom wheel ({pydicom.__version__})")
    return path


def _synthetic(seed: int = 0, fs: float = 500.0) -> np.ndarray:
    from simulators.ecg import PatientSpec, synthesize

    return synthesize(PatientSpec(), fs=fs, duration_s=10.0, seed=seed).signal


def test_pydicom_sample_is_a_10s_1000hz_12_lead_ecg_in_mv(pydicom_ecg: Path) -> None:
    import pydicom

    rec = read_record(pydicom_ecg)
    assert rec.source_format == "dicom" and rec.fs == 1000.0 and rec.signal.shape == (12, 10000)
    assert rec.leads == LEADS and rec.extra_signals == ()
    ds = pydicom.dcmread(pydicom_ecg)
    np.testing.assert_allclose(rec.signal, ds.waveform_array(0).T / 1000.0)  # pydicom gives uV
    i, ii, iii = rec.signal[0], rec.signal[1], rec.signal[2]
    assert np.abs(iii - (ii - i)).max() < 2.5e-3  # Einthoven, within two 1.25 uV steps
    assert 0.5 < np.ptp(ii) < 5.0  # a QRS of a few mV: the unit is right
    window = load_window(pydicom_ecg, CFG)
    assert window.shape == (12, CFG.T) and np.isfinite(window).all()


def test_written_dicom_round_trips_with_extra_channel_and_any_order(tmp_path: Path) -> None:
    x = _synthetic()
    order = [11, 0, 5, 3, 1, 2, 4, 6, 7, 8, 9, 10]
    names = [LEADS[k] for k in order] + ["Respiration"]
    path = write_dicom_ecg(tmp_path / "a.dcm", np.vstack([x[order], x[:1] * 0.1]), 500.0, names, baseline_uv=40.0)
    rec = read_record(path)
    assert rec.extra_signals == ("Respiration",) and rec.flags == ["ignored:Respiration"]
    assert set(rec.leads) == set(LEADS)
    back = np.stack([rec.signal[rec.leads.index(n)] for n in LEADS])
    np.testing.assert_allclose(back, x, atol=1.25e-3 + 1e-9)  # half a 2.5 uV count


def test_units_in_millivolts_and_suffixless_files_are_read(tmp_path: Path) -> None:
    x = _synthetic(1)
    path = write_dicom_ecg(tmp_path / "b.dcm", x, 500.0, unit="mV", sensitivity_uv=0.001)
    bare = tmp_path / "IM0001"
    shutil.copy(path, bare)
    assert is_dicom(bare) and not is_dicom(tmp_path / "missing")
    np.testing.assert_allclose(read_record(bare).signal, x, atol=5e-4 + 1e-9)


def test_bad_dicom_inputs_are_rejected_with_reason(tmp_path: Path) -> None:
    x = _synthetic(2)
    no_v3 = [n for n in LEADS if n != "V3"]
    path = write_dicom_ecg(tmp_path / "c.dcm", x[[LEADS.index(n) for n in no_v3]], 500.0, no_v3)
    with pytest.raises(DatasetError, match=r"\['V3'\] are missing"):
        load_window(path, CFG)
    with pytest.raises(DatasetError, match="not a voltage"):
        read_dicom_waveform(write_dicom_ecg(tmp_path / "d.dcm", x, 500.0, unit="mmHg"))
    (tmp_path / "e.dcm").write_bytes(b"not dicom at all")
    with pytest.raises(DatasetError, match="cannot read DICOM"):
        read_record(tmp_path / "e.dcm")
    with pytest.raises(DatasetError, match="not found"):
        read_record(tmp_path / "f.dcm")


def test_manifest_lists_dicom_files_and_evaluate_and_render_take_them(tmp_path: Path, pydicom_ecg: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    from engine.cli import evaluate_main
    from engine.render.cli import render_main

    shutil.copy(pydicom_ecg, tmp_path / "cart.dcm")
    for k in range(3):
        write_dicom_ecg(tmp_path / "ecg" / f"r{k}.dcm", _synthetic(10 + k), 500.0)
    (tmp_path / "manifest.csv").write_text("record,label,patient_id\ncart.dcm,1,p0\necg/r0.dcm,0,p1\necg/r1.dcm,1,p2\necg/r2.dcm,0,p3\n")
    items = load_items(tmp_path)
    assert [it.path.name for it in items] == ["cart.dcm", "r0.dcm", "r1.dcm", "r2.dcm"]
    assert evaluate_main(["--data", str(tmp_path), "--out", str(tmp_path / "rep"), "--cache", "", "--no-progress"]) == 0
    assert json.loads((tmp_path / "rep" / "report.json").read_text())["n_pos"] == 2
    capsys.readouterr()
    assert render_main([str(tmp_path / "cart.dcm"), "--out", str(tmp_path / "cart.png")]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["fs"] == CFG.fs
    (tmp_path / "manifest.csv").write_text("record,label,patient_id\nnothere.dcm,1,p0\n")
    with pytest.raises(DatasetError, match="DICOM file .*nothere.dcm not found"):
        load_items(tmp_path)


def test_replay_streams_dicom_and_ptb_shaped_records_from_a_manifest(tmp_path: Path) -> None:
    """``mirage replay --data DIR`` reads records with the engine's reader: DICOM plays, extras are dropped."""
    from engine.data.testing import write_ptb_like_record
    from simulators.cohort import build_cohort
    from stream.core.schema import decode_chunk
    from stream.tools.replay import ReplayPlan, scenario_from_data

    x = _synthetic(5, 1000.0)
    write_dicom_ecg(tmp_path / "a.dcm", x, 1000.0)
    write_ptb_like_record(tmp_path, "b", x)
    (tmp_path / "manifest.csv").write_text("record,label,patient_id\na.dcm,1,p1\nb,0,p2\n")
    beds = build_cohort(scenario_from_data(tmp_path))
    assert [b.n_samples for b in beds] == [10000, 10000] and all(b.fs == 1000.0 for b in beds)
    plan = ReplayPlan(beds, start_ns=10**18, chunk_s=1.0)
    sent: dict[str, list[np.ndarray]] = {}
    for k in range(plan.n_ticks):
        for m in plan.tick(k):
            if m.kind == "chunk":
                c = decode_chunk(m.value)
                assert c.leads == LEADS  # 12 leads on the wire, vx/vy/vz never sent
                sent.setdefault(c.bed_id, []).append(c.samples)
    for parts in sent.values():
        played = np.concatenate(parts, axis=1)  # (12, 10000) mV as the gateway sent it
        np.testing.assert_allclose(played, x, atol=2e-3)  # wire quantisation + DICOM/WFDB counts
    assert len(sent) == 2


def test_rhythm_group_is_chosen_over_median_beats(tmp_path: Path, pydicom_ecg: Path) -> None:
    import pydicom

    ds = pydicom.dcmread(pydicom_ecg)
    ds.WaveformSequence = [ds.WaveformSequence[1], ds.WaveformSequence[0]]  # median beat first
    del ds.WaveformSequence[1].MultiplexGroupLabel  # rhythm unlabelled: the longest 12-lead group wins
    ds.save_as(tmp_path / "swapped.dcm")
    assert read_dicom_waveform(tmp_path / "swapped.dcm").signal.shape == (12, 10000)
    ds.WaveformSequence = [ds.WaveformSequence[0]]  # only the median beat is left
    ds.save_as(tmp_path / "median.dcm")
    with pytest.raises(DatasetError, match="no waveform group holds a 12-lead rhythm"):
        read_dicom_waveform(tmp_path / "median.dcm")
