"""ST reference per bed and the ST-change alarm: learning, reset, contiguity, sustain, hysteresis, ids."""

from __future__ import annotations

import numpy as np
import pytest

from engine.config import LEADS
from engine.errors import ConfigError, StateError
from engine.st.alarm import CONTIGUOUS_PAIRS, KIND_ST_CHANGE, StChangeConfig, StChangePolicy, deviating_leads, episode_id
from engine.st.baseline import StBaseline, StBaselineSettings
from engine.st.measure import StMeasurement

S = 1_000_000_000  # ns per second


def meas(st: np.ndarray | float = 0.0, quality: tuple[str, ...] = ()) -> StMeasurement:
    v = np.broadcast_to(np.asarray(st, dtype=np.float64), (12,)).copy()
    return StMeasurement(v, v + 10.0, 70.0, 90.0, quality, 10, 100.0)


def delta(**leads: float) -> np.ndarray:
    d = np.zeros(12)
    for name, v in leads.items():
        d[LEADS.index(name)] = v
    return d


# --- baseline -------------------------------------------------------------------------------


def test_baseline_learns_median_of_first_minutes_then_freezes() -> None:
    b = StBaseline(StBaselineSettings(learn_s=120.0, min_windows=10))
    rng = np.random.default_rng(0)
    for k in range(61):  # 2 min of windows every 2 s around +50 uV
        ref = b.update("bed-1", "p1", meas(50.0 + rng.normal(0, 5, 12)), k * 2 * S)
    assert b.learned("bed-1")
    np.testing.assert_allclose(ref, 50.0, atol=3.0)
    np.testing.assert_allclose(b.reference("bed-1", "j80"), 60.0, atol=3.0)
    b.update("bed-1", "p1", meas(300.0), 200 * S)  # later change does not move the reference
    np.testing.assert_allclose(b.reference("bed-1"), ref)
    np.testing.assert_allclose(b.delta("bed-1", meas(300.0)), 300.0 - ref)


def test_baseline_skips_unmeasurable_windows_and_flagged_leads() -> None:
    b = StBaseline(StBaselineSettings(learn_s=10.0, min_windows=3))
    v3 = LEADS.index("V3")
    for k in range(6):
        b.update("bed", "p", meas(500.0, ("wide_qrs",)), k * S)  # never enters
        m = meas(20.0)
        m.st_j60_uv[v3] = np.nan  # V3 flagged in every window
        b.update("bed", "p", m, k * 2 * S + S // 2)
    ref = b.reference("bed")
    assert np.isnan(ref[v3]) and not b.learned("bed")
    np.testing.assert_allclose(np.delete(ref, v3), 20.0)
    for k in range(3):  # V3 comes back later: it learns then
        b.update("bed", "p", meas(-40.0), (20 + k) * S)
    assert b.learned("bed") and b.reference("bed")[v3] == pytest.approx(-40.0)
    assert np.isnan(b.delta("bed", meas(0.0, ("too_few_beats",)))).all()


def test_baseline_resets_on_new_patient_and_on_request() -> None:
    b = StBaseline(StBaselineSettings(learn_s=0.0, min_windows=1))
    b.update("bed", "p1", meas(100.0), 0)
    assert b.reference("bed")[0] == 100.0
    b.update("bed", "p2", meas(-30.0), S)
    assert b.reference("bed")[0] == -30.0
    b.reset("bed", 2 * S)
    assert np.isnan(b.reference("bed")).all()
    b.update("bed", "p2", meas(7.0), 3 * S)
    assert b.reference("bed")[0] == 7.0
    state = b.export_state("bed")
    other = StBaseline()
    other.import_state("bed", state)
    np.testing.assert_allclose(other.reference("bed"), b.reference("bed"))
    with pytest.raises(StateError):
        other.import_state("bed", {"patient_id": "p"})
    with pytest.raises(ConfigError):
        StBaselineSettings(min_windows=0)


# --- alarm ----------------------------------------------------------------------------------


def test_contiguity_is_anatomical_and_same_direction() -> None:
    assert deviating_leads(delta(II=120, III=110), 100) == ("II", "III")
    assert deviating_leads(delta(II=120, V1=150), 100) == ()  # not contiguous
    assert deviating_leads(delta(V2=-130, V3=-101), 100) == ("V2", "V3")
    assert deviating_leads(delta(V1=150, V3=150), 100) == ()  # precordial: neighbours only
    assert deviating_leads(delta(II=150, III=-150), 100) == ()  # opposite directions
    assert deviating_leads(delta(I=110, V6=105, aVR=300), 100) == ("I", "V6")  # aVR stands alone
    assert deviating_leads(delta(II=np.nan, III=200, aVF=200), 100) == ("III", "aVF")
    assert all(LEADS[a] != "aVR" and LEADS[b] != "aVR" for a, b in CONTIGUOUS_PAIRS)


def _run(policy: StChangePolicy, deltas: list[np.ndarray | None], bed: str = "bed-3", patient: str = "p", t0: int = 0):
    events = []
    for k, d in enumerate(deltas):
        events += [(k, e) for e in policy.update(bed, patient, d, k, t0 + k * 2 * S)]
    return events


def test_starts_after_sustained_change_ends_with_hysteresis() -> None:
    p = StChangePolicy(StChangeConfig(threshold_uv=100, end_uv=75, sustain_s=60, end_s=30))
    up = delta(II=150, III=130, aVF=140, aVL=-90)
    mid = delta(II=90, III=85)  # below start, above end: the episode holds
    seq = [delta()] * 5 + [up] * 35 + [mid] * 20 + [delta()] * 20
    events = _run(p, seq)
    (k0, start), (k1, end) = events
    assert start.phase == "start" and start.kind == KIND_ST_CHANGE and k0 == 5 + 30  # 60 s after the first deviating window
    assert start.leads == ("II", "III", "aVF") and start.max_delta_uv == 150.0 and start.level == 1
    assert start.alert_id == episode_id("bed-3", "p", start.window_end_ns) and start.alert_id.startswith("st-")
    assert end.phase == "end" and end.alert_id == start.alert_id and k1 == 60 + 15


def test_brief_change_or_single_lead_does_not_alarm() -> None:
    p = StChangePolicy()
    up = delta(V2=200, V3=200)
    assert _run(p, [up] * 25 + [delta()] + [up] * 25) == []  # 50 s, broken, 50 s
    assert _run(p, [delta(V2=300)] * 60, bed="b2") == []


def test_unmeasurable_windows_hold_but_long_gaps_restart() -> None:
    up = delta(V4=150, V5=150)
    p = StChangePolicy(StChangeConfig(max_gap_s=20))
    assert [k for k, _ in _run(p, [up] * 10 + [None] * 5 + [up] * 21)] == [30]  # 10 s gap: the clock runs on
    p = StChangePolicy(StChangeConfig(max_gap_s=20))
    assert [k for k, _ in _run(p, [up] * 10 + [None] * 15 + [up] * 31)] == [55]  # 30 s gap: restart


def test_escalation_new_patient_discharge_and_replay() -> None:
    p = StChangePolicy()
    big, up = delta(V2=260, V3=240), delta(V2=130, V3=130)
    events = [e for _, e in _run(p, [up] * 31 + [big] * 2 + [up] * 2)]
    assert [(e.phase, e.level) for e in events] == [("start", 1), ("update", 2), ("update", 1)]
    assert p.update("bed-3", "p", big, 3, 6 * S) == []  # a replayed old window is ignored
    state = p.export_state("bed-3")
    q = StChangePolicy()
    q.import_state("bed-3", state)
    assert q.active("bed-3") == events[0].alert_id
    assert q.update("bed-3", "p2", up, 100, 500 * S) == [] and q.active("bed-3") == ""  # new patient: clean slate
    (end,) = p.discharge("bed-3", 50, 100 * S)
    assert end.phase == "end" and np.isnan(end.delta_uv).all() and p.active("bed-3") == ""
    with pytest.raises(StateError):
        q.import_state("x", {"patient_id": "p"})
    with pytest.raises(ConfigError):
        StChangeConfig(threshold_uv=50, end_uv=75)


def test_episode_ids_have_the_alert_id_shape_of_the_stream() -> None:
    from stream.core.schema import make_alert_id

    assert episode_id("bed-1", "p9", 123) == make_alert_id("st", KIND_ST_CHANGE, "bed-1", "p9", 123)
    assert episode_id("bed-1", "p9", 123) != episode_id("bed-1", "p9", 124)
