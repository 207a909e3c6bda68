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

from monitor.providers.base import RequestRecord
from monitor.providers.console_tokens import Dialect
from monitor.providers.parse import Malformed

__all__ = ["parse_log_row", "with_row_ids"]

_HASHED = ("created_at", "token_name", "model_name", "quota", "prompt_tokens", "completion_tokens",
           "channel", "elapsed_time", "use_time", "is_stream", "content")  # fmt: skip


def _num(row: Mapping[str, Any], key: str, default: int | None = 0) -> int:
    value = row.get(key, default)
    if value is None and default is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise Malformed(f"log row: invalid '{key}'")
    return int(value)


def parse_log_row(
    row: Any, *, dialect: Dialect, quota_per_unit: float, ids_by_name: Mapping[str, str]
) -> RequestRecord:
    """The row as a record; `request_id` is "" when the row has none (see `with_row_ids`)."""
    if not isinstance(row, dict):
        raise Malformed("log row is not an object")
    name = row.get("token_name")
    if not isinstance(name, str):
        raise Malformed("log row: missing 'token_name'")
    created = _num(row, "created_at", None)
    if created <= 0:
        raise Malformed("log row: missing 'created_at'")
    token_id: str | None = None
    if dialect == "newapi" and _num(row, "token_id") > 0:
        token_id = str(row["token_id"])
    else:
        token_id = ids_by_name.get(name)
    if dialect == "newapi":
        elapsed: int | None = _num(row, "use_time") * 1000 if "use_time" in row else None
    else:
        elapsed = _num(row, "elapsed_time") if "elapsed_time" in row else None
    request_id = row.get("request_id")
    ip = row.get("ip")
    return RequestRecord(
        token_id=token_id,
        token_name=name,
        ts=float(created),
        model=str(row.get("model_name") or ""),
        ip=ip if isinstance(ip, str) and ip else None,
        prompt_tokens=_num(row, "prompt_tokens"),
        completion_tokens=_num(row, "completion_tokens"),
        cost_usd=_num(row, "quota") / quota_per_unit,
        elapsed_ms=elapsed,
        request_id=request_id if isinstance(request_id, str) else "",
    )


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
