"""The openai adapter: recorded-shape answers (httpx.MockTransport), then the simulator's
`openai` flavour on loopback polled through ingest into a store."""

from __future__ import annotations

from dataclasses import replace
from email.utils import formatdate
from pathlib import Path
from typing import Any

import httpx
import pytest

from monitor.providers.base import AuthError
from monitor.providers.openai import NO_DISABLE, OpenAIProvider
from monitor.providers.openai_usage import DAY, calibration_day
from monitor.providers.pricing import priced_usd
from monitor.providers.registry import build_provider
from monitor.secret import Secret
from tests.monitor.providers.flavor_support import (
    START,
    harness,
    log_spend_expected,
    mock_http,
    query,
    settings_for,
)

KEYS = "/v1/organization/projects/proj_sim/api_keys"


def key(i: int, **kw: Any) -> dict[str, Any]:
    return {
        "object": "organization.project.api_key",
        "redacted_value": "sk-...abcd",
        "name": f"prod-app{i}-api-2025-01",
        "created_at": 1736000000 + i,
        "last_used_at": 1772450000,
        "id": f"key_{i:03d}",
        "owner": {"type": "user"},
        **kw,
    }


def ok(data: Any, date: float = START) -> httpx.Response:
    return httpx.Response(200, json=data, headers={"Date": formatdate(date, usegmt=True)})


def usage_page(
    buckets: list[dict[str, Any]], has_more: bool = False, next_page: str | None = None
) -> httpx.Response:
    return ok({"object": "page", "data": buckets, "has_more": has_more, "next_page": next_page})


def result(key_id: str | None, model: str, tokens_in: int, tokens_out: int, n: int = 1) -> dict[str, Any]:
    return {
        "object": "organization.usage.completions.result",
        "input_tokens": tokens_in,
        "output_tokens": tokens_out,
        "input_cached_tokens": 0,
        "num_model_requests": n,
        "api_key_id": key_id,
        "model": model,
        "project_id": None,
    }


def openai_relay(
    keys: list[dict[str, Any]], buckets: list[dict[str, Any]] | None = None, costs: float = 0.0
) -> Any:
    def handler(request: httpx.Request) -> httpx.Response:
        path, q = request.url.path, query(request)
        if path == KEYS:
            after = q.get("after")
            start = next((i + 1 for i, k in enumerate(keys) if k["id"] == after), 0)
            page = keys[start : start + int(q["limit"])]
            more = start + len(page) < len(keys)
            return ok(
                {
                    "object": "list",
                    "data": page,
                    "has_more": more,
                    "last_id": page[-1]["id"] if page else None,
                }
            )
        if path == "/v1/organization/usage/completions":
            if q["bucket_width"] == "1d":
                return usage_page(
                    [{"start_time": int(q["start_time"]), "results": [result(None, "gpt-4o", 1_000_000, 0)]}]
                )
            return usage_page(buckets or [])
        if path == "/v1/organization/costs":
            results = [{"amount": {"value": costs, "currency": "usd"}}] if costs else []
            return usage_page([{"start_time": int(q["start_time"]), "results": results}])
        return httpx.Response(404, json={"error": {"message": "not found"}})

    return handler


def openai(handler: Any, **kw: Any) -> tuple[OpenAIProvider, Any]:
    http, rec = mock_http(handler)
    return OpenAIProvider(settings_for("openai", "https://api.test", **kw), http), rec


# --- recorded shapes -------------------------------------------------------------------------------


async def test_keys_are_listed_with_after_paging() -> None:
    keys = [key(i) for i in range(250)]
    p, rec = openai(openai_relay(keys))
    result_ = await p.poll()
    assert len(result_.observations) == 250 and result_.complete
    calls = [query(r) for r in rec.requests if r.url.path == KEYS]
    assert [c.get("after") for c in calls] == [None, "key_099", "key_199"]
    obs = result_.observations[0]
    assert obs.spend_from_logs and obs.status == "active" and obs.key_sha256 is None
    assert rec.requests[0].headers["Authorization"] == "Bearer sim-admin-token"


async def test_usage_buckets_become_priced_records_per_key_and_model() -> None:
    b = int(START) - 3600
    buckets = [
        {
            "start_time": b,
            "end_time": b + 60,
            "results": [result("key_001", "gpt-4o-mini-2024-07-18", 4000, 1000, 3)],
        },
        {"start_time": b + 60, "end_time": b + 120, "results": [result(None, "gpt-4o", 10, 10)]},
    ]
    p, rec = openai(openai_relay([key(1)], buckets))
    (r,) = (await p.poll()).requests
    assert r.token_id == "key_001" and r.token_name == "prod-app1-api-2025-01" and r.requests == 3
    assert r.cost_usd == pytest.approx(4000 * 0.15e-6 + 1000 * 0.60e-6)  # a dated name prices as its model
    assert r.request_id == f"{b}:gpt-4o-mini-2024-07-18" and r.ts == b
    (call,) = [
        r for r in rec.requests if r.url.path.endswith("/completions") and query(r)["bucket_width"] == "1m"
    ]
    q = call.url.params
    assert q.get_list("group_by") == ["api_key_id", "model"] and q["project_ids"] == "proj_sim"
    assert int(q["end_time"]) % 60 == 0 and int(q["end_time"]) <= START - OpenAIProvider.usage_settle


async def test_usage_pages_are_followed_while_has_more() -> None:
    pages = {
        None: usage_page([{"start_time": 0, "results": [result("key_001", "gpt-4o", 1, 1)]}], True, "page_2"),
        "page_2": usage_page([{"start_time": 60, "results": [result("key_001", "gpt-4o", 1, 1)]}]),
    }
    handler = openai_relay([key(1)])

    def paged(request: httpx.Request) -> httpx.Response:
        q = query(request)
        if request.url.path.endswith("/completions") and q["bucket_width"] == "1m":
            return pages[q.get("page")]
        return handler(request)  # type: ignore[no-any-return]

    p, _ = openai(paged)
    assert len((await p.poll()).requests) == 2


async def test_daily_costs_calibrate_the_list_prices() -> None:
    # the settled day listed 1M gpt-4o input tokens = 2.50 USD; OpenAI billed 5.00 USD
    b = int(START) - 3600
    buckets = [{"start_time": b, "results": [result("key_001", "gpt-4o", 1000, 0)]}]
    p, rec = openai(openai_relay([key(1)], buckets, costs=5.0))
    (r,) = (await p.poll()).requests
    assert r.cost_usd == pytest.approx(2 * priced_usd("gpt-4o", 1000, 0, 0))
    day = calibration_day(START)
    cost_call = next(r for r in rec.requests if r.url.path == "/v1/organization/costs")
    assert query(cost_call)["start_time"] == str(day) and query(cost_call)["end_time"] == str(day + DAY)
    await p.poll()
    assert sum(r.url.path == "/v1/organization/costs" for r in rec.requests) == 1  # once a day


async def test_an_absurd_bill_does_not_scale_prices() -> None:
    buckets = [{"start_time": int(START) - 3600, "results": [result("key_001", "gpt-4o", 1000, 0)]}]
    p, _ = openai(openai_relay([key(1)], buckets, costs=1000.0))
    (r,) = (await p.poll()).requests
    assert r.cost_usd == pytest.approx(priced_usd("gpt-4o", 1000, 0, 0))


async def test_a_rejected_admin_key_is_an_auth_error() -> None:
    p, _ = openai(lambda r: httpx.Response(401, json={"error": {"message": "Incorrect API key"}}))
    with pytest.raises(AuthError):
        await p.poll()


async def test_quarantine_needs_the_explicit_delete_setting() -> None:
    p, rec = openai(openai_relay([key(1)]))
    outcome = await p.revoke("key_001")
    assert (outcome.done, outcome.verified, outcome.detail) == (False, False, NO_DISABLE)
    assert not rec.requests


async def test_quarantine_deletes_and_verifies_the_key_is_gone() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "DELETE":
            return ok({"object": "organization.project.api_key.deleted", "id": "key_001", "deleted": True})
        return httpx.Response(404, json={"error": {"message": "No such API key."}})

    p, rec = openai(handler)
    outcome = await p.revoke("key_001", delete=True)
    assert outcome.done and outcome.verified
    assert [(r.method, r.url.path) for r in rec.requests] == [
        ("DELETE", f"{KEYS}/key_001"),
        ("GET", f"{KEYS}/key_001"),
    ]


# --- the simulator's openai flavour ---------------------------------------------------------------


def visible_end(now: float) -> int:
    """The end (exclusive) of the usage windows read so far."""
    return int((now - OpenAIProvider.usage_settle) // 60 * 60)


async def test_250_keys_over_pages(tmp_path: Path) -> None:
    async with harness("openai", tmp_path, tokens=250) as h:
        cycle = await h.cycle()
        assert cycle.seen == 250 and cycle.complete


async def test_each_keys_spend_is_its_priced_usage(tmp_path: Path) -> None:
    async with harness("openai", tmp_path, tokens=30) as h:
        await h.cycle()
        first_end = visible_end(h.relay.now())  # earlier buckets were the baseline
        for _ in range(6):
            h.relay.advance_by(600)
            await h.cycle()
        end = visible_end(h.relay.now())
        spent = 0.0
        for t in h.relay.truth():
            usd, requests = log_spend_expected(h.relay, t["id"], first_end, end - 0.001)
            state = h.by_name(t["name"])
            assert state.requests_total == requests, t["name"]
            assert state.spend_total_usd == pytest.approx(usd, rel=1e-3, abs=1e-4), t["name"]
            spent += usd
        assert spent > 0


async def test_a_key_created_later_counts_all_it_spent(tmp_path: Path) -> None:
    async with harness("openai", tmp_path, tokens=10) as h:
        await h.cycle()
        tok, _ = h.relay.create_token("dev-late-key-2026-03", archetype="service", usd_per_hour=6.0)
        h.relay.advance_by(1800)
        await h.cycle()
        h.relay.rename_token(tok.id, "dev-renamed-key-2026-03")
        h.relay.advance_by(600)
        await h.cycle()
        usd, _ = log_spend_expected(h.relay, tok.id, 0, visible_end(h.relay.now()) - 0.001)
        state = h.by_name("dev-renamed-key-2026-03")
        assert state.token_id == tok.id and usd > 0
        assert state.spend_total_usd == pytest.approx(usd, rel=1e-3)


async def test_a_wrong_admin_key_fails_as_auth(tmp_path: Path) -> None:
    async with harness("openai", tmp_path, tokens=5) as h:
        bad = build_provider(replace(h.settings, admin_token=Secret("sk-admin-wrong")), h.client)
        with pytest.raises(AuthError):
            await bad.poll()


async def test_quarantine_deletes_only_when_allowed(tmp_path: Path) -> None:
    async with harness("openai", tmp_path, tokens=5) as h:
        await h.cycle()
        victim = next(iter(h.states.values()))
        assert (await h.provider.revoke(victim.token_id)).detail == NO_DISABLE
        assert h.relay.get(victim.token_id) is not None
        outcome = await h.provider.revoke(victim.token_id, delete=True)
        assert outcome.done and outcome.verified and h.relay.get(victim.token_id) is None
        cycle = await h.cycle()
        assert victim.token_id in cycle.vanished


@pytest.mark.parametrize("resume", [True, False])
async def test_a_restart_neither_loses_nor_double_counts_usage(tmp_path: Path, resume: bool) -> None:
    async with harness("openai", tmp_path, tokens=10) as h:
        await h.cycle()
        tok, _ = h.relay.create_token("dev-steady-2026-03", archetype="service", usd_per_hour=6.0)
        h.relay.advance_by(900)
        await h.cycle()
        h.restart(resume=resume)
        h.relay.advance_by(900)
        await h.cycle()
        usd, requests = log_spend_expected(h.relay, tok.id, 0, visible_end(h.relay.now()) - 0.001)
        state = h.by_name("dev-steady-2026-03")
        assert state.requests_total == requests and state.spend_total_usd == pytest.approx(usd, rel=1e-3)
