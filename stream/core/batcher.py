"""Micro-batching of windows for the model (pure core, clock injected).

Windows from many beds arrive one by one; the model is far more efficient on a batch
(about 90-100 samples/s on 2 CPU cores at batch 32 versus a fraction of that one by one, see
/work/shared/ENVIRONMENT.md). :class:`MicroBatcher` releases a batch when it holds ``max_batch``
items or when its oldest item has waited ``max_wait_s``, whichever comes first, so latency is
bounded under light load and throughput is maximal under heavy load (the classic Nagle /
Triton dynamic-batcher trade-off).

The batcher never sleeps: the shell asks :meth:`MicroBatcher.time_to_deadline` how long it may
wait for more input, then calls :meth:`MicroBatcher.poll`.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Callable, Generic, TypeVar

from stream.errors import WindowError

T = TypeVar("T")
_EPS = 1e-9  # clock arithmetic in float seconds: "due" within a nanosecond counts as due


class MicroBatcher(Generic[T]):
    """Collect items into batches of at most ``max_batch``, waiting at most ``max_wait_s``.

    Args:
        max_batch: the largest batch released.
        max_wait_s: the longest the oldest pending item waits before a partial batch is released.
        clock: ``() -> seconds`` (monotonic), injected for tests.
    """

    def __init__(self, max_batch: int, max_wait_s: float, clock: Callable[[], float] | None = None) -> None:
        if max_batch < 1:
            raise WindowError(f"max_batch={max_batch} must be >= 1")
        if max_wait_s < 0:
            raise WindowError(f"max_wait_s={max_wait_s} must be >= 0")
        self.max_batch = int(max_batch)
        self.max_wait_s = float(max_wait_s)
        self._clock = clock or time.monotonic
        self._items: deque[tuple[float, T]] = deque()

    def __len__(self) -> int:
        return len(self._items)

    def add(self, item: T) -> list[T] | None:
        """Add one item; return a full batch if this filled one, else None."""
        self._items.append((self._clock(), item))
        if len(self._items) >= self.max_batch:
            return self._take(self.max_batch)
        return None

    def extend(self, items: list[T]) -> list[list[T]]:
        """Add several items; return every full batch they completed."""
        out: list[list[T]] = []
        for item in items:
            batch = self.add(item)
            if batch is not None:
                out.append(batch)
        return out

    def time_to_deadline(self) -> float | None:
        """Seconds until the oldest item must be released (0 = now), or None when empty."""
        if not self._items:
            return None
        remaining = self._items[0][0] + self.max_wait_s - self._clock()
        return 0.0 if remaining <= _EPS else remaining

    def poll(self) -> list[T] | None:
        """Release a batch if the oldest item has waited ``max_wait_s`` (or a batch is full)."""
        if not self._items:
            return None
        remaining = self._items[0][0] + self.max_wait_s - self._clock()
        if len(self._items) >= self.max_batch or remaining <= _EPS:
            return self._take(self.max_batch)
        return None

    def flush(self) -> list[list[T]]:
        """Release everything pending now, in batches of at most ``max_batch``."""
        out: list[list[T]] = []
        while self._items:
            out.append(self._take(self.max_batch))
        return out

    def _take(self, n: int) -> list[T]:
        n = min(n, len(self._items))
        return [self._items.popleft()[1] for _ in range(n)]
