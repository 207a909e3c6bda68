"""Muting: silences (operator-set, time-boxed label matchers) and inhibition (a firing alert mutes
related ones). Muted alerts still exist and show in `keywatch alerts`; they just do not notify."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from alerts.matchers import Matcher, parse_matchers
from alerts.records import Alert, Silence
from alerts.store import AlertStore

__all__ = [
    "DEFAULT_DURATION",
    "DEFAULT_INHIBIT_RULES",
    "InhibitRule",
    "Muter",
    "SilenceError",
    "Silences",
    "inhibited",
]

DEFAULT_DURATION = 3600.0  # amtool's default silence length


class SilenceError(ValueError):
    pass


class Silences:
    """Silences live in the database so `keywatch silence add` (another process) and the daemon
    share them; every read goes to the store, so a CLI change takes effect on the next flush."""

    def __init__(self, store: AlertStore) -> None:
        self._store = store

    def add(
        self,
        matchers: Iterable[str | Matcher],
        *,
        now: float,
        created_by: str,
        comment: str,
        duration: float = DEFAULT_DURATION,
        starts_at: float | None = None,
        ends_at: float | None = None,
    ) -> Silence:
        parsed = parse_matchers(matchers)
        if not parsed:
            raise SilenceError("a silence needs at least one matcher")
        start = now if starts_at is None else starts_at
        end = start + duration if ends_at is None else ends_at
        if end <= start:
            raise SilenceError("a silence must end after it starts")
        if end <= now:
            raise SilenceError("a silence must end in the future")
        return self._store.add_silence(Silence(None, parsed, start, end, created_by, comment))

    def query(self, *, now: float, include_expired: bool = False) -> list[Silence]:
        """For `silence list`: the silences not yet ended (or all of them)."""
        return self._store.load_silences(not_ended_at=None if include_expired else now)

    def expire(self, silence_id: int, *, now: float) -> bool:
        return self._store.expire_silence(silence_id, now)

    def active(self, now: float) -> list[Silence]:
        return [s for s in self._store.load_silences(not_ended_at=now) if s.status(now) == "active"]


@dataclass(frozen=True, slots=True)
class InhibitRule:
    """While an alert matching `source` fires, alerts matching `target` whose `equal` labels have
    the same values are muted. Sources are matched on labels and annotations (a responder marks a
    quarantined token with an annotation, not a label, so the alert's identity does not change)."""

    name: str
    source: tuple[Matcher, ...]
    target: tuple[Matcher, ...]
    equal: tuple[str, ...]

    @classmethod
    def of(
        cls, name: str, *, source: Sequence[str], target: Sequence[str], equal: Sequence[str]
    ) -> InhibitRule:
        return cls(name, parse_matchers(source), parse_matchers(target), tuple(equal))


DEFAULT_INHIBIT_RULES: tuple[InhibitRule, ...] = (
    # A relay that cannot be polled says nothing about its tokens: one provider alert, not fifty.
    InhibitRule.of(
        "provider_down",
        source=["rule=provider_down"],
        target=["rule!=provider_down", "token=~.+"],
        equal=["provider"],
    ),
    # A quarantined token's spend alerts are the leak's echo; the leak alert already said it.
    InhibitRule.of(
        "quarantined",
        source=["quarantined=~true|yes|1"],
        target=["rule=~budget|budget_forecast|spend_anomaly"],
        equal=["provider", "token"],
    ),
)


def inhibited(alerts: Iterable[Alert], rules: Sequence[InhibitRule]) -> dict[str, str]:
    """Fingerprint -> "inhibited by <rule name>" for every alert some firing source mutes."""
    pool = list(alerts)
    firing = [(a, a.match_labels(with_annotations=True)) for a in pool if a.state == "firing"]
    muted: dict[str, str] = {}
    for rule in rules:
        sources = [(a, labels) for a, labels in firing if all(m.matches(labels) for m in rule.source)]
        if not sources:
            continue
        keys = {(a.fingerprint, tuple(labels.get(k, "") for k in rule.equal)) for a, labels in sources}
        for target in pool:
            if target.fingerprint in muted:
                continue
            labels = target.match_labels()
            if not all(m.matches(labels) for m in rule.target):
                continue
            key = tuple(labels.get(k, "") for k in rule.equal)
            # an alert never inhibits itself (Alertmanager's rule too)
            if any(k == key and fp != target.fingerprint for fp, k in keys):
                muted[target.fingerprint] = f"inhibited by {rule.name}"
    return muted


class Muter:
    """The mute stage: which of these alerts must not notify now, and why."""

    def __init__(self, silences: Silences, rules: Sequence[InhibitRule] = DEFAULT_INHIBIT_RULES) -> None:
        self._silences = silences
        self._rules = tuple(rules)

    def muted(self, alerts: Iterable[Alert], now: float) -> dict[str, str]:
        pool = list(alerts)
        reasons = inhibited(pool, self._rules)
        active = self._silences.active(now)
        if active:
            for alert in pool:
                if alert.fingerprint in reasons:
                    continue
                labels = alert.match_labels()
                hit = next((s for s in active if s.matches(labels)), None)
                if hit is not None:
                    reasons[alert.fingerprint] = f"silenced by {hit.id}"
        return reasons
