"""Rows that humans and scripts read: `keywatch tokens`, GET /api/v1/tokens, `keywatch history`."""

from __future__ import annotations

import math
import operator
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, Final

import orjson

from monitor.policy import PolicyBook
from monitor.tokens import TokenState

__all__ = ["TokenRowCache", "iso", "iso_clamped", "present", "token_row", "token_rows"]

Scores = Mapping[tuple[str, str], float]  # (provider, token id) -> anomaly score
# The range datetime renders (0001-01-01 .. 9999-12-31T23:59:59Z); times beyond it are clamped.
_FIRST: Final = datetime(1, 1, 1, tzinfo=UTC)
_LAST: Final = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)


def present(wall: float, last_polls: Iterable[float | None]) -> float:
    """The time a read command judges stored data at ("since 3h", "unused for 30 days"): the wall
    clock, or the newest poll when that is later. Time never runs back from the newest data, even
    when a clock ahead of ours wrote it (the demo's, which runs 60x faster than the real one)."""
    return max([wall, *(t for t in last_polls if t is not None)])


def iso(ts: float | None) -> str | None:
    return None if ts is None else iso_clamped(ts)


def iso_clamped(ts: float) -> str:
    """`ts` as ISO 8601 UTC; a time datetime cannot hold (a relay's `expires_at` of 6e17, a row an
    older version stored) is clamped to year 1 or 9999 rather than fail the whole listing."""
    if math.isnan(ts) or ts >= _LAST.timestamp():
        when = _LAST
    elif ts <= _FIRST.timestamp():
        when = _FIRST
    else:
        when = datetime.fromtimestamp(ts, UTC)
    return when.isoformat().replace("+00:00", "Z")


def token_row(s: TokenState, policies: PolicyBook, score: float | None = None) -> dict[str, Any]:
    budgets = policies.budgets(s)
    today, month = s.day_usd, s.month_usd
    used = [
        spent / limit * 100
        for spent, limit in ((today, budgets.day), (month, budgets.month))
        if spent is not None and limit
    ]
    return {
        "provider": s.provider,
        "name": s.name,
        "token_id": s.token_id,
        "status": s.status,
        "env": s.env or None,
        "project": s.project or None,
        "today_usd": today,
        "month_usd": month,
        "spend_total_usd": s.spend_total_usd if s.usage_known else None,
        "budget_day_usd": budgets.day,
        "budget_month_usd": budgets.month,
        "budget_used_pct": round(max(used), 1) if used else None,
        "last_used_at": iso(s.last_used_at),
        "expires_at": iso(s.expires_at),
        "created_at": iso(s.created_at),
        "anomaly_score": score,
        "protected": policies.protected(s.name),
    }


def _order(s: TokenState) -> tuple[str, str]:
    return (s.provider, s.name)


def token_rows(
    states: Iterable[TokenState], policies: PolicyBook, scores: Scores | None = None
) -> list[dict[str, Any]]:
    scores = scores or {}
    ordered = sorted(states, key=_order)
    return [token_row(s, policies, scores.get((s.provider, s.token_id))) for s in ordered]


class TokenRowCache:
    """GET /api/v1/tokens as ready JSON bytes, the same bytes as orjson.dumps(token_rows(...)).

    A request that finds the same TokenState objects (states are immutable and replaced only when
    something changed), the same PolicyBook object and equal scores gets the body built before: a
    10,000-token fleet costs an identity scan, not 10,000 rows. When something changed, only the
    rows whose state or score changed are serialized again; the rest are joined from the cache."""

    def __init__(self) -> None:
        self._rows: dict[int, tuple[TokenState, float | None, bytes]] = {}  # id(state) -> its row
        # (body, the states, policies and scores it was built from)
        self._built: tuple[bytes, list[TokenState], PolicyBook, dict[tuple[str, str], float]] | None = None

    def body(self, states: Iterable[TokenState], policies: PolicyBook, scores: Scores | None = None) -> bytes:
        current = list(states)
        wanted = dict(scores or {})  # a copy: the detector updates its mapping in place
        return self.ready(current, policies, wanted) or self.build(current, policies, wanted)

    def ready(
        self, current: list[TokenState], policies: PolicyBook, wanted: dict[tuple[str, str], float]
    ) -> bytes | None:
        """The body built before, if it is still the answer (an identity scan); else None."""
        built = self._built  # one attribute, replaced whole: a build in a thread is seen all or nothing
        if built is None:
            return None
        body, states, built_policies, scores = built
        if (
            policies is built_policies
            and wanted == scores
            and len(current) == len(states)
            and all(map(operator.is_, current, states))
        ):
            return body
        return None

    def build(
        self, current: list[TokenState], policies: PolicyBook, wanted: dict[tuple[str, str], float]
    ) -> bytes:
        """Build the body again from these inputs (safe in a worker thread, one build at a time:
        only builds touch the row cache)."""
        if self._built is not None and policies is not self._built[2]:
            self._rows.clear()
        body = self._render(current, policies, wanted)
        self._built = (body, current, policies, wanted)
        return body

    def _render(self, states: list[TokenState], policies: PolicyBook, scores: Scores) -> bytes:
        rows: dict[int, tuple[TokenState, float | None, bytes]] = {}
        parts: list[bytes] = []
        for s in sorted(states, key=_order):
            score = scores.get((s.provider, s.token_id))
            cached = self._rows.get(id(s))
            if cached is None or cached[0] is not s or cached[1] != score:
                # A copy: orjson's bytes keep its 4 KB working buffer, ten times a row's size.
                row = memoryview(orjson.dumps(token_row(s, policies, score))).tobytes()
                cached = (s, score, row)
            rows[id(s)] = cached
            parts.append(cached[2])
        self._rows = rows  # states gone from the fleet leave the cache here
        return b"[" + b",".join(parts) + b"]"
