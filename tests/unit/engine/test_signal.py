"""Signal conditioning: lead mapping and derivation, resampling, filters, quality flags."""

from __future__ import annotations

import numpy as np
import pytest

from engine.config import LEADS
from engine.errors import SignalError
from engine.render.validation import synthetic_window
from engine.signal import FilterSpec, assess, canonical_lead, condition, quality_flags, resample, to_standard_leads
from engine.signal.leads import INDEPENDENT_LEADS
from engine.signal.resample import rate_ratio

CLEAN_RECORDS = 6  # a handful of PTB-XL records without noise/drift/electrode annotations


def _ptbxl_clean(ptbxl_dir, n: int = CLEAN_RECORDS):
    import pandas as pd
    import wfdb

    db = pd.read_csv(ptbxl_dir / "ptbxl_database.csv")
    cols = ["baseline_drift", "static_noise", "burst_noise", "electrodes_problems"]
    clean = db[db[cols].isna().all(axis=1)]
    out = []
    for rel in clean["filename_hr"]:
        if (ptbxl_dir / f"{rel}.hea").exists():
            rec = wfdb.rdrecord(str(ptbxl_dir / rel))
            out.append((rec.p_signal.T, float(rec.fs), list(rec.sig_name)))
        if len(out) == n:
            break
    return out


@pytest.mark.parametrize(
    ("raw", "std"),
    [("AVR", "aVR"), ("avl", "aVL"), ("MLII", "II"), ("lead V1", "V1"), (" v6 ", "V6"), ("DIII", "III"), ("ECG I", "I"), ("C3", "V3")],
)
def test_canonical_lead_maps_aliases(raw: str, std: str) -> None:
    assert canonical_lead(raw) == std


def test_unknown_lead_name_is_named_in_the_error() -> None:
    with pytest.raises(SignalError, match="V7"):
        canonical_lead("V7")


def test_leads_are_reordered_by_name() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(12, 50))
    order = rng.permutation(12)
    names = [LEADS[i].upper() for i in order]
    np.testing.assert_array_equal(to_standard_leads(x[order], names), x)


def test_duplicate_and_missing_leads_raise() -> None:
    x = np.zeros((3, 10))
    with pytest.raises(SignalError, match="twice"):
        to_standard_leads(x, ["I", "MLI", "V1"])
    with pytest.raises(SignalError, match="missing"):
        to_standard_leads(x, ["I", "II", "V1"])
    filled = to_standard_leads(x, ["I", "II", "V1"], allow_missing=True)
    assert np.isnan(filled[LEADS.index("V2")]).all() and not np.isnan(filled[LEADS.index("aVF")]).any()


def test_limb_leads_derived_from_eight_equal_the_synthetic_twelve() -> None:
    rng = np.random.default_rng(1)
    i, ii = rng.normal(size=(2, 200))
    full = np.zeros((12, 200))
    full[0], full[1] = i, ii
    full[2], full[3], full[4], full[5] = ii - i, -(i + ii) / 2, i - ii / 2, ii - i / 2
    full[6:] = rng.normal(size=(6, 200))
    eight = [LEADS.index(n) for n in INDEPENDENT_LEADS]
    np.testing.assert_allclose(to_standard_leads(full[eight], INDEPENDENT_LEADS), full, atol=1e-12)


def test_limb_leads_derived_from_eight_equal_the_ptbxl_record(ptbxl_dir) -> None:
    for sig, _, names in _ptbxl_clean(ptbxl_dir, 3):
        std = to_standard_leads(sig, names)
        keep = [names.index(n) for n in ("I", "II", "V1", "V2", "V3", "V4", "V5", "V6")]
        derived = to_standard_leads(sig[keep], [names[k] for k in keep])
        # PTB-XL stores each lead rounded to 1 uV, so the derived leads match to a few uV.
        assert np.abs(derived - std).max() <= 0.003


def test_resampling_preserves_a_sinusoid() -> None:
    fs_in, fs_out, f0 = 500.0, 100.0, 7.0
    t = np.arange(int(10 * fs_in)) / fs_in
    y = resample(1.3 * np.sin(2 * np.pi * f0 * t), fs_in, fs_out)
    assert y.shape == (1000,)
    core = y[100:-100]  # away from the edges
    assert abs(np.abs(core).max() - 1.3) < 0.01 * 1.3
    spec = np.abs(np.fft.rfft(y * np.hanning(len(y))))
    assert abs(np.fft.rfftfreq(len(y), 1 / fs_out)[spec.argmax()] - f0) <= 0.1
    t_out = np.arange(1000) / fs_out
    np.testing.assert_allclose(core, 1.3 * np.sin(2 * np.pi * f0 * t_out)[100:-100], atol=0.01)


def test_resampling_odd_rates_and_gaps() -> None:
    assert rate_ratio(360, 100) == (5, 18)
    x = np.sin(np.arange(3600) / 50.0)
    x[1000:1100] = np.nan
    y = resample(x, 360, 100)
    assert y.shape == (1000,)
    gap = np.flatnonzero(np.isnan(y))
    assert gap.min() >= 1000 * 100 / 360 - 1 and gap.max() <= 1100 * 100 / 360 + 1 and len(gap) >= 25
    with pytest.raises(SignalError):
        resample(x, 0, 100)


def test_band_pass_removes_wander_and_keeps_ecg_band() -> None:
    fs = 100.0
    t = np.arange(1000) / fs
    wander = condition(np.sin(2 * np.pi * 0.05 * t), fs)
    assert np.abs(wander[100:-100]).max() < 0.05
    passband = condition(np.sin(2 * np.pi * 10.0 * t), fs)
    assert abs(np.abs(passband[100:-100]).max() - 1.0) < 0.02


def test_notch_removes_mains_where_below_nyquist() -> None:
    fs = 500.0
    t = np.arange(5000) / fs
    y = condition(np.sin(2 * np.pi * 50.0 * t), fs, FilterSpec(notch_hz=50.0, lowpass_hz=None))
    assert np.abs(y[500:-500]).max() < 0.05
    # 60 Hz notch leaves 50 Hz mostly alone: the notch is configurable, not fixed.
    z = condition(np.sin(2 * np.pi * 50.0 * t), fs, FilterSpec(notch_hz=60.0, lowpass_hz=None))
    assert np.abs(z[500:-500]).max() > 0.8


def test_filtering_is_zero_phase_and_windowed() -> None:
    fs = 100.0
    x = synthetic_window(fs)
    y = condition(x, fs)
    r_peak = int(round(0.35 * fs)) + int(round(60 / 72 * fs * 3))
    lead = LEADS.index("II")
    assert abs(int(np.argmax(y[lead, r_peak - 10 : r_peak + 10])) - 10) <= 1
    batch = np.stack([x, 2 * x, x[::-1].copy()])
    together = condition(batch, fs)
    for k in range(3):  # a window filtered alone equals the same window filtered in a batch
        np.testing.assert_array_equal(together[k], condition(batch[k], fs))


def test_quality_clean_synthetic_has_no_flags() -> None:
    for fs in (100.0, 500.0):
        rep = assess(synthetic_window(fs), fs)
        assert rep.flags == () and rep.evaluable


@pytest.mark.parametrize("fs", [100.0, 500.0])
def test_each_quality_flag_fires_on_a_crafted_bad_lead(fs: float) -> None:
    rng = np.random.default_rng(3)
    x = synthetic_window(fs)
    x[LEADS.index("V3")] = 0.0  # electrode off: flat line
    ii = LEADS.index("II")
    x[ii] = np.clip(x[ii], None, 0.5)  # amplifier clips the R waves
    x[LEADS.index("I"), 100:140] = np.nan  # gap
    x[LEADS.index("V1")] += rng.normal(0, 0.2, x.shape[1])  # muscle noise
    flags = quality_flags(x, fs)
    assert set(flags) == {"flat:V3", "saturated:II", "missing:I", "noisy:V1"}
    rep = assess(x, fs)
    assert not rep.evaluable and set(rep.bad_leads) == {"I", "II", "V1", "V3"}


def test_partly_flat_lead_and_rail_are_flagged() -> None:
    fs = 100.0
    x = synthetic_window(fs)
    x[LEADS.index("V5"), 300:500] = x[LEADS.index("V5"), 300]  # 2 s stuck
    x[LEADS.index("aVF"), 50] = 12.0  # beyond the rail
    assert quality_flags(x, fs) == ["saturated:aVF", "flat:V5"]
    assert assess(x, fs).evaluable


def test_quality_is_quiet_on_clean_ptbxl_records(ptbxl_dir) -> None:
    from engine.config import get_preset
    from engine.pipeline import to_model_rate

    cfg = get_preset("tiny")
    for sig, fs, names in _ptbxl_clean(ptbxl_dir):
        assert quality_flags(to_standard_leads(sig, names), fs) == []
        assert quality_flags(to_model_rate(sig, fs, names, cfg), cfg.fs) == []


def test_quality_rejects_bad_shapes() -> None:
    with pytest.raises(SignalError, match="shape"):
        quality_flags(np.zeros((8, 100)), 100.0)


@pytest.mark.parametrize("fs_in", [500.0, 360.0, 257.0, 1000.0])
def test_cached_filter_resampling_is_bit_identical_to_resample_poly(fs_in: float) -> None:
    """The filter is designed once per ratio; the output must not change by a single bit."""
    from scipy import signal as sps

    from engine.signal.resample import rate_ratio, resample

    x = np.random.default_rng(3).normal(0, 1, (12, int(fs_in * 10))) + np.linspace(0, 2, int(fs_in * 10))
    up, down = rate_ratio(fs_in, 100.0)
    np.testing.assert_array_equal(resample(x, fs_in, 100.0), sps.resample_poly(x, up, down, axis=-1, padtype="line"))


def test_quality_flags_of_a_batch_equal_those_of_each_window() -> None:
    """The worker checks a micro-batch at once; every flag must be the one-window verdict."""
    from engine.signal.quality import quality_flags_batch

    fs, rng = 100.0, np.random.default_rng(11)
    wins = np.stack([synthetic_window(fs) for _ in range(6)])
    wins[1, LEADS.index("V3")] = 0.0
    wins[2, LEADS.index("II")] = np.clip(wins[2, LEADS.index("II")], None, 0.5)
    wins[3, LEADS.index("I"), 100:140] = np.nan
    wins[3, LEADS.index("aVL")] = np.nan
    wins[4, LEADS.index("V1")] += rng.normal(0, 0.2, wins.shape[2])
    wins[5, LEADS.index("aVF"), 50] = 12.0
    batch = quality_flags_batch(wins, fs)
    assert batch == [quality_flags(w, fs) for w in wins]
    assert batch[0] == [] and batch[1] == ["flat:V3"] and "missing:aVL" in batch[3]
    with pytest.raises(SignalError, match="shape"):
        quality_flags_batch(wins[0], fs)


@pytest.mark.parametrize("fs_in", [500.0, 360.0, 100.0])
def test_model_rate_conversion_of_a_batch_is_bit_identical_to_each_window(fs_in: float) -> None:
    from engine.config import get_preset
    from engine.pipeline import to_model_rate, to_model_rate_batch

    cfg = get_preset("tiny")
    names = ("I", "II", "V1", "V2", "V3", "V4", "V5", "V6")
    x = np.random.default_rng(4).normal(0, 1, (5, 8, int(fs_in * 10))).astype(np.float32)
    x[2, 3, 40:90] = np.nan
    x[4, 0] = np.nan  # lead I off: the derived limb leads are missing too
    each = np.stack([to_model_rate(w, fs_in, names, cfg, allow_missing=True) for w in x])
    np.testing.assert_array_equal(to_model_rate_batch(x, fs_in, names, cfg, allow_missing=True), each)
    with pytest.raises(SignalError, match="lead names"):
        to_model_rate_batch(x[:, :7], fs_in, names, cfg)
