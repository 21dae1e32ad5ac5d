"""``mirage bench load``: N live beds through broker + worker, windows/s and end-to-end latency.

N simulated bedside monitors publish 12-lead ECG chunks **in real time** (one ``chunk_s`` chunk
per bed every ``chunk_s`` wall seconds, 500 Hz, the wire format of :mod:`stream.core.schema`) into the
broker; ``--workers`` real ``mirage worker`` processes in one consumer group (the recording
subclass of :mod:`stream.tools.validate`, which writes one line per scored window) consume them. Over a
steady period (after ``warmup_s``, which must cover every bed's first window: ``window_s`` plus a
hop or two) we measure:

* **windows/s** scored (expected: beds / hop_s when the worker keeps up);
* **end-to-end latency** per window, p50/p99: from the wall time of the window's last sample
  (the chunk is published the moment that sample is acquired, as a gateway does) to the moment
  the worker's outputs for that window were acknowledged by the broker (the alert decision is on
  the topic when there is one). Windows not scored by the end of the drain count with the time
  they had waited (a lower bound), so a worker that falls behind cannot look fast;
* **consumer lag**: chunks published minus chunks the worker consumed (sampled every second;
  Tansu's end offsets are unreliable, so lag is counted, not queried), and the worker's own
  broker-timestamp-to-agent delay;
* **CPU and memory** of the workers (psutil, summed; 100 % = one core), of the load generator and
  of the embedded broker.

Each trial of the embedded mode starts on fresh services and workers (:func:`run_bench_fresh`:
Tansu's CPU grows with everything it holds); with ``--bootstrap`` the trials share the cluster and
the workers. ``--find-max`` doubles N while p99 stays under ``--p99-bound-ms``, then bisects, and
reports the largest N that met the bound. Signals come from a small pool of synthetic beds generated once
(:mod:`simulators`), looped with per-bed offsets: generating 200 patients' ECG live would cost
more CPU than the worker being measured.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import logging
import math
import os
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable

import numpy as np

from stream.settings import Settings
from stream.tools.loadgen import (
    SignalPool,
    bed_phases,
    expected_window_ends,
    gateway,
)
from stream.tools.stagecosts import call_costs, stage_costs

log = logging.getLogger(__name__)


@dataclass
class TrialResult:
    """One load level: what was offered and what was measured over the steady period."""

    beds: int
    duration_s: float
    steady_s: float
    windows: int
    windows_per_s: float
    expected_windows_per_s: float
    p50_latency_ms: float | None
    p99_latency_ms: float | None
    max_latency_ms: float | None
    unscored_windows: int
    max_lag_chunks: int
    worker_consume_lag_p99_ms: float | None
    worker_cpu_percent: float
    worker_rss_mb: float
    generator_cpu_percent: float
    chunks_sent: int
    load_avg_1m: float = 0.0  # of the whole machine at the end of the trial (other tenants' load shows here)
    workers: int = 1  # worker processes (one consumer group); CPU and RSS above are their sum
    broker_cpu_percent: float | None = None  # the embedded broker's CPU (None with --bootstrap: not on this host)
    host_probe_ms: float | None = None  # CPU ms of a fixed numpy workload just before the trial (host speed)
    broker_cpu_last10s_percent: float | None = None  # the broker's CPU over the trial's last 10 s (it grows with what it holds)
    extra: dict[str, Any] = field(default_factory=dict)

    def ok(self, bound_ms: float) -> bool:
        """Kept up (>= 95 % of the expected windows) with p99 under the bound."""
        return (self.p99_latency_ms is not None and self.p99_latency_ms < bound_ms
                and self.windows_per_s >= 0.95 * self.expected_windows_per_s)


def host_probe_ms(repeats: int = 3) -> float:
    """CPU milliseconds of a fixed single-threaded numpy workload (sort + FFT of 200k samples, x20), best of ``repeats``.

    Run just before each trial while the services and workers are idle, so trials taken at
    different times can be compared (the same work took 80-161 ms on this VM within one evening).
    Lower is a faster host. It did not predict the 200-bed tail (docs/BENCHMARKS.md).
    """
    x = np.random.default_rng(0).standard_normal(200_000)
    best = math.inf
    for _ in range(repeats):
        t = time.process_time()
        for _ in range(20):
            np.sort(x)
            np.fft.rfft(x)
        best = min(best, time.process_time() - t)
    return round(1000.0 * best, 1)


def percentile(xs: list[float], q: float) -> float | None:
    """The q-quantile (0..1) by nearest rank, None when empty."""
    if not xs:
        return None
    s = sorted(xs)
    return float(s[min(len(s) - 1, max(0, math.ceil(q * len(s)) - 1))])


def steady_latencies(records: list[dict[str, Any]], t_from_ns: int, t_to_ns: int, beds: set[str],
                     expected: dict[str, list[int]], drained_ns: int) -> tuple[list[float], int]:
    """Latencies (ms, last sample -> outputs acknowledged) of the windows that end in [t_from, t_to).

    ``expected`` maps a bed to the end times of every window it should have produced in that
    period; windows with no record are counted as unscored with latency ``drained_ns - end``.
    """
    seen: dict[tuple[str, int], float] = {}
    for d in records:
        if d["bed"] in beds and t_from_ns <= int(d["end_ns"]) < t_to_ns:
            seen[(d["bed"], int(d["end_ns"]))] = (int(d["done_ns"]) - int(d["end_ns"])) / 1e6
    lat = list(seen.values())
    unscored = 0
    for bed, ends in expected.items():
        for e in ends:
            if t_from_ns <= e < t_to_ns and (bed, e) not in seen:
                unscored += 1
                lat.append((drained_ns - e) / 1e6)
    return lat, unscored


@dataclass
class BenchOptions:
    """Load-bench settings."""

    beds: int = 50
    duration_s: float = 60.0
    warmup_s: float = 20.0  # past every bed's first window (10 s) and the burst it causes
    chunk_s: float = 0.5
    linger_ms: int = 5  # the simulated gateways' producer linger (batching of their messages)
    backend: str = "torch"
    checkpoint: str | None = None
    find_max: bool = False
    p99_bound_ms: float = 1000.0
    max_beds: int = 800
    profile: Path | None = None
    drain_s: float = 60.0
    synchronized: bool = False
    workers: int = 1  # worker processes in one consumer group (Kafka scale-out on this host)


def worst_exit(codes: list[int]) -> int:
    """The first exit code that is not a clean stop (0 or SIGTERM), else the first one."""
    return next((c for c in codes if c not in (0, -15)), codes[0])


class LoadBench:
    """``opts.workers`` workers in one consumer group, one gateway, several trials."""

    def __init__(self, settings: Settings, opts: BenchOptions, workdir: Path, broker_pid: int | None = None) -> None:
        from stream.tools.validate import RecordingWorkerProcess

        self.broker_pid = broker_pid
        if opts.workers < 1:
            raise ValueError(f"workers={opts.workers} must be >= 1")
        self.settings, self.opts = settings, opts
        self.workers = [RecordingWorkerProcess(settings, workdir / f"worker{i}") for i in range(opts.workers)]
        self.pool = SignalPool()
        self.trial_no = 0

    @property
    def worker(self) -> Any:
        """The first worker (the one profiled)."""
        return self.workers[0]

    async def start(self) -> None:
        for w in self.workers:
            await w.wait_ready(180.0)
        if len(self.workers) > 1:
            # Measure only once the group has settled: every worker owns chunk partitions.
            deadline = time.monotonic() + 120.0
            while sum(1 for w in self.workers if w.read().get("partitions")) < len(self.workers):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"consumer group did not give every worker partitions: "
                                       f"{[w.read().get('partitions') for w in self.workers]}")
                await asyncio.sleep(0.5)

    def stop(self) -> int:
        return worst_exit([w.stop() for w in self.workers])

    def consumed(self) -> int:
        """Chunks consumed by all workers so far."""
        return sum(int(w.read().get("chunks") or 0) for w in self.workers)

    def windows(self) -> list[dict[str, Any]]:
        """Every scored window of every worker (a window scored twice after a rebalance: last wins)."""
        out: dict[tuple[str, int], dict[str, Any]] = {}
        for w in self.workers:
            for d in w.windows():
                out[(d["bed"], int(d["seq"]))] = d
        return list(out.values())

    async def trial(self, beds: int, duration_s: float) -> TrialResult:
        """Run ``beds`` beds for ``duration_s`` and measure the steady period."""
        import psutil
        from aiokafka import AIOKafkaProducer

        from engine.checkpoint import load_checkpoint
        from stream.core.windower import Windower

        self.trial_no += 1
        prefix = f"lb{self.trial_no}-{uuid.uuid4().hex[:4]}"
        cfg = load_checkpoint(self.settings.checkpoint or None).config if not hasattr(self, "cfg") else self.cfg
        self.cfg = cfg
        win, hop = Windower(cfg, hop_s=self.settings.hop_s).window_samples(self.pool.fs)
        probe = host_probe_ms()  # before any CPU accounting starts
        procs = [psutil.Process(w.proc.pid) for w in self.workers]
        me = psutil.Process()
        broker = psutil.Process(self.broker_pid) if self.broker_pid else None
        for proc in [*procs, me, *([broker] if broker else [])]:
            proc.cpu_percent(None)
        broker_cpu: list[tuple[float, float]] = []
        producer = AIOKafkaProducer(**self.settings.kafka_client_kwargs(), acks="all", linger_ms=self.opts.linger_ms,
                                    max_request_size=self.settings.max_message_bytes, enable_idempotence=False)
        await producer.start()
        sent = [0]
        consumed0 = self.consumed()
        t0_ns, t0_mono = time.time_ns(), time.monotonic()
        samples_cpu: list[tuple[float, float, float, float]] = []  # (t, workers' cpu, rss MB, generator cpu)
        lags: list[int] = []
        phases = bed_phases(beds, cfg.hop_s if not self.settings.hop_s else self.settings.hop_s, self.opts.chunk_s, self.opts.synchronized)
        gw = asyncio.create_task(gateway(self.pool, self.settings, prefix, phases, duration_s, self.opts.chunk_s, producer,
                                          sent, t0_ns, t0_mono))
        spy = self._start_profile(duration_s)
        t_start = time.monotonic()
        while not gw.done():
            await asyncio.sleep(1.0)
            t = time.monotonic() - t_start
            samples_cpu.append((t, sum(p.cpu_percent(None) for p in procs), sum(p.memory_info().rss for p in procs) / 2**20,
                                me.cpu_percent(None)))
            lags.append(sent[0] - (self.consumed() - consumed0))
            if broker is not None:
                broker_cpu.append((t, broker.cpu_percent(None)))
        await gw
        await producer.stop()
        # Drain: wait until the worker consumed everything sent (bounded).
        deadline = time.monotonic() + self.opts.drain_s
        while time.monotonic() < deadline and self.consumed() - consumed0 < sent[0]:
            await asyncio.sleep(0.25)
        await asyncio.sleep(1.5)  # the last batch's records
        drained_ns = time.time_ns()
        if spy is not None:
            spy.wait(timeout=60)
        n_samples = int(duration_s / self.opts.chunk_s) * int(round(self.opts.chunk_s * self.pool.fs))
        expected = expected_window_ends(prefix, phases, t0_ns, n_samples, self.pool.fs, win, hop)
        t_from = t0_ns + int(self.opts.warmup_s * 1e9)
        t_to = t0_ns + int(duration_s * 1e9)
        bed_ids = set(expected)
        lat, unscored = steady_latencies(self.windows(), t_from, t_to, bed_ids, expected, drained_ns)
        steady_s = max(1e-9, duration_s - self.opts.warmup_s)
        scored = len(lat) - unscored
        steady_cpu = [s for s in samples_cpu if s[0] >= self.opts.warmup_s] or samples_cpu
        all_stats = [w.read() for w in self.workers]
        stats = {k: max((st.get(k) for st in all_stats if st.get(k) is not None), default=None)
                 for k in ("p50_latency_ms", "p99_latency_ms", "p50_consume_lag_ms", "p99_consume_lag_ms")}
        res = TrialResult(
            beds=beds, duration_s=duration_s, steady_s=steady_s, windows=scored, windows_per_s=round(scored / steady_s, 2),
            expected_windows_per_s=round(sum(t_from <= e < t_to for ends in expected.values() for e in ends) / steady_s, 2),
            p50_latency_ms=_r(percentile(lat, 0.50)), p99_latency_ms=_r(percentile(lat, 0.99)), max_latency_ms=_r(max(lat) if lat else None),
            unscored_windows=unscored, max_lag_chunks=max(lags) if lags else 0,
            worker_consume_lag_p99_ms=stats.get("p99_consume_lag_ms"),
            worker_cpu_percent=round(float(np.mean([s[1] for s in steady_cpu])) if steady_cpu else 0.0, 1),
            worker_rss_mb=round(max((s[2] for s in samples_cpu), default=0.0), 1),
            generator_cpu_percent=round(float(np.mean([s[3] for s in steady_cpu])) if steady_cpu else 0.0, 1),
            chunks_sent=sent[0],
            load_avg_1m=round(os.getloadavg()[0], 2),
            workers=len(self.workers), extra=stats, host_probe_ms=probe,
            broker_cpu_percent=round(float(np.mean([c for t, c in broker_cpu if t >= self.opts.warmup_s] or [c for _, c in broker_cpu])), 1)
            if broker_cpu else None,
            broker_cpu_last10s_percent=(round(float(np.mean([c for t, c in broker_cpu if t >= broker_cpu[-1][0] - 10.0])), 1)
                                        if broker_cpu else None))
        log.info("trial %d: %s", self.trial_no, json.dumps(dataclasses.asdict(res)))
        return res

    def _start_profile(self, duration_s: float) -> subprocess.Popen | None:
        """py-spy the worker over the steady period (``--profile``): a speedscope/flamegraph file."""
        if self.opts.profile is None:
            return None
        import shutil

        exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        out = self.opts.profile
        fmt = "speedscope" if out.suffix == ".json" else ("raw" if out.suffix == ".txt" else "flamegraph")
        cmd = [exe, "record", "--pid", str(self.worker.proc.pid), "--duration", str(max(1, int(duration_s - self.opts.warmup_s))),
               "--rate", "50", "--format", fmt, "--output", str(out), "--nonblocking", "--idle"]
        delay = f"sleep {self.opts.warmup_s:.0f}; "
        try:
            return subprocess.Popen(["bash", "-c", delay + " ".join(cmd)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        except OSError as exc:
            log.warning("py-spy not started: %s", exc)
            return None


def _r(v: float | None) -> float | None:
    return None if v is None else round(v, 1)


async def search(trial: Callable[[int], Awaitable[TrialResult]], opts: BenchOptions, say: Any = print) -> list[TrialResult]:
    """One trial at ``opts.beds``, or the ``--find-max`` search (double while OK, then bisect to ~10 %)."""
    trials: list[TrialResult] = []

    async def run(n: int) -> bool:
        trials.append(await trial(n))
        say(_line(trials[-1], opts.p99_bound_ms))
        return trials[-1].ok(opts.p99_bound_ms)

    if not opts.find_max:
        await run(opts.beds)
        return trials
    good, bad, n = 0, 0, max(1, opts.beds)
    while n <= opts.max_beds:  # double while the bound holds
        if await run(n):
            good, n = n, n * 2
        else:
            bad = n
            break
    while bad and bad - good > max(2, good // 10):  # bisect to ~10 %
        n = (good + bad) // 2
        if await run(n):
            good = n
        else:
            bad = n
    return trials


def summarize(trials: list[TrialResult], settings: Settings, opts: BenchOptions, code: int | None, hop_s: float | None) -> dict[str, Any]:
    """The JSON line: the best trial within the bound (else the last) plus every trial."""
    headline = max((t for t in trials if t.ok(opts.p99_bound_ms)), key=lambda t: t.beds, default=trials[-1] if trials else None)
    out: dict[str, Any] = dataclasses.asdict(headline) if headline else {}
    out.pop("extra", None)
    out.update({"backend": settings.backend, "hop_s": settings.hop_s or hop_s,
                "p99_bound_ms": opts.p99_bound_ms, "worker_exit": code, "cpu_count": os.cpu_count(),
                "synchronized": opts.synchronized, "workers": opts.workers, "threads": settings.threads,
                "chunk_s": opts.chunk_s, "gateway_linger_ms": opts.linger_ms,
                "trials": [{k: v for k, v in dataclasses.asdict(t).items() if k != "extra"} for t in trials]})
    if opts.find_max:
        ok = [t.beds for t in trials if t.ok(opts.p99_bound_ms)]
        out["max_beds_p99_under_bound"] = max(ok) if ok else 0
        if opts.p99_bound_ms == 1000.0:
            out["max_beds_p99_under_1s"] = out["max_beds_p99_under_bound"]
    return out


async def run_bench(settings: Settings, opts: BenchOptions, workdir: Path, say: Any = print,
                    broker_pid: int | None = None) -> dict[str, Any]:
    """Every trial against the same running services and workers (``--bootstrap``, tests)."""
    bench = LoadBench(settings, opts, workdir, broker_pid=broker_pid)
    trials: list[TrialResult] = []
    code: int | None = None
    try:
        await bench.start()
        trials = await search(lambda n: bench.trial(n, opts.duration_s), opts, say)
    finally:
        code = await asyncio.to_thread(bench.stop)
    cfg = getattr(bench, "cfg", None)
    return summarize(trials, settings, opts, code, cfg.hop_s if cfg is not None else None)


async def run_bench_fresh(opts: BenchOptions, workdir: Path, settings_kw: dict[str, Any], say: Any = print) -> dict[str, Any]:
    """Each trial on freshly started embedded services and workers.

    Tansu keeps every message in memory and its CPU grows with what it holds (measured: from 19 %
    to 37 % of a core within one 40 s trial at 200 beds), so a search that reused one broker would
    measure the broker's history, not the load level. A real Kafka cluster's
    retention does not have this; with ``--bootstrap`` trials share the cluster.
    """
    from deploy.services import EmbeddedServices

    codes: list[int] = []
    last: dict[str, Any] = {}

    async def trial(n: int) -> TrialResult:
        k = len(codes) + 1
        # Started in a thread: creating the topics runs its own event loop.
        svc = await asyncio.to_thread(EmbeddedServices(workdir=workdir / f"services{k}").start)
        try:
            settings = Settings.load(env={}, bootstrap_servers=svc.bootstrap, redis_url=svc.redis_url,
                                     consumer_group=f"mirage-loadbench-{uuid.uuid4().hex[:8]}", **settings_kw)
            bench = LoadBench(settings, opts, workdir / f"trial{k}", broker_pid=svc.broker.pid if svc.broker else None)
            try:
                await bench.start()
                res = await bench.trial(n, opts.duration_s)
            finally:
                codes.append(await asyncio.to_thread(bench.stop))
            last.update(settings=settings, cfg=getattr(bench, "cfg", None))
            return res
        finally:
            await asyncio.to_thread(svc.stop)

    trials = await search(trial, opts, say)
    code = worst_exit(codes) if codes else None
    cfg = last.get("cfg")
    settings = last.get("settings") or Settings.load(env={}, **settings_kw)
    return summarize(trials, settings, opts, code, cfg.hop_s if cfg is not None else None)


def plot_trials(series: dict[str, list[dict[str, Any]]], bound_ms: float, path: Path, title: str = "") -> Path:
    """Latency p50/p99 (log scale) and worker CPU against beds, one point per trial, per backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    for i, (label, trials) in enumerate(series.items()):
        ts = sorted(trials, key=lambda t: t["beds"])
        beds = [t["beds"] for t in ts]
        ax.plot(beds, [t["p50_latency_ms"] for t in ts], "o-", c=f"C{i}", label=f"{label} p50")
        ax.plot(beds, [t["p99_latency_ms"] for t in ts], "s--", c=f"C{i}", label=f"{label} p99")
        ax2.plot(beds, [t["worker_cpu_percent"] for t in ts], "^-", c=f"C{i}", label=label)
    ax.axhline(bound_ms, c="C3", ls=":", lw=1, label=f"bound {bound_ms:.0f} ms")
    ax.set_yscale("log")
    ax.set_xlabel("beds (real time)")
    ax.set_ylabel("last sample -> decision (ms)")
    ax.legend(fontsize=7)
    ax2.set_ylim(0, 200)
    ax2.axhline(100 * (os.cpu_count() or 1), c="grey", ls=":", lw=1)
    ax2.set_xlabel("beds (real time)")
    ax2.set_ylabel("worker CPU (% of one core)")
    ax2.legend(fontsize=7)
    fig.suptitle(title or "mirage bench load", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _line(t: TrialResult, bound: float) -> str:
    return (f"beds {t.beds:4d} ({t.workers} worker{'s' if t.workers > 1 else ''}): {t.windows_per_s:7.2f} windows/s "
            f"(expected {t.expected_windows_per_s:.2f}), latency p50 "
            f"{t.p50_latency_ms} ms p99 {t.p99_latency_ms} ms, unscored {t.unscored_windows}, lag max {t.max_lag_chunks} chunks, "
            f"worker CPU {t.worker_cpu_percent}% RSS {t.worker_rss_mb} MB, generator CPU {t.generator_cpu_percent}%, "
            f"broker CPU {t.broker_cpu_percent}% (last 10 s {t.broker_cpu_last10s_percent}%), "
            f"load avg {t.load_avg_1m}, host probe {t.host_probe_ms} ms "
            f"-> {'OK' if t.ok(bound) else 'over bound / behind'}")


def bench_main(argv: list[str]) -> int:
    """``mirage bench load``: see the module docstring."""
    p = argparse.ArgumentParser(
        prog="mirage bench load",
        description="N simulated beds publish 12-lead ECG in real time into the broker; one mirage worker scores them. "
                    "Measured over the steady period: windows/s, end-to-end latency p50/p99 (last sample of a window -> "
                    "its outputs acknowledged on the alerts topic), consumer lag, worker CPU and memory. JSON line last.",
        epilog="Example: mirage bench load --beds 100 --duration 60;  mirage bench load --find-max --beds 25 --duration 40. "
               "Without --bootstrap an embedded broker and Redis are started. See docs/BENCHMARKS.md.")
    p.add_argument("--beds", type=int, default=50, help="beds (with --find-max: the first level tried; default 50)")
    p.add_argument("--duration", type=float, default=60.0, help="seconds of real time per trial (default 60)")
    p.add_argument("--warmup", type=float, default=20.0,
                   help="seconds at the start of a trial not measured (default 20: every bed's first window completes "
                        "10-12 s in, all beds at once, a start-up burst that is not the steady state)")
    p.add_argument("--find-max", action="store_true", help="search the largest number of beds with p99 under --p99-bound-ms")
    p.add_argument("--p99-bound-ms", type=float, default=1000.0, help="latency bound for --find-max (default 1000)")
    p.add_argument("--max-beds", type=int, default=800, help="upper limit of the --find-max search (default 800)")
    p.add_argument("--backend", default="torch", help="inference backend of the worker (default torch)")
    p.add_argument("--checkpoint", help="checkpoint (default: the shipped one)")
    p.add_argument("--workers", type=int, default=1,
                   help="worker processes in one consumer group (Kafka scale-out on this host; the chunk partitions, "
                        "and with them the beds, are split between them; CPU and RSS are reported summed). Default 1")
    p.add_argument("--threads", type=int, default=0,
                   help="intra-op threads of each worker's model backend (default: the backend's own, all cores, with one "
                        "worker; cores / workers with several)")
    p.add_argument("--no-st", action="store_true", help="workers without the ST measurement stage (st_enabled=false), to see its share of the load")
    p.add_argument("--fetch-max-wait-ms", type=int, default=0,
                   help="the workers' Kafka fetch_max_wait_ms (default: the settings' 100). Tansu, the embedded broker, "
                        "may hold a fetch this long and its cost per fetch grows with what it holds: see docs/BENCHMARKS.md")
    p.add_argument("--fetch-min-bytes", type=int, default=0,
                   help="the workers' Kafka fetch_min_bytes (default: the settings' 1): the broker holds a fetch until this "
                        "many bytes arrived or fetch_max_wait_ms passed - fewer, bigger fetches")
    p.add_argument("--max-batch", type=int, default=0, help="worker micro-batch size (default: the settings' 16; with --stages the batch measured, default 16)")
    p.add_argument("--profile", help="write a py-spy profile of the worker over the steady period (.svg flamegraph, .json speedscope, .txt collapsed)")
    p.add_argument("--chunk-s", type=float, default=0.5,
                   help="seconds of ECG per message each simulated gateway sends (default 0.5; fewer, larger messages "
                        "cost the broker and the workers' Kafka clients less)")
    p.add_argument("--gateway-linger-ms", type=int, default=5,
                   help="linger_ms of the simulated gateways' Kafka producer (default 5, the Java client's default): how "
                        "long it collects messages into one batch. Counted in the latency. The embedded broker's cost per "
                        "fetch grows with the batches it stores, so fewer, larger batches cost it less: see docs/BENCHMARKS.md")
    p.add_argument("--synchronized", action="store_true",
                   help="start every bed at the same instant (all windows complete together: worst-case burst); "
                        "default: bed starts spread evenly over one hop, as unsynchronised monitors are")
    p.add_argument("--bootstrap", help="use this Kafka cluster (with --redis-url) instead of embedded services")
    p.add_argument("--redis-url", help="Redis URL with --bootstrap")
    p.add_argument("--workdir", help="keep each trial's worker logs, stats and per-window records (windows.jsonl) here "
                                     "instead of a temporary directory")
    p.add_argument("--plot", help="write a PNG of latency p50/p99 and worker CPU against beds (one point per trial)")
    p.add_argument("--stages", action="store_true",
                   help="only measure, in this process (no broker): the CPU ms per window of each worker stage, and the wall "
                        "ms of a processing call that completes 64 windows at once, at --max-batch (pipelined micro-batches) "
                        "against one batch of 64 (call_speedup); then exit")
    args = p.parse_args(argv)
    if args.stages:
        out = stage_costs(batch=args.max_batch or 16, backend=args.backend, checkpoint=args.checkpoint)
        out.update(call_costs(args.max_batch or Settings().max_batch, backend=args.backend, checkpoint=args.checkpoint,
                              threads=args.threads or 1))
        print(json.dumps(out))
        return 0
    if args.beds < 1 or args.duration <= args.warmup or args.warmup < 0:
        p.error(f"--beds {args.beds} must be >= 1 and --duration {args.duration} > --warmup {args.warmup} >= 0")
    if not 0 < args.chunk_s <= 10 or abs(args.chunk_s * 500 - round(args.chunk_s * 500)) > 1e-6:
        p.error(f"--chunk-s {args.chunk_s} must be in (0, 10] s and a whole number of samples at 500 Hz")
    if not 0 <= args.gateway_linger_ms <= 1000:
        p.error(f"--gateway-linger-ms {args.gateway_linger_ms} must be in [0, 1000]")
    if args.workers < 1 or args.threads < 0:
        p.error(f"--workers {args.workers} must be >= 1 and --threads {args.threads} >= 0")
    if bool(args.bootstrap) != bool(args.redis_url):
        p.error("--bootstrap and --redis-url go together")
    opts = BenchOptions(beds=args.beds, duration_s=args.duration, warmup_s=args.warmup, backend=args.backend,
                        checkpoint=args.checkpoint, find_max=args.find_max, p99_bound_ms=args.p99_bound_ms,
                        max_beds=args.max_beds, synchronized=args.synchronized, workers=args.workers, chunk_s=args.chunk_s,
                        linger_ms=args.gateway_linger_ms,
                        profile=Path(args.profile).resolve() if args.profile else None)
    extra: dict[str, Any] = {"backend": args.backend, "checkpoint": args.checkpoint or ""}
    if args.max_batch:
        extra["max_batch"] = args.max_batch
    if args.fetch_max_wait_ms:
        extra["fetch_max_wait_ms"] = args.fetch_max_wait_ms
    if args.fetch_min_bytes:
        extra["fetch_min_bytes"] = args.fetch_min_bytes
    if args.no_st:
        extra["st_enabled"] = False
    threads = args.threads or (max(1, (os.cpu_count() or 1) // args.workers) if args.workers > 1 else 0)
    if threads:
        extra["threads"] = threads
    from trt.backends import build_offline

    try:
        build_offline(args.backend, args.checkpoint)  # the workers only load a built artefact
        with (contextlib.nullcontext(str(Path(args.workdir).resolve())) if args.workdir
              else tempfile.TemporaryDirectory(prefix="mirage-loadbench-")) as tmp:
            if args.bootstrap:
                settings = Settings.load(bootstrap_servers=args.bootstrap, redis_url=args.redis_url,
                                         consumer_group=f"mirage-loadbench-{uuid.uuid4().hex[:8]}", **extra)
                out = asyncio.run(run_bench(settings, opts, Path(tmp)))
            else:
                out = asyncio.run(run_bench_fresh(opts, Path(tmp), extra))
    except (RuntimeError, OSError) as exc:
        print(f"mirage bench load failed: {exc}", file=sys.stderr)
        return 1
    if args.plot and out.get("trials"):
        plot_trials({args.backend: out["trials"]}, args.p99_bound_ms, Path(args.plot),
                    f"mirage bench load, backend {args.backend}, {os.cpu_count()} CPUs")
    print(json.dumps(out))
    return 0
