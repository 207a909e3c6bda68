"""The poll cycle under faults that are not the relay's (issue 9, items 6 and 18): a database that
refuses the cycle, and a poll that never ends. Real SQLite, a real simulated relay over HTTP."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from sqlalchemy import event

from monitor.app import Daemon
from monitor.clock import FakeClock
from monitor.metrics import Exposition
from monitor.model import PollResult, RevokeOutcome
from monitor.policy import PolicyBook
from monitor.poller import Poller
from monitor.secret import Secret
from monitor.settings import ProviderSettings, Settings
from monitor.simulator import make_relay, serve
from monitor.store import UsageWriter, open_engine

START = 1_794_300_000.0


async def test_a_full_disk_is_the_stores_fault_not_the_relays_and_nothing_is_lost(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sim_clock = FakeClock(START)
    relay = make_relay(tokens=300, seed=3, clock=sim_clock)
    server = await serve(relay, "127.0.0.1", 0)
    provider = ProviderSettings(
        name="lz", kind="laozhang", base_url=server.url, admin_token=Secret(relay.admin_token)
    )
    clock = FakeClock(START)
    daemon = Daemon(Settings(database=f"sqlite:///{tmp_path / 'kw.db'}", providers=(provider,)), clock=clock)
    full = {"on": False}

    def cap_pages(dbapi_conn: object, _record: object) -> None:
        if full["on"]:  # SQLite's own "database or disk is full", for real
            cur = dbapi_conn.cursor()  # type: ignore[attr-defined]
            pages = cur.execute("PRAGMA page_count").fetchone()[0]
            cur.execute(f"PRAGMA max_page_count = {pages}")
            cur.close()

    event.listen(daemon.engine, "connect", cap_pages)
    try:
        await daemon.prime()
        poller = daemon.pollers["lz"]
        full["on"] = True
        daemon.engine.dispose()  # new connections get the cap
        sim_clock.advance(3 * 3600)  # hours of traffic: more rows than the file can take
        clock.advance(3 * 3600)
        with caplog.at_level(logging.INFO):
            report = await poller.run_once()
        assert (report.ok, report.error_reason) == (False, "store")
        assert "database or disk is full" in (report.error or "")
        health = daemon.exposition.health("lz")
        assert health.up and health.errors["store"] == 1  # the relay answered: it is not blamed
        assert not daemon.exposition.store_up
        assert b"keywatch_store_up 0" in daemon.exposition.render()
        assert "Traceback" not in caplog.text
        assert len([r for r in caplog.records if "could not store" in r.getMessage()]) == 1

        full["on"] = False
        daemon.engine.dispose()
        report = await poller.run_once()  # the same cycle, read again from the old marks
        assert report.ok and daemon.exposition.store_up
        truth = {t["name"]: t["month_usage"] for t in relay.truth() if not t["deleted"]}
        for state in poller.states.values():
            assert state.spend_total_usd == pytest.approx(truth[state.name], abs=1e-6), state.name
    finally:
        await daemon.stop()
        await server.close()


class Hanging:
    """A provider whose poll never returns: only the poller's own deadline can end it."""

    name = "stuck"
    kind = "laozhang"

    async def poll(self) -> PollResult:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def revoke(self, token_id: str, *, delete: bool = False) -> RevokeOutcome:
        return RevokeOutcome(False, False)

    async def verify_refused(self, token_id: str) -> bool | None:
        return None

    async def aclose(self) -> None:
        return None


async def test_a_poll_that_never_ends_is_cancelled_at_its_deadline_and_counted_as_timeout(
    tmp_path: Path,
) -> None:
    engine = open_engine(f"sqlite:///{tmp_path / 'kw.db'}")
    exposition = Exposition(PolicyBook((), ()))
    poller = Poller(
        Hanging(),
        timezone="UTC",
        writer=UsageWriter(engine),
        exposition=exposition,
        clock=FakeClock(START),
        states={},
        watching_since=None,
        deadline=0.2,
    )
    report = await asyncio.wait_for(poller.run_once(), timeout=5)
    assert (report.ok, report.error_reason, report.failures) == (False, "timeout", 1)
    assert exposition.health("stuck").errors == {"timeout": 1}
    assert not exposition.health("stuck").up
    engine.dispose()
