"""``mirage bench render``: the project renderer against matplotlib drawing the same layout.

One run, one core: renders the same batch of real windows (the PTB-XL sample when present, else
synthetic ones) with the numpy renderer, the torch renderer and the matplotlib implementation of
the same 6x2 layout (:mod:`engine.render.mpl_renderer`, a new figure per image as dataset
scripts do; the reuse-one-figure variant is reported too). Prints a JSON line last with
``images_per_s`` (numpy), ``matplotlib_images_per_s`` and ``speedup`` (target >= 100).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import time
from pathlib import Path
from typing import Callable

import numpy as np

log = logging.getLogger(__name__)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mirage bench render",
        description=(
            "Render the same windows with the numpy renderer, the torch renderer and matplotlib (same layout), "
            "on --threads cores, and print images/s and the speedup over matplotlib. JSON line last."
        ),
    )
    p.add_argument("--n", type=int, default=256, help="windows to render per timed pass (default 256)")
    p.add_argument("--batch", type=int, default=32, help="batch size handed to render_batch (default 32)")
    p.add_argument("--threads", type=int, default=1, help="CPU threads for numpy/torch (default 1: one core)")
    p.add_argument("--mpl-n", type=int, default=48, help="windows for the (slow) matplotlib passes (default 48)")
    p.add_argument("--repeat", type=int, default=3, help="timed passes per renderer; the median is reported (default 3)")
    p.add_argument("--data", type=Path, default=None, help="PTB-XL folder (default: the shared sample if present, else synthetic)")
    return p


def _limit_threads(n: int) -> str:
    import torch

    torch.set_num_threads(n)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(n)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(n)
        return "threadpoolctl"
    except ImportError:  # the renderers use no BLAS; elementwise numpy is single-threaded anyway
        return "env"


def _default_data() -> Path | None:
    root = Path(os.environ.get("MIRAGE_SHARED_DATA", Path(__file__).resolve().parents[3] / "shared" / "data"))
    d = root / "ptbxl-sample"
    return d if (d / "ptbxl_database.csv").exists() else None


def load_windows(n: int, data: Path | None, fs: float, window_s: float) -> tuple[np.ndarray, str]:
    """(n, 12, T) conditioned windows from PTB-XL records (repeated if fewer), else synthetic."""
    from engine.config import get_preset
    from engine.pipeline import condition_windows, to_model_rate

    cfg = get_preset("default").replace(fs=int(fs), window_s=window_s)
    windows = []
    source = "synthetic"
    if data is not None:
        from engine.data.wfdb_io import cut_window, read_record

        for head in sorted((data / "records500").rglob("*.hea"))[:n]:
            rec = read_record(head)
            windows.append(cut_window(to_model_rate(rec.signal, rec.fs, rec.leads, cfg), cfg.fs, cfg))
        if windows:
            source = f"ptbxl:{data}"
        else:
            log.warning("no WFDB records under %s/records500; using synthetic windows", data)
    if not windows:
        from engine.render.validation import synthetic_window

        rng = np.random.default_rng(0)
        windows = [synthetic_window(cfg.fs, cfg.window_s, hr_bpm=float(rng.uniform(50, 120)), st_shift_mv=float(rng.uniform(-0.2, 0.2)))
                   for _ in range(min(n, 64))]
    x = np.stack([windows[i % len(windows)] for i in range(n)])
    return condition_windows(x, cfg.fs), source


def _time(fn: Callable[[], object], repeat: int) -> float:
    fn()  # warm-up: caches, lazy imports, allocator
    runs = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t0)
    return statistics.median(runs)


def bench_main(argv: list[str]) -> int:
    """Entry point of ``mirage bench render``; prints a JSON line last."""
    args = _parser().parse_args(argv)
    how = _limit_threads(args.threads)
    import torch
    from tqdm import tqdm

    from engine.render import RENDERER_VERSION
    from engine.render.mpl_renderer import render_matplotlib
    from engine.render.numpy_renderer import render_batch
    from engine.render.torch_renderer import render_batch_torch

    fs = 100.0
    x, source = load_windows(args.n, args.data or _default_data(), fs, 10.0)
    xt = torch.from_numpy(x)
    steps = tqdm(total=4, desc="bench render", unit="renderer")

    def numpy_pass() -> None:
        for i in range(0, len(x), args.batch):
            render_batch(x[i : i + args.batch], fs)

    def torch_pass() -> None:
        for i in range(0, len(x), args.batch):
            render_batch_torch(xt[i : i + args.batch], fs)

    t_np = _time(numpy_pass, args.repeat)
    steps.update()
    t_torch = _time(torch_pass, args.repeat)
    steps.update()
    m = min(args.mpl_n, len(x))
    t_mpl = _time(lambda: render_matplotlib(x[:m], fs), 1)
    steps.update()
    t_reuse = _time(lambda: render_matplotlib(x[:m], fs, reuse_figure=True), 1)
    steps.update()
    steps.close()
    a = render_batch(x[:m], fs)
    diff_torch = float(np.abs(a - render_batch_torch(xt[:m], fs).numpy()).max())
    diff_mpl = float(np.abs(a - render_matplotlib(x[:m], fs, reuse_figure=True)).mean())
    result = {
        "bench": "render",
        "renderer_version": RENDERER_VERSION,
        "data": source,
        "n": len(x),
        "batch": args.batch,
        "threads": args.threads,
        "thread_limit": how,
        "images_per_s": round(len(x) / t_np, 1),
        "torch_images_per_s": round(len(x) / t_torch, 1),
        "matplotlib_images_per_s": round(m / t_mpl, 2),
        "matplotlib_reuse_images_per_s": round(m / t_reuse, 2),
        "speedup": round((len(x) / t_np) / (m / t_mpl), 1),
        "speedup_vs_reuse": round((len(x) / t_np) / (m / t_reuse), 1),
        "numpy_torch_max_abs_diff": diff_torch,
        "numpy_matplotlib_mean_abs_diff": round(diff_mpl, 4),
    }
    print(f"numpy      {result['images_per_s']:>9} images/s")
    print(f"torch      {result['torch_images_per_s']:>9} images/s (max |diff| vs numpy {diff_torch:.2g})")
    print(f"matplotlib {result['matplotlib_images_per_s']:>9} images/s (new figure per image; {result['matplotlib_reuse_images_per_s']} reusing one)")
    print(f"speedup    {result['speedup']:>9}x over matplotlib ({result['speedup_vs_reuse']}x over the reused figure)")
    print(json.dumps(result))
    return 0
