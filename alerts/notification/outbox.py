"""The durable outbox: notifications are rows first, sends second (healthchecks' sender pattern).

A row is claimed atomically (pending -> sending, attempt counted, committed), then sent, then its
outcome recorded: sent only after Apprise said yes. A row left in `sending` by a crash is requeued
on start, so delivery is at-least-once. Only this layer retries.

Several instances on one PostgreSQL database share the outbox (`sender` names this one): rows are
claimed with FOR UPDATE SKIP LOCKED, so two instances never claim the same row; the claim names
its sender and holds for `claim_for` seconds, after which any instance sends the row again (its
sender died mid-send: at least once across crashes). A sender that finds itself past half its
claim before sending (it was paused) leaves the row to that recovery instead of racing it.

The rule for a failed attempt, by the row's severity:
- critical and security: back to pending with exponential backoff (capped at group_interval),
  for as long as it takes. These are the notices nobody may miss, least of all when a target is
  down for hours; they never turn `failed` because of attempts.
- info and warning: the same backoff until EXPIRE_AFTER after the row was created; the first
  failed attempt after that ends the row as `expired` (logged once, counted).
- a permanent error (no target has the row's tags: configuration) fails the row at once, whatever
  its severity: retrying cannot fix it.
Pending rows by severity and the age of the oldest are exported (Outbox.backlog), so a target that
is down shows as a growing backlog rather than as silence.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import get_args

from alerts.lifecycle.records import OutboxItem
from alerts.lifecycle.store import AlertStore
from alerts.model import Severity
from alerts.notification.notify import Delivery, NoTargetError, Notifier
from monitor.clock import uptime

__all__ = ["EXPIRE_AFTER", "RETRY_UNTIL_DELIVERED", "Backlog", "FlushReport", "Outbox", "RetryPolicy"]

log = logging.getLogger(__name__)


# A day: a warning or info notice is stale by then (the daily budget window has rolled; what still
# fires has been queued again as a `repeat` every repeat_interval; hygiene findings come back in the
# weekly digest), and a day outlasts a night or a weekend morning of a chat or mail outage.
EXPIRE_AFTER = 24 * 3600.0
# How long a sender's claim on a row holds when several instances share the outbox: far above a
# send's own timeout (Apprise's targets answer or give up within a minute), short enough that a
# notice whose sender died goes out again within two minutes.
CLAIM_FOR = 120.0
RETRY_UNTIL_DELIVERED: frozenset[Severity] = frozenset({"critical", "security"})
# The backoff reaches any sane cap long before 2 ** 64; without a bound, factor ** attempts overflows
# a float after ~1000 attempts, which a critical notice reaches in ~3.5 days at a 5 min cap.
_MAX_EXPONENT = 64


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    base: float = 10.0
    factor: float = 2.0
    cap: float = 300.0  # the pipeline sets it to notify.group_interval
    expire_after: float = EXPIRE_AFTER  # info and warning only; see the module docstring

    def delay(self, attempts: int) -> float:
        """Seconds to wait after the `attempts`-th failed attempt."""
        exponent = min(max(0, attempts - 1), _MAX_EXPONENT)
        return float(min(self.base * self.factor**exponent, self.cap))

    def expired(self, item: OutboxItem, now: float) -> bool:
        """Give up on `item` after an attempt failed at `now`? Never for critical and security."""
        return item.severity not in RETRY_UNTIL_DELIVERED and now - item.created_at >= self.expire_after


@dataclass(frozen=True, slots=True)
class FlushReport:
    sent: int = 0
    retried: int = 0
    failed: int = 0
    expired: int = 0


@dataclass(frozen=True, slots=True)
class Backlog:
    """What waits to be delivered (pending or mid-send): keywatch_notifications_pending{severity}
    (every severity, 0 when none) and keywatch_notification_oldest_pending_seconds (0 when none)."""

    by_severity: Mapping[Severity, int]
    oldest_age: float


class Outbox:
    def __init__(
        self,
        store: AlertStore,
        notifier: Notifier,
        *,
        policy: RetryPolicy | None = None,
        batch: int = 20,
        recover: bool = True,
        sender: str = "",
        claim_for: float = CLAIM_FOR,
    ) -> None:
        """`recover=True` (the daemon) requeues rows a crash left in `sending`; a process that only
        reads the outbox (a CLI command) passes False so it never touches the daemon's sends.
        `sender`: this instance's name when several share the outbox (see the module docstring)."""
        self._store = store
        self.notifier = notifier
        self.policy = policy or RetryPolicy()
        self._batch = batch
        self._sender = sender
        self._claim_for = claim_for
        if recover and not sender:  # several senders recover by claim expiry instead (flush)
            requeued = store.requeue_sending()
            if requeued:
                log.warning("outbox: %d notification(s) were mid-send at shutdown; sending again", requeued)

    def enqueue(self, item: OutboxItem) -> OutboxItem:
        return self._store.enqueue(item)

    def counts(self) -> dict[str, int]:
        """keywatch_notifications_total by outcome (sent, failed, expired, suppressed), from the
        database."""
        return self._store.counts()

    def backlog(self, now: float) -> Backlog:
        """Rows not yet delivered, by severity, and the age at `now` of the oldest (two indexed
        queries: a COUNT ... GROUP BY and a MIN)."""
        counts = self._store.pending_counts()
        oldest = self._store.oldest_pending()
        by_severity = {s: counts.get(s, 0) for s in get_args(Severity)}
        return Backlog(by_severity, 0.0 if oldest is None else max(0.0, now - oldest))

    def next_due(self) -> float | None:
        return self._store.next_due()

    async def flush(self, now: float) -> FlushReport:
        """Send every row due at `now`; returns what happened. Safe to call often."""
        if self._sender:
            return await self._flush_shared(now)
        sent = retried = failed = expired = 0
        tried: set[int] = set()  # one attempt per row per flush, whatever the backoff says
        while ids := [i for i in self._store.due_ids(now, self._batch + len(tried)) if i not in tried]:
            tried.update(ids)
            claimed = [item for i in ids if (item := self._store.claim(i, now)) is not None]
            outcomes = await asyncio.gather(*(self._attempt(item, now) for item in claimed))
            sent += outcomes.count("sent")
            retried += outcomes.count("pending")
            failed += outcomes.count("failed")
            expired += outcomes.count("expired")
        return FlushReport(sent, retried, failed, expired)

    async def _flush_shared(self, now: float) -> FlushReport:
        requeued = self._store.requeue_expired()
        if requeued:
            log.warning("outbox: %d notification(s) whose sender stopped mid-send are sent again", requeued)
        outcomes: list[str] = []
        while claimed := self._store.claim_due(now, self._batch, by=self._sender, hold=self._claim_for):
            fresh_until = uptime() + self._claim_for / 2
            done = await asyncio.gather(
                *(self._attempt(item, now, fresh_until) for item in claimed), return_exceptions=True
            )
            for item, outcome in zip(claimed, done, strict=True):
                if isinstance(outcome, BaseException):  # recording the outcome failed: the claim lapses
                    log.error("outbox: notification %s: %s: %s", item.id, type(outcome).__name__, outcome)
                    outcomes.append("error")
                else:
                    outcomes.append(outcome)
        return FlushReport(
            outcomes.count("sent"),
            outcomes.count("pending"),
            outcomes.count("failed"),
            outcomes.count("expired"),
        )

    async def _attempt(self, item: OutboxItem, now: float, fresh_until: float = float("inf")) -> str:
        assert item.id is not None
        if uptime() > fresh_until:  # paused (or asleep) past half the claim: another may send it
            log.warning("outbox: notification %d left to be sent again (this instance was paused)", item.id)
            return "skipped"
        try:
            delivery = await self.notifier.deliver(
                item.title, item.body, item.tags, item.notify_type, skip=item.delivered
            )
        except NoTargetError as exc:  # permanent: retrying cannot fix configuration
            log.error("outbox: %s notification %d %r not sent: %s", item.severity, item.id, item.title, exc)
            self._store.finish(
                item.id, state="failed", now=now, error=str(exc), delivered=item.delivered, by=self._sender
            )
            return "failed"
        except Exception as exc:  # unexpected: treat as transient, the retry layer decides
            delivery = Delivery(item.delivered, ())
            return self._failed(item, now, delivery, f"{type(exc).__name__}: {exc}")
        if delivery.ok:
            self._store.finish(item.id, state="sent", now=now, delivered=delivery.delivered, by=self._sender)
            return "sent"
        return self._failed(item, now, delivery, delivery.error())

    def _failed(self, item: OutboxItem, now: float, delivery: Delivery, error: str) -> str:
        assert item.id is not None
        if self.policy.expired(item, now):
            return self._expire(item, now, delivery, error)
        retry_at = now + self.policy.delay(item.attempts)
        log.warning(
            "outbox: notification %d attempt %d failed (%s); retry at %.0f",
            item.id,
            item.attempts,
            error,
            retry_at,
        )
        self._store.finish(
            item.id,
            state="pending",
            now=now,
            error=error,
            next_attempt_at=retry_at,
            delivered=delivery.delivered,
            by=self._sender,
        )
        return "pending"

    def _expire(self, item: OutboxItem, now: float, delivery: Delivery, error: str) -> str:
        assert item.id is not None
        log.error(
            "outbox: %s notification %d %r expired undelivered after %.1f h and %d attempts: %s",
            item.severity,
            item.id,
            item.title,
            (now - item.created_at) / 3600,
            item.attempts,
            error,
        )
        self._store.finish(
            item.id, state="expired", now=now, error=error, delivered=delivery.delivered, by=self._sender
        )
        return "expired"
