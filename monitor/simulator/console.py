# ruff: noqa: RUF001  (the relay's own messages, with Chinese punctuation)
"""Wire pieces the one-api family (one-api, new-api) shares: the `{success, message, data}`
envelope, access-token and key auth, numeric token ids, status codes, and gin's trailing-slash
redirects. (The relay's clock in `Date` is wire.relay_date: every flavour has it.)"""

from __future__ import annotations

import hmac
from collections.abc import Iterable

from aiohttp import web
from aiohttp.typedefs import Handler

from .model import SimulatedRelay
from .quota import is_unlimited, remain_usd
from .token import SimToken
from .wire import json_response

__all__ = [
    "DISABLED",
    "ENABLED",
    "EXHAUSTED",
    "EXPIRED",
    "NumericIds",
    "access_token",
    "add_slash_redirects",
    "fail",
    "key_of",
    "ok",
    "status_code",
    "valid_access",
]

ENABLED, DISABLED, EXPIRED, EXHAUSTED = 1, 2, 3, 4
NO_TOKEN = "无权进行此操作，未登录且未提供 access token"
BAD_TOKEN = "无权进行此操作，access token 无效"


def ok(data: object = None, *, with_data: bool = True) -> web.Response:
    body: dict[str, object] = {"success": True, "message": ""}
    if with_data:
        body["data"] = data
    return json_response(body)


def fail(message: str, status: int = 200) -> web.Response:
    """one-api answers most errors, an invalid access token included, with HTTP 200."""
    return json_response({"success": False, "message": message}, status)


def access_token(request: web.Request) -> str | None:
    """`Authorization: <token>`; a `Bearer ` prefix is accepted too."""
    value = request.headers.get("Authorization", "").strip()
    if value[:7].lower() == "bearer ":
        value = value[7:].strip()
    return value or None


def valid_access(request: web.Request, relay: SimulatedRelay) -> web.Response | None:
    """None when the access token is the relay's, else the answer one-api gives."""
    token = access_token(request)
    if token is None:
        return fail(NO_TOKEN, 401)
    if not hmac.compare_digest(token.encode(), relay.admin_token.encode()):
        return fail(BAD_TOKEN)
    return None


def key_of(request: web.Request) -> str | None:
    """The key a relay call carries, as the relay stores it (one-api strips `Bearer ` and `sk-`)."""
    token = access_token(request)
    return token.removeprefix("sk-") if token else None


def status_code(tok: SimToken, now: float) -> int:
    state = tok.status(now)
    if state in ("revoked", "disabled"):
        return DISABLED
    if state == "expired":
        return EXPIRED
    if not is_unlimited(tok) and remain_usd(tok) <= 0:
        return EXHAUSTED
    return ENABLED


class NumericIds:
    """one-api ids: integers that grow with creation order, never reused once given."""

    def __init__(self) -> None:
        self._num: dict[str, int] = {}
        self._sim: dict[int, str] = {}
        self._roster = -1

    def refresh(self, relay: SimulatedRelay) -> None:
        if relay.roster_version == self._roster:
            return
        for tok in relay.listed():
            if tok.id not in self._num:
                n = len(self._num) + 1
                self._num[tok.id] = n
                self._sim[n] = tok.id
        self._roster = relay.roster_version

    def number(self, tok: SimToken) -> int:
        return self._num[tok.id]

    def sim_id(self, number: int) -> str | None:
        return self._sim.get(number)


def add_slash_redirects(app: web.Application, paths: Iterable[tuple[str, str]]) -> None:
    """gin's RedirectTrailingSlash: 301 for GET, 307 for other methods, query kept."""

    def redirect(target: str) -> Handler:
        async def handler(request: web.Request) -> web.StreamResponse:
            location = target + (f"?{request.query_string}" if request.query_string else "")
            status = 301 if request.method in ("GET", "HEAD") else 307
            return web.Response(status=status, headers={"Location": location})

        return handler

    for source, target in paths:
        app.router.add_route("*", source, redirect(target))
