"""Synthetic usage histories for the anomaly and leak detectors — our own, not the shared sample's.

Unlike the shared sample, traffic here is over-dispersed (gamma-Poisson request counts, log-normal
cost per request), business tokens live in several time zones with truly idle nights, sparse
tokens come in heavy-tailed sessions, some tokens reach the relay from a rotating pool of client
IPs (a mobile app), some developers add a model every few days, one relay reports no IPs for a
token, and expensive models cost 10-50x per request.

Two uses:
- unit tests build single-token histories with `history(...)` and inspect the detectors;
- `generate(seed)` builds a labelled fleet (usage lines + a truth dict in score.py's format +
  business-hours policies), for `python -m tests.alerts.scenarios --seed N --out DIR`, which also
  replays it through `keywatch backtest`'s engine and scores it with the shared score.py if present.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import subprocess
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from alerts.detection.series import TokenHistory

STEP = 900
HOUR = 3600
DAY = 86400
START = datetime(2027, 3, 1, tzinfo=UTC).timestamp()  # a Monday; March ends inside the 35 days
PRICE = {  # $ per request
    "m-nano": 0.0002,
    "m-mini": 0.003,
    "m-flash": 0.0025,
    "m-haiku": 0.004,
    "m-mini-2": 0.0039,  # the fleet-wide upgrade: 30% dearer
    "m-opus": 0.09,
    "m-pro": 0.15,
    "m-large": 0.04,
}
EXPENSIVE = ("m-opus", "m-pro", "m-large")

T = TypeVar("T")
Line = dict[str, object]
Rate = Callable[[float], float]  # requests per hour at time t


# --- traffic shapes -----------------------------------------------------------------------------


def office(level: float, tz_hours: int, night: float = 0.0) -> Rate:
    """Weekdays 08-18 local with a lunch dip; `night` is the share of `level` used off hours."""

    def rate(t: float) -> float:
        local = t + tz_hours * HOUR
        dow = int(local // DAY + 3) % 7
        hour = (local % DAY) / HOUR
        if dow >= 5:
            return level * night * 0.5
        if 8 <= hour < 18:
            return level * (0.6 if 12 <= hour < 13 else 1.0)
        return level * night

    return rate


def service(level: float, growth: float = 0.0) -> Rate:
    def rate(t: float) -> float:
        hour = (t % DAY) / HOUR
        dow = int(t // DAY + 3) % 7
        daily = 1.0 + 0.5 * math.sin(2 * math.pi * (hour - 9) / 24)
        return level * daily * (0.7 if dow >= 5 else 1.0) * float((1.0 + growth) ** ((t - START) / DAY))

    return rate


def nightly(level: float, at_hour: int, hours: int) -> Rate:
    def rate(t: float) -> float:
        hour = (t % DAY) / HOUR
        return level if at_hour <= hour < at_hour + hours else 0.0

    return rate


def weekly(level: float) -> Rate:
    def rate(t: float) -> float:
        dow = int(t // DAY + 3) % 7
        hour = (t % DAY) / HOUR
        return level if dow == 0 and 6 <= hour < 8 else 4.0

    return rate


def sparse(rng: random.Random, per_day: float, size: float) -> Rate:
    """Sessions at random times (Poisson), 1-3 steps long, heavy-tailed sizes."""
    sessions: dict[int, float] = {}
    t = START - DAY
    while t < START + 60 * DAY:
        t += rng.expovariate(per_day / DAY)
        first = int(t // STEP)
        n = rng.choice((1, 1, 2, 3))
        volume = size * rng.lognormvariate(0, 1.0)
        for k in range(first, first + n):
            sessions[k] = volume * 4 / n  # per hour

    return lambda t: sessions.get(int(t // STEP), 0.0)


# --- tokens and events --------------------------------------------------------------------------


@dataclass
class Token:
    name: str
    rate: Rate
    models: list[tuple[str, float]]  # (model, share)
    ips: list[str]
    whitelist: list[str] = field(default_factory=list)
    status: str = "active"
    created_at: float = START - 120 * DAY
    daily_requests: int | None = None
    allowed_models: list[str] = field(default_factory=list)
    report_ips: bool = True
    ip_pool: Callable[[float], list[str]] | None = None  # rotating clients, by time
    active: Callable[[float], bool] = lambda t: True
    business_hours: str | None = None
    tz: int = 0  # office hours' UTC offset
    new_model_every: float | None = None  # days: a developer trying a new model now and then
    dispersion: float = 3.0  # gamma shape of each step's volume: lower is burstier


@dataclass
class Attack:
    onset: float
    hours: float
    requests_per_hour: float
    models: tuple[str, ...]
    ips: Callable[[random.Random, float], str | None]


def rotating_pool(rng: random.Random, size: int, churn_per_day: float) -> Callable[[float], list[str]]:
    """A client pool where `churn_per_day` of the IPs are replaced every day (mobile carriers)."""
    days: dict[int, list[str]] = {}
    pool = [f"100.64.{rng.randrange(256)}.{rng.randrange(256)}" for _ in range(size)]
    for d in range(-2, 62):
        pool = list(pool)
        for _ in range(int(size * churn_per_day)):
            pool[rng.randrange(size)] = f"100.64.{rng.randrange(256)}.{rng.randrange(256)}"
        days[d] = pool
    return lambda t: days[int((t - START) // DAY)]


def between(lo: float, hi: float, inside: float) -> Callable[[float], float]:
    """A traffic multiplier: `inside` for lo < t <= hi, else 1."""
    return lambda t: inside if lo < t <= hi else 1.0


def no_extra_ips(t: float) -> tuple[str, ...]:
    return ()


def poisson(rng: random.Random, lam: float) -> int:
    if lam <= 0:
        return 0
    if lam > 40:
        return max(0, round(rng.gauss(lam, math.sqrt(lam))))
    limit, k, p = math.exp(-lam), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


def draw(rng: random.Random, per_step: float, dispersion: float = 3.0) -> int:
    """Over-dispersed counts: Poisson with a gamma-distributed mean."""
    if per_step <= 0:
        return 0
    return poisson(rng, rng.gammavariate(dispersion, per_step / dispersion))


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def lines_for(
    rng: random.Random,
    tok: Token,
    t: float,
    mult: float = 1.0,
    extra_ips: tuple[str, ...] = (),
    model_for: Callable[[float], list[tuple[str, float]]] | None = None,
) -> Iterator[Line]:
    if not tok.active(t):
        return
    n = draw(rng, tok.rate(t) * mult * STEP / HOUR, tok.dispersion)
    if n == 0:
        return
    models = model_for(t) if model_for else tok.models
    pool = tok.ip_pool(t) if tok.ip_pool else tok.ips + list(extra_ips)
    split: dict[tuple[str, str | None], int] = {}
    for _ in range(min(n, 6)):  # a few lines per step: requests grouped by (model, ip)
        model = rng.choices([m for m, _ in models], [s for _, s in models])[0]
        ip = rng.choice(pool) if tok.report_ips else None
        split[(model, ip)] = split.get((model, ip), 0) + 1
    total = sum(split.values())
    for (model, ip), share in split.items():
        req = max(1, round(n * share / total))
        yield usage(t, tok.name, req, model, ip, rng)


def usage(t: float, token: str, requests: int, model: str, ip: str | None, rng: random.Random) -> Line:
    cost = requests * PRICE[model] * rng.lognormvariate(0, 0.3)
    line: Line = {
        "ts": iso(t),
        "provider": "sc",
        "token": token,
        "requests": requests,
        "cost_usd": round(cost, 6),
    }
    line["model"] = model
    if ip is not None:
        line["ip"] = ip
    return line


# --- single-token histories for unit tests -----------------------------------------------------


class Feeder(Generic[T]):
    """One token's traffic fed into a TokenHistory at 15-minute steps, with hooks to scale it, to
    add lines (an attacker) and to evaluate after each step (the poll)."""

    def __init__(
        self,
        rate: Rate,
        *,
        seed: int = 0,
        models: tuple[str, ...] = ("m-mini",),
        ips: tuple[str, ...] = ("198.18.0.10",),
        start: float = START,
        report_ips: bool = True,
        ip_pool: Callable[[float], list[str]] | None = None,
        idle_since: float | None = None,
        dispersion: float = 3.0,
        spend_only: bool = False,
    ) -> None:
        """`spend_only`: feed spend and requests alone, as a relay without logs reports them."""
        self.rng = random.Random(seed)
        self.spend_only = spend_only
        self.token = Token(
            "t", rate, [(m, 1.0) for m in models], list(ips), report_ips=report_ips, ip_pool=ip_pool
        )
        self.token.dispersion = dispersion
        self.history = TokenHistory(start, idle_since=idle_since)
        self.now = start

    def run(
        self,
        seconds: float,
        *,
        mult: float = 1.0,
        extra: Callable[[float], list[Line]] | None = None,
        each: Callable[[float], T] | None = None,
        quiet: bool = False,
    ) -> list[T]:
        """Advance `seconds`; `quiet`: the token's own traffic stops (only `extra` lines come)."""
        out: list[T] = []
        end = self.now + seconds
        while self.now < end:
            self.now += STEP
            if not quiet:
                feed(
                    self.history, lines_for(self.rng, self.token, self.now, mult), spend_only=self.spend_only
                )
            if extra is not None:
                feed(self.history, extra(self.now), spend_only=self.spend_only)
            if each is not None:
                out.append(each(self.now))
        return out

    def line(self, requests: int, model: str, ip: str | None) -> Line:
        return usage(self.now, "t", requests, model, ip, self.rng)


def history(rate: Rate, *, days: float, seed: int = 0, **kw: Any) -> TokenHistory:
    """A TokenHistory of `days` of the given traffic shape."""
    f: Feeder[None] = Feeder(rate, seed=seed, **kw)
    f.run(days * DAY)
    return f.history


def feed(h: TokenHistory, lines: Iterable[Line], *, spend_only: bool = False) -> None:
    for d in lines:
        ts = datetime.fromisoformat(str(d["ts"]).replace("Z", "+00:00")).timestamp()
        model, ip = (None, None) if spend_only else (d.get("model"), d.get("ip"))
        h.observe(
            ts,
            float(d["cost_usd"]),  # type: ignore[arg-type]
            float(d["requests"]),  # type: ignore[arg-type]
            str(model) if model else None,
            str(ip) if ip else None,
        )


# --- a labelled fleet ---------------------------------------------------------------------------


@dataclass
class Scenario:
    lines: list[Line]
    truth: dict[str, object]
    business_hours: dict[str, str]  # token -> business_hours policy


def generate(seed: int = 1, *, clean: int = 52, days: int = 35) -> Scenario:
    rng = random.Random(seed)
    end = START + days * DAY
    tokens: list[Token] = []
    counter = iter(range(1000))

    def name(env: str, kind: str) -> str:
        return f"{env}-p{next(counter):03d}-{kind}-2027-01"

    def server_ips(k: int) -> list[str]:
        base = rng.randrange(1, 250)
        return [f"198.18.{base}.{10 + i}" for i in range(k)]

    def make(kind: str) -> Token:
        env = rng.choice(("prod", "prod", "dev", "test"))
        ips = server_ips(rng.choice((1, 2, 3)))
        models = [(rng.choice(("m-mini", "m-flash", "m-haiku")), 1.0)]
        tz = rng.choice((-5, 1, 8))
        if kind == "office":
            t = Token(
                name(env, kind), office(rng.uniform(40, 400), tz, rng.choice((0.0, 0.0, 0.03))), models, ips
            )
            t.tz = tz
            zone = {-5: "America/New_York", 1: "Europe/Berlin", 8: "Asia/Shanghai"}[tz]
            t.business_hours = f"mon-fri 07:00-20:00 {zone}"
        elif kind == "service":
            t = Token(name(env, kind), service(rng.uniform(20, 300)), models, ips)
        elif kind == "growing":
            t = Token(name(env, kind), service(rng.uniform(20, 120), growth=0.025), models, ips)
        elif kind == "nightly":
            t = Token(
                name(env, kind),
                nightly(rng.uniform(400, 3000), rng.randrange(0, 5), rng.choice((1, 2))),
                models,
                ips,
            )
        elif kind == "weekly":
            t = Token(name(env, kind), weekly(rng.uniform(800, 2500)), models, ips)
        elif kind == "sparse":
            t = Token(name(env, kind), sparse(rng, rng.uniform(1, 5), rng.uniform(10, 80)), models, ips)
        elif kind == "mobile":
            t = Token(name(env, kind), service(rng.uniform(80, 400)), models, [])
            t.ip_pool = rotating_pool(rng, 40, 0.2)
        elif kind == "serverless":  # cloud functions: hundreds of short-lived egress addresses
            t = Token(name(env, kind), service(rng.uniform(60, 300)), models, [])
            t.ip_pool = rotating_pool(rng, 300, 0.6)
        elif kind == "devmulti":
            t = Token(
                name("dev", kind),
                office(rng.uniform(20, 80), tz, 0.05),
                [(m, 1.0) for m in ("m-mini", "m-haiku", "m-flash")],
                ips,
            )
            t.tz, t.new_model_every = tz, rng.uniform(3, 6)
        else:
            raise ValueError(kind)
        if t.name.startswith("prod") and t.ip_pool is None and rng.random() < 0.7:
            t.whitelist = [f"{ips[0].rsplit('.', 1)[0]}.0/28"] if rng.random() < 0.5 else list(ips)
        if rng.random() < 0.2 and not t.new_model_every:
            t.allowed_models = sorted({m for m, _ in t.models} | {"m-mini-2"})
        return t

    kinds = [
        "office",
        "service",
        "growing",
        "nightly",
        "weekly",
        "sparse",
        "mobile",
        "devmulti",
        "serverless",
    ]
    for i in range(clean):
        tokens.append(make(kinds[i % len(kinds)]))
    never_used = Token(name("dev", "dormant"), service(0), [("m-mini", 1.0)], [], status="unused")
    tokens.append(never_used)

    events: dict[str, dict[str, object]] = {}
    extra: list[Line] = []
    mults: dict[str, Callable[[float], float]] = {}
    extra_ips: dict[str, Callable[[float], tuple[str, ...]]] = {}

    def onset_in(lo: float = 11, hi: float = 33) -> float:
        return START + round(rng.uniform(lo, hi) * DAY / STEP) * STEP

    def attack(tok: Token, a: Attack, kind: str) -> None:
        t = a.onset
        while t < min(end, a.onset + a.hours * HOUR):
            t += STEP
            n = draw(rng, a.requests_per_hour * STEP / HOUR, 6.0)
            for _ in range(rng.choice((1, 2, 3))):
                if n <= 0:
                    break
                part = max(1, n // 2)
                extra.append(usage(t, tok.name, part, rng.choice(a.models), a.ips(rng, t), rng))
                n -= part
        events[tok.name] = {"type": "leak", "kind": kind, "onset": iso(a.onset + STEP), "hours": a.hours}

    def attacker_ips(prefix: str, per_hour: int) -> Callable[[random.Random, float], str]:
        return lambda r, t: f"{prefix}.{r.randrange(per_hour * 4)}.{r.randrange(256)}"

    def level(tok: Token) -> float:
        """The token's typical busy-hour request rate."""
        return max(tok.rate(START + d * DAY + h * HOUR) for d in range(7) for h in range(24))

    # leaks
    def add_leak(kind: str) -> None:
        if kind == "drain":
            tok = make(rng.choice(("service", "nightly", "office")))
            rate = max(800.0, 5 * level(tok))
            attack(
                tok, Attack(onset_in(), rng.uniform(6, 24), rate, EXPENSIVE, attacker_ips("45.13", 12)), kind
            )
        elif kind == "dormant_wake":
            tok = Token(
                name("dev", "dormant"),
                service(0),
                [("m-mini", 1.0)],
                [],
                status="unused",
                created_at=START - 90 * DAY,
            )
            attack(
                tok,
                Attack(
                    onset_in(),
                    20,
                    400,
                    (*EXPENSIVE, "m-mini"),
                    lambda r, t: f"185.220.{r.randrange(256)}.{r.randrange(256)}",
                ),
                kind,
            )
        elif kind == "offhours_newip":
            tok = make("office")
            tok.rate = office(rng.uniform(80, 300), -5 if rng.random() < 0.5 else 1)
            tok.business_hours = "mon-fri 07:00-20:00 " + (
                "America/New_York" if tok.rate(START + 13 * HOUR) else "Europe/Berlin"
            )
            base = onset_in()
            base = base - base % DAY + 2 * HOUR  # 02:00 UTC: night in Berlin and New York
            ips = [f"91.240.{rng.randrange(256)}.{rng.randrange(256)}" for _ in range(3)]
            attack(
                tok,
                Attack(
                    base, 5, 2.5 * level(tok), tuple(m for m, _ in tok.models), lambda r, t: r.choice(ips)
                ),
                kind,
            )
        elif kind == "offhours_noip":
            tok = make("office")
            tok.report_ips = False
            tok.whitelist = []
            tok.rate = office(rng.uniform(80, 300), 1)
            tok.business_hours = "mon-fri 07:00-20:00 Europe/Berlin"
            base = onset_in()
            base = base - base % DAY + 1 * HOUR
            attack(
                tok, Attack(base, 6, 3 * level(tok), tuple(m for m, _ in tok.models), lambda r, t: None), kind
            )
        elif kind == "swarm":
            tok = make("sparse")
            attack(
                tok,
                Attack(onset_in(), 20, 700, tuple(m for m, _ in tok.models), attacker_ips("5.188", 40)),
                kind,
            )
        elif kind == "whitelist":
            tok = make("service")
            tok.name = name("prod", "service")
            tok.whitelist = [f"{tok.ips[0].rsplit('.', 1)[0]}.0/28"]
            ips = [f"203.0.113.{rng.randrange(256)}" for _ in range(2)]
            attack(
                tok,
                Attack(
                    onset_in(),
                    12,
                    7 * level(tok),
                    tuple(m for m, _ in tok.models),
                    lambda r, t: r.choice(ips),
                ),
                kind,
            )
        elif kind == "flood":
            tok = make("service")
            attack(tok, Attack(onset_in(), 10, 25 * level(tok), ("m-nano",), attacker_ips("194.26", 6)), kind)
        else:
            raise ValueError(kind)
        tokens.append(tok)

    for kind in (
        "drain",
        "drain",
        "dormant_wake",
        "offhours_newip",
        "offhours_noip",
        "swarm",
        "whitelist",
        "flood",
    ):
        add_leak(kind)

    # spikes: same models, same IPs (a mobile token's pool keeps rotating), for anomaly only
    for kind in ("service", "office", "growing", "mobile", "service", "devmulti"):
        tok = make(kind)
        if level(tok) < 150:  # big enough that x6 passes min_impact_usd ($1/h)
            tok.rate = {
                "office": office(rng.uniform(150, 400), tok.tz),
                "devmulti": office(rng.uniform(150, 400), tok.tz, 0.05),
            }.get(kind, service(rng.uniform(150, 400)))
        on = onset_in()
        if kind in ("office", "devmulti"):  # during office hours, on a weekday
            on = on - on % DAY + (10 - tok.tz) * HOUR
            while int(on // DAY + 3) % 7 >= 5:
                on += DAY
        hours = rng.choice((1, 2, 3, 4))
        factor = rng.uniform(6, 12)
        mults[tok.name] = between(on, on + hours * HOUR, factor)
        events[tok.name] = {"type": "spike", "kind": "spike", "onset": iso(on + STEP), "hours": hours}
        tokens.append(tok)
    shift = make("service")
    shift.rate = service(rng.uniform(150, 400))
    on = onset_in(12, 25)
    mults[shift.name] = between(on, end, 3.0)
    events[shift.name] = {"type": "spike", "kind": "level_shift", "onset": iso(on + STEP), "hours": 72}
    tokens.append(shift)

    # benign lookalikes
    launch = make("service")
    on = onset_in(12, 28)
    mults[launch.name] = between(on, end, 2.2)
    new_servers = tuple(server_ips(2))
    launched = on
    extra_ips[launch.name] = lambda t: new_servers if t > launched else ()
    launch.whitelist = []
    events[launch.name] = {"type": "benign", "kind": "launch", "onset": iso(on + STEP), "hours": 720}
    tokens.append(launch)
    launch2 = make("office")
    on2 = onset_in(12, 28)
    mults[launch2.name] = between(on2, end, 2.0)
    events[launch2.name] = {"type": "benign", "kind": "launch", "onset": iso(on2 + STEP), "hours": 720}
    tokens.append(launch2)
    month_end = make("office")
    month_end.rate = office(rng.uniform(80, 300), 1)
    month_end.business_hours = "mon-fri 07:00-20:00 Europe/Berlin"
    me = datetime(2027, 3, 31, 19, tzinfo=UTC).timestamp()  # 21:00 in Berlin (CEST)
    batch, usual = 8 * level(month_end), month_end.rate
    month_end.rate = lambda t: batch if me < t <= me + 4 * HOUR else usual(t)
    events[month_end.name] = {"type": "benign", "kind": "month_end", "onset": iso(me + STEP), "hours": 4}
    tokens.append(month_end)
    sleeper = make("service")
    sleeper.whitelist = []
    wake = onset_in(24, 30)
    sleeper.active = lambda t: t < START + 4 * DAY or t > wake
    events[sleeper.name] = {
        "type": "benign",
        "kind": "dormant_benign",
        "onset": iso(wake + STEP),
        "hours": 48,
    }
    tokens.append(sleeper)

    # projects of sibling tokens (env-project-purpose-date): traffic that moves together
    def project(purposes: tuple[str, ...], low: float = 60) -> list[Token]:
        proj = f"shop{next(counter):03d}"
        env = rng.choice(("prod", "prod", "test"))
        ips = server_ips(2)
        models = [(rng.choice(("m-mini", "m-flash", "m-haiku")), 1.0)]
        base = rng.uniform(low, 250)
        return [
            Token(f"{env}-{proj}-{purpose}-2027-01", service(base * rng.uniform(0.5, 1.5)), models, ips)
            for purpose in purposes
        ]

    launched_project = project(("api", "worker", "batch"))  # benign: the whole project doubles at once
    on = onset_in(12, 28)
    for tok in launched_project:
        mults[tok.name] = between(on, end, 2.5)
        events[tok.name] = {"type": "benign", "kind": "project_launch", "onset": iso(on + STEP), "hours": 720}
        tokens.append(tok)
    # one sibling spikes for a few hours, the other stays (busy enough that x6 passes min_impact_usd)
    spiked_project = project(("api", "worker"), low=200)
    on = onset_in()
    hours = rng.choice((2, 3))
    mults[spiked_project[0].name] = between(on, on + hours * HOUR, rng.uniform(6, 10))
    events[spiked_project[0].name] = {
        "type": "spike",
        "kind": "sibling_spike",
        "onset": iso(on + STEP),
        "hours": hours,
    }
    tokens.extend(spiked_project)
    drained_project = project(("api", "worker", "cron"))  # a thief drains one sibling, same model
    victim = drained_project[1]
    attack(
        victim,
        Attack(
            onset_in(), 10, 25 * level(victim), tuple(m for m, _ in victim.models), attacker_ips("103.7", 8)
        ),
        "sibling_drain",
    )
    tokens.extend(drained_project)

    # the fleet-wide model change: every token moves its main model to m-mini-2 within 6 hours
    change = START + 24 * DAY
    moved = {tok.name: change + rng.randrange(0, 24) * STEP for tok in tokens}

    lines: list[Line] = []
    for tok in tokens:
        lines.append(
            {
                "type": "token",
                "provider": "sc",
                "token": tok.name,
                "created_at": iso(tok.created_at),
                "status": tok.status,
                "expires_at": None,
                "limits": {
                    "daily_limit": {"requests": tok.daily_requests or 200000, "amount": 1000},
                    "monthly_limit": {"amount": 10000},
                    "allowed_models": tok.allowed_models,
                },
                "ip_whitelist": tok.whitelist,
            }
        )
    for tok in tokens:
        mult = mults.get(tok.name, between(0, 0, 1.0))
        more = extra_ips.get(tok.name, no_extra_ips)

        def model_for(t: float, tok: Token = tok) -> list[tuple[str, float]]:
            ms = list(tok.models)
            # a developer trying a new model every few days, at a small share
            if every := tok.new_model_every:
                k = int((t - START) / (every * DAY))
                ms += [(f"m-exp-{i}", 0.1) for i in range(k)]
                for i in range(k):
                    PRICE.setdefault(f"m-exp-{i}", 0.005)
            if t >= moved[tok.name]:
                ms[0] = ("m-mini-2", ms[0][1])
            return ms

        t = START
        while t < end:
            t += STEP
            lines.extend(lines_for(rng, tok, t, mult(t), more(t), model_for))
    lines.extend(extra)
    truth: dict[str, object] = {
        "step_seconds": STEP,
        "start": iso(START),
        "end": iso(end),
        "warm_until": iso(START + 10 * DAY),
        "fleet_model_change": iso(change),
        "tokens": [t.name for t in tokens],
        "events": events,
    }
    return Scenario(lines, truth, {t.name: t.business_hours for t in tokens if t.business_hours})


def write(sc: Scenario, folder: str) -> None:
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "usage.jsonl"), "w") as f:
        for line in sc.lines:
            f.write(json.dumps(line) + "\n")
    with open(os.path.join(folder, "truth.json"), "w") as f:
        json.dump(sc.truth, f, indent=1)
    with open(os.path.join(folder, "business_hours.json"), "w") as f:
        json.dump(sc.business_hours, f, indent=1)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="generate, replay and score a synthetic fleet")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", required=True)
    ap.add_argument("--score", default="/work/shared/detection/score.py")
    args = ap.parse_args(argv)
    import asyncio

    from alerts.offline.backtest import read_input, run_backtest
    from monitor.secret import Secret
    from monitor.settings import ProviderSettings, Response, Settings, TokenPolicy

    sc = generate(args.seed)
    write(sc, args.out)
    provider = ProviderSettings(
        name="sc",  # the provider the generated lines name, so its 15-minute polls apply
        kind="laozhang",
        base_url="http://x.invalid",
        admin_token=Secret(""),
        poll_interval=900,
    )
    settings = Settings(
        providers=(provider,),
        tokens=tuple(TokenPolicy(match=k, business_hours=v) for k, v in sc.business_hours.items()),
        response=Response(auto_revoke=True),
    )
    alerts = asyncio.run(run_backtest(read_input([json.dumps(line) for line in sc.lines]), settings))
    path = os.path.join(args.out, "alerts.jsonl")
    with open(path, "w") as f:
        for a in alerts:
            f.write(json.dumps(a) + "\n")
    if os.path.exists(args.score):
        return subprocess.call(
            [sys.executable, args.score, os.path.join(args.out, "truth.json"), path, "--gate"]
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
