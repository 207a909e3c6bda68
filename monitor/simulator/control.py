"""The simulator's control API under /_sim/: lets tests and demos in another process drive it.
It exists only in the simulator (no real relay has it) and needs no auth. JSON in, JSON out;
times are epoch seconds; a token is named by id or name. Unknown token -> 404, bad input -> 400.

    GET  /_sim/truth          now, tz, speed and per-token truth: windows, lifetime totals, leaks;
                              charged_usd (gross), refunded_usd, lifetime_usd (net), created_at
    GET  /_sim/keys           {name: key} for every listed token (a repeated name: the newest)
    GET  /_sim/keys?by=id     {id: {"name", "key"}}: apart even when names repeat
    GET  /_sim/events         ?since=&until=&token=&limit=  booked traffic, oldest first
    GET  /_sim/faults         current fault knobs
    GET  /_sim/requests       {"by_agent": {User-Agent: n}}: relay API requests so far, by caller
    POST /_sim/advance        {"seconds": s} or {"to": ts}       -> {"now"}
    POST /_sim/speed          {"speed": x}                        -> {"now", "speed"}
    POST /_sim/leak           {"token", "multiplier"?, "new_ips"?, "models"?}
    POST /_sim/leak/stop      {"token"}
    POST /_sim/over-budget    {"token", "window"?: day|month, "target_usd"?}  -> {"added_usd"}
    POST /_sim/spend          {"token", "usd", "requests"?, "model"?, "ip"?, "at"?}
    POST /_sim/refund         {"token", "usd"}: day and month windows (one-api family: used_quota)
                              go down by usd, no period boundary; usd <= today's usage
    POST /_sim/faults         any knobs of Faults, or {"reset": true}
    POST /_sim/options        the flavour's options, e.g. {"usage_in_list": false}
    POST /_sim/tokens         {"name", ...create_token options}  -> {"token", "key"}
    POST /_sim/tokens/rename  {"token", "name"}    (names may repeat: two live tokens, one name)
    POST /_sim/tokens/reuse   {"token", "name", ...create_token options}  -> {"token", "key"}:
                              deleted, and a new token (created now, no usage) gets its id
    POST /_sim/tokens/revoke  {"token"}
    POST /_sim/tokens/delete  {"token"}
    POST /_sim/tokens/disable {"token"}   (one-api family: reversible)
    POST /_sim/tokens/enable  {"token"}
    GET  /_sim/hostile        {"modes": {mode: settings}}
    POST /_sim/hostile        {"mode", ...settings} switches one mode on (replacing its settings),
                              {"mode", "off": true} off, {"reset": true} all off -> GET's answer

Hostile modes (hostile.py; issue 9). Every mode takes "routes" (route names; defaults below),
"rate" (share of matching requests, seeded draws; 1) and "times" (off after that many; null).
Switching a mode off or replacing it cuts the requests it holds (the connection closes).

    absurd   {"kind": huge|epoch_ms|negative|nan|overflow|mixed, "token" | "fraction"}: absurd
             numbers on list entries (absurd.py). laozhang: "list"; oneapi/newapi: "token.list",
             "token.get". "fraction" picks tokens by id, the same ones every poll (default 1).
    paging   new-api: {"items": [one real token], "total": 2000000, "page": p, "page_size": 1};
             one-api (and new-api legacy_pages): every page is full (10 rows, real ones
             repeating). oneapi/newapi only; routes "token.list" (default), "log.self".
    trickle  {"interval": 1.0}: headers at once, then the answer one byte per interval seconds
    huge     {"size": 209715200}: whitespace then the real answer, chunked, generated lazily
    bomb     {"size": 1073741824}: Content-Encoding gzip, ~1 MB on the wire inflating to size
             bytes of zeros (not JSON); size a whole number of MiB
    hang     no answer, until the client gives up (or the mode goes off, or the server closes)
    echo     {"status"?}: "bad token <credential>\\n2026-01-01 00:00:00 INFO keywatch: all good";
             laozhang a text/plain 500, oneapi/newapi {"success": false, "message"} at HTTP 200,
             openai an error object at 500
trickle, huge, bomb, hang and echo apply to every API route of the flavour unless "routes" says;
when several match a request, the first of hang, echo, bomb, huge, trickle takes it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from .model import SimulatedRelay, TruthRow
from .token import Limits, SimToken
from .wire import CALLERS, FLAVOR, OPTIONS, SIM_ROUTE_PREFIX, json_response, set_options

__all__ = ["add_control_routes"]

_Body = dict[str, Any]
_Action = Callable[[SimulatedRelay, _Body], Any]
_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class _BadRequest(ValueError):
    pass


def _row(relay: SimulatedRelay, tok: SimToken) -> TruthRow:
    return relay.truth_of(tok.id)


def _ref(body: _Body) -> str:
    ref = body.get("token")
    if not isinstance(ref, str) or not ref:
        raise _BadRequest('"token" (an id or a name) is required')
    return ref


def _num(body: _Body, name: str, default: float | None = None) -> float:
    value = body.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _BadRequest(f'"{name}" must be a number')
    return float(value)


def _advance(relay: SimulatedRelay, body: _Body) -> Any:
    if "to" in body:
        relay.advance(_num(body, "to"))
    else:
        relay.advance_by(_num(body, "seconds"))
    return {"now": relay.now()}


def _speed(relay: SimulatedRelay, body: _Body) -> Any:
    relay.set_speed(_num(body, "speed"))
    return {"now": relay.now(), "speed": relay.speed}


def _leak(relay: SimulatedRelay, body: _Body) -> Any:
    kwargs: dict[str, Any] = {
        "multiplier": _num(body, "multiplier", 20.0),
        "new_ips": bool(body.get("new_ips", True)),
    }
    if "models" in body:
        kwargs["models"] = tuple(body["models"])
    return _row(relay, relay.start_leak(_ref(body), **kwargs))


def _leak_stop(relay: SimulatedRelay, body: _Body) -> Any:
    return _row(relay, relay.stop_leak(_ref(body)))


def _over_budget(relay: SimulatedRelay, body: _Body) -> Any:
    target = body.get("target_usd")
    added = relay.push_over_budget(
        _ref(body),
        str(body.get("window", "day")),
        target_usd=None if target is None else _num(body, "target_usd"),
    )
    return {"added_usd": added}


def _spend(relay: SimulatedRelay, body: _Body) -> Any:
    tok = relay.add_spend(
        _ref(body),
        _num(body, "usd"),
        int(body.get("requests", 1)),
        body.get("model"),
        body.get("ip"),
        at=_num(body, "at") if "at" in body else None,
    )
    return _row(relay, tok)


def _faults(relay: SimulatedRelay, body: _Body) -> Any:
    if body.pop("reset", False):
        relay.faults.reset()
    relay.faults.update(**body)
    return relay.faults.as_dict()


def _create_options(body: _Body) -> tuple[str, _Body]:
    """(name, create_token options) from a control body."""
    body = dict(body)
    name = body.pop("name", None)
    if not isinstance(name, str):
        raise _BadRequest('"name" is required')
    if any(option.startswith("_") for option in body):
        raise _BadRequest("unknown option")
    limits = body.pop("limits", None)
    if limits is not None:
        if not isinstance(limits, dict):
            raise _BadRequest('"limits" must be an object of Limits fields')
        if "allowed_models" in limits:
            limits["allowed_models"] = tuple(limits["allowed_models"])
        body["limits"] = Limits(**limits)
    return name, body


def _create(relay: SimulatedRelay, body: _Body) -> Any:
    name, options = _create_options(body)
    try:
        tok, key = relay.create_token(name, **options)
    except TypeError as exc:  # an unknown option
        raise _BadRequest(str(exc)) from exc
    return {"token": _row(relay, tok), "key": key}


def _reuse(relay: SimulatedRelay, body: _Body) -> Any:
    ref = _ref(body)
    name, options = _create_options({k: v for k, v in body.items() if k != "token"})
    relay.token(ref)  # 404 before anything changes
    try:
        tok, key = relay.reuse_token_id(ref, name, **options)
    except TypeError as exc:
        raise _BadRequest(str(exc)) from exc
    return {"token": _row(relay, tok), "key": key}


def _refund(relay: SimulatedRelay, body: _Body) -> Any:
    return _row(relay, relay.refund(_ref(body), _num(body, "usd")))


def _rename(relay: SimulatedRelay, body: _Body) -> Any:
    name = body.get("name")
    if not isinstance(name, str):
        raise _BadRequest('"name" is required')
    return _row(relay, relay.rename_token(_ref(body), name))


def _revoke(relay: SimulatedRelay, body: _Body) -> Any:
    return _row(relay, relay.revoke_token(_ref(body)))


def _disable(relay: SimulatedRelay, body: _Body) -> Any:
    return _row(relay, relay.disable_token(_ref(body)))


def _enable(relay: SimulatedRelay, body: _Body) -> Any:
    return _row(relay, relay.enable_token(_ref(body)))


def _delete(relay: SimulatedRelay, body: _Body) -> Any:
    relay.delete_token(_ref(body))
    return {"deleted": body["token"]}


_POSTS: dict[str, _Action] = {
    "/_sim/advance": _advance,
    "/_sim/speed": _speed,
    "/_sim/leak": _leak,
    "/_sim/leak/stop": _leak_stop,
    "/_sim/over-budget": _over_budget,
    "/_sim/spend": _spend,
    "/_sim/refund": _refund,
    "/_sim/faults": _faults,
    "/_sim/tokens": _create,
    "/_sim/tokens/rename": _rename,
    "/_sim/tokens/reuse": _reuse,
    "/_sim/tokens/revoke": _revoke,
    "/_sim/tokens/delete": _delete,
    "/_sim/tokens/disable": _disable,
    "/_sim/tokens/enable": _enable,
}


def _error(status: int, message: str) -> web.Response:
    return json_response({"error": message}, status)


def _post(relay: SimulatedRelay, action: _Action) -> _Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            body = orjson.loads(raw) if raw else {}
        except orjson.JSONDecodeError:
            return _error(400, "body is not valid JSON")
        if not isinstance(body, dict):
            return _error(400, "body must be a JSON object")
        try:
            return json_response(action(relay, body))
        except KeyError as exc:
            return _error(404, f"no such token: {exc.args[0]}")
        except (ValueError, TypeError) as exc:
            return _error(400, str(exc))

    return handler


def add_control_routes(app: web.Application, relay: SimulatedRelay) -> None:
    async def truth(request: web.Request) -> web.StreamResponse:
        rows = relay.truth()
        return json_response({"now": relay.now(), "tz": relay.tz, "speed": relay.speed, "tokens": rows})

    async def keys(request: web.Request) -> web.StreamResponse:
        return json_response(relay.keys_by_id() if request.query.get("by") == "id" else relay.keys())

    async def events(request: web.Request) -> web.StreamResponse:
        q = request.query
        try:
            since = float(q.get("since", "0"))
            until = float(q.get("until", "inf"))
            limit = int(q.get("limit", "1000"))
            found = relay.events_between(since, until, q.get("token"))
        except ValueError as exc:
            return _error(400, str(exc))
        except KeyError as exc:
            return _error(404, f"no such token: {exc.args[0]}")
        return json_response(
            {
                "events": [e._asdict() for e in found[-limit:]] if limit > 0 else [],
                "dropped": relay.events.dropped,
            }
        )

    async def faults(request: web.Request) -> web.StreamResponse:
        return json_response(relay.faults.as_dict())

    async def requests(request: web.Request) -> web.StreamResponse:
        callers: dict[str, int] = request.app[CALLERS]
        return json_response({"by_agent": callers.copy()})

    async def hostile(request: web.Request) -> web.StreamResponse:
        return json_response(relay.hostile.as_dict())

    flavour_options = app.get(OPTIONS)
    flavour = app.get(FLAVOR, "laozhang")

    def set_flavour_options(_: SimulatedRelay, body: _Body) -> Any:
        set_options(flavour_options, body)
        return vars(flavour_options)

    def set_hostile(_: SimulatedRelay, body: _Body) -> Any:
        if body.pop("reset", False):
            relay.hostile.reset()
            if not body:
                return relay.hostile.as_dict()
        api_routes = {
            r.name for r in app.router.routes() if r.name and not r.name.startswith(SIM_ROUTE_PREFIX)
        }
        relay.hostile.set(flavour, body, known_routes=api_routes, resolve=lambda ref: relay.token(ref).id)
        return relay.hostile.as_dict()

    routes: dict[str, dict[str, _Handler]] = {
        "/_sim/truth": {"GET": truth},
        "/_sim/keys": {"GET": keys},
        "/_sim/events": {"GET": events},
        "/_sim/faults": {"GET": faults},
        "/_sim/requests": {"GET": requests},
        "/_sim/options": {"POST": _post(relay, set_flavour_options)},
        "/_sim/hostile": {"GET": hostile, "POST": _post(relay, set_hostile)},
    }
    for path, action in _POSTS.items():
        routes.setdefault(path, {})["POST"] = _post(relay, action)
    for path, methods in routes.items():
        resource = app.router.add_resource(path, name=_route_name(path))
        for method, handler in methods.items():
            resource.add_route(method, handler)


def _route_name(path: str) -> str:
    """/_sim/leak/stop -> sim.leak.stop: the prefix keeps injected faults off the control API."""
    return SIM_ROUTE_PREFIX + path.removeprefix("/_sim/").replace("/", ".").replace("-", "_")
