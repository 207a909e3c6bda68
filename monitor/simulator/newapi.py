# ruff: noqa: RUF001  (the relay's own messages, with Chinese punctuation)
"""The `newapi` flavour: new-api's console API (docs/relay-adapters.md), one-api's with:

    every /api call needs `New-Api-User: <user id>` (DEFAULT_USER_ID): missing, not numeric or
        not the access token's user -> 401
    GET  /api/token/?p=&page_size=        {"items", "total", "page", "page_size"}: p from 1,
                                          page_size (aliases ps, size) at most 100;
                                          legacy_pages: a plain array, p from 0 (builds before mid-2025)
    GET  /api/log/self?...                the same page shapes; rows add token_id, use_time, group,
                                          ip (when IP logging is on), other (a JSON string), and an
                                          `id` rewritten per page (offset + position)
    POST /api/token/{id}/key              {"key"}; POST /api/token/batch/keys {"ids"} -> {"keys"}
    GET  /api/usage/token/                with `Authorization: Bearer sk-<key>`: the token's usage,
                                          or 401 once the key is refused
    GET  /api/status                      {"quota_per_unit", ...}, no auth

Keys are always masked in lists. A disable takes effect at once (no token cache).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aiohttp import web

from .console import access_token, add_slash_redirects, fail, key_of, ok, valid_access
from .consolecore import ConsoleCore
from .consolelogs import newapi_row
from .hostile import LIE_TOTAL, page_of
from .model import DEFAULT_ADMIN_TOKEN, SimulatedRelay
from .oneapi import int_query, log_query, read_body
from .profiles import MODEL_PRICES
from .wire import json_response

__all__ = ["DEFAULT_ACCESS_TOKEN", "DEFAULT_USER_ID", "MAX_PAGE_SIZE", "NewAPIOptions", "add_newapi_routes"]

DEFAULT_ACCESS_TOKEN = DEFAULT_ADMIN_TOKEN
DEFAULT_USER_ID = 1  # the user the access token belongs to: the New-Api-User header's value
DEFAULT_PAGE_SIZE = 10
MAX_PAGE_SIZE = 100


@dataclass
class NewAPIOptions:
    quota_per_unit: float = 500_000.0
    legacy_pages: bool = False  # plain arrays with p from 0, as builds before mid-2025 answer
    ip_logging: bool = True  # the user turned on IP logging: rows carry the client IP
    user_id: int = DEFAULT_USER_ID


def _page_size(request: web.Request) -> int:
    for name in ("page_size", "ps", "size"):
        size = int_query(request, name)
        if size > 0:
            return min(size, MAX_PAGE_SIZE)
    return DEFAULT_PAGE_SIZE


def add_newapi_routes(app: web.Application, relay: SimulatedRelay, options: NewAPIOptions) -> None:
    core = ConsoleCore(relay, "newapi", options.quota_per_unit)

    def denied(request: web.Request) -> web.Response | None:
        if (answer := valid_access(request, relay)) is not None:
            return answer
        user = request.headers.get("New-Api-User", "").strip()
        if not user:
            return fail("无权进行此操作，未提供 New-Api-User", 401)
        if not user.isdigit():
            return fail("无权进行此操作，New-Api-User 格式错误", 401)
        if int(user) != options.user_id:
            return fail("无权进行此操作，New-Api-User 与登录用户不匹配", 401)
        return None

    def paged(request: web.Request, lie: bool) -> tuple[int, int, int]:
        """(start index, page size, page number as the answer shows it). A lying new-api pages
        one item at a time (and claims LIE_TOTAL of them); a legacy one keeps the size asked."""
        size = 1 if lie and not options.legacy_pages else _page_size(request)
        p = int_query(request, "p")
        if options.legacy_pages:
            p = max(p, 0)
            return p * size, size, p
        p = max(p, 1)
        return (p - 1) * size, size, p

    def answer(items: list[dict[str, Any]], total: int, page: int, size: int) -> web.Response:
        if options.legacy_pages:
            return ok(items)
        return ok({"items": items, "total": total, "page": page, "page_size": size})

    async def list_tokens(request: web.Request) -> web.StreamResponse:
        if (no := denied(request)) is not None:
            return no
        tokens = core.tokens()
        lie = relay.hostile.fires("paging", "token.list") is not None
        start, size, page = paged(request, lie)
        rows = page_of(tokens, start, size, lie=lie)
        items = core.views(rows, relay.now(), masked=True, route="token.list")
        return answer(items, LIE_TOTAL if lie else len(tokens), page, size)

    async def create_token(request: web.Request) -> web.StreamResponse:
        if (no := denied(request)) is not None:
            return no
        body = await read_body(request)
        if body is None:
            return fail("invalid JSON")
        core.quota_per_unit = options.quota_per_unit
        error = core.create(body)
        return fail(error) if error else ok(with_data=False)

    async def update_token(request: web.Request) -> web.StreamResponse:
        if (no := denied(request)) is not None:
            return no
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
        return fail(error) if error else ok(core.view(tok, relay.now(), masked=True))

    async def get_token(request: web.Request) -> web.StreamResponse:
        if (no := denied(request)) is not None:
            return no
        tok = core.find(request.match_info["id"])
        if tok is None:
            return fail("record not found")
        return ok(core.views([tok], relay.now(), masked=True, route="token.get")[0])

    async def delete_token(request: web.Request) -> web.StreamResponse:
        if (no := denied(request)) is not None:
            return no
        tok = core.find(request.match_info["id"])
        if tok is None:
            return fail("record not found")
        core.delete(tok)
        return ok(with_data=False)

    async def reveal_key(request: web.Request) -> web.StreamResponse:
        if (no := denied(request)) is not None:
            return no
        tok = core.find(request.match_info["id"])
        return fail("record not found") if tok is None else ok({"key": core.key(tok)})

    async def reveal_keys(request: web.Request) -> web.StreamResponse:
        if (no := denied(request)) is not None:
            return no
        body = await read_body(request)
        ids = body.get("ids") if body else None
        if not isinstance(ids, list) or not all(isinstance(i, int) for i in ids):
            return fail("ids must be a list of token ids")
        keys = {}
        for number in ids:
            tok = core.find(str(number))
            if tok is not None:
                keys[str(number)] = core.key(tok)
        return ok({"keys": keys})

    async def logs(request: web.Request) -> web.StreamResponse:
        if (no := denied(request)) is not None:
            return no
        rows = core.logs.rows(log_query(request))
        lie = relay.hostile.fires("paging", "log.self") is not None
        start, size, page = paged(request, lie)
        qpu, ip_logging = options.quota_per_unit, options.ip_logging
        items = [
            newapi_row(
                e,
                i,
                qpu,
                display_id=start + k + 1,
                token_number=core.number(e.token_id),
                ip_logging=ip_logging,
            )
            for k, (e, i) in enumerate(page_of(rows, start, size, lie=lie))
        ]
        return answer(items, LIE_TOTAL if lie else len(rows), page, size)

    async def log_stat(request: web.Request) -> web.StreamResponse:
        if (no := denied(request)) is not None:
            return no
        rows = core.logs.rows(log_query(request, default_type=2))
        quota = sum(round(e.cost_usd * options.quota_per_unit) for e, i in rows if i == 0)
        return ok({"quota": quota, "rpm": 0, "tpm": 0})

    async def status(request: web.Request) -> web.StreamResponse:
        return ok({"version": "v0.9.0-sim", "quota_per_unit": options.quota_per_unit, "system_name": "sim"})

    async def token_usage(request: web.Request) -> web.StreamResponse:
        token = access_token(request)
        raw = request.headers.get("Authorization", "")
        if token is None or raw[:7].lower() != "bearer ":
            return fail("Invalid Bearer token", 401)
        key = token.removeprefix("sk-")
        tok = relay.by_key("sk-" + key)
        if tok is None or not core.serves(key):
            return fail("令牌已被禁用或不存在", 401)
        qpu = options.quota_per_unit
        view = core.view(tok, relay.now(), masked=True)
        return json_response(
            {
                "code": True,
                "message": "ok",
                "data": {
                    "object": "token_usage",
                    "name": tok.name,
                    "total_granted": view["remain_quota"] + view["used_quota"],
                    "total_used": view["used_quota"],
                    "total_available": view["remain_quota"],
                    "unlimited_quota": view["unlimited_quota"],
                    "expires_at": max(view["expired_time"], 0),
                    "quota_per_unit": qpu,
                },
            }
        )

    async def models(request: web.Request) -> web.StreamResponse:
        key = key_of(request)
        if key is None or not core.serves(key):
            return json_response({"error": {"message": "无效的令牌", "type": "new_api_error"}}, 401)
        return json_response({"object": "list", "data": [{"id": m, "object": "model"} for m in MODEL_PRICES]})

    app.router.add_get("/api/token/", list_tokens, name="token.list")
    app.router.add_post("/api/token/", create_token, name="token.create")
    app.router.add_put("/api/token/", update_token, name="token.update")
    app.router.add_post("/api/token/batch/keys", reveal_keys, name="token.keys")
    app.router.add_get("/api/token/{id}", get_token, name="token.get")
    app.router.add_delete("/api/token/{id}", delete_token, name="token.delete")
    app.router.add_post("/api/token/{id}/key", reveal_key, name="token.key")
    app.router.add_get("/api/log/self", logs, name="log.self")
    app.router.add_get("/api/log/self/stat", log_stat, name="log.stat")
    app.router.add_get("/api/status", status, name="status")
    app.router.add_get("/api/usage/token/", token_usage, name="usage.token")
    app.router.add_get("/v1/models", models, name="models")
    add_slash_redirects(
        app,
        [
            ("/api/token", "/api/token/"),
            ("/api/log/self/", "/api/log/self"),
            ("/api/usage/token", "/api/usage/token/"),
        ],
    )
