"""Opening the database: engine, SQLite pragmas, and the schema brought up to date.

The schema is `monitor.store.migrations`: one ordered history of fixed DDL for every table,
each migration applied in its own transaction and recorded in `schema_migrations`. The same
history runs on PostgreSQL (`monitor.store.dialect` maps the DDL), under an advisory lock so that
instances starting together upgrade the schema once."""

from __future__ import annotations

import time
from pathlib import Path

from sqlalchemy import Engine, create_engine, event, make_url, text
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from monitor.redact import escape_controls
from monitor.store.dialect import bridge_placeholders, is_postgres, postgres_ddl
from monitor.store.migrations import MIGRATIONS

__all__ = [
    "MIGRATIONS",
    "StoreUnavailable",
    "apply_migrations",
    "describe_fault",
    "open_engine",
    "store_error_text",
]


class StoreUnavailable(Exception):
    """The database cannot be opened or brought up to date: one line that says why (no SQL, no
    parameters, no password)."""


def open_engine(url: str, *, migrate: bool = True) -> Engine:
    """An engine with WAL and a busy timeout on SQLite, its schema brought up to date."""
    where = _shown(url)
    try:
        if url.startswith("sqlite:///") and not url.startswith("sqlite:///:memory:"):
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, **_engine_options(url))
    except ImportError as exc:
        hint = " (install it with: pip install 'keywatch[postgres]')" if "psycopg" in str(exc) else ""
        raise StoreUnavailable(f"cannot open the database {where}: {store_error_text(exc)}{hint}") from None
    except (OSError, ArgumentError) as exc:
        raise StoreUnavailable(f"cannot open the database {where}: {store_error_text(exc)}") from None
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    bridge_placeholders(engine)
    if migrate:
        try:
            apply_migrations(engine)
        except (SQLAlchemyError, OSError) as exc:
            engine.dispose()
            raise StoreUnavailable(f"cannot open the database {where}: {store_error_text(exc)}") from None
    return engine


def _engine_options(url: str) -> dict[str, object]:
    if not url.startswith("postgresql"):
        return {}
    # A pooled connection dies with a PostgreSQL restart: test it before use, and never wait on
    # an unreachable server longer than a poll can afford.
    return {"pool_pre_ping": True, "connect_args": {"connect_timeout": 10}}


def store_error_text(exc: BaseException) -> str:
    """The database's own words on one line, without SQLAlchemy's SQL and parameters."""
    orig = getattr(exc, "orig", None) or exc
    lines = str(orig).strip().splitlines()
    return (lines[0] if lines else type(orig).__name__)[:300]


def describe_fault(exc: BaseException) -> str:
    """An error on one bounded line: its type and its first line (a database's own words, without
    SQLAlchemy's statement and parameters), control characters escaped."""
    return f"{type(getattr(exc, 'orig', None) or exc).__name__}: {escape_controls(store_error_text(exc))}"


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


# pg_advisory_lock key of schema upgrades: any fixed 64-bit number no other lock uses.
_MIGRATION_LOCK = 0x6B77_0001


def apply_migrations(engine: Engine) -> list[str]:
    """Run the migrations not yet recorded, each in its own transaction. Returns their names."""
    postgres = is_postgres(engine)
    ddl = postgres_ddl if postgres else str
    applied: list[str] = []
    with engine.connect() as conn:
        if postgres:  # held for the whole upgrade: a second instance waits, then finds it done
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _MIGRATION_LOCK})
            conn.commit()
        try:
            with conn.begin():
                conn.exec_driver_sql(
                    ddl(
                        "CREATE TABLE IF NOT EXISTS schema_migrations (name TEXT PRIMARY KEY, applied_at REAL NOT NULL)"
                    )
                )
                done = {row[0] for row in conn.execute(text("SELECT name FROM schema_migrations"))}
            for migration in MIGRATIONS:
                if migration.name in done:
                    continue
                with conn.begin():
                    for statement in migration.statements:
                        conn.exec_driver_sql(ddl(statement))
                    conn.execute(
                        text("INSERT INTO schema_migrations (name, applied_at) VALUES (:n, :t)"),
                        {"n": migration.name, "t": time.time()},
                    )
                applied.append(migration.name)
        finally:
            if postgres:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _MIGRATION_LOCK})
                conn.commit()
    return applied
