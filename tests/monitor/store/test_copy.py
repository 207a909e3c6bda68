"""`keywatch db copy` and `db migrate`: a history written by the real writer and alert store on
SQLite, moved to a real PostgreSQL schema and back to another SQLite file."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest
import sqlalchemy as sa

from alerts.lifecycle.records import Alert, LogEntry, OutboxItem, Silence
from alerts.lifecycle.store import AlertStore
from alerts.matchers import Matcher
from monitor.cli import main
from monitor.ingest import ingest
from monitor.model import Observation, PollResult
from monitor.store import PollRun, UsageReader, UsageWriter, open_engine
from monitor.store.copy import CopyRefused, TableCopy, copy_database
from tests.postgres import PostgresDatabase

UTC = ZoneInfo("UTC")
T0 = 1_794_300_000.0  # 2026-11-10


def _fleet(n: int, month: float, *, extra: int = 0) -> PollResult:
    return PollResult(
        [
            Observation(
                token_id=f"key_{i}",
                name=f"dev-app-t{i}-2026-01",
                status="active",
                today_usd=month * (i + 1),
                month_usd=month * (i + 1),
                today_requests=int(month * 10),
            )
            for i in range(n + extra)
        ]
    )


def _alert(fingerprint: str, token: str, state: str = "firing") -> Alert:
    return Alert(
        fingerprint=fingerprint,
        rule="spend_anomaly",
        labels={"provider": "lz", "token": token, "note": 'ünï "quoted" {json}'},
        severity="warning",
        state=state,  # type: ignore[arg-type]
        active_since=T0,
        firing_since=T0 + 60 if state == "firing" else None,
        resolved_at=None,
        last_eval=T0 + 120,
        last_hit_at=T0 + 120,
        consecutive_hits=3,
        value=8.125,
        summary=f"{token} spends 8x its usual rate",
        annotations={"runbook": "https://example.com/leak"},
    )


def _item(created_at: float, title: str) -> OutboxItem:
    return OutboxItem(
        None, created_at, "{provider=lz}", "warning", ("warning", "ops"), title, "body", "warning", "warning"
    )


def write_history(url: str) -> None:
    """Usage (tokens, deltas, hourly rollups, poll runs: one failed), alert states with JSON
    labels, silences (one expired: a true boolean), the notification log, and an outbox whose
    newest row was pruned (its id must never be handed out again)."""
    engine = open_engine(url)
    writer = UsageWriter(engine)
    states: dict[str, Any] = {}
    for step, month in enumerate((1.0, 1.5, 2.25, 4.0)):
        now = T0 + step * 1800
        cycle = ingest(
            states, _fleet(6, month), provider="lz", now=now, tz=UTC, watching_since=T0 if step else None
        )
        states = writer.write_cycle(cycle, PollRun("lz", "laozhang", now, now, True, True, seen=6), {})
    writer.write_failure(
        PollRun("lz", "laozhang", T0 + 9000, T0 + 9001, False, False, error_reason="timeout"), {"timeout": 2}
    )
    alerts = AlertStore(engine)
    alerts.save_alerts(
        [_alert("fp-a", "dev-app-t0-2026-01"), _alert("fp-b", "dev-app-t1-2026-01", "pending")]
    )
    alerts.add_silence(Silence(None, (Matcher("token", "=", "dev-*"),), T0, T0 + 3600, "ops", "maintenance"))
    gone = alerts.add_silence(
        Silence(None, (Matcher("rule", "=~", "spend.*"),), T0, T0 + 7200, "ops", "noisy")
    )
    assert gone.id is not None and alerts.expire_silence(gone.id, T0 + 10)
    alerts.record_notification(
        LogEntry("{provider=lz}", "warning", frozenset({"fp-a"}), frozenset(), T0 + 60, "new alerts"),
        _item(T0, "kept"),
    )
    pruned = alerts.enqueue(_item(T0 + 30, "pruned"))
    assert pruned.id == 2 and alerts.claim(2, T0 + 40) is not None
    assert alerts.finish(2, state="sent", now=T0 + 41)
    with engine.begin() as conn:  # the newest row goes: the outbox's counter stays at 2
        assert conn.execute(sa.text("DELETE FROM notification_outbox WHERE id = 2")).rowcount == 1
    engine.dispose()


def dump(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table but schema_migrations, in primary-key order, as Python values."""
    engine = open_engine(url, migrate=False)
    meta = sa.MetaData()
    meta.reflect(engine)
    out = {}
    with engine.connect() as conn:
        for table in meta.sorted_tables:
            if table.name != "schema_migrations":
                query = sa.select(table).order_by(*table.primary_key.columns)
                out[table.name] = [tuple(row) for row in conn.execute(query)]
    engine.dispose()
    return out


@pytest.fixture
def history(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'source.db'}"
    write_history(url)
    return url


def test_a_history_goes_to_postgresql_and_back_unchanged(
    history: str, tmp_path: Path, pg_database: PostgresDatabase
) -> None:
    pg = pg_database.url()
    there = copy_database(history, pg, batch_rows=7)  # several batches per table
    assert there.committed and there.verified
    rows = {t.table: t.target_rows for t in there.tables}
    assert "schema_migrations" not in rows
    assert rows["tokens"] == 6 and rows["usage_deltas"] == 18 and rows["poll_runs"] == 5
    assert rows["alert_state"] == 2 and rows["alert_silence"] == 2 and rows["notification_outbox"] == 1
    by_table = {t.table: t for t in there.tables}
    assert (
        by_table["usage_deltas"].source_spend
        == pytest.approx(3.0 * 21)
        == by_table["usage_deltas"].target_spend
    )
    assert by_table["tokens"].target_spend == pytest.approx(4.0 * 21)

    # What the daemon reads on PostgreSQL is what it wrote on SQLite: JSON labels and matchers,
    # booleans (SQLite's 0/1) included.
    source, target = open_engine(history), open_engine(pg)
    assert UsageReader(target).token_states() == UsageReader(source).token_states()
    assert AlertStore(target).load_alerts() == AlertStore(source).load_alerts()
    silences = AlertStore(target).load_silences()
    assert silences == AlertStore(source).load_silences()
    assert [s.expired for s in silences] == [False, True]
    assert AlertStore(target).outbox() == AlertStore(source).outbox()
    source.dispose()
    target.dispose()

    back_url = f"sqlite:///{tmp_path / 'back.db'}"
    back = copy_database(pg, back_url, batch_rows=5)
    assert back.committed and back.verified
    assert dump(back_url) == dump(history)
    with sqlite3.connect(tmp_path / "back.db") as conn:  # stored as SQLite stores them
        assert conn.execute("SELECT DISTINCT typeof(ok) FROM poll_runs").fetchall() == [("integer",)]
        assert conn.execute(
            "SELECT seq FROM sqlite_sequence WHERE name = 'notification_outbox'"
        ).fetchone() == (2,)
    conn.close()


def test_ids_handed_out_after_the_copy_are_new_ones(history: str, pg_database: PostgresDatabase) -> None:
    pg = pg_database.url()
    assert copy_database(history, pg).committed
    engine = open_engine(pg)
    reader, writer = UsageReader(engine), UsageWriter(engine)
    states = reader.token_states()["lz"]
    # A seventh token appears at the relay: it gets the next id (the sequence was moved past
    # the copied ones), and the old six keep theirs.
    cycle = ingest(states, _fleet(6, 5.0, extra=1), provider="lz", now=T0 + 9600, tz=UTC, watching_since=T0)
    after = writer.write_cycle(cycle, PollRun("lz", "laozhang", T0 + 9600, T0 + 9600, True, True), {})
    assert after["key_6"].pk == 7
    assert {after[f"key_{i}"].pk for i in range(6)} == {states[f"key_{i}"].pk for i in range(6)}
    alerts = AlertStore(engine)
    silence = alerts.add_silence(Silence(None, (Matcher("token", "=", "x"),), T0, T0 + 60, "ops", "new"))
    assert silence.id == 3
    # Outbox row 2 was handed out (then pruned) on SQLite: PostgreSQL does not hand it out again.
    assert alerts.enqueue(_item(T0 + 9600, "after the move")).id == 3
    engine.dispose()


def test_a_target_that_holds_data_is_refused_and_left_alone(
    history: str, tmp_path: Path, pg_database: PostgresDatabase
) -> None:
    pg = pg_database.url()
    assert copy_database(history, pg).committed
    before = dump(pg)
    with pytest.raises(CopyRefused, match=r"^the target is not empty \(table \w+ holds \d+ rows\)"):
        copy_database(history, pg)
    assert dump(pg) == before
    with pytest.raises(CopyRefused, match="same database"):
        copy_database(history, history.replace("source.db", "./source.db"))
    with pytest.raises(CopyRefused, match="does not exist"):
        copy_database(f"sqlite:///{tmp_path / 'typo.db'}", f"sqlite:///{tmp_path / 'new.db'}")
    assert not (tmp_path / "typo.db").exists()


def test_a_source_behind_this_release_is_refused_until_migrated(history: str, tmp_path: Path) -> None:
    with sqlite3.connect(history.removeprefix("sqlite:///")) as conn:
        (last,) = conn.execute("SELECT MAX(name) FROM schema_migrations").fetchone()
        conn.execute("DELETE FROM schema_migrations WHERE name = ?", (last,))
    conn.close()
    target = f"sqlite:///{tmp_path / 'new.db'}"
    with pytest.raises(CopyRefused, match=f"older than this keywatch \\(it lacks {last}\\)"):
        copy_database(history, target)


def test_spend_totals_are_compared_within_a_millionth_of_a_dollar() -> None:
    def table(source: float, target: float) -> TableCopy:
        return TableCopy("usage_deltas", 10, 10, "cost_usd", source, target)

    assert table(1234.5, 1234.5 + 4e-7).verified
    assert not table(1234.5, 1234.5 + 0.01).verified
    assert not TableCopy("tokens", 10, 9).verified


# --- the command line -------------------------------------------------------------------------
def _config(tmp_path: Path, database: str) -> Path:
    cfg = tmp_path / "kw.yaml"
    cfg.write_text(
        f"database: {database}\nproviders:\n  - name: na\n    kind: newapi\n"
        "    base_url: http://127.0.0.1:9\n    admin_token: sim-admin-token\n    user_id: 1\n"
    )
    return cfg


@pytest.mark.parametrize("engine", ["sqlite", "postgresql"])
def test_db_migrate_upgrades_once_then_says_up_to_date(
    engine: str, tmp_path: Path, request: pytest.FixtureRequest, capsys: pytest.CaptureFixture[str]
) -> None:
    from monitor.store.migrations import MIGRATIONS

    url = (
        f"sqlite:///{tmp_path / 'fresh.db'}"
        if engine == "sqlite"
        else request.getfixturevalue("pg_database").url()
    )
    cfg = _config(tmp_path, url)
    assert main(["-c", str(cfg), "db", "migrate"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].endswith(f": applied {len(MIGRATIONS)} migrations")
    assert [line.strip() for line in lines[1:]] == [m.name for m in MIGRATIONS]
    assert main(["-c", str(cfg), "db", "migrate"]) == 0
    assert capsys.readouterr().out.endswith(": schema up to date\n")


def test_db_migrate_on_an_unreachable_database_is_one_line_without_the_password(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = _config(tmp_path, "postgresql+psycopg://kw:hunter2@127.0.0.1:1/keywatch")
    assert main(["-c", str(cfg), "db", "migrate"]) == 1
    captured = capsys.readouterr()
    assert captured.err.startswith(
        "keywatch db migrate: cannot open the database postgresql+psycopg://kw:***@"
    )
    assert captured.err.count("\n") == 1 and "hunter2" not in captured.err + captured.out


def test_db_copy_prints_the_verified_tables_and_refuses_a_second_time(
    history: str, pg_database: PostgresDatabase, capsys: pytest.CaptureFixture[str]
) -> None:
    pg = pg_database.url()
    assert main(["db", "copy", "--from", history, "--to", pg, "--json"]) == 0
    rows = orjson.loads(capsys.readouterr().out)
    assert all(r["verified"] for r in rows)
    assert {r["table"]: r["rows"] for r in rows}["usage_hourly"] == 12
    assert main(["db", "copy", "--from", pg, "--to", history]) == 1  # back onto the full source
    err = capsys.readouterr().err
    assert err.startswith("keywatch db copy: the target is not empty") and err.count("\n") == 1


def test_db_copy_never_prints_a_password(history: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(["db", "copy", "--from", history, "--to", "postgresql+psycopg://kw:hunter2@127.0.0.1:1/kw"]) == 1
    )
    captured = capsys.readouterr()
    assert captured.err.startswith("keywatch db copy: cannot open the database postgresql+psycopg://kw:***@")
    assert captured.err.count("\n") == 1 and "hunter2" not in captured.err + captured.out


def test_a_copy_that_does_not_verify_is_rolled_back(
    history: str, pg_database: PostgresDatabase, capsys: pytest.CaptureFixture[str]
) -> None:
    # A target that loses rows and re-rates others (triggers fire for COPY as for INSERT).
    pg = pg_database.url()
    engine = open_engine(pg)
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE FUNCTION lossy() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "IF TG_TABLE_NAME = 'usage_hourly' THEN NEW.cost_usd := NEW.cost_usd + 0.01; "
            "ELSIF NEW.id % 5 = 0 THEN RETURN NULL; END IF; "
            "RETURN NEW; END $$"
        )
        for table in ("usage_deltas", "usage_hourly"):
            conn.exec_driver_sql(
                f"CREATE TRIGGER lossy BEFORE INSERT ON {table} FOR EACH ROW EXECUTE FUNCTION lossy()"
            )
    engine.dispose()
    assert main(["db", "copy", "--from", history, "--to", pg, "--json"]) == 1
    captured = capsys.readouterr()
    rows = {r["table"]: r for r in orjson.loads(captured.out)}
    assert [t for t, r in rows.items() if not r["verified"]] == ["usage_deltas", "usage_hourly"]
    assert (rows["usage_deltas"]["source_rows"], rows["usage_deltas"]["rows"]) == (18, 15)
    hourly = rows["usage_hourly"]
    assert hourly["rows"] == hourly["source_rows"]
    assert hourly["target_spend_usd"] == pytest.approx(hourly["source_spend_usd"] + 0.12)
    assert captured.err == (
        "keywatch db copy: verification failed (usage_deltas, usage_hourly): the target was rolled back\n"
    )
    assert all(rows == [] for rows in dump(pg).values())  # empty: ready for another try

    # A target that fails in the middle of the copy: one line, and still nothing committed.
    engine = open_engine(pg)
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE OR REPLACE FUNCTION lossy() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "RAISE EXCEPTION 'disk full'; END $$"
        )
    engine.dispose()
    assert main(["db", "copy", "--from", history, "--to", pg]) == 1
    captured = capsys.readouterr()
    assert captured.err == "keywatch db copy: the copy failed, nothing was committed: disk full\n"
    assert captured.out == ""
    assert all(rows == [] for rows in dump(pg).values())
