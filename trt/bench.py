"""``mirage bench infer``: every available inference backend on the same windows, side by side.

One run measures, on identical inputs (real PTB-XL windows through ``engine.pipeline.model_inputs``
when the sample is present, else synthetic ones): throughput (windows/s) and p50/p99 latency of a
``predict`` call per backend and batch size, and the accuracy cost of each backend as the AUROC
change against the fp32 PyTorch baseline on the PTB-XL MI labels (plus the largest probability
difference), and its batch invariance: the max |probability difference| between scoring 16 windows
as one batch and one at a time (above 1e-4 the backend is flagged: a window's probability then
depends on which other beds share its micro-batch, unfit for the live stream). Backends that
cannot run here are listed with the reason. The last line is JSON with ``baseline_windows_per_s``,
``best_windows_per_s``, ``best_backend``, ``speedup`` and ``auroc_delta`` (of the best backend
within the AUROC budget), and ``best_batch_invariant_backend`` with its own ``..._speedup`` and
``..._auroc_delta`` (the best one the stream may use).

Timings on a shared machine move with the load of other processes: the JSON records the load
average before and after, and backends are timed in interleaved rounds so a burst of load hits
all of them rather than one.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from engine.data.calibration import eval_inputs, shared_ptbxl

log = logging.getLogger(__name__)

CPU_CANDIDATES: tuple[str, ...] = (
    "onnxruntime", "onnxruntime-opt", "onnxruntime-int8", "onnxruntime-int8-static", "torch-compile", "torch-bf16",
)
GPU_CANDIDATES: tuple[str, ...] = ("torch-cuda", "torch-cuda-bf16", "tensorrt")
BASELINE = "torch"
ROUNDS = 5  # timing slices per backend and batch size
# Batch invariance: the first INVARIANCE_WINDOWS windows scored as one batch vs one at a time. A
# backend serves the live stream only when a window's probability does not depend on its
# batch-mates; the stream's live-vs-offline parity target on one backend is 1e-4.
INVARIANCE_WINDOWS = 16
INVARIANCE_TOL = 1e-4


@dataclass
class BackendResult:
    """One backend's numbers."""

    name: str
    auroc: float | None = None
    auroc_delta: float | None = None
    max_prob_diff: float | None = None
    per_batch: dict[int, dict[str, float]] = field(default_factory=dict)  # batch -> windows_per_s, p50_ms, p99_ms
    skipped: str | None = None
    batch_invariance: float | None = None  # max |p(batched) - p(one at a time)|

    @property
    def batch_invariant(self) -> bool | None:
        return None if self.batch_invariance is None else self.batch_invariance <= INVARIANCE_TOL

    def best_windows_per_s(self) -> float:
        return max((r["windows_per_s"] for r in self.per_batch.values()), default=0.0)


def auroc(scores: np.ndarray, labels: np.ndarray) -> float | None:
    """AUROC of ``scores`` (``engine.metrics.auroc``), or ``None`` when only one class is present."""
    from engine.metrics import auroc as _auroc

    labels = np.asarray(labels).astype(int)
    if labels.min() == labels.max():
        return None
    return _auroc(labels, np.asarray(scores, dtype=np.float64))


def _batches(inputs: Any, batch: int, n: int):
    start = 0
    while True:
        idx = np.arange(start, start + batch) % n
        start = (start + batch) % n
        yield inputs.ecg[idx], inputs.image[idx], inputs.labs[idx], inputs.lab_mask[idx]


def all_probs(predictor: Any, inputs: Any, batch: int = 32) -> np.ndarray:
    """MI probability of every window, in order."""
    out = []
    for s in range(0, len(inputs.ecg), batch):
        sl = slice(s, s + batch)
        out.append(predictor.predict(inputs.ecg[sl], inputs.image[sl], inputs.labs[sl], inputs.lab_mask[sl]).probs)
    return np.concatenate(out)


def batch_invariance(predictor: Any, inputs: Any, n: int = INVARIANCE_WINDOWS) -> float:
    """Max |probability| difference between scoring the first ``n`` windows as one batch and one at a time."""
    n = min(n, len(inputs.ecg))
    together = predictor.predict(inputs.ecg[:n], inputs.image[:n], inputs.labs[:n], inputs.lab_mask[:n]).probs
    alone = np.concatenate([
        predictor.predict(inputs.ecg[i:i + 1], inputs.image[i:i + 1], inputs.labs[i:i + 1], inputs.lab_mask[i:i + 1]).probs
        for i in range(n)
    ])
    return float(np.max(np.abs(together - alone)))


def measure(predictor: Any, inputs: Any, batch: int, seconds: float, *, warmup: int = 0) -> list[float]:
    """Latencies (s) of back-to-back ``predict`` calls at one batch size for about ``seconds`` (>= 3 calls)."""
    feed = _batches(inputs, batch, len(inputs.ecg))
    for _ in range(warmup):
        predictor.predict(*next(feed))
    lat: list[float] = []
    t_end = time.perf_counter() + seconds
    while time.perf_counter() < t_end or len(lat) < 3:
        args = next(feed)
        t0 = time.perf_counter()
        predictor.predict(*args)
        lat.append(time.perf_counter() - t0)
    return lat


def latency_stats(latencies: Sequence[float], batch: int) -> dict[str, float]:
    """Windows/s (windows over summed call time) and p50/p99 call latency in ms."""
    lat_ms = np.asarray(latencies) * 1e3
    return {
        "windows_per_s": round(batch * len(lat_ms) / (float(np.sum(lat_ms)) / 1e3), 2),
        "p50_ms": round(float(np.percentile(lat_ms, 50)), 2),
        "p99_ms": round(float(np.percentile(lat_ms, 99)), 2),
        "calls": int(len(lat_ms)),
    }


def _load(checkpoint: str | None, preset: str | None) -> tuple[Any, str]:
    from engine.checkpoint import load_checkpoint

    if preset and not checkpoint:
        return random_init_checkpoint(preset), f"random-init {preset}"
    try:
        return load_checkpoint(checkpoint), str(checkpoint or "shipped default")
    except Exception as exc:  # noqa: BLE001 - missing or unreadable checkpoint: fall back, loudly
        if checkpoint:
            raise
        log.warning("no usable shipped checkpoint (%s); benchmarking a random-init 'default' model", exc)
        return random_init_checkpoint("default"), "random-init default"


def load_checkpoint_or_preset(path: str | None, preset: str | None = None) -> Any:
    """The checkpoint at ``path`` (None = the shipped one), or a random-init ``preset`` model when no path is given."""
    from engine.checkpoint import load_checkpoint

    if path is None and preset:
        log.warning("using a random-init %r model (no --checkpoint)", preset)
        return random_init_checkpoint(preset)
    return load_checkpoint(path)


def random_init_checkpoint(preset: str, seed: int = 0) -> Any:
    """A ``LoadedCheckpoint`` of a freshly initialised model, saved in the cache dir and loaded back.

    The file stays (``$MIRAGE_CACHE_DIR``) so every backend, the torch baseline included, can be
    built from the same checkpoint path.
    """
    import torch

    from engine.checkpoint import load_checkpoint, save_checkpoint
    from engine.config import get_preset
    from engine.model import Mirage
    from trt.artifacts import cache_dir

    path = cache_dir() / f"random-{preset}-seed{seed}.pt"
    if path.is_file():  # same file, same SHA-256: the cached ONNX export is reused
        try:
            return load_checkpoint(path)
        except Exception as exc:  # noqa: BLE001 - e.g. the architecture changed since: make a new one
            log.info("re-creating %s (%s)", path.name, exc)
    cfg = get_preset(preset)
    torch.manual_seed(seed)
    model = Mirage(cfg).eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(path, model, cfg, threshold=0.5, metrics={})
    return load_checkpoint(path)


def _not_worth_it(name: str) -> str | None:
    """Why a backend is left out of a default run on this machine (``--backends`` overrides)."""
    if name == "torch-bf16":
        from trt.torch_backends import cpu_has_native_bf16

        if not cpu_has_native_bf16():
            return "no native bf16 on this CPU (no avx512_bf16/amx_bf16): emulated bf16 is slower than fp32; name it in --backends to time it anyway"
    return None


COMPARE_PREFIX = "compare:"  # row of --compare: another checkpoint on the baseline backend


def run_bench(
    loaded: Any,
    inputs: Any,
    labels: np.ndarray | None,
    *,
    backends: Sequence[str],
    batches: Sequence[int],
    seconds: float,
    threads: int | None,
    explicit: bool = False,
    compare: Any = None,
) -> list[BackendResult]:
    """Create every backend, score it against the baseline, time it; returns baseline first.

    ``compare`` (a loaded checkpoint): also time that checkpoint on the baseline backend, in the same
    interleaved rounds, as the row ``COMPARE_PREFIX + <file name>`` (e.g. the previously shipped model
    beside a new one); it is never a candidate for 'best'.
    """
    from trt.backends import create, make_predictor, unavailable_reason

    results: list[BackendResult] = []
    predictors: dict[str, Any] = {}
    base = make_predictor(BASELINE, loaded.path, threads=threads)
    predictors[BASELINE] = base
    base_probs = all_probs(base, inputs)
    base_auc = auroc(base_probs, labels) if labels is not None else None
    results.append(BackendResult(BASELINE, auroc=base_auc, auroc_delta=0.0 if base_auc is not None else None, max_prob_diff=0.0,
                                 batch_invariance=batch_invariance(base, inputs)))

    def scored(name: str, pred: Any, probs: np.ndarray) -> BackendResult:
        auc = auroc(probs, labels) if labels is not None else None
        predictors[name] = pred
        return BackendResult(name, auroc=auc, auroc_delta=(auc - base_auc) if auc is not None and base_auc is not None else None,
                             max_prob_diff=float(np.max(np.abs(probs - base_probs))), batch_invariance=batch_invariance(pred, inputs))

    if compare is not None:
        other = make_predictor(BASELINE, compare.path, threads=threads)
        results.append(scored(COMPARE_PREFIX + Path(compare.path).name, other, all_probs(other, inputs)))
    for name in backends:
        reason = unavailable_reason(name) or (None if explicit else _not_worth_it(name))
        if reason:
            results.append(BackendResult(name, skipped=reason))
            continue
        opts: dict[str, Any] = {"threads": threads} if threads and name != "tensorrt" else {}
        try:
            t0 = time.perf_counter()
            pred = create(name, loaded, build=True, **opts)
            probs = all_probs(pred, inputs)  # also warms up / compiles
            log.info("%s ready in %.1f s", name, time.perf_counter() - t0)
        except Exception as exc:  # noqa: BLE001 - a failing backend is reported, the bench goes on
            results.append(BackendResult(name, skipped=f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"))
            continue
        results.append(scored(name, pred, probs))
    by_name = {r.name: r for r in results}
    from tqdm import tqdm

    # Interleaved in rounds (every backend gets a slice of each round at each batch size) so a burst
    # of load from other processes hits all backends alike instead of whichever ran then.
    rounds = max(1, min(ROUNDS, int(seconds / 0.5)))
    with tqdm(total=len(batches) * rounds * len(predictors), desc="timing", unit="slice", disable=None) as bar:
        for batch in batches:
            lat: dict[str, list[float]] = {name: [] for name in predictors}
            for pred in predictors.values():
                measure(pred, inputs, batch, 0.0, warmup=2)
            for _ in range(rounds):
                for name, pred in predictors.items():
                    lat[name] += measure(pred, inputs, batch, seconds / rounds)
                    bar.update()
            for name in predictors:
                by_name[name].per_batch[batch] = latency_stats(lat[name], batch)
    return results


def format_table(results: Sequence[BackendResult], batches: Sequence[int]) -> str:
    """A plain-text table: one row per backend, windows/s and p50/p99 per batch size."""
    head = f"{'backend':<24}{'AUROC':>8}{'dAUROC':>9}{'max|dp|':>9}{'batch|dp|':>10}" + "".join(f"{'b=' + str(b) + ' win/s (p50/p99 ms)':>30}" for b in batches)
    lines = [head, "-" * len(head)]
    for r in results:
        if r.skipped:
            lines.append(f"{r.name:<24} skipped: {r.skipped}")
            continue
        fmt = lambda v, f: "-" if v is None else format(v, f)  # noqa: E731
        inv = fmt(r.batch_invariance, ".1e") + ("" if r.batch_invariant in (None, True) else "!")
        row = f"{r.name:<24}{fmt(r.auroc, '.4f'):>8}{fmt(r.auroc_delta, '+.4f'):>9}{fmt(r.max_prob_diff, '.1e'):>9}{inv:>10}"
        for b in batches:
            m = r.per_batch.get(b)
            cell = f"{m['windows_per_s']:.1f} ({m['p50_ms']:.0f}/{m['p99_ms']:.0f})" if m else "-"
            row += f"{cell:>30}"
        lines.append(row)
    lines.append(f"batch|dp|: max |p(batch of {INVARIANCE_WINDOWS}) - p(one at a time)|; '!' = above {INVARIANCE_TOL:g}, "
                 "not batch-invariant: a window's probability depends on its batch-mates (not for the live stream)")
    return "\n".join(lines)


def summary(results: Sequence[BackendResult], *, max_auroc_change: float) -> dict[str, Any]:
    """The JSON summary: best backend among those within the AUROC budget, and the best of those
    that are also batch-invariant (the only ones fit for the live stream)."""
    base = results[0]
    eligible = [
        r for r in results[1:]
        if not r.skipped and not r.name.startswith(COMPARE_PREFIX) and (r.auroc_delta is None or abs(r.auroc_delta) <= max_auroc_change)
    ]
    best = max([base, *eligible], key=BackendResult.best_windows_per_s)
    stream_ok = [r for r in [base, *eligible] if r.batch_invariant is not False]
    best_inv = max(stream_ok, key=BackendResult.best_windows_per_s)
    base_wps, best_wps, inv_wps = base.best_windows_per_s(), best.best_windows_per_s(), best_inv.best_windows_per_s()
    return {
        "baseline_windows_per_s": base_wps,
        "best_windows_per_s": best_wps,
        "best_backend": best.name,
        "speedup": round(best_wps / base_wps, 3) if base_wps else None,
        "auroc_delta": None if best.auroc_delta is None else round(best.auroc_delta, 5),
        "best_batch_invariant": best.batch_invariant,
        "best_batch_invariant_backend": best_inv.name,
        "best_batch_invariant_windows_per_s": inv_wps,
        "best_batch_invariant_speedup": round(inv_wps / base_wps, 3) if base_wps else None,
        "best_batch_invariant_auroc_delta": None if best_inv.auroc_delta is None else round(best_inv.auroc_delta, 5),
        "max_auroc_change": max_auroc_change,
        "batch_invariance_tol": INVARIANCE_TOL,
    }


def plot_results(results: Sequence[BackendResult], batches: Sequence[int], path: Path, *, title: str = "") -> Path:
    """Grouped bars: windows/s per backend (groups) and batch size (bars), baseline marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    timed = [r for r in results if r.per_batch]
    fig, ax = plt.subplots(figsize=(1.6 + 1.4 * len(timed), 3.6))
    width = 0.8 / max(1, len(batches))
    for j, batch in enumerate(batches):
        values = [r.per_batch.get(batch, {}).get("windows_per_s", 0.0) for r in timed]
        xs = [i + (j - (len(batches) - 1) / 2) * width for i in range(len(timed))]
        ax.bar(xs, values, width=width, label=f"batch {batch}")
    base = timed[0].best_windows_per_s() if timed else 0.0
    ax.axhline(base, color="k", lw=0.8, ls="--", label="baseline best")
    ax.axhline(2 * base, color="r", lw=0.8, ls=":", label="2x baseline")
    ax.set_xticks(range(len(timed)), [r.name for r in timed], rotation=20, ha="right")
    ax.set_ylabel("windows / s")
    ax.set_title(title or "MIRAGE inference backends")
    ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mirage bench infer",
        description=(
            "Time every inference backend available here (torch eager fp32 CPU = baseline, torch.compile, "
            "torch bf16, ONNX Runtime fp32 and int8, and on NVIDIA machines torch CUDA and TensorRT) on the "
            "same windows at several batch sizes; report windows/s, p50/p99 latency and the AUROC change "
            "against the baseline on the PTB-XL sample. Prints a table, then one JSON line."
        ),
    )
    p.add_argument("--checkpoint", help="checkpoint file (default: the shipped engine/checkpoints/mirage-default.pt)")
    p.add_argument("--preset", help="benchmark a random-init model of this preset instead of a checkpoint "
                                    "(the 'default' preset is used when no checkpoint exists)")
    p.add_argument("--batches", default="1,8,32", help="comma-separated batch sizes (default: 1,8,32)")
    p.add_argument("--seconds", type=float, default=5.0, help="timing seconds per backend and batch size (default: 5)")
    p.add_argument("--backends", help="comma-separated backends to try (default: every CPU one, plus GPU ones where CUDA exists)")
    p.add_argument("--data", type=Path, help="PTB-XL folder (default: ../shared/data/ptbxl-sample if present, else synthetic)")
    p.add_argument("--limit", type=int, default=400, help="at most this many records (default: 400)")
    p.add_argument("--threads", type=int, help=(
        "CPU threads for every backend, the torch baseline included (default: torch's default and one ONNX Runtime "
        "thread per core). On a loaded machine fewer threads avoid OpenMP stalls: compare runs with --threads 1"))
    p.add_argument("--compare", help="another checkpoint (e.g. the previously shipped one) timed on the baseline backend in the same run, "
                                     "so the two models' windows/s come from one measurement")
    p.add_argument("--max-auroc-change", type=float, default=0.005, help="a backend counts as 'best' only within this AUROC change (default: 0.005)")
    p.add_argument("--out", type=Path, help="also write the JSON summary (with every measurement) to this file")
    p.add_argument("--plot", type=Path, help="also draw windows/s per backend and batch as a PNG bar chart here")
    return p


def bench_main(argv: list[str]) -> int:
    """Entry of ``mirage bench infer``."""
    args = build_parser().parse_args(argv)
    batches = [int(b) for b in args.batches.split(",") if b.strip()]
    data = args.data or shared_ptbxl()
    load_before = os.getloadavg()
    loaded, source = _load(args.checkpoint, args.preset)
    cfg = loaded.config
    inputs, labels, data_source = eval_inputs(cfg, ptbxl=data if data.is_dir() else None, limit=args.limit)
    backends = [b.strip() for b in args.backends.split(",")] if args.backends else [*CPU_CANDIDATES, *GPU_CANDIDATES]
    print(f"model: {source} ({cfg.name}); data: {data_source}; cores: {len(os.sched_getaffinity(0))}; "
          f"threads: {args.threads or 'default'}; load: {load_before[0]:.2f}")
    compare = None
    if args.compare:
        from engine.checkpoint import load_checkpoint

        compare = load_checkpoint(args.compare)
    results = run_bench(loaded, inputs, labels, backends=backends, batches=batches, seconds=args.seconds,
                        threads=args.threads, explicit=bool(args.backends), compare=compare)
    print(format_table(results, batches))
    out = summary(results, max_auroc_change=args.max_auroc_change)
    out.update({
        "model": source,
        "data": data_source,
        "threads": args.threads,
        "load_avg_before": round(load_before[0], 2),
        "load_avg_after": round(os.getloadavg()[0], 2),
        "backends": {
            r.name: {"skipped": r.skipped} if r.skipped else {
                "auroc": r.auroc, "auroc_delta": r.auroc_delta, "max_prob_diff": r.max_prob_diff,
                "batch_invariance_max_abs": r.batch_invariance, "batch_invariant": r.batch_invariant,
                "per_batch": {str(b): m for b, m in r.per_batch.items()},
            }
            for r in results
        },
    })
    if args.plot:
        title = f"{source}, {len(os.sched_getaffinity(0))} cores, threads {args.threads or 'default'}, load {load_before[0]:.1f}"
        plot_results(results, batches, args.plot, title=title)
        out["plot"] = str(args.plot)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out))
    return 0
