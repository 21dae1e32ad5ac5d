"""``mirage up`` / ``mirage down``: the embedded broker and Redis as background processes."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys

from deploy.errors import ServiceError
from deploy.services import EmbeddedServices, read_state, state_dir, write_state


def up_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="mirage up", description=(
        "Start the embedded Kafka-compatible broker (Tansu, in-memory) and Redis on 127.0.0.1 and "
        "create MIRAGE's topics. Addresses are written to $MIRAGE_STATE_DIR/services.json "
        "(default ~/.mirage) and printed as JSON; 'mirage down' stops them."))
    p.add_argument("--kafka-port", type=int, default=9092, help="broker port (0 = any free port; default 9092)")
    p.add_argument("--redis-port", type=int, default=6379, help="Redis port (0 = any free port; default 6379)")
    args = p.parse_args(argv)
    existing = read_state()
    if existing is not None and _alive(existing.broker_pid):
        print(json.dumps({"already_running": True, "bootstrap": existing.bootstrap, "redis_url": existing.redis_url}))
        return 0
    workdir = state_dir() / "services"
    try:
        svc = EmbeddedServices(args.kafka_port, args.redis_port, workdir=workdir).start()
    except ServiceError as exc:
        print(f"mirage up: {exc}", file=sys.stderr)
        return 1
    path = write_state(svc.info())
    print(json.dumps({"bootstrap": svc.bootstrap, "redis_url": svc.redis_url, "state": str(path)}))
    return 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except (OSError, ValueError):
        return False


def down_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="mirage down", description="Stop the services started by 'mirage up'.")
    p.parse_args(argv)
    info = read_state()
    if info is None:
        print("mirage down: nothing is running (no state file)")
        return 0
    for pid in (info.broker_pid, info.redis_pid):
        if _alive(pid):
            os.kill(pid, signal.SIGTERM)
    (state_dir() / "services.json").unlink(missing_ok=True)
    print(json.dumps({"stopped": [info.broker_pid, info.redis_pid]}))
    return 0
