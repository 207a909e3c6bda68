"""Opening the database: engine, SQLite pragmas, and the ordered named migrations."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlmodel import SQLModel

from monitor.store import schema  # noqa: F401  (registers the tables on SQLModel.metadata)

__all__ = ["MIGRATIONS", "open_engine"]

Migration = Callable[[Connection], None]


def _initial(conn: Connection) -> None:
    names = ("tokens", "usage_deltas", "usage_hourly", "poll_runs", "providers", "poll_errors")
    SQLModel.metadata.create_all(conn, tables=[SQLModel.metadata.tables[n] for n in names])


def _request_log(conn: Connection) -> None:
    SQLModel.metadata.create_all(conn, tables=[SQLModel.metadata.tables["request_log"]])


# Append only: a migration that has shipped is never edited or reordered.
MIGRATIONS: list[tuple[str, Migration]] = [
    ("0001_initial", _initial),
    ("0002_request_log", _request_log),
]


def open_engine(url: str, *, migrate: bool = True) -> Engine:
    """An engine with WAL and a busy timeout on SQLite, its schema brought up to date."""
    if url.startswith("sqlite:///") and not url.startswith("sqlite:///:memory:"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    if migrate:
        apply_migrations(engine)
    return engine


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
    for name, migration in MIGRATIONS:
        if name in done:
            continue
        with engine.begin() as conn:
            migration(conn)
            conn.execute(
                text("INSERT INTO schema_migrations (name, applied_at) VALUES (:n, :t)"),
                {"n": name, "t": time.time()},
            )
        applied.append(name)
    return applied
