"""Opening the database: engine, SQLite pragmas, and the schema brought up to date.

The schema is `monitor.store.migrations`: one ordered history of fixed DDL for every table,
each migration applied in its own transaction and recorded in `schema_migrations`."""

from __future__ import annotations

import time
from pathlib import Path

from sqlalchemy import Engine, create_engine, event, make_url, text
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from monitor.store.migrations import MIGRATIONS

__all__ = ["MIGRATIONS", "StoreUnavailable", "apply_migrations", "open_engine", "store_error_text"]


class StoreUnavailable(Exception):
    """The database cannot be opened or brought up to date: one line that says why (no SQL, no
    parameters, no password)."""


def open_engine(url: str, *, migrate: bool = True) -> Engine:
    """An engine with WAL and a busy timeout on SQLite, its schema brought up to date."""
    where = _shown(url)
    try:
        if url.startswith("sqlite:///") and not url.startswith("sqlite:///:memory:"):
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url)
    except (OSError, ArgumentError, ImportError) as exc:
        raise StoreUnavailable(f"cannot open the database {where}: {store_error_text(exc)}") from None
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    if migrate:
        try:
            apply_migrations(engine)
        except (SQLAlchemyError, OSError) as exc:
            engine.dispose()
            raise StoreUnavailable(f"cannot open the database {where}: {store_error_text(exc)}") from None
    return engine


def store_error_text(exc: BaseException) -> str:
    """The database's own words on one line, without SQLAlchemy's SQL and parameters."""
    orig = getattr(exc, "orig", None) or exc
    lines = str(orig).strip().splitlines()
    return (lines[0] if lines else type(orig).__name__)[:300]


def _shown(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "(unparsable URL)"


def _sqlite_pragmas(dbapi_conn: object, _record: object) -> None:
    cur = dbapi_conn.cursor()  # type: ignore[attr-defined]
    cur.execute("PRAGMA journal_mode=WAL")  # readers (CLI) never block the daemon's writer
    cur.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable at checkpoint, never corrupt
    cur.execute("PRAGMA busy_timeout=10000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def apply_migrations(engine: Engine) -> list[str]:
    """Run the migrations not yet recorded, each in its own transaction. Returns their names."""
    applied: list[str] = []
    with engine.begin() as conn:
        conn.execute(
            text(
                "CREATE TABLE IF NOT EXISTS schema_migrations (name TEXT PRIMARY KEY, applied_at REAL NOT NULL)"
            )
        )
        done = {row[0] for row in conn.execute(text("SELECT name FROM schema_migrations"))}
    for migration in MIGRATIONS:
        if migration.name in done:
            continue
        with engine.begin() as conn:
            for statement in migration.statements:
                conn.exec_driver_sql(statement)
            conn.execute(
                text("INSERT INTO schema_migrations (name, applied_at) VALUES (:n, :t)"),
                {"n": migration.name, "t": time.time()},
            )
        applied.append(migration.name)
    return applied
