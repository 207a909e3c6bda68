"""The HTTP surface: /metrics, /healthz, /readyz and /api/v1/*, served by uvicorn in the
daemon's own event loop. Handlers read what the poll cycle already holds; none calls a relay."""

from __future__ import annotations

import contextlib
import hmac
import inspect
import ipaddress
import logging
import socket
from collections.abc import Awaitable, Callable, Generator, Mapping, Sequence
from typing import Any, Final

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from monitor.errors import StartupError
from monitor.metrics import Exposition
from monitor.secret import Secret

__all__ = [
    "LEAK_REPORTS_BODY_BYTES",
    "MAX_API_BODY_BYTES",
    "BodyTooLarge",
    "EmbeddedServer",
    "JSONResponse",
    "build_app",
    "exposure_warnings",
    "is_loopback",
    "make_server",
    "read_body",
]

log = logging.getLogger("keywatch.http")

CONTENT_TYPE_LATEST = "text/plain; version=0.0.4; charset=utf-8"
# Any /api/ request body unless a route says otherwise: the largest JSON an /api/v1 route takes is
# a silence (a few matchers and a comment), far below it. More is refused before it is held.
MAX_API_BODY_BYTES: Final = 64 * 1024
# POST /api/v1/leak-reports takes up to 1000 reports (alerts.response.leak_reports.MAX_BODY_BYTES).
LEAK_REPORTS_BODY_BYTES: Final = 2 * 1024 * 1024
_WRITES: Final = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_NEEDS_TOKEN: Final = (
    "set api_token in the config to change anything through the API: "
    "keywatch listens beyond loopback, so without it anyone who can reach it could"
)


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


class BodyTooLarge(Exception):
    """A request body over its cap (deliberately not a ValueError: routes answer 413, not 400)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        super().__init__(f"the body is larger than {limit} bytes")

    def response(self) -> Response:
        return JSONResponse({"error": str(self)}, status_code=413)


async def read_body(request: Request, limit: int) -> bytes:
    """The body as sent, read chunk by chunk: BodyTooLarge as soon as it passes `limit` bytes, so a
    huge body is never held whole. Starlette's ClientDisconnect passes through."""
    if _declared_length(request.headers.get("content-length", "")) > limit:
        raise BodyTooLarge(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _declared_length(header: str) -> int:
    """Content-Length as a number; -1 when absent or not digits (then only the stream counts)."""
    if not (header.isascii() and header.isdigit()):
        return -1
    return int(header) if len(header) <= 19 else 2**63  # int() of thousands of digits raises


# --- exposure -------------------------------------------------------------------------------------


def _host(listen: str) -> str:
    host, _, _ = listen.rpartition(":")
    return host.strip("[]") or "127.0.0.1"  # ":9477" binds loopback (see make_server)


def is_loopback(listen: str) -> bool:
    """Whether `listen` (HOST:PORT) binds only loopback: 127.0.0.0/8, ::1 or localhost. A host name
    could resolve anywhere, so any other name is not."""
    host = _host(listen)
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped.is_loopback
    return ip.is_loopback


def exposure_warnings(listen: str, api_token_set: bool) -> list[str]:
    """The one-line warnings the daemon logs at start about who can reach what it serves."""
    if api_token_set or is_loopback(listen):
        return []
    return [
        f"listen {listen} is not a loopback address and api_token is not set: anyone who can reach it "
        "can read token names and spend (/api/v1, /metrics); changes through /api/ are refused "
        "until api_token is set"
    ]


# --- middleware -----------------------------------------------------------------------------------


class _ApiAuth:
    """With `api_token` set, /api/* needs `Authorization: Bearer <api_token>`. Without it reads stay
    open, and changes (POST, PUT, PATCH, DELETE) are allowed only when `writes_open` (the daemon
    listens on loopback only)."""

    def __init__(
        self,
        app: ASGIApp,
        token: Callable[[], Secret],
        open_paths: frozenset[str] = frozenset(),
        writes_open: bool = False,
    ) -> None:
        self.app = app
        self.token = token
        self.open_paths = open_paths  # routes that authenticate themselves (signed leak reports)
        self.writes_open = writes_open

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] == "http" and path.startswith("/api/") and path not in self.open_paths:
            refusal = self._refusal(scope)
            if refusal is not None:
                await refusal(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def _refusal(self, scope: Scope) -> Response | None:
        secret = self.token()
        if secret:
            headers = dict(scope["headers"])
            given = headers.get(b"authorization", b"").decode("latin-1")
            expected = f"Bearer {secret.reveal()}"
            if not hmac.compare_digest(given.encode(), expected.encode()):
                return JSONResponse({"error": "missing or wrong bearer token"}, status_code=401)
        elif scope.get("method", "GET") in _WRITES and not self.writes_open:
            return JSONResponse({"error": _NEEDS_TOKEN}, status_code=403)
        return None


class _BodyLimit:
    """Caps every /api/ request body at its path's limit, declared or streamed, whatever the route
    does with it: 413 before anything is held. Routes that read with read_body answer the same."""

    def __init__(self, app: ASGIApp, limits: Mapping[str, int], default: int = MAX_API_BODY_BYTES) -> None:
        self.app = app
        self.limits = dict(limits)
        self.default = default

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not path.startswith("/api/"):
            await self.app(scope, receive, send)
            return
        limit = self.limits.get(path, self.default)
        headers = dict(scope["headers"])
        if _declared_length(headers.get(b"content-length", b"").decode("latin-1")) > limit:
            await BodyTooLarge(limit).response()(scope, receive, send)
            return
        received = 0
        started = False

        async def capped() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        async def watched(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, capped, watched)
        except BodyTooLarge as exc:
            if started:
                raise
            await exc.response()(scope, receive, send)


# --- the app --------------------------------------------------------------------------------------


def build_app(
    *,
    exposition: Exposition,
    readiness: Callable[[], dict[str, bool]],
    tokens: Callable[[], list[dict[str, Any]] | bytes | Awaitable[bytes]],
    api_token: Callable[[], Secret],
    listen: str | None = None,
    extra_routes: Sequence[BaseRoute] = (),
    open_paths: frozenset[str] = frozenset({"/api/v1/leak-reports"}),
    body_limits: Mapping[str, int] | None = None,
    instance: Callable[[], Mapping[str, Any]] | None = None,
) -> Starlette:
    """`tokens` returns the rows, or their JSON already serialized. `listen` is the address the
    daemon serves on: without api_token, changes through /api/ are allowed only when it is loopback
    (None: not known to be, so they are refused). `body_limits` maps paths to their own body caps
    (default: the leak reports'); every other /api/ path gets MAX_API_BODY_BYTES. `instance`: what
    /readyz adds about this instance (its name and the providers it polls, monitor.cluster)."""

    async def metrics(request: Request) -> Response:
        if "gzip" in request.headers.get("accept-encoding", ""):
            body = await exposition.scrape(gzip=True)
            return Response(body, media_type=CONTENT_TYPE_LATEST, headers={"Content-Encoding": "gzip"})
        return Response(await exposition.scrape(gzip=False), media_type=CONTENT_TYPE_LATEST)

    async def healthz(_: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(_: Request) -> Response:
        providers = readiness()
        store = exposition.store_up
        ready = all(providers.values()) and store
        body = {"ready": ready, "providers": providers, "store": store}
        if instance is not None:
            body.update(instance())
        return JSONResponse(body, status_code=200 if ready else 503)

    async def list_tokens(_: Request) -> Response:
        rows = tokens()
        if inspect.isawaitable(rows):
            rows = await rows
        if isinstance(rows, bytes):
            return Response(rows, media_type=JSONResponse.media_type)
        return JSONResponse(rows)

    routes: list[BaseRoute] = [
        Route("/metrics", metrics),
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/api/v1/tokens", list_tokens),
        *extra_routes,
    ]
    limits = {"/api/v1/leak-reports": LEAK_REPORTS_BODY_BYTES} if body_limits is None else body_limits
    writes_open = listen is not None and is_loopback(listen)
    middleware = [
        Middleware(_ApiAuth, token=api_token, open_paths=open_paths, writes_open=writes_open),
        Middleware(_BodyLimit, limits=limits),
    ]
    return Starlette(routes=routes, middleware=middleware)


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


def bind(listen: str) -> socket.socket:
    """The listening socket for `listen`, bound here rather than inside uvicorn, so that a port
    already taken is one StartupError line instead of uvicorn's log and exit."""
    host, port = _host(listen), int(listen.rpartition(":")[2])
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, kind, proto, _, address = infos[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise StartupError(f"cannot listen on {listen}: {exc.strerror or exc}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise StartupError(f"cannot listen on {listen}: {exc.strerror or exc}") from None
    return sock


def make_server(app: Starlette, listen: str) -> EmbeddedServer:
    config = uvicorn.Config(
        app,
        host=_host(listen),
        port=int(listen.rpartition(":")[2]),
        log_config=None,
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=5,
    )
    return EmbeddedServer(config)
