"""Leases on a real PostgreSQL database: shares, takeover, fencing, release, name conflicts.

Each instance's local clock is injected (a frozen clock is a paused process); the database's
clock is real, so a lease here is short (a second) and expiry is waited for by polling."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine

from monitor.cluster import LEADER, Cluster, Fenced
from monitor.store import open_engine
from tests.postgres import PostgresDatabase

PROVIDERS = ["a", "b", "c", "d"]
LEASE = 1.0


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def engine(pg_database: PostgresDatabase) -> Iterator[Engine]:
    engine = open_engine(pg_database.url())
    yield engine
    engine.dispose()


def member(engine: Engine, name: str, clock: Clock | None = None) -> Cluster:
    return Cluster(engine, name, LEASE, list(PROVIDERS), monotonic=clock or Clock())


def settle(*members: Cluster, rounds: int = 3) -> None:
    for _ in range(rounds):
        for m in members:
            m.beat()


def wait_for_expiry() -> None:
    time.sleep(LEASE * 1.2)  # the database's own clock decides; nothing to poll but time


def test_two_instances_split_the_providers_evenly_and_disjointly(engine: Engine) -> None:
    one, two = member(engine, "one"), member(engine, "two")
    settle(one, two)
    assert len(one.owned()) == 2 and len(two.owned()) == 2
    assert sorted(one.owned() + two.owned()) == PROVIDERS
    assert one.leader() != two.leader()


def test_a_new_instance_takes_its_share(engine: Engine) -> None:
    one, two = member(engine, "one"), member(engine, "two")
    settle(one)
    assert one.owned() == PROVIDERS
    settle(one, two, rounds=2)
    assert len(one.owned()) == 2 and len(two.owned()) == 2
    three = member(engine, "three")
    settle(one, two, three, rounds=3)
    counts = sorted(len(m.owned()) for m in (one, two, three))
    assert counts == [1, 1, 2]
    assert sorted(one.owned() + two.owned() + three.owned()) == PROVIDERS


def test_a_dead_instance_loses_its_providers_when_the_lease_runs_out(engine: Engine) -> None:
    one, two = member(engine, "one"), member(engine, "two")
    settle(one, two)
    theirs, own = one.owned(), two.owned()
    two.beat()
    assert two.owned() == own  # not before the lease ran out
    gained: set[str] = set()
    deadline = time.monotonic() + LEASE * 3
    while two.owned() != PROVIDERS and time.monotonic() < deadline:  # `one` beats no more
        gained.update(two.beat().gained)
        time.sleep(LEASE / 3)  # the survivor's heartbeat period
    assert two.owned() == PROVIDERS
    assert gained == set(theirs)  # its own stayed its own, under the same epoch
    assert two.leader()


def test_a_paused_instance_knows_it_may_have_lost_everything_and_is_fenced(engine: Engine) -> None:
    clock = Clock()
    one, two = member(engine, "one", clock), member(engine, "two")
    settle(one, two)
    mine = one.owned()[0]
    # Paused past its lease: its own clock says so before the database is asked.
    clock.t += LEASE
    assert one.owned() == [] and not one.owns(mine)
    with engine.begin() as conn, pytest.raises(Fenced):
        one.guard(conn, mine)
    # Its clock lags (a VM pause the monotonic clock did not see): the database still says no.
    clock.t -= LEASE
    wait_for_expiry()
    two.beat()
    assert two.owns(mine)
    with engine.begin() as conn, pytest.raises(Fenced):
        one.guard(conn, mine)
    # Waking up, it renews nothing it lost and learns so.
    beat = one.beat()
    assert mine in beat.lost and not one.owns(mine)
    with engine.begin() as conn:
        two.guard(conn, mine)  # the new owner passes


def test_a_retaken_lease_gets_a_new_epoch_so_old_work_is_fenced(engine: Engine) -> None:
    clock = Clock()
    one = member(engine, "one", clock)
    one.beat()
    stale = one._held["provider:a"].epoch
    wait_for_expiry()
    clock.t += LEASE  # it slept through its lease, nobody took it; it takes it again
    beat = one.beat()
    assert "a" in beat.gained and one._held["provider:a"].epoch == stale + 1


def test_a_clean_stop_hands_over_at_once(engine: Engine) -> None:
    one, two = member(engine, "one"), member(engine, "two")
    settle(one, two)
    one.release()
    assert one.owned() == [] and not one.leader()
    two.beat()
    assert two.owned() == PROVIDERS and two.leader()


def test_two_processes_under_one_name_are_two_members_never_one_owner_twice(engine: Engine) -> None:
    """A restart under the old name, or a name given twice by mistake: leases, fences and claims
    belong to the process (name and session), so the two split the providers like strangers."""
    first, second = member(engine, "same"), member(engine, "same")
    settle(first, second)
    assert len(first.owned()) == 2 and len(second.owned()) == 2
    assert set(first.owned()).isdisjoint(second.owned())
    mine = first.owned()[0]
    with engine.begin() as conn, pytest.raises(Fenced):
        second._held["provider:" + mine] = first._held["provider:" + mine]  # even with its epoch
        second.guard(conn, mine)


def test_a_guard_pinned_to_an_epoch_refuses_after_the_provider_was_taken_again(engine: Engine) -> None:
    clock = Clock()
    one = member(engine, "one", clock)
    one.beat()
    pinned = one.epoch("a")
    wait_for_expiry()
    clock.t += LEASE
    one.beat()  # taken again by the same member, under a new epoch
    with engine.begin() as conn:
        one.guard(conn, "a")
        with pytest.raises(Fenced, match="epoch"):
            one.guard(conn, "a", epoch=pinned)


def test_a_provider_dropped_from_the_config_is_given_back(engine: Engine) -> None:
    one = member(engine, "one")
    one.beat()
    one.set_providers(["a", "b"])
    beat = one.beat()
    assert one.owned() == ["a", "b"] and set(beat.lost) == {"c", "d"}
    assert one.leader() and LEADER not in one.owned()  # the leader lease is kept, and is no provider
