"""Rows of a one-api family request log (`GET /api/log/self`) as RequestRecords.

A row is identified by its `request_id`. Rows without one (one-api before request ids) get a
hash of their fields, numbered among identical rows of the same window: two requests that look
the same in the log are two requests. new-api's `id` in this view is rewritten per page (offset +
position), so it is never used as an identity.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from monitor.model import RequestRecord
from monitor.providers.console.tokens import Dialect
from monitor.providers.parse import MAX_COUNT, Malformed, epoch_seconds

__all__ = ["parse_log_row", "with_row_ids"]

_HASHED = ("created_at", "token_name", "model_name", "quota", "prompt_tokens", "completion_tokens",
           "channel", "elapsed_time", "use_time", "is_stream", "content")  # fmt: skip


_SECONDS_BEYOND = 100_000_000_000  # epoch times past this (year 5138) are in milliseconds or finer


def _num(row: Mapping[str, Any], key: str, default: int | None = 0) -> int:
    value = row.get(key, default)
    if value is None and default is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= MAX_COUNT:
        raise Malformed(f"log row: invalid '{key}'")  # also NaN, ±inf and absurd counts
    return int(value)


def parse_log_row(
    row: Any, *, dialect: Dialect, quota_per_unit: float, ids_by_name: Mapping[str, str]
) -> RequestRecord:
    """The row as a record; `request_id` is "" when the row has none (see `with_row_ids`)."""
    if type(row) is not dict:
        raise Malformed("log row is not an object")
    get = row.get
    name, created = get("token_name"), get("created_at")
    quota, prompt, completion = get("quota", 0), get("prompt_tokens", 0), get("completion_tokens", 0)
    # The common case in one test per field; anything else goes through the strict reader.
    if not (
        type(name) is str
        and type(created) is int
        and 0 < created < _SECONDS_BEYOND
        and type(quota) is int
        and 0 <= quota <= MAX_COUNT
        and type(prompt) is int
        and 0 <= prompt <= MAX_COUNT
        and type(completion) is int
        and 0 <= completion <= MAX_COUNT
    ):
        name, created = _name(row), _num(row, "created_at", None)
        if created <= 0:
            raise Malformed("log row: missing 'created_at'")
        created = int(epoch_seconds(float(created), "created_at"))
        quota, prompt, completion = (
            _num(row, "quota"),
            _num(row, "prompt_tokens"),
            _num(row, "completion_tokens"),
        )
    if dialect == "newapi":
        token_number = get("token_id")
        token_id = (
            str(token_number) if type(token_number) is int and token_number > 0 else ids_by_name.get(name)
        )
        use_time = get("use_time")
        if type(use_time) is int and use_time >= 0:
            elapsed: int | None = use_time * 1000
        else:
            elapsed = _num(row, "use_time") * 1000 if use_time is not None else None
    else:
        token_id = ids_by_name.get(name)
        elapsed_time = get("elapsed_time")
        elapsed = (
            elapsed_time
            if type(elapsed_time) is int
            else _num(row, "elapsed_time")
            if elapsed_time is not None
            else None
        )
    request_id, ip, model = get("request_id"), get("ip"), get("model_name")
    return RequestRecord(
        token_id,
        name,
        float(created),
        model if type(model) is str else "",
        ip if type(ip) is str and ip else None,
        int(prompt),
        int(completion),
        quota / quota_per_unit,
        elapsed,
        request_id if type(request_id) is str else "",
    )


def _name(row: Mapping[str, Any]) -> str:
    name = row.get("token_name")
    if not isinstance(name, str):
        raise Malformed("log row: missing 'token_name'")
    return name


def with_row_ids(parsed: Sequence[tuple[RequestRecord, Mapping[str, Any]]]) -> list[RequestRecord]:
    """The records, those without a request id given `h:<hash>:<n>` for the n-th of identical
    rows in the window (a row repeated by a page shift then counts twice: a relay that logs
    request ids does not have that problem)."""
    seen: Counter[str] = Counter()
    out = []
    for record, row in parsed:
        if not record.request_id:
            material = "\x1f".join(str(row.get(k)) for k in _HASHED)
            digest = hashlib.sha256(material.encode()).hexdigest()[:32]
            record = replace(record, request_id=f"h:{digest}:{seen[digest]}")
            seen[digest] += 1
        out.append(record)
    return out
