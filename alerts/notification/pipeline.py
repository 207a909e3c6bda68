"""The notification side composed: transitions and alert states in, outbox rows out, sends later.

    process(transitions, alerts)   after each evaluation: remember states, count muted transitions,
                                   start group timers for firing alerts
    tick(now)                      run the due groups through `stages` in order (see
                                   alerts.notification.stages): mute -> group -> dedup (notification
                                   log) -> render -> outbox -> rearm (the groups' next flush)
    flush(now)                     send due outbox rows (retries, backoff, at-least-once; critical
                                   and security until delivered, lower ones expire: alerts.notification.outbox)
    run_sender(stop)               tick + flush every second until `stop` is set

Time comes from the injected Clock or an explicit `now`; tests drive tick/flush by hand.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence

from sqlalchemy.exc import SQLAlchemyError

from alerts.lifecycle.records import Alert, Transition
from alerts.lifecycle.store import AlertStore
from alerts.notification.grouping import NO_REPEAT_RULES, Dispatcher
from alerts.notification.mute import Muter, Silences
from alerts.notification.nflog import NotificationLog
from alerts.notification.notify import Notifier
from alerts.notification.outbox import EXPIRE_AFTER, Backlog, FlushReport, Outbox, RetryPolicy
from alerts.notification.stages import (
    Batch,
    DedupStage,
    Dispatched,
    GroupStage,
    MuteStage,
    OutboxStage,
    RearmStage,
    RenderStage,
    Stage,
)
from monitor.clock import Clock
from monitor.cluster import Ownership
from monitor.pacing import drain, paced
from monitor.settings import Notify, Settings
from monitor.store import describe_fault

__all__ = ["Dispatched", "NotificationPipeline"]

log = logging.getLogger(__name__)


class NotificationPipeline:
    def __init__(
        self,
        store: AlertStore,
        notifier: Notifier,
        settings: Settings | Notify,
        *,
        clock: Clock,
        muter: Muter | None = None,
        expire_after: float = EXPIRE_AFTER,
        no_repeat_rules: Iterable[str] = NO_REPEAT_RULES,
        recover: bool = True,
        ownership: Ownership | None = None,
        sender: str = "",
    ) -> None:
        """`ownership`, `sender`: with several instances, groups of providers this instance does
        not hold are left to their owner, and the outbox is shared (alerts.notification.outbox)."""
        self.listeners: list[Callable[[Dispatched], None]] = []  # e.g. the demo's console
        notify = settings.notify if isinstance(settings, Settings) else settings
        self._store = store
        self._clock = clock
        self._notify = notify
        self._no_repeat = frozenset(no_repeat_rules)
        self.muter = muter if muter is not None else Muter(Silences(store))
        self.dispatcher = Dispatcher(notify)
        self._ownership = ownership
        policy = RetryPolicy(cap=notify.group_interval, expire_after=expire_after)
        self.outbox = Outbox(store, notifier, policy=policy, recover=recover, sender=sender)
        self._deliverable = notifier.has_targets
        self._log = NotificationLog(store)
        self._alerts: dict[str, Alert] = {}
        self.stages = self._build_stages()

    def _build_stages(self) -> tuple[Stage, ...]:
        """What `tick` runs on the due groups, in this order."""
        return (
            MuteStage(self.muter),
            GroupStage(self.dispatcher, self._ownership),
            DedupStage(self._log, self._notify, no_repeat=self._no_repeat),
            RenderStage(self._notify),
            OutboxStage(self._log, deliverable=self._deliverable, ownership=self._ownership),
            RearmStage(self.dispatcher),
        )

    def reconfigure(self, settings: Settings | Notify, notifier: Notifier) -> None:
        """SIGHUP: swap in already-validated settings. Group timers restart; the log stays."""
        notify = settings.notify if isinstance(settings, Settings) else settings
        self._notify = notify
        self.dispatcher = Dispatcher(notify)
        self.outbox.notifier = notifier
        self.outbox.policy = RetryPolicy(
            cap=notify.group_interval, expire_after=self.outbox.policy.expire_after
        )
        self._deliverable = notifier.has_targets
        self.stages = self._build_stages()

    def reload_log(self) -> None:
        """After taking over providers from another instance: what it told people (monitor.cluster)."""
        self._log.reload()

    # -- after each evaluation ------------------------------------------------------------------

    def process(
        self, transitions: Sequence[Transition], alerts: Iterable[Alert], now: float | None = None
    ) -> int:
        """Take the evaluation's result; returns how many transitions were muted (suppressed)."""
        now = self._clock.now() if now is None else now
        self._alerts = {a.fingerprint: a for a in alerts}
        muted = self.muter.muted(self._alerts.values(), now) if transitions else {}
        suppressed = self._count_suppressed(transitions, muted)
        drain(self._observing(now))
        return suppressed

    async def process_paced(
        self, transitions: Sequence[Transition], alerts: Iterable[Alert], now: float | None = None
    ) -> int:
        """`process` for the daemon: muting (a pass over every open alert, with silences from the
        database) in a worker thread, the group timers in slices on the event loop."""
        now = self._clock.now() if now is None else now
        self._alerts = {a.fingerprint: a for a in alerts}
        muted: dict[str, str] = {}
        if transitions:
            muted = await asyncio.to_thread(self.muter.muted, list(self._alerts.values()), now)
        suppressed = self._count_suppressed(transitions, muted)
        await paced(self._observing(now))
        return suppressed

    def _count_suppressed(self, transitions: Sequence[Transition], muted: Mapping[str, str]) -> int:
        suppressed = sum(1 for t in transitions if t.alert.fingerprint in muted and self._would_notify(t))
        if transitions:
            self._store.bump("suppressed", suppressed)
        return suppressed

    def _observing(self, now: float) -> Iterator[None]:
        """Every open alert's group gets its timer (a new group waits group_wait)."""
        for alert in self._alerts.values():
            yield None
            if alert.state == "firing":
                self.dispatcher.observe(alert, now)
            elif alert.state == "resolved":
                receiver, key, _ = self.dispatcher.address(alert)
                if self._log.told_firing(key, receiver, alert.fingerprint):
                    self.dispatcher.observe(alert, now)
        self.dispatcher.trim_addresses(self._alerts)

    def _would_notify(self, t: Transition) -> bool:
        if t.to_state == "firing":
            return True
        if t.to_state == "resolved" and self._notify.send_resolved:
            receiver, key, _ = self.dispatcher.address(t.alert)
            return self._log.told_firing(key, receiver, t.alert.fingerprint)
        return False

    # -- group flushes -------------------------------------------------------------------------

    def tick(self, now: float | None = None) -> list[Dispatched]:
        now = self._clock.now() if now is None else now
        if not self.dispatcher.due(now):  # most ticks: skip the stages (muting reads the database)
            return []
        batch = Batch(now, tuple(self._alerts.values()))
        for stage in self.stages:
            batch = stage.run(batch)
        for sent in batch.dispatched:
            for listener in self.listeners:
                listener(sent)
        return list(batch.dispatched)

    # -- sending -------------------------------------------------------------------------------

    async def flush(self, now: float | None = None) -> FlushReport:
        return await self.outbox.flush(self._clock.now() if now is None else now)

    async def run_sender(
        self,
        stop: asyncio.Event,
        *,
        interval: float = 1.0,
        tick: Callable[[], Awaitable[object]] | None = None,
    ) -> None:
        """The background task: group timers and outbox, every `interval` seconds until `stop`.
        Cancelling it mid-send is safe: the row stays `sending` and is requeued on next start.
        `tick`: how to run the group flush (the daemon's engine runs it off the event loop)."""
        while not stop.is_set():
            try:
                if tick is None:
                    self.tick()
                else:
                    await tick()
                await self.flush()
            except (SQLAlchemyError, OSError) as exc:  # the database comes back: keep notifying
                log.error("notification pipeline: tick failed: %s", describe_fault(exc))
            except Exception:  # a plugin's bug: loudly, and keep notifying
                log.exception("notification pipeline: tick failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval)

    # -- housekeeping --------------------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        """keywatch_notifications_total{outcome}: sent, failed, expired, suppressed (survive
        restarts)."""
        return self.outbox.counts()

    def backlog(self, now: float | None = None) -> Backlog:
        """keywatch_notifications_pending{severity} and keywatch_notification_oldest_pending_seconds."""
        return self.outbox.backlog(self._clock.now() if now is None else now)

    def prune(self, now: float, *, keep: float = 7 * 86400.0) -> tuple[int, int]:
        """Drop finished (sent, failed, expired) outbox rows older than `keep` seconds (the counters
        keep their totals), and forget groups whose last notice, that long ago, said nothing fires.
        Returns (outbox rows, log entries) dropped."""
        return self._store.prune_outbox(now - keep), self._log.prune(now - keep)
