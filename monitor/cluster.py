"""Several instances, one keywatch: who polls which provider, and who runs the fleet-wide jobs.

PostgreSQL is the coordinator; there is no home-made consensus. Each provider has a lease row
(`provider:<name>`) and the fleet-wide jobs one more (`leader`). An instance holds a lease while
it renews it; every renewal and every takeover happens in the database's clock
(`clock_timestamp()`), so the hosts' clocks need not agree. A lease that is not renewed for
`lease` seconds is free; whoever takes it raises its epoch.

What an instance may do is decided twice:
- locally, `owns()`: the lease was renewed less than `lease` (minus a margin) ago by this
  process's monotonic clock — a process frozen for longer (SIGSTOP, a VM pause, a GC stall) knows
  on waking that it may have lost everything, before it asks anyone;
- in the database, `guard()`: inside the transaction that records an action (a poll's write, a
  notification, a quarantine), the lease row is read FOR SHARE with this instance as owner and the
  epoch it was granted. A takeover (an UPDATE of that row) waits for the action to commit, or the
  action finds the row changed and rolls back (`Fenced`). So a paused or partitioned instance that
  comes back cannot act for a provider it lost.

The leases belong to a member, one process: its instance name and a random session. A process
restarted under its old name takes its share afresh (its predecessor's leases run out), and two
processes given one name by mistake are two members, never one owner twice.

Work is spread evenly: each instance aims at its share of the providers (an even split over the
live instances, the remainder to the first by name), gives up the leases above it (a new
instance then takes them) and takes free ones up to it.
With SQLite there is one instance and `Solo` owns everything.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

import sqlalchemy as sa
from sqlalchemy import Connection, Engine, bindparam, text

from monitor import __version__
from monitor.clock import uptime
from monitor.metrics import Family

__all__ = [
    "LEADER",
    "METADATA",
    "Beat",
    "Cluster",
    "Fenced",
    "Ownership",
    "Solo",
    "default_instance_name",
    "families",
]

log = logging.getLogger("keywatch.cluster")

LEADER = "leader"
_PROVIDER = "provider:"
# A lease is trusted locally for this share of its length after the renewal began: the margin
# covers the renewal's own round trip and a slower local clock.
_LOCAL_SHARE = 0.8

METADATA = sa.MetaData()
instances = sa.Table(
    "instances",
    METADATA,
    sa.Column("name", sa.String, primary_key=True),
    sa.Column("session", sa.String, nullable=False),
    sa.Column("version", sa.String, nullable=False),
    sa.Column("host", sa.String, nullable=False),
    sa.Column("started_at", sa.Float, nullable=False),
    sa.Column("heartbeat_at", sa.Float, nullable=False),
)
leases = sa.Table(
    "leases",
    METADATA,
    sa.Column("name", sa.String, primary_key=True),
    sa.Column("owner", sa.String),
    sa.Column("epoch", sa.Integer, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),
)

_NOW = "EXTRACT(EPOCH FROM clock_timestamp())"


class Fenced(Exception):
    """This instance does not hold the lease (any more): the action must not happen."""


class Ownership(Protocol):
    """What the daemon asks before and while acting for a provider."""

    instance: str  # the configured name, for people and metrics
    shared: bool  # several instances may share the database (PostgreSQL)

    @property
    def member(self) -> str:
        """This process, for leases and claims (the name and a per-process session)."""
        ...

    def owns(self, provider: str) -> bool: ...

    def leader(self) -> bool: ...

    def guard(self, conn: Connection, provider: str) -> None:
        """Raise Fenced unless this instance holds the provider, checked in `conn`'s transaction."""
        ...

    def owned(self) -> list[str]: ...


class Solo:
    """One instance (SQLite, or PostgreSQL used by one daemon alone): everything is its own."""

    shared = False

    def __init__(self, instance: str, providers: Iterable[str]) -> None:
        self.instance = self.member = instance
        self._providers = sorted(providers)

    def set_providers(self, providers: Iterable[str]) -> None:
        self._providers = sorted(providers)

    def owns(self, provider: str) -> bool:
        return True

    def leader(self) -> bool:
        return True

    def guard(self, conn: Connection, provider: str) -> None:
        return None

    def owned(self) -> list[str]:
        return list(self._providers)


@dataclass(frozen=True, slots=True)
class Beat:
    """What one heartbeat changed."""

    gained: tuple[str, ...] = ()
    lost: tuple[str, ...] = ()
    live: int = 1  # instances alive, this one included
    leader_changed: bool = False


@dataclass(slots=True)
class _Held:
    epoch: int
    until: float  # local monotonic deadline


@dataclass(slots=True)
class Cluster:
    """Leases in PostgreSQL. `beat()` is blocking database work: call it from a worker thread,
    every `period` seconds (lease / 3: two renewals can fail before the lease is gone).

    The leases are held by `member`, this process (the instance name and a random session): a
    process restarted under the same name, or two processes given one name by mistake, never
    share leases, fences or outbox claims; each is a member of its own."""

    engine: Engine
    instance: str
    lease: float
    providers: list[str]
    monotonic: Callable[[], float] = field(default_factory=lambda: uptime)
    session: str = field(default_factory=lambda: secrets.token_hex(8))
    _held: dict[str, _Held] = field(default_factory=dict)
    shared: bool = True

    @property
    def member(self) -> str:
        return f"{self.instance}/{self.session}"

    @property
    def period(self) -> float:
        return self.lease / 3

    def set_providers(self, providers: Iterable[str]) -> None:
        self.providers = sorted(set(providers))

    # --- the local view -------------------------------------------------------------------------
    def owns(self, provider: str) -> bool:
        return self._valid(_PROVIDER + provider)

    def leader(self) -> bool:
        return self._valid(LEADER)

    def owned(self) -> list[str]:
        return sorted(
            n.removeprefix(_PROVIDER) for n in self._held if n.startswith(_PROVIDER) and self._valid(n)
        )

    def epoch(self, provider: str) -> int | None:
        """The epoch this member holds the provider under, None if it does not."""
        held = self._held.get(_PROVIDER + provider)
        return held.epoch if held is not None and self._valid(_PROVIDER + provider) else None

    def _valid(self, name: str) -> bool:
        held = self._held.get(name)
        return held is not None and self.monotonic() < held.until

    # --- fencing --------------------------------------------------------------------------------
    def guard(self, conn: Connection, provider: str, *, epoch: int | None = None) -> None:
        """`epoch`: the one the acting component was built under (a poller rebuilt after the
        provider was taken again must not let its predecessor's write through)."""
        name = _PROVIDER + provider
        held = self._held.get(name)
        if held is None or self.monotonic() >= held.until:
            raise Fenced(f"{self.instance} does not hold {provider}")
        if epoch is not None and epoch != held.epoch:
            raise Fenced(f"{self.instance} holds {provider} under epoch {held.epoch}, not {epoch}")
        row = conn.execute(
            text(
                f"SELECT 1 FROM leases WHERE name = :n AND owner = :o AND epoch = :e AND expires_at > {_NOW} "
                "FOR SHARE"
            ),
            {"n": name, "o": self.member, "e": held.epoch},
        ).first()
        if row is None:
            raise Fenced(f"{self.instance} lost {provider} (epoch {held.epoch})")

    # --- the heartbeat --------------------------------------------------------------------------
    def beat(self) -> Beat:
        """Renew what this member holds, give up what is above its share, take free leases up
        to it. One transaction; the local deadlines move only once it committed. Rows held by
        others are never locked (free ones are picked with SKIP LOCKED): two members below their
        share, at a failover, cannot wait on each other or on an owner's poll."""
        began = self.monotonic()
        before = {n: h.epoch for n, h in self._held.items()}
        with self.engine.begin() as conn:
            now = float(conn.execute(text(f"SELECT {_NOW}")).scalar_one())
            self._announce(conn, now)
            alive = [
                str(n)
                for (n,) in conn.execute(
                    text("SELECT name FROM instances WHERE heartbeat_at > :since ORDER BY name"),
                    {"since": now - self.lease},
                )
            ]
            held: dict[str, int] = {
                str(n): int(e)
                for n, e in conn.execute(
                    text(
                        "UPDATE leases SET expires_at = :until WHERE owner = :me AND expires_at > :now "
                        "RETURNING name, epoch"
                    ),
                    {"until": now + self.lease, "me": self.member, "now": now},
                )
            }
            wanted = [_PROVIDER + p for p in self.providers]
            mine = [n for n in held if n.startswith(_PROVIDER)]
            gone = [n for n in mine if n not in wanted]  # a provider no longer configured
            share = _share(len(wanted), alive, self.member)
            kept = sorted(n for n in mine if n in wanted)
            extra = kept[share:] if len(kept) > share else []
            for name in [*gone, *extra]:
                conn.execute(
                    text("UPDATE leases SET owner = NULL, expires_at = 0 WHERE name = :n AND owner = :me"),
                    {"n": name, "me": self.member},
                )
                held.pop(name, None)
            count = sum(1 for n in held if n.startswith(_PROVIDER))
            want_leader = LEADER not in held
            if count < share or want_leader:
                for name, epoch in self._take(conn, wanted, held, share - count, want_leader, now).items():
                    held[name] = epoch
        until = began + self.lease * _LOCAL_SHARE
        self._held = {n: _Held(e, until) for n, e in held.items()}
        gained = tuple(
            sorted(
                n.removeprefix(_PROVIDER)
                for n in held
                if n.startswith(_PROVIDER) and before.get(n) != held[n]
            )
        )
        lost = tuple(
            sorted(
                n.removeprefix(_PROVIDER)
                for n in before
                if n.startswith(_PROVIDER) and held.get(n) != before[n]
            )
        )
        return Beat(gained, lost, max(len(alive), 1), (LEADER in held) != (LEADER in before))

    def _take(
        self, conn: Connection, wanted: list[str], held: dict[str, int], room: int, leader: bool, now: float
    ) -> dict[str, int]:
        """Free or expired leases, up to `room` providers (and the leader's if wanted): each
        member tries them in its own order, so several starting together spread out."""
        names = [n for n in wanted if n not in held] + ([LEADER] if leader else [])
        if not names:
            return {}
        conn.execute(  # rows for providers never leased yet; DO NOTHING locks no existing row
            text(
                "INSERT INTO leases (name, owner, epoch, expires_at) VALUES (:n, NULL, 0, 0) ON CONFLICT (name) DO NOTHING"
            ),
            [{"n": n} for n in names],
        )
        free = {
            str(n)
            for (n,) in conn.execute(
                text(
                    "SELECT name FROM leases WHERE name IN :names AND (owner IS NULL OR expires_at <= :now) "
                    "ORDER BY name FOR UPDATE SKIP LOCKED"
                ).bindparams(bindparam("names", expanding=True)),
                {"names": names, "now": now},
            )
        }
        taken: dict[str, int] = {}
        order = sorted(free - {LEADER}, key=lambda n: zlib.crc32(f"{self.instance}/{n}".encode()))
        for name in order[: max(room, 0)] + ([LEADER] if LEADER in free else []):
            (epoch,) = conn.execute(
                text(
                    "UPDATE leases SET owner = :me, epoch = epoch + 1, expires_at = :until WHERE name = :n "
                    "RETURNING epoch"
                ),
                {"me": self.member, "until": now + self.lease, "n": name},
            ).one()
            taken[name] = int(epoch)
        return taken

    def _announce(self, conn: Connection, now: float) -> None:
        conn.execute(
            text(
                "INSERT INTO instances (name, session, version, host, started_at, heartbeat_at) "
                "VALUES (:n, :s, :v, :h, :now, :now) "
                "ON CONFLICT (name) DO UPDATE SET heartbeat_at = excluded.heartbeat_at"
            ),
            {
                "n": self.member,
                "s": self.session,
                "v": __version__,
                "h": socket.gethostname()[:200],
                "now": now,
            },
        )

    def release(self) -> None:
        """On a clean stop: give every lease back at once (the others take over at their next
        heartbeat instead of after the lease runs out) and leave the live set."""
        with self.engine.begin() as conn:
            conn.execute(
                text("UPDATE leases SET owner = NULL, expires_at = 0 WHERE owner = :me"), {"me": self.member}
            )
            conn.execute(text("DELETE FROM instances WHERE name = :n"), {"n": self.member})
        self._held = {}

    def forget_departed(self, older_than: float) -> int:
        """Members whose heartbeat stopped long ago (killed, not stopped cleanly): their rows go."""
        with self.engine.begin() as conn:
            now = float(conn.execute(text(f"SELECT {_NOW}")).scalar_one())
            return conn.execute(
                text("DELETE FROM instances WHERE heartbeat_at < :before"), {"before": now - older_than}
            ).rowcount


def families(ownership: Ownership, providers: Iterable[str]) -> list[Family]:
    """keywatch_instance_info and keywatch_provider_owner (1 where this instance polls the
    provider): summed over every instance Prometheus scrapes, each provider counts once."""
    mine = set(ownership.owned())
    return [
        Family(
            "keywatch_instance_info",
            "gauge",
            "This keywatch instance (several may share one PostgreSQL database).",
            [({"instance": ownership.instance, "version": __version__}, 1.0)],
        ),
        Family(
            "keywatch_provider_owner",
            "gauge",
            "1 on the instance that polls the provider now, 0 on the others.",
            [({"provider": p, "instance": ownership.instance}, float(p in mine)) for p in sorted(providers)],
        ),
    ]


def _share(providers: int, alive: list[str], me: str) -> int:
    """This member's fair number of providers: an even split, the remainder going to the first
    members by name, so that every member computes the same split from the same live set."""
    if me not in alive:
        alive = sorted([*alive, me])
    base, rest = divmod(providers, len(alive))
    return base + (1 if alive.index(me) < rest else 0)


def default_instance_name() -> str:
    return f"{socket.gethostname()[:60]}-{os.getpid()}"
