"""AlertPolicy: k-of-n start, hysteresis end, cooldown, escalation, deterministic ids."""

from __future__ import annotations

import pytest

from stream.core.policy import AlertPolicy, PolicyConfig
from stream.core.schema import make_alert_id
from stream.errors import PolicyError

S = 10**9
CFG = PolicyConfig(threshold_start=0.6, threshold_end=0.4, end_consecutive=2, k=2, n=3, cooldown_s=10.0, escalate_probability=0.9)


def feed(policy: AlertPolicy, probs: list[float], bed: str = "b1", start_seq: int = 0) -> list[tuple[int, str, int]]:
    out = []
    for i, p in enumerate(probs):
        seq = start_seq + i
        for ev in policy.update(bed, "p1", p, seq, (10 + 2 * seq) * S):
            out.append((seq, ev.phase, ev.level))
    return out


def test_one_positive_window_does_not_alarm_but_k_of_n_does() -> None:
    pol = AlertPolicy(CFG)
    assert feed(pol, [0.7, 0.1, 0.1, 0.7, 0.2]) == []  # never 2 positives among the last 3
    pol2 = AlertPolicy(CFG)
    assert feed(pol2, [0.7, 0.1, 0.7]) == [(2, "start", 1)]


def test_hysteresis_end_needs_consecutive_low_windows() -> None:
    pol = AlertPolicy(CFG)
    events = feed(pol, [0.7, 0.7, 0.5, 0.3, 0.5, 0.3, 0.3])
    # 0.5 is between the thresholds: stays active; a single 0.3 is not enough; two are
    assert events == [(1, "start", 1), (6, "end", 1)]
    assert pol.active("b1") == ""


def test_escalation_updates_and_same_episode_id() -> None:
    pol = AlertPolicy(CFG)
    evs = []
    for seq, p in enumerate([0.7, 0.7, 0.95, 0.75, 0.75, 0.2, 0.1]):
        evs += pol.update("b1", "p1", p, seq, (10 + 2 * seq) * S)
    assert [(e.phase, e.level, e.window_seq) for e in evs] == [("start", 1, 1), ("update", 2, 2), ("update", 1, 4), ("end", 1, 6)]
    assert len({e.alert_id for e in evs}) == 1
    assert evs[0].alert_id == make_alert_id("mi", "mi_suspected", "b1", "p1", 12 * S)


def test_cooldown_blocks_a_new_episode_then_allows_it() -> None:
    pol = AlertPolicy(CFG)
    probs = [0.7, 0.7, 0.1, 0.1] + [0.9] * 8
    events = feed(pol, probs)
    # ends at seq 3 (t = 16 s), cooldown 10 s -> windows ending before 26 s (seq < 8) cannot start
    starts = [e for e in events if e[1] == "start"]
    assert starts[0][0] == 1 and starts[1][0] == 8


def test_replayed_windows_are_ignored_and_ids_are_deterministic() -> None:
    a, b = AlertPolicy(CFG), AlertPolicy(CFG)
    ea = [e.alert_id for s, p in enumerate([0.7, 0.8]) for e in a.update("b1", "p1", p, s, s * S)]
    assert a.update("b1", "p1", 0.8, 1, 1 * S) == []  # duplicate window
    eb = [e.alert_id for s, p in enumerate([0.7, 0.8]) for e in b.update("b1", "p1", p, s, s * S)]
    assert ea == eb and len(ea) == 1


def test_discharge_ends_an_active_episode_and_new_patient_starts_clean() -> None:
    pol = AlertPolicy(CFG)
    feed(pol, [0.7, 0.7])
    ends = pol.discharge("b1", 2, 20 * S)
    assert [e.phase for e in ends] == ["end"] and ends[0].probability is None
    assert pol.discharge("b1", 3, 22 * S) == []
    feed(pol, [0.7, 0.7])
    assert pol.update("b1", "p2", 0.7, 5, 30 * S) == []  # new patient: history starts over


def test_beds_are_independent() -> None:
    pol = AlertPolicy(CFG)
    assert feed(pol, [0.7], bed="x") == [] and feed(pol, [0.7], bed="y") == []


@pytest.mark.parametrize("kw", [dict(threshold_start=0.3, threshold_end=0.5), dict(threshold_start=0.5, threshold_end=0.4, k=4, n=3)])
def test_inconsistent_config_is_rejected(kw: dict) -> None:
    with pytest.raises(PolicyError):
        PolicyConfig(**kw)


def test_exported_state_continues_the_episode_in_a_new_policy() -> None:
    a = AlertPolicy(CFG)
    [start] = [e for s, p in enumerate([0.7, 0.8]) for e in a.update("b1", "p1", p, s, s * S)]
    b = AlertPolicy(CFG)  # a restarted worker
    b.import_state("b1", a.export_state("b1"))
    assert b.update("b1", "p1", 0.8, 1, 1 * S) == []  # already scored before the restart
    evs = b.update("b1", "p1", 0.1, 2, 2 * S) + b.update("b1", "p1", 0.1, 3, 3 * S)
    assert [(e.phase, e.alert_id) for e in evs] == [("end", start.alert_id)]
    with pytest.raises(PolicyError):
        b.import_state("b2", {"recent": []})


def test_level_does_not_flap_around_the_escalation_probability() -> None:
    pol = AlertPolicy(CFG)
    events = feed(pol, [0.95, 0.95, 0.85, 0.93, 0.82, 0.91, 0.86, 0.95])
    assert events == [(1, "start", 2)]  # dips to 0.82-0.86 are above 0.9 - 0.1: level 2 holds


def test_a_restarted_source_is_scored_but_replays_are_not() -> None:
    """Saved state says window 3 (ending at 16 s) was the last; the monitor then rebooted and its
    windows count from 0 again with later end times: they must be scored, not taken for replays."""
    a = AlertPolicy(CFG)
    feed(a, [0.1, 0.1, 0.1, 0.1])
    b = AlertPolicy(CFG)
    b.import_state("b1", a.export_state("b1"))
    assert b.update("b1", "p1", 0.9, 2, 14 * S) == []  # a replay: neither seq nor time is newer
    evs = b.update("b1", "p1", 0.8, 0, 100 * S) + b.update("b1", "p1", 0.8, 1, 102 * S)
    assert [e.phase for e in evs] == ["start"] and evs[0].window_seq == 1
    # state saved by a build that kept no end time: dedupe on seq alone, as that build did
    old = a.export_state("b1")
    del old["last_window_end_ns"]
    c = AlertPolicy(CFG)
    c.import_state("b1", old)
    assert c.update("b1", "p1", 0.9, 3, 100 * S) == [] and c.update("b1", "p1", 0.9, 4, 102 * S) == []
