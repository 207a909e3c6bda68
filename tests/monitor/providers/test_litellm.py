"""The litellm adapter: recorded-shape answers (httpx.MockTransport), then the simulator's
`litellm` flavour on loopback polled through ingest into a store (docs/relay-adapters.md)."""

from __future__ import annotations

import hashlib
import math
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from email.utils import formatdate
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from monitor.providers.base import AuthError, ProviderError
from monitor.providers.http import RelayHTTP, make_client
from monitor.providers.litellm import LOG_SKIP, SILENT_LOG, LiteLLMProvider
from monitor.providers.litellm_logs import date_param
from monitor.providers.registry import build_provider
from monitor.secret import Secret, key_sha256
from monitor.simulator.litellm import key_hash
from tests.monitor.providers.flavor_support import (
    ADMIN,
    START,
    Harness,
    harness,
    log_spend_expected,
    mock_http,
    query,
    settings_for,
)

H = [hashlib.sha256(f"sk-key-{i}".encode()).hexdigest() for i in range(300)]
LAG = LiteLLMProvider.log_lag


def key(i: int, **kw: Any) -> dict[str, Any]:
    return {
        "token": H[i],
        "key_name": f"sk-...{i:04d}",
        "key_alias": f"prod-app{i}-api-2026-01",
        "spend": 1.5,
        "max_budget": None,
        "expires": None,
        "models": [],
        "user_id": "user-1",
        "team_id": "team-prod",
        "budget_duration": None,
        "budget_reset_at": None,
        "blocked": None,
        "created_at": "2026-01-05T10:00:00.123000Z",
        "last_active": "2026-03-02T11:00:00Z",
        **kw,
    }


def ok(data: Any, date: float = START) -> httpx.Response:
    return httpx.Response(200, json=data, headers={"Date": formatdate(date, usegmt=True)})


def key_page(keys: list[dict[str, Any]], page: int, size: int, total: int | None = None) -> httpx.Response:
    chunk = keys[(page - 1) * size : page * size]
    n = len(keys) if total is None else total
    return ok({"keys": chunk, "total_count": n, "current_page": page, "total_pages": -(-n // size)})


def log_row(rid: str, api_key: str, spend: float, at: str, **kw: Any) -> dict[str, Any]:
    return {
        "request_id": rid,
        "api_key": api_key,
        "spend": spend,
        "prompt_tokens": 100,
        "completion_tokens": 20,
        "startTime": at,
        "endTime": at,
        "model": "openai/gpt-4o",
        "model_group": "gpt-4o",
        "requester_ip_address": "198.51.100.7",
        "status": "success",
        **kw,
    }


def log_page(rows: list[dict[str, Any]], **kw: Any) -> httpx.Response:
    return ok({"data": rows, "total": len(rows), "page": 1, "page_size": 100, "total_pages": 1, **kw})


def proxy(
    keys: list[dict[str, Any]], logs: Callable[[httpx.Request], httpx.Response] | None = None
) -> Callable[[httpx.Request], httpx.Response]:
    def handler(request: httpx.Request) -> httpx.Response:
        path, q = request.url.path, query(request)
        if path == "/key/list":
            return key_page(keys, int(q["page"]), int(q["size"]))
        if path.startswith("/spend/logs/"):
            return logs(request) if logs is not None else log_page([])
        if path == "/key/info":
            found = [k for k in keys if k["token"] == q["key"]]
            if not found:
                return httpx.Response(
                    404, json={"error": {"message": "Key not found", "type": "not_found_error"}}
                )
            return ok({"key": q["key"], "info": {k: v for k, v in found[0].items() if k != "token"}})
        return httpx.Response(404, json={"detail": "Not Found"})

    return handler


def litellm(handler: Callable[[httpx.Request], httpx.Response], **kw: Any) -> tuple[LiteLLMProvider, Any]:
    http, rec = mock_http(handler)
    return LiteLLMProvider(settings_for("litellm", "https://proxy.test", **kw), http), rec


# --- recorded shapes -------------------------------------------------------------------------------


async def test_keys_are_listed_as_full_objects_over_pages() -> None:
    p, rec = litellm(proxy([key(i) for i in range(250)]))
    result = await p.poll()
    assert len(result.observations) == 250 and result.complete and not result.skipped
    calls = [query(r) for r in rec.requests if r.url.path == "/key/list"]
    assert [c["page"] for c in calls] == ["1", "2", "3"]
    assert all(c["size"] == "100" and c["return_full_object"] == "true" for c in calls)
    assert rec.requests[0].headers["Authorization"] == f"Bearer {ADMIN}"
    obs = result.observations[0]
    assert obs.token_id == obs.key_sha256 == H[0] and obs.name == "prod-app0-api-2026-01"
    assert obs.spend_from_logs and obs.total_usd is None and obs.status == "active"
    assert obs.created_at == pytest.approx(1767607200.123) and obs.last_used_at == 1772449200.0
    assert result.relay_time == START


@pytest.mark.parametrize(
    ("fields", "status"),
    [
        ({"blocked": True}, "disabled"),
        ({"blocked": False}, "active"),
        ({"expires": "2026-03-01T00:00:00Z"}, "expired"),
        ({"expires": "2026-03-09T00:00:00"}, "active"),  # no zone: UTC
        ({"max_budget": 1.5}, "exhausted"),
        ({"spend": 0.0, "last_active": None}, "unused"),
        ({"spend": 0.0, "last_active": None, "budget_duration": "1d"}, "active"),
        ({"blocked": True, "expires": "2026-03-01T00:00:00Z"}, "disabled"),
    ],
)
async def test_status(fields: dict[str, Any], status: str) -> None:
    p, _ = litellm(proxy([key(1, **fields)]))
    (obs,) = (await p.poll()).observations
    assert obs.status == status


@pytest.mark.parametrize(
    ("fields", "daily", "monthly", "remain", "unlimited"),
    [
        ({"max_budget": 20.0, "budget_duration": "1d"}, 20.0, None, None, False),
        ({"max_budget": 20.0, "budget_duration": "24h"}, 20.0, None, None, False),
        ({"max_budget": 300.0, "budget_duration": "30d"}, None, 300.0, None, False),
        ({"max_budget": 300.0, "budget_duration": "1mo"}, None, 300.0, None, False),
        ({"max_budget": 10.0, "budget_duration": "7d"}, None, None, 8.5, False),
        ({"max_budget": 10.0}, None, None, 8.5, False),
        ({}, None, None, None, True),
    ],
)
async def test_budgets_by_period(
    fields: dict[str, Any], daily: float | None, monthly: float | None, remain: float | None, unlimited: bool
) -> None:
    p, _ = litellm(proxy([key(1, **fields)]))
    (obs,) = (await p.poll()).observations
    lim = obs.limits
    assert (lim.daily_usd, lim.monthly_usd, lim.remain_usd, lim.unlimited) == (
        daily,
        monthly,
        remain,
        unlimited,
    )


async def test_names_and_models() -> None:
    keys = [
        key(1, key_alias=None, models=["gpt-4o", "claude-3-5-haiku"]),
        key(2, key_alias=None, key_name=None, models=["all-team-models"]),
    ]
    p, _ = litellm(proxy(keys))
    a, b = (await p.poll()).observations
    assert (a.name, a.limits.allowed_models) == ("sk-...0001", ("gpt-4o", "claude-3-5-haiku"))
    assert (b.name, b.limits.allowed_models) == (H[2][:12], ())


async def test_bare_hashes_are_malformed_not_an_empty_fleet() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return ok({"keys": H[:3], "total_count": 3, "current_page": 1, "total_pages": 1})

    p, _ = litellm(handler)
    with pytest.raises(ProviderError, match="bare hashes") as err:
        await p.poll()
    assert err.value.reason == "malformed"


async def test_a_proxy_claiming_too_many_pages_is_refused_before_paging() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return key_page([key(1)], 1, 100, total=2_000_000_000)

    p, rec = litellm(handler)
    with pytest.raises(ProviderError) as err:
        await p.poll()
    assert err.value.reason == "too_large" and len(rec.requests) == 1


async def test_a_total_that_moves_while_paging_leaves_the_list_incomplete() -> None:
    keys = [key(i) for i in range(150)]

    def handler(request: httpx.Request) -> httpx.Response:
        q = query(request)
        if request.url.path == "/key/list":
            return key_page(keys, int(q["page"]), 100, total=150 if q["page"] == "1" else 151)
        return log_page([])

    p, _ = litellm(handler)
    result = await p.poll()
    assert len(result.observations) == 150 and not result.complete


async def test_keys_that_vanished_are_looked_up_before_they_count_as_deleted() -> None:
    listed = [key(i) for i in range(5)]
    exists = {H[i] for i in range(5)}

    def handler(request: httpx.Request) -> httpx.Response:
        q = query(request)
        if request.url.path == "/key/list":
            return key_page(listed, int(q["page"]), 100)
        if request.url.path == "/key/info":
            if q["key"] in exists:
                return ok({"key": q["key"], "info": {"blocked": None}})
            return httpx.Response(404, json={"error": {"type": "not_found_error"}})
        return log_page([])

    p, rec = litellm(handler)
    assert (await p.poll()).complete
    del listed[4]  # hidden by a shifted page: still at the proxy
    assert not (await p.poll()).complete
    exists.discard(H[4])  # now really gone
    assert (await p.poll()).complete
    assert [query(r)["key"] for r in rec.requests if r.url.path == "/key/info"] == [H[4], H[4]]


async def test_a_mass_deletion_is_confirmed_over_a_few_polls() -> None:
    listed = [key(i) for i in range(250)]

    def handler(request: httpx.Request) -> httpx.Response:
        q = query(request)
        if request.url.path == "/key/list":
            return key_page(listed, int(q["page"]), 100)
        if request.url.path == "/key/info":
            return httpx.Response(404, json={"error": {"type": "not_found_error"}})
        return log_page([])

    p, rec = litellm(handler)
    assert (await p.poll()).complete
    listed.clear()
    assert [(await p.poll()).complete for _ in range(2)] == [False, True]
    assert sum(r.url.path == "/key/info" for r in rec.requests) == 250


async def test_an_unchanged_entry_still_expires_on_the_proxys_clock() -> None:
    clock = {"now": START}

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/key/list":
            return ok(key_page([key(1, expires="2026-03-02T12:05:00Z")], 1, 100).json(), clock["now"])
        return log_page([])

    p, _ = litellm(handler)
    assert [o.status for o in (await p.poll()).observations] == ["active"]
    clock["now"] += 600
    assert [o.status for o in (await p.poll()).observations] == ["expired"]


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b'"spend":1e400', "absurd_value"),
        (b'"spend":-1e308', "negative_usage"),
        (b'"spend":1e300', "absurd_value"),
        (b'"spend":"NaN"', "malformed"),
        (b'"max_budget":-5', "negative_usage"),
        (b'"expires":1e30', "absurd_value"),
        (b'"blocked":"yes"', "malformed"),
    ],
)
async def test_an_absurd_entry_skips_only_that_key(raw: bytes, reason: str) -> None:
    good = orjson.dumps({"keys": [key(1), key(2)], "total_count": 2, "current_page": 1, "total_pages": 1})
    field = raw.split(b":")[0]
    bad = good.replace(field + b":" + orjson.dumps(key(2)[field.strip(b'"').decode()]), raw, 1)
    assert bad != good

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/key/list":
            return httpx.Response(200, content=bad, headers={"Content-Type": "application/json"})
        return log_page([])

    p, _ = litellm(handler)
    result = await p.poll()
    (skip,) = result.skipped
    assert [o.token_id for o in result.observations] == [H[2]]
    assert (skip.token_id, skip.reason) == (H[1], reason) and result.complete


async def test_spend_log_rows_become_records() -> None:
    def logs(request: httpx.Request) -> httpx.Response:
        return log_page(
            [
                log_row(
                    "r1", H[1], 0.25, "2026-03-02T11:30:00.250", requester_ip_address="203.0.113.9, 10.0.0.2"
                ),
                log_row("r2", H[1], 0.0, "2026-03-02T11:31:00.000", status="failure"),
                log_row("r3", H[1], 0.5, "2026-03-02T11:32:00Z", model_group=None, request_duration_ms=1234),
                log_row("r4", "", 0.1, "2026-03-02T11:33:00+00:00", requester_ip_address=""),
            ]
        )

    p, rec = litellm(proxy([key(1)], logs))
    result = await p.poll()
    r1, r3, r4 = result.requests
    assert (r1.request_id, r1.token_id, r1.token_name) == ("r1", H[1], "prod-app1-api-2026-01")
    assert (r1.ts, r1.cost_usd, r1.ip, r1.model, r1.requests) == (
        1772451000.25,
        0.25,
        "203.0.113.9",
        "gpt-4o",
        1,
    )
    assert (r1.prompt_tokens, r1.completion_tokens) == (100, 20)
    assert (r3.model, r3.elapsed_ms, r3.ts) == ("openai/gpt-4o", 1234, 1772451120.0)
    assert (r4.token_id, r4.ip) == (None, None)
    (call,) = [query(r) for r in rec.requests if r.url.path.startswith("/spend/logs/")]
    assert call["end_date"] == date_param(START - LAG) == "2026-03-02 11:59:30"
    assert call["start_date"] == "2026-03-02 10:59:30" and call["page_size"] == "100"


async def test_an_older_proxy_serves_the_log_under_ui() -> None:
    clock = {"now": START}

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/spend/logs/v2":
            return httpx.Response(404, json={"detail": "Not Found"})
        if request.url.path == "/spend/logs/ui":
            return log_page([log_row("r1", H[1], 0.25, "2026-03-02T11:55:00")])
        return ok(key_page([key(1)], 1, 100).json(), clock["now"])

    p, rec = litellm(handler)
    result = await p.poll()
    assert len(result.requests) == 1 and result.committed is not None
    result.committed()
    clock["now"] += 600
    assert len((await p.poll()).requests) == 0  # r1 was stored by the last window
    paths = [r.url.path for r in rec.requests if r.url.path.startswith("/spend/")]
    assert paths == ["/spend/logs/v2", "/spend/logs/ui", "/spend/logs/ui"]  # remembered


async def test_a_capped_total_is_not_trusted_pages_are_read_until_short() -> None:
    rows = [log_row(f"r{i:03d}", H[1], 0.01, "2026-03-02T11:30:00") for i in range(250)]

    def logs(request: httpx.Request) -> httpx.Response:
        page = int(query(request)["page"])
        chunk = rows[(page - 1) * 100 : page * 100]
        return ok(
            {
                "data": chunk,
                "total": 100,
                "page": page,
                "page_size": 100,
                "total_pages": 1,
                "total_is_capped": True,
            }
        )

    p, _ = litellm(proxy([key(1)], logs))
    assert len((await p.poll()).requests) == 250


async def test_a_spend_log_that_pages_forever_is_a_skip_not_a_hang() -> None:
    def logs(request: httpx.Request) -> httpx.Response:
        page = int(query(request)["page"])
        rows = [log_row(f"p{page}-{i}", H[1], 0.01, "2026-03-02T11:30:00") for i in range(100)]
        return ok({"data": rows, "page": page, "page_size": 100})

    p, rec = litellm(proxy([key(1)], logs), max_pages=20)
    result = await p.poll()
    (skip,) = result.skipped
    assert (skip.token, skip.reason) == (LOG_SKIP, "too_large") and result.observations
    assert sum(r.url.path.startswith("/spend/") for r in rec.requests) == 20


async def test_malformed_log_rows_are_counted_and_left_out() -> None:
    def logs(request: httpx.Request) -> httpx.Response:
        return log_page(
            [
                log_row("r1", H[1], 0.25, "2026-03-02T11:30:00"),
                log_row("r2", H[1], -1.0, "2026-03-02T11:30:00"),
                log_row("r3", H[1], 1e300, "2026-03-02T11:30:00"),
                log_row("r4", H[1], 0.1, "yesterday"),
                log_row("r5", H[1], 0.1, "2026-03-02T11:30:00", prompt_tokens=10**19),
                {"request_id": None},
                "not a row",
            ]
        )

    p, _ = litellm(proxy([key(1)], logs))
    result = await p.poll()
    assert [r.request_id for r in result.requests] == ["r1"]
    (skip,) = result.skipped
    assert skip.token == LOG_SKIP and skip.reason == "malformed" and skip.detail.startswith("6 ")


async def test_a_rejected_master_key_is_an_auth_error_without_the_proxys_text() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        body = {"error": {"message": "Received API Key = sk-...Zq9x", "type": "auth_error", "code": "401"}}
        return httpx.Response(401, json=body)

    p, _ = litellm(handler)
    with pytest.raises(AuthError) as err:
        await p.poll()
    assert "Zq9x" not in str(err.value)


async def test_an_error_answer_names_its_type_not_its_message() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        body = {"error": {"message": "secret sk-abcdefgh", "type": "bad_request_error", "code": "400"}}
        return httpx.Response(400, json=body)

    p, _ = litellm(handler)
    with pytest.raises(ProviderError) as err:
        await p.poll()
    assert err.value.reason == "http_400" and "bad_request_error" in str(err.value)
    assert "sk-abcdefgh" not in str(err.value)


async def test_quarantine_blocks_and_restore_unblocks_by_hash() -> None:
    state = {"blocked": None}

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/key/info":
            return ok({"key": H[1], "info": {"blocked": state["blocked"]}})
        state["blocked"] = request.url.path == "/key/block"
        return ok({"token": H[1], "blocked": state["blocked"]})

    p, rec = litellm(handler)
    outcome = await p.revoke(H[1])
    assert (outcome.done, outcome.verified) == (True, True) and "blocked" in outcome.detail
    posts = [(r.url.path, orjson.loads(r.content)) for r in rec.requests if r.method == "POST"]
    assert posts == [("/key/block", {"key": H[1]})]
    assert await p.verify_refused(H[1]) is True
    back = await p.restore(H[1])
    assert (back.done, back.verified) == (True, True) and state["blocked"] is False
    assert await p.verify_refused(H[1]) is False


async def test_quarantine_of_a_missing_key_says_so_without_blocking() -> None:
    p, rec = litellm(proxy([]))
    outcome = await p.revoke(H[7])
    assert not outcome.done and "no such token" in outcome.detail
    assert not (await p.restore(H[7])).done
    assert all(r.method == "GET" for r in rec.requests)
    bad = await p.revoke("sk-not-a-hash")
    assert not bad.done and "not a LiteLLM key hash" in bad.detail and "sk-not-a-hash"[:16] in bad.detail


# --- the simulator's litellm flavour ---------------------------------------------------------------


def visible_end(now: float) -> int:
    """The end (inclusive) of the spend log windows read so far."""
    return math.floor(now - LAG)


def spent(h: Harness, token_id: str, since: float, until: float) -> tuple[float, int]:
    return log_spend_expected(h.relay, token_id, since + 1e-6, until)


@asynccontextmanager
async def sim(tmp_path: Path, tokens: int = 20, **kw: Any) -> AsyncIterator[Harness]:
    async with harness("litellm", tmp_path, tokens=tokens, **kw) as h:
        yield h


async def admin(h: Harness, method: str, path: str, **kw: Any) -> httpx.Response:
    return await h.client.request(
        method, h.server.url + path, headers={"Authorization": f"Bearer {ADMIN}"}, **kw
    )


async def test_250_keys_over_pages(tmp_path: Path) -> None:
    async with sim(tmp_path, tokens=250) as h:
        cycle = await h.cycle()
        assert cycle.seen == 250 and cycle.complete
        # the proxy's id for a key is the SHA-256 keywatch stores of it: leak reports match directly
        assert {s.token_id for s in h.states.values()} == {key_sha256(t.key) for t in h.relay.list_tokens()}
        assert all(s.key_sha256 == s.token_id for s in h.states.values())


async def test_each_keys_spend_is_its_logged_requests(tmp_path: Path) -> None:
    async with sim(tmp_path, tokens=30) as h:
        await h.cycle()
        first_end = visible_end(h.relay.now())  # rows before were the baseline
        for _ in range(5):
            h.relay.advance_by(600)
            await h.cycle()
        end = visible_end(h.relay.now())
        total = 0.0
        for tok in h.relay.list_tokens():
            usd, requests = spent(h, tok.id, first_end, end)
            state = h.states[key_hash(tok.key)]
            assert state.requests_total == requests, tok.name  # failure rows are not requests
            assert state.spend_total_usd == pytest.approx(usd, abs=1e-6), tok.name
            assert state.corrections_usd_total == 0
            total += usd
        assert total > 1


async def test_a_budget_reset_by_the_late_reset_job_changes_nothing(tmp_path: Path) -> None:
    async with sim(tmp_path, tokens=30) as h:
        h.relay.advance_by(11 * 3600 + 40 * 60)  # 23:40 UTC
        await h.cycle()
        first_end = visible_end(h.relay.now())
        daily = [
            k
            for k in (
                await admin(h, "GET", "/key/list", params={"size": 100, "return_full_object": "true"})
            ).json()["keys"]
            if k["budget_duration"] == "1d" and k["spend"] > 0
        ]
        assert daily
        victim = daily[0]
        assert victim["budget_reset_at"] == "2026-03-03T00:00:00Z"
        tok = h.relay.get(next(t.id for t in h.relay.list_tokens() if key_hash(t.key) == victim["token"]))
        assert tok is not None
        counters = []
        for _ in range(8):  # to 00:20, every 5 minutes
            h.relay.advance_by(300)
            await h.cycle()
            info = (await admin(h, "GET", "/key/info", params={"key": victim["token"]})).json()["info"]
            counters.append((info["spend"], info["budget_reset_at"]))
        # 00:00 passed, yet the counter held yesterday's spend until the job ran at 00:05
        assert counters[3][0] > counters[2][0] and counters[3][1] == "2026-03-03T00:00:00Z"
        assert counters[4][0] < counters[3][0] and counters[4][1] == "2026-03-04T00:00:00Z"
        usd, requests = spent(h, tok.id, first_end, visible_end(h.relay.now()))
        state = h.states[victim["token"]]
        assert state.spend_total_usd == pytest.approx(usd, abs=1e-6) and state.requests_total == requests
        assert state.corrections_usd_total == 0 and state.limits.daily_usd == victim["max_budget"]


async def test_a_key_created_later_counts_all_it_spent_and_a_deleted_one_is_marked(tmp_path: Path) -> None:
    async with sim(tmp_path, tokens=10) as h:
        await h.cycle()
        tok, secret = h.relay.create_token("dev-late-key-2026-03", archetype="service", usd_per_hour=6.0)
        h.relay.advance_by(1200)
        await h.cycle()
        h.relay.rename_token(tok.id, "dev-renamed-key-2026-03")
        gone = h.relay.list_tokens()[0]
        h.relay.delete_token(gone.id)
        h.relay.advance_by(600)
        cycle = await h.cycle()
        assert key_hash(gone.key) in cycle.vanished
        usd, _ = spent(h, tok.id, 0, visible_end(h.relay.now()))
        state = h.by_name("dev-renamed-key-2026-03")
        assert state.token_id == key_hash(secret) and usd > 0
        assert state.spend_total_usd == pytest.approx(usd, abs=1e-6)


@pytest.mark.parametrize("resume", [True, False])
async def test_a_restart_neither_loses_nor_double_counts(tmp_path: Path, resume: bool) -> None:
    async with sim(tmp_path, tokens=5) as h:
        await h.cycle()
        tok, _ = h.relay.create_token("dev-steady-2026-03", archetype="service", usd_per_hour=6.0)
        h.relay.advance_by(900)
        await h.cycle()
        h.restart(resume=resume)
        h.relay.advance_by(900)
        await h.cycle()
        usd, requests = spent(h, tok.id, 0, visible_end(h.relay.now()))
        state = h.by_name("dev-steady-2026-03")
        assert state.requests_total == requests and state.spend_total_usd == pytest.approx(usd, abs=1e-6)


async def test_quarantine_round_trip_at_the_simulator(tmp_path: Path) -> None:
    async with sim(tmp_path, tokens=5) as h:
        await h.cycle()
        tok = next(t for t in h.relay.list_tokens() if t.accepts_key(h.relay.now()))
        token_id = key_hash(tok.key)
        models = h.server.url + "/v1/models"
        assert (await h.client.get(models, headers={"Authorization": f"Bearer {tok.key}"})).status_code == 200

        outcome = await h.provider.revoke(token_id)
        assert (outcome.done, outcome.verified) == (True, True)
        assert h.relay.status(tok) == "disabled"
        assert (await h.client.get(models, headers={"Authorization": f"Bearer {tok.key}"})).status_code == 401
        await h.cycle()
        assert h.states[token_id].status == "disabled"

        back = await h.provider.restore(token_id)
        assert (back.done, back.verified) == (True, True) and h.relay.status(tok) != "disabled"
        assert (await h.provider.verify_refused(token_id)) is False
        await h.cycle()
        assert h.states[token_id].status in ("active", "unused")
        info = (await admin(h, "GET", "/key/info", params={"key": token_id})).json()["info"]
        assert info["blocked"] is False  # null until a key was ever blocked

        deleted = await h.provider.revoke(token_id, delete=True)
        assert (deleted.done, deleted.verified) == (True, True) and h.relay.get(tok.id) is None
        assert not (await h.provider.restore(token_id)).done
        assert token_id in (await h.cycle()).vanished


async def test_a_wrong_master_key_fails_as_auth(tmp_path: Path) -> None:
    async with sim(tmp_path, tokens=3) as h:
        bad = build_provider(replace(h.settings, admin_token=Secret("sk-admin-wrong")), h.client)
        with pytest.raises(AuthError):
            await bad.poll()


def direct(
    h: Harness, client: httpx.AsyncClient | None = None, retries: int = 2, **kw: Any
) -> tuple[LiteLLMProvider, list[float]]:
    """The provider on its own RelayHTTP, whose backoff sleeps are recorded, not slept."""
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    http = RelayHTTP(client or h.client, h.server.url, retries=retries, sleep=sleep)
    return LiteLLMProvider(replace(h.settings, **kw), http), waits


async def test_5xx_and_429_are_retried_honouring_retry_after(tmp_path: Path) -> None:
    async with sim(tmp_path, tokens=5) as h:
        p, waits = direct(h)
        h.relay.faults.update(fail_next=2)
        assert len((await p.poll()).observations) == 5
        assert len(waits) == 2
        h.relay.faults.update(rate_limit_rate=1.0, routes=["key.list"])
        with pytest.raises(ProviderError) as err:
            await p.poll()
        assert err.value.reason == "rate_limited" and waits[2:] == [1.0, 1.0]


async def test_a_failing_spend_log_is_a_skip_and_is_read_again(tmp_path: Path) -> None:
    async with sim(tmp_path, tokens=8) as h:
        await h.cycle()
        first_end = visible_end(h.relay.now())
        h.relay.advance_by(600)
        h.relay.faults.update(malformed_rate=1.0, routes=["spend.logs.v2"])
        cycle = await h.cycle()
        assert cycle.complete and not cycle.fresh and cycle.seen == 8
        assert h.cycles[-1].requests == []
        h.relay.faults.reset()
        h.relay.advance_by(600)
        await h.cycle()
        end = visible_end(h.relay.now())
        for tok in h.relay.list_tokens():
            usd, _ = spent(h, tok.id, first_end, end)
            assert h.states[key_hash(tok.key)].spend_total_usd == pytest.approx(usd, abs=1e-6)


async def test_a_timeout_is_a_provider_error(tmp_path: Path) -> None:
    async with sim(tmp_path, tokens=3) as h:
        client = make_client(timeout=0.2)
        try:
            p, _ = direct(h, client, retries=1)
            h.relay.faults.update(latency=0.5, routes=["key.list"])
            with pytest.raises(ProviderError) as err:
                await p.poll()
            assert err.value.reason == "timeout"
        finally:
            await client.aclose()


async def test_a_proxy_without_spend_logs_is_reported(tmp_path: Path) -> None:
    async with sim(tmp_path, tokens=10, options={"spend_logs": False}) as h:
        reasons = []
        for _ in range(4):
            h.relay.advance_by(60)
            result = await h.provider.poll()
            reasons.append([s.reason for s in result.skipped if s.token == LOG_SKIP])
        assert reasons[:2] == [[], []] and reasons[-1] == [SILENT_LOG]


async def test_the_v2_log_is_not_required(tmp_path: Path) -> None:
    async with sim(tmp_path, tokens=5, options={"logs_v2": False}) as h:
        await h.cycle()
        h.relay.advance_by(600)
        cycle = await h.cycle()
        assert cycle.fresh and all(r.token_id in h.states for r in cycle.fresh)


async def test_forwarded_addresses_keep_the_client(tmp_path: Path) -> None:
    async with sim(tmp_path, tokens=6, options={"forwarded_for": True}) as h:
        await h.cycle()
        h.relay.advance_by(600)
        cycle = await h.cycle()
        ips = {r.ip for r in cycle.fresh}
        assert ips and all(ip is not None and "," not in ip for ip in ips)
        assert ips <= {ip for t in h.relay.list_tokens() for ip in t.ips}


async def test_a_hung_spend_log_leaves_the_keys_listed(tmp_path: Path) -> None:
    async with sim(tmp_path, tokens=4) as h:
        client = make_client(timeout=1.0)
        try:
            p, _ = direct(h, client, retries=0)
            r = await h.client.post(
                h.server.url + "/_sim/hostile", json={"mode": "hang", "routes": ["spend.logs.v2"]}
            )
            assert r.status_code == 200
            result = await p.poll()
            assert len(result.observations) == 4 and result.complete
            assert [(s.token, s.reason) for s in result.skipped] == [(LOG_SKIP, "timeout")]
        finally:
            await client.aclose()


async def test_an_echoing_proxy_leaks_nothing(tmp_path: Path) -> None:
    async with sim(tmp_path, tokens=3) as h:
        await h.client.post(h.server.url + "/_sim/hostile", json={"mode": "echo", "routes": ["key.list"]})
        p, waits = direct(h)
        with pytest.raises(ProviderError) as err:
            await p.poll()
        assert len(waits) == 2  # a 500: retried, then given up
        assert ADMIN not in str(err.value) and "INFO" not in str(err.value)


@pytest.mark.parametrize("kind", ["huge", "negative", "nan", "overflow", "epoch_ms"])
async def test_absurd_entries_at_the_simulator_skip_only_their_keys(tmp_path: Path, kind: str) -> None:
    async with sim(tmp_path, tokens=6) as h:
        victim = h.relay.list_tokens()[2]
        r = await h.client.post(
            h.server.url + "/_sim/hostile",
            json={"mode": "absurd", "kind": kind, "token": victim.id, "routes": ["key.list"]},
        )
        assert r.status_code == 200, r.text
        result = await h.provider.poll()
        ids = {o.token_id for o in result.observations}
        if kind == "epoch_ms":  # milliseconds are read as such
            assert len(ids) == 6 and not result.skipped
        else:
            assert key_hash(victim.key) not in ids and len(ids) == 5
            assert [s.token_id for s in result.skipped] == [key_hash(victim.key)] and result.complete


async def test_lying_pages_are_bounded(tmp_path: Path) -> None:
    async with sim(tmp_path, tokens=6, max_pages=30) as h:
        await h.client.post(h.server.url + "/_sim/hostile", json={"mode": "paging", "routes": ["key.list"]})
        with pytest.raises(ProviderError) as err:
            await h.provider.poll()
        assert err.value.reason == "too_large"
        await h.client.post(
            h.server.url + "/_sim/hostile", json={"mode": "paging", "routes": ["spend.logs.v2"]}
        )
        h.relay.advance_by(600)
        p = build_provider(h.settings, h.client)
        result = await p.poll()
        assert [(s.token, s.reason) for s in result.skipped] == [(LOG_SKIP, "too_large")]


# --- the flavour on the wire ------------------------------------------------------------------------


async def test_the_flavour_speaks_litellms_wire(tmp_path: Path) -> None:
    async with sim(tmp_path, tokens=12) as h:
        bare = (await admin(h, "GET", "/key/list", params={"size": 5})).json()
        assert (
            bare["total_count"] == 12
            and bare["total_pages"] == 3
            and all(isinstance(k, str) for k in bare["keys"])
        )
        too_big = await admin(h, "GET", "/key/list", params={"size": 101})
        assert too_big.status_code == 422 and "detail" in too_big.json()
        full = (await admin(h, "GET", "/key/list", params={"size": 100, "return_full_object": "true"})).json()
        created = [k["created_at"] for k in full["keys"]]
        assert created == sorted(created, reverse=True)
        wrong = await h.client.get(
            h.server.url + "/key/list", headers={"Authorization": "Bearer sk-guess1234"}
        )
        assert wrong.status_code == 401 and wrong.json()["error"]["type"] == "auth_error"
        assert "1234" in wrong.json()["error"]["message"] and wrong.json()["error"]["code"] == "401"
        no_dates = await admin(h, "GET", "/spend/logs/v2")
        assert no_dates.status_code == 400
        iso = await admin(
            h, "GET", "/spend/logs/v2", params={"start_date": "2026-03-02T10:00:00Z", "end_date": "x"}
        )
        assert iso.status_code == 400
        bad_key = await admin(h, "POST", "/key/block", json={"key": "not-a-key"})
        assert bad_key.status_code == 400
        missing = await admin(h, "POST", "/key/block", json={"key": "0" * 64})
        assert missing.status_code == 500  # without store_audit_logs the database error surfaces


async def test_the_log_caps_its_count_and_logs_failures(tmp_path: Path) -> None:
    async with sim(tmp_path, tokens=10, options={"count_cap": 50}) as h:
        h.relay.advance_by(1800)
        params = {"start_date": date_param(START), "end_date": date_param(h.relay.now()), "page_size": 100}
        body = (await admin(h, "GET", "/spend/logs/v2", params=params)).json()
        assert body["total"] == 50 and body["total_is_capped"] is True and body["total_pages"] == 1
        rows = body["data"]
        assert len(rows) == 100  # the page is not capped: only the count is
        times = [r["startTime"] for r in rows]
        assert times == sorted(times, reverse=True) and "Z" not in times[0] and "+" not in times[0]
        failures = [r for r in rows if r["status"] == "failure"]
        assert failures and all(r["spend"] == 0 for r in failures)
        assert all(len(r["api_key"]) == 64 for r in rows)


def test_a_key_page_longer_than_asked_for_is_refused() -> None:
    """Pages of at most PAGE keys were asked for: a longer one (a proxy ignoring `size`, or a
    hostile one) is malformed rather than held in memory page after page."""
    from monitor.providers.litellm_keys import PAGE, key_page_parts

    page = {
        "keys": [{"token": f"{i:064x}"} for i in range(PAGE + 1)],
        "total_count": PAGE + 1,
        "total_pages": 1,
    }
    with pytest.raises(ProviderError, match="more than"):
        key_page_parts(page)
    entries, total, last = key_page_parts({**page, "keys": page["keys"][:PAGE]})
    assert (len(entries), total, last) == (PAGE, PAGE + 1, 1)
