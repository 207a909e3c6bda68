"""one-api family quota facts of a simulated token: its lifetime grant and what remains of it."""

from __future__ import annotations

from .token import SimToken

__all__ = ["grant_usd", "is_unlimited", "remain_usd"]

_GRANT_MONTHS = 24  # a limited token was granted two years of its monthly budget
_DAYS_PER_MONTH = 30


def grant_usd(tok: SimToken) -> float | None:
    """The USD granted at creation (remain + used), or None for a token without USD limits."""
    if tok.quota_usd is not None:
        return tok.quota_usd
    lim = tok.limits
    if lim.monthly_usd is not None:
        return lim.monthly_usd * _GRANT_MONTHS
    if lim.daily_usd is not None:
        return lim.daily_usd * _DAYS_PER_MONTH * _GRANT_MONTHS
    return None


def is_unlimited(tok: SimToken) -> bool:
    if tok.unlimited_quota is not None:
        return tok.unlimited_quota
    return grant_usd(tok) is None


def remain_usd(tok: SimToken) -> float:
    """What a limited token may still spend (0 for unlimited tokens, whose quota never moves)."""
    grant = grant_usd(tok)
    if is_unlimited(tok) or grant is None:
        return 0.0
    return max(grant - tok.lifetime_usd, 0.0)
