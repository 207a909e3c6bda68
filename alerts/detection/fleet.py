"""What the whole fleet looks like this cycle: the yardstick for tokens without a pattern of their own.

Built once per evaluation cycle from every token's `TokenHistory`, after the cycle's usage was
ingested and before any token is evaluated (so a model the whole fleet switched to in this very
poll is already seen as a fleet change). Cost: one pass over the tokens and their identity tables.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from alerts.detection.series import HOUR, TokenHistory, hour_of

__all__ = ["FleetContext", "quantile"]

DAY = 24 * HOUR


@dataclass(frozen=True, slots=True)
class FleetContext:
    at: float
    tokens: int = 0  # states seen
    active_tokens: int = 0  # with activity in the last 7 days
    # Per token with >= 1 day of history: its usual spend in an hour it is active (the larger of
    # its mean and its median active hour, so a nightly batch counts at its batch level), $/h.
    typical_rate: float = 0.0  # median over tokens
    high_rate: float = 0.0  # 90th percentile over tokens
    established: int = 0  # tokens those rates come from
    ips_typical: float = 0.0  # median distinct client IPs per active token in the last 24 h
    models_typical: float = 0.0  # the same for models
    model_adopters: Mapping[str, int] = field(default_factory=dict)  # model -> tokens that took it up lately
    model_users: Mapping[str, int] = field(default_factory=dict)  # model -> tokens that used it this week
    fleet_model_min: int = 3  # adopters (or users) that make a model the fleet's
    # The fleet's move in money per request over the last 6 hours against the two weeks before (ln;
    # the reference tokens' usual prices are taken over): a model upgrade everyone took shifts every
    # token's price at once, and is no thief's.
    price_drift: float = 0.0

    # model -> tokens that took it up in the last few hours: a rollout under way shows here first
    model_starters: Mapping[str, int] = field(default_factory=dict)
    rollout_min: int = 3

    def is_fleet_model(self, model: str) -> bool:
        """A model many tokens took up within the adoption window (a rollout), that several took
        up in the last hours (a rollout under way), or that many tokens use anyway: a token
        starting to use it is no evidence of a thief."""
        need = self.fleet_model_min
        return (
            self.model_adopters.get(model, 0) >= need
            or self.model_users.get(model, 0) >= need
            or self.model_starters.get(model, 0) >= self.rollout_min
        )

    @classmethod
    def build(
        cls,
        states: Iterable[TokenHistory],
        now: float,
        *,
        adoption_window: float = 2 * DAY,
        min_adopters: int = 3,
        adopter_share: float = 0.2,
        rollout_window: float = 6 * HOUR,
        rollout_share: float = 0.05,
    ) -> FleetContext:
        """`adopter_share`: the share of active tokens (with model data) that must take a model up
        within `adoption_window`, or use it this week, for it to count as the fleet's (at least
        `min_adopters` tokens); `rollout_share` of them taking it up within `rollout_window`
        makes it the fleet's too, while a rollout is still under way."""
        h = hour_of(now)
        since_adopt, week_ago, day_ago = now - adoption_window, now - 7 * DAY, now - DAY
        rates: list[float] = []
        ip_counts: list[float] = []
        model_counts: list[float] = []
        adopters: dict[str, int] = {}
        starters: dict[str, int] = {}
        users: dict[str, int] = {}
        drifts: list[float] = []
        n = active = with_models = 0
        for s in states:
            n += 1
            last = s.last_active
            if last is None or last < week_ago:
                continue
            active += 1
            if s.covered_hours(h) >= 24:
                st = s.stats(h)
                rates.append(max(st.mean_cost, st.active_level))
            if s.has_requests and s.covered_hours(h) >= 3 * 24 and last >= now - 6 * HOUR:
                drift = _price_drift(s, h + 1)
                if drift is not None:
                    drifts.append(drift)
            if last >= day_ago:
                if s.ips:
                    ip_counts.append(sum(1 for r in s.ips.values() if r[1] >= day_ago))
                if s.models:
                    model_counts.append(sum(1 for r in s.models.values() if r[1] >= day_ago))
            if not s.models:
                continue
            with_models += 1
            for model, r in s.models.items():
                if r[1] >= week_ago:
                    users[model] = users.get(model, 0) + 1
            # A token's very first models are not "adoption": only tokens that used something
            # before the window can take a model up within it.
            if s.started_at >= since_adopt or min(r[0] for r in s.models.values()) >= since_adopt:
                continue
            for model, r in s.models.items():
                if r[0] >= since_adopt:
                    adopters[model] = adopters.get(model, 0) + 1
                if r[0] >= now - rollout_window:
                    starters[model] = starters.get(model, 0) + 1
        return cls(
            at=now,
            tokens=n,
            active_tokens=active,
            typical_rate=quantile(rates, 0.5),
            high_rate=quantile(rates, 0.9),
            established=len(rates),
            ips_typical=quantile(ip_counts, 0.5),
            models_typical=quantile(model_counts, 0.5),
            model_adopters=adopters,
            model_users=users,
            fleet_model_min=max(min_adopters, math.ceil(adopter_share * with_models)),
            model_starters=starters,
            rollout_min=max(min_adopters, math.ceil(rollout_share * with_models)),
            price_drift=quantile(drifts, 0.5) if len(drifts) >= 5 else 0.0,
        )


def _price_drift(s: TokenHistory, h: int) -> float | None:
    """ln($/request) of the 6 hours before hour `h` against the 14 days before those."""
    cost, req, _ = s.hours_before(h, 14 * 24 + 6)
    c_old, r_old = sum(cost[:-6]), sum(req[:-6])
    c_new, r_new = sum(cost[-6:]), sum(req[-6:])
    if min(r_old, r_new) < 20 or min(c_old, c_new) <= 0:
        return None
    return math.log(c_new / r_new) - math.log(c_old / r_old)


def quantile(values: list[float], q: float) -> float:
    """The q-quantile by linear interpolation; 0.0 for no values."""
    if not values:
        return 0.0
    v = sorted(values)
    pos = q * (len(v) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (pos - lo)
