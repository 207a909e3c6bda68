"""Time as an injected dependency: rules, alerts, retention, rollovers and backtests run on it."""

from __future__ import annotations

import time
from typing import Protocol

__all__ = ["Clock", "FakeClock", "SystemClock"]


class Clock(Protocol):
    def now(self) -> float:
        """Seconds since the epoch (UTC)."""
        ...


class SystemClock:
    def now(self) -> float:
        return time.time()


class FakeClock:
    """A clock tests and backtests move by hand."""

    def __init__(self, start: float) -> None:
        self._now = float(start)

    def now(self) -> float:
        return self._now

    def set(self, ts: float) -> None:
        self._now = float(ts)

    def advance(self, seconds: float) -> None:
        self._now += seconds
