"""st_change alerts and ST vectors at the consumers (issue #19): HL7 ORU^R40, audit trail, dashboard bed state."""

from __future__ import annotations

import json
from pathlib import Path

import hl7
import numpy as np
import pytest

from engine.config import LEADS
from engine.st import StChangeConfig, StChangeEvent
from stream.consumers.audit import AuditStore
from stream.consumers.audit_cli import audit_main
from stream.consumers.dashboard.state import MI_SUSPECTED, QUIET, Ack, WardState
from stream.consumers.hl7.pcd04 import build_oru_r40
from stream.core.schema import Alert, make_alert_id
from stream.core.st import st_change_alert

S = 1_000_000_000
T0 = 1_800_000_000 * S


def delta(**leads: float) -> np.ndarray:
    d = np.zeros(len(LEADS))
    for name, v in leads.items():
        d[LEADS.index(name)] = v
    return d


def st_alert(phase: str = "start", level: int = 1, seq: int = 40) -> Alert:
    d = delta(II=160.0, III=210.0, aVF=180.0, aVL=-90.0)
    aid = make_alert_id("st", "st_change", "ICU-2", "P-2", T0)
    ev = StChangeEvent(phase, aid, level, ("II", "III", "aVF") if phase != "end" else (), d, 210.0 if phase != "end" else 0.0,
                       seq, T0 + seq * S)
    vector = {"j60_uv": [round(v, 1) for v in d + 20.0], "baseline_uv": [20.0] * 12, "delta_uv": [round(v, 1) for v in d],
              "hr_bpm": 80.0, "qrs_ms": 90.0, "quality": [], "measurable": True}
    return st_change_alert(ev, bed_id="ICU-2", patient_id="P-2", window_start_ns=T0 + (seq - 10) * S, vector=vector,
                           config=StChangeConfig(), model_name="mirage", model_version="1", checkpoint_sha="x", emitted_ns=T0 + seq * S)


def mi_alert(st: dict | None) -> Alert:
    return Alert(alert_id="mi-abc", alert_type="mi", kind="mi_suspected", phase="start", bed_id="ICU-2", patient_id="P-2",
                 probability=0.9, threshold_start=0.5, threshold_end=0.3, window_start_ns=T0 - 10 * S, window_end_ns=T0,
                 window_seq=5, model_name="mirage", model_version="1", checkpoint_sha="x", level=2, emitted_ns=T0, st=st)


def test_hl7_oru_r40_of_an_st_change_names_the_alarm_leads_and_per_lead_change_in_microvolts() -> None:
    a = st_alert()
    msg = hl7.parse(build_oru_r40(a, a.event_id, now_ns=T0 + 50 * S))
    obx = {str(seg[4]): seg for seg in msg.segments("OBX")}
    assert str(obx["1.0.0.0.1"][3]).startswith("ST_CHANGE^") and "II, III, aVF" in str(obx["1.0.0.0.1"][5])
    assert str(obx["1.0.0.0.1"][8]) == "PM~SP"  # physiological, level 1
    assert str(obx["1.0.0.0.2"][2]) == "NM" and str(obx["1.0.0.0.2"][5]) == "210.0" and "MICRO_VOLT" in str(obx["1.0.0.0.2"][6])
    assert str(obx["1.0.0.0.3"][5]) == "start" and str(obx["1.0.0.0.7"][5]) == "SP"
    assert str(obx["1.0.0.0.8"][5]) == "II~III~aVF"
    k = LEADS.index("III") + 1
    assert str(obx[f"1.0.1.{k}.1"][3]).startswith("ST_DELTA_III^") and str(obx[f"1.0.1.{k}.1"][5]) == "210.0"
    assert [int(str(seg[1])) for seg in msg.segments("OBX")] == list(range(1, len(msg.segments("OBX")) + 1))
    end = st_alert("end", seq=90)
    msg = hl7.parse(build_oru_r40(end, end.event_id, now_ns=T0 + 95 * S))
    assert {str(seg[4]): str(seg[5]) for seg in msg.segments("OBX")}["1.0.0.0.4"] == "inactive"


def test_audit_trail_records_st_change_events_with_their_st(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with AuditStore(tmp_path / "trail.sqlite") as store:
        r = store.append([st_alert("start"), st_alert("update", level=2, seq=50), st_alert("end", seq=90), st_alert("start")])
        assert r.inserted == 3 and r.duplicates == 1
        rows = store.query(alert_type="st")
        assert [x.alert.phase for x in rows] == ["start", "update", "end"]
        assert all(x.alert.kind == "st_change" for x in rows)
        assert rows[0].alert.st["delta_uv"][LEADS.index("III")] == 210.0 and rows[0].alert.top_leads == ["II", "III", "aVF"]
        assert rows[0].policy["threshold_start"] == 100.0 and rows[1].policy["level"] == 2
        assert store.verify() == 3
    assert audit_main(["query", "--db", str(tmp_path / "trail.sqlite"), "--type", "st", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["alert"]["kind"], r["alert"]["phase"]) for r in rows] == [("st_change", "start"), ("st_change", "update"),
                                                                       ("st_change", "end")]
    assert rows[0]["alert"]["st"]["max_delta_uv"] == 210.0
    assert audit_main(["plot", "--db", str(tmp_path / "trail.sqlite"), "--out", str(tmp_path / "t.png")]) == 0
    assert (tmp_path / "t.png").stat().st_size > 0


def test_dashboard_keeps_st_change_apart_from_mi_and_names_the_largest_st_changes() -> None:
    w = WardState()
    w.apply_alert(st_alert())
    v = w.bed_view("ICU-2", T0 + 41 * S)
    assert v["state"] == QUIET and v["mi"] is None and v["needs_attention"]
    (e,) = v["st_change"]
    assert e["kind"] == "st_change" and [x["lead"] for x in e["st_leads"]] == ["III", "aVF", "II"]
    w.apply_ack(Ack("a1", e["alert_id"], "ICU-2", T0 + 42 * S, "RN"))
    assert not w.bed_view("ICU-2", T0 + 43 * S)["needs_attention"]
    w.apply_alert(mi_alert({"delta_uv": list(delta(V2=250.0, V3=-300.0, V4=120.0)), "j60_uv": [0.0] * 12}))
    v = w.bed_view("ICU-2", T0 + 44 * S)
    assert v["state"] == MI_SUSPECTED
    assert v["mi"]["st_leads"] == [{"lead": "V3", "delta_uv": -300.0}, {"lead": "V2", "delta_uv": 250.0},
                                   {"lead": "V4", "delta_uv": 120.0}]
    w.apply_alert(st_alert("end", seq=90))
    assert w.bed_view("ICU-2", T0 + 91 * S)["st_change"] == []


@pytest.mark.parametrize("phase", ["start", "end"])
def test_st_change_oru_r40_passes_hl7apy_strict_validation(phase: str) -> None:
    """Issue 18 asks every message we send (MI, technical and ST) to pass a strict v2.6 validator."""
    pytest.importorskip("hl7apy", reason="hl7apy (dev extra) is not installed")
    from hl7apy.consts import VALIDATION_LEVEL
    from hl7apy.parser import parse_segment

    a = st_alert(phase, seq=40 if phase == "start" else 90)
    for seg in build_oru_r40(a, a.event_id, now_ns=T0 + 95 * S).rstrip("\r").split("\r"):
        assert parse_segment(seg, version="2.6", validation_level=VALIDATION_LEVEL.STRICT).validate(), seg
