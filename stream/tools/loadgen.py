"""Simulated bedside gateways for ``mirage bench load``: N beds of 12-lead ECG published in real time.

Beds loop over a small pool of simulated signals (``simulators``) with per-bed offsets; their
acquisition starts are spread over one hop (or synchronised, the worst-case burst) so that
windows complete as they would on a ward. :func:`expected_window_ends` says which windows every
bed must produce, so the bench can count the ones never scored.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import Any

import numpy as np

from stream.settings import Settings


class SignalPool:
    """A few synthetic 12-lead signals (mV, LEADS order) that N beds loop over with offsets."""

    def __init__(self, n: int = 12, seconds: float = 60.0, fs: float = 500.0, seed: int = 7) -> None:
        from simulators.cohort import build_cohort
        from stream.tools.replay import resolve_source

        sc = dataclasses.replace(resolve_source("ward"), beds=n, bed=(), duration_s=seconds, fs=fs, seed=seed)
        beds = build_cohort(sc)
        self.fs = float(beds[0].fs)
        self.signals = [np.asarray(b.read(b.n_samples), np.float32) for b in beds]
        self.length = min(s.shape[1] for s in self.signals)

    def read(self, bed: int, start: int, n: int) -> np.ndarray:
        """``n`` samples of pool signal ``bed % len`` from absolute sample ``start`` (looping, offset per bed)."""
        x = self.signals[bed % len(self.signals)]
        idx = (np.arange(start, start + n) + bed * 3571) % self.length
        return x[:, idx]


SLOT_S = 0.05  # the gateway's scheduling resolution


def bed_phases(beds: int, hop_s: float, chunk_s: float, synchronized: bool) -> list[int]:
    """Per-bed acquisition start offsets in slots of :data:`SLOT_S`.

    Real monitors are not phase-aligned: spreading the beds' starts evenly over one hop makes
    their windows complete evenly over time. ``synchronized`` (every bed at offset 0: all windows
    complete in the same instant) is the worst-case burst.
    """
    if synchronized or beds <= 0:
        return [0] * max(0, beds)
    span = max(1, int(round(hop_s / SLOT_S)))
    return [int(i * span / beds) for i in range(beds)]


async def gateway(pool: SignalPool, settings: Settings, prefix: str, phases: list[int], duration_s: float, chunk_s: float,
                   producer: Any, sent: list[int], t0_ns: int, t0_mono: float) -> None:
    """Publish one bed per entry of ``phases`` in real time for ``duration_s``.

    Bed ``i`` acquires its sample 0 at ``t0 + phases[i]·SLOT_S``; its chunk ``k`` is sent when its
    last sample has been acquired; after ``duration_s`` each bed sends an end-of-stream chunk.
    """
    from engine.config import LEADS
    from stream.core.schema import EcgChunk, encode_chunk

    n = int(round(chunk_s * pool.fs))
    per_chunk = max(1, int(round(chunk_s / SLOT_S)))
    ticks = int(duration_s / chunk_s)
    by_phase: dict[int, list[int]] = {}
    for i, ph in enumerate(phases):
        by_phase.setdefault(ph, []).append(i)
    last_slot = max(phases, default=0) + (ticks + 1) * per_chunk
    pending: set[asyncio.Future] = set()
    for slot in range(1, last_slot + 1):
        await asyncio.sleep(max(0.0, t0_mono + slot * SLOT_S - time.monotonic()))
        for ph, group in by_phase.items():
            if slot - ph <= 0 or (slot - ph) % per_chunk:
                continue
            k = (slot - ph) // per_chunk - 1
            if k > ticks:
                continue
            for i in group:
                bed = f"{prefix}-{i:04d}"
                eos = k == ticks
                x = np.zeros((len(LEADS), 0), np.float32) if eos else pool.read(i, k * n, n)
                start_ns = t0_ns + int(round(ph * SLOT_S * 1e9)) + int(round(k * n * 1e9 / pool.fs))
                chunk = EcgChunk(bed, f"pt-{bed}", k, start_ns, pool.fs, LEADS, x, eos)
                pending.add(await producer.send(settings.topic_chunks, encode_chunk(chunk), key=bed.encode()))
                sent[0] += 1
        done = {f for f in pending if f.done()}
        for f in done:
            f.result()
        pending -= done
    if pending:
        await asyncio.gather(*pending)


def expected_window_ends(prefix: str, phases: list[int], t0_ns: int, samples: int, fs: float, win: int, hop: int
                         ) -> dict[str, list[int]]:
    """End times (ns) of every window each bed produces from ``samples`` samples."""
    out: dict[str, list[int]] = {}
    for i, ph in enumerate(phases):
        t0 = t0_ns + int(round(ph * SLOT_S * 1e9))
        out[f"{prefix}-{i:04d}"] = [t0 + int(round((k * hop + win) * 1e9 / fs)) for k in range((samples - win) // hop + 1)] if samples >= win else []
    return out
