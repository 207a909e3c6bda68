"""The domain values every layer shares: what a relay showed of a token, what one poll returned,
and the vocabulary of alerts (severities, rule names). Plain frozen values with no I/O, so the
pure modules (spend maths, rules, detectors) import this and nothing of the relay layer."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal

__all__ = [
    "CAN_DISABLE",
    "PROVIDER_KINDS",
    "RULES",
    "SEVERITIES",
    "Observation",
    "PollResult",
    "ProviderKind",
    "RequestRecord",
    "RevokeOutcome",
    "Severity",
    "Skip",
    "TokenLimits",
    "TokenStatus",
    "severity_rank",
]

ProviderKind = Literal["laozhang", "oneapi", "newapi", "openai", "litellm", "openrouter", "anthropic"]
PROVIDER_KINDS: Final[tuple[ProviderKind, ...]] = (
    "laozhang",
    "oneapi",
    "newapi",
    "openai",
    "litellm",
    "openrouter",
    "anthropic",
)
# The platforms that can disable a key without destroying it (so a quarantine can be undone with
# `keywatch restore`); on the others a quarantine deletes the key.
CAN_DISABLE: Final[frozenset[ProviderKind]] = frozenset(
    {"oneapi", "newapi", "litellm", "openrouter", "anthropic"}
)

Severity = Literal["info", "warning", "critical", "security"]
SEVERITIES: Final[tuple[Severity, ...]] = ("info", "warning", "critical", "security")  # least to most urgent

# Every rule keywatch evaluates, in the order its metrics and docs list them.
RULES: Final[tuple[str, ...]] = (
    "budget",
    "budget_forecast",
    "spend_anomaly",
    "leak_suspected",
    "token_expiring",
    "token_unused",
    "rotation_due",
    "provider_down",
    "auto_revoke_paused",
)


def severity_rank(severity: str) -> int:
    """0 for info up to 3 for security; an unknown name (an old row) ranks as info."""
    return SEVERITIES.index(severity) if severity in SEVERITIES else 0


TokenStatus = Literal["active", "unused", "disabled", "revoked", "expired", "exhausted", "deleted"]


@dataclass(frozen=True, slots=True)
class TokenLimits:
    daily_usd: float | None = None
    monthly_usd: float | None = None
    daily_requests: int | None = None
    remain_usd: float | None = None  # oneapi/newapi remain_quota, converted
    unlimited: bool = False
    allowed_models: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Observation:
    """One token as the relay showed it in one poll. Usage figures are the relay's own
    resetting windows (None when the relay did not say); `monitor.spend` turns them into deltas.
    Adapters that see cumulative counters (oneapi `used_quota`) report them in `total_usd`."""

    token_id: str
    name: str
    status: TokenStatus
    created_at: float | None = None
    last_used_at: float | None = None
    expires_at: float | None = None
    today_usd: float | None = None
    month_usd: float | None = None
    today_requests: int | None = None
    total_usd: float | None = None  # a never-resetting counter, when the relay has one
    limits: TokenLimits = field(default_factory=TokenLimits)
    ip_whitelist: tuple[str, ...] = ()
    key_sha256: str | None = None
    # True when the relay keeps no usage counter for this token (one-api unlimited tokens, OpenAI
    # keys): its spend is the sum of its RequestRecords that the store has not seen before.
    spend_from_logs: bool = False


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One row of a relay's request log (or one usage bucket, for relays that only aggregate).
    `request_id` is unique per token and stable across polls: it is how overlapping log windows
    are deduplicated, so a row fetched twice is stored and counted once."""

    token_id: str | None  # None when the relay names the token only by name
    token_name: str
    ts: float
    model: str
    ip: str | None
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    elapsed_ms: int | None
    request_id: str
    requests: int = 1  # >1 for aggregated buckets (OpenAI usage)


@dataclass(frozen=True, slots=True)
class Skip:
    """A token left out of this cycle, and why (becomes keywatch_poll_errors_total{reason}).
    `token_id` when the entry still said which token it is: the token is listed, so it is not
    gone, only its figures are unusable this cycle."""

    token: str
    reason: str
    detail: str = ""
    token_id: str | None = None


@dataclass(frozen=True, slots=True)
class PollResult:
    observations: Sequence[Observation]
    skipped: Sequence[Skip] = ()
    # False when the relay could not show every token (a page failed, the list shifted while
    # paging, an entry that names no token): rules may still read what came, but nothing is
    # quarantined on it and missing tokens are not "deleted". A skipped entry that names its token
    # (Skip.token_id) leaves the list complete: that token is there, only its figures are not.
    complete: bool = True
    # Request-level rows from the relay's log, possibly overlapping earlier polls' rows.
    requests: Sequence[RequestRecord] = ()
    # Called once this result is stored: only then does the adapter move its log cursor, so a
    # cycle that fails to store is read again instead of lost.
    committed: Callable[[], None] | None = field(default=None, compare=False, repr=False)
    # The relay's own clock when it answered (its `Date` header), for period boundaries.
    relay_time: float | None = None


@dataclass(frozen=True, slots=True)
class RevokeOutcome:
    done: bool
    verified: bool
    detail: str = ""
