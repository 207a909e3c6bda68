"""One LiteLLM virtual key (a `/key/list` full object) as an Observation (docs/relay-adapters.md).

- `token` is the key's id: the SHA-256 hex of the key as issued (`sk-...`), the proxy's primary
  key, and exactly what keywatch stores as `key_sha256`. LiteLLM refuses it as a credential (a
  bearer that does not start with `sk-` is "LiteLLM Virtual Key expected"), so it is not a secret.
- The name is `key_alias`, else `key_name` (`sk-...abcd`, the last four characters), else the
  first twelve hex digits of the hash.
- Status: `blocked` -> disabled (null until a key was ever blocked or unblocked), `expires` passed
  -> expired, `spend >= max_budget` -> exhausted (the proxy refuses the key until its budget
  resets), else active; unused only for a key that has no budget period, no spend and no
  `last_active`.
- Limits: `max_budget` is per `budget_duration`. LiteLLM resets "1d" and "24h" at midnight and
  "30d" and "1mo" on the 1st, in its `litellm_settings.timezone` (UTC by default): those are a
  daily and a monthly budget. Any other period (`7d` on Mondays, `1h`, ...) and a budget without
  a period give `remain_usd` (what is left of it now). No `max_budget`: no key-level limit.
- Spend is never read from the key's `spend` counter (see `monitor.providers.litellm`): every
  key's spend is the sum of its spend-log rows (`spend_from_logs`). The counter is kept for the
  budget state and to notice a proxy that writes no spend log.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from monitor.model import Observation, Skip, TokenLimits, TokenStatus
from monitor.providers.base import ProviderError
from monitor.providers.parse import (
    MAX_TEXT,
    MAX_USD,
    Malformed,
    epoch_seconds,
    opt_float,
    opt_money,
    str_list,
)

PAGE: Final = 100  # /key/list's largest page (`size` le=100; more is a 422)

__all__ = [
    "DAILY",
    "HASH",
    "MONTHLY",
    "PAGE",
    "UI_SESSION_TEAM",
    "LiteLLMKey",
    "key_page_parts",
    "litellm_time",
    "parse_key",
    "skip_key",
    "still_same",
]

HASH = re.compile(r"[0-9a-f]{64}")
UI_SESSION_TEAM = "litellm-dashboard"  # the admin UI's own short-lived session keys
DAILY = frozenset({"1d", "24h"})  # reset at the next midnight (LiteLLM's standardized resets)
MONTHLY = frozenset({"30d", "1mo"})  # reset on the 1st at midnight
# `models` entries that mean "whatever the team or the proxy allows", not a model name.
_ANY_MODEL = frozenset({"all-proxy-models", "all-team-models", "*"})


@dataclass(frozen=True, slots=True)
class LiteLLMKey:
    """A parsed key: its Observation, and the counter facts keywatch does not count as spend."""

    obs: Observation
    spend: float  # the key's `spend` counter in its current budget period
    reset_at: float | None  # `budget_reset_at`: a new value means the counter was reset
    team_id: str | None
    user_id: str | None


def litellm_time(entry: Mapping[str, Any], key: str) -> float | None:
    """ISO-8601 (`Z`, an offset, or none: a zone-less time is UTC, as LiteLLM's columns are) or
    epoch seconds (ms, ...); None for null."""
    value = entry.get(key)
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise Malformed(f"'{key}' is not a time")
    if isinstance(value, int | float):
        if isinstance(value, int) and abs(value) > 2**63:
            raise Malformed(f"'{key}' is not a time", "absurd_value")
        return epoch_seconds(float(value), key)
    if not isinstance(value, str) or len(value) > 64:
        raise Malformed(f"'{key}' is not a time")
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
        return (dt if dt.tzinfo is not None else dt.replace(tzinfo=UTC)).timestamp()
    except (ValueError, OverflowError):
        raise Malformed(f"'{key}' is not an ISO-8601 time") from None


def _opt_text(entry: Mapping[str, Any], key: str) -> str | None:
    value = entry.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise Malformed(f"'{key}' is not a string")
    if len(value) > MAX_TEXT:
        raise Malformed(f"'{key}' is longer than {MAX_TEXT} characters", "absurd_value")
    return value


def _token(entry: Mapping[str, Any]) -> str:
    token = entry.get("token")
    if not isinstance(token, str) or not HASH.fullmatch(token):
        raise Malformed("'token' is not a key hash (64 hex digits)")
    return token


def _budget(entry: Mapping[str, Any]) -> float | None:
    value = opt_float(entry, "max_budget")
    if value is None:
        return None
    if value < 0:
        raise Malformed("'max_budget' is negative", "negative_usage")
    return min(value, MAX_USD)  # a limit, not spend: clamped, not skipped


def _limits(
    max_budget: float | None, duration: str | None, spend: float, models: tuple[str, ...]
) -> TokenLimits:
    allowed = () if not models or _ANY_MODEL & set(models) else models
    if max_budget is None:
        return TokenLimits(unlimited=True, allowed_models=allowed)
    if duration in DAILY:
        return TokenLimits(daily_usd=max_budget, allowed_models=allowed)
    if duration in MONTHLY:
        return TokenLimits(monthly_usd=max_budget, allowed_models=allowed)
    return TokenLimits(remain_usd=round(max(max_budget - spend, 0.0), 9), allowed_models=allowed)


def _status(
    blocked: bool, expires: float | None, spend: float, max_budget: float | None, used: bool, now: float
) -> TokenStatus:
    if blocked:
        return "disabled"
    if expires is not None and expires <= now:
        return "expired"
    if max_budget is not None and spend >= max_budget:
        return "exhausted"
    return "active" if used else "unused"


def parse_key(entry: Any, now: float) -> LiteLLMKey:
    """A `/key/list` (or `/key/info`) key object; Malformed for one keywatch cannot trust."""
    if not isinstance(entry, dict):
        raise Malformed("list entry is not an object (was return_full_object=true honoured?)")
    token = _token(entry)
    blocked = entry.get("blocked")
    if blocked is not None and not isinstance(blocked, bool):
        raise Malformed("'blocked' is not a boolean")
    spend = opt_money(entry, "spend") or 0.0
    max_budget = _budget(entry)
    duration = _opt_text(entry, "budget_duration")
    if duration is not None and len(duration) > 32:
        raise Malformed("'budget_duration' is not a duration", "absurd_value")
    models = str_list(entry, "models")
    expires = litellm_time(entry, "expires")
    last_active = litellm_time(entry, "last_active")
    name = _opt_text(entry, "key_alias") or _opt_text(entry, "key_name") or token[:12]
    used = last_active is not None or spend > 0 or duration is not None
    obs = Observation(
        token_id=token,
        name=name,
        status=_status(bool(blocked), expires, spend, max_budget, used, now),
        created_at=litellm_time(entry, "created_at"),
        last_used_at=last_active,
        expires_at=expires,
        limits=_limits(max_budget, duration, spend, models),
        key_sha256=token,
        spend_from_logs=True,
    )
    return LiteLLMKey(
        obs,
        spend,
        litellm_time(entry, "budget_reset_at"),
        _opt_text(entry, "team_id"),
        _opt_text(entry, "user_id"),
    )


def skip_key(entry: Any, exc: Malformed) -> Skip:
    """The Skip of an entry that did not parse, named by what of it can still be read."""
    fields = entry if isinstance(entry, dict) else {}
    token = fields.get("token")
    token_id = token if isinstance(token, str) and HASH.fullmatch(token) else None
    alias = fields.get("key_alias")
    label = alias if isinstance(alias, str) and alias else (token_id or "?")[:12]
    return Skip(label[:MAX_TEXT], exc.reason, str(exc), token_id=token_id)


def key_page_parts(body: Any) -> tuple[list[Any], int, int]:
    """(entries, total_count, total_pages) of a /key/list answer, read strictly."""
    if not isinstance(body, dict) or not isinstance(body.get("keys"), list):
        raise ProviderError("malformed", "/key/list: no 'keys' list")
    total, last = body.get("total_count"), body.get("total_pages")
    if type(total) is not int or type(last) is not int or total < 0 or last < 0:
        raise ProviderError("malformed", "/key/list: no total_count/total_pages")
    entries = list(body["keys"])
    if len(entries) > PAGE:  # asked for PAGE a page: a longer one is not what was asked for
        raise ProviderError(
            "malformed", f"/key/list: a page of {len(entries)} keys, more than the {PAGE} asked for"
        )
    if entries and all(isinstance(e, str) for e in entries):
        raise ProviderError("malformed", "/key/list answered bare hashes (return_full_object not honoured)")
    return entries, total, last


def still_same(obs: Observation, now: float) -> bool:
    """Whether an unchanged entry still parses to `obs` now: only its expiry depends on the time."""
    return (
        obs.expires_at is None
        or (obs.status == "expired") == (obs.expires_at <= now)
        or obs.status == "disabled"
    )
