"""The collector policy: young collections as usual, no automatic full ones, one a day."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from monitor.clock import FakeClock
from monitor.gcpolicy import GcPolicy


@pytest.fixture(autouse=True)
def thresholds() -> Iterator[None]:
    saved = gc.get_threshold()
    yield
    gc.set_threshold(*saved)


class Cycle:
    def __init__(self) -> None:
        self.me = self


def test_no_automatic_full_collections_and_one_a_day() -> None:
    clock = FakeClock(1_000.0)
    policy = GcPolicy(clock, full_every=86400.0)
    assert gc.get_threshold()[2] >= 1 << 30
    old = Cycle()
    ref = weakref.ref(old)
    gc.collect()  # moves it (alive) to the oldest generation
    del old
    for _ in range(20):
        gc.collect(1)  # what the automatic collections now are: young and middle only
    assert ref() is not None  # a cycle in the oldest generation waits for the full collection
    clock.advance(3600.0)
    policy.settle()
    assert ref() is not None  # not a day yet
    clock.advance(86400.0)
    policy.settle()
    assert ref() is None


def test_young_cycles_are_still_reclaimed_at_once() -> None:
    GcPolicy(FakeClock(0.0))
    young = Cycle()
    ref = weakref.ref(young)
    del young
    gc.collect(0)
    assert ref() is None
