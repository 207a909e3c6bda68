"""Calls to a one-api family console (`/api/...`): the access token as sent, new-api's
`New-Api-User`, and the `{success, message, data}` envelope read strictly.

one-api answers an invalid access token with HTTP 200 and `success: false`: that is an auth
failure, reported as AuthError, never as an empty token list. Other `success: false` answers are
ProviderError("api_error"). A redirect (a route without its trailing slash, or base_url pointing
at the web UI) is an error too: keywatch's client does not follow redirects."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from monitor.providers.base import AuthError, ProviderError
from monitor.providers.http import RelayHTTP, RelayResponse, decode_json
from monitor.secret import Secret

__all__ = ["ConsoleAPI", "ConsoleRejected"]

# Words of one-api/new-api's permission messages (they are Chinese on a stock build).
_AUTH_MARKERS = ("access token", "无权", "未登录", "new-api-user", "unauthorized", "not logged in", "封禁")


class ConsoleRejected(ProviderError):
    """`success: false` for a reason other than auth: the relay's message says why."""

    def __init__(self, message: str) -> None:
        super().__init__("api_error", message)


class ConsoleAPI:
    def __init__(self, http: RelayHTTP, access_token: Secret, *, user_id: int | None = None) -> None:
        self._http = http
        self._token = access_token
        self._headers = {"New-Api-User": str(user_id)} if user_id is not None else {}

    async def call(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
    ) -> tuple[Any, RelayResponse]:
        """The envelope's `data` and the response (for its Date header)."""
        try:
            response = await self._http.request(
                method,
                path,
                credential=self._token,
                scheme="",
                headers=self._headers,
                params=params,
                json=json,
            )
        except AuthError as exc:
            if self._headers:
                raise AuthError(f"admin token or user_id (New-Api-User) rejected: {exc}") from None
            raise
        status = response.status_code
        if 300 <= status < 400:
            where = response.headers.get("Location", "?")
            raise ProviderError(
                "redirect", f"{method} {path}: the relay redirects to {where} (check base_url)"
            )
        if status != 200:
            raise ProviderError(f"http_{status}", f"{method} {path}: HTTP {status}")
        body = decode_json(response)
        if not isinstance(body, dict) or not isinstance(body.get("success"), bool):
            raise ProviderError("malformed", f"{method} {path}: no success/message/data envelope")
        if not body["success"]:
            message = str(body.get("message") or "")[:200]
            if any(marker in message.lower() for marker in _AUTH_MARKERS):
                raise AuthError(f"admin token rejected ({message})")
            raise ConsoleRejected(f"{method} {path}: {message or 'success: false'}")
        return body.get("data"), response

    async def probe(self, path: str, key: Secret) -> int:
        """The status a relay call made with a token's own key gets (`Bearer sk-<key>`)."""
        response = await self._http.request("GET", path, credential=key, admin=False)
        return response.status_code
