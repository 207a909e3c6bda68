"""The simulated relay: its traffic model, the laozhang HTTP surface and the /_sim/ control API."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import orjson
import pytest

from monitor.clock import FakeClock
from monitor.simulator import (
    Archetype,
    Faults,
    Limits,
    Outcome,
    SimClock,
    SimServer,
    SimulatedRelay,
    make_relay,
    parse_listen,
    run_simulator,
    serve,
)

START = datetime(2026, 3, 2, 12, 0, tzinfo=UTC).timestamp()  # a Monday, noon UTC
NAME_RE = re.compile(r"^(prod|staging|test|dev)-[a-z0-9]+-[a-z0-9]+-\d{4}-\d{2}$")
TOKEN_FIELDS = {
    "id", "name", "status", "created_at", "last_used_at", "expires_at",
    "billing_method", "permissions", "limits", "ip_whitelist",
}  # fmt: skip


def relay_at(start: float = START, **kwargs: Any) -> tuple[SimulatedRelay, FakeClock]:
    clock = FakeClock(start)
    return make_relay(clock=clock, **kwargs), clock


def local_ts(
    tz: str, year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> float:
    return datetime(year, month, day, hour, minute, second, tzinfo=ZoneInfo(tz)).timestamp()


def admin(relay: SimulatedRelay) -> dict[str, str]:
    return {"Authorization": f"Bearer {relay.admin_token}"}


def key_auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


Running = tuple[SimulatedRelay, FakeClock, httpx.AsyncClient]


@pytest.fixture
async def running() -> AsyncIterator[Running]:
    relay, clock = relay_at(tokens=40, seed=7)
    server = await serve(relay, port=0)
    async with httpx.AsyncClient(base_url=server.url) as client:
        yield relay, clock, client
    await server.close()


# --- the token population ---------------------------------------------------------------------


def test_fleet_is_deterministic_per_seed() -> None:
    a, _ = relay_at(tokens=40, seed=5)
    b, _ = relay_at(tokens=40, seed=5)
    c, _ = relay_at(tokens=40, seed=6)
    assert [(t.id, t.name, t.key, t.lifetime_usd) for t in a.list_tokens()] == [
        (t.id, t.name, t.key, t.lifetime_usd) for t in b.list_tokens()
    ]
    assert a.keys() != c.keys()


def test_fleet_looks_like_a_real_relay() -> None:
    relay, _ = relay_at(tokens=300, seed=2)
    tokens = relay.list_tokens()
    assert len(tokens) == 300
    assert all(re.fullmatch(r"key_\d{6}", t.id) for t in tokens)
    assert all(re.fullmatch(r"sk-[A-Za-z0-9]{48}", t.key) for t in tokens)
    assert len({t.id for t in tokens}) == len({t.key for t in tokens}) == len({t.name for t in tokens}) == 300
    conventional = sum(bool(NAME_RE.match(t.name)) for t in tokens) / len(tokens)
    assert 0.7 < conventional < 0.97  # mostly [env]-[project]-[purpose]-[date], some not
    assert {relay.status(t) for t in tokens} == {"active", "unused", "revoked", "expired"}
    assert set(Archetype) == {t.archetype for t in tokens}
    prod = [t for t in tokens if t.name.startswith("prod-")]
    assert sum(bool(t.ip_whitelist) for t in prod) > 0.7 * len(prod)
    assert any(t.limits.daily_usd is None and t.limits.monthly_usd is None for t in tokens)
    assert all(t.last_used_at is None for t in tokens if relay.status(t) == "unused")


def test_default_fleet_has_a_dormant_token_and_spenders() -> None:
    relay, _ = relay_at()
    kinds = [t.archetype for t in relay.list_tokens()]
    assert len(kinds) == 40
    assert Archetype.DORMANT in kinds
    assert (
        sum(k in (Archetype.BUSINESS, Archetype.SERVICE, Archetype.BATCH, Archetype.SPARSE) for k in kinds)
        >= 30
    )


# --- time and windows -------------------------------------------------------------------------


def test_simclock_runs_at_speed_and_only_forward() -> None:
    base = FakeClock(1000.0)
    clock = SimClock(base, speed=60.0)
    base.advance(2)
    assert clock.now() == 1120.0
    clock.set_speed(1.0)
    base.advance(5)
    assert clock.now() == 1125.0
    clock.advance(100)
    assert clock.now() == 1225.0
    base.set(0.0)  # the base going back never takes simulated time back
    assert clock.now() == 1225.0
    with pytest.raises(ValueError):
        clock.advance(-1)


def test_windows_reset_at_the_relays_local_midnight_and_month_start() -> None:
    tz = "Asia/Shanghai"
    month_end = local_ts(tz, 2026, 1, 31, 23, 50)
    relay, clock = relay_at(month_end, tokens=0, tz=tz)
    tok, _ = relay.create_token("prod-api-gateway-2026-01", archetype="service", usd_per_hour=30.0)

    clock.set(local_ts(tz, 2026, 1, 31, 23, 59, 59) + 0.9)
    before = relay.token(tok.id)
    today, month, requests = before.today_usage, before.month_usage, before.today_requests
    assert today > 0 and month == today and requests > 0

    clock.set(local_ts(tz, 2026, 2, 1, 0, 0, 30))  # local midnight, and a new month
    after = relay.token(tok.id)
    assert 0 < after.today_usage < today
    assert after.month_usage == after.today_usage
    assert after.today_requests < requests

    clock.set(local_ts(tz, 2026, 2, 1, 23, 59, 59))
    day1 = relay.token(tok.id).today_usage
    clock.set(local_ts(tz, 2026, 2, 2, 0, 0, 30))  # a midnight inside the month
    day2, month2 = relay.token(tok.id).today_usage, tok.month_usage
    assert day2 < day1
    assert month2 == pytest.approx(day1 + day2, abs=1e-6)

    clock.set(local_ts(tz, 2026, 2, 2, 8, 0, 30))  # UTC midnight is nothing special to this relay
    assert relay.token(tok.id).today_usage > day2


def test_lifetime_equals_the_sum_of_observed_window_deltas() -> None:
    tz = "America/New_York"
    start = local_ts(tz, 2026, 2, 27, 9, 3)
    relay, clock = relay_at(start, tokens=40, seed=3, tz=tz)
    boundaries = [local_ts(tz, 2026, 2, 28), local_ts(tz, 2026, 3, 1), local_ts(tz, 2026, 3, 2)]
    polls = sorted({start + i * 420.0 for i in range(1, 3 * 24 * 60 // 7)} | {b - 0.001 for b in boundaries})

    first = {t.id: (t.lifetime_usd, t.lifetime_requests) for t in relay.list_tokens()}
    prev = {t.id: (t.month_usage, t.today_requests) for t in relay.list_tokens()}
    seen_usd = dict.fromkeys(prev, 0.0)
    seen_requests = dict.fromkeys(prev, 0)
    for ts in polls:
        clock.set(ts)
        for tok in relay.list_tokens():
            month0, req0 = prev[tok.id]
            # what a poller does: a window that went down has reset, and holds only new spend
            seen_usd[tok.id] += tok.month_usage - month0 if tok.month_usage >= month0 else tok.month_usage
            seen_requests[tok.id] += (
                tok.today_requests - req0 if tok.today_requests >= req0 else tok.today_requests
            )
            prev[tok.id] = (tok.month_usage, tok.today_requests)

    spent = 0.0
    for tid, (usd0, req0) in first.items():
        assert seen_usd[tid] == pytest.approx(relay.total_spend(tid) - usd0, abs=1e-6 * len(polls))
        assert seen_requests[tid] == relay.total_requests(tid) - req0
        spent += relay.total_spend(tid) - usd0
    assert spent > 100  # the check had traffic to check


def test_traffic_does_not_depend_on_how_often_it_is_read() -> None:
    a, clock_a = relay_at(tokens=40, seed=9)
    b, clock_b = relay_at(tokens=40, seed=9)
    for _ in range(6 * 60):
        clock_a.advance(60)
        a.list_tokens()
    clock_b.advance(6 * 3600)
    assert [(t["id"], t["lifetime_usd"], t["today_requests"]) for t in a.truth()] == [
        (t["id"], t["lifetime_usd"], t["today_requests"]) for t in b.truth()
    ]


def test_seasonality_follows_the_traffic_time_zone() -> None:
    def spend(traffic_tz: str) -> tuple[float, float]:
        """(02:00-04:00, 12:00-14:00 Berlin) spend of a business-hours token."""
        tz = "Europe/Berlin"
        relay, clock = relay_at(local_ts(tz, 2026, 3, 3, 2), tokens=0, traffic_tz=traffic_tz)
        tok, _ = relay.create_token("prod-crm-assistant-2026-03", archetype="business", usd_per_hour=5.0)
        clock.set(local_ts(tz, 2026, 3, 3, 4))
        night = relay.total_spend(tok.id)
        clock.set(local_ts(tz, 2026, 3, 3, 12))
        noon = relay.total_spend(tok.id)
        clock.set(local_ts(tz, 2026, 3, 3, 14))
        return night, relay.total_spend(tok.id) - noon

    night, office = spend("Europe/Berlin")
    assert office > 10 * night
    night, office = spend("America/Los_Angeles")  # Berlin's lunchtime is the small hours there
    assert office < night + 1.0


def test_idle_tokens_never_spend() -> None:
    relay, clock = relay_at(tokens=500, idle_fraction=1.0)
    before = relay.truth()
    clock.advance(3 * 86_400)
    after = relay.truth()
    assert after == before
    assert len(relay.events) == 0


# --- incidents --------------------------------------------------------------------------------


def test_a_leak_makes_a_dormant_token_spend_20x_from_new_ips() -> None:
    relay, clock = relay_at(tokens=40, seed=4)
    dormant = next(t for t in relay.list_tokens() if t.archetype is Archetype.DORMANT)
    old_ips = set(dormant.ips)
    clock.advance(86_400)
    assert relay.total_spend(dormant.id) == dormant.lifetime_usd  # dormant: nothing happens on its own
    base = relay.total_spend(dormant.id)

    relay.start_leak(dormant.name)
    leak_start = relay.now()
    clock.advance(2 * 3600)
    leaked = relay.total_spend(dormant.id) - base
    assert leaked >= 20 * dormant.usd_per_hour * 2  # 20x its mean hourly spend while it was in use
    events = relay.events_between(leak_start, relay.now(), dormant.id)
    assert events and {e.ip for e in events}.isdisjoint(old_ips)
    assert {e.model for e in events} <= {"gpt-4o", "o1"}
    assert relay.status(dormant) == "active"

    relay.revoke_token(dormant.id)  # quarantine stops the drain
    stopped = relay.total_spend(dormant.id)
    clock.advance(3600)
    assert relay.total_spend(dormant.id) == stopped


def test_leak_on_a_busy_token_adds_to_its_normal_traffic() -> None:
    relay, clock = relay_at(tokens=0)
    tok, _ = relay.create_token("prod-webapp-api-2026-03", archetype="service", usd_per_hour=2.0)
    clock.advance(3600)
    normal = relay.total_spend(tok.id)
    relay.start_leak(tok.id, multiplier=20, new_ips=False)
    clock.advance(3600)
    with_leak = relay.total_spend(tok.id) - normal
    assert with_leak > 20 * normal
    relay.stop_leak(tok.id)
    assert relay.token(tok.id).leak is None


def test_push_over_budget_crosses_the_configured_limit() -> None:
    relay, _ = relay_at(tokens=40, seed=1)
    tok = next(t for t in relay.list_tokens() if t.limits.daily_usd and t.limits.monthly_usd)
    added = relay.push_over_budget(tok.id, "day")
    assert added > 0
    assert tok.limits.daily_usd is not None and relay.token(tok.id).today_usage > tok.limits.daily_usd
    assert relay.push_over_budget(tok.id, "day") == 0.0  # already over
    relay.push_over_budget(tok.id, "month")
    assert tok.limits.monthly_usd is not None and relay.token(tok.id).month_usage > tok.limits.monthly_usd
    target = tok.today_usage + 10.0  # e.g. a budget from keywatch's config
    assert relay.push_over_budget(tok.id, "day", target_usd=target) > 0
    assert tok.today_usage > target
    unlimited, _ = relay.create_token("dev-x-y-2026-03")
    with pytest.raises(ValueError):
        relay.push_over_budget(unlimited.id)


def test_add_spend_is_refused_for_a_revoked_token() -> None:
    relay, _ = relay_at(tokens=0)
    tok, _ = relay.create_token("test-a-b-2026-03")
    relay.add_spend(tok.id, 1.25, requests=3, model="gpt-4o", ip="192.0.2.9")
    assert (tok.today_usage, tok.today_requests, relay.status(tok)) == (1.25, 3, "active")
    relay.revoke_token(tok.id)
    with pytest.raises(ValueError):
        relay.add_spend(tok.id, 1.0)


def test_enforced_limits_stop_traffic_at_the_daily_limit() -> None:
    relay, clock = relay_at(tokens=0, enforce_limits=True)
    tok, _ = relay.create_token(
        "prod-a-b-2026-03", archetype="service", usd_per_hour=10.0, limits=Limits(daily_usd=5.0)
    )
    clock.advance(6 * 3600)
    today = relay.token(tok.id).today_usage
    assert 5.0 <= today < 6.0


def test_rename_and_delete() -> None:
    relay, _ = relay_at(tokens=3)
    tok = relay.list_tokens()[0]
    relay.rename_token(tok.id, "prod-renamed-api-2026-03")
    assert relay.token("prod-renamed-api-2026-03") is tok
    relay.delete_token(tok.id)
    assert tok.id not in relay.tokens
    assert relay.by_key(tok.key) is None
    assert relay.total_spend(tok.id) == tok.lifetime_usd  # the truth outlives the token


def test_event_log_is_a_bounded_ring() -> None:
    relay, clock = relay_at(tokens=40, event_log_size=50)
    clock.advance(6 * 3600)
    relay.sync()
    assert len(relay.events) == 50
    assert relay.events.dropped > 0


def test_history_is_deterministic_seasonal_and_to_scale() -> None:
    relay, _ = relay_at(tokens=40, seed=1)
    since, until = START - 14 * 86_400, START
    rows = list(relay.history(since, until))
    assert rows == list(relay.history(since, until))
    assert all(since <= r.ts < until and r.cost_usd > 0 and r.requests > 0 for r in rows)
    spenders = {t.id for t in relay.list_tokens() if t.req_per_bucket > 0}
    assert {r.token_id for r in rows} <= spenders
    expected = sum(t.usd_per_hour * 24 * 14 for t in relay.list_tokens() if t.id in spenders)
    assert 0.6 * expected < sum(r.cost_usd for r in rows) < 1.6 * expected
    business = {t.id for t in relay.list_tokens() if t.archetype is Archetype.BUSINESS}
    by_hour = [0.0] * 24
    for r in rows:
        if r.token_id in business:
            by_hour[datetime.fromtimestamp(r.ts, UTC).hour] += r.cost_usd
    assert sum(by_hour[9:17]) > 10 * sum(by_hour[0:6])


# --- faults -----------------------------------------------------------------------------------


def test_faults_are_seeded() -> None:
    def errors(seed: int) -> list[Outcome]:
        faults = Faults(seed=seed)
        faults.update(error_rate=0.5)
        return [faults.decide() for _ in range(100)]

    assert errors(1) == errors(1)
    assert 30 < errors(1).count(Outcome.ERROR) < 70
    faults = Faults()
    faults.update(fail_next=2)
    assert [faults.decide() for _ in range(3)] == [Outcome.ERROR, Outcome.ERROR, Outcome.OK]
    with pytest.raises(ValueError):
        faults.update(error_rate=0.7, rate_limit_rate=0.7)
    with pytest.raises(ValueError):
        faults.update(status=404)
    with pytest.raises(ValueError):
        faults.update(nonsense=1)


async def test_error_rate_gives_a_reproducible_count_over_http() -> None:
    async def count_5xx() -> int:
        relay, _ = relay_at(tokens=5, seed=11)
        relay.faults.update(error_rate=0.5, status=503)
        key = relay.list_tokens()[0].key
        server = await serve(relay)
        try:
            async with httpx.AsyncClient(base_url=server.url) as client:
                codes = [
                    (await client.get("/v1/usage", headers=key_auth(key))).status_code for _ in range(100)
                ]
        finally:
            await server.close()
        assert set(codes) <= {200, 503}
        return codes.count(503)

    first = await count_5xx()
    assert first == await count_5xx()
    assert 30 < first < 70


async def test_rate_limits_malformed_bodies_and_latency(running: Running) -> None:
    relay, _, client = running
    relay.faults.update(rate_limit_rate=1.0)
    r = await client.get("/v1/api-keys", headers=admin(relay))
    assert r.status_code == 429 and r.headers["Retry-After"] == "1" and "error" in r.json()

    relay.faults.update(rate_limit_rate=0.0, malformed_rate=1.0)
    r = await client.get("/v1/api-keys", headers=admin(relay))
    assert r.status_code == 200
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(r.content)

    relay.faults.reset()
    relay.faults.update(latency=0.05, routes=["models"])
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    r = await client.get("/v1/models", headers=key_auth(relay.list_tokens()[0].key))
    assert loop.time() - t0 >= 0.05


async def test_malformed_token_entries(running: Running) -> None:
    relay, _, client = running
    relay.faults.update(malformed_token_rate=1.0)
    data = (await client.get("/v1/api-keys", headers=admin(relay))).json()["data"]
    assert data
    for entry in data:
        missing = {"id", "name", "status", "created_at"} - set(entry)
        assert missing or entry["today_usage"] < 0 or entry["month_usage"] < 0


# --- the laozhang API -------------------------------------------------------------------------


async def test_list_shows_documented_fields_and_usage_but_never_keys(running: Running) -> None:
    relay, _, client = running
    r = await client.get("/v1/api-keys", headers=admin(relay))
    assert r.status_code == 200
    data = r.json()["data"]
    assert len(data) == 40
    for entry in data:
        assert TOKEN_FIELDS | {"today_usage", "month_usage", "today_requests"} == set(entry)
        assert set(entry["limits"]) == {
            "daily_limit",
            "monthly_limit",
            "max_tokens_per_request",
            "allowed_models",
        }
        assert entry["status"] in ("active", "unused", "revoked", "expired")
    assert "sk-" not in r.text
    tok = relay.list_tokens()[0]
    entry = next(e for e in data if e["id"] == tok.id)
    assert (entry["today_usage"], entry["month_usage"]) == (tok.today_usage, tok.month_usage)


async def test_create_shows_the_key_once(running: Running) -> None:
    relay, _, client = running
    body = {"name": "prod-billing-api-2026-03", "billing_method": "pay_per_use", "permissions": ["chat"],
            "expires_at": "2026-06-01T00:00:00Z", "limits": {"daily_limit": {"requests": 100, "amount": 5}}}  # fmt: skip
    r = await client.post("/v1/api-keys", headers=admin(relay), json=body)
    assert r.status_code == 200
    created = r.json()
    key = created["key"]
    assert re.fullmatch(r"sk-[A-Za-z0-9]{48}", key)
    assert created["status"] == "unused" and created["last_used_at"] is None
    assert created["expires_at"] == "2026-06-01T00:00:00Z"
    assert created["limits"]["daily_limit"] == {"requests": 100, "amount": 5.0}
    listed = (await client.get("/v1/api-keys", headers=admin(relay))).json()["data"]
    assert any(e["id"] == created["id"] and "key" not in e for e in listed)
    assert key not in (await client.get("/v1/api-keys", headers=admin(relay))).text
    usage = await client.get("/v1/usage", headers=key_auth(key))
    assert usage.json() == {"today_usage": 0.0, "month_usage": 0.0}
    assert (await client.get("/v1/models", headers=key_auth(key))).status_code == 200

    for bad in ({}, {"name": "x", "billing_method": "free"}, {"name": "x", "expires_at": "soon"},
                {"name": "x", "expires_at": "2020-01-01T00:00:00Z"}):  # fmt: skip
        assert (await client.post("/v1/api-keys", headers=admin(relay), json=bad)).status_code == 400


async def test_delete_revokes_for_good(running: Running) -> None:
    relay, clock, client = running
    tok = next(t for t in relay.list_tokens() if relay.status(t) == "active")
    assert (await client.get("/v1/models", headers=key_auth(tok.key))).status_code == 200
    usage = (await client.get("/v1/usage", headers=key_auth(tok.key))).json()
    assert usage == {"today_usage": tok.today_usage, "month_usage": tok.month_usage}

    r = await client.delete(f"/v1/api-keys/{tok.id}", headers=admin(relay))
    assert r.status_code == 200 and r.json()["status"] == "revoked"
    for path in ("/v1/models", "/v1/usage"):
        refused = await client.get(path, headers=key_auth(tok.key))
        assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_api_key"
    clock.advance(86_400)
    listed = (await client.get("/v1/api-keys", headers=admin(relay))).json()["data"]
    assert next(e for e in listed if e["id"] == tok.id)["status"] == "revoked"
    assert (await client.delete("/v1/api-keys/key_000000", headers=admin(relay))).status_code == 404


async def test_expired_keys_are_refused(running: Running) -> None:
    relay, clock, client = running
    soon = datetime.fromtimestamp(relay.now() + 3600, UTC).isoformat()
    key = (
        await client.post("/v1/api-keys", headers=admin(relay), json={"name": "tmp", "expires_at": soon})
    ).json()["key"]
    assert (await client.get("/v1/usage", headers=key_auth(key))).status_code == 200
    clock.advance(7200)
    assert (await client.get("/v1/usage", headers=key_auth(key))).status_code == 401
    assert (await client.get("/v1/models", headers=key_auth(key))).status_code == 401


async def test_bad_credentials_get_401(running: Running) -> None:
    relay, _, client = running
    token_key = relay.list_tokens()[0].key
    for headers in (
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": relay.admin_token},
        key_auth(token_key),
    ):
        r = await client.get("/v1/api-keys", headers=headers)
        assert r.status_code == 401
        assert set(r.json()["error"]) == {"message", "type", "param", "code"}
    assert (
        await client.post("/v1/api-keys", headers=key_auth(token_key), json={"name": "x"})
    ).status_code == 401
    assert (await client.get("/v1/usage", headers=admin(relay))).status_code == 401
    assert (await client.get("/v1/usage", headers=key_auth("sk-" + "x" * 48))).status_code == 401


async def test_usage_in_list_can_be_off() -> None:
    relay, _ = relay_at(tokens=3)
    server = await serve(relay, usage_in_list=False)
    try:
        async with httpx.AsyncClient(base_url=server.url) as client:
            data = (await client.get("/v1/api-keys", headers=admin(relay))).json()["data"]
    finally:
        await server.close()
    assert all(set(e) == TOKEN_FIELDS for e in data)


# --- the control API over real HTTP -----------------------------------------------------------


async def test_control_api_drives_the_relay(running: Running) -> None:
    relay, _, client = running
    keys = (await client.get("/_sim/keys")).json()
    assert keys == relay.keys() and len(keys) == 40
    truth = (await client.get("/_sim/truth")).json()
    now0 = truth["now"]
    assert truth["tz"] == "UTC" and len(truth["tokens"]) == 40

    assert (await client.post("/_sim/advance", json={"seconds": 3600})).json()["now"] == now0 + 3600
    assert (await client.post("/_sim/advance", json={"to": now0 + 7200})).json()["now"] == now0 + 7200

    dormant = next(t for t in truth["tokens"] if t["archetype"] == "dormant")
    leak = (await client.post("/_sim/leak", json={"token": dormant["name"], "multiplier": 30})).json()
    assert leak["leaking"] is True
    await client.post("/_sim/advance", json={"seconds": 600})
    assert relay.total_spend(dormant["id"]) > dormant["lifetime_usd"]
    assert (await client.post("/_sim/leak/stop", json={"token": dormant["id"]})).json()["leaking"] is False
    events = (await client.get("/_sim/events", params={"token": dormant["id"], "since": now0})).json()[
        "events"
    ]
    assert events and all(e["ip"].startswith("203.0.113.") for e in events)

    spender = next(t for t in relay.list_tokens() if t.limits.daily_usd)
    added = (await client.post("/_sim/over-budget", json={"token": spender.id, "window": "day"})).json()
    assert added["added_usd"] > 0
    spent = await client.post("/_sim/spend", json={"token": spender.id, "usd": 2.5, "requests": 4})
    assert spent.status_code == 200

    faults = await client.post("/_sim/faults", json={"error_rate": 1.0, "routes": ["usage"]})
    assert faults.json()["routes"] == ["usage"]
    assert (await client.get("/v1/usage", headers=key_auth(spender.key))).status_code == 500
    assert (await client.get("/v1/api-keys", headers=admin(relay))).status_code == 200
    await client.post("/_sim/faults", json={"error_rate": 1.0, "routes": None})
    assert (await client.get("/_sim/truth")).status_code == 200  # faults never touch the control API
    assert (await client.post("/_sim/faults", json={"reset": True})).json()["error_rate"] == 0.0

    created = (await client.post("/_sim/tokens", json={"name": "dev-new-api-2026-03"})).json()
    assert (await client.get("/v1/usage", headers=key_auth(created["key"]))).status_code == 200
    await client.post(
        "/_sim/tokens/rename", json={"token": created["token"]["id"], "name": "dev-renamed-api-2026-03"}
    )
    names = {e["name"] for e in (await client.get("/v1/api-keys", headers=admin(relay))).json()["data"]}
    assert "dev-renamed-api-2026-03" in names and "dev-new-api-2026-03" not in names
    await client.post("/_sim/tokens/delete", json={"token": "dev-renamed-api-2026-03"})
    data = (await client.get("/v1/api-keys", headers=admin(relay))).json()["data"]
    assert created["token"]["id"] not in {e["id"] for e in data}
    assert (await client.get("/v1/usage", headers=key_auth(created["key"]))).status_code == 401

    assert (await client.post("/_sim/options", json={"usage_in_list": False})).status_code == 200
    data = (await client.get("/v1/api-keys", headers=admin(relay))).json()["data"]
    assert "today_usage" not in data[0]

    assert (await client.post("/_sim/leak", json={"token": "nope"})).status_code == 404
    assert (await client.post("/_sim/advance", content=b"{not json")).status_code == 400
    assert (await client.post("/_sim/faults", json={"error_rate": 7})).status_code == 400
    assert (await client.post("/_sim/options", json={"usage_in_list": "no"})).status_code == 400


async def test_speed_via_control_api() -> None:
    base = FakeClock(START)
    relay = make_relay(tokens=1, clock=base)
    server = await serve(relay)
    try:
        async with httpx.AsyncClient(base_url=server.url) as client:
            assert (await client.post("/_sim/speed", json={"speed": 60})).json()["speed"] == 60.0
            base.advance(10)
            assert (await client.get("/_sim/truth")).json()["now"] == START + 600
    finally:
        await server.close()


async def test_run_simulator_serves_until_cancelled() -> None:
    ready: asyncio.Queue[SimServer] = asyncio.Queue()
    task = asyncio.create_task(
        run_simulator("127.0.0.1:0", 25, 1, on_ready=lambda server, _: ready.put_nowait(server))
    )
    server = await asyncio.wait_for(ready.get(), 10)
    async with httpx.AsyncClient(base_url=server.url) as client:
        r = await client.get("/v1/api-keys", headers={"Authorization": "Bearer sim-admin-token"})
        assert r.status_code == 200 and len(r.json()["data"]) == 25
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def test_parse_listen() -> None:
    assert parse_listen("127.0.0.1:8080") == ("127.0.0.1", 8080)
    assert parse_listen("[::1]:9") == ("::1", 9)
    assert parse_listen(":9") == ("0.0.0.0", 9)
    with pytest.raises(ValueError):
        parse_listen("localhost")
