"""`keywatch db copy`: a whole history moved from one database to another (SQLite <-> PostgreSQL).

The tables are read from the source database itself (reflection), not from a list kept here, so
a migration appended later is copied without a change: every table but `schema_migrations`
(which the target's own migrations write), parents before children (foreign keys), primary
keys kept. Rows are streamed in batches (a server-side cursor on PostgreSQL, SQLite's lazy
cursor): memory stays flat for a usage history of any length. Values go through the reflected
column types of each side, so JSON columns and booleans (SQLite's 0/1) arrive as the target
stores them.

Both sides are held in one transaction: the source's is a snapshot (a daemon writing to it
meanwhile changes nothing copied), the target's commits only after the copy verified (row count
of every table, and spend totals, equal): a failed or interrupted copy leaves the target empty,
ready for another try. Identity sequences are moved past the copied ids, never below where the
source's stood: an id the source handed out (a silence's, typed into `silence expire ID`) is
not handed out again.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Connection, Engine
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from monitor.store.db import StoreUnavailable, open_engine, store_error_text
from monitor.store.dialect import is_postgres
from monitor.store.migrations import MIGRATIONS

__all__ = ["BATCH_ROWS", "SPEND_COLUMNS", "CopyRefused", "CopyReport", "TableCopy", "copy_database"]

BATCH_ROWS = 5_000
# The money columns whose totals must match after a copy (where the table has them).
SPEND_COLUMNS: Mapping[str, str] = {
    "tokens": "spend_total_usd",
    "usage_deltas": "cost_usd",
    "usage_hourly": "cost_usd",
    "request_log": "cost_usd",
}
SPEND_TOLERANCE_USD = 1e-6
_SKIPPED = frozenset({"schema_migrations"})

Progress = Callable[[int, int], None]  # (rows copied so far, rows in all)


class CopyRefused(Exception):
    """The copy cannot start or cannot finish: one line that says why (no SQL, no password)."""


@dataclass(frozen=True, slots=True)
class TableCopy:
    table: str
    source_rows: int
    target_rows: int
    spend_column: str | None = None
    source_spend: float | None = None
    target_spend: float | None = None

    @property
    def spend_verified(self) -> bool:
        if self.source_spend is None or self.target_spend is None:
            return self.source_spend == self.target_spend
        # Sums over millions of rows add up in another order on the other engine: the last
        # bits may differ, a cent may not.
        return math.isclose(self.source_spend, self.target_spend, rel_tol=1e-12, abs_tol=SPEND_TOLERANCE_USD)

    @property
    def verified(self) -> bool:
        return self.source_rows == self.target_rows and self.spend_verified

    def to_json(self) -> dict[str, Any]:
        return {
            "table": self.table,
            "rows": self.target_rows,
            "source_rows": self.source_rows,
            "spend_column": self.spend_column,
            "source_spend_usd": self.source_spend,
            "target_spend_usd": self.target_spend,
            "verified": self.verified,
        }


@dataclass(frozen=True, slots=True)
class CopyReport:
    source: str  # URLs as shown: never with a password
    target: str
    tables: tuple[TableCopy, ...]
    committed: bool  # False: verification failed and the target was rolled back (left empty)
    seconds: float

    @property
    def verified(self) -> bool:
        return all(t.verified for t in self.tables)

    @property
    def rows(self) -> int:
        return sum(t.target_rows for t in self.tables)


def copy_database(
    source_url: str,
    target_url: str,
    *,
    batch_rows: int = BATCH_ROWS,
    progress: Progress | None = None,
) -> CopyReport:
    """Copy every row of `source_url` into `target_url` (migrated first, and refused unless
    empty), verify, and commit only what verified. Raises CopyRefused or StoreUnavailable."""
    started = time.monotonic()
    source_shown, target_shown = shown_url(source_url), shown_url(target_url)
    _refuse_same(source_url, target_url)
    _require_source_file(source_url)
    source = open_engine(source_url, migrate=False)
    target: Engine | None = None
    try:
        with _reading(source, source_shown) as src:
            tables = _source_tables(src)
            target = open_engine(target_url)  # migrated: the schema the copy needs
            with _writing(target, target_shown) as dst:
                target_tables = _target_tables(dst, tables)
                _require_empty(dst, target_tables)
                counts = {t.name: _count(src, t.name) for t in tables}
                _copy_rows(src, dst, tables, target_tables, sum(counts.values()), batch_rows, progress)
                _move_sequences(src, dst, tables)
                report = tuple(_verify(src, dst, t, counts[t.name]) for t in tables)
                ok = all(t.verified for t in report)
                (dst.commit if ok else dst.rollback)()
    except Exception as exc:
        if not _database_error(exc, source, target):
            raise
        raise CopyRefused(f"the copy failed, nothing was committed: {store_error_text(exc)}") from None
    finally:
        source.dispose()
        if target is not None:
            target.dispose()
    return CopyReport(source_shown, target_shown, report, ok, time.monotonic() - started)


def shown_url(url: str) -> str:
    try:
        return sa.make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "(unparsable URL)"


# --- before copying -----------------------------------------------------------------------------
def _refuse_same(source_url: str, target_url: str) -> None:
    try:
        a, b = sa.make_url(source_url), sa.make_url(target_url)
    except ArgumentError as exc:
        raise CopyRefused(f"not a database URL: {exc}") from None
    if _place(a) == _place(b):
        raise CopyRefused("the source and the target are the same database")


def _place(url: sa.URL) -> tuple[object, ...]:
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        return ("sqlite", str(Path(url.database or "").resolve()))
    return (url.get_backend_name(), url.host, url.port, url.database, url.query.get("options"))


def _require_source_file(url: str) -> None:
    """SQLite creates a missing file on first use: a mistyped source would copy as empty."""
    parsed = sa.make_url(url)
    path = parsed.database or ""
    if parsed.get_backend_name() == "sqlite" and path not in ("", ":memory:") and not Path(path).is_file():
        raise CopyRefused(f"the source {shown_url(url)} does not exist")


@contextmanager
def _reading(engine: Engine, shown: str) -> Iterator[Connection]:
    """One snapshot of the source for the whole copy: counts and rows agree with each other."""
    try:
        if is_postgres(engine):
            conn = engine.connect().execution_options(
                isolation_level="REPEATABLE READ", postgresql_readonly=True
            )
        else:
            conn = engine.connect()
            conn.exec_driver_sql("BEGIN")  # pysqlite opens no transaction for reads by itself
    except SQLAlchemyError as exc:
        raise StoreUnavailable(f"cannot open the database {shown}: {store_error_text(exc)}") from None
    try:
        yield conn
    finally:
        conn.close()  # rolls the read transaction back


@contextmanager
def _writing(engine: Engine, shown: str) -> Iterator[Connection]:
    try:
        conn = engine.connect()
    except SQLAlchemyError as exc:
        raise StoreUnavailable(f"cannot open the database {shown}: {store_error_text(exc)}") from None
    try:
        conn.begin()
        yield conn
    finally:
        conn.close()  # anything not committed is rolled back: the target stays empty


def _database_error(exc: Exception, *engines: Engine | None) -> bool:
    """SQLAlchemy's errors, and the drivers' own (COPY goes to psycopg directly)."""
    if isinstance(exc, SQLAlchemyError):
        return True
    return any(e is not None and isinstance(exc, e.dialect.loaded_dbapi.Error) for e in engines)


def _source_tables(src: Connection) -> list[sa.Table]:
    names = set(sa.inspect(src).get_table_names())
    if "schema_migrations" not in names:
        raise CopyRefused("the source is not a keywatch database (it has no schema_migrations table)")
    recorded = {row[0] for row in src.exec_driver_sql("SELECT name FROM schema_migrations")}
    known = [m.name for m in MIGRATIONS]
    if unknown := sorted(recorded - set(known)):
        raise CopyRefused(
            f"the source was written by a newer keywatch (migration {unknown[0]} is unknown here)"
        )
    if missing := [name for name in known if name not in recorded]:
        raise CopyRefused(
            f"the source's schema is older than this keywatch (it lacks {missing[0]}): upgrade it "
            "first with `keywatch db migrate` (with it as `database`)"
        )
    meta = sa.MetaData()
    meta.reflect(src)
    return [t for t in meta.sorted_tables if t.name not in _SKIPPED]


def _target_tables(dst: Connection, tables: list[sa.Table]) -> dict[str, sa.Table]:
    meta = sa.MetaData()
    meta.reflect(dst)
    for table in tables:
        there = meta.tables.get(table.name)
        if there is None:
            raise CopyRefused(f"the target has no table {table.name} after its migrations")
        if missing := [c.name for c in table.columns if c.name not in there.columns]:
            raise CopyRefused(f"the target's table {table.name} has no column {missing[0]}")
    return dict(meta.tables)


def _require_empty(dst: Connection, tables: Mapping[str, sa.Table]) -> None:
    for name, table in sorted(tables.items()):
        if name in _SKIPPED:
            continue
        if dst.execute(sa.select(sa.literal(1)).select_from(table).limit(1)).first() is not None:
            rows = _count(dst, name)
            raise CopyRefused(
                f"the target is not empty (table {name} holds {rows:,} rows): copy into an empty database"
            )


# --- copying ------------------------------------------------------------------------------------
def _copy_rows(
    src: Connection,
    dst: Connection,
    tables: list[sa.Table],
    target_tables: Mapping[str, sa.Table],
    total: int,
    batch_rows: int,
    progress: Progress | None,
) -> None:
    done = 0
    write = _copy_in if is_postgres(dst.engine) else _insert
    for table in tables:
        query = sa.select(table).order_by(*table.primary_key.columns)
        batches = src.execution_options(yield_per=batch_rows).execute(query).partitions()
        columns = [target_tables[table.name].columns[c.name] for c in table.columns]
        for n in write(dst, target_tables[table.name], columns, batches):
            done += n
            if progress is not None:
                progress(done, total)


Batches = Iterator[Sequence[sa.Row[Any]]]


def _insert(
    dst: Connection, table: sa.Table, columns: list[sa.Column[Any]], batches: Batches
) -> Iterator[int]:
    insert = table.insert()
    names = [c.name for c in columns]
    for rows in batches:
        dst.execute(insert, [dict(zip(names, row, strict=True)) for row in rows])
        yield len(rows)


def _copy_in(
    dst: Connection, table: sa.Table, columns: list[sa.Column[Any]], batches: Batches
) -> Iterator[int]:
    """PostgreSQL's COPY, in the copy's transaction: about 10x the rows per second of an
    executemany of INSERTs. Values pass the target's bind processors (JSON is wrapped as psycopg
    wants it), as an INSERT through SQLAlchemy would."""
    quote = dst.dialect.identifier_preparer.quote
    processors = [c.type.dialect_impl(dst.dialect).bind_processor(dst.dialect) for c in columns]
    pairs = [(i, p) for i, p in enumerate(processors) if p is not None]
    statement = f"COPY {quote(table.name)} ({', '.join(quote(c.name) for c in columns)}) FROM STDIN"
    raw = dst.connection.driver_connection
    assert raw is not None
    with raw.cursor() as cursor, cursor.copy(statement) as copy:
        for rows in batches:
            for row in rows:
                values = list(row)
                for i, process in pairs:
                    values[i] = process(values[i])
                copy.write_row(values)
            yield len(rows)


def _move_sequences(src: Connection, dst: Connection, tables: list[sa.Table]) -> None:
    """Past the largest copied id, and never below where the source's own counter stood."""
    for table in tables:
        if "id" not in table.columns:
            continue
        high = _source_high(src, table.name)
        if is_postgres(dst.engine):
            _postgres_sequence(dst, table.name, high)
        else:
            _sqlite_sequence(dst, table.name, high)


def _source_high(src: Connection, table: str) -> int:
    """The last id the source handed out by its counter (0 when it keeps none)."""
    if is_postgres(src.engine):
        sequence = src.execute(
            sa.text("SELECT pg_get_serial_sequence(:t, 'id')"), {"t": _pg_name(src, table)}
        ).scalar()
        if sequence is None:
            return 0
        # After setval(.., n, false) (a copy) the next id is n: n - 1 was the last one out.
        last, called = src.exec_driver_sql(f"SELECT last_value, is_called FROM {sequence}").one()
        return int(last) if called else int(last) - 1
    if not _sqlite_has_sequence_table(src):
        return 0
    value = src.exec_driver_sql("SELECT seq FROM sqlite_sequence WHERE name = ?", (table,)).scalar()
    return int(value or 0)


def _postgres_sequence(dst: Connection, table: str, high: int) -> None:
    name = _pg_name(dst, table)
    sequence = dst.execute(sa.text("SELECT pg_get_serial_sequence(:t, 'id')"), {"t": name}).scalar()
    if sequence is None:
        return
    dst.execute(
        sa.text(f"SELECT setval(:s, GREATEST(COALESCE(MAX(id), 0), :high) + 1, false) FROM {name}"),
        {"s": sequence, "high": high},
    )


def _sqlite_sequence(dst: Connection, table: str, high: int) -> None:
    """AUTOINCREMENT tables count in sqlite_sequence (explicit ids already moved it to MAX(id))."""
    ddl = dst.exec_driver_sql(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)
    ).scalar()
    if high <= 0 or "AUTOINCREMENT" not in str(ddl or "").upper():
        return
    moved = dst.exec_driver_sql(
        "UPDATE sqlite_sequence SET seq = ? WHERE name = ? AND seq < ?", (high, table, high)
    ).rowcount
    if (
        not moved
        and dst.exec_driver_sql("SELECT 1 FROM sqlite_sequence WHERE name = ?", (table,)).first() is None
    ):
        dst.exec_driver_sql("INSERT INTO sqlite_sequence (name, seq) VALUES (?, ?)", (table, high))


def _sqlite_has_sequence_table(conn: Connection) -> bool:
    found = conn.exec_driver_sql(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'sqlite_sequence'"
    ).first()
    return found is not None


def _pg_name(conn: Connection, table: str) -> str:
    return str(conn.dialect.identifier_preparer.quote(table))


# --- verifying ----------------------------------------------------------------------------------
def _count(conn: Connection, table: str) -> int:
    return int(conn.execute(sa.select(sa.func.count()).select_from(sa.table(table))).scalar_one())


def _spend(conn: Connection, table: str, column: str) -> float:
    total: sa.ColumnElement[float] = sa.func.coalesce(sa.func.sum(sa.column(column)), 0.0)
    return float(conn.execute(sa.select(total).select_from(sa.table(table))).scalar_one())


def _verify(src: Connection, dst: Connection, table: sa.Table, source_rows: int) -> TableCopy:
    name, column = table.name, SPEND_COLUMNS.get(table.name)
    if column is None or column not in table.columns:
        return TableCopy(name, source_rows, _count(dst, name))
    return TableCopy(
        name, source_rows, _count(dst, name), column, _spend(src, name, column), _spend(dst, name, column)
    )
