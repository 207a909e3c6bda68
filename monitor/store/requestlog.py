"""Request-log rows of one cycle into `request_log`, returning the rows the store did not have.

Log windows overlap (and the first window after a restart re-reads rows stored before it), so the
same row arrives more than once. The key (token_pk, request_id) makes storing idempotent
(INSERT OR IGNORE); which rows were new is read before inserting, in the same transaction, so
their cost and requests are counted exactly once. A row's time never changes, so a row newer
than the newest stored one cannot be stored yet: only the others are looked up (by key when they
are few — adapters leave out rows they know were stored — else by one indexed time range).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from operator import attrgetter

from sqlalchemy import Connection

from monitor.providers.base import RequestRecord
from monitor.tokens import TokenState

__all__ = ["store_requests"]

_COLUMNS = (
    "token_pk, ts, model, ip, prompt_tokens, completion_tokens, cost_usd, elapsed_ms, request_id, requests"
)
_INSERT = f"INSERT OR IGNORE INTO request_log ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
_STORED = "SELECT token_pk, request_id FROM request_log WHERE ts >= ? AND ts <= ?"
_BY_KEYS = "SELECT token_pk, request_id FROM request_log WHERE (token_pk, request_id) IN (VALUES "
_BY_KEY, _CHUNK = 2000, 400  # up to this many candidates are looked up by key, this many a query
_VALUES = attrgetter(
    "ts",
    "model",
    "ip",
    "prompt_tokens",
    "completion_tokens",
    "cost_usd",
    "elapsed_ms",
    "request_id",
    "requests",
)


def store_requests(
    conn: Connection, records: Sequence[RequestRecord], states: Mapping[str, TokenState]
) -> list[RequestRecord]:
    """Insert the records whose token has a database id; return those that were not stored yet."""
    pks = {token_id: s.pk for token_id, s in states.items() if s.pk is not None}
    incoming: dict[tuple[int, str], RequestRecord] = {}
    for rec in records:
        pk = pks.get(rec.token_id) if rec.token_id is not None else None
        if pk is not None:
            incoming.setdefault((pk, rec.request_id), rec)  # a row twice in one window: once
    if not incoming:
        return []
    newest = conn.exec_driver_sql("SELECT MAX(ts) FROM request_log").scalar()
    maybe = [(key, r.ts) for key, r in incoming.items() if newest is not None and r.ts <= newest]
    stored: set[tuple[int, str]] = set()
    if len(maybe) > _BY_KEY:
        lo = min(ts for _, ts in maybe)
        stored = set(map(tuple, conn.exec_driver_sql(_STORED, (lo, newest)).fetchall()))
    else:
        for i in range(0, len(maybe), _CHUNK):
            chunk = maybe[i : i + _CHUNK]
            sql = _BY_KEYS + ", ".join(["(?, ?)"] * len(chunk)) + ")"
            stored.update(
                map(tuple, conn.exec_driver_sql(sql, tuple(x for key, _ in chunk for x in key)).fetchall())
            )
    fresh = [(key, r) for key, r in incoming.items() if key not in stored]
    if fresh:
        conn.exec_driver_sql(_INSERT, [(pk, *_VALUES(r)) for (pk, _), r in fresh])
    return [r for _, r in fresh]
