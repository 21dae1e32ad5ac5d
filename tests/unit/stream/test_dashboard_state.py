"""Bed-state core of the dashboard: transitions, deduplication, acknowledgement, technical alerts."""

from __future__ import annotations

import pytest

from stream.consumers.dashboard.state import ACKNOWLEDGED, ENDED, MI_SUSPECTED, QUIET, Ack, WardState
from stream.core.schema import Alert
from stream.errors import WireError

S = 1_000_000_000
T0 = 1_800_000_000 * S


def alert(phase: str, *, alert_id: str = "mi-abc", bed: str = "B1", alert_type: str = "mi", kind: str = "mi_suspected",
          level: int = 1, prob: float | None = 0.8, seq: int = 10, t: int = T0, labs: list | None = None,
          flags: list | None = None) -> Alert:
    return Alert(alert_id=alert_id, alert_type=alert_type, kind=kind, phase=phase, bed_id=bed, patient_id="P-1",
                 probability=prob, threshold_start=0.5, threshold_end=0.3, window_start_ns=t - 10 * S,
                 window_end_ns=t, window_seq=seq, model_name="mirage", model_version="1", checkpoint_sha="x",
                 level=level, labs=labs or [], quality_flags=flags or [], emitted_ns=t)


def ack(alert_id: str = "mi-abc", ack_id: str = "a1", bed: str = "B1", t: int = T0 + 5 * S, by: str = "RN") -> Ack:
    return Ack(ack_id=ack_id, alert_id=alert_id, bed_id=bed, acked_ns=t, by=by)


def test_lifecycle_quiet_suspected_acknowledged_ended_quiet() -> None:
    w = WardState(ended_retention_s=60)
    assert w.snapshot(T0)["beds"] == []
    labs = [{"loinc": "89579-7", "name": "hs-troponin I", "value": 120.0, "unit": "ng/L", "age_s": 1800}]
    assert w.apply_alert(alert("start", labs=labs, flags=["noisy:V1"])) == "B1"
    v = w.bed_view("B1", T0)
    assert v["state"] == MI_SUSPECTED and v["needs_attention"]
    assert v["mi"]["probability"] == 0.8 and v["mi"]["labs"][0]["age_s"] == 1800
    assert v["mi"]["quality_flags"] == ["noisy:V1"]
    assert w.apply_ack(ack()) == "B1"
    v = w.bed_view("B1", T0 + 6 * S)
    assert v["state"] == ACKNOWLEDGED and v["mi"]["acked_by"] == "RN" and not v["needs_attention"]
    w.apply_alert(alert("end", prob=0.2, seq=20, t=T0 + 100 * S))
    assert w.bed_view("B1", T0 + 101 * S)["state"] == ENDED
    # the end event keeps the labs of the episode for the record
    assert w.bed_view("B1", T0 + 101 * S)["mi"]["labs"] == labs
    assert w.bed_view("B1", T0 + 100 * S + 61 * S)["state"] == QUIET


def test_duplicates_are_ignored_by_event_and_ack_id() -> None:
    w = WardState()
    a = alert("start")
    assert w.apply_alert(a) == "B1"
    assert w.apply_alert(alert("start")) is None  # same event_id (replayed)
    assert w.apply_ack(ack()) == "B1"
    assert w.apply_ack(ack()) is None
    assert w.duplicates == 2


def test_escalation_after_ack_rearms_the_alarm() -> None:
    w = WardState()
    w.apply_alert(alert("start", level=1))
    w.apply_ack(ack())
    assert w.bed_view("B1", T0)["state"] == ACKNOWLEDGED
    w.apply_alert(alert("update", level=2, prob=0.95, seq=11, t=T0 + 10 * S))
    v = w.bed_view("B1", T0 + 10 * S)
    assert v["state"] == MI_SUSPECTED and v["mi"]["level"] == 2 and v["mi"]["probability"] == 0.95
    w.apply_ack(ack(ack_id="a2", t=T0 + 12 * S))
    assert w.bed_view("B1", T0 + 12 * S)["state"] == ACKNOWLEDGED


def test_ack_before_alert_is_held_and_applied() -> None:
    w = WardState()
    assert w.apply_ack(ack()) is None
    w.apply_alert(alert("start"))
    assert w.bed_view("B1", T0)["state"] == ACKNOWLEDGED


def test_technical_alerts_do_not_change_mi_state() -> None:
    w = WardState()
    w.apply_alert(alert("start", alert_id="technical-1", alert_type="technical", kind="leads_off", prob=None,
                        flags=["missing:V3"]))
    v = w.bed_view("B1", T0)
    assert v["state"] == QUIET and v["mi"] is None
    assert [t["kind"] for t in v["technical"]] == ["leads_off"] and v["needs_attention"]
    w.apply_alert(alert("start"))
    v = w.bed_view("B1", T0)
    assert v["state"] == MI_SUSPECTED and len(v["technical"]) == 1
    w.apply_alert(alert("end", alert_id="technical-1", alert_type="technical", kind="leads_off", prob=None, seq=30))
    v = w.bed_view("B1", T0)
    assert v["technical"] == [] and v["state"] == MI_SUSPECTED


def test_ended_episode_never_reopens_and_new_episode_replaces_it() -> None:
    w = WardState()
    w.apply_alert(alert("start"))
    w.apply_alert(alert("end", seq=20))
    assert w.apply_alert(alert("update", seq=21)) is None
    assert w.bed_view("B1", T0)["state"] == ENDED
    w.apply_alert(alert("start", alert_id="mi-new", seq=40, t=T0 + 200 * S))
    v = w.bed_view("B1", T0 + 200 * S)
    assert v["state"] == MI_SUSPECTED and v["mi"]["alert_id"] == "mi-new"


def test_snapshot_lists_beds_sorted() -> None:
    w = WardState()
    for bed in ("B3", "B1", "B2"):
        w.apply_alert(alert("start", alert_id=f"mi-{bed}", bed=bed))
    assert [b["bed_id"] for b in w.snapshot(T0)["beds"]] == ["B1", "B2", "B3"]
    assert sorted(w.open_alert_ids()) == ["mi-B1", "mi-B2", "mi-B3"]


@pytest.mark.parametrize("obj", [{}, {"ack_id": "a", "alert_id": "", "bed_id": "B", "acked_ns": 1},
                                 {"ack_id": "a", "alert_id": "x", "bed_id": "B", "acked_ns": "1"}, []])
def test_ack_validation_names_the_field(obj: object) -> None:
    with pytest.raises(WireError) as exc:
        Ack.from_mapping(obj)  # type: ignore[arg-type]
    assert exc.value.reason == "bad_ack"


def test_ack_roundtrip() -> None:
    a = ack()
    assert Ack.from_mapping(a.to_dict()) == a


# -- the ward token (stream/consumers/dashboard/auth.py) ------------------------------------------------------
def test_token_sources_and_checks(tmp_path) -> None:
    from stream.consumers.dashboard.auth import load_token, session_value
    from stream.errors import SettingsError

    f = tmp_path / "token"
    f.write_text("file-token-0123456789\n")
    assert load_token(str(f), "settings-token-0123456789", env={}) == "file-token-0123456789"
    assert load_token(None, "", env={"MIRAGE_DASHBOARD_TOKEN_FILE": str(f)}) == "file-token-0123456789"
    assert load_token(None, "settings-token-0123456789", env={}) == "settings-token-0123456789"
    with pytest.raises(SettingsError, match="needs a token"):
        load_token(None, "", env={})
    with pytest.raises(SettingsError, match="5 characters") as exc:
        load_token(None, "short", env={})
    assert "short" not in str(exc.value)  # the message names the length, never the secret
    with pytest.raises(SettingsError, match="cannot read"):
        load_token(str(tmp_path / "missing"), "", env={})
    cookie = session_value("file-token-0123456789")
    assert "file-token" not in cookie and cookie != session_value("other-token-0123456789")
