"""Rows that humans and scripts read: `keywatch tokens`, GET /api/v1/tokens, `keywatch history`."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from monitor.policy import PolicyBook
from monitor.tokens import TokenState

__all__ = ["iso", "token_row", "token_rows"]


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


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


def token_rows(
    states: Iterable[TokenState], policies: PolicyBook, scores: Mapping[tuple[str, str], float] | None = None
) -> list[dict[str, Any]]:
    scores = scores or {}
    ordered = sorted(states, key=lambda s: (s.provider, s.name))
    return [token_row(s, policies, scores.get((s.provider, s.token_id))) for s in ordered]
