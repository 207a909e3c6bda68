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
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from zoneinfo import ZoneInfo

from monitor.model import Observation, PollResult, RequestRecord
from monitor.pacing import drain
from monitor.spend import UsageDelta, UsageMark, advance
from monitor.tokens import TokenState

__all__ = ["REUSED_NOTE", "Cycle", "Spend", "apply_logged", "ingest", "ingestion"]

# How far past the present (the relay's clock where it is believed, monitor.periodclock) a
# request-log row may be dated and still be stored: a row days ahead is broken or hostile.
FUTURE_SLACK = 3600.0

log = logging.getLogger("keywatch.ingest")

REUSED_NOTE = "the relay gave its id to a new token: kept as deleted, the id starts afresh"


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
    # Relay ids that now name a different token (new name and creation time) -> the key the old
    # token is kept under, deleted, with its history (`<id>~<pk>`); the id starts afresh as new.
    retired: dict[str, str] = field(default_factory=dict)
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
    period_now: float | None = None,
    relay_clock: bool = False,
) -> Cycle:
    """`watching_since`: when this provider's first complete poll was stored (None: this is it).
    Tokens that appear after it are new tokens, and their spend so far is new spend.
    `period_now`: the time usage periods are placed on (`monitor.periodclock`), default `now`;
    `relay_clock`: it is the relay's own clock."""
    cycle, steps = ingestion(
        known,
        result,
        provider=provider,
        now=now,
        tz=tz,
        watching_since=watching_since,
        period_now=period_now,
        relay_clock=relay_clock,
    )
    drain(steps)
    return cycle


def ingestion(
    known: Mapping[str, TokenState],
    result: PollResult,
    *,
    provider: str,
    now: float,
    tz: ZoneInfo,
    watching_since: float | None,
    period_now: float | None = None,
    relay_clock: bool = False,
) -> tuple[Cycle, Iterator[None]]:
    """`ingest` as the Cycle it fills and the steps that fill it, one per token, for a caller
    that gives the event loop turns between them (monitor.pacing). The Cycle is whole only once
    the steps are exhausted."""
    states = dict(known)
    cycle = Cycle(provider, now, result.complete, states, seen=len(result.observations))
    cycle.committed = result.committed
    steps = _ingesting(cycle, known, result, now, tz, watching_since, period_now, relay_clock)
    return cycle, steps


def _ingesting(
    cycle: Cycle,
    known: Mapping[str, TokenState],
    result: PollResult,
    now: float,
    tz: ZoneInfo,
    watching_since: float | None,
    period_now: float | None,
    relay_clock: bool,
) -> Iterator[None]:
    provider, states = cycle.provider, cycle.states
    period = now if period_now is None else period_now
    for obs in result.observations:
        yield None
        before = states.get(obs.token_id)
        if before is not None and (before.observation is obs or before.observation == obs):
            continue  # the relay shows exactly what it showed last time: nothing to do
        if before is not None and _reused(before, obs):
            _retire(cycle, before, now)
            before = None
        after, spend = _apply(
            before, obs, provider, now, (period, relay_clock), tz, watching_since is not None
        )
        if spend.note:
            cycle.notes.append((obs.name, spend.note))
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
    horizon = (
        max(now, now if period_now is None else period_now) + FUTURE_SLACK
    )  # the relay's clock if believed
    requests = [r for r in result.requests if r.ts <= horizon]
    if len(requests) < len(result.requests):
        # A row from the future would become the resume point of the log (the newest stored
        # row) and stop its reading for good: it is dropped, and said once per cycle.
        cycle.notes.append(
            ("(request log)", f"{len(result.requests) - len(requests)} rows dated in the future dropped")
        )
    if requests:
        cycle.log_spend = {o.token_id for o in result.observations if o.spend_from_logs}
        # A log-spend token missing from this list (a page shifted, its entry skipped) still has
        # its rows stored now: they are costed now too, or never (the store has seen them).
        listed = {o.token_id for o in result.observations}
        cycle.log_spend.update(
            token_id
            for token_id, state in known.items()
            if token_id not in listed and state.observation is not None and state.observation.spend_from_logs
        )
        cycle.requests, cycle.unresolved = _resolve(requests, states)
    cycle.count_logged = watching_since is not None
    if result.complete:
        # Only a complete list proves a token is gone; a partial one may just have missed it.
        # A skipped entry is still listed: its token is there, only its figures are not usable.
        present = {obs.token_id for obs in result.observations}
        present.update(s.token_id for s in result.skipped if s.token_id is not None)
        skipped = {s.token for s in result.skipped}
        for token_id, state in known.items():
            yield None
            if token_id in present or state.missing_since is not None or state.name in skipped:
                continue
            states[token_id] = replace(state, status="deleted", missing_since=now)
            cycle.vanished.append(token_id)
            cycle.changed.append(token_id)


def apply_logged(cycle: Cycle, fresh: Sequence[RequestRecord]) -> None:
    """Fold the log rows the store had not seen before into the cycle: requests for every token,
    cost for `log_spend` tokens (the others' cost comes from their counters). Called by the store
    inside the cycle's transaction. Before watching began, rows are a baseline and count nothing.
    A log-spend token missing from this cycle's list is costed as well (see `ingestion`)."""
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
    before: TokenState | None,
    obs: Observation,
    provider: str,
    now: float,
    period: tuple[float, bool],
    tz: ZoneInfo,
    watching: bool,
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
    if has_usage:
        # A token created since the last poll: all it has spent is new spend. The first figures
        # of a token keywatch did not watch before are a starting point instead.
        is_new = before is None and watching
        spend, mark = advance(prev_mark, obs, period[0], tz, is_new=is_new, relay_clock=period[1])
        if prev_mark is None and not is_new:
            spend_total, requests_total = _start_figure(obs), obs.today_requests or 0
        else:
            spend_total, requests_total = spend_total + spend.cost_usd, requests_total + spend.requests
        if prev_mark is not None and _same_mark(prev_mark, mark):
            mark = prev_mark  # an idle token keeps its mark: nothing to write
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
        corrections_usd_total=round(base.corrections_usd_total + spend.corrected_usd, 9),
        mark=mark,
        usage_known=base.usage_known or has_usage or obs.spend_from_logs,
        observation=obs,
        label=base.label,
    )
    return after, spend


def _retire(cycle: Cycle, old: TokenState, now: float) -> None:
    key = f"{old.token_id}~{old.pk}"
    cycle.states[key] = replace(old, token_id=key, status="deleted", missing_since=now, observation=None)
    cycle.retired[old.token_id] = key
    cycle.notes.append((old.name, REUSED_NOTE))


def _reused(before: TokenState, obs: Observation) -> bool:
    """The relay gave a deleted token's id to a new one: another name and another creation time.
    (A rename keeps the creation time; relays that send none cannot tell, and are not asked.)"""
    return (
        obs.name != before.name
        and obs.created_at is not None
        and before.created_at is not None
        and abs(obs.created_at - before.created_at) > 1.0
    )


def _same_mark(a: UsageMark, b: UsageMark) -> bool:
    """The same figures and peaks (the time aside): nothing about the token's usage moved."""
    return (
        a.today_usd,
        a.month_usd,
        a.today_requests,
        a.total_usd,
        a.peak_today_usd,
        a.peak_month_usd,
        a.peak_total_usd,
        a.peak_today_requests,
    ) == (
        b.today_usd,
        b.month_usd,
        b.today_requests,
        b.total_usd,
        b.peak_today_usd,
        b.peak_month_usd,
        b.peak_total_usd,
        b.peak_today_requests,
    )


def _start_figure(obs: Observation) -> float:
    for value in (obs.total_usd, obs.month_usd, obs.today_usd):
        if value is not None:
            return value
    return 0.0
