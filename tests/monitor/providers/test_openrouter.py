"""The openrouter adapter: recorded-shape answers (httpx.MockTransport), then the simulator's
`openrouter` flavour on loopback, polled through ingest into a store: spend equal to the
simulator's truth, paging, quarantine and restore, faults, hostile answers and absurd numbers."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from email.utils import formatdate
from pathlib import Path
from typing import Any

import httpx
import pytest

from monitor.clock import FakeClock
from monitor.providers.base import AuthError, ProviderError
from monitor.providers.http import RelayHTTP, make_client
from monitor.providers.openrouter import OpenRouterProvider, api_root
from monitor.providers.openrouter_keys import utc_aligned
from monitor.secret import Secret, key_sha256
from monitor.simulator import SimServer, SimulatedRelay, make_relay, serve
from monitor.simulator.openrouter import key_hash
from tests.monitor.providers.flavor_support import (
    ADMIN,
    START,
    Harness,
    harness,
    mock_http,
    query,
    settings_for,
)

KEYS = "/api/v1/keys"
MGMT = {"Authorization": f"Bearer {ADMIN}"}
HEX = "ab" * 32


def key(i: int, **kw: Any) -> dict[str, Any]:
    """An entry as OpenRouter documents it (OpenRouterTeam/docs openapi.yaml, GET /keys)."""
    return {
        "hash": f"{i:064x}",
        "name": f"prod-app{i}-api-2026-01",
        "label": "sk-or-v1-0e6...1c96",
        "disabled": False,
        "limit": None,
        "limit_remaining": None,
        "limit_reset": None,
        "include_byok_in_limit": False,
        "usage": 25.5,
        "usage_daily": 1.5,
        "usage_weekly": 4.0,
        "usage_monthly": 9.25,
        "byok_usage": 17.38,
        "byok_usage_daily": 0,
        "byok_usage_weekly": 0,
        "byok_usage_monthly": 0,
        "created_at": "2025-02-19T20:52:27.363244+00:00",
        "updated_at": None,
        "expires_at": None,
        "creator_user_id": "user_2dHFtVWx2n56w6HkM0000000000",
        "workspace_id": "0df9e665-d932-5740-b2c7-b52af166bc11",
        **kw,
    }


def ok(data: Any, status: int = 200) -> httpx.Response:
    return httpx.Response(status, json=data, headers={"Date": formatdate(START, usegmt=True)})


def lister(entries: list[dict[str, Any]], page: int = 100) -> Callable[[httpx.Request], httpx.Response]:
    """GET /api/v1/keys over `entries` (newest first), and GET /api/v1/keys/{hash}."""

    def handler(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == KEYS:
            offset = int(query(request).get("offset", 0))
            return ok({"data": entries[offset : offset + page]})
        hit = [e for e in entries if path == f"{KEYS}/{e['hash']}"]
        return ok({"data": hit[0]}) if hit else ok({"error": {"code": 404, "message": "Not found"}}, 404)

    return handler


def provider(handler: Callable[[httpx.Request], httpx.Response], **kw: Any) -> tuple[OpenRouterProvider, Any]:
    base = kw.pop("base", "https://openrouter.test")
    http, rec = mock_http(handler, base)
    return OpenRouterProvider(settings_for("openrouter", base, **kw), http), rec


def offsets(rec: Any) -> list[int]:
    return sorted(int(query(r)["offset"]) for r in rec.requests if r.url.path == KEYS)


# --- recorded shapes: listing ----------------------------------------------------------------------


async def test_keys_are_listed_over_offset_pages_disabled_ones_included() -> None:
    p, rec = provider(lister([key(i) for i in range(250)]))
    result = await p.poll()
    assert len(result.observations) == 250 and result.complete and not result.skipped
    assert offsets(rec)[:3] == [0, 100, 200] and len(offsets(rec)) <= 5  # stops at the short page
    first = rec.requests[0]
    assert query(first) == {"include_disabled": "true", "offset": "0"}
    assert first.headers["Authorization"] == f"Bearer {ADMIN}"
    assert result.relay_time == START


async def test_a_short_first_page_costs_one_more_request_and_an_empty_list_none() -> None:
    p, rec = provider(lister([key(i) for i in range(30)]))
    assert len((await p.poll()).observations) == 30
    assert offsets(rec) == [0, 30]
    p, rec = provider(lister([]))
    result = await p.poll()
    assert (result.observations, result.complete, offsets(rec)) == ([], True, [0])


async def test_a_smaller_page_than_documented_is_followed_to_the_end() -> None:
    p, _ = provider(lister([key(i) for i in range(95)], page=20))
    assert len((await p.poll()).observations) == 95


async def test_an_entry_maps_to_lifetime_spend_and_utc_windows() -> None:
    p, _ = provider(lister([key(1)]))
    (obs,) = (await p.poll()).observations
    assert obs.token_id == "1".rjust(64, "0") and obs.name == "prod-app1-api-2026-01"
    assert (obs.total_usd, obs.today_usd, obs.month_usd, obs.today_requests) == (25.5, 1.5, 9.25, None)
    assert obs.status == "active" and obs.limits.unlimited
    assert obs.last_used_at == START - 12 * 3600  # spend today: used since midnight UTC
    assert obs.created_at == pytest.approx(1739998347.363244) and not obs.spend_from_logs


@pytest.mark.parametrize(
    ("windows", "since"),
    [
        ({"usage_daily": 0, "usage_weekly": 2.0}, START - 12 * 3600),  # Monday: the week began today
        ({"usage_daily": 0, "usage_weekly": 0, "usage_monthly": 3.0}, START - 12 * 3600 - 86_400),  # 1 March
        ({"usage_daily": 0, "usage_weekly": 0, "usage_monthly": 0}, None),  # used before this month
    ],
)
async def test_the_last_use_is_bounded_by_the_windows(windows: dict[str, float], since: float | None) -> None:
    p, _ = provider(lister([key(1, **windows)]))
    (obs,) = (await p.poll()).observations
    assert obs.last_used_at == since


async def test_a_rise_in_usage_dates_the_last_use_to_that_poll() -> None:
    entries = [key(1, usage_daily=0, usage_weekly=0, usage_monthly=0)]
    dates = iter([START, START + 600, START + 1200])

    def handler(request: httpx.Request) -> httpx.Response:
        answer = lister(entries)(request)
        answer.headers["Date"] = (
            formatdate(next(dates), usegmt=True) if query(request)["offset"] == "0" else ""
        )
        return answer

    p, _ = provider(handler)
    assert (await p.poll()).observations[0].last_used_at is None
    entries[0] = {**entries[0], "usage": 26.0, "usage_daily": 0.5, "usage_weekly": 0.5, "usage_monthly": 0.5}
    assert (await p.poll()).observations[0].last_used_at == START + 600
    entries[0] = {**entries[0], "updated_at": "2026-03-02T12:15:00Z"}  # changed, but no new spend
    assert (await p.poll()).observations[0].last_used_at == START + 600  # never earlier than known


async def test_windows_are_left_to_keywatch_where_midnight_is_not_utcs() -> None:
    p, _ = provider(lister([key(1)]), timezone="Europe/Berlin")
    (obs,) = (await p.poll()).observations
    assert (obs.total_usd, obs.today_usd, obs.month_usd) == (25.5, None, None)
    assert utc_aligned("Etc/GMT", START) and utc_aligned("Africa/Abidjan", START)
    assert not utc_aligned("Europe/London", START)  # UTC in winter only


@pytest.mark.parametrize(
    ("fields", "status", "daily", "monthly", "remain"),
    [
        ({"limit": 20, "limit_remaining": 5.5, "limit_reset": "daily"}, "active", 20.0, None, 5.5),
        ({"limit": 100, "limit_remaining": 40, "limit_reset": "monthly"}, "active", None, 100.0, 40.0),
        ({"limit": 10, "limit_remaining": 3, "limit_reset": "weekly"}, "active", None, None, 3.0),
        ({"limit": 10, "limit_remaining": -0.2, "limit_reset": None}, "exhausted", None, None, 0.0),
        ({"limit": 1e300, "limit_remaining": 1e300}, "active", None, None, 1e9),
        ({"disabled": True, "limit": 10, "limit_remaining": 0}, "disabled", None, None, 0.0),
        ({"expires_at": "2026-03-01T00:00:00Z"}, "expired", None, None, None),
        ({"expires_at": "2027-12-31T23:59:59Z"}, "active", None, None, None),
    ],
)
async def test_status_and_limits(
    fields: dict[str, Any], status: str, daily: float | None, monthly: float | None, remain: float | None
) -> None:
    p, _ = provider(lister([key(1, **fields)]))
    (obs,) = (await p.poll()).observations
    assert (obs.status, obs.limits.daily_usd, obs.limits.monthly_usd, obs.limits.remain_usd) == (
        status,
        daily,
        monthly,
        remain,
    )


async def test_a_configured_key_is_hashed_only_where_the_label_fits_it() -> None:
    good = "sk-or-v1-0e6" + "f" * 52 + "1c96"
    entries = [key(1), key(2, label="sk-or-v1-123...9999")]
    entries[1]["name"] = "prod-app2-api-2026-01"
    keys = {"prod-app1-api-2026-01": Secret(good), "prod-app2-api-2026-01": Secret(good)}
    p, _ = provider(lister(entries), keys=keys)
    one, two = (await p.poll()).observations
    assert one.key_sha256 == key_sha256(good) and two.key_sha256 is None


async def test_the_api_root_as_base_url_is_not_doubled() -> None:
    assert (api_root("https://openrouter.ai"), api_root("https://openrouter.ai/api/v1/")) == ("/api/v1", "")
    p, rec = provider(
        lambda r: ok({"data": []}) if r.url.path == KEYS else ok({}, 404),
        base="https://openrouter.test/api/v1",
    )
    await p.poll()
    assert rec.paths() == [KEYS]


async def test_a_wrong_base_url_says_so() -> None:
    p, _ = provider(lambda r: ok({"error": {"code": 404, "message": "Not Found"}}, 404))
    with pytest.raises(ProviderError) as err:
        await p.poll()
    assert err.value.reason == "http_404" and "base_url" in str(err.value)


@pytest.mark.parametrize("status", [401, 403])
async def test_a_rejected_management_key_is_an_auth_error(status: int) -> None:
    p, rec = provider(lambda r: ok({"error": {"code": status, "message": "User not found."}}, status))
    with pytest.raises(AuthError) as err:
        await p.poll()
    assert "admin token rejected" in str(err.value) and "management key" in str(err.value)
    assert len(rec.requests) == 1  # never retried


# --- recorded shapes: what a relay must not do -----------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ('"usage": NaN', "absurd_value"),
        ('"usage": 1e400', "absurd_value"),
        ('"usage": -5', "negative_usage"),
        ('"usage": 2e9', "absurd_value"),
        ('"usage": 100000000000000000000000000000000000000000', "absurd_value"),
        ('"usage": "12.5"', "malformed"),
        ('"usage_daily": -1', "negative_usage"),
        ('"usage_monthly": 1e308', "absurd_value"),
        ('"disabled": "yes"', "malformed"),
        ('"expires_at": 1e30', "absurd_value"),
        ('"limit": "NaN"', "malformed"),
        ('"name": "' + "x" * 300 + '"', "absurd_value"),
    ],
)
async def test_an_absurd_entry_skips_only_its_key(raw: str, reason: str) -> None:
    bad = json.dumps(key(2)).replace(f'"{raw.split(":")[0][1:-1]}": ', '"_was": ', 1)
    bad = bad[:-1] + ", " + raw + "}"
    text = '{"data": [' + json.dumps(key(1)) + ", " + bad + "]}"

    def handler(request: httpx.Request) -> httpx.Response:
        offset = int(query(request)["offset"])
        return httpx.Response(200, content=text.encode() if offset == 0 else b'{"data": []}')

    p, _ = provider(handler)
    result = await p.poll()
    assert [o.name for o in result.observations] == ["prod-app1-api-2026-01"]
    (skip,) = result.skipped
    assert skip.reason == reason and skip.token_id == f"{2:064x}"
    assert result.complete  # the skipped entry still named its key


@pytest.mark.parametrize("bad", [{"hash": "../../admin"}, {"hash": None}, {"hash": 7}])
async def test_an_entry_without_a_usable_hash_leaves_the_list_incomplete(bad: dict[str, Any]) -> None:
    p, _ = provider(lister([key(1), key(2, **bad)]))
    result = await p.poll()
    assert len(result.observations) == 1 and not result.complete
    assert result.skipped[0].token_id is None


async def test_a_relay_that_ignores_offset_is_an_error_not_a_loop() -> None:
    page = [key(i) for i in range(100)]
    p, rec = provider(lambda r: ok({"data": page}))
    with pytest.raises(ProviderError) as err:
        await p.poll()
    assert err.value.reason == "malformed" and len(rec.requests) <= 5


async def test_pages_that_never_end_stop_at_max_pages() -> None:
    def endless(request: httpx.Request) -> httpx.Response:
        offset = int(query(request)["offset"])
        return ok({"data": [key(offset + i) for i in range(100)]})

    p, rec = provider(endless, max_pages=7)
    with pytest.raises(ProviderError) as err:
        await p.poll()
    assert err.value.reason == "too_large" and len(rec.requests) == 7


@pytest.mark.parametrize("body", [b"[]", b'{"data": {"items": []}}', b"<html>", b'{"error": "x"}'])
async def test_a_list_without_data_is_malformed(body: bytes) -> None:
    p, _ = provider(lambda r: httpx.Response(200, content=body))
    with pytest.raises(ProviderError) as err:
        await p.poll()
    assert err.value.reason == "malformed"


async def test_a_key_hidden_by_a_shifted_page_is_read_by_hash_not_called_deleted() -> None:
    entries = [key(i) for i in range(5)]
    p, _ = provider(lister(entries))
    await p.poll()
    hidden = entries.pop(2)  # the list leaves it out, but the key is still there
    p._http = mock_http(
        lambda r: ok({"data": hidden}) if hidden["hash"] in r.url.path else lister(entries)(r)
    )[0]
    result = await p.poll()
    assert result.complete and len(result.observations) == 5
    assert hidden["hash"] in {o.token_id for o in result.observations}


@pytest.mark.parametrize(("answer", "complete"), [(404, True), (500, False)])
async def test_a_vanished_key_is_gone_only_when_the_relay_says_404(answer: int, complete: bool) -> None:
    entries = [key(i) for i in range(3)]
    p, _ = provider(lister(entries))
    await p.poll()
    gone = entries.pop(0)
    p._http = mock_http(
        lambda r: (
            ok({"error": {"code": answer, "message": "x"}}, answer)
            if gone["hash"] in r.url.path
            else lister(entries)(r)
        )
    )[0]
    result = await p.poll()
    assert result.complete is complete and len(result.observations) == 2


# --- recorded shapes: quarantine -------------------------------------------------------------------


def key_server(entry: dict[str, Any]) -> Callable[[httpx.Request], httpx.Response]:
    path = f"{KEYS}/{entry['hash']}"

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path != path or entry.get("_deleted"):
            return ok({"error": {"code": 404, "message": "Not found"}}, 404)
        if request.method == "PATCH":
            entry.update(json.loads(request.content))
        if request.method == "DELETE":
            entry["_deleted"] = True
            return ok({"deleted": True})
        return ok({"data": entry})

    return handler


async def test_quarantine_disables_and_restore_enables_each_verified() -> None:
    entry = key(9)
    p, rec = provider(key_server(entry))
    out = await p.revoke(entry["hash"])
    assert (out.done, out.verified) == (True, True) and entry["disabled"] is True
    assert [(r.method, json.loads(r.content) if r.content else None) for r in rec.requests] == [
        ("GET", None),  # already disabled by someone else? then keywatch would change nothing
        ("PATCH", {"disabled": True}),
        ("GET", None),
    ]
    assert await p.verify_refused(entry["hash"]) is True
    back = await p.restore(entry["hash"])
    assert (back.done, back.verified) == (True, True) and entry["disabled"] is False
    assert await p.verify_refused(entry["hash"]) is False


async def test_quarantine_deletes_when_told_and_a_missing_key_is_no_such_token() -> None:
    entry = key(9)
    p, _ = provider(key_server(entry))
    out = await p.revoke(entry["hash"], delete=True)
    assert (out.done, out.verified, out.detail) == (True, True, "deleted")
    assert "no such token" in (await p.revoke(entry["hash"])).detail
    restored = await p.restore(entry["hash"])
    assert not restored.done and "cannot be restored" in restored.detail
    assert (await p.revoke("../x")).done is False  # never put into a path


async def test_a_disable_the_relay_does_not_show_is_done_but_not_verified() -> None:
    entry = key(9)

    def stubborn(request: httpx.Request) -> httpx.Response:
        return ok({"data": entry})  # answers every PATCH, changes nothing

    p, _ = provider(stubborn)
    out = await p.revoke(entry["hash"])
    assert (out.done, out.verified) == (True, False) and "enabled" in out.detail
    entry["disabled"] = True
    back = await p.restore(entry["hash"])  # the listing is authoritative: still disabled is a failure
    assert not back.done and "disabled" in back.detail


async def test_a_key_disabled_by_someone_else_is_left_as_it_is() -> None:
    entry = {**key(9), "disabled": True}
    p, rec = provider(key_server(entry))
    out = await p.revoke(entry["hash"])
    assert (out.done, out.verified) == (True, True) and "before keywatch acted" in out.detail
    assert [r.method for r in rec.requests] == ["GET"]


# --- the simulator's openrouter flavour ------------------------------------------------------------


def truth(h: Harness) -> dict[str, dict[str, Any]]:
    return {key_hash(h.relay.get(t["id"])): dict(t) for t in h.relay.truth() if not t["deleted"]}  # type: ignore[arg-type]


def spend_since(h: Harness, first: int) -> dict[str, float]:
    """USD each token's cycles from `first` on counted as new spend."""
    out: dict[str, float] = {}
    for cycle in h.cycles[first:]:
        for s in cycle.spend:
            out[s.token_id] = out.get(s.token_id, 0.0) + s.cost_usd
    return out


async def test_spend_is_exactly_the_relays_lifetime_usage(tmp_path: Path) -> None:
    async with harness("openrouter", tmp_path, tokens=30) as h:
        await h.cycle()
        start = {t: row["lifetime_usd"] for t, row in truth(h).items()}
        late, _ = h.relay.create_token("dev-late-key-2026-03", archetype="service", usd_per_hour=6.0)
        for _ in range(8):
            h.relay.advance_by(1800)
            await h.cycle()
        new = spend_since(h, 1)
        for token_id, row in truth(h).items():
            state = h.states[token_id]
            # the counter starts at a key's lifetime usage; what rose since is new spend (all of
            # it for a key created while keywatch watched)
            assert state.spend_total_usd == pytest.approx(row["lifetime_usd"], abs=1e-9), row["name"]
            grew = row["lifetime_usd"] - start.get(token_id, 0.0)
            assert new.get(token_id, 0.0) == pytest.approx(grew, abs=1e-9), row["name"]
            assert state.day_usd == pytest.approx(row["today_usage"], abs=1e-9)
            assert state.month_usd == pytest.approx(row["month_usage"], abs=1e-9)
        assert sum(new.values()) > 0 and new[key_hash(late)] > 0


async def test_a_utc_midnight_loses_nothing(tmp_path: Path) -> None:
    async with harness("openrouter", tmp_path, tokens=20) as h:
        await h.cycle()
        start = {t: row["lifetime_usd"] for t, row in truth(h).items()}
        h.relay.advance(START + 12 * 3600 - 600)  # 23:50 UTC
        await h.cycle()
        h.relay.advance(START + 12 * 3600 + 1200)  # 00:20 UTC the next day
        await h.cycle()
        new = spend_since(h, 1)
        for token_id, row in truth(h).items():
            assert h.states[token_id].spend_total_usd == pytest.approx(row["lifetime_usd"], abs=1e-9)
            assert new.get(token_id, 0.0) == pytest.approx(row["lifetime_usd"] - start[token_id], abs=1e-9)
            assert h.states[token_id].day_usd == pytest.approx(row["today_usage"], abs=1e-9)
        assert any(row["today_usage"] < row["lifetime_usd"] for row in truth(h).values())


async def test_paging_on_the_simulator(tmp_path: Path) -> None:
    async with harness("openrouter", tmp_path, tokens=47, options={"page_size": 10}) as h:
        cycle = await h.cycle()
        assert cycle.seen == 47 and cycle.complete and set(h.states) == set(truth(h))


async def test_quarantine_and_restore_round_trip_at_the_simulator(tmp_path: Path) -> None:
    async with harness("openrouter", tmp_path, tokens=12) as h:
        await h.cycle()
        victim = next(t for t in h.relay.list_tokens() if t.accepts_key(h.relay.now()))
        h_id = key_hash(victim)
        async with httpx.AsyncClient(base_url=h.server.url) as c:
            probe = {"Authorization": f"Bearer {victim.key}"}
            assert (await c.get("/api/v1/key", headers=probe)).status_code == 200
            out = await h.provider.revoke(h_id)
            assert out.done and out.verified and h.relay.status(victim) == "disabled"
            assert (await c.get("/api/v1/key", headers=probe)).status_code == 401  # the key is refused
            cycle = await h.cycle()
            assert h_id not in cycle.vanished and h.states[h_id].status == "disabled"  # still listed
            back = await h.provider.restore(h_id)
            assert back.done and back.verified and h.relay.status(victim) in ("active", "unused")
            assert (await c.get("/api/v1/key", headers=probe)).status_code == 200
            await h.cycle()
            assert h.states[h_id].status == "active"
            gone = await h.provider.revoke(h_id, delete=True)
            assert gone.done and gone.verified and h.relay.get(victim.id) is None
            assert h_id in (await h.cycle()).vanished


async def test_a_wrong_key_and_an_inference_key_fail_as_auth(tmp_path: Path) -> None:
    async with harness("openrouter", tmp_path, tokens=3) as h:
        for credential in ("sk-or-v1-wrong", h.relay.list_tokens()[0].key):
            bad = OpenRouterProvider(replace(h.settings, admin_token=Secret(credential)), _http(h, retries=0))
            with pytest.raises(AuthError):
                await bad.poll()


def _http(
    h: Harness, *, retries: int = 2, sleeps: list[float] | None = None, timeout: float = 10
) -> RelayHTTP:
    async def sleep(seconds: float) -> None:
        if sleeps is not None:
            sleeps.append(seconds)

    client = h.client if timeout == 10 else make_client(timeout=timeout)
    return RelayHTTP(client, h.server.url, retries=retries, sleep=sleep, max_bytes=1 << 20)


async def test_faults_5xx_429_and_broken_json(tmp_path: Path) -> None:
    async with harness("openrouter", tmp_path, tokens=5) as h:
        sleeps: list[float] = []
        p = OpenRouterProvider(h.settings, _http(h, sleeps=sleeps))
        h.relay.faults.update(fail_next=2)
        assert len((await p.poll()).observations) == 5  # two 5xx, retried
        h.relay.faults.update(rate_limit_rate=1.0)
        with pytest.raises(ProviderError) as err:
            await p.poll()
        assert err.value.reason == "rate_limited" and sleeps[-2:] == [1.0, 1.0]  # Retry-After: 1
        h.relay.faults.update(rate_limit_rate=0.0, error_rate=1.0, status=503)
        with pytest.raises(ProviderError) as err:
            await p.poll()
        assert err.value.reason == "http_5xx"
        h.relay.faults.update(error_rate=0.0, malformed_rate=1.0)
        with pytest.raises(ProviderError) as err:
            await p.poll()
        assert err.value.reason == "malformed"


async def test_a_slow_relay_times_out(tmp_path: Path) -> None:
    async with harness("openrouter", tmp_path, tokens=2) as h:
        http = _http(h, retries=0, timeout=0.2)
        h.relay.faults.update(latency=0.5)  # the server finishes its answer soon after
        try:
            with pytest.raises(ProviderError) as err:
                await OpenRouterProvider(h.settings, http).poll()
            assert err.value.reason == "timeout"
        finally:
            h.relay.faults.reset()
            await http._client.aclose()


async def test_corrupt_entries_from_the_simulator_skip_only_themselves(tmp_path: Path) -> None:
    async with harness("openrouter", tmp_path, tokens=40) as h:
        h.relay.faults.update(malformed_token_rate=0.3, seed=4)
        result = await h.provider.poll()
        assert result.skipped and len(result.observations) + len(result.skipped) == 40
        reasons = {s.reason for s in result.skipped}
        assert reasons <= {"malformed", "negative_usage"}
        assert result.complete == all(s.token_id for s in result.skipped)


async def test_absurd_numbers_from_the_hostile_simulator(tmp_path: Path) -> None:
    async with harness("openrouter", tmp_path, tokens=30) as h:
        await h.cycle()
        h.relay.hostile.set(
            "openrouter", {"mode": "absurd", "kind": "mixed", "fraction": 0.5}, known_routes=(), resolve=str
        )
        result = await h.provider.poll()
        assert result.skipped and result.complete
        assert {s.reason for s in result.skipped} <= {"absurd_value", "negative_usage", "malformed"}
        cycle = await h.cycle()
        assert all(s.spend_total_usd < 1e6 for s in h.states.values()) and cycle.complete


async def test_lying_pages_from_the_hostile_simulator(tmp_path: Path) -> None:
    async with harness("openrouter", tmp_path, tokens=30, options={"page_size": 10}) as h:
        h.relay.hostile.set(
            "openrouter", {"mode": "paging", "routes": ["keys.list"]}, known_routes=(), resolve=str
        )
        with pytest.raises(ProviderError) as err:
            await h.provider.poll()
        assert err.value.reason == "malformed"


@pytest.mark.parametrize(
    ("mode", "settings", "reason"),
    [
        ("bomb", {"size": 8 << 20}, "too_large"),
        ("huge", {"size": 3 << 20}, "too_large"),
        ("hang", {}, "timeout"),
    ],
)
async def test_hostile_answers_end_as_one_reason(
    tmp_path: Path, mode: str, settings: dict[str, Any], reason: str
) -> None:
    async with harness("openrouter", tmp_path, tokens=3) as h:
        http = _http(h, retries=0, timeout=0.3)
        h.relay.hostile.set(
            "openrouter", {"mode": mode, **settings}, known_routes=("keys.list",), resolve=str
        )
        try:
            with pytest.raises(ProviderError) as err:
                await OpenRouterProvider(h.settings, http).poll()
            assert err.value.reason == reason
        finally:
            h.relay.hostile.reset()
            await http._client.aclose()


async def test_an_echoing_relay_gets_no_credential_into_the_error(tmp_path: Path) -> None:
    async with harness("openrouter", tmp_path, tokens=3) as h:
        h.relay.hostile.set("openrouter", {"mode": "echo"}, known_routes=("keys.list",), resolve=str)
        with pytest.raises(ProviderError) as err:
            await OpenRouterProvider(h.settings, _http(h, retries=0)).poll()
        assert ADMIN not in str(err.value) and "\n" not in str(err.value)


# --- the flavour on the wire ------------------------------------------------------------------------


@asynccontextmanager
async def wire(tokens: int = 12, **options: Any) -> AsyncIterator[tuple[SimulatedRelay, httpx.AsyncClient]]:
    relay = make_relay(tokens=tokens, seed=5, clock=FakeClock(START))
    server: SimServer = await serve(relay, "127.0.0.1", 0, flavor="openrouter", **options)
    try:
        async with httpx.AsyncClient(base_url=server.url) as client:
            yield relay, client
    finally:
        await server.close()


async def test_the_flavour_lists_newest_first_and_hides_disabled_keys_unless_asked() -> None:
    async def listed(c: httpx.AsyncClient, **params: Any) -> list[dict[str, Any]]:
        pages = [
            (await c.get(KEYS, params={"offset": o, **params}, headers=MGMT)).json()["data"]
            for o in range(0, 40, 10)
        ]
        assert pages[-1] == []
        return [e for p in pages for e in p]

    async with wire(tokens=25, page_size=10) as (relay, c):
        every = await listed(c, include_disabled="true")
        assert len(every) == 25
        assert [e["created_at"] for e in every] == sorted((e["created_at"] for e in every), reverse=True)
        entry = every[0]
        assert (
            len(entry["hash"]) == 64 and entry["created_at"].endswith("+00:00") and "." in entry["created_at"]
        )
        assert entry["updated_at"] is None and entry["label"].count("...") == 1
        tok = next(t for t in relay.list_tokens() if t.accepts_key(relay.now()))
        relay.disable_token(tok.id)
        off = {key_hash(t) for t in relay.list_tokens() if relay.status(t) in ("disabled", "revoked")}
        enabled = await listed(c)
        assert key_hash(tok) in off and {e["hash"] for e in enabled} == {e["hash"] for e in every} - off
        every = await listed(c, include_disabled="true")
        assert [e["disabled"] for e in every if e["hash"] == key_hash(tok)] == [True]


async def test_the_flavour_answers_errors_as_openrouter_does() -> None:
    async with wire(tokens=2) as (relay, c):
        none = await c.get(KEYS)
        assert none.status_code == 401 and none.json() == {
            "error": {"code": 401, "message": "No auth credentials found"}
        }
        assert (await c.get(KEYS, headers={"Authorization": "Bearer nope"})).json()["error"][
            "message"
        ] == "User not found."
        inference = {"Authorization": f"Bearer {relay.list_tokens()[0].key}"}
        assert (await c.get(KEYS, headers=inference)).status_code == 403
        assert (await c.get(KEYS, params={"offset": "-1"}, headers=MGMT)).status_code == 400
        assert (await c.get(KEYS, params={"include_disabled": "yes"}, headers=MGMT)).status_code == 400
        assert (await c.get(f"{KEYS}/{HEX}", headers=MGMT)).status_code == 404
        h = key_hash(relay.list_tokens()[0])
        assert (await c.patch(f"{KEYS}/{h}", headers=MGMT, json={"disabled": "yes"})).status_code == 400


async def test_the_flavour_creates_updates_and_deletes_keys() -> None:
    async with wire(tokens=0) as (relay, c):
        made = await c.post(
            KEYS, headers=MGMT, json={"name": "dev-x-2026-03", "limit": 5, "limit_reset": "weekly"}
        )
        assert made.status_code == 201
        data, secret = made.json()["data"], made.json()["key"]
        assert (data["limit"], data["limit_reset"], data["limit_remaining"], data["usage"]) == (
            5.0,
            "weekly",
            5.0,
            0.0,
        )
        relay.add_spend("dev-x-2026-03", 1.25)
        got = (await c.get(f"{KEYS}/{data['hash']}", headers=MGMT)).json()["data"]
        assert (got["usage"], got["usage_daily"], got["usage_weekly"], got["limit_remaining"]) == (
            1.25,
            1.25,
            1.25,
            3.75,
        )
        patched = (
            await c.patch(f"{KEYS}/{data['hash']}", headers=MGMT, json={"disabled": True, "name": "dev-y"})
        ).json()
        assert (
            patched["data"]["disabled"]
            and patched["data"]["name"] == "dev-y"
            and patched["data"]["updated_at"]
        )
        assert (await c.get("/api/v1/key", headers={"Authorization": f"Bearer {secret}"})).status_code == 401
        assert (await c.delete(f"{KEYS}/{data['hash']}", headers=MGMT)).json() == {"deleted": True}
        assert (await c.get(f"{KEYS}/{data['hash']}", headers=MGMT)).status_code == 404


def test_the_flavour_insists_on_utc() -> None:
    relay = make_relay(tokens=1, seed=1, tz="Asia/Shanghai", clock=FakeClock(START))
    from monitor.simulator import build_app

    with pytest.raises(ValueError, match="UTC"):
        build_app(relay, flavor="openrouter")
