"""spend_anomaly and leak_suspected in the daemon: per-token histories fed by each poll cycle,
evaluated against the token's own baseline and the fleet's, every cycle.

Histories live in memory and are rebuilt at start from the stored hourly rollups (and the request
log's models and IPs, where the relay reports them). What a restart forgets is which past hours
were anomalous, so an attack that was alerting before a restart can re-enter the baseline; the
hours of a single restart are too few to matter against a 28-day baseline."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

from alerts.detection.anomaly import AnomalyDetector, anomaly_finding
from alerts.detection.fleet import FleetContext
from alerts.detection.leak import LeakDetector, leak_finding
from alerts.detection.series import TokenHistory
from alerts.model import Finding
from monitor.ingest import Cycle
from monitor.pacing import drain
from monitor.policy import PolicyBook
from monitor.settings import Rules
from monitor.tokens import TokenState

__all__ = ["Detection", "StoredHour", "StoredRequest"]

KEEP_FIRING_FOR = 3600.0  # an anomaly or leak alert stays up an hour after its condition clears
# A token with no usage for this long has nothing in any window the detectors compare (at most an
# hour, AnomalyDetector.span, plus a minute of rounding each side): it cannot fire and scores 0.
QUIET_AFTER = 3600.0 + 120.0
_LIVE = ("active", "unused")

Key = tuple[str, str]  # (provider, token id)


@dataclass(frozen=True, slots=True)
class StoredHour:
    provider: str
    token_id: str
    hour: float
    cost_usd: float
    requests: int


@dataclass(frozen=True, slots=True)
class StoredRequest:
    provider: str
    token_id: str
    ts: float
    model: str | None
    ip: str | None
    requests: int
    cost_usd: float


class Detection:
    def __init__(self, poll_intervals: Mapping[str, float]) -> None:
        self.histories: dict[Key, TokenHistory] = {}
        self.scores: dict[Key, float] = {}
        self._detectors: dict[str, tuple[AnomalyDetector, LeakDetector]] = {}
        self._fleets: dict[str, tuple[int, int, FleetContext]] = {}
        self.reconfigure(poll_intervals)

    def reconfigure(self, poll_intervals: Mapping[str, float]) -> None:
        for provider, interval in poll_intervals.items():
            anomaly = AnomalyDetector(poll_interval=interval)
            self._detectors[provider] = (anomaly, LeakDetector(anomaly=anomaly))

    def rebuild(
        self, states: Iterable[TokenState], hours: Iterable[StoredHour], requests: Iterable[StoredRequest]
    ) -> int:
        """Histories from what the store kept; returns how many tokens got one."""
        by_key = {(s.provider, s.token_id): s for s in states}
        for key, state in by_key.items():
            self.histories[key] = _new_history(state, state.first_seen)
        for h in hours:
            hist = self.histories.get((h.provider, h.token_id))
            if hist is not None:
                hist.add_hourly(h.hour, h.cost_usd, h.requests)
        for r in requests:
            hist = self.histories.get((r.provider, r.token_id))
            if hist is not None:
                hist.note(r.ts, r.model, r.ip, r.requests, r.cost_usd)
        return len(by_key)

    def observe(self, provider: str, cycle: Cycle) -> None:
        """Book what one poll found: spend deltas into the buckets, log rows' models and IPs. A
        model the fleet's context has not seen yet makes it stale: a rollout must be seen as one
        from its first poll, not an hour later."""
        cached = self._fleets.get(provider)
        if cached is not None and any(
            rec.model and rec.model not in cached[2].model_users for rec in cycle.fresh
        ):
            del self._fleets[provider]
        for token_id in cycle.retired:  # the id names a new token now: its past is not this one's
            self.histories.pop((provider, token_id), None)
            self.scores.pop((provider, token_id), None)
        for spend in cycle.spend:
            state = cycle.states[spend.token_id]
            self._history(provider, state, cycle.at).observe(spend.ts, spend.cost_usd, spend.requests)
        for rec in cycle.fresh:  # rows fetched again by an overlapping window are not new traffic
            if rec.token_id is None or rec.token_id not in cycle.states:
                continue
            self._history(provider, cycle.states[rec.token_id], cycle.at).note(
                rec.ts, rec.model, rec.ip, rec.requests, rec.cost_usd
            )

    def findings(
        self, provider: str, states: Iterable[TokenState], policies: PolicyBook, rules: Rules, *, now: float
    ) -> Iterator[Finding]:
        found: list[Finding] = []
        drain(self.evaluation(provider, states, policies, rules, now=now, into=found))
        return iter(found)

    def evaluation(
        self,
        provider: str,
        states: Iterable[TokenState],
        policies: PolicyBook,
        rules: Rules,
        *,
        now: float,
        into: list[Finding],
    ) -> Iterator[None]:
        """Evaluate every live token of the provider; also refreshes its anomaly score.

        Quiet tokens (`quiet`) are not evaluated: with nothing in the recent window and no wake-up
        to judge, neither rule can hold and the score is 0. In a big fleet most tokens are quiet
        at any time, so a poll costs what its active tokens cost (a test checks the equivalence)."""
        anomaly, leak = self._detectors.get(provider) or self._default(provider)
        live = [s for s in states if s.status in _LIVE]
        histories = [(s, self._history(provider, s, now)) for s in live]
        fleet = self._fleet(provider, [h for _, h in histories], now)
        wake_window = leak.params.wake_window
        active: list[tuple[TokenState, TokenHistory]] = []
        for state, hist in histories:
            yield None
            if quiet(hist, now, wake_window):
                key = (provider, state.token_id)
                if self.scores.get(key) != 0.0:
                    self.scores[key] = 0.0
            else:
                active.append((state, hist))
        projects: dict[tuple[str, str], list[TokenHistory]] = {}
        wanted = {(s.env, s.project) for s, _ in active if s.project}
        if wanted:
            for state, hist in histories:
                if (state.env, state.project) in wanted:
                    projects.setdefault((state.env, state.project), []).append(hist)
        for state, hist in active:
            yield None
            key = (provider, state.token_id)
            siblings = [h for h in projects.get((state.env, state.project), ()) if h is not hist]
            a = anomaly.evaluate(hist, now, rules.anomaly, fleet)
            lk = leak.evaluate(
                hist, now, policies.policy_for(state.name), state, fleet, rule=rules.leak, siblings=siblings
            )
            self.scores[key] = round(max(a.score, 0.0), 3)
            if a.fire or lk.fire:
                hist.mark_anomalous(now, a.window)  # keep the episode out of its own baseline
            found = anomaly_finding(
                a,
                provider=provider,
                token=state.series,
                rule=rules.anomaly,
                keep_firing_for=rules.anomaly.keep_firing_for,
            )
            if found is not None:
                into.append(found)
            found = leak_finding(
                lk, provider=provider, token=state.series, rule=rules.leak, keep_firing_for=KEEP_FIRING_FOR
            )
            if found is not None:
                into.append(found)

    def _fleet(self, provider: str, histories: list[TokenHistory], now: float) -> FleetContext:
        """The fleet's context moves slowly (typical rates, models adopted over days): built once
        an hour per provider, not every poll."""
        hour = int(now // 3600)
        cached = self._fleets.get(provider)
        if cached is None or cached[0] != hour or cached[1] != len(histories):
            cached = (hour, len(histories), FleetContext.build(histories, now))
            self._fleets[provider] = cached
        return cached[2]

    def forget(self, provider: str, keep: Iterable[str]) -> None:
        """Drop histories of tokens the provider no longer lists."""
        wanted = set(keep)
        for key in [k for k in self.histories if k[0] == provider and k[1] not in wanted]:
            del self.histories[key]
            self.scores.pop(key, None)

    def _history(self, provider: str, state: TokenState, now: float) -> TokenHistory:
        key = (provider, state.token_id)
        hist = self.histories.get(key)
        if hist is None:
            hist = self.histories[key] = _new_history(state, now)
        return hist

    def _default(self, provider: str) -> tuple[AnomalyDetector, LeakDetector]:
        self.reconfigure({provider: 60.0})
        return self._detectors[provider]


def quiet(hist: TokenHistory, now: float, wake_window: float) -> bool:
    """No usage within QUIET_AFTER, and no wake-up from dormancy still being judged (leak's
    dormant_wake looks back `wake_window` from the start of the current run)."""
    last = hist.last_active
    if last is None:
        return True
    if now - last <= QUIET_AFTER:
        return False
    return hist.run_start is None or now - hist.run_start > wake_window


def _new_history(state: TokenState, started_at: float) -> TokenHistory:
    # What the relay says about the time before keywatch watched: a token it calls unused has been
    # idle since its creation, so waking it after months reads as dormant from the first poll. A
    # token with no last-use time and no "unused" status tells nothing (a backtest's, say).
    idle_since = state.created_at if state.status == "unused" else state.last_used_at
    return TokenHistory(started_at, idle_since=idle_since)
