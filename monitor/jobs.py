"""The daemon's timed work as declared values, and the one place that puts them on the scheduler.

A `Job` is a name (the scheduler id and the `job` label), a trigger and a coroutine function.
The composition root builds the whole list (`Daemon.jobs`); `Schedule.register` puts it on
APScheduler's AsyncIOScheduler in one loop, and again on every reload: jobs no longer listed are
removed, jobs that changed are replaced, jobs that did not change keep their place, so a SIGHUP
never duplicates or restarts a timer. Every run goes through one guard: a failure is one log
line (never a traceback), `keywatch_job_failures_total{job}` counts it and the scheduler goes on;
a run that completes sets `keywatch_job_last_success_timestamp_seconds{job}` (injected clock).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger

from monitor.clock import Clock
from monitor.store import describe_fault

__all__ = [
    "AUDIT_DIGEST_CHECK",
    "HOUSEKEEPING_DELAY",
    "NOTIFICATION_PRUNE",
    "RETENTION",
    "Every",
    "Job",
    "JobOutcomes",
    "Run",
    "Schedule",
]

log = logging.getLogger("keywatch.jobs")

RETENTION = 86400.0  # monitor.store.retention: daily, as the README promises
AUDIT_DIGEST_CHECK = 3600.0  # the digest goes out weekly; the hourly check makes it at most an hour late
NOTIFICATION_PRUNE = 3600.0  # finished outbox rows and long-resolved alerts
HOUSEKEEPING_DELAY = 60.0  # first housekeeping run after start: the first polls go first

Run = Callable[[], Awaitable[object]]


@dataclass(frozen=True, slots=True)
class Every:
    """Run every `seconds`, the first time `first_after` seconds after registration. The delay is
    not part of equality: a re-registered job whose interval is unchanged keeps its place."""

    seconds: float
    first_after: float = field(default=0.0, compare=False)


@dataclass(frozen=True, slots=True)
class Job:
    name: str
    trigger: Every
    run: Run  # a bound method compares equal to itself: an unchanged job is seen as unchanged


class JobOutcomes(Protocol):
    """Where runs are counted (monitor.metrics.Exposition)."""

    def set_jobs(self, names: Iterable[str]) -> None: ...

    def job_ran(self, name: str, *, ok: bool, at: float) -> None: ...


class Schedule:
    def __init__(self, scheduler: AsyncIOScheduler, *, clock: Clock, outcomes: JobOutcomes) -> None:
        self._scheduler = scheduler
        self._clock = clock
        self._outcomes = outcomes
        self._jobs: dict[str, Job] = {}
        self._running: set[asyncio.Task[object]] = set()

    @property
    def jobs(self) -> dict[str, Job]:
        """What is registered now, by name."""
        return dict(self._jobs)

    def register(self, jobs: Sequence[Job]) -> None:
        """Make the scheduler hold exactly `jobs`."""
        wanted = {job.name: job for job in jobs}
        if len(wanted) != len(jobs):
            raise ValueError(f"job names repeat: {sorted(j.name for j in jobs)}")
        for name in [n for n in self._jobs if n not in wanted]:
            self._scheduler.remove_job(name)
            del self._jobs[name]
        for job in jobs:
            if self._jobs.get(job.name) == job:
                continue
            seconds = job.trigger.seconds
            self._scheduler.add_job(
                self._guarded(job),
                IntervalTrigger(seconds=seconds, timezone=UTC),
                id=job.name,
                name=job.name,
                max_instances=1,  # a slow relay never gets two overlapping cycles
                coalesce=True,  # missed runs collapse into one
                misfire_grace_time=max(1, int(seconds)),
                next_run_time=datetime.now(UTC) + timedelta(seconds=job.trigger.first_after),
                replace_existing=True,
            )
            self._jobs[job.name] = job
        self._outcomes.set_jobs(wanted)

    async def run(self, job: Job) -> bool:
        """One guarded run (what the scheduler calls): True when the job completed."""
        try:
            await job.run()
        except Exception as exc:  # one line, no traceback: the next run is the retry
            log.error("job %s failed: %s", job.name, describe_fault(exc), extra={"job": job.name})
            self._outcomes.job_ran(job.name, ok=False, at=self._clock.now())
            return False
        self._outcomes.job_ran(job.name, ok=True, at=self._clock.now())
        return True

    async def drain(self, *, grace: float) -> None:
        """Wait up to `grace` seconds for the runs in flight (a poll commits or rolls back whole)."""
        if self._running:
            await asyncio.wait(set(self._running), timeout=grace)

    def _guarded(self, job: Job) -> Callable[[], Awaitable[bool]]:
        async def scheduled() -> bool:
            task = asyncio.current_task()
            if task is not None:
                task.set_name(job.name)
                self._running.add(task)
            try:
                return await self.run(job)
            finally:
                if task is not None:
                    self._running.discard(task)

        return scheduled
