"""spend_anomaly: is a token spending far more than its own pattern says it should, right now?

Baselines are tiered by how much history keywatch has for the token:
- **new** (< 1 day): no pattern of its own; compare with the fleet — the 90th percentile of the
  other tokens' usual active-hour spend — with an absolute floor on the spread
  (`new_token_floor_usd_per_hour`). With no fleet to compare with (a fresh install), it learns.
- **short** (1-7 days): rolling median/MAD of all hourly buckets, raised to the highest value of
  the same hour on the days seen so far (a new business-hours token must not alarm every morning
  or on its first Monday).
- **seasonal** (>= 7 days): the median of the same hour-of-week over the last `weeks` weeks and
  the median of the same hour over the last `days` days of the same kind (weekday or weekend),
  the larger of the two. The weekly part knows Monday 9:00; the daily part follows a launch or a
  growing token within days instead of weeks. Only rises alarm, so the larger is the safe side.
Hours marked anomalous (`TokenHistory.mark_anomalous`) are left out of every baseline, unless most
of the same-hour samples are marked (then the "anomaly" is the pattern).

Score = (x - baseline) / max(spread, margin*baseline, idle term, floor), where spread is the
largest of 1.4826*MAD of the samples, their range / 1.5 (MAD assumes a bell; LLM spend has heavy
tails) and the token's own hour-to-hour noise (HourStats.noise) times the baseline; and the idle
term covers zero-heavy tokens, whose median and MAD are 0: the spread of a usually idle hour is
the token's big-but-usual burst (90th percentile of its active hours).

**What x is.** Polls come every 60 s to 15 min, and the current hour is partial. x is the spend
of the last hour, sliding (`window`, never shorter than a poll or the data's own resolution),
*without its busiest quarter-hour*, scaled to $/h, against the baselines of the hours the window
covers (weighted by minutes). Why:
- a fixed-length sliding window gives the score one meaning at any poll interval, and compares
  like with like: the baseline is made of hourly buckets;
- a shorter window is noisier than the hourly baseline says (a 15-minute rate varies ~2x as much)
  and raised false alarms on bursty traffic in our scenarios;
- dropping the busiest quarter makes `for` mean something: one burst stays in a sliding hour for
  four polls, but a real rise shows in two or more quarters. A x8 spike therefore fires about
  30-45 minutes after it starts (2-3 polls at 15 min). leak_suspected, which needs corroboration
  anyway, looks at the last 15 minutes and is faster (see alerts/detection/leak.py).

Incremental cost: baselines depend only on complete hours, so each token's baseline is computed
once per hour (or when a mark or late data changes a complete hour) and cached in its history;
a poll then costs a window sum over the minute ring and a few multiplications per token.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final, Literal

from alerts.detection.fleet import FleetContext
from alerts.detection.series import HISTORY_HOURS, HOUR, MINUTE, TokenHistory, is_weekend_hour, minute_of
from alerts.model import Finding
from monitor.money import usd
from monitor.settings import AnomalyRule

__all__ = [
    "AnomalyDetector",
    "AnomalyParams",
    "AnomalyResult",
    "Baseline",
    "Tier",
    "anomaly_finding",
]

Tier = Literal["new", "short", "seasonal"]
MAD_TO_SIGMA: Final = 1.4826
DAY_HOURS: Final = 24
WEEK_HOURS: Final = 7 * 24
QUARTERS: Final = 4
_MEMO: Final = "anomaly"


@dataclass(frozen=True, slots=True)
class AnomalyParams:
    window: float = 3600.0  # seconds of recent usage compared with the baseline (at least a poll)
    margin: float = 0.5  # minimum spread as a share of the baseline (Grafana's robust band)
    floor_usd_per_hour: float = 0.05  # minimum spread, $/h
    weeks: int = 4  # same hour-of-week over this many weeks
    days: int = 5  # same hour over this many recent days of the same kind
    new_token_floor_usd_per_hour: float = 1.0  # minimum spread for tokens with < 1 day of history


@dataclass(frozen=True, slots=True)
class Baseline:
    """What one hour is expected to cost, and how much it usually varies."""

    expected: float  # $/h
    spread: float  # $/h: how much the hourly values behind `expected` vary (see the module doc)
    idle: float  # $/h: a big-but-usual burst, for zero-heavy tokens (0 otherwise)
    floor: float  # $/h: the least spread assumed
    tier: Tier
    active_share: float = 1.0  # share of the same-hour samples behind `expected` that had spend

    def scale(self, margin: float, window: float) -> float:
        """The score's denominator for a window of `window` seconds. The hourly spread is widened
        by sqrt(hour/window): a 15-minute rate varies about twice as much as an hourly one."""
        return max(self.spread * math.sqrt(HOUR / window), margin * self.expected, self.idle, self.floor)


@dataclass(frozen=True, slots=True)
class AnomalyResult:
    score: float
    expected: float  # $/h the baseline expects for the window
    observed: float  # $/h: the window's spend scaled to an hour (x)
    impact_usd: float  # $/h above expected
    impact_pct: float  # % above expected; inf when nothing was expected
    requests: float  # requests in the window (raw count, not scaled)
    tier: Tier
    fire: bool  # every condition holds this poll (`for` is the alert state machine's job)
    window: float  # seconds compared
    # Polls the condition must hold beyond `for`: where a zero-heavy token is usually idle, its spend
    # comes in bursts, and one burst stays in the sliding hour for an hour of polls; an anomaly
    # must outlast a burst. (Its scheduled hours, an office's days, are not bursts.)
    extra_polls: int = 0


class AnomalyDetector:
    """Stateless apart from its parameters; all memory lives in the TokenHistory objects."""

    def __init__(self, params: AnomalyParams | None = None, *, poll_interval: float = 60.0) -> None:
        self.params = params or AnomalyParams()
        self.poll_interval = poll_interval
        p = self.params
        self._key = (p.margin, p.floor_usd_per_hour, p.weeks, p.days)  # what cached baselines depend on

    def span(self, state: TokenHistory, seconds: float) -> float:
        """`seconds`, but never shorter than a poll or than the spacing of the data itself (hourly
        input compared over 15 minutes would read as 4x the real rate), and at most an hour."""
        return min(float(HOUR), max(seconds, self.poll_interval, state.step or 0.0))

    def window_for(self, state: TokenHistory, now: float) -> float:
        """The window x is measured over: `params.window` (see span), and a full hour for
        zero-heavy tokens: their spend comes in bursts that the hourly baseline sees as one hour's
        worth, and a shorter window would read a usual burst as several times its rate."""
        w = self.span(state, self.params.window)
        h = minute_of(now) // 60
        if w < HOUR and state.covered_hours(h) >= DAY_HOURS and state.stats(h).zero_share >= 0.5:
            return float(HOUR)
        return w

    def observed(self, state: TokenHistory, now: float, window: float) -> tuple[float, float]:
        """(x in $/h, requests) for the window: the mean of its quarters without the busiest one,
        when the data is fine enough to have quarters. A real rise lasts: it shows in two or more
        quarters, while one burst stays in a sliding hour for four polls and would defeat `for`."""
        parts = min(QUARTERS, int(window // max(state.step or MINUTE, MINUTE)))
        if parts < 3:
            cost, requests = state.window(now, window)
            return cost * HOUR / window, requests
        pieces = state.window_parts(now, window, parts)
        cost = sum(c for c, _ in pieces) - max(c for c, _ in pieces)
        return cost * HOUR / (window * (parts - 1) / parts), sum(r for _, r in pieces)

    def expectation(
        self, state: TokenHistory, now: float, window: float, fleet: FleetContext | None = None
    ) -> tuple[float, float, Tier]:
        """(expected $/h, score scale $/h, tier) for the `window` seconds ending at `now`: the
        baselines of the hours the window covers, weighted by its minutes in each."""
        expected = scale = 0.0
        tier: Tier = "new"
        for h, share in _window_hours(now, window):
            b = self.baseline(state, h, fleet)
            expected += share * b.expected
            scale += share * b.scale(self.params.margin, window)
            tier = b.tier
        return expected, scale, tier

    def evaluate(
        self, state: TokenHistory, now: float, rule: AnomalyRule, fleet: FleetContext | None = None
    ) -> AnomalyResult:
        w = self.window_for(state, now)
        x, requests = self.observed(state, now, w)
        expected, scale, tier = self.expectation(state, now, w, fleet)
        excess = x - expected
        score = excess / scale if scale > 0 else 0.0
        pct = 100.0 * excess / expected if expected > 0 else (math.inf if excess > 0 else 0.0)
        fire = (
            rule.enabled
            and score >= rule.sensitivity
            and excess >= rule.min_impact_usd
            and pct >= rule.min_impact_pct
            and (requests >= rule.min_requests or not state.has_requests)
        )
        h = minute_of(now) // 60
        bursty = (
            tier != "new"
            and state.stats(h).zero_share >= 0.5
            and self.baseline(state, h, fleet).active_share < 0.5
        )
        extra = math.ceil(HOUR / max(self.poll_interval, MINUTE)) - 1 if bursty else 0
        return AnomalyResult(score, expected, x, excess, pct, requests, tier, fire, w, extra)

    def baseline(self, state: TokenHistory, h: int, fleet: FleetContext | None = None) -> Baseline:
        """The baseline for hour `h` (absolute hour index) from the complete hours before it."""
        if state.covered_hours(h) < DAY_HOURS:
            return self._new_token(fleet)
        memo = state.memo(_MEMO)
        key = (state.revision, self._key)
        cache: dict[int, Baseline]
        if memo is not None and memo[0] == key:
            cache = memo[1]
            hit = cache.get(h)
            if hit is not None:
                return hit
        else:
            cache = {}
            state.set_memo(_MEMO, key, cache)
        b = self._compute(state, h)
        for old in [k for k in cache if k < h - 1]:
            del cache[old]
        cache[h] = b
        return b

    def _new_token(self, fleet: FleetContext | None) -> Baseline:
        if fleet is None or not fleet.established:
            # Nothing to compare with (a fresh install): learn first, like Grafana's 24-26 h.
            return Baseline(0.0, 0.0, 0.0, math.inf, "new")
        return Baseline(fleet.high_rate, 0.0, 0.0, self.params.new_token_floor_usd_per_hour, "new")

    def _compute(self, state: TokenHistory, h: int) -> Baseline:
        p = self.params
        n = state.covered_hours(h)
        cost, _, flag, head = state.rings()

        def value(k: int) -> tuple[float, bool] | None:
            """(spend, marked) of hour k; None before the kept history."""
            if k > head:
                return 0.0, False  # an hour without data since the last bucket: nothing was spent
            if k <= head - HISTORY_HOURS:
                return None
            i = k % HISTORY_HOURS
            return cost[i], bool(flag[i])

        tier: Tier
        if n < WEEK_HOURS:
            tier = "short"
            every = [v[0] for k in range(h - n, h) if (v := value(k)) is not None and not v[1]]
            same_hour = _unmarked([value(h - j * DAY_HOURS) for j in range(1, n // DAY_HOURS + 1)])
            expected = max(_median(every), max(same_hour, default=0.0))
            spread = MAD_TO_SIGMA * _mad(every)
            sample = same_hour
        else:
            tier = "seasonal"
            weekly = _unmarked(
                [value(h - j * WEEK_HOURS) for j in range(1, min(p.weeks, n // WEEK_HOURS) + 1)]
            )
            weekend = is_weekend_hour(h)
            days = [h - j * DAY_HOURS for j in range(1, n // DAY_HOURS + 1)]
            daily = _unmarked([value(k) for k in days if is_weekend_hour(k) == weekend][: p.days])
            # The larger of the two: only rises are alarmed, so the conservative side is the high
            # one — the weekly part lags a growing token by weeks, the daily part misses Mondays.
            expected = max(_median(weekly), _median(daily))
            sample = weekly + daily
            # MAD assumes a bell; LLM spend has heavy tails. The sample's range is a second
            # spread estimate (for ~9 normal values, max - median ~ 1.5sigma) that grows with them.
            spread = max(MAD_TO_SIGMA * _mad(sample), (max(sample, default=0.0) - expected) / 1.5)
        stats = state.stats(h)
        spread = max(spread, stats.noise * expected)
        idle = max(0.0, stats.burst_level - expected) if stats.zero_share >= 0.5 else 0.0
        active = sum(1 for v in sample if v > 0) / len(sample) if sample else 0.0
        return Baseline(expected, spread, idle, p.floor_usd_per_hour, tier, active)


def anomaly_finding(
    result: AnomalyResult,
    *,
    provider: str,
    token: str,
    rule: AnomalyRule,
    keep_firing_for: float = 0.0,
) -> Finding | None:
    """The Finding for the alert stages, or None when the condition does not hold."""
    if not result.fire:
        return None
    return Finding(
        rule="spend_anomaly",
        labels={"provider": provider, "token": token},
        severity="warning",
        value=round(result.score, 2),
        summary=(
            f"spending {usd(result.observed)}/h, expected {usd(result.expected)}/h "
            f"(score {result.score:.1f}, {result.tier} baseline)"
        ),
        annotations={
            "expected_usd_per_hour": f"{result.expected:.4f}",
            "observed_usd_per_hour": f"{result.observed:.4f}",
            "impact_usd_per_hour": f"{result.impact_usd:.4f}",
            "requests": f"{result.requests:.0f}",
            "tier": result.tier,
        },
        for_polls=rule.for_polls + result.extra_polls,
        keep_firing_for=keep_firing_for,
    )


def _unmarked(values: list[tuple[float, bool] | None]) -> list[float]:
    """The unmarked values — unless most are marked: what happens at this hour on most days is the
    pattern (a nightly batch that alarmed while the token was new), not an attack to keep out."""
    kept = [v for v in values if v is not None]
    clean = [v[0] for v in kept if not v[1]]
    return clean if 2 * len(clean) >= len(kept) else [v[0] for v in kept]


def _window_hours(now: float, seconds: float) -> list[tuple[int, float]]:
    """The hours the window ending at `now` covers, with the share of its minutes in each."""
    last = minute_of(now)
    n = max(1, min(60, round(seconds / MINUTE)))
    in_last = min(n, last % 60 + 1)
    hours = [(last // 60, in_last / n)]
    if in_last < n:
        hours.insert(0, (last // 60 - 1, (n - in_last) / n))
    return hours


def _median(values: list[float]) -> float:
    if not values:
        return 0.0
    v = sorted(values)
    mid = len(v) // 2
    return v[mid] if len(v) % 2 else (v[mid - 1] + v[mid]) / 2


def _mad(values: list[float]) -> float:
    if len(values) < 2:
        return 0.0
    m = _median(values)
    return _median([abs(v - m) for v in values])
