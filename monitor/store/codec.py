"""TokenState <-> the `tokens` row, in one place for the writer and the reader."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import orjson

from monitor.model import TokenLimits
from monitor.spend import UsageMark
from monitor.tokens import TokenState

__all__ = ["TOKEN_COLUMNS", "row_to_state", "state_to_row"]

# The columns after `id`, in the order state_to_row produces them.
TOKEN_COLUMNS = (
    "provider",
    "token_id",
    "name",
    "status",
    "created_at",
    "last_used_at",
    "expires_at",
    "key_sha256",
    "limits_json",
    "ip_whitelist_json",
    "first_seen",
    "last_seen",
    "missing_since",
    "spend_total_usd",
    "requests_total",
    "mark_at",
    "mark_today_usd",
    "mark_month_usd",
    "mark_today_requests",
    "mark_total_usd",
    "corrections_usd_total",
    "mark_peak_today_usd",
    "mark_peak_month_usd",
    "mark_peak_total_usd",
    "mark_peak_today_requests",
)


@lru_cache(maxsize=4096)  # most tokens share a handful of limit sets
def _limits_json(limits: TokenLimits) -> str:
    data = {
        "daily_usd": limits.daily_usd,
        "monthly_usd": limits.monthly_usd,
        "daily_requests": limits.daily_requests,
        "remain_usd": limits.remain_usd,
        "unlimited": limits.unlimited,
        "allowed_models": list(limits.allowed_models),
    }
    return orjson.dumps({k: v for k, v in data.items() if v not in (None, False, [])}).decode()


def state_to_row(s: TokenState) -> tuple[Any, ...]:
    m = s.mark
    return (
        s.provider,
        s.token_id,
        s.name,
        s.status,
        s.created_at,
        s.last_used_at,
        s.expires_at,
        s.key_sha256,
        _limits_json(s.limits),
        _list_json(s.ip_whitelist),
        s.first_seen,
        s.last_seen,
        s.missing_since,
        s.spend_total_usd,
        s.requests_total,
        m.observed_at if m else None,
        m.today_usd if m else None,
        m.month_usd if m else None,
        m.today_requests if m else None,
        m.total_usd if m else None,
        s.corrections_usd_total,
        m.peak_today_usd if m else None,
        m.peak_month_usd if m else None,
        m.peak_total_usd if m else None,
        m.peak_today_requests if m else None,
    )


def row_to_state(row: Any) -> TokenState:
    """`row` is (id, *TOKEN_COLUMNS)."""
    (pk, provider, token_id, name, status, created, used, expires, key_hash, limits, ips, first, last, missing,
     total, requests, mark_at, m_today, m_month, m_req, m_total, corrected, p_today, p_month, p_total,
     p_req) = row  # fmt: skip
    lim = orjson.loads(limits or "{}")
    mark = (
        UsageMark(mark_at, m_today, m_month, m_req, m_total, p_today, p_month, p_total, p_req)
        if mark_at is not None
        else None
    )
    return TokenState(
        pk=pk,
        provider=provider,
        token_id=token_id,
        name=name,
        status=status,
        first_seen=first,
        last_seen=last,
        created_at=created,
        last_used_at=used,
        expires_at=expires,
        key_sha256=key_hash,
        limits=TokenLimits(
            daily_usd=lim.get("daily_usd"),
            monthly_usd=lim.get("monthly_usd"),
            daily_requests=lim.get("daily_requests"),
            remain_usd=lim.get("remain_usd"),
            unlimited=bool(lim.get("unlimited", False)),
            allowed_models=tuple(lim.get("allowed_models", ())),
        ),
        ip_whitelist=tuple(orjson.loads(ips or "[]")),
        missing_since=missing,
        spend_total_usd=total,
        requests_total=requests,
        corrections_usd_total=corrected or 0.0,
        mark=mark,
        usage_known=mark is not None,
    )


@lru_cache(maxsize=4096)
def _list_json(items: tuple[str, ...]) -> str:
    return orjson.dumps(list(items)).decode()
