"""`keywatch export`: stored history in the backtest input format (alerts/offline/backtest.py), so
a real fleet's month can be replayed against new rules or thresholds before they go live."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from monitor.store import UsageReader
from monitor.tokens import TokenState, with_series_labels

__all__ = ["export_lines"]


def _iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _token_line(s: TokenState) -> dict[str, Any]:
    lim = s.limits
    limits: dict[str, Any] = {"allowed_models": list(lim.allowed_models)}
    if lim.daily_usd is not None or lim.daily_requests is not None:
        limits["daily_limit"] = {"requests": lim.daily_requests, "amount": lim.daily_usd}
    if lim.monthly_usd is not None:
        limits["monthly_limit"] = {"amount": lim.monthly_usd}
    return {
        "type": "token",
        "provider": s.provider,
        "token": s.series,
        "created_at": _iso(s.created_at),
        "status": s.status,
        "expires_at": _iso(s.expires_at),
        "limits": limits,
        "ip_whitelist": list(s.ip_whitelist),
    }


def export_lines(reader: UsageReader, *, since: float, raw_after: float) -> Iterator[dict[str, Any]]:
    """Token metadata, then usage: one line per stored delta where raw deltas are still kept
    (after `raw_after`), one per hourly rollup before that. Model and client IP are not part of
    the stored deltas, so exported lines carry neither."""
    # Labelled as the daemon labels them: two tokens that share a name stay two histories.
    states = [s for by_id in reader.token_states().values() for s in with_series_labels(by_id).values()]
    for s in sorted(states, key=lambda s: (s.provider, s.name)):
        yield _token_line(s)
    for s in states:
        if s.pk is None:
            continue
        if since < raw_after:
            for p in reader.hourly(s.pk, since):
                if p.ts + 3600 <= raw_after:
                    yield _usage(s, p.ts + 3600, p.cost_usd, p.requests)  # stamped at the hour's end
        for p in reader.deltas(s.pk, max(since, raw_after)):
            yield _usage(s, p.ts, p.cost_usd, p.requests)


def _usage(s: TokenState, ts: float, cost: float, requests: int) -> dict[str, Any]:
    return {
        "ts": _iso(ts),
        "provider": s.provider,
        "token": s.series,
        "requests": requests,
        "cost_usd": round(cost, 9),
    }
