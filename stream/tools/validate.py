"""Offline validation *through the live system*: replay a labelled cohort, score what came out.

``mirage validate`` answers two questions at once:

1. **How well does the deployed system detect MI?** A labelled source (a simulated scenario with
   MI onsets, a WFDB folder in PTB-XL layout, or a manifest dataset) is replayed through the
   real path (:func:`stream.tools.replay.replay` -> broker -> ``mirage worker`` -> alerts topic)
   at an accelerated rate over many beds; every alert and every per-window probability the
   worker produced is collected and scored (:mod:`stream.tools.validate_metrics`).
2. **Is the live path faithful to the offline one?** The same messages are rebuilt offline from
   the same pure replay plan (:class:`stream.tools.replay.ReplayPlan`, same virtual clock),
   decoded from the wire format, cut into windows the offline way
   (``engine.pipeline.to_model_rate`` on ``record[:, k·hop : k·hop + T]``, the path training and
   evaluation use), given the labs a patient had at that time, and scored in batches with the
   same backend. Parity = max |p_live - p_offline| (target <= 1e-4): it proves that windowing,
   resampling, rendering and lab joining in the stream equal the offline pipeline.

The worker does not publish per-window probabilities, so validation runs the real
:class:`stream.worker.app.StreamWorker` in a subprocess through a thin subclass,
:func:`recording_worker_main` (``python -m stream.tools.validate``), that appends one JSON line per
scored window (bed, seq, times, probability, SHA-1 of the window signal, the labs given to the
model) after the worker's own handling of each batch. Nothing else in the worker changes.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import hashlib
import json
import logging
import os
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from stream.settings import Settings
from stream.tools.demo import WorkerProcess, settings_env

log = logging.getLogger(__name__)

PARITY_TARGET = 1e-4


def signal_digest(signal: np.ndarray) -> str:
    """SHA-1 of a window's float32 bytes (bit-for-bit window identity, no waveform leaves the worker)."""
    return hashlib.sha1(np.ascontiguousarray(signal, dtype=np.float32).tobytes()).hexdigest()


# -- the recording worker (runs in the worker subprocess) ----------------------------------------
def _recording_worker_class() -> type:
    from stream.worker.app import StreamWorker

    class RecordingWorker(StreamWorker):
        """A :class:`StreamWorker` that also writes every scored window to a JSON-lines file."""

        def __init__(self, *args: Any, records_path: Path, **kw: Any) -> None:
            super().__init__(*args, **kw)
            self.records_file = open(records_path, "a", buffering=1)
            self._labs_seen: dict[tuple[str, int], Any] = {}
            cache = self.processor.labcache
            if cache is not None:
                read = cache.read_batch

                async def read_and_remember(requests: Iterable[tuple[str, int]]) -> list[Any]:
                    reqs = list(requests)
                    got = await read(reqs)
                    for key, labs in zip(reqs, got):
                        self._labs_seen[key] = labs
                    return got

                cache.read_batch = read_and_remember  # type: ignore[method-assign]

        async def handle_chunk_events(self, events: list[Any]) -> Any:
            began_ns = time.time_ns()
            result = await super().handle_chunk_events(events)
            done_ns = time.time_ns()
            lines = []
            for sc in result.scored:
                w = sc.window
                labs = self._labs_seen.get((w.patient_id, w.end_ns))  # two beds may carry one patient
                lines.append(json.dumps({
                    "bed": w.bed_id, "seq": w.seq, "start_ns": w.start_ns, "end_ns": w.end_ns, "p": sc.probability,
                    "flags": list(w.flags), "sha": signal_digest(w.signal), "done_ns": done_ns,
                    "lat_ms": sc.latency_s(done_ns) * 1000.0,
                    # where the latency went: waiting for this call (consume), then the call itself
                    "began_ns": began_ns, "events": len(events), "batch": len(result.scored),
                    "labs": None if labs is None else [float(v) for v in labs.values],
                    "mask": None if labs is None else [float(v) for v in labs.mask]}))
            self._labs_seen.clear()  # every lab read of this call belongs to a window scored in it
            if lines:
                self.records_file.write("\n".join(lines) + "\n")
            return result

    return RecordingWorker


def recording_worker_main(argv: list[str]) -> int:
    """``python -m stream.tools.validate --records FILE [--stats-out FILE]``: a worker that records windows.

    Settings come from ``MIRAGE_*`` variables (as for ``mirage worker`` started by the demo).
    """
    p = argparse.ArgumentParser(prog="python -m stream.tools.validate", description="stream worker that records every scored window")
    p.add_argument("--records", required=True, help="JSON-lines file, one line per scored window")
    p.add_argument("--stats-out", help="worker stats JSON (as mirage worker --stats-out)")
    args = p.parse_args(argv)
    logging.basicConfig(level=os.environ.get("MIRAGE_LOG_LEVEL", "WARNING").upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from stream.worker.model import load_model

    settings = Settings.load()
    model = load_model(settings)
    kw: dict[str, Any] = {"fallback": model[2]} if len(model) > 2 and model[2] is not None else {}
    worker = _recording_worker_class()(settings, model[0], model[1], stats_path=args.stats_out, records_path=Path(args.records), **kw)
    return worker.run()


class RecordingWorkerProcess(WorkerProcess):
    """The recording worker in a subprocess; reuses :class:`stream.tools.demo.WorkerProcess` for ready/read/stop."""

    def __init__(self, settings: Settings, workdir: Path) -> None:  # noqa: D107 - see class docstring
        import subprocess

        workdir.mkdir(parents=True, exist_ok=True)
        self.stats = workdir / "worker-stats.json"
        self.logfile = workdir / "worker.log"
        self.records = workdir / "windows.jsonl"
        cmd = [sys.executable, "-m", "stream.tools.validate", "--records", str(self.records), "--stats-out", str(self.stats)]
        env = {k: v for k, v in os.environ.items() if not k.startswith("MIRAGE_") or k in ("MIRAGE_LOG_LEVEL", "MIRAGE_TANSU_BIN", "MIRAGE_REDIS_BIN")}
        env.update(settings_env(settings))
        repo = str(Path(__file__).resolve().parents[1])
        env["PYTHONPATH"] = repo + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        with open(self.logfile, "wb") as logf:
            self.proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, env=env, cwd=str(workdir),
                                         start_new_session=True)

    def windows(self) -> list[dict[str, Any]]:
        """Every window recorded so far (a restarted worker may record a window twice: last wins)."""
        if not self.records.exists():
            return []
        out: dict[tuple[str, int], dict[str, Any]] = {}
        for line in self.records.read_text().splitlines():
            if line.strip():
                d = json.loads(line)
                out[(d["bed"], int(d["seq"]))] = d
        return list(out.values())


# -- offline reconstruction ----------------------------------------------------------------------
@dataclass
class OfflineWindow:
    """One window cut offline from the replayed messages."""

    bed_id: str
    patient_id: str
    seq: int
    start_ns: int
    end_ns: int
    signal: np.ndarray  # (12, T) mV at cfg.fs
    labs: np.ndarray
    mask: np.ndarray


@dataclass
class OfflineCohort:
    """What the replay sent, rebuilt offline: windows per bed and each bed's extent."""

    windows: list[OfflineWindow] = field(default_factory=list)
    bed_start_ns: dict[str, int] = field(default_factory=dict)
    bed_stream_s: dict[str, float] = field(default_factory=dict)


def rebuild_offline(scenario: Any, start_ns: int, chunk_s: float, cfg: Any, settings: Settings) -> OfflineCohort:
    """Rebuild every window (and the labs known at its completion) from the pure replay plan.

    The plan is the replay's own (same cohort, clock start and chunking), so the messages are
    byte-identical to what was published; the windowing is the offline one.
    """
    from engine.pipeline import to_model_rate
    from simulators.cohort import build_cohort
    from stream.core.schema import LabResult, decode_chunk
    from stream.core.windower import Windower
    from stream.tools.replay import ReplayPlan
    from stream.worker.store import select_labs

    plan = ReplayPlan(build_cohort(scenario), start_ns, chunk_s)
    grid = Windower(cfg, hop_s=settings.hop_s)
    parts: dict[str, list[np.ndarray]] = {}
    meta: dict[str, tuple[str, float, tuple[str, ...], int]] = {}
    chunk_ticks: dict[str, list[tuple[int, int]]] = {}  # bed -> [(end sample index, tick)]
    lab_events: list[tuple[int, LabResult]] = []
    k = 0
    while not plan.done:
        for m in plan.tick(k):
            if m.kind == "lab":
                lab_events.append((k, LabResult.from_bytes(m.value)))
                continue
            c = decode_chunk(m.value)
            if c.n_samples == 0:
                continue
            if c.bed_id not in meta:
                meta[c.bed_id] = (c.patient_id, float(c.fs), tuple(c.leads), int(c.start_ns))
            parts.setdefault(c.bed_id, []).append(np.asarray(c.samples, np.float32))
            prev = chunk_ticks.setdefault(c.bed_id, [])
            prev.append(((prev[-1][0] if prev else 0) + c.n_samples, k))
        k += 1
    out = OfflineCohort()
    for bed_id, chunks in parts.items():
        patient, fs, leads, t0 = meta[bed_id]
        x = np.concatenate(chunks, axis=1)
        win, hop = grid.window_samples(fs)
        out.bed_start_ns[bed_id] = t0
        out.bed_stream_s[bed_id] = x.shape[1] / fs
        labs = [(t, lab) for t, lab in lab_events if lab.patient_id == patient]  # already in publish order
        ticks = chunk_ticks[bed_id]
        j = 0
        n = 0
        while n * hop + win <= x.shape[1]:
            lo = n * hop
            signal = to_model_rate(x[:, lo:lo + win], fs, leads, cfg, allow_missing=True).astype(np.float32)
            end = lo + win
            while ticks[j][0] < end:
                j += 1
            done_tick = ticks[j][1]
            w_end_ns = t0 + int(round(end * 1e9 / fs))
            stored: dict[str, str] = {}
            newest: dict[str, int] = {}
            for t, lab in labs:  # labs of a tick are published before its chunks
                if t > done_tick:
                    break
                if lab.observed_ns >= newest.get(lab.loinc, -1):  # the cache keeps the newest observation
                    newest[lab.loinc] = lab.observed_ns
                    stored[lab.loinc] = json.dumps({"v": lab.canonical_value(), "o": int(lab.observed_ns)})
            sel = select_labs(stored, w_end_ns, settings.lab_staleness_s)
            out.windows.append(OfflineWindow(bed_id, patient, n, t0 + int(round(lo * 1e9 / fs)), w_end_ns, signal,
                                             sel.values.astype(np.float32), sel.mask.astype(np.float32)))
            n += 1
    return out


def offline_probabilities(predictor: Any, cfg: Any, signals: np.ndarray, labs: np.ndarray, mask: np.ndarray,
                          batch: int = 64, progress: bool = False) -> np.ndarray:
    """Score windows in batches through the one input pipeline and the given predictor."""
    from engine.pipeline import model_inputs

    out = np.zeros(len(signals), np.float64)
    starts = range(0, len(signals), batch)
    if progress:
        from tqdm import tqdm

        starts = tqdm(starts, desc="offline inference", unit="batch")
    for i in starts:
        inp = model_inputs(signals[i:i + batch], cfg, labs[i:i + batch], mask[i:i + batch])
        pred = predictor.predict(inp.ecg, inp.image, inp.labs, inp.lab_mask)
        out[i:i + batch] = np.asarray(pred.probs, np.float64).reshape(-1)
    return out


# -- orchestration -------------------------------------------------------------------------------
@dataclass
class ValidateOptions:
    """What to replay and how."""

    scenario: str | None = None
    data: str | None = None
    beds: int = 0
    speed: float = 10.0
    duration_s: float = 0.0
    chunk_s: float = 0.5
    backend: str = "torch"
    checkpoint: str | None = None
    timeout_s: float = 900.0
    progress: bool = False


def resolve_scenario(opts: ValidateOptions) -> Any:
    """The scenario to replay: a scenario file/name, or a WFDB folder (each record looped to fill the duration).

    A 10 s record gives a single window, and the alert policy needs k of n windows, so records
    are looped (``duration_s``, default 30 s: windows 0, 5 and 10 are exactly the record).
    """
    from stream.tools.replay import resolve_source, scenario_from_data

    if opts.data:
        return scenario_from_data(opts.data, beds=opts.beds, loop=True, duration_s=opts.duration_s or 30.0)
    sc = resolve_source(opts.scenario or "quick")
    changes: dict[str, Any] = {}
    if opts.duration_s:
        changes["duration_s"] = float(opts.duration_s)
    if opts.beds:
        changes["beds"] = opts.beds
        changes["bed"] = tuple(sc.bed[:opts.beds])
    return dataclasses.replace(sc, **changes) if changes else sc


async def _run_live(sc: Any, settings: Settings, opts: ValidateOptions, workdir: Path, start_ns: int
                    ) -> tuple[list[dict[str, Any]], list[Any], Any, dict[str, Any]]:
    from stream.tools.demo import _consume_alerts, _wait_drained
    from stream.tools.replay import replay

    worker = RecordingWorkerProcess(settings, workdir)
    alerts: list[Any] = []
    stop, started = asyncio.Event(), asyncio.Event()
    task: asyncio.Task | None = None
    t0 = time.monotonic()
    try:
        await worker.wait_ready(min(180.0, opts.timeout_s))
        task = asyncio.create_task(_consume_alerts(settings, alerts, False, t0, started, stop))
        await asyncio.wait_for(started.wait(), 30)
        result = await replay(sc, settings, speed=opts.speed, chunk_s=opts.chunk_s, progress=opts.progress, start_ns=start_ns)
        await _wait_drained(worker, result.chunks, max(30.0, opts.timeout_s - (time.monotonic() - t0)))
        await asyncio.sleep(1.0)  # the alerts consumer catches the last sends
    finally:
        stop.set()
        if task is not None:
            await asyncio.gather(task, return_exceptions=True)
        code = await asyncio.to_thread(worker.stop)
    stats = worker.read()
    stats["exit_code"] = code
    return worker.windows(), alerts, result, stats


def validate(opts: ValidateOptions, out_dir: Path, settings: Settings | None = None, *, embedded: bool | None = None) -> dict[str, Any]:
    """Run a validation end to end and write validate.json and the report into ``out_dir``.

    Args:
        opts: source, speed, beds, backend.
        out_dir: where validate.json, report.md/html and plots go.
        settings: broker/Redis/topics/policy to use (default: the defaults).
        embedded: start an embedded broker and Redis (and the settings' topics) instead of using
            the settings' addresses; default: when no settings are given.

    Returns:
        the validate.json content.
    """
    import tempfile

    out_dir.mkdir(parents=True, exist_ok=True)
    base = settings or Settings.load(env={})
    base = dataclasses.replace(base, backend=opts.backend, checkpoint=opts.checkpoint or base.checkpoint)
    if embedded is None:
        embedded = settings is None
    with tempfile.TemporaryDirectory(prefix="mirage-validate-") as tmp:
        if not embedded:
            # Never join a production worker's group: the validation worker must see every chunk.
            return _validate(opts, out_dir, dataclasses.replace(base, consumer_group=f"mirage-validate-{uuid.uuid4().hex[:8]}"),
                             Path(tmp))
        from deploy.services import DEFAULT_TOPICS, EmbeddedServices

        topics = dict(DEFAULT_TOPICS) | {base.topic_chunks: 4, base.topic_labs: 2, base.topic_alerts: 1, base.topic_deadletter: 1}
        with EmbeddedServices(workdir=Path(tmp) / "services", topics=topics) as svc:
            s = dataclasses.replace(base, bootstrap_servers=svc.bootstrap, redis_url=svc.redis_url,
                                    consumer_group=f"mirage-validate-{uuid.uuid4().hex[:8]}")
            return _validate(opts, out_dir, s, Path(tmp))


def _validate(opts: ValidateOptions, out_dir: Path, settings: Settings, tmp: Path) -> dict[str, Any]:
    from stream.tools.validate_metrics import AlertEvent, BedInfo, WindowScore, summarize
    from stream.tools.validate_report import write_report
    from stream.worker.model import load_model
    from stream.worker.processor import policy_config
    from trt.backends import build_offline

    t_wall = time.monotonic()
    sc = resolve_scenario(opts)
    start_ns = time.time_ns() + int(2e9)
    # The worker subprocess loads the same checkpoint/backend (built here first if it has a build
    # step); load it here too for offline scoring.
    build_offline(settings.backend, settings.checkpoint or None)
    model = load_model(settings)
    predictor, info = model[0], model[1]
    cfg = predictor.config
    live, alerts, replayed, stats = asyncio.run(_run_live(sc, settings, opts, tmp / "worker", start_ns))
    log.info("live run: %d windows, %d alert events", len(live), len(alerts))
    offline = rebuild_offline(sc, start_ns, opts.chunk_s, cfg, settings)
    off_by_key = {(w.bed_id, w.seq): w for w in offline.windows}
    # Offline probabilities of the offline windows with the offline labs, and of the live labs
    # where a lab arrived in Redis later than its chunk (a race of two topics, not a defect).
    keys = [(d["bed"], int(d["seq"])) for d in live if (d["bed"], int(d["seq"])) in off_by_key]
    live_by_key = {(d["bed"], int(d["seq"])): d for d in live}
    ows = [off_by_key[k] for k in keys]
    sig = np.stack([w.signal for w in ows]) if ows else np.zeros((0, 12, cfg.T), np.float32)
    labs_off = np.stack([w.labs for w in ows]) if ows else np.zeros((0, 1), np.float32)
    mask_off = np.stack([w.mask for w in ows]) if ows else np.zeros((0, 1), np.float32)
    p_off = offline_probabilities(predictor, cfg, sig, labs_off, mask_off, progress=opts.progress) if ows else np.zeros(0)
    same_sig = np.array([signal_digest(w.signal) == live_by_key[k]["sha"] for k, w in zip(keys, ows)], bool)
    same_labs = np.array([live_by_key[k]["labs"] is not None
                          and np.array_equal(np.asarray(live_by_key[k]["labs"], np.float32), w.labs)
                          and np.array_equal(np.asarray(live_by_key[k]["mask"], np.float32), w.mask)
                          for k, w in zip(keys, ows)], bool)
    diff_idx = np.flatnonzero(~same_labs & np.array([live_by_key[k]["labs"] is not None for k in keys], bool))
    p_live_labs = p_off.copy()
    if diff_idx.size:
        lv = np.stack([np.asarray(live_by_key[keys[i]]["labs"], np.float32) for i in diff_idx])
        lm = np.stack([np.asarray(live_by_key[keys[i]]["mask"], np.float32) for i in diff_idx])
        p_live_labs[diff_idx] = offline_probabilities(predictor, cfg, sig[diff_idx], lv, lm)
    p_live = np.array([float(live_by_key[k]["p"]) for k in keys], np.float64)
    beds = [BedInfo(t.bed_id, t.record, bool(t.mi), t.mi_onset_s, offline.bed_start_ns.get(t.bed_id, start_ns),
                    offline.bed_stream_s.get(t.bed_id, 0.0), t.label) for t in replayed.truth]
    scores = [WindowScore(d["bed"], int(d["seq"]), int(d["end_ns"]), float(d["p"])) for d in live]
    score_by_key = {(s.bed_id, s.seq): i for i, s in enumerate(scores)}
    for j, k in enumerate(keys):
        if same_labs[j]:
            scores[score_by_key[k]] = dataclasses.replace(scores[score_by_key[k]], offline=float(p_off[j]))
    events = [AlertEvent(a.bed_id, a.alert_type, a.phase, int(a.window_end_ns), a.alert_id) for a in alerts]
    threshold = policy_config(settings, info).threshold_start
    summary = summarize(beds, scores, events, threshold, parity_target=PARITY_TARGET)
    all_diff = np.abs(p_live - p_live_labs)
    summary.update({
        "source": opts.data or opts.scenario or "quick", "backend": settings.backend, "speed": opts.speed,
        "model": info.name, "model_version": info.version, "checkpoint_sha256": info.checkpoint_sha,
        "offline_windows": len(offline.windows), "live_windows": len(live),
        "windows_missing_live": len(off_by_key) - len(keys),
        "windows_signal_identical": int(same_sig.sum()),
        "windows_labs_identical": int(same_labs.sum()),
        "parity_max_abs_diff_live_labs": float(all_diff.max()) if all_diff.size else None,
        "alert_events": len(alerts), "replay_chunks": replayed.chunks, "replay_labs": replayed.labs,
        "replay_s": round(replayed.seconds, 2), "worker_p50_latency_ms": stats.get("p50_latency_ms"),
        "worker_p99_latency_ms": stats.get("p99_latency_ms"), "wall_s": round(time.monotonic() - t_wall, 1),
    })
    for row in summary["per_bed"]:
        ws = [d for d in live if d["bed"] == row["bed_id"]]
        row["timeline"] = sorted([[round((int(d["end_ns"]) - offline.bed_start_ns.get(row["bed_id"], start_ns)) / 1e9, 3),
                                   round(float(d["p"]), 6)] for d in ws])
    alert_rows = [{"bed_id": a.bed_id, "type": a.alert_type, "phase": a.phase, "kind": a.kind, "level": a.level,
                   "t_s": round((a.window_end_ns - offline.bed_start_ns.get(a.bed_id, start_ns)) / 1e9, 3),
                   "probability": a.probability, "alert_id": a.alert_id} for a in alerts]
    write_report(summary, alert_rows, out_dir, window_labels=_labels(beds, scores))
    return summary


def _labels(beds: list[Any], scores: list[Any]) -> tuple[list[int], list[float]]:
    from stream.tools.validate_metrics import window_label

    by_bed = {b.bed_id: b for b in beds}
    pairs = [(window_label(by_bed[s.bed_id], s.end_ns), s.probability) for s in scores if s.bed_id in by_bed]
    return [y for y, _ in pairs], [p for _, p in pairs]


if __name__ == "__main__":
    sys.exit(recording_worker_main(sys.argv[1:]))
