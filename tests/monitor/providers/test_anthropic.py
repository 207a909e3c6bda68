"""The anthropic adapter: recorded-shape answers (httpx.MockTransport), the simulator's
`anthropic` flavour on the wire, then that flavour on loopback polled through ingest into a
store (spend against what the relay booked, quarantine and restore at the simulator, faults
and hostile modes)."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import UTC, datetime
from email.utils import formatdate, parsedate_to_datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

import monitor.providers.anthropic as anthropic_module
from monitor.clock import FakeClock
from monitor.model import RevokeOutcome
from monitor.providers.anthropic import KEYS_PATH, AnthropicProvider
from monitor.providers.anthropic_usage import USAGE_PATH, USAGE_SKIP, rfc3339
from monitor.providers.base import AuthError, ProviderError
from monitor.providers.http import RelayHTTP, make_client
from monitor.providers.openai_usage import DAY, calibration_day
from monitor.providers.registry import build_provider
from monitor.secret import Secret, key_sha256
from monitor.simulator import SimulatedRelay, make_relay, serve
from monitor.simulator.anthropic import DEFAULT_WORKSPACE_ID, split_cost
from tests.monitor.providers.flavor_support import (
    ADMIN,
    START,
    Harness,
    Recorder,
    harness,
    log_spend_expected,
    mock_http,
    settings_for,
)

COST_PATH = "/v1/organizations/cost_report"
HEADERS = {"x-api-key": ADMIN, "anthropic-version": "2023-06-01"}
SONNET = "claude-sonnet-4-5-20250929"


def key(i: int, **kw: Any) -> dict[str, Any]:
    return {
        "type": "api_key",
        "id": f"apikey_{i:03d}",
        "created_at": "2026-01-05T10:00:00.123456Z",
        "created_by": {"id": "user_01", "type": "user"},
        "expires_at": None,
        "name": f"prod-app{i}-2026-01",
        "partial_key_hint": "sk-ant-api03-abc...wxyz",
        "status": "active",
        "workspace_id": None,
        "scope": {"type": "workspace", "workspace_id": "wrkspc_default"},
        **kw,
    }


def ok(data: Any, date: float = START) -> httpx.Response:
    return httpx.Response(200, json=data, headers={"Date": formatdate(date, usegmt=True)})


def page(buckets: list[dict[str, Any]], more: bool = False, next_page: str | None = None) -> httpx.Response:
    return ok({"data": buckets, "has_more": more, "next_page": next_page})


def result(key_id: str | None, model: str, *, tier: str = "standard", **counts: Any) -> dict[str, Any]:
    get = counts.get
    return {
        "uncached_input_tokens": get("uncached", 0),
        "cache_creation": {
            "ephemeral_5m_input_tokens": get("w5", 0),
            "ephemeral_1h_input_tokens": get("w1", 0),
        },
        "cache_read_input_tokens": get("read", 0),
        "output_tokens": get("out", 0),
        "server_tool_use": {"web_search_requests": get("searches", 0)},
        "api_key_id": key_id,
        "workspace_id": None,
        "model": model,
        "service_tier": tier,
        "context_window": None,
    }


def bucket(ts: int, *results: dict[str, Any]) -> dict[str, Any]:
    return {"starting_at": rfc3339(ts), "ending_at": rfc3339(ts + 60), "results": list(results)}


def platform(
    keys: list[dict[str, Any]],
    buckets: list[dict[str, Any]] | None = None,
    *,
    billed_cents: str | None = None,
    day: list[dict[str, Any]] | None = None,
) -> Callable[[httpx.Request], httpx.Response]:
    """Recorded-shape answers: keys by `after_id`, 1m usage, and a settled day's usage and bill."""

    def handler(request: httpx.Request) -> httpx.Response:
        path, q = request.url.path, request.url.params
        if path == KEYS_PATH:
            after = q.get("after_id")
            start = next((i + 1 for i, k in enumerate(keys) if after and k.get("id") == after), 0)
            rows = keys[start : start + int(q["limit"])]
            last = rows[-1].get("id") if rows else None
            return ok(
                {"data": rows, "has_more": start + len(rows) < len(keys), "first_id": None, "last_id": last}
            )
        if path == USAGE_PATH:
            if q["bucket_width"] == "1d":
                return page([{"starting_at": q["starting_at"], "results": day or []}])
            return page(buckets or [])
        if path == COST_PATH:
            rows = (
                [{"amount": billed_cents, "currency": "USD", "cost_type": "tokens"}] if billed_cents else []
            )
            return page([{"starting_at": q["starting_at"], "results": rows}])
        return httpx.Response(
            404, json={"type": "error", "error": {"type": "not_found_error", "message": "no"}}
        )

    return handler


def adapter(
    handler: Callable[[httpx.Request], httpx.Response], **kw: Any
) -> tuple[AnthropicProvider, Recorder]:
    http, rec = mock_http(handler, "https://api.test")
    return AnthropicProvider(settings_for("anthropic", "https://api.test", **kw), http), rec


def calls(rec: Recorder, path: str, width: str | None = None) -> list[httpx.Request]:
    return [
        r for r in rec.requests if r.url.path == path and width in (None, r.url.params.get("bucket_width"))
    ]


def epoch(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


# --- recorded shapes ---------------------------------------------------------------------------


async def test_keys_are_listed_by_after_id_with_the_admin_headers_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(anthropic_module, "KEYS_PAGE", 100)
    p, rec = adapter(platform([key(i) for i in range(250)]))
    polled = await p.poll()
    assert len(polled.observations) == 250 and polled.complete and not polled.skipped
    listed = calls(rec, KEYS_PATH)
    assert [r.url.params.get("after_id") for r in listed] == [None, "apikey_099", "apikey_199"]
    assert {r.url.params["limit"] for r in listed} == {"100"}
    for r in rec.requests:
        assert r.headers["x-api-key"] == ADMIN and r.headers["anthropic-version"] == "2023-06-01"
        assert "authorization" not in r.headers  # Anthropic may refuse a request with both
    obs = polled.observations[0]
    assert (obs.token_id, obs.name, obs.status) == ("apikey_000", "prod-app0-2026-01", "active")
    assert obs.spend_from_logs and obs.key_sha256 is None and obs.expires_at is None
    assert obs.created_at == datetime(2026, 1, 5, 10, 0, 0, 123456, tzinfo=UTC).timestamp()
    assert polled.relay_time == START


async def test_statuses_expiry_long_names_and_unknown_statuses() -> None:
    keys = [
        key(1, status="inactive"),
        key(2, status="archived"),
        key(3, status="expired", expires_at="2026-02-01T00:00:00Z"),
        key(4, name="n" * 500),
        key(5, status="suspended"),
        key(6, expires_at=1e308),
        {"name": "no id"},
    ]
    polled = await adapter(platform(keys))[0].poll()
    by = {o.token_id: o for o in polled.observations}
    assert [by[f"apikey_00{i}"].status for i in (1, 2, 3)] == ["disabled", "revoked", "expired"]
    assert by["apikey_003"].expires_at == epoch("2026-02-01T00:00:00+00:00")
    assert by["apikey_004"].name == "n" * 256
    assert [(s.token_id, s.reason) for s in polled.skipped] == [
        ("apikey_005", "malformed"),
        ("apikey_006", "absurd_value"),
        (None, "malformed"),
    ]
    assert not polled.complete  # an entry that names no key hides a key


@pytest.mark.parametrize(
    ("answer", "reason", "words"),
    [
        (lambda n: {"has_more": True, "last_id": "apikey_001"}, "malformed", "repeats"),
        (lambda n: {"has_more": True, "last_id": None}, "malformed", "without a last_id"),
        (lambda n: {"has_more": True, "last_id": f"apikey_{n}"}, "too_large", "pages of keys"),
    ],
)
async def test_a_key_list_that_never_ends_is_a_fault_never_a_hang(
    answer: Callable[[int], dict[str, Any]], reason: str, words: str
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        handler.n += 1  # type: ignore[attr-defined]
        return ok({"data": [key(1)], "first_id": "apikey_001", **answer(handler.n)})  # type: ignore[attr-defined]

    handler.n = 0  # type: ignore[attr-defined]
    p, rec = adapter(handler, max_pages=5)
    with pytest.raises(ProviderError) as caught:
        await p.poll()
    assert caught.value.reason == reason and words in str(caught.value) and len(rec.requests) <= 5


async def test_usage_rows_are_priced_per_token_class_tier_and_web_search() -> None:
    b = int(START) - 3600
    buckets = [
        bucket(
            b,
            result("apikey_001", SONNET, uncached=1000, w5=2000, w1=3000, read=4000, out=500, searches=3),
            result("apikey_001", "claude-haiku-4-5-20251001", tier="batch", uncached=1_000_000),
            result(None, SONNET, uncached=10),  # Console usage: nobody's key
        )
    ]
    p, rec = adapter(platform([key(1)], buckets))
    sonnet, haiku = sorted((await p.poll()).requests, key=lambda r: r.model, reverse=True)
    assert sonnet.cost_usd == pytest.approx(
        (1000 * 3 + 2000 * 3.75 + 3000 * 6 + 4000 * 0.3 + 500 * 15) / 1e6 + 0.03
    )
    assert (sonnet.prompt_tokens, sonnet.completion_tokens, sonnet.requests) == (10_000, 500, 0)
    assert (sonnet.token_id, sonnet.token_name, sonnet.ts) == ("apikey_001", "prod-app1-2026-01", b)
    assert sonnet.request_id == f"{b}:{SONNET}:standard" and sonnet.ip is None
    assert haiku.cost_usd == pytest.approx(0.5) and haiku.request_id.endswith(":batch")  # half price
    (call,) = calls(rec, USAGE_PATH, "1m")
    q = call.url.params
    assert q.get_list("group_by[]") == ["api_key_id", "model", "service_tier"]
    end = epoch(q["ending_at"])
    assert (
        end % 60 == 0
        and START - AnthropicProvider.usage_settle - 60 < end <= START - AnthropicProvider.usage_settle
    )
    assert epoch(q["starting_at"]) == end - AnthropicProvider.usage_initial_lookback


async def test_usage_pages_are_followed_and_a_repeating_cursor_is_read_again_next_cycle() -> None:
    b = int(START) - 3600
    first = page([bucket(b, result("apikey_001", SONNET, out=10))], True, "page_2")
    answers = {
        None: first,
        "page_2": page([bucket(b + 60, result("apikey_001", SONNET, out=10))], True, "page_2"),
    }
    base = platform([key(1)])

    def handler(request: httpx.Request) -> httpx.Response:
        q = request.url.params
        if request.url.path == USAGE_PATH and q["bucket_width"] == "1m":
            return answers[q.get("page")]
        return base(request)

    p, _ = adapter(handler)
    polled = await p.poll()
    assert not polled.requests and polled.committed is None and polled.complete
    assert [(s.token, s.reason) for s in polled.skipped] == [(USAGE_SKIP, "malformed")]
    answers["page_2"] = page([bucket(b + 60, result("apikey_001", SONNET, out=10))])
    assert len((await p.poll()).requests) == 2  # the same window, read again


async def test_absurd_usage_counts_are_left_out_and_the_rest_of_the_window_counts() -> None:
    b = int(START) - 3600
    rows = [
        result("apikey_001", "m-good", out=100),
        result("apikey_001", "m-negative", out=-5),
        result("apikey_001", "m-huge", out=10**19),
        result("apikey_001", "m-text", out="NaN"),
        result("apikey_001", "m-overflow", out=12345),
        {**result("apikey_001", "m-cache", out=1), "cache_creation": [1]},
    ]
    body = json.dumps({"data": [bucket(b, *rows)], "has_more": False, "next_page": None})
    raw = body.replace("12345", "1e400").encode()  # past the double range: orjson refuses it
    base = platform([key(1)])

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == USAGE_PATH and request.url.params["bucket_width"] == "1m":
            return httpx.Response(200, content=raw, headers={"Date": formatdate(START, usegmt=True)})
        return base(request)

    polled = await adapter(handler)[0].poll()
    assert [r.model for r in polled.requests] == ["m-good"]
    assert sorted(s.reason for s in polled.skipped) == ["absurd_value", "malformed", "negative_usage"]
    assert all(s.token == USAGE_SKIP for s in polled.skipped) and polled.complete
    assert polled.committed is not None  # one bad row does not hold the window back


async def test_the_settled_days_bill_calibrates_list_prices_once_a_day() -> None:
    b = int(START) - 3600
    day = [
        result(None, SONNET, uncached=1_000_000),  # listed 3.00 USD
        result(None, "claude-opus-4-1", tier="priority", uncached=1_000_000),  # not in the bill
    ]
    buckets = [bucket(b, result("apikey_001", SONNET, uncached=1000, searches=1))]
    p, rec = adapter(platform([key(1)], buckets, billed_cents="375.000000", day=day))
    (r,) = (await p.poll()).requests
    assert r.cost_usd == pytest.approx(1.25 * 0.003 + 0.01)  # searches are not scaled
    (bill,) = calls(rec, COST_PATH)
    assert epoch(bill.url.params["starting_at"]) == calibration_day(START)
    assert epoch(bill.url.params["ending_at"]) == calibration_day(START) + DAY
    assert bill.url.params.get_list("group_by[]") == ["description"]
    await p.poll()
    assert len(calls(rec, COST_PATH)) == 1


async def test_an_absurd_bill_does_not_scale_prices() -> None:
    buckets = [bucket(int(START) - 3600, result("apikey_001", SONNET, uncached=1000))]
    day = [result(None, SONNET, uncached=1_000_000)]
    (r,) = (await adapter(platform([key(1)], buckets, billed_cents="100000", day=day))[0].poll()).requests
    assert r.cost_usd == pytest.approx(0.003)


async def test_a_failing_cost_report_keeps_list_prices_and_is_asked_again_later() -> None:
    now = [START]
    buckets = [bucket(int(START) - 3600, result("apikey_001", SONNET, uncached=1000))]
    base = platform([key(1)], buckets, billed_cents="375", day=[result(None, SONNET, uncached=1_000_000)])

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == COST_PATH and now[0] < START + 600:
            return httpx.Response(503, text="<html>503 Service Temporarily Unavailable</html>")
        return base(request)

    http, rec = mock_http(handler, "https://api.test")
    p = AnthropicProvider(settings_for("anthropic", "https://api.test"), http, now=lambda: now[0])

    def dated(request: httpx.Request) -> httpx.Response:  # the relay's clock follows ours
        answer = handler(request)
        answer.headers["Date"] = formatdate(now[0], usegmt=True)
        return answer

    rec.handler = dated
    (r,) = (await p.poll()).requests
    assert r.cost_usd == pytest.approx(0.003) and len(calls(rec, COST_PATH)) == 2  # one retry
    now[0] += 300
    await p.poll()
    assert len(calls(rec, COST_PATH)) == 2  # not asked again for 600 s
    now[0] += 301
    await p.poll()
    assert len(calls(rec, COST_PATH)) == 3 and p._usage.factor == pytest.approx(1.25)


@pytest.mark.parametrize("status", [401, 403])
async def test_a_rejected_admin_key_is_an_auth_error(status: int) -> None:
    error = {"type": "error", "error": {"type": "authentication_error", "message": "invalid x-api-key"}}
    p, _ = adapter(lambda r: httpx.Response(status, json=error))
    with pytest.raises(AuthError):
        await p.poll()


async def test_a_configured_key_is_hashed_only_when_its_hint_matches() -> None:
    secret = "sk-ant-api03-abc" + "x" * 80 + "wxyz"
    keys = {"prod-app1-2026-01": Secret(secret), "prod-app2-2026-01": Secret("sk-ant-api03-zzz" + "y" * 84)}
    polled = await adapter(platform([key(1), key(2)]), keys=keys)[0].poll()
    assert [o.key_sha256 for o in polled.observations] == [key_sha256(secret), None]


async def test_quarantine_posts_inactive_and_reads_it_back() -> None:
    state = {"status": "active"}

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            state.update(json.loads(request.content))
        return ok(key(1, **state))

    p, rec = adapter(handler)
    assert await p.revoke("apikey_001") == RevokeOutcome(True, True, "set inactive; the key reads inactive")
    before, post, get = rec.requests  # read first: a key already inactive is left as it is
    assert before.method == "GET"
    assert (post.method, post.url.path, json.loads(post.content)) == (
        "POST",
        f"{KEYS_PATH}/apikey_001",
        {"status": "inactive"},
    )
    assert (get.method, get.url.path) == ("GET", f"{KEYS_PATH}/apikey_001")
    assert post.headers["x-api-key"] == ADMIN and "authorization" not in post.headers
    outcome = await p.revoke("../organizations/me")
    assert not outcome.done and len(rec.requests) == 3  # never put into a path


# --- the simulator's anthropic flavour on the wire ------------------------------------------------


@asynccontextmanager
async def flavour(
    tokens: int = 10, **options: Any
) -> AsyncIterator[tuple[SimulatedRelay, httpx.AsyncClient]]:
    relay = make_relay(tokens=tokens, seed=5, clock=FakeClock(START))
    server = await serve(relay, "127.0.0.1", 0, flavor="anthropic", **options)
    try:
        async with httpx.AsyncClient(base_url=server.url, headers=HEADERS) as client:
            yield relay, client
    finally:
        await server.close()


async def test_the_flavour_wants_x_api_key_and_anthropic_version() -> None:
    async with flavour() as (_, c):
        bad = await c.get(KEYS_PATH, headers={"x-api-key": "nope"})
        assert bad.status_code == 401
        assert bad.json()["error"]["type"] == "authentication_error" and bad.json()["type"] == "error"
        bearer = await c.get(KEYS_PATH, headers={"x-api-key": "", "Authorization": f"Bearer {ADMIN}"})
        assert bearer.status_code == 401
        c.headers.pop("anthropic-version")
        versionless = await c.get(KEYS_PATH)
        assert (
            versionless.status_code == 400 and versionless.json()["error"]["type"] == "invalid_request_error"
        )


async def test_keys_page_newest_first_with_hints_workspaces_and_microseconds() -> None:
    async with flavour(tokens=25) as (relay, c):
        first = (await c.get(KEYS_PATH, params={"limit": 10})).json()
        assert len(first["data"]) == 10 and first["has_more"] and first["last_id"] == first["data"][-1]["id"]
        rest = (await c.get(KEYS_PATH, params={"limit": 1000, "after_id": first["last_id"]})).json()
        back = (await c.get(KEYS_PATH, params={"limit": 5, "before_id": rest["first_id"]})).json()
        assert [k["id"] for k in back["data"]] == [k["id"] for k in first["data"][5:]]
        ids = [k["id"] for k in first["data"] + rest["data"]]
        assert ids == [t.id for t in reversed(relay.list_tokens())] and not rest["has_more"]
        k = first["data"][0]
        secret = relay.get(k["id"]).key  # type: ignore[union-attr]
        assert k["partial_key_hint"] == f"{secret[:16]}...{secret[-4:]}" and secret not in json.dumps(first)
        assert k["created_at"].endswith("Z") and len(k["created_at"]) == len("2024-10-30T23:58:27.427722Z")
        keys = first["data"] + rest["data"]
        assert {x["scope"]["workspace_id"] for x in keys if x["workspace_id"] is None} == {
            DEFAULT_WORKSPACE_ID
        }
        assert any(x["workspace_id"] for x in keys)
        for params in ({"limit": 0}, {"limit": 1001}, {"after_id": "nope"}, {"status": "gone"}):
            assert (await c.get(KEYS_PATH, params=params)).status_code == 400, params


async def test_key_updates_follow_the_documented_statuses() -> None:
    async with flavour() as (relay, c):
        tok = relay.list_tokens()[0]
        path = f"{KEYS_PATH}/{tok.id}"
        for body in ({"status": "expired"}, {"status": "paused"}, {"name": ""}, {"name": "n" * 501}):
            answer = await c.post(path, json=body)
            assert answer.status_code == 400 and answer.json()["error"]["type"] == "invalid_request_error"
        assert (await c.post(path, json={"status": "inactive"})).json()["status"] == "inactive"
        assert relay.status(relay.token(tok.id)) == "disabled"
        assert (await c.get("/v1/models", headers={"x-api-key": tok.key})).status_code == 401
        assert (await c.post(path, json={"status": "active", "name": "renamed"})).json()["name"] == "renamed"
        assert (await c.get("/v1/models", headers={"x-api-key": tok.key})).status_code == 200
        assert (await c.post(path, json={"status": "archived"})).json()["status"] == "archived"
        assert (await c.post(path, json={"status": "active"})).status_code == 400
        missing = await c.get(f"{KEYS_PATH}/key_nope")
        assert missing.status_code == 404 and missing.json()["error"]["type"] == "not_found_error"


async def test_usage_shows_late_without_money_or_requests_and_pages_by_bucket() -> None:
    async with flavour(report_delay=240.0, late_every=0) as (relay, c):
        relay.advance_by(1200)
        params: dict[str, Any] = {
            "starting_at": rfc3339(START),
            "ending_at": rfc3339(START + 1200),
            "bucket_width": "1m",
            "group_by[]": ["api_key_id", "model"],
            "limit": 15,
        }
        one = (await c.get(USAGE_PATH, params=params)).json()
        assert len(one["data"]) == 15 and one["has_more"]
        assert base64.b64decode(one["next_page"][5:]).decode() == rfc3339(START + 15 * 60)
        two = (await c.get(USAGE_PATH, params={**params, "page": one["next_page"]})).json()
        assert len(two["data"]) == 5 and not two["has_more"] and two["next_page"] is None
        rows = [r for b in one["data"] + two["data"] for r in b["results"]]
        assert all(
            r["service_tier"] is None and "cost" not in json.dumps(r) and "requests" not in r for r in rows
        )
        shown = {b["starting_at"] for b in one["data"] + two["data"] if b["results"]}
        assert max(shown) < rfc3339(START + 1200 - 240 + 60)  # the last 4 minutes are not in yet
        assert len(shown) > 10
        for bad in ({"bucket_width": "5m"}, {"limit": 1441}, {"starting_at": "yesterday"}):
            assert (await c.get(USAGE_PATH, params={**params, **bad})).status_code == 400, bad


async def test_the_cost_report_bills_days_in_cent_strings() -> None:
    async with flavour(bill_factor=2.0, console_usage=False) as (relay, c):
        relay.advance_by(DAY + 7200)
        day = int(START // DAY * DAY)
        params = {"starting_at": rfc3339(day), "ending_at": rfc3339(day + DAY), "group_by[]": ["description"]}
        (b,) = (await c.get(COST_PATH, params=params)).json()["data"]
        tokens = [r for r in b["results"] if r["cost_type"] == "tokens"]
        assert all(isinstance(r["amount"], str) and r["currency"] == "USD" for r in b["results"])
        assert {r["token_type"] for r in tokens} >= {
            "uncached_input_tokens",
            "output_tokens",
            "cache_read_input_tokens",
        }
        billed = sum(float(r["amount"]) for r in b["results"]) / 100
        booked = sum(e.cost_usd for e in relay.events_between(day, day + DAY - 0.001))
        assert booked < billed <= 2 * booked + 1e-6
        (total,) = (await c.get(COST_PATH, params={**params, "group_by[]": []})).json()["data"][0]["results"]
        assert float(total["amount"]) == pytest.approx(billed * 100) and total["description"] is None
        assert (await c.get(COST_PATH, params={**params, "bucket_width": "1h"})).status_code == 400


def test_split_cost_gives_back_the_cost_at_list_prices() -> None:
    from monitor.providers.anthropic_pricing import price_of

    for model, tier in (
        (SONNET, "standard"),
        ("claude-opus-4-1-20250805", "batch"),
        ("claude-3-haiku", "standard"),
    ):
        counts = split_cost(1.2345, 37, model, tier)
        usd = counts.tokens_usd(price_of(model), batch=tier == "batch") + counts.searches_usd
        assert counts.web_searches == 3 and usd == pytest.approx(1.2345, abs=1e-4)


async def test_answers_carry_the_relays_clock() -> None:
    async with flavour() as (relay, c):
        relay.advance_by(12_345)
        r = await c.get(KEYS_PATH)
        assert parsedate_to_datetime(r.headers["Date"]).timestamp() == int(relay.now())


# --- adapter against the flavour, through ingest into a store ------------------------------------


def visible_end(now: float) -> int:
    """The end (exclusive) of the usage windows read so far."""
    return int((now - AnthropicProvider.usage_settle) // 60 * 60)


def booked(h: Harness, token: str, since: float, until: float) -> tuple[float, int]:
    return log_spend_expected(h.relay, token, since, until - 0.001)


async def test_each_keys_spend_is_its_priced_usage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(anthropic_module, "KEYS_PAGE", 7)  # five pages on the wire
    async with harness("anthropic", tmp_path, tokens=30) as h:
        cycle = await h.cycle()
        assert cycle.seen == 30 and cycle.complete
        first_end = visible_end(h.relay.now())  # earlier buckets were the baseline
        for _ in range(6):
            h.relay.advance_by(600)
            await h.cycle()
        end = visible_end(h.relay.now())
        spent = 0.0
        for t in h.relay.truth():
            usd, _ = booked(h, t["id"], first_end, end)
            state = h.by_name(t["name"])
            assert state.spend_total_usd == pytest.approx(usd, rel=1e-4, abs=1e-4), t["name"]
            assert state.requests_total == 0  # the report counts no requests
            spent += usd
        assert spent > 1.0


async def test_a_key_created_later_counts_all_it_spent(tmp_path: Path) -> None:
    async with harness("anthropic", tmp_path, tokens=10) as h:
        await h.cycle()
        tok, _ = h.relay.create_token("dev-late-key-2026-03", archetype="batch", usd_per_hour=6.0)
        h.relay.advance_by(1800)
        await h.cycle()
        h.relay.rename_token(tok.id, "dev-renamed-key-2026-03")
        h.relay.advance_by(86_400)  # a night of batch work
        await h.cycle()
        await h.cycle()
        usd, _ = booked(h, tok.id, 0, visible_end(h.relay.now()))
        state = h.by_name("dev-renamed-key-2026-03")
        assert state.token_id == tok.id and usd > 1.0
        assert state.spend_total_usd == pytest.approx(usd, rel=1e-4)


@pytest.mark.parametrize("resume", [True, False])
async def test_a_restart_neither_loses_nor_double_counts_usage(tmp_path: Path, resume: bool) -> None:
    async with harness("anthropic", tmp_path, tokens=10) as h:
        await h.cycle()
        tok, _ = h.relay.create_token("dev-steady-2026-03", archetype="service", usd_per_hour=6.0)
        h.relay.advance_by(900)
        await h.cycle()
        h.restart(resume=resume)
        h.relay.advance_by(900)
        await h.cycle()
        usd, _ = booked(h, tok.id, 0, visible_end(h.relay.now()))
        assert h.by_name("dev-steady-2026-03").spend_total_usd == pytest.approx(usd, rel=1e-4)


async def test_buckets_read_before_they_settle_are_never_counted_twice(tmp_path: Path) -> None:
    class Hasty(AnthropicProvider):
        usage_settle = 60.0  # shorter than the report's delay: buckets are read before they fill

    async with harness(
        "anthropic", tmp_path, tokens=20, options={"report_delay": 240.0, "late_every": 2}
    ) as h:
        h.provider = Hasty(h.settings, RelayHTTP(h.client, h.server.url))
        await h.cycle()
        start = int(h.relay.now() - 60) // 60 * 60
        for _ in range(20):
            h.relay.advance_by(120)
            await h.cycle()
        total = 0.0
        for t in h.relay.truth():
            usd, _ = booked(h, t["id"], start, h.relay.now() + 1)
            assert h.by_name(t["name"]).spend_total_usd <= usd + 1e-4, t["name"]
            total += usd
        assert sum(s.spend_total_usd for s in h.states.values()) > 0.5 * total > 1.0


async def test_the_bill_of_a_settled_day_calibrates_each_keys_spend(tmp_path: Path) -> None:
    async with harness("anthropic", tmp_path, tokens=12, options={"bill_factor": 1.25}) as h:
        h.relay.advance_by(DAY + 7 * 3600)  # yesterday is settled 6 h after midnight
        await h.cycle()
        assert h.provider._usage.factor == pytest.approx(1.25)  # type: ignore[attr-defined]
        first_end = visible_end(h.relay.now())
        h.relay.advance_by(1800)
        await h.cycle()
        total = sum(booked(h, t["id"], first_end, visible_end(h.relay.now()))[0] for t in h.relay.truth())
        counted = sum(s.spend_total_usd for s in h.states.values())
        assert total > 0.5 and counted == pytest.approx(1.25 * total, rel=0.02)


# --- quarantine and restore, verified at the simulator -------------------------------------------


async def test_quarantine_disables_and_restore_enables_again(tmp_path: Path) -> None:
    async with harness("anthropic", tmp_path, tokens=8) as h:
        await h.cycle()
        tok = next(t for t in h.relay.list_tokens() if t.accepts_key(h.relay.now()))
        probe = {"x-api-key": tok.key, "anthropic-version": "2023-06-01"}
        outcome = await h.provider.revoke(tok.id)
        assert outcome == RevokeOutcome(True, True, "set inactive; the key reads inactive")
        assert h.relay.status(h.relay.token(tok.id)) == "disabled"
        assert (await h.client.get(f"{h.server.url}/v1/models", headers=probe)).status_code == 401
        assert await h.provider.verify_refused(tok.id) is True
        await h.cycle()
        assert h.states[tok.id].status == "disabled"
        assert (await h.provider.revoke(tok.id)).done  # again: still inactive, still done
        restored = await h.provider.restore(tok.id)
        assert restored == RevokeOutcome(True, True, "set active; the key reads active")
        assert (await h.client.get(f"{h.server.url}/v1/models", headers=probe)).status_code == 200
        assert await h.provider.verify_refused(tok.id) is False
        await h.cycle()
        assert h.states[tok.id].status == "active"
        assert (await h.provider.restore(tok.id)).detail == "the key already reads active"


async def test_action_delete_archives_for_good(tmp_path: Path) -> None:
    async with harness("anthropic", tmp_path, tokens=8) as h:
        await h.cycle()
        tok = h.relay.list_tokens()[0]
        outcome = await h.provider.revoke(tok.id, delete=True)
        assert outcome == RevokeOutcome(True, True, "archived; the key reads archived")
        assert h.relay.status(h.relay.token(tok.id)) == "revoked"
        assert (await h.provider.revoke(tok.id)) == RevokeOutcome(
            True, True, "already inactive at Anthropic before keywatch acted"
        )
        restored = await h.provider.restore(tok.id)
        assert not restored.done and "archived" in restored.detail
        assert h.relay.status(h.relay.token(tok.id)) == "revoked"
        await h.cycle()
        assert h.states[tok.id].status == "revoked"
        gone = await h.provider.revoke("key_000000")
        assert gone == RevokeOutcome(False, False, "no such API key in the organization")
        assert not (await h.provider.restore("key_000000")).done


# --- faults and hostile modes ---------------------------------------------------------------------


@asynccontextmanager
async def tuned(
    h: Harness, *, retries: int = 0, deadline: float = 10.0, max_mb: int = 64
) -> AsyncIterator[list[float]]:
    """The harness's provider on its own client: few retries, no real sleeps (their lengths kept)."""
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    client = make_client(timeout=deadline)
    http = RelayHTTP(client, h.server.url, retries=retries, sleep=sleep, max_bytes=max_mb << 20)
    h.provider = AnthropicProvider(h.settings, http)
    try:
        yield slept
    finally:
        await client.aclose()


async def control(h: Harness, path: str, **body: Any) -> None:
    (await h.client.post(f"{h.server.url}/_sim/{path}", json=body)).raise_for_status()


@pytest.mark.parametrize(
    ("knobs", "reason"),
    [
        ({"error_rate": 1.0, "status": 529}, "http_5xx"),
        ({"rate_limit_rate": 1.0}, "rate_limited"),
        ({"malformed_rate": 1.0}, "malformed"),
    ],
)
async def test_faults_fail_the_poll_with_their_reason(
    tmp_path: Path, knobs: dict[str, Any], reason: str
) -> None:
    async with harness("anthropic", tmp_path, tokens=5) as h, tuned(h):
        await control(h, "faults", **knobs)
        with pytest.raises(ProviderError) as caught:
            await h.provider.poll()
        assert caught.value.reason == reason and ADMIN not in str(caught.value)


async def test_transient_faults_are_retried_honouring_retry_after(tmp_path: Path) -> None:
    async with harness("anthropic", tmp_path, tokens=5) as h, tuned(h, retries=3) as slept:
        await control(h, "faults", fail_next=1, routes=["keys.list"])
        assert len((await h.provider.poll()).observations) == 5
        await control(h, "faults", reset=True)
        await control(h, "faults", rate_limit_rate=0.4, routes=["usage.messages", "keys.get", "keys.update"])
        await h.provider.poll()
        assert (await h.provider.revoke(h.relay.list_tokens()[0].id)).verified
        assert len(slept) >= 2 and 1.0 in slept  # the simulator's Retry-After: 1


async def test_a_slow_relay_times_out_and_a_broken_list_entry_is_skipped(tmp_path: Path) -> None:
    async with harness("anthropic", tmp_path, tokens=10) as h, tuned(h, deadline=0.3):
        await control(h, "faults", latency=0.6, routes=["usage.messages"])
        polled = await h.provider.poll()
        assert len(polled.observations) == 10 and [(s.token, s.reason) for s in polled.skipped] == [
            (USAGE_SKIP, "timeout")
        ]
        await control(h, "faults", reset=True)
        await control(h, "faults", malformed_token_rate=0.5, routes=["keys.list"])
        polled = await h.provider.poll()
        assert polled.skipped and polled.complete  # every broken entry still names its key
        assert len(polled.observations) + len(polled.skipped) == 10


@pytest.mark.parametrize(
    ("mode", "settings", "reason"),
    [
        ("trickle", {"interval": 0.05}, "timeout"),
        ("hang", {}, "timeout"),
        ("huge", {"size": 3 << 20}, "too_large"),
        ("bomb", {"size": 8 << 20}, "too_large"),
        ("echo", {}, "http_5xx"),
    ],
)
async def test_hostile_answers_fail_in_one_line_without_the_admin_key(
    tmp_path: Path, mode: str, settings: dict[str, Any], reason: str
) -> None:
    async with harness("anthropic", tmp_path, tokens=5) as h, tuned(h, deadline=0.5, max_mb=1):
        await control(h, "hostile", mode=mode, routes=["keys.list"], **settings)
        with pytest.raises(ProviderError) as caught:
            await h.provider.poll()
        message = str(caught.value)
        assert caught.value.reason == reason and ADMIN not in message and "\n" not in message
        await control(h, "hostile", reset=True)
        assert len((await h.provider.poll()).observations) == 5


async def test_lying_pages_are_a_fault_never_a_hang(tmp_path: Path) -> None:
    async with harness("anthropic", tmp_path, tokens=5) as h, tuned(h):
        await control(h, "hostile", mode="paging", routes=["usage.messages"])
        polled = await h.provider.poll()
        assert len(polled.observations) == 5 and [(s.token, s.reason) for s in polled.skipped] == [
            (USAGE_SKIP, "too_large")
        ]
        await control(h, "hostile", mode="paging", routes=["keys.list"])
        with pytest.raises(ProviderError, match="repeats"):
            await h.provider.poll()


async def test_absurd_numbers_are_left_out_with_a_reason(tmp_path: Path) -> None:
    async with harness("anthropic", tmp_path, tokens=20) as h:
        await h.cycle()
        h.relay.advance_by(1800)
        await control(h, "hostile", mode="absurd", kind="mixed", routes=["usage.messages", "keys.list"])
        polled = await h.provider.poll()
        reasons = {s.reason for s in polled.skipped}
        assert {"absurd_value", "negative_usage", "malformed"} <= reasons, reasons
        named = {s.token_id for s in polled.skipped if s.token_id is not None}
        assert polled.complete and len(polled.observations) + len(named) == 20  # every entry names its key
        assert (await h.cycle()).complete
        assert all(0 <= s.spend_total_usd < 100 for s in h.states.values())


async def test_a_wrong_admin_key_fails_as_auth(tmp_path: Path) -> None:
    async with harness("anthropic", tmp_path, tokens=5) as h:
        bad = build_provider(replace(h.settings, admin_token=Secret("sk-ant-admin01-wrong")), h.client)
        with pytest.raises(AuthError):
            await bad.poll()
