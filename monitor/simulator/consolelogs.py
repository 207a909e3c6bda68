"""Request logs of the one-api family, from the relay's booked events.

One row per request (an event of n requests becomes n rows whose quota and tokens sum to the
event's), numbered in booking order and listed newest id first, filtered on `created_at`
(unix seconds, inclusive) like `GET /api/log/self`. A query's rows are kept until anything new is
booked, so paging through them is cheap and, as on a real relay, offsets shift when rows arrive."""

from __future__ import annotations

import time
from typing import Any

import orjson

from .eventindex import EventIndex
from .ledger import Event
from .tokencounts import split_even, tokens_for

__all__ = ["LogQuery", "LogRows", "newapi_row", "oneapi_row", "request_id"]

CONSUME = 2
Row = tuple[Event, int]  # (event, index of the request within it)
LogQuery = tuple[int, int, str, str, int]  # start, end, token_name, model_name, type


def request_id(e: Event, i: int) -> str:
    """Like one-api's: a time stamp and a counter, unique per request."""
    return f"{time.strftime('%Y%m%d%H%M%S', time.gmtime(e.ts))}{e.seq:010d}{i:04d}"


def _share(e: Event, i: int, qpu: float) -> tuple[int, int, int]:
    """(quota, prompt, completion) of request i of the event."""
    prompt, completion = tokens_for(e.cost_usd, e.model)
    quota = round(e.cost_usd * qpu)
    n = e.requests
    return split_even(quota, n, i), split_even(prompt, n, i), split_even(completion, n, i)


def _elapsed_ms(e: Event, i: int) -> int:
    return 200 + (e.seq * 7919 + i * 104_729) % 4800


def oneapi_row(e: Event, i: int, qpu: float, *, with_request_id: bool) -> dict[str, Any]:
    quota, prompt, completion = _share(e, i, qpu)
    row: dict[str, Any] = {
        "id": 0,  # the self view omits ids
        "user_id": 1,
        "created_at": int(e.ts),
        "type": CONSUME,
        "content": f"model ratio {quota / max(prompt + completion, 1):.4f}",
        "username": "sim",
        "token_name": e.token_name,
        "model_name": e.model,
        "quota": quota,
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "channel": 1,
        "elapsed_time": _elapsed_ms(e, i),
        "is_stream": (e.seq + i) % 3 == 0,
    }
    if with_request_id:
        row["request_id"] = request_id(e, i)
    return row


def newapi_row(
    e: Event, i: int, qpu: float, *, display_id: int, token_number: int, ip_logging: bool
) -> dict[str, Any]:
    quota, prompt, completion = _share(e, i, qpu)
    other = {"model_ratio": 1.0, "group_ratio": 1.0, "completion_ratio": 4.0, "frt": -1000}
    return {
        "id": display_id,  # rewritten per page: never an identity
        "user_id": 1,
        "created_at": int(e.ts),
        "type": CONSUME,
        "content": "",
        "username": "sim",
        "token_name": e.token_name,
        "model_name": e.model,
        "quota": quota,
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "use_time": max(1, round(_elapsed_ms(e, i) / 1000)),
        "is_stream": (e.seq + i) % 3 == 0,
        "channel": 1,
        "channel_name": "",
        "token_id": token_number,
        "group": "default",
        "ip": e.ip if ip_logging else "",
        "request_id": request_id(e, i),
        "other": orjson.dumps(other).decode(),
    }


class LogRows:
    """Rows matching a query, newest first, cached until the event log changes."""

    def __init__(self, index: EventIndex) -> None:
        self._index = index
        self._cache: dict[LogQuery, tuple[int, list[Row]]] = {}

    def rows(self, query: LogQuery) -> list[Row]:
        seq = self._index.seq
        hit = self._cache.get(query)
        if hit is not None and hit[0] == seq:
            return hit[1]
        start, end, token_name, model_name, log_type = query
        rows: list[Row] = []
        if log_type in (0, CONSUME):
            # created_at is whole seconds: `created_at <= end` holds for every ts before end + 1
            events = self._index.between(start, end + 1 if end else float("inf"), until_inclusive=False)
            for e in events:
                if token_name and e.token_name != token_name:
                    continue
                if model_name and e.model != model_name:
                    continue
                rows.extend((e, i) for i in range(e.requests))
            rows.sort(key=lambda r: (r[0].seq, r[1]), reverse=True)
        if len(self._cache) > 64:
            self._cache.clear()
        self._cache[query] = (seq, rows)
        return rows
