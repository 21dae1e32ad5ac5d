"""ST measurement: synthetic beats with a known ST, simulator truth, quality flags, lead physics on PTB-XL."""

from __future__ import annotations

import numpy as np
import pytest

from engine.config import LEADS
from engine.errors import SignalError
from engine.signal.resample import resample
from engine.st.measure import measure_st
from engine.st.testing import beat_train, true_st_uv
from engine.st.validate import lead_physics_residuals, measure_ptbxl, simulated_cases, truth_errors


@pytest.mark.parametrize("fs", [100.0, 250.0, 500.0, 1000.0])
def test_known_st_plateau_is_measured_despite_baseline_wander(fs: float) -> None:
    m = measure_st(beat_train(fs), fs)
    assert m.quality == () and m.measurable
    np.testing.assert_allclose(m.st_j60_uv, true_st_uv(), atol=20.0)
    np.testing.assert_allclose(m.st_j80_uv, true_st_uv(), atol=20.0)
    assert abs(m.hr_bpm - 70.0) < 2.0
    assert 40.0 < m.qrs_ms < 110.0
    assert m.n_beats >= 8


def test_measurement_obeys_einthoven_and_goldberger() -> None:
    m = measure_st(beat_train(100.0, wander_mv=0.3), 100.0)
    resid = lead_physics_residuals(m.st_j60_uv[None, :])
    assert np.abs(resid).max() < 5.0  # uV: one fiducial for every lead keeps lead algebra


def test_st_change_between_windows_is_seen() -> None:
    before = measure_st(beat_train(100.0, st=np.zeros(8)), 100.0)
    after = measure_st(beat_train(100.0, seed=1), 100.0)
    np.testing.assert_allclose(after.st_j60_uv - before.st_j60_uv, true_st_uv(), atol=25.0)


def test_quality_flags() -> None:
    x = beat_train(100.0)
    x[LEADS.index("V3")] = np.nan
    x[LEADS.index("V5"), 300:420] = np.nan  # a short gap: bridged, readings inside it dropped
    x[LEADS.index("V1")] = 0.0
    m = measure_st(x, 100.0)
    assert "missing:V3" in m.quality and "flat:V1" in m.quality and m.measurable
    assert np.isnan(m.st_j60_uv[LEADS.index("V3")]) and np.isnan(m.st_j60_uv[LEADS.index("V1")])
    assert abs(m.st_j60_uv[LEADS.index("V5")] - true_st_uv()[LEADS.index("V5")]) < 25.0

    assert "too_few_beats" in measure_st(beat_train(100.0, hr=30.0, seconds=3.0), 100.0).quality
    assert "no_beats" in measure_st(np.zeros((12, 1000)), 100.0).quality
    wide = measure_st(beat_train(500.0, qrs_sigma=0.04), 500.0)
    assert not wide.measurable and ({"wide_qrs", "no_j_point"} & set(wide.quality))
    assert "paced" in measure_st(beat_train(100.0), 100.0, paced=True).quality
    noisy = beat_train(100.0)
    noisy[LEADS.index("V2")] += np.random.default_rng(0).normal(0.0, 0.4, noisy.shape[1])
    assert "noisy:V2" in measure_st(noisy, 100.0).quality


def test_pacing_spikes_are_detected_at_500_hz() -> None:
    x = beat_train(500.0)
    for r in np.arange(0.4, 10.0, 60.0 / 70.0):
        k = int((r - 0.14) * 500)
        x[:, k] += 3.0  # a 2 ms, 3 mV stimulus artefact before each QRS
    assert "paced" in measure_st(x, 500.0).quality
    assert "paced" not in measure_st(beat_train(500.0), 500.0).quality


def test_bad_input_raises() -> None:
    with pytest.raises(SignalError, match="12, T"):
        measure_st(np.zeros((8, 1000)), 100.0)
    with pytest.raises(SignalError, match="100 Hz"):
        measure_st(np.zeros((12, 500)), 50.0)


def test_simulated_patients_match_truth() -> None:
    cases = simulated_cases(12, seed=3)
    for fs, mae, p95 in ((100.0, 15.0, 40.0), (500.0, 8.0, 20.0)):
        err = truth_errors(cases, fs)
        assert err["measurable"] == err["patients"]
        assert err["j60_mae_uv"] < mae and err["j60_p95_uv"] < p95, err


def test_speed_at_stream_rate() -> None:
    import time

    x = resample(beat_train(500.0), 500.0, 100.0)
    measure_st(x, 100.0)
    t0 = time.perf_counter()
    for _ in range(20):
        measure_st(x, 100.0)
    assert (time.perf_counter() - t0) / 20 < 0.05  # generous: the budget is a few ms; catches a 10x regression


def test_ptbxl_measurement_obeys_lead_physics(ptbxl_dir) -> None:
    res = measure_ptbxl(ptbxl_dir, fs=100.0, limit=25)
    ok = res.measurable & np.isfinite(res.st_j60[:, :6]).all(axis=1)
    assert ok.sum() >= 20
    resid = np.abs(lead_physics_residuals(res.st_j60[ok]))
    assert np.percentile(resid[:, 0], 95) < 30.0 and resid.mean() < 10.0
