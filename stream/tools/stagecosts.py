"""``mirage bench load --stages``: the worker's CPU cost per window, stage by stage, in this process.

No broker, no Redis: the real windowing, conversion, backend and policy, timed in the model
thread as a worker runs them, so a load result can be read against what each stage costs.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import numpy as np

from stream.settings import Settings
from stream.tools.loadgen import SignalPool


def stage_costs(batch: int = 16, repeats: int = 5, backend: str = "torch", checkpoint: str | None = None) -> dict[str, float]:
    """CPU milliseconds per window of each stage the worker runs, measured in this process (no Kafka).

    Stages, at micro-batch ``batch``: ``to_model_rate`` (lead mapping + 500 -> cfg.fs resampling)
    and ``quality_flags`` (both once per batch, on the event loop:
    :func:`stream.core.windower.convert_windows`), ``model_inputs`` (conditioning + rendering) and
    ``predict`` (the backend), both in the model thread, and ``st`` (issue #19: ``engine.st.measure_st``
    on each model-rate window, in the worker's own ST thread, :mod:`stream.worker.st_stage`);
    best of ``repeats`` (process CPU time). ``total_ms`` includes ``st_ms``.
    ``per_window_convert_ms`` is the same conversion done one window at a time (as before batching).
    """
    from engine.checkpoint import load_checkpoint
    from engine.config import LEADS
    from engine.pipeline import (
        model_inputs,
        quality_flags,
        quality_flags_batch,
        to_model_rate,
        to_model_rate_batch,
    )
    from stream.worker.st_stage import measure_batch
    from stream.worker.store import empty_labs
    from trt.backends import make_predictor

    loaded = load_checkpoint(checkpoint)
    cfg = loaded.config
    pred = make_predictor(backend, loaded, build=True)
    pool = SignalPool(n=4, seconds=12.0)
    raw = np.stack([pool.read(i, 0, int(cfg.window_s * pool.fs)) for i in range(batch)])

    def best(fn: Any) -> float:
        times = []
        for _ in range(repeats):
            t0 = time.process_time()
            fn()
            times.append(time.process_time() - t0)
        return 1000.0 * min(times) / batch

    wins = np.stack([to_model_rate(x, pool.fs, LEADS, cfg).astype(np.float32) for x in raw])
    labs = empty_labs()
    lv, lm = np.stack([labs.values] * batch).astype(np.float32), np.stack([labs.mask] * batch).astype(np.float32)
    inputs = model_inputs(wins, cfg, lv, lm)
    out = {
        "to_model_rate_ms": best(lambda: to_model_rate_batch(raw, pool.fs, LEADS, cfg, allow_missing=True)),
        "quality_flags_ms": best(lambda: quality_flags_batch(wins, cfg.fs)),
        "model_inputs_ms": best(lambda: model_inputs(wins, cfg, lv, lm)),
        "predict_ms": best(lambda: pred.predict(inputs.ecg, inputs.image, inputs.labs, inputs.lab_mask)),
        "st_ms": best(lambda: measure_batch(list(wins), cfg.fs)),
    }
    out["total_ms"] = sum(out.values())
    out["per_window_convert_ms"] = best(lambda: [quality_flags(to_model_rate(x, pool.fs, LEADS, cfg, allow_missing=True)
                                                               .astype(np.float32), cfg.fs) for x in raw])
    out["batch"] = batch
    out["windows_per_cpu_s"] = 1000.0 / out["total_ms"]
    return {k: round(v, 2) for k, v in out.items()}


def call_costs(max_batch: int, windows: int = 64, calls: int = 10, backend: str = "torch", checkpoint: str | None = None,
               threads: int = 1) -> dict[str, float]:
    """Wall ms of one worker processing call that completes ``windows`` windows at once (a backlog),
    in this process (real windowing, conversion, backend and policy; no Kafka, no Redis).

    Measured at ``max_batch`` (micro-batches pipelined: the next one is converted on the event loop
    while the model thread scores this one) and, as the baseline of the same run, with the whole
    call as one batch (``max_batch = windows``: nothing to overlap). Median of ``calls`` calls.
    """
    import statistics

    from engine.checkpoint import load_checkpoint
    from engine.config import LEADS
    from stream.core.schema import EcgChunk
    from stream.worker.processor import ModelInfo, StreamProcessor
    from trt.backends import make_predictor

    loaded = load_checkpoint(checkpoint)
    pool = SignalPool(n=12, seconds=30.0)
    n = int(round(loaded.config.hop_s * pool.fs))  # one hop per chunk: every chunk from the 5th completes a window
    warm = int(np.ceil(loaded.config.window_s / loaded.config.hop_s)) - 1
    t0 = 1_700_000_000 * 10**9

    def run(batch: int) -> float:
        pred = make_predictor(backend, loaded, build=True, **({"threads": threads} if threads else {}))
        proc = StreamProcessor(pred, ModelInfo("bench", "0", "-"), Settings(max_batch=batch))
        proc.warmup()

        async def go() -> list[float]:
            times = []
            for k in range(warm + calls):
                items = [(EcgChunk(f"b{b}", f"p{b}", k, t0 + int(k * n * 1e9 / pool.fs), pool.fs, LEADS,
                                   pool.read(b, k * n, n)), (b, k)) for b in range(windows)]
                t = time.perf_counter()
                res = await proc.process(items)
                if len(res.scored) == windows:
                    times.append(time.perf_counter() - t)
            return times

        try:
            return 1000.0 * statistics.median(asyncio.run(go()))
        finally:
            proc.close()

    piped, whole = run(max_batch), run(windows)
    return {"call_windows": windows, "max_batch": max_batch, "call_ms": round(piped, 1),
            "call_ms_one_batch": round(whole, 1), "call_speedup": round(whole / piped, 2)}
