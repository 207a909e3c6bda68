"""One simulated relay token: its metadata, its traffic parameters and its usage windows."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Literal

from .profiles import Archetype

__all__ = ["Leak", "Limits", "SimStatus", "SimToken"]

SimStatus = Literal["active", "unused", "revoked", "expired", "disabled"]


@dataclass(slots=True)
class Limits:
    daily_requests: int | None = None
    daily_usd: float | None = None
    monthly_usd: float | None = None
    max_tokens_per_request: int | None = None
    allowed_models: tuple[str, ...] = ()


@dataclass(slots=True, frozen=True)
class Leak:
    """Extra traffic from whoever holds a leaked key: flat around the clock, expensive models."""

    multiplier: float
    usd_per_hour: float
    req_per_bucket: float
    ips: tuple[str, ...]
    models: tuple[str, ...]
    started_at: float


@dataclass(slots=True, eq=False)
class SimToken:
    id: str
    name: str
    key: str  # the secret; only the create call and the simulator-only control API reveal it
    archetype: Archetype
    created_at: float
    expires_at: float | None
    billing_method: str
    permissions: tuple[str, ...]
    limits: Limits
    ip_whitelist: tuple[str, ...]
    ips: tuple[str, ...]  # the client addresses its normal traffic comes from
    models: tuple[str, ...]
    model_cum: tuple[float, ...]  # cumulative weights over `models`
    profile: tuple[float, ...]  # 168 hour-of-week weights, mean 1
    usd_per_hour: float  # mean spend while in use (dormant: before it went quiet)
    req_per_bucket: float  # expected requests per traffic bucket at weight 1; 0 = never spends
    rng: random.Random = field(repr=False)
    last_used_at: float | None = None
    revoked_at: float | None = None
    deleted: bool = False
    # the relay's resetting windows, and the never-resetting truth behind them
    today_usage: float = 0.0
    month_usage: float = 0.0
    today_requests: int = 0
    lifetime_usd: float = 0.0  # net of refunds: what the relay finally kept
    lifetime_requests: int = 0
    refunded_usd: float = 0.0  # given back without a period boundary (one-api family refunds)
    day_key: int = 0
    month_key: int = 0
    # lazy traffic generation: buckets k*step with k >= next_k are not generated yet
    next_k: int = 0
    noise_day: int = -1
    day_factor: float = 1.0
    noise_how: int = -1
    hour_factor: float = 1.0
    leak: Leak | None = None
    version: int = 0  # bumped on every metadata change, so wire views may cache the static part
    # one-api family: a disable is reversible (a revoke is not); quota is a lifetime grant
    disabled_at: float | None = None
    unlimited_quota: bool | None = None  # None: unlimited when the token has no USD limits
    quota_usd: float | None = None  # the grant behind remain_quota; None: derived from the limits

    def status(self, now: float) -> SimStatus:
        if self.revoked_at is not None:
            return "revoked"
        if self.disabled_at is not None:
            return "disabled"
        if self.expires_at is not None and now >= self.expires_at:
            return "expired"
        if self.last_used_at is None:
            return "unused"
        return "active"

    def accepts_key(self, now: float) -> bool:
        """Whether the relay still serves calls made with this token's key."""
        return not self.deleted and self.status(now) in ("active", "unused")

    def touch(self) -> None:
        self.version += 1
