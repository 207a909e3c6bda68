"""ConsoleData over the daemon's own parts: its pollers' token states, its reader, its alert
engine (the same Responder and Silences calls as `keywatch revoke/restore/silence`)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import Engine

from alerts.engine import AlertEngine
from alerts.matchers import MatcherError
from alerts.notification.mute import SilenceError, Silences
from alerts.response.announce import announce_restore
from alerts.views import silence_row
from console.data import ActionOutcome, AuditRow, HourPoint, ProviderView, TokenView
from monitor.metrics import ProviderHealth
from monitor.model import CAN_DISABLE
from monitor.policy import PolicyBook
from monitor.settings import Settings
from monitor.store import UsageReader
from monitor.tokens import TokenState

__all__ = ["CREATED_BY", "DaemonConsoleData"]

log = logging.getLogger("keywatch.console")

CREATED_BY = "console"  # silences' created_by and the "(by ...)" of revokes and restores


class DaemonConsoleData:
    def __init__(
        self,
        *,
        engine: Engine,
        alerts: AlertEngine,
        reader: UsageReader,
        states: Callable[[], Iterable[TokenState]],
        policies: Callable[[], PolicyBook],
        settings: Callable[[], Settings],
        health: Callable[[str], ProviderHealth],
        readiness: Callable[[], Mapping[str, bool]],
    ) -> None:
        self._engine = engine
        self._alerts = alerts
        self._reader = reader
        self._states = states
        self._policies = policies
        self._settings = settings
        self._health = health
        self._readiness = readiness
        self._silences = Silences(alerts.store)
        # The views of the last listing, rebuilt only when a state, the policies or a score changed.
        self._cache: tuple[list[TokenState], PolicyBook, dict[tuple[str, str], float], list[TokenView]] | None
        self._cache = None

    def now(self) -> float:
        return self._alerts.clock.now()

    # --- reads ---------------------------------------------------------------------------------
    def tokens(self) -> Sequence[TokenView]:
        states, policies, scores = list(self._states()), self._policies(), dict(self._alerts.scores())
        cached = self._cache
        if (
            cached is not None
            and cached[1] is policies
            and cached[2] == scores
            and len(cached[0]) == len(states)
            and all(a is b for a, b in zip(cached[0], states, strict=True))
        ):
            return cached[3]
        kinds = {p.name: p.kind for p in self._settings().providers}
        views = sorted(
            (
                _view(s, policies, kinds.get(s.provider, ""), scores.get((s.provider, s.token_id)))
                for s in states
            ),
            key=lambda v: (v.provider, v.name),
        )
        self._cache = (states, policies, scores, views)
        return views

    def providers(self) -> Sequence[ProviderView]:
        settings, ready = self._settings(), self._readiness()
        out = []
        for p in settings.providers:
            health = self._health(p.name)
            action = p.action or settings.response.action
            out.append(
                ProviderView(
                    name=p.name,
                    kind=p.kind,
                    up=health.up,
                    ready=ready.get(p.name, False),
                    last_success=health.last_success,
                    can_restore=p.kind in CAN_DISABLE and action == "disable",
                )
            )
        return out

    def hourly(self, token: TokenView, since: float) -> Sequence[HourPoint]:
        if token.pk is None:
            return []
        return [HourPoint(p.ts, p.cost_usd, p.requests) for p in self._reader.hourly(token.pk, since)]

    def alerts(self) -> Sequence[dict[str, object]]:
        return self._alerts.api_alerts()

    def group_by(self) -> Sequence[str]:
        return self._settings().notify.group_by

    def silences(self, *, include_expired: bool = False) -> Sequence[dict[str, object]]:
        now = self.now()
        return [silence_row(s, now) for s in self._silences.query(now=now, include_expired=include_expired)]

    def audit_trail(self, limit: int = 200) -> Sequence[AuditRow]:
        return [_audit_row(r) for r in self._alerts.responder.history(limit)]

    def hygiene(self) -> Sequence[tuple[str, str, str, str, str]]:
        found = self._alerts.audit(self._states())
        return [(f.severity, f.provider, f.token, f.finding, f.detail) for f in found]

    # --- actions -------------------------------------------------------------------------------
    def add_silence(self, matchers: Sequence[str], *, duration: float, comment: str) -> ActionOutcome:
        try:
            made = self._silences.add(
                matchers, now=self.now(), created_by=CREATED_BY, comment=comment, duration=duration
            )
        except (ValueError, MatcherError, SilenceError) as exc:
            return ActionOutcome(False, str(exc))
        return ActionOutcome(True, f"silence {made.id} until {silence_row(made, self.now())['ends_at']}")

    def expire_silence(self, silence_id: int) -> ActionOutcome:
        if not self._silences.expire(silence_id, now=self.now()):
            return ActionOutcome(False, f"no active silence {silence_id}")
        return ActionOutcome(True, f"silence {silence_id} expired")

    async def revoke(self, token: TokenView, reason: str) -> ActionOutcome:
        decision = await self._alerts.responder.manual(
            provider=token.provider, token_id=token.token_id, token=token.name, reason=_by(reason)
        )
        ok = decision.state in ("done", "pending_verification", "in_progress")
        return ActionOutcome(ok, f"{token.ref}: {decision.response}")

    async def restore(self, token: TokenView, reason: str) -> ActionOutcome:
        decision = await self._alerts.responder.restore(
            provider=token.provider, token_id=token.token_id, token=token.name, reason=_by(reason)
        )
        if decision.state != "done":
            return ActionOutcome(False, f"{token.ref}: {decision.response}")
        announce_restore(
            self._settings(), self._engine, token.provider, token.name, decision.response, reason, CREATED_BY
        )
        return ActionOutcome(True, f"{token.ref}: {decision.response}")


def _by(reason: str) -> str:
    return f"{reason} (by {CREATED_BY})"


def _view(s: TokenState, policies: PolicyBook, kind: str, score: float | None) -> TokenView:
    budgets = policies.budgets(s)
    return TokenView(
        provider=s.provider,
        name=s.name,
        token_id=s.token_id,
        pk=s.pk,
        status=s.status,
        kind=kind,
        today_usd=s.day_usd,
        month_usd=s.month_usd,
        budget_day_usd=budgets.day,
        budget_month_usd=budgets.month,
        daily_usd_limit=s.limits.daily_usd,
        monthly_usd_limit=s.limits.monthly_usd,
        remain_usd=s.limits.remain_usd,
        last_used_at=s.last_used_at,
        protected=policies.protected(s.name),
        anomaly_score=score,
    )


def _audit_row(r: Mapping[str, Any]) -> AuditRow:
    return AuditRow(
        id=int(r["id"]),
        provider=str(r["provider"]),
        token_id=str(r["token_id"]),
        token=str(r["token"]),
        mode=str(r["mode"]),
        action=str(r["action"]),
        state=str(r["state"]),
        reason=str(r["reason"]),
        detail=str(r["detail"] or ""),
        requested_at=float(r["requested_at"] or time.time()),
        verified=bool(r["verified"]),
    )
