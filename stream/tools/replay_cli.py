"""``mirage replay``: publish a scenario or a WFDB folder to Kafka as bedside monitor gateways would.

The replay itself is :func:`stream.tools.replay.replay`; the cohorts come from ``simulators``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from pathlib import Path

from engine.errors import MirageError
from simulators.scenario import load_scenario, scenario_help, with_overrides

log = logging.getLogger(__name__)


def replay_main(argv: list[str]) -> int:
    """``mirage replay``: publish a scenario or a WFDB folder to Kafka."""
    p = argparse.ArgumentParser(
        prog="mirage replay",
        description="Publish ECG chunks (key = bed) and lab results (key = patient) to Kafka as bedside monitor "
                    "gateways would, for many beds at once, on a virtual clock that starts now and runs at --speed "
                    "times real time. Each bed ends with an end-of-stream chunk. Ctrl-C stops cleanly (exit 130).",
        epilog="examples: mirage replay --scenario demo --speed 5 | mirage replay --data ../shared/data/ptbxl-sample --beds 16 --speed 0",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--scenario", help=scenario_help())
    src.add_argument("--data", type=Path, help="a WFDB folder: PTB-XL layout or a folder with manifest.csv (e.g. 'mirage simulate' output)")
    p.add_argument("--speed", type=float, default=1.0, help="virtual seconds per wall second; 0 = as fast as possible (default 1)")
    p.add_argument("--chunk-s", type=float, default=0.5, help="seconds of signal per chunk (default 0.5)")
    p.add_argument("--bootstrap", help="Kafka bootstrap servers (default: settings / $MIRAGE_BOOTSTRAP_SERVERS / 'mirage up')")
    p.add_argument("--config", help="settings TOML (topics, security); see stream/settings.py")
    p.add_argument("--beds", type=int, help="--scenario: override the number of beds; --data: at most this many beds")
    p.add_argument("--duration", type=float, metavar="S", help="--scenario: override duration_s; --data with --loop: seconds per bed")
    p.add_argument("--seed", type=int, help="--scenario: override the seed")
    p.add_argument("--fs", type=float, help="--scenario: override the sampling rate")
    p.add_argument("--per-bed", type=int, default=1, help="--data: records concatenated per bed (default 1)")
    p.add_argument("--loop", action="store_true", help="--data: loop each bed's records to fill --duration")
    p.add_argument("--mi-only", action="store_true", help="--data: only MI records")
    p.add_argument("--limit", type=int, default=0, help="--data: read at most this many records (0 = all)")
    p.add_argument("--truth-out", type=Path, help="write the ground truth (one row per bed) to this CSV")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    from stream.settings import Settings
    from stream.tools.replay import replay, scenario_from_data, write_truth

    try:
        settings = Settings.load(args.config, bootstrap_servers=args.bootstrap or _bootstrap_from_state(args.config))
        if args.data is not None:
            sc = scenario_from_data(args.data, beds=args.beds or 0, per_bed=args.per_bed, loop=args.loop,
                                    duration_s=args.duration or 0.0, mi_only=args.mi_only, limit=args.limit)
        else:
            sc = with_overrides(load_scenario(args.scenario), fs=args.fs, duration_s=args.duration, seed=args.seed, beds=args.beds)
    except MirageError as exc:
        print(f"mirage replay: {exc}", file=sys.stderr)
        return 2

    async def run():  # type: ignore[no-untyped-def]
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        try:
            loop.add_signal_handler(signal.SIGINT, stop.set)
            loop.add_signal_handler(signal.SIGTERM, stop.set)
        except (NotImplementedError, RuntimeError):  # not the main thread / not POSIX
            pass
        return await replay(sc, settings, speed=args.speed, chunk_s=args.chunk_s, progress=not args.no_progress, stop=stop)

    try:
        res = asyncio.run(run())
    except MirageError as exc:
        print(f"mirage replay: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # broker unreachable etc.: one line, not a traceback
        print(f"mirage replay: {type(exc).__name__}: {exc} (bootstrap {settings.bootstrap_servers})", file=sys.stderr)
        return 1
    if args.truth_out:
        write_truth(res.truth, args.truth_out, res.start_ns)
    summary = {"beds": res.beds, "chunks": res.chunks, "samples": res.samples, "labs": res.labs, "seconds": round(res.seconds, 3),
               "stream_s": res.stream_s, "mi_beds": sum(t.mi for t in res.truth), "interrupted": res.interrupted}
    print(json.dumps(summary))
    return 130 if res.interrupted else 0


def _bootstrap_from_state(config: str | None) -> str | None:
    """The broker address written by ``mirage up``, when no setting, file or variable names one."""
    import os

    if config or "MIRAGE_BOOTSTRAP_SERVERS" in os.environ or "MIRAGE_CONFIG" in os.environ:
        return None
    try:
        from deploy.services import read_state

        info = read_state()
    except Exception:  # no state or an older layout: fall back to the settings default
        return None
    return info.bootstrap if info is not None else None
