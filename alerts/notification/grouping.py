"""Alertmanager's dispatch: route by severity to a receiver (a tag set), group by labels, time the
flushes (group_wait, group_interval) and decide from the notification log whether to send.

Budget alerts notify once per threshold per budget period without any special case here: their
labels carry window, threshold and period, so each (threshold, period) is its own fingerprint —
crossing 80% in March is a new alert, crossing it again in March is the same one. They are also
listed in NO_REPEAT_RULES so an unchanged budget group is not re-sent every repeat_interval.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field

from alerts.lifecycle.records import Alert, LogEntry
from monitor.settings import Notify

__all__ = [
    "NO_REPEAT_RULES",
    "AlertGroup",
    "Decision",
    "Dispatcher",
    "decide",
    "group_key",
    "group_labels",
    "receiver_tags",
]

NO_REPEAT_RULES = frozenset({"budget"})

# Reasons that send; every other reason is a no-send.
SEND_REASONS = ("first", "new_alerts", "resolved", "new_resolved", "repeat")


@dataclass(frozen=True, slots=True)
class Decision:
    send: bool
    reason: str
    record: bool = False  # update the notification log even though nothing is sent


def decide(
    previous: LogEntry | None,
    firing: AbstractSet[str],
    resolved: AbstractSet[str],
    now: float,
    settings: Notify,
    *,
    repeatable: bool = True,
) -> Decision:
    """Send or not, and why (Alertmanager's DedupStage.needsUpdate, with reasons).

    `firing`: the group's firing, unmuted fingerprints. `resolved`: its resolved, unmuted
    fingerprints that this receiver was last told were firing — an alert nobody heard about
    firing gets no resolved notice. `repeatable` is False when every firing alert is in
    NO_REPEAT_RULES.
    """
    if previous is None:
        return Decision(True, "first") if firing else Decision(False, "empty")
    if not firing <= previous.firing:
        return Decision(True, "new_alerts")
    if not firing:
        if resolved and settings.send_resolved:
            return Decision(True, "resolved")
        if previous.firing:
            # Nothing to tell (resolved notices off, or the rest is muted or gone), but remember
            # the group went quiet so that a re-fire, or a silence ending, counts as new.
            return Decision(False, "resolved_quiet", record=True)
        return Decision(False, "empty")
    if settings.send_resolved and not resolved <= previous.resolved:
        return Decision(True, "new_resolved")
    if repeatable and now - previous.sent_at >= settings.repeat_interval:
        return Decision(True, "repeat")
    return Decision(False, "unchanged")


def receiver_tags(severity: str, settings: Notify) -> tuple[str, ...]:
    """The Apprise tags a severity is routed to; () means "do not notify this severity"."""
    return tuple(settings.routes.get(severity, (severity,)))


def group_labels(labels: Mapping[str, str], group_by: Iterable[str]) -> tuple[tuple[str, str], ...]:
    keys = tuple(group_by)
    if "..." in keys:  # Alertmanager's "group by every label": one alert per group
        keys = tuple(sorted(labels))
    return tuple((k, labels.get(k, "")) for k in keys)


def group_key(labels: Mapping[str, str], group_by: Iterable[str]) -> str:
    return "{" + ",".join(f"{k}={v}" for k, v in group_labels(labels, group_by)) + "}"


@dataclass(frozen=True, slots=True)
class AlertGroup:
    """What one flush of one group hands to rendering: its unmuted firing and resolved alerts."""

    key: str
    receiver: str
    tags: tuple[str, ...]
    labels: Mapping[str, str]
    firing: tuple[Alert, ...] = ()
    resolved: tuple[Alert, ...] = ()


@dataclass(slots=True)
class _Timer:
    next_flush: float
    labels: dict[str, str] = field(default_factory=dict)
    tags: tuple[str, ...] = ()


class Dispatcher:
    """Group timers: a new group flushes after group_wait, then every group_interval, and is
    dropped once a flush finds nothing firing. In memory by design — after a restart groups
    re-form with group_wait, and the persisted notification log keeps them from re-sending."""

    def __init__(self, settings: Notify) -> None:
        self.settings = settings
        self._timers: dict[tuple[str, str], _Timer] = {}
        # Every open alert is addressed after every poll: the answer is kept per alert and
        # severity (its labels never change; the settings come with a new Dispatcher).
        self._addresses: dict[str, tuple[str, tuple[str, str, tuple[str, ...]]]] = {}

    def address(self, alert: Alert) -> tuple[str, str, tuple[str, ...]]:
        """(receiver, group key, tags) for an alert."""
        known = self._addresses.get(alert.fingerprint)
        if known is not None and known[0] == alert.severity:
            return known[1]
        tags = receiver_tags(alert.severity, self.settings)
        found = ",".join(tags), group_key(alert.match_labels(), self.settings.group_by), tags
        self._addresses[alert.fingerprint] = (alert.severity, found)
        return found

    def trim_addresses(self, live: AbstractSet[str] | Mapping[str, object]) -> None:
        """Drop the addresses of forgotten alerts once they are most of what is kept (amortised:
        not a scan per poll)."""
        if len(self._addresses) > 2 * len(live) + 64:
            self._addresses = {fp: a for fp, a in self._addresses.items() if fp in live}

    def observe(self, alert: Alert, now: float) -> None:
        receiver, key, tags = self.address(alert)
        if (receiver, key) not in self._timers:
            labels = dict(group_labels(alert.match_labels(), self.settings.group_by))
            self._timers[(receiver, key)] = _Timer(now + self.settings.group_wait, labels, tags)

    def due(self, now: float) -> list[tuple[str, str]]:
        return sorted(k for k, t in self._timers.items() if t.next_flush <= now)

    def group_of(self, receiver: str, key: str) -> tuple[dict[str, str], tuple[str, ...]]:
        timer = self._timers[(receiver, key)]
        return timer.labels, timer.tags

    def flushed(self, receiver: str, key: str, now: float, *, still_firing: bool) -> None:
        if still_firing:
            self._timers[(receiver, key)].next_flush = now + self.settings.group_interval
        else:
            self._timers.pop((receiver, key), None)

    def next_flush(self) -> float | None:
        return min((t.next_flush for t in self._timers.values()), default=None)

    def __len__(self) -> int:
        return len(self._timers)
