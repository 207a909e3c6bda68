"""Per-key money for OpenAI keys: usage buckets priced per model, calibrated by daily costs.

OpenAI reports tokens per key (`/v1/organization/usage/completions`, grouped by api_key_id and
model) but money only per day and project (`/v1/organization/costs`). keywatch prices each
key's tokens at list prices (`monitor.providers.pricing`), then scales them by a calibration
factor: the project's cost for the latest settled day over that day's list-priced usage. Money
stays authoritative where it matters — a day's keys add up to what OpenAI billed — while spend
appears within minutes, per key, and never moves after it was counted (a row, once stored, is
final: the factor applies to rows from the moment it is known).

Usage comes as closed 1-minute buckets that are `settle` seconds old (OpenAI fills them with a
delay), one RequestRecord per (key, model, bucket) with request id `<bucket start>:<model>`;
the store keeps each once. A bucket OpenAI fills in further after it was read is not re-read.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from monitor.model import RequestRecord
from monitor.providers.base import ProviderError
from monitor.providers.console.paging import DEFAULT_MAX_PAGES
from monitor.providers.http import RelayHTTP, decode_json
from monitor.providers.parse import Malformed
from monitor.providers.pricing import price_of, priced_usd
from monitor.secret import Secret

__all__ = ["COST_SETTLE", "DAY", "OpenAIUsage", "calibration_day"]

log = logging.getLogger("keywatch.providers.openai")

DAY = 86_400
COST_SETTLE = 6 * 3600.0  # a day's cost is taken as final this long after the day ended
_FACTOR_RANGE = (0.25, 4.0)  # beyond it the price table is wrong, not the bill: do not scale


def calibration_day(relay_now: float) -> int:
    """Start (UTC) of the latest day whose cost is settled."""
    return math.floor((relay_now - COST_SETTLE) / DAY) * DAY - DAY


def _int(result: dict[str, Any], key: str) -> int:
    value = result.get(key) or 0
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise Malformed(f"usage result: invalid '{key}'")
    return int(value)


class OpenAIUsage:
    def __init__(self, http: RelayHTTP, admin_key: Secret, project_id: str) -> None:
        self._http = http
        self._key = admin_key
        self._project = project_id
        self._factors: dict[int, float] = {}  # calibration day -> factor
        self.factor = 1.0  # the latest known; list prices until a settled day was seen

    async def _pages(self, path: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        """Every bucket of a usage or costs query, following `next_page` while `has_more`."""
        buckets: list[dict[str, Any]] = []
        page: str | None = None
        seen: set[str] = set()  # a cursor that comes back, or never ends, is a relay fault
        while True:
            if len(seen) >= DEFAULT_MAX_PAGES:
                raise ProviderError("too_large", f"GET {path}: more than {len(seen)} pages")
            query = {**params, **({"page": page} if page else {})}
            response = await self._http.request("GET", path, credential=self._key, params=query)
            if response.status_code != 200:
                raise ProviderError(
                    f"http_{response.status_code}", f"GET {path}: HTTP {response.status_code}"
                )
            body = decode_json(response)
            data = body.get("data") if isinstance(body, dict) else None
            if not isinstance(data, list):
                raise ProviderError("malformed", f"GET {path}: no 'data' list")
            buckets.extend(b for b in data if isinstance(b, dict))
            page = body.get("next_page")
            if not body.get("has_more") or not isinstance(page, str) or not page:
                return buckets
            if page in seen:
                raise ProviderError("malformed", f"GET {path}: the next_page cursor repeats")
            seen.add(page)

    async def records(
        self, start: int, end: int, names: dict[str, str], stored: set[tuple[str, str]], carry_from: int
    ) -> tuple[list[RequestRecord], set[tuple[str, str]]]:
        """Priced usage rows of the 1-minute buckets in [start, end), leaving out the (key, row
        id) pairs in `stored` (the last stored window's overlap: an optimisation, the store keeps
        rows once anyway); and the pairs from `carry_from` on, which the next window reads again."""
        buckets = await self._pages(
            "/v1/organization/usage/completions",
            {
                "start_time": start,
                "end_time": end,
                "bucket_width": "1m",
                "limit": 1440,
                "group_by": ["api_key_id", "model"],
                "project_ids": [self._project],
            },
        )
        out: list[RequestRecord] = []
        carried: set[tuple[str, str]] = set()
        for bucket in buckets:
            b = bucket.get("start_time")
            results = bucket.get("results")
            if not isinstance(b, int) or not isinstance(results, list):
                raise ProviderError("malformed", "usage bucket without start_time/results")
            carry = b >= carry_from
            for r in results:
                key_id = r.get("api_key_id") if isinstance(r, dict) else None
                if not isinstance(key_id, str):
                    continue  # usage without a key (e.g. ChatGPT-side) is nobody's token here
                pair = (key_id, f"{b}:{r.get('model') or ''}")
                if carry:
                    carried.add(pair)
                if pair in stored:
                    continue
                try:
                    out.append(self._record(b, r, names))
                except Malformed as exc:
                    raise ProviderError("malformed", str(exc)) from None
        return out, carried

    def _record(self, bucket: int, r: dict[str, Any], names: dict[str, str]) -> RequestRecord:
        get = r.get
        model = get("model") or ""
        tokens_in, cached, tokens_out, requests = (
            get("input_tokens"),
            get("input_cached_tokens") or 0,
            get("output_tokens"),
            get("num_model_requests"),
        )
        if not (
            type(tokens_in) is int
            and type(cached) is int
            and type(tokens_out) is int
            and type(requests) is int
        ):
            tokens_in, cached = _int(r, "input_tokens"), _int(r, "input_cached_tokens")
            tokens_out, requests = _int(r, "output_tokens"), _int(r, "num_model_requests")
        if min(tokens_in, cached, tokens_out, requests) < 0:
            raise Malformed("usage result: negative counts")
        key_id = r["api_key_id"]
        price = price_of(str(model))
        listed = (
            max(tokens_in - cached, 0) * price.input + cached * price.cached_input + tokens_out * price.output
        ) / 1e6
        return RequestRecord(
            key_id,
            names.get(key_id, ""),
            float(bucket),
            str(model),
            None,
            tokens_in,
            tokens_out,
            round(listed * self.factor, 9),
            None,
            f"{bucket}:{model}",
            requests,
        )

    async def calibrate(self, relay_now: float) -> None:
        """Refresh `factor` from the latest settled day, once per day; errors keep the old one."""
        day = calibration_day(relay_now)
        if day in self._factors:
            self.factor = self._factors[day]
            return
        window = {"start_time": day, "end_time": day + DAY, "project_ids": [self._project]}
        try:
            costs = await self._pages("/v1/organization/costs", {**window, "bucket_width": "1d", "limit": 1})
            usage = await self._pages(
                "/v1/organization/usage/completions",
                {**window, "bucket_width": "1d", "limit": 1, "group_by": ["model"]},
            )
        except ProviderError as exc:
            log.debug("cost calibration deferred: %s", exc)
            return
        billed = sum(_amount(r) for b in costs for r in b.get("results") or [] if isinstance(r, dict))
        try:
            listed = sum(_listed(r) for b in usage for r in b.get("results") or [] if isinstance(r, dict))
        except Malformed as exc:
            log.debug("cost calibration deferred: %s", exc)
            return
        factor = self.factor  # a day without usage or bill says nothing new
        if billed > 0 and listed > 0:
            factor = billed / listed
            if not _FACTOR_RANGE[0] <= factor <= _FACTOR_RANGE[1]:
                log.warning(
                    "OpenAI billed %.2f USD for usage listed at %.2f USD: not calibrating", billed, listed
                )
                factor = 1.0
        self._factors = {day: factor}
        self.factor = factor


def _listed(r: dict[str, Any]) -> float:
    model = str(r.get("model") or "")
    return priced_usd(
        model, _int(r, "input_tokens"), _int(r, "input_cached_tokens"), _int(r, "output_tokens")
    )


def _amount(result: dict[str, Any]) -> float:
    amount = result.get("amount")
    value = amount.get("value") if isinstance(amount, dict) else None
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0
