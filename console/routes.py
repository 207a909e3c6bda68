"""The console's routes, mounted by the composition root next to /api/v1. Reads come from a
ConsoleData; every change is a GET confirmation page and a POST carrying the CSRF token."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable, Sequence
from typing import Final
from urllib.parse import parse_qs, urlencode

from starlette.requests import ClientDisconnect, Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Match, Route, Router
from starlette.types import ASGIApp, Receive, Scope, Send

from console import pages
from console.auth import Guard
from console.charts import DAY, DAYS, daily_spend, heatmap_svg, hour_of_week, spend_svg
from console.data import ConsoleData, TokenView
from console.pages import Access, Form, e, token_url
from console.static import CSS
from monitor.durations import parse_duration
from monitor.secret import Secret
from monitor.server import BodyTooLarge, read_body

__all__ = ["PAGE_SIZE", "ConsoleFront", "routes", "search"]

PAGE_SIZE: Final = 50
MAX_FORM_BYTES: Final = 16 * 1024
MAX_MATCHERS_IN_FORM: Final = 16
HEADERS: Final = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

Handler = Callable[[Request, Access], Awaitable[Response]]


def _html(body: str, status: int = 200) -> Response:
    return Response(body, status_code=status, media_type="text/html; charset=utf-8", headers=HEADERS)


def search(tokens: Sequence[TokenView], q: str) -> list[TokenView]:
    """Tokens whose provider/name contains every word of `q` (case-insensitive)."""
    words = q.lower().split()
    if not words:
        return list(tokens)
    return [t for t in tokens if all(w in t.ref.lower() for w in words)]


def routes(
    data: ConsoleData, *, api_token: Callable[[], Secret], listen: str, guard: Guard | None = None
) -> list[BaseRoute]:
    guard = guard or Guard(api_token, listen)

    def page(handler: Handler, *, write: bool = False) -> Callable[[Request], Awaitable[Response]]:
        """Sessions, sign-in and (for writes) the CSRF check around a handler."""

        async def endpoint(request: Request) -> Response:
            session = guard.session(request)
            fresh = not session
            if fresh:
                session = guard.new_session()
            if not guard.signed_in(request):
                if write:
                    response = _html(
                        pages.message_page("Refused", "sign in with the api_token first", ok=False), 403
                    )
                else:
                    response = RedirectResponse(
                        "/login?" + urlencode({"next": _local(request.url.path)}), 303
                    )
            else:
                why = guard.why_read_only(request)
                access = Access(can_act=not why, why_not=why, csrf=guard.csrf(session))
                if write and why:
                    response = _html(pages.message_page("Refused", f"refused: {why}", ok=False), 403)
                else:
                    response = await handler(request, access)
            if fresh:
                guard.set_session(response, request, session)
            return response

        return endpoint

    async def read_form(request: Request) -> dict[str, list[str]] | Response:
        try:
            body = await read_body(request, MAX_FORM_BYTES)
        except BodyTooLarge as exc:
            return _html(pages.message_page("Refused", str(exc), ok=False), 413)
        except ClientDisconnect:
            return Response(status_code=400)
        form = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True, max_num_fields=64)
        if not guard.csrf_ok(request, _one(form, "csrf")):
            return _html(
                pages.message_page(
                    "Refused",
                    "refused: the form expired or came from elsewhere; reload and try again",
                    ok=False,
                ),
                403,
            )
        return form

    def find(request: Request) -> TokenView | None:
        provider, name = request.path_params["provider"], request.path_params["name"]
        return next((t for t in data.tokens() if t.provider == provider and t.name == name), None)

    def not_found(what: str) -> Response:
        return _html(pages.message_page("Not found", f"no token {what}", ok=False, back="/tokens"), 404)

    # --- reads -----------------------------------------------------------------------------------
    async def overview(_: Request, access: Access) -> Response:
        tokens, providers, alerts, now = data.tokens(), data.providers(), data.alerts(), data.now()
        trail = await asyncio.to_thread(data.audit_trail, 1000)
        quarantined = pages.quarantined_refs(trail)
        return _html(
            pages.overview_page(
                tokens=tokens, providers=providers, alerts=alerts, quarantined=quarantined, now=now
            )
        )

    async def token_list(request: Request, _: Access) -> Response:
        q = request.query_params.get("q", "")[:200]
        found = search(data.tokens(), q)
        pages_n = max(1, math.ceil(len(found) / PAGE_SIZE))
        n = min(_page_number(request), pages_n)
        rows = found[(n - 1) * PAGE_SIZE : n * PAGE_SIZE]
        return _html(pages.tokens_page(rows=rows, q=q, page=n, pages=pages_n, total=len(found)))

    async def token_detail(request: Request, access: Access) -> Response:
        token = find(request)
        if token is None:
            return not_found(f"{request.path_params['provider']}/{request.path_params['name']}")
        now = data.now()
        since = now // DAY * DAY - (DAYS - 1) * DAY
        points, trail = await asyncio.gather(
            asyncio.to_thread(data.hourly, token, since), asyncio.to_thread(data.audit_trail, 1000)
        )
        mine = [r for r in trail if r.provider == token.provider and r.token_id == token.token_id]
        alerts = [
            a for a in data.alerts() if a.get("provider") == token.provider and a.get("token") == token.name
        ]
        silences = [s for s in data.silences() if _names(s, token)]
        provider = next((p for p in data.providers() if p.name == token.provider), None)
        return _html(
            pages.token_page(
                token=token,
                spend_svg=spend_svg(
                    daily_spend(points, now), title=f"Daily spend of {token.ref}, last {DAYS} days"
                ),
                heat_svg=heatmap_svg(hour_of_week(points), title=f"Requests of {token.ref} by hour of week"),
                alerts=alerts,
                silences=silences,
                trail=mine,
                quarantined=pages.quarantined_refs(mine).get((token.provider, token.token_id)),
                can_restore=provider is not None and provider.can_restore,
                access=access,
            )
        )

    async def alerts_page(request: Request, access: Access) -> Response:
        return _html(pages.alerts_page(data.alerts(), data.group_by(), access, page=_page_number(request)))

    async def silences_page(_: Request, access: Access) -> Response:
        return _html(pages.silences_page(await asyncio.to_thread(data.silences), access))

    async def audit_page(_: Request, __: Access) -> Response:
        hygiene = data.hygiene()
        trail = await asyncio.to_thread(data.audit_trail, 200)
        return _html(pages.audit_page(hygiene, trail))

    async def css(_: Request) -> Response:
        return Response(CSS, media_type="text/css; charset=utf-8", headers={"Cache-Control": "max-age=3600"})

    # --- sign-in ---------------------------------------------------------------------------------
    async def login_form(request: Request) -> Response:
        session = guard.session(request) or guard.new_session()
        nxt = _local(request.query_params.get("next", "/"))
        response = _html(pages.login_page(guard.csrf(session), next_url=nxt))
        guard.set_session(response, request, session)
        return response

    async def login(request: Request) -> Response:
        form = await read_form(request)
        if isinstance(form, Response):
            return form
        nxt = _local(_one(form, "next") or "/")
        if not guard.token_set:
            return RedirectResponse(nxt, 303)
        if not guard.token_matches(_one(form, "token")):
            session = guard.session(request)
            return _html(pages.login_page(guard.csrf(session), error="wrong token", next_url=nxt), 401)
        session = guard.new_session()  # a new session once signed in: nothing set before carries over
        response = RedirectResponse(nxt, 303)
        guard.set_session(response, request, session)
        guard.sign_in(response, request, session)
        return response

    # --- silences --------------------------------------------------------------------------------
    def silence_form(matchers: Sequence[str], access: Access, error: str = "") -> Response:
        boxes = "".join(
            f'<label for="m{i}">Matcher {i + 1}</label><input type="text" id="m{i}" name="m" value="{e(m)}">'
            for i, m in enumerate([*matchers, ""][:MAX_MATCHERS_IN_FORM])
        )
        extra = (
            f'{boxes}<label for="duration">For how long</label>'
            '<input type="text" id="duration" name="duration" value="1h" required>'
            '<label for="comment">Comment (why)</label><input type="text" id="comment" name="comment" required maxlength="1024">'
        )
        shown = " ".join(matchers) or "the matchers below"
        form = Form(
            action="/silences/new",
            title="New silence",
            statement=f"Silence alerts matching {shown}: they still show here but notify nobody until it ends.",
            button="Create silence",
            fields={},
            reason=False,
            back="/silences",
        )
        return _html(pages.confirm_page(form, access, extra=extra, error=error), 400 if error else 200)

    async def new_silence(request: Request, access: Access) -> Response:
        return silence_form(request.query_params.getlist("m")[:MAX_MATCHERS_IN_FORM], access)

    async def silence_token(request: Request, access: Access) -> Response:
        token = find(request)
        if token is None:
            return not_found(request.path_params["name"])
        return silence_form([f"provider={token.provider}", f"token={token.name}"], access)

    async def create_silence(request: Request, access: Access) -> Response:
        form = await read_form(request)
        if isinstance(form, Response):
            return form
        matchers = [m.strip() for m in form.get("m", []) if m.strip()]
        try:
            duration = parse_duration(_one(form, "duration") or "1h")
        except ValueError as exc:
            return silence_form(matchers, access, error=str(exc))
        outcome = await asyncio.to_thread(
            data.add_silence, matchers, duration=duration, comment=_one(form, "comment")
        )
        if not outcome.ok:
            return silence_form(matchers, access, error=outcome.message)
        return _html(pages.message_page("Silence created", outcome.message, ok=True, back="/silences"))

    def silence_id(request: Request) -> int | None:
        text = request.path_params["id"]
        return int(text) if text.isascii() and text.isdigit() and len(text) <= 19 else None

    async def confirm_expire(request: Request, access: Access) -> Response:
        sid = silence_id(request)
        if sid is None:
            return _html(pages.message_page("Not found", "no such silence", ok=False, back="/silences"), 404)
        form = Form(
            action=f"/silences/{sid}/expire",
            title=f"Expire silence {sid}",
            statement=f"Expire silence {sid} now: the alerts it mutes notify again.",
            button="Expire it",
            fields={},
            reason=False,
            back="/silences",
        )
        return _html(pages.confirm_page(form, access))

    async def expire(request: Request, _: Access) -> Response:
        form = await read_form(request)
        if isinstance(form, Response):
            return form
        sid = silence_id(request)
        outcome = await asyncio.to_thread(data.expire_silence, sid or 0)
        return _html(
            pages.message_page("Expire silence", outcome.message, ok=outcome.ok, back="/silences"),
            200 if outcome.ok else 404,
        )

    # --- revoke and restore ----------------------------------------------------------------------
    def restorable(token: TokenView) -> str:
        """ "" when the console offers restoring it, else why not."""
        provider = next((p for p in data.providers() if p.name == token.provider), None)
        if provider is None or not provider.can_restore:
            return f"{token.provider} cannot disable a key (its quarantine deletes it): nothing to restore"
        return ""

    async def confirm_revoke(request: Request, access: Access) -> Response:
        token = find(request)
        if token is None:
            return not_found(request.path_params["name"])
        protected = " It is a PROTECTED token." if token.protected else ""
        form = Form(
            action=token_url(token.provider, token.name, "revoke"),
            title=f"Revoke {token.ref}",
            statement=f"Quarantine {token.ref}: keywatch disables (or, where the relay cannot, deletes) its key at {token.provider}.{protected}",
            button=f"Revoke {token.ref}",
            fields={},
            danger=True,
            back=token_url(token.provider, token.name),
        )
        return _html(pages.confirm_page(form, access))

    async def confirm_restore(request: Request, access: Access) -> Response:
        token = find(request)
        if token is None:
            return not_found(request.path_params["name"])
        why = restorable(token)
        if why:
            return _html(
                pages.message_page(
                    "Cannot restore", why, ok=False, back=token_url(token.provider, token.name)
                ),
                409,
            )
        form = Form(
            action=token_url(token.provider, token.name, "restore"),
            title=f"Restore {token.ref}",
            statement=f"Re-enable {token.ref} at {token.provider}: it was quarantined as leaked. Only do this after a review.",
            button=f"Restore {token.ref}",
            fields={},
            back=token_url(token.provider, token.name),
        )
        return _html(pages.confirm_page(form, access))

    def act(verb: str) -> Handler:
        async def handler(request: Request, _: Access) -> Response:
            form = await read_form(request)
            if isinstance(form, Response):
                return form
            token = find(request)
            if token is None:
                return not_found(request.path_params["name"])
            back = token_url(token.provider, token.name)
            reason = _one(form, "reason").strip()[:500]
            if not reason:
                return _html(
                    pages.message_page(
                        verb.title(),
                        "a reason is required (it is kept in the audit trail)",
                        ok=False,
                        back=back,
                    ),
                    400,
                )
            if verb == "restore":
                why = restorable(token)
                if why:
                    return _html(pages.message_page("Cannot restore", why, ok=False, back=back), 409)
                outcome = await data.restore(token, reason)
            else:
                outcome = await data.revoke(token, reason)
            return _html(
                pages.message_page(verb.title(), outcome.message, ok=outcome.ok, back=back),
                200 if outcome.ok else 409,
            )

        return handler

    return [
        Route("/", page(overview), methods=["GET"]),
        Route("/tokens", page(token_list), methods=["GET"]),
        Route("/tokens/{provider}/{name:path}", page(token_detail), methods=["GET"]),
        Route("/alerts", page(alerts_page), methods=["GET"]),
        Route("/silences", page(silences_page), methods=["GET"]),
        Route("/silences/new", page(new_silence), methods=["GET"]),
        Route("/silences/new", page(create_silence, write=True), methods=["POST"]),
        Route("/silences/{id}/expire", page(confirm_expire), methods=["GET"]),
        Route("/silences/{id}/expire", page(expire, write=True), methods=["POST"]),
        Route("/audit", page(audit_page), methods=["GET"]),
        Route("/actions/silence/{provider}/{name:path}", page(silence_token), methods=["GET"]),
        Route("/actions/revoke/{provider}/{name:path}", page(confirm_revoke), methods=["GET"]),
        Route("/actions/revoke/{provider}/{name:path}", page(act("revoke"), write=True), methods=["POST"]),
        Route("/actions/restore/{provider}/{name:path}", page(confirm_restore), methods=["GET"]),
        Route("/actions/restore/{provider}/{name:path}", page(act("restore"), write=True), methods=["POST"]),
        Route("/login", login_form, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/static/console.css", css, methods=["GET"]),
    ]


def _one(form: dict[str, list[str]], key: str) -> str:
    values = form.get(key)
    return values[0] if values else ""


def _local(path: str) -> str:
    """Only a path on this console is a place to go after signing in (no open redirect)."""
    return path if path.startswith("/") and not path.startswith("//") and "\\" not in path else "/"


def _names(silence: object, token: TokenView) -> bool:
    """Whether a silence row's matchers name the token (token=NAME among them)."""
    matchers = silence.get("matchers") if isinstance(silence, dict) else None
    if not isinstance(matchers, list):
        return False
    return f'token="{token.name}"' in matchers or f"token={token.name}" in matchers


class ConsoleFront:
    """ASGI middleware: requests for a console route go to the console's own router, the rest to
    the app it wraps. The console's HTML pages stay out of the API's route table (and so out of
    docs/openapi.json, which documents the API); /api/* never reaches the console."""

    def __init__(self, app: ASGIApp, routes: Sequence[BaseRoute]) -> None:
        self.app = app
        self.router = Router(routes=list(routes))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and any(r.matches(scope)[0] != Match.NONE for r in self.router.routes):
            await self.router(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _page_number(request: Request) -> int:
    """`?page=N`: 1 up to 999,999,999; anything else is page 1."""
    text = request.query_params.get("page", "1")[:9]
    return max(1, int(text)) if text.isascii() and text.isdigit() else 1
