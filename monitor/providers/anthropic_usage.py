"""Per-key money for Anthropic API keys: the messages usage report priced, calibrated by the bill.

`GET /v1/organizations/usage_report/messages` counts tokens per API key (grouped by
`api_key_id`, `model` and `service_tier`) in 1-minute buckets, with no money and no request
count; `GET /v1/organizations/cost_report` has money, but per day and per workspace or
description (model, token type), never per key. So each key's tokens are priced at Claude list
prices (`anthropic_pricing`: five token classes, batch half price, web searches) and the token
part is scaled by a calibration factor: the latest settled day's billed token cost over that
day's list-priced token usage. Priority-tier usage is left out of that ratio (the cost report
does not bill it). A day's keys then add up to the bill while spend shows within minutes, per
key, and a counted row never changes afterwards.

Buckets are read once settled (see `AnthropicProvider.usage_settle`), one RequestRecord per
(key, model, service tier, bucket) with request id `<bucket start>:<model>:<tier>` and
`requests=0` (the report counts none); the store keeps each once. Results with absurd counts
are left out with a Skip, the rest of the window still counts.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from monitor.model import RequestRecord, Skip
from monitor.providers.anthropic_api import AdminAPI
from monitor.providers.anthropic_pricing import TokenCounts, price_of
from monitor.providers.base import ProviderError
from monitor.providers.openai_usage import DAY, calibration_day
from monitor.providers.parse import MAX_COUNT, MAX_TEXT, Malformed, opt_time

__all__ = ["USAGE_PATH", "USAGE_SKIP", "AnthropicUsage", "Window", "counts_of", "rfc3339"]

log = logging.getLogger("keywatch.providers.anthropic")

USAGE_PATH = "/v1/organizations/usage_report/messages"
COST_PATH = "/v1/organizations/cost_report"
BUCKET = 60
PAGE_BUCKETS = 120  # 1-minute buckets a page (the report allows up to 1440)
USAGE_SKIP = "(usage)"  # the Skip.token of usage that could not be read or counted
_FACTOR_RANGE = (0.25, 4.0)  # beyond it the price table is wrong, not the bill: do not scale
_UNBILLED_TIERS = frozenset({"priority"})  # billed by commitment, not in the cost report
CALIBRATION_RETRY = 600.0  # after a failed calibration, list prices (or the last factor) this long


def rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _count(value: Any, key: str) -> int:
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        raise Malformed(f"usage result: '{key}' is not a count")
    if value < 0:
        raise Malformed(f"usage result: '{key}' is negative", "negative_usage")
    if value > MAX_COUNT:
        raise Malformed(f"usage result: '{key}' is over {MAX_COUNT:.0e}", "absurd_value")
    return int(value)


def counts_of(r: dict[str, Any]) -> TokenCounts:
    """A result's token counts, each checked (Malformed names the field and the reason)."""
    cache = r.get("cache_creation")
    tools = r.get("server_tool_use")
    if cache is not None and not isinstance(cache, dict):
        raise Malformed("usage result: 'cache_creation' is not an object")
    if tools is not None and not isinstance(tools, dict):
        raise Malformed("usage result: 'server_tool_use' is not an object")
    cache, tools = cache or {}, tools or {}
    return TokenCounts(
        uncached_input=_count(r.get("uncached_input_tokens"), "uncached_input_tokens"),
        cache_write_5m=_count(cache.get("ephemeral_5m_input_tokens"), "ephemeral_5m_input_tokens"),
        cache_write_1h=_count(cache.get("ephemeral_1h_input_tokens"), "ephemeral_1h_input_tokens"),
        cache_read=_count(r.get("cache_read_input_tokens"), "cache_read_input_tokens"),
        output=_count(r.get("output_tokens"), "output_tokens"),
        web_searches=_count(tools.get("web_search_requests"), "web_search_requests"),
    )


def _label(r: dict[str, Any], key: str, default: str) -> str:
    value = r.get(key)
    return value if isinstance(value, str) and 0 < len(value) <= MAX_TEXT else default


@dataclass(slots=True)
class Window:
    """What one window read: its records, the skips, and the (key, row id) pairs to carry."""

    records: list[RequestRecord]
    skipped: list[Skip]
    carried: set[tuple[str, str]]


class AnthropicUsage:
    def __init__(self, api: AdminAPI, *, max_pages: int) -> None:
        self._api = api
        self._max_pages = max_pages
        self._factors: dict[int, float] = {}  # calibration day -> factor
        self._retry_at = float("-inf")  # the relay time a failed calibration is tried again
        self.factor = 1.0  # the latest known; list prices until a settled day was seen

    async def _pages(self, path: str, params: dict[str, Any], max_pages: int) -> list[dict[str, Any]]:
        """Every bucket of a report, following `next_page` while `has_more`. A relay that pages
        past what the query can hold, or hands a cursor back, is a fault, never a hang."""
        buckets: list[dict[str, Any]] = []
        page: str | None = None
        seen: set[str] = set()
        while True:
            if len(seen) >= max_pages:
                raise ProviderError("too_large", f"GET {path}: more than {max_pages} pages")
            body, _ = await self._api.get_json(path, {**params, **({"page": page} if page else {})})
            data = body.get("data") if isinstance(body, dict) else None
            if not isinstance(data, list):
                raise ProviderError("malformed", f"GET {path}: no 'data' list")
            buckets.extend(b for b in data if isinstance(b, dict))
            page = body.get("next_page")
            if body.get("has_more") is not True or not isinstance(page, str) or not page:
                return buckets
            if page in seen or len(page) > 1024:
                raise ProviderError("malformed", f"GET {path}: the next_page cursor repeats")
            seen.add(page)

    async def read(
        self, start: int, end: int, names: dict[str, str], stored: set[tuple[str, str]], carry_from: int
    ) -> Window:
        """Priced rows of the 1-minute buckets in [start, end), leaving out the (key, row id)
        pairs in `stored` (the last stored window's overlap: an optimisation, the store keeps
        rows once anyway); `carried` are the pairs from `carry_from` on, read again next time."""
        pages = math.ceil((end - start) / BUCKET / PAGE_BUCKETS) + 1
        buckets = await self._pages(
            USAGE_PATH,
            {
                "starting_at": rfc3339(start),
                "ending_at": rfc3339(end),
                "bucket_width": "1m",
                "limit": PAGE_BUCKETS,
                "group_by[]": ["api_key_id", "model", "service_tier"],
            },
            min(pages, self._max_pages),
        )
        window = Window([], [], set())
        bad: dict[str, list[str]] = {}
        for bucket in buckets:
            try:
                b = opt_time(bucket, "starting_at")
            except Malformed as exc:
                raise ProviderError("malformed", f"usage bucket: {exc}") from None
            results = bucket.get("results")
            if b is None or not isinstance(results, list):
                raise ProviderError("malformed", "usage bucket without starting_at/results")
            ts = int(b)
            for r in results:
                key_id = r.get("api_key_id") if isinstance(r, dict) else None
                if not isinstance(key_id, str) or not key_id:
                    continue  # Console/Workbench usage has no key: nobody's token here
                row_id = f"{ts}:{_label(r, 'model', '')}:{_label(r, 'service_tier', 'standard')}"
                pair = (key_id, row_id)
                if ts >= carry_from:
                    window.carried.add(pair)
                if pair in stored:
                    continue
                try:
                    window.records.append(self._record(ts, key_id, r, names))
                except Malformed as exc:
                    bad.setdefault(exc.reason, []).append(f"{names.get(key_id) or key_id[:40]}: {exc}")
        for reason, rows in bad.items():
            window.skipped.append(
                Skip(USAGE_SKIP, reason, f"{len(rows)} usage rows left out, e.g. {rows[0]}")
            )
        return window

    def _record(self, bucket: int, key_id: str, r: dict[str, Any], names: dict[str, str]) -> RequestRecord:
        counts = counts_of(r)
        model = _label(r, "model", "")
        tier = _label(r, "service_tier", "standard")
        listed = counts.tokens_usd(price_of(model), batch=tier == "batch")
        return RequestRecord(
            key_id,
            names.get(key_id, ""),
            float(bucket),
            model,
            None,
            counts.input_total,
            counts.output,
            round(listed * self.factor + counts.searches_usd, 9),
            None,
            f"{bucket}:{model}:{tier}",
            0,  # the usage report counts tokens, not requests
        )

    async def calibrate(self, relay_now: float) -> None:
        """Refresh `factor` from the latest settled day, once per day; errors keep the old one."""
        day = calibration_day(relay_now)
        if day in self._factors:
            self.factor = self._factors[day]
            return
        if relay_now < self._retry_at:
            return
        window = {
            "starting_at": rfc3339(day),
            "ending_at": rfc3339(day + DAY),
            "bucket_width": "1d",
            "limit": 1,
        }
        try:
            costs = await self._pages(COST_PATH, {**window, "group_by[]": ["description"]}, 3)
            usage = await self._pages(USAGE_PATH, {**window, "group_by[]": ["model", "service_tier"]}, 3)
            billed = sum(_billed(r) for r in _results(costs))
            listed = sum(_listed(r) for r in _results(usage))
        except (ProviderError, Malformed) as exc:
            log.debug("cost calibration deferred: %s", exc)
            self._retry_at = relay_now + CALIBRATION_RETRY
            return
        factor = self.factor  # a day without usage or bill says nothing new
        if billed > 0 and listed > 0:
            factor = billed / listed
            if not _FACTOR_RANGE[0] <= factor <= _FACTOR_RANGE[1]:
                log.warning(
                    "Anthropic billed %.2f USD for tokens listed at %.2f USD: not calibrating", billed, listed
                )
                factor = 1.0
        self._factors = {day: factor}
        self.factor = factor


def _results(buckets: list[dict[str, Any]]) -> Iterable[dict[str, Any]]:
    for bucket in buckets:
        results = bucket.get("results")
        if isinstance(results, list):
            yield from (r for r in results if isinstance(r, dict))


def _listed(r: dict[str, Any]) -> float:
    tier = _label(r, "service_tier", "standard")
    if tier in _UNBILLED_TIERS:
        return 0.0
    return counts_of(r).tokens_usd(price_of(_label(r, "model", "")), batch=tier == "batch")


def _billed(r: dict[str, Any]) -> float:
    """USD of a cost row for tokens. `amount` is a decimal string in cents ("123.45" = $1.2345)."""
    if r.get("cost_type") != "tokens":
        return 0.0  # web search, code execution, sessions: not what the list prices scale
    amount = r.get("amount")
    if isinstance(amount, str) and len(amount) <= 40:
        try:
            cents = float(amount)
        except ValueError:
            raise Malformed("cost result: 'amount' is not a decimal") from None
    elif isinstance(amount, int | float) and not isinstance(amount, bool):
        cents = float(amount)
    else:
        raise Malformed("cost result: 'amount' is missing")
    if not math.isfinite(cents) or not 0 <= cents <= 1e11:
        raise Malformed("cost result: 'amount' is absurd", "absurd_value")
    return cents / 100
