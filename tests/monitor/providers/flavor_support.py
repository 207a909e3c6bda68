"""Shared pieces of the oneapi/newapi/openai adapter tests: recorded-shape transports, and a
simulated relay on loopback polled through ingest into a real SQLite store (what one daemon
cycle does, minus metrics), on an injected clock."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
from sqlalchemy import Engine

from monitor.clock import FakeClock
from monitor.ingest import Cycle, ingest
from monitor.providers.base import Provider
from monitor.providers.http import RelayHTTP, make_client
from monitor.providers.registry import build_provider
from monitor.secret import Secret
from monitor.settings import ProviderSettings
from monitor.simulator import SimServer, SimulatedRelay, make_relay, serve
from monitor.store import PollRun, UsageReader, UsageWriter, open_engine
from monitor.tokens import TokenState

START = 1772452800.0  # 2026-03-02 12:00 UTC, a Monday
ADMIN = "sim-admin-token"


async def no_sleep(_: float) -> None:
    return None


class Recorder:
    """An httpx.MockTransport handler that keeps the requests it answered."""

    def __init__(self, handler: Callable[[httpx.Request], httpx.Response]) -> None:
        self.handler = handler
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.handler(request)

    def paths(self) -> list[str]:
        return [r.url.path for r in self.requests]


def mock_http(
    handler: Callable[[httpx.Request], httpx.Response], base: str = "https://relay.test"
) -> tuple[RelayHTTP, Recorder]:
    rec = Recorder(handler)
    client = httpx.AsyncClient(transport=httpx.MockTransport(rec))
    return RelayHTTP(client, base, retries=1, sleep=no_sleep), rec


def envelope(
    data: Any = None, *, success: bool = True, message: str = "", date: float | None = None
) -> httpx.Response:
    headers = {}
    if date is not None:
        from email.utils import formatdate

        headers["Date"] = formatdate(date, usegmt=True)
    return httpx.Response(200, json={"success": success, "message": message, "data": data}, headers=headers)


def query(request: httpx.Request) -> dict[str, str]:
    return dict(request.url.params)


def body(request: httpx.Request) -> Any:
    return json.loads(request.content)


def settings_for(kind: str, base_url: str, **kw: Any) -> ProviderSettings:
    extra: dict[str, Any] = (
        {"user_id": 1} if kind == "newapi" else {"project_id": "proj_sim"} if kind == "openai" else {}
    )
    return ProviderSettings(
        name="p", kind=kind, base_url=base_url, admin_token=Secret(ADMIN), **{**extra, **kw}
    )  # type: ignore[arg-type]


@dataclass
class Harness:
    """One provider polled cycle by cycle into a store, as the daemon's poller does."""

    relay: SimulatedRelay
    server: SimServer
    provider: Provider
    engine: Engine
    client: httpx.AsyncClient
    settings: ProviderSettings
    states: dict[str, TokenState] = field(default_factory=dict)
    watching: float | None = None
    cycles: list[Cycle] = field(default_factory=list)

    async def cycle(self) -> Cycle:
        result = await self.provider.poll()
        now = self.relay.now()
        cycle = ingest(
            self.states, result, provider="p", now=now, tz=ZoneInfo("UTC"), watching_since=self.watching
        )
        run = PollRun("p", self.settings.kind, now, now, ok=True, complete=result.complete, seen=cycle.seen)
        self.states = UsageWriter(self.engine).write_cycle(cycle, run, {})
        if result.complete and self.watching is None:
            self.watching = now
        self.cycles.append(cycle)
        return cycle

    def by_name(self, name: str) -> TokenState:
        (state,) = [s for s in self.states.values() if s.name == name]
        return state

    def reader(self) -> UsageReader:
        return UsageReader(self.engine)

    def restart(self, *, resume: bool = True) -> None:
        """A new provider (a daemon restart); the store and its states stay."""
        cursor = self.reader().log_cursor("p") if resume else None
        self.provider = build_provider(self.settings, self.client, log_cursor=cursor)
        self.states = self.reader().token_states("p").get("p", {})


@asynccontextmanager
async def harness(
    kind: str,
    tmp_path: Path,
    *,
    tokens: int = 40,
    seed: int = 7,
    options: dict[str, Any] | None = None,
    **settings: Any,
) -> AsyncIterator[Harness]:
    relay = make_relay(tokens=tokens, seed=seed, clock=FakeClock(START))
    server = await serve(relay, "127.0.0.1", 0, flavor=kind, **(options or {}))
    client = make_client(timeout=10)
    ps = settings_for(kind, server.url, **settings)
    engine = open_engine(f"sqlite:///{tmp_path / 'kw.db'}")
    try:
        yield Harness(relay, server, build_provider(ps, client), engine, client, ps)
    finally:
        await client.aclose()
        await server.close()
        engine.dispose()


def log_spend_expected(relay: SimulatedRelay, token: str, since: float, until: float) -> tuple[float, int]:
    """(USD, requests) booked on a token with since <= ts <= until."""
    events = relay.events_between(since, until, token)
    return sum(e.cost_usd for e in events), sum(e.requests for e in events)
