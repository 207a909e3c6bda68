"""Booked events by time, and a relay kept fresh cheaply: what log and usage endpoints read.

A full catch-up costs O(tokens); traffic only moves on the step grid, so it runs once per step
(and whenever anything else was booked in between, the event seq tells). The sorted view is
rebuilt only when the event log changed."""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right

from .ledger import Event
from .model import SimulatedRelay
from .token import SimToken

__all__ = ["EventIndex"]


class EventIndex:
    def __init__(self, relay: SimulatedRelay) -> None:
        self._relay = relay
        self._step_k: int | None = None
        self._seq = -1
        self._events: list[Event] = []
        self._ts: list[float] = []

    def sync(self) -> float:
        """Every token up to the relay's now, at most once per traffic step. Returns now."""
        relay = self._relay
        now = relay.now()
        k = math.floor(now / relay.step)
        if k != self._step_k:
            relay.sync()
            self._step_k = k
        return now

    def listed(self) -> list[SimToken]:
        """Listed tokens, up to date, in creation order."""
        self.sync()
        return self._relay.listed()

    @property
    def seq(self) -> int:
        """Changes whenever an event was booked: a cache key for query results."""
        self.sync()
        return self._relay.events.seq

    def between(self, since: float, until: float, *, until_inclusive: bool = True) -> list[Event]:
        """Events with since <= ts <= until (or < until), oldest first."""
        self._refresh()
        lo = bisect_left(self._ts, since)
        hi = bisect_right(self._ts, until) if until_inclusive else bisect_left(self._ts, until)
        return self._events[lo:hi]

    def _refresh(self) -> None:
        self.sync()
        seq = self._relay.events.seq
        if seq != self._seq:
            self._events = sorted(self._relay.events, key=lambda e: (e.ts, e.seq))
            self._ts = [e.ts for e in self._events]
            self._seq = seq
