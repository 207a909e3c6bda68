"""One poll's result applied to what keywatch knew: new, changed and vanished tokens, and spend.

Pure: takes the known states and a PollResult, returns a Cycle describing every change. The
caller persists the Cycle in one transaction and only then adopts its states, so a crash between
the two repeats the cycle from the old marks instead of losing or double-counting spend.

Request-log rows travel with the Cycle (`requests`). Which of them are new cannot be known here:
poll windows overlap, and after a restart the first window re-reads rows stored before. So the
store decides, inside the cycle's transaction, and hands the new rows to `apply_logged`, which
adds their requests to every token and their cost to the tokens whose spend comes from logs
(`Observation.spend_from_logs`: one-api unlimited tokens, OpenAI keys). A row is counted exactly
once however often it is fetched, and a crash before the commit leaves it uncounted and unstored.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from zoneinfo import ZoneInfo

from monitor.providers.base import Observation, PollResult, RequestRecord
from monitor.spend import UsageDelta, UsageMark, mark_of, usage_delta
from monitor.tokens import TokenState

__all__ = ["Cycle", "Spend", "apply_logged", "ingest"]

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
    requests: list[RequestRecord] = field(default_factory=list)  # log rows, token_id resolved
    log_spend: set[str] = field(default_factory=set)  # token ids whose cost comes from log rows
    count_logged: bool = True  # False before watching began: rows then are a baseline, not spend
    unresolved: int = 0  # log rows whose token could not be told (unknown or ambiguous name)
    fresh: list[RequestRecord] = field(default_factory=list)  # the log rows the store had not seen
    committed: Callable[[], None] | None = None  # the adapter's hook, for the store to call


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
    cycle.committed = result.committed
    for obs in result.observations:
        before = states.get(obs.token_id)
        if before is not None and (before.observation is obs or before.observation == obs):
            continue  # the relay shows exactly what it showed last time: nothing to do
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
    if result.requests:
        cycle.log_spend = {o.token_id for o in result.observations if o.spend_from_logs}
        cycle.requests, cycle.unresolved = _resolve(result.requests, states)
    cycle.count_logged = watching_since is not None
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


def apply_logged(cycle: Cycle, fresh: Sequence[RequestRecord]) -> None:
    """Fold the log rows the store had not seen before into the cycle: requests for every token,
    cost for `log_spend` tokens (the others' cost comes from their counters). Called by the store
    inside the cycle's transaction. Before watching began, rows are a baseline and count nothing.
    (A log-spend token whose list entry was skipped this cycle has its rows stored, not costed.)"""
    cycle.fresh = list(fresh)
    if not cycle.count_logged or not fresh:
        return
    totals: dict[str, list[float]] = {}
    for rec in fresh:
        if rec.token_id is None or rec.token_id not in cycle.states:
            continue
        acc = totals.setdefault(rec.token_id, [0.0, 0])
        if rec.token_id in cycle.log_spend:
            acc[0] += rec.cost_usd
        acc[1] += rec.requests
    where = {s.token_id: i for i, s in enumerate(cycle.spend)}
    changed = set(cycle.changed)  # new tokens too: their row was inserted before the logs were read
    for token_id, (cost, requests) in totals.items():
        cost = round(cost, 9)
        state = cycle.states[token_id]
        cycle.states[token_id] = replace(
            state,
            spend_total_usd=round(state.spend_total_usd + cost, 9),
            requests_total=state.requests_total + int(requests),
            usage_known=True,
        )
        if token_id in where:
            old = cycle.spend[where[token_id]]
            cycle.spend[where[token_id]] = Spend(
                token_id, old.ts, round(old.cost_usd + cost, 9), old.requests + int(requests), old.gap
            )
        else:
            cycle.spend.append(Spend(token_id, cycle.at, cost, int(requests), False))
        if token_id not in changed:
            cycle.changed.append(token_id)


def _resolve(
    records: Sequence[RequestRecord], states: Mapping[str, TokenState]
) -> tuple[list[RequestRecord], int]:
    """Records with the token id filled in: relays that log only names (one-api) are matched on
    the token's current name when exactly one listed token has it."""
    if not records:
        return [], 0
    by_name: dict[str, str] | None = None
    out: list[RequestRecord] = []
    unresolved = 0
    for rec in records:
        if rec.token_id is not None and rec.token_id in states:
            out.append(rec)
            continue
        if by_name is None:
            counts = Counter(s.name for s in states.values() if s.missing_since is None)
            by_name = {
                s.name: tid for tid, s in states.items() if s.missing_since is None and counts[s.name] == 1
            }
        token_id = by_name.get(rec.token_name)
        if token_id is None:
            unresolved += 1
            continue
        out.append(replace(rec, token_id=token_id))
    return out, unresolved


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
    # Built directly rather than with dataclasses.replace: this runs for every changed token
    # of every cycle, and replace() costs twice as much.
    after = TokenState(
        pk=base.pk,
        provider=base.provider,
        token_id=base.token_id,
        name=obs.name,
        status=obs.status,
        first_seen=base.first_seen,
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
        usage_known=base.usage_known or has_usage or obs.spend_from_logs,
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
