"""The `litellm` flavour: a LiteLLM proxy's admin API over the SimulatedRelay (docs/relay-adapters.md).

    GET  /key/list?page=&size=&return_full_object=   {"keys", "total_count", "current_page",
             "total_pages"}; newest first (created_at, then token); page >= 1, size 1..100 (else
             422 {"detail": [...]}); without return_full_object=true the keys are bare hashes
    GET  /key/info?key=<hash or sk-...>              {"key", "info": the key without its token}
    POST /key/block   {"key"}                        blocked: true  (the relay's token disabled)
    POST /key/unblock {"key"}                        blocked: false (enabled again)
    POST /key/delete  {"keys": [...]}                {"deleted_keys"}
    GET  /spend/logs/v2?start_date=&end_date=&page=&page_size=&api_key=&status_filter=
    GET  /spend/logs/ui?...                          the same (logs_v2=False: v2 is a 404)
    GET  /v1/models                                  with a virtual key (`sk-...`): 401 once blocked

Admin auth: `Authorization: Bearer <master key>` (DEFAULT_ADMIN_TOKEN); errors are
`{"error": {"message", "type", "param", "code": "<status as text>"}}`, and an auth error's
message echoes the end of the key it was given, as LiteLLM's does.

Each relay token is a virtual key whose `token` is the SHA-256 hex of its secret. Tokens with a
daily limit get `budget_duration` "1d", others with a monthly one "30d" (LiteLLM resets both at
midnight, "30d" on the 1st, in the relay's zone), a few a lifetime `max_budget`, tokens without
limits none. A key's `spend` is LiteLLM's counter: it rises with what the relay books and the
budget reset job (every `reset_every` s, half a period off the grid) sets it to 0 once
`budget_reset_at` has passed, minutes after the boundary, wiping what was spent in between.

The spend log has one row per request (an event of n requests is n rows whose spend sums to the
event's), `startTime` a millisecond apart within an event and served without a zone, one
`status: "failure"` row (spend 0) for every ninth event, newest first; `total` stops at
`count_cap` with `total_is_capped`. `spend_logs=False` is a proxy with
`disable_spend_logs: true`: the log stays empty while the counters rise.

Faults apply to every route by name (`key.list`, `key.info`, `key.block`, `key.unblock`,
`key.delete`, `spend.logs.v2`, `spend.logs.ui`, `models`), `malformed_token_rate` to key objects
of `key.list`. Hostile answer modes apply to every route; `absurd` writes its values into key
objects (`spend`, or `expires` in milliseconds) and log rows (`spend`), and `paging` makes the key
list claim two billion keys and log pages never end (their count "capped"), on the routes
hostile.py scopes for this flavour.
"""

from __future__ import annotations

import hashlib
import hmac
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import orjson
from aiohttp import web

from .eventindex import EventIndex
from .hostile import page_of
from .ledger import Event
from .model import SimulatedRelay
from .profiles import MODEL_PRICES
from .token import SimToken
from .tokencounts import split_even, tokens_for
from .wire import bearer, json_response

__all__ = ["LiteLLMOptions", "add_litellm_routes", "key_hash"]

MAX_PAGE = 100
_LIE_KEYS = 2_000_000_000  # `paging`: the key count a lying proxy claims
_FAILURE_EVERY = 9
_HASH_CHARS = frozenset("0123456789abcdef")
_PROVIDERS = (("gpt", "openai"), ("o1", "openai"), ("claude", "anthropic"), ("gemini", "gemini"))
_OVERFLOW = orjson.Fragment(b"1e400")


@dataclass
class LiteLLMOptions:
    logs_v2: bool = True  # /spend/logs/v2 exists; False: an older proxy with /spend/logs/ui only
    spend_logs: bool = True  # False: general_settings.disable_spend_logs is set
    count_cap: int = 10_000  # SPEND_LOGS_PAGINATION_COUNT_CAP: `total` stops here
    reset_every: float = 600.0  # the budget reset job's period (proxy_budget_rescheduler_*_time)
    forwarded_for: bool = False  # use_x_forwarded_for: the IP is the whole X-Forwarded-For header
    store_audit_logs: bool = False  # block/unblock of an unknown key: 404 (else the DB error, a 500)


def key_hash(secret: str) -> str:
    """LiteLLM's `token`: the SHA-256 hex of the key as issued."""
    return hashlib.sha256(secret.encode()).hexdigest()


def _iso(ts: float | None) -> str | None:
    """As pydantic writes an aware datetime: microseconds when there are any, and `Z`."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def _naive(ts: float) -> str:
    """A spend log time as a raw row of a `timestamp` column can come: no zone (UTC)."""
    return datetime.fromtimestamp(ts, UTC).replace(tzinfo=None).isoformat(timespec="milliseconds")


def _error(status: int, message: str, type_: str, param: str | None = None) -> web.Response:
    body = {"error": {"message": message, "type": type_, "param": param or "None", "code": str(status)}}
    return json_response(body, status)


def _validation(name: str, message: str) -> web.Response:
    return json_response({"detail": [{"type": "value_error", "loc": ["query", name], "msg": message}]}, 422)


@dataclass
class _Key:
    """The proxy's row for one relay token: what LiteLLM keeps that the relay does not."""

    hash: str
    duration: str | None
    max_budget: float | None
    counter: float = 0.0
    reset_at: float | None = None
    ever_blocked: bool = False


@dataclass
class _Proxy:
    relay: SimulatedRelay
    options: LiteLLMOptions
    index: EventIndex
    tz: ZoneInfo
    keys: dict[str, _Key] = field(default_factory=dict)  # by hash
    hashes: dict[str, list[tuple[float, str]]] = field(default_factory=dict)  # relay id -> (since, hash)
    by_hash: dict[str, SimToken] = field(default_factory=dict)
    seq: int = 0  # the last booked event applied to the counters
    rows_cache: dict[tuple[int, int, str, str], tuple[int, list[tuple[float, str, Event, int, bool]]]] = (
        field(default_factory=dict)
    )

    # --- keys ----------------------------------------------------------------------------------
    def _budget(self, tok: SimToken, h: str) -> tuple[str | None, float | None]:
        lim = tok.limits
        choice = int(h[0], 16)
        if lim.daily_usd is not None and (choice < 6 or lim.monthly_usd is None):
            return "1d", lim.daily_usd
        if lim.monthly_usd is not None and choice < 12:
            return "30d", lim.monthly_usd
        if lim.monthly_usd is not None:
            return None, round(lim.monthly_usd * 24, 2)  # a lifetime budget
        return None, None

    def _adopt(self, tok: SimToken, now: float, *, with_usage: bool) -> _Key:
        h = key_hash(tok.key)
        key = self.keys.get(h)
        if key is not None:
            return key
        duration, budget = self._budget(tok, h)
        key = _Key(h, duration, budget)
        if with_usage:  # a token the relay had before the proxy's view began
            key.counter = {"1d": tok.today_usage, "30d": tok.month_usage}.get(
                duration or "", tok.lifetime_usd
            )
        key.reset_at = self._next_reset(now, duration)
        self.keys[h] = key
        self.by_hash[h] = tok
        self.hashes.setdefault(tok.id, []).append((tok.created_at, h))
        return key

    def _next_reset(self, ts: float, duration: str | None) -> float | None:
        if duration is None:
            return None
        local = datetime.fromtimestamp(ts, self.tz).replace(hour=0, minute=0, second=0, microsecond=0)
        if duration == "1d":
            return (local + timedelta(days=1)).timestamp()
        first = local.replace(day=1)
        return (
            first.replace(year=first.year + 1, month=1)
            if first.month == 12
            else first.replace(month=first.month + 1)
        ).timestamp()

    def hash_of(self, e: Event) -> str:
        spans = self.hashes.get(e.token_id) or [(0.0, "")]
        return next((h for since, h in reversed(spans) if since <= e.ts), spans[0][1])

    def refresh(self, *, first: bool = False) -> float:
        """Bring every counter up to now: new events booked, reset job runs that came due."""
        now = self.index.sync()
        for tok in self.relay.listed():
            self._adopt(tok, now, with_usage=first)
        events = self.relay.events
        if first:
            self.seq = events.seq  # what was booked before is in the windows the counters began at
        if events.seq != self.seq:
            new: dict[str, list[Event]] = {}
            for e in events:
                if e.seq > self.seq:
                    new.setdefault(self.hash_of(e), []).append(e)
            self.seq = events.seq
        else:
            new = {}
        every = self.options.reset_every
        for h, key in self.keys.items():
            booked = sorted(new.get(h, ()), key=lambda e: e.ts)
            i = 0
            while key.reset_at is not None:
                run = (math.ceil(key.reset_at / every - 0.5) + 0.5) * every  # the job's first run after
                if run > now:
                    break
                while i < len(booked) and booked[i].ts < run:
                    key.counter += booked[i].cost_usd
                    i += 1
                key.counter = 0.0
                key.reset_at = self._next_reset(run, key.duration)
            key.counter += sum(e.cost_usd for e in booked[i:])
        return now

    def find(self, ref: object) -> tuple[SimToken, _Key] | None:
        """A listed token by its hash or its key (`sk-...`)."""
        if not isinstance(ref, str):
            return None
        h = key_hash(ref) if ref.startswith("sk-") else ref
        tok = self.by_hash.get(h)
        if tok is None or tok.deleted:
            return None
        return tok, self.keys[h]

    def key_object(self, tok: SimToken, key: _Key, now: float, absurd: str | None) -> dict[str, Any]:
        blocked: bool | None = True if tok.disabled_at is not None or tok.revoked_at is not None else None
        key.ever_blocked = key.ever_blocked or bool(blocked)
        if blocked is None and key.ever_blocked:
            blocked = False
        env = tok.name.split("-", 1)[0]
        obj: dict[str, Any] = {
            "token": key.hash,
            "key_name": f"sk-...{tok.key[-4:]}",
            "key_alias": tok.name,
            "spend": round(key.counter, 9),
            "max_budget": key.max_budget,
            "expires": _iso(tok.expires_at),
            "models": list(tok.limits.allowed_models),
            "aliases": {},
            "config": {},
            "user_id": f"user-{tok.id.rsplit('_', 1)[-1]}",
            "team_id": f"team-{env}",
            "max_parallel_requests": None,
            "metadata": {},
            "tpm_limit": None,
            "rpm_limit": None,
            "budget_duration": key.duration,
            "budget_reset_at": _iso(key.reset_at),
            "allowed_cache_controls": [],
            "permissions": {},
            "model_spend": {},
            "model_max_budget": {},
            "soft_budget_cooldown": False,
            "blocked": blocked,
            "litellm_budget_table": None,
            "organization_id": None,
            "created_at": _iso(tok.created_at),
            "created_by": "default_user_id",
            "updated_at": _iso(tok.created_at),
            "updated_by": "default_user_id",
            "last_active": _iso(tok.last_used_at),
            "api_key": None,
            "user_role": None,
        }
        if absurd == "epoch_ms":
            obj["expires"] = round((tok.expires_at or now + 30 * 86_400) * 1000)
        elif absurd is not None:
            obj["spend"] = {"huge": 1e308, "negative": -1e308, "nan": "NaN", "overflow": _OVERFLOW}[absurd]
        return obj

    # --- spend log -----------------------------------------------------------------------------
    def rows(
        self, start: int, end: int, api_key: str, status: str
    ) -> list[tuple[float, str, Event, int, bool]]:
        """(startTime, request_id, event, request index, failed) with start <= startTime <= end,
        newest first; kept until anything new is booked."""
        seq = self.index.seq
        query = (start, end, api_key, status)
        hit = self.rows_cache.get(query)
        if hit is not None and hit[0] == seq:
            return hit[1]
        out = []
        for e in self.index.between(start - 1, end + 1, until_inclusive=False):
            h = self.hash_of(e)
            if api_key and h != api_key:
                continue
            rid = f"chatcmpl-{e.seq:08x}-{{:04x}}-4000-8000-{self.relay.seed:012x}"
            fail = e.seq % _FAILURE_EVERY == 0
            for i in range(e.requests + (1 if fail else 0)):
                failed = i == e.requests
                ts = e.ts + i / 1000
                if start <= ts <= end and (not status or status == ("failure" if failed else "success")):
                    out.append((ts, rid.format(i), e, i, failed))
        out.sort(key=lambda r: (r[0], r[1]), reverse=True)
        if len(self.rows_cache) > 64:
            self.rows_cache.clear()
        self.rows_cache[query] = (seq, out)
        return out

    def row(self, ts: float, rid: str, e: Event, i: int, failed: bool, absurd: str | None) -> dict[str, Any]:
        micros = 0 if failed else split_even(round(e.cost_usd * 1e6), e.requests, i)
        prompt, completion = tokens_for(e.cost_usd, e.model)
        p = 0 if failed else split_even(prompt, e.requests, i)
        c = 0 if failed else split_even(completion, e.requests, i)
        tok = self.by_hash.get(self.hash_of(e))
        provider = next((name for prefix, name in _PROVIDERS if e.model.startswith(prefix)), "openai")
        ip = f"{e.ip}, 10.0.0.2" if self.options.forwarded_for else e.ip
        duration = 200 + (e.seq * 7919 + i * 104_729) % 4800
        spend: Any = micros / 1e6
        if absurd is not None and absurd != "epoch_ms":
            spend = {"huge": 1e308, "negative": -1e308, "nan": "NaN", "overflow": _OVERFLOW}[absurd]
        return {
            "request_id": rid,
            "call_type": "acompletion",
            "api_key": self.hash_of(e),
            "spend": spend,
            "total_tokens": p + c,
            "prompt_tokens": p,
            "completion_tokens": c,
            "startTime": _naive(ts),
            "endTime": _naive(ts + duration / 1000),
            "request_duration_ms": duration,
            "completionStartTime": _naive(ts + duration / 4000),
            "model": f"{provider}/{e.model}",
            "model_id": f"model-{provider}",
            "model_group": e.model,
            "custom_llm_provider": provider,
            "api_base": "",
            "user": "" if tok is None else f"user-{tok.id.rsplit('_', 1)[-1]}",
            "metadata": orjson.dumps({"user_api_key_alias": e.token_name}).decode(),
            "cache_hit": "False",
            "cache_key": "",
            "request_tags": "[]",
            "team_id": f"team-{e.token_name.split('-', 1)[0]}",
            "end_user": "",
            "requester_ip_address": ip,
            "session_id": None,
            "status": "failure" if failed else "success",
        }


def _int(request: web.Request, name: str, default: int, lo: int, hi: int) -> int | web.Response:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        return _validation(name, "Input should be a valid integer")
    if not lo <= value <= hi:
        return _validation(name, f"Input should be between {lo} and {hi}")
    return value


def _date(raw: str | None) -> float | None:
    if raw is None:
        return None
    return datetime.strptime(raw, "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC).timestamp()


async def _body(request: web.Request) -> dict[str, Any] | None:
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        return None
    return body if isinstance(body, dict) else None


def add_litellm_routes(app: web.Application, relay: SimulatedRelay, options: LiteLLMOptions) -> None:
    proxy = _Proxy(relay, options, EventIndex(relay), ZoneInfo(relay.tz))
    proxy.refresh(first=True)
    master = relay.admin_token.encode()

    def refused(request: web.Request) -> web.Response | None:
        token = bearer(request)
        if token is not None and hmac.compare_digest(token.encode(), master):
            return None
        shown = f"sk-...{token[-4:]}" if token else "None"
        return _error(
            401,
            f"Authentication Error, Invalid proxy server token passed. Received API Key = {shown}, "
            "Unable to find token in cache or `LiteLLM_VerificationTokenTable`",
            "auth_error",
        )

    def absurd_kind(route: str, tok: SimToken) -> str | None:
        mode = relay.hostile.fires("absurd", route)
        return None if mode is None else relay.hostile.absurd_kind(mode, tok.id)

    async def list_keys(request: web.Request) -> web.StreamResponse:
        if (no := refused(request)) is not None:
            return no
        page, size = _int(request, "page", 1, 1, 2**31), _int(request, "size", 10, 1, MAX_PAGE)
        if isinstance(page, web.Response):
            return page
        if isinstance(size, web.Response):
            return size
        now = proxy.refresh()
        listed = sorted(relay.listed(), key=lambda t: (t.created_at, key_hash(t.key)), reverse=True)
        lie = relay.hostile.fires("paging", "key.list") is not None
        chosen = page_of(listed, (page - 1) * size, size, lie=lie)
        full = request.query.get("return_full_object", "false").lower() == "true"
        absurd = relay.hostile.fires("absurd", "key.list")
        faults = relay.faults
        corrupt = faults.malformed_token_rate > 0 and faults.applies_to("key.list")
        keys: list[Any] = []
        for tok in chosen:
            key = proxy.keys[key_hash(tok.key)]
            if not full:
                keys.append(key.hash)
                continue
            kind = None if absurd is None else relay.hostile.absurd_kind(absurd, tok.id)
            obj = proxy.key_object(tok, key, now, kind)
            if corrupt and (bad := faults.corrupt_entry()) is not None:
                if bad == "missing":
                    del obj["token"]
                else:
                    obj["spend"] = -round(key.counter + 1.0, 6)
            keys.append(obj)
        total = _LIE_KEYS if lie else len(listed)
        return json_response(
            {"keys": keys, "total_count": total, "current_page": page, "total_pages": -(-total // size)}
        )

    async def key_info(request: web.Request) -> web.StreamResponse:
        if (no := refused(request)) is not None:
            return no
        now = proxy.refresh()
        found = proxy.find(request.query.get("key"))
        if found is None:
            return _error(404, "Key not found in database", "not_found_error", "key")
        tok, key = found
        info = proxy.key_object(tok, key, now, absurd_kind("key.info", tok))
        del info["token"]
        return json_response({"key": request.query["key"], "info": info})

    def set_blocked(blocked: bool) -> Any:
        async def handler(request: web.Request) -> web.StreamResponse:
            if (no := refused(request)) is not None:
                return no
            body = await _body(request)
            ref = None if body is None else body.get("key")
            if not isinstance(ref, str) or not (
                ref.startswith("sk-") or (len(ref) == 64 and set(ref) <= _HASH_CHARS)
            ):
                return _error(400, "Invalid key format.", "bad_request_error", "key")
            now = proxy.refresh()
            found = proxy.find(ref)
            if found is None:
                if options.store_audit_logs:
                    return _error(404, f"Key {ref} not found", "bad_request_error", "key")
                return web.Response(status=500, text="Internal Server Error")
            tok, key = found
            if blocked:
                relay.disable_token(tok.id)
                key.ever_blocked = True
            else:
                relay.enable_token(tok.id)
            obj = proxy.key_object(tok, key, now, None)
            return json_response(obj)

        return handler

    async def delete_keys(request: web.Request) -> web.StreamResponse:
        if (no := refused(request)) is not None:
            return no
        body = await _body(request)
        refs = None if body is None else body.get("keys")
        if not isinstance(refs, list) or not refs:
            return _error(400, "Malformed request. No keys passed in.", "bad_request_error", "keys")
        proxy.refresh()
        found = [f for f in (proxy.find(r) for r in refs) if f is not None]
        if not found:
            return _error(404, "{'error': 'No keys found'}", "internal_server_error")
        for tok, _ in found:
            relay.delete_token(tok.id)
        return json_response({"deleted_keys": [key.hash for _, key in found]})

    def spend_logs(route: str) -> Any:
        async def handler(request: web.Request) -> web.StreamResponse:
            if route == "spend.logs.v2" and not options.logs_v2:
                return json_response({"detail": "Not Found"}, 404)
            if (no := refused(request)) is not None:
                return no
            page, size = _int(request, "page", 1, 1, 2**31), _int(request, "page_size", 50, 1, MAX_PAGE)
            if isinstance(page, web.Response):
                return page
            if isinstance(size, web.Response):
                return size
            try:
                start, end = _date(request.query.get("start_date")), _date(request.query.get("end_date"))
            except ValueError:
                return _error(400, "Invalid date format: use YYYY-MM-DD HH:MM:SS", "bad_request")
            if start is None or end is None:
                return _error(400, "Start date and end date are required", "bad_request")
            proxy.refresh()
            rows = []
            if options.spend_logs:
                status = request.query.get("status_filter", "")
                rows = proxy.rows(int(start), int(end), request.query.get("api_key", ""), status)
            lie = relay.hostile.fires("paging", route) is not None
            chosen = page_of(rows, (page - 1) * size, size, lie=lie)
            absurd = relay.hostile.fires("absurd", route)
            data = []
            for ts, rid, e, i, failed in chosen:
                tok = proxy.by_hash.get(proxy.hash_of(e))
                kind = None if absurd is None or tok is None else relay.hostile.absurd_kind(absurd, tok.id)
                data.append(proxy.row(ts, rid, e, i, failed, kind))
            total = min(len(rows), options.count_cap)
            return json_response(
                {
                    "data": data,
                    "total": total,
                    "page": page,
                    "page_size": size,
                    "total_pages": -(-total // size),
                    "total_is_capped": lie or len(rows) > options.count_cap,
                }
            )

        return handler

    async def models(request: web.Request) -> web.StreamResponse:
        key = bearer(request)
        tok = relay.by_key(key) if key else None
        if tok is None or not tok.accepts_key(relay.now()):
            return _error(401, "Authentication Error, Key is blocked, expired or unknown.", "auth_error")
        data = [
            {"id": m, "object": "model", "created": 1_677_610_602, "owned_by": "openai"} for m in MODEL_PRICES
        ]
        return json_response({"data": data, "object": "list"})

    app.router.add_get("/key/list", list_keys, name="key.list")
    app.router.add_get("/key/info", key_info, name="key.info")
    app.router.add_post("/key/block", set_blocked(True), name="key.block")
    app.router.add_post("/key/unblock", set_blocked(False), name="key.unblock")
    app.router.add_post("/key/delete", delete_keys, name="key.delete")
    app.router.add_get("/spend/logs/v2", spend_logs("spend.logs.v2"), name="spend.logs.v2")
    app.router.add_get("/spend/logs/ui", spend_logs("spend.logs.ui"), name="spend.logs.ui")
    app.router.add_get("/v1/models", models, name="models")
