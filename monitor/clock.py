"""Time as an injected dependency: rules, alerts, retention, rollovers and backtests run on it."""

from __future__ import annotations

import time
from typing import Protocol

__all__ = ["Clock", "FakeClock", "SteppingClock", "SystemClock", "uptime"]


def uptime() -> float:
    """Seconds on a clock that keeps counting while the host sleeps (a suspended laptop or VM
    wakes knowing its leases and claims ran out); the monotonic clock where there is none."""
    boottime = getattr(time, "CLOCK_BOOTTIME", None)
    return time.clock_gettime(boottime) if boottime is not None else time.monotonic()


class Clock(Protocol):
    def now(self) -> float:
        """Seconds since the epoch (UTC)."""
        ...


class SteppingClock(Clock, Protocol):
    """A wall clock that can be stepped (NTP, an operator, a VM resume) beside a monotonic one:
    what the poller checks period boundaries against. Clocks without `monotonic` are trusted."""

    def monotonic(self) -> float:
        """Seconds that only move forward, at the wall clock's rate."""
        ...


class SystemClock:
    def now(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        try:  # boot time also counts a suspended host, where the wall clock moved on too
            return time.clock_gettime(time.CLOCK_BOOTTIME)
        except (AttributeError, OSError):  # not Linux
            return time.monotonic()


class FakeClock:
    """A clock tests and backtests move by hand. `advance` moves time; `step` moves only the wall
    clock, as NTP or an operator stepping the system clock would."""

    def __init__(self, start: float) -> None:
        self._now = float(start)
        self._mono = 0.0

    def now(self) -> float:
        return self._now

    def monotonic(self) -> float:
        return self._mono

    def set(self, ts: float) -> None:
        self._mono += max(float(ts) - self._now, 0.0)
        self._now = float(ts)

    def advance(self, seconds: float) -> None:
        self._now += seconds
        self._mono += seconds

    def step(self, seconds: float) -> None:
        self._now += seconds
