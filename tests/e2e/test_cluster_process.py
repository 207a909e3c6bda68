"""Several `keywatch run` processes sharing one real PostgreSQL database (issue 13), against
simulated relays in their own processes, a webhook receiver for the people told.

- three instances, six providers of four kinds: each provider polled by exactly one instance
  (the simulators count requests by User-Agent, which names the instance), spend as the relays;
- kill -9 the owner of a provider in the middle of a leak: the other takes over within two poll
  intervals, the token is quarantined exactly once and the people told exactly once;
- SIGSTOP an owner until its leases lapse, a leak meanwhile, SIGCONT: it quarantines and tells
  nothing (the new owner did, once);
- PostgreSQL restarted twice under load (a private server, the shared one serves other tests):
  every instance carries on, and no spend is lost or counted twice."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from monitor import __version__
from tests.e2e.procs import SIM_ADMIN, free_port, keywatch, metric_samples, wait_for
from tests.e2e.test_alerting_process import (
    LEAK_SEED,
    LEAK_TOKENS,
    leak_policies,
    post,
    seed_history,
    status,
    webhook,
)
from tests.postgres import PostgresDatabase, PrivateServer

pytestmark = pytest.mark.e2e

SETTINGS = {
    "laozhang": "",
    "oneapi": "",
    "newapi": "\n    user_id: 1",
    "openai": "\n    project_id: proj_sim",
}
LEASE = 3.0  # seconds; the heartbeat renews every second


@dataclass
class Sim:
    name: str
    kind: str
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def truth(self) -> dict[str, Any]:
        return dict(httpx.get(f"{self.url}/_sim/truth", timeout=10).json())

    def agents(self) -> dict[str, int]:
        return dict(httpx.get(f"{self.url}/_sim/requests", timeout=10).json()["by_agent"])


@dataclass
class Instance:
    name: str
    port: int
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def agent(self) -> str:
        return f"keywatch/{__version__} ({self.name})"

    def ready(self) -> dict[str, Any]:
        return dict(httpx.get(f"{self.base}/readyz", timeout=5).json())

    def owns(self) -> set[str]:
        return set(self.ready()["owns"])

    def polls(self, provider: str) -> float:
        samples = metric_samples(httpx.get(f"{self.base}/metrics", timeout=10).text)
        return samples.get(("keywatch_poll_duration_seconds_count", frozenset({("provider", provider)})), 0.0)

    def last_success(self, provider: str) -> float:
        samples = metric_samples(httpx.get(f"{self.base}/metrics", timeout=10).text)
        key = ("keywatch_last_poll_success_timestamp_seconds", frozenset({("provider", provider)}))
        return samples.get(key, 0.0)


def start_sims(stack: contextlib.ExitStack, tmp: Path, kinds: dict[str, str], **sizes: int) -> dict[str, Sim]:
    sims = {name: Sim(name, kind, free_port()) for name, kind in kinds.items()}
    for i, sim in enumerate(sims.values()):
        tokens, seed = sizes.get(f"{sim.name}_tokens", 8), sizes.get(f"{sim.name}_seed", 40 + i)
        args = ["simulate", "--listen", f"127.0.0.1:{sim.port}", "--flavor", sim.kind]
        args += ["--tokens", str(tokens), "--seed", str(seed)]
        stack.enter_context(keywatch(*args, log=tmp / f"sim-{sim.name}.log"))
    for sim in sims.values():
        wait_for(lambda sim=sim: sim.truth(), what=f"simulator {sim.name}")
    return sims


def write_config(path: Path, url: str, sims: dict[str, Sim], *, interval: str, extra: str = "") -> Path:
    providers = "".join(
        f"  - name: {s.name}\n    kind: {s.kind}\n    base_url: {s.url}\n    admin_token: {SIM_ADMIN}\n"
        f"    poll_interval: {interval}\n    timeout: 5s{SETTINGS[s.kind]}\n"
        for s in sims.values()
    )
    path.write_text(
        f"database: {url}\nlisten: 127.0.0.1:${{KW_PORT}}\n"
        f"cluster: {{instance: '${{KW_INSTANCE}}', lease: {LEASE:g}s}}\nproviders:\n{providers}{extra}"
    )
    return path


def start(stack: contextlib.ExitStack, cfg: Path, name: str, tmp: Path) -> Instance:
    port = free_port()
    log = tmp / f"kw-{name}.log"
    env = {"KW_PORT": str(port), "KW_INSTANCE": name}
    proc = stack.enter_context(keywatch("-c", str(cfg), "run", log=log, env=env))
    instance = Instance(name, port, proc, log)
    wait_for(lambda: "owns" in instance.ready(), what=f"instance {name} serving")
    return instance


def ownership(instances: list[Instance], providers: set[str], shares: list[int]) -> dict[str, str]:
    """provider -> instance once every provider has exactly one owner, split as `shares`, and
    the same in two looks a heartbeat apart."""
    last: dict[str, Any] = {"seen": None}

    def check() -> dict[str, str] | None:
        owned = {i.name: i.owns() for i in instances}
        owner = {p: n for n, ps in owned.items() for p in ps}
        exact = sum(len(ps) for ps in owned.values()) == len(providers) and set(owner) == providers
        if not exact or sorted(len(ps) for ps in owned.values()) != sorted(shares):
            last["seen"] = None
            return None
        stable, last["seen"] = owner == last["seen"], owner
        if not stable:
            time.sleep(LEASE / 3)
        return owner if stable else None

    return wait_for(check, timeout=60, what="the providers to settle on their owners")


def spend(url: str) -> dict[str, dict[str, float]]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT provider, name, spend_total_usd FROM tokens")).all()
    finally:
        engine.dispose()
    out: dict[str, dict[str, float]] = {}
    for provider, name, total in rows:
        out.setdefault(str(provider), {})[str(name)] = float(total)
    return out


def assert_spend_is_the_relays(url: str, sims: dict[str, Sim]) -> None:
    """The rule of tests/e2e/test_flavors.py: month-to-date and lifetime counters exact, spend
    from request logs and settled usage buckets never more than the relay booked."""
    got = spend(url)
    for name, sim in sims.items():
        truth = {t["name"]: t for t in sim.truth()["tokens"] if not t["deleted"]}
        assert got.get(name) and set(got[name]) <= set(truth), name
        for token, total in got[name].items():
            if sim.kind in ("laozhang", "newapi"):
                expected = (
                    truth[token]["month_usage"] if sim.kind == "laozhang" else truth[token]["lifetime_usd"]
                )
                assert total == pytest.approx(expected, abs=1e-5), (name, token)
            else:
                assert 0 <= total <= truth[token]["lifetime_usd"] + 1e-4, (name, token)


def freeze_after(sim: Sim, seconds: float) -> None:
    """Advance the relay, then stop its clock mid-minute (traffic buckets fall on minutes)."""
    now = post(sim.url, "advance", {"seconds": seconds})["now"]
    post(sim.url, "advance", {"to": now // 60 * 60 + 90})
    post(sim.url, "speed", {"speed": 0})


def more_polls(owner: dict[str, Instance], n: int, *, timeout: float = 60) -> None:
    start = {p: i.polls(p) for p, i in owner.items()}
    wait_for(
        lambda: all(i.polls(p) >= start[p] + n for p, i in owner.items()),
        timeout=timeout,
        what=f"{n} more polls of every provider",
    )


# --- three instances, six providers -------------------------------------------------------------


def test_three_instances_share_six_providers_and_each_is_polled_by_exactly_one(
    tmp_path: Path, pg_database: PostgresDatabase
) -> None:
    kinds = {
        "lz1": "laozhang",
        "lz2": "laozhang",
        "one": "oneapi",
        "new1": "newapi",
        "new2": "newapi",
        "oa": "openai",
    }
    url = pg_database.url()
    with contextlib.ExitStack() as stack:
        sims = start_sims(stack, tmp_path, kinds)
        cfg = write_config(tmp_path / "kw.yaml", url, sims, interval="1s")
        instances = {n: start(stack, cfg, n, tmp_path) for n in ("a", "b", "c")}
        owners = ownership(list(instances.values()), set(kinds), [2, 2, 2])
        owner = {p: instances[n] for p, n in owners.items()}
        for sim in sims.values():
            freeze_after(sim, 1800)
        before = {name: sim.agents() for name, sim in sims.items()}
        more_polls(owner, 4)
        after = {name: sim.agents() for name, sim in sims.items()}
        for name in kinds:
            callers = {a for a, n in after[name].items() if n > before[name].get(a, 0)}
            assert callers == {owner[name].agent}, (name, before[name], after[name])
        more_polls(owner, 2)  # caught up with the frozen relays
        assert_spend_is_the_relays(url, sims)
        info = metric_samples(httpx.get(f"{instances['a'].base}/metrics").text)
        assert info[("keywatch_instance_info", frozenset({("instance", "a"), ("version", __version__)}))] == 1
        for provider in kinds:  # summed over the instances, each provider has one owner
            total = sum(
                metric_samples(httpx.get(f"{i.base}/metrics").text)[
                    ("keywatch_provider_owner", frozenset({("provider", provider), ("instance", i.name)}))
                ]
                for i in instances.values()
            )
            assert total == 1, provider


# --- a leak, and the owner dies or freezes in the middle of it ---------------------------------

LEAK_INTERVAL = 3.0  # seconds between polls: a takeover must come within two of them


@contextlib.contextmanager
def seeded_pair(
    tmp_path: Path, url: str, hook_url: str
) -> Iterator[tuple[dict[str, Sim], dict[str, Instance], dict[str, str]]]:
    """Two relays (`sim`: a new-api with two weeks of history, `lz`: a laozhang) and two instances
    a and b, one provider each; yields the sims, the instances and the owners."""
    with contextlib.ExitStack() as stack:
        sims = start_sims(
            stack, tmp_path, {"sim": "newapi", "lz": "laozhang"}, sim_tokens=LEAK_TOKENS, sim_seed=LEAK_SEED
        )
        cfg = write_config(
            tmp_path / "kw.yaml", url, sims, interval=f"{LEAK_INTERVAL:g}s", extra=leak_policies(hook_url)
        )
        cfg.write_text(cfg.read_text().replace("    user_id: 1", "    user_id: 1\n    reveal_keys: true"))
        # A first run learns the tokens; then two weeks of history go in, as in the single-daemon test.
        (tmp_path / "seed").mkdir()
        with contextlib.ExitStack() as first:
            seed = start(first, cfg, "a", tmp_path / "seed")
            wait_for(lambda: seed.ready()["ready"] and seed.owns() == {"sim", "lz"}, what="the first run")
            seed.proc.send_signal(signal.SIGTERM)
            assert seed.proc.wait(timeout=15) == 0
        seed_history(url, sims["sim"].truth(), tokens=LEAK_TOKENS, seed=LEAK_SEED)
        instances = {n: start(stack, cfg, n, tmp_path) for n in ("a", "b")}
        owners = ownership(list(instances.values()), {"sim", "lz"}, [1, 1])
        yield sims, instances, owners


def quarantines(url: str, token: str) -> list[tuple[str, str]]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text("SELECT mode, state FROM quarantine_actions WHERE token = :t ORDER BY id"),
                {"t": token},
            ).all()
    finally:
        engine.dispose()
    return [(str(m), str(s)) for m, s in rows]


def leak_notices(hook: Any, token: str) -> list[dict[str, Any]]:
    return [h for h in hook.bodies() if "leak_suspected" in h["title"] and token in h["title"]]


def victim(sim: Sim) -> str:
    live = [t for t in sim.truth()["tokens"] if not t["deleted"] and t["status"] == "active"]
    (dev,) = [t for t in live if t["archetype"] == "dormant" and t["name"].startswith(("dev-", "test-"))]
    return str(dev["name"])


@pytest.mark.slow  # a whole story across processes; CI runs it (make test-all)
def test_kill_9_of_the_owner_mid_leak_hands_over_within_two_polls_and_acts_once(
    tmp_path: Path, pg_database: PostgresDatabase
) -> None:
    url = pg_database.url()
    with webhook() as (hook, hook_url), seeded_pair(tmp_path, url, hook_url) as (sims, instances, owners):
        sim = sims["sim"]
        dead = instances[owners["sim"]]
        (heir,) = [i for i in instances.values() if i is not dead]
        polls = dead.polls("sim")
        wait_for(lambda: dead.polls("sim") >= polls + 2, what="two quiet polls")
        token = victim(sim)
        assert quarantines(url, token) == [] and hook.bodies() == []

        post(sim.url, "leak", {"token": token})
        post(sim.url, "advance", {"seconds": 300})
        polls = dead.polls("sim")
        wait_for(lambda: dead.polls("sim") >= polls + 1, what="the owner's poll of the leak")
        dead.proc.kill()  # SIGKILL: no lease released, whatever it was doing left where it was
        killed = time.time()
        dead.proc.wait(timeout=5)

        taken = wait_for(
            lambda: heir.last_success("sim") or None, timeout=30, what="the takeover's first poll"
        )
        assert taken - killed <= 2 * LEAK_INTERVAL, f"took over {taken - killed:.1f} s after the kill"
        wait_for(lambda: status(sim.url, token) == "disabled", timeout=30, what="the token quarantined")
        wait_for(lambda: leak_notices(hook, token), timeout=15, what="the leak notice")
        polls = heir.polls("sim")
        wait_for(lambda: heir.polls("sim") >= polls + 3, what="three more polls")
        assert quarantines(url, token) == [("auto", "done")]
        assert len(leak_notices(hook, token)) == 1, [h["title"] for h in hook.bodies()]
        (notice,) = leak_notices(hook, token)
        assert notice["title"].startswith(f"[FIRING:1] leak_suspected · sim/{token} — quarantined")


@pytest.mark.slow  # a whole story across processes; CI runs it (make test-all)
def test_a_frozen_owner_that_wakes_up_acts_for_nothing_it_lost(
    tmp_path: Path, pg_database: PostgresDatabase
) -> None:
    url = pg_database.url()
    with webhook() as (hook, hook_url), seeded_pair(tmp_path, url, hook_url) as (sims, instances, owners):
        sim = sims["sim"]
        frozen = instances[owners["sim"]]
        (other,) = [i for i in instances.values() if i is not frozen]
        token = victim(sim)
        frozen.proc.send_signal(signal.SIGSTOP)
        try:
            wait_for(lambda: other.owns() == {"sim", "lz"}, timeout=30, what="the other instance taking over")
            polls = other.polls("sim")
            wait_for(lambda: other.polls("sim") >= polls + 1, what="its first poll of sim")
            post(sim.url, "leak", {"token": token})
            post(sim.url, "advance", {"seconds": 300})
            wait_for(lambda: status(sim.url, token) == "disabled", timeout=30, what="the token quarantined")
            wait_for(lambda: leak_notices(hook, token), timeout=15, what="the leak notice")
        finally:
            frozen.proc.send_signal(signal.SIGCONT)
        resumed = time.time()
        # It wakes with its leases long gone: it drops them, then takes its share back from the
        # database as the other left it (the alert firing, the token quarantined, people told).
        wait_for(
            lambda: "lost" in frozen.log.read_text() and frozen.ready()["owns"] != [],
            timeout=30,
            what="the woken instance to settle",
        )
        ownership(list(instances.values()), {"sim", "lz"}, [1, 1])
        polls = {i.name: i.polls("sim") for i in instances.values()}
        wait_for(
            lambda: sum(i.polls("sim") for i in instances.values()) >= sum(polls.values()) + 3,
            what="three more polls of sim",
        )
        assert quarantines(url, token) == [("auto", "done")]
        assert len(leak_notices(hook, token)) == 1, [h["title"] for h in hook.bodies()]
        assert "quarantined sim/" not in frozen.log.read_text()
        assert time.time() - resumed < 60


# --- PostgreSQL restarted under load -------------------------------------------------------------


@pytest.mark.slow  # a whole story across processes; CI runs it (make test-all)
def test_postgresql_restarted_under_load_every_instance_recovers_and_nothing_is_lost_or_doubled(
    tmp_path: Path,
) -> None:
    server = PrivateServer(free_port())
    try:
        url = server.url
        kinds = {"lz": "laozhang", "new": "newapi", "one": "oneapi"}
        with contextlib.ExitStack() as stack:
            sims = start_sims(stack, tmp_path, kinds, lz_tokens=20, new_tokens=20, one_tokens=20)
            cfg = write_config(tmp_path / "kw.yaml", url, sims, interval="1s")
            instances = {n: start(stack, cfg, n, tmp_path) for n in ("a", "b")}
            ownership(list(instances.values()), set(kinds), [2, 1])
            for sim in sims.values():  # the relays run ahead: every poll finds new spend
                post(sim.url, "speed", {"speed": 120})
            for _ in range(2):
                time.sleep(1.5)  # polls land before, during and after: that is the point
                server.restart()
            time.sleep(1.5)
            for sim in sims.values():
                freeze_after(sim, 60)
            owners = ownership(list(instances.values()), set(kinds), [2, 1])
            owner = {p: instances[n] for p, n in owners.items()}
            wait_for(
                lambda: all(i.ready()["ready"] for i in instances.values()), timeout=30, what="ready again"
            )
            more_polls(owner, 4)
            assert_spend_is_the_relays(url, sims)
            for instance in instances.values():
                assert instance.proc.poll() is None, instance.name
                assert "Traceback" not in instance.log.read_text(), instance.name
    finally:
        server.stop()


def test_private_server_helper_is_what_the_restart_test_relies_on() -> None:
    """The restart test's own server takes connections, survives a restart, and stops."""
    server = PrivateServer(free_port())
    try:
        engine = sa.create_engine(server.url)
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT 1")).scalar_one() == 1
        server.restart()
        engine.dispose()
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT 2")).scalar_one() == 2
        engine.dispose()
    finally:
        server.stop()
    assert not server.dir.exists()
