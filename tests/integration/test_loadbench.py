"""``mirage bench load`` in miniature: a few real-time beds through the real broker and worker."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from stream.settings import Settings
from stream.tools.loadbench import BenchOptions, run_bench

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("workers", [1, 2])
def test_a_short_load_trial_measures_every_window(services, unique, tmp_path: Path, workers: int) -> None:
    """With two workers the group splits the two chunk partitions; every window is still measured once."""
    import asyncio

    from deploy.services import create_topics

    s = Settings(bootstrap_servers=services.bootstrap, redis_url=services.redis_url, topic_chunks=f"lchunks-{unique}",
                 topic_labs=f"llabs-{unique}", topic_alerts=f"lalerts-{unique}", topic_deadletter=f"ldl-{unique}",
                 consumer_group=f"lg-{unique}", threads=1 if workers > 1 else 0)
    create_topics(services.bootstrap, {s.topic_chunks: 2, s.topic_labs: 1, s.topic_alerts: 1, s.topic_deadletter: 1})
    lines: list[str] = []
    opts = BenchOptions(beds=4, duration_s=16.0, warmup_s=11.0, drain_s=20.0, workers=workers)
    out = asyncio.run(run_bench(s, opts, tmp_path, say=lines.append, broker_pid=services.broker.pid))
    assert out["workers"] == workers and out["trials"][0]["workers"] == workers
    # 4 beds, windows ending in [11, 16) s of each bed's phase-shifted clock: 12 and 14 s (+ 16 s for late phases)
    assert out["beds"] == 4 and out["unscored_windows"] == 0
    assert out["windows"] >= 8 and out["windows_per_s"] == pytest.approx(out["expected_windows_per_s"])
    assert 0 < out["p50_latency_ms"] <= out["p99_latency_ms"] < 10_000
    assert out["worker_cpu_percent"] > 0 and out["worker_rss_mb"] > 50 and out["broker_cpu_percent"] is not None
    assert out["broker_cpu_last10s_percent"] is not None and (out["chunk_s"], out["gateway_linger_ms"]) == (0.5, 5)
    assert 1 < out["host_probe_ms"] < 10_000 and "host probe" in lines[0]
    assert out["chunks_sent"] == 4 * (32 + 1)  # 0.5 s chunks for 16 s + end of stream
    assert out["worker_exit"] in (0, -15) and len(out["trials"]) == 1 and len(lines) == 1


def _bench(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mirage", "bench", *args], capture_output=True, text=True, cwd=REPO, timeout=60)


@pytest.mark.parametrize("args,named", [
    (("--duration", "5", "--warmup", "10"), "--duration"),
    (("--workers", "0"), "--workers 0"),
    (("--chunk-s", "0.0031"), "--chunk-s 0.0031"),
    (("--gateway-linger-ms", "-1"), "--gateway-linger-ms -1"),
])
def test_bench_load_rejects_bad_arguments_naming_them(args: tuple[str, ...], named: str) -> None:
    bad = _bench("load", *args)
    assert bad.returncode == 2 and named in bad.stderr


def test_bench_load_stages_passes_its_flags_and_prints_one_json_line(monkeypatch, capsys) -> None:
    """``mirage bench load --stages``: the backend, checkpoint, batch and threads reach the two
    in-process measurements, and their results are the JSON line printed last (no broker started)."""
    import json

    from stream.tools import loadbench

    calls: dict[str, dict] = {}

    def stage_costs(**kw):
        calls["stage"] = kw
        return {"stage_ms": 1.5}

    def call_costs(max_batch, **kw):
        calls["call"] = {"max_batch": max_batch, **kw}
        return {"call_ms": 2.5}

    monkeypatch.setattr(loadbench, "stage_costs", stage_costs)
    monkeypatch.setattr(loadbench, "call_costs", call_costs)
    rc = loadbench.bench_main(["--stages", "--max-batch", "4", "--backend", "onnxruntime", "--checkpoint", "c.pt", "--threads", "3"])
    assert rc == 0
    assert calls["stage"] == {"batch": 4, "backend": "onnxruntime", "checkpoint": "c.pt"}
    assert calls["call"] == {"max_batch": 4, "backend": "onnxruntime", "checkpoint": "c.pt", "threads": 3}
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == {"stage_ms": 1.5, "call_ms": 2.5}


def test_call_costs_measures_pipelined_and_one_batch_calls() -> None:
    """The in-process call bench scores every window of every call with the real model (no broker)."""
    from stream.tools.stagecosts import call_costs

    out = call_costs(max_batch=2, windows=4, calls=2, backend="torch")
    assert (out["call_windows"], out["max_batch"]) == (4, 2)
    assert out["call_ms"] > 0 and out["call_ms_one_batch"] > 0
    # call_speedup is the ratio of the unrounded medians; the printed ms are rounded to 0.1
    assert out["call_speedup"] == pytest.approx(out["call_ms_one_batch"] / out["call_ms"], rel=0.01, abs=0.01)


def test_broker_bench_runs_each_configuration_on_a_fresh_broker_and_reads_back_every_message() -> None:
    """``mirage bench broker`` in miniature: two producer lingers, every message produced is consumed."""
    from stream.tools.brokerbench import run

    lines: list[str] = []
    out = run([5, 50], [20], rate=50, size=1000, keys=10, partitions=2, duration_s=4.0, say=lines.append)
    assert [(r["linger_ms"], r["fetch_max_wait_ms"]) for r in out["runs"]] == [(5, 20), (50, 20)] and len(lines) == 2
    for r in out["runs"]:
        assert r["produced"] >= 150 and r["consumed"] == r["produced"], r
        assert r["broker_cpu_per_10s"] and r["broker_cpu_last10s_percent"] >= 0
    assert out["runs"][0]["last10s_ratio_to_baseline"] == 1.0 or out["runs"][0]["broker_cpu_last10s_percent"] == 0


@pytest.mark.parametrize("args,named", [(("--linger-ms", "5,x"), "--linger-ms '5,x'"), (("--rate", "0"), "--rate 0")])
def test_bench_broker_rejects_bad_values_naming_them(args: tuple[str, ...], named: str) -> None:
    bad = _bench("broker", *args)
    assert bad.returncode == 2 and named in bad.stderr


def test_bench_lists_the_broker_bench() -> None:
    ok = _bench("--help")
    assert ok.returncode == 0 and "broker" in ok.stdout


def test_stage_costs_include_the_st_stage() -> None:
    """Issue #19: the ST measurement is a stage of its own (CPU ms per window) and counts in the total."""
    from stream.tools.stagecosts import stage_costs

    out = stage_costs(batch=2, repeats=1, backend="torch")
    assert out["st_ms"] > 0
    parts = ("to_model_rate_ms", "quality_flags_ms", "model_inputs_ms", "predict_ms", "st_ms")
    assert out["total_ms"] == pytest.approx(sum(out[k] for k in parts), abs=0.05)
