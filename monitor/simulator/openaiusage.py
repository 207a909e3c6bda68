"""OpenAI usage and cost buckets from a simulated relay's booked events.

Usage: per bucket [start, start + width), one result per combination of the grouped fields
(the others null), tokens derived from the booked cost at list prices. Costs: daily buckets of
the booked USD. Buckets start on the width's grid (UTC days for 1d); `limit` counts buckets."""

from __future__ import annotations

import base64
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from .eventindex import EventIndex
from .tokencounts import tokens_for

__all__ = [
    "BUCKET_LIMITS",
    "GROUP_FIELDS",
    "WIDTHS",
    "BucketPage",
    "cost_buckets",
    "decode_page",
    "usage_buckets",
]

WIDTHS = {"1m": 60, "1h": 3600, "1d": 86_400}
BUCKET_LIMITS = {"1m": (60, 1440), "1h": (24, 168), "1d": (7, 31)}  # (default, max)
GROUP_FIELDS = ("project_id", "user_id", "api_key_id", "model", "batch", "service_tier")


@dataclass(frozen=True)
class BucketPage:
    data: list[dict[str, Any]]
    has_more: bool
    next_page: str | None


def encode_page(bucket_start: int) -> str:
    return "page_" + base64.urlsafe_b64encode(str(bucket_start).encode()).decode()


def decode_page(page: str) -> int:
    """ValueError for a cursor this server did not hand out."""
    if not page.startswith("page_"):
        raise ValueError("invalid page cursor")
    return int(base64.urlsafe_b64decode(page[5:].encode()).decode())


def _starts(start: int, end: int, width: int, page: str | None, limit: int) -> tuple[list[int], bool]:
    first = start - start % width
    if page is not None:
        first = decode_page(page)
    starts: list[int] = []
    b = first
    while b < end and len(starts) < limit + 1:
        starts.append(b)
        b += width
    return starts[:limit], len(starts) > limit


def usage_buckets(
    index: EventIndex,
    *,
    project_id: str,
    start: int,
    end: int,
    width: str,
    limit: int,
    page: str | None,
    group_by: Collection[str],
    api_key_ids: Collection[str],
    models: Collection[str],
) -> BucketPage:
    w = WIDTHS[width]
    starts, more = _starts(start, end, w, page, limit)
    data = []
    for b in starts:
        events = index.between(max(b, start), min(b + w, end), until_inclusive=False)
        cells: dict[tuple[str, str], list[float]] = {}
        for e in events:
            if (api_key_ids and e.token_id not in api_key_ids) or (models and e.model not in models):
                continue
            cell = cells.setdefault((e.token_id, e.model), [0.0, 0])
            cell[0] += e.cost_usd
            cell[1] += e.requests
        groups: dict[tuple[Any, ...], list[int]] = {}
        for (key_id, model), (cost, requests) in cells.items():
            prompt, completion = tokens_for(cost, model)
            values = {"project_id": project_id, "api_key_id": key_id, "model": model}
            group = tuple(values.get(f) if f in group_by else None for f in GROUP_FIELDS)
            acc = groups.setdefault(group, [0, 0, 0])
            acc[0] += prompt
            acc[1] += completion
            acc[2] += int(requests)
        results = [
            {
                "object": "organization.usage.completions.result",
                "input_tokens": prompt,
                "output_tokens": completion,
                "input_cached_tokens": 0,
                "input_audio_tokens": 0,
                "output_audio_tokens": 0,
                "num_model_requests": requests,
                **dict(zip(GROUP_FIELDS, group, strict=True)),
            }
            for group, (prompt, completion, requests) in groups.items()
        ]
        data.append({"object": "bucket", "start_time": b, "end_time": b + w, "results": results})
    next_page = encode_page(starts[-1] + w) if more and starts else None
    return BucketPage(data, more, next_page)


def cost_buckets(
    index: EventIndex,
    *,
    project_id: str,
    start: int,
    end: int,
    limit: int,
    page: str | None,
    group_by: Collection[str],
) -> BucketPage:
    w = WIDTHS["1d"]
    starts, more = _starts(start, end, w, page, limit)
    data = []
    for b in starts:
        events = index.between(max(b, start), min(b + w, end), until_inclusive=False)
        value = round(sum(e.cost_usd for e in events), 6)
        results = []
        if events:
            results.append(
                {
                    "object": "organization.costs.result",
                    "amount": {"value": value, "currency": "usd"},
                    "line_item": "completions" if "line_item" in group_by else None,
                    "project_id": project_id if "project_id" in group_by else None,
                }
            )
        data.append({"object": "bucket", "start_time": b, "end_time": b + w, "results": results})
    next_page = encode_page(starts[-1] + w) if more and starts else None
    return BucketPage(data, more, next_page)
