"""Long CPU work on the event loop, in slices: /metrics, the API and the polls keep answering.

Work that grows with the fleet (rules over 100,000 tokens, their alerts) is written as a
generator that yields between items; `paced` drives it, giving the loop a turn whenever a slice
has run `slice_s`, and `drain` runs it straight through for callers with no loop to share (tests,
the backtest's simulated clock). One piece of code, two ways to run it."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Iterable

__all__ = ["SLICE", "Pacer", "drain", "paced"]

SLICE = 0.02  # seconds of work between turns of the loop: well under the 100 ms a stall is


async def paced(steps: Iterable[object], slice_s: float = SLICE) -> None:
    since = time.perf_counter()
    for _ in steps:
        if time.perf_counter() - since >= slice_s:
            await asyncio.sleep(0)
            since = time.perf_counter()


def drain(steps: Iterable[object]) -> None:
    deque(steps, maxlen=0)


class Pacer:
    """For a long loop inside a coroutine: `await pacer.turn()` between items gives the event
    loop a turn once `slice_s` has run (checking the clock only every `every` items)."""

    def __init__(self, slice_s: float = SLICE, *, every: int = 256) -> None:
        self._slice = slice_s
        self._every = every
        self._count = 0
        self._since = time.perf_counter()

    async def turn(self) -> None:
        self._count += 1
        if self._count % self._every:
            return
        if time.perf_counter() - self._since >= self._slice:
            await asyncio.sleep(0)
            self._since = time.perf_counter()
