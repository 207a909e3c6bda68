"""Request-log rows of one cycle into `request_log`, returning the rows the store did not have.

Log windows overlap (and the first window after a restart re-reads rows stored before it), so the
same row arrives more than once. The unique key (token_pk, request_id) makes storing idempotent
(INSERT OR IGNORE); which rows were new is read before inserting, in the same transaction, so
their cost and requests are counted exactly once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from sqlalchemy import Connection

from monitor.providers.base import RequestRecord
from monitor.tokens import TokenState

__all__ = ["store_requests"]

_COLUMNS = (
    "token_pk, ts, model, ip, prompt_tokens, completion_tokens, cost_usd, elapsed_ms, request_id, requests"
)
_INSERT = f"INSERT OR IGNORE INTO request_log ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
# A scratch table per connection: the incoming keys, joined against the unique index.
_SCRATCH = (
    "CREATE TEMP TABLE IF NOT EXISTS kw_incoming (idx INTEGER PRIMARY KEY, token_pk INTEGER, request_id TEXT)"
)
_KNOWN = (
    "SELECT i.idx FROM kw_incoming i JOIN request_log r "
    "ON r.token_pk = i.token_pk AND r.request_id = i.request_id"
)


def store_requests(
    conn: Connection, records: Sequence[RequestRecord], states: Mapping[str, TokenState]
) -> list[RequestRecord]:
    """Insert the records whose token has a database id; return those that were not stored yet."""
    unique: dict[tuple[int, str], RequestRecord] = {}
    for rec in records:
        state = states.get(rec.token_id) if rec.token_id is not None else None
        if state is None or state.pk is None:
            continue
        unique.setdefault((state.pk, rec.request_id), rec)  # a row twice in one window: once
    if not unique:
        return []
    keys = list(unique)
    conn.exec_driver_sql(_SCRATCH)
    conn.exec_driver_sql("DELETE FROM kw_incoming")
    conn.exec_driver_sql(
        "INSERT INTO kw_incoming (idx, token_pk, request_id) VALUES (?, ?, ?)",
        [(i, pk, rid) for i, (pk, rid) in enumerate(keys)],
    )
    known = {row[0] for row in conn.exec_driver_sql(_KNOWN)}
    conn.exec_driver_sql("DELETE FROM kw_incoming")
    fresh = [(keys[i], unique[keys[i]]) for i in range(len(keys)) if i not in known]
    if fresh:
        conn.exec_driver_sql(
            _INSERT,
            [
                (
                    pk,
                    r.ts,
                    r.model,
                    r.ip,
                    r.prompt_tokens,
                    r.completion_tokens,
                    r.cost_usd,
                    r.elapsed_ms,
                    r.request_id,
                    r.requests,
                )
                for (pk, _), r in fresh
            ],
        )
    return [r for _, r in fresh]
