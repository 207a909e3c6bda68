"""Store write on PostgreSQL vs raw psycopg of the same rows (a busy cycle: every token changed).

One poll cycle of N changed tokens through `UsageWriter.write_cycle` (tokens UPDATE, usage_deltas
INSERT, usage_hourly upsert, the poll-run bookkeeping, one transaction), against the same rows
written by hand with psycopg, in the same run, on the same server:

- raw executemany: the three statements with `cursor.executemany` (psycopg pipelines them);
- raw COPY: the token UPDATE as above, the deltas by COPY, the hourly rows by COPY into a
  temporary table and one INSERT .. SELECT .. ON CONFLICT.

Speed = raw time / keywatch time (issue 13: >= 0.5x). The database is created for the run and
dropped after; without a reachable PostgreSQL the bench says why and skips.
KEYWATCH_BENCH_PG: the server (default postgresql://root@127.0.0.1:5432/postgres).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

from sqlalchemy import make_url

from bench.common import median
from bench.store_write import fleet
from monitor.ingest import Cycle, ingest
from monitor.store import PollRun, UsageWriter, open_engine
from monitor.store.codec import TOKEN_COLUMNS, state_to_row

UTC = ZoneInfo("UTC")
T0 = 1_794_300_000.0
RUNS = 5
SERVER = os.environ.get("KEYWATCH_BENCH_PG", "postgresql://root@127.0.0.1:5432/postgres")

_UPDATE = f"UPDATE tokens SET {', '.join(c + ' = %s' for c in TOKEN_COLUMNS)} WHERE id = %s"
_INSERT_DELTA = "INSERT INTO usage_deltas (token_pk, ts, cost_usd, requests, gap) VALUES (%s, %s, %s, %s, %s)"
_UPSERT_HOURLY = (
    "INSERT INTO usage_hourly (token_pk, hour, cost_usd, requests) VALUES (%s, %s, %s, %s) "
    "ON CONFLICT (token_pk, hour) DO UPDATE SET cost_usd = usage_hourly.cost_usd + excluded.cost_usd, "
    "requests = usage_hourly.requests + excluded.requests"
)

Rows = tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], list[tuple[Any, ...]]]


def unavailable() -> str | None:
    """Why the bench cannot run here, or None."""
    try:
        import psycopg
    except ImportError:
        return "psycopg is not installed (pip install -e '.[postgres]')"
    try:
        with psycopg.connect(SERVER, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        shown = make_url(SERVER).render_as_string(hide_password=True)  # never a password in output
        return f"PostgreSQL at {shown} is not reachable: {first}"
    return None


@contextmanager
def throwaway_database() -> Iterator[str]:
    """A database for this run (libpq URL), dropped after."""
    import psycopg

    name = f"keywatch_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(SERVER, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{SERVER.rsplit('/', 1)[0]}/{name}"
    finally:
        with psycopg.connect(SERVER, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _schema_url(libpq: str, schema: str) -> str:
    """A SQLAlchemy URL on a schema of its own (created, and migrated by open_engine)."""
    import psycopg

    with psycopg.connect(libpq, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    base = libpq.replace("postgresql://", "postgresql+psycopg://", 1)
    return f"{base}?options={quote(f'-c search_path={schema}')}"


def _rows(c: Cycle) -> Rows:
    """The rows write_cycle writes for a cycle, as the raw baselines write them."""
    tokens = [(*state_to_row(c.states[t]), c.states[t].pk) for t in c.changed]
    deltas = [(c.states[s.token_id].pk, s.ts, s.cost_usd, s.requests, s.gap) for s in c.spend]
    hourly = [(pk, int(ts // 3600 * 3600), cost, req) for pk, ts, cost, req, _ in deltas]
    return tokens, deltas, hourly


def run(n: int) -> None:
    import psycopg

    with throwaway_database() as libpq:
        # keywatch: the first cycle stores the fleet, then RUNS busy cycles are timed.
        engine = open_engine(_schema_url(libpq, "kw"))
        writer = UsageWriter(engine)
        first = ingest({}, fleet(n, 1.0), provider="b", now=T0, tz=UTC, watching_since=None)
        states = writer.write_cycle(first, PollRun("b", "laozhang", T0, T0, True, True), {})
        cycles = []
        for step in range(2, 2 + RUNS):
            now = T0 + step * 60
            cycles.append(
                ingest(states, fleet(n, float(step)), provider="b", now=now, tz=UTC, watching_since=T0)
            )
        assert all(len(c.changed) == len(c.spend) == n for c in cycles)
        pending = iter(cycles)
        t_ours = median(
            lambda: writer.write_cycle(next(pending), PollRun("b", "laozhang", T0, T0, True, True), {}),
            runs=RUNS,
        )
        engine.dispose()

        # The same rows by hand, on the same schema (migrated the same way), one schema per baseline.
        rows = [_rows(c) for c in cycles]
        baselines: dict[str, Callable[[psycopg.Connection[Any], Rows], None]] = {
            "executemany": _raw_executemany,
            "COPY": _raw_copy,
        }
        times: dict[str, float] = {}
        for label, write in baselines.items():
            schema = f"raw_{label.lower()}"
            open_engine(_schema_url(libpq, schema)).dispose()
            with psycopg.connect(libpq, options=f"-c search_path={schema}") as conn:
                with conn.transaction(), conn.cursor() as cur:
                    cur.executemany(
                        f"INSERT INTO tokens (id, {', '.join(TOKEN_COLUMNS)}) "
                        f"VALUES ({', '.join(['%s'] * (len(TOKEN_COLUMNS) + 1))})",
                        [(s.pk, *state_to_row(s)) for s in states.values()],
                    )
                batches = iter(rows)
                times[label] = median(lambda: write(conn, next(batches)), runs=RUNS)  # noqa: B023
        for label, t_raw in times.items():
            speed = t_raw / t_ours
            print(
                f"postgres write, {n:,} changed tokens vs raw {label:<11} {t_ours:8.4f}s vs {t_raw:8.4f}s"
                f"  speed {speed:5.2f}x of raw  (target >= 0.5x)",
                flush=True,
            )


def _raw_executemany(conn: Any, rows: Rows) -> None:
    tokens, deltas, hourly = rows
    with conn.transaction(), conn.cursor() as cur:
        cur.executemany(_UPDATE, tokens)
        cur.executemany(_INSERT_DELTA, deltas)
        cur.executemany(_UPSERT_HOURLY, hourly)


def _raw_copy(conn: Any, rows: Rows) -> None:
    tokens, deltas, hourly = rows
    with conn.transaction(), conn.cursor() as cur:
        cur.executemany(_UPDATE, tokens)
        with cur.copy("COPY usage_deltas (token_pk, ts, cost_usd, requests, gap) FROM STDIN") as copy:
            for row in deltas:
                copy.write_row(row)
        cur.execute(
            "CREATE TEMPORARY TABLE hourly_in (token_pk BIGINT, hour BIGINT, cost_usd DOUBLE PRECISION, "
            "requests BIGINT) ON COMMIT DROP"
        )
        with cur.copy("COPY hourly_in FROM STDIN") as copy:
            for row in hourly:
                copy.write_row(row)
        cur.execute(
            "INSERT INTO usage_hourly SELECT * FROM hourly_in ON CONFLICT (token_pk, hour) DO UPDATE SET "
            "cost_usd = usage_hourly.cost_usd + excluded.cost_usd, "
            "requests = usage_hourly.requests + excluded.requests"
        )


def main() -> None:
    reason = unavailable()
    if reason is not None:
        print(f"postgres write: skipped: {reason}", flush=True)
        return
    for n in (1_000, 10_000):
        run(n)


if __name__ == "__main__":
    main()
