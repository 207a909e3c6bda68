"""The kill switch's guard rails, each on its own, against the simulator on loopback (real HTTP)
and a real SQLite file."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine

from alerts.response.quarantine import Responder
from monitor.clock import FakeClock
from monitor.model import PollResult, RevokeOutcome
from monitor.policy import PolicyBook
from monitor.providers.http import RelayHTTP, make_client
from monitor.providers.laozhang import LaozhangProvider
from monitor.secret import Secret
from monitor.settings import ProviderSettings, Response, TokenPolicy
from monitor.simulator import SimServer, SimulatedRelay, make_relay, serve
from monitor.store import open_engine

START = 1_794_300_000.0


async def no_sleep(_: float) -> None:
    return None


@dataclass
class Rig:
    relay: SimulatedRelay
    server: SimServer
    clock: FakeClock
    engine: Engine
    provider: LaozhangProvider
    client: httpx.AsyncClient

    def responder(self, **response: object) -> Responder:
        # laozhang can only delete: the config says so explicitly (monitor.model.CAN_DISABLE)
        settings = Response(**{"auto_revoke": True, "max_per_hour": 3, "action": "delete", **response})  # type: ignore[arg-type]
        policies = PolicyBook([TokenPolicy(match="prod-*", protected=True)], settings.protect)
        return Responder(
            self.engine, settings, clock=self.clock, policies=policies, providers=lambda _n: self.provider
        )

    def token(self, prefix: str = "dev-") -> tuple[str, str]:
        now = self.clock.now()
        tok = next(t for t in self.relay.list_tokens() if t.name.startswith(prefix) and t.accepts_key(now))
        return tok.id, tok.name

    def live(self, token_id: str) -> bool:
        return self.relay.token(token_id).accepts_key(self.clock.now())


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    clock = FakeClock(START)
    relay = make_relay(tokens=30, seed=8, clock=clock)
    server = await serve(relay, "127.0.0.1", 0)
    client = make_client(timeout=5)
    keys = {name: Secret(k) for name, k in relay.keys().items()}
    settings = ProviderSettings(
        name="lz", kind="laozhang", base_url=server.url, admin_token=Secret(relay.admin_token), keys=keys
    )
    provider = LaozhangProvider(settings, RelayHTTP(client, server.url, retries=0, sleep=no_sleep))
    await provider.poll()  # learns ids -> names, for verification with the key
    engine = open_engine(f"sqlite:///{tmp_path}/kw.db")
    yield Rig(relay, server, clock, engine, provider, client)
    engine.dispose()
    await client.aclose()
    await server.close()


def leak(rig: Rig, token: tuple[str, str], episode: str = "ep1", complete: bool = True) -> dict[str, object]:
    return {
        "provider": "lz",
        "token_id": token[0],
        "token": token[1],
        "episode": episode,
        "reason": "leak",
        "complete_poll": complete,
    }


async def test_a_leaked_token_is_quarantined_and_verified(rig: Rig) -> None:
    token = rig.token()
    decision = await rig.responder().on_leak(**leak(rig, token))  # type: ignore[arg-type]
    assert decision.state == "done" and decision.quarantined
    assert decision.response == "quarantined"
    assert not rig.live(token[0])
    assert rig.responder().counts() == {("lz", "auto", "done"): 1}


async def test_protected_tokens_are_never_quarantined_automatically(rig: Rig) -> None:
    token = rig.token("prod-")
    decision = await rig.responder().on_leak(**leak(rig, token))  # type: ignore[arg-type]
    assert (decision.state, decision.response) == ("blocked", "protected: not quarantined")
    assert rig.live(token[0])
    assert rig.responder().counts() == {("lz", "auto", "blocked"): 1}


async def test_dry_run_records_but_does_not_act(rig: Rig) -> None:
    token = rig.token()
    decision = await rig.responder(dry_run=True).on_leak(**leak(rig, token))  # type: ignore[arg-type]
    assert (decision.state, decision.response) == ("dry_run", "dry run — would quarantine")
    assert rig.live(token[0])


async def test_auto_revoke_off_only_alerts(rig: Rig) -> None:
    token = rig.token()
    decision = await rig.responder(auto_revoke=False).on_leak(**leak(rig, token))  # type: ignore[arg-type]
    assert decision.state == "none" and rig.live(token[0])
    assert rig.responder().counts() == {}


async def test_a_partial_poll_never_pulls_the_switch(rig: Rig) -> None:
    token = rig.token()
    responder = rig.responder()
    waiting = await responder.on_leak(**leak(rig, token, complete=False))  # type: ignore[arg-type]
    assert waiting.state == "none" and rig.live(token[0])
    acted = await responder.on_leak(**leak(rig, token, complete=True))  # type: ignore[arg-type]
    assert acted.state == "done" and not rig.live(token[0])


async def test_the_hourly_cap_pauses_automatic_quarantine(rig: Rig) -> None:
    responder = rig.responder(max_per_hour=2)
    devs = [
        (t.id, t.name)
        for t in rig.relay.list_tokens()
        if not t.name.startswith("prod-") and t.accepts_key(START)
    ][:3]
    first = [await responder.on_leak(**leak(rig, tok, episode=f"ep{i}")) for i, tok in enumerate(devs[:2])]  # type: ignore[arg-type]
    assert [d.state for d in first] == ["done", "done"]
    assert responder.paused()
    third = await responder.on_leak(**leak(rig, devs[2], episode="ep3"))  # type: ignore[arg-type]
    assert third.state == "blocked" and "paused" in third.response
    assert rig.live(devs[2][0])
    rig.clock.advance(3601)
    assert not responder.paused()


async def test_relay_errors_during_revoke_are_retried_on_the_next_cycle(rig: Rig) -> None:
    token = rig.token()
    responder = rig.responder()
    rig.relay.faults.update(fail_next=1, status=502, routes=["delete"])
    failed = await responder.on_leak(**leak(rig, token))  # type: ignore[arg-type]
    assert failed.state == "retry" and rig.live(token[0])
    (again,) = await responder.resume()
    assert again.state == "done" and not rig.live(token[0])


async def test_a_restart_mid_action_finishes_the_quarantine(rig: Rig, tmp_path: Path) -> None:
    token = rig.token()
    # The attempt was recorded, then the process died before the relay answered.
    responder = rig.responder()
    responder._insert("lz", token[0], token[1], "auto", "leak", "ep1", "in_progress", "")
    restarted = rig.responder()
    (finished,) = await restarted.resume()
    assert finished.state == "done" and not rig.live(token[0])
    # ...and the same episode is not acted on again.
    again = await restarted.on_leak(**leak(rig, token))  # type: ignore[arg-type]
    assert again.state == "done"
    assert restarted.counts() == {("lz", "auto", "done"): 1}


async def test_a_token_is_never_quarantined_twice(rig: Rig) -> None:
    token = rig.token()
    responder = rig.responder()
    await responder.on_leak(**leak(rig, token))  # type: ignore[arg-type]
    second_episode = await responder.on_leak(**leak(rig, token, episode="ep2"))  # type: ignore[arg-type]
    manual = await responder.manual(provider="lz", token_id=token[0], token=token[1], reason="again")
    assert second_episode.response == manual.response == "already quarantined"
    assert responder.counts() == {("lz", "auto", "done"): 1}


async def test_manual_and_report_paths(rig: Rig) -> None:
    responder = rig.responder(auto_revoke=False)
    dev, prod = rig.token(), rig.token("prod-")
    assert (
        await responder.manual(provider="lz", token_id=dev[0], token=dev[1], reason="x", dry_run=True)
    ).state == "dry_run"
    assert rig.live(dev[0])
    done = await responder.manual(provider="lz", token_id=dev[0], token=dev[1], reason="rotating")
    assert done.state == "done" and not rig.live(dev[0])
    reported = await responder.manual(
        provider="lz", token_id=prod[0], token=prod[1], reason="github", mode="report"
    )
    assert reported.response == "protected: not quarantined" and rig.live(prod[0])
    assert responder.counts() == {
        ("lz", "manual", "dry_run"): 1,
        ("lz", "manual", "done"): 1,
        ("lz", "report", "blocked"): 1,
    }


class CachedRelay:
    """A relay that keeps honouring a disabled key for a while (one-api's cache)."""

    name, kind = "lz", "oneapi"

    def __init__(self) -> None:
        self.refusing_after = 2
        self.checks = 0

    async def poll(self) -> PollResult:
        return PollResult([])

    async def revoke(self, token_id: str, *, delete: bool = False) -> RevokeOutcome:
        return RevokeOutcome(True, False, "disabled")

    async def verify_refused(self, token_id: str) -> bool | None:
        self.checks += 1
        return self.checks > self.refusing_after

    async def aclose(self) -> None:
        return None


async def test_pending_verification_is_rechecked_until_the_relay_refuses_the_key(rig: Rig) -> None:
    relay = CachedRelay()
    policies = PolicyBook([])
    responder = Responder(
        rig.engine, Response(auto_revoke=True), clock=rig.clock, policies=policies, providers=lambda _n: relay
    )
    first = await responder.on_leak(
        provider="lz", token_id="7", token="dev-a-b-2026-01", episode="e", reason="r", complete_poll=True
    )
    assert first.state == "pending_verification" and first.quarantined
    (second,) = await responder.resume()
    assert second.state == "pending_verification"
    (third,) = await responder.resume()
    assert third.state == "done"
    assert await responder.resume() == []
