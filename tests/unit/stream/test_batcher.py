"""MicroBatcher: size and wait bounds with an injected clock."""

from __future__ import annotations

import pytest

from stream.core.batcher import MicroBatcher
from stream.errors import WindowError


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_full_batch_is_released_immediately() -> None:
    b = MicroBatcher(3, 0.05, clock=Clock())
    assert b.add(1) is None and b.add(2) is None
    assert b.add(3) == [1, 2, 3]
    assert len(b) == 0 and b.time_to_deadline() is None


def test_partial_batch_waits_for_the_oldest_item_deadline() -> None:
    clk = Clock()
    b = MicroBatcher(10, 0.05, clock=clk)
    b.add("a")
    clk.t += 0.03
    b.add("b")
    assert b.poll() is None
    assert b.time_to_deadline() == pytest.approx(0.02)
    clk.t += 0.02
    assert b.time_to_deadline() == 0.0
    assert b.poll() == ["a", "b"]
    assert b.poll() is None


def test_extend_splits_into_max_sized_batches_in_order() -> None:
    b = MicroBatcher(4, 1.0, clock=Clock())
    assert b.extend(list(range(10))) == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert b.flush() == [[8, 9]]
    assert b.flush() == []


def test_zero_wait_releases_on_poll() -> None:
    b = MicroBatcher(8, 0.0, clock=Clock())
    b.add(1)
    assert b.poll() == [1]


def test_invalid_settings_name_the_value() -> None:
    with pytest.raises(WindowError, match="max_batch=0"):
        MicroBatcher(0, 0.1)
    with pytest.raises(WindowError, match="max_wait_s=-1"):
        MicroBatcher(1, -1)
