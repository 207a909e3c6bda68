"""The records the alert engine keeps: alert states, transitions, silences, the notification log
and outbox rows. Plain frozen values; alerts/lifecycle/store.py persists them, the stages pass them along."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from alerts.matchers import Matcher
from alerts.model import AlertState, Severity

__all__ = [
    "Alert",
    "LogEntry",
    "OutboxItem",
    "OutboxState",
    "Silence",
    "SilenceStatus",
    "Transition",
]

# expired: an info or warning notice given up after alerts.notification.outbox.EXPIRE_AFTER undelivered.
OutboxState = Literal["pending", "sending", "sent", "failed", "expired"]
SilenceStatus = Literal["pending", "active", "expired"]


@dataclass(frozen=True, slots=True)
class Alert:
    """One alert (a rule about one subject) and where it is in its lifecycle."""

    fingerprint: str
    rule: str
    labels: Mapping[str, str]
    severity: Severity
    state: AlertState
    active_since: float  # first hit of the current episode (pending or firing)
    firing_since: float | None
    resolved_at: float | None
    last_eval: float  # last evaluation that covered this alert with data
    last_hit_at: float  # last evaluation whose condition held; keep_firing_for counts from here
    consecutive_hits: int
    value: float
    summary: str
    annotations: Mapping[str, str] = field(default_factory=dict)
    for_polls: int = 1
    keep_firing_for: float = 0.0

    def match_labels(self, *, with_annotations: bool = False) -> dict[str, str]:
        """What matchers see: the labels plus `rule` and `severity` (annotations never override)."""
        base: dict[str, str] = dict(self.annotations) if with_annotations else {}
        base.update(self.labels)
        base["rule"] = self.rule
        base["severity"] = self.severity
        return base

    def to_api(self) -> dict[str, object]:
        """The `keywatch alerts --json` / GET /api/v1/alerts shape (docs/api.md)."""
        since = self.firing_since if self.state == "firing" else self.active_since
        return {
            "rule": self.rule,
            "provider": self.labels.get("provider", ""),
            "token": self.labels.get("token", ""),
            "severity": self.severity,
            "state": self.state,
            "since": _iso(since),
            "value": self.value,
            "summary": self.summary,
            "labels": dict(self.labels),
            "annotations": dict(self.annotations),
            "fingerprint": self.fingerprint,
        }


@dataclass(frozen=True, slots=True)
class Transition:
    """An alert changed state in one evaluation; `alert` is the state after the change."""

    alert: Alert
    from_state: AlertState
    to_state: AlertState
    at: float


@dataclass(frozen=True, slots=True)
class Silence:
    id: int | None  # None until stored
    matchers: tuple[Matcher, ...]
    starts_at: float
    ends_at: float
    created_by: str
    comment: str
    expired: bool = False

    def status(self, now: float) -> SilenceStatus:
        if self.expired or now >= self.ends_at:
            return "expired"
        return "active" if now >= self.starts_at else "pending"

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(m.matches(labels) for m in self.matchers)


@dataclass(frozen=True, slots=True)
class LogEntry:
    """The notification log: what one receiver was last told about one group (Alertmanager nflog)."""

    group_key: str
    receiver: str
    firing: frozenset[str]  # fingerprints sent as firing
    resolved: frozenset[str]  # fingerprints sent as resolved
    sent_at: float
    reason: str


@dataclass(frozen=True, slots=True)
class OutboxItem:
    id: int | None  # None until stored
    created_at: float
    group_key: str
    receiver: str
    tags: tuple[str, ...]
    title: str
    body: str
    notify_type: str  # Apprise NotifyType value: info | success | warning | failure
    severity: Severity  # decides the retry rule: critical and security are never given up
    state: OutboxState = "pending"
    attempts: int = 0
    next_attempt_at: float = 0.0
    last_error: str = ""
    sent_at: float | None = None
    delivered: frozenset[str] = frozenset()  # ids of targets that already accepted it (partial sends)


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")
