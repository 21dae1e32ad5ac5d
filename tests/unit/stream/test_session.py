"""BedSession / BedSessions: one bed's state in one object; discharge is the only way a bed ends."""

from __future__ import annotations

import json

import numpy as np
import pytest

from engine.config import PRESETS
from stream.core.admission import REASON_END_OF_STREAM, REASON_IDLE, REASON_PATIENT_CHANGE
from stream.core.policy import PolicyConfig
from stream.core.schema import EcgChunk
from stream.core.session import REASON_REVOKED, BedSessions
from stream.core.technical import TechnicalConfig
from stream.core.windower import EcgWindow, Windower
from stream.errors import PolicyError

CFG = PRESETS["tiny"]
T0 = 1_700_000_000 * 10**9
S = 10**9
LEADS8 = ("I", "II", "V1", "V2", "V3", "V4", "V5", "V6")


def make_sessions(now: list[int], idle_s: float = 60.0) -> BedSessions:
    return BedSessions(
        lambda beds: Windower(CFG, clock=lambda: now[0], convert=False, beds=beds),
        PolicyConfig(threshold_start=0.5, threshold_end=0.3, k=1, n=1, cooldown_s=0.0),
        TechnicalConfig(no_data_s=5.0, idle_discharge_s=idle_s),
        lambda bed, events, w: [(ev.phase, ev.alert_id, w.bed_id, w.seq) for ev in events if w is not None],
        lambda: now[0],
    )


def open_episode(ss: BedSessions, now: list[int], bed: str = "b", patient: str = "p") -> str:
    """Admit the bed, score one positive window (an MI episode starts), let no_data start."""
    ss.technical.on_chunk(bed, patient, now[0])
    [ev] = ss.policy.update(bed, patient, 0.9, 0, T0)
    ss.open(bed).last_window = EcgWindow(bed, patient, 0, T0 - 10 * S, T0, None)
    now[0] += 6 * S
    assert [(a.kind, a.phase) for a in ss.technical.tick(now[0])] == [("no_data", "start")]
    return ev.alert_id


@pytest.mark.parametrize("reason", [REASON_END_OF_STREAM, REASON_PATIENT_CHANGE, REASON_IDLE])
def test_discharge_ends_the_open_episodes_once_and_forgets_the_bed(reason: str) -> None:
    now = [T0]
    ss = make_sessions(now)
    active = open_episode(ss, now)
    ss.get("b").pending.extend([(100, "t0"), (200, "t1")])
    alerts, tokens = ss.discharge("b", reason)
    assert alerts == [("end", active, "b", 0)]  # the MI end, on the last scored window
    assert tokens == ["t0", "t1"]
    assert [(a.kind, a.phase) for a in ss.technical.tick(now[0])] == [("no_data", "end")]
    assert "b" not in ss and ss.policy.active("b") == "" and not ss.technical.admissions.monitored("b")
    assert ss.take_records() == {"b": None}  # the persisted record is deleted
    assert ss.discharge("b", reason) == ([], [])  # idempotent: nothing ends twice


def test_revoked_partition_forgets_without_ending_anything() -> None:
    now = [T0]
    ss = make_sessions(now)
    open_episode(ss, now)
    ss.take_records()
    ss.get("b").pending.append((100, "t0"))
    alerts, tokens = ss.discharge("b", REASON_REVOKED)
    assert alerts == [] and tokens == ["t0"]  # the caller drops (does not ack) these
    assert ss.technical.tick(now[0]) == []  # no technical end either: the new owner continues
    assert "b" not in ss and ss.take_records() == {}  # the record stays for the new owner


def test_only_the_session_timer_discharges_an_idle_bed() -> None:
    now = [T0]
    ss = make_sessions(now, idle_s=60.0)
    active = open_episode(ss, now)
    now[0] += 3600 * S
    # The technical core's own admissions have no timer: its tick alone ends nothing.
    assert [(a.kind, a.phase) for a in ss.technical.tick(now[0])] == [("no_data", "update")]
    assert ss.policy.active("b") == active and ss.technical.admissions.monitored("b")
    assert ss.expire(now[0]) == [("end", active, "b", 0)]
    assert "b" not in ss and [(a.kind, a.phase) for a in ss.technical.tick(now[0])] == [("no_data", "end")]


def test_expire_keeps_beds_that_are_not_idle_and_drops_empty_sessions() -> None:
    now = [T0]
    ss = make_sessions(now, idle_s=60.0)
    active = open_episode(ss, now)
    ss.open("nothing")
    assert ss.expire(T0 + 59 * S) == []  # last chunk at T0
    assert ss.policy.active("b") == active and ss.bed_ids() == ["b"]


def test_the_cores_keep_their_per_bed_state_in_the_session() -> None:
    now = [T0]
    ss = make_sessions(now)
    chunk = EcgChunk("b", "p", 0, T0, 500.0, LEADS8, np.zeros((8, 500), np.float32))
    ss.windower.push(chunk)
    ss.technical.on_chunk("b", "p", now[0])
    ss.policy.update("b", "p", 0.1, 0, T0)
    s = ss.get("b")
    assert s.buffer is ss.windower.beds["b"] and s.buffer.patient_id == "p"
    assert s.admission is ss.technical.admissions.get("b") and s.technical is not None and s.episode is not None
    assert ss.bed_ids() == ["b"] and len(ss.windower.beds) == 1


def test_record_round_trip_continues_the_episodes_with_the_same_ids() -> None:
    now = [T0]
    ss = make_sessions(now)
    active = open_episode(ss, now)
    ss.get("b").dirty = True
    records = ss.take_records()
    assert set(records["b"]) == {"policy", "technical"}  # the format earlier workers wrote
    restarted = make_sessions(now)
    restarted.restore(json.loads(json.dumps(records)))
    assert restarted.policy.active("b") == active
    assert restarted.get("b").to_record() == records["b"]
    # the restored no_data episode ends with its original id when the bed speaks again
    restarted.technical.on_chunk("b", "p", now[0])
    [end] = restarted.technical.tick(now[0])
    assert (end.kind, end.phase) == ("no_data", "end")


def test_a_malformed_record_is_ignored_and_an_unknown_reason_refused() -> None:
    now = [T0]
    ss = make_sessions(now)
    ss.restore({"b": {"policy": {"recent": 1}}})
    assert ss.policy.active("b") == ""
    with pytest.raises(PolicyError, match="reason"):
        ss.open("b").discharge("went home")


# -- through the processor: a bed starting over inside one call gets a session of its own ----------


async def test_a_new_stream_after_end_of_stream_in_the_same_call_keeps_its_session() -> None:
    from test_processor import FS, INFO, LEADS8, AmplitudePredictor, bed_record, chunks, settings

    from stream.worker.processor import StreamProcessor

    proc = StreamProcessor(AmplitudePredictor(), INFO, settings())
    old = chunks("b", bed_record(1.0, 14, 3), range(14), eos_at=13)
    rec = bed_record(0.05, 4, 4)
    new = [EcgChunk("b", "pat-new", s, T0 + (20 + s) * S, FS, LEADS8, rec[:, s * 500 : (s + 1) * 500]) for s in range(4)]
    res = await proc.process([(c, c.seq) for c in old] + [(c, f"new{c.seq}") for c in new])
    assert [(a.patient_id, a.phase) for a in res.alerts if a.alert_type == "mi"] == [("pat-b", "start"), ("pat-b", "end")]
    assert sorted(t for t in res.release if isinstance(t, int)) == list(range(14))
    assert not [t for t in res.release if isinstance(t, str)]  # the new stream's chunks wait for their windows
    s = proc.sessions.get("b")
    assert s.admission.patient_id == "pat-new" and s.buffer is not None and len(s.pending) == 4


async def test_another_patient_in_the_same_call_ends_the_episode_on_the_newest_window() -> None:
    from test_processor import FS, INFO, LEADS8, AmplitudePredictor, bed_record, chunks, settings

    from stream.worker.processor import StreamProcessor

    proc = StreamProcessor(AmplitudePredictor(), INFO, settings())
    old = chunks("q", bed_record(1.0, 14, 3), range(14))
    new = EcgChunk("q", "pat-new", 14, T0 + 14 * S, FS, LEADS8, bed_record(0.05, 1, 5))
    res = await proc.process([(c, c.seq) for c in old] + [(new, "new")])
    mi = [(a.patient_id, a.phase, a.window_seq) for a in res.alerts if a.alert_type == "mi"]
    assert mi == [("pat-q", "start", 1), ("pat-q", "end", 2)]
    assert sorted(t for t in res.release if isinstance(t, int)) == list(range(14))


def test_every_discharge_but_a_revoke_asks_for_its_end_alerts_even_without_an_mi_episode() -> None:
    now = [T0]
    calls: list[tuple[str, int, bool]] = []
    ss = BedSessions(
        lambda beds: Windower(CFG, clock=lambda: now[0], convert=False, beds=beds),
        PolicyConfig(threshold_start=0.5, threshold_end=0.3),
        TechnicalConfig(idle_discharge_s=60.0),
        lambda bed, events, w: calls.append((bed, len(events), w is not None)) or [],
        lambda: now[0],
    )
    for bed in ("a", "b", "r"):
        ss.technical.on_chunk(bed, "p", now[0])
    ss.discharge("a", REASON_END_OF_STREAM)
    ss.discharge("b", REASON_PATIENT_CHANGE)
    ss.discharge("r", REASON_REVOKED)
    assert calls == [("a", 0, False), ("b", 0, False)]
