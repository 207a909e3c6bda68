"""What the console reads and does, as one small typed interface the daemon implements."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

__all__ = [
    "ActionOutcome",
    "AuditRow",
    "ConsoleData",
    "HourPoint",
    "ProviderView",
    "TokenView",
]


@dataclass(frozen=True, slots=True)
class TokenView:
    provider: str
    name: str
    token_id: str
    pk: int | None
    status: str
    kind: str
    today_usd: float | None
    month_usd: float | None
    budget_day_usd: float | None
    budget_month_usd: float | None
    daily_usd_limit: float | None
    monthly_usd_limit: float | None
    remain_usd: float | None
    last_used_at: float | None
    protected: bool
    anomaly_score: float | None

    @property
    def ref(self) -> str:
        return f"{self.provider}/{self.name}"

    @property
    def budget_used_pct(self) -> float | None:
        used = [
            spent / limit * 100
            for spent, limit in (
                (self.today_usd, self.budget_day_usd),
                (self.month_usd, self.budget_month_usd),
            )
            if spent is not None and limit
        ]
        return max(used) if used else None


@dataclass(frozen=True, slots=True)
class ProviderView:
    name: str
    kind: str
    up: bool
    ready: bool
    last_success: float | None
    can_restore: bool  # a quarantine there disables the key (CAN_DISABLE and action disable)


@dataclass(frozen=True, slots=True)
class HourPoint:
    hour: float  # epoch seconds at the start of the hour (UTC)
    cost_usd: float
    requests: int


@dataclass(frozen=True, slots=True)
class AuditRow:
    """One row of the responder's audit trail (quarantine_actions)."""

    id: int
    provider: str
    token_id: str
    token: str
    mode: str
    action: str
    state: str
    reason: str
    detail: str
    requested_at: float
    verified: bool


@dataclass(frozen=True, slots=True)
class ActionOutcome:
    ok: bool
    message: str


class ConsoleData(Protocol):
    """Everything the console reads and changes. Reads return plain values; the actions go
    through the same calls as the CLI (Responder.manual/restore, Silences.add/expire)."""

    def now(self) -> float: ...

    def tokens(self) -> Sequence[TokenView]:
        """Every watched token, ordered by provider then name."""
        ...

    def providers(self) -> Sequence[ProviderView]: ...

    def hourly(self, token: TokenView, since: float) -> Sequence[HourPoint]: ...

    def alerts(self) -> Sequence[dict[str, object]]:
        """Pending and firing alerts, most severe first (the GET /api/v1/alerts rows)."""
        ...

    def group_by(self) -> Sequence[str]:
        """The alert labels notifications group by (notify.group_by)."""
        ...

    def silences(self, *, include_expired: bool = False) -> Sequence[dict[str, object]]:
        """The GET /api/v1/silences rows."""
        ...

    def audit_trail(self, limit: int = 200) -> Sequence[AuditRow]:
        """The newest rows of the responder's audit trail first."""
        ...

    def hygiene(self) -> Sequence[tuple[str, str, str, str, str]]:
        """(severity, provider, token, finding, detail) of the hygiene audit (`keywatch audit`)."""
        ...

    def add_silence(self, matchers: Sequence[str], *, duration: float, comment: str) -> ActionOutcome: ...

    def expire_silence(self, silence_id: int) -> ActionOutcome: ...

    async def revoke(self, token: TokenView, reason: str) -> ActionOutcome: ...

    async def restore(self, token: TokenView, reason: str) -> ActionOutcome: ...
