"""The `openrouter` flavour: OpenRouter's key management API (docs/relay-adapters.md).

    GET    /api/v1/keys?offset=&include_disabled=&workspace_id=   newest first, `page_size` (100)
               a page, {"data": [key, ...]}: no total, no "more" flag; disabled keys only with
               include_disabled=true; offset an integer >= 0
    POST   /api/v1/keys              {"name", "limit"?, "limit_reset"?, "expires_at"?} -> 201
               {"data": key, "key": <the key, shown once>}
    GET    /api/v1/keys/{hash}       {"data": key}, disabled keys too; 404 once deleted
    PATCH  /api/v1/keys/{hash}       {"name"?, "disabled"?, "limit"?, "limit_reset"?,
               "include_byok_in_limit"?} -> {"data": key}
    DELETE /api/v1/keys/{hash}       {"deleted": true}
    GET    /api/v1/key               the calling key's own figures (Bearer <key>); 401 once the
               key is disabled, expired or deleted

Management auth: `Authorization: Bearer <management key>` (the relay's admin token); none is
401 "No auth credentials found", a wrong one 401 "User not found.", an inference key 403. Errors
are `{"error": {"code", "message"}}` with the same HTTP status.

A key: `hash` (64 hex digits, not the SHA-256 of the key), `name`, `label` (the key's first and
last characters), `disabled`, `limit` / `limit_remaining` (USD, null without a limit) /
`limit_reset` (daily | weekly | monthly | null), `usage` (lifetime USD: the ledger's truth),
`usage_daily` / `usage_weekly` / `usage_monthly` (the current UTC day, Monday-started week and
month), `byok_usage*` (0: the simulator has no BYOK), `created_at` (ISO 8601 with microseconds
and +00:00, as OpenRouter's own examples), `updated_at` (null until the key is changed),
`expires_at` (ISO 8601 Z or null), `creator_user_id`, `workspace_id`.

OpenRouter's windows reset at midnight UTC, so the relay must keep UTC (make_relay's default).
`usage_weekly` is summed from the booked events of the week, so it is exact only while the
event log (a ring buffer) still holds the whole week. A sim token's daily limit becomes the
key's limit with limit_reset daily, else its monthly limit (monthly), else its quota (never).
A token revoked through /_sim/tokens/revoke shows as disabled.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from aiohttp import web

from monitor.providers.openrouter_keys import utc_aligned

from .eventindex import EventIndex
from .hostile import page_of
from .model import SimulatedRelay
from .token import SimToken
from .wire import bearer, iso, json_response, parse_iso

__all__ = [
    "DEFAULT_WORKSPACE_ID",
    "OpenRouterOptions",
    "add_openrouter_routes",
    "key_hash",
    "openrouter_absurd",
]

DEFAULT_WORKSPACE_ID = "0df9e665-d932-5740-b2c7-b52af166bc11"
_RESETS = ("daily", "weekly", "monthly", None)
_REQUIRED = ("hash", "disabled", "usage")  # what a corrupt entry (faults) loses
_MAX_DOUBLE = 1.7976931348623157e308
_OVERFLOW = orjson.Fragment(b"1e400")
_USAGE = ("usage", "usage_daily", "usage_weekly", "usage_monthly")


@dataclass
class OpenRouterOptions:
    page_size: int = 100  # OpenRouter's; smaller makes paging tests cheap


def key_hash(tok: SimToken) -> str:
    """The key's `hash`: stable, unique per key, and not the SHA-256 of the key."""
    return hashlib.sha256(b"openrouter:" + tok.key.encode()).hexdigest()


def _stamp(ts: float) -> str:
    """created_at as OpenRouter's examples show it: microseconds and +00:00."""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="microseconds")


def _error(status: int, message: str) -> web.Response:
    return json_response({"error": {"code": status, "message": message}}, status)


def openrouter_absurd(view: dict[str, Any], kind: str | None, expires_at: float | None, now: float) -> None:
    """The hostile `absurd` kinds (absurd.py) on an OpenRouter key entry, in place."""
    if kind is None:
        return
    if kind == "epoch_ms":
        view["expires_at"] = round((expires_at if expires_at is not None else now + 30 * 86_400) * 1000)
        return
    value: Any = {"huge": _MAX_DOUBLE, "negative": -1e308, "nan": "NaN", "overflow": _OVERFLOW}[kind]
    for name in _USAGE:
        view[name] = value


@dataclass
class _Keys:
    """The flavour's own state over the relay: hashes, PATCHed limits and update times."""

    relay: SimulatedRelay
    index: EventIndex = field(init=False)
    _by_hash: tuple[int, dict[str, SimToken]] = (-1, {})
    _newest: tuple[int, list[SimToken]] = (-1, [])
    _weekly: tuple[tuple[int, float], dict[str, float]] = ((-1, 0.0), {})
    limits: dict[str, tuple[float | None, str | None]] = field(default_factory=dict)  # hash -> set by PATCH
    updated: dict[str, float] = field(default_factory=dict)
    byok_in_limit: dict[str, bool] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.index = EventIndex(self.relay)

    def newest_first(self) -> list[SimToken]:
        self.index.sync()
        roster = self.relay.roster_version
        if self._newest[0] != roster:
            listed = list(enumerate(self.relay.listed()))
            listed.sort(key=lambda it: (it[1].created_at, it[0]), reverse=True)
            self._newest = (roster, [t for _, t in listed])
        return self._newest[1]

    def find(self, hash_: str) -> SimToken | None:
        self.index.sync()
        roster = self.relay.roster_version
        if self._by_hash[0] != roster:
            self._by_hash = (roster, {key_hash(t): t for t in self.relay.listed()})
        tok = self._by_hash[1].get(hash_)
        return None if tok is None or tok.deleted else self.relay.get(tok.id)

    def weekly(self, now: float) -> dict[str, float]:
        """USD booked since Monday 00:00 UTC, by token id (from the event log)."""
        day = datetime.fromtimestamp(now, UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        start = (day - timedelta(days=day.weekday())).timestamp()
        key = (self.relay.events.seq, start)
        if self._weekly[0] != key:
            sums: dict[str, float] = {}
            for e in self.relay.events:
                if e.ts >= start:
                    sums[e.token_id] = sums.get(e.token_id, 0.0) + e.cost_usd
            self._weekly = (key, sums)
        return self._weekly[1]

    def limit_of(self, tok: SimToken, h: str, weekly: float) -> tuple[float | None, str | None, float]:
        """(limit, limit_reset, usage the limit counts)."""
        if h in self.limits:
            limit, reset = self.limits[h]
        elif tok.limits.daily_usd is not None:
            limit, reset = tok.limits.daily_usd, "daily"
        elif tok.limits.monthly_usd is not None:
            limit, reset = tok.limits.monthly_usd, "monthly"
        else:
            limit, reset = tok.quota_usd, None
        used = {"daily": tok.today_usage, "weekly": weekly, "monthly": tok.month_usage}.get(
            reset or "", tok.lifetime_usd
        )
        return limit, reset, used

    def view(self, tok: SimToken, now: float, weekly_sums: dict[str, float]) -> dict[str, Any]:
        h = key_hash(tok)
        weekly = round(min(max(weekly_sums.get(tok.id, 0.0), tok.today_usage), tok.lifetime_usd), 6)
        limit, reset, used = self.limit_of(tok, h, weekly)
        updated = self.updated.get(h)
        return {
            "hash": h,
            "name": tok.name,
            "label": f"{tok.key[:6]}...{tok.key[-4:]}",
            "disabled": tok.status(now) in ("disabled", "revoked"),
            "limit": limit,
            "limit_remaining": None if limit is None else round(max(limit - used, 0.0), 6),
            "limit_reset": reset,
            "include_byok_in_limit": self.byok_in_limit.get(h, False),
            "usage": tok.lifetime_usd,
            "usage_daily": tok.today_usage,
            "usage_weekly": weekly,
            "usage_monthly": tok.month_usage,
            "byok_usage": 0,
            "byok_usage_daily": 0,
            "byok_usage_weekly": 0,
            "byok_usage_monthly": 0,
            "created_at": _stamp(tok.created_at),
            "updated_at": None if updated is None else _stamp(updated),
            "expires_at": iso(tok.expires_at),
            "creator_user_id": "user_sim",
            "workspace_id": DEFAULT_WORKSPACE_ID,
        }


def _limit_fields(
    body: dict[str, Any], current: tuple[float | None, str | None]
) -> tuple[float | None, str | None]:
    """ValueError for a bad limit or limit_reset."""
    limit, reset = current
    if "limit" in body:
        limit = body["limit"]
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int | float) or limit < 0):
            raise ValueError("limit must be a number >= 0 or null")
    if "limit_reset" in body:
        reset = body["limit_reset"]
        if reset not in _RESETS:
            raise ValueError("limit_reset must be daily, weekly, monthly or null")
    return (None if limit is None else float(limit)), reset


def add_openrouter_routes(app: web.Application, relay: SimulatedRelay, options: OpenRouterOptions) -> None:
    if not utc_aligned(relay.tz, relay.now()):
        raise ValueError("the openrouter flavour resets usage at midnight UTC: make the relay with tz='UTC'")
    keys = _Keys(relay)
    admin = relay.admin_token.encode()

    def refused(request: web.Request) -> web.Response | None:
        token = bearer(request)
        if token is None:
            return _error(401, "No auth credentials found")
        if hmac.compare_digest(token.encode(), admin):
            return None
        if relay.by_key(token) is not None:
            return _error(403, "Only management keys can perform this operation")
        return _error(401, "User not found.")

    async def read_body(request: web.Request) -> dict[str, Any] | web.Response:
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return _error(400, "Invalid JSON body")
        if not isinstance(body, dict):
            return _error(400, "Invalid request parameters")
        return body

    async def list_keys(request: web.Request) -> web.StreamResponse:
        if (no := refused(request)) is not None:
            return no
        include = request.query.get("include_disabled", "false")
        raw_offset = request.query.get("offset", "0")
        if include not in ("true", "false") or not raw_offset.isdigit():
            return _error(400, "Invalid request parameters")
        now = relay.now()
        rows = keys.newest_first()
        if include == "false":
            rows = [t for t in rows if t.status(now) not in ("disabled", "revoked")]
        lie = relay.hostile.fires("paging", "keys.list") is not None
        page = page_of(rows, int(raw_offset), options.page_size, lie=lie)
        weekly = keys.weekly(now)
        faults = relay.faults
        corrupt = faults.malformed_token_rate > 0 and faults.applies_to("keys.list")
        absurd = relay.hostile.fires("absurd", "keys.list")
        data = []
        for tok in page:
            view = keys.view(tok, now, weekly)
            if corrupt and (kind := faults.corrupt_entry()) is not None:
                if kind == "missing":
                    del view[faults.pick(_REQUIRED)]
                else:
                    view["usage"] = -round(abs(tok.lifetime_usd) + 1.0, 6)
            if absurd is not None:
                openrouter_absurd(view, relay.hostile.absurd_kind(absurd, tok.id), tok.expires_at, now)
            data.append(view)
        return json_response({"data": data})

    async def get_key(request: web.Request) -> web.StreamResponse:
        if (no := refused(request)) is not None:
            return no
        tok = keys.find(request.match_info["hash"])
        if tok is None:
            return _error(404, "Resource not found")
        now = relay.now()
        view = keys.view(tok, now, keys.weekly(now))
        if (absurd := relay.hostile.fires("absurd", "keys.get")) is not None:
            openrouter_absurd(view, relay.hostile.absurd_kind(absurd, tok.id), tok.expires_at, now)
        return json_response({"data": view})

    async def create_key(request: web.Request) -> web.StreamResponse:
        if (no := refused(request)) is not None:
            return no
        body = await read_body(request)
        if isinstance(body, web.Response):
            return body
        name = body.get("name")
        if not isinstance(name, str) or not name.strip():
            return _error(400, "name is required")
        try:
            limit = _limit_fields(body, (None, None))
            expires_at = parse_iso(body.get("expires_at"))
        except ValueError as exc:
            return _error(400, str(exc))
        if expires_at is not None and expires_at <= relay.now():
            return _error(400, "expires_at must be in the future")
        tok, key = relay.create_token(name.strip(), expires_at=expires_at)
        keys.limits[key_hash(tok)] = limit
        now = relay.now()
        return json_response({"data": keys.view(tok, now, keys.weekly(now)), "key": key}, 201)

    async def update_key(request: web.Request) -> web.StreamResponse:
        if (no := refused(request)) is not None:
            return no
        h = request.match_info["hash"]
        tok = keys.find(h)
        if tok is None:
            return _error(404, "Resource not found")
        body = await read_body(request)
        if isinstance(body, web.Response):
            return body
        disabled, name, byok = body.get("disabled"), body.get("name"), body.get("include_byok_in_limit")
        now = relay.now()
        weekly = keys.weekly(now)
        try:
            if disabled is not None and not isinstance(disabled, bool):
                raise ValueError("disabled must be a boolean")
            if name is not None and (not isinstance(name, str) or not name.strip()):
                raise ValueError("name must be a non-empty string")
            if byok is not None and not isinstance(byok, bool):
                raise ValueError("include_byok_in_limit must be a boolean")
            limit = _limit_fields(body, keys.limit_of(tok, h, 0.0)[:2])
        except ValueError as exc:
            return _error(400, str(exc))
        if disabled is True:
            relay.disable_token(tok.id)
        elif disabled is False:
            relay.enable_token(tok.id)
        if name is not None:
            relay.rename_token(tok.id, name.strip())
        if "limit" in body or "limit_reset" in body:
            keys.limits[h] = limit
        if byok is not None:
            keys.byok_in_limit[h] = byok
        keys.updated[h] = now
        return json_response({"data": keys.view(tok, now, weekly)})

    async def delete_key(request: web.Request) -> web.StreamResponse:
        if (no := refused(request)) is not None:
            return no
        tok = keys.find(request.match_info["hash"])
        if tok is None:
            return _error(404, "Resource not found")
        relay.delete_token(tok.id)
        return json_response({"deleted": True})

    async def current_key(request: web.Request) -> web.StreamResponse:
        key = bearer(request)
        tok = relay.by_key(key) if key else None
        now = relay.now()
        if tok is None or not tok.accepts_key(now):
            return _error(401, "User not found.")
        view = keys.view(tok, now, keys.weekly(now))
        data = {
            k: view[k] for k in ("label", "limit", "limit_reset", "limit_remaining", "include_byok_in_limit")
        }
        data.update({k: v for k, v in view.items() if k.startswith(("usage", "byok_usage"))})
        data.update(is_free_tier=False, expires_at=view["expires_at"])
        return json_response({"data": data})

    app.router.add_get("/api/v1/keys", list_keys, name="keys.list")
    app.router.add_post("/api/v1/keys", create_key, name="keys.create")
    app.router.add_get("/api/v1/keys/{hash}", get_key, name="keys.get")
    app.router.add_patch("/api/v1/keys/{hash}", update_key, name="keys.update")
    app.router.add_delete("/api/v1/keys/{hash}", delete_key, name="keys.delete")
    app.router.add_get("/api/v1/key", current_key, name="key.current")
