"""The initial population of a simulated relay: who the tokens are, how they behave, and the usage
they show on the first poll. Everything is drawn from the seed."""

from __future__ import annotations

import math
import random
import string
from collections.abc import Sequence
from itertools import accumulate

from .localtime import LocalTime
from .profiles import NORMAL_MODELS, PROFILES, Archetype, price_of
from .token import Limits, SimToken

__all__ = ["Minter", "build_fleet", "make_token"]

_DAY = 86_400.0
_ALPHABET = string.ascii_letters + string.digits
_ACTIVE = (Archetype.BUSINESS, Archetype.SERVICE, Archetype.BATCH, Archetype.SPARSE)
_ACTIVE_WEIGHTS = (0.35, 0.30, 0.15, 0.20)
_ENVS = ("prod", "staging", "test", "dev")
_ENV_WEIGHTS = (0.35, 0.10, 0.20, 0.35)
_ENV_SCALE = {"prod": 2.5, "staging": 0.4, "test": 0.4, "dev": 0.25}
# median USD/hour while in use, before the environment's scale
_MEDIAN_USD_PER_HOUR = {
    Archetype.BUSINESS: 0.6,
    Archetype.SERVICE: 1.0,
    Archetype.BATCH: 0.5,
    Archetype.SPARSE: 0.02,
    Archetype.DORMANT: 0.3,
    Archetype.IDLE: 0.05,
}
_PROJECTS = (
    "webapp", "billing", "search", "chatbot", "crm", "analytics",
    "mobile", "support", "docs", "etl", "recsys", "translate",
)  # fmt: skip
_PURPOSES = {
    Archetype.BUSINESS: ("api", "assistant", "copilot", "chat"),
    Archetype.SERVICE: ("api", "gateway", "worker", "backend"),
    Archetype.BATCH: ("batch", "etl", "nightly", "embeddings"),
    Archetype.SPARSE: ("eval", "experiment", "notebook", "sandbox"),
    Archetype.DORMANT: ("api", "legacy", "integration", "worker"),
    Archetype.IDLE: ("api", "poc", "demo", "trial"),
}
# Names people actually type when they ignore the convention.
_OFF_CONVENTION = (
    "my test key", "Production", "johns-laptop", "temp", "ci", "webapp prod",
    "bob_experiment", "PROD-WEBAPP-API", "demo key", "new-key", "staging", "testing123",
)  # fmt: skip
_OFF_CONVENTION_RATE = 0.15


class Minter:
    """Token ids (`key_123456`) and secret keys (`sk-` + 48 characters), unique per relay."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._used: set[str] = set()

    def token_id(self) -> str:
        digits = 6
        while True:
            tid = f"key_{self._rng.randrange(10 ** (digits - 1), 10**digits)}"
            if tid not in self._used:
                self._used.add(tid)
                return tid
            if len(self._used) > 10**digits // 4:
                digits += 1

    def key(self) -> str:
        return "sk-" + "".join(self._rng.choices(_ALPHABET, k=48))


def make_token(
    *,
    seed: int,
    step: float,
    token_id: str,
    key: str,
    name: str,
    archetype: Archetype,
    created_at: float,
    usd_per_hour: float,
    models: Sequence[str],
    model_weights: Sequence[float] | None = None,
    ips: Sequence[str],
    profile: tuple[float, ...] | None = None,
    expires_at: float | None = None,
    billing_method: str = "usage_based",
    permissions: Sequence[str] = ("chat", "completion"),
    limits: Limits | None = None,
    ip_whitelist: Sequence[str] = (),
) -> SimToken:
    models = tuple(models)
    weights = tuple(model_weights) if model_weights is not None else (1.0,) * len(models)
    cum = tuple(accumulate(weights))
    avg_price = sum(w * price_of(m) for m, w in zip(models, weights, strict=True)) / cum[-1]
    spends = archetype not in (Archetype.IDLE, Archetype.DORMANT)
    return SimToken(
        id=token_id,
        name=name,
        key=key,
        archetype=archetype,
        created_at=created_at,
        expires_at=expires_at,
        billing_method=billing_method,
        permissions=tuple(permissions),
        limits=limits if limits is not None else Limits(),
        ip_whitelist=tuple(ip_whitelist),
        ips=tuple(ips),
        models=models,
        model_cum=cum,
        profile=profile if profile is not None else PROFILES.get(archetype, PROFILES[Archetype.SERVICE]),
        usd_per_hour=usd_per_hour,
        req_per_bucket=usd_per_hour * step / 3600.0 / avg_price if spends else 0.0,
        rng=random.Random(f"{seed}:{token_id}"),
    )


def _nice(x: float, floor: float) -> float:
    """Round up to 1, 2 or 5 times a power of ten, as people set limits."""
    x = max(x, floor)
    scale = 10.0 ** math.floor(math.log10(x))
    return next(m * scale for m in (1, 2, 5, 10) if m * scale >= x)


class _Seeder:
    """Usage the relay already shows at start (this month and today), from the expected profile
    rather than by simulating the whole month bucket by bucket: O(1) per token."""

    def __init__(self, local: LocalTime, start: float) -> None:
        self.local = local
        self.start = start
        self.month_start = local.month_start(start)
        self.day_start = local.day_start(start)
        self._cum: dict[int, list[float]] = {}
        self._last_busy: dict[int, float] = {}

    def weight_hours(self, profile: tuple[float, ...], a: float, b: float) -> float:
        cum = self._cum.get(id(profile))
        if cum is None:
            cum = [0.0]
            t = self.month_start
            while t < self.start:
                cum.append(cum[-1] + profile[self.local.info(t)[2]] * 0.25)
                t += 900.0
            self._cum[id(profile)] = cum

        def at(ts: float) -> float:
            return cum[min(max(int((ts - self.month_start) // 900.0), 0), len(cum) - 1)]

        return at(b) - at(a)

    def last_busy(self, profile: tuple[float, ...]) -> float:
        """End of the latest quarter-hour before start when this profile was clearly in use."""
        hit = self._last_busy.get(id(profile))
        if hit is None:
            hit = self.start
            t = math.floor(self.start / 900.0) * 900.0
            for _ in range(7 * 96):
                if profile[self.local.info(t)[2]] >= 0.2:
                    hit = min(self.start, t + 900.0)
                    break
                t -= 900.0
            self._last_busy[id(profile)] = hit
        return hit


def _archetypes(n: int, idle_fraction: float, rng: random.Random) -> list[Archetype]:
    n_idle = min(n, round(n * idle_fraction))
    rest = n - n_idle
    n_dormant = max(1, round(rest * 0.05)) if rest >= 5 else 0
    n_active = rest - n_dormant
    kinds = [Archetype.IDLE] * n_idle + [Archetype.DORMANT] * n_dormant
    if n_active >= len(_ACTIVE):  # at least one of each shape
        kinds += _ACTIVE
        n_active -= len(_ACTIVE)
    kinds += rng.choices(_ACTIVE, weights=_ACTIVE_WEIGHTS, k=n_active)
    rng.shuffle(kinds)
    return kinds


def build_fleet(
    n: int, *, seed: int, start: float, step: float, local: LocalTime, idle_fraction: float, minter: Minter
) -> list[SimToken]:
    rng = random.Random(f"{seed}:fleet")
    seeder = _Seeder(local, start)
    taken: set[str] = set()
    tokens = [
        _one(arch, rng=rng, seed=seed, step=step, seeder=seeder, minter=minter, taken=taken)
        for arch in _archetypes(n, idle_fraction, rng)
    ]
    tokens.sort(key=lambda t: t.created_at)
    return tokens


def _name(
    env: str, arch: Archetype, created_at: float, rng: random.Random, local: LocalTime, taken: set[str]
) -> str:
    if rng.random() < _OFF_CONVENTION_RATE:
        base = rng.choice(_OFF_CONVENTION)
        name, i = base, 2
        while name in taken:
            name, i = f"{base}-{i}", i + 1
    else:
        project, purpose, date = (
            rng.choice(_PROJECTS),
            rng.choice(_PURPOSES[arch]),
            local.month_label(created_at),
        )
        name, i = f"{env}-{project}-{purpose}-{date}", 2
        while name in taken:
            name, i = f"{env}-{project}{i}-{purpose}-{date}", i + 1
    taken.add(name)
    return name


def _network(env: str, rng: random.Random) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(client IPs, ip_whitelist). Prod runs from 198.51.100.0/24, the rest from 192.0.2.0/24;
    leaks come from 203.0.113.0/24, which normal traffic never uses."""
    if env == "prod":
        base = rng.randrange(0, 240, 16)
        ips = tuple(f"198.51.100.{base + i}" for i in rng.sample(range(1, 15), rng.randint(2, 3)))
        r = rng.random()
        if r < 0.55:
            return ips, ips
        if r < 0.85:
            return ips, (f"198.51.100.{base}/28",)
        return ips, ()  # a production token without a whitelist: the audit should say so
    ips = tuple(f"192.0.2.{i}" for i in rng.sample(range(1, 255), rng.randint(1, 4)))
    whitelist = ips if env == "staging" and rng.random() < 0.3 else ()
    return ips, whitelist


def _limits(
    rng: random.Random,
    usd_per_hour: float,
    profile: tuple[float, ...],
    models: tuple[str, ...],
    avg_price: float,
) -> Limits:
    if rng.random() < 0.2:
        return Limits()  # no limits at all: another audit finding
    busiest_day = max(sum(profile[d * 24 : d * 24 + 24]) for d in range(7)) * usd_per_hour
    return Limits(
        daily_requests=int(_nice(busiest_day / avg_price * 3.0, 100)),
        daily_usd=_nice(busiest_day * 2.5, 1),
        monthly_usd=_nice(usd_per_hour * 24 * 30.4 * 2.0, 5),
        max_tokens_per_request=rng.choice((None, 4096, 8192, 16384)),
        allowed_models=models if rng.random() < 0.3 else (),
    )


def _one(
    arch: Archetype,
    *,
    rng: random.Random,
    seed: int,
    step: float,
    seeder: _Seeder,
    minter: Minter,
    taken: set[str],
) -> SimToken:
    start, local = seeder.start, seeder.local
    env = rng.choices(_ENVS, weights=_ENV_WEIGHTS)[0]
    fate = "in use"
    if arch is Archetype.IDLE:
        fate = rng.choices(("unused", "stale", "expired", "revoked"), weights=(0.4, 0.3, 0.15, 0.15))[0]
    age_days = {
        Archetype.SPARSE: (2, 200),
        Archetype.DORMANT: (150, 500),
    }.get(arch, (3, 420) if fate == "in use" else (1, 200) if fate == "unused" else (60, 420))
    created_at = start - rng.uniform(*age_days) * _DAY
    # a dormant token keeps the shape it had while in use
    shape = rng.choice((Archetype.BUSINESS, Archetype.SERVICE)) if arch is Archetype.DORMANT else arch
    profile = PROFILES[shape]
    usd_per_hour = _MEDIAN_USD_PER_HOUR[arch] * _ENV_SCALE[env] * rng.lognormvariate(0.0, 0.8)
    usd_per_hour = min(max(usd_per_hour, 0.002), 50.0)
    n_models = rng.choice((1, 2, 2, 3))
    models = tuple(rng.sample(NORMAL_MODELS, n_models))
    weights = tuple(rng.uniform(0.2, 1.0) for _ in models)
    avg_price = sum(w * price_of(m) for m, w in zip(models, weights, strict=True)) / sum(weights)
    ips, whitelist = _network(env, rng)
    limits = _limits(rng, usd_per_hour, profile if arch is not Archetype.IDLE else PROFILES[Archetype.SERVICE],
                     models, avg_price)  # fmt: skip
    expires_at: float | None = None
    if fate == "in use" and arch is not Archetype.DORMANT:  # a dormant token stays leakable
        r = rng.random()
        if r < 0.08:
            expires_at = start + rng.uniform(2, 13) * _DAY  # expiring soon
        elif r < 0.3:
            expires_at = start + rng.uniform(30, 365) * _DAY
    permissions: tuple[str, ...] = ("chat", "completion")
    if arch is Archetype.IDLE and rng.random() < 0.2:
        permissions = ("read",)  # a monitoring token: reads usage, cannot call models
    elif rng.random() < 0.15:
        permissions = ("chat", "completion", "embeddings")
    tok = make_token(
        seed=seed,
        step=step,
        token_id=minter.token_id(),
        key=minter.key(),
        name=_name(env, arch, created_at, rng, local, taken),
        archetype=arch,
        created_at=created_at,
        usd_per_hour=usd_per_hour,
        models=models,
        model_weights=weights,
        ips=ips,
        profile=profile,
        expires_at=expires_at,
        billing_method="pay_per_use" if rng.random() < 0.15 else "usage_based",
        permissions=permissions,
        limits=limits,
        ip_whitelist=whitelist,
    )
    _seed_usage(tok, fate, rng, seeder, avg_price)
    tok.next_k = math.floor(start / step) + 1
    tok.day_key, tok.month_key, _ = local.info(start)
    return tok


def _seed_usage(tok: SimToken, fate: str, rng: random.Random, seeder: _Seeder, avg_price: float) -> None:
    """Windows, lifetime totals and last use as the relay shows them on the first poll."""
    start = seeder.start
    if fate == "unused":
        return
    if tok.archetype in (Archetype.IDLE, Archetype.DORMANT):
        quiet_days = (40, 120) if tok.archetype is Archetype.DORMANT else (35, 200)
        last = start - rng.uniform(*quiet_days) * _DAY
        if fate == "expired":
            tok.expires_at = last + rng.uniform(0.5, 10) * _DAY
        elif fate == "revoked":
            tok.revoked_at = last + rng.uniform(0.1, 5) * _DAY
        last = max(last, tok.created_at + _DAY)
        tok.last_used_at = last
        tok.lifetime_usd = round(
            tok.usd_per_hour * 24 * (last - tok.created_at) / _DAY * rng.uniform(0.5, 1.2), 6
        )
        tok.lifetime_requests = round(tok.lifetime_usd / avg_price)
        return
    usd = tok.usd_per_hour
    month_from = max(seeder.month_start, tok.created_at)
    day_from = max(seeder.day_start, tok.created_at)
    today = usd * seeder.weight_hours(tok.profile, day_from, start) * rng.lognormvariate(0.0, 0.1)
    earlier = usd * seeder.weight_hours(tok.profile, month_from, day_from) * rng.lognormvariate(0.0, 0.1)
    before = usd * 24 * max(0.0, seeder.month_start - tok.created_at) / _DAY * rng.lognormvariate(0.0, 0.1)
    tok.today_requests = round(today / avg_price)
    if tok.today_requests == 0:
        today = 0.0  # no request, no spend: keep the windows self-consistent
    tok.today_usage = round(today, 6)
    tok.month_usage = round(today + earlier, 6)
    tok.lifetime_usd = round(today + earlier + before, 6)
    tok.lifetime_requests = round((today + earlier + before) / avg_price)
    if tok.today_requests:
        tok.last_used_at = start - rng.uniform(0.0, min(900.0, start - day_from))
    else:  # not today, or today's windows would show it
        if tok.archetype is Archetype.SPARSE:
            last = start - rng.uniform(0.05, 3.0) * _DAY
        else:
            last = seeder.last_busy(tok.profile) - rng.uniform(0.0, 600.0)
        tok.last_used_at = min(last, seeder.day_start - rng.uniform(60.0, 3600.0))
    tok.last_used_at = min(start, max(tok.last_used_at, tok.created_at + 60.0))
