"""leak_suspected: has this token's key escaped? Several independent signals must agree.

A firing leak_suspected leads to quarantine, so a false fire disables someone's production key.
The rule therefore needs one *primary* signal — the token spends far above its own pattern
(`spike`: >= 5x and >= $0.5/h above it, or the same in requests for cheap-model abuse), or a
dormant token woke up (`dormant_wake`: first use after >= 14 quiet days, or since creation) —
AND at least one *corroborating* signal about who is using it, or how:
- `new_ip`: client IPs from networks the token never used (another /16, or /48) carry a real
  share of the traffic since the onset — on a spike, at least half of its excess (a stranger's
  traffic *is* the excess; a launch that adds servers next to the old ones is not). Only after
  three days of watching, and for tokens whose clients are a small, stable set (servers): a token
  used from many or changing IPs (browsers, mobile apps, rotating egress) gives no evidence by a
  new IP;
- `ip_not_whitelisted`: traffic from outside the token's `ip_whitelist` (CIDR-aware);
- `many_ips`: many distinct IPs since the onset — 3x the token's usual pool (at least 8), or for
  a token without IP history, 2x what the fleet's typical token uses in a day (at least 4);
- `new_model`: models the token never used carry that same share of the spend — unless the fleet
  uses the model anyway or is taking it up right now (`FleetContext.is_fleet_model`); again only
  for tokens that do not add models every few days. `model_breadth` is the idea for tokens
  without model history (never used before): at least 3 unusual models, more than the fleet's
  typical token uses;
- `model_not_allowed`: models outside the token's `allowed_models`;
- `over_request_limit`: more requests in 24 h than the token's own daily request limit;
- `off_hours`: use outside the policy's `business_hours`, or (without one) in a quiet slot of the
  token's own weekly profile — counted only when the traffic is not entirely from the token's
  established IPs and models (the same servers running the same models at night are a batch
  job), not on a month's last afternoon and evening (month-end batches), and not when the whole
  project moves with it. Where the relay reports no IPs, it counts;
- what the money alone says (alerts/detection/spend_evidence.py, for relays that report only spend and
  request counts): `price_shift` (money per request far from the token's own: another model),
  `wake_volume` (a dormant token waking far above its old rate or the fleet's), `drain` (a surge
  that outlasts benign bursts), `extreme_surge` (an hour far beyond anything the token does) —
  these two not counted when the relay names clients and all traffic comes from the token's usual
  IPs and models —, `over_spend_limit`, and `siblings_flat` (the token surges 20x
  while its project mates stay flat; `siblings_move` — they move with it — is context, not
  evidence).
So a x8 spike from the usual IPs and models, a launch at x2.2, a month-end batch, a project-wide
release and a fleet-wide model change do not fire; no signal fires alone.

The spike compares the last 15 minutes (never less than a poll or the data's resolution) with the
anomaly detector's baseline for them (alerts/detection/anomaly.py), so "expected" means the same in both
rules: leak is meant to act within a poll or two, and it can afford a noisier window because it
needs a second signal. Corroborating signals are only computed when a primary signal holds: for
the quiet majority of tokens a poll costs a window sum and a few comparisons.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Final, Protocol

from alerts.detection.anomaly import AnomalyDetector, Tier
from alerts.detection.fleet import FleetContext
from alerts.detection.series import HOUR, Ident, TokenHistory, minute_of
from alerts.detection.spend_evidence import (
    SpendParams,
    drain,
    extreme_surge,
    is_month_end,
    price_shift,
    quiet_slot,
    spend_limit,
    wake_volume,
)
from alerts.model import Finding, Signal
from monitor.config import BusinessHours, parse_business_hours
from monitor.model import TokenLimits
from monitor.money import usd
from monitor.settings import LeakRule, TokenPolicy

__all__ = [
    "PRIMARY",
    "LeakDetector",
    "LeakParams",
    "LeakResult",
    "Signal",
    "TokenInfo",
    "TokenMeta",
    "leak_finding",
]

DAY: Final = 24 * HOUR
PRIMARY: Final = frozenset({"spike", "dormant_wake"})


class TokenMeta(Protocol):
    """What the leak rule reads about a token from the relay (monitor.tokens.TokenState fits)."""

    @property
    def status(self) -> str: ...
    @property
    def created_at(self) -> float | None: ...
    @property
    def limits(self) -> TokenLimits: ...
    @property
    def ip_whitelist(self) -> tuple[str, ...]: ...


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """A plain TokenMeta, for backtests and tests."""

    status: str = "active"
    created_at: float | None = None
    limits: TokenLimits = field(default_factory=TokenLimits)
    ip_whitelist: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class LeakParams:
    window: float = 900.0  # seconds of recent use compared for a spike (see AnomalyDetector.span)
    spike_ratio: float = 5.0  # primary: x >= this x expected ...
    spike_min_usd_per_hour: float = 0.5  # ... and at least this much above it
    spike_min_requests_per_hour: float = 300.0  # request spikes (cheap models) need this many extra
    min_expected_usd_per_hour: float = 0.01  # never divide by less (zero-heavy tokens)
    dormant_after: float = 14 * DAY  # quiet this long, then active: dormant_wake ...
    wake_window: float = DAY  # ... for this long after the first use
    episode_max_hours: int = 48  # how far back the onset of a spike is searched
    new_share_min: float = 0.2  # new IPs/models must carry this share of the episode's traffic
    stable_ip_pool_max: int = 16  # more IPs than this in the week before: IP novelty is no evidence
    stable_new_ips_max: int = 3  # more new IPs than this in that week: the same
    stable_new_models_max: int = 2  # more new models than this in the 2 weeks before: the same
    many_ips_min: int = 8
    many_ips_factor: float = 3.0
    breadth_min_ips: int = 4
    breadth_min_models: int = 3
    ip_settle: float = 3 * DAY  # watched this long before a new IP is news
    sibling_move_ratio: float = 2.0  # a project mate at this many times its expected rate moves too
    sibling_ratio: float = 20.0  # a surge this far beyond its expected, project mates flat: evidence


@dataclass(frozen=True, slots=True)
class LeakResult:
    signals: tuple[Signal, ...]
    fire: bool
    spend_since_onset: float  # $ since onset_ts
    onset_ts: float | None  # the episode's start: the spike's first hour, or the first use after dormancy
    top_models: tuple[str, ...]  # used since the onset, by spend
    top_ips: tuple[str, ...]  # used since the onset, by requests

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.signals)


_QUIET = LeakResult((), False, 0.0, None, (), ())


@dataclass(frozen=True, slots=True)
class _Recent:
    """The recent window, as rates per hour."""

    spend: float
    expected: float
    requests: float
    tier: Tier
    active: bool
    window: float  # seconds


class LeakDetector:
    def __init__(
        self,
        params: LeakParams | None = None,
        *,
        anomaly: AnomalyDetector | None = None,
        spend: SpendParams | None = None,
    ) -> None:
        self.params = params or LeakParams()
        self.anomaly = anomaly or AnomalyDetector()
        self.spend = spend or SpendParams()

    def evaluate(
        self,
        state: TokenHistory,
        now: float,
        policy: TokenPolicy | None,
        token_meta: TokenMeta | None,
        fleet: FleetContext,
        *,
        rule: LeakRule | None = None,
        siblings: Sequence[TokenHistory] = (),
    ) -> LeakResult:
        """`siblings`: the histories of the token's project mates (the same env and project in
        their names), whose movement tells a project-wide change from one key's."""
        if rule is not None and not rule.enabled:
            return _QUIET
        w = self.anomaly.span(state, self.params.window)
        cost, requests = state.window(now, w)
        expected, _, tier = self.anomaly.expectation(state, now, w, fleet)
        recent = _Recent(cost * HOUR / w, expected, requests * HOUR / w, tier, requests > 0 or cost > 0, w)
        primary: list[Signal] = []
        since: float | None = None
        last_minute = minute_of(now)
        first_hour = last_minute // 60
        spike = self._spike(
            state, recent, first_hour, lambda: self._off_hours(state, now, policy, recent) is not None
        )
        if spike is not None:
            primary.append(spike)
            # the episode starts no later than the hour of the window's first minute
            window_start = (last_minute - round(w / 60) + 1) // 60
            first_hour = self._onset_hour(state, recent, window_start)
            since = first_hour * HOUR
        woke = state.run_start
        wake = self._dormant_wake(state, now, token_meta, woke) if woke is not None else None
        if wake is not None and woke is not None:
            primary.append(wake)
            since = woke - 1e-6 if since is None else min(since, woke - 1e-6)
            first_hour = min(first_hour, minute_of(woke) // 60)
        if since is None:
            return _QUIET
        return self._corroborate(
            state, now, policy, token_meta, fleet, recent, primary, since, first_hour, siblings
        )

    # --- primary signals ------------------------------------------------------------------------

    def _spike(self, state: TokenHistory, r: _Recent, h: int, off_hours: Callable[[], bool]) -> Signal | None:
        """`off_hours`: asked (only when it matters) whether now is the token's off-hours."""
        if r.tier == "new":
            return None  # "far above its own pattern" needs a pattern (new tokens: spend_anomaly, budgets)
        p = self.params
        st = state.stats(h)
        # Never below the token's mean; for a zero-heavy token, never below its usual burst packed
        # into the window either — unless this hour is predictably idle (an office token at night),
        # where any use is unusual.
        idle_hour = self.anomaly.baseline(state, h).active_share == 0.0
        usual = st.active_level * HOUR / r.window if st.zero_share >= 0.5 and not idle_hour else 0.0
        base = max(r.expected, st.mean_cost, usual, p.min_expected_usd_per_hour)
        if r.spend - r.expected >= p.spike_min_usd_per_hour:
            if r.spend < p.spike_ratio * base and idle_hour and off_hours():
                # In its off-hours (its policy's, or its own weekly profile's) even its mean over
                # the day is no yardstick: any real use there is unusual.
                base = max(r.expected, p.min_expected_usd_per_hour)
            if r.spend >= p.spike_ratio * base:
                return Signal("spike", f"{usd(r.spend)}/h, {r.spend / base:,.0f}x the usual {usd(base)}/h")
        if not state.has_requests:
            return None
        # Cheap-model abuse moves requests more than dollars: expect requests at the token's own
        # requests-per-dollar, so the seasonal shape of the spend baseline carries over.
        rate = r.requests
        per_usd = st.mean_requests / st.mean_cost if st.mean_cost > 0 else 0.0
        expected = max(base * per_usd if per_usd else st.mean_requests, 1.0)
        if rate >= p.spike_ratio * expected and rate - expected >= p.spike_min_requests_per_hour:
            return Signal(
                "spike", f"{rate:,.0f} requests/h, {rate / expected:,.0f}x the expected {expected:,.0f}"
            )
        return None

    def _onset_hour(self, state: TokenHistory, r: _Recent, h: int) -> int:
        """Walk back over the hours that ran at a similar elevated level: the episode's first hour."""
        p = self.params
        level = max(0.5 * r.spend, p.spike_ratio * max(state.stats(h).mean_cost, p.min_expected_usd_per_hour))
        first = h
        for k in range(h - 1, h - p.episode_max_hours, -1):
            if state.cost_at(k) < level:
                break
            first = k
        return first

    def _dormant_wake(
        self, state: TokenHistory, now: float, meta: TokenMeta | None, rs: float
    ) -> Signal | None:
        """`rs`: when the current run of activity began (TokenHistory.run_start)."""
        p = self.params
        if now - rs > p.wake_window:
            return None
        prev = state.prev_active
        if prev is None:
            prev = state.idle_since
        if prev is None and meta is not None and meta.status == "unused" and meta.created_at is not None:
            prev = meta.created_at  # the relay still calls it unused: never used since creation
        if prev is None:
            prev = state.started_at  # at least: quiet all the time keywatch watched it
        quiet = rs - prev
        if quiet < p.dormant_after:
            return None
        return Signal("dormant_wake", f"first use in {quiet / DAY:,.0f} days")

    # --- corroborating signals ------------------------------------------------------------------

    def _corroborate(
        self,
        state: TokenHistory,
        now: float,
        policy: TokenPolicy | None,
        meta: TokenMeta | None,
        fleet: FleetContext,
        recent: _Recent,
        primary: list[Signal],
        since: float,
        first_hour: int,
        siblings: Sequence[TokenHistory],
    ) -> LeakResult:
        head = max(state.head, first_hour)
        spike = primary[0].name == "spike"
        ep = _Episode(
            since=since,
            head=head,
            first_hour=first_hour,
            cost=sum(state.cost_at(k) for k in range(first_hour, head + 1)),
            requests=sum(state.requests_at(k) for k in range(first_hour, head + 1)),
            watched=since - state.started_at >= DAY,
            # New clients or models must carry a real share of the traffic — and, on a spike, at
            # least half of its excess: a launch that adds servers while traffic doubles and
            # bursts is not a stranger draining the key (the stranger's traffic *is* the excess).
            need_share=max(
                self.params.new_share_min,
                0.5 * (1.0 - recent.expected / recent.spend) if spike and recent.spend > 0 else 0.0,
            ),
        )
        recent_ips = {k: r for k, r in state.ips.items() if r[1] > since}
        recent_models = {k: r for k, r in state.models.items() if r[1] > since}
        new_ips = [r for r in recent_ips.values() if r[0] > since]
        new_models = [r for k, r in recent_models.items() if r[0] > since and not fleet.is_fleet_model(k)]
        signals = [
            *primary,
            *self._ip_signals(state, meta, fleet, ep, recent_ips),
            *self._model_signals(state, meta, fleet, ep, recent_models),
            *self._limit_signals(state, meta, ep),
        ]
        project = self._siblings(state, now, siblings, fleet)
        together = project is not None and project.name == "siblings_move"
        if project is not None:
            signals.append(project)
        # Where the relay names clients, traffic entirely from the token's usual servers and models
        # is its owners' batch, however long, big or late it runs (a thief brings their own).
        familiar = bool(recent_ips) and not new_ips and not new_models
        for s in self._spend_signals(state, now, meta, fleet, recent, primary, ep):
            # A project that moves as one (a launch, a migration) is its owners' doing, not a thief's:
            # how long or when it runs is no evidence then; its price and limits still are.
            sized = s.name in ("drain", "extreme_surge")
            counted = s.counted and not (sized and (together or familiar))
            detail = s.detail + (" from its usual IPs and models" if sized and familiar else "")
            signals.append(Signal(s.name, detail, counted))
        off = self._off_hours(state, now, policy, recent)
        if off is not None:
            month_end = is_month_end(now)
            detail = off + (" from its usual IPs and models" if familiar else "")
            detail += " (a month end: batch jobs are expected)" if month_end and not familiar else ""
            detail += " (its whole project moves with it)" if together and not familiar else ""
            signals.append(Signal("off_hours", detail, counted=not (familiar or month_end or together)))
        corroborating = sum(1 for s in signals if s.counted and s.name not in PRIMARY)
        top_models = tuple(sorted(recent_models, key=lambda k: -recent_models[k][3])[:5])
        top_ips = tuple(sorted(recent_ips, key=lambda k: -recent_ips[k][2])[:5])
        onset = max(since, state.started_at)
        return LeakResult(tuple(signals), corroborating >= 1, ep.cost, onset, top_models, top_ips)

    def _siblings(
        self, token: TokenHistory, now: float, siblings: Sequence[TokenHistory], fleet: FleetContext
    ) -> Signal | None:
        """Whether the token's project mates move with it (`siblings_move`: context, not evidence)
        or stay flat while it surges far beyond them (`siblings_flat`: evidence, from
        `sibling_ratio` times the token's expected rate)."""
        p = self.params
        ratios = []
        for sib in siblings:
            w = self.anomaly.span(sib, self.params.window)
            cost, _ = sib.window(now, w)
            expected, _, tier = self.anomaly.expectation(sib, now, w, fleet)
            if tier != "new" and expected > 0:
                ratios.append((cost * HOUR / w) / expected)
        if not ratios:
            return None
        moving = sum(1 for r in ratios if r >= p.sibling_move_ratio)
        if 2 * moving >= len(ratios):
            return Signal("siblings_move", f"{moving} of its {len(ratios)} project mates rise with it", False)
        if moving:
            return None
        # The surge over the last hour without its busiest quarter (the anomaly score's x): one
        # wild poll of an over-dispersed token is not a drain.
        x, _ = self.anomaly.observed(token, now, float(HOUR))
        expected, _, _ = self.anomaly.expectation(token, now, float(HOUR), fleet)
        surge = x / max(expected, p.min_expected_usd_per_hour)
        counted = surge >= p.sibling_ratio
        return Signal(
            "siblings_flat",
            f"{surge:,.0f}x its expected rate while its {len(ratios)} project mates stay flat",
            counted,
        )

    def _off_hours(
        self, state: TokenHistory, now: float, policy: TokenPolicy | None, recent: _Recent
    ) -> str | None:
        """Why now is off-hours for the token: its policy's business_hours, or (without one) its
        own weekly profile (alerts/detection/spend_evidence.py)."""
        if not recent.active:
            return None
        hours = policy.business_hours if policy is not None else None
        if hours:
            return None if _business_hours(hours).contains(now) else f"outside {hours}"
        return quiet_slot(state, minute_of(now) // 60, recent.spend, self.spend)

    def _spend_signals(
        self,
        state: TokenHistory,
        now: float,
        meta: TokenMeta | None,
        fleet: FleetContext,
        recent: _Recent,
        primary: list[Signal],
        ep: _Episode,
    ) -> list[Signal]:
        """What the money alone says (alerts/detection/spend_evidence.py): the price per request, the size of
        a dormant token's wake, the token's own spend limit."""
        out: list[Signal] = []
        # The price over the last hour: one poll's few lines vary too much to say a model changed.
        span = max(recent.window, float(HOUR))
        cost, requests = state.window(now, span)
        shift = price_shift(
            state, cost, requests, span, ep.first_hour, self.spend, fleet_drift=fleet.price_drift
        )
        if shift is not None:
            out.append(shift)
        if any(s.name == "dormant_wake" for s in primary) and state.run_start is not None:
            woke = state.run_start
            awake = max((now - woke) / HOUR, recent.window / HOUR)
            wake = wake_volume(state, woke, ep.cost, awake, fleet.typical_rate, self.spend)
            if wake is not None:
                out.append(wake)
        if any(s.name == "spike" for s in primary):
            sustained = drain(state, ep.first_hour, now, self.spend)
            if sustained is not None:
                out.append(sustained)
            x, _ = self.anomaly.observed(state, now, float(HOUR))
            hour_expected, _, _ = self.anomaly.expectation(state, now, float(HOUR), fleet)
            surge = extreme_surge(state, x, hour_expected, ep.first_hour, self.spend)
            if surge is not None:
                # A month-end batch is big by nature: shown, not counted, on a month's last evening.
                out.append(Signal(surge.name, surge.detail, counted=not is_month_end(now)))
        limit = spend_limit(state, meta.limits.daily_usd if meta is not None else None, ep.head)
        if limit is not None:
            out.append(limit)
        return out

    def _ip_signals(
        self,
        state: TokenHistory,
        meta: TokenMeta | None,
        fleet: FleetContext,
        ep: _Episode,
        recent: dict[str, Ident],
    ) -> list[Signal]:
        p, since = self.params, ep.since
        out: list[Signal] = []
        new_keys = [k for k, r in recent.items() if r[0] > since]
        known_keys = [k for k, r in state.ips.items() if r[0] <= since]
        known = [state.ips[k] for k in known_keys]
        pool = [r for r in known if r[1] >= since - 7 * DAY]  # the clients of the week before
        churn = sum(1 for r in known if r[0] > max(since - 7 * DAY, state.started_at + DAY))
        # IP novelty needs a settled pool (a sparse token's few sessions may not have shown all
        # its servers yet), and only strangers count: new servers next to the known ones (the
        # same /16, or /48) are the owner adding capacity, as in a launch.
        settled = since - state.started_at >= p.ip_settle
        home = {_network(k) for k in known_keys}
        strangers = [recent[k] for k in new_keys if _network(k) not in home]
        if settled and known and new_keys:
            if len(pool) > p.stable_ip_pool_max or churn > p.stable_new_ips_max:
                out.append(Signal("new_ip", f"{len(new_keys)} new IPs, but this token's IPs change", False))
            elif strangers and (s := ep.share(state, strangers)) >= ep.need_share:
                out.append(
                    Signal(
                        "new_ip", f"{len(strangers)} new IPs from other networks carry {s:.0%} of the traffic"
                    )
                )
        if meta is not None and meta.ip_whitelist and recent:
            allowed = _whitelist(tuple(meta.ip_whitelist))
            outside = sorted(ip for ip in recent if allowed and _outside(ip, allowed))
            if outside:
                detail = f"{len(outside)} IPs outside the whitelist, e.g. {outside[0]}"
                out.append(Signal("ip_not_whitelisted", detail))
        if ep.watched and known:
            need = max(p.many_ips_min, p.many_ips_factor * len(pool))
        else:
            need = max(p.breadth_min_ips, 2 * fleet.ips_typical)
        if len(recent) >= need:
            out.append(Signal("many_ips", f"{len(recent)} distinct IPs since the onset"))
        return out

    def _model_signals(
        self,
        state: TokenHistory,
        meta: TokenMeta | None,
        fleet: FleetContext,
        ep: _Episode,
        recent: dict[str, Ident],
    ) -> list[Signal]:
        p, since = self.params, ep.since
        out: list[Signal] = []
        unusual = {k: r for k, r in recent.items() if not fleet.is_fleet_model(k)}
        new = {k: r for k, r in unusual.items() if r[0] > since}
        if ep.watched and any(r[0] <= since for r in state.models.values()):
            added_from = max(since - 14 * DAY, state.started_at + DAY)
            added = sum(
                1
                for k, r in state.models.items()
                if added_from < r[0] <= since and not fleet.is_fleet_model(k)
            )
            if new and added > p.stable_new_models_max:
                out.append(Signal("new_model", "new models, but this token often adds some", False))
            elif new and (s := ep.share(state, new.values())) >= ep.need_share:
                out.append(
                    Signal(
                        "new_model", f"never used before: {', '.join(sorted(new))} ({s:.0%} of the traffic)"
                    )
                )
        elif len(unusual) >= max(p.breadth_min_models, fleet.models_typical + 1):
            out.append(
                Signal(
                    "model_breadth", f"{len(unusual)} models since the onset: {', '.join(sorted(unusual))}"
                )
            )
        if meta is not None and meta.limits.allowed_models:
            banned = sorted(set(recent) - set(meta.limits.allowed_models))
            if banned:
                out.append(Signal("model_not_allowed", f"not in allowed_models: {', '.join(banned)}"))
        return out

    def _limit_signals(self, state: TokenHistory, meta: TokenMeta | None, ep: _Episode) -> list[Signal]:
        limit = meta.limits.daily_requests if meta is not None else None
        if not limit:
            return []
        day = sum(state.requests_at(k) for k in range(ep.head - 23, ep.head + 1))
        if day <= limit:
            return []
        return [Signal("over_request_limit", f"{day:,.0f} requests in 24 h, limit {limit:,}")]


@dataclass(frozen=True, slots=True)
class _Episode:
    """The traffic since the onset, which new clients and models are measured against."""

    since: float  # identities first seen after this are new
    head: int  # the newest hour
    first_hour: int  # the episode's first hour: the token's usual behaviour is from before it
    cost: float  # $ since the onset hour
    requests: float
    watched: bool  # keywatch watched the token for a day before the onset: "usual" means something
    need_share: float  # the share of the episode's traffic new identities must carry

    def share(self, state: TokenHistory, recs: Iterable[Ident]) -> float:
        recs = list(recs)
        if state.has_requests and self.requests > 0:
            return sum(r[2] for r in recs) / self.requests
        return sum(r[3] for r in recs) / self.cost if self.cost > 0 else 0.0


def leak_finding(
    result: LeakResult, *, provider: str, token: str, rule: LeakRule, keep_firing_for: float = 0.0
) -> Finding | None:
    """The Finding for the alert stages, or None when the signals do not agree."""
    if not result.fire:
        return None
    names = ", ".join(s.name for s in result.signals if s.counted)
    return Finding(
        rule="leak_suspected",
        labels={"provider": provider, "token": token},
        severity="security",
        value=float(sum(1 for s in result.signals if s.counted)),
        summary=f"key may have leaked: {names}; {usd(result.spend_since_onset)} since the onset",
        annotations={
            "signals": "; ".join(f"{s.name}: {s.detail}" for s in result.signals),
            "spend_since_onset_usd": f"{result.spend_since_onset:.2f}",
            "onset_ts": f"{result.onset_ts:.0f}" if result.onset_ts is not None else "",
            "top_models": ", ".join(result.top_models),
            "top_ips": ", ".join(result.top_ips),
        },
        for_polls=rule.for_polls,
        keep_firing_for=keep_firing_for,
    )


_Net = ipaddress.IPv4Network | ipaddress.IPv6Network


@lru_cache(maxsize=4096)
def _whitelist(entries: tuple[str, ...]) -> tuple[_Net, ...]:
    nets: list[_Net] = []
    for e in entries:
        try:
            nets.append(ipaddress.ip_network(e.strip(), strict=False))
        except ValueError:
            continue  # the audit reports malformed whitelists; here they simply match nothing
    return tuple(nets)


@lru_cache(maxsize=65_536)
def _network(ip: str) -> str:
    """The /16 (IPv4) or /48 (IPv6) an address lies in: where an owner's servers usually are."""
    try:
        addr = ipaddress.ip_address(ip.strip())
    except ValueError:
        return ip  # not an address: only itself
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    prefix = 16 if addr.version == 4 else 48
    return str(ipaddress.ip_network(f"{addr}/{prefix}", strict=False))


def _outside(ip: str, nets: tuple[_Net, ...]) -> bool:
    try:
        addr = ipaddress.ip_address(ip.strip())
    except ValueError:
        return False  # not an address (a relay's placeholder): no evidence either way
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return not any(addr in n for n in nets)


_business_hours: Callable[[str], BusinessHours] = lru_cache(maxsize=256)(parse_business_hours)
