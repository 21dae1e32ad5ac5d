"""The simulators room's door: ``mirage simulate`` and ``mirage replay``.

``simulate`` writes a scenario's synthetic cohort to disk (WFDB + labs + manifest, see
:mod:`simulators.simulate`); ``replay`` publishes a scenario or a WFDB folder to Kafka as bedside
gateways would (see :mod:`simulators.replay`).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import dataclasses
import json
import logging
import signal
import sys
from pathlib import Path

from engine.errors import MirageError
from simulators.scenario import builtin_names, load_scenario

log = logging.getLogger(__name__)


def _scenario_help() -> str:
    return f"a scenario file (.toml or .json) or a built-in name ({', '.join(builtin_names())})"


def _override(sc, args: argparse.Namespace):  # type: ignore[no-untyped-def]
    changes = {k: v for k, v in (("fs", args.fs), ("duration_s", args.duration), ("seed", args.seed), ("beds", args.beds)) if v is not None}
    return dataclasses.replace(sc, **changes) if changes else sc


def simulate_main(argv: list[str]) -> int:
    """``mirage simulate --scenario FILE --out DIR``: write a synthetic cohort as a dataset."""
    p = argparse.ArgumentParser(
        prog="mirage simulate",
        description="Generate a synthetic cohort from a scenario: 12-lead ECGs (vectorcardiographic dipole model with "
                    "MI by territory, confounders and noise) as WFDB records, their lab results (labs.csv) and the "
                    "ground truth (manifest.csv, readable by 'mirage train/evaluate --data' and 'mirage replay --data').",
        epilog="example: mirage simulate --scenario quick --out /tmp/quick",
    )
    p.add_argument("--scenario", required=True, help=_scenario_help())
    p.add_argument("--out", required=True, type=Path, help="output folder (created; existing files are overwritten)")
    p.add_argument("--fs", type=float, help="sampling rate in Hz (default: the scenario's, 500 unless set)")
    p.add_argument("--duration", type=float, metavar="S", help="seconds per record (default: the scenario's duration_s)")
    p.add_argument("--seed", type=int, help="override the scenario's seed")
    p.add_argument("--beds", type=int, help="override the number of beds")
    p.add_argument("--no-plots", action="store_true", help="skip the ECG-paper PNGs and the troponin plot")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    from simulators.simulate import simulate

    try:
        sc = _override(load_scenario(args.scenario), args)
        res = simulate(sc, args.out, plots=not args.no_plots, progress=not args.no_progress)
    except MirageError as exc:
        print(f"mirage simulate: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {res.records} records ({res.mi} MI), {res.labs} lab results to {res.out}")
    print(json.dumps({"out": str(res.out), "records": res.records, "mi": res.mi, "labs": res.labs, "samples": res.samples}))
    return 0


def write_truth(truth: list, path: Path, start_ns: int) -> None:
    """The ground truth of a replay as CSV (one row per bed; ``mi_onset_s`` relative to ``start_ns``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["bed_id", "patient_id", "record", "mi", "mi_onset_s", "label", "territory", "confounders", "start_ns"])
        for t in truth:
            w.writerow([t.bed_id, t.patient_id, t.record, int(t.mi), "" if t.mi_onset_s is None else t.mi_onset_s, t.label,
                        t.territory, ";".join(t.confounders), start_ns])


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
    src.add_argument("--scenario", help=_scenario_help())
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
    from simulators.replay import replay, scenario_from_data
    from stream.settings import Settings

    try:
        settings = Settings.load(args.config, bootstrap_servers=args.bootstrap or _bootstrap_from_state(args.config))
        if args.data is not None:
            sc = scenario_from_data(args.data, beds=args.beds or 0, per_bed=args.per_bed, loop=args.loop,
                                    duration_s=args.duration or 0.0, mi_only=args.mi_only, limit=args.limit)
        else:
            sc = _override(load_scenario(args.scenario), args)
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
