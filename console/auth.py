"""Who may do what in the console: a session cookie, CSRF tokens bound to it, and the sign-in
that proves the api_token once.

- Every visitor gets a random session id in an HttpOnly, SameSite=Strict cookie.
- A form's CSRF token is an HMAC of the session id under a per-process secret: a page from
  elsewhere can neither read it nor make it.
- With api_token set, signing in stores HMAC(secret, session, sha256(api_token)) in a second such
  cookie: proof the token was given for this session, never the token itself (a changed token or a
  restart signs everybody out). Every page then needs it, as /api/v1 needs the bearer token.
- Without api_token, changes are allowed only when the daemon listens on loopback."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable
from typing import Final

from starlette.requests import Request
from starlette.responses import Response

from monitor.secret import Secret
from monitor.server import is_loopback

__all__ = ["AUTH_COOKIE", "SESSION_COOKIE", "Guard"]

SESSION_COOKIE: Final = "kw_session"
AUTH_COOKIE: Final = "kw_auth"
NOT_LOOPBACK: Final = (
    "keywatch listens beyond loopback and api_token is not set, so nobody can sign in to change "
    "anything; set api_token in the config to allow actions from the console"
)


class Guard:
    def __init__(self, api_token: Callable[[], Secret], listen: str, *, key: bytes | None = None) -> None:
        self._token = api_token
        self._listen = listen
        self._key = key or secrets.token_bytes(32)

    # --- sessions --------------------------------------------------------------------------------
    @staticmethod
    def session(request: Request) -> str:
        return request.cookies.get(SESSION_COOKIE, "")

    @staticmethod
    def new_session() -> str:
        return secrets.token_urlsafe(32)

    def _mac(self, *parts: bytes) -> str:
        return hmac.new(self._key, b"\x00".join(parts), hashlib.sha256).hexdigest()

    def csrf(self, session: str) -> str:
        return self._mac(b"csrf", session.encode()) if session else ""

    def csrf_ok(self, request: Request, given: str) -> bool:
        session = self.session(request)
        return bool(session) and hmac.compare_digest(given.encode(), self.csrf(session).encode())

    # --- the api_token -------------------------------------------------------------------------
    @property
    def token_set(self) -> bool:
        return bool(self._token())

    def _proof(self, session: str) -> str:
        digest = hashlib.sha256(self._token().reveal().encode()).digest()
        return self._mac(b"auth", session.encode(), digest)

    def token_matches(self, given: str) -> bool:
        secret = self._token()
        return bool(secret) and hmac.compare_digest(given.encode(), secret.reveal().encode())

    def signed_in(self, request: Request) -> bool:
        """Without api_token everyone is (reads are open, as on /api/v1)."""
        if not self.token_set:
            return True
        session = self.session(request)
        proof = request.cookies.get(AUTH_COOKIE, "")
        return bool(session and proof) and hmac.compare_digest(proof.encode(), self._proof(session).encode())

    def why_read_only(self, request: Request) -> str:
        """ "" when this visitor may change things, else why not."""
        if self.token_set:
            return "" if self.signed_in(request) else "sign in with the api_token first"
        return "" if is_loopback(self._listen) else NOT_LOOPBACK

    # --- cookies -------------------------------------------------------------------------------
    def set_session(self, response: Response, request: Request, session: str) -> None:
        _cookie(response, request, SESSION_COOKIE, session)

    def sign_in(self, response: Response, request: Request, session: str) -> None:
        _cookie(response, request, AUTH_COOKIE, self._proof(session))


def _cookie(response: Response, request: Request, name: str, value: str) -> None:
    response.set_cookie(
        name,
        value,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/",
    )
