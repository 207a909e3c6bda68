"""The collector policy: survivors frozen after each cycle, a full collection once a day."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from monitor.clock import FakeClock
from monitor.gcpolicy import GcPolicy


@pytest.fixture(autouse=True)
def thawed() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()


class Cycle:
    def __init__(self) -> None:
        self.me = self


def test_survivors_are_frozen_and_frozen_cycles_are_reclaimed_once_a_day() -> None:
    clock = FakeClock(1_000.0)
    policy = GcPolicy(clock, full_every=86400.0)
    garbage = Cycle()
    ref = weakref.ref(garbage)
    policy.settle()
    assert gc.get_freeze_count() > 0
    del garbage
    gc.collect()
    assert ref() is not None  # frozen: ordinary collections no longer walk it (that is the point)
    clock.advance(3600.0)
    policy.settle()
    assert ref() is not None  # not a day yet
    clock.advance(86400.0)
    policy.settle()  # the daily full collection: unfreezes, collects, freezes again
    assert ref() is None
    assert gc.get_freeze_count() > 0
