"""Per-token traffic: Poisson requests per fixed time bucket, shaped by the archetype's weekly
profile and by hourly and daily noise.

Generation is lazy: a token is brought up to date only when something reads it, bucket by bucket
on a fixed grid (k * step), drawing from the token's own random stream. The result therefore does
not depend on how often or in what order tokens are read: the same seed and the same incidents
give the same traffic."""

from __future__ import annotations

import math
import random
from bisect import bisect

from .ledger import Ledger
from .profiles import price_of
from .token import Leak, Limits, SimToken

__all__ = ["catch_up", "make_leak", "pick_model", "poisson"]

HOUR_SIGMA = 0.3  # hour-to-hour wobble
DAY_SIGMA = 0.15  # some days are busier than others
COST_JITTER = 0.4  # a request costs its model's price +/- this fraction (prompt sizes vary)
MIN_LEAK_BASE_USD_PER_HOUR = 0.1  # so a leak on a near-silent token is still a visible leak


def poisson(rng: random.Random, lam: float) -> int:
    if lam <= 0.0:
        return 0
    if lam < 15.0:
        # Knuth: cheap for the small rates most buckets have.
        limit = math.exp(-lam)
        k = 0
        p = rng.random()
        while p > limit:
            k += 1
            p *= rng.random()
        return k
    return max(0, round(rng.gauss(lam, math.sqrt(lam))))


def pick_model(rng: random.Random, models: tuple[str, ...], cum: tuple[float, ...]) -> str:
    return models[min(bisect(cum, rng.random() * cum[-1]), len(models) - 1)]


def _over_limit(tok: SimToken) -> bool:
    lim: Limits = tok.limits
    return (
        (lim.daily_usd is not None and tok.today_usage >= lim.daily_usd)
        or (lim.monthly_usd is not None and tok.month_usage >= lim.monthly_usd)
        or (lim.daily_requests is not None and tok.today_requests >= lim.daily_requests)
    )


def catch_up(tok: SimToken, now: float, *, step: float, ledger: Ledger, enforce_limits: bool) -> None:
    """Generate every bucket of `tok` up to `now`, then roll its windows to `now`."""
    end_k = math.floor(now / step)
    k0 = tok.next_k
    if k0 <= end_k:
        tok.next_k = end_k + 1
        serving = tok.revoked_at is None and tok.disabled_at is None and not tok.deleted
        if serving and (tok.req_per_bucket > 0.0 or tok.leak is not None):
            _generate(tok, k0, end_k, step, ledger, enforce_limits)
    ledger.roll_to(tok, now)


def _generate(tok: SimToken, k0: int, k1: int, step: float, ledger: Ledger, enforce_limits: bool) -> None:
    rng = tok.rng
    info = ledger.local.info
    profile = tok.profile
    base = tok.req_per_bucket
    leak = tok.leak
    stop = tok.expires_at
    ips = tok.ips
    for k in range(k0, k1 + 1):
        t = k * step
        if stop is not None and t >= stop:
            break  # the relay refuses an expired key
        day, _, how = info(t)
        if day != tok.noise_day:
            tok.noise_day = day
            tok.day_factor = rng.lognormvariate(0.0, DAY_SIGMA)
        if enforce_limits and _over_limit(tok):
            ledger.roll_to(tok, t)
            if _over_limit(tok):
                continue
        if base > 0.0:
            weight = profile[how]
            if weight > 0.0:
                if how != tok.noise_how:
                    tok.noise_how = how
                    tok.hour_factor = rng.lognormvariate(0.0, HOUR_SIGMA)
                n = poisson(rng, base * weight * tok.hour_factor * tok.day_factor)
                if n:
                    model = pick_model(rng, tok.models, tok.model_cum)
                    ip = ips[int(rng.random() * len(ips))]
                    cost = n * price_of(model) * (1.0 + COST_JITTER * (2.0 * rng.random() - 1.0))
                    ledger.book(tok, t, n, cost, model, ip)
        if leak is not None:
            n = poisson(rng, leak.req_per_bucket)
            if n:
                _book_leak(tok, leak, t, n, rng, ledger)


def _book_leak(tok: SimToken, leak: Leak, t: float, n: int, rng: random.Random, ledger: Ledger) -> None:
    # Each request picks its model, so a bucket mixes cheap and expensive calls the way an abuser's
    # script does (and the total does not swing on one coin flip per bucket).
    models = leak.models
    counts = [0] * len(models)
    if len(models) == 1:
        counts[0] = n
    else:
        for _ in range(n):
            counts[int(rng.random() * len(models))] += 1
    for model, count in zip(models, counts, strict=True):
        if count:
            ip = leak.ips[int(rng.random() * len(leak.ips))]
            cost = count * price_of(model) * (1.0 + COST_JITTER * (2.0 * rng.random() - 1.0))
            ledger.book(tok, t, count, cost, model, ip)


def make_leak(
    tok: SimToken,
    *,
    multiplier: float,
    ips: tuple[str, ...],
    models: tuple[str, ...],
    now: float,
    step: float,
) -> Leak:
    """Leak traffic runs at `multiplier` x the token's busiest normal hour, around the clock."""
    if not models or not ips:
        raise ValueError("a leak needs at least one model and one IP")
    base = max(tok.usd_per_hour * max(tok.profile), MIN_LEAK_BASE_USD_PER_HOUR)
    usd_per_hour = multiplier * base
    avg_price = sum(price_of(m) for m in models) / len(models)
    return Leak(
        multiplier=multiplier,
        usd_per_hour=usd_per_hour,
        req_per_bucket=usd_per_hour * step / 3600.0 / avg_price,
        ips=ips,
        models=models,
        started_at=now,
    )
