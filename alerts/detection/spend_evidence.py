"""What a token's money says about who is using it: leak evidence a spend-only relay still gives.

The product guide's relay (laozhang), and one-api/new-api with their logs off, report per token only
spend and request counts — no client IPs, no models. These signals corroborate a leak from those
figures alone; each says what it saw, with its numbers:

- `price_shift`: the money per request moved far outside the token's own range (the money-side
  echo of a model change: a thief on an expensive model, or a flood of a cheap one). The range is
  the token's hourly cost per request over two weeks (median and robust spread, hours weighted by
  their requests), widened for windows shorter than an hour or with fewer requests than its
  typical hour; a fleet-wide move (a model upgrade everyone took) is
  taken off first. It must be >= 2.5x (or <= 1/2.5x) and >= 5 spreads away, over the last hour:
  a thief's model is usually 10-50x dearer (or a flood of one far cheaper).
- `off_hours` (learned): spending in an hour-of-week where, in the last two to four weeks, the
  token never spent more than a tenth of its busy level — for tokens whose use recurs in the same
  weekly slots (offices, nightly batches), from two weeks of history; a token used at random
  times has no such profile.
- `drain`: a surge that goes on longer than benign bursts run (6 h) and twice as long as this
  token's own longest burst in the last weeks: bursts decay, a thief keeps draining.
- `extreme_surge`: an hour at 100x what it expects and 5x the token's busiest hour in four weeks
  (of which at least 24 hours saw real use): far beyond benign bursts (2-12x); not on a month's
  last afternoon and evening, nor when its whole project moves with it.
- `wake_volume`: a dormant token woke up spending far above its old busy rate (or, with no past, above
  what the fleet's typical token spends in an hour).
- `over_spend_limit`: more money in 24 hours than the token's own daily limit at the relay.

Month ends are when companies run their batches: from noon to midnight on a month's last day
(UTC), use at an unusual hour (`off_hours`) is shown but not counted as evidence.
"""

from __future__ import annotations

import calendar
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from alerts.detection.series import HOUR, TokenHistory
from alerts.model import Signal
from monitor.money import usd

__all__ = [
    "SpendParams",
    "UsualPrice",
    "drain",
    "extreme_surge",
    "is_month_end",
    "price_shift",
    "quiet_slot",
    "spend_limit",
    "usual_price",
    "wake_volume",
]

WEEK: Final = 168  # hours
DAY: Final = 24
_MIN_SPREAD: Final = 0.05  # ln $/request: prices never read as steadier than this


@dataclass(frozen=True, slots=True)
class SpendParams:
    price_min_ratio: float = 2.5  # a shift must be at least this factor (a fleet upgrade is ~1.3-1.6) ...
    price_spreads: float = 5.0  # ... and this many of the token's own spreads
    price_min_requests: float = 20.0  # fewer requests in the window say nothing about their price
    price_history_hours: int = 14 * DAY
    price_min_hours: int = 24  # hours with requests needed to know its price (8 let a sparse token's odd session pass for another model)
    quiet_weeks_min: int = 2  # weeks of history before a weekly profile means anything
    quiet_share: float = 0.1  # a slot is quiet when it never reached this share of the busy level
    quiet_use_share: float = 0.2  # use in a quiet slot counts from this share of the busy level ...
    quiet_use_factor: float = 3.0  # ... and this many times the most the slot ever saw
    regular_share: float = 0.8  # share of spend in recurring slots for the profile to be trusted
    min_busy_usd_per_hour: float = 0.05  # tokens busier than this have a profile worth reading
    drain_min_hours: float = 6.0  # longer than benign bursts run (launch spikes, batches: 1-4 h)
    drain_floor_usd: float = 0.01  # hours below this are no burst
    surge_ratio: float = 100.0  # an hour this many times its expected ...
    surge_over_busiest: float = 5.0  # ... and this many times its busiest hour in four weeks
    surge_min_active_hours: int = 24  # hours of real use in those weeks before "busiest" means anything
    wake_factor: float = 3.0  # a waking token spends this many times its old busy rate ...
    wake_min_usd_per_hour: float = 0.5  # ... and at least this much


@dataclass(frozen=True, slots=True)
class UsualPrice:
    """What a token's requests usually cost: ln $/request."""

    long: float  # over `price_history_hours`, hours weighted by their requests
    recent: float  # over the 3 days before the episode: a model change the token already made
    spread: float  # hour-to-hour variability of ln $/request (unweighted: one big hour must not hide it)
    typical_requests: float  # in an hour


def usual_price(state: TokenHistory, before: int, p: SpendParams) -> UsualPrice | None:
    """The token's usual price from the hours before hour `before` (unmarked, with requests), or
    None without enough of them. Hours count by their requests: the usual price is what most of
    the token's requests cost (a quiet night's few background calls do not make it)."""
    cost, req, flags, head = state.rings()
    logs: list[tuple[float, float]] = []
    recent: list[tuple[float, float]] = []
    for k in range(max(before - p.price_history_hours, head - len(cost) + 1), min(before, head + 1)):
        i = k % len(cost)
        n, c = req[i], cost[i]
        if n >= 3 and c > 0 and not flags[i]:
            logs.append((math.log(c / n), n))
            if k >= before - 3 * DAY:
                recent.append(logs[-1])
    if len(logs) < p.price_min_hours:
        return None
    long = _weighted_median(logs)
    typical = _median([n for _, n in logs])
    # The spread of the hours that carry the token's usual traffic: its trickle hours (a few calls
    # at night, often on another model) are neither its price nor a measure of how it varies.
    busy = [x for x, n in logs if n >= typical / 2] or [x for x, _ in logs]
    spread = 1.4826 * _median([abs(x - long) for x in busy])
    latest = _weighted_median(recent) if sum(n for _, n in recent) >= p.price_min_requests else long
    return UsualPrice(long, latest, max(spread, _MIN_SPREAD), typical)


def price_shift(
    state: TokenHistory,
    cost: float,
    requests: float,
    window: float,
    before: int,
    p: SpendParams,
    *,
    fleet_drift: float = 0.0,
) -> Signal | None:
    """The window's money per request against the token's own (`cost`, `requests`: the last
    `window` seconds'; `before`: the hour the episode began, the usual is from before it)."""
    if not state.has_requests or requests < p.price_min_requests or cost <= 0:
        return None
    usual = usual_price(state, before, p)
    if usual is None:
        return None
    # The spread is of hours: a shorter window varies more (like the anomaly score's), and so does
    # one with fewer requests than the token's typical hour; one with more is not assumed to vary
    # less (costs come in batches, not as independent requests).
    window_spread = usual.spread * math.sqrt(max(HOUR / window, usual.typical_requests / requests, 1.0))
    need = max(math.log(p.price_min_ratio), p.price_spreads * window_spread)
    price = math.log(cost / requests) - fleet_drift
    # Away from both its long-run price and the price of its last days: a model the token moved
    # to days ago (a fleet-wide upgrade it took) is its price now, not a stranger's.
    shifts = (price - usual.long, price - usual.recent)
    if min(abs(x) for x in shifts) < need or shifts[0] * shifts[1] < 0:
        return None
    median = usual.long if abs(shifts[0]) <= abs(shifts[1]) else usual.recent
    now_price, usual_price_usd = cost / requests, math.exp(median)
    factor = now_price / usual_price_usd
    said = f"{factor:,.1f}x" if factor >= 1 else f"1/{1 / factor:,.1f}"
    return Signal(
        "price_shift",
        f"{usd(now_price)} per request, {said} its usual {usd(usual_price_usd)} "
        "(a model it does not use, from spend and requests alone)",
    )


def quiet_slot(state: TokenHistory, h: int, rate: float, p: SpendParams) -> str | None:
    """Why hour `h` is off-hours for this token by its own weekly profile (and `rate` $/h is real
    use in it), or None: no trusted profile, the slot is not quiet, or the use is small."""
    weeks = min(4, state.covered_hours(h) // WEEK)
    if weeks < p.quiet_weeks_min:
        return None
    cost, _, _, head = state.rings()
    span = [k for k in range(h - weeks * WEEK, h) if head - len(cost) < k <= head]
    values = [cost[k % len(cost)] for k in span]
    active = sorted(v for v in values if v > 0)
    if not active:
        return None
    busy = active[int(0.9 * (len(active) - 1))]
    if busy < p.min_busy_usd_per_hour:
        return None
    slot_max = max(state.cost_at(h - w * WEEK + j) for w in range(1, weeks + 1) for j in (-1, 0, 1))
    if slot_max > p.quiet_share * busy:
        return None
    if rate < max(p.quiet_use_share * busy, p.quiet_use_factor * slot_max):
        return None
    if _recurring_share(state, span, busy * p.quiet_share, weeks) < p.regular_share:
        return None
    when = datetime.fromtimestamp(h * HOUR, UTC).strftime("%a %H:00 UTC")
    return (
        f"{usd(rate)}/h on {when}, when in {weeks} weeks it never spent more than {usd(slot_max)}/h "
        f"(busy hours: {usd(busy)}/h)"
    )


def _recurring_share(state: TokenHistory, span: list[int], level: float, weeks: int) -> float:
    """Share of the spend in hours whose weekly slot was in use (> `level`) every week (all weeks but
    one, from three weeks on): the token keeps a weekly schedule."""
    by_slot: dict[int, list[float]] = {}
    for k in span:
        by_slot.setdefault(k % WEEK, []).append(state.cost_at(k))
    total = sum(sum(v) for v in by_slot.values())
    if total <= 0:
        return 0.0
    need = weeks if weeks <= 2 else weeks - 1
    recurring = sum(sum(v) for v in by_slot.values() if sum(1 for x in v if x > level) >= need)
    return recurring / total


def drain(state: TokenHistory, first_hour: int, now: float, p: SpendParams) -> Signal | None:
    """The surge has gone on for `drain_min_hours` and twice as long as this token's longest burst
    in the last weeks: a burst decays, a drain keeps going. Past bursts are runs of hours at 3x or
    more what the token spent in the same hour a week before (and its usual active hour)."""
    hours = (now - first_hour * HOUR) / HOUR
    if hours < p.drain_min_hours:
        return None
    used = [any(state.cost_at(first_hour - d * DAY - j) > 0 for j in range(1, DAY + 1)) for d in range(21)]
    if sum(used[:7]) < 3 or sum(used) < 7:
        # No settled level to surge from, nor weeks of use in which bursts could have shown (it just
        # woke up: a wake is judged by its size, and "no burst in weeks" would say nothing).
        return None
    cost, _, _, head = state.rings()
    typical = state.stats(first_hour).active_level
    longest = run = 0
    for k in range(max(first_hour - 21 * DAY, head - len(cost) + 1 + WEEK), first_hour):
        c = cost[k % len(cost)]
        if c > p.drain_floor_usd and c >= 3 * max(state.cost_at(k - WEEK), typical):
            run += 1
            longest = max(longest, run)
        else:
            run = 0
    if hours < max(p.drain_min_hours, 2 * longest):
        return None
    past = f"its bursts in the last weeks ended within {longest} h" if longest else "it had no burst in weeks"
    return Signal("drain", f"surging for {hours:,.1f} h, where {past}")


def extreme_surge(
    state: TokenHistory, x: float, expected: float, first_hour: int, p: SpendParams
) -> Signal | None:
    """`x` $/h over the last hour (without its busiest quarter) far beyond anything this token
    does: `surge_ratio` times what the hour expects and `surge_over_busiest` times its busiest
    hour in the last four weeks. Benign bursts (launches, spikes, batches) run at 2-12x."""
    if x < p.surge_ratio * max(expected, p.drain_floor_usd):
        return None
    cost, _, _, head = state.rings()
    past = [cost[k % len(cost)] for k in range(max(first_hour - 28 * DAY, head - len(cost) + 1), first_hour)]
    busiest = max(past, default=0.0)
    # A token with only a few busy hours behind it has no "busiest hour" worth the name yet.
    if sum(1 for c in past if c > p.drain_floor_usd) < p.surge_min_active_hours:
        return None
    if busiest <= 0 or x < p.surge_over_busiest * busiest:
        return None
    return Signal(
        "extreme_surge",
        f"{usd(x)}/h over the last hour, {x / max(expected, p.drain_floor_usd):,.0f}x what the hour "
        f"expects and {x / busiest:,.0f}x its busiest hour in four weeks",
    )


def wake_volume(
    state: TokenHistory, woke: float, spent: float, awake: float, fleet_rate: float, p: SpendParams
) -> Signal | None:
    """A dormant token waking up far above its old busy rate, or above what the fleet's typical
    token spends in an active hour when its past is unknown. `spent`: $ since it woke, `awake`:
    hours since (at least a poll). Against its own past the rate is taken over an hour at least:
    one busy poll of a token back at its old pace is no evidence."""
    old = _old_rate(state, woke)
    if old > 0:
        reference, what, rate = old, "its old busy rate", spent / max(awake, 1.0)
    else:
        reference, what, rate = fleet_rate, "the fleet's typical token", spent / awake
    if reference <= 0:
        return None
    if rate >= p.wake_factor * reference and rate - reference >= p.wake_min_usd_per_hour:
        return Signal("wake_volume", f"{usd(rate)}/h since it woke, {rate / reference:,.0f}x {what}")
    return None


def _old_rate(state: TokenHistory, woke: float) -> float:
    """The busy level (90th percentile) of the token's active hours before it went quiet (what the
    28-day history still holds of them), $/h; 0 when none are left."""
    before = int(woke // HOUR) - 1
    cost, _, _, head = state.rings()
    values = [
        cost[k % len(cost)]
        for k in range(max(head - len(cost) + 1, before - 28 * DAY), min(before, head) + 1)
        if cost[k % len(cost)] > 0
    ]
    return sorted(values)[int(0.9 * (len(values) - 1))] if values else 0.0


def spend_limit(state: TokenHistory, daily_usd: float | None, head: int) -> Signal | None:
    if not daily_usd:
        return None
    day = sum(state.cost_at(k) for k in range(head - DAY + 1, head + 1))
    if day <= daily_usd:
        return None
    return Signal("over_spend_limit", f"{usd(day)} in 24 h, its daily limit at the relay is {usd(daily_usd)}")


def is_month_end(ts: float) -> bool:
    """The afternoon and evening of a month's last day (UTC): when month-end batches run, at the
    close of business. (The night after is the next month's: thieves like nights too.)"""
    d = datetime.fromtimestamp(ts, UTC)
    return d.day == calendar.monthrange(d.year, d.month)[1] and d.hour >= 12


def _weighted_median(pairs: list[tuple[float, float]]) -> float:
    """The value below which half of the weight lies."""
    ordered = sorted(pairs)
    half = sum(w for _, w in ordered) / 2
    seen = 0.0
    for value, weight in ordered:
        seen += weight
        if seen >= half:
            return value
    return ordered[-1][0]


def _median(values: list[float]) -> float:
    v = sorted(values)
    mid = len(v) // 2
    return v[mid] if len(v) % 2 else (v[mid - 1] + v[mid]) / 2
