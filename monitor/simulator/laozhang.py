"""The `laozhang` flavour: the token API of Laozhang's token guide (docs/relay-adapters.md).

    GET    /v1/api-keys        admin bearer -> {"data": [Token, ...]}   (never a key)
    POST   /v1/api-keys        admin bearer -> Token + "key", the only time the key is shown
    DELETE /v1/api-keys/{id}   admin bearer -> 200 + Token (status "revoked"), 404 unknown id
    GET    /v1/usage           token's key  -> {"today_usage", "month_usage"}; 401 if refused
    GET    /v1/models          token's key  -> 200 model list while valid; 401 once refused

Auth failures answer 401 with an OpenAI-style error body. Timestamps are ISO-8601 UTC. `Date`
carries the relay's clock."""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from .absurd import absurd_entry
from .model import SimulatedRelay
from .profiles import MODEL_PRICES
from .token import Limits, SimToken
from .wire import bearer, iso, json_response, openai_error, parse_iso

__all__ = ["LaozhangOptions", "add_laozhang_routes", "token_view"]

_BILLING = ("usage_based", "pay_per_use")
_OWNERS = {"gpt": "openai", "o1": "openai", "claude": "anthropic", "gemini": "google", "deepseek": "deepseek"}
_REQUIRED = ("id", "name", "status", "created_at")


@dataclass
class LaozhangOptions:
    # Put today_usage / month_usage / today_requests on each list entry, as some deployments do.
    # Off: the list has only the documented fields and usage needs one /v1/usage call per key.
    usage_in_list: bool = True


def _static_view(tok: SimToken) -> dict[str, Any]:
    lim = tok.limits
    daily = None
    if lim.daily_requests is not None or lim.daily_usd is not None:
        daily = {"requests": lim.daily_requests, "amount": lim.daily_usd}
    return {
        "id": tok.id,
        "name": tok.name,
        "created_at": iso(tok.created_at),
        "expires_at": iso(tok.expires_at),
        "billing_method": tok.billing_method,
        "permissions": list(tok.permissions),
        "limits": {
            "daily_limit": daily,
            "monthly_limit": None if lim.monthly_usd is None else {"amount": lim.monthly_usd},
            "max_tokens_per_request": lim.max_tokens_per_request,
            "allowed_models": list(lim.allowed_models),
        },
        "ip_whitelist": list(tok.ip_whitelist),
    }


class _Views:
    """Token -> wire dict. The static part is cached per token version: a 10,000-token list is
    rebuilt on every poll, and only status, last use and usage change between polls."""

    def __init__(self) -> None:
        self._cache: dict[str, tuple[int, dict[str, Any]]] = {}

    def __call__(self, tok: SimToken, now: float, usage: bool) -> dict[str, Any]:
        hit = self._cache.get(tok.id)
        if hit is None or hit[0] != tok.version:
            hit = (tok.version, _static_view(tok))
            self._cache[tok.id] = hit
        view = dict(hit[1])
        view["status"] = tok.status(now)
        view["last_used_at"] = iso(tok.last_used_at)
        if usage:
            view["today_usage"] = tok.today_usage
            view["month_usage"] = tok.month_usage
            view["today_requests"] = tok.today_requests
        return view


def token_view(tok: SimToken, now: float, *, usage: bool = True) -> dict[str, Any]:
    """One Token as the laozhang API shows it (without the key)."""
    return _Views()(tok, now, usage)


def _unauthorized(message: str = "Incorrect API key provided") -> web.Response:
    return openai_error(401, message, "invalid_request_error", "invalid_api_key")


def _bad_request(message: str, param: str | None = None) -> web.Response:
    return openai_error(400, message, "invalid_request_error", "invalid_request", param)


def _parse_limits(raw: object) -> Limits:
    if raw is None:
        return Limits()
    if not isinstance(raw, dict):
        raise ValueError("limits must be an object")
    daily = raw.get("daily_limit") or {}
    monthly = raw.get("monthly_limit") or {}
    if not isinstance(daily, dict) or not isinstance(monthly, dict):
        raise ValueError("daily_limit and monthly_limit must be objects")

    def num(value: object, kind: type[int] | type[float]) -> Any:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise ValueError("limits must be non-negative numbers")
        return kind(value)

    models = raw.get("allowed_models") or []
    if not isinstance(models, list) or not all(isinstance(m, str) for m in models):
        raise ValueError("allowed_models must be a list of strings")
    return Limits(
        daily_requests=num(daily.get("requests"), int),
        daily_usd=num(daily.get("amount"), float),
        monthly_usd=num(monthly.get("amount"), float),
        max_tokens_per_request=num(raw.get("max_tokens_per_request"), int),
        allowed_models=tuple(models),
    )


def _str_list(raw: object, what: str, default: tuple[str, ...] = ()) -> tuple[str, ...]:
    if raw is None:
        return default
    if not isinstance(raw, list) or not all(isinstance(x, str) for x in raw):
        raise ValueError(f"{what} must be a list of strings")
    return tuple(raw)


def add_laozhang_routes(app: web.Application, relay: SimulatedRelay, options: LaozhangOptions) -> None:
    views = _Views()
    admin = relay.admin_token.encode()

    def is_admin(request: web.Request) -> bool:
        token = bearer(request)
        return token is not None and hmac.compare_digest(token.encode(), admin)

    def key_holder(request: web.Request) -> SimToken | None:
        """The token whose key authenticates this request, if the relay still accepts it."""
        key = bearer(request)
        tok = relay.by_key(key) if key else None
        return tok if tok is not None and tok.accepts_key(relay.now()) else None

    async def list_keys(request: web.Request) -> web.StreamResponse:
        if not is_admin(request):
            return _unauthorized()
        tokens = relay.list_tokens()
        now = relay.now()
        usage = options.usage_in_list
        faults = relay.faults
        corrupt = faults.malformed_token_rate > 0 and faults.applies_to("list")
        absurd = relay.hostile.fires("absurd", "list")
        data = []
        for tok in tokens:
            view = views(tok, now, usage)
            if corrupt and (kind := faults.corrupt_entry()) is not None:
                if kind == "missing":
                    del view[faults.pick(_REQUIRED)]
                else:
                    view["today_usage"] = -round(abs(tok.today_usage) + 1.0, 6)
                    view["month_usage"] = -round(abs(tok.month_usage) + 1.0, 6)
            if absurd is not None:
                absurd_entry(view, relay.hostile.absurd_kind(absurd, tok.id), tok.expires_at, now)
            data.append(view)
        return json_response({"data": data})

    async def create_key(request: web.Request) -> web.StreamResponse:
        if not is_admin(request):
            return _unauthorized()
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return _bad_request("request body is not valid JSON")
        if not isinstance(body, dict):
            return _bad_request("request body must be a JSON object")
        name = body.get("name")
        if not isinstance(name, str) or not name.strip():
            return _bad_request("name is required", "name")
        billing = body.get("billing_method", "usage_based")
        if billing not in _BILLING:
            return _bad_request(f"billing_method must be one of {', '.join(_BILLING)}", "billing_method")
        try:
            expires_at = parse_iso(body.get("expires_at"))
            permissions = _str_list(body.get("permissions"), "permissions", ("chat", "completion"))
            whitelist = _str_list(body.get("ip_whitelist"), "ip_whitelist")
            limits = _parse_limits(body.get("limits"))
        except ValueError as exc:
            return _bad_request(str(exc))
        if expires_at is not None and expires_at <= relay.now():
            return _bad_request("expires_at must be in the future", "expires_at")
        tok, key = relay.create_token(
            name.strip(),
            billing_method=billing,
            permissions=permissions,
            expires_at=expires_at,
            limits=limits,
            ip_whitelist=whitelist,
        )
        view = views(tok, relay.now(), options.usage_in_list)
        view["key"] = key
        return json_response(view)

    async def delete_key(request: web.Request) -> web.StreamResponse:
        if not is_admin(request):
            return _unauthorized()
        tok = relay.get(request.match_info["id"])
        if tok is None:
            return openai_error(404, "API key not found", "invalid_request_error", "not_found", "id")
        relay.revoke_token(tok.id)
        return json_response(views(tok, relay.now(), options.usage_in_list))

    async def usage(request: web.Request) -> web.StreamResponse:
        tok = key_holder(request)
        if tok is None:
            return _unauthorized()
        return json_response({"today_usage": tok.today_usage, "month_usage": tok.month_usage})

    async def models(request: web.Request) -> web.StreamResponse:
        tok = key_holder(request)
        if tok is None:
            return _unauthorized()
        names = tok.limits.allowed_models or tuple(MODEL_PRICES)
        data = [
            {
                "id": m,
                "object": "model",
                "created": 1_700_000_000,
                "owned_by": _OWNERS.get(m.split("-")[0], "system"),
            }
            for m in names
        ]
        return json_response({"object": "list", "data": data})

    app.router.add_get("/v1/api-keys", list_keys, name="list")
    app.router.add_post("/v1/api-keys", create_key, name="create")
    app.router.add_delete("/v1/api-keys/{id}", delete_key, name="delete")
    app.router.add_get("/v1/usage", usage, name="usage")
    app.router.add_get("/v1/models", models, name="models")
