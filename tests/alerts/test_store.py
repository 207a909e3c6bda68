from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

from alerts.records import LogEntry, OutboxItem
from alerts.store import TABLE_NAMES, AlertStore
from tests.alerts.notify_support import T0, sqlite_store


def item(**kw: object) -> OutboxItem:
    base: dict[str, object] = dict(
        id=None,
        created_at=T0,
        group_key="{provider=lz,token=a}",
        receiver="warning",
        tags=("warning",),
        title="t",
        body="b",
        notify_type="warning",
        next_attempt_at=T0,
    )
    base.update(kw)
    return OutboxItem(**base)  # type: ignore[arg-type]


def test_schema_is_idempotent_and_named(tmp_path: Path) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'kw.db'}")
    try:
        AlertStore(engine).ensure_schema()
        AlertStore(engine).ensure_schema()
        names = set(sa.inspect(engine).get_table_names())
        assert set(TABLE_NAMES) <= names  # with every other table, from the one schema history
        assert all(n.startswith(("alert_", "notification_")) for n in TABLE_NAMES)
    finally:
        engine.dispose()


def test_claim_is_atomic_and_counts_the_attempt(tmp_path: Path) -> None:
    with sqlite_store(tmp_path / "kw.db") as store:
        queued = store.enqueue(item())
        assert queued.id is not None
        assert store.due_ids(T0 - 1, 10) == []
        claimed = store.claim(queued.id, T0)
        assert claimed is not None and (claimed.state, claimed.attempts) == ("sending", 1)
        assert store.claim(queued.id, T0) is None  # a second sender loses
        store.finish(queued.id, state="sent", now=T0 + 1, delivered=["abc"])
        (row,) = store.outbox()
        assert (row.state, row.sent_at, row.delivered) == ("sent", T0 + 1, frozenset({"abc"}))
        assert store.counts() == {"sent": 1, "failed": 0, "suppressed": 0}


def test_requeue_sending_after_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "kw.db"
    with sqlite_store(path) as store:
        queued = store.enqueue(item())
        assert queued.id is not None
        store.claim(queued.id, T0)
    with sqlite_store(path) as store:  # "restarted"
        assert store.requeue_sending() == 1
        (row,) = store.outbox()
        assert (row.state, row.attempts) == ("pending", 1)


def test_log_and_outbox_are_written_together(tmp_path: Path) -> None:
    with sqlite_store(tmp_path / "kw.db") as store:
        entry = LogEntry("{g}", "warning", frozenset({"a", "b"}), frozenset(), T0, "first")
        stored = store.record_notification(entry, item())
        assert stored is not None and stored.id is not None
        assert store.load_log() == {("{g}", "warning"): entry}
        updated = LogEntry("{g}", "warning", frozenset(), frozenset({"a"}), T0 + 5, "resolved")
        assert store.record_notification(updated, None) is None
        assert store.load_log()[("{g}", "warning")] == updated
        assert len(store.outbox()) == 1


def test_counters_survive_pruning(tmp_path: Path) -> None:
    with sqlite_store(tmp_path / "kw.db") as store:
        queued = store.enqueue(item())
        assert queued.id is not None
        store.claim(queued.id, T0)
        store.finish(queued.id, state="failed", now=T0, error="down")
        store.bump("suppressed", 3)
        assert store.prune_outbox(T0 + 1) == 1
        assert store.outbox() == []
        assert store.counts() == {"sent": 0, "failed": 1, "suppressed": 3}
