"""The ``mirage`` command: one door per room, each subcommand lazily imported.

Every subcommand lives in its room's ``cli.py`` as a function ``fn(argv: list[str]) -> int`` that
builds its own ``argparse`` parser (so ``mirage SUB --help`` explains that subcommand). This module
only dispatches, so ``mirage --help`` stays fast and never imports torch or Faust.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from dataclasses import dataclass


@dataclass(frozen=True)
class Command:
    """One subcommand: where it lives and what it is for."""

    target: str  # "module:function"
    summary: str
    group: str


COMMANDS: dict[str, Command] = {
    # main job
    "demo": Command("stream.cli:demo_main", "bring up broker+Redis, replay a cohort through the live engine, print alerts", "run"),
    "up": Command("deploy.cli:up_main", "start the embedded Kafka-compatible broker and Redis on loopback", "run"),
    "down": Command("deploy.cli:down_main", "stop the embedded services started by 'mirage up'", "run"),
    "worker": Command("stream.cli:worker_main", "run a streaming worker: chunks -> windows -> MIRAGE -> alerts", "run"),
    "replay": Command("stream.tools.replay_cli:replay_main", "publish a scenario or WFDB folder to Kafka as a monitor gateway would", "run"),
    "dashboard": Command("stream.consumers.dashboard.cli:dashboard_main", "serve the nursing dashboard (live alerts, acknowledge)", "run"),
    "hl7-bridge": Command("stream.consumers.hl7.cli:bridge_main", "forward alerts to an alarm manager as HL7 v2 ORU^R40 over MLLP", "run"),
    "audit": Command("stream.consumers.audit_cli:audit_main", "keep or query the audit trail of alert decisions", "run"),
    # model
    "train": Command("engine.cli:train_main", "train MIRAGE on a PTB-XL folder or a manifest dataset", "model"),
    "crossval": Command("engine.crossval:crossval_main", "patient-wise cross-validation and ablations on PTB-XL folds (table + plots)", "model"),
    "evaluate": Command("engine.cli:evaluate_main", "evaluate a checkpoint on a labelled dataset (report.json + plots)", "model"),
    "predict": Command("trt.predict_cli:main", "score unlabelled ECG recordings (WFDB, DICOM, manifest, folder) -> CSV/JSON/PNG", "model"),
    "render": Command("engine.render.cli:render_main", "render a WFDB record or DICOM ECG as the model image and as ECG paper", "model"),
    "simulate": Command("simulators.cli:simulate_main", "generate a synthetic cohort (WFDB + labs + manifest) from a scenario", "model"),
    "validate": Command("stream.tools.validate_cli:validate_main", "replay a labelled dataset through the live system and score the alerts", "model"),
    # compiled inference
    "export": Command("trt.cli:export_main", "export a checkpoint to ONNX (checked, parity-tested)", "compile"),
    "build-int8": Command("trt.cli:build_int8_main", "calibrate the static int8 model workers load (offline build step)", "compile"),
    "build-engine": Command("trt.cli:build_engine_main", "build a TensorRT plan from the ONNX export", "compile"),
    "triton-repo": Command("trt.cli:triton_repo_main", "write a Triton Inference Server model repository", "compile"),
    # measurement
    "measure": Command("engine.st.cli:main", "ST level per lead of ECG records (J+60/J+80 vs PR baseline) as CSV + plots", "measure"),
    "bench": Command("mirage.bench:bench_main", "benchmarks: render | infer | load | broker (JSON line last)", "measure"),
}

_GROUPS = {"run": "Run the system", "model": "Model and data", "compile": "Compiled inference", "measure": "Measure"}


def _usage() -> str:
    lines = [
        "usage: mirage [-v] <command> [args...]",
        "",
        "MIRAGE bedside monitor: streaming myocardial-infarction detection from 12-lead ECG.",
        "Run 'mirage <command> --help' for a command's options.",
    ]
    for group, title in _GROUPS.items():
        lines += ["", f"{title}:"]
        for name, cmd in COMMANDS.items():
            if cmd.group == group:
                lines.append(f"  {name:<13} {cmd.summary}")
    lines += ["", "options:", "  -h, --help     show this help", "  -v, --verbose  debug logging", "  --version      print the version"]
    return "\n".join(lines)


def _configure_logging(verbose: bool) -> None:
    level = logging.DEBUG if verbose else getattr(logging, os.environ.get("MIRAGE_LOG_LEVEL", "INFO").upper(), logging.INFO)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Third-party clients are chatty at INFO; their warnings still show.
    for noisy in ("aiokafka", "faust", "mode", "kafka", "matplotlib", "urllib3", "asyncio"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))


def main(argv: list[str] | None = None) -> int:
    """Dispatch ``mirage <command> ...`` to the room that owns the command."""
    args = list(sys.argv[1:] if argv is None else argv)
    verbose = False
    while args and args[0] in ("-v", "--verbose"):
        verbose = True
        args.pop(0)
    if not args or args[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    if args[0] == "--version":
        from mirage import __version__

        print(f"mirage {__version__}")
        return 0
    name, rest = args[0], args[1:]
    cmd = COMMANDS.get(name)
    if cmd is None:
        print(f"mirage: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    _configure_logging(verbose)
    module_name, func_name = cmd.target.split(":")
    func = getattr(importlib.import_module(module_name), func_name)
    try:
        return int(func(rest) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
