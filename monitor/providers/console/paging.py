"""Reading every page of a one-api family list, whatever shape the build answers with.

- one-api (and new-api before mid-2025): `data` is a plain array, `p` counts from 0, no total:
  read until a page is shorter than the page size. Pages are fetched `concurrency` at a time,
  speculatively; what follows the first short page is ignored.
- new-api now: `data` is `{items, total, page, page_size}`, `p` counts from 1 (p=0 reads as 1):
  the first answer says how many pages there are; the rest are fetched `concurrency` at a time.

The first request is always p=0, which both shapes read as their first page. When the total
moves while paging (rows arrived or went), the walk is flagged `consistent=False`.

A relay decides how many pages there are, so a walk is bounded: at most `max_pages` pages (a
claim of more, or pages that never end, fail the walk with reason `too_large` before anything
is fetched past the bound), and never more than `concurrency` requests or pages in flight.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from monitor.providers.base import ProviderError
from monitor.providers.http import RelayResponse

__all__ = ["DEFAULT_MAX_PAGES", "Fetch", "Walk", "walk_pages"]

Fetch = Callable[[int], Awaitable[tuple[Any, RelayResponse]]]
DEFAULT_MAX_PAGES = 20_000  # one-api's 10 a page: 200,000 tokens; new-api's 100 a page: 2 million


@dataclass(frozen=True, slots=True)
class Walk:
    items: list[Any]
    first: RelayResponse  # the first page's answer: its Date is the relay's clock
    consistent: bool = True
    pages: int = 1


async def walk_pages(
    fetch: Fetch, *, page_size: int | None, concurrency: int, what: str, max_pages: int = DEFAULT_MAX_PAGES
) -> Walk:
    """`page_size`: the fixed size of plain-array pages (one-api: 10), or None to take it from
    the first page (a legacy new-api honours the size asked for, or not)."""
    data, first = await fetch(0)
    if isinstance(data, dict) and isinstance(data.get("items"), list):
        return await _walk_items(fetch, data, first, concurrency, what, max_pages)
    if isinstance(data, list):
        return await _walk_plain(fetch, data, first, page_size, concurrency, what, max_pages)
    if data is None:
        return Walk([], first)  # some builds answer an empty list with data: null
    raise ProviderError("malformed", f"{what}: 'data' is neither a list nor a page")


def _too_many(what: str, claim: str, max_pages: int) -> ProviderError:
    return ProviderError(
        "too_large", f"{what}: {claim}, more than max_pages ({max_pages}); raise it if the relay is that big"
    )


async def _walk_plain(
    fetch: Fetch,
    data: list[Any],
    first: RelayResponse,
    page_size: int | None,
    concurrency: int,
    what: str,
    max_pages: int,
) -> Walk:
    size = page_size or len(data)
    items = list(data)
    pages = 1
    if not data or len(data) < size:
        return Walk(items, first)
    p = 1
    while True:
        if p >= max_pages:
            raise _too_many(what, "its pages do not end", max_pages)
        batch_end = min(p + concurrency, max_pages)
        batch = await asyncio.gather(*(fetch(q) for q in range(p, batch_end)))
        for page, _ in batch:
            if not isinstance(page, list):
                raise ProviderError("malformed", f"{what}: page {p} is not a list")
            pages += 1
            items.extend(page)
            if len(page) < size:
                return Walk(items, first, pages=pages)
        p = batch_end


async def _walk_items(
    fetch: Fetch, data: dict[str, Any], first: RelayResponse, concurrency: int, what: str, max_pages: int
) -> Walk:
    total, size, page = data.get("total"), data.get("page_size"), data.get("page", 1)
    if not isinstance(total, int) or not isinstance(size, int) or size <= 0 or not isinstance(page, int):
        raise ProviderError("malformed", f"{what}: page without total/page_size")
    if total < 0 or not 0 <= page <= 1:
        raise ProviderError("malformed", f"{what}: the first page says total {total}, page {page}")
    items = list(data["items"])
    last = math.ceil(total / size)
    if last > max_pages:
        raise _too_many(what, f"the relay claims {total} rows in {last} pages of {size}", max_pages)
    totals = {total}
    for start in range(page + 1, last + 1, concurrency):  # never more than `concurrency` in flight
        batch = await asyncio.gather(*(fetch(p) for p in range(start, min(start + concurrency, last + 1))))
        for answer, _ in batch:
            if not isinstance(answer, dict) or not isinstance(answer.get("items"), list):
                raise ProviderError("malformed", f"{what}: a later page has no items")
            items.extend(answer["items"])
            if isinstance(answer.get("total"), int):
                totals.add(answer["total"])
    return Walk(items, first, consistent=len(totals) == 1 and len(items) == total, pages=max(1, last))
