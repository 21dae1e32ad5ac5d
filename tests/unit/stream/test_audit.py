"""Audit store: append-only rows with dedup, queries by bed/time/type, hash chain, corrupt files; the query CLI."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from stream.consumers.audit import AuditStore, SourcePosition
from stream.consumers.audit_cli import audit_main, format_ns, parse_time
from stream.core.schema import Alert, make_alert_id
from stream.errors import AuditError

S = 1_000_000_000
T0 = parse_time("2026-11-24T10:00:00Z")


def mi_alert(bed: str, phase: str, seq: int, t_s: float, prob: float = 0.93) -> Alert:
    return Alert(alert_id=make_alert_id("mi", "mi_suspected", bed, f"P-{bed}", T0), alert_type="mi", kind="mi_suspected",
                 phase=phase, bed_id=bed, patient_id=f"P-{bed}", probability=prob, threshold_start=0.6, threshold_end=0.4,
                 window_start_ns=T0 + int((t_s - 10) * S), window_end_ns=T0 + int(t_s * S), window_seq=seq,
                 model_name="mirage", model_version="0.1.0", checkpoint_sha="ab" * 32, level=1,
                 labs=[{"loinc": "10839-9", "name": "troponin_i", "value": 0.9, "unit": "ng/mL", "age_s": 600.0}],
                 emitted_ns=T0 + int(t_s * S) + 5_000_000)


def tech_alert(bed: str, phase: str, t_s: float) -> Alert:
    return Alert(alert_id=make_alert_id("technical", "leads_off", bed, f"P-{bed}", T0), alert_type="technical",
                 kind="leads_off", phase=phase, bed_id=bed, patient_id=f"P-{bed}", probability=None, threshold_start=None,
                 threshold_end=None, window_start_ns=T0, window_end_ns=T0 + int(t_s * S), window_seq=0 if phase == "start" else 1,
                 model_name="mirage", model_version="0.1.0", checkpoint_sha="ab" * 32, quality_flags=["flat:V1", "flat:V2", "flat:V3"])


@pytest.fixture
def store(tmp_path: Path) -> AuditStore:
    s = AuditStore(tmp_path / "audit" / "trail.sqlite")
    s.append([mi_alert("B1", "start", 5, 20), (mi_alert("B1", "end", 12, 34, 0.2), SourcePosition("mirage.alerts", 0, 7)),
              tech_alert("B2", "start", 25), tech_alert("B2", "end", 60), mi_alert("B3", "start", 3, 50)], recorded_ns=T0)
    yield s
    s.close()


def test_rows_keep_the_decision_and_duplicates_are_skipped(store: AuditStore) -> None:
    assert store.count() == 5
    res = store.append([mi_alert("B1", "start", 5, 20), mi_alert("B1", "update", 7, 24, 0.95), mi_alert("B1", "update", 7, 24, 0.95)])
    assert (res.inserted, res.duplicates) == (1, 2) and store.count() == 6
    r = store.query(bed_id="B1", alert_type="mi")
    assert [x.alert.phase for x in r] == ["start", "update", "end"]
    first = r[0]
    assert first.alert == mi_alert("B1", "start", 5, 20)  # the full event round-trips
    assert first.alert.labs[0]["loinc"] == "10839-9" and first.alert.checkpoint_sha == "ab" * 32
    assert first.policy == {"alert_id": first.alert.alert_id, "phase": "start", "level": 1, "active": True,
                            "threshold_start": 0.6, "threshold_end": 0.4}
    assert r[2].policy["active"] is False and r[2].source == SourcePosition("mirage.alerts", 0, 7)


def test_query_filters_by_bed_time_and_type(store: AuditStore) -> None:
    assert [(x.alert.bed_id, x.alert.phase) for x in store.query(alert_type="technical")] == [("B2", "start"), ("B2", "end")]
    window = store.query(since_ns=T0 + 25 * S, until_ns=T0 + 50 * S)  # until is exclusive
    assert [(x.alert.bed_id, x.alert.phase) for x in window] == [("B2", "start"), ("B1", "end")]
    assert [x.alert.bed_id for x in store.query(bed_id="B3", since_ns=T0)] == ["B3"]
    assert store.query(bed_id="B9") == [] and len(store.query(limit=2)) == 2


def test_update_and_delete_are_refused_by_triggers(store: AuditStore, tmp_path: Path) -> None:
    db = sqlite3.connect(str(store.path))
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        db.execute("UPDATE audit_events SET probability = 0.1 WHERE bed_id = 'B1'")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        db.execute("DELETE FROM audit_events")
    db.close()
    assert store.count() == 5 and store.query(bed_id="B1")[0].alert.probability == 0.93


def test_hash_chain_detects_a_row_edited_behind_the_triggers(store: AuditStore) -> None:
    assert store.verify() == 5
    db = sqlite3.connect(str(store.path))
    db.execute("DROP TRIGGER audit_events_no_update")
    db.execute("UPDATE audit_events SET alert_json = replace(alert_json, '0.93', '0.13') WHERE row_id = 1")
    db.commit()
    db.close()
    with pytest.raises(AuditError, match="row 1"):
        store.verify()


def test_corrupt_or_foreign_or_missing_file_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "corrupt.sqlite"
    bad.write_bytes(b"this is not a database at all" * 200)
    with pytest.raises(AuditError, match="corrupt.sqlite"):
        AuditStore(bad)
    foreign = tmp_path / "other.sqlite"
    db = sqlite3.connect(str(foreign))
    db.execute("CREATE TABLE patients (id TEXT)")
    db.commit()
    db.close()
    with pytest.raises(AuditError, match="other.sqlite.*not a MIRAGE audit trail"):
        AuditStore(foreign)
    with pytest.raises(AuditError, match="missing.sqlite does not exist"):
        AuditStore(tmp_path / "missing.sqlite", create=False)


def test_rejected_messages_are_kept(store: AuditStore) -> None:
    store.reject(SourcePosition("mirage.alerts", 0, 9), "bad_alert: not JSON", b"\x00garbage")
    assert store.count("audit_rejects") == 1 and store.count() == 5


def test_cli_query_table_json_and_errors(store: AuditStore, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = str(store.path)
    assert audit_main(["query", "--db", db, "--bed", "B2"]) == 0
    out = capsys.readouterr().out
    assert "leads_off" in out and "flat:V1" in out and "2 row(s)" in out and "B1 " not in out
    assert audit_main(["query", "--db", db, "--type", "mi", "--since", "2026-11-24T10:00:30", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["alert"]["bed_id"], r["alert"]["phase"]) for r in rows] == [("B1", "end"), ("B3", "start")]
    assert audit_main(["verify", "--db", db]) == 0 and "intact over 5 row(s)" in capsys.readouterr().out
    bad = tmp_path / "broken.sqlite"
    bad.write_bytes(b"\xff" * 4096)
    assert audit_main(["query", "--db", str(bad)]) == 2
    assert "broken.sqlite" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        audit_main(["query", "--db", db, "--since", "yesterday"])
    assert "not an ISO 8601 time" in capsys.readouterr().err


def test_time_helpers_round_trip() -> None:
    assert format_ns(parse_time("2026-11-24T10:00:00.250+01:00")) == "2026-11-24T09:00:00.250Z"


def test_episodes_and_timeline_plot(store: AuditStore, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from stream.consumers.audit_cli import episodes

    eps = episodes(store.query())
    assert [(e.bed_id, e.kind, e.ended, (e.end_ns - e.start_ns) // S) for e in eps] == [
        ("B1", "mi_suspected", True, 14), ("B2", "leads_off", True, 60), ("B3", "mi_suspected", False, 0)]
    out = tmp_path / "timeline.png"
    assert audit_main(["plot", "--db", str(store.path), "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and "3 episode(s) on 3 bed(s)" in capsys.readouterr().out


def test_cli_run_without_a_broker_exits_1(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    import socket

    with socket.socket() as s:  # a port with nothing listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("MIRAGE_BOOTSTRAP_SERVERS", f"127.0.0.1:{port}")
    assert audit_main(["run", "--db", str(tmp_path / "a.sqlite")]) == 1
    assert f"127.0.0.1:{port}" in caplog.text
