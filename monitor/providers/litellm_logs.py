"""LiteLLM's spend log (`LiteLLM_SpendLogs`, one row per request) read as RequestRecords.

    GET /spend/logs/v2?start_date=&end_date=&page=&page_size=      current proxies
    GET /spend/logs/ui?...                                         the same, on older ones

Both want `start_date` and `end_date` as `YYYY-MM-DD HH:MM:SS` in UTC (whole seconds; no `T`, no
zone) and compare them with each row's `startTime` inclusively; they page newest first, at most
100 rows a page, and answer `{data, total, page, page_size, total_pages}`. Current proxies stop
counting at 10,000 rows (`total_is_capped`: `total` and `total_pages` are then a floor), so pages
are read until one is short, never by `total_pages` alone. The legacy `GET /spend/logs` is not
used: with dates it sums by day, without them it returns the whole table in one answer.

A row is a request: `request_id` (the table's primary key), `api_key` (the key's hash: keywatch's
token id), `spend` in USD, `prompt_tokens`/`completion_tokens`, `startTime`, `model_group` (the
public model name a key's `models` list uses; `model` is the deployment's), and
`requester_ip_address` (with `use_x_forwarded_for` the whole X-Forwarded-For header: the first
address is the client). Rows with `status: "failure"` cost nothing and are not requests here.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, Final

from monitor.model import RequestRecord, Skip
from monitor.providers.base import ProviderError
from monitor.providers.http import RelayHTTP, RelayResponse, decode_json
from monitor.providers.litellm_keys import litellm_time
from monitor.providers.parse import MAX_TEXT, Malformed, check_count, check_money, opt_float
from monitor.secret import Secret

__all__ = [
    "LOG_PATHS",
    "LOG_SKIP",
    "PAGE_SIZE",
    "SILENT_LOG",
    "SilenceWatch",
    "SpendLog",
    "date_param",
    "error_type",
    "parse_row",
]

LOG_PATHS: Final = ("/spend/logs/v2", "/spend/logs/ui")
LOG_SKIP: Final = "(spend log)"  # the Skip.token of a log window that could not be read
SILENT_LOG: Final = "spend_logs_missing"  # the reason keys spend while the log stays empty
PAGE_SIZE: Final = 100  # the most either endpoint serves (more is a 422)
_MAX_IP = 64


def date_param(ts: float) -> str:
    """A time as the spend log endpoints take it: UTC, whole seconds, `YYYY-MM-DD HH:MM:SS`."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts))


def error_type(response: RelayResponse) -> str:
    """A LiteLLM error's `type` (`auth_error`, `not_found_error`, ...), or the status: never its
    message, which may echo part of a key."""
    try:
        body = decode_json(response)
    except ProviderError:
        body = None
    error = body.get("error") if isinstance(body, dict) else None
    kind = error.get("type") if isinstance(error, dict) else None
    if isinstance(kind, str) and 0 < len(kind) <= 40 and kind.replace("_", "").isalnum():
        return kind
    if isinstance(body, dict) and "detail" in body:
        return "validation error" if response.status_code == 422 else "error"
    return f"HTTP {response.status_code}"


def _ip(row: Mapping[str, Any]) -> str | None:
    value = row.get("requester_ip_address")
    if not isinstance(value, str):
        return None
    first = value.split(",", 1)[0].strip()
    return first[:_MAX_IP] if first else None


def _count(row: Mapping[str, Any], key: str) -> int:
    value = opt_float(row, key)
    return 0 if value is None else check_count(value, key)


def parse_row(row: Any, names: Mapping[str, str]) -> RequestRecord | None:
    """The row as a record; None for a failed request (no spend, not counted)."""
    if type(row) is not dict:
        raise Malformed("log row is not an object")
    if row.get("status") == "failure":
        return None
    request_id, api_key = row.get("request_id"), row.get("api_key")
    if not isinstance(request_id, str) or not 0 < len(request_id) <= MAX_TEXT:
        raise Malformed("log row: missing 'request_id'")
    if not isinstance(api_key, str) or len(api_key) > MAX_TEXT:
        raise Malformed("log row: missing 'api_key'")
    spend = opt_float(row, "spend")
    cost = 0.0 if spend is None else check_money(spend, "spend")
    started = litellm_time(row, "startTime")
    if started is None:
        raise Malformed("log row: missing 'startTime'")
    duration = opt_float(row, "request_duration_ms")
    if duration is None:
        ended = litellm_time(row, "endTime")
        duration = None if ended is None else max(ended - started, 0.0) * 1000
    model = row.get("model_group") or row.get("model")
    return RequestRecord(
        api_key or None,
        names.get(api_key, ""),
        started,
        model[:MAX_TEXT] if isinstance(model, str) else "",
        _ip(row),
        _count(row, "prompt_tokens"),
        _count(row, "completion_tokens"),
        cost,
        None if duration is None else check_count(duration, "request_duration_ms"),
        request_id,
    )


class SpendLog:
    """Pages of the spend log for a window; remembers which endpoint the proxy has."""

    def __init__(self, http: RelayHTTP, admin_token: Secret, *, max_pages: int) -> None:
        self._http = http
        self._token = admin_token
        self._max_pages = max_pages
        self._paths: tuple[str, ...] = LOG_PATHS

    async def rows(self, start: float, end: float) -> list[Any]:
        """Every row with start <= startTime <= end (whole seconds), newest first."""
        params = {"start_date": date_param(start), "end_date": date_param(end), "page_size": PAGE_SIZE}
        rows: list[Any] = []
        page = 1
        while True:
            if page > self._max_pages:
                raise ProviderError(
                    "too_large", f"spend log: more than max_pages ({self._max_pages}) pages in one window"
                )
            body = await self._page({**params, "page": page})
            data = body.get("data")
            if not isinstance(data, list):
                raise ProviderError("malformed", "spend log: no 'data' list")
            rows.extend(data)
            last = body.get("total_pages")
            if not isinstance(last, int) or isinstance(last, bool) or body.get("total_is_capped") is True:
                last = None  # no count, or a floor: read until a short page
            if len(data) < PAGE_SIZE or (last is not None and page >= last):
                return rows
            page += 1

    async def _page(self, params: Mapping[str, Any]) -> dict[str, Any]:
        while True:
            path = self._paths[0]
            response = await self._http.request("GET", path, credential=self._token, params=params)
            if response.status_code == 404 and len(self._paths) > 1:
                self._paths = self._paths[1:]  # an older proxy: the same endpoint under /ui
                continue
            if response.status_code == 404:
                raise ProviderError("unsupported", "this proxy has no paged spend log (/spend/logs/v2, /ui)")
            if response.status_code != 200:
                raise ProviderError(
                    f"http_{response.status_code}",
                    f"GET {path}: {error_type(response)} ({response.status_code})",
                )
            body = decode_json(response)
            if not isinstance(body, dict):
                raise ProviderError("malformed", f"GET {path}: not a page object")
            return body


class SilenceWatch:
    """Notices a proxy that writes no spend log (`disable_spend_logs`): keys' counters rise
    (within a budget period: same `budget_reset_at`) while the log stays empty. Then each poll
    carries a Skip (reason `spend_logs_missing`): keywatch's LiteLLM spend comes from the log."""

    def __init__(self, after: float) -> None:
        self._after = after  # seconds of rising counters and an empty log before it says so
        self._counters: dict[str, tuple[float, float | None]] = {}  # hash -> (spend, budget_reset_at)
        self._since: float | None = None
        self._usd = 0.0

    def check(
        self, counters: list[tuple[str, float, float | None]], rows_read: int | None, now: float
    ) -> list[Skip]:
        """`counters`: (hash, spend, budget_reset_at) of every key listed now; `rows_read`: the
        rows this poll's log window gave, None when no window was read."""
        rise = 0.0
        latest: dict[str, tuple[float, float | None]] = {}
        for token, spend, reset_at in counters:
            before = self._counters.get(token)
            latest[token] = (spend, reset_at)
            if before is not None and before[1] == reset_at and spend > before[0]:
                rise += spend - before[0]
        self._counters = latest
        if rows_read is None:
            return []  # the log was not read: it says nothing
        if rows_read:
            self._since, self._usd = None, 0.0  # the proxy writes its log
            return []
        if rise > 0 and self._since is None:
            self._since = now
        self._usd += rise
        if self._since is None or now - self._since < self._after or self._usd < 0.01:
            return []
        detail = (
            f"keys' counters rose by ${self._usd:.2f} but the spend log shows no request:"
            " is general_settings.disable_spend_logs set? keywatch counts LiteLLM spend from the log"
        )
        return [Skip(LOG_SKIP, SILENT_LOG, detail)]
