"""The HTTP surface: metrics caching and gzip, readiness, the bearer token on /api/v1, changes
refused without one beyond loopback, and the cap on request bodies."""

from __future__ import annotations

import gzip
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from monitor.metrics import Exposition
from monitor.policy import PolicyBook
from monitor.secret import Secret
from monitor.server import (
    LEAK_REPORTS_BODY_BYTES,
    MAX_API_BODY_BYTES,
    BodyTooLarge,
    build_app,
    exposure_warnings,
    is_loopback,
    read_body,
)

TOKEN = "s3cret-api-token"


async def signed_report(request: Request) -> Response:
    body = await request.body()  # reads it whole, trusting the cap around it
    return PlainTextResponse(f"checked its own signature on {len(body)} bytes")


async def change(request: Request) -> Response:
    body = await request.body()
    return PlainTextResponse(f"changed with {len(body)} bytes")


def client(
    ready: dict[str, bool],
    token: str = TOKEN,
    listen: str | None = "127.0.0.1:9477",
    tokens: Callable[[], Any] = lambda: [{"provider": "lz", "name": "dev-a-b-2026-01"}],
) -> httpx.AsyncClient:
    exposition = Exposition(PolicyBook([]))
    exposition.health("lz").up = True
    app = build_app(
        exposition=exposition,
        readiness=lambda: ready,
        tokens=tokens,
        api_token=lambda: Secret(token),
        listen=listen,
        extra_routes=[
            Route("/api/v1/leak-reports", signed_report, methods=["POST"]),
            Route("/api/v1/things", change, methods=["POST", "PUT", "PATCH", "DELETE"]),
        ],
    )
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://keywatch")


async def test_api_needs_the_bearer_token_when_one_is_configured() -> None:
    async with client({"lz": True}) as c:
        assert (await c.get("/api/v1/tokens")).status_code == 401
        assert (await c.get("/api/v1/tokens", headers={"Authorization": "Bearer wrong"})).status_code == 401
        ok = await c.get("/api/v1/tokens", headers={"Authorization": f"Bearer {TOKEN}"})
        assert ok.status_code == 200 and ok.json()[0]["name"] == "dev-a-b-2026-01"
        assert TOKEN not in (await c.get("/api/v1/tokens")).text
        # Prometheus and probes need no token; signed leak reports authenticate themselves.
        assert (await c.get("/metrics")).status_code == 200
        assert (await c.get("/healthz")).status_code == 200
        assert (await c.post("/api/v1/leak-reports", content=b"[]")).status_code == 200


async def test_without_a_token_the_api_is_open() -> None:
    async with client({"lz": True}, token="") as c:
        assert (await c.get("/api/v1/tokens")).status_code == 200


async def test_readiness_waits_for_every_provider() -> None:
    async with client({"lz": True, "one": False}) as c:
        r = await c.get("/readyz")
        assert r.status_code == 503 and r.json() == {
            "ready": False,
            "providers": {"lz": True, "one": False},
            "store": True,
        }
    async with client({"lz": True}) as c:
        assert (await c.get("/readyz")).status_code == 200


async def test_metrics_are_served_plain_or_gzipped() -> None:
    async with client({"lz": True}) as c:
        plain = await c.get("/metrics", headers={"Accept-Encoding": "identity"})
        assert plain.headers["content-type"].startswith("text/plain; version=0.0.4")
        assert b"keywatch_provider_up" in plain.content
        zipped = await c.send(
            c.build_request("GET", "/metrics", headers={"Accept-Encoding": "gzip"}), stream=True
        )
        wire = b"".join([chunk async for chunk in zipped.aiter_raw()])
        assert zipped.headers["content-encoding"] == "gzip"
        assert gzip.decompress(wire) == plain.content
        assert len(wire) < len(plain.content)


LOOPBACK = [
    "127.0.0.1:9477",
    "127.8.9.10:1",
    "[::1]:9477",
    "localhost:9477",
    ":9477",
    "[::ffff:127.0.0.1]:80",
]
EXPOSED = ["0.0.0.0:9477", "[::]:9477", "10.1.2.3:9477", "keywatch.example.com:9477", "[fe80::1]:9477"]


@pytest.mark.parametrize("listen", [*EXPOSED, None])
async def test_without_api_token_changes_beyond_loopback_are_refused_with_403(listen: str | None) -> None:
    async with client({"lz": True}, token="", listen=listen) as c:
        for method in ("POST", "PUT", "PATCH", "DELETE"):
            r = await c.request(method, "/api/v1/things", content=b"{}")
            assert r.status_code == 403 and "set api_token" in r.json()["error"], method
        assert (await c.get("/api/v1/tokens")).status_code == 200  # reads stay open
        assert (await c.post("/api/v1/leak-reports", content=b"[]")).status_code == 200  # signed instead


@pytest.mark.parametrize("listen", LOOPBACK)
async def test_without_api_token_changes_on_loopback_stay_allowed(listen: str) -> None:
    async with client({"lz": True}, token="", listen=listen) as c:
        assert (await c.post("/api/v1/things", content=b"{}")).status_code == 200
        assert (await c.delete("/api/v1/things")).status_code == 200


async def test_with_api_token_changes_beyond_loopback_need_only_the_bearer_token() -> None:
    async with client({"lz": True}, listen="0.0.0.0:9477") as c:
        assert (await c.post("/api/v1/things", content=b"{}")).status_code == 401
        auth = {"Authorization": f"Bearer {TOKEN}"}
        assert (await c.post("/api/v1/things", content=b"{}", headers=auth)).status_code == 200


@pytest.mark.parametrize("listen", LOOPBACK)
def test_loopback_listen_addresses_give_no_exposure_warning(listen: str) -> None:
    assert is_loopback(listen) and exposure_warnings(listen, api_token_set=False) == []


@pytest.mark.parametrize("listen", EXPOSED)
def test_exposed_listen_without_api_token_gives_one_warning_line(listen: str) -> None:
    assert not is_loopback(listen)
    (warning,) = exposure_warnings(listen, api_token_set=False)
    assert "\n" not in warning and listen in warning and "api_token" in warning
    assert "anyone who can reach it can read token names and spend" in warning
    assert exposure_warnings(listen, api_token_set=True) == []


async def test_every_api_body_is_capped_even_when_the_route_reads_it_whole() -> None:
    async with client({"lz": True}, token="") as c:
        r = await c.post("/api/v1/things", content=b"x" * (MAX_API_BODY_BYTES + 1))
        assert r.status_code == 413 and "larger than" in r.json()["error"]
        sent = 0

        async def endless() -> AsyncIterator[bytes]:  # chunked, no Content-Length
            nonlocal sent
            for _ in range(1000):
                sent += 1
                yield b"x" * 65536

        r = await c.post("/api/v1/things", content=endless())
        assert r.status_code == 413 and sent <= 3
        assert (await c.post("/api/v1/things", content=b"x" * MAX_API_BODY_BYTES)).status_code == 200
        # leak reports carry up to 1000 reports: their own, larger cap
        big = await c.post("/api/v1/leak-reports", content=b"x" * (MAX_API_BODY_BYTES * 4))
        assert big.status_code == 200
        huge = await c.post("/api/v1/leak-reports", content=b"x" * (LEAK_REPORTS_BODY_BYTES + 1))
        assert huge.status_code == 413


def test_the_leak_reports_cap_is_the_routes_own() -> None:
    from alerts.response.leak_reports import MAX_BODY_BYTES

    assert LEAK_REPORTS_BODY_BYTES == MAX_BODY_BYTES


@pytest.mark.parametrize("declared", ["9" * 5000, "99999999999999999999", "65537"])
async def test_read_body_refuses_a_huge_declared_length_without_reading(declared: str) -> None:
    async def receive() -> dict[str, Any]:
        raise AssertionError("the body must not be read")

    scope = {"type": "http", "method": "POST", "headers": [(b"content-length", declared.encode())]}
    with pytest.raises(BodyTooLarge):
        await read_body(Request(scope, receive), 65536)


async def test_tokens_served_as_ready_bytes_go_out_unchanged() -> None:
    body = b'[{"provider":"lz","name":"dev-a-b-2026-01"}]'
    async with client({"lz": True}, tokens=lambda: body) as c:
        r = await c.get("/api/v1/tokens", headers={"Authorization": f"Bearer {TOKEN}"})
        assert r.status_code == 200 and r.content == body
        assert r.headers["content-type"] == "application/json"
