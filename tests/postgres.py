"""Real PostgreSQL for tests: one database per test session (per xdist worker), dropped after,
and a fresh schema per test inside it.

The server is the machine's PostgreSQL (KEYWATCH_TEST_PG, default 127.0.0.1:5432 as role root,
trust auth). Without one, the tests that need it are skipped with the reason printed; with
CI=true they fail instead: CI must run them."""

from __future__ import annotations

import itertools
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

__all__ = ["PostgresDatabase", "PrivateServer", "postgres_database", "require_postgres"]

SERVER = os.environ.get("KEYWATCH_TEST_PG", "postgresql://root@127.0.0.1:5432/postgres")


def require_postgres() -> str:
    """The server's libpq URL, or skip (fail on CI) saying why it cannot be used."""
    try:
        import psycopg
    except ImportError:
        _unavailable("psycopg is not installed (pip install -e '.[postgres]')")
    try:
        with psycopg.connect(SERVER, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        _unavailable(f"PostgreSQL at {SERVER} is not reachable: {first}")
    return SERVER


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI needs PostgreSQL: {reason}", pytrace=False)
    pytest.skip(reason)


class PostgresDatabase:
    """A database of this session; `url()` hands out a SQLAlchemy URL on a fresh schema."""

    def __init__(self, server: str) -> None:
        import psycopg

        self._psycopg = psycopg
        self._server = server
        self.name = f"keywatch_test_{uuid.uuid4().hex[:10]}"
        self._schemas = itertools.count(1)
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.name}"')
        host = server.split("@", 1)[1].rsplit("/", 1)[0]
        user = server.split("://", 1)[1].split("@", 1)[0]
        self.base = f"postgresql+psycopg://{user}@{host}/{self.name}"
        self.libpq = f"postgresql://{user}@{host}/{self.name}"

    def url(self) -> str:
        schema = f"t{next(self._schemas)}_{uuid.uuid4().hex[:6]}"
        with self._psycopg.connect(self.libpq, autocommit=True) as conn:
            conn.execute(f'CREATE SCHEMA "{schema}"')
        return f"{self.base}?options={quote(f'-c search_path={schema}')}"

    def drop(self) -> None:
        with self._psycopg.connect(self._server, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


def postgres_database() -> Iterator[PostgresDatabase]:
    db = PostgresDatabase(require_postgres())
    try:
        yield db
    finally:
        db.drop()


class PrivateServer:
    """A PostgreSQL server of its own (initdb in a temporary directory, a free port), for a test
    that restarts or stops the server: the machine's server is shared by the other tests. Run as
    the `postgres` system user (the server refuses root); superuser `root`, trust auth."""

    BIN = "/usr/lib/postgresql/15/bin"

    def __init__(self, port: int) -> None:
        import pwd
        import shutil
        import tempfile

        if not Path(self.BIN, "initdb").exists() or shutil.which("runuser") is None:
            _unavailable(f"no PostgreSQL server binaries in {self.BIN} (apt-get install postgresql-15)")
        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            _unavailable("no `postgres` system user to run a private PostgreSQL server")
        # Not under pytest's tmp_path: the postgres user cannot walk into root's 0700 directories.
        directory = Path(tempfile.mkdtemp(prefix="keywatch-pg-"))
        directory.chmod(0o755)
        os.chown(directory, user.pw_uid, user.pw_gid)
        self.dir, self.port = directory, port
        self._as_postgres(
            f"{self.BIN}/initdb", "-D", str(directory / "data"), "-A", "trust", "-U", "root", "--no-sync"
        )
        self.url = f"postgresql+psycopg://root@127.0.0.1:{port}/postgres"
        self.start()

    def _as_postgres(self, *argv: str) -> None:
        import subprocess

        done = subprocess.run(
            ["runuser", "-u", "postgres", "--", *argv], capture_output=True, text=True, timeout=60
        )
        if done.returncode != 0:
            raise RuntimeError(f"{argv[0]} failed: {done.stderr.strip()[-500:]}")

    def _ctl(self, *verb: str) -> None:
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._as_postgres(
            f"{self.BIN}/pg_ctl", "-D", str(self.dir / "data"), "-l", str(self.dir / "log"),
            "-o", options, "-w", "-t", "30", *verb,
        )  # fmt: skip

    def start(self) -> None:
        self._ctl("start")

    def restart(self) -> None:
        self._ctl("-m", "fast", "restart")

    def stop(self) -> None:
        import shutil

        try:
            self._ctl("-m", "immediate", "stop")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)
