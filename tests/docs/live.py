"""A real daemon for the docs tests: a simulated laozhang relay and `Daemon` (its HTTP server
included) in this process, both on loopback ports, over a real SQLite file, on injected clocks.

Its config makes every documented answer appear: a tiny budget so budget alerts fire, an
api_token so auth is exercised, a leak-report secret, and the key of one token so a leak report
finds it."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson

from monitor.app import Daemon
from monitor.clock import FakeClock
from monitor.secret import Secret
from monitor.settings import Budget, LeakReports, ProviderSettings, Settings, TokenPolicy
from monitor.simulator import SimToken, SimulatedRelay, make_relay, serve

__all__ = ["API_TOKEN", "Live", "live_daemon"]

START = 1_794_300_000.0  # 2026-11-10 09:20 UTC
API_TOKEN = "docs-api-token"
LEAK_SECRET = "docs-leak-secret"


@dataclass(frozen=True, slots=True)
class Live:
    daemon: Daemon
    relay: SimulatedRelay
    base: str
    reported: SimToken  # the token whose key keywatch knows (a leak report of it matches)

    def client(self, *, auth: bool = True) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {API_TOKEN}"} if auth else {}
        return httpx.AsyncClient(base_url=self.base, headers=headers, timeout=10.0)

    def signed_report(self, *keys: str) -> tuple[bytes, dict[str, str]]:
        """A leak-report body naming `keys`, and the headers that sign it."""
        body = orjson.dumps(
            [{"token": k, "type": "keywatch_key", "url": "https://example.com/x"} for k in keys]
        )
        return body, self.signed(body)

    def signed(self, body: bytes) -> dict[str, str]:
        """The headers that sign `body` for POST /api/v1/leak-reports."""
        digest = hmac.new(LEAK_SECRET.encode(), body, hashlib.sha256).hexdigest()
        return {"X-Keywatch-Signature": f"sha256={digest}", "Content-Type": "application/json"}


@asynccontextmanager
async def live_daemon(tmp_path: Path, *, retries: int = 0) -> AsyncIterator[Live]:
    """The daemon after one complete poll, serving on 127.0.0.1 (a free port). Nothing else is
    scheduled within a test's lifetime: the next poll is a poll interval away."""
    relay = make_relay(tokens=24, seed=5, clock=FakeClock(START), speed=0.0)
    sim = await serve(relay, "127.0.0.1", 0)
    reported = next(t for t in relay.tokens.values() if t.status(START) == "active")
    provider = ProviderSettings(
        name="lz",
        kind="laozhang",
        base_url=sim.url,
        admin_token=Secret(relay.admin_token),
        retries=retries,
        keys={reported.name: Secret(reported.key)},
    )
    settings = Settings(
        database=f"sqlite:///{tmp_path / 'kw.db'}",
        listen="127.0.0.1:0",
        api_token=Secret(API_TOKEN),
        providers=(provider,),
        tokens=(TokenPolicy(match="*", budget=Budget(daily_usd=0.01, monthly_usd=0.05)),),
        leak_reports=LeakReports(hmac_secret=Secret(LEAK_SECRET)),
    )
    daemon = Daemon(settings, clock=FakeClock(START))
    try:
        await daemon.prime()
        await daemon.start()
        assert daemon.server is not None
        yield Live(daemon, relay, f"http://127.0.0.1:{daemon.server.port}", reported)
    finally:
        await daemon.stop()
        await sim.close()
