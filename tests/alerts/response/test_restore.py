"""Reversible quarantine (issue 14): a token quarantined by disabling is re-enabled by `restore`,
audited and verified at the relay; the incident it undoes is not quarantined again, a new one
is. Against the new-api simulator on loopback (real HTTP) and the store on both engines."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, replace

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy import Engine

from alerts.response.quarantine import Responder, quarantine_actions
from monitor.clock import FakeClock
from monitor.policy import PolicyBook
from monitor.providers.http import RelayHTTP, make_client
from monitor.providers.newapi import NewAPIProvider
from monitor.secret import Secret
from monitor.settings import Response
from monitor.simulator import SimServer, SimulatedRelay, make_relay, serve
from monitor.simulator.token import SimToken
from monitor.store import open_engine
from tests.monitor.providers.flavor_support import settings_for

START = 1_794_300_000.0


async def no_sleep(_: float) -> None:
    return None


@dataclass
class Rig:
    relay: SimulatedRelay
    clock: FakeClock
    engine: Engine
    provider: NewAPIProvider
    responder: Responder
    sim_ids: dict[str, str]  # the adapter's token id (new-api's number) -> the simulator's

    def dev_token(self) -> tuple[str, str]:
        """(the adapter's token id, name) of a live dev token."""
        now = self.clock.now()
        tok = next(t for t in self.relay.list_tokens() if t.name.startswith("dev-") and t.accepts_key(now))
        return next(i for i, s in self.sim_ids.items() if s == tok.id), tok.name

    def sim(self, token_id: str) -> SimToken:
        return self.relay.token(self.sim_ids[token_id])

    def live(self, token_id: str) -> bool:
        return self.sim(token_id).accepts_key(self.clock.now())

    def rows(self) -> list[tuple[str, str]]:
        c = quarantine_actions.c
        with self.engine.connect() as conn:
            return [(str(m), str(s)) for m, s in conn.execute(sa.select(c.mode, c.state).order_by(c.id))]


@pytest.fixture
async def rig(store_url: str) -> AsyncIterator[Rig]:
    clock = FakeClock(START)
    relay = make_relay(tokens=20, seed=5, clock=clock)
    server: SimServer = await serve(relay, "127.0.0.1", 0, flavor="newapi")
    client: httpx.AsyncClient = make_client(timeout=5)
    settings = replace(
        settings_for("newapi", server.url, reveal_keys=True), name="np", admin_token=Secret(relay.admin_token)
    )
    provider = NewAPIProvider(settings, RelayHTTP(client, server.url, retries=0, sleep=no_sleep))
    listed = await provider.poll()
    by_name = {t.name: t.id for t in relay.list_tokens()}
    sim_ids = {o.token_id: by_name[o.name] for o in listed.observations}
    engine = open_engine(store_url)
    response = Response(auto_revoke=True, max_per_hour=3)
    responder = Responder(
        engine, response, clock=clock, policies=PolicyBook([], ()), providers=lambda _n: provider
    )
    yield Rig(relay, clock, engine, provider, responder, sim_ids)
    engine.dispose()
    await client.aclose()
    await server.close()


def leak(token: tuple[str, str], episode: str) -> dict[str, object]:
    return {
        "provider": "np",
        "token_id": token[0],
        "token": token[1],
        "episode": episode,
        "reason": "leak",
        "complete_poll": True,
    }


async def test_restore_re_enables_a_disabled_token_and_the_same_incident_leaves_it_alone(rig: Rig) -> None:
    token = rig.dev_token()
    decision = await rig.responder.on_leak(**leak(token, f"fp@{START - 600:.0f}"))  # type: ignore[arg-type]
    assert decision.quarantined and not rig.live(token[0])
    assert rig.sim(token[0]).deleted is False  # disabled, not destroyed

    restored = await rig.responder.restore(
        provider="np", token_id=token[0], token=token[1], reason="false alarm"
    )
    assert restored.state == "done" and restored.response == "restored", restored
    assert rig.live(token[0])
    assert rig.rows() == [("auto", "done"), ("restore", "done")]

    again = await rig.responder.on_leak(**leak(token, f"fp@{START - 600:.0f}"))  # type: ignore[arg-type]
    assert not again.quarantined and "restored" in again.response
    assert rig.live(token[0]) and rig.rows() == [("auto", "done"), ("restore", "done")]

    new = await rig.responder.on_leak(**leak(token, f"fp@{START + 60:.0f}"))  # a new incident still acts
    assert new.quarantined and not rig.live(token[0])
    assert rig.rows() == [("auto", "done"), ("restore", "done"), ("auto", "done")]
    assert rig.responder.counts()[("np", "restore", "done")] == 1


async def test_restore_refuses_what_it_cannot_undo(rig: Rig) -> None:
    token = rig.dev_token()
    nothing = await rig.responder.restore(provider="np", token_id=token[0], token=token[1], reason="r")
    assert nothing.state == "none" and "nothing to restore" in nothing.response
    deleting = Responder(
        rig.engine,
        Response(auto_revoke=True, action="delete"),
        clock=rig.clock,
        policies=PolicyBook([], ()),
        providers=lambda _n: rig.provider,
    )
    await deleting.manual(provider="np", token_id=token[0], token=token[1], reason="leak")
    with pytest.raises(KeyError):  # deleted at the relay: gone from its list
        rig.sim(token[0])
    gone = await rig.responder.restore(provider="np", token_id=token[0], token=token[1], reason="r")
    assert gone.state == "failed" and "deleted" in gone.response
    assert [m for m, _ in rig.rows()] == ["manual"]  # a refusal is not an action: nothing recorded


async def test_a_restore_under_way_is_never_taken_for_an_open_quarantine(rig: Rig) -> None:
    """The daemon finishes open quarantine rows every cycle; a restore row that a `keywatch
    restore` process has recorded but not finished is not one of them (it would disable the key
    again)."""
    token = rig.dev_token()
    await rig.responder.on_leak(**leak(token, f"fp@{START:.0f}"))  # type: ignore[arg-type]
    rig.responder._insert("np", token[0], token[1], "restore", "r", None, "in_progress", "calling the relay")
    assert await rig.responder.resume() == []
    assert [m for m, _ in rig.rows()] == ["auto", "restore"]


async def test_a_restore_covers_the_incident_that_began_before_it_whatever_quarantined_the_token(
    rig: Rig,
) -> None:
    """A report (or `keywatch revoke`) quarantined the token while a leak alert fires; a human
    restores it: the alert's incident, begun before the restore, does not quarantine it again."""
    token = rig.dev_token()
    await rig.responder.manual(
        provider="np", token_id=token[0], token=token[1], reason="report", mode="report"
    )
    assert not rig.live(token[0])
    await rig.responder.restore(provider="np", token_id=token[0], token=token[1], reason="false alarm")
    same = await rig.responder.on_leak(**leak(token, f"fp@{START - 300:.0f}"))  # type: ignore[arg-type]
    assert not same.quarantined and rig.live(token[0])
