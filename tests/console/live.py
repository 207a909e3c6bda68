"""A real daemon for the console tests: a simulated new-api relay (it can disable a key, so a
quarantine can be restored) and `Daemon` with its HTTP server, in this process on loopback, over a
real SQLite file, on one injected clock the relay and the daemon share."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from monitor.app import Daemon
from monitor.clock import FakeClock
from monitor.secret import Secret
from monitor.settings import Budget, ProviderSettings, Response, Settings, TokenPolicy
from monitor.simulator import SimulatedRelay, make_relay, serve

__all__ = ["START", "Live", "live_console"]

START = 1_794_300_000.0  # 2026-11-10 09:20 UTC


@dataclass(frozen=True, slots=True)
class Live:
    daemon: Daemon
    relay: SimulatedRelay
    clock: FakeClock
    base: str
    sim: str  # the simulated relay's address (its /_sim/truth is the relay's own view)

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.base, timeout=10.0)

    async def poll(self) -> None:
        """One poll of the relay now (and the alert engine's evaluation after it)."""
        await self.daemon.pollers["sim"].run_once()

    def active(self) -> list[str]:
        """Names of the relay's tokens that are active now."""
        now = self.clock.now()
        return sorted(t.name for t in self.relay.tokens.values() if t.status(now) == "active")


@asynccontextmanager
async def live_console(
    tmp_path: Path,
    *,
    api_token: str = "",
    listen: str = "127.0.0.1:0",
    tokens: int = 12,
    auto_revoke: bool = False,
) -> AsyncIterator[Live]:
    """The daemon after one complete poll, serving on `listen` (a free loopback port by default).
    Nothing else is scheduled within a test's lifetime: the next poll is a poll interval away."""
    clock = FakeClock(START)
    relay = make_relay(tokens=tokens, seed=7, clock=clock, speed=1.0)  # relay time is the clock's
    sim = await serve(relay, "127.0.0.1", 0, flavor="newapi")
    provider = ProviderSettings(
        name="sim",
        kind="newapi",
        base_url=sim.url,
        admin_token=Secret(relay.admin_token),
        user_id=1,
        poll_interval=3600.0,
    )
    settings = Settings(
        database=f"sqlite:///{tmp_path / 'kw.db'}",
        listen=listen,
        api_token=Secret(api_token),
        providers=(provider,),
        tokens=(TokenPolicy(match="*", budget=Budget(daily_usd=50.0, monthly_usd=1000.0)),),
        response=Response(auto_revoke=auto_revoke),
    )
    daemon = Daemon(settings, clock=clock)
    try:
        await daemon.prime()
        await daemon.start()
        assert daemon.server is not None
        yield Live(daemon, relay, clock, f"http://127.0.0.1:{daemon.server.port}", sim.url)
    finally:
        await daemon.stop()
        await sim.close()
