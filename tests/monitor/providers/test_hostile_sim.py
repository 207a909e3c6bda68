"""The simulator's hostile relay (issue 9), over real HTTP on loopback: refunds, recycled ids,
absurd numbers, repeated names, lying pages, trickled, huge, bombed, hung and echoing answers,
and the relay's own clock. Each test proves the simulator does what the control API claims, so
daemon tests can rely on it."""

from __future__ import annotations

import asyncio
import json
import re
import resource
import struct
import time
import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp
import httpx
import orjson
import pytest

from monitor.clock import FakeClock
from monitor.simulator import (
    DEFAULT_ADMIN_TOKEN,
    DEFAULT_USER_ID,
    SimServer,
    SimulatedRelay,
    make_relay,
    serve,
)

START = 1772452800.0  # 2026-03-02 12:00 UTC, a Monday
ADMIN = DEFAULT_ADMIN_TOKEN
HEADERS = {
    "laozhang": {"Authorization": f"Bearer {ADMIN}"},
    "oneapi": {"Authorization": ADMIN},
    "newapi": {"Authorization": ADMIN, "New-Api-User": str(DEFAULT_USER_ID)},
    "openai": {"Authorization": f"Bearer {ADMIN}"},
}
LIST = {
    "laozhang": "/v1/api-keys",
    "oneapi": "/api/token/",
    "newapi": "/api/token/",
    "openai": "/v1/organization/projects/proj_sim/api_keys",
}
FORGED = "2026-01-01 00:00:00 INFO keywatch: all good"
MIB = 1 << 20


@dataclass
class Sim:
    relay: SimulatedRelay
    clock: FakeClock
    server: SimServer
    client: httpx.AsyncClient
    flavor: str

    async def list_raw(self, **params: Any) -> httpx.Response:
        return await self.client.get(LIST[self.flavor], params=params, headers=HEADERS[self.flavor])

    async def entries(self, **params: Any) -> list[dict[str, Any]]:
        body = (await self.list_raw(**params)).json()
        data = body["data"]
        items: list[dict[str, Any]] = data["items"] if isinstance(data, dict) else data
        return items

    async def hostile(self, **body: Any) -> httpx.Response:
        return await self.client.post("/_sim/hostile", json=body)

    async def control(self, path: str, **body: Any) -> Any:
        r = await self.client.post(f"/_sim/{path}", json=body)
        assert r.status_code == 200, r.text
        return r.json()


@asynccontextmanager
async def sim(
    flavor: str = "laozhang", tokens: int = 12, seed: int = 3, **options: Any
) -> AsyncIterator[Sim]:
    clock = FakeClock(START)
    relay = make_relay(tokens=tokens, seed=seed, clock=clock)
    server = await serve(relay, flavor=flavor, **options)
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=5.0) as client:
            yield Sim(relay, clock, server, client, flavor)
    finally:
        await server.close()


def key_auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def control_answers_quickly(s: Sim) -> None:
    """The simulator's own loop is free: its control API answers at once."""
    t0 = time.monotonic()
    assert (await s.client.get("/_sim/hostile")).status_code == 200
    assert time.monotonic() - t0 < 0.5


# --- 1. refunds --------------------------------------------------------------------------------


async def test_refund_lowers_the_windows_without_a_boundary_and_truth_keeps_the_gross() -> None:
    async with sim("laozhang", tokens=0) as s:
        made = await s.control("tokens", name="prod-app-api-2026-03")
        tid = made["token"]["id"]
        await s.control("spend", token=tid, usd=5.0, requests=2)
        row = await s.control("refund", token=tid, usd=1.5)
        assert (row["today_usage"], row["month_usage"]) == (3.5, 3.5)
        (entry,) = await s.entries()
        assert (entry["today_usage"], entry["month_usage"], entry["today_requests"]) == (3.5, 3.5, 2)
        usage = (await s.client.get("/v1/usage", headers=key_auth(made["key"]))).json()
        assert usage == {"today_usage": 3.5, "month_usage": 3.5}
        (truth,) = (await s.client.get("/_sim/truth")).json()["tokens"]
        assert (truth["charged_usd"], truth["refunded_usd"], truth["lifetime_usd"]) == (5.0, 1.5, 3.5)

        assert (await s.client.post("/_sim/refund", json={"token": tid, "usd": 4.0})).status_code == 400
        assert (await s.client.post("/_sim/refund", json={"token": tid, "usd": -1})).status_code == 400
        assert (await s.client.post("/_sim/refund", json={"token": "nope", "usd": 1})).status_code == 404


@pytest.mark.parametrize("flavor", ["oneapi", "newapi"])
async def test_refund_lowers_used_quota_on_the_one_api_family(flavor: str) -> None:
    async with sim(flavor, tokens=0) as s:
        s.relay.create_token("dev-app-api-2026-03", unlimited_quota=False, quota_usd=100.0)
        await s.control("spend", token="dev-app-api-2026-03", usd=2.0)
        (before,) = await s.entries()
        await s.control("refund", token="dev-app-api-2026-03", usd=0.5)
        (after,) = await s.entries()
        assert (before["used_quota"], after["used_quota"]) == (1_000_000, 750_000)
        assert after["remain_quota"] == before["remain_quota"] + 250_000  # the quota comes back
        (truth,) = s.relay.truth()
        assert (truth["charged_usd"], truth["refunded_usd"]) == (2.0, 0.5)


# --- 2. a recycled token id --------------------------------------------------------------------


async def test_reuse_gives_a_new_token_the_same_id() -> None:
    async with sim("laozhang", tokens=0) as s:
        old = await s.control("tokens", name="prod-old-api-2026-01")
        tid = old["token"]["id"]
        await s.control("spend", token=tid, usd=7.0, requests=3)
        s.clock.advance(3600)
        new = await s.control("tokens/reuse", token=tid, name="dev-new-api-2026-03")
        assert new["token"]["id"] == tid and new["key"] != old["key"]
        (entry,) = await s.entries()
        assert entry["id"] == tid and entry["name"] == "dev-new-api-2026-03"
        assert entry["created_at"] == "2026-03-02T13:00:00Z"  # the relay's now
        assert (entry["today_usage"], entry["month_usage"], entry["status"]) == (0.0, 0.0, "unused")
        assert (await s.client.get("/v1/usage", headers=key_auth(old["key"]))).status_code == 401
        assert (await s.client.get("/v1/usage", headers=key_auth(new["key"]))).status_code == 200

        rows = (await s.client.get("/_sim/truth")).json()["tokens"]
        assert [(r["id"], r["name"], r["deleted"], r["charged_usd"]) for r in rows] == [
            (tid, "prod-old-api-2026-01", True, 7.0),
            (tid, "dev-new-api-2026-03", False, 0.0),
        ]
        assert rows[1]["created_at"] == START + 3600
        for bad in ({"token": tid, "name": "x", "bogus": 1}, {"token": tid, "name": ""}):
            assert (await s.client.post("/_sim/tokens/reuse", json=bad)).status_code == 400
        assert len(await s.entries()) == 1  # a refused reuse changes nothing
        assert (
            await s.client.post("/_sim/tokens/reuse", json={"token": "nope", "name": "x"})
        ).status_code == 404


async def test_reuse_keeps_the_numeric_id_on_one_api() -> None:
    async with sim("oneapi", tokens=3) as s:
        before = await s.entries()
        victim = before[1]
        await s.control("tokens/reuse", token=victim["name"], name="dev-recycled-2026-03")
        after = await s.entries()
        assert [t["id"] for t in after] == [t["id"] for t in before]  # still newest id first
        recycled = after[1]
        assert recycled["name"] == "dev-recycled-2026-03" and recycled["used_quota"] == 0
        assert recycled["created_time"] == int(START) and recycled["key"] != victim["key"]


# --- 3. absurd numbers -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "today", "requests"),
    [("huge", 1e308, 10**19), ("negative", -1e308, -(2**63)), ("nan", "NaN", "NaN")],
)
async def test_absurd_numbers_on_laozhang_entries(kind: str, today: Any, requests: Any) -> None:
    async with sim("laozhang") as s:
        victim = s.relay.list_tokens()[2]
        r = await s.hostile(mode="absurd", kind=kind, token=victim.name)
        assert r.status_code == 200 and r.json()["modes"]["absurd"]["token"] == victim.id
        data = await s.entries()
        odd = [e for e in data if e["today_usage"] == today]
        assert [e["id"] for e in odd] == [victim.id]
        assert odd[0]["today_requests"] == requests
        sane = [e for e in data if e["id"] != victim.id]
        assert all(isinstance(e["today_usage"], float) and e["today_usage"] >= 0 for e in sane)


async def test_absurd_overflow_is_written_raw_and_epoch_ms_is_a_number() -> None:
    async with sim("laozhang") as s:
        await s.hostile(mode="absurd", kind="overflow", fraction=1.0)
        raw = (await s.list_raw()).content
        assert b'"today_usage":1e400' in raw and b'"today_requests":1e400' in raw
        with pytest.raises(orjson.JSONDecodeError):
            orjson.loads(raw)  # one such entry makes orjson refuse the whole list
        assert json.loads(raw)["data"][0]["month_usage"] == float("inf")

        await s.hostile(mode="absurd", kind="epoch_ms")
        expiring = {t.id: t.expires_at for t in s.relay.list_tokens() if t.expires_at is not None}
        data = {e["id"]: e for e in await s.entries()}
        assert expiring and all(data[tid]["expires_at"] == round(ts * 1000) for tid, ts in expiring.items())
        assert all(isinstance(e["expires_at"], int) and e["expires_at"] > 10**12 for e in data.values())


def is_absurd(entry: dict[str, Any]) -> bool:
    usage = entry["today_usage"]
    return not isinstance(usage, float) or abs(usage) > 1e12 or isinstance(entry["expires_at"], int)


async def test_absurd_fraction_picks_the_same_tokens_every_poll() -> None:
    async with sim("laozhang", tokens=200) as s:
        await s.hostile(mode="absurd", kind="mixed", fraction=0.25)
        first = {e["id"] for e in await s.entries() if is_absurd(e)}
        s.clock.advance(600)
        again = {e["id"] for e in json.loads((await s.list_raw()).content)["data"] if is_absurd(e)}
        assert first == again and 25 < len(first) < 80


@pytest.mark.parametrize("flavor", ["oneapi", "newapi"])
async def test_absurd_numbers_on_one_api_family_entries(flavor: str) -> None:
    async with sim(flavor) as s:
        await s.hostile(mode="absurd", kind="huge")
        raw = (await s.list_raw()).content
        items = json.loads(raw)["data"]
        items = items["items"] if flavor == "newapi" else items
        assert items and all(t["used_quota"] == 10**40 for t in items)  # a 41-digit integer
        await s.hostile(mode="absurd", kind="epoch_ms", routes=["token.get"])
        one = (await s.client.get(f"/api/token/{items[0]['id']}", headers=HEADERS[flavor])).json()["data"]
        assert one["expired_time"] > 10**12 and one["used_quota"] < 10**15
        assert all(t["used_quota"] < 10**15 for t in await s.entries())  # the list is sane again


# --- 4. repeated names -------------------------------------------------------------------------


async def test_two_live_tokens_may_share_a_name_and_stay_apart_by_id() -> None:
    async with sim("laozhang", tokens=0) as s:
        a = await s.control("tokens", name="prod-app-api-2026-03")
        b = await s.control("tokens", name="dev-app-api-2026-03")
        await s.control("spend", token=a["token"]["id"], usd=1.0)
        await s.control("spend", token=b["token"]["id"], usd=2.0)
        await s.control("tokens/rename", token=b["token"]["id"], name="prod-app-api-2026-03")
        data = await s.entries()
        assert [e["name"] for e in data] == ["prod-app-api-2026-03"] * 2
        assert {e["id"]: e["today_usage"] for e in data} == {a["token"]["id"]: 1.0, b["token"]["id"]: 2.0}
        by_id = (await s.client.get("/_sim/keys", params={"by": "id"})).json()
        assert by_id == {
            a["token"]["id"]: {"name": "prod-app-api-2026-03", "key": a["key"]},
            b["token"]["id"]: {"name": "prod-app-api-2026-03", "key": b["key"]},
        }
        truth = (await s.client.get("/_sim/truth")).json()["tokens"]
        assert sorted(t["lifetime_usd"] for t in truth if t["name"] == "prod-app-api-2026-03") == [1.0, 2.0]
        # the name resolves to the newest holder; once it is gone, to the other one
        await s.control("tokens/delete", token=b["token"]["id"])
        assert (await s.control("spend", token="prod-app-api-2026-03", usd=1.0))["id"] == a["token"]["id"]


# --- 5. lying pages ----------------------------------------------------------------------------


async def test_newapi_claims_two_million_pages_of_one_item() -> None:
    async with sim("newapi", tokens=5) as s:
        await s.hostile(mode="paging")
        names = []
        for p in (1, 2, 6, 1_999_999):
            data = (await s.list_raw(p=p, page_size=100)).json()["data"]
            assert (data["total"], data["page"], data["page_size"], len(data["items"])) == (
                2_000_000,
                p,
                1,
                1,
            )
            names.append(data["items"][0]["name"])
        assert names[0] == names[2] != names[1]  # five real tokens, repeating
        await s.hostile(mode="paging", off=True)
        data = (await s.list_raw(p=1)).json()["data"]
        assert (data["total"], len(data["items"])) == (5, 5)


async def test_oneapi_pages_are_full_forever() -> None:
    async with sim("oneapi", tokens=4) as s:
        await s.hostile(mode="paging", routes=["token.list", "log.self"])
        for p in (0, 1, 7, 10**6):
            page = await s.entries(p=p)
            assert len(page) == 10 and {t["id"] for t in page} == {1, 2, 3, 4}
        s.relay.create_token("dev-spender-2026-03")
        await s.control("spend", token="dev-spender-2026-03", usd=0.3, requests=2)
        logs = (await s.client.get("/api/log/self", params={"p": 10**5}, headers=HEADERS["oneapi"])).json()[
            "data"
        ]
        assert len(logs) == 10
        await s.hostile(reset=True)
        assert len(await s.entries(p=0)) == 5 and await s.entries(p=1) == []


# --- 6. trickle --------------------------------------------------------------------------------


async def test_trickle_sends_one_byte_a_second_until_a_whole_request_deadline() -> None:
    async with sim("laozhang") as s:
        key = s.relay.list_tokens()[0].key
        await s.hostile(mode="trickle", routes=["usage"])
        t0 = time.monotonic()
        arrivals: list[float] = []
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(1.6):
                async with s.client.stream("GET", "/v1/usage", headers=key_auth(key)) as r:
                    headers_at = time.monotonic() - t0
                    assert r.status_code == 200 and int(r.headers["Content-Length"]) > 30
                    async for chunk in r.aiter_raw():
                        arrivals.extend([time.monotonic() - t0] * len(chunk))
                        if len(arrivals) == 1:
                            await control_answers_quickly(s)  # the simulator is not blocked
        assert headers_at < 0.5
        assert len(arrivals) == 2  # at ~0 s and ~1 s, then the deadline at 1.6 s
        assert 0.8 < arrivals[1] - arrivals[0] < 1.3


async def test_trickle_delivers_the_real_answer_in_the_end() -> None:
    async with sim("oneapi", tokens=0) as s:
        normal = (await s.client.get("/api/status")).json()
        await s.hostile(mode="trickle", interval=0.001, routes=["status"])
        assert (await s.client.get("/api/status")).json() == normal


# --- 7. huge bodies and a gzip bomb ------------------------------------------------------------


async def test_huge_answer_is_200_mb_of_valid_json_streamed_lazily() -> None:
    async with sim("laozhang", tokens=3) as s:
        normal = (await s.list_raw()).json()
        await s.hostile(mode="huge", routes=["list"])
        peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        size, tail, checked = 0, b"", False
        async with (  # aiohttp's client: 200 MB in ~0.3 s, httpx's takes seconds
            aiohttp.ClientSession() as session,
            session.get(s.server.url + "/v1/api-keys", headers=HEADERS["laozhang"]) as r,
        ):
            assert "Content-Length" not in r.headers and r.headers["Transfer-Encoding"] == "chunked"
            async for chunk in r.content.iter_chunked(1 << 20):
                size += len(chunk)
                tail = (tail + chunk)[-65536:]
                if size > 64 * MIB and not checked:
                    await control_answers_quickly(s)
                    checked = True
        assert size == 200 * MIB and checked
        assert orjson.loads(tail) == normal  # whitespace, then the real answer
        grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before
        assert grown_kib < 100 * 1024  # nobody held the 200 MB


async def test_gzip_bomb_is_small_on_the_wire_and_inflates_to_a_gib() -> None:
    async with sim("newapi") as s:
        await s.hostile(mode="bomb", routes=["token.list"])
        async with s.client.stream("GET", "/api/token/", headers=HEADERS["newapi"]) as r:
            assert r.headers["Content-Encoding"] == "gzip"
            raw = b"".join([chunk async for chunk in r.aiter_raw()])
        assert len(raw) == int(r.headers["Content-Length"]) and len(raw) < 1.1 * MIB
        assert raw[:2] == b"\x1f\x8b"
        assert struct.unpack("<I", raw[-4:])[0] == 1 << 30  # ISIZE: 1 GiB inflated
        sample = zlib.decompressobj(31).decompress(raw[: 16 * 1024], 64 * MIB)
        assert len(sample) > 15 * MIB and sample == bytes(len(sample))  # ~1000:1, zeros
        await control_answers_quickly(s)


async def test_gzip_bomb_is_a_valid_gzip_stream() -> None:
    async with sim("laozhang") as s:
        await s.hostile(mode="bomb", size=70 * MIB)
        r = await s.list_raw()  # httpx inflates it: 70 MiB, CRC checked
        assert r.status_code == 200 and len(r.content) == 70 * MIB
        assert (await s.hostile(mode="bomb", size=MIB + 1)).status_code == 400


# --- 8. hang -----------------------------------------------------------------------------------


async def test_hang_never_answers_until_the_client_gives_up() -> None:
    async with sim("oneapi") as s:
        await s.hostile(mode="hang", routes=["token.list"], times=2)
        with pytest.raises(httpx.ReadTimeout):
            await s.client.get("/api/token/", headers=HEADERS["oneapi"], timeout=0.3)
        await control_answers_quickly(s)
        assert (await s.client.get("/api/status")).status_code == 200  # other routes answer
        # switching the mode off cuts what it holds: the connection closes with no answer
        held = asyncio.create_task(s.client.get("/api/token/", headers=HEADERS["oneapi"]))
        await asyncio.sleep(0.2)
        assert not held.done()
        await s.hostile(reset=True)
        with pytest.raises(httpx.RemoteProtocolError):
            await asyncio.wait_for(held, 1.0)
        assert (await s.list_raw()).status_code == 200


async def test_a_hanging_request_does_not_hold_up_server_close() -> None:
    async with sim("laozhang") as s:
        await s.hostile(mode="hang")
        held = asyncio.create_task(s.list_raw())
        await asyncio.sleep(0.2)
        t0 = time.monotonic()
        await s.server.close()
        assert time.monotonic() - t0 < 1.0
        with pytest.raises(httpx.TransportError):
            await held


# --- 9. an echo of the credential with a forged log line ---------------------------------------


async def test_echo_on_laozhang_is_a_500_with_a_raw_newline() -> None:
    async with sim("laozhang") as s:
        await s.hostile(mode="echo", routes=["list"])
        r = await s.list_raw()
        assert r.status_code == 500 and r.headers["Content-Type"].startswith("text/plain")
        assert r.text == f"bad token {ADMIN}\n{FORGED}"


@pytest.mark.parametrize("flavor", ["oneapi", "newapi"])
async def test_echo_on_the_one_api_family_is_a_success_false_envelope(flavor: str) -> None:
    async with sim(flavor) as s:
        await s.hostile(mode="echo")
        r = await s.list_raw()
        assert r.status_code == 200
        assert r.json() == {"success": False, "message": f"bad token {ADMIN}\n{FORGED}"}


# --- 10. the relay's own clock -----------------------------------------------------------------


@pytest.mark.parametrize("flavor", ["laozhang", "oneapi", "newapi", "openai"])
async def test_every_flavour_sends_date_from_the_relays_clock(flavor: str) -> None:
    async with sim(flavor, tokens=1) as s:
        s.relay.advance_by(12_345)
        for r in (await s.list_raw(), await s.client.get("/_sim/truth")):
            assert parsedate_to_datetime(r.headers["Date"]).timestamp() == int(s.relay.now())
        await s.hostile(mode="trickle", interval=0.0001)  # hand-streamed answers too
        r = await s.list_raw()
        assert parsedate_to_datetime(r.headers["Date"]).timestamp() == int(s.relay.now())


async def test_speed_zero_freezes_the_relays_clock_and_usage() -> None:
    async with sim("laozhang", tokens=20) as s:
        await s.control("speed", speed=0)
        before = await s.list_raw()
        truth = (await s.client.get("/_sim/truth")).json()
        s.clock.advance(6 * 3600)
        after = await s.list_raw()
        assert after.headers["Date"] == before.headers["Date"]
        assert after.json() == before.json()
        assert (await s.client.get("/_sim/truth")).json() == truth
        assert (await s.control("advance", seconds=60))["now"] == truth["now"] + 60  # still steerable


# --- the switches themselves -------------------------------------------------------------------


async def test_hostile_switches_validate_and_show() -> None:
    async with sim("laozhang") as s:
        for bad in (
            {"mode": "paging"},  # one-api family only
            {"mode": "nonsense"},
            {"mode": "trickle", "interval": 0},
            {"mode": "trickle", "routes": ["no.such.route"]},
            {"mode": "absurd", "routes": ["usage"]},
            {"mode": "absurd", "token": "x", "fraction": 0.5},
            {"mode": "absurd", "kind": "odd"},
            {"mode": "hang", "rate": 2},
            {"mode": "hang", "times": 0},
            {"mode": "hang", "size": 3},
        ):
            assert (await s.client.post("/_sim/hostile", json=bad)).status_code == 400, bad
        assert (await s.hostile(mode="absurd", token="nope")).status_code == 404
        await s.hostile(mode="trickle", routes=["usage"], interval=0.5, times=3)
        shown = (await s.client.get("/_sim/hostile")).json()
        assert shown == {
            "modes": {"trickle": {"routes": ["usage"], "rate": 1.0, "times": 3, "interval": 0.5}}
        }
    async with sim("openai") as s:
        assert (await s.hostile(mode="absurd")).status_code == 400
        assert (await s.hostile(mode="echo")).status_code == 200


async def test_rates_are_seeded_and_times_runs_out() -> None:
    async def statuses(seed: int) -> list[int]:
        async with sim("laozhang", seed=seed) as s:
            await s.hostile(mode="echo", rate=0.5, routes=["list"])
            return [(await s.list_raw()).status_code for _ in range(30)]

    first = await statuses(4)
    assert first == await statuses(4) and 5 < first.count(500) < 25
    async with sim("laozhang") as s:
        await s.hostile(mode="echo", times=2)
        assert [(await s.list_raw()).status_code for _ in range(3)] == [500, 500, 200]
        assert (await s.client.get("/_sim/hostile")).json() == {"modes": {}}


@pytest.mark.parametrize("flavor", ["laozhang", "oneapi", "newapi"])
async def test_answers_are_unchanged_once_hostile_modes_are_reset(flavor: str) -> None:
    async with sim(flavor) as s:
        before = (await s.list_raw()).content
        await s.hostile(mode="absurd", kind="mixed")
        await s.hostile(mode="echo", routes=["models"])
        assert (await s.list_raw()).content != before
        await s.hostile(reset=True)
        assert (await s.list_raw()).content == before
        assert re.fullmatch(rb'\{"(data|success)".*', before)
