"""``mirage worker`` and ``mirage demo``: the stream room's door.

Both build their settings in one place (:meth:`stream.settings.Settings.load`: defaults < TOML
file < ``MIRAGE_*`` environment < command-line flags).
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

from stream.settings import Settings

log = logging.getLogger(__name__)


def add_connection_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="TOML settings file (keys = stream.settings.Settings fields); also $MIRAGE_CONFIG")
    p.add_argument("--bootstrap", help="Kafka bootstrap servers, host:port[,host:port] (default from settings: 127.0.0.1:9092)")
    p.add_argument("--redis-url", help="Redis URL for the lab cache and snapshots, e.g. redis://127.0.0.1:6379/0")
    p.add_argument("--backend", help="inference backend: torch (default, fp32) | onnxruntime | onnxruntime-opt (fp32, ~2x "
                                     "torch on CPU) | onnxruntime-int8-static (calibrated int8, ~2.3x, batch-invariant) | "
                                     "onnxruntime-int8 | tensorrt | torch-compile; `mirage bench infer` compares them")
    p.add_argument("--checkpoint", help="MIRAGE checkpoint (.pt); default: the shipped engine/checkpoints/mirage-default.pt")


def settings_from_args(args: argparse.Namespace, **extra: Any) -> Settings:
    return Settings.load(args.config, bootstrap_servers=args.bootstrap, redis_url=args.redis_url, backend=args.backend,
                         checkpoint=args.checkpoint, **extra)


def worker_main(argv: list[str]) -> int:
    """``mirage worker``: consume ECG chunks and labs, score windows with MIRAGE, produce alerts."""
    p = argparse.ArgumentParser(
        prog="mirage worker",
        description="Run one streaming worker: ECG chunks (Kafka) -> per-bed 10 s windows every hop -> labs from "
                    "Redis -> MIRAGE (batched, off the event loop) -> alert policy -> alerts topic. Malformed "
                    "messages go to the dead-letter topic. Start several with the same consumer group to scale out.",
        epilog="Every option can also come from a TOML file (--config) or MIRAGE_* environment variables; "
               "see docs/STREAMING.md for the full settings table.")
    add_connection_args(p)
    p.add_argument("--group", help="Kafka consumer group (workers in one group share the beds)")
    p.add_argument("--metrics-port", type=int, help="serve Prometheus /metrics and /healthz on this port (0 = off)")
    p.add_argument("--predictor", default="", help="advanced: 'module:factory' returning a custom predictor instead of the checkpoint")
    p.add_argument("--stats-out", help="rewrite a JSON summary (counts, latency quantiles) to this file every second")
    args = p.parse_args(argv)
    from engine.errors import MirageError
    from stream.worker.model import load_model

    try:
        settings = settings_from_args(args, consumer_group=args.group, metrics_port=args.metrics_port)
        log.info("settings: %s", {k: v for k, v in settings.redacted().items() if not k.startswith("dashboard")})
        predictor, info, fallback = load_model(settings, args.predictor)
    except (MirageError, ImportError) as exc:
        log.error("cannot start the worker: %s", exc)
        return 2
    log.info("model %s %s (checkpoint %s) on backend %s", info.name, info.version, info.checkpoint_sha[:12], settings.backend)
    from stream.worker.app import StreamWorker

    worker = StreamWorker(settings, predictor, info, stats_path=args.stats_out, fallback=fallback)
    return worker.run()


def demo_main(argv: list[str]) -> int:
    """``mirage demo``: the whole system on one machine in about a minute."""
    from stream.tools.demo import run_demo

    p = argparse.ArgumentParser(
        prog="mirage demo",
        description="Start an embedded Kafka-compatible broker and Redis, start a MIRAGE worker with the shipped "
                    "checkpoint, replay the built-in cohort (simulators/scenarios/demo.toml: 8 beds, 4 with an "
                    "infarct, 2 with ST changes that are not) through the real streaming path, print alerts as they "
                    "arrive, then shut everything down and print a summary.")
    p.add_argument("--duration", type=float, default=60.0, help="seconds of ECG to replay per bed (default 60)")
    p.add_argument("--speed", type=float, default=3.0, help="replay speed, x real time (default 3: 60 s of ECG in 20 s)")
    p.add_argument("--beds", type=int, default=0, help="number of beds (default: the scenario's 8)")
    p.add_argument("--scenario", default="demo", help="scenario name or file (default: the built-in 'demo')")
    p.add_argument("--json", action="store_true", help="print a JSON summary as the last line (windows, alerts, latency ...)")
    p.add_argument("--checkpoint", help="checkpoint to serve (default: the shipped one)")
    p.add_argument("--backend", default="torch", help="inference backend (default torch)")
    p.add_argument("--predictor", default="", help=argparse.SUPPRESS)
    p.add_argument("--timeout", type=float, default=300.0, help="give up after this many seconds (default 300)")
    p.add_argument("--audit-db", help="SQLite file for the audit trail of every alert event, kept after the demo "
                                      "(default: a new file in the temp directory); inspect it with 'mirage audit "
                                      "query/verify/plot --db FILE'")
    args = p.parse_args(argv)
    return run_demo(duration_s=args.duration, speed=args.speed, beds=args.beds, scenario=args.scenario, as_json=args.json,
                    checkpoint=args.checkpoint, backend=args.backend, predictor=args.predictor, timeout_s=args.timeout,
                    audit_db=args.audit_db)
