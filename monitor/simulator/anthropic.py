"""The `anthropic` flavour: the Admin API keywatch reads (docs/relay-adapters.md).

    GET  /v1/organizations/api_keys?limit=&after_id=&before_id=&status=&workspace_id=
             newest first, {"data", "has_more", "first_id", "last_id"}; limit 1..1000 (20)
    GET  /v1/organizations/api_keys/{api_key_id}
    POST /v1/organizations/api_keys/{api_key_id}   {"name"?, "status"?: active|inactive|archived}
    GET  /v1/organizations/usage_report/messages?starting_at=&ending_at=&bucket_width=1m|1h|1d
             &group_by[]=api_key_id|model|service_tier|workspace_id&api_key_ids[]=&models[]=
             &limit=&page=   `limit` counts buckets (1m 60/1440, 1h 24/168, 1d 7/31)
    GET  /v1/organizations/cost_report?starting_at=&ending_at=&group_by[]=description|workspace_id
             daily buckets only (limit 7/31); `amount` a decimal string in cents
    GET  /v1/models                                 with a key's own x-api-key

Admin auth: `x-api-key: <admin key>` plus `anthropic-version` (without it: 400). Errors are
`{"type": "error", "error": {"type", "message"}, "request_id"}`. The quirks reproduced: keys
carry only `partial_key_hint`, RFC 3339 times with microseconds, `workspace_id` null for the
default workspace (`scope` names it); an event shows in the reports `report_delay` seconds after
it happened (every `late_every`-th one twice as late); usage has no money and no request count;
keys of batch-archetype tokens run on the `batch` service tier; Console usage (no API key) shows
once an hour; the cost report bills list prices times `bill_factor`. Sim token ids are the
relay's (`key_123456`); the real ones look like `apikey_01Rj2N8SVvo6BePZj99NhmiT`.
"""

from __future__ import annotations

import base64
import hmac
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web

from monitor.providers.anthropic_pricing import WEB_SEARCH_USD, TokenCounts, price_of

from .eventindex import EventIndex
from .hostile import page_of
from .model import SimulatedRelay
from .profiles import Archetype
from .token import SimToken
from .wire import json_response, parse_iso

__all__ = ["DEFAULT_WORKSPACE_ID", "MODELS", "AnthropicOptions", "add_anthropic_routes", "split_cost"]

DEFAULT_WORKSPACE_ID = "wrkspc_01SimDefault"
_WORKSPACES = (None, "wrkspc_01SimProduction", "wrkspc_01SimStaging")  # None: the default one
_CREATOR = {"id": "user_01SimAdmin", "type": "user"}
WIDTHS = {"1m": 60, "1h": 3600, "1d": 86_400}
_LIMITS = {"1m": (60, 1440), "1h": (24, 168), "1d": (7, 31)}
_GROUPS = ("api_key_id", "workspace_id", "model", "service_tier", "context_window", "inference_geo")
_WRITABLE = ("active", "inactive", "archived")
# The simulated relay books traffic on generic models; the report names Claude models.
MODELS = {
    "gpt-4o-mini": "claude-haiku-4-5-20251001",
    "gpt-4o": "claude-sonnet-4-5-20250929",
    "claude-3-5-haiku": "claude-3-5-haiku-20241022",
    "claude-3-5-sonnet": "claude-sonnet-4-20250514",
    "gemini-2.0-flash": "claude-3-haiku-20240307",
    "deepseek-chat": "claude-haiku-4-5-20251001",
    "o1": "claude-opus-4-1-20250805",
}
_DEFAULT_MODEL = "claude-sonnet-4-5-20250929"
_BASKET = TokenCounts(4, 1, 1, 8, 2)  # the token mix one unit of spend buys
_CONSOLE = ("claude-sonnet-4-5-20250929", 0.05, 3)  # Workbench use each hour: model, USD, requests
_TOKEN_TYPES = (
    ("uncached_input_tokens", "Input Tokens"),
    ("cache_creation.ephemeral_5m_input_tokens", "Input Tokens (5m cache write)"),
    ("cache_creation.ephemeral_1h_input_tokens", "Input Tokens (1h cache write)"),
    ("cache_read_input_tokens", "Input Tokens (cache read)"),
    ("output_tokens", "Output Tokens"),
)

Cell = tuple[int, str | None, str, str]  # (minute, key id or None, model, service tier)


@dataclass
class AnthropicOptions:
    report_delay: float = 240.0  # seconds before booked usage shows in the reports
    late_every: int = 10  # every n-th event shows only after twice the delay (0: none)
    bill_factor: float = 1.0  # the cost report bills list prices times this
    console_usage: bool = True  # an hourly Workbench row without an API key


def split_cost(cost: float, requests: int, model: str, tier: str) -> TokenCounts:
    """Token counts (and web searches) that cost `cost` at the adapter's list prices."""
    searches = min(requests // 10, int(cost * 0.5 / WEB_SEARCH_USD))
    rest = max(cost - searches * WEB_SEARCH_USD, 0.0)
    per_unit = _BASKET.tokens_usd(price_of(model), batch=tier == "batch")
    u = rest / per_unit if per_unit > 0 else 0.0
    b = _BASKET
    return TokenCounts(
        round(b.uncached_input * u),
        round(b.cache_write_5m * u),
        round(b.cache_write_1h * u),
        round(b.cache_read * u),
        round(b.output * u),
        searches,
    )


def _time(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _workspace(key_id: str) -> str | None:
    return _WORKSPACES[zlib.crc32(key_id.encode()) % len(_WORKSPACES)]


def _status(tok: SimToken, now: float) -> str:
    return {"revoked": "archived", "disabled": "inactive", "expired": "expired"}.get(
        tok.status(now), "active"
    )


def error(status: int, kind: str, message: str) -> web.Response:
    return json_response(
        {"type": "error", "error": {"type": kind, "message": message}, "request_id": "req_sim"}, status
    )


def _bad(message: str) -> web.Response:
    return error(400, "invalid_request_error", message)


def _page_token(ts: int) -> str:
    return "page_" + base64.b64encode(_iso(ts).encode()).decode()


def _from_page(page: str) -> int:
    if not page.startswith("page_"):
        raise ValueError("invalid page token")
    value = parse_iso(base64.b64decode(page[5:].encode(), validate=True).decode())
    assert value is not None
    return int(value)


def _result(counts: TokenCounts, group: dict[str, Any]) -> dict[str, Any]:
    return {
        "uncached_input_tokens": counts.uncached_input,
        "cache_creation": {
            "ephemeral_1h_input_tokens": counts.cache_write_1h,
            "ephemeral_5m_input_tokens": counts.cache_write_5m,
        },
        "cache_read_input_tokens": counts.cache_read,
        "output_tokens": counts.output,
        "server_tool_use": {"web_search_requests": counts.web_searches},
        **group,
    }


def _add(a: TokenCounts, b: TokenCounts) -> TokenCounts:
    return TokenCounts(
        a.uncached_input + b.uncached_input,
        a.cache_write_5m + b.cache_write_5m,
        a.cache_write_1h + b.cache_write_1h,
        a.cache_read + b.cache_read,
        a.output + b.output,
        a.web_searches + b.web_searches,
    )


_ABSURD: dict[str, Any] = {
    "huge": 10**19,
    "negative": -(2**63),
    "nan": "NaN",
    "overflow": orjson.Fragment(b"1e400"),
}
_ABSURD_TIME: dict[str, Any] = {
    "huge": 1e308,
    "negative": -1e308,
    "nan": "NaN",
    "overflow": orjson.Fragment(b"1e400"),
}


def add_anthropic_routes(app: web.Application, relay: SimulatedRelay, options: AnthropicOptions) -> None:
    index = EventIndex(relay)
    admin = relay.admin_token.encode()
    tiers: dict[str, str] = {}  # key id -> service tier, remembered past a deletion

    def refused(request: web.Request) -> web.Response | None:
        key = request.headers.get("x-api-key", "")
        if not key or not hmac.compare_digest(key.encode(), admin):
            return error(401, "authentication_error", "invalid x-api-key")
        if not request.headers.get("anthropic-version"):
            return _bad("anthropic-version: header is required")
        return None

    def tier_of(key_id: str) -> str:
        if key_id not in tiers:
            tok = relay.get(key_id)
            tiers[key_id] = "batch" if tok is not None and tok.archetype is Archetype.BATCH else "standard"
        return tiers[key_id]

    def key_object(tok: SimToken, route: str) -> dict[str, Any]:
        now = relay.now()
        ws = _workspace(tok.id)
        obj: dict[str, Any] = {
            "type": "api_key",
            "id": tok.id,
            "created_at": _time(tok.created_at),
            "created_by": _CREATOR,
            "expires_at": _time(tok.expires_at),
            "name": tok.name,
            "partial_key_hint": f"{tok.key[:16]}...{tok.key[-4:]}",
            "status": _status(tok, now),
            "workspace_id": ws,
            "scope": {"type": "workspace", "workspace_id": ws or DEFAULT_WORKSPACE_ID},
        }
        if (mode := relay.hostile.fires("absurd", route)) is not None:
            kind = relay.hostile.absurd_kind(mode, tok.id)
            if kind == "epoch_ms":
                obj["expires_at"] = round((tok.expires_at or now + 30 * 86_400) * 1000)
            elif kind is not None:
                obj["expires_at"] = _ABSURD_TIME[kind]
        return obj

    # --- keys ----------------------------------------------------------------------------------
    async def list_keys(request: web.Request) -> web.StreamResponse:
        if (no := refused(request)) is not None:
            return no
        q = request.query
        try:
            limit = int(q.get("limit", "20"))
        except ValueError:
            return _bad("limit: Input should be a valid integer")
        if not 1 <= limit <= 1000:
            return _bad("limit: Input should be between 1 and 1000")
        if q.get("status") not in (None, "active", "inactive", "archived", "expired"):
            return _bad("status: Input should be 'active', 'inactive', 'archived' or 'expired'")
        now = relay.now()
        keys = [
            t
            for t in reversed(index.listed())
            if (q.get("status") in (None, _status(t, now)))
            and (q.get("workspace_id") in (None, _workspace(t.id) or DEFAULT_WORKSPACE_ID))
            and q.get("created_by_user_id") in (None, _CREATOR["id"])
        ]
        ids = [t.id for t in keys]
        for cursor in ("after_id", "before_id"):
            if cursor in q and q[cursor] not in ids:
                return _bad(f"{cursor}: no such object")
        lie = relay.hostile.fires("paging", "keys.list") is not None
        if "before_id" in q:
            end = ids.index(q["before_id"])
            page, more = keys[max(end - limit, 0) : end], end > limit
        else:
            start = ids.index(q["after_id"]) + 1 if "after_id" in q else 0
            page = page_of(keys, start, limit, lie=lie)
            more = lie or len(keys) > start + limit
        faults = relay.faults
        corrupt = faults.malformed_token_rate > 0 and faults.applies_to("keys.list")
        data = []
        for t in page:
            obj = key_object(t, "keys.list")
            if corrupt and (kind := faults.corrupt_entry()) is not None:
                if kind == "missing":
                    del obj[faults.pick(("name", "status"))]
                else:
                    obj["expires_at"] = -1  # before 1970
            data.append(obj)
        return json_response(
            {
                "data": data,
                "has_more": more and bool(page),
                "first_id": page[0].id if page else None,
                "last_id": page[-1].id if page else None,
            }
        )

    def find(request: web.Request) -> SimToken | web.Response:
        index.sync()
        tok = relay.get(request.match_info["api_key_id"])
        if tok is None:
            return error(404, "not_found_error", "API key not found")
        return tok

    async def get_key(request: web.Request) -> web.StreamResponse:
        if (no := refused(request)) is not None:
            return no
        tok = find(request)
        return tok if isinstance(tok, web.Response) else json_response(key_object(tok, "keys.get"))

    async def update_key(request: web.Request) -> web.StreamResponse:
        if (no := refused(request)) is not None:
            return no
        tok = find(request)
        if isinstance(tok, web.Response):
            return tok
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return _bad("the body is not valid JSON")
        if not isinstance(body, dict):
            return _bad("the body must be an object")
        name, status = body.get("name"), body.get("status")
        if name is not None and (not isinstance(name, str) or not 1 <= len(name) <= 500):
            return _bad("name: String should have between 1 and 500 characters")
        if status is not None and status not in _WRITABLE:
            return _bad("status: Input should be 'active', 'inactive' or 'archived'")
        if status is not None and _status(tok, relay.now()) == "archived" and status != "archived":
            return _bad("an archived API key cannot be changed")  # the simulator's assumption
        if name is not None:
            relay.rename_token(tok.id, name)
        if status == "inactive":
            relay.disable_token(tok.id)
        elif status == "active":
            relay.enable_token(tok.id)
        elif status == "archived":
            relay.revoke_token(tok.id)
        return json_response(key_object(tok, "keys.get"))

    async def models(request: web.Request) -> web.StreamResponse:
        tok = relay.by_key(request.headers.get("x-api-key", ""))
        if tok is None or not tok.accepts_key(relay.now()):
            return error(401, "authentication_error", "invalid x-api-key")
        data = [{"type": "model", "id": m, "display_name": m, "created_at": "2025-09-29T00:00:00Z"}
                for m in sorted(set(MODELS.values()))]  # fmt: skip
        return json_response(
            {"data": data, "has_more": False, "first_id": data[0]["id"], "last_id": data[-1]["id"]}
        )

    # --- reports -------------------------------------------------------------------------------
    def cells(start: int, end: int) -> dict[Cell, TokenCounts]:
        """Booked usage the reports show by now, per minute, key, model and tier."""
        now = relay.now()
        acc: dict[Cell, list[float]] = {}
        for e in index.between(start, end, until_inclusive=False):
            late = options.late_every > 0 and e.seq % options.late_every == 0
            if e.ts + options.report_delay * (2 if late else 1) > now:
                continue
            cell = (
                int(e.ts // 60 * 60),
                e.token_id,
                MODELS.get(e.model, _DEFAULT_MODEL),
                tier_of(e.token_id),
            )
            got = acc.setdefault(cell, [0.0, 0])
            got[0] += e.cost_usd
            got[1] += e.requests
        if options.console_usage:
            model, usd, n = _CONSOLE
            for hour in range(-(-start // 3600) * 3600, end, 3600):
                if hour + options.report_delay <= now:
                    acc[(hour, None, model, "standard")] = [usd, n]
        return {c: split_cost(cost, int(n), c[2], c[3]) for c, (cost, n) in acc.items()}

    def window(request: web.Request, width: str) -> tuple[int, int, int] | web.Response:
        q = request.query
        if "starting_at" not in q:
            return _bad("starting_at: Field required")
        try:
            start = parse_iso(q["starting_at"])
            end = parse_iso(q["ending_at"]) if "ending_at" in q else relay.now()
            limit = int(q.get("limit", _LIMITS[width][0]))
            page = _from_page(q["page"]) if "page" in q else None
        except (ValueError, UnicodeDecodeError):
            return _bad("invalid starting_at, ending_at, limit or page")
        assert start is not None and end is not None
        if not 1 <= limit <= _LIMITS[width][1]:
            return _bad(f"limit: must be between 1 and {_LIMITS[width][1]} for bucket_width {width}")
        w = WIDTHS[width]
        first = page if page is not None else int(start // w * w)
        return first, int(end), limit

    def buckets(first: int, end: int, w: int, limit: int, route: str) -> tuple[list[int], bool]:
        starts: list[int] = []
        b = first
        while b + w <= end and len(starts) <= limit:
            starts.append(b)
            b += w
        more = len(starts) > limit
        if relay.hostile.fires("paging", route) is not None:
            return starts[:limit] or [first], True  # pages that never end
        return starts[:limit], more

    def page_body(data: list[dict[str, Any]], starts: list[int], more: bool, w: int) -> web.Response:
        nxt = _page_token(starts[-1] + w) if more and starts else None
        return json_response({"data": data, "has_more": more, "next_page": nxt})

    async def usage(request: web.Request) -> web.StreamResponse:
        if (no := refused(request)) is not None:
            return no
        width = request.query.get("bucket_width", "1d")
        if width not in WIDTHS:
            return _bad("bucket_width: Input should be '1d', '1h' or '1m'")
        group_by = set(request.query.getall("group_by[]", []))
        if not group_by <= {*_GROUPS, "account_id", "service_account_id", "speed"}:
            return _bad("group_by: invalid value")
        got = window(request, width)
        if isinstance(got, web.Response):
            return got
        first, end, limit = got
        w = WIDTHS[width]
        starts, more = buckets(first, end, w, limit, "usage.messages")
        keys = set(request.query.getall("api_key_ids[]", []))
        models_ = set(request.query.getall("models[]", []))
        absurd = relay.hostile.fires("absurd", "usage.messages")
        by_bucket: dict[int, list[tuple[Cell, TokenCounts]]] = {}
        for cell, counts in (cells(starts[0], starts[-1] + w) if starts else {}).items():
            by_bucket.setdefault(cell[0] // w * w, []).append((cell, counts))
        data = []
        for b in starts:
            groups: dict[tuple[Any, ...], TokenCounts] = {}
            for (_, key, model, tier), counts in by_bucket.get(b, []):
                if (keys and key not in keys) or (models_ and model not in models_):
                    continue
                values = {
                    "api_key_id": key,
                    "workspace_id": key and _workspace(key),
                    "model": model,
                    "service_tier": tier,
                }
                group = tuple(values.get(g) if g in group_by else None for g in _GROUPS)
                groups[group] = _add(groups.get(group, TokenCounts()), counts)
            results = [_result(c, dict(zip(_GROUPS, g, strict=True))) for g, c in groups.items()]
            if absurd is not None:
                for r in results:
                    kind = r["api_key_id"] and relay.hostile.absurd_kind(absurd, r["api_key_id"])
                    if kind in _ABSURD:
                        r["output_tokens"] = _ABSURD[kind]
            data.append({"starting_at": _iso(b), "ending_at": _iso(b + w), "results": results})
        return page_body(data, starts, more, w)

    async def cost(request: web.Request) -> web.StreamResponse:
        if (no := refused(request)) is not None:
            return no
        if request.query.get("bucket_width", "1d") != "1d":
            return _bad("bucket_width: Input should be '1d'")
        group_by = set(request.query.getall("group_by[]", []))
        if not group_by <= {"workspace_id", "description"}:
            return _bad("group_by: Input should be 'workspace_id' or 'description'")
        got = window(request, "1d")
        if isinstance(got, web.Response):
            return got
        first, end, limit = got
        w = WIDTHS["1d"]
        starts, more = buckets(first, end, w, limit, "cost")
        described = "description" in group_by
        data = []
        for b in starts:
            rows: dict[tuple[Any, ...], float] = {}
            for (_, key, model, tier), counts in cells(b, b + w).items():
                ws = (key and _workspace(key)) if "workspace_id" in group_by else None
                price, batch = price_of(model), tier == "batch"
                for (token_type, label), name in zip(_TOKEN_TYPES, _FIELDS, strict=True):
                    usd = _one(counts, name).tokens_usd(price, batch=batch) * options.bill_factor
                    full: tuple[Any, ...] = (
                        ws,
                        "tokens",
                        model,
                        tier,
                        token_type,
                        f"{model} Usage - {label}",
                    )
                    _bill(rows, full if described else (ws,), usd)
                full = (ws, "web_search", None, None, None, "Web Search")
                _bill(rows, full if described else (ws,), counts.searches_usd)
            results = [_cost_row(key, cents) for key, cents in rows.items() if cents > 0]
            data.append({"starting_at": _iso(b), "ending_at": _iso(b + w), "results": results})
        return page_body(data, starts, more, w)

    keys_path = "/v1/organizations/api_keys"
    app.router.add_get(keys_path, list_keys, name="keys.list")
    app.router.add_get(keys_path + "/{api_key_id}", get_key, name="keys.get")
    app.router.add_post(keys_path + "/{api_key_id}", update_key, name="keys.update")
    app.router.add_get("/v1/organizations/usage_report/messages", usage, name="usage.messages")
    app.router.add_get("/v1/organizations/cost_report", cost, name="cost")
    app.router.add_get("/v1/models", models, name="models")


_FIELDS = ("uncached_input", "cache_write_5m", "cache_write_1h", "cache_read", "output")


def _one(counts: TokenCounts, name: str) -> TokenCounts:
    return TokenCounts(**{name: getattr(counts, name)})


def _bill(rows: dict[tuple[Any, ...], float], key: tuple[Any, ...], usd: float) -> None:
    rows[key] = rows.get(key, 0.0) + usd * 100  # cents


def _cost_row(key: tuple[Any, ...], cents: float) -> dict[str, Any]:
    ws, cost_type, model, tier, token_type, description = (*key, None, None, None, None, None)[:6]
    return {
        "currency": "USD",
        "amount": f"{cents:.6f}",
        "workspace_id": ws,
        "description": description,
        "cost_type": cost_type,
        "context_window": "0-200k" if cost_type == "tokens" else None,
        "model": model,
        "service_tier": tier,
        "token_type": token_type,
        "inference_geo": None,
    }
