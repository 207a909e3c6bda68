"""The simulator's time: a base clock run at a chosen speed, which control calls can push forward."""

from __future__ import annotations

from monitor.clock import Clock, SystemClock

__all__ = ["SimClock"]


class SimClock:
    """Simulated seconds = `speed` x base seconds, plus any jumps. Never goes backwards, so a relay
    window never un-resets. It is a `monitor.clock.Clock`: a demo hands the same object to the
    daemon so both sides agree on what time it is."""

    __slots__ = ("_anchor_base", "_anchor_sim", "_base", "_last", "_speed")

    def __init__(self, base: Clock | None = None, *, speed: float = 1.0, start: float | None = None) -> None:
        if speed < 0:
            raise ValueError("speed must be >= 0")
        self._base: Clock = base if base is not None else SystemClock()
        self._speed = float(speed)
        self._anchor_base = self._base.now()
        self._anchor_sim = self._anchor_base if start is None else float(start)
        self._last = self._anchor_sim

    @property
    def speed(self) -> float:
        return self._speed

    def now(self) -> float:
        t = self._anchor_sim + (self._base.now() - self._anchor_base) * self._speed
        if t > self._last:
            self._last = t
        return self._last

    def set_speed(self, speed: float) -> None:
        if speed < 0:
            raise ValueError("speed must be >= 0")
        # Re-anchor so the change applies from now on, without a jump.
        self._anchor_sim = self.now()
        self._anchor_base = self._base.now()
        self._speed = float(speed)

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("time only moves forward")
        self._anchor_sim = self._last = self.now() + seconds
        self._anchor_base = self._base.now()

    def advance_to(self, ts: float) -> None:
        delta = ts - self.now()
        if delta > 0:
            self.advance(delta)
