"""HTTP plumbing every flavour shares: JSON answers, bearer parsing, timestamps, injected faults."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime
from email.utils import formatdate
from functools import lru_cache
from typing import Any

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from .faults import Outcome
from .model import SimulatedRelay

__all__ = [
    "FLAVOR",
    "OPTIONS",
    "RELAY",
    "SIM_ROUTE_PREFIX",
    "bearer",
    "fault_middleware",
    "iso",
    "json_response",
    "openai_error",
    "parse_iso",
    "relay_date",
    "set_options",
]

RELAY = web.AppKey("keywatch.sim.relay", SimulatedRelay)
OPTIONS = web.AppKey("keywatch.sim.options", object)  # the flavour's options dataclass
FLAVOR = web.AppKey("keywatch.sim.flavor", str)  # "laozhang", "oneapi", ...
SIM_ROUTE_PREFIX = "sim."  # route names of the control API: faults never touch them


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=orjson.dumps(data), status=status, content_type="application/json", headers=headers
    )


def openai_error(
    status: int, message: str, type_: str, code: str | None, param: str | None = None
) -> web.Response:
    return json_response({"error": {"message": message, "type": type_, "param": param, "code": code}}, status)


def bearer(request: web.Request) -> str | None:
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    value = value.strip()
    return value if scheme.lower() == "bearer" and value else None


@lru_cache(maxsize=65_536)
def _iso_second(second: int) -> str:
    return datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def iso(ts: float | None) -> str | None:
    """ISO-8601 UTC to the second. Cached: many tokens share the same bucket timestamps."""
    return None if ts is None else _iso_second(int(ts))


def parse_iso(value: object) -> float | None:
    """ISO-8601 (a naive time means UTC) or null; ValueError otherwise."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError("expected an ISO-8601 string")
    dt = datetime.fromisoformat(value)
    return (dt if dt.tzinfo is not None else dt.replace(tzinfo=UTC)).timestamp()


def set_options(options: object, changes: dict[str, Any]) -> None:
    """Change fields of a flavour's options dataclass, keeping each field's type."""
    if not dataclasses.is_dataclass(options):
        raise ValueError("this flavour has no options")
    current = {f.name: getattr(options, f.name) for f in dataclasses.fields(options)}
    for name, value in changes.items():
        if name not in current:
            raise ValueError(f"unknown option {name!r}; known: {', '.join(sorted(current))}")
        if type(value) is not type(current[name]):
            raise ValueError(f"option {name!r} takes a {type(current[name]).__name__}")
    for name, value in changes.items():
        setattr(options, name, value)


def relay_date(relay: SimulatedRelay) -> Middleware:
    """Answers carry the relay's own clock in `Date`, as a real server's do: adapters place
    their log windows on the relay's time, which here is simulated time (frozen at speed 0).
    An answer streamed by hand (hostilewire) is already on the wire: it set its own."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        response = await handler(request)
        if not response.prepared:
            response.headers["Date"] = formatdate(relay.now(), usegmt=True)
        return response

    return middleware


_GATEWAY_PAGE = "<html><head><title>{0}</title></head><body><center><h1>{0}</h1></center><hr><center>nginx</center></body></html>\n"
_REASONS = {502: "502 Bad Gateway", 503: "503 Service Temporarily Unavailable", 504: "504 Gateway Time-out"}


def _server_error(status: int) -> web.Response:
    if status in _REASONS:  # what a reverse proxy in front of a relay sends: HTML, not JSON
        return web.Response(
            text=_GATEWAY_PAGE.format(_REASONS[status]), status=status, content_type="text/html"
        )
    return openai_error(
        status, "The server had an error while processing your request (simulated)", "server_error", None
    )


# Relay API requests by User-Agent (keywatch names its instance there): GET /_sim/requests.
CALLERS = web.AppKey("callers", dict[str, int])
MAX_CALLERS = 64  # agents counted one by one; any more are counted together as "other"


@web.middleware
async def caller_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    name = request.match_info.route.name
    if name is not None and not name.startswith(SIM_ROUTE_PREFIX):
        callers = request.app[CALLERS]
        agent = request.headers.get("User-Agent", "")[:200]
        if agent not in callers and len(callers) >= MAX_CALLERS:
            agent = "other"
        callers[agent] = callers.get(agent, 0) + 1
    return await handler(request)


@web.middleware
async def fault_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    name = request.match_info.route.name
    if name is None or name.startswith(SIM_ROUTE_PREFIX):
        return await handler(request)
    faults = request.app[RELAY].faults
    if not faults.applies_to(name):
        return await handler(request)
    outcome = faults.decide()
    if faults.latency > 0:
        await asyncio.sleep(faults.latency)
    if outcome is Outcome.ERROR:
        return _server_error(faults.status)
    if outcome is Outcome.RATE_LIMIT:
        return _rate_limited()
    response = await handler(request)
    if (
        outcome is Outcome.MALFORMED
        and isinstance(response, web.Response)
        and isinstance(response.body, bytes)
    ):
        # Any proper prefix of a JSON object or array is invalid JSON.
        body = response.body
        return web.Response(
            body=body[: max(1, len(body) // 2)], status=response.status, content_type="application/json"
        )
    return response


def _rate_limited() -> web.Response:
    response = openai_error(429, "Rate limit reached (simulated)", "rate_limit_error", "rate_limit_exceeded")
    response.headers["Retry-After"] = "1"
    return response
