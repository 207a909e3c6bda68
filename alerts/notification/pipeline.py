"""The notification side composed: transitions and alert states in, outbox rows out, sends later.

    process(transitions, alerts)   after each evaluation: remember states, count muted transitions,
                                   start group timers for firing alerts
    tick(now)                      flush due groups: mute -> group -> decide (notification log) ->
                                   render -> log entry + outbox row in one transaction; the row
                                   carries the group's highest severity (firing or resolved)
    flush(now)                     send due outbox rows (retries, backoff, at-least-once; critical
                                   and security until delivered, lower ones expire: alerts.notification.outbox)
    run_sender(stop)               tick + flush every second until `stop` is set

Time comes from the injected Clock or an explicit `now`; tests drive tick/flush by hand.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from alerts.lifecycle.records import Alert, LogEntry, OutboxItem, Transition
from alerts.lifecycle.store import AlertStore
from alerts.notification.grouping import NO_REPEAT_RULES, AlertGroup, Dispatcher, decide
from alerts.notification.mute import Muter, Silences
from alerts.notification.notify import Notifier
from alerts.notification.outbox import EXPIRE_AFTER, Backlog, FlushReport, Outbox, RetryPolicy
from alerts.notification.render import notify_type_for, render, severity_for
from monitor.clock import Clock
from monitor.settings import Notify, Settings

__all__ = ["Dispatched", "NotificationPipeline"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Dispatched:
    """One notification a tick decided to send (queued in the outbox, or only logged)."""

    group_key: str
    receiver: str
    reason: str
    title: str
    body: str
    outbox_id: int | None  # None when there are no targets and it was only logged


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
    ) -> None:
        self.listeners: list[Callable[[Dispatched], None]] = []  # e.g. the demo's console
        notify = settings.notify if isinstance(settings, Settings) else settings
        self._store = store
        self._clock = clock
        self._notify = notify
        self._no_repeat = frozenset(no_repeat_rules)
        self.muter = muter if muter is not None else Muter(Silences(store))
        self.dispatcher = Dispatcher(notify)
        policy = RetryPolicy(cap=notify.group_interval, expire_after=expire_after)
        self.outbox = Outbox(store, notifier, policy=policy, recover=recover)
        self._deliverable = notifier.has_targets
        self._log: dict[tuple[str, str], LogEntry] = store.load_log()
        self._alerts: dict[str, Alert] = {}

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

    # -- stage 1: after each evaluation --------------------------------------------------------

    def process(
        self, transitions: Sequence[Transition], alerts: Iterable[Alert], now: float | None = None
    ) -> int:
        """Take the evaluation's result; returns how many transitions were muted (suppressed)."""
        now = self._clock.now() if now is None else now
        self._alerts = {a.fingerprint: a for a in alerts}
        suppressed = 0
        if transitions:
            muted = self.muter.muted(self._alerts.values(), now)
            suppressed = sum(1 for t in transitions if t.alert.fingerprint in muted and self._would_notify(t))
            self._store.bump("suppressed", suppressed)
        for alert in self._alerts.values():
            receiver, key, _ = self.dispatcher.address(alert)
            if alert.state == "firing" or (
                alert.state == "resolved" and self._told_firing(key, receiver, alert)
            ):
                self.dispatcher.observe(alert, now)
        return suppressed

    def _would_notify(self, t: Transition) -> bool:
        if t.to_state == "firing":
            return True
        if t.to_state == "resolved" and self._notify.send_resolved:
            receiver, key, _ = self.dispatcher.address(t.alert)
            return self._told_firing(key, receiver, t.alert)
        return False

    def _told_firing(self, key: str, receiver: str, alert: Alert) -> bool:
        entry = self._log.get((key, receiver))
        return entry is not None and alert.fingerprint in entry.firing

    # -- stage 2: group flushes ----------------------------------------------------------------

    def tick(self, now: float | None = None) -> list[Dispatched]:
        now = self._clock.now() if now is None else now
        due = self.dispatcher.due(now)
        if not due:
            return []
        muted = self.muter.muted(self._alerts.values(), now)
        members: dict[tuple[str, str], list[Alert]] = {}
        for alert in self._alerts.values():
            receiver, key, _ = self.dispatcher.address(alert)
            members.setdefault((receiver, key), []).append(alert)
        out: list[Dispatched] = []
        for receiver, key in due:
            group = members.get((receiver, key), [])
            sent = self._flush_group(receiver, key, group, muted, now)
            if sent is not None:
                out.append(sent)
                for listener in self.listeners:
                    listener(sent)
            still_firing = any(a.state == "firing" for a in group)
            self.dispatcher.flushed(receiver, key, now, still_firing=still_firing)
        return out

    def _flush_group(
        self, receiver: str, key: str, group: list[Alert], muted: dict[str, str], now: float
    ) -> Dispatched | None:
        previous = self._log.get((key, receiver))
        told = previous.firing if previous else frozenset()
        firing = tuple(a for a in group if a.state == "firing" and a.fingerprint not in muted)
        resolved = tuple(
            a for a in group if a.state == "resolved" and a.fingerprint not in muted and a.fingerprint in told
        )
        repeatable = any(a.rule not in self._no_repeat for a in firing)
        decision = decide(
            previous,
            frozenset(a.fingerprint for a in firing),
            frozenset(a.fingerprint for a in resolved),
            now,
            self._notify,
            repeatable=repeatable,
        )
        if not (decision.send or decision.record):
            return None
        entry = LogEntry(
            group_key=key,
            receiver=receiver,
            firing=frozenset(a.fingerprint for a in firing),
            resolved=frozenset(a.fingerprint for a in resolved),
            sent_at=now if decision.send or previous is None else previous.sent_at,
            reason=decision.reason,
        )
        if not decision.send:
            self._store.record_notification(entry, None)
            self._log[(key, receiver)] = entry
            return None

        labels, tags = self.dispatcher.group_of(receiver, key)
        rendered = AlertGroup(key, receiver, tags, labels, firing, resolved)
        title, body = render(rendered, decision.reason, self._notify, now=now)
        item = None
        if self._deliverable and tags:  # a route of [] means "log only"
            item = OutboxItem(
                id=None,
                created_at=now,
                group_key=key,
                receiver=receiver,
                tags=tags,
                title=title,
                body=body,
                notify_type=notify_type_for(rendered),
                severity=severity_for(rendered),
                next_attempt_at=now,
            )
        else:
            log.info("alert notification (not routed to any target): %s\n%s", title, body)
        stored = self._store.record_notification(entry, item)
        self._log[(key, receiver)] = entry
        return Dispatched(key, receiver, decision.reason, title, body, stored.id if stored else None)

    # -- stage 3: sending ----------------------------------------------------------------------

    async def flush(self, now: float | None = None) -> FlushReport:
        return await self.outbox.flush(self._clock.now() if now is None else now)

    async def run_sender(self, stop: asyncio.Event, *, interval: float = 1.0) -> None:
        """The background task: group timers and outbox, every `interval` seconds until `stop`.
        Cancelling it mid-send is safe: the row stays `sending` and is requeued on next start."""
        while not stop.is_set():
            try:
                self.tick()
                await self.flush()
            except Exception:  # keep notifying after a transient database or plugin error
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

    def prune(self, now: float, *, keep: float = 7 * 86400.0) -> int:
        """Drop finished (sent, failed, expired) outbox rows older than `keep` seconds (the counters
        keep their totals)."""
        return self._store.prune_outbox(now - keep)
