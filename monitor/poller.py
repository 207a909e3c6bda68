"""One provider's poll cycle: fetch → ingest → store → metrics → listeners (rules, alerts).

A cycle never raises and never hangs: a whole poll has a deadline (`poll_timeout`; a late poll is
cancelled and counted as `timeout`), a relay that fails is recorded (poll_runs,
keywatch_poll_errors_total, keywatch_provider_up=0) and the listeners hear that this provider has
no data this time, which is not the same as "spend was zero". A database that cannot take the
cycle (disk full, locked, unwritable) is the store's fault, not the relay's: it is counted as
reason `store`, `keywatch_store_up` drops to 0 and /readyz says so, the relay stays up, and the
cycle is read again next time from the old marks, so nothing is lost or counted twice.
Every text that came from a relay is made safe before it is logged or stored (`monitor.redact`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from sqlalchemy.exc import SQLAlchemyError

from monitor.clock import Clock
from monitor.cluster import Fenced
from monitor.ingest import Cycle, ingestion
from monitor.metrics import Exposition
from monitor.model import PollResult
from monitor.pacing import paced
from monitor.periodclock import PeriodClock
from monitor.providers.base import Provider, ProviderError
from monitor.redact import Redactor
from monitor.store import PollRun, UsageReader, UsageWriter, describe_fault
from monitor.store.writer import Guard
from monitor.tokens import TokenState, needs_windows, period_starts, with_series_labels, with_windows

__all__ = ["CycleListener", "CycleReport", "Poller"]

log = logging.getLogger("keywatch.poll")


@dataclass(frozen=True, slots=True)
class CycleReport:
    provider: str
    at: float
    ok: bool
    complete: bool
    cycle: Cycle | None  # None when the relay could not be polled
    states: Mapping[str, TokenState]  # every known token of the provider after the cycle
    error_reason: str | None = None
    error: str | None = None
    failures: int = 0  # failed polls in a row, this one included


CycleListener = Callable[[CycleReport], Awaitable[None]]


class Poller:
    def __init__(
        self,
        provider: Provider,
        *,
        timezone: str,
        writer: UsageWriter,
        exposition: Exposition,
        clock: Clock,
        states: Mapping[str, TokenState],
        watching_since: float | None,
        error_counts: Mapping[str, int] | None = None,
        last_success: float | None = None,
        consecutive_failures: int = 0,
        reader: UsageReader | None = None,
        deadline: float = 300.0,
        redactor: Redactor | None = None,
        owned: Callable[[], bool] = lambda: True,
        guard: Guard | None = None,
    ) -> None:
        """`owned` and `guard`: with several instances (monitor.cluster), whether this one holds
        the provider now, and the check of that in the cycle's own transaction."""
        self.provider = provider
        self._tz = ZoneInfo(timezone)
        self._writer = writer
        self._exposition = exposition
        self._clock = clock
        self._period = PeriodClock(clock, provider.name)
        self._deadline = deadline
        self._redact = redactor or Redactor()
        self.states: dict[str, TokenState] = with_series_labels(states)
        self.watching_since = watching_since
        self.listeners: list[CycleListener] = []
        self.succeeded_once = False
        self.consecutive_failures = consecutive_failures
        self._reader = reader  # for day/month windows of relays that keep only lifetime counters
        self._owned = owned
        self._guard = guard
        health = exposition.health(provider.name)
        health.errors.update(error_counts or {})
        health.last_success = last_success
        exposition.set_tokens(provider.name, self.states)

    async def run_once(self) -> CycleReport | None:
        """One cycle; None when this instance does not hold the provider (any more): nothing is
        fetched, written or told to the listeners."""
        name = self.provider.name
        if not self._owned():
            return None
        started, t0 = self._clock.now(), time.perf_counter()
        health = self._exposition.health(name)
        try:
            async with asyncio.timeout(self._deadline):
                result = await self.provider.poll()
        except Exception as exc:
            if not self._owned():  # moved to another instance meanwhile (its client may be closed)
                return None
            report = await self._poll_failed(started, exc)
        else:
            try:
                report = await self._store(result, started)
            except Fenced as exc:
                log.warning("%s: poll discarded: %s (another instance polls it now)", name, exc)
                return None
            except (SQLAlchemyError, OSError) as exc:
                report = self._store_failed(started, exc)
            except Exception as exc:
                log.exception("storing the poll of %s failed unexpectedly", name)
                report = await self._fail(started, "internal", f"{type(exc).__name__}: {exc}")
        health.observe_duration(time.perf_counter() - t0)
        self._exposition.invalidate()
        for listener in self.listeners:
            try:
                await listener(report)
            except Exception:
                log.exception("a cycle listener failed for provider %s", name)
        self._exposition.invalidate()  # listeners (the alert engine) change what /metrics shows
        return report

    async def _poll_failed(self, started: float, exc: Exception) -> CycleReport:
        if isinstance(exc, TimeoutError):
            return await self._fail(started, "timeout", f"the poll took longer than {self._deadline:g}s")
        if isinstance(exc, ProviderError):
            return await self._fail(started, exc.reason, str(exc))
        # a bug must not stop the daemon: record it loudly and go on
        log.exception("poll of %s failed unexpectedly", self.provider.name, exc_info=exc)
        return await self._fail(started, "internal", f"{type(exc).__name__}: {exc}")

    async def _store(self, result: PollResult, started: float) -> CycleReport:
        name = self.provider.name
        now = self._clock.now()
        period_now, relay_clock = self._period.now(result.relay_time)
        cycle, steps = ingestion(
            self.states,
            result,
            provider=name,
            now=now,
            tz=self._tz,
            watching_since=self.watching_since,
            period_now=period_now,
            relay_clock=relay_clock,
        )
        await paced(steps)  # 100,000 new tokens are seconds of work: the event loop gets turns
        errors = Counter(s.reason for s in result.skipped)
        self._log_grouped(
            "skipped this cycle", [(s.token, f"{s.reason}: {s.detail}") for s in result.skipped]
        )
        self._log_grouped("", cycle.notes)
        run = PollRun(
            provider=name,
            kind=self.provider.kind,
            started_at=started,
            finished_at=now,
            ok=True,
            complete=result.complete,
            seen=cycle.seen,
            changed=len(cycle.new) + len(cycle.changed),
            skipped=len(result.skipped),
        )
        # The database work runs in a thread so /metrics and the API keep answering meanwhile.
        states = await asyncio.to_thread(self._writer.write_cycle, cycle, run, errors, guard=self._guard)
        if self._reader is not None and any(needs_windows(st) for st in states.values()):
            states = await asyncio.to_thread(self._derive_windows, states, now)
        states = with_series_labels(states)
        self.states = states
        self._exposition.store_up = True
        if result.complete and self.watching_since is None:
            self.watching_since = now
        health = self._exposition.health(name)
        health.up, health.last_success = True, now
        for reason, count in errors.items():
            health.errors[reason] = health.errors.get(reason, 0) + count
        self.succeeded_once = True
        self.consecutive_failures = 0
        self._exposition.set_tokens(name, states)
        log.info(
            "%s: polled %d tokens (%d new, %d changed, %d with spend, %d skipped)",
            name,
            cycle.seen,
            len(cycle.new),
            len(cycle.changed),
            len(cycle.spend),
            len(result.skipped),
            extra={"provider": name, "spend_usd": round(sum(s.cost_usd for s in cycle.spend), 6)},
        )
        return CycleReport(name, now, True, result.complete, cycle, states)

    def _derive_windows(self, states: dict[str, TokenState], now: float) -> dict[str, TokenState]:
        assert self._reader is not None
        day, month = period_starts(now, self._tz)
        return with_windows(states, self._reader.window_sums(self.provider.name, day, month))

    def _log_grouped(self, what: str, items: list[tuple[str, str]]) -> None:
        """One line per distinct reason with how many tokens and a few of them: a relay that
        breaks 10,000 entries the same way is one problem, not 10,000 log lines."""
        name = self.provider.name
        by_reason: dict[str, list[str]] = {}
        for token, reason in items:
            by_reason.setdefault(self._redact(reason), []).append(self._redact(token, limit=80))
        for reason, tokens in by_reason.items():
            shown = ", ".join(tokens[:3]) + (f" and {len(tokens) - 3} more" if len(tokens) > 3 else "")
            prefix = f"{what} " if what else ""
            log.warning("%s: %d token(s) %s(%s): %s", name, len(tokens), prefix, shown, reason)

    def _store_failed(self, started: float, exc: Exception) -> CycleReport:
        """The relay answered; the database could not take the cycle. Nothing is adopted, so the
        next cycle computes from the old marks and loses nothing."""
        name = self.provider.name
        now = self._clock.now()
        reason = describe_fault(exc)
        log.error(
            "%s: could not store the poll: %s (the relay is fine; the next poll tries again)",
            name,
            reason,
            extra={"provider": name, "reason": "store"},
        )
        health = self._exposition.health(name)
        health.up = True  # the relay answered: keywatch_provider_up must not blame it
        health.errors["store"] = health.errors.get("store", 0) + 1
        self._exposition.store_up = False
        return CycleReport(name, now, False, False, None, self.states, "store", reason, 0)

    async def _fail(self, started: float, reason: str, message: str) -> CycleReport:
        name = self.provider.name
        now = self._clock.now()
        message = self._redact(message)
        self.consecutive_failures += 1
        log.error(
            "%s: poll failed (%s): %s", name, reason, message, extra={"provider": name, "reason": reason}
        )
        health = self._exposition.health(name)
        health.up = False
        health.errors[reason] = health.errors.get(reason, 0) + 1
        run = PollRun(
            name,
            self.provider.kind,
            started,
            now,
            ok=False,
            complete=False,
            error_reason=reason,
            error=message,
        )
        try:
            await asyncio.to_thread(self._writer.write_failure, run, {reason: 1}, guard=self._guard)
        except Fenced:
            pass  # the new owner records its own polls
        except (SQLAlchemyError, OSError) as exc:
            log.error("%s: could not record the failed poll: %s", name, describe_fault(exc))
            self._exposition.store_up = False
        return CycleReport(
            name, now, False, False, None, self.states, reason, message, self.consecutive_failures
        )
