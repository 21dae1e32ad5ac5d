"""Scoring of validation runs (stream.tools.validate_metrics) and the load bench's pure helpers, on crafted runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stream.tools.loadbench import percentile, steady_latencies
from stream.tools.loadgen import SLOT_S, bed_phases, expected_window_ends
from stream.tools.validate_metrics import DAY_S, AlertEvent, BedInfo, WindowScore, score_beds, summarize, window_label

S = 1_000_000_000
T0 = 1_700_000_000 * S


def bed(bed_id: str, mi: bool, onset: float | None = None, stream_s: float = 120.0) -> BedInfo:
    return BedInfo(bed_id, f"rec-{bed_id}", mi, onset, T0, stream_s, "MI" if mi else "NORM")


def windows(bed_id: str, probs: list[float], offline: list[float] | None = None) -> list[WindowScore]:
    """Windows ending at 10, 12, 14, ... s."""
    return [WindowScore(bed_id, k, T0 + (10 + 2 * k) * S, p, None if offline is None else offline[k]) for k, p in enumerate(probs)]


def start(bed_id: str, t_s: float, alert_type: str = "mi") -> AlertEvent:
    return AlertEvent(bed_id, alert_type, "start", T0 + int(t_s * S), f"{bed_id}-{t_s}")


def test_window_label_follows_the_onset() -> None:
    b = bed("a", True, onset=20.0)
    assert window_label(b, T0 + 20 * S) == 0  # ends exactly at onset: no infarct samples in it
    assert window_label(b, T0 + 20 * S + 1) == 1
    assert window_label(bed("b", True, onset=-600.0), T0 + 10 * S) == 1  # present from the start
    assert window_label(bed("c", False), T0 + 100 * S) == 0


def test_detection_delay_and_false_alerts_per_bed() -> None:
    beds = [bed("mi-late", True, onset=30.0), bed("mi-early", True, onset=-100.0), bed("mi-missed", True, onset=0.0),
            bed("norm", False), bed("norm-noisy", False)]
    alerts = [
        start("mi-late", 16.0),  # before the onset: a false alert on an MI bed
        start("mi-late", 36.0),  # true: 6 s after onset
        start("mi-early", 12.0),  # true: 12 s after the stream start
        start("norm-noisy", 40.0), start("norm-noisy", 90.0),  # two false alerts
        start("norm", 50.0, alert_type="technical"),  # technical: burden, not a false MI alert
        AlertEvent("norm", "mi", "end", T0 + 60 * S),  # only starts count
    ]
    rows = {r.bed_id: r for r in score_beds(beds, [], alerts)}
    assert rows["mi-late"].detected and rows["mi-late"].alert_delay_s == pytest.approx(6.0)
    assert rows["mi-late"].false_alerts == 1 and rows["mi-late"].true_alerts == 1 and rows["mi-late"].first_alert_s == 16.0
    assert rows["mi-early"].alert_delay_s == pytest.approx(12.0)
    assert not rows["mi-missed"].detected and rows["mi-missed"].alert_delay_s is None
    assert rows["norm-noisy"].false_alerts == 2
    assert rows["norm-noisy"].false_alerts_per_bed_day == pytest.approx(2 / (120 / DAY_S))
    assert rows["norm"].false_alerts == 0 and rows["norm"].technical_alerts == 1
    assert rows["norm"].alarm_burden_per_bed_day == pytest.approx(1 / (120 / DAY_S))
    assert rows["norm"].mi_alarm_burden_per_bed_day == 0.0
    assert rows["mi-late"].mi_alarm_burden_per_bed_day == pytest.approx(2 / (120 / DAY_S))

    out = summarize(beds, [], alerts, threshold=0.5)
    assert out["sensitivity"] == pytest.approx(2 / 3)
    assert out["specificity"] == pytest.approx(1 / 2)
    assert out["ppv"] == pytest.approx(2 / 5)
    assert out["median_alert_delay_s"] == pytest.approx(9.0)
    assert out["false_alerts_per_bed_day"] == pytest.approx(3 / (5 * 120 / DAY_S))
    assert out["alarm_burden_per_bed_day"] == pytest.approx(6 / (5 * 120 / DAY_S))  # 5 MI starts + 1 technical
    assert out["mi_alarm_burden_per_bed_day"] == pytest.approx(5 / (5 * 120 / DAY_S))
    assert out["records"] == 5 and out["beds"] == 5
    assert [r["bed_id"] for r in out["per_bed"]] == [b.bed_id for b in beds]
    json.dumps(out)  # validate.json must be serialisable


def test_window_metrics_and_parity() -> None:
    beds = [bed("mi", True, onset=13.0), bed("norm", False)]
    ws = windows("mi", [0.2, 0.9, 0.8], offline=[0.2, 0.90004, 0.8]) + windows("norm", [0.1, 0.6, 0.3], offline=[0.1, 0.6, 0.3])
    out = summarize(beds, ws, [], threshold=0.5)
    # labels: mi windows end at 10, 12, 14 s -> 0, 0, 1 (onset 13 s); norm all 0
    assert out["windows"] == 6 and out["positive_windows"] == 1
    assert out["window_sensitivity"] == 1.0
    assert out["window_specificity"] == pytest.approx(3 / 5)  # 0.9 (pre-onset) and 0.6 are false positives
    assert out["window_auroc"] == pytest.approx(4 / 5)  # the positive 0.8 ranks above 4 of the 5 negatives
    assert out["parity_max_abs_diff"] == pytest.approx(4e-5)
    assert out["parity_windows"] == 6 and out["parity_ok"]
    bad = summarize(beds, windows("mi", [0.5], offline=[0.6]), [], threshold=0.5)
    assert not bad["parity_ok"] and bad["parity_max_abs_diff"] == pytest.approx(0.1)
    assert summarize(beds, windows("mi", [0.5]), [], threshold=0.5)["parity_max_abs_diff"] is None


def test_an_onset_after_the_stream_is_not_a_missed_mi() -> None:
    late = bed("late", True, onset=200.0, stream_s=120.0)
    out = summarize([late, bed("mi", True, onset=0.0)], windows("late", [0.9, 0.9]), [start("late", 12.0)], threshold=0.5)
    assert out["mi_beds"] == 1 and out["sensitivity"] == 0.0  # only "mi" counts, and it was missed
    assert out["false_alerts"] == 1 and out["specificity"] == 0.0  # the alert on "late" came before any infarct
    assert window_label(late, T0 + 110 * S) == 0


def test_no_mi_beds_gives_no_sensitivity_rather_than_a_guess() -> None:
    out = summarize([bed("n", False)], windows("n", [0.1, 0.2]), [], threshold=0.5)
    assert out["sensitivity"] is None and out["specificity"] == 1.0 and out["ppv"] is None and out["window_auroc"] is None


def test_report_files(tmp_path: Path) -> None:
    from stream.tools.validate_report import write_report

    beds = [bed("mi", True, onset=13.0), bed("norm", False)]
    ws = windows("mi", [0.2, 0.9, 0.8]) + windows("norm", [0.1, 0.6, 0.3])
    out = summarize(beds, ws, [start("mi", 14.0)], threshold=0.5)
    for r in out["per_bed"]:
        r["timeline"] = [[(w.end_ns - T0) / 1e9, w.probability] for w in ws if w.bed_id == r["bed_id"]]
    alerts = [{"bed_id": "mi", "type": "mi", "phase": "start", "t_s": 14.0}]
    files = write_report(out, alerts, tmp_path, window_labels=([0, 0, 1, 0, 0, 0], [w.probability for w in ws]))
    assert {"json", "md", "html", "roc", "alert delays", "timelines"} <= set(files)
    data = json.loads((tmp_path / "validate.json").read_text())
    for key in ("sensitivity", "specificity", "ppv", "false_alerts_per_bed_day", "median_alert_delay_s", "parity_max_abs_diff",
                "windows", "records", "per_bed", "alerts"):
        assert key in data
    assert (tmp_path / "roc.png").read_bytes()[:4] == b"\x89PNG"
    html = (tmp_path / "report.html").read_text()
    assert "data:image/png;base64," in html and "<table>" in html
    assert "| sensitivity | 1.000 |" in (tmp_path / "report.md").read_text()


def test_load_bench_latency_counts_unscored_windows_as_waiting() -> None:
    phases = bed_phases(4, hop_s=2.0, chunk_s=0.5, synchronized=False)
    assert phases == [0, 10, 20, 30] and bed_phases(3, 2.0, 0.5, True) == [0, 0, 0]
    exp = expected_window_ends("b", phases, T0, samples=20 * 500, fs=500.0, win=5000, hop=1000)
    assert len(exp) == 4 and len(exp["b-0000"]) == 6  # windows ending at 10, 12, ..., 20 s
    assert exp["b-0001"][0] - exp["b-0000"][0] == int(10 * SLOT_S * S)
    ends = exp["b-0000"]
    recs = [{"bed": "b-0000", "end_ns": e, "done_ns": e + 100_000_000} for e in ends[:-1]]  # last one never scored
    lat, unscored = steady_latencies(recs, T0, T0 + 30 * S, {"b-0000"}, {"b-0000": ends}, drained_ns=ends[-1] + 3 * S)
    assert unscored == 1 and sorted(lat) == [100.0] * 5 + [3000.0]
    assert percentile(lat, 0.5) == 100.0 and percentile(lat, 0.99) == 3000.0 and percentile([], 0.5) is None


def test_find_max_search_doubles_then_bisects_to_ten_percent() -> None:
    """The search logic of ``mirage bench load --find-max`` against a system that holds up to 230 beds."""
    import asyncio

    from stream.settings import Settings
    from stream.tools.loadbench import BenchOptions, TrialResult, search, summarize

    def result(n: int) -> TrialResult:
        p99 = 500.0 if n <= 230 else 2500.0
        return TrialResult(beds=n, duration_s=40, steady_s=30, windows=n * 15, windows_per_s=n / 2, expected_windows_per_s=n / 2,
                           p50_latency_ms=p99 / 3, p99_latency_ms=p99, max_latency_ms=p99, unscored_windows=0, max_lag_chunks=0,
                           worker_consume_lag_p99_ms=None, worker_cpu_percent=50.0, worker_rss_mb=500.0,
                           generator_cpu_percent=10.0, chunks_sent=0, workers=2)

    tried: list[int] = []

    async def trial(n: int) -> TrialResult:
        tried.append(n)
        return result(n)

    opts = BenchOptions(beds=50, find_max=True, workers=2)
    trials = asyncio.run(search(trial, opts, say=lambda _: None))
    assert tried[:4] == [50, 100, 200, 400] and 400 not in tried[4:]
    out = summarize(trials, Settings(threads=1), opts, 0, 2.0)
    assert 200 <= out["max_beds_p99_under_1s"] <= 230 and out["beds"] == out["max_beds_p99_under_1s"]
    assert out["workers"] == 2 and out["threads"] == 1 and len(out["trials"]) == len(tried)
    # one level only, without --find-max
    single = asyncio.run(search(trial, BenchOptions(beds=300), say=lambda _: None))
    assert [t.beds for t in single] == [300] and not single[0].ok(1000.0)
