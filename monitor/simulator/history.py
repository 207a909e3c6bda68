"""Retroactive usage for seeding a store (the demo's 14 days): the same archetypes, seasonality and
noise as live traffic, aggregated per bucket. Deterministic for the same arguments; it is not
bucket-for-bucket what live generation would have produced."""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Sequence
from typing import NamedTuple

from .localtime import LocalTime
from .profiles import price_of
from .token import SimToken
from .traffic import COST_JITTER, DAY_SIGMA, HOUR_SIGMA, poisson

__all__ = ["HistoryRow", "avg_price", "history"]


class HistoryRow(NamedTuple):
    ts: float  # bucket start
    token_id: str
    name: str
    cost_usd: float
    requests: int


def avg_price(tok: SimToken) -> float:
    weights = [b - a for a, b in zip((0.0, *tok.model_cum), tok.model_cum, strict=False)]
    return sum(w * price_of(m) for m, w in zip(tok.models, weights, strict=True)) / tok.model_cum[-1]


def history(
    tokens: Sequence[SimToken],
    *,
    seed: int,
    local: LocalTime,
    since: float,
    until: float,
    step: float = 3600.0,
) -> Iterator[HistoryRow]:
    """Rows for buckets k*step in [since, until), time-major, for tokens that spend on their own
    (idle and dormant tokens have no recent history). Buckets with no request are left out."""
    if step <= 0:
        raise ValueError("step must be > 0")
    live = [t for t in tokens if t.req_per_bucket > 0.0]
    rngs = [random.Random(f"{seed}:{t.id}:history:{since}:{step}") for t in live]
    prices = [avg_price(t) for t in live]
    day_noise: list[tuple[int, float]] = [(-1, 1.0)] * len(live)
    hours = step / 3600.0
    k = math.ceil(since / step)
    while (ts := k * step) < until:
        day, _, how = local.info(ts + step / 2)
        for i, tok in enumerate(live):
            if ts < tok.created_at or (tok.revoked_at is not None and ts >= tok.revoked_at):
                continue
            if tok.expires_at is not None and ts >= tok.expires_at:
                continue
            rng = rngs[i]
            if day_noise[i][0] != day:
                day_noise[i] = (day, rng.lognormvariate(0.0, DAY_SIGMA))
            weight = tok.profile[how]
            if weight <= 0.0:
                continue
            usd = tok.usd_per_hour * weight * hours * day_noise[i][1] * rng.lognormvariate(0.0, HOUR_SIGMA)
            n = poisson(rng, usd / prices[i])
            if n:
                cost = n * prices[i] * (1.0 + COST_JITTER * (2.0 * rng.random() - 1.0))
                yield HistoryRow(ts, tok.id, tok.name, round(cost, 6), n)
        k += 1
