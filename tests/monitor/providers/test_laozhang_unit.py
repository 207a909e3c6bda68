"""The laozhang adapter against recorded-shape answers (httpx.MockTransport): parsing, retries,
auth failures, malformed answers. The simulator-backed tests live in test_laozhang_live.py."""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import pytest

from monitor.providers.base import AuthError, ProviderError
from monitor.providers.http import RelayHTTP
from monitor.providers.laozhang import LaozhangProvider
from monitor.secret import Secret, key_sha256
from monitor.settings import ProviderSettings

TOKEN = {
    "id": "key_123456",
    "name": "prod-webapp-api-2024-01",
    "status": "active",
    "created_at": "2024-01-15T08:00:00Z",
    "last_used_at": "2026-11-26T22:10:00Z",
    "expires_at": None,
    "billing_method": "usage_based",
    "permissions": ["chat", "completion"],
    "limits": {
        "daily_limit": {"requests": 10000, "amount": 50},
        "monthly_limit": {"amount": 500},
        "max_tokens_per_request": 4000,
        "allowed_models": ["gpt-4o-mini"],
    },
    "ip_whitelist": ["203.0.113.0/24"],
}


class Recorder:
    def __init__(self, handler: Callable[[httpx.Request], httpx.Response]) -> None:
        self.handler = handler
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.handler(request)


async def no_sleep(_: float) -> None:
    return None


def provider(
    handler: Callable[[httpx.Request], httpx.Response], **kw: object
) -> tuple[LaozhangProvider, Recorder]:
    rec = Recorder(handler)
    client = httpx.AsyncClient(transport=httpx.MockTransport(rec))
    settings = ProviderSettings(
        name="lz",
        kind="laozhang",
        base_url="https://relay.test",
        admin_token=Secret("admin-secret"),
        **kw,  # type: ignore[arg-type]
    )
    http = RelayHTTP(client, settings.base_url, retries=settings.retries, sleep=no_sleep)
    return LaozhangProvider(settings, http), rec


def listing(*entries: dict[str, object]) -> httpx.Response:
    return httpx.Response(200, json={"data": list(entries)})


async def test_usage_from_list_entries_needs_no_per_key_calls() -> None:
    entry = {**TOKEN, "today_usage": 1.25, "month_usage": 30.5, "today_requests": 42}
    p, rec = provider(lambda r: listing(entry))
    result = await p.poll()
    (obs,) = result.observations
    assert (obs.today_usd, obs.month_usd, obs.today_requests) == (1.25, 30.5, 42)
    assert obs.limits.daily_usd == 50 and obs.limits.monthly_usd == 500 and obs.limits.daily_requests == 10000
    assert obs.limits.allowed_models == ("gpt-4o-mini",)
    assert obs.ip_whitelist == ("203.0.113.0/24",)
    assert obs.created_at == 1705305600.0
    assert [r.url.path for r in rec.requests] == ["/v1/api-keys"]
    assert rec.requests[0].headers["Authorization"] == "Bearer admin-secret"
    assert result.complete


async def test_per_key_usage_uses_each_tokens_own_key_and_hashes_it() -> None:
    def handler(r: httpx.Request) -> httpx.Response:
        if r.url.path == "/v1/api-keys":
            return listing(TOKEN)
        assert r.headers["Authorization"] == "Bearer sk-prodkey"
        return httpx.Response(200, json={"today_usage": 2.0, "month_usage": 9.0})

    p, rec = provider(handler, keys={"prod-webapp-api-2024-01": Secret("sk-prodkey")})
    (obs,) = (await p.poll()).observations
    assert (obs.today_usd, obs.month_usd) == (2.0, 9.0)
    assert obs.key_sha256 == key_sha256("sk-prodkey")
    assert [r.url.path for r in rec.requests] == ["/v1/api-keys", "/v1/usage"]


async def test_token_without_a_key_is_listed_with_unknown_usage() -> None:
    p, _ = provider(lambda r: listing(TOKEN))
    (obs,) = (await p.poll()).observations
    assert obs.today_usd is None and obs.month_usd is None


async def test_5xx_and_429_are_retried_honouring_retry_after() -> None:
    answers = [httpx.Response(503), httpx.Response(429, headers={"Retry-After": "2"}), listing(TOKEN)]
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    rec = Recorder(lambda r: answers.pop(0))
    settings = ProviderSettings(
        name="lz", kind="laozhang", base_url="https://relay.test", admin_token=Secret("a")
    )
    retried: list[str] = []
    http = RelayHTTP(
        httpx.AsyncClient(transport=httpx.MockTransport(rec)),
        settings.base_url,
        sleep=sleep,
        on_retry=retried.append,
    )
    result = await LaozhangProvider(settings, http).poll()
    assert len(result.observations) == 1
    assert retried == ["http_5xx", "rate_limited"]
    assert waits[1] == 2.0


async def test_retries_give_up_with_the_reason() -> None:
    p, rec = provider(lambda r: httpx.Response(502), retries=2)
    with pytest.raises(ProviderError) as err:
        await p.poll()
    assert err.value.reason == "http_5xx"
    assert len(rec.requests) == 3


async def test_timeouts_are_retried_then_reported() -> None:
    def handler(r: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=r)

    p, rec = provider(handler, retries=1)
    with pytest.raises(ProviderError) as err:
        await p.poll()
    assert err.value.reason == "timeout" and len(rec.requests) == 2


@pytest.mark.parametrize("status", [401, 403])
async def test_rejected_admin_token_is_not_retried_and_says_so(status: int) -> None:
    p, rec = provider(lambda r: httpx.Response(status, json={"error": {"message": "invalid"}}))
    with pytest.raises(AuthError) as err:
        await p.poll()
    assert "admin token rejected" in str(err.value)
    assert "admin-secret" not in str(err.value)
    assert len(rec.requests) == 1


@pytest.mark.parametrize(
    "body",
    [b"{not json", b'{"items": []}', b'"just a string"', b'{"data": {"id": 1}}'],
    ids=["bad-json", "no-data", "not-object", "data-not-list"],
)
async def test_malformed_list_answer_fails_the_cycle_as_malformed(body: bytes) -> None:
    p, _ = provider(lambda r: httpx.Response(200, content=body))
    with pytest.raises(ProviderError) as err:
        await p.poll()
    assert err.value.reason == "malformed"


async def test_malformed_entries_are_skipped_with_a_reason_and_the_rest_kept() -> None:
    good = {**TOKEN, "today_usage": 1.0, "month_usage": 2.0}
    negative = {**TOKEN, "id": "key_2", "name": "neg", "today_usage": -1.0, "month_usage": 2.0}
    missing = {"name": "no-id", "status": "active"}
    text_usage = {**TOKEN, "id": "key_4", "name": "txt", "today_usage": "lots"}
    p, _ = provider(lambda r: listing(good, negative, missing, text_usage))
    result = await p.poll()
    assert [o.token_id for o in result.observations] == ["key_123456"]
    assert sorted((s.token, s.reason) for s in result.skipped) == [
        ("neg", "negative_usage"),
        ("no-id", "malformed"),
        ("txt", "malformed"),
    ]
    assert not result.complete


async def test_per_key_failures_skip_only_that_token() -> None:
    other = {**TOKEN, "id": "key_2", "name": "dev-app-api-2026-01"}

    def handler(r: httpx.Request) -> httpx.Response:
        if r.url.path == "/v1/api-keys":
            return listing(TOKEN, other)
        if r.headers["Authorization"] == "Bearer sk-revoked":
            return httpx.Response(401, content=json.dumps({"error": {"message": "revoked"}}).encode())
        return httpx.Response(200, json={"today_usage": 1.0, "month_usage": 1.0})

    keys = {"prod-webapp-api-2024-01": Secret("sk-good"), "dev-app-api-2026-01": Secret("sk-revoked")}
    p, _ = provider(handler, keys=keys)
    result = await p.poll()
    assert [o.name for o in result.observations] == ["prod-webapp-api-2024-01"]
    assert [(s.token, s.reason) for s in result.skipped] == [("dev-app-api-2026-01", "key_rejected")]


async def test_revoke_deletes_and_verifies_with_the_key() -> None:
    def handler(r: httpx.Request) -> httpx.Response:
        if r.method == "DELETE":
            return httpx.Response(200, json={"success": True})
        if r.url.path == "/v1/models":
            return httpx.Response(401)
        return listing({**TOKEN, "today_usage": 0, "month_usage": 0})

    p, rec = provider(handler, keys={"prod-webapp-api-2024-01": Secret("sk-k")})
    await p.poll()
    outcome = await p.revoke("key_123456")
    assert outcome.done and outcome.verified
    assert ("DELETE", "/v1/api-keys/key_123456") in [(r.method, r.url.path) for r in rec.requests]
