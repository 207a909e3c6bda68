"""Request-log rows of one cycle into `request_log`, returning the rows the store did not have.

Log windows overlap (and the first window after a restart re-reads rows stored before it), so the
same row arrives more than once. The key (token_pk, request_id) makes storing idempotent
(ON CONFLICT DO NOTHING); which rows were new is read before inserting, in the same transaction, so
their cost and requests are counted exactly once. A row's time never changes, so a row newer
than the newest stored one cannot be stored yet: only the others are looked up (by key when they
are few — adapters leave out rows they know were stored — else by one indexed time range).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from operator import attrgetter

from sqlalchemy import Connection

from monitor.model import RequestRecord
from monitor.tokens import TokenState

__all__ = ["store_requests"]

_COLUMNS = (
    "token_pk, ts, model, ip, prompt_tokens, completion_tokens, cost_usd, elapsed_ms, request_id, requests"
)
_INSERT = f"INSERT INTO request_log ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"
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
    newest = conn.exec_driver_sql("SELECT MAX(ts) FROM request_log").scalar()
    horizon = float("-inf") if newest is None else newest
    seen: set[tuple[int, str]] = set()
    rows: list[tuple[object, ...]] = []
    fresh: list[RequestRecord] = []
    maybe: list[tuple[tuple[int, str], RequestRecord]] = []  # old enough to be stored already
    for rec in records:
        pk = pks.get(rec.token_id) if rec.token_id is not None else None
        if pk is None:
            continue
        key = (pk, rec.request_id)
        if key in seen:
            continue  # a row twice in one window: once
        seen.add(key)
        if rec.ts <= horizon:
            maybe.append((key, rec))
        else:
            rows.append((pk, *_VALUES(rec)))
            fresh.append(rec)
    if maybe:
        stored = _stored(conn, maybe, horizon)
        for key, rec in maybe:
            if key not in stored:
                rows.append((key[0], *_VALUES(rec)))
                fresh.append(rec)
    if rows:
        conn.exec_driver_sql(_INSERT, rows)
    return fresh


def _stored(
    conn: Connection, maybe: list[tuple[tuple[int, str], RequestRecord]], newest: float
) -> set[tuple[int, str]]:
    """Which of these keys the store has: by key when they are few, else by one time range."""
    if len(maybe) > _BY_KEY:
        lo = min(rec.ts for _, rec in maybe)
        return set(map(tuple, conn.exec_driver_sql(_STORED, (lo, newest)).fetchall()))
    stored: set[tuple[int, str]] = set()
    for i in range(0, len(maybe), _CHUNK):
        chunk = maybe[i : i + _CHUNK]
        sql = _BY_KEYS + ", ".join(["(?, ?)"] * len(chunk)) + ")"
        params = tuple(x for key, _ in chunk for x in key)
        stored.update(map(tuple, conn.exec_driver_sql(sql, params).fetchall()))
    return stored
