"""The store on real SQLite files: cycles, idle fleets, retention, and kill -9 at any moment."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from monitor.ingest import ingest
from monitor.model import Observation, PollResult
from monitor.settings import Retention
from monitor.store import PollRun, UsageReader, UsageWriter, open_engine, prune
from monitor.store.db import MIGRATIONS

UTC = ZoneInfo("UTC")
T0 = 1_794_300_000.0  # 2026-11-10 (mid-month, so no rollover in these tests)


def fleet(n: int, month: float, *, spenders: int | None = None) -> PollResult:
    spenders = n if spenders is None else spenders
    return PollResult(
        [
            Observation(
                token_id=f"key_{i}",
                name=f"dev-app-t{i}-2026-01",
                status="active",
                today_usd=month if i < spenders else 1.0,
                month_usd=month if i < spenders else 1.0,
                today_requests=int(month * 10) if i < spenders else 10,
            )
            for i in range(n)
        ]
    )


def run(provider: str, now: float, *, seen: int = 0) -> PollRun:
    return PollRun(provider, "laozhang", now, now, ok=True, complete=True, seen=seen)


def cycle_and_write(
    writer: UsageWriter, states: dict, result: PollResult, now: float, watching: float | None
) -> dict:
    cycle = ingest(states, result, provider="lz", now=now, tz=UTC, watching_since=watching)
    return writer.write_cycle(cycle, run("lz", now, seen=cycle.seen), {})


def test_cycles_round_trip_and_counters_derive_from_the_store(store_url: str) -> None:
    engine = open_engine(store_url)
    writer, reader = UsageWriter(engine), UsageReader(engine)
    states = cycle_and_write(writer, {}, fleet(5, 2.0), T0, None)
    states = cycle_and_write(writer, states, fleet(5, 2.5), T0 + 60, T0)
    states = cycle_and_write(writer, states, fleet(5, 4.0), T0 + 3600, T0)
    loaded = reader.token_states()["lz"]
    assert loaded == states
    assert loaded["key_0"].spend_total_usd == pytest.approx(4.0)
    assert reader.count_rows("usage_deltas") == 10
    pk = loaded["key_0"].pk
    assert pk is not None
    assert [p.cost_usd for p in reader.hourly(pk, T0 - 3600)] == [pytest.approx(0.5), pytest.approx(1.5)]
    assert reader.providers()["lz"].first_complete_poll_at == T0
    engine.dispose()


def test_an_idle_cycle_of_ten_thousand_tokens_writes_no_usage_rows(store_url: str) -> None:
    engine = open_engine(store_url)
    writer, reader = UsageWriter(engine), UsageReader(engine)
    states = cycle_and_write(writer, {}, fleet(10_000, 3.0), T0, None)
    before = (reader.count_rows("usage_deltas"), reader.count_rows("usage_hourly"))
    cycle = ingest(states, fleet(10_000, 3.0), provider="lz", now=T0 + 60, tz=UTC, watching_since=T0)
    assert (cycle.new, cycle.changed, cycle.spend) == ([], [], [])
    writer.write_cycle(cycle, run("lz", T0 + 60), {})
    assert (reader.count_rows("usage_deltas"), reader.count_rows("usage_hourly")) == before == (0, 0)
    engine.dispose()


def test_migrations_are_recorded_and_run_once(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/kw.db"
    open_engine(url).dispose()
    open_engine(url).dispose()
    with sqlite3.connect(tmp_path / "kw.db") as conn:
        names = [name for (name,) in conn.execute("SELECT name FROM schema_migrations ORDER BY name")]
        assert names == [m.name for m in MIGRATIONS]
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    conn.close()


def test_retention_drops_old_raw_rows_but_keeps_tokens_and_recent_hours(store_url: str) -> None:
    engine = open_engine(store_url)
    writer, reader = UsageWriter(engine), UsageReader(engine)
    states = cycle_and_write(writer, {}, fleet(3, 1.0), T0, None)
    states = cycle_and_write(writer, states, fleet(3, 2.0), T0 + 60, T0)
    old_deltas = reader.count_rows("usage_deltas")
    later = T0 + 20 * 86400
    pruned = prune(engine, Retention(raw=14 * 86400, hourly=400 * 86400), now=later)
    assert pruned.deltas == old_deltas == 3
    assert reader.count_rows("usage_hourly") == 3  # hourly rollups are kept 400 days
    assert reader.count_rows("tokens") == 3
    assert reader.token_states()["lz"]["key_0"].spend_total_usd == 2.0
    engine.dispose()


WRITER_SCRIPT = textwrap.dedent(
    """
    import sys
    from zoneinfo import ZoneInfo
    from monitor.ingest import ingest
    from monitor.model import Observation, PollResult
    from monitor.store import PollRun, UsageReader, UsageWriter, open_engine

    db, start = sys.argv[1], float(sys.argv[2])
    engine = open_engine(f"sqlite:///{db}")
    reader, writer = UsageReader(engine), UsageWriter(engine)
    states = reader.token_states().get("lz", {})
    facts = reader.providers().get("lz")
    watching = facts.first_complete_poll_at if facts else None
    n = 2000
    step = 0
    while True:
        step += 1
        now = start + step
        # The relay's month figure is the wall-clock step count: every token spends 1.0 per step.
        month = float(int(now - start))
        result = PollResult([Observation(f"key_{i}", f"t{i}", "active", month_usd=month, today_usd=month)
                             for i in range(n)])
        cycle = ingest(states, result, provider="lz", now=now, tz=ZoneInfo("UTC"), watching_since=watching)
        states = writer.write_cycle(cycle, PollRun("lz", "laozhang", now, now, True, True, n), {})
        watching = watching or now
        print(step, flush=True)
    """
)


@pytest.mark.parametrize("kill_after", [0.35, 0.8, 1.3])
def test_kill_9_at_any_moment_loses_nothing_and_counts_nothing_twice(
    tmp_path: Path, kill_after: float
) -> None:
    db = tmp_path / "kw.db"
    start = T0
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[3])}
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER_SCRIPT, str(db), str(start)], stdout=subprocess.PIPE, env=env
    )
    assert proc.stdout is not None
    first = proc.stdout.readline()  # wait until at least one cycle committed
    assert first.strip() == b"1"
    time.sleep(kill_after)  # the kill must land at an arbitrary point of a write: real time is the point here
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stdout.close()

    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    conn.close()
    engine = open_engine(f"sqlite:///{db}")
    reader = UsageReader(engine)
    states = reader.token_states()["lz"]
    assert len(states) == 2000
    mark_times = {s.mark.observed_at for s in states.values() if s.mark}
    assert len(mark_times) == 1, "a cycle was half-written"
    last = mark_times.pop()
    # Every token's counter equals the relay's figure at the last committed cycle...
    assert {s.spend_total_usd for s in states.values()} == {float(int(last - start))}
    # ...and equals its start plus the sum of its stored deltas.
    with engine.connect() as conn:
        sums = (
            conn.exec_driver_sql("SELECT SUM(cost_usd) FROM usage_deltas GROUP BY token_pk").scalars().all()
        )
    # the first cycle set the start point (1.0) and stored no delta; a loaded machine may be killed
    # before a second cycle committed, and then there is nothing to sum
    spent = float(int(last - start)) - 1.0
    assert (len(sums), set(sums)) == ((2000, {spent}) if spent else (0, set()))
    # Resuming from the store counts the interrupted cycle exactly once.
    resume_at = last + 5
    result = PollResult([Observation(f"key_{i}", f"t{i}", "active", month_usd=float(int(resume_at - start)),
                                     today_usd=0.0) for i in range(2000)])  # fmt: skip
    cycle = ingest(states, result, provider="lz", now=resume_at, tz=UTC, watching_since=start + 1)
    assert {s.cost_usd for s in cycle.spend} == {5.0}
    engine.dispose()


def test_a_fenced_cycle_writes_nothing(store_url: str) -> None:
    """With several instances, the guard (monitor.cluster) runs first in the cycle's transaction:
    an instance that lost the provider leaves no trace, and its states are not adopted."""
    from monitor.cluster import Fenced

    engine = open_engine(store_url)
    writer, reader = UsageWriter(engine), UsageReader(engine)
    states = cycle_and_write(writer, {}, fleet(3, 2.0), T0, None)

    def lost(_conn: object) -> None:
        raise Fenced("lz moved to another instance")

    cycle = ingest(states, fleet(3, 5.0), provider="lz", now=T0 + 60, tz=UTC, watching_since=T0)
    with pytest.raises(Fenced):
        writer.write_cycle(cycle, run("lz", T0 + 60, seen=3), {}, guard=lost)
    assert reader.count_rows("usage_deltas") == 0 and reader.count_rows("poll_runs") == 1
    assert {s.month_usd for s in reader.token_states("lz")["lz"].values()} == {2.0}
    engine.dispose()
