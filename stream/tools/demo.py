"""``mirage demo``: broker + Redis + worker + replay of a cohort, alerts printed as they arrive.

Everything runs for real on loopback: the embedded Tansu broker and Redis
(:class:`deploy.services.EmbeddedServices`), a ``mirage worker`` **subprocess** (its own
process, as in production, with the shipped checkpoint), the monitor-gateway replay
(:func:`stream.tools.replay.replay`) and an alerts consumer in this process. At the end the
worker is stopped with SIGTERM (it commits and writes its final statistics), the services are
stopped, and a summary is printed; ``--json`` makes its last line machine-readable::

    {"windows": ..., "alerts": ..., "beds_alerted": [...], "beds_with_mi": [...], "p50_latency_ms": ...,
     "p99_latency_ms": ..., ...}

Latency is per window, from the broker timestamp of the chunk that completed the window to the
moment its outputs (alerts, if any) were acknowledged by the broker.

The audit consumer (:class:`stream.consumers.audit.AuditConsumer`, as ``mirage audit run`` runs it) keeps
every alert event in an SQLite trail during the demo; the file is kept afterwards (``--audit-db``,
default a new file in the temp directory) so ``mirage audit query/verify/plot --db FILE`` work on it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Callable

from stream.core.schema import Alert
from stream.settings import Settings

log = logging.getLogger(__name__)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def _tail(path: Path, n: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


def format_alert(a: Alert, t0: float) -> str:
    """One human-readable line per alert event."""
    p = "-" if a.probability is None else f"{a.probability:.2f}"
    shown = [f"{x['name']} {x['value']:.3g} {x['unit']} ({x['age_s'] / 60:.0f} min)" for x in a.labs[:2]]
    labs = ", ".join(shown + ([f"+{len(a.labs) - 2} more"] if len(a.labs) > 2 else [])) or "none"
    if not a.labs_available:
        labs = "unavailable"
    flags = ",".join(a.quality_flags) or "-"
    leads = ",".join(a.top_leads) or "-"
    what = "MI" if a.alert_type == "mi" else f"TECHNICAL {a.kind}"
    return (f"[{time.monotonic() - t0:6.1f}s] {what} {a.phase.upper():<6} {a.bed_id:<8} p={p} level={a.level} "
            f"window#{a.window_seq} top leads {leads} | labs: {labs} | quality: {flags} | id {a.alert_id}")


def settings_env(settings: Settings) -> dict[str, str]:
    """``MIRAGE_*`` variables for every setting that differs from its default (for a child process)."""
    default = dataclasses.asdict(Settings())
    env: dict[str, str] = {}
    for key, value in dataclasses.asdict(settings).items():
        if value != default[key]:
            env[f"MIRAGE_{key.upper()}"] = ("true" if value else "false") if isinstance(value, bool) else str(value)
    return env


class WorkerProcess:
    """``mirage worker`` in a subprocess, with its log and stats file in ``workdir``.

    The settings reach the child as ``MIRAGE_*`` environment variables (secrets included, never
    on the command line where ``ps`` would show them).
    """

    def __init__(self, settings: Settings, workdir: Path, checkpoint: str | None = None, backend: str = "torch",
                 predictor: str = "", env: dict[str, str] | None = None) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.stats = workdir / "worker-stats.json"
        self.logfile = workdir / "worker.log"
        cmd = [sys.executable, "-m", "mirage", "worker", "--backend", backend, "--stats-out", str(self.stats)]
        if checkpoint:
            cmd += ["--checkpoint", checkpoint]
        if predictor:
            cmd += ["--predictor", predictor]
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("MIRAGE_") or k in ("MIRAGE_LOG_LEVEL", "MIRAGE_TANSU_BIN", "MIRAGE_REDIS_BIN")}
        full_env.update(settings_env(settings))
        full_env.update(env or {})
        with open(self.logfile, "wb") as logf:
            self.proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, env=full_env, cwd=str(workdir),
                                         start_new_session=True)

    def read(self) -> dict[str, Any]:
        return _read_json(self.stats)

    async def wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited with code {self.proc.returncode}:\n{_tail(self.logfile)}")
            if self.read().get("ready"):
                return
            await asyncio.sleep(0.2)
        raise RuntimeError(f"worker not ready after {timeout_s:.0f}s:\n{_tail(self.logfile)}")

    def stop(self, timeout_s: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        return int(self.proc.returncode or 0)


async def _consume_alerts(settings: Settings, out: list[Alert], print_lines: bool, t0: float, started: asyncio.Event,
                          stop: asyncio.Event) -> None:
    from stream.kafka import consumer

    c = consumer(settings, settings.topic_alerts, group_id=None, auto_offset_reset="earliest", enable_auto_commit=False)
    await c.start()
    started.set()
    try:
        while not stop.is_set():
            batch = await c.getmany(timeout_ms=200)
            for records in batch.values():
                for r in records:
                    try:
                        a = Alert.from_bytes(r.value)
                    except Exception as exc:  # not ours to judge here; the demo only displays
                        log.warning("unreadable alert: %s", exc)
                        continue
                    out.append(a)
                    if print_lines:
                        print(format_alert(a, t0), flush=True)
    finally:
        await c.stop()


async def _run_audit(settings: Settings, path: Path, stop: asyncio.Event, caught_up: Callable[[int], bool]) -> int:
    """Keep the audit trail until ``stop`` is set and ``caught_up(messages)``; returns the row count."""
    from stream.consumers.audit import AuditConsumer, AuditStore

    with AuditStore(path) as store:
        cons = AuditConsumer(settings, store, group=f"mirage-demo-audit-{uuid.uuid4().hex[:8]}")
        await cons.start()
        try:
            deadline: float | None = None
            while True:
                if stop.is_set():
                    deadline = deadline or time.monotonic() + 10.0
                    if caught_up(cons.messages) or time.monotonic() > deadline:
                        break
                await cons.poll_once(timeout_ms=200)
        finally:
            await cons.stop()
        return store.count()


async def _wait_drained(worker: WorkerProcess, chunks_sent: int, timeout_s: float) -> dict[str, Any]:
    """Wait until the worker consumed every chunk and its counts stop moving."""
    deadline = time.monotonic() + timeout_s
    last: tuple[Any, ...] = ()
    stable_since = time.monotonic()
    while time.monotonic() < deadline:
        st = worker.read()
        key = (st.get("chunks"), st.get("windows"), st.get("alerts"))
        if key != last:
            last, stable_since = key, time.monotonic()
        if (st.get("chunks") or 0) >= chunks_sent and time.monotonic() - stable_since > 1.5:
            return st
        if worker.proc.poll() is not None:
            raise RuntimeError(f"worker exited with code {worker.proc.returncode}:\n{_tail(worker.logfile)}")
        await asyncio.sleep(0.25)
    log.warning("worker did not drain within %.0fs", timeout_s)
    return worker.read()


async def _demo(settings: Settings, workdir: Path, *, duration_s: float, speed: float, beds: int, scenario: str,
                as_json: bool, checkpoint: str | None, backend: str, predictor: str, timeout_s: float,
                audit_db: Path) -> dict[str, Any]:
    from stream.tools.replay import replay, resolve_source

    t0 = time.monotonic()
    sc = resolve_source(scenario)
    changes: dict[str, Any] = {"duration_s": float(duration_s)}
    if beds:
        changes["beds"] = beds
        changes["bed"] = tuple(sc.bed[:beds])
    sc = dataclasses.replace(sc, **changes)
    say = (lambda *a: None) if as_json else (lambda *a: print(*a, flush=True))
    say(f"starting worker (backend {backend}) ...")
    worker = WorkerProcess(settings, workdir, checkpoint, backend, predictor)
    alerts: list[Alert] = []
    stop = asyncio.Event()
    started = asyncio.Event()
    consumer_task: asyncio.Task | None = None
    audit_task: asyncio.Task | None = None
    try:
        await worker.wait_ready(min(120.0, timeout_s))
        say(f"worker ready after {time.monotonic() - t0:.1f}s; replaying {sc.beds} beds x {duration_s:.0f}s at {speed:g}x ...")
        consumer_task = asyncio.create_task(_consume_alerts(settings, alerts, not as_json, t0, started, stop))
        audit_task = asyncio.create_task(_run_audit(settings, audit_db, stop, lambda n: n >= len(alerts)))
        await asyncio.wait_for(started.wait(), 30)
        result = await replay(sc, settings, speed=speed, progress=False)
        say(f"replay done: {result.chunks} chunks, {result.labs} labs in {result.seconds:.1f}s; waiting for the worker ...")
        remaining = max(10.0, timeout_s - (time.monotonic() - t0))
        await _wait_drained(worker, result.chunks, remaining)
        await asyncio.sleep(0.5)  # let the alerts consumer catch the last sends
    finally:
        stop.set()
        if consumer_task is not None:
            await asyncio.gather(consumer_task, return_exceptions=True)
        code = await asyncio.to_thread(worker.stop)
        audit = (await asyncio.gather(audit_task, return_exceptions=True))[0] if audit_task is not None else 0
    stats = worker.read()
    if code not in (0, -signal.SIGTERM):
        log.warning("worker exited with code %s", code)
    if isinstance(audit, BaseException):
        log.warning("audit trail incomplete: %s", audit)
        audit = -1
    starts = [a for a in alerts if a.alert_type == "mi" and a.phase == "start"]
    truth = {b.bed_id: b for b in result.truth}
    beds_alerted = sorted({a.bed_id for a in starts})
    beds_with_mi = sorted(b for b, t in truth.items() if t.mi)
    return {
        "windows": int(stats.get("windows") or 0),
        "chunks": int(stats.get("chunks") or 0),
        "alerts": len(alerts),
        "alert_starts": len(starts),
        "beds": len(truth),
        "beds_alerted": beds_alerted,
        "beds_with_mi": beds_with_mi,
        "true_positive_beds": sorted(set(beds_alerted) & set(beds_with_mi)),
        "false_positive_beds": sorted(set(beds_alerted) - set(beds_with_mi)),
        "p50_latency_ms": stats.get("p50_latency_ms"),
        "p99_latency_ms": stats.get("p99_latency_ms"),
        "p50_consume_lag_ms": stats.get("p50_consume_lag_ms"),
        "deadletters": int(stats.get("deadletters") or 0),
        "replay_s": round(result.seconds, 2),
        "wall_s": round(time.monotonic() - t0, 2),
        "speed": speed,
        "backend": backend,
        "worker_exit": code,
        "audit_db": str(audit_db),
        "audit_rows": audit,
    }


def run_demo(*, duration_s: float = 60.0, speed: float = 3.0, beds: int = 0, scenario: str = "demo", as_json: bool = False,
             checkpoint: str | None = None, backend: str = "torch", predictor: str = "", timeout_s: float = 300.0,
             audit_db: str | Path | None = None) -> int:
    """Run the demo end to end; returns the exit code (0 = ran; alerts are reported, not judged).

    ``audit_db``: the audit trail's SQLite file (kept after the demo); None = a new file in the
    temp directory.
    """
    from deploy.services import EmbeddedServices
    from trt.backends import build_offline

    workdir = Path(tempfile.mkdtemp(prefix="mirage-demo-"))
    if audit_db is None:
        audit_db = Path(tempfile.gettempdir()) / f"{workdir.name}-audit.sqlite"  # outlives the workdir
    audit_db = Path(audit_db)
    audit_db.parent.mkdir(parents=True, exist_ok=True)
    say = (lambda *a: None) if as_json else (lambda *a: print(*a, flush=True))
    say("starting embedded broker and Redis ...")
    try:
        if not predictor:
            build_offline(backend, checkpoint)  # the worker only loads a built artefact
        with EmbeddedServices(workdir=workdir / "services") as svc:
            settings = Settings.load(env={}, bootstrap_servers=svc.bootstrap, redis_url=svc.redis_url,
                                     consumer_group=f"mirage-demo-{uuid.uuid4().hex[:8]}")
            summary = asyncio.run(_demo(settings, workdir, duration_s=duration_s, speed=speed, beds=beds, scenario=scenario,
                                        as_json=as_json, checkpoint=checkpoint, backend=backend, predictor=predictor,
                                        timeout_s=timeout_s, audit_db=audit_db))
    except (RuntimeError, OSError) as exc:
        print(f"mirage demo failed: {exc}", file=sys.stderr)
        return 1
    finally:
        import shutil

        shutil.rmtree(workdir, ignore_errors=True)
    if as_json:
        print(json.dumps(summary))
    else:
        print()
        print(f"windows scored: {summary['windows']}   alert events: {summary['alerts']}   "
              f"latency p50 {summary['p50_latency_ms']} ms, p99 {summary['p99_latency_ms']} ms")
        print(f"beds with MI: {', '.join(summary['beds_with_mi']) or '-'}")
        print(f"beds alerted: {', '.join(summary['beds_alerted']) or '-'}")
        print(f"audit trail: {summary['audit_rows']} event(s) in {audit_db}  (mirage audit query --db {audit_db})")
        print(f"wall time {summary['wall_s']} s")
    return 0
