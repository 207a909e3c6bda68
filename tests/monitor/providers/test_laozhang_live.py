"""The laozhang adapter and the ingest path against the simulator on loopback (real HTTP, real
aiohttp fast path), on an injected clock: what keywatch counts equals what the relay served."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from zoneinfo import ZoneInfo

import httpx
import pytest

from monitor.clock import FakeClock
from monitor.ingest import ingest
from monitor.model import PollResult
from monitor.providers.base import ProviderError
from monitor.providers.http import RelayHTTP, make_client
from monitor.providers.laozhang import LaozhangProvider
from monitor.secret import Secret
from monitor.settings import ProviderSettings
from monitor.simulator import SimServer, SimulatedRelay, make_relay, serve
from monitor.tokens import TokenState

START = 1_794_300_000.0  # 2026-11-10 09:20 UTC
UTC = ZoneInfo("UTC")


async def no_sleep(_: float) -> None:
    return None


@dataclass
class Rig:
    relay: SimulatedRelay
    server: SimServer
    clock: FakeClock
    retries: list[str]
    clients: list[httpx.AsyncClient]

    def client(self, timeout: float = 5.0) -> httpx.AsyncClient:
        self.clients.append(make_client(timeout=timeout))
        return self.clients[-1]

    def provider(self, *, keys: bool = False, retries: int = 3) -> LaozhangProvider:
        key_map = {name: Secret(k) for name, k in self.relay.keys().items()} if keys else {}
        settings = ProviderSettings(
            name="lz",
            kind="laozhang",
            base_url=self.server.url,
            admin_token=Secret(self.relay.admin_token),
            keys=key_map,
        )
        http = RelayHTTP(
            self.client(), settings.base_url, retries=retries, sleep=no_sleep, on_retry=self.retries.append
        )
        return LaozhangProvider(settings, http)


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    clock = FakeClock(START)
    relay = make_relay(tokens=30, seed=4, clock=clock)
    server = await serve(relay, "127.0.0.1", 0)
    r = Rig(relay, server, clock, [], [])
    yield r
    for client in r.clients:
        await client.aclose()
    await server.close()


def apply(
    states: dict[str, TokenState], result: PollResult, now: float, watching: float | None
) -> dict[str, TokenState]:
    return ingest(states, result, provider="lz", now=now, tz=UTC, watching_since=watching).states


async def test_counted_spend_equals_the_relays_truth_over_a_day_and_a_rollover(rig: Rig) -> None:
    provider = rig.provider()
    states = apply({}, await provider.poll(), rig.clock.now(), None)
    start_totals = {s.token_id: s.spend_total_usd for s in states.values()}
    start_truth = {t.id: t.lifetime_usd for t in rig.relay.list_tokens()}
    for _ in range(30):  # 30 polls an hour apart: crosses midnight
        rig.clock.advance(3600)
        states = apply(states, await provider.poll(), rig.clock.now(), START)
    for tok in rig.relay.list_tokens():
        counted = states[tok.id].spend_total_usd - start_totals[tok.id]
        served = tok.lifetime_usd - start_truth[tok.id]
        assert counted == pytest.approx(served, abs=1e-6), tok.name


async def test_per_key_mode_uses_each_key_and_matches_the_list(rig: Rig) -> None:
    rig.clock.advance(1800)
    by_list = {o.token_id: (o.today_usd, o.month_usd) for o in (await rig.provider().poll()).observations}
    bare = await serve(rig.relay, "127.0.0.1", 0, usage_in_list=False)  # the documented fields only
    try:
        rig.server, listed = bare, rig.server
        result = await rig.provider(keys=True).poll()
        rig.server = listed
    finally:
        await bare.close()
    live = {
        o.token_id: (o.today_usd, o.month_usd)
        for o in result.observations
        if o.status in ("active", "unused")
    }
    assert live and all(by_list[t] == v for t, v in live.items())
    assert all(o.key_sha256 for o in result.observations)
    assert result.complete


async def test_server_errors_are_retried_and_reported_as_retries(rig: Rig) -> None:
    rig.relay.faults.update(fail_next=2, status=503)
    result = await rig.provider().poll()
    assert len(result.observations) == 30
    assert rig.retries == ["http_5xx", "http_5xx"]


async def test_rate_limits_are_retried(rig: Rig) -> None:
    rig.relay.faults.update(rate_limit_rate=1.0, routes=["list"])
    with pytest.raises(ProviderError) as err:
        await rig.provider(retries=2).poll()
    assert err.value.reason == "rate_limited"
    assert rig.retries == ["rate_limited", "rate_limited"]


async def test_malformed_list_fails_the_cycle_and_malformed_entries_are_skipped(rig: Rig) -> None:
    rig.relay.faults.update(malformed_rate=1.0, routes=["list"])
    with pytest.raises(ProviderError) as err:
        await rig.provider(retries=0).poll()
    assert err.value.reason == "malformed"
    rig.relay.faults.reset()
    rig.relay.faults.update(malformed_token_rate=0.3, seed=9)
    result = await rig.provider().poll()
    # Entries that still say which token they are leave the list complete: those tokens are
    # listed (not deleted), only their figures are unusable this cycle.
    assert result.skipped and result.complete == all(s.token_id for s in result.skipped)
    assert {s.reason for s in result.skipped} <= {"malformed", "negative_usage"}
    assert len(result.observations) + len(result.skipped) == 30


async def test_slow_relay_times_out_as_timeout(rig: Rig) -> None:
    rig.relay.faults.update(latency=2.0)
    provider = rig.provider(retries=0)
    provider._http = RelayHTTP(rig.client(timeout=0.2), rig.server.url, retries=0, sleep=no_sleep)
    with pytest.raises(ProviderError) as err:
        await provider.poll()
    assert err.value.reason == "timeout"


async def test_new_renamed_and_deleted_tokens(rig: Rig) -> None:
    provider = rig.provider()
    states = apply({}, await provider.poll(), rig.clock.now(), None)
    tok, _key = rig.relay.create_token("dev-newapp-api-2026-11", archetype="service", usd_per_hour=2.0)
    victim = next(t for t in rig.relay.list_tokens() if t.id != tok.id)
    renamed = next(t for t in rig.relay.list_tokens() if t.id not in (tok.id, victim.id))
    rig.relay.rename_token(renamed.id, "dev-renamed-api-2026-11")
    rig.relay.delete_token(victim.id)
    rig.clock.advance(600)
    cycle = ingest(
        states, await provider.poll(), provider="lz", now=rig.clock.now(), tz=UTC, watching_since=START
    )
    assert tok.id in cycle.new
    assert cycle.states[tok.id].spend_total_usd == pytest.approx(rig.relay.total_spend(tok.id), abs=1e-6)
    assert cycle.vanished == [victim.id] and cycle.states[victim.id].status == "deleted"
    assert cycle.states[renamed.id].name == "dev-renamed-api-2026-11"


async def test_revoke_is_verified_by_a_refused_key(rig: Rig) -> None:
    provider = rig.provider(keys=True)
    await provider.poll()
    target = next(t for t in rig.relay.list_tokens() if t.status(rig.clock.now()) == "active")
    assert await provider.verify_refused(target.id) is False
    outcome = await provider.revoke(target.id)
    assert outcome.done and outcome.verified
    assert rig.relay.status(rig.relay.token(target.id)) == "revoked"
