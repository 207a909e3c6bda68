"""Calls to Anthropic's Admin API: the headers it wants and the errors it answers with.

Every call carries `x-api-key: <admin key>` and `anthropic-version: 2023-06-01` (a request
without the version header is a 400) and no `Authorization` header (Anthropic may refuse a request
carrying both). They go through `RelayHTTP.request` like every relay call: its deadline, size cap,
error mapping and retries (5xx, 529 overloaded, timeouts, and 429 with its `retry-after`);
401/403 are AuthError, never retried.

Errors are `{"type": "error", "error": {"type": "not_found_error", "message": ...}}`: only the
error type (a short identifier) reaches keywatch's messages, never the text (a hostile relay
could echo a secret there).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from monitor.providers.base import ProviderError
from monitor.providers.http import RelayHTTP, RelayResponse, decode_json
from monitor.secret import Secret

__all__ = ["API_VERSION", "AdminAPI", "error_type"]

API_VERSION = "2023-06-01"
_ERROR_TYPE = re.compile(r"[a-z_]{1,40}")


def error_type(response: RelayResponse) -> str:
    """The error's `type` (`invalid_request_error`, ...), or `HTTP <status>` when there is none."""
    try:
        body = decode_json(response)
    except ProviderError:
        body = None
    error = body.get("error") if isinstance(body, dict) else None
    kind = error.get("type") if isinstance(error, dict) else None
    if isinstance(kind, str) and _ERROR_TYPE.fullmatch(kind):
        return kind
    return f"HTTP {response.status_code}"


class AdminAPI:
    def __init__(self, http: RelayHTTP, admin_key: Secret) -> None:
        self._http = http
        self._key = admin_key

    async def get(self, path: str, params: Mapping[str, Any] | None = None) -> RelayResponse:
        return await self._send("GET", path, params, None)

    async def post(self, path: str, body: Any) -> RelayResponse:
        return await self._send("POST", path, None, body)

    async def get_json(self, path: str, params: Mapping[str, Any] | None = None) -> tuple[Any, RelayResponse]:
        """The decoded body of a 200 answer; ProviderError(`http_<status>`) for any other."""
        response = await self.get(path, params)
        if response.status_code != 200:
            raise ProviderError(
                f"http_{response.status_code}", f"GET {path}: {error_type(response)} ({response.status_code})"
            )
        return decode_json(response), response

    async def _send(
        self, method: str, path: str, params: Mapping[str, Any] | None, body: Any
    ) -> RelayResponse:
        return await self._http.request(
            method,
            path,
            credential=self._key,
            scheme="",
            auth_header="x-api-key",
            headers={"anthropic-version": API_VERSION},
            params=params,
            json=body,
        )
