"""Records with signals beyond the 12 leads (PTB ``ptbdb``: lower-case leads + Frank vx, vy, vz, 1000 Hz).

One extra signal must not abort a run: readers map the 12 leads by name, drop the rest with one
log line per record and an ``ignored:`` flag, and still reject, naming the leads, what cannot give
12 leads. Checked on a synthetic record (runs everywhere) and on a real PTB-XL record made
PTB-shaped (skips where ../shared/data is absent), through ``mirage evaluate`` and ``mirage render``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from scipy.signal import resample_poly

from engine.config import LEADS, get_preset
from engine.data.testing import FRANK_LEADS, PTB_LEADS, write_ptb_like_record
from engine.data.wfdb_io import load_window, read_record
from engine.errors import DatasetError, SignalError
from engine.signal.leads import canonical_lead, map_leads, to_standard_leads

CFG = get_preset("default")


def _synthetic_12(seed: int = 0, fs: float = 1000.0) -> np.ndarray:
    from simulators.ecg import PatientSpec, synthesize

    return synthesize(PatientSpec(), fs=fs, duration_s=10.0, seed=seed).signal


def test_map_leads_ptb_names_sets_frank_leads_aside() -> None:
    m = map_leads(list(PTB_LEADS) + list(FRANK_LEADS))
    assert m.rows == {name: k for k, name in enumerate(LEADS)}
    assert m.extra == FRANK_LEADS and m.complete and m.derived == ()
    assert m.kept == tuple(range(12))


def test_map_leads_derives_limb_leads_and_names_missing() -> None:
    eight = ["i", "II", "v1", "V2", "v3", "V4", "v5", "V6", "RESP"]
    m = map_leads(eight)
    assert m.derived == ("III", "aVR", "aVL", "aVF") and m.extra == ("RESP",)
    with pytest.raises(SignalError, match=r"\['V3'\].*extra signals ignored: \['vx'"):
        map_leads([n for n in PTB_LEADS if n != "v3"] + ["vx"])
    with pytest.raises(SignalError, match="appears twice"):
        map_leads(["I", "i", *LEADS[1:]])
    partial = map_leads(["I", "V1"], allow_missing=True)
    assert partial.missing == ("II", "III", "aVR", "aVL", "aVF", "V2", "V3", "V4", "V5", "V6")


@pytest.mark.parametrize("raw, std", [("Lead I (Einthoven)", "I"), ("Lead aVR (Goldberger)", "aVR"), ("lead v1 (Wilson)", "V1"),
                                      ("MDC_ECG_LEAD_AVF", "aVF"), ("avl", "aVL"), ("v6", "V6")])
def test_canonical_lead_drops_qualifiers(raw: str, std: str) -> None:
    assert canonical_lead(raw) == std


def test_to_standard_leads_ignore_extra_is_explicit() -> None:
    x = np.arange(15 * 4, dtype=float).reshape(15, 4)
    names = list(PTB_LEADS) + list(FRANK_LEADS)
    with pytest.raises(SignalError, match="unknown lead name 'vx'"):
        to_standard_leads(x, names)  # the stream's default is unchanged until its own change
    np.testing.assert_array_equal(to_standard_leads(x, names, ignore_extra=True), x[:12])
    from engine.pipeline import to_model_rate_batch

    batch = np.random.default_rng(0).normal(size=(3, 15, 2000))  # (B, L, S) at 200 Hz
    got = to_model_rate_batch(batch, 200.0, names, CFG, ignore_extra=True)
    np.testing.assert_array_equal(got, to_model_rate_batch(batch[:, :12], 200.0, list(PTB_LEADS), CFG))


def test_ptb_shaped_record_reads_with_extras_dropped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    x12 = _synthetic_12()
    base = write_ptb_like_record(tmp_path, "s0001_re", x12)
    plain = write_ptb_like_record(tmp_path / "plain", "s0001_re", x12, extra=np.zeros((0, x12.shape[1])), extra_names=())
    with caplog.at_level(logging.WARNING, logger="engine.data.wfdb_io"):
        rec = read_record(base)
        read_record(base)  # read again (a replay loop): not reported again
    assert rec.fs == 1000.0 and rec.signal.shape == (12, 10000) and rec.leads == PTB_LEADS
    assert rec.extra_signals == FRANK_LEADS and rec.flags == ["ignored:vx", "ignored:vy", "ignored:vz"]
    assert sum("vx, vy, vz" in r.getMessage() for r in caplog.records) == 1  # once per record
    np.testing.assert_allclose(rec.signal, x12, atol=0.5 / 2000 + 1e-9)  # 0.5 uV quantisation
    np.testing.assert_array_equal(load_window(base, CFG), load_window(plain, CFG))  # extras change nothing


def test_record_that_cannot_give_12_leads_is_rejected_with_reason(tmp_path: Path) -> None:
    x12 = _synthetic_12()
    keep = [k for k, n in enumerate(LEADS) if n not in ("V3",)]
    import wfdb

    names = [PTB_LEADS[k] for k in keep] + ["vx"]
    sig = np.vstack([x12[keep], x12[:1]])
    wfdb.wrsamp("nov3", fs=1000, units=["mV"] * len(names), sig_name=names, p_signal=sig.T, fmt=["16"] * len(names), write_dir=str(tmp_path))
    with pytest.raises(DatasetError, match=r"\['V3'\] are missing.*vx"):
        load_window(tmp_path / "nov3", CFG)


def _write_manifest(folder: Path, records: list[tuple[str, int]]) -> Path:
    lines = ["record,label,patient_id"] + [f"{r},{y},p{k}" for k, (r, y) in enumerate(records)]
    (folder / "manifest.csv").write_text("\n".join(lines) + "\n")
    return folder / "manifest.csv"


def _evaluate_and_render(folder: Path, names: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    from engine.cli import evaluate_main
    from engine.render.cli import render_main

    _write_manifest(folder, [(n, k % 2) for k, n in enumerate(names)])
    out = folder / "report"
    assert evaluate_main(["--data", str(folder), "--out", str(out), "--cache", "", "--no-progress"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["n_pos"] + report["n_neg"] == len(names)
    capsys.readouterr()
    assert render_main([str(folder / names[0]), "--out", str(folder / "page.png")]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert Path(printed["paper"]).stat().st_size > 10_000 and Path(printed["model_image"]).is_file()
    assert printed["extra_signals"] == list(FRANK_LEADS)


def test_evaluate_and_render_accept_synthetic_ptb_shaped_records(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    names = [write_ptb_like_record(tmp_path, f"s{k:04d}_re", _synthetic_12(k)).name for k in range(4)]
    _evaluate_and_render(tmp_path, names, capsys)


def test_evaluate_and_render_accept_ptbxl_record_made_ptb_shaped(ptbxl_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import wfdb

    names = []
    for ecg_id in (1, 2, 3, 4):
        head = next(ptbxl_dir.glob(f"records500/*/{ecg_id:05d}_hr.hea"), None)
        if head is None:
            pytest.skip(f"PTB-XL record {ecg_id} not in the sample")
        rec = wfdb.rdrecord(str(head.with_suffix("")))
        x12 = np.stack([rec.p_signal[:, [s.upper() for s in rec.sig_name].index(n.upper())] for n in LEADS])  # (12, 5000) at 500 Hz
        x1000 = resample_poly(x12, 2, 1, axis=1)  # PTB's 1000 Hz
        names.append(write_ptb_like_record(tmp_path, f"ptbxl{ecg_id:05d}", x1000).name)
    _evaluate_and_render(tmp_path, names, capsys)
