"""Clock jumps invent no spend (issue 9, item 2): the daemon (in process, its clock injected)
polls a frozen simulated relay over real HTTP into a real SQLite file, and is restarted with its
clock 30 days back, then 40 days forward, then stepped while running: every token's lifetime
spend stays what the relay charged."""

from __future__ import annotations

from pathlib import Path

from monitor.app import Daemon
from monitor.clock import FakeClock
from monitor.secret import Secret
from monitor.settings import ProviderSettings, Settings
from monitor.simulator import make_relay, serve

START = 1_794_300_000.0  # 2026-11-10 09:20 UTC
DAY = 86_400.0


def settings(tmp_path: Path, url: str, admin: str) -> Settings:
    provider = ProviderSettings(
        name="lz", kind="laozhang", base_url=url, admin_token=Secret(admin), poll_interval=60.0, retries=0
    )
    return Settings(database=f"sqlite:///{tmp_path / 'kw.db'}", providers=(provider,))


async def totals(tmp_path: Path, url: str, admin: str, clock: FakeClock) -> dict[str, float]:
    """One daemon life: start (resuming from the database), one poll, stop."""
    daemon = Daemon(settings(tmp_path, url, admin), clock=clock)
    try:
        await daemon.prime()
        report = daemon.pollers["lz"].states
        return {s.name: s.spend_total_usd for s in report.values() if s.usage_known}
    finally:
        await daemon.stop()


async def test_restarts_with_the_clock_30_days_back_or_40_forward_add_nothing(tmp_path: Path) -> None:
    sim_clock = FakeClock(START)
    relay = make_relay(tokens=20, seed=7, clock=sim_clock, speed=0.0)  # frozen: no traffic, no time
    server = await serve(relay, "127.0.0.1", 0)
    try:
        ours = FakeClock(START)
        first = await totals(tmp_path, server.url, relay.admin_token, ours)
        assert sum(first.values()) > 0
        for step in (-30 * DAY, 70 * DAY, 40 * DAY):  # back 30 days, then 40 past the start, then 80
            ours.step(step)
            assert await totals(tmp_path, server.url, relay.admin_token, ours) == first
    finally:
        await server.close()


async def test_a_clock_stepped_while_running_adds_nothing(tmp_path: Path) -> None:
    sim_clock = FakeClock(START)
    relay = make_relay(tokens=20, seed=8, clock=sim_clock, speed=0.0)
    server = await serve(relay, "127.0.0.1", 0)
    ours = FakeClock(START)
    daemon = Daemon(settings(tmp_path, server.url, relay.admin_token), clock=ours)
    try:
        await daemon.prime()
        poller = daemon.pollers["lz"]
        first = {t: s.spend_total_usd for t, s in poller.states.items()}
        for step in (-30 * DAY, 40 * DAY, 5 * DAY, -1 * DAY):
            ours.step(step)
            await poller.run_once()
            assert {t: s.spend_total_usd for t, s in poller.states.items()} == first
    finally:
        await daemon.stop()
        await server.close()
