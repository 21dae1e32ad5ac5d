"""The synthetic 12-lead ECG: lead algebra, determinism, streaming, MI territories and evolution, noise."""

from __future__ import annotations

import numpy as np
import pytest

from engine.config import LEADS
from simulators.ecg import EcgGenerator, HeartParams, PatientSpec, synthesize
from simulators.errors import SimulatorError
from simulators.mi import MiSpec, mi_stage
from simulators.noise import NoiseSpec

IDX = {name: i for i, name in enumerate(LEADS)}
CLEAN = NoiseSpec.clean()


def st_shift(sig: np.ndarray, fs: float, r_times: np.ndarray) -> dict[str, float]:
    """ST level at J+60 ms minus the PR-segment baseline, per lead, on the median beat.

    J is taken 50 ms after the R peak (end of a normal QRS), so the ST point is R + 110 ms;
    the baseline is the mean over R - 75 .. R - 55 ms (PR segment).
    """
    pre, post = int(0.3 * fs), int(0.5 * fs)
    beats = [sig[:, int(round(t * fs)) - pre:int(round(t * fs)) + post] for t in r_times
             if int(round(t * fs)) - pre >= 0 and int(round(t * fs)) + post <= sig.shape[1]]
    med = np.median(np.stack(beats), axis=0)  # (12, pre + post)
    st_i = pre + int(round(0.110 * fs))
    b0, b1 = pre - int(round(0.075 * fs)), pre - int(round(0.055 * fs))
    st = med[:, st_i - 1:st_i + 2].mean(axis=1) - med[:, b0:b1].mean(axis=1)
    return {name: float(st[i]) for name, i in IDX.items()}


@pytest.mark.parametrize("fs", [100, 250, 500, 1000])
def test_einthoven_and_goldberger_hold_at_every_rate(fs: int) -> None:
    spec = PatientSpec(mi=MiSpec("inferior", -600), noise=NoiseSpec(motion_per_min=6.0))
    x = synthesize(spec, fs=fs, duration_s=6.0, seed=3).signal
    assert x.shape == (12, 6 * fs) and x.dtype == np.float32
    i, ii = x[IDX["I"]].astype(np.float64), x[IDX["II"]].astype(np.float64)
    tol = 1e-5
    assert np.max(np.abs(x[IDX["III"]] - (ii - i))) < tol
    assert np.max(np.abs(x[IDX["aVR"]] + (i + ii) / 2)) < tol
    assert np.max(np.abs(x[IDX["aVL"]] - (i - ii / 2))) < tol
    assert np.max(np.abs(x[IDX["aVF"]] - (ii - i / 2))) < tol


def test_same_seed_same_signal_other_seed_differs() -> None:
    spec = PatientSpec(heart=HeartParams(hr_bpm=72), mi=MiSpec("anterior", -1200))
    a = synthesize(spec, 500, 5.0, seed=9).signal
    b = synthesize(spec, 500, 5.0, seed=9).signal
    c = synthesize(spec, 500, 5.0, seed=10).signal
    assert np.array_equal(a, b)
    assert np.abs(a - c).max() > 0.05


def test_streamed_blocks_equal_one_read() -> None:
    spec = PatientSpec(mi=MiSpec("lateral", -60), noise=NoiseSpec(motion_per_min=5.0, lead_off_per_min=5.0))
    whole = EcgGenerator(spec, 500, 8.0, seed=4).read_all()
    gen = EcgGenerator(spec, 500, 8.0, seed=4)
    parts = []
    for n in [1, 137, 250, 999, 3, 2610]:
        parts.append(gen.read(n))
    parts.append(gen.read_all())
    streamed = np.concatenate(parts, axis=1)
    assert streamed.shape == whole.shape
    np.testing.assert_allclose(streamed, whole, atol=1e-5, equal_nan=True)


def test_inferior_mi_raises_st_in_ii_iii_avf_and_depresses_avl() -> None:
    rec = synthesize(PatientSpec(mi=MiSpec("inferior", -1800, st_mv=0.25)), 500, 10.0, seed=1)
    st = st_shift(rec.signal, rec.fs, rec.r_times)
    for lead in ("II", "III", "aVF"):
        assert st[lead] > 0.1, (lead, st)
    assert st["aVL"] < -0.1, st
    assert st["I"] < 0.0, st


def test_normal_patient_has_isoelectric_st() -> None:
    rec = synthesize(PatientSpec(), 500, 10.0, seed=1)
    st = st_shift(rec.signal, rec.fs, rec.r_times)
    assert max(abs(v) for v in st.values()) < 0.07, st


def test_anterior_and_lateral_territories() -> None:
    ant = synthesize(PatientSpec(mi=MiSpec("anterior", -1800), noise=CLEAN), 500, 8.0, seed=2)
    st = st_shift(ant.signal, ant.fs, ant.r_times)
    assert st["V2"] > 0.15 and st["V3"] > 0.15 and st["aVF"] < 0.02, st
    lat = synthesize(PatientSpec(mi=MiSpec("lateral", -1800), noise=CLEAN), 500, 8.0, seed=2)
    st = st_shift(lat.signal, lat.fs, lat.r_times)
    assert st["I"] > 0.1 and st["aVL"] > 0.1 and st["V6"] > 0.1 and st["III"] < -0.1, st


def test_no_st_change_before_onset() -> None:
    rec = synthesize(PatientSpec(mi=MiSpec("inferior", 3600.0), noise=CLEAN), 500, 8.0, seed=5)
    st = st_shift(rec.signal, rec.fs, rec.r_times)
    assert max(abs(v) for v in st.values()) < 0.07, st


def test_evolution_stages_follow_the_documented_time_course() -> None:
    minute, hour = 60.0, 3600.0
    assert mi_stage(-5.0) == mi_stage(0.0) and mi_stage(0.0).st == 0.0
    assert mi_stage(5 * minute).hyperacute > mi_stage(2 * hour).hyperacute
    assert mi_stage(15 * minute).st > 0.9
    assert mi_stage(30 * minute).q < 0.05 and mi_stage(12 * hour).q > 0.9
    assert mi_stage(2 * hour).t_inversion < 0.05 and mi_stage(30 * hour).t_inversion > 0.9
    assert mi_stage(5 * 24 * hour).st < 0.2 * mi_stage(6 * hour).st


def test_late_infarct_shows_q_waves_and_inverted_t() -> None:
    """At 30 h an inferior infarct has a pathological Q and a negative T in III (measured on the beat)."""
    early = synthesize(PatientSpec(mi=MiSpec("inferior", -1200), noise=CLEAN), 500, 6.0, seed=6)
    late = synthesize(PatientSpec(mi=MiSpec("inferior", -30 * 3600), noise=CLEAN), 500, 6.0, seed=6)

    def beat(rec, lead: str) -> np.ndarray:
        fs = rec.fs
        r = [int(round(t * fs)) for t in rec.r_times if 0.4 * fs < t * fs < rec.signal.shape[1] - 0.6 * fs]
        return np.median(np.stack([rec.signal[IDX[lead], k - int(0.1 * fs):k + int(0.5 * fs)] for k in r]), axis=0)

    fs = 500
    e, l_ = beat(early, "III"), beat(late, "III")
    q_e, q_l = e[: int(0.1 * fs)].min(), l_[: int(0.1 * fs)].min()
    assert q_l < q_e - 0.1  # deeper initial negativity: pathological Q
    t_win = slice(int(0.3 * fs), int(0.45 * fs))
    assert e[t_win].mean() > 0.1 and l_[t_win].mean() < -0.05


def test_early_repolarisation_is_diffuse_without_reciprocal_depression() -> None:
    rec = synthesize(PatientSpec(confounders=("early_repol",), noise=CLEAN), 500, 8.0, seed=7)
    st = st_shift(rec.signal, rec.fs, rec.r_times)
    assert sum(st[v] > 0.05 for v in ("II", "aVF", "V2", "V3", "V4", "V5")) >= 5, st
    assert all(st[v] > -0.05 for v in LEADS if v != "aVR"), st


def test_lbbb_has_discordant_st_and_tachycardia_is_fast() -> None:
    rec = synthesize(PatientSpec(confounders=("lbbb",), noise=CLEAN), 500, 8.0, seed=8)
    x = rec.signal
    # Wide QRS: in V6 the signal stays above half its R amplitude for > 40 ms per beat.
    k = int(round(rec.r_times[2] * rec.fs))
    v6 = x[IDX["V6"], k - 60:k + 90]
    assert np.sum(v6 > 0.5 * v6.max()) / rec.fs > 0.04
    tach = synthesize(PatientSpec(heart=HeartParams(hr_bpm=70), confounders=("tachycardia",)), 500, 10.0, seed=8)
    assert 60.0 / np.mean(np.diff(tach.r_times)) > 100


def test_heart_rate_and_variability() -> None:
    rec = synthesize(PatientSpec(heart=HeartParams(hr_bpm=60, rr_std_frac=0.05)), 500, 60.0, seed=11)
    rr = np.diff(rec.r_times)
    assert 55 < 60.0 / rr.mean() < 65
    assert 0.01 < rr.std() / rr.mean() < 0.1


def test_lead_off_blanks_the_leads_of_the_detached_electrode() -> None:
    spec = PatientSpec(noise=NoiseSpec(lead_off_per_min=30.0, lead_off_s=(1.0, 2.0)))
    gen = EcgGenerator(spec, 250, 10.0, seed=12)
    x = gen.read_all()
    assert np.isnan(x).any()
    from simulators.noise import LEADS_OF_ELECTRODE

    for ev in gen.noise.lead_offs:
        k = int((ev.start_s + 0.5 * ev.dur_s) * 250)
        if k < x.shape[1]:
            for lead in LEADS_OF_ELECTRODE[ev.electrode]:
                assert np.isnan(x[IDX[lead], k])


def test_powerline_shows_at_its_frequency() -> None:
    spec = PatientSpec(noise=NoiseSpec(baseline_mv=0.0, emg_mv=0.0, powerline_mv=0.05, powerline_hz=60.0))
    x = synthesize(spec, 500, 4.0, seed=13).signal[IDX["V1"]]
    f = np.fft.rfftfreq(x.size, 1 / 500)
    p = np.abs(np.fft.rfft(x - x.mean()))
    band = (f > 45) & (f < 100)
    assert abs(f[band][np.argmax(p[band])] - 60.0) < 0.5


@pytest.mark.parametrize("bad", [
    lambda: HeartParams(hr_bpm=400),
    lambda: MiSpec("apical", -10),
    lambda: NoiseSpec(powerline_hz=55),
    lambda: PatientSpec(confounders=("wpw",)),
    lambda: EcgGenerator(PatientSpec(), -1, 10, 0),
])
def test_invalid_parameters_raise_naming_the_value(bad) -> None:
    with pytest.raises(SimulatorError) as exc:
        bad()
    assert any(s in str(exc.value) for s in ("400", "apical", "55", "wpw", "-1"))
