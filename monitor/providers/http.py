"""The HTTP edge shared by all relay adapters: one fast client, retries with backoff, and
errors turned into ProviderError reasons (the `reason` label of keywatch_poll_errors_total).

Nothing a relay sends can hold a poll or the process hostage:
- every request has a whole-request deadline (`timeout`: connect to last byte), so a relay that
  trickles a byte a second is cut off like one that does not answer (reason `timeout`);
- every answer has a size cap, raw and decoded (`max_response_mb`): bodies are read in chunks
  and decompressed here, `max_length` at a time, so a 1 GiB gzip bomb costs at most one chunk of
  memory before it is refused (reason `too_large`, not retried: it would be the same again).

Adapters are written against httpx's client (tests give it an httpx.MockTransport). When the
client runs on the aiohttp transport, RelayHTTP sends through that transport's aiohttp session
directly: httpx's own request and response models cost ~200 µs a call, which at 10,000
per-key usage calls is most of a cycle (bench/poll_cycle.py). Both paths return a RelayResponse
and map errors the same way."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import random
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp
import httpx
import orjson
from httpx_aiohttp import AiohttpTransport

from monitor.providers.base import AuthError, ProviderError
from monitor.secret import Secret

__all__ = ["RelayHTTP", "RelayResponse", "decode_json", "make_client"]

log = logging.getLogger("keywatch.http")

Sleep = Callable[[float], Awaitable[None]]
RETRY_AFTER_CAP = 30.0  # a relay asking for minutes is treated as down for this cycle instead
DEFAULT_MAX_BYTES = 64 * 1024 * 1024  # ~130k tokens in one laozhang list; `max_response_mb` raises it
_CHUNK = 256 * 1024  # raw bytes read, and decoded bytes produced, per step
_ENCODINGS = "gzip, deflate"  # what we can decode ourselves, within the cap


class TooLarge(ProviderError):
    def __init__(self, path: str, limit: int) -> None:
        super().__init__("too_large", f"{path}: the answer is larger than {limit // (1024 * 1024)} MiB")


def make_client(*, timeout: float, max_connections: int = 64, user_agent: str = "") -> httpx.AsyncClient:
    """httpx's API on aiohttp's connection pool: httpcore's pool saturates a core at ~300 req/s
    under concurrency (encode/httpx#3215); aiohttp reaches the server's ceiling. `user_agent`:
    how keywatch introduces itself to a relay (version and instance: whose polls these are)."""
    limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
    transport = AiohttpTransport(limits=limits, trust_env=False)
    headers = {"User-Agent": user_agent} if user_agent else None
    return httpx.AsyncClient(
        transport=transport, timeout=httpx.Timeout(timeout), follow_redirects=False, headers=headers
    )


@dataclass(frozen=True, slots=True)
class RelayResponse:
    status_code: int
    content: bytes
    headers: Mapping[str, str]  # case-insensitive
    path: str

    def json(self) -> Any:
        return decode_json(self)


BIG_DOCUMENT = 1 << 20  # bytes of JSON from which the collector is kept away from the document


@contextlib.contextmanager
def _no_collection(size: int) -> Iterator[None]:
    """A big JSON document (a 100,000-token list is ~300,000 containers) is kept away from the
    cyclic collector: off while it is built (it would run every few hundred containers, walking
    the growing document again and again), and the document frozen once built (young collections
    would walk it twice more while the poll parses it: 0.3-0.4 s stops each at 100,000 tokens).
    JSON makes no cycles: reference counting frees the document when the poll is done with it;
    monitor.gcpolicy's daily full collection thaws whatever else was frozen along."""
    if size < BIG_DOCUMENT:
        yield
        return
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if enabled:
            gc.enable()


def decode_json(response: RelayResponse) -> Any:
    """The body as JSON, or ProviderError('malformed').

    orjson refuses a whole document for one number it cannot hold (`1e400`) or a bare `NaN`;
    the standard library reads those as floats, which the field readers then refuse for that
    entry alone (`monitor.providers.parse`): one bad entry must not fail the whole provider."""
    try:
        with _no_collection(len(response.content)):
            return orjson.loads(response.content)
    except orjson.JSONDecodeError as exc:
        try:
            return json.loads(response.content)
        except (ValueError, RecursionError):
            raise ProviderError("malformed", f"{response.path}: invalid JSON ({exc.msg})") from None


class RelayHTTP:
    """Requests to one relay, retried on timeouts, connection errors, 5xx and 429."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        base_url: str,
        *,
        retries: int = 3,
        backoff: float = 0.5,
        sleep: Sleep = asyncio.sleep,
        on_retry: Callable[[str], None] | None = None,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        self._client = client
        self._base = base_url.rstrip("/")
        self._retries = retries
        self._backoff = backoff
        self._sleep = sleep
        self._on_retry = on_retry
        self._rng = random.Random()
        self._max_bytes = max_bytes
        t = client.timeout
        # The whole request, connect to last byte: `sock_read` alone never ends a trickle.
        self._deadline = float(t.read or t.connect or 10.0)
        self._timeout = aiohttp.ClientTimeout(total=self._deadline, sock_connect=t.connect, sock_read=t.read)
        self._aiohttp: aiohttp.ClientSession | None = None

    async def request(
        self,
        method: str,
        path: str,
        *,
        credential: Secret,
        scheme: str = "Bearer",
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        admin: bool = True,
        auth_header: str = "Authorization",
    ) -> RelayResponse:
        """The relay's answer once it is not a transient failure. `auth_header`: where the
        credential goes (Anthropic: `x-api-key`, with no Authorization header at all).

        Raises AuthError for 401/403 on an admin call (never retried), and ProviderError with a
        reason for transient failures that outlived the retries. Other statuses are returned.
        """
        auth = f"{scheme} {credential.reveal()}" if scheme else credential.reveal()
        all_headers = {auth_header: auth, **(headers or {})}
        url = self._base + path
        attempt = 0
        while True:
            reason, wait, detail = await self._try(method, url, all_headers, params, json, admin)
            if reason is None:
                assert isinstance(detail, RelayResponse)
                return detail
            if attempt >= self._retries:
                raise ProviderError(reason, f"{method} {path}: {detail} (after {attempt + 1} tries)")
            attempt += 1
            if self._on_retry:
                self._on_retry(reason)
            delay = (
                wait if wait is not None else self._backoff * 2 ** (attempt - 1) * (0.5 + self._rng.random())
            )
            log.debug("retrying %s %s in %.2fs: %s", method, path, delay, detail)
            await self._sleep(delay)

    def _session(self) -> aiohttp.ClientSession | None:
        if self._aiohttp is None or self._aiohttp.closed:
            transport = getattr(self._client, "_transport", None)
            if not isinstance(transport, AiohttpTransport):
                return None
            if not isinstance(transport.client, aiohttp.ClientSession):
                transport.client = transport.get_client()
            self._aiohttp = transport.client
        return self._aiohttp

    async def _try(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        params: Mapping[str, Any] | None,
        json: Any,
        admin: bool,
    ) -> tuple[str | None, float | None, RelayResponse | str]:
        session = self._session()
        try:
            async with asyncio.timeout(self._deadline):
                if session is not None:
                    response = await self._send_aiohttp(session, method, url, headers, params, json)
                else:
                    response = await self._send_httpx(method, url, headers, params, json)
        except (httpx.TimeoutException, TimeoutError):
            return "timeout", None, f"no whole answer within {self._deadline:g}s"
        except (httpx.TransportError, aiohttp.ClientError) as exc:
            return "connect", None, f"connection failed ({type(exc).__name__})"
        status = response.status_code
        if status in (401, 403) and admin:
            raise AuthError(f"admin token rejected ({status} from {response.path})")
        if status == 429:
            return "rate_limited", _retry_after(response), "429 Too Many Requests"
        if status >= 500:
            return "http_5xx", None, f"HTTP {status}"
        return None, None, response

    async def _send_httpx(
        self, method: str, url: str, headers: Mapping[str, str], params: Mapping[str, Any] | None, json: Any
    ) -> RelayResponse:
        request = self._client.build_request(method, url, headers=headers, params=params, json=json)
        r = await self._client.send(request, stream=True)
        try:  # httpx decodes; its chunks are bounded, so counting them bounds memory
            body = await _capped(r.aiter_bytes(), self._max_bytes, r.request.url.path)
        finally:
            await r.aclose()
        return RelayResponse(r.status_code, body, r.headers, r.request.url.path)

    async def _send_aiohttp(
        self,
        session: aiohttp.ClientSession,
        method: str,
        url: str,
        headers: Mapping[str, str],
        params: Mapping[str, Any] | None,
        json: Any,
    ) -> RelayResponse:
        async with session.request(
            method,
            url,
            headers={
                "Accept-Encoding": _ENCODINGS,
                "User-Agent": self._client.headers["user-agent"],
                **headers,
            },
            params=params,
            json=json,
            timeout=self._timeout,
            allow_redirects=False,
            auto_decompress=False,  # decoded here, within the cap
        ) as r:
            path = r.url.path
            declared = r.content_length
            if declared is not None and declared > self._max_bytes:
                raise TooLarge(path, self._max_bytes)
            raw = r.content.iter_chunked(_CHUNK)
            encoding = r.headers.get("Content-Encoding", "identity").strip().lower()
            body = await _capped(_decoded(raw, encoding, path), self._max_bytes, path)
            return RelayResponse(r.status, body, r.headers, path)


async def _capped(chunks: AsyncIterator[bytes], limit: int, path: str) -> bytes:
    parts: list[bytes] = []
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        if size > limit:
            raise TooLarge(path, limit)
        parts.append(chunk)
    return b"".join(parts)


async def _decoded(raw: AsyncIterator[bytes], encoding: str, path: str) -> AsyncIterator[bytes]:
    """The body decoded `_CHUNK` bytes at a time: decompressobj's max_length keeps a bomb's output
    to one chunk per step, so the cap in `_capped` ends it before it costs memory."""
    if encoding in ("identity", ""):
        async for chunk in raw:
            yield chunk
        return
    if encoding not in ("gzip", "x-gzip", "deflate"):
        raise ProviderError("malformed", f"{path}: unsupported Content-Encoding {encoding[:20]!r}")
    inflater = zlib.decompressobj(32 + 15)  # a gzip or a zlib header, told apart by zlib
    try:
        async for chunk in raw:
            data = chunk
            while data:
                out = inflater.decompress(data, _CHUNK)
                data = inflater.unconsumed_tail
                if out:
                    yield out
        tail = inflater.flush()
        if tail:
            yield tail
    except zlib.error as exc:
        raise ProviderError("malformed", f"{path}: the compressed answer is corrupt ({exc})") from None


def _retry_after(response: RelayResponse) -> float | None:
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):
            return None
    return min(max(seconds, 0.0), RETRY_AFTER_CAP)
