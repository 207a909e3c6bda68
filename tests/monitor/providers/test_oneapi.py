"""The oneapi adapter: recorded-shape answers (httpx.MockTransport), then the simulator's
`oneapi` flavour on loopback polled through ingest into a store."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from monitor.providers.base import AuthError, ProviderError
from monitor.providers.oneapi import LOG_SKIP, OneAPIProvider
from monitor.providers.registry import build_provider
from monitor.secret import Secret, key_sha256
from tests.monitor.providers.flavor_support import (
    START,
    envelope,
    harness,
    log_spend_expected,
    mock_http,
    query,
    settings_for,
)

KEY = "abcdEFGHijklMNOPqrstUVWXyz0123456789ABCDEFGHwxyz"  # 48 characters, stored without sk-
TOKEN: dict[str, Any] = {
    "id": 7,
    "user_id": 1,
    "key": KEY,
    "status": 1,
    "name": "prod-webapp-api-2024-01",
    "created_time": 1705305600,
    "accessed_time": 1772450000,
    "expired_time": -1,
    "remain_quota": 5_000_000,
    "unlimited_quota": False,
    "used_quota": 1_250_000,
    "models": "gpt-4o-mini,gpt-4o",
    "subnet": "203.0.113.0/24,198.51.100.7",
}


def row(**kw: Any) -> dict[str, Any]:
    base = {
        "id": 0,
        "created_at": int(START) - 30,
        "type": 2,
        "token_name": "prod-webapp-api-2024-01",
        "model_name": "gpt-4o-mini",
        "quota": 500,
        "prompt_tokens": 1000,
        "completion_tokens": 250,
        "channel": 1,
        "request_id": "r1",
        "elapsed_time": 812,
        "is_stream": False,
    }
    return {**base, **kw}


def relay(tokens: list[dict[str, Any]], logs: list[dict[str, Any]] | None = None, **routes: Any) -> Any:
    """A handler: token pages of 10 (p from 0), the log as one window, extra routes by path."""

    def handler(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path in routes:
            return routes[path](request)  # type: ignore[no-any-return]
        p = int(query(request).get("p", 0))
        if path == "/api/token/":
            return envelope(tokens[p * 10 : p * 10 + 10], date=START)
        if path == "/api/log/self":
            return envelope((logs or [])[p * 10 : p * 10 + 10], date=START)
        return httpx.Response(404)

    return handler


def oneapi(handler: Any, **kw: Any) -> tuple[OneAPIProvider, Any]:
    http, rec = mock_http(handler)
    return OneAPIProvider(settings_for("oneapi", "https://relay.test", **kw), http), rec


# --- recorded shapes -------------------------------------------------------------------------------


async def test_token_fields_become_an_observation() -> None:
    p, rec = oneapi(relay([TOKEN]))
    result = await p.poll()
    (obs,) = result.observations
    assert obs.token_id == "7" and obs.name == "prod-webapp-api-2024-01" and obs.status == "active"
    assert obs.total_usd == 2.5  # used_quota / 500 000
    assert obs.limits.remain_usd == 10.0 and not obs.limits.unlimited
    assert obs.limits.allowed_models == ("gpt-4o-mini", "gpt-4o")
    assert obs.ip_whitelist == ("203.0.113.0/24", "198.51.100.7")
    assert obs.expires_at is None and obs.created_at == 1705305600.0 and obs.last_used_at == 1772450000.0
    assert obs.key_sha256 == key_sha256("sk-" + KEY) and not obs.spend_from_logs
    assert rec.requests[0].headers["Authorization"] == "sim-admin-token"  # the access token as is
    assert result.complete


@pytest.mark.parametrize(
    ("status", "expected"), [(1, "active"), (2, "disabled"), (3, "expired"), (4, "exhausted")]
)
async def test_status_codes(status: int, expected: str) -> None:
    p, _ = oneapi(relay([{**TOKEN, "status": status}]))
    assert (await p.poll()).observations[0].status == expected


async def test_unlimited_tokens_spend_from_logs_and_quota_per_unit_applies() -> None:
    entry = {**TOKEN, "unlimited_quota": True, "used_quota": 0, "accessed_time": TOKEN["created_time"]}
    p, _ = oneapi(relay([entry]), quota_per_unit=1000.0)
    (obs,) = (await p.poll()).observations
    assert obs.spend_from_logs and obs.total_usd is None  # one-api never updates used_quota for them
    assert obs.limits.unlimited and obs.limits.remain_usd is None
    assert obs.last_used_at is None  # accessed_time starts out equal to created_time


async def test_an_invalid_access_token_is_an_auth_error_not_an_empty_list() -> None:
    p, _ = oneapi(lambda r: envelope(success=False, message="无权进行此操作，access token 无效"))  # noqa: RUF001
    with pytest.raises(AuthError, match="admin token rejected"):
        await p.poll()


async def test_a_missing_token_gets_401_and_is_an_auth_error() -> None:
    p, _ = oneapi(lambda r: httpx.Response(401, json={"success": False, "message": "未登录"}))
    with pytest.raises(AuthError):
        await p.poll()


async def test_other_failures_are_not_auth_errors() -> None:
    p, _ = oneapi(lambda r: envelope(success=False, message="database is locked"))
    with pytest.raises(ProviderError) as info:
        await p.poll()
    assert not isinstance(info.value, AuthError) and info.value.reason == "api_error"


async def test_a_redirect_is_an_error_not_followed() -> None:
    p, _ = oneapi(lambda r: httpx.Response(301, headers={"Location": "/api/token/"}))
    with pytest.raises(ProviderError) as info:
        await p.poll()
    assert info.value.reason == "redirect"


async def test_pages_count_from_zero_until_a_short_page() -> None:
    tokens = [{**TOKEN, "id": i, "name": f"t{i}"} for i in range(35, 0, -1)]
    p, rec = oneapi(relay(tokens))
    result = await p.poll()
    assert len(result.observations) == 35
    pages = sorted(int(query(r)["p"]) for r in rec.requests if r.url.path == "/api/token/")
    assert pages[:4] == [0, 1, 2, 3] and all(
        r.url.path.endswith("/") for r in rec.requests if "token" in r.url.path
    )


async def test_a_token_that_vanished_while_paging_is_looked_up_before_anything_is_deleted() -> None:
    tokens = [{**TOKEN, "id": i, "name": f"t{i}"} for i in range(3, 0, -1)]
    shown = list(tokens)
    p, rec = oneapi(
        lambda r: (
            envelope(shown, date=START)
            if r.url.path == "/api/token/"
            else envelope({**TOKEN, "id": 2})
            if r.url.path == "/api/token/2"
            else envelope([], date=START)
        )
    )
    assert (await p.poll()).complete
    shown = [t for t in tokens if t["id"] != 2]  # hidden by a shifted page, yet it exists
    result = await p.poll()
    assert not result.complete and "/api/token/2" in rec.paths()


async def test_masked_keys_are_revealed_once_and_only_hashed() -> None:
    masked = {**TOKEN, "key": KEY[:4] + "**********" + KEY[-4:]}
    reveal = lambda r: envelope({"key": KEY})  # noqa: E731
    p, rec = oneapi(relay([masked], **{"/api/token/7/key": reveal}), reveal_keys=True)
    assert (await p.poll()).observations[0].key_sha256 == key_sha256("sk-" + KEY)
    assert (await p.poll()).observations[0].key_sha256 == key_sha256("sk-" + KEY)
    assert rec.paths().count("/api/token/7/key") == 1
    assert KEY not in repr(vars(p)) and KEY not in repr(vars(p._keys))


async def test_masked_keys_stay_unhashed_without_reveal_keys() -> None:
    masked = {**TOKEN, "key": KEY[:4] + "**********" + KEY[-4:]}
    p, rec = oneapi(relay([masked]))
    assert (await p.poll()).observations[0].key_sha256 is None
    assert "/api/token/7/key" not in rec.paths()


async def test_log_rows_become_request_records_in_a_window_ending_in_the_relays_past() -> None:
    logs = [row(request_id="r2", created_at=int(START) - 20), row(request_id="r1")]
    p, rec = oneapi(relay([TOKEN], logs))
    result = await p.poll()
    assert [r.request_id for r in result.requests] == ["r2", "r1"]
    r1 = result.requests[1]
    assert r1.token_id == "7" and r1.cost_usd == 0.001 and r1.elapsed_ms == 812 and r1.model == "gpt-4o-mini"
    (log_call,) = [r for r in rec.requests if r.url.path == "/api/log/self"]
    q = query(log_call)
    assert q["type"] == "2" and int(q["end_timestamp"]) == int(START) - OneAPIProvider.log_lag
    assert (
        int(q["start_timestamp"]) == int(START) - OneAPIProvider.log_lag - OneAPIProvider.log_initial_lookback
    )


async def test_rows_without_request_id_get_stable_ids_and_identical_rows_stay_two() -> None:
    twins = [row(request_id=None), row(request_id=None)]
    for r in twins:
        del r["request_id"]
    p, _ = oneapi(relay([TOKEN], twins))
    first = [r.request_id for r in (await p.poll()).requests]
    assert len(set(first)) == 2 and all(i.startswith("h:") for i in first)
    again, _ = oneapi(relay([TOKEN], twins))
    assert [r.request_id for r in (await again.poll()).requests] == first  # stable across polls


async def test_a_log_window_that_fails_is_read_again() -> None:
    calls: list[dict[str, str]] = []
    polls = [0]

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/token/":
            polls[0] += 1
            return envelope([TOKEN], date=START + polls[0] * 60)
        calls.append(query(request))
        return httpx.Response(503) if len(calls) in (2, 3) else envelope([], date=START)

    p, _ = oneapi(handler)
    stored = await p.poll()
    assert not stored.skipped and stored.committed is not None
    stored.committed()  # the store took it: the window moves on
    failed = await p.poll()  # 503 twice (one retry): the window stays where it was
    assert [s.token for s in failed.skipped] == [LOG_SKIP] and failed.complete and failed.committed is None
    await p.poll()
    assert calls[1]["start_timestamp"] == calls[3]["start_timestamp"]
    assert int(calls[3]["end_timestamp"]) > int(calls[1]["end_timestamp"])


async def test_a_window_whose_cycle_was_not_stored_is_read_again() -> None:
    starts: list[int] = []
    polls = [0]

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/log/self":
            starts.append(int(query(request)["start_timestamp"]))
            return envelope([row()], date=START)
        polls[0] += 1
        return envelope([TOKEN], date=START + 60 * polls[0])

    p, _ = oneapi(handler)
    first = await p.poll()
    assert first.committed is not None
    first.committed()
    await p.poll()  # this cycle never reaches the store (the write failed) ...
    await p.poll()  # ... so the next one starts where it did
    lookback, overlap = OneAPIProvider.log_initial_lookback, OneAPIProvider.log_overlap
    assert starts[1] == starts[2] == starts[0] + lookback - overlap  # the cursor stayed at the first end


async def test_quarantine_disables_and_verifies_with_the_key() -> None:
    seen: dict[str, Any] = {}
    refuse = {"now": False}

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "PUT":
            seen["put"] = (query(request), request.content)
            return envelope({**TOKEN, "status": 2})
        if request.url.path == "/api/token/7":
            return envelope(TOKEN)
        if request.url.path == "/v1/models":
            seen["auth"] = request.headers["Authorization"]
            return httpx.Response(401 if refuse["now"] else 200, json={})
        return httpx.Response(404)

    p, _ = oneapi(handler)
    outcome = await p.revoke("7")
    assert outcome.done and not outcome.verified and "pending verification" in outcome.detail
    assert seen["put"][0] == {"status_only": "true"} and seen["put"][1] == b'{"id":7,"status":2}'
    assert seen["auth"] == f"Bearer sk-{KEY}"
    refuse["now"] = True
    assert await p.verify_refused("7") is True


async def test_quarantine_of_an_unknown_token_reports_the_relays_message() -> None:
    p, _ = oneapi(lambda r: envelope(success=False, message="record not found"))
    outcome = await p.revoke("99")
    assert not outcome.done and "record not found" in outcome.detail


# --- the simulator's oneapi flavour ---------------------------------------------------------------


async def test_250_tokens_over_many_pages(tmp_path: Path) -> None:
    async with harness("oneapi", tmp_path, tokens=250) as h:
        cycle = await h.cycle()
        assert cycle.seen == 250 and cycle.complete and len(cycle.new) == 250
        assert {s.name for s in h.states.values()} == {t["name"] for t in h.relay.truth()}


async def test_spend_follows_used_quota_and_unlimited_tokens_follow_their_logs(tmp_path: Path) -> None:
    async with harness("oneapi", tmp_path, tokens=30) as h:
        await h.cycle()
        fresh, _ = h.relay.create_token(
            "dev-new-unlimited-2026-03", archetype="service", usd_per_hour=3.0, unlimited_quota=True
        )
        created = h.relay.now()
        for _ in range(6):
            h.relay.advance_by(600)
            await h.cycle()
        for t in h.relay.truth():
            state = h.by_name(t["name"])
            tok = h.relay.token(t["id"])
            if tok.unlimited_quota is not None or not (tok.limits.daily_usd or tok.limits.monthly_usd):
                continue
            assert state.spend_total_usd == pytest.approx(t["lifetime_usd"], abs=2e-6), t["name"]
        # the unlimited token's spend is its log rows up to the last window's end
        last_end = h.relay.now() - OneAPIProvider.log_lag
        usd, requests = log_spend_expected(h.relay, fresh.id, created, last_end)
        state = h.by_name("dev-new-unlimited-2026-03")
        assert usd > 0 and state.spend_total_usd == pytest.approx(usd, abs=1e-5)
        assert state.requests_total == requests
        assert h.reader().count_rows("request_log") > 0


async def test_a_renamed_unlimited_token_keeps_its_id_and_its_log_rows(tmp_path: Path) -> None:
    async with harness("oneapi", tmp_path, tokens=10) as h:
        await h.cycle()
        tok, _ = h.relay.create_token(
            "dev-a-old-2026-03", archetype="service", usd_per_hour=5.0, unlimited_quota=True
        )
        h.relay.advance_by(300)
        await h.cycle()
        h.relay.rename_token(tok.id, "dev-a-new-2026-03")
        h.relay.advance_by(300)
        cycle = await h.cycle()
        state = h.by_name("dev-a-new-2026-03")
        assert cycle.unresolved == 0
        usd, _ = log_spend_expected(h.relay, tok.id, 0, h.relay.now() - OneAPIProvider.log_lag)
        assert state.spend_total_usd == pytest.approx(usd, abs=1e-5)


async def test_a_wrong_access_token_is_reported_as_such(tmp_path: Path) -> None:
    async with harness("oneapi", tmp_path, tokens=5) as h:
        bad = build_provider(replace(h.settings, admin_token=Secret("wrong")), h.client)
        with pytest.raises(AuthError, match="admin token rejected"):
            await bad.poll()


async def test_quarantine_is_pending_while_the_cache_serves_the_key(tmp_path: Path) -> None:
    async with harness("oneapi", tmp_path, tokens=5) as h:
        await h.cycle()
        tok = next(t for t in h.relay.list_tokens() if t.accepts_key(h.relay.now()))
        number = next(s.token_id for s in h.states.values() if s.name == tok.name)
        outcome = await h.provider.revoke(number)
        assert outcome.done and not outcome.verified and "600 s" in outcome.detail
        assert h.relay.token(tok.id).status(h.relay.now()) == "disabled"
        h.relay.advance_by(599)
        assert await h.provider.verify_refused(number) is False
        h.relay.advance_by(2)
        assert await h.provider.verify_refused(number) is True
        await h.cycle()
        assert h.by_name(tok.name).status == "disabled"


async def test_log_windows_lose_nothing_and_count_nothing_twice_while_rows_arrive(tmp_path: Path) -> None:
    """Rows written late (inside windows already being read) and while a window is paged."""
    async with harness("oneapi", tmp_path, tokens=20) as h:
        await h.cycle()
        tok, _ = h.relay.create_token(
            "dev-late-writer-2026-03", archetype="service", usd_per_hour=20.0, unlimited_quota=True
        )
        created = h.relay.now()
        late = {"on": True}
        inner = httpx.AsyncHTTPTransport()

        class LateRows(httpx.AsyncBaseTransport):
            async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
                if late["on"] and request.url.path == "/api/log/self" and request.url.params.get("p") == "1":
                    # a request finishing now is logged with a time inside the window being read
                    h.relay.add_spend(tok.id, 0.25, requests=1, at=h.relay.now() - 20)
                return await inner.handle_async_request(request)

            async def aclose(self) -> None:
                await inner.aclose()

        async with httpx.AsyncClient(transport=LateRows()) as client:
            h.provider = build_provider(h.settings, client)
            for _ in range(5):
                h.relay.advance_by(120)
                await h.cycle()
            late["on"] = False
            h.relay.advance_by(120)  # one more window picks up the last late rows
            await h.cycle()
        end = h.relay.now() - OneAPIProvider.log_lag
        usd, requests = log_spend_expected(h.relay, tok.id, created, end)
        state = h.by_name("dev-late-writer-2026-03")
        assert state.requests_total == requests and state.spend_total_usd == pytest.approx(usd, abs=1e-5)
        stored = h.reader().requests(state.pk or 0, 0)
        assert len(stored) == requests and len({r.request_id for r in stored}) == requests


@pytest.mark.parametrize("resume", [True, False])
async def test_a_restart_neither_loses_nor_double_counts_log_rows(tmp_path: Path, resume: bool) -> None:
    async with harness("oneapi", tmp_path, tokens=10) as h:
        await h.cycle()
        tok, _ = h.relay.create_token(
            "dev-restart-2026-03", archetype="service", usd_per_hour=8.0, unlimited_quota=True
        )
        created = h.relay.now()
        h.relay.advance_by(600)
        await h.cycle()
        h.restart(resume=resume)
        h.relay.advance_by(900)  # traffic while keywatch was down
        await h.cycle()
        usd, requests = log_spend_expected(h.relay, tok.id, created, h.relay.now() - OneAPIProvider.log_lag)
        state = h.by_name("dev-restart-2026-03")
        assert state.requests_total == requests and state.spend_total_usd == pytest.approx(usd, abs=1e-5)
