"""The stages of a flush, in the order NotificationPipeline.tick runs them (Alertmanager's
notification pipeline):

    MuteStage     silences and inhibition: which alerts may not notify now, and why
    GroupStage    group timers: the groups whose group_wait or group_interval is up
    DedupStage    the notification log: which groups have news, and why (repeats included)
    RenderStage   title and body, Apprise type, the row's severity
    OutboxStage   log entry + outbox row in one transaction (sending is the outbox's, later)
    RearmStage    the flushed groups' next flush, set last: a group whose write failed stays due

Each stage has one method, `run(batch) -> batch`: it reads what earlier stages put in the Batch and
adds its own field. The logic lives in the modules the stages call (mute, grouping, render, nflog);
a stage only adapts it to the batch, so each can be tested alone on a hand-built Batch.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Protocol

from alerts.lifecycle.records import Alert, LogEntry, OutboxItem
from alerts.model import Severity
from alerts.notification.grouping import AlertGroup, Dispatcher, decide
from alerts.notification.mute import Muter
from alerts.notification.nflog import NotificationLog
from alerts.notification.render import notify_type_for, render, severity_for
from monitor.cluster import Fenced, Ownership
from monitor.settings import Notify

__all__ = [
    "Batch",
    "DedupStage",
    "Dispatched",
    "Due",
    "GroupStage",
    "MuteStage",
    "Notice",
    "OutboxStage",
    "RearmStage",
    "RenderStage",
    "Rendered",
    "Stage",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Due:
    """A group whose timer is up. `group` holds its audible (unmuted) alerts, firing and resolved;
    `still_firing` counts muted members too: a muted alert that fires keeps the group's timer."""

    group: AlertGroup
    still_firing: bool


@dataclass(frozen=True, slots=True)
class Notice:
    """A group with news: what to tell (its resolved alerts narrowed to those the receiver was told
    fire), why, and the log entry that records the telling."""

    group: AlertGroup
    reason: str
    entry: LogEntry


@dataclass(frozen=True, slots=True)
class Rendered:
    notice: Notice
    title: str
    body: str
    notify_type: str  # Apprise NotifyType value
    severity: Severity  # the outbox row's: decides whether it may ever be given up


@dataclass(frozen=True, slots=True)
class Dispatched:
    """One notification a tick decided to send (queued in the outbox, or only logged)."""

    group_key: str
    receiver: str
    reason: str
    title: str
    body: str
    outbox_id: int | None  # None when there are no targets and it was only logged


@dataclass(frozen=True, slots=True)
class Batch:
    """One tick's flush as it passes through the stages; each stage fills its own field."""

    now: float
    alerts: tuple[Alert, ...]  # the last evaluation's alerts, in every state
    muted: Mapping[str, str] = field(default_factory=dict)  # mute: fingerprint -> why
    due: tuple[Due, ...] = ()  # group: every group flushed this tick
    notices: tuple[Notice, ...] = ()  # dedup: groups to notify
    quiet: tuple[LogEntry, ...] = ()  # dedup: groups that went quiet, logged without a send
    rendered: tuple[Rendered, ...] = ()  # render
    dispatched: tuple[Dispatched, ...] = ()  # outbox


class Stage(Protocol):
    def run(self, batch: Batch) -> Batch: ...


class MuteStage:
    """Silences and inhibition decide which alerts may not notify now, and say why. Muted alerts
    stay in the batch (they still count for their group's timer); later stages leave them out."""

    def __init__(self, muter: Muter) -> None:
        self._muter = muter

    def run(self, batch: Batch) -> Batch:
        return replace(batch, muted=self._muter.muted(batch.alerts, batch.now))


class GroupStage:
    """The groups whose timer is up (group_wait after the first alert, then every group_interval),
    each with its audible members."""

    def __init__(self, dispatcher: Dispatcher, ownership: Ownership | None = None) -> None:
        self._dispatcher = dispatcher
        self._ownership = ownership

    def run(self, batch: Batch) -> Batch:
        due = self._dispatcher.due(batch.now)
        if self._ownership is not None:
            due = [(receiver, key) for receiver, key in due if self._ours(receiver, key, batch.now)]
        if not due:
            return batch
        members: dict[tuple[str, str], list[Alert]] = {}
        for alert in batch.alerts:
            if not self._owned(alert):
                continue  # a provider another instance polls now: its alerts are that one's to tell
            receiver, key, _ = self._dispatcher.address(alert)
            members.setdefault((receiver, key), []).append(alert)
        groups: list[Due] = []
        for receiver, key in due:
            alerts = members.get((receiver, key), [])
            audible = [a for a in alerts if a.fingerprint not in batch.muted]
            labels, tags = self._dispatcher.group_of(receiver, key)
            group = AlertGroup(
                key,
                receiver,
                tags,
                labels,
                firing=tuple(a for a in audible if a.state == "firing"),
                resolved=tuple(a for a in audible if a.state == "resolved"),
            )
            groups.append(Due(group, still_firing=any(a.state == "firing" for a in alerts)))
        return replace(batch, due=tuple(groups))

    def _owned(self, alert: Alert) -> bool:
        """Whether this instance may tell of the alert (several instances: monitor.cluster). Also
        covers groups whose labels leave out `provider` (`notify.group_by`): a process waking from
        a pause, before its heartbeat, never speaks for the providers it lost."""
        provider = alert.labels.get("provider")
        return self._ownership is None or provider is None or self._ownership.owns(provider)

    def _ours(self, receiver: str, key: str, now: float) -> bool:
        """A group of a provider another instance polls now is that instance's to tell: dropped."""
        assert self._ownership is not None
        provider = self._dispatcher.group_of(receiver, key)[0].get("provider")
        if provider is None or self._ownership.owns(provider):
            return True
        self._dispatcher.flushed(receiver, key, now, still_firing=False)
        return False


class DedupStage:
    """Against the notification log, each due group either has news (first, new alerts, resolved,
    a repeat after repeat_interval — never for NO_REPEAT_RULES alone), went quiet (logged, not
    sent), or is skipped as unchanged. An alert nobody was told fires gets no resolved notice."""

    def __init__(self, nflog: NotificationLog, settings: Notify, *, no_repeat: frozenset[str]) -> None:
        self._log = nflog
        self._settings = settings
        self._no_repeat = no_repeat

    def run(self, batch: Batch) -> Batch:
        notices: list[Notice] = []
        quiet: list[LogEntry] = []
        for due in batch.due:
            group = due.group
            previous = self._log.get(group.key, group.receiver)
            told = previous.firing if previous else frozenset()
            group = replace(group, resolved=tuple(a for a in group.resolved if a.fingerprint in told))
            firing = frozenset(a.fingerprint for a in group.firing)
            resolved = frozenset(a.fingerprint for a in group.resolved)
            repeatable = any(a.rule not in self._no_repeat for a in group.firing)
            decision = decide(previous, firing, resolved, batch.now, self._settings, repeatable=repeatable)
            if not (decision.send or decision.record):
                continue
            # a group that went quiet keeps its last send time: repeat_interval counts from a send
            sent_at = batch.now if decision.send or previous is None else previous.sent_at
            entry = LogEntry(group.key, group.receiver, firing, resolved, sent_at, decision.reason)
            if decision.send:
                notices.append(Notice(group, decision.reason, entry))
            else:
                quiet.append(entry)
        return replace(batch, notices=tuple(notices), quiet=tuple(quiet))


class RenderStage:
    def __init__(self, settings: Notify) -> None:
        self._settings = settings

    def run(self, batch: Batch) -> Batch:
        rendered = []
        for notice in batch.notices:
            title, body = render(notice.group, notice.reason, self._settings, now=batch.now)
            kind, severity = notify_type_for(notice.group), severity_for(notice.group)
            rendered.append(Rendered(notice, title, body, kind, severity))
        return replace(batch, rendered=tuple(rendered))


class OutboxStage:
    """Records each log entry, with its outbox row when the group is routed to a target, in one
    transaction. The row starts `pending`; only the outbox's sender marks it `sent`, after a target
    accepted it, so a crash in between resends rather than loses."""

    def __init__(
        self, nflog: NotificationLog, *, deliverable: bool, ownership: Ownership | None = None
    ) -> None:
        self._log = nflog
        self._deliverable = deliverable  # False: no targets at all, every notification is only logged
        self._ownership = ownership

    def _record(
        self, group: AlertGroup, entry: LogEntry, item: OutboxItem | None
    ) -> tuple[bool, OutboxItem | None]:
        """Record in one transaction that, with several instances, first checks that this one
        still holds the group's provider (else nothing is recorded: the new owner decides)."""
        provider = group.labels.get("provider")
        if self._ownership is None or provider is None:
            return True, self._log.record(entry, item)
        ownership = self._ownership
        try:
            return True, self._log.record(entry, item, guard=lambda conn: ownership.guard(conn, provider))
        except Fenced as exc:
            log.warning("notification for %s not recorded: %s", group.key, exc)
            return False, None

    def run(self, batch: Batch) -> Batch:
        for entry in batch.quiet:
            self._log.record(entry, None)
        dispatched: list[Dispatched] = []
        for r in batch.rendered:
            group = r.notice.group
            item = None
            if self._deliverable and group.tags:  # a route of [] means "log only"
                item = OutboxItem(
                    id=None,
                    created_at=batch.now,
                    group_key=group.key,
                    receiver=group.receiver,
                    tags=group.tags,
                    title=r.title,
                    body=r.body,
                    notify_type=r.notify_type,
                    severity=r.severity,
                    next_attempt_at=batch.now,
                )
            else:
                log.info("alert notification (not routed to any target): %s\n%s", r.title, r.body)
            recorded, stored = self._record(group, r.notice.entry, item)
            if not recorded:
                continue
            outbox_id = stored.id if stored else None
            dispatched.append(
                Dispatched(group.key, group.receiver, r.notice.reason, r.title, r.body, outbox_id)
            )
        return replace(batch, dispatched=tuple(dispatched))


class RearmStage:
    """Group/wait's other half: each flushed group flushes again a group_interval later, or is
    dropped once nothing in it fires (muted alerts included). It runs last, after the writes, so
    a tick that fails on the way leaves its groups due and the next tick tries again."""

    def __init__(self, dispatcher: Dispatcher) -> None:
        self._dispatcher = dispatcher

    def run(self, batch: Batch) -> Batch:
        for due in batch.due:
            group = due.group
            self._dispatcher.flushed(group.receiver, group.key, batch.now, still_firing=due.still_firing)
        return batch
