"""The `oneapi` flavour: one-api's console API and the relay calls keywatch makes
(docs/relay-adapters.md).

    GET    /api/token/?p=N                     10 tokens a page, p from 0, newest id first
    POST   /api/token/                         create (answers without data, as one-api does)
    PUT    /api/token/[?status_only=true]      {"id", "status"} or a full update (name, expiry)
    GET    /api/token/{id}                     one token
    DELETE /api/token/{id}
    POST   /api/token/{id}/key                 {"key"}: reveals a key that lists mask
    GET    /api/log/self?p=&type=&token_name=&model_name=&start_timestamp=&end_timestamp=
    GET    /api/log/self/stat                  {"quota"} over the same filters
    GET    /api/status                         {"quota_per_unit", ...}
    GET    /v1/models                          with the token's key: 200, or 401 once refused

Auth: `Authorization: <access token>` (DEFAULT_ACCESS_TOKEN; `Bearer ` accepted). Quirks kept:
an invalid access token gets HTTP 200 with `success: false` (a missing one 401); a disabled or
deleted key is still served for `cache_seconds` (one-api's token cache); routes without their
trailing slash redirect (301 for GET, 307 otherwise); `Date` carries the relay's clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from .console import add_slash_redirects, fail, key_of, ok, valid_access
from .consolecore import ConsoleCore
from .consolelogs import CONSUME, oneapi_row
from .hostile import page_of
from .model import DEFAULT_ADMIN_TOKEN, SimulatedRelay
from .profiles import MODEL_PRICES
from .wire import json_response

__all__ = [
    "DEFAULT_ACCESS_TOKEN",
    "PAGE_SIZE",
    "OneAPIOptions",
    "add_oneapi_routes",
    "int_query",
    "log_query",
    "read_body",
]

DEFAULT_ACCESS_TOKEN = DEFAULT_ADMIN_TOKEN  # the access token the simulator accepts
PAGE_SIZE = 10  # one-api's ItemsPerPage: fixed, and no total in the answer


@dataclass
class OneAPIOptions:
    quota_per_unit: float = 500_000.0
    mask_keys: bool = False  # some relays built on one-api mask keys in lists
    request_ids: bool = True  # False: log rows as one-api wrote them before request ids
    cache_seconds: float = 600.0  # a disabled or deleted key is served this long (token cache)


def int_query(request: web.Request, name: str, default: int = 0) -> int:
    """gin's strconv.Atoi on a query value: anything unparsable is the default."""
    try:
        return int(request.query.get(name, default))
    except ValueError:
        return default


async def read_body(request: web.Request) -> dict[str, Any] | None:
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        return None
    return body if isinstance(body, dict) else None


def add_oneapi_routes(app: web.Application, relay: SimulatedRelay, options: OneAPIOptions) -> None:
    core = ConsoleCore(relay, "oneapi", options.quota_per_unit, options.cache_seconds)

    def sync_options() -> None:  # /_sim/options may change them at any time
        core.quota_per_unit, core.cache_seconds = options.quota_per_unit, options.cache_seconds

    async def list_tokens(request: web.Request) -> web.StreamResponse:
        if (denied := valid_access(request, relay)) is not None:
            return denied
        sync_options()
        p = max(int_query(request, "p"), 0)
        tokens = core.tokens()
        lie = relay.hostile.fires("paging", "token.list") is not None
        page = page_of(tokens, p * PAGE_SIZE, PAGE_SIZE, lie=lie)
        return ok(core.views(page, relay.now(), masked=options.mask_keys, route="token.list"))

    async def create_token(request: web.Request) -> web.StreamResponse:
        if (denied := valid_access(request, relay)) is not None:
            return denied
        body = await read_body(request)
        if body is None:
            return fail("invalid JSON")
        sync_options()
        error = core.create(body)
        return fail(error) if error else ok(with_data=False)

    async def update_token(request: web.Request) -> web.StreamResponse:
        if (denied := valid_access(request, relay)) is not None:
            return denied
        body = await read_body(request)
        if body is None:
            return fail("invalid JSON")
        tok = core.find(str(body.get("id", "")))
        if tok is None:
            return fail("record not found")
        if request.query.get("status_only"):
            status = body.get("status")
            error = core.set_status(tok, status) if isinstance(status, int) else "status is required"
        else:
            error = core.update(tok, body)
        if error:
            return fail(error)
        return ok(core.view(tok, relay.now(), masked=options.mask_keys))

    async def get_token(request: web.Request) -> web.StreamResponse:
        if (denied := valid_access(request, relay)) is not None:
            return denied
        tok = core.find(request.match_info["id"])
        if tok is None:
            return fail("record not found")
        return ok(core.views([tok], relay.now(), masked=options.mask_keys, route="token.get")[0])

    async def delete_token(request: web.Request) -> web.StreamResponse:
        if (denied := valid_access(request, relay)) is not None:
            return denied
        tok = core.find(request.match_info["id"])
        if tok is None:
            return fail("record not found")
        core.delete(tok)
        return ok(with_data=False)

    async def reveal_key(request: web.Request) -> web.StreamResponse:
        if (denied := valid_access(request, relay)) is not None:
            return denied
        tok = core.find(request.match_info["id"])
        if tok is None:
            return fail("record not found")
        return ok({"key": core.key(tok)})

    async def logs(request: web.Request) -> web.StreamResponse:
        if (denied := valid_access(request, relay)) is not None:
            return denied
        sync_options()
        p = max(int_query(request, "p"), 0)
        rows = core.logs.rows(log_query(request))
        qpu = options.quota_per_unit
        lie = relay.hostile.fires("paging", "log.self") is not None
        page = page_of(rows, p * PAGE_SIZE, PAGE_SIZE, lie=lie)
        return ok([oneapi_row(e, i, qpu, with_request_id=options.request_ids) for e, i in page])

    async def log_stat(request: web.Request) -> web.StreamResponse:
        if (denied := valid_access(request, relay)) is not None:
            return denied
        rows = core.logs.rows(log_query(request, default_type=CONSUME))
        quota = sum(round(e.cost_usd * options.quota_per_unit) for e, i in rows if i == 0)
        return ok({"quota": quota})

    async def status(request: web.Request) -> web.StreamResponse:
        return ok({"version": "v0.6.10-sim", "quota_per_unit": options.quota_per_unit, "system_name": "sim"})

    async def models(request: web.Request) -> web.StreamResponse:
        key = key_of(request)
        if key is None or not core.serves(key):
            return json_response({"error": {"message": "无效的令牌", "type": "one_api_error"}}, 401)
        data = [{"id": m, "object": "model", "owned_by": "sim"} for m in MODEL_PRICES]
        return json_response({"object": "list", "data": data})

    app.router.add_get("/api/token/", list_tokens, name="token.list")
    app.router.add_post("/api/token/", create_token, name="token.create")
    app.router.add_put("/api/token/", update_token, name="token.update")
    app.router.add_get("/api/token/{id}", get_token, name="token.get")
    app.router.add_delete("/api/token/{id}", delete_token, name="token.delete")
    app.router.add_post("/api/token/{id}/key", reveal_key, name="token.key")
    app.router.add_get("/api/log/self", logs, name="log.self")
    app.router.add_get("/api/log/self/stat", log_stat, name="log.stat")
    app.router.add_get("/api/status", status, name="status")
    app.router.add_get("/v1/models", models, name="models")
    add_slash_redirects(app, [("/api/token", "/api/token/"), ("/api/log/self/", "/api/log/self")])


def log_query(request: web.Request, *, default_type: int = 0) -> tuple[int, int, str, str, int]:
    return (
        int_query(request, "start_timestamp"),
        int_query(request, "end_timestamp"),
        request.query.get("token_name", ""),
        request.query.get("model_name", ""),
        int_query(request, "type", default_type),
    )
