"""How late the daemon's event loop runs: a task sleeps a fixed interval and records how much
later than asked it woke. The poll, the alert engine and the HTTP API share one loop, so any of
them hogging it (a long synchronous stretch) shows here as lag, and in every request's latency.

Exported as `keywatch_event_loop_lag_seconds`: the worst lag over the last minute, not the
latest, so a stall between two scrapes is not lost."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable

from monitor.metrics import Family

__all__ = ["LAG_INTERVAL", "LAG_WINDOW", "LoopLag"]

LAG_INTERVAL = 0.25  # seconds between wake-ups: fine enough to see a 100 ms stall, costs nothing
LAG_WINDOW = 60.0  # the gauge is the worst lag over this many seconds


class LoopLag:
    """Lag samples over a sliding window. `clock` is monotonic seconds (injected in tests)."""

    def __init__(
        self,
        *,
        interval: float = LAG_INTERVAL,
        window: float = LAG_WINDOW,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.interval = interval
        self.window = window
        self._clock = clock
        self._samples: deque[tuple[float, float]] = deque()  # (woke at, lag), oldest first
        self._task: asyncio.Task[None] | None = None

    # --- samples ------------------------------------------------------------------------
    def observe(self, lag: float) -> None:
        now = self._clock()
        self._samples.append((now, max(lag, 0.0)))
        self._trim(now)

    def worst(self) -> float:
        """The worst lag seen within the window (0 before the first sample)."""
        self._trim(self._clock())
        return max((lag for _, lag in self._samples), default=0.0)

    def _trim(self, now: float) -> None:
        while self._samples and self._samples[0][0] < now - self.window:
            self._samples.popleft()

    # --- the sampling task --------------------------------------------------------------
    async def run(self) -> None:
        while True:
            due = self._clock() + self.interval
            await asyncio.sleep(self.interval)
            self.observe(self._clock() - due)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self.run(), name="loop-lag")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # --- export -------------------------------------------------------------------------
    def families(self) -> list[Family]:
        """A live metrics source: read at every scrape, never cached with the per-poll body."""
        return [
            Family(
                "keywatch_event_loop_lag_seconds",
                "gauge",
                "Worst delay of the daemon's event loop over the last minute: how much later than "
                "scheduled a timer fired.",
                [({}, self.worst())],
            )
        ]
