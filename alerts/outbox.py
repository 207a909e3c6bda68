"""The durable outbox: notifications are rows first, sends second (healthchecks' sender pattern).

A row is claimed atomically (pending -> sending, attempt counted, committed), then sent, then its
outcome recorded: sent only after Apprise said yes; a failure goes back to pending with
exponential backoff (bounded by group_interval) until the last attempt, then failed. A row left in
`sending` by a crash is requeued on start, so delivery is at-least-once. Only this layer retries.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from alerts.notify import Delivery, NoTargetError, Notifier
from alerts.records import OutboxItem
from alerts.store import AlertStore

__all__ = ["FlushReport", "Outbox", "RetryPolicy"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    base: float = 10.0
    factor: float = 2.0
    cap: float = 300.0  # the pipeline sets it to notify.group_interval
    max_attempts: int = 8

    def delay(self, attempts: int) -> float:
        """Seconds to wait after the `attempts`-th failed attempt."""
        return float(min(self.base * self.factor ** max(0, attempts - 1), self.cap))


@dataclass(frozen=True, slots=True)
class FlushReport:
    sent: int = 0
    retried: int = 0
    failed: int = 0


class Outbox:
    def __init__(
        self,
        store: AlertStore,
        notifier: Notifier,
        *,
        policy: RetryPolicy | None = None,
        batch: int = 20,
        recover: bool = True,
    ) -> None:
        """`recover=True` (the daemon) requeues rows a crash left in `sending`; a process that only
        reads the outbox (a CLI command) passes False so it never touches the daemon's sends."""
        self._store = store
        self.notifier = notifier
        self.policy = policy or RetryPolicy()
        self._batch = batch
        if recover:
            requeued = store.requeue_sending()
            if requeued:
                log.warning("outbox: %d notification(s) were mid-send at shutdown; sending again", requeued)

    def enqueue(self, item: OutboxItem) -> OutboxItem:
        return self._store.enqueue(item)

    def counts(self) -> dict[str, int]:
        """keywatch_notifications_total by outcome (sent, failed, suppressed), from the database."""
        return self._store.counts()

    def next_due(self) -> float | None:
        return self._store.next_due()

    async def flush(self, now: float) -> FlushReport:
        """Send every row due at `now`; returns what happened. Safe to call often."""
        sent = retried = failed = 0
        tried: set[int] = set()  # one attempt per row per flush, whatever the backoff says
        while ids := [i for i in self._store.due_ids(now, self._batch + len(tried)) if i not in tried]:
            tried.update(ids)
            claimed = [item for i in ids if (item := self._store.claim(i, now)) is not None]
            outcomes = await asyncio.gather(*(self._attempt(item, now) for item in claimed))
            sent += outcomes.count("sent")
            retried += outcomes.count("pending")
            failed += outcomes.count("failed")
        return FlushReport(sent, retried, failed)

    async def _attempt(self, item: OutboxItem, now: float) -> str:
        assert item.id is not None
        try:
            delivery = await self.notifier.deliver(
                item.title, item.body, item.tags, item.notify_type, skip=item.delivered
            )
        except NoTargetError as exc:  # permanent: retrying cannot fix configuration
            log.error("outbox: notification %d %r not sent: %s", item.id, item.title, exc)
            self._store.finish(item.id, state="failed", now=now, error=str(exc), delivered=item.delivered)
            return "failed"
        except Exception as exc:  # unexpected: treat as transient, the retry layer decides
            delivery = Delivery(item.delivered, ())
            return self._failed(item, now, delivery, f"{type(exc).__name__}: {exc}")
        if delivery.ok:
            self._store.finish(item.id, state="sent", now=now, delivered=delivery.delivered)
            return "sent"
        return self._failed(item, now, delivery, delivery.error())

    def _failed(self, item: OutboxItem, now: float, delivery: Delivery, error: str) -> str:
        assert item.id is not None
        if item.attempts >= self.policy.max_attempts:
            log.error(
                "outbox: notification %d %r failed after %d attempts: %s",
                item.id,
                item.title,
                item.attempts,
                error,
            )
            self._store.finish(item.id, state="failed", now=now, error=error, delivered=delivery.delivered)
            return "failed"
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
        )
        return "pending"
