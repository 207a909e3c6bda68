"""One schema history: a fresh database and one written by release 0.1.0 end up the same, and the
0.1.0 database keeps its history, alert states, silences and outbox through the upgrade."""

from __future__ import annotations

import gzip
import shutil
import sqlite3
from pathlib import Path

import sqlalchemy as sa
from sqlmodel import SQLModel

from alerts.lifecycle import store as alert_store
from alerts.offline import audit
from alerts.response import quarantine as response
from monitor import cluster
from monitor.store import UsageReader, open_engine
from monitor.store import schema as _schema  # noqa: F401  (registers the SQLModel tables)
from monitor.store.migrations import MIGRATIONS

FIXTURE = Path(__file__).parents[2] / "fixtures" / "release-0.1-keywatch.db.gz"


def _release_db(tmp_path: Path) -> Path:
    db = tmp_path / "old.db"
    with gzip.open(FIXTURE) as src, db.open("wb") as dst:
        shutil.copyfileobj(src, dst)
    return db


def _columns(db: Path) -> dict[str, list[tuple[str, str, int]]]:
    """table -> [(column, declared type, not null)], and index -> its columns, as SQLite sees them."""
    with sqlite3.connect(db) as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        out = {
            t: [(c[1], c[2], c[3]) for c in conn.execute(f"PRAGMA table_info({t})")]
            for t in tables
            if t != "sqlite_sequence"
        }
        for (index,) in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"
        ):
            out[f"index:{index}"] = [(c[2], "", 0) for c in conn.execute(f"PRAGMA index_info({index})")]
    conn.close()
    return out


def _counts(db: Path) -> dict[str, int]:
    with sqlite3.connect(db) as conn:
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT IN "
                "('schema_migrations', 'sqlite_sequence')"
            )
        ]
        counts = {t: conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in tables}
    conn.close()
    return counts


def test_a_release_0_1_database_upgrades_to_the_same_schema_as_a_fresh_one(tmp_path: Path) -> None:
    old = _release_db(tmp_path)
    before = _counts(old)
    open_engine(f"sqlite:///{old}").dispose()
    fresh = tmp_path / "fresh.db"
    open_engine(f"sqlite:///{fresh}").dispose()
    assert _columns(old) == _columns(fresh)
    with sqlite3.connect(old) as conn:
        recorded = [r[0] for r in conn.execute("SELECT name FROM schema_migrations ORDER BY name")]
    conn.close()
    assert recorded == [m.name for m in MIGRATIONS]
    after = _counts(old)
    assert {t: after[t] for t in before} == before  # no row lost or added by the upgrade


def test_the_upgraded_database_keeps_history_alert_states_silences_and_outbox(tmp_path: Path) -> None:
    old = _release_db(tmp_path)
    engine = open_engine(f"sqlite:///{old}")
    reader = UsageReader(engine)
    states = reader.token_states()["demo"]
    assert len(states) == 24
    assert sum(s.spend_total_usd for s in states.values()) > 0
    quarantined = [s for s in states.values() if s.name == "test-recsys-api-2025-10"]
    assert quarantined and quarantined[0].pk is not None
    assert reader.hourly(quarantined[0].pk, 0.0)
    store = alert_store.AlertStore(engine)
    assert len(store.load_alerts()) == 23
    silences = store.load_silences()
    assert [s.comment for s in silences] == ["fixture: dev noise", "fixture: expired one"]
    assert [str(m) for m in silences[0].matchers] == ["token=dev-*", "rule=spend_anomaly"]
    outbox = store.outbox()
    assert [(i.state, i.tags) for i in outbox] == [
        ("pending", ("security", "critical")),
        ("sent", ("info",)),
    ]
    engine.dispose()


def test_the_table_classes_describe_the_tables_the_migrations_create(tmp_path: Path) -> None:
    """SQLModel (usage history) and Core (alert engine) tables are how the code reads and writes:
    each must name exactly the columns the migrations create, no more and no fewer."""
    engine = open_engine(f"sqlite:///{tmp_path / 'kw.db'}")
    inspector = sa.inspect(engine)
    declared = {
        **SQLModel.metadata.tables,
        **alert_store.METADATA.tables,
        **response.METADATA.tables,
        **audit._METADATA.tables,
        **cluster.METADATA.tables,
    }
    assert set(declared) | {"schema_migrations"} == set(inspector.get_table_names())
    for name, table in declared.items():
        migrated = {c["name"]: c["nullable"] for c in inspector.get_columns(name)}
        described = {c.name: bool(c.nullable) and not c.primary_key for c in table.columns}
        assert migrated == described, name
    engine.dispose()
