"""ST in the stream (issue #19): the compact vector, per-bed baseline + st_change episodes, their alerts on the wire."""

from __future__ import annotations

import json

import numpy as np
import pytest

from engine.config import LEADS
from engine.st import StMeasurement
from stream.core.schema import Alert, make_alert_id
from stream.core.st import StTracker, largest_change, st_change_alert, st_configs, st_vector
from stream.settings import Settings

S = 1_000_000_000
T0 = 1_800_000_000 * S
INFERIOR = [LEADS.index(n) for n in ("II", "III", "aVF")]


def meas(st_uv: np.ndarray, quality: tuple[str, ...] = ()) -> StMeasurement:
    st = np.asarray(st_uv, dtype=np.float64)
    return StMeasurement(st, st + 5.0, 72.0, 92.0, quality, 10, 100.0)


def base_st() -> np.ndarray:
    return np.linspace(-20.0, 30.0, len(LEADS))


def run(tracker: StTracker, shift_uv: float, t_s: range, bed: str = "B1", patient: str = "P1", hop_s: int = 2):
    events = []
    for k in t_s:
        st = base_st().copy()
        st[INFERIOR] += shift_uv
        up = tracker.update(bed, patient, k, T0 + k * hop_s * S, meas(st))
        events += [(k, ev) for ev in up.events]
    return events, up


def learned(**kw) -> tuple[StTracker, object]:
    """A tracker whose bed B1 has learned its reference over 16 s of settled ST (quick settings)."""
    change, baseline = st_configs(Settings(**{**dict(st_learn_s=10, st_min_windows=3, st_sustain_s=10), **kw}))
    tr = StTracker(change, baseline)
    run(tr, 0.0, range(0, 8))
    return tr, change


def test_vector_is_compact_json_with_null_for_unmeasurable_leads() -> None:
    st = base_st()
    st[LEADS.index("V3")] = np.nan
    v = st_vector(meas(st, ("noisy:V3",)), baseline_uv=np.full(12, np.nan), delta_uv=st - 1.0)
    assert len(v["j60_uv"]) == 12 and v["j60_uv"][LEADS.index("V3")] is None
    assert v["j60_uv"][0] == -20.0 and v["hr_bpm"] == 72.0 and v["qrs_ms"] == 92.0 and v["quality"] == ["noisy:V3"]
    assert v["baseline_uv"] == [None] * 12 and v["delta_uv"][LEADS.index("V3")] is None
    json.dumps(v, allow_nan=False)  # no NaN reaches the wire
    # a window-level flag blanks every lead (not measurable), values stay off the wire
    assert st_vector(meas(base_st(), ("wide_qrs",)))["j60_uv"] == [None] * 12


def test_baseline_then_sustained_inferior_elevation_starts_one_st_change_with_a_deterministic_id() -> None:
    change, baseline = st_configs(Settings(st_learn_s=20, st_min_windows=5, st_sustain_s=60))
    tr = StTracker(change, baseline)
    events, up = run(tr, 0.0, range(0, 15))  # 30 s of settled ST: the reference
    assert events == [] and up.vector["baseline_uv"] == pytest.approx(list(np.round(base_st(), 1)))
    assert up.vector["delta_uv"] == pytest.approx([0.0] * 12)
    events, up = run(tr, 150.0, range(15, 60))  # +150 uV in II, III, aVF for 90 s
    starts = [(k, ev) for k, ev in events if ev.phase == "start"]
    assert len(starts) == 1
    k, ev = starts[0]
    assert (k - 15) * 2 >= 60  # not before the change was held for sustain_s
    assert set(ev.leads) == {"II", "III", "aVF"} and ev.max_delta_uv == pytest.approx(150.0)
    assert ev.alert_id == make_alert_id("st", "st_change", "B1", "P1", T0 + k * 2 * S)
    assert up.vector["delta_uv"][INFERIOR[0]] == pytest.approx(150.0)
    # back to baseline: the episode ends after end_s (hysteresis), once
    events, _ = run(tr, 0.0, range(60, 90))
    assert [ev.phase for _, ev in events] == ["end"]


def test_thresholds_come_from_settings() -> None:
    change, baseline = st_configs(Settings(st_threshold_uv=200, st_learn_s=20, st_min_windows=5))
    tr = StTracker(change, baseline)
    run(tr, 0.0, range(0, 15))
    events, _ = run(tr, 150.0, range(15, 80))
    assert events == []  # 150 uV is below the configured 200 uV
    assert change.threshold_uv == 200 and change.sustain_s == 60 and baseline.learn_s == 20


def test_new_patient_resets_the_baseline_and_discharge_ends_the_episode() -> None:
    tr, change = learned()
    events, _ = run(tr, 150.0, range(8, 20))
    assert [ev.phase for _, ev in events] == ["start"]
    ended = tr.end("B1", 20, T0 + 40 * S)
    assert [e.phase for e in ended] == ["end"] and tr.view("B1") is None
    # the next patient's elevated ST is their own baseline: no alarm
    events, up = run(tr, 150.0, range(21, 40), patient="P2")
    assert events == [] and up.vector["delta_uv"][INFERIOR[0]] == pytest.approx(0.0)


def test_view_has_last_hour_trend_per_group_with_the_baseline() -> None:
    change, baseline = st_configs(Settings(st_learn_s=10, st_min_windows=3))
    tr = StTracker(change, baseline)
    run(tr, 0.0, range(0, 2000))  # 4000 s of windows: only the last hour is kept
    v = tr.view("B1")
    assert v is not None and v["groups"]["inferior"] == ["II", "III", "aVF"] and set(v["groups"]) == {"inferior", "lateral", "anterior"}
    t = v["trend"]["t_ns"]
    assert v["updated_ns"] - t[0] <= 3600 * S and len(t) == len(v["trend"]["j60_uv"]) <= 121
    assert v["baseline_uv"][0] == pytest.approx(-20.0) and v["current"]["j60_uv"][0] == pytest.approx(-20.0)
    json.dumps(v, allow_nan=False)


def test_state_survives_a_restart_so_the_reference_is_not_relearned_on_ischaemic_st() -> None:
    tr, change = learned()
    saved = json.loads(json.dumps(tr.export_state("B1")))
    tr2 = StTracker(change)
    tr2.import_state("B1", saved)
    events, _ = run(tr2, 150.0, range(8, 20))
    assert [ev.phase for _, ev in events] == ["start"]


def test_st_change_alert_on_the_wire_and_old_messages_still_decode() -> None:
    tr, change = learned()
    events, up = run(tr, 150.0, range(8, 20))
    ev = events[0][1]
    a = st_change_alert(ev, bed_id="B1", patient_id="P1", window_start_ns=ev.window_end_ns - 10 * S, vector=up.vector,
                        config=change, model_name="mirage", model_version="1", checkpoint_sha="x", emitted_ns=T0)
    assert (a.alert_type, a.kind, a.probability) == ("st", "st_change", None)
    assert a.threshold_start == 100.0 and a.top_leads == ["II", "III", "aVF"] and a.st["max_delta_uv"] == 150.0
    back = Alert.from_bytes(a.to_bytes())
    assert back == a and back.st["delta_uv"][INFERIOR[1]] == pytest.approx(150.0)
    assert [x["lead"] for x in largest_change(back.st)][:3] == ["II", "III", "aVF"]
    old = json.loads(a.to_bytes())
    del old["st"]
    old["alert_type"], old["kind"] = "mi", "mi_suspected"
    assert Alert.from_bytes(json.dumps(old).encode()).st is None  # a pre-#19 message
    old["added_by_a_newer_worker"] = 1
    assert Alert.from_bytes(json.dumps(old).encode()).alert_type == "mi"  # forward compatible
