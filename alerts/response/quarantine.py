"""Quarantine: the guarded kill switch, and its audit trail.

Nothing is quarantined automatically unless every guard agrees: the leak alert is firing (the
rule is sure), `response.auto_revoke` is on, the token is not protected, the data came from a
complete poll, and the hourly cap (`response.max_per_hour`) has room. Every decision, including
the refusals, is a row in `quarantine_actions`: the attempt is recorded before the relay is
called and the outcome after, so a crash in between is finished on the next start (revoking is
idempotent at the relay). A token is never quarantined twice. After the relay accepts, keywatch
checks that the relay now refuses the key; until it does, the action is `pending_verification`
and is checked again every cycle (one-api may honour a disabled key for minutes from its cache).

With several instances (monitor.cluster) only the instance that holds a provider acts for it:
the row of an automatic action is claimed once per incident (a unique index on the episode), and
recording "calling the relay" checks the lease in the same transaction, so an instance that lost
the provider never calls the relay for it. A report or revoke that reaches another instance is
recorded and left `in_progress` for the owner, which finishes open rows every cycle.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import sqlalchemy as sa
from sqlalchemy import Connection, Engine
from sqlalchemy.exc import IntegrityError

from monitor.clock import Clock
from monitor.cluster import Fenced, Ownership
from monitor.model import CAN_DISABLE, PROVIDER_KINDS
from monitor.policy import PolicyBook
from monitor.providers.base import Provider, ProviderError
from monitor.settings import Response

__all__ = ["ACTIONS", "RESTORE", "Decision", "Responder", "quarantine_actions"]

log = logging.getLogger("keywatch.response")

Mode = Literal["auto", "manual", "report"]
# Rows of `keywatch restore` (mode "restore"): a human re-enabled a token a quarantine disabled.
RESTORE = "restore"
QUARANTINE_MODES = ("auto", "manual", "report")
# What a row can say. Final: done, dry_run, failed, blocked. Open: in_progress, retry, pending_verification.
ActionState = Literal["in_progress", "retry", "pending_verification", "done", "dry_run", "failed", "blocked"]
OPEN_STATES = ("in_progress", "retry", "pending_verification")
OUTCOME_OF: dict[str, str] = {
    "done": "done",
    "pending_verification": "done",
    "dry_run": "dry_run",
    "failed": "failed",
    "blocked": "blocked",
}
MAX_ATTEMPTS = 4
HOUR = 3600.0

METADATA = sa.MetaData()
quarantine_actions = sa.Table(
    "quarantine_actions",
    METADATA,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("provider", sa.String, nullable=False),
    sa.Column("token_id", sa.String, nullable=False),
    sa.Column("token", sa.String, nullable=False),
    sa.Column("mode", sa.String, nullable=False),  # auto | manual | report
    sa.Column("action", sa.String, nullable=False),  # disable | delete
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("episode", sa.String),  # alert fingerprint @ episode start, for auto actions
    sa.Column("state", sa.String, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("detail", sa.Text, nullable=False, default=""),
    sa.Column("requested_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.Column("verified", sa.Boolean, nullable=False, default=False),
    sa.Index("ix_quarantine_token", "provider", "token_id"),
    sa.Index("ix_quarantine_episode", "episode"),
)
ACTIONS = quarantine_actions


@dataclass(frozen=True, slots=True)
class Decision:
    """What the responder did about one token, in words for the notification and the API."""

    state: ActionState | Literal["none"]
    response: str  # "quarantined", "dry run — would quarantine", "protected: not quarantined", ...
    quarantined: bool = False


class Responder:
    def __init__(
        self,
        engine: Engine,
        settings: Response,
        *,
        clock: Clock,
        policies: PolicyBook,
        providers: Callable[[str], Provider | None],
        provider_action: Callable[[str], str | None] = lambda _name: None,
        ownership: Ownership | None = None,
    ) -> None:
        self._engine = engine
        self._ownership = ownership
        self.settings = settings
        self._clock = clock
        self.policies = policies
        self._providers = providers
        self._provider_action = provider_action  # per-provider override of response.action

    @property
    def engine(self) -> Engine:
        """The database its audit trail lives in."""
        return self._engine

    def reconfigure(self, settings: Response, policies: PolicyBook) -> None:
        self.settings, self.policies = settings, policies

    # --- the automatic path ----------------------------------------------------------------
    async def on_leak(
        self, *, provider: str, token_id: str, token: str, episode: str, reason: str, complete_poll: bool
    ) -> Decision:
        """Called every cycle for every firing leak alert; acts at most once per episode."""
        existing = self._row_for_episode(episode)
        if existing is not None:
            return await self._continue(existing)
        started = _episode_start(episode)
        if started is not None and self._restored_after(provider, token_id, at=started):
            # A human restored the token after this incident began (a report's or a revoke's
            # quarantine): the review covers the incident; a new one still acts.
            return Decision("none", "restored after review: not quarantined again for this incident")
        if self._already_quarantined(provider, token_id):
            return Decision("done", "already quarantined", quarantined=True)
        if not self.settings.auto_revoke:
            return Decision("none", "alert only (response.auto_revoke is off)")
        if self.policies.protected(token):
            self._insert(provider, token_id, token, "auto", reason, episode, "blocked", "protected token")
            return Decision("blocked", "protected: not quarantined")
        if not complete_poll:
            # Not recorded: the next complete poll decides. Partial data never pulls the switch.
            return Decision("none", "waiting for a complete poll before acting")
        if self.paused():
            self._insert(provider, token_id, token, "auto", reason, episode, "blocked", "hourly cap reached")
            return Decision(
                "blocked",
                f"not quarantined: automatic quarantine paused ({self.settings.max_per_hour}/hour cap reached)",
            )
        if self.settings.dry_run:
            self._insert(provider, token_id, token, "auto", reason, episode, "dry_run", "dry run")
            return Decision("dry_run", "dry run — would quarantine")
        try:
            row_id = self._insert(provider, token_id, token, "auto", reason, episode, "in_progress", "")
        except IntegrityError:  # another instance claimed this incident first
            claimed = self._row_for_episode(episode)
            return (
                await self._continue(claimed)
                if claimed is not None
                else Decision("none", "claimed elsewhere")
            )
        except Fenced:
            return Decision("none", "another instance polls this provider now")
        return await self._execute(row_id)

    def paused(self) -> bool:
        """True once `max_per_hour` automatic quarantines happened in the last hour."""
        since = self._clock.now() - HOUR
        c = quarantine_actions.c
        with self._engine.connect() as conn:
            n = conn.execute(
                sa.select(sa.func.count())
                .select_from(quarantine_actions)
                .where(
                    c.mode == "auto",
                    c.requested_at >= since,
                    c.state.in_(("in_progress", "retry", "pending_verification", "done", "failed")),
                )
            ).scalar_one()
        return int(n) >= self.settings.max_per_hour

    # --- the manual and external paths -------------------------------------------------------
    async def manual(
        self,
        *,
        provider: str,
        token_id: str,
        token: str,
        reason: str,
        mode: Mode = "manual",
        dry_run: bool = False,
    ) -> Decision:
        """`keywatch revoke` and external leak reports: no auto_revoke switch, no hourly cap, but a
        protected token is still only alerted on, and an already quarantined token is left alone."""
        if self._already_quarantined(provider, token_id):
            return Decision("done", "already quarantined", quarantined=True)
        if mode == "report" and self.policies.protected(token):
            self._insert(provider, token_id, token, mode, reason, None, "blocked", "protected token")
            return Decision("blocked", "protected: not quarantined")
        if dry_run or self.settings.dry_run:
            self._insert(provider, token_id, token, mode, reason, None, "dry_run", "dry run")
            return Decision("dry_run", "dry run — would quarantine")
        if not self._owns(provider):
            self._insert(
                provider, token_id, token, mode, reason, None, "in_progress", "queued for the owning instance"
            )
            return Decision("in_progress", f"quarantine queued for the instance that polls {provider}")
        row_id = self._insert(provider, token_id, token, mode, reason, None, "in_progress", "")
        return await self._execute(row_id)

    async def restore(self, *, provider: str, token_id: str, token: str, reason: str) -> Decision:
        """`keywatch restore`: re-enable a token a quarantine disabled, after a human review.
        Recorded (mode `restore`) before and after the relay is called; the incident it undoes is
        not quarantined again (a new incident still is)."""
        last = self._last_quarantine(provider, token_id)
        if last is None:
            return Decision("none", "not quarantined by keywatch: nothing to restore")
        if str(last.action) == "delete":
            return Decision("failed", "its quarantine deleted the key: a deleted key cannot be restored")
        if "before keywatch acted" in str(last.detail):
            return Decision(
                "failed",
                "keywatch did not disable this key (it was disabled before keywatch acted): "
                "re-enable it at the platform if that is intended",
            )
        relay = self._providers(provider)
        if relay is None:
            return Decision("failed", f"provider {provider} is not configured")
        row_id = self._insert(
            provider, token_id, token, RESTORE, reason, None, "in_progress", f"undoes quarantine #{last.id}"
        )
        try:
            outcome = await relay.restore(token_id)
        except ProviderError as exc:
            self._update(row_id, "failed", f"{exc.reason}: {exc}")
            return Decision("failed", f"restore FAILED: {exc}")
        if not outcome.done:
            self._update(row_id, "failed", outcome.detail)
            return Decision("failed", f"restore FAILED: {outcome.detail}")
        self._update(row_id, "done", outcome.detail, verified=outcome.verified)
        if str(last.state) == "pending_verification":  # nothing left to verify: the key is meant to work
            self._update(
                int(last.id),
                "done",
                "quarantined; restored before the relay was seen refusing the key",
                expect_attempts=int(last.attempts),
            )
        log.warning("restored %s/%s after review: %s (%s)", provider, token, reason, outcome.detail)
        return Decision("done", "restored" if outcome.verified else f"restored ({outcome.detail})")

    def _last_quarantine(self, provider: str, token_id: str) -> sa.Row[tuple[object, ...]] | None:
        """The token's quarantine in force: the newest done one, unless a restore followed it."""
        c = quarantine_actions.c
        with self._engine.connect() as conn:
            row = conn.execute(
                sa.select(quarantine_actions)
                .where(
                    c.provider == provider,
                    c.token_id == token_id,
                    c.mode.in_(QUARANTINE_MODES),
                    c.state.in_(("done", "pending_verification")),
                )
                .order_by(c.id.desc())
            ).first()
        if row is None or self._restored_after(provider, token_id, row_id=int(row.id)):
            return None
        return row

    def _restored_after(
        self, provider: str, token_id: str, *, row_id: int | None = None, at: float | None = None
    ) -> bool:
        """A done restore of the token later than row `row_id`, or requested at `at` or later."""
        c = quarantine_actions.c
        later = c.id > row_id if row_id is not None else c.requested_at >= at
        with self._engine.connect() as conn:
            n = conn.execute(
                sa.select(sa.func.count())
                .select_from(quarantine_actions)
                .where(
                    c.provider == provider,
                    c.token_id == token_id,
                    c.mode == RESTORE,
                    c.state == "done",
                    later,
                )
            ).scalar_one()
        return int(n) > 0

    def _owns(self, provider: str) -> bool:
        return self._ownership is None or self._ownership.owns(provider)

    def _guard(self, provider: str) -> Callable[[Connection], None] | None:
        ownership = self._ownership
        if ownership is None:
            return None
        return lambda conn: ownership.guard(conn, provider)

    # --- open actions ------------------------------------------------------------------------
    async def resume(self) -> list[Decision]:
        """On start and every cycle: finish what a crash interrupted, retry transient failures,
        and re-check revokes not yet verified."""
        c = quarantine_actions.c
        with self._engine.connect() as conn:
            rows = conn.execute(  # a restore under way is its command's own business
                sa.select(c.id, c.provider, c.token_id).where(c.state.in_(OPEN_STATES), c.mode != RESTORE)
            ).all()
        return [
            await self._execute(int(row_id))
            for row_id, provider, token_id in rows
            if self._owns(str(provider))
            and not self._restored_after(str(provider), str(token_id), row_id=int(row_id))
        ]

    async def _continue(self, row: sa.Row[tuple[object, ...]]) -> Decision:
        state = str(row.state)
        if state in ("done", "pending_verification") and self._restored_after(
            str(row.provider), str(row.token_id), row_id=int(row.id)
        ):
            return Decision("none", "restored after review: not quarantined again for this incident")
        if state in OPEN_STATES:
            return await self._execute(int(row.id))
        if state == "done":  # the same words every cycle, so the alert's annotation stays put
            return _decision("done", "verified" if row.verified else "not verified")
        return _decision(state, str(row.detail))

    async def _execute(self, row_id: int) -> Decision:
        row = self._get(row_id)
        provider = self._providers(str(row.provider))
        if provider is None:
            if self._ownership is not None and self._ownership.shared:
                # Being handed over to this instance, or away from it: the owner finishes it.
                return Decision("none", f"waiting for the instance that polls {row.provider}")
            self._update(row_id, "failed", f"provider {row.provider} is no longer configured")
            return _decision("failed", "provider no longer configured")
        if row.state == "pending_verification":
            return await self._verify(row_id, provider, str(row.token_id), attempts=int(row.attempts))
        action = str(row.action)  # as recorded when the quarantine was asked for
        if action == "disable" and provider.kind in PROVIDER_KINDS and provider.kind not in CAN_DISABLE:
            # Deleting is for good: only where the config says so (laozhang, OpenAI project keys).
            detail = f"{provider.kind} cannot disable a key; set action: delete on {row.provider} to let keywatch delete it"
            self._update(row_id, "failed", detail)
            log.error("quarantine of %s/%s not done: %s", row.provider, row.token, detail)
            return _decision("failed", detail)
        attempts = int(row.attempts) + 1
        try:  # recorded before acting, with the lease checked in the same transaction
            self._update(
                row_id,
                "in_progress",
                "calling the relay",
                attempts=attempts,
                guard=self._guard(str(row.provider)),
            )
        except Fenced as exc:
            log.warning(
                "quarantine of %s/%s left to the instance that polls it: %s", row.provider, row.token, exc
            )
            return Decision("none", "another instance polls this provider now")
        # From here every outcome is written only while the row is still at this attempt: an
        # instance that lost the provider mid-call cannot overwrite what the new owner recorded.
        try:
            outcome = await provider.revoke(str(row.token_id), delete=action == "delete")
        except Exception as exc:  # ProviderError, or a client closed as the provider moved away
            reason = getattr(exc, "reason", type(exc).__name__)
            state: ActionState = "retry" if attempts < MAX_ATTEMPTS else "failed"
            self._update(row_id, state, f"{reason}: {exc}", expect_attempts=attempts)
            log.error(
                "quarantine of %s/%s failed (attempt %d): %s: %s",
                row.provider,
                row.token,
                attempts,
                reason,
                exc,
            )
            return _decision(state, str(exc))
        if not outcome.done:
            if "no such token" in outcome.detail:  # gone already, e.g. a retry after a crash
                self._update(row_id, "done", outcome.detail, expect_attempts=attempts)
                return _decision("done", outcome.detail)
            self._update(row_id, "failed", outcome.detail, expect_attempts=attempts)
            log.error("quarantine of %s/%s refused: %s", row.provider, row.token, outcome.detail)
            return _decision("failed", outcome.detail)
        log.warning("quarantined %s/%s (%s): %s", row.provider, row.token, row.mode, row.reason)
        if outcome.verified:
            self._update(
                row_id,
                "done",
                "quarantined and verified: the relay refuses the key",
                verified=True,
                expect_attempts=attempts,
            )
            return _decision("done", "verified")
        return await self._verify(row_id, provider, str(row.token_id), attempts=attempts)

    async def _verify(self, row_id: int, provider: Provider, token_id: str, *, attempts: int) -> Decision:
        try:
            refused = await provider.verify_refused(token_id)
        except Exception as exc:  # ProviderError, or a client closed as the provider moved away
            refused = False
            log.warning("verifying the quarantine of %s failed: %s: %s", token_id, type(exc).__name__, exc)
        if refused is None:
            self._update(
                row_id,
                "done",
                "quarantined; not verified (keywatch has no key for this token)",
                expect_attempts=attempts,
            )
            return _decision("done", "not verified")
        if refused:
            self._update(
                row_id,
                "done",
                "quarantined and verified: the relay refuses the key",
                verified=True,
                expect_attempts=attempts,
            )
            return _decision("done", "verified")
        self._update(
            row_id,
            "pending_verification",
            "quarantined; the relay still accepts the key (cache?)",
            expect_attempts=attempts,
        )
        return _decision("pending_verification", "pending verification")

    # --- reads -------------------------------------------------------------------------------
    def counts(self) -> dict[tuple[str, str, str], int]:
        """keywatch_revocations_total: (provider, mode, outcome) -> n, derived from the table."""
        c = quarantine_actions.c
        with self._engine.connect() as conn:
            rows = conn.execute(
                sa.select(c.provider, c.mode, c.state, sa.func.count()).group_by(c.provider, c.mode, c.state)
            ).all()
        out: dict[tuple[str, str, str], int] = {}
        for provider, mode, state, n in rows:
            outcome = OUTCOME_OF.get(str(state))
            if outcome is not None:
                key = (str(provider), str(mode), outcome)
                out[key] = out.get(key, 0) + int(n)
        return out

    def recent_reports(self, provider: str, since: float) -> list[tuple[str, str, float]]:
        """(token, reason, requested_at) of leak reports on the provider's tokens since `since`,
        newest last: a report that reached another instance is raised as an alert by the owner."""
        c = quarantine_actions.c
        with self._engine.connect() as conn:
            rows = conn.execute(
                sa.select(c.token, c.reason, c.requested_at)
                .where(c.provider == provider, c.mode == "report", c.requested_at >= since)
                .order_by(c.id)
            ).all()
        return [(str(t), str(r), float(at)) for t, r, at in rows]

    def history(self, limit: int = 100) -> list[dict[str, object]]:
        c = quarantine_actions.c
        with self._engine.connect() as conn:
            rows = (
                conn.execute(sa.select(quarantine_actions).order_by(c.id.desc()).limit(limit))
                .mappings()
                .all()
            )
        return [dict(r) for r in rows]

    # --- rows --------------------------------------------------------------------------------
    def _already_quarantined(self, provider: str, token_id: str) -> bool:
        """A quarantine of the token is in force or under way (and no restore followed it)."""
        c = quarantine_actions.c
        with self._engine.connect() as conn:
            newest = conn.execute(
                sa.select(c.id)
                .where(
                    c.provider == provider,
                    c.token_id == token_id,
                    c.mode.in_(QUARANTINE_MODES),
                    c.state.in_(("done", "pending_verification", "in_progress", "retry")),
                )
                .order_by(c.id.desc())
            ).first()
        return newest is not None and not self._restored_after(provider, token_id, row_id=int(newest[0]))

    def _row_for_episode(self, episode: str) -> sa.Row[tuple[object, ...]] | None:
        c = quarantine_actions.c
        with self._engine.connect() as conn:
            return conn.execute(
                sa.select(quarantine_actions).where(c.episode == episode).order_by(c.id.desc())
            ).first()

    def _get(self, row_id: int) -> sa.Row[tuple[object, ...]]:
        with self._engine.connect() as conn:
            return conn.execute(sa.select(quarantine_actions).where(quarantine_actions.c.id == row_id)).one()

    def _insert(
        self,
        provider: str,
        token_id: str,
        token: str,
        mode: str,
        reason: str,
        episode: str | None,
        state: str,
        detail: str,
    ) -> int:
        now = self._clock.now()
        action = self._provider_action(provider) or self.settings.action
        guard = self._guard(provider) if mode == "auto" else None
        with self._engine.begin() as conn:
            if guard is not None:
                guard(conn)
            result = conn.execute(
                quarantine_actions.insert().values(
                    provider=provider,
                    token_id=token_id,
                    token=token,
                    mode=mode,
                    action=action,
                    reason=reason,
                    episode=episode,
                    state=state,
                    attempts=0,
                    detail=detail,
                    requested_at=now,
                    updated_at=now,
                    verified=False,
                )
            )
            key = result.inserted_primary_key
            assert key is not None
            return int(key[0])

    def _update(
        self,
        row_id: int,
        state: str,
        detail: str,
        *,
        attempts: int | None = None,
        verified: bool | None = None,
        guard: Callable[[Connection], None] | None = None,
        expect_attempts: int | None = None,
    ) -> None:
        """`expect_attempts`: write only while the row is still at that attempt."""
        values: dict[str, object] = {"state": state, "detail": detail, "updated_at": self._clock.now()}
        if attempts is not None:
            values["attempts"] = attempts
        if verified is not None:
            values["verified"] = verified
        c = quarantine_actions.c
        where = [c.id == row_id]
        if expect_attempts is not None:
            where.append(c.attempts == expect_attempts)
        with self._engine.begin() as conn:
            if guard is not None:
                guard(conn)
            if conn.execute(quarantine_actions.update().where(*where).values(**values)).rowcount == 0:
                log.warning(
                    "quarantine row %d moved on meanwhile (another instance acted): %s kept", row_id, state
                )


def _episode_start(episode: str) -> float | None:
    """When an incident began: its episode is `<fingerprint>@<active_since>` (alerts.engine)."""
    _, _, start = episode.rpartition("@")
    try:
        return float(start)
    except ValueError:
        return None


def _decision(state: str, detail: str) -> Decision:
    if state == "done":
        text = "quarantined" if detail in ("verified", "") else f"quarantined ({detail})"
        return Decision("done", text, quarantined=True)
    if state == "pending_verification":
        return Decision(
            "pending_verification",
            "quarantined (pending verification: the relay still accepts the key)",
            quarantined=True,
        )
    if state == "dry_run":
        return Decision("dry_run", "dry run — would quarantine")
    if state == "blocked":
        return Decision(
            "blocked", "protected: not quarantined" if "protected" in detail else f"not quarantined: {detail}"
        )
    if state == "retry":
        return Decision("retry", f"quarantine failed, retrying: {detail}")
    return Decision("failed", f"quarantine FAILED: {detail}")
