"""The `openai` flavour: the OpenAI Admin API keywatch reads (docs/relay-adapters.md).

    GET    /v1/organization/projects/{project_id}/api_keys?after=&limit=   creation order,
               {"object": "list", "data", "first_id", "last_id", "has_more"}; limit 1..100 (20)
    GET    /v1/organization/projects/{project_id}/api_keys/{key_id}
    DELETE /v1/organization/projects/{project_id}/api_keys/{key_id}         deleted for good
    GET    /v1/organization/usage/completions?start_time=&end_time=&bucket_width=1m|1h|1d
               &group_by=...&api_key_ids=&models=&project_ids=&limit=&page=
               `limit` counts buckets (1m 60/1440, 1h 24/168, 1d 7/31); has_more + next_page
    GET    /v1/organization/costs?start_time=&end_time=&bucket_width=1d&group_by=&limit=&page=
    GET    /v1/models                                                       with a project key

Admin auth: `Authorization: Bearer <admin key>` (DEFAULT_ADMIN_KEY); errors are
`{"error": {"message", "type", "param", "code"}}`. Every key lives in one project,
DEFAULT_PROJECT_ID. `Date` carries the relay's clock."""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from aiohttp import web

from .eventindex import EventIndex
from .model import DEFAULT_ADMIN_TOKEN, SimulatedRelay
from .openaiusage import BUCKET_LIMITS, GROUP_FIELDS, WIDTHS, BucketPage, cost_buckets, usage_buckets
from .profiles import MODEL_PRICES
from .token import SimToken
from .wire import bearer, json_response, openai_error

__all__ = ["DEFAULT_ADMIN_KEY", "DEFAULT_PROJECT_ID", "OpenAIOptions", "add_openai_routes", "key_object"]

DEFAULT_ADMIN_KEY = DEFAULT_ADMIN_TOKEN  # the admin key the simulator accepts
DEFAULT_PROJECT_ID = "proj_sim"
_COST_LIMITS = (7, 180)


@dataclass
class OpenAIOptions:
    project_id: str = DEFAULT_PROJECT_ID


def key_object(tok: SimToken) -> dict[str, object]:
    return {
        "object": "organization.project.api_key",
        "redacted_value": f"sk-...{tok.key[-4:]}",
        "name": tok.name,
        "created_at": int(tok.created_at),
        "last_used_at": None if tok.last_used_at is None else int(tok.last_used_at),
        "id": tok.id,
        "owner": {
            "type": "service_account",
            "service_account": {"id": "svc_sim", "name": "sim", "role": "member"},
        },
    }


def _bad(message: str, param: str | None = None) -> web.Response:
    return openai_error(400, message, "invalid_request_error", None, param)


def _int(request: web.Request, name: str, default: int | None = None) -> int | None:
    """ValueError (the caller answers 400) when the value is not an integer."""
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{name} must be an integer") from None


def _page_body(page: BucketPage) -> dict[str, object]:
    return {"object": "page", "data": page.data, "has_more": page.has_more, "next_page": page.next_page}


def add_openai_routes(app: web.Application, relay: SimulatedRelay, options: OpenAIOptions) -> None:
    index = EventIndex(relay)
    admin = relay.admin_token.encode()

    def refused(request: web.Request) -> web.Response | None:
        token = bearer(request)
        if token is None or not hmac.compare_digest(token.encode(), admin):
            return openai_error(
                401, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key"
            )
        return None

    def project_missing(request: web.Request) -> web.Response | None:
        if request.match_info["project_id"] != options.project_id:
            return openai_error(404, "No such project.", "invalid_request_error", "not_found", "project_id")
        return None

    async def list_keys(request: web.Request) -> web.StreamResponse:
        if (no := refused(request) or project_missing(request)) is not None:
            return no
        try:
            limit = _int(request, "limit", 20) or 20
        except ValueError as exc:
            return _bad(str(exc), "limit")
        if not 1 <= limit <= 100:
            return _bad("limit must be between 1 and 100", "limit")
        keys = index.listed()
        after = request.query.get("after")
        if after:
            ids = [t.id for t in keys]
            if after not in ids:
                return _bad(f"No such key: {after}", "after")
            keys = keys[ids.index(after) + 1 :]
        page = keys[:limit]
        data = [key_object(t) for t in page]
        return json_response(
            {
                "object": "list",
                "data": data,
                "first_id": page[0].id if page else None,
                "last_id": page[-1].id if page else None,
                "has_more": len(keys) > limit,
            }
        )

    def key_in_project(request: web.Request) -> SimToken | None:
        return relay.get(request.match_info["key_id"])

    async def get_key(request: web.Request) -> web.StreamResponse:
        if (no := refused(request) or project_missing(request)) is not None:
            return no
        tok = key_in_project(request)
        if tok is None:
            return openai_error(404, "No such API key.", "invalid_request_error", "not_found", "key_id")
        return json_response(key_object(tok))

    async def delete_key(request: web.Request) -> web.StreamResponse:
        if (no := refused(request) or project_missing(request)) is not None:
            return no
        tok = key_in_project(request)
        if tok is None:
            return openai_error(404, "No such API key.", "invalid_request_error", "not_found", "key_id")
        relay.delete_token(tok.id)
        return json_response(
            {"object": "organization.project.api_key.deleted", "id": tok.id, "deleted": True}
        )

    def window(
        request: web.Request, width: str, limits: tuple[int, int]
    ) -> tuple[int, int, int] | web.Response:
        try:
            start = _int(request, "start_time")
            end = _int(request, "end_time") or int(relay.now())
            limit = _int(request, "limit") or limits[0]
        except ValueError as exc:
            return _bad(str(exc))
        if start is None:
            return _bad("start_time is required", "start_time")
        if not 1 <= limit <= limits[1]:
            return _bad(f"limit must be between 1 and {limits[1]} for bucket_width {width}", "limit")
        if end <= start:
            return _bad("end_time must be after start_time", "end_time")
        return start, end, limit

    async def usage(request: web.Request) -> web.StreamResponse:
        if (no := refused(request)) is not None:
            return no
        width = request.query.get("bucket_width", "1d")
        if width not in WIDTHS:
            return _bad("bucket_width must be one of 1m, 1h, 1d", "bucket_width")
        got = window(request, width, BUCKET_LIMITS[width])
        if isinstance(got, web.Response):
            return got
        start, end, limit = got
        group_by = request.query.getall("group_by", [])
        if any(g not in GROUP_FIELDS for g in group_by):
            return _bad("invalid group_by", "group_by")
        projects = request.query.getall("project_ids", [])
        if projects and options.project_id not in projects:
            return json_response({"object": "page", "data": [], "has_more": False, "next_page": None})
        try:
            page = usage_buckets(
                index,
                project_id=options.project_id,
                start=start,
                end=end,
                width=width,
                limit=limit,
                page=request.query.get("page"),
                group_by=set(group_by),
                api_key_ids=set(request.query.getall("api_key_ids", [])),
                models=set(request.query.getall("models", [])),
            )
        except ValueError as exc:
            return _bad(str(exc), "page")
        return json_response(_page_body(page))

    async def costs(request: web.Request) -> web.StreamResponse:
        if (no := refused(request)) is not None:
            return no
        if request.query.get("bucket_width", "1d") != "1d":
            return _bad("costs support bucket_width 1d only", "bucket_width")
        got = window(request, "1d", _COST_LIMITS)
        if isinstance(got, web.Response):
            return got
        start, end, limit = got
        projects = request.query.getall("project_ids", [])
        if projects and options.project_id not in projects:
            return json_response({"object": "page", "data": [], "has_more": False, "next_page": None})
        try:
            page = cost_buckets(
                index,
                project_id=options.project_id,
                start=start,
                end=end,
                limit=limit,
                page=request.query.get("page"),
                group_by=set(request.query.getall("group_by", [])),
            )
        except ValueError as exc:
            return _bad(str(exc), "page")
        return json_response(_page_body(page))

    async def models(request: web.Request) -> web.StreamResponse:
        key = bearer(request)
        tok = relay.by_key(key) if key else None
        if tok is None or not tok.accepts_key(relay.now()):
            return openai_error(
                401, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key"
            )
        data = [
            {"id": m, "object": "model", "created": 1_700_000_000, "owned_by": "sim"} for m in MODEL_PRICES
        ]
        return json_response({"object": "list", "data": data})

    keys = "/v1/organization/projects/{project_id}/api_keys"
    app.router.add_get(keys, list_keys, name="keys.list")
    app.router.add_get(keys + "/{key_id}", get_key, name="keys.get")
    app.router.add_delete(keys + "/{key_id}", delete_key, name="keys.delete")
    app.router.add_get("/v1/organization/usage/completions", usage, name="usage.completions")
    app.router.add_get("/v1/organization/costs", costs, name="costs")
    app.router.add_get("/v1/models", models, name="models")
