"""The HTTP surface: /metrics, /healthz, /readyz and /api/v1/*, served by uvicorn in the
daemon's own event loop. Handlers read what the poll cycle already holds; none calls a relay."""

from __future__ import annotations

import contextlib
import hmac
import logging
from collections.abc import Callable, Generator, Sequence
from typing import Any

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from monitor.metrics import Exposition
from monitor.secret import Secret

__all__ = ["EmbeddedServer", "JSONResponse", "build_app", "make_server"]

log = logging.getLogger("keywatch.http")

CONTENT_TYPE_LATEST = "text/plain; version=0.0.4; charset=utf-8"


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


class _ApiAuth:
    """With `api_token` set, /api/v1/* needs `Authorization: Bearer <api_token>`."""

    def __init__(
        self, app: ASGIApp, token: Callable[[], Secret], open_paths: frozenset[str] = frozenset()
    ) -> None:
        self.app = app
        self.token = token
        self.open_paths = open_paths  # routes that authenticate themselves (signed leak reports)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        secret = self.token()
        path = scope.get("path", "")
        if scope["type"] == "http" and path.startswith("/api/") and path not in self.open_paths and secret:
            headers = dict(scope["headers"])
            given = headers.get(b"authorization", b"").decode("latin-1")
            expected = f"Bearer {secret.reveal()}"
            if not hmac.compare_digest(given.encode(), expected.encode()):
                response = JSONResponse({"error": "missing or wrong bearer token"}, status_code=401)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def build_app(
    *,
    exposition: Exposition,
    readiness: Callable[[], dict[str, bool]],
    tokens: Callable[[], list[dict[str, Any]]],
    api_token: Callable[[], Secret],
    extra_routes: Sequence[BaseRoute] = (),
    open_paths: frozenset[str] = frozenset({"/api/v1/leak-reports"}),
) -> Starlette:
    async def metrics(request: Request) -> Response:
        if "gzip" in request.headers.get("accept-encoding", ""):
            body = exposition.render_gzip()
            return Response(body, media_type=CONTENT_TYPE_LATEST, headers={"Content-Encoding": "gzip"})
        return Response(exposition.render(), media_type=CONTENT_TYPE_LATEST)

    async def healthz(_: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(_: Request) -> Response:
        providers = readiness()
        ready = all(providers.values())
        body = {"ready": ready, "providers": providers}
        return JSONResponse(body, status_code=200 if ready else 503)

    async def list_tokens(_: Request) -> Response:
        return JSONResponse(tokens())

    routes: list[BaseRoute] = [
        Route("/metrics", metrics),
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/api/v1/tokens", list_tokens),
        *extra_routes,
    ]
    return Starlette(routes=routes, middleware=[Middleware(_ApiAuth, token=api_token, open_paths=open_paths)])


class EmbeddedServer(uvicorn.Server):
    """uvicorn inside the daemon's loop; the daemon owns the signals, not uvicorn."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield

    @property
    def port(self) -> int | None:
        for server in self.servers:
            for sock in server.sockets:
                return int(sock.getsockname()[1])
        return None


def make_server(app: Starlette, listen: str) -> EmbeddedServer:
    host, _, port = listen.rpartition(":")
    config = uvicorn.Config(
        app,
        host=host.strip("[]") or "127.0.0.1",
        port=int(port),
        log_config=None,
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=5,
    )
    return EmbeddedServer(config)
