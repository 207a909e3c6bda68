"""One token of a one-api family console, as an Observation (docs/relay-adapters.md).

Quota is converted at `quota_per_unit` (500 000 = 1 USD by default). `used_quota` is a lifetime
counter (`total_usd`) — except for one-api's unlimited tokens, whose `used_quota` one-api never
updates: their spend comes from the request log (`spend_from_logs`). `accessed_time` starts out
equal to `created_time`, so it means "last used" only once it moved past it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from monitor.model import Observation, TokenLimits, TokenStatus
from monitor.providers.parse import MAX_USD, Malformed, check_money, epoch_seconds, req_str

__all__ = ["Dialect", "parse_console_token", "split_list"]

Dialect = Literal["oneapi", "newapi"]

_STATUSES: Mapping[int, TokenStatus] = {1: "active", 2: "disabled", 3: "expired", 4: "exhausted"}


def split_list(value: Any, key: str) -> tuple[str, ...]:
    """A comma (or newline) separated string, as these consoles store model and IP lists."""
    if value is None or value == "":
        return ()
    if not isinstance(value, str):
        raise Malformed(f"'{key}' is not a string")
    return tuple(part.strip() for part in value.replace("\n", ",").split(",") if part.strip())


def _int(entry: Mapping[str, Any], key: str, default: int | None = None) -> int:
    value = entry.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Malformed(f"missing or invalid '{key}'")
    if not -(2**62) <= value <= 2**62:  # also NaN and ±inf: no relay counts this high
        raise Malformed(f"'{key}' is absurdly large", "absurd_value")
    return int(value)


def _time(entry: Mapping[str, Any], key: str, default: int | None = None) -> float:
    """Unix seconds (or, by their size, milliseconds) as these consoles store times."""
    return epoch_seconds(float(_int(entry, key, default)), key)


def parse_console_token(
    entry: Any, *, dialect: Dialect, quota_per_unit: float, key_sha256: str | None
) -> Observation:
    if not isinstance(entry, dict):
        raise Malformed("list entry is not an object")
    token_id, name = req_str(entry, "id"), req_str(entry, "name")
    status = _STATUSES.get(_int(entry, "status"))
    if status is None:
        raise Malformed(f"unknown status {str(entry.get('status'))[:10]!r}")
    unlimited = entry.get("unlimited_quota", False)
    if not isinstance(unlimited, bool):
        raise Malformed("'unlimited_quota' is not a boolean")
    used, remain = _int(entry, "used_quota", 0), _int(entry, "remain_quota", 0)
    used_usd = check_money(used / quota_per_unit, "used_quota")
    remain_usd = min(max(remain, 0) / quota_per_unit, MAX_USD)  # a limit, not spend: clamp, don't skip
    created, accessed = _time(entry, "created_time"), _time(entry, "accessed_time", 0)
    raw_expiry = _int(entry, "expired_time", -1)
    expires = None if raw_expiry in (-1, 0) else epoch_seconds(float(raw_expiry), "expired_time")
    if dialect == "oneapi":
        models = split_list(entry.get("models"), "models")
        ips = split_list(entry.get("subnet"), "subnet")
    else:
        enabled = entry.get("model_limits_enabled", False)
        models = split_list(entry.get("model_limits"), "model_limits") if enabled else ()
        ips = split_list(entry.get("allow_ips"), "allow_ips")
    from_logs = dialect == "oneapi" and unlimited  # one-api leaves used_quota alone for these
    return Observation(
        token_id=token_id,
        name=name,
        status=status,
        created_at=created,
        last_used_at=accessed if accessed > created else None,
        expires_at=expires,
        total_usd=None if from_logs else used_usd,
        limits=TokenLimits(
            remain_usd=None if unlimited else remain_usd,
            unlimited=unlimited,
            allowed_models=models,
        ),
        ip_whitelist=ips,
        key_sha256=key_sha256,
        spend_from_logs=from_logs,
    )
