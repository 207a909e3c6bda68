"""The simulator's oneapi, newapi and openai flavours on the wire: the platforms' quirks as
reference/providers.md records them, on the same SimulatedRelay the laozhang flavour serves."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import pytest

from monitor.clock import FakeClock
from monitor.model import PROVIDER_KINDS
from monitor.simulator import (
    DEFAULT_ADMIN_TOKEN,
    DEFAULT_PROJECT_ID,
    DEFAULT_USER_ID,
    FLAVORS,
    SimulatedRelay,
    make_relay,
    serve,
)
from tests.monitor.providers.flavor_support import START

ONE = {"Authorization": DEFAULT_ADMIN_TOKEN}
NEW = {"Authorization": DEFAULT_ADMIN_TOKEN, "New-Api-User": str(DEFAULT_USER_ID)}
OAI = {"Authorization": f"Bearer {DEFAULT_ADMIN_TOKEN}"}


@asynccontextmanager
async def flavor(
    name: str, tokens: int = 40, **options: Any
) -> AsyncIterator[tuple[SimulatedRelay, httpx.AsyncClient]]:
    relay = make_relay(tokens=tokens, seed=5, clock=FakeClock(START))
    server = await serve(relay, "127.0.0.1", 0, flavor=name, **options)
    try:
        async with httpx.AsyncClient(base_url=server.url) as client:
            yield relay, client
    finally:
        await server.close()


def test_every_flavour_is_registered() -> None:
    assert set(FLAVORS) == set(PROVIDER_KINDS)  # every kind keywatch watches has a flavour to test it on


# --- one-api ---------------------------------------------------------------------------------------


async def test_oneapi_answers_a_bad_access_token_with_200_and_success_false() -> None:
    async with flavor("oneapi") as (_, c):
        r = await c.get("/api/token/", headers={"Authorization": "nope"})
        assert r.status_code == 200 and r.json()["success"] is False and "data" not in r.json()
        assert (await c.get("/api/token/")).status_code == 401
        bearer = await c.get("/api/token/", headers={"Authorization": f"Bearer {DEFAULT_ADMIN_TOKEN}"})
        assert bearer.json()["success"] is True


async def test_oneapi_pages_hold_ten_newest_first_from_zero() -> None:
    async with flavor("oneapi", tokens=25) as (_, c):
        pages = [(await c.get("/api/token/", params={"p": p}, headers=ONE)).json()["data"] for p in range(4)]
        assert [len(p) for p in pages] == [10, 10, 5, 0]
        ids = [t["id"] for page in pages for t in page]
        assert ids == sorted(ids, reverse=True) == list(range(25, 0, -1))
        t = pages[0][0]
        assert len(t["key"]) == 48 and not t["key"].startswith("sk-")
        assert {"remain_quota", "unlimited_quota", "used_quota", "models", "subnet", "expired_time"} <= set(t)


async def test_oneapi_routes_redirect_without_their_trailing_slash() -> None:
    async with flavor("oneapi") as (_, c):
        got = await c.get("/api/token", params={"p": 1}, headers=ONE)
        assert got.status_code == 301 and got.headers["Location"] == "/api/token/?p=1"
        put = await c.put("/api/token", headers=ONE, json={})
        assert put.status_code == 307


async def test_oneapi_masks_keys_when_asked_and_reveals_them_by_id() -> None:
    async with flavor("oneapi", mask_keys=True) as (relay, c):
        (t, *_) = (await c.get("/api/token/", headers=ONE)).json()["data"]
        assert "**********" in t["key"]
        revealed = (await c.post(f"/api/token/{t['id']}/key", headers=ONE)).json()["data"]["key"]
        assert "sk-" + revealed in relay.keys().values()


async def test_oneapi_serves_a_disabled_key_from_its_cache_for_600_s() -> None:
    async with flavor("oneapi") as (relay, c):
        tok = next(t for t in relay.list_tokens() if t.accepts_key(relay.now()))
        listed = []
        for p in range(5):
            listed += (await c.get("/api/token/", params={"p": p}, headers=ONE)).json()["data"]
        number = next(t["id"] for t in listed if t["name"] == tok.name)
        probe = {"Authorization": f"Bearer {tok.key}"}
        put = await c.put(
            "/api/token/", params={"status_only": "true"}, headers=ONE, json={"id": number, "status": 2}
        )
        assert put.json()["data"]["status"] == 2
        assert (await c.get("/v1/models", headers=probe)).status_code == 200  # the cache still has it
        relay.advance_by(600)
        assert (await c.get("/v1/models", headers=probe)).status_code == 401


async def test_oneapi_refuses_to_enable_an_expired_token() -> None:
    async with flavor("oneapi") as (relay, c):
        tok = relay.list_tokens()[0]
        tok.expires_at = relay.now() - 1
        tok.touch()
        relay.disable_token(tok.id)
        body = {"id": 1, "status": 1}  # ids follow creation order: 1 is the oldest token
        answer = (await c.put("/api/token/", params={"status_only": "true"}, headers=ONE, json=body)).json()
        assert answer["success"] is False


async def test_oneapi_unlimited_tokens_do_not_move_used_quota() -> None:
    async with flavor("oneapi") as (relay, c):
        relay.create_token("dev-u-2026-03", archetype="service", usd_per_hour=5.0, unlimited_quota=True)
        relay.advance_by(3600)
        (t,) = [
            t
            for t in (await c.get("/api/token/", headers=ONE)).json()["data"]
            if t["name"] == "dev-u-2026-03"
        ]
        assert (
            t["unlimited_quota"] is True and t["used_quota"] == 0 and relay.total_spend("dev-u-2026-03") > 0
        )


async def test_oneapi_log_rows_carry_request_ids_newest_first_and_omit_ids() -> None:
    async with flavor("oneapi") as (relay, c):
        relay.advance_by(600)
        params = {"type": 2, "start_timestamp": int(START), "end_timestamp": int(START) + 600}
        rows = (await c.get("/api/log/self", params={"p": 0, **params}, headers=ONE)).json()["data"]
        assert len(rows) == 10 and all(r["id"] == 0 and r["request_id"] for r in rows)
        assert all(START <= r["created_at"] <= START + 600 for r in rows)
        stat = (await c.get("/api/log/self/stat", params=params, headers=ONE)).json()["data"]
        total = sum(e.cost_usd for e in relay.events_between(START, START + 600))
        assert stat["quota"] / 500_000 == pytest.approx(total, abs=1e-3)


async def test_oneapi_answers_carry_the_relays_clock() -> None:
    async with flavor("oneapi") as (relay, c):
        relay.advance_by(12_345)
        r = await c.get("/api/token/", headers=ONE)
        assert parsedate_to_datetime(r.headers["Date"]).timestamp() == int(relay.now())


# --- new-api ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("user", "status"), [(None, 401), ("abc", 401), ("2", 401), (str(DEFAULT_USER_ID), 200)]
)
async def test_newapi_checks_new_api_user(user: str | None, status: int) -> None:
    async with flavor("newapi") as (_, c):
        headers = {"Authorization": DEFAULT_ADMIN_TOKEN, **({"New-Api-User": user} if user else {})}
        r = await c.get("/api/token/", headers=headers)
        assert r.status_code == status and r.json()["success"] is (status == 200)


async def test_newapi_pages_start_at_one_up_to_100_with_a_total() -> None:
    async with flavor("newapi", tokens=250) as (_, c):
        first = (await c.get("/api/token/", params={"p": 0, "page_size": 500}, headers=NEW)).json()["data"]
        assert (first["page"], first["page_size"], first["total"], len(first["items"])) == (1, 100, 250, 100)
        third = (await c.get("/api/token/", params={"p": 3, "size": 100}, headers=NEW)).json()["data"]
        assert len(third["items"]) == 50
        assert all("**********" in t["key"] for t in first["items"])


async def test_newapi_legacy_pages_are_plain_arrays_from_zero() -> None:
    async with flavor("newapi", tokens=25, legacy_pages=True) as (_, c):
        page = (await c.get("/api/token/", params={"p": 0, "size": 20}, headers=NEW)).json()["data"]
        assert isinstance(page, list) and len(page) == 20


async def test_newapi_rewrites_log_ids_per_page() -> None:
    async with flavor("newapi") as (relay, c):
        relay.advance_by(600)
        params = {"type": 2, "start_timestamp": int(START), "end_timestamp": int(START) + 600, "page_size": 5}
        one = (await c.get("/api/log/self", params={"p": 1, **params}, headers=NEW)).json()["data"]["items"]
        two = (await c.get("/api/log/self", params={"p": 2, **params}, headers=NEW)).json()["data"]["items"]
        assert [r["id"] for r in one] == [1, 2, 3, 4, 5] and [r["id"] for r in two] == [6, 7, 8, 9, 10]
        assert len({r["request_id"] for r in one + two}) == 10
        assert all(isinstance(r["other"], str) and r["token_id"] > 0 and r["ip"] for r in one)


async def test_newapi_reveals_keys_in_batches_and_probes_usage_with_the_key() -> None:
    async with flavor("newapi") as (_, c):
        items = (await c.get("/api/token/", headers=NEW)).json()["data"]["items"]
        ids = [t["id"] for t in items if t["status"] == 1][:3]
        keys = (await c.post("/api/token/batch/keys", headers=NEW, json={"ids": ids})).json()["data"]["keys"]
        assert set(keys) == {str(i) for i in ids}
        usage = await c.get("/api/usage/token/", headers={"Authorization": f"Bearer sk-{keys[str(ids[0])]}"})
        assert usage.status_code == 200 and usage.json()["data"]["object"] == "token_usage"
        await c.put(
            "/api/token/", params={"status_only": "true"}, headers=NEW, json={"id": ids[0], "status": 2}
        )
        usage = await c.get("/api/usage/token/", headers={"Authorization": f"Bearer sk-{keys[str(ids[0])]}"})
        assert usage.status_code == 401  # at once: new-api has no stale cache
        status = (await c.get("/api/status")).json()["data"]
        assert status["quota_per_unit"] == 500_000


# --- openai ----------------------------------------------------------------------------------------


async def test_openai_lists_project_keys_with_after_paging() -> None:
    async with flavor("openai", tokens=45) as (_, c):
        path = f"/v1/organization/projects/{DEFAULT_PROJECT_ID}/api_keys"
        first = (await c.get(path, params={"limit": 20}, headers=OAI)).json()
        assert first["object"] == "list" and first["has_more"] and len(first["data"]) == 20
        second = (await c.get(path, params={"limit": 100, "after": first["last_id"]}, headers=OAI)).json()
        assert not second["has_more"] and len(second["data"]) == 25
        assert (await c.get(path, params={"limit": 101}, headers=OAI)).status_code == 400
        assert (await c.get("/v1/organization/projects/proj_x/api_keys", headers=OAI)).status_code == 404
        assert (await c.get(path, headers={"Authorization": "Bearer x"})).json()["error"][
            "code"
        ] == "invalid_api_key"


@pytest.mark.parametrize(("width", "default", "maximum"), [("1m", 60, 1440), ("1h", 24, 168), ("1d", 7, 31)])
async def test_openai_usage_bucket_limits(width: str, default: int, maximum: int) -> None:
    async with flavor("openai") as (_, c):
        start = int(START) - 40 * 86_400
        q: Callable[..., Any] = lambda **kw: c.get(  # noqa: E731
            "/v1/organization/usage/completions",
            params={"start_time": start, "bucket_width": width, **kw},
            headers=OAI,
        )
        page = (await q()).json()
        assert len(page["data"]) == default and page["has_more"] and page["next_page"]
        assert (await q(limit=maximum + 1)).status_code == 400


async def test_openai_usage_follows_next_page_and_groups_nulls_the_rest() -> None:
    async with flavor("openai") as (relay, c):
        relay.advance_by(600)
        params: dict[str, Any] = {
            "start_time": int(START),
            "end_time": int(START) + 600,
            "bucket_width": "1m",
        }
        page = (
            await c.get(
                "/v1/organization/usage/completions",
                params={**params, "limit": 4, "group_by": "model"},
                headers=OAI,
            )
        ).json()
        more = (
            await c.get(
                "/v1/organization/usage/completions",
                params={**params, "limit": 4, "page": page["next_page"]},
                headers=OAI,
            )
        ).json()
        assert page["data"][-1]["end_time"] == more["data"][0]["start_time"]
        results = [r for b in page["data"] for r in b["results"]]
        assert results and all(r["model"] and r["api_key_id"] is None for r in results)


async def test_openai_costs_are_daily_and_match_what_was_booked() -> None:
    async with flavor("openai") as (relay, c):
        relay.advance_by(3600)
        day = int(START) // 86_400 * 86_400
        costs = (
            await c.get("/v1/organization/costs", params={"start_time": day, "limit": 1}, headers=OAI)
        ).json()
        (bucket,) = costs["data"]
        (r,) = bucket["results"]
        assert r["amount"]["value"] == pytest.approx(
            sum(e.cost_usd for e in relay.events_between(day, relay.now() - 0.001)), abs=1e-5
        )
        bad = await c.get(
            "/v1/organization/costs", params={"start_time": day, "bucket_width": "1h"}, headers=OAI
        )
        assert bad.status_code == 400


async def test_the_laozhang_flavour_is_unchanged_by_the_others() -> None:
    async with flavor("laozhang") as (_, c):
        r = await c.get("/v1/api-keys", headers=OAI)
        assert r.status_code == 200 and "data" in r.json() and "Date" in r.headers
