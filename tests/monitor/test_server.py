"""The HTTP surface: metrics caching and gzip, readiness, and the bearer token on /api/v1."""

from __future__ import annotations

import gzip

import httpx
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from monitor.metrics import Exposition
from monitor.policy import PolicyBook
from monitor.secret import Secret
from monitor.server import build_app

TOKEN = "s3cret-api-token"


async def signed_report(_: Request) -> Response:
    return PlainTextResponse("checked its own signature")


def client(ready: dict[str, bool], token: str = TOKEN) -> httpx.AsyncClient:
    exposition = Exposition(PolicyBook([]))
    exposition.health("lz").up = True
    app = build_app(
        exposition=exposition,
        readiness=lambda: ready,
        tokens=lambda: [{"provider": "lz", "name": "dev-a-b-2026-01"}],
        api_token=lambda: Secret(token),
        extra_routes=[Route("/api/v1/leak-reports", signed_report, methods=["POST"])],
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
        assert r.status_code == 503 and r.json() == {"ready": False, "providers": {"lz": True, "one": False}}
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
