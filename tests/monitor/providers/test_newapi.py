"""The newapi adapter: recorded-shape answers (httpx.MockTransport), then the simulator's
`newapi` flavour on loopback polled through ingest into a store."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from monitor.providers.base import AuthError
from monitor.providers.newapi import NewAPIProvider
from monitor.providers.registry import build_provider
from monitor.secret import key_sha256
from tests.monitor.providers.flavor_support import (
    START,
    body,
    envelope,
    harness,
    log_spend_expected,
    mock_http,
    query,
    settings_for,
)

KEY = "abcdEFGHijklMNOPqrstUVWXyz0123456789ABCDEFGHwxyz"
TOKEN: dict[str, Any] = {
    "id": 12,
    "user_id": 1,
    "key": KEY[:4] + "**********" + KEY[-4:],
    "status": 1,
    "name": "prod-search-api-2025-06",
    "created_time": 1750000000,
    "accessed_time": 1772450000,
    "expired_time": 1790000000,
    "remain_quota": 0,
    "unlimited_quota": True,
    "model_limits_enabled": True,
    "model_limits": "gpt-4o-mini,claude-3-5-haiku",
    "allow_ips": "203.0.113.4\n198.51.100.0/24,192.0.2.1",
    "used_quota": 2_000_000,
    "group": "default",
}


def log_row(i: int, **kw: Any) -> dict[str, Any]:
    return {
        "id": i + 1,  # rewritten per page
        "created_at": int(START) - 60,
        "type": 2,
        "token_name": "prod-search-api-2025-06",
        "token_id": 12,
        "model_name": "gpt-4o-mini",
        "quota": 1000,
        "prompt_tokens": 900,
        "completion_tokens": 100,
        "use_time": 3,
        "ip": "203.0.113.4",
        "group": "default",
        "request_id": f"req-{i}",
        "other": '{"model_ratio":0.075}',
        **kw,
    }


def items(rows: list[Any], p: int, size: int) -> httpx.Response:
    page = max(p, 1)
    return envelope(
        {"items": rows[(page - 1) * size : page * size], "total": len(rows), "page": page, "page_size": size},
        date=START,
    )


def newapi_relay(
    tokens: list[dict[str, Any]], logs: list[dict[str, Any]] | None = None, **routes: Any
) -> Any:
    def handler(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path in routes:
            return routes[path](request)  # type: ignore[no-any-return]
        q = query(request)
        p, size = int(q.get("p", 0)), min(int(q.get("page_size", 10)), 100)
        if path == "/api/status":
            return envelope({"quota_per_unit": 500000})
        if path == "/api/token/":
            return items(tokens, p, size)
        if path == "/api/log/self":
            return items(logs or [], p, size)
        return httpx.Response(404)

    return handler


def newapi(handler: Any, **kw: Any) -> tuple[NewAPIProvider, Any]:
    http, rec = mock_http(handler)
    return NewAPIProvider(settings_for("newapi", "https://relay.test", **kw), http), rec


# --- recorded shapes -------------------------------------------------------------------------------


async def test_every_console_call_names_the_user() -> None:
    p, rec = newapi(newapi_relay([TOKEN], [log_row(0)]))
    await p.poll()
    console = [r for r in rec.requests if r.url.path.startswith("/api/")]
    assert console and all(r.headers.get("New-Api-User") == "1" for r in console)
    assert all(r.headers["Authorization"] == "sim-admin-token" for r in console)


async def test_token_fields_and_unlimited_tokens_still_count_used_quota() -> None:
    p, _ = newapi(newapi_relay([TOKEN]))
    (obs,) = (await p.poll()).observations
    assert obs.total_usd == 4.0 and not obs.spend_from_logs and obs.limits.unlimited
    assert obs.limits.allowed_models == ("gpt-4o-mini", "claude-3-5-haiku")
    assert obs.ip_whitelist == ("203.0.113.4", "198.51.100.0/24", "192.0.2.1")
    assert obs.expires_at == 1790000000.0 and obs.key_sha256 is None  # masked, reveal_keys off


async def test_model_limits_count_only_when_enabled() -> None:
    p, _ = newapi(newapi_relay([{**TOKEN, "model_limits_enabled": False}]))
    assert (await p.poll()).observations[0].limits.allowed_models == ()


async def test_quota_per_unit_comes_from_the_relays_status() -> None:
    handler = newapi_relay([{**TOKEN, "used_quota": 1000}])
    p, rec = newapi(
        lambda r: envelope({"quota_per_unit": 1000}) if r.url.path == "/api/status" else handler(r)
    )
    assert (await p.poll()).observations[0].total_usd == 1.0
    await p.poll()
    assert rec.paths().count("/api/status") == 1


async def test_current_pages_start_at_one_and_carry_up_to_100() -> None:
    tokens = [{**TOKEN, "id": i, "name": f"t{i}"} for i in range(250, 0, -1)]
    p, rec = newapi(newapi_relay(tokens))
    result = await p.poll()
    assert len(result.observations) == 250 and result.complete
    pages = sorted(int(query(r)["p"]) for r in rec.requests if r.url.path == "/api/token/")
    assert pages == [0, 2, 3]  # p=0 reads as page 1; the total says two more
    assert all(query(r)["page_size"] == "100" for r in rec.requests if r.url.path == "/api/token/")


async def test_legacy_builds_answer_plain_arrays_from_page_zero() -> None:
    tokens = [{**TOKEN, "id": i, "name": f"t{i}"} for i in range(25, 0, -1)]

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/token/":
            p = int(query(request)["p"])
            return envelope(tokens[p * 10 : p * 10 + 10], date=START)  # ignores page_size
        return envelope([] if request.url.path == "/api/log/self" else {"quota_per_unit": 500000})

    p, rec = newapi(handler)
    assert len((await p.poll()).observations) == 25
    assert sorted(int(query(r)["p"]) for r in rec.requests if r.url.path == "/api/token/")[:3] == [0, 1, 2]


async def test_a_total_that_moves_while_paging_makes_the_list_incomplete() -> None:
    tokens = [{**TOKEN, "id": i, "name": f"t{i}"} for i in range(150, 0, -1)]

    def handler(request: httpx.Request) -> httpx.Response:
        q = query(request)
        if request.url.path == "/api/token/":
            p = max(int(q["p"]), 1)
            total = 150 if p == 1 else 149  # one token deleted between the pages
            return envelope(
                {"items": tokens[(p - 1) * 100 : p * 100], "total": total, "page": p, "page_size": 100}
            )
        return newapi_relay([])(request)

    p, _ = newapi(handler)
    assert not (await p.poll()).complete


async def test_a_wrong_user_id_is_an_auth_error_that_says_so() -> None:
    p, _ = newapi(
        lambda r: httpx.Response(401, json={"success": False, "message": "New-Api-User 与登录用户不匹配"})
    )
    with pytest.raises(AuthError, match="user_id"):
        await p.poll()


async def test_log_ids_are_ignored_rows_are_told_apart_by_request_id() -> None:
    # two pages whose rewritten ids collide: both rows are kept
    rows = [log_row(i, id=1) for i in range(3)]
    p, _ = newapi(newapi_relay([TOKEN], rows))
    records = (await p.poll()).requests
    assert [r.request_id for r in records] == ["req-0", "req-1", "req-2"]
    r = records[0]
    assert r.token_id == "12" and r.ip == "203.0.113.4" and r.elapsed_ms == 3000 and r.cost_usd == 0.002


async def test_masked_keys_are_revealed_in_batches() -> None:
    def batch(request: httpx.Request) -> httpx.Response:
        assert body(request) == {"ids": [12]}
        return envelope({"keys": {"12": KEY}})

    p, rec = newapi(newapi_relay([TOKEN], **{"/api/token/batch/keys": batch}), reveal_keys=True)
    assert (await p.poll()).observations[0].key_sha256 == key_sha256("sk-" + KEY)
    assert rec.paths().count("/api/token/batch/keys") == 1 and "/api/token/12/key" not in rec.paths()


async def test_quarantine_is_verified_through_the_usage_probe() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "PUT":
            return envelope({**TOKEN, "status": 2})
        if request.url.path == "/api/token/12":
            return envelope(TOKEN)
        if request.url.path == "/api/token/12/key":
            return envelope({"key": KEY})
        if request.url.path == "/api/usage/token/":
            assert request.headers["Authorization"] == f"Bearer sk-{KEY}"
            return httpx.Response(401, json={"success": False})
        return httpx.Response(404)

    p, _ = newapi(handler, reveal_keys=True)
    outcome = await p.revoke("12")
    assert outcome.done and outcome.verified


async def test_without_a_key_a_quarantine_cannot_be_verified() -> None:
    p, _ = newapi(lambda r: envelope(TOKEN) if r.method == "GET" else envelope({**TOKEN, "status": 2}))
    outcome = await p.revoke("12")
    assert outcome.done and not outcome.verified and "reveal_keys" in outcome.detail
    assert await p.verify_refused("12") is None


# --- the simulator's newapi flavour ---------------------------------------------------------------


@pytest.mark.parametrize("legacy", [False, True])
async def test_250_tokens_over_many_pages_in_either_shape(tmp_path: Path, legacy: bool) -> None:
    async with harness("newapi", tmp_path, tokens=250, options={"legacy_pages": legacy}) as h:
        cycle = await h.cycle()
        assert cycle.seen == 250 and cycle.complete


async def test_spend_follows_used_quota_for_every_token(tmp_path: Path) -> None:
    async with harness("newapi", tmp_path, tokens=30) as h:
        await h.cycle()
        tok, _ = h.relay.create_token(
            "dev-unl-2026-03", archetype="service", usd_per_hour=4.0, unlimited_quota=True
        )
        for _ in range(4):
            h.relay.advance_by(900)
            await h.cycle()
        for t in h.relay.truth():
            assert h.by_name(t["name"]).spend_total_usd == pytest.approx(t["lifetime_usd"], abs=2e-6), t[
                "name"
            ]
        usd, requests = log_spend_expected(h.relay, tok.id, 0, h.relay.now() - NewAPIProvider.log_lag)
        state = h.by_name("dev-unl-2026-03")
        assert state.requests_total == requests and usd > 0  # requests from the log, money from used_quota
        rows = h.reader().requests(state.pk or 0, 0)
        assert rows and all(r.ip for r in rows)


async def test_a_renamed_token_keeps_its_history(tmp_path: Path) -> None:
    async with harness("newapi", tmp_path, tokens=20) as h:
        await h.cycle()
        t = next(t for t in h.relay.truth() if t["usd_per_hour"] > 0 and t["status"] == "active")
        h.relay.advance_by(600)
        await h.cycle()
        before = h.by_name(t["name"])
        h.relay.rename_token(t["id"], "prod-renamed-api-2026-03")
        h.relay.advance_by(600)
        await h.cycle()
        after = h.by_name("prod-renamed-api-2026-03")
        assert after.token_id == before.token_id and after.pk == before.pk
        assert after.spend_total_usd == pytest.approx(h.relay.total_spend(t["id"]), abs=2e-6)


async def test_a_wrong_user_id_fails_as_auth_against_the_relay(tmp_path: Path) -> None:
    async with harness("newapi", tmp_path, tokens=5) as h:
        bad = build_provider(replace(h.settings, user_id=2), h.client)
        with pytest.raises(AuthError, match="user_id"):
            await bad.poll()


async def test_quarantine_takes_effect_at_once(tmp_path: Path) -> None:
    async with harness("newapi", tmp_path, tokens=5, reveal_keys=True) as h:
        await h.cycle()
        tok = next(t for t in h.relay.list_tokens() if t.accepts_key(h.relay.now()))
        state = h.by_name(tok.name)
        assert state.key_sha256 == key_sha256(tok.key)
        outcome = await h.provider.revoke(state.token_id)
        assert outcome.done and outcome.verified
        assert h.relay.token(tok.id).status(h.relay.now()) == "disabled"


async def test_overlapping_log_windows_count_every_row_once(tmp_path: Path) -> None:
    async with harness("newapi", tmp_path, tokens=60) as h:
        await h.cycle()
        for _ in range(4):
            h.relay.advance_by(300)
            await h.cycle()
        end = h.relay.now() - NewAPIProvider.log_lag
        first_end = h.cycles[0].at - NewAPIProvider.log_lag  # rows up to here were the baseline
        for t in h.relay.truth():
            _, requests = log_spend_expected(h.relay, t["id"], first_end + 1, end)
            assert h.by_name(t["name"]).requests_total == requests, t["name"]
