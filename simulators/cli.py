"""The simulators room's door: ``mirage simulate``.

It writes a scenario's synthetic cohort to disk (WFDB + labs + manifest, see
:mod:`simulators.simulate`). Publishing a cohort to Kafka as bedside gateways would is
``mirage replay`` (:mod:`stream.tools.replay_cli`): the Kafka side lives in ``stream/``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from engine.errors import MirageError
from simulators.scenario import Scenario, load_scenario, scenario_help, with_overrides

log = logging.getLogger(__name__)


def _override(sc: Scenario, args: argparse.Namespace) -> Scenario:
    return with_overrides(sc, fs=args.fs, duration_s=args.duration, seed=args.seed, beds=args.beds)


def simulate_main(argv: list[str]) -> int:
    """``mirage simulate --scenario FILE --out DIR``: write a synthetic cohort as a dataset."""
    p = argparse.ArgumentParser(
        prog="mirage simulate",
        description="Generate a synthetic cohort from a scenario: 12-lead ECGs (vectorcardiographic dipole model with "
                    "MI by territory, confounders and noise) as WFDB records, their lab results (labs.csv) and the "
                    "ground truth (manifest.csv, readable by 'mirage train/evaluate --data' and 'mirage replay --data').",
        epilog="example: mirage simulate --scenario quick --out /tmp/quick",
    )
    p.add_argument("--scenario", required=True, help=scenario_help())
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
