"""Turn a relay's usage figures into a lifetime spend counter that is never invented and never lost.

Relays report `today_usage` and `month_usage`, which drop to zero at the relay's day and month
boundary, and some a lifetime figure (`used_quota`). keywatch keeps a lifetime counter per token,
so each poll turns (what it remembers, what the relay shows now) into "spent since the last poll".
The accounting window is the lifetime figure where the relay has one, else the month, else the
day: a day rollover inside a month is invisible to the month figure, so a poll (or a restart)
that spans midnight still sees every cent.

The rules, each with its reason:

- **A dip is a correction, not a new period.** one-api/new-api refund pre-consumed quota and
  relays re-rate requests, so a figure can go down inside its period. keywatch keeps the
  window's high-water mark for the period and counts only what rises above it; the drop is added
  to the token's corrected dollars (`keywatch_token_spend_corrections_usd_total`) and logged,
  never subtracted from the spend counter (a Prometheus counter does not go down) and never
  counted again when the figure climbs back.
- **The relay's own figures say when a period ended, wherever they can.** With spend today the
  two windows move alike unless one resets: a day reset drops the day figure while the month
  figure keeps what it had; a month reset puts the month figure onto the day figure (on the
  relay's first day of a month both count the same). This holds whatever time zone the relay
  resets in; a reset away from midnight in the configured `timezone` is logged so the operator
  can correct it, and a relay a zone behind ours is not reset early.
- **Otherwise the clock decides, and it only moves forward.** The caller passes the relay's own
  time (its `Date` header) where it sends a plausible one, else our wall clock
  (`monitor.periodclock`); a time earlier than the last poll's counts as no time passed, so a
  backwards step never resets a window. On our own clock (which may have been stepped forward,
  unseen, across a restart) a boundary is believed only when the relay's figures show a reset:
  the day's request count fell (a refund never lowers it), or, where the relay counts no
  requests, a dollar figure fell. A frozen relay resets nothing.
  After a reset the current figure is all new spend, and `gap` says some spend just before the
  boundary may be unseen.

`advance` is pure; `tests/monitor/test_spend_properties.py` checks the invariants with
hypothesis: the counter never decreases, never exceeds what the relay really charged, and equals
it for a well-formed series.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from zoneinfo import ZoneInfo

from monitor.model import Observation

__all__ = ["CORRECTION_NOTE", "UsageDelta", "UsageMark", "advance"]

_EPS = 1e-9
CORRECTION_NOTE = "the relay took money back (a refund or re-rating): counted as a correction, not spend"
_TZ_NOTE = (
    "the relay's {} rolled over away from midnight in the configured timezone (check providers[].timezone)"
)


@dataclass(frozen=True, slots=True)
class UsageMark:
    """What keywatch remembers of a token's usage figures: the last ones the relay showed, and
    each window's high-water mark in its current period where it is above the figure shown
    (None: the same as shown). `observed_at` is on the period clock and never goes back."""

    observed_at: float
    today_usd: float | None = None
    month_usd: float | None = None
    today_requests: int | None = None
    total_usd: float | None = None
    peak_today_usd: float | None = None
    peak_month_usd: float | None = None
    peak_total_usd: float | None = None
    peak_today_requests: int | None = None


@dataclass(frozen=True, slots=True)
class UsageDelta:
    cost_usd: float
    requests: int
    # True when spend may have happened that no figure can show (a boundary passed between polls).
    gap: bool = False
    # Why a figure moved in a way worth a log line (a correction, a reset away from midnight);
    # fixed texts, so a cycle's notes can be counted and logged once each.
    note: str | None = None
    # Dollars the relay took back since the last poll (refunds, re-rating): never negative spend.
    corrected_usd: float = 0.0


def advance(
    prev: UsageMark | None,
    obs: Observation,
    now: float,
    tz: ZoneInfo,
    *,
    is_new: bool,
    relay_clock: bool = False,
) -> tuple[UsageDelta, UsageMark]:
    """Spend and requests since `prev`, and the mark to remember next.

    `prev` is None the first time keywatch sees a token's figures. `is_new` says whether the
    token appeared after keywatch began watching its provider: then whatever it has spent is new
    spend (it was created since the last poll); otherwise the first figures are a starting point.
    `now` is the period clock (see the module docstring); `relay_clock` says it is the relay's
    own (its Date header), which a frozen relay cannot have moved past a boundary."""
    if prev is None:
        mark = UsageMark(now, obs.today_usd, obs.month_usd, obs.today_requests, obs.total_usd)
        if not is_new:
            return UsageDelta(0.0, 0), mark
        first = _first_of(obs.total_usd, obs.month_usd, obs.today_usd)
        return UsageDelta(_clean(first), obs.today_requests or 0), mark

    now = max(now, prev.observed_at)  # a clock that stepped back: no time passed
    roll = _rollovers(prev, obs, _local(prev.observed_at, tz), _local(now, tz), relay_clock)
    if obs.total_usd is not None and prev.total_usd is not None:
        cost = _Window.step(prev.total_usd, prev.peak_total_usd, obs.total_usd, reset=False)
    elif obs.month_usd is not None and prev.month_usd is not None:
        cost = _Window.step(prev.month_usd, prev.peak_month_usd, obs.month_usd, reset=roll.month)
    elif obs.today_usd is not None and prev.today_usd is not None:
        cost = _Window.step(prev.today_usd, prev.peak_today_usd, obs.today_usd, reset=roll.day)
    else:
        cost = _Window()
    requests = _Window.step(prev.today_requests, prev.peak_today_requests, obs.today_requests, reset=roll.day)
    note = CORRECTION_NOTE if cost.dropped > _EPS else roll.note
    # The windows not used for accounting keep their high-water marks by the same rules, so a
    # relay that stops reporting one figure hands over to the next from a true mark.
    day = _Window.step(prev.today_usd, prev.peak_today_usd, obs.today_usd, reset=roll.day)
    month = _Window.step(prev.month_usd, prev.peak_month_usd, obs.month_usd, reset=roll.month)
    total = _Window.step(prev.total_usd, prev.peak_total_usd, obs.total_usd, reset=False)
    mark = UsageMark(
        now,
        obs.today_usd,
        obs.month_usd,
        obs.today_requests,
        obs.total_usd,
        peak_today_usd=day.peak_if_above(obs.today_usd),
        peak_month_usd=month.peak_if_above(obs.month_usd),
        peak_total_usd=total.peak_if_above(obs.total_usd),
        peak_today_requests=_int_or_none(requests.peak_if_above(obs.today_requests)),
    )
    delta = UsageDelta(
        _clean(cost.rise),
        int(requests.rise),
        gap=cost.reset,
        note=note,
        corrected_usd=_clean(cost.dropped),
    )
    return delta, mark


@dataclass(frozen=True, slots=True)
class _Roll:
    day: bool
    month: bool
    note: str | None = None


def _rollovers(prev: UsageMark, obs: Observation, then: datetime, here: datetime, trusted: bool) -> _Roll:
    """Which windows reset between two polls: by the relay's own figures where they can tell,
    else by the clock (see the module docstring). `trusted`: the clock is the relay's own."""
    clock_day = here.date() != then.date()
    clock_month = (here.year, here.month) != (then.year, then.month)
    pt, pm, ct, cm = prev.today_usd, prev.month_usd, obs.today_usd, obs.month_usd
    if not trusted and not _reset_shows(prev, obs):
        # Our own clock may have been stepped forward (across a restart nothing can tell): a
        # boundary on it is believed only where the relay's figures show a reset.
        clock_day = clock_month = False
    if pt is None or pm is None or ct is None or cm is None:
        return _Roll(clock_day or clock_month, clock_month)
    if pm > pt + _EPS and abs(cm - ct) <= _EPS and (cm < pm - _EPS or clock_month):
        # The month figure fell onto the day figure: the relay is on the first day of a new month.
        return _Roll(True, True, None if clock_month else _TZ_NOTE.format("month"))
    if pm <= pt + _EPS and clock_month and abs(cm - ct) <= _EPS:
        return _Roll(True, True)  # on day one of a month both ways: only the clock can tell
    if pt > _EPS and (cm - pm) - (ct - pt) > _EPS:
        # The day figure lost what the month figure kept: the relay's day rolled over.
        return _Roll(True, False, None if clock_day else _TZ_NOTE.format("day"))
    if pt <= _EPS:
        return _Roll(clock_day, False)  # nothing today to lose: a reset changes nothing
    # Both figures moved alike: no reset, whatever the clock says (a relay a zone behind ours).
    return _Roll(False, False, _TZ_NOTE.format("day") if clock_day else None)


def _reset_shows(prev: UsageMark, obs: Observation) -> bool:
    """Figures a reset explains and a refund cannot: the day's request count fell (a refund
    never lowers it); without counts, a dollar figure fell. Or there was nothing to lose."""
    pr, cr = prev.today_requests, obs.today_requests
    if pr is not None and cr is not None and pr > 0:
        return cr < pr
    pairs = [
        (a, b) for a, b in ((prev.today_usd, obs.today_usd), (prev.month_usd, obs.month_usd)) if a is not None
    ]
    if all(a <= _EPS for a, _ in pairs):
        return True
    return any(b is not None and b < a - _EPS for a, b in pairs)


@dataclass(slots=True)
class _Window:
    """One window's step: what rose above the high-water mark, what dropped, the new peak."""

    rise: float = 0.0
    dropped: float = 0.0
    peak: float | None = None
    reset: bool = False

    @classmethod
    def step(cls, last: float | None, peak: float | None, cur: float | None, *, reset: bool) -> _Window:
        if cur is None or last is None:
            return cls(peak=cur)
        if reset:
            return cls(rise=cur, peak=cur, reset=True)
        high = last if peak is None else max(peak, last)
        return cls(rise=max(cur - high, 0.0), dropped=max(last - cur, 0.0), peak=max(high, cur))

    def peak_if_above(self, shown: float | None) -> float | None:
        if self.peak is None or shown is None or self.peak <= shown + _EPS:
            return None
        return self.peak


@lru_cache(maxsize=4096)
def _local(ts: float, tz: ZoneInfo) -> datetime:
    """A cycle's tokens share a handful of observation times: convert each once."""
    return datetime.fromtimestamp(ts, tz)


def _int_or_none(value: float | None) -> int | None:
    return None if value is None else int(value)


def _first_of(*values: float | None) -> float:
    for v in values:
        if v is not None:
            return v
    return 0.0


def _clean(value: float) -> float:
    rounded = round(value, 9)
    return 0.0 if abs(rounded) < _EPS else rounded
