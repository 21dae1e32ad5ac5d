"""Technical-alarm core: no data, leads off / poor signal, backend failure, falling behind, discharge."""

from __future__ import annotations

import numpy as np
import pytest

from engine.pipeline import quality_flags
from simulators.ecg import PatientSpec, synthesize
from stream.core.admission import REASON_END_OF_STREAM, REASON_IDLE
from stream.core.schema import Alert, make_alert_id
from stream.core.technical import (
    KIND_BACKEND_FAILED,
    KIND_FALLING_BEHIND,
    KIND_LEADS_OFF,
    KIND_NO_DATA,
    KIND_POOR_SIGNAL,
    TechnicalConfig,
    TechnicalMonitor,
    evaluable_from_flags,
    quality_kind,
)
from stream.errors import SettingsError
from stream.settings import Settings

S = 1_000_000_000
FS = 100.0


def monitor(**kw: float) -> TechnicalMonitor:
    cfg = dict(no_data_s=10.0, poor_quality_s=20.0, behind_s=10.0, idle_discharge_s=300.0)
    cfg.update(kw)
    return TechnicalMonitor(TechnicalConfig(**cfg, model_name="mirage", model_version="1", checkpoint_sha="abc"))


@pytest.fixture(scope="module")
def ecg() -> np.ndarray:
    """A clean synthetic 12-lead window (12, 1000) mV at 100 Hz."""
    return synthesize(PatientSpec(), fs=FS, duration_s=10.0, seed=3).signal.astype(np.float32)


def phases(alerts: list[Alert]) -> list[tuple[str, str, str]]:
    return [(a.bed_id, a.kind, a.phase) for a in alerts]


def test_no_data_starts_after_limit_escalates_and_ends_when_data_returns() -> None:
    m = monitor()
    m.on_chunk("B1", "P1", 100 * S)
    assert m.tick(105 * S) == [] and m.tick(110 * S) == []  # exactly the limit: not yet
    start = m.tick(111 * S)
    assert phases(start) == [("B1", KIND_NO_DATA, "start")]
    a = start[0]
    assert a.alert_type == "technical" and a.alert_id == make_alert_id("technical", KIND_NO_DATA, "B1", "P1", 100 * S)
    assert (a.window_start_ns, a.window_end_ns, a.level, a.probability, a.threshold_start) == (100 * S, 111 * S, 1, None, None)
    assert (a.model_name, a.checkpoint_sha, a.emitted_ns) == ("mirage", "abc", 111 * S)
    assert m.tick(120 * S) == [] and not m.evaluable("B1")
    esc = m.tick(131 * S)  # beyond 3 x the limit: level 2
    assert phases(esc) == [("B1", KIND_NO_DATA, "update")] and esc[0].level == 2 and esc[0].alert_id == a.alert_id
    m.on_chunk("B1", "P1", 140 * S)
    end = m.tick(140 * S)
    assert phases(end) == [("B1", KIND_NO_DATA, "end")] and end[0].alert_id == a.alert_id
    assert (end[0].window_start_ns, end[0].window_end_ns) == (100 * S, 140 * S)
    assert len({x.event_id for x in start + esc + end}) == 3
    assert m.tick(145 * S) == [] and m.evaluable("B1")


def test_long_silence_found_late_starts_at_level_2() -> None:
    m = monitor()
    m.on_chunk("B1", "P1", 0)
    out = m.tick(45 * S)  # e.g. the first tick of a restarted worker
    assert [(a.phase, a.level) for a in out] == [("start", 2)]


def test_flat_leads_raise_leads_off_after_poor_quality_time(ecg: np.ndarray) -> None:
    clean_flags = quality_flags(ecg, FS)
    assert evaluable_from_flags(clean_flags)
    off = ecg.copy()
    off[6:10] = 0.0  # electrodes V1..V4 off: flat lines
    off_flags = quality_flags(off, FS)
    assert {"flat:V1", "flat:V2", "flat:V3", "flat:V4"} <= set(off_flags) and not evaluable_from_flags(off_flags)
    m = monitor()
    m.on_chunk("B1", "P1", 0)
    hop = 2 * S
    for k in range(5):
        m.on_chunk("B1", "P1", (10 + k * 2) * S)
        m.on_window("B1", "P1", (10 + k * 2) * S, clean_flags, window_seq=k)
    assert m.tick(18 * S) == []
    alerts: list[Alert] = []
    for k in range(5, 17):  # windows ending 20 s .. 42 s are bad
        t = 10 * S + k * hop
        m.on_chunk("B1", "P1", t)
        m.on_window("B1", "P1", t, off_flags, window_seq=k)
        alerts += m.tick(t)
    assert phases(alerts) == [("B1", KIND_LEADS_OFF, "start")]
    a = alerts[0]
    # Bad since the first bad window (20 s); starts once 20 s of bad windows have passed (40 s).
    assert (a.window_start_ns, a.window_end_ns, a.window_seq) == (20 * S, 40 * S, 15)
    assert a.alert_id == make_alert_id("technical", KIND_LEADS_OFF, "B1", "P1", 20 * S)
    assert {"flat:V1", "flat:V4"} <= set(a.quality_flags) and a.probability is None
    m.on_window("B1", "P1", 44 * S, clean_flags, window_seq=17)
    end = m.tick(44 * S)
    assert phases(end) == [("B1", KIND_LEADS_OFF, "end")] and end[0].alert_id == a.alert_id and end[0].window_seq == 17


def test_short_bad_run_does_not_alarm(ecg: np.ndarray) -> None:
    m = monitor()
    m.on_chunk("B1", "P1", 0)
    for k, ok in enumerate([False] * 10 + [True] + [False] * 10):  # never 20 s in a row
        m.on_window("B1", "P1", (10 + 2 * k) * S, ["flat:V1", "flat:V2", "flat:V3"] if not ok else [], window_seq=k)
        m.on_chunk("B1", "P1", (10 + 2 * k) * S)
    assert m.tick(52 * S) == []


def test_noisy_leads_are_poor_signal(ecg: np.ndarray) -> None:
    noisy = ecg + np.random.default_rng(0).normal(0, 0.5, ecg.shape).astype(np.float32) * (np.arange(12) < 6)[:, None]
    flags = quality_flags(noisy, FS)
    assert quality_kind(flags) == KIND_POOR_SIGNAL and not evaluable_from_flags(flags)
    m = monitor(poor_quality_s=4.0)
    m.on_chunk("B1", "P1", 0)
    for k in range(4):
        m.on_chunk("B1", "P1", (10 + 2 * k) * S)
        m.on_window("B1", "P1", (10 + 2 * k) * S, flags, evaluable=False, window_seq=k)
    out = m.tick(16 * S)
    assert phases(out) == [("B1", KIND_POOR_SIGNAL, "start")] and any(f.startswith("noisy:") for f in out[0].quality_flags)
    # The caller's verdict wins over the flags.
    m.on_window("B1", "P1", 18 * S, flags, evaluable=True, window_seq=4)
    assert phases(m.tick(18 * S)) == [("B1", KIND_POOR_SIGNAL, "end")]


def test_backend_failure_alerts_every_monitored_bed_with_fallback_advisory() -> None:
    m = monitor()
    m.on_chunk("B1", "P1", 0)
    m.on_chunk("B2", "P2", 0)
    m.on_backend_error(RuntimeError("CUDA error"), fallback_used="onnxruntime", t_ns=S)
    out = m.tick(2 * S)
    assert phases(out) == [("B1", KIND_BACKEND_FAILED, "start"), ("B2", KIND_BACKEND_FAILED, "start")]
    assert all(a.advisories == ["fallback backend onnxruntime in use"] and a.window_start_ns == S for a in out)
    assert out[0].alert_id != out[1].alert_id
    m.on_backend_error(RuntimeError("again"), fallback_used="onnxruntime")
    assert m.tick(3 * S) == []  # same condition, same advisory: no new event
    m.on_backend_error(RuntimeError("fallback died"), fallback_used=False)
    upd = m.tick(4 * S)
    assert phases(upd) == [("B1", KIND_BACKEND_FAILED, "update"), ("B2", KIND_BACKEND_FAILED, "update")]
    assert "not being evaluated" in upd[0].advisories[0]
    m.on_chunk("B3", "P3", 4 * S)  # a bed admitted during the failure gets its own alert
    assert phases(m.tick(5 * S)) == [("B3", KIND_BACKEND_FAILED, "start")]
    m.on_backend_ok(t_ns=6 * S)
    m.on_chunk("B1", "P1", 6 * S)
    m.on_chunk("B2", "P2", 6 * S)
    m.on_chunk("B3", "P3", 6 * S)
    end = m.tick(7 * S)
    assert phases(end) == [(b, KIND_BACKEND_FAILED, "end") for b in ("B1", "B2", "B3")]
    assert all(a.window_end_ns == 6 * S for a in end)


def test_falling_behind_has_hysteresis() -> None:
    m = monitor(behind_s=10.0)
    m.on_chunk("B1", "P1", 0)
    m.on_lag(5.0)
    assert m.tick(S) == []
    m.on_lag(15.0, t_ns=2 * S)
    out = m.tick(2 * S)
    assert phases(out) == [("B1", KIND_FALLING_BEHIND, "start")] and out[0].advisories
    m.on_chunk("B1", "P1", 3 * S)
    m.on_lag(7.0)  # below the limit but above half of it: still behind
    assert m.tick(3 * S) == []
    m.on_lag(4.0)
    assert phases(m.tick(4 * S)) == [("B1", KIND_FALLING_BEHIND, "end")]


def test_end_of_stream_ends_open_alerts_and_silences_no_data() -> None:
    m = monitor()
    m.on_chunk("B1", "P1", 0)
    m.on_chunk("B2", "P2", 0)
    for k in range(12):
        m.on_window("B1", "P1", (10 + 2 * k) * S, ["missing:I", "missing:II", "missing:V1"], window_seq=k)
    assert phases(m.tick(11 * S)) == [("B1", KIND_LEADS_OFF, "start"), ("B1", KIND_NO_DATA, "start"),
                                      ("B2", KIND_NO_DATA, "start")]
    m.on_chunk("B1", "P1", 12 * S, end_of_stream=True)
    out = m.tick(12 * S)
    assert sorted(phases(out)) == [("B1", KIND_LEADS_OFF, "end"), ("B1", KIND_NO_DATA, "end")]
    assert all(a.window_end_ns == 12 * S for a in out)
    assert [(d.bed_id, d.reason) for d in m.pop_discharges()] == [("B1", REASON_END_OF_STREAM)]
    assert m.pop_discharges() == []
    later = m.tick(1000 * S)  # B1 silent forever: never no_data; B2 idle-discharged at 300 s
    assert phases(later) == [("B2", KIND_NO_DATA, "end")] and later[0].window_end_ns == 300 * S
    assert [(d.bed_id, d.reason) for d in m.pop_discharges()] == [("B2", REASON_IDLE)]
    assert m.tick(2000 * S) == [] and m.open_alerts("B1") == []
    m.on_window("B1", "P1", 2000 * S, ["flat:I"] * 3)  # windows of a discharged bed are ignored
    assert m.tick(2001 * S) == []


def test_new_patient_ends_previous_patients_alerts() -> None:
    m = monitor()
    m.on_chunk("B1", "P1", 0)
    first = m.tick(11 * S)
    m.on_chunk("B1", "P2", 12 * S)
    out = m.tick(12 * S)
    assert [(a.patient_id, a.phase, a.alert_id) for a in out] == [("P1", "end", first[0].alert_id)]


def test_alerts_are_valid_wire_messages_and_replay_identically() -> None:
    def run() -> list[Alert]:
        m = monitor()
        m.on_chunk("B1", "P1", 0)
        out = m.tick(11 * S) + m.tick(40 * S)
        m.on_backend_error(None, True, t_ns=41 * S)
        m.on_chunk("B1", "P1", 42 * S)
        return out + m.tick(42 * S)

    a, b = run(), run()
    assert [x.event_id for x in a] == [x.event_id for x in b] and len({x.event_id for x in a}) == len(a) == 4
    for x in a:
        assert Alert.from_bytes(x.to_bytes()) == x


def test_config_from_settings_and_validation() -> None:
    cfg = TechnicalConfig.from_settings(Settings(no_data_s=3.0, poor_quality_s=7.0), model_name="m")
    assert (cfg.no_data_s, cfg.poor_quality_s, cfg.model_name) == (3.0, 7.0, "m")
    with pytest.raises(SettingsError, match="no_data_s=0"):
        TechnicalConfig(no_data_s=0)


def test_leads_off_from_the_real_windower_flags() -> None:
    """Chunks with four electrodes off (NaN) -> the worker's Windower flags -> leads_off, then cleared."""
    from engine.config import LEADS, get_preset
    from stream.core.schema import EcgChunk
    from stream.core.windower import Windower

    cfg = get_preset("tiny")
    x = synthesize(PatientSpec(), fs=FS, duration_s=60.0, seed=5).signal.astype(np.float32)
    x[6:10, int(10 * FS):int(40 * FS)] = np.nan  # V1..V4 off from 10 s to 40 s
    win = Windower(cfg)
    m = monitor(poor_quality_s=20.0)
    out: list[Alert] = []
    n = int(FS)
    for k in range(60):
        chunk = EcgChunk("B7", "P7", k, k * S, FS, tuple(LEADS), x[:, k * n:(k + 1) * n])
        m.on_chunk(chunk.bed_id, chunk.patient_id, chunk.end_ns)
        for w in win.push(chunk, chunk.end_ns).windows:
            m.on_window(w.bed_id, w.patient_id, w.end_ns, w.flags, window_seq=w.seq)
        out += m.tick(chunk.end_ns)
    assert phases(out) == [("B7", KIND_LEADS_OFF, "start"), ("B7", KIND_LEADS_OFF, "end")]
    start, end = out
    assert {"missing:V1", "missing:V2", "missing:V3", "missing:V4"} <= set(start.quality_flags)
    bad_from = start.window_start_ns  # end of the first window touching the gap
    assert 10 * S < bad_from <= 10 * S + int(cfg.hop_s * S)
    assert start.window_end_ns - bad_from >= 20 * S and end.window_end_ns >= 40 * S + int(cfg.window_s * S)


def test_state_survives_a_restart_with_the_same_ids() -> None:
    import json

    from stream.errors import PolicyError

    m = monitor()
    m.on_chunk("B1", "P1", 0)
    m.on_backend_error(RuntimeError("x"), "onnxruntime", t_ns=S)
    started = m.tick(11 * S)
    assert sorted(phases(started)) == [("B1", KIND_BACKEND_FAILED, "start"), ("B1", KIND_NO_DATA, "start")]
    saved = json.loads(json.dumps(m.export_bed("B1")))  # through JSON, as in Redis
    assert m.export_bed("B9") is None
    m2 = monitor()  # the restarted worker: backend healthy now
    m2.import_bed("B1", saved)
    assert m2.admissions.monitored("B1") and m2.open_alerts("B1") == [KIND_BACKEND_FAILED, KIND_NO_DATA]
    m2.on_chunk("B1", "P1", 50 * S)
    out = m2.tick(50 * S)
    ids = {a.kind: a.alert_id for a in started}
    assert sorted((a.kind, a.phase, a.alert_id) for a in out) == sorted((k, "end", ids[k]) for k in ids)
    assert len({a.event_id for a in started + out}) == 4
    bad = dict(saved, episodes=[dict(saved["episodes"][0], kind="bogus")])
    with pytest.raises(PolicyError, match="bogus"):
        monitor().import_bed("B1", bad)
    with pytest.raises(PolicyError, match="patient_id"):
        monitor().import_bed("B1", {"version": 1})


# -- issue 18: a lead-off indication per electrode while the bed stays evaluable -----------------
def feed(m: TechnicalMonitor, runs: list[tuple[int, list[str]]], t0_s: int = 10, hop_s: int = 2) -> list[Alert]:
    """Windows every ``hop_s`` from ``t0_s``: ``runs`` = [(how many windows, their flags), ...]."""
    out: list[Alert] = []
    k = 0
    for n, flags in runs:
        for _ in range(n):
            t = (t0_s + k * hop_s) * S
            m.on_chunk("B1", "P1", t)
            m.on_window("B1", "P1", t, flags, window_seq=k)
            out += m.tick(t)
            k += 1
    return out


def test_one_lead_off_raises_a_low_priority_leads_off_naming_it_while_the_bed_stays_evaluable() -> None:
    m = monitor()
    m.on_chunk("B1", "P1", 0)
    # V3 off for 36 s (windows ending 20 s .. 56 s), V5 too from 50 s, then both back.
    out = feed(m, [(5, []), (15, ["missing:V3"]), (4, ["flat:V5", "missing:V3"]), (2, [])])
    assert phases(out) == [("B1", KIND_LEADS_OFF, p) for p in ("start", "update", "end")]
    start, update, end = out
    assert len({a.alert_id for a in out}) == 1
    assert start.alert_id == make_alert_id("technical", KIND_LEADS_OFF, "B1", "P1", 20 * S)
    # Off since the first window with V3 missing (20 s); raised once poor_quality_s (20 s) has passed.
    assert (start.window_start_ns, start.window_end_ns, start.level) == (20 * S, 40 * S, 0)
    assert start.advisories == ["lead off: V3"] and start.quality_flags == ["missing:V3"]
    assert update.advisories == ["lead off: V3, V5"] and update.quality_flags == ["flat:V5", "missing:V3"]
    assert update.level == 0 and end.window_end_ns == 58 * S
    assert len({a.event_id for a in out}) == 3


def test_lead_off_notice_keeps_the_bed_evaluable() -> None:
    m = monitor(poor_quality_s=4.0)
    m.on_chunk("B1", "P1", 0)
    out = feed(m, [(4, ["missing:V3"])])
    assert phases(out) == [("B1", KIND_LEADS_OFF, "start")] and out[0].level == 0
    assert m.evaluable("B1") and m.open_alerts("B1") == [KIND_LEADS_OFF]


def test_short_lead_off_raises_nothing_and_without_the_notice_one_lead_off_is_silent() -> None:
    m = monitor()
    m.on_chunk("B1", "P1", 0)
    assert feed(m, [(10, ["missing:V3"]), (1, []), (10, ["missing:V3"])]) == []  # never 20 s in a row
    assert evaluable_from_flags(["missing:V3"])  # the window is evaluable: only the notice tells the nurse


def test_lead_off_notice_escalates_in_place_and_drops_back() -> None:
    m = monitor(poor_quality_s=4.0)
    m.on_chunk("B1", "P1", 0)
    four = ["flat:V1", "flat:V2", "flat:V3", "flat:V4"]
    out = feed(m, [(3, ["flat:V3"]), (4, four), (2, ["flat:V3"]), (1, [])])
    assert [(a.kind, a.phase, a.level) for a in out] == [
        (KIND_LEADS_OFF, "start", 0), (KIND_LEADS_OFF, "update", 1), (KIND_LEADS_OFF, "update", 0),
        (KIND_LEADS_OFF, "end", 0)]
    assert len({a.alert_id for a in out}) == 1 and len({a.event_id for a in out}) == 4
    assert out[1].quality_flags == four and out[2].advisories == ["lead off: V3"]


def test_lead_off_notice_beside_poor_signal() -> None:
    m = monitor(poor_quality_s=4.0)
    m.on_chunk("B1", "P1", 0)
    noisy = ["missing:V3", "noisy:V1", "noisy:V2", "noisy:V4"]
    out = feed(m, [(3, ["missing:V3"]), (4, noisy), (1, ["missing:V3"]), (1, [])])
    assert phases(out) == [("B1", KIND_LEADS_OFF, "start"), ("B1", KIND_POOR_SIGNAL, "start"),
                           ("B1", KIND_POOR_SIGNAL, "end"), ("B1", KIND_LEADS_OFF, "end")]


def test_ignored_extra_signals_name_no_bad_lead() -> None:
    from engine.signal.leads import ignored_flags
    from stream.core.technical import bad_leads

    flags = ["missing:V3", *ignored_flags(["RESP", "vx", "vy"])]
    assert bad_leads(flags) == {"V3"} and evaluable_from_flags(flags)


def test_no_data_id_derives_from_the_chunk_time_not_its_arrival() -> None:
    """A restarted worker re-reads the bed's last chunks later (another arrival time): same no_data id."""
    ids = []
    for arrival in (100 * S, 170 * S):
        m = monitor()
        m.on_chunk("B1", "P1", arrival, data_ns=95 * S)
        out = m.tick(arrival + 11 * S)
        assert phases(out) == [("B1", KIND_NO_DATA, "start")] and out[0].window_start_ns == arrival
        ids.append(out[0].alert_id)
    assert ids[0] == ids[1] == make_alert_id("technical", KIND_NO_DATA, "B1", "P1", 95 * S)


def test_saved_state_keeps_the_lead_off_run_and_the_data_time() -> None:
    import json

    m = monitor(poor_quality_s=4.0)
    m.on_chunk("B1", "P1", 0, data_ns=7)
    feed(m, [(1, ["missing:V3"])])
    saved = json.loads(json.dumps(m.export_bed("B1")))
    assert (saved["off_since_ns"], saved["last_data_ns"]) == (10 * S, 10 * S)
    m2 = monitor(poor_quality_s=4.0)
    m2.import_bed("B1", saved)
    out = feed(m2, [(2, ["missing:V3"])], t0_s=12)
    assert phases(out) == [("B1", KIND_LEADS_OFF, "start")] and out[0].window_start_ns == 10 * S
    legacy = {k: v for k, v in saved.items() if k not in ("off_since_ns", "last_data_ns")}
    monitor().import_bed("B1", legacy)  # states saved by the previous build still load
