"""Fixtures every test package may use: the store on both engines."""

from __future__ import annotations

import gc
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.postgres import PostgresDatabase, postgres_database


@pytest.fixture(scope="session")
def pg_database() -> Iterator[PostgresDatabase]:
    """This session's PostgreSQL database (skipped, or failed on CI, without a server)."""
    yield from postgres_database()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty store: a SQLite file, then a PostgreSQL schema (the same test on both)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'kw.db'}"
        return
    database: PostgresDatabase = request.getfixturevalue("pg_database")
    yield database.url()
    # Tests leave their engines to the collector; psycopg warns for a pooled connection closed
    # that way, which is not what these tests are about. Close them here, quietly.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()
