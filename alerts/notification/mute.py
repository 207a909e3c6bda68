"""Muting: silences (operator-set, time-boxed label matchers) and inhibition (a firing alert mutes
related ones). Muted alerts still exist and show in `keywatch alerts`; they just do not notify.

Every silence, from the API or the CLI, is checked here (Silences.add) against the bounds below:
each active silence is evaluated against every alert on every flush, so what one can hold and how
many there are must be bounded."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import Final

from alerts.lifecycle.records import Alert, Silence
from alerts.lifecycle.store import AlertStore
from alerts.matchers import Matcher, parse_matchers
from monitor.durations import format_duration

__all__ = [
    "DEFAULT_DURATION",
    "DEFAULT_INHIBIT_RULES",
    "MAX_COMMENT_CHARS",
    "MAX_CREATED_BY_CHARS",
    "MAX_MATCHERS",
    "MAX_SILENCES",
    "MAX_SILENCE_ID",
    "MAX_SILENCE_SECONDS",
    "InhibitRule",
    "Muter",
    "SilenceError",
    "Silences",
    "inhibited",
]

DEFAULT_DURATION = 3600.0  # amtool's default silence length
# Longer than any maintenance window; a silence forgotten for longer hides alerts nobody sees.
MAX_SILENCE_SECONDS: Final = 365 * 86400.0
# Matchers are ANDed and a real silence names one to four; each costs work per alert per flush.
MAX_MATCHERS: Final = 16
# A reason, not a document: a sentence or two and a ticket link.
MAX_COMMENT_CHARS: Final = 1024
# A user name or an e-mail address.
MAX_CREATED_BY_CHARS: Final = 256
# Active and pending together: every flush checks every alert against each of them, so this
# times MAX_MATCHERS bounds the matcher calls per alert per flush (8,000: ~25 ms at worst).
MAX_SILENCES: Final = 500
# Ids are SQLite INTEGERs (signed 64-bit): nothing outside 1..2**63-1 can name a silence.
MAX_SILENCE_ID: Final = 2**63 - 1


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
        """Store a silence after checking every bound; SilenceError or MatcherError says what is wrong."""
        parsed = _matchers(matchers)
        _check_text("comment", comment, MAX_COMMENT_CHARS)
        if not comment.strip():
            raise SilenceError("a silence needs a comment: say why")
        _check_text("created_by", created_by, MAX_CREATED_BY_CHARS)
        start, end = _window(now, duration, starts_at, ends_at)
        live = len(self._store.load_silences(not_ended_at=now))
        if live >= MAX_SILENCES:
            raise SilenceError(
                f"there are already {live} active or pending silences (at most {MAX_SILENCES}): expire some first"
            )
        return self._store.add_silence(Silence(None, parsed, start, end, created_by, comment))

    def query(self, *, now: float, include_expired: bool = False) -> list[Silence]:
        """For `silence list`: the silences not yet ended (or all of them)."""
        return self._store.load_silences(not_ended_at=None if include_expired else now)

    def expire(self, silence_id: int, *, now: float) -> bool:
        """End a silence now; False if there is none with that id (any int is safe to pass)."""
        if not 1 <= silence_id <= MAX_SILENCE_ID:
            return False
        return self._store.expire_silence(silence_id, now)

    def active(self, now: float) -> list[Silence]:
        return [s for s in self._store.load_silences(not_ended_at=now) if s.status(now) == "active"]


def _matchers(matchers: Iterable[str | Matcher]) -> tuple[Matcher, ...]:
    first = list(islice(matchers, MAX_MATCHERS + 1))  # never more than that is even looked at
    if not first:
        raise SilenceError("a silence needs at least one matcher")
    if len(first) > MAX_MATCHERS:
        raise SilenceError(f"a silence has at most {MAX_MATCHERS} matchers")
    return parse_matchers(first)


def _check_text(field: str, text: str, most: int) -> None:
    if len(text) > most:
        raise SilenceError(f"{field} is longer than {most} characters")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates, e.g. from a non-UTF-8 command line
        raise SilenceError(f"{field} is not valid UTF-8 text") from None


def _window(
    now: float, duration: float, starts_at: float | None, ends_at: float | None
) -> tuple[float, float]:
    """(start, end) of a new silence: it ends in the future, after it starts, and neither its length
    nor its start lies more than MAX_SILENCE_SECONDS away, so every time it holds renders as a date."""
    start = now if starts_at is None else starts_at
    end = start + duration if ends_at is None else ends_at
    if not all(math.isfinite(t) for t in (now, start, end)):
        raise SilenceError("a silence needs finite start and end times")
    if end <= start:
        raise SilenceError("a silence must end after it starts")
    if end <= now:
        raise SilenceError("a silence must end in the future")
    most = format_duration(MAX_SILENCE_SECONDS)
    if end - start > MAX_SILENCE_SECONDS:
        raise SilenceError(
            f"a silence lasts at most 1 year ({most}); this one would last {format_duration(end - start)}"
        )
    if start - now > MAX_SILENCE_SECONDS:
        raise SilenceError(f"a silence must start within 1 year ({most}) from now")
    return start, end


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
