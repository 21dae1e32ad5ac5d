"""Windower: window boundaries, offline parity, gaps, duplicates, out-of-order, resets, memory."""

from __future__ import annotations

import numpy as np
import pytest

from engine.config import PRESETS
from engine.pipeline import to_model_rate
from stream.core.schema import EcgChunk, decode_chunk, encode_chunk
from stream.core.windower import GAP_FLAG, Windower

CFG = PRESETS["tiny"]  # 100 Hz, 10 s windows, 2 s hop
LEADS8 = ("I", "II", "V1", "V2", "V3", "V4", "V5", "V6")
FS = 500
N = 250  # 0.5 s chunks
T0 = 1_700_000_000 * 10**9


def record(seconds: float = 20.0, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * FS)) / FS
    beat = np.sin(2 * np.pi * 1.2 * t) ** 15  # spiky, ECG-like
    x = beat[None, :] * rng.uniform(0.5, 1.5, (8, 1)) + rng.normal(0, 0.01, (8, t.size))
    return x.astype(np.float32)


def chunk(rec: np.ndarray, seq: int, *, bed: str = "bed-1", patient: str = "p-1", fs: float = FS, n: int = N,
          leads: tuple[str, ...] = LEADS8, eos: bool = False) -> EcgChunk:
    return EcgChunk(bed, patient, seq, T0 + int(seq * n * 1e9 / fs), fs, leads, rec[:, seq * n:(seq + 1) * n], eos)


def stream(w: Windower, rec: np.ndarray, seqs) -> list:
    out = []
    for s in seqs:
        out += w.push(chunk(rec, s)).windows
    return out


def test_window_grid_timing_and_offline_parity() -> None:
    rec = record(20.0)
    w = Windower(CFG, clock=lambda: 0)
    wins = stream(w, rec, range(40))
    # 20 s record, 10 s windows, 2 s hop -> windows starting at 0, 2, ..., 10 s
    assert [x.seq for x in wins] == [0, 1, 2, 3, 4, 5]
    assert wins[0].start_ns == T0 and wins[0].end_ns == T0 + 10 * 10**9
    assert wins[3].start_ns == T0 + 6 * 10**9
    for x in wins:
        assert x.signal.shape == (12, CFG.T) and x.signal.dtype == np.float32
        k = x.seq * 2 * FS
        offline = to_model_rate(rec[:, k:k + 10 * FS], FS, LEADS8, CFG).astype(np.float32)
        np.testing.assert_array_equal(x.signal, offline)
        assert GAP_FLAG not in x.flags
    # memory stays bounded: at most one window minus a hop (plus a chunk) at the source rate
    assert w.beds["bed-1"].buffer.shape[1] <= 10 * FS


def test_wire_roundtrip_then_window_equals_offline_of_decoded_record() -> None:
    rec = record(10.0, seed=3)
    w = Windower(CFG)
    wins = []
    decoded = []
    for s in range(20):
        c = decode_chunk(encode_chunk(chunk(rec, s)))
        decoded.append(c.samples)
        wins += w.push(c).windows
    assert len(wins) == 1
    offline = to_model_rate(np.concatenate(decoded, axis=1), FS, LEADS8, CFG).astype(np.float32)
    np.testing.assert_array_equal(wins[0].signal, offline)


def test_mid_stream_start_cuts_the_same_grid() -> None:
    rec = record(24.0)
    full = {x.seq: x for x in stream(Windower(CFG), rec, range(48))}
    late = stream(Windower(CFG), rec, range(7, 48))  # a worker that starts at seq 7 (3.5 s)
    assert late[0].seq == 2  # first whole window on the grid after 3.5 s starts at 4 s
    for x in late:
        assert x.start_ns == full[x.seq].start_ns
        np.testing.assert_array_equal(x.signal, full[x.seq].signal)


def test_duplicates_and_out_of_order_are_dropped_and_counted() -> None:
    rec = record(12.0)
    w = Windower(CFG)
    for s in range(10):
        w.push(chunk(rec, s))
    assert w.push(chunk(rec, 9)).dropped == "duplicate"
    assert w.push(chunk(rec, 4)).dropped == "out_of_order"
    wins = stream(w, rec, range(10, 24))
    assert w.counts["duplicate"] == 1 and w.counts["out_of_order"] == 1
    assert [x.seq for x in wins] == [0, 1]
    offline = to_model_rate(rec[:, :10 * FS], FS, LEADS8, CFG).astype(np.float32)
    np.testing.assert_array_equal(wins[0].signal, offline)


def test_small_gap_is_nan_filled_and_flagged() -> None:
    rec = record(14.0)
    w = Windower(CFG)
    wins = stream(w, rec, [s for s in range(28) if s not in (5, 6)])  # 1 s missing at 2.5-3.5 s
    assert w.counts["gap"] == 1
    assert [x.seq for x in wins] == [0, 1, 2]
    assert GAP_FLAG in wins[0].flags and GAP_FLAG in wins[1].flags
    assert GAP_FLAG not in wins[2].flags  # window 2 starts at 4 s, after the gap
    assert np.isnan(wins[0].signal[:, 260:340]).all()
    assert any(f.startswith("missing:") for f in wins[0].flags)


def test_long_gap_resets_the_bed() -> None:
    rec = record(40.0)
    w = Windower(CFG, max_gap_s=2.0)
    before = stream(w, rec, range(0, 10))
    res = w.push(chunk(rec, 30))  # 10 s later
    assert res.reset == "gap" and before == []
    after = stream(w, rec, range(31, 80))
    assert after[0].start_ns == T0 + 16 * 10**9  # grid restarts at the new chunk: 15 s -> first hop 16 s
    assert all(GAP_FLAG not in x.flags for x in after)


def test_rate_change_and_lead_off() -> None:
    rec = record(12.0)
    w = Windower(CFG)
    stream(w, rec, range(4))
    rec250 = rec[:, ::2].copy()
    res = w.push(chunk(rec250, 20, fs=250, n=125))
    assert res.reset == "rate_change"
    off = rec.copy()
    off[2, :] = np.nan  # V1 lead off for the whole record
    w2 = Windower(CFG)
    wins = stream(w2, off, range(20))
    assert "missing:V1" in wins[0].flags


def test_end_of_stream_discharges_and_idle_beds_are_evicted() -> None:
    rec = record(12.0)
    now = [0]
    w = Windower(CFG, idle_s=30, clock=lambda: now[0])
    stream(w, rec, range(23))
    res = w.push(chunk(rec, 23, eos=True))
    assert res.discharged and [x.seq for x in res.windows] == [1] and "bed-1" not in w.beds
    w.push(chunk(rec, 0, bed="bed-2"))
    now[0] = 31 * 10**9
    assert w.evict_idle() == ["bed-2"] and w.beds == {}


def test_next_window_start_tracks_consumed_samples() -> None:
    rec = record(12.0)
    w = Windower(CFG)
    stream(w, rec, range(20))
    assert w.next_window_start("bed-1") == 1000  # window 0 emitted, window 1 starts at 2 s (1000 samples)
    assert w.next_window_start("nobody") is None


def test_patient_change_resets_the_bed() -> None:
    rec = record(12.0)
    w = Windower(CFG)
    stream(w, rec, range(5))
    assert w.push(chunk(rec, 5, patient="p-2")).reset == "patient_change"


@pytest.mark.parametrize("fs,n", [(360, 180), (250, 125)])
def test_other_source_rates(fs: int, n: int) -> None:
    rec = np.random.default_rng(1).normal(0, 0.2, (8, fs * 12)).astype(np.float32)
    w = Windower(CFG)
    wins = []
    for s in range(rec.shape[1] // n):
        wins += w.push(chunk(rec, s, fs=fs, n=n)).windows
    assert wins and wins[0].signal.shape == (12, CFG.T)


def test_catching_up_on_old_data_does_not_evict_beds() -> None:
    """Broker timestamps hours old (a worker catching up) must not count as idleness."""
    rec = record(12.0)
    now = [10**12 * 3600]
    w = Windower(CFG, idle_s=30, clock=lambda: now[0])
    wins = []
    for s in range(24):
        wins += w.push(chunk(rec, s), arrival_ns=now[0] - 7200 * 10**9).windows
        assert w.evict_idle() == []
    assert [x.seq for x in wins] == [0, 1]
    assert wins[0].last_arrival_ns == now[0] - 7200 * 10**9  # latency is still measured from the broker time


def test_real_ptbxl_record_streamed_equals_the_offline_training_window(ptbxl_dir) -> None:
    """A PTB-XL record sent as wire chunks gives the window that training/evaluation read from disk."""
    from engine.data.wfdb_io import load_window, read_record

    path = sorted(ptbxl_dir.rglob("*.hea"))[0]
    rec = read_record(path)
    n = int(rec.fs // 2)
    w = Windower(CFG)
    wins = []
    for s in range(rec.signal.shape[1] // n):
        c = EcgChunk("bed-x", "p", s, T0 + s * 5 * 10**8, rec.fs, rec.leads, rec.signal[:, s * n:(s + 1) * n], gain_uv=1.0)
        wins += w.push(decode_chunk(encode_chunk(c))).windows
    assert len(wins) == 1 and wins[0].seq == 0
    offline = load_window(path, CFG)
    # the wire carries int16 counts of 1 uV (PTB-XL's own resolution), decoded to float32
    np.testing.assert_allclose(wins[0].signal, offline, atol=2e-5)


def test_a_restarted_seq_counter_resets_the_bed_instead_of_silencing_it() -> None:
    """A monitor reboot: seq starts again at 0 while time goes on. The chunks are new, not
    re-deliveries: the bed gets a new grid and windows keep coming."""
    rec = record(24.0)
    w = Windower(CFG)
    first = stream(w, rec, range(24))  # 12 s
    assert [x.seq for x in first] == [0, 1]
    later = T0 + 30 * 10**9  # 30 s after the first stream began, counter back at 0
    wins, resets = [], []
    for s in range(24):
        c = EcgChunk("bed-1", "p-1", s, later + int(s * N * 1e9 / FS), FS, LEADS8, rec[:, s * N:(s + 1) * N])
        r = w.push(c)
        assert not r.dropped
        resets.append(r.reset)
        wins += r.windows
    assert resets[0] == "seq_restart" and w.counts["reset_seq_restart"] == 1
    assert [x.seq for x in wins] == [0, 1] and wins[0].start_ns == later
    # a genuinely old chunk (its samples lie before the buffer's end) is still out of order
    assert w.push(chunk(rec, 3)).dropped == "out_of_order"


def test_cut_then_convert_in_one_batch_equals_converting_each_window() -> None:
    """The worker cuts windows on the event loop (convert=False) and converts a batch of them in
    its model thread: same signals and flags as the windower converting each window itself,
    with gaps, lead-off (NaN) and beds of different lead sets mixed in one batch."""
    from stream.core.windower import convert_windows

    rec = record(24.0, seed=5)
    rec[3, 2000:2600] = np.nan  # lead V2 off for 1.2 s
    rec12 = np.concatenate([rec[:2], rec[:2].sum(0, keepdims=True), rec[:2], rec[:1], rec[2:]])[:12]
    leads12 = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")
    eager, lazy = Windower(CFG), Windower(CFG, convert=False)
    a, b = [], []
    for s in list(range(10)) + list(range(12, 48)):  # seq 10-11 missing: a 1 s gap
        for win, out in ((eager, a), (lazy, b)):
            out += win.push(chunk(rec, s)).windows
            out += win.push(chunk(rec12, s, bed="bed-12", leads=leads12)).windows
    assert len(a) == len(b) > 8
    assert all(x.signal is None and x.raw is not None for x in b)
    assert [id(w) for w in convert_windows(b, CFG)] == [id(w) for w in b]  # converted in place, order kept
    assert all(y.signal.shape == (12, CFG.T) and y.signal.dtype == np.float32 for y in b)
    for x, y in zip(a, b):
        assert (x.bed_id, x.seq, x.start_ns, x.end_ns) == (y.bed_id, y.seq, y.start_ns, y.end_ns)
        np.testing.assert_array_equal(x.signal, y.signal)
        assert x.flags == y.flags and y.raw is None
    assert any(GAP_FLAG in x.flags for x in a) and any("missing:V2" in x.flags for x in a)
    assert convert_windows(b, CFG)[0].signal is b[0].signal  # converting again changes nothing


def test_unmappable_leads_are_counted_once_per_window_not_raised() -> None:
    rec = record(12.0)
    w = Windower(CFG, convert=False)
    leads = ("I", "I", "V1", "V2", "V3", "V4", "V5", "V6")  # lead I twice
    out = []
    for s in range(24):
        r = w.push(chunk(rec, s, leads=leads))
        assert not r.dropped
        out += r.windows
    assert out == [] and w.counts["unmappable"] == 2


# -- issue 18: lead names by alias, extra signals ignored and named ------------------------------
def test_extra_signals_are_ignored_and_named_and_aliases_map(caplog: pytest.LogCaptureFixture) -> None:
    """A monitor that also sends respiration and a pleth wave, with lower-case names: windows as without them."""
    import logging

    rec = record()
    extra = np.random.default_rng(1).normal(0, 1, (2, rec.shape[1])).astype(np.float32)
    mixed = np.concatenate([rec[:2], extra[:1], rec[2:], extra[1:]])
    names = ("i", "MLII", "RESP", "v1", "V2", "C3", "v4", "V5", "v6", "Pleth")
    plain, wide = Windower(CFG), Windower(CFG)
    with caplog.at_level(logging.INFO, logger="stream.core.windower"):
        got = []
        for s in range(40):
            got += wide.push(chunk(mixed, s, leads=names)).windows
    ref = stream(plain, rec, range(40))
    assert len(got) == len(ref) == 6
    for a, b in zip(got, ref):
        np.testing.assert_array_equal(a.signal, b.signal)
        assert a.flags == b.flags + ["ignored:RESP", "ignored:Pleth"]
    assert sum("extra signals" in r.getMessage() for r in caplog.records) == 1  # once per bed, not per window
    assert wide.counts["unmappable"] == 0


def test_a_bed_without_any_standard_lead_is_unmappable_with_its_reason(caplog: pytest.LogCaptureFixture) -> None:
    rec = record()
    w = Windower(CFG)
    out = []
    for s in range(40):
        out += w.push(chunk(rec[:2], s, leads=("RESP", "Pleth"))).windows
    assert out == [] and w.counts["unmappable"] == 6
    assert "none of the signals ['RESP', 'Pleth'] is one of the 12 standard leads" in caplog.text
