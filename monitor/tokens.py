"""A token as keywatch knows it: the relay's last word plus keywatch's own counters."""

from __future__ import annotations

import functools
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, tzinfo
from typing import Literal

from monitor.model import Observation, TokenLimits
from monitor.spend import UsageMark

__all__ = [
    "TokenState",
    "naming_labels",
    "needs_windows",
    "period_starts",
    "with_series_labels",
    "with_windows",
]

# [env]-[project]-[purpose]-[date], e.g. prod-webapp-api-2024-01 (the product guide's convention)
_NAMING = re.compile(
    r"^(?P<env>[a-z0-9]+)-(?P<project>[a-z0-9]+)-(?P<purpose>[a-z0-9_]+(?:-[a-z0-9_]+)*?)-(?P<date>\d{4}-\d{2})$"
)


@functools.lru_cache(maxsize=1 << 18)  # bounded; names repeat every poll, rules and views ask often
def naming_labels(name: str) -> tuple[str, str] | None:
    """(env, project) for names that follow the convention, else None."""
    m = _NAMING.match(name.lower())
    return (m["env"], m["project"]) if m else None


@dataclass(frozen=True, slots=True)
class TokenState:
    pk: int | None  # database id; None until first stored
    provider: str
    token_id: str
    name: str
    status: str
    first_seen: float
    last_seen: float
    created_at: float | None = None
    last_used_at: float | None = None
    expires_at: float | None = None
    key_sha256: str | None = None
    limits: TokenLimits = field(default_factory=TokenLimits)
    ip_whitelist: tuple[str, ...] = ()
    missing_since: float | None = None
    spend_total_usd: float = 0.0
    requests_total: int = 0
    corrections_usd_total: float = 0.0  # dollars the relay took back (refunds, re-rating)
    mark: UsageMark | None = None
    usage_known: bool = False  # has the relay ever told us this token's usage?
    # Day and month spend from keywatch's own history, for relays that keep only a lifetime
    # counter (one-api, new-api): what keywatch saw since the window began. Not stored.
    derived_day_usd: float | None = None
    derived_month_usd: float | None = None
    # The observation this state was last derived from (not stored): when an adapter hands the
    # very same object again, nothing about the token changed and ingest can skip it.
    observation: Observation | None = field(default=None, compare=False, repr=False)
    # The `token` label of its metrics and alerts when another token of the provider has the same
    # name ("" means the name itself): see with_series_labels. Not stored.
    label: str = field(default="", compare=False)

    @property
    def series(self) -> str:
        """The token's `token` label: its name, unless that would merge it with another token."""
        return self.label or self.name

    @property
    def day_usd(self) -> float | None:
        """Spend in the current day window: the relay's figure, else keywatch's own."""
        if self.mark is not None and self.mark.today_usd is not None:
            return self.mark.today_usd
        return self.derived_day_usd

    @property
    def month_usd(self) -> float | None:
        if self.mark is not None and self.mark.month_usd is not None:
            return self.mark.month_usd
        return self.derived_month_usd

    def spend_in(self, window: Literal["day", "month"], now: float, tz: tzinfo) -> float | None:
        """Spend in the day or month that `now` falls in (on `tz`'s calendar), for rules that judge
        the current period. A relay figure shown in an earlier period is that period's spend, not
        this one's: unknown (None), never carried over — a token whose entry was skipped since
        midnight must not cross today's budget on yesterday's money."""
        mark, shown = self.mark, None
        if mark is not None:
            shown = mark.today_usd if window == "day" else mark.month_usd
        if shown is None or mark is None:
            return self.derived_day_usd if window == "day" else self.derived_month_usd
        fmt = "%Y-%m-%d" if window == "day" else "%Y-%m"
        same = datetime.fromtimestamp(mark.observed_at, tz).strftime(fmt) == datetime.fromtimestamp(
            now, tz
        ).strftime(fmt)
        return shown if same else None

    @property
    def env(self) -> str:
        labels = naming_labels(self.name)
        return labels[0] if labels else ""

    @property
    def project(self) -> str:
        labels = naming_labels(self.name)
        return labels[1] if labels else ""


def with_series_labels(states: Mapping[str, TokenState]) -> dict[str, TokenState]:
    """The states with `label` set where names repeat within the provider: Prometheus keeps one
    series of identical label sets and drops the rest, and alerts would merge. Live tokens rank
    first, then the first seen: that one keeps the plain name, the others get `name#token_id`.
    States whose label is already right are returned as the same objects (caches key on them)."""
    counts = Counter(s.name for s in states.values())
    out = dict(states)
    repeated = {name for name, n in counts.items() if n > 1}
    for token_id, state in states.items():
        if state.label and state.name not in repeated:
            out[token_id] = replace(state, label="")
    if not repeated:
        return out
    groups: dict[str, list[TokenState]] = {}
    for state in states.values():
        if state.name in repeated:
            groups.setdefault(state.name, []).append(state)
    taken = set(counts)
    for name, group in groups.items():
        group.sort(key=lambda s: (s.missing_since is not None, s.first_seen, s.token_id))
        for rank, state in enumerate(group):
            label = "" if rank == 0 else f"{name}#{state.token_id}"
            while label in taken:  # a token named like another's label ("x#3"): step aside
                label += "#"
            taken.add(label)
            if state.label != label:
                out[state.token_id] = replace(state, label=label)
    return out


def needs_windows(state: TokenState) -> bool:
    """A token whose relay reports spend but no day or month figure: its windows come from
    keywatch's own history (the relay keeps only a lifetime counter)."""
    return state.usage_known and (
        state.mark is None or (state.mark.today_usd is None and state.mark.month_usd is None)
    )


def period_starts(at: float, tz: tzinfo) -> tuple[float, float]:
    """When the day and the month that `at` falls in began, on `tz`'s calendar."""
    day = datetime.fromtimestamp(at, tz).replace(hour=0, minute=0, second=0, microsecond=0)
    return day.timestamp(), day.replace(day=1).timestamp()


def with_windows(
    states: Mapping[str, TokenState], sums: Mapping[int, tuple[float, float]]
) -> dict[str, TokenState]:
    """The states with their day and month spend from `sums` (token pk -> (day, month) spend, as
    UsageReader.window_sums gives it) where the relay gives no such figure. States that need no
    change are returned as the same objects."""
    out = dict(states)
    for token_id, st in states.items():
        if not needs_windows(st) or st.pk is None:
            continue
        day_usd, month_usd = sums.get(st.pk, (0.0, 0.0))
        if (st.derived_day_usd, st.derived_month_usd) != (day_usd, month_usd):
            out[token_id] = replace(st, derived_day_usd=day_usd, derived_month_usd=month_usd)
    return out
