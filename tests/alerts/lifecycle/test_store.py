from __future__ import annotations

import threading
from pathlib import Path

import sqlalchemy as sa

from alerts.lifecycle.records import LogEntry, OutboxItem
from alerts.lifecycle.store import TABLE_NAMES, AlertStore
from tests.alerts.notify_support import T0, sqlite_store, store_at
from tests.postgres import PostgresDatabase


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
        severity="warning",
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


def test_claim_is_atomic_and_counts_the_attempt(store_url: str) -> None:
    with store_at(store_url) as store:
        queued = store.enqueue(item())
        assert queued.id is not None
        assert store.due_ids(T0 - 1, 10) == []
        claimed = store.claim(queued.id, T0)
        assert claimed is not None and (claimed.state, claimed.attempts) == ("sending", 1)
        assert store.claim(queued.id, T0) is None  # a second sender loses
        store.finish(queued.id, state="sent", now=T0 + 1, delivered=["abc"])
        (row,) = store.outbox()
        assert (row.state, row.sent_at, row.delivered) == ("sent", T0 + 1, frozenset({"abc"}))
        assert store.counts() == {"sent": 1, "failed": 0, "expired": 0, "suppressed": 0}


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


def test_log_and_outbox_are_written_together(store_url: str) -> None:
    with store_at(store_url) as store:
        entry = LogEntry("{g}", "warning", frozenset({"a", "b"}), frozenset(), T0, "first")
        stored = store.record_notification(entry, item())
        assert stored is not None and stored.id is not None
        assert store.load_log() == {("{g}", "warning"): entry}
        updated = LogEntry("{g}", "warning", frozenset(), frozenset({"a"}), T0 + 5, "resolved")
        assert store.record_notification(updated, None) is None
        assert store.load_log()[("{g}", "warning")] == updated
        assert len(store.outbox()) == 1


def test_counters_survive_pruning(store_url: str) -> None:
    with store_at(store_url) as store:
        for state in ("failed", "expired", "expired"):
            queued = store.enqueue(item())
            assert queued.id is not None
            store.claim(queued.id, T0)
            store.finish(queued.id, state=state, now=T0, error="down")
        store.bump("suppressed", 3)
        assert store.prune_outbox(T0 + 1) == 3
        assert store.outbox() == []
        assert store.counts() == {"sent": 0, "failed": 1, "expired": 2, "suppressed": 3}


def test_severity_is_stored_and_undelivered_rows_are_counted_by_it(store_url: str) -> None:
    with store_at(store_url) as store:
        assert (store.pending_counts(), store.oldest_pending()) == ({}, None)
        for severity, at in (("security", T0 + 5), ("warning", T0 + 1), ("warning", T0 + 9), ("info", T0)):
            store.enqueue(item(severity=severity, created_at=at))
        assert [row.severity for row in store.outbox()] == ["security", "warning", "warning", "info"]
        sending = store.claim(1, T0)  # mid-send still counts as waiting
        assert sending is not None and sending.severity == "security"
        store.claim(4, T0)
        store.finish(4, state="sent", now=T0)  # delivered: no longer waiting
        assert store.pending_counts() == {"security": 1, "warning": 2}
        assert store.oldest_pending() == T0 + 1


def test_a_row_written_without_severity_is_read_by_its_apprise_type(tmp_path: Path) -> None:
    # What a release that predates the column writes into a migrated (possibly shared) database:
    # the column's DEFAULT 'info'. Its Apprise type still tells a critical notice from the rest.
    path = tmp_path / "kw.db"
    with sqlite_store(path) as store:
        old_writer = sa.create_engine(f"sqlite:///{path}")
        try:
            with old_writer.begin() as conn:
                for notify_type in ("failure", "warning", "success", "info"):
                    conn.execute(
                        sa.text(
                            "INSERT INTO notification_outbox (created_at, group_key, receiver, tags,"
                            " title, body, notify_type, state, attempts, next_attempt_at, last_error,"
                            " delivered) VALUES (:t, 'g', 'r', '[]', 'x', 'y', :n, 'pending', 0, :t, '', '[]')"
                        ),
                        {"t": T0, "n": notify_type},
                    )
                conn.execute(sa.text("UPDATE notification_outbox SET severity = 'bogus' WHERE id = 2"))
        finally:
            old_writer.dispose()
        assert [(row.notify_type, row.severity) for row in store.outbox()] == [
            ("failure", "critical"),  # never lets a critical notice expire
            ("warning", "warning"),  # an unknown value: what the type implies, as 0005 backfilled
            ("success", "info"),
            ("info", "info"),
        ]
        assert store.pending_counts() == {"critical": 1, "warning": 1, "info": 2}


# --- several instances share the outbox (PostgreSQL) ---------------------------------------------


def test_two_senders_claiming_at_once_never_get_the_same_row(pg_database: PostgresDatabase) -> None:
    url = pg_database.url()
    with store_at(url) as store:
        ids = {store.enqueue(item(title=f"n{i}")).id for i in range(60)}
    claimed: dict[str, list[int]] = {"a": [], "b": []}

    def sender(name: str) -> None:
        with store_at(url) as mine:
            while batch := mine.claim_due(T0, 5, by=name, hold=120):
                claimed[name].extend(i.id for i in batch if i.id is not None)

    threads = [threading.Thread(target=sender, args=(n,)) for n in claimed]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    got = claimed["a"] + claimed["b"]
    assert sorted(got) == sorted(i for i in ids if i is not None)  # each row once, none missed
    with store_at(url) as store:
        rows = store.outbox()
        assert {r.state for r in rows} == {"sending"} and all(r.attempts == 1 for r in rows)


def test_a_claim_is_finished_only_by_its_sender_and_requeued_when_it_runs_out(
    pg_database: PostgresDatabase,
) -> None:
    """Claims hold by the database's clock (hosts' clocks need not agree): here one for a minute,
    one already run out, as a sender that died mid-send leaves it."""
    with store_at(pg_database.url()) as store:
        first, second = store.enqueue(item(title="1")), store.enqueue(item(title="2"))
        assert first.id is not None and second.id is not None
        store.claim_due(T0, 1, by="a", hold=60)  # a takes the first
        store.claim_due(T0, 1, by="b", hold=-1)  # b the second, and b died: its claim ran out
        assert not store.finish(first.id, state="sent", now=T0, by="b")  # not b's to finish
        assert store.requeue_expired() == 1  # only b's
        assert [(r.title, r.state) for r in store.outbox()] == [("1", "sending"), ("2", "pending")]
        assert store.finish(second.id, state="sent", now=T0, by="b") is False  # requeued meanwhile
        assert store.finish(first.id, state="sent", now=T0, by="a") is True
        assert store.counts()["sent"] == 1
