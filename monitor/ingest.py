"""One poll's result applied to what keywatch knew: new, changed and vanished tokens, and spend.

Pure: takes the known states and a PollResult, returns a Cycle describing every change. The
caller persists the Cycle in one transaction and only then adopts its states, so a crash between
the two repeats the cycle from the old marks instead of losing or double-counting spend.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from zoneinfo import ZoneInfo

from monitor.providers.base import Observation, PollResult
from monitor.spend import UsageDelta, UsageMark, mark_of, usage_delta
from monitor.tokens import TokenState

__all__ = ["Cycle", "Spend", "ingest"]

log = logging.getLogger("keywatch.ingest")


@dataclass(frozen=True, slots=True)
class Spend:
    token_id: str
    ts: float
    cost_usd: float
    requests: int
    gap: bool


@dataclass(slots=True)
class Cycle:
    provider: str
    at: float
    complete: bool
    states: dict[str, TokenState]  # every token after this cycle, by relay id
    new: list[str] = field(default_factory=list)  # token ids first seen now
    changed: list[str] = field(default_factory=list)  # token ids whose stored row must be updated
    spend: list[Spend] = field(default_factory=list)
    vanished: list[str] = field(default_factory=list)
    notes: list[tuple[str, str]] = field(default_factory=list)  # (token, reason) worth a log line
    seen: int = 0


def ingest(
    known: Mapping[str, TokenState],
    result: PollResult,
    *,
    provider: str,
    now: float,
    tz: ZoneInfo,
    watching_since: float | None,
) -> Cycle:
    """`watching_since`: when this provider's first complete poll was stored (None: this is it).
    Tokens that appear after it are new tokens, and their spend so far is new spend."""
    states = dict(known)
    cycle = Cycle(provider, now, result.complete, states, seen=len(result.observations))
    for obs in result.observations:
        before = states.get(obs.token_id)
        if before is not None and before.observation is obs:
            continue  # the adapter saw exactly what it saw last time: nothing to do
        after, spend = _apply(before, obs, provider, now, tz, watching_since is not None)
        if spend.anomaly:
            cycle.notes.append((obs.name, spend.anomaly))
        if spend.cost_usd or spend.requests:
            cycle.spend.append(Spend(obs.token_id, now, spend.cost_usd, spend.requests, spend.gap))
        if before is None:
            cycle.new.append(obs.token_id)
        elif after == replace(before, last_seen=after.last_seen):
            # Unchanged: keep the same object, so caches keyed on it stay valid.
            states[obs.token_id] = replace(before, observation=obs) if before.observation is None else before
            continue
        else:
            cycle.changed.append(obs.token_id)
        states[obs.token_id] = after
    if result.complete:
        # Only a complete list proves a token is gone; a partial one may just have missed it.
        present = {obs.token_id for obs in result.observations}
        skipped = {s.token for s in result.skipped}
        for token_id, state in known.items():
            if token_id in present or state.missing_since is not None or state.name in skipped:
                continue
            states[token_id] = replace(state, status="deleted", missing_since=now)
            cycle.vanished.append(token_id)
            cycle.changed.append(token_id)
    return cycle


def _apply(
    before: TokenState | None, obs: Observation, provider: str, now: float, tz: ZoneInfo, watching: bool
) -> tuple[TokenState, UsageDelta]:
    has_usage = obs.today_usd is not None or obs.month_usd is not None or obs.total_usd is not None
    prev_mark = before.mark if before else None
    base = before or TokenState(
        pk=None,
        provider=provider,
        token_id=obs.token_id,
        name=obs.name,
        status=obs.status,
        first_seen=now,
        last_seen=now,
    )
    spend_total, requests_total = base.spend_total_usd, base.requests_total
    spend = UsageDelta(0.0, 0)
    mark = prev_mark  # the relay said nothing about usage: keep the old baseline
    if has_usage and prev_mark is None:
        if before is None and watching:
            # A token created since the last poll: all it has spent is new spend.
            spend = usage_delta(None, obs, now, tz, is_new=True)
            spend_total, requests_total = spend.cost_usd, spend.requests
        else:
            # First figures of a token keywatch did not watch before: a starting point, not spend.
            spend_total, requests_total = _start_figure(obs), obs.today_requests or 0
        mark = mark_of(obs, now)
    elif has_usage and prev_mark is not None:
        spend = usage_delta(prev_mark, obs, now, tz, is_new=False)
        spend_total, requests_total = spend_total + spend.cost_usd, requests_total + spend.requests
        if not _same_figures(prev_mark, obs):
            mark = mark_of(obs, now)  # an idle token keeps its mark: nothing to write
    after = replace(
        base,
        name=obs.name,
        status=obs.status,
        last_seen=now,
        created_at=obs.created_at,
        last_used_at=obs.last_used_at,
        expires_at=obs.expires_at,
        key_sha256=obs.key_sha256 or base.key_sha256,
        limits=obs.limits,
        ip_whitelist=obs.ip_whitelist,
        missing_since=None,
        spend_total_usd=round(spend_total, 9),
        requests_total=requests_total,
        mark=mark,
        usage_known=base.usage_known or has_usage,
        observation=obs,
    )
    return after, spend


def _same_figures(mark: UsageMark, obs: Observation) -> bool:
    return (mark.today_usd, mark.month_usd, mark.today_requests, mark.total_usd) == (
        obs.today_usd,
        obs.month_usd,
        obs.today_requests,
        obs.total_usd,
    )


def _start_figure(obs: Observation) -> float:
    for value in (obs.total_usd, obs.month_usd, obs.today_usd):
        if value is not None:
            return value
    return 0.0
