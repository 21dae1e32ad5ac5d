"""``mirage validate``: replay a labelled dataset through the live system and score the alerts.

See :mod:`stream.tools.validate` for what is measured and how parity with the offline path is proven.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

log = logging.getLogger(__name__)

KEYS = ("sensitivity", "specificity", "ppv", "false_alerts_per_bed_day", "median_alert_delay_s", "parity_max_abs_diff",
        "windows", "records")


def validate_main(argv: list[str]) -> int:
    """Parse the arguments, run :func:`stream.tools.validate.validate`, print a summary and a JSON line last."""
    p = argparse.ArgumentParser(
        prog="mirage validate",
        description="Replay a labelled source through the real streaming path (broker -> mirage worker -> alerts), "
                    "collect every alert and every per-window probability, score them (sensitivity, specificity, PPV, "
                    "false alerts and alarm burden per bed-day, alert delay from MI onset), and prove parity with "
                    "offline batch inference on the same windows and labs with the same backend (target <= 1e-4). "
                    "Writes validate.json, report.md, report.html and plots (ROC, alert delays, per-bed timelines).",
        epilog="Examples: mirage validate --scenario quick --out runs/val-quick;  "
               "mirage validate --data ../shared/data/ptbxl-sample --beds 40 --speed 20 --out runs/val-ptbxl. "
               "Without --bootstrap an embedded broker and Redis are started and stopped.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", help="WFDB folder: PTB-XL layout (ptbxl_database.csv) or a manifest dataset (mirage simulate)")
    src.add_argument("--scenario", help="scenario file or built-in name (quick, ward, demo) with MI onsets")
    p.add_argument("--out", required=True, help="output folder for validate.json, report.md, report.html and plots")
    p.add_argument("--beds", type=int, default=0, help="number of beds (default: the scenario's; for --data one bed per record)")
    p.add_argument("--speed", type=float, default=10.0, help="replay speed, x real time (default 10; 0 = as fast as possible)")
    p.add_argument("--duration", type=float, default=0.0,
                   help="seconds per bed (scenario: overrides its duration; --data: records are looped to this, default 30)")
    p.add_argument("--backend", default="torch", help="inference backend for the worker and the offline pass (default torch)")
    p.add_argument("--checkpoint", help="checkpoint (default: the shipped engine/checkpoints/mirage-default.pt)")
    p.add_argument("--bootstrap", help="use this Kafka cluster instead of an embedded broker (needs --redis-url; use dedicated, "
                                       "empty topics from --config: the validation worker reads them from the start)")
    p.add_argument("--redis-url", help="Redis URL with --bootstrap")
    p.add_argument("--config", help="TOML settings file for the worker (policy thresholds, k-of-n, hop, topics, security)")
    p.add_argument("--timeout", type=float, default=900.0, help="give up waiting for the worker after this many seconds")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    if args.speed < 0 or args.beds < 0 or args.duration < 0:
        p.error(f"--speed {args.speed}, --beds {args.beds}, --duration {args.duration} must be >= 0")
    if bool(args.bootstrap) != bool(args.redis_url):
        p.error("--bootstrap and --redis-url go together")
    from engine.errors import MirageError
    from stream.settings import Settings
    from stream.tools.validate import ValidateOptions, validate

    opts = ValidateOptions(scenario=args.scenario, data=args.data, beds=args.beds, speed=args.speed, duration_s=args.duration,
                           backend=args.backend, checkpoint=args.checkpoint, timeout_s=args.timeout, progress=not args.no_progress)
    try:
        settings = None
        if args.bootstrap or args.config:
            settings = Settings.load(args.config, bootstrap_servers=args.bootstrap, redis_url=args.redis_url)
        out = validate(opts, Path(args.out), settings, embedded=not args.bootstrap)
    except (MirageError, RuntimeError, OSError) as exc:
        print(f"mirage validate failed: {exc}", file=sys.stderr)
        return 1
    print(f"beds {out['beds']}  windows {out['windows']}  sensitivity {out['sensitivity']}  specificity {out['specificity']}  "
          f"ppv {out['ppv']}  false alerts/bed-day {out['false_alerts_per_bed_day']}  median delay {out['median_alert_delay_s']} s")
    print(f"parity max |live - offline| = {out['parity_max_abs_diff']} over {out['parity_windows']} windows "
          f"({'OK' if out['parity_ok'] else 'NOT OK'}, target {out['parity_target']}); report: {Path(args.out) / 'report.html'}")
    print(json.dumps({k: out.get(k) for k in KEYS} | {"parity_ok": out["parity_ok"], "out": str(args.out)}))
    return 0
