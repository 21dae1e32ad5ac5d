"""Admission core: beds monitored from their first chunk until end of stream, idle time or a new patient."""

from __future__ import annotations

import pytest

from stream.core.admission import ADMITTED, DISCHARGED, REASON_END_OF_STREAM, REASON_FIRST_CHUNK, REASON_IDLE, REASON_PATIENT_CHANGE, Admissions
from stream.errors import SettingsError

S = 1_000_000_000


def test_first_chunk_admits_once() -> None:
    a = Admissions(idle_discharge_s=300)
    ev = a.on_chunk("B1", "P1", 5 * S)
    assert [(e.change, e.bed_id, e.patient_id, e.reason, e.t_ns) for e in ev] == [(ADMITTED, "B1", "P1", REASON_FIRST_CHUNK, 5 * S)]
    assert a.on_chunk("B1", "P1", 6 * S) == []
    assert a.monitored("B1") and a.get("B1").last_chunk_ns == 6 * S and a.get("B1").admitted_ns == 5 * S
    # A re-read older chunk (restart) does not move the last arrival back.
    a.on_chunk("B1", "P1", 5 * S)
    assert a.get("B1").last_chunk_ns == 6 * S


def test_end_of_stream_discharges_and_is_idempotent() -> None:
    a = Admissions(idle_discharge_s=300)
    a.on_chunk("B1", "P1", 0)
    ev = a.on_chunk("B1", "P1", 2 * S, end_of_stream=True)
    assert [(e.change, e.reason, e.t_ns) for e in ev] == [(DISCHARGED, REASON_END_OF_STREAM, 2 * S)]
    assert not a.monitored("B1") and len(a) == 0
    assert a.on_chunk("B1", "P1", 3 * S, end_of_stream=True) == []
    # Data after a discharge admits the bed again.
    assert a.on_chunk("B1", "P1", 4 * S)[0].change == ADMITTED


def test_idle_beds_are_discharged_at_their_deadline() -> None:
    a = Admissions(idle_discharge_s=60)
    a.on_chunk("B1", "P1", 0)
    a.on_chunk("B2", "P2", 30 * S)
    assert a.expire(59 * S) == []
    ev = a.expire(70 * S)
    assert [(e.bed_id, e.reason, e.t_ns) for e in ev] == [("B1", REASON_IDLE, 60 * S)]
    assert a.beds() == ["B2"]
    assert [e.bed_id for e in a.expire(1000 * S)] == ["B2"]


def test_zero_idle_limit_never_discharges() -> None:
    a = Admissions(idle_discharge_s=0)
    a.on_chunk("B1", "P1", 0)
    assert a.expire(10**6 * S) == [] and a.monitored("B1")


def test_new_patient_in_bed_discharges_old_one_first() -> None:
    a = Admissions(idle_discharge_s=300)
    a.on_chunk("B1", "P1", 0)
    ev = a.on_chunk("B1", "P2", S)
    assert [(e.change, e.patient_id, e.reason) for e in ev] == [(DISCHARGED, "P1", REASON_PATIENT_CHANGE),
                                                                (ADMITTED, "P2", REASON_FIRST_CHUNK)]
    assert a.get("B1").patient_id == "P2"


def test_explicit_discharge_and_forget() -> None:
    a = Admissions(idle_discharge_s=300)
    a.on_chunk("B1", "P1", 0)
    a.on_chunk("B2", "P2", 0)
    assert [e.reason for e in a.discharge("B1", S, reason="revoked")] == ["revoked"]
    assert a.discharge("B1", S) == []
    a.forget("B2")
    assert a.beds() == []


def test_negative_idle_limit_is_rejected_with_its_value() -> None:
    with pytest.raises(SettingsError, match="-1"):
        Admissions(idle_discharge_s=-1)
