"""The tables of the usage history (SQLModel). Hot rows are written at driver level by
`monitor.store.writer`; these classes define the schema and serve the cold paths."""

from __future__ import annotations

from sqlalchemy import Index, UniqueConstraint
from sqlmodel import Field, SQLModel

__all__ = [
    "PollErrorRow",
    "PollRunRow",
    "ProviderRow",
    "RequestLogRow",
    "TokenRow",
    "UsageDeltaRow",
    "UsageHourlyRow",
]


class TokenRow(SQLModel, table=True):
    """A token's current state, its lifetime counters, and the last usage figures it showed."""

    __tablename__ = "tokens"
    __table_args__ = (UniqueConstraint("provider", "token_id"),)

    id: int | None = Field(default=None, primary_key=True)
    provider: str
    token_id: str
    name: str
    status: str
    created_at: float | None = None
    last_used_at: float | None = None
    expires_at: float | None = None
    key_sha256: str | None = None  # never the key itself
    limits_json: str = "{}"
    ip_whitelist_json: str = "[]"
    first_seen: float
    last_seen: float  # when the relay last showed the token different
    missing_since: float | None = None  # gone from the relay's list since then
    spend_total_usd: float = 0.0
    requests_total: int = 0
    mark_at: float | None = None
    mark_today_usd: float | None = None
    mark_month_usd: float | None = None
    mark_today_requests: int | None = None
    mark_total_usd: float | None = None
    corrections_usd_total: float = 0.0  # dollars the relay took back (refunds, re-rating)
    # The window's high-water mark in its period, where it differs from the figure shown above.
    mark_peak_today_usd: float | None = None
    mark_peak_month_usd: float | None = None
    mark_peak_total_usd: float | None = None
    mark_peak_today_requests: int | None = None


class UsageDeltaRow(SQLModel, table=True):
    """Spend observed in one poll for one token; written only when it is not zero."""

    __tablename__ = "usage_deltas"
    __table_args__ = (Index("ix_usage_deltas_token_ts", "token_pk", "ts"), Index("ix_usage_deltas_ts", "ts"))

    id: int | None = Field(default=None, primary_key=True)
    token_pk: int = Field(foreign_key="tokens.id")
    ts: float
    cost_usd: float
    requests: int = 0
    gap: bool = False  # a window boundary passed between polls: some spend may be unseen


class UsageHourlyRow(SQLModel, table=True):
    """Hourly rollup, kept incrementally as deltas arrive (hour = epoch seconds of its start)."""

    __tablename__ = "usage_hourly"
    __table_args__ = (Index("ix_usage_hourly_hour", "hour"),)

    token_pk: int = Field(foreign_key="tokens.id", primary_key=True)
    hour: int = Field(primary_key=True)
    cost_usd: float = 0.0
    requests: int = 0


class PollRunRow(SQLModel, table=True):
    __tablename__ = "poll_runs"
    __table_args__ = (Index("ix_poll_runs_provider_started", "provider", "started_at"),)

    id: int | None = Field(default=None, primary_key=True)
    provider: str
    started_at: float
    finished_at: float
    ok: bool
    complete: bool
    tokens_seen: int = 0
    tokens_changed: int = 0
    tokens_skipped: int = 0
    error_reason: str | None = None
    error: str | None = None


class ProviderRow(SQLModel, table=True):
    """Per-provider facts that must survive restarts."""

    __tablename__ = "providers"

    name: str = Field(primary_key=True)
    kind: str
    first_complete_poll_at: float | None = None  # tokens seen after this are new tokens
    last_success_at: float | None = None


class PollErrorRow(SQLModel, table=True):
    """Counts behind keywatch_poll_errors_total, so the counter survives restarts."""

    __tablename__ = "poll_errors"

    provider: str = Field(primary_key=True)
    reason: str = Field(primary_key=True)
    count: int = 0


class RequestLogRow(SQLModel, table=True):
    """One request (or usage bucket) from a relay's log. (token_pk, request_id) is the key, so a
    row that overlapping poll windows fetch twice is stored once: ON CONFLICT DO NOTHING on it. Without
    a rowid the key is the table itself: one B-tree written per row instead of two."""

    __tablename__ = "request_log"
    __table_args__ = (Index("ix_request_log_ts", "ts"), {"sqlite_with_rowid": False})

    token_pk: int = Field(foreign_key="tokens.id", primary_key=True)
    request_id: str = Field(primary_key=True)
    ts: float
    model: str = ""
    ip: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    elapsed_ms: int | None = None
    requests: int = 1  # more than one for aggregated buckets (OpenAI usage)
