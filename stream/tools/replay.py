"""Publish a cohort to Kafka as bedside monitor gateways would: ECG chunks per bed, labs as reported.

For every bed, consecutive ``chunk_s`` blocks become :class:`stream.core.schema.EcgChunk` messages on the
chunks topic (key = bed id, so one bed's chunks stay in order on one partition), with per-bed
sequence numbers from 0 and ``start_ns`` on a *virtual clock* that starts at the wall-clock time
of the replay (or ``start_ns``) and runs ``speed`` times faster than real time (``speed <= 0``:
as fast as the broker takes it). A chunk is published when the virtual clock passes its last
sample, as a gateway forwards what it has acquired. After its last block each bed sends one
empty chunk flagged ``end_of_stream`` (discharge). Lab results go to the labs topic (key =
patient id) when the virtual clock reaches their report time; results reported before the
stream starts are published first, since they are already in the record when monitoring begins.

Sends are bounded (``max_in_flight``): the replay waits for the broker instead of buffering
without limit. ``stop`` (an :class:`asyncio.Event`, set on Ctrl-C by the CLI) ends the replay
after the current tick; what was sent is flushed.

The pure part (:class:`ReplayPlan`, which turns a cohort into the messages of each tick) never
touches a socket; :func:`replay` wires it to an ``AIOKafkaProducer`` and the clock.
"""

from __future__ import annotations

import asyncio
import csv
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.config import LEADS
from simulators.cohort import BedStream, BedTruth, build_cohort
from simulators.errors import SimulatorError
from simulators.scenario import RecordedSpec, Scenario, load_scenario
from stream.core.schema import EcgChunk, LabResult, encode_chunk
from stream.settings import Settings

log = logging.getLogger(__name__)

__all__ = ["BedTruth", "Message", "ReplayPlan", "ReplayResult", "replay", "resolve_source", "scenario_from_data"]


@dataclass
class ReplayResult:
    """What a replay sent. ``seconds`` is wall time; ``stream_s`` the virtual time covered.

    ``chunks`` counts every chunk including the empty end-of-stream ones; ``samples`` is the
    number of samples per lead over all chunks; ``truth`` has ``mi_onset_s`` relative to
    ``start_ns``.
    """

    chunks: int
    samples: int
    labs: int
    beds: int
    seconds: float
    truth: list[BedTruth]
    start_ns: int = 0
    stream_s: float = 0.0
    interrupted: bool = False
    per_bed_chunks: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Message:
    """One record to publish: ``kind`` is ``"chunk"`` or ``"lab"``."""

    kind: str
    key: bytes
    value: bytes
    n_samples: int = 0


def scenario_from_data(data: str | Path, *, beds: int = 0, per_bed: int = 1, loop: bool = False,
                       duration_s: float = 0.0, mi_only: bool = False, limit: int = 0) -> Scenario:
    """A recorded scenario over a WFDB folder (PTB-XL layout or manifest): one bed per record by default."""
    p = Path(data).resolve()
    if not p.exists():
        raise SimulatorError(f"data folder {p} does not exist")
    rec = RecordedSpec(data=p, per_bed=per_bed, loop=loop, mi_only=mi_only, limit=limit)
    return Scenario(name=p.name, path=None, duration_s=duration_s or 60.0, beds=beds, recorded=rec)


def resolve_source(source: str | Path | Scenario) -> Scenario:
    """A scenario from a :class:`Scenario`, a scenario file / built-in name, or a WFDB folder."""
    if isinstance(source, Scenario):
        return source
    p = Path(source)
    if p.is_dir():
        return scenario_from_data(p)
    return load_scenario(p)


class ReplayPlan:
    """The messages of each tick of a replay (pure: no clock, no sockets).

    Tick ``k`` covers virtual time ``[k * chunk_s, (k + 1) * chunk_s)``; its messages are the lab
    results reported by its end, then one chunk per bed that still has samples, then the
    end-of-stream chunk of each bed that has just run out.
    """

    def __init__(self, beds: list[BedStream], start_ns: int, chunk_s: float = 0.5) -> None:
        if not (chunk_s > 0 and math.isfinite(chunk_s)):
            raise SimulatorError(f"chunk_s={chunk_s!r} must be > 0")
        self.beds, self.start_ns, self.chunk_s = beds, int(start_ns), float(chunk_s)
        self._seq = {b.bed_id: 0 for b in beds}
        self._pos = {b.bed_id: 0 for b in beds}
        self._done: set[str] = set()
        self._labs = sorted(((d.reported_s, b.bed_id, b.patient_id, d) for b in beds for d in b.labs), key=lambda x: (x[0], x[1]))
        self._lab_i = 0
        self.n_ticks = max(math.ceil(b.n_samples / b.fs / self.chunk_s) for b in beds) + 1 if beds else 0
        self.total_chunks = sum(self.chunks_of(b) + 1 for b in beds)

    def chunks_of(self, bed: BedStream) -> int:
        """Data chunks the bed will send (without its end-of-stream chunk)."""
        ticks = math.ceil(bed.n_samples / bed.fs / self.chunk_s) + 1
        return sum(1 for k in range(ticks) if self._edge(bed, k + 1) > self._edge(bed, k))

    def _edge(self, bed: BedStream, k: int) -> int:
        # Sample index at the end of tick k-1; exact for any fs * chunk_s (no drift).
        return min(bed.n_samples, int(math.floor(k * self.chunk_s * bed.fs + 1e-9)))

    def _ns(self, t_s: float) -> int:
        return self.start_ns + int(round(t_s * 1e9))

    @property
    def done(self) -> bool:
        return len(self._done) == len(self.beds) and self._lab_i >= len(self._labs)

    def tick(self, k: int) -> list[Message]:
        """The messages due by the end of tick ``k`` (call with k = 0, 1, 2, ... in order)."""
        t_end = (k + 1) * self.chunk_s
        out: list[Message] = []
        while self._lab_i < len(self._labs) and (self._labs[self._lab_i][0] <= t_end or len(self._done) == len(self.beds)):
            _, bed_id, patient, d = self._labs[self._lab_i]
            lab = LabResult(patient, d.loinc, d.value, d.unit, self._ns(d.observed_s), self._ns(d.reported_s), bed_id)
            out.append(Message("lab", patient.encode(), lab.to_bytes()))
            self._lab_i += 1
        for b in self.beds:
            if b.bed_id in self._done:
                continue
            lo, hi = self._pos[b.bed_id], self._edge(b, k + 1)
            if hi > lo:
                x = b.read(hi - lo)
                out.append(self._chunk(b, lo, x, False))
                self._pos[b.bed_id] = lo + x.shape[1]
            if self._pos[b.bed_id] >= b.n_samples:
                out.append(self._chunk(b, self._pos[b.bed_id], None, True))
                self._done.add(b.bed_id)
        return out

    def _chunk(self, b: BedStream, start: int, x: Any, eos: bool) -> Message:
        import numpy as np

        samples = np.zeros((len(LEADS), 0), np.float32) if x is None else x
        chunk = EcgChunk(b.bed_id, b.patient_id, self._seq[b.bed_id], self._ns(start / b.fs), b.fs, LEADS, samples, eos)
        self._seq[b.bed_id] += 1
        return Message("chunk", b.bed_id.encode(), encode_chunk(chunk), int(samples.shape[1]))


async def replay(source: str | Path | Scenario, settings: Settings, *, speed: float = 1.0, chunk_s: float = 0.5,
                 progress: bool = False, stop: asyncio.Event | None = None, start_ns: int | None = None,
                 max_in_flight: int = 512, producer: Any = None) -> ReplayResult:
    """Publish ``source`` (scenario file or name, WFDB folder, or :class:`Scenario`) to Kafka.

    Args:
        source: what to play.
        settings: broker address, security and topic names.
        speed: virtual seconds per wall second (1 = real time; ``<= 0`` = as fast as possible).
        chunk_s: seconds of signal per chunk.
        progress: show a tqdm progress bar of chunks sent.
        stop: when set, the replay stops after the current tick (flushing what was sent).
        start_ns: the virtual clock's start (default: now).
        max_in_flight: most unacknowledged sends before the replay waits for the broker.
        producer: an already started aiokafka producer to use (not stopped here); default: own one.

    Returns:
        counts, wall time and the ground truth of every bed.
    """
    sc = resolve_source(source)
    beds = await asyncio.to_thread(build_cohort, sc)
    start = time.time_ns() if start_ns is None else int(start_ns)
    plan = ReplayPlan(beds, start, chunk_s)
    own = producer is None
    if own:
        from aiokafka import AIOKafkaProducer

        producer = AIOKafkaProducer(**settings.kafka_client_kwargs(), acks="all", linger_ms=5,
                                    max_request_size=settings.max_message_bytes, enable_idempotence=False)
        await producer.start()
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=plan.total_chunks, unit="chunk", desc=f"replay {sc.name} ({len(beds)} beds)")
    pending: set[asyncio.Future] = set()
    chunks = samples = labs = 0
    per_bed: dict[str, int] = {}
    interrupted = False
    t0 = time.monotonic()
    log.info("replay %s: %d beds, speed %s, chunk %.2f s", sc.name, len(beds), speed, chunk_s)

    async def settle(limit: int) -> None:
        while len(pending) > limit:
            done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            pending.difference_update(done)
            for f in done:
                f.result()  # raise a send failure here, not later

    ahead: asyncio.Future | None = None
    try:
        k = 0
        ahead = asyncio.ensure_future(asyncio.to_thread(plan.tick, 0))  # build tick k+1 while tick k is sent
        while ahead is not None:
            if stop is not None and stop.is_set():
                interrupted = True
                break
            if speed > 0:
                due = t0 + (k + 1) * chunk_s / speed
                delay = due - time.monotonic()
                if delay > 0:
                    if stop is not None:
                        try:
                            await asyncio.wait_for(stop.wait(), delay)
                            interrupted = True
                            break
                        except asyncio.TimeoutError:
                            pass
                    else:
                        await asyncio.sleep(delay)
            msgs = await ahead
            ahead = None if plan.done else asyncio.ensure_future(asyncio.to_thread(plan.tick, k + 1))
            for m in msgs:
                topic = settings.topic_chunks if m.kind == "chunk" else settings.topic_labs
                pending.add(await producer.send(topic, m.value, key=m.key))
                if m.kind == "chunk":
                    chunks += 1
                    samples += m.n_samples
                    bed = m.key.decode()
                    per_bed[bed] = per_bed.get(bed, 0) + 1
                    if bar is not None:
                        bar.update(1)
                else:
                    labs += 1
                await settle(max_in_flight)
            k += 1
        await settle(0)
        await producer.flush()
    finally:
        if ahead is not None:  # interrupted: let the tick being built finish (it runs in a thread)
            await asyncio.gather(ahead, return_exceptions=True)
        if bar is not None:
            bar.close()
        if own:
            await producer.stop()
    seconds = time.monotonic() - t0
    stream_s = max((b.n_samples / b.fs for b in beds), default=0.0)
    log.info("replay %s: %d chunks, %d labs in %.1f s%s", sc.name, chunks, labs, seconds, " (interrupted)" if interrupted else "")
    return ReplayResult(chunks, samples, labs, len(beds), seconds, [b.truth for b in beds], start, stream_s, interrupted, per_bed)


def write_truth(truth: list, path: Path, start_ns: int) -> None:
    """The ground truth of a replay as CSV (one row per bed; ``mi_onset_s`` relative to ``start_ns``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["bed_id", "patient_id", "record", "mi", "mi_onset_s", "label", "territory", "confounders", "start_ns"])
        for t in truth:
            w.writerow([t.bed_id, t.patient_id, t.record, int(t.mi), "" if t.mi_onset_s is None else t.mi_onset_s, t.label,
                        t.territory, ";".join(t.confounders), start_ns])
