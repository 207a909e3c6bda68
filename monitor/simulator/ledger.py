"""Booking spend: the relay's resetting day/month windows, the lifetime truth, and a bounded log of
what was booked (for log-based flavours and for tests that check what a poller should have seen)."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from typing import NamedTuple

from .localtime import LocalTime
from .token import SimToken

__all__ = ["Event", "EventLog", "Ledger"]


class Event(NamedTuple):
    ts: float
    token_id: str
    token_name: str  # as named when it happened: a later rename does not rewrite history
    model: str
    ip: str
    requests: int
    cost_usd: float
    seq: int  # unique and increasing in booking order: a request id for log flavours


class EventLog:
    """A ring buffer. Tokens catch up lazily, so events arrive per token in bursts, not in global
    time order: `between()` sorts."""

    __slots__ = ("_events", "_seq", "dropped")

    def __init__(self, maxlen: int = 100_000) -> None:
        self._events: deque[Event] = deque(maxlen=maxlen)
        self._seq = 0
        self.dropped = 0

    def append(self, ts: float, tok: SimToken, model: str, ip: str, requests: int, cost: float) -> None:
        self._seq += 1
        if len(self._events) == self._events.maxlen:
            self.dropped += 1
        self._events.append(Event(ts, tok.id, tok.name, model, ip, requests, cost, self._seq))

    def __len__(self) -> int:
        return len(self._events)

    @property
    def seq(self) -> int:
        """The last booked event's seq: changes whenever anything is booked (cheap cache key)."""
        return self._seq

    def __iter__(self) -> Iterator[Event]:
        return iter(self._events)

    def between(self, since: float, until: float, token_id: str | None = None) -> list[Event]:
        """Events with since <= ts <= until, oldest first."""
        hits = [
            e for e in self._events if since <= e.ts <= until and (token_id is None or e.token_id == token_id)
        ]
        hits.sort(key=lambda e: (e.ts, e.seq))
        return hits


class Ledger:
    __slots__ = ("events", "local")

    def __init__(self, local: LocalTime, events: EventLog) -> None:
        self.local = local
        self.events = events

    def roll_to(self, tok: SimToken, ts: float) -> None:
        """Reset the windows a relay would have reset by `ts` (its local midnight / month start)."""
        day, month, _ = self.local.info(ts)
        if day != tok.day_key or month != tok.month_key:
            self._roll(tok, day, month)

    @staticmethod
    def _roll(tok: SimToken, day: int, month: int) -> None:
        if month != tok.month_key:
            tok.month_usage = 0.0
            tok.month_key = month
        tok.today_usage = 0.0
        tok.today_requests = 0
        tok.day_key = day

    def book(self, tok: SimToken, ts: float, requests: int, cost: float, model: str, ip: str) -> None:
        cost = round(cost, 6)
        self.roll_to(tok, ts)
        tok.today_usage = round(tok.today_usage + cost, 6)
        tok.month_usage = round(tok.month_usage + cost, 6)
        tok.today_requests += requests
        tok.lifetime_usd = round(tok.lifetime_usd + cost, 6)
        tok.lifetime_requests += requests
        if tok.last_used_at is None or ts > tok.last_used_at:
            tok.last_used_at = ts
        self.events.append(ts, tok, model, ip, requests, cost)
