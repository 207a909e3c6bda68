"""The simulated relay: tokens, their traffic over simulated time, incidents and bookkeeping.
It knows nothing of any wire format; the HTTP flavours (laozhang, ...) are views onto it."""

from __future__ import annotations

import inspect
import math
import random
from collections.abc import Iterator, Mapping, Sequence
from types import MappingProxyType
from typing import Any, TypedDict

from monitor.clock import Clock

from .faults import Faults
from .fleet import Minter, build_fleet, make_token
from .history import HistoryRow, avg_price, history
from .hostile import Hostile
from .ledger import Event, EventLog, Ledger
from .localtime import LocalTime
from .profiles import LEAK_MODELS, NORMAL_MODELS, PROFILES, Archetype
from .simclock import SimClock
from .token import Limits, SimStatus, SimToken
from .traffic import catch_up, make_leak

__all__ = ["DEFAULT_ADMIN_TOKEN", "SimulatedRelay", "TruthRow", "make_relay"]

DEFAULT_ADMIN_TOKEN = "sim-admin-token"  # a fixture value, not a secret
_LEAK_NET = "203.0.113"  # TEST-NET-3: never used by normal traffic, so leak IPs are always new


class TruthRow(TypedDict):
    id: str  # the relay's id: after /_sim/tokens/reuse, a deleted row and a live row share it
    name: str
    status: SimStatus
    deleted: bool
    archetype: str
    today_usage: float
    month_usage: float
    today_requests: int
    lifetime_usd: float  # net: charged_usd - refunded_usd
    lifetime_requests: int
    last_used_at: float | None
    usd_per_hour: float
    leaking: bool
    created_at: float
    charged_usd: float  # gross: every dollar ever charged, refunds not taken off
    refunded_usd: float  # given back by refunds (/_sim/refund)


class SimulatedRelay:
    """Read tokens through this class (`token`, `by_key`, `list_tokens`, `tokens`), never through a
    stored SimToken: reads bring a token's traffic up to the relay's current time first."""

    def __init__(
        self,
        *,
        seed: int,
        clock: SimClock,
        local: LocalTime,
        step: float,
        tokens: Sequence[SimToken],
        minter: Minter,
        admin_token: str = DEFAULT_ADMIN_TOKEN,
        event_log_size: int = 100_000,
        enforce_limits: bool = False,
    ) -> None:
        self.seed = seed
        self.clock = clock
        self.local = local
        self.step = step
        self.admin_token = admin_token
        self.enforce_limits = enforce_limits
        self.events = EventLog(event_log_size)
        self.faults = Faults(seed=seed)
        self.hostile = Hostile(seed=seed)
        self._ledger = Ledger(local, self.events)
        self._minter = minter
        self._rng = random.Random(f"{seed}:relay")
        self._all: dict[str, SimToken] = {}  # by id, creation order, deleted ones included
        self._retired: list[SimToken] = []  # deleted tokens whose id was given to a new token
        self._by_key: dict[str, SimToken] = {}
        self._by_name: dict[str, SimToken] = {}
        self.roster_version = 0  # bumped when a token is added or deleted: a cache key for views
        for tok in tokens:
            self._add(tok)

    # --- time ----------------------------------------------------------------------------------
    @property
    def tz(self) -> str:
        return self.local.tz_name

    @property
    def speed(self) -> float:
        return self.clock.speed

    def now(self) -> float:
        return self.clock.now()

    def advance(self, to_ts: float) -> None:
        """Move simulated time forward to `to_ts` (no-op if already past). O(1): each token's
        traffic is generated when it is next read, with the same result as generating it now."""
        self.clock.advance_to(to_ts)

    def advance_by(self, seconds: float) -> None:
        self.clock.advance(seconds)

    def set_speed(self, speed: float) -> None:
        self.clock.set_speed(speed)

    def sync(self) -> float:
        """Bring every token up to now (what a full list read does). Returns now."""
        now = self.now()
        for tok in self._all.values():
            self._catch_up(tok, now)
        for tok in self._retired:
            self._catch_up(tok, now)
        return now

    def _catch_up(self, tok: SimToken, now: float) -> None:
        catch_up(tok, now, step=self.step, ledger=self._ledger, enforce_limits=self.enforce_limits)

    # --- reads ---------------------------------------------------------------------------------
    @property
    def tokens(self) -> Mapping[str, SimToken]:
        """Every listed (not deleted) token by id, brought up to now: O(tokens), for tests."""
        self.sync()
        return MappingProxyType({tid: t for tid, t in self._all.items() if not t.deleted})

    def list_tokens(self) -> list[SimToken]:
        now = self.now()
        out = []
        for tok in self._all.values():
            if not tok.deleted:
                self._catch_up(tok, now)
                out.append(tok)
        return out

    def listed(self) -> list[SimToken]:
        """Every listed token in creation order, as they are: for views that already synced."""
        return [t for t in self._all.values() if not t.deleted]

    def token(self, ref: str) -> SimToken:
        """A listed token by id or name, up to date. KeyError if unknown or deleted."""
        tok = self._all.get(ref) or self._by_name.get(ref)
        if tok is None or tok.deleted:
            raise KeyError(ref)
        self._catch_up(tok, self.now())
        return tok

    def get(self, token_id: str) -> SimToken | None:
        """A listed token by id only (what a wire path names), up to date; None if unknown."""
        tok = self._all.get(token_id)
        if tok is None or tok.deleted:
            return None
        self._catch_up(tok, self.now())
        return tok

    def by_key(self, key: str) -> SimToken | None:
        """The token a secret key belongs to, up to date; None if no listed token has it. O(1)."""
        tok = self._by_key.get(key)
        if tok is not None:
            self._catch_up(tok, self.now())
        return tok

    def status(self, tok: SimToken) -> SimStatus:
        return tok.status(self.now())

    def total_spend(self, ref: str) -> float:
        """Lifetime spend (never resets), including deleted tokens: the truth to check against."""
        tok = self._any(ref)
        self._catch_up(tok, self.now())
        return tok.lifetime_usd

    def total_requests(self, ref: str) -> int:
        tok = self._any(ref)
        self._catch_up(tok, self.now())
        return tok.lifetime_requests

    def keys(self) -> dict[str, str]:
        """name -> secret key for every listed token (what an operator would configure). Where
        names repeat, the newest token holding the name wins: see `keys_by_id`."""
        return {t.name: t.key for t in self._all.values() if not t.deleted}

    def keys_by_id(self) -> dict[str, dict[str, str]]:
        """id -> {"name", "key"} for every listed token: apart even when names repeat."""
        return {t.id: {"name": t.name, "key": t.key} for t in self._all.values() if not t.deleted}

    def truth(self) -> list[TruthRow]:
        """Every token the relay ever had (deleted ones flagged, a reused id's earlier token
        first), up to now."""
        now = self.sync()
        return [self._truth_row(t, now) for t in (*self._retired, *self._all.values())]

    def truth_of(self, ref: str) -> TruthRow:
        tok = self._any(ref)
        now = self.now()
        self._catch_up(tok, now)
        return self._truth_row(tok, now)

    @staticmethod
    def _truth_row(t: SimToken, now: float) -> TruthRow:
        return TruthRow(
            id=t.id,
            name=t.name,
            status=t.status(now),
            deleted=t.deleted,
            archetype=t.archetype.value,
            today_usage=t.today_usage,
            month_usage=t.month_usage,
            today_requests=t.today_requests,
            lifetime_usd=t.lifetime_usd,
            lifetime_requests=t.lifetime_requests,
            last_used_at=t.last_used_at,
            usd_per_hour=t.usd_per_hour,
            leaking=t.leak is not None,
            created_at=t.created_at,
            charged_usd=round(t.lifetime_usd + t.refunded_usd, 6),
            refunded_usd=t.refunded_usd,
        )

    def events_between(self, since: float, until: float, token: str | None = None) -> list[Event]:
        """Booked events with since <= ts <= until, oldest first (as far as the ring buffer holds)."""
        self.sync()
        return self.events.between(since, until, None if token is None else self._any(token).id)

    def history(self, since_ts: float, until_ts: float, step: float = 3600.0) -> Iterator[HistoryRow]:
        """(ts, token_id, name, cost_usd, requests) for seeding a store with past traffic."""
        live = [t for t in self._all.values() if not t.deleted]
        return history(live, seed=self.seed, local=self.local, since=since_ts, until=until_ts, step=step)

    # --- incidents -----------------------------------------------------------------------------
    def start_leak(
        self,
        ref: str,
        multiplier: float = 20.0,
        new_ips: bool = True,
        models: Sequence[str] = LEAK_MODELS,
    ) -> SimToken:
        """From now on, someone else also spends with this key: `multiplier` x the token's busiest
        normal hour, around the clock, on `models`, from never-seen IPs (unless new_ips=False)."""
        if multiplier <= 0:
            raise ValueError("multiplier must be > 0")
        tok = self.token(ref)
        ips = tuple(f"{_LEAK_NET}.{i}" for i in self._rng.sample(range(1, 255), 6)) if new_ips else tok.ips
        tok.leak = make_leak(
            tok, multiplier=multiplier, ips=ips, models=tuple(models), now=self.now(), step=self.step
        )
        return tok

    def stop_leak(self, ref: str) -> SimToken:
        tok = self.token(ref)
        tok.leak = None
        return tok

    def add_spend(
        self,
        ref: str,
        usd: float,
        requests: int = 1,
        model: str | None = None,
        ip: str | None = None,
        at: float | None = None,
    ) -> SimToken:
        """Book spend on a token now, as if its key had just been used. `at` books it at an
        earlier time of the relay's current day instead: a relay that writes its log row late."""
        if usd < 0 or requests < 0:
            raise ValueError("usd and requests must be >= 0")
        tok = self.token(ref)
        now = self.now()
        if not tok.accepts_key(now):
            raise ValueError(f"token {tok.name!r} is {tok.status(now)}: the relay refuses its key")
        when = now
        if at is not None:
            if at > now or self.local.info(at)[0] != tok.day_key:
                raise ValueError("at must be earlier today (the relay's day)")
            when = at
        self._ledger.book(tok, when, requests, usd, model or tok.models[0], ip or tok.ips[0])
        return tok

    def refund(self, ref: str, usd: float) -> SimToken:
        """Give back `usd` of today's charges with no period boundary, as one-api and new-api do
        when they refund pre-consumed quota: the day and month windows, the net lifetime total
        (one-api's used_quota) go down by `usd`. The request log keeps the charges as booked."""
        tok = self.token(ref)
        if not 0 < usd <= tok.today_usage:
            raise ValueError(f"usd must be > 0 and at most today's usage ({tok.today_usage})")
        tok.today_usage = round(tok.today_usage - usd, 6)
        tok.month_usage = round(tok.month_usage - usd, 6)
        tok.lifetime_usd = round(tok.lifetime_usd - usd, 6)
        tok.refunded_usd = round(tok.refunded_usd + usd, 6)
        return tok

    def push_over_budget(
        self, ref: str, window: str = "day", *, target_usd: float | None = None, overshoot: float = 0.1
    ) -> float:
        """Add spend so the token's `window` ("day" or "month") usage ends `overshoot` above its
        configured limit (or above `target_usd`, e.g. a budget from keywatch's config). Returns the
        USD added (0 if already over)."""
        if window not in ("day", "month"):
            raise ValueError('window must be "day" or "month"')
        tok = self.token(ref)
        limit = target_usd
        if limit is None:
            limit = tok.limits.daily_usd if window == "day" else tok.limits.monthly_usd
        if limit is None:
            raise ValueError(f"token {tok.name!r} has no {window} limit; pass target_usd")
        current = tok.today_usage if window == "day" else tok.month_usage
        need = round(limit * (1.0 + overshoot) - current, 6)
        if need <= 0:
            return 0.0
        self.add_spend(tok.id, need, requests=max(1, round(need / avg_price(tok))))
        return need

    # --- administration ------------------------------------------------------------------------
    def create_token(
        self,
        name: str,
        *,
        billing_method: str = "usage_based",
        permissions: Sequence[str] = ("chat", "completion"),
        expires_at: float | None = None,
        limits: Limits | None = None,
        ip_whitelist: Sequence[str] = (),
        archetype: Archetype | str = Archetype.IDLE,
        usd_per_hour: float | None = None,
        models: Sequence[str] | None = None,
        ips: Sequence[str] | None = None,
        unlimited_quota: bool | None = None,
        quota_usd: float | None = None,
        _reuse_id: str | None = None,
    ) -> tuple[SimToken, str]:
        """A new token (status "unused" until it spends) and its key. By default it stays idle;
        give an archetype (and usd_per_hour) to make it generate traffic."""
        if not name:
            raise ValueError("name must not be empty")
        arch = Archetype(archetype)
        now = self.now()
        tok = make_token(
            seed=self.seed,
            step=self.step,
            token_id=_reuse_id or self._minter.token_id(),
            key=self._minter.key(),
            name=name,
            archetype=arch,
            created_at=now,
            usd_per_hour=usd_per_hour if usd_per_hour is not None else 0.5,
            models=tuple(models) if models else (self._rng.choice(NORMAL_MODELS),),
            ips=tuple(ips) if ips else tuple(ip_whitelist) or (f"192.0.2.{self._rng.randrange(1, 255)}",),
            profile=PROFILES[Archetype.SERVICE] if arch is Archetype.DORMANT else None,
            expires_at=expires_at,
            billing_method=billing_method,
            permissions=permissions,
            limits=limits,
            ip_whitelist=ip_whitelist,
        )
        tok.unlimited_quota = unlimited_quota
        tok.quota_usd = quota_usd
        tok.next_k = math.floor(now / self.step) + 1
        tok.day_key, tok.month_key, _ = self.local.info(now)
        self._add(tok)
        return tok, tok.key

    def reuse_token_id(self, ref: str, name: str, **options: Any) -> tuple[SimToken, str]:
        """Delete a token and create a new one under the SAME relay id (a relay that recycles
        ids): a new name and key, created now, no usage. `options` as for create_token. The old
        token stays in `truth()`, deleted; reads by id find the new one."""
        old = self.token(ref)
        if "_reuse_id" in options:
            raise TypeError("unexpected keyword argument '_reuse_id'")
        inspect.signature(self.create_token).bind(name, **options)  # TypeError before any change
        if not name:
            raise ValueError("name must not be empty")
        Archetype(options.get("archetype", Archetype.IDLE))
        self.delete_token(old.id)
        self._retired.append(old)
        tok, key = self.create_token(name, _reuse_id=old.id, **options)
        tok.version = old.version + 1  # views cache static parts per (id, version)
        return tok, key

    def rename_token(self, ref: str, name: str) -> SimToken:
        """Names need not be unique: two live tokens may share one (then a ref by that name
        finds the newest holder; ids keep them apart)."""
        if not name:
            raise ValueError("name must not be empty")
        tok = self.token(ref)
        self._unname(tok)
        tok.name = name
        self._by_name[name] = tok
        tok.touch()
        return tok

    def revoke_token(self, ref: str) -> SimToken:
        """Revoked for good: still listed (status "revoked"), its key refused from now on."""
        tok = self.token(ref)
        if tok.revoked_at is None:
            tok.revoked_at = self.now()
            tok.leak = None
            tok.touch()
        return tok

    def disable_token(self, ref: str) -> SimToken:
        """Disabled (one-api status 2): listed, its key refused, and it can be enabled again."""
        tok = self.token(ref)
        if tok.disabled_at is None:
            tok.disabled_at = self.now()
            tok.touch()
        return tok

    def enable_token(self, ref: str) -> SimToken:
        tok = self.token(ref)
        if tok.disabled_at is not None:
            tok.disabled_at = None  # catch-up skipped its traffic while it was off
            tok.touch()
        return tok

    def delete_token(self, ref: str) -> None:
        """Gone: no longer listed, its key unknown. `total_spend` still answers for it."""
        tok = self.token(ref)
        tok.deleted = True
        tok.leak = None
        self._by_key.pop(tok.key, None)
        self._unname(tok)
        tok.touch()
        self.roster_version += 1

    def _unname(self, tok: SimToken) -> None:
        """Drop `tok` from the name index; another live token of that name takes its place."""
        if self._by_name.get(tok.name) is not tok:
            return
        del self._by_name[tok.name]
        for other in reversed(self._all.values()):
            if other is not tok and not other.deleted and other.name == tok.name:
                self._by_name[tok.name] = other
                return

    def _add(self, tok: SimToken) -> None:
        self.roster_version += 1
        self._all[tok.id] = tok
        self._by_key[tok.key] = tok
        self._by_name[tok.name] = tok

    def _any(self, ref: str) -> SimToken:
        tok = self._all.get(ref) or self._by_name.get(ref)
        if tok is None:
            raise KeyError(ref)
        return tok


def make_relay(
    *,
    tokens: int = 40,
    seed: int = 1,
    tz: str = "UTC",
    clock: Clock | None = None,
    idle_fraction: float = 0.15,
    traffic_tz: str | None = None,
    start: float | None = None,
    speed: float = 1.0,
    step: float = 60.0,
    admin_token: str = DEFAULT_ADMIN_TOKEN,
    event_log_size: int = 100_000,
    enforce_limits: bool = False,
) -> SimulatedRelay:
    """A relay with `tokens` seeded tokens. `tz` is where the relay resets its day/month windows,
    `traffic_tz` (default `tz`) where its clients keep their hours. `clock` is the base time
    (default the system clock), run at `speed` simulated seconds per base second from `start`
    (default the base clock's now). `step` is the traffic bucket in simulated seconds."""
    if tokens < 0:
        raise ValueError("tokens must be >= 0")
    if not 0.0 <= idle_fraction <= 1.0:
        raise ValueError("idle_fraction must be within [0, 1]")
    if step <= 0:
        raise ValueError("step must be > 0")
    sim_clock = SimClock(clock, speed=speed, start=start)
    local = LocalTime(tz, traffic_tz)
    minter = Minter(random.Random(f"{seed}:ids"))
    fleet = build_fleet(
        tokens,
        seed=seed,
        start=sim_clock.now(),
        step=step,
        local=local,
        idle_fraction=idle_fraction,
        minter=minter,
    )
    return SimulatedRelay(
        seed=seed,
        clock=sim_clock,
        local=local,
        step=step,
        tokens=fleet,
        minter=minter,
        admin_token=admin_token,
        event_log_size=event_log_size,
        enforce_limits=enforce_limits,
    )
