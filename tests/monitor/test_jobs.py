"""The daemon's scheduled jobs (monitor.jobs, Daemon.jobs): one declared list, registered in one
loop and again on reload; each job doing its work on a real SQLite store, with a real simulated
relay and a real webhook receiver on loopback; time from the injected clock."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger
from prometheus_client.parser import text_string_to_metric_families

from alerts.lifecycle.records import LogEntry, OutboxItem
from monitor.app import Daemon
from monitor.clock import FakeClock
from monitor.jobs import Every, Job, Run, Schedule
from monitor.metrics import Exposition
from monitor.policy import PolicyBook
from monitor.poller import CycleReport
from monitor.secret import Secret
from monitor.settings import Notify, NotifyTarget, ProviderSettings, Settings
from monitor.simulator import SimulatedRelay, make_relay, serve
from tests.alerts.notify_support import Webhook, finding

START = 1_794_300_000.0
DAY = 86400.0
HOUSEKEEPING = {"retention": DAY, "audit_digest": 3600.0, "notification_prune": 3600.0}


@asynccontextmanager
async def simulated_relay() -> AsyncIterator[tuple[SimulatedRelay, FakeClock, str]]:
    clock = FakeClock(START)
    relay = make_relay(tokens=40, seed=3, clock=clock)
    server = await serve(relay, "127.0.0.1", 0)
    try:
        yield relay, clock, server.url
    finally:
        await server.close()


def provider(name: str, relay: SimulatedRelay, url: str, interval: float = 60.0) -> ProviderSettings:
    return ProviderSettings(
        name=name,
        kind="laozhang",
        base_url=url,
        admin_token=Secret(relay.admin_token),
        poll_interval=interval,
    )


def settings(tmp_path: Path, *providers: ProviderSettings, notify: Notify | None = None) -> Settings:
    return Settings(
        database=f"sqlite:///{tmp_path / 'kw.db'}", providers=providers, notify=notify or Notify()
    )


@asynccontextmanager
async def daemon_on(config: Settings, clock: FakeClock) -> AsyncIterator[Daemon]:
    daemon = Daemon(config, clock=clock)
    try:
        yield daemon
    finally:
        await daemon.stop()


def job(daemon: Daemon, name: str) -> Job:
    return next(j for j in daemon.jobs() if j.name == name)


def scheduled(daemon: Daemon) -> dict[str, float]:
    """What APScheduler holds: job id -> interval in seconds."""
    out = {}
    for entry in daemon.scheduler.get_jobs():
        assert isinstance(entry.trigger, IntervalTrigger)
        out[entry.id] = entry.trigger.interval.total_seconds()
    return out


def job_metrics(exposition: Exposition) -> dict[tuple[str, str], float]:
    """(sample name, job) -> value, parsed by prometheus_client from the real exposition."""
    return {
        (s.name, s.labels["job"]): s.value
        for family in text_string_to_metric_families(exposition.render().decode())
        if family.name.startswith("keywatch_job_")
        for s in family.samples
    }


def count(db: Path, table: str) -> int:
    with sqlite3.connect(db) as conn:
        return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


async def test_the_list_holds_every_job_of_the_config_and_the_scheduler_holds_the_list(
    tmp_path: Path,
) -> None:
    async with simulated_relay() as (relay, _sim, url):
        config = settings(tmp_path, provider("a", relay, url, 30), provider("b", relay, url, 90))
        async with daemon_on(config, FakeClock(START)) as daemon:
            await daemon.prime()
            await daemon.start(serve_http=False)
            expected = {"poll:a": 30.0, "poll:b": 90.0, **HOUSEKEEPING}
            assert {j.name: j.trigger.seconds for j in daemon.jobs()} == expected
            assert scheduled(daemon) == expected
            assert job(daemon, "poll:a").run == daemon.pollers["a"].run_once
            # prime() just polled: the next poll is an interval away, housekeeping a minute
            now = datetime.now(UTC)
            waits = {e.id: (e.next_run_time - now).total_seconds() for e in daemon.scheduler.get_jobs()}
            assert 25 < waits["poll:a"] <= 30 and 85 < waits["poll:b"] <= 90
            assert all(55 < waits[name] <= 60 for name in HOUSEKEEPING)
            assert job_metrics(daemon.exposition) == {
                ("keywatch_job_failures_total", name): 0.0 for name in expected
            }


async def test_a_reload_re_registers_from_the_new_settings_without_duplicates(tmp_path: Path) -> None:
    async with simulated_relay() as (relay, _sim, url):
        a, b = provider("a", relay, url, 30), provider("b", relay, url, 90)
        async with daemon_on(settings(tmp_path, a, b), FakeClock(START)) as daemon:
            await daemon.prime()
            await daemon.start(serve_http=False)
            before = {e.id: e.next_run_time for e in daemon.scheduler.get_jobs()}

            a45, c = provider("a", relay, url, 45), provider("c", relay, url, 20)
            await daemon.reload(settings(tmp_path, a45, c))  # a changed, b gone, c new
            expected = {"poll:a": 45.0, "poll:c": 20.0, **HOUSEKEEPING}
            assert scheduled(daemon) == expected
            after = {e.id: e.next_run_time for e in daemon.scheduler.get_jobs()}
            for name in HOUSEKEEPING:  # unchanged jobs keep their place in the schedule
                assert after[name] == before[name]
            assert {name for _, name in job_metrics(daemon.exposition)} == set(expected)

            new = settings(tmp_path, a45, c, b)
            await daemon.reload(new)  # b comes back; a and c unchanged
            await daemon.reload(new)  # the same file again: nothing moves, nothing doubles
            expected["poll:b"] = 90.0
            assert scheduled(daemon) == expected
            assert len(daemon.scheduler.get_jobs()) == len(expected)
            again = {e.id: e.next_run_time for e in daemon.scheduler.get_jobs()}
            assert all(again[n] == after[n] for n in after)


async def test_a_poll_job_polls_the_relay_on_its_schedule(tmp_path: Path) -> None:
    async with simulated_relay() as (relay, _sim, url):
        clock = FakeClock(START)
        async with daemon_on(settings(tmp_path, provider("lz", relay, url)), clock) as daemon:
            await daemon.start(serve_http=False)  # not primed: the first poll is due at once
            polled: asyncio.Future[CycleReport] = asyncio.get_running_loop().create_future()

            async def seen(report: CycleReport) -> None:
                if not polled.done():
                    polled.set_result(report)

            daemon.pollers["lz"].listeners.append(seen)
            report = await asyncio.wait_for(polled, timeout=10)
            await daemon.schedule.drain(grace=5)
            assert report.ok and report.complete
            assert count(tmp_path / "kw.db", "poll_runs") == 1
            stored = {s.name for s in daemon.pollers["lz"].states.values()}
            assert stored == {t["name"] for t in relay.truth() if not t["deleted"]}
            assert job_metrics(daemon.exposition)[
                ("keywatch_job_last_success_timestamp_seconds", "poll:lz")
            ] == pytest.approx(START)


async def test_the_retention_job_drops_rows_older_than_retention(tmp_path: Path) -> None:
    async with simulated_relay() as (relay, sim, url):
        clock = FakeClock(START)
        async with daemon_on(settings(tmp_path, provider("lz", relay, url)), clock) as daemon:
            await daemon.prime()
            sim.advance(3600)
            clock.advance(3600)
            assert await daemon.schedule.run(job(daemon, "poll:lz"))
            db = tmp_path / "kw.db"
            deltas, hourly = count(db, "usage_deltas"), count(db, "usage_hourly")
            assert deltas > 0 and hourly > 0 and count(db, "poll_runs") == 2

            clock.advance(13 * DAY)  # within retention.raw (14d): nothing goes
            assert await daemon.schedule.run(job(daemon, "retention"))
            assert (count(db, "usage_deltas"), count(db, "poll_runs")) == (deltas, 2)

            clock.advance(2 * DAY)
            assert await daemon.schedule.run(job(daemon, "retention"))
            assert (count(db, "usage_deltas"), count(db, "poll_runs")) == (0, 0)
            assert count(db, "usage_hourly") == hourly  # rollups are kept 400 days


async def test_the_digest_job_sends_the_audit_to_targets_tagged_audit_once_a_week(tmp_path: Path) -> None:
    async with simulated_relay() as (relay, _sim, url), Webhook() as hook:
        notify = Notify(urls=(NotifyTarget(Secret(f"json://127.0.0.1:{hook.port}/audit"), ("audit",)),))
        clock = FakeClock(START)
        async with daemon_on(settings(tmp_path, provider("lz", relay, url), notify=notify), clock) as daemon:
            await daemon.prime()
            digest = job(daemon, "audit_digest")
            assert await daemon.schedule.run(digest)
            await daemon.alerts.pipeline.flush()
            (sent,) = hook.received
            assert sent["path"] == "/audit" and sent["title"].startswith("keywatch audit: ")
            assert "findings on" in sent["title"]  # the simulator's fleet has hygiene findings

            clock.advance(6 * DAY)  # checked hourly, sent weekly
            assert await daemon.schedule.run(digest)
            await daemon.alerts.pipeline.flush()
            assert len(hook.received) == 1

            clock.advance(DAY)
            assert await daemon.schedule.run(digest)
            await daemon.alerts.pipeline.flush()
            assert len(hook.received) == 2


async def test_the_prune_job_drops_old_finished_notifications_and_keeps_pending_ones(tmp_path: Path) -> None:
    clock = FakeClock(START)
    async with daemon_on(settings(tmp_path), clock) as daemon:
        store = daemon.alerts.store

        def queued(created_at: float, state: str) -> int:
            item = store.enqueue(
                OutboxItem(None, created_at, "g", "critical", ("critical",), "t", "b", "failure", "critical")
            )
            assert item.id is not None
            if state != "pending":
                store.claim(item.id, created_at)
                store.finish(item.id, state="sent", now=created_at)
            return item.id

        old_sent, old_pending = queued(START, "sent"), queued(START, "pending")
        recent_sent = queued(START + 7.5 * DAY, "sent")
        tracker = daemon.alerts.tracker
        tracker.evaluate([finding(token="a"), finding(token="b")], now=START)
        tracker.evaluate([finding(token="b")], now=START + 60)  # a resolves, b stays firing
        told = {  # what receivers were last told: a group quiet for long, one still firing, one quiet lately
            "quiet": LogEntry("quiet", "r", frozenset(), frozenset({"x"}), START, "resolved"),
            "firing": LogEntry("firing", "r", frozenset({"y"}), frozenset(), START, "first"),
            "lately": LogEntry("lately", "r", frozenset(), frozenset({"z"}), START + 7.5 * DAY, "resolved"),
        }
        nflog = daemon.alerts.pipeline._log
        for entry in told.values():
            nflog.record(entry, None)

        clock.set(START + 8 * DAY)
        assert await daemon.schedule.run(job(daemon, "notification_prune"))
        left = {row.id: row.state for row in store.outbox()}
        assert left == {old_pending: "pending", recent_sent: "sent"}
        assert old_sent not in left
        assert store.counts()["sent"] == 2  # the counter keeps what the rows no longer hold
        assert [(a.labels["token"], a.state) for a in tracker.alerts()] == [("b", "firing")]
        assert sorted(g for g, _ in store.load_log()) == ["firing", "lately"]
        assert nflog.get("quiet", "r") is None and nflog.get("firing", "r") == told["firing"]


async def test_a_failing_job_logs_one_line_counts_and_the_scheduler_keeps_running(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock(START)
    exposition = Exposition(PolicyBook([]))
    scheduler = AsyncIOScheduler(timezone="UTC")
    schedule = Schedule(scheduler, clock=clock, outcomes=exposition)
    calls = {"broken": 0, "fine": 0}
    third_failure = asyncio.Event()

    def counting(name: str, fail: bool) -> Run:
        async def run() -> None:
            calls[name] += 1
            clock.advance(1)
            if fail:
                if calls[name] == 3:
                    third_failure.set()
                raise OSError("disk on fire\nforged: second line")

        return run

    schedule.register(
        [
            Job("broken", Every(0.05), counting("broken", True)),
            Job("fine", Every(0.05), counting("fine", False)),
        ]
    )
    scheduler.start()
    try:
        with caplog.at_level(logging.INFO):
            await asyncio.wait_for(third_failure.wait(), timeout=10)
            # read in one step: runs go on meanwhile, but none is ever half-counted
            failures, lines, metrics = calls["broken"], list(caplog.records), job_metrics(exposition)
            assert scheduler.running
    finally:
        scheduler.shutdown(wait=False)
        await schedule.drain(grace=5)
    lines = [r for r in lines if r.name == "keywatch.jobs"]
    assert failures >= 3
    assert [r.getMessage() for r in lines] == ["job broken failed: OSError: disk on fire"] * failures
    assert all(r.exc_info is None and r.levelno == logging.ERROR for r in lines)
    assert "Traceback" not in caplog.text
    assert metrics[("keywatch_job_failures_total", "broken")] == failures
    assert ("keywatch_job_last_success_timestamp_seconds", "broken") not in metrics
    assert metrics[("keywatch_job_failures_total", "fine")] == 0
    assert metrics[("keywatch_job_last_success_timestamp_seconds", "fine")] > START


def test_job_names_are_unique() -> None:
    async def nothing() -> None:
        return None

    schedule = Schedule(
        AsyncIOScheduler(timezone="UTC"), clock=FakeClock(START), outcomes=Exposition(PolicyBook([]))
    )
    with pytest.raises(ValueError, match="repeat"):
        schedule.register([Job("x", Every(1), nothing), Job("x", Every(2), nothing)])
