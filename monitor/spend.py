"""Turn a relay's resetting usage windows into monotonic spend deltas.

Relays report `today_usage` and `month_usage`, which drop to zero at the relay's day and month
boundary. keywatch keeps a lifetime counter per token, so each poll must turn (previous figures,
current figures) into "what was spent since the last poll" — without losing spend across a
rollover and without counting anything twice.

The month figure is preferred: a day rollover inside a month is invisible to it, so a poll that
spans midnight (or a restart that does) still sees every cent. A window is taken to have reset
when its figure went down, or when the poll crossed the window's boundary in the relay's time
zone. One exception guards against a misconfigured time zone: on the first day of a month, a
month figure larger than the day figure means the relay has not rolled over yet.

What cannot be seen is said, not guessed: spend between the last poll and a month boundary is
unobservable after the reset (the relay no longer reports it); `gap` flags such deltas.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from zoneinfo import ZoneInfo

from monitor.providers.base import Observation

__all__ = ["UsageDelta", "UsageMark", "mark_of", "usage_delta"]

_EPS = 1e-9


@dataclass(frozen=True, slots=True)
class UsageMark:
    """What keywatch remembers of a token's last accepted observation."""

    observed_at: float
    today_usd: float | None = None
    month_usd: float | None = None
    today_requests: int | None = None
    total_usd: float | None = None


@dataclass(frozen=True, slots=True)
class UsageDelta:
    cost_usd: float
    requests: int
    # True when spend may have happened that no figure can show (a boundary passed between polls).
    gap: bool = False
    # A human reason when a figure moved in a way the relay should not make it move.
    anomaly: str | None = None


def mark_of(obs: Observation, observed_at: float) -> UsageMark:
    return UsageMark(observed_at, obs.today_usd, obs.month_usd, obs.today_requests, obs.total_usd)


def usage_delta(
    prev: UsageMark | None, obs: Observation, now: float, tz: ZoneInfo, *, is_new: bool
) -> UsageDelta:
    """Spend and requests since `prev`.

    `prev` is None the first time keywatch sees a token. `is_new` says whether the token
    appeared after keywatch began watching its provider: then whatever it has spent is new spend
    (it was created since the last poll). Otherwise the first figures are only a starting point.
    """
    if prev is None:
        if not is_new:
            return UsageDelta(0.0, 0)
        first = _first_of(obs.total_usd, obs.month_usd, obs.today_usd)
        return UsageDelta(_clean(first), max(obs.today_requests or 0, 0))

    then = _local(prev.observed_at, tz)
    here = _local(now, tz)
    day_crossed = here.date() != then.date()
    month_crossed = (here.year, here.month) != (then.year, then.month)

    cost, gap, anomaly = _cost(prev, obs, here, day_crossed, month_crossed)
    requests = _window_delta(prev.today_requests, obs.today_requests, day_crossed)
    return UsageDelta(_clean(cost), int(requests or 0), gap, anomaly)


@lru_cache(maxsize=4096)
def _local(ts: float, tz: ZoneInfo) -> datetime:
    """A cycle's tokens share a handful of observation times: convert each once."""
    return datetime.fromtimestamp(ts, tz)


def _cost(
    prev: UsageMark, obs: Observation, here: datetime, day_crossed: bool, month_crossed: bool
) -> tuple[float, bool, str | None]:
    if obs.total_usd is not None and prev.total_usd is not None:
        delta = obs.total_usd - prev.total_usd
        if delta < -_EPS:  # a lifetime counter never shrinks: rebase, count nothing
            return 0.0, False, "lifetime usage went down"
        return delta, False, None
    if obs.month_usd is not None and prev.month_usd is not None:
        crossed = month_crossed
        if crossed and here.day == 1 and obs.today_usd is not None and obs.month_usd > obs.today_usd + _EPS:
            crossed = False  # the relay's month has not rolled over yet: its time zone is not ours
        return _window_delta(prev.month_usd, obs.month_usd, crossed) or 0.0, crossed, None
    if obs.today_usd is not None and prev.today_usd is not None:
        return _window_delta(prev.today_usd, obs.today_usd, day_crossed) or 0.0, day_crossed, None
    return 0.0, False, None


def _window_delta(prev: float | None, cur: float | None, crossed: bool) -> float | None:
    """Delta of one resetting window: after a reset, the current figure is all new."""
    if cur is None or prev is None:
        return None
    if crossed or cur < prev - _EPS:
        return cur
    return cur - prev


def _first_of(*values: float | None) -> float:
    for v in values:
        if v is not None:
            return v
    return 0.0


def _clean(value: float) -> float:
    rounded = round(value, 9)
    return 0.0 if abs(rounded) < _EPS else rounded
