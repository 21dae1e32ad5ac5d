"""``mirage bench render|infer|load|broker``: benchmarks that print a JSON line last.

Targets are met here, as a ratio to a baseline measured in the same run, never in unit tests.
"""

from __future__ import annotations

import importlib
import sys

BENCHES = {
    "render": ("engine.render.bench:bench_main", "project renderer vs matplotlib, images/s and speedup"),
    "infer": ("trt.bench:bench_main", "every inference backend at several batch sizes vs torch eager fp32"),
    "load": ("stream.tools.loadbench:bench_main", "N live beds through broker + worker: windows/s, latency p50/p99"),
    "broker": ("stream.tools.brokerbench:bench_main", "the embedded broker's CPU over time under a fixed message flow, by producer linger"),
}


def bench_main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: mirage bench {render,infer,load,broker} [options]\n")
        for name, (_, summary) in BENCHES.items():
            print(f"  {name:<8} {summary}")
        print("\nEach prints a JSON line last. Run 'mirage bench NAME --help' for options.")
        return 0 if argv else 2
    name = argv[0]
    if name not in BENCHES:
        print(f"mirage bench: unknown benchmark {name!r}; choose one of {sorted(BENCHES)}", file=sys.stderr)
        return 2
    mod, fn = BENCHES[name][0].split(":")
    return int(getattr(importlib.import_module(mod), fn)(argv[1:]) or 0)
