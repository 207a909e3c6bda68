"""One OpenRouter API key, as the management API lists it, turned into an Observation
(docs/relay-adapters.md, `openrouter`).

Money is USD (OpenRouter credits are dollars): `usage` is the key's lifetime spend and becomes
`total_usd`, the never-resetting counter keywatch accounts by. `usage_daily` and `usage_monthly`
reset at midnight UTC (the 1st of the month for the month): they become the day and month windows
only when the provider's `timezone` keeps midnight where UTC has it (`utc_aligned`); otherwise the
windows come from keywatch's own history, on the configured calendar. `usage_weekly` (weeks from
Monday, UTC) has no keywatch window, and the `byok_*` figures are what the key's own provider
accounts billed elsewhere: neither is spend here.

OpenRouter shows no last-use time. The windows bound it: spend today means a use since midnight
UTC, this week since Monday, this month since the 1st (`last_used_at` is that start: never later
than the real last use, so idle time is over-, never under-stated, by less than the window). A
key with no spend this month has no such bound: its last use is unknown (None).

`limit` is one spending cap in USD that resets daily, weekly, monthly or never (`limit_reset`);
it is a limit, not spend, so a strange one is clamped, never a reason to skip the key.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from monitor.model import Observation, Skip, TokenLimits, TokenStatus
from monitor.providers.parse import MAX_TEXT, MAX_USD, Malformed, opt_float, opt_money, opt_time

__all__ = ["HASH", "hint_matches", "parse_key", "skip_key", "used_since", "utc_aligned"]

# A key's `hash` names it in URL paths: hex on OpenRouter (64 digits); anything that could step
# out of the path segment is refused.
HASH = re.compile(r"[A-Za-z0-9_-]{1,128}")
_DAY = 86_400
_SAMPLES = 2 * 365 // 5  # every fifth day of the next two years


def utc_aligned(tz_name: str, now: float) -> bool:
    """Whether the zone's midnight is UTC's midnight on every sampled day of the next two years
    (UTC itself, Etc/GMT, Africa/Abidjan...): then OpenRouter's day and month are keywatch's."""
    zone = ZoneInfo(tz_name)
    start = datetime.fromtimestamp(now, UTC)
    return all(
        (start + timedelta(days=5 * i)).astimezone(zone).utcoffset() == timedelta(0) for i in range(_SAMPLES)
    )


def skip_key(entry: object, exc: Malformed) -> Skip:
    """The Skip for an entry that did not parse, named by what of it can still be read: an entry
    that names its key keeps the list complete (the key is there, only its figures are not)."""
    fields = entry if isinstance(entry, dict) else {}
    raw_hash, raw_name = fields.get("hash"), fields.get("name")
    token_id = raw_hash if isinstance(raw_hash, str) and HASH.fullmatch(raw_hash) else None
    label = raw_name if isinstance(raw_name, str) and raw_name else token_id
    return Skip(str(label or "?")[:MAX_TEXT], exc.reason, str(exc), token_id=token_id)


def _text(entry: Mapping[str, Any], key: str) -> str | None:
    value = entry.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise Malformed(f"'{key}' is not a string")
    if len(value) > MAX_TEXT:
        raise Malformed(f"'{key}' is longer than {MAX_TEXT} characters", "absurd_value")
    return value


def _cap(entry: Mapping[str, Any], key: str) -> float | None:
    """A limit figure: a number or null; clamped into [0, MAX_USD] (OpenRouter's remaining limit
    can be overdrawn by the request that crossed it)."""
    value = opt_float(entry, key)
    return None if value is None else min(max(value, 0.0), MAX_USD)


def _limits(entry: Mapping[str, Any]) -> TokenLimits:
    limit = _cap(entry, "limit")
    if limit is None:
        return TokenLimits(unlimited=True)
    remaining = _cap(entry, "limit_remaining")
    reset = _text(entry, "limit_reset")
    return TokenLimits(
        daily_usd=limit if reset == "daily" else None,
        monthly_usd=limit if reset == "monthly" else None,
        remain_usd=remaining if remaining is not None else limit,
    )


def parse_key(
    entry: Any,
    *,
    now: float,
    windows: bool,
    digest: Callable[[str, str | None], str | None],
) -> Observation:
    """One entry of `GET /api/v1/keys` (or `data` of `GET /api/v1/keys/{hash}`). `windows`: map
    the UTC day and month figures (see `utc_aligned`); `digest(name, label)`: the SHA-256 of the
    key configured for that name, if any."""
    if not isinstance(entry, dict):
        raise Malformed("list entry is not an object")
    key_hash = _text(entry, "hash")
    if key_hash is None or not HASH.fullmatch(key_hash):
        raise Malformed("missing or invalid 'hash'")
    label = _text(entry, "label")
    name = _text(entry, "name") or label or key_hash
    disabled = entry.get("disabled")
    if not isinstance(disabled, bool):
        raise Malformed("missing or invalid 'disabled'")
    total = opt_money(entry, "usage")
    if total is None:
        raise Malformed("missing 'usage'")
    today, month = opt_money(entry, "usage_daily"), opt_money(entry, "usage_monthly")
    week = opt_money(entry, "usage_weekly")
    limits = _limits(entry)
    expires = opt_time(entry, "expires_at")
    status: TokenStatus = "active"
    if disabled:
        status = "disabled"
    elif expires is not None and expires <= now:
        status = "expired"
    elif limits.remain_usd is not None and limits.remain_usd <= 0 and not limits.unlimited:
        status = "exhausted"  # refused with 402 until the limit resets (or for good, without a reset)
    return Observation(
        token_id=key_hash,
        name=name,
        status=status,
        created_at=opt_time(entry, "created_at"),
        last_used_at=used_since(now, today, week, month),
        expires_at=expires,
        today_usd=today if windows else None,
        month_usd=month if windows else None,
        total_usd=total,
        limits=limits,
        key_sha256=digest(name, label),
    )


def used_since(now: float, today: float | None, week: float | None, month: float | None) -> float | None:
    """The start of the shortest UTC window with spend in it (see the module docstring)."""
    day = datetime.fromtimestamp(now, UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    if today:
        return day.timestamp()
    if week:
        return (day - timedelta(days=day.weekday())).timestamp()
    if month:
        return day.replace(day=1).timestamp()
    return None


def hint_matches(key: str, label: str | None) -> bool:
    """Whether a configured key fits the key's `label` (`sk-or-v1-abc...123`: its first and last
    characters). A label of another shape says nothing against it."""
    if label is None or label.count("...") != 1:
        return True
    head, tail = label.split("...")
    if not head or not tail:
        return True
    return key.startswith(head) and key.endswith(tail)
