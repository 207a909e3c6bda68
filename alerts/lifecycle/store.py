"""The alert engine's own tables, in the same database as the rest of keywatch.

Each public method is one transaction, committed before it returns, so whatever acts on its
result (a notification, a transition) acts on durable state: a kill -9 at any point leaves the
database at a step boundary. SQLAlchemy Core on a private MetaData keeps these tables apart from
monitor's models. The DDL is in `monitor.store.migrations`, with every other table.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, cast, get_args

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine, RowMapping

from alerts.lifecycle.records import Alert, LogEntry, OutboxItem, OutboxState, Silence
from alerts.matchers import Matcher
from alerts.model import AlertState, Severity
from monitor.store import apply_migrations

__all__ = ["METADATA", "OUTCOMES", "TABLE_NAMES", "AlertStore"]

METADATA = sa.MetaData()

alert_state = sa.Table(
    "alert_state",
    METADATA,
    sa.Column("fingerprint", sa.String, primary_key=True),
    sa.Column("rule", sa.String, nullable=False, index=True),
    sa.Column("labels", sa.JSON, nullable=False),
    sa.Column("severity", sa.String, nullable=False),
    sa.Column("state", sa.String, nullable=False, index=True),
    sa.Column("active_since", sa.Float, nullable=False),
    sa.Column("firing_since", sa.Float),
    sa.Column("resolved_at", sa.Float),
    sa.Column("last_eval", sa.Float, nullable=False),
    sa.Column("last_hit_at", sa.Float, nullable=False),
    sa.Column("consecutive_hits", sa.Integer, nullable=False),
    sa.Column("value", sa.Float, nullable=False),
    sa.Column("summary", sa.Text, nullable=False),
    sa.Column("annotations", sa.JSON, nullable=False),
    sa.Column("for_polls", sa.Integer, nullable=False),
    sa.Column("keep_firing_for", sa.Float, nullable=False),
)

alert_silence = sa.Table(
    "alert_silence",
    METADATA,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("matchers", sa.JSON, nullable=False),  # [[name, op, value], ...]
    sa.Column("starts_at", sa.Float, nullable=False),
    sa.Column("ends_at", sa.Float, nullable=False),
    sa.Column("created_by", sa.String, nullable=False),
    sa.Column("comment", sa.Text, nullable=False),
    sa.Column("expired", sa.Boolean, nullable=False, default=False),
    sqlite_autoincrement=True,  # ids are typed into `silence expire ID`: never reuse one
)

notification_log = sa.Table(
    "notification_log",
    METADATA,
    sa.Column("group_key", sa.String, primary_key=True),
    sa.Column("receiver", sa.String, primary_key=True),
    sa.Column("firing", sa.JSON, nullable=False),
    sa.Column("resolved", sa.JSON, nullable=False),
    sa.Column("sent_at", sa.Float, nullable=False),
    sa.Column("reason", sa.String, nullable=False),
)

notification_outbox = sa.Table(
    "notification_outbox",
    METADATA,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("group_key", sa.String, nullable=False),
    sa.Column("receiver", sa.String, nullable=False),
    sa.Column("tags", sa.JSON, nullable=False),
    sa.Column("title", sa.Text, nullable=False),
    sa.Column("body", sa.Text, nullable=False),
    sa.Column("notify_type", sa.String, nullable=False),
    sa.Column("state", sa.String, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("next_attempt_at", sa.Float, nullable=False),
    sa.Column("last_error", sa.Text, nullable=False),
    sa.Column("sent_at", sa.Float),
    sa.Column("delivered", sa.JSON, nullable=False),
    sa.Column("severity", sa.String, nullable=False, default="info"),
    sa.Column("claimed_by", sa.String),  # the instance sending it (several share the outbox)
    sa.Column("claimed_until", sa.Float),  # after this another instance may send it again
    sa.Index("ix_notification_outbox_due", "state", "next_attempt_at"),
    sqlite_autoincrement=True,
)

# Counters live in their own rows so the outbox can be pruned without the totals going back.
notification_counter = sa.Table(
    "notification_counter",
    METADATA,
    sa.Column("outcome", sa.String, primary_key=True),
    sa.Column("count", sa.Integer, nullable=False),
)

TABLE_NAMES = tuple(sorted(METADATA.tables))
# keywatch_notifications_total{outcome}: failed is a permanent error (no target has the tags),
# expired an info/warning notice given up on age (alerts.notification.outbox), suppressed muted by a silence.
OUTCOMES = ("sent", "failed", "expired", "suppressed")
_FINAL_STATES: tuple[OutboxState, ...] = ("sent", "failed", "expired")  # counted, then prunable
_UNDELIVERED: tuple[OutboxState, ...] = ("pending", "sending")


class AlertStore:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def ensure_schema(self) -> None:
        """The tables come from keywatch's one schema history (`monitor.store.migrations`)."""
        apply_migrations(self._engine)

    # -- alert states --------------------------------------------------------------------------

    def load_alerts(self) -> list[Alert]:
        with self._engine.connect() as conn:
            rows = conn.execute(sa.select(alert_state).order_by(alert_state.c.fingerprint)).mappings()
            return [_alert_from_row(r) for r in rows]

    def save_alerts(self, upsert: Iterable[Alert], delete: Iterable[str] = ()) -> None:
        """Write changed alerts and drop forgotten ones, all in one transaction."""
        rows = [_alert_to_row(a) for a in upsert]
        gone = list(delete)
        if not rows and not gone:
            return
        # Delete-then-insert with executemany: one statement per batch on any SQL backend, and
        # a 10,000-token fleet's alerts are written in tens of milliseconds, not seconds.
        stale = gone + [row["fingerprint"] for row in rows]
        with self._engine.begin() as conn:
            for i in range(0, len(stale), 500):
                conn.execute(alert_state.delete().where(alert_state.c.fingerprint.in_(stale[i : i + 500])))
            if rows:
                conn.execute(alert_state.insert(), rows)

    def prune_resolved(self, before: float) -> list[str]:
        """Forget resolved alerts that resolved before `before`; returns their fingerprints."""
        with self._engine.begin() as conn:
            cond = sa.and_(alert_state.c.state == "resolved", alert_state.c.resolved_at < before)
            fps = list(conn.execute(sa.select(alert_state.c.fingerprint).where(cond)).scalars())
            if fps:
                conn.execute(alert_state.delete().where(alert_state.c.fingerprint.in_(fps)))
            return fps

    # -- silences ------------------------------------------------------------------------------

    def add_silence(self, silence: Silence) -> Silence:
        with self._engine.begin() as conn:
            result = conn.execute(
                alert_silence.insert().values(
                    matchers=[[m.name, m.op, m.value] for m in silence.matchers],
                    starts_at=silence.starts_at,
                    ends_at=silence.ends_at,
                    created_by=silence.created_by,
                    comment=silence.comment,
                    expired=silence.expired,
                )
            )
            new_id = _new_id(result)
        return _replace_silence_id(silence, new_id)

    def load_silences(self, *, not_ended_at: float | None = None) -> list[Silence]:
        """All silences, or only those neither expired nor ended at `not_ended_at`."""
        query = sa.select(alert_silence).order_by(alert_silence.c.id)
        if not_ended_at is not None:
            query = query.where(alert_silence.c.expired.is_(False), alert_silence.c.ends_at > not_ended_at)
        with self._engine.connect() as conn:
            return [_silence_from_row(r) for r in conn.execute(query).mappings()]

    def expire_silence(self, silence_id: int, now: float) -> bool:
        """End a silence now; False if there is no such silence or it already ended."""
        with self._engine.begin() as conn:
            result = conn.execute(
                alert_silence.update()
                .where(
                    alert_silence.c.id == silence_id,
                    alert_silence.c.expired.is_(False),
                    alert_silence.c.ends_at > now,
                )
                .values(expired=True, ends_at=now)  # WHERE ensures it had not ended yet
            )
            return result.rowcount == 1

    # -- notification log ----------------------------------------------------------------------

    def load_log(self) -> dict[tuple[str, str], LogEntry]:
        with self._engine.connect() as conn:
            rows = conn.execute(sa.select(notification_log)).mappings()
            entries = [_log_from_row(r) for r in rows]
        return {(e.group_key, e.receiver): e for e in entries}

    def record_notification(
        self, entry: LogEntry, item: OutboxItem | None, *, guard: Callable[[Connection], None] | None = None
    ) -> OutboxItem | None:
        """Update the notification log and enqueue the notification in one transaction: a crash
        leaves either both (the outbox then delivers) or neither (the next flush decides again).
        `guard` runs first in that transaction (an instance that lost the group's provider is
        stopped there, monitor.cluster)."""
        with self._engine.begin() as conn:
            if guard is not None:
                guard(conn)
            _upsert(conn, notification_log, _log_to_row(entry), key=("group_key", "receiver"))
            if item is None:
                return None
            return _insert_outbox(conn, item)

    def prune_log(self, before: float) -> list[tuple[str, str]]:
        """Forget what receivers were last told about groups that went quiet before `before` (the
        last notice said nothing fires): should they fire again, that is news to tell in any case.
        Entries of groups still firing stay, however old. Returns the (group, receiver) keys."""
        with self._engine.begin() as conn:
            rows = conn.execute(
                sa.select(
                    notification_log.c.group_key, notification_log.c.receiver, notification_log.c.firing
                ).where(notification_log.c.sent_at < before)
            ).all()
            quiet = [(g, r) for g, r, firing in rows if not firing]
            for i in range(0, len(quiet), 500):
                chunk = quiet[i : i + 500]
                conn.execute(
                    notification_log.delete().where(
                        sa.tuple_(notification_log.c.group_key, notification_log.c.receiver).in_(chunk)
                    )
                )
            return quiet

    # -- outbox --------------------------------------------------------------------------------

    def enqueue(self, item: OutboxItem) -> OutboxItem:
        with self._engine.begin() as conn:
            return _insert_outbox(conn, item)

    def due_ids(self, now: float, limit: int) -> list[int]:
        query = (
            sa.select(notification_outbox.c.id)
            .where(notification_outbox.c.state == "pending", notification_outbox.c.next_attempt_at <= now)
            .order_by(notification_outbox.c.next_attempt_at, notification_outbox.c.id)
            .limit(limit)
        )
        with self._engine.connect() as conn:
            return list(conn.execute(query).scalars())

    def claim(
        self, item_id: int, now: float, *, by: str = "", until: float | None = None
    ) -> OutboxItem | None:
        """pending -> sending with the attempt counted, committed before the send; None if another
        sender got there first or the row is not due (the UPDATE's WHERE is the lock)."""
        with self._engine.begin() as conn:
            result = conn.execute(
                notification_outbox.update()
                .where(
                    notification_outbox.c.id == item_id,
                    notification_outbox.c.state == "pending",
                    notification_outbox.c.next_attempt_at <= now,
                )
                .values(
                    state="sending",
                    attempts=notification_outbox.c.attempts + 1,
                    claimed_by=by or None,
                    claimed_until=until,
                )
            )
            if result.rowcount != 1:
                return None
            row = conn.execute(
                sa.select(notification_outbox).where(notification_outbox.c.id == item_id)
            ).mappings()
            return _outbox_from_row(row.one())

    def claim_due(self, now: float, limit: int, *, by: str, hold: float) -> list[OutboxItem]:
        """Several senders (PostgreSQL): the due rows no other sender is claiming right now,
        pending -> sending in one statement (FOR UPDATE SKIP LOCKED: two instances never get the
        same row, and neither waits for the other). The claim holds `hold` seconds by the
        database's clock, so the hosts' clocks need not agree."""
        o = notification_outbox.c
        due = (
            sa.select(o.id)
            .where(o.state == "pending", o.next_attempt_at <= now)
            .order_by(o.next_attempt_at, o.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        with self._engine.begin() as conn:
            rows = conn.execute(
                notification_outbox.update()
                .where(o.id.in_(due.scalar_subquery()))
                .values(
                    state="sending", attempts=o.attempts + 1, claimed_by=by, claimed_until=_db_now() + hold
                )
                .returning(*notification_outbox.c)
            ).mappings()
            return sorted((_outbox_from_row(r) for r in rows), key=lambda i: (i.next_attempt_at, i.id or 0))

    def requeue_expired(self) -> int:
        """Several senders (PostgreSQL): rows whose sender's claim ran out by the database's clock
        (it died mid-send), or that no sender claimed by name (a release before claims), go back
        to pending: at least once across crashes."""
        o = notification_outbox.c
        cond = sa.and_(o.state == "sending", sa.or_(o.claimed_by.is_(None), o.claimed_until < _db_now()))
        with self._engine.begin() as conn:
            result = conn.execute(
                notification_outbox.update()
                .where(cond)
                .values(state="pending", claimed_by=None, claimed_until=None)
            )
            return result.rowcount

    def finish(
        self,
        item_id: int,
        *,
        state: OutboxState,
        now: float,
        error: str = "",
        next_attempt_at: float | None = None,
        delivered: Iterable[str] = (),
        by: str = "",
    ) -> bool:
        """Record a send's outcome (and count it, in the same transaction). `by`: only if this
        sender still holds the claim. False when the row was not this sender's to finish."""
        values: dict[str, Any] = {
            "state": state,
            "last_error": error,
            "delivered": sorted(delivered),
            "claimed_by": None,
            "claimed_until": None,
        }
        if state == "sent":
            values["sent_at"] = now
        if next_attempt_at is not None:
            values["next_attempt_at"] = next_attempt_at
        o = notification_outbox.c
        where = [o.id == item_id, o.state == "sending"]
        if by:
            where.append(o.claimed_by == by)
        with self._engine.begin() as conn:
            done = conn.execute(notification_outbox.update().where(*where).values(**values)).rowcount == 1
            if done and state in _FINAL_STATES:
                _bump(conn, state, 1)
            return done

    def requeue_sending(self) -> int:
        """One instance, at start: rows a crash left mid-send go back to pending (at least once)."""
        with self._engine.begin() as conn:
            result = conn.execute(
                notification_outbox.update()
                .where(notification_outbox.c.state == "sending")
                .values(state="pending", claimed_by=None, claimed_until=None)
            )
            return result.rowcount

    def outbox(self, *, states: Sequence[OutboxState] = ()) -> list[OutboxItem]:
        query = sa.select(notification_outbox).order_by(notification_outbox.c.id)
        if states:
            query = query.where(notification_outbox.c.state.in_(states))
        with self._engine.connect() as conn:
            return [_outbox_from_row(r) for r in conn.execute(query).mappings()]

    def next_due(self) -> float | None:
        query = sa.select(sa.func.min(notification_outbox.c.next_attempt_at)).where(
            notification_outbox.c.state == "pending"
        )
        with self._engine.connect() as conn:
            return cast(float | None, conn.execute(query).scalar())

    def pending_counts(self) -> dict[Severity, int]:
        """Undelivered rows (pending or sending) by severity; severities with none are absent.
        One COUNT ... GROUP BY over the state index: cheap enough for every scrape."""
        o = notification_outbox.c
        query = (
            sa.select(o.severity, o.notify_type, sa.func.count())
            .where(o.state.in_(_UNDELIVERED))
            .group_by(o.severity, o.notify_type)  # notify_type too: _severity() reads both
        )
        counts: dict[Severity, int] = {}
        with self._engine.connect() as conn:
            for severity, notify_type, n in conn.execute(query).all():
                key = _severity(severity, notify_type)
                counts[key] = counts.get(key, 0) + int(n)
        return counts

    def oldest_pending(self) -> float | None:
        """created_at of the oldest undelivered row (pending or sending), None when there is none."""
        o = notification_outbox.c
        query = sa.select(sa.func.min(o.created_at)).where(o.state.in_(_UNDELIVERED))
        with self._engine.connect() as conn:
            return cast(float | None, conn.execute(query).scalar())

    def prune_outbox(self, before: float) -> int:
        """Drop finished rows (sent, failed, expired) older than `before`; the counters keep them."""
        with self._engine.begin() as conn:
            result = conn.execute(
                notification_outbox.delete().where(
                    notification_outbox.c.state.in_(_FINAL_STATES),
                    notification_outbox.c.created_at < before,
                )
            )
            return result.rowcount

    # -- counters ------------------------------------------------------------------------------

    def bump(self, outcome: str, n: int = 1) -> None:
        if n:
            with self._engine.begin() as conn:
                _bump(conn, outcome, n)

    def counts(self) -> dict[str, int]:
        with self._engine.connect() as conn:
            rows = conn.execute(sa.select(notification_counter)).all()
        counts = dict.fromkeys(OUTCOMES, 0)
        counts.update({str(outcome): int(n) for outcome, n in rows})
        return counts


# -- helpers -----------------------------------------------------------------------------------


def _db_now() -> sa.ColumnElement[Any]:
    """The database's clock in Unix seconds (PostgreSQL: the shared outbox's claims)."""
    return sa.extract("epoch", sa.func.clock_timestamp())


def _upsert(conn: Connection, table: sa.Table, row: Mapping[str, Any], *, key: tuple[str, ...]) -> None:
    # UPDATE-then-INSERT instead of a dialect-specific ON CONFLICT: any SQLAlchemy URL works.
    cond = sa.and_(*(table.c[k] == row[k] for k in key))
    if conn.execute(table.update().where(cond).values(**row)).rowcount == 0:
        conn.execute(table.insert().values(**row))


def _bump(conn: Connection, outcome: str, n: int) -> None:
    _c = notification_counter.c
    updated = conn.execute(
        notification_counter.update().where(_c.outcome == outcome).values(count=_c.count + n)
    )
    if updated.rowcount == 0:
        conn.execute(notification_counter.insert().values(outcome=outcome, count=n))


def _insert_outbox(conn: Connection, item: OutboxItem) -> OutboxItem:
    row = _outbox_to_row(item)
    row.pop("id")
    result = conn.execute(notification_outbox.insert().values(**row))
    new_id = _new_id(result)
    return _outbox_from_row({**row, "id": new_id})


def _new_id(result: sa.CursorResult[Any]) -> int:
    key = result.inserted_primary_key
    assert key is not None
    return int(key[0])


def _alert_to_row(a: Alert) -> dict[str, Any]:
    return {
        "fingerprint": a.fingerprint,
        "rule": a.rule,
        "labels": dict(a.labels),
        "severity": a.severity,
        "state": a.state,
        "active_since": a.active_since,
        "firing_since": a.firing_since,
        "resolved_at": a.resolved_at,
        "last_eval": a.last_eval,
        "last_hit_at": a.last_hit_at,
        "consecutive_hits": a.consecutive_hits,
        "value": a.value,
        "summary": a.summary,
        "annotations": dict(a.annotations),
        "for_polls": a.for_polls,
        "keep_firing_for": a.keep_firing_for,
    }


def _alert_from_row(r: RowMapping) -> Alert:
    return Alert(
        fingerprint=r["fingerprint"],
        rule=r["rule"],
        labels=_str_dict(r["labels"]),
        severity=cast(Severity, r["severity"]),
        state=cast(AlertState, r["state"]),
        active_since=r["active_since"],
        firing_since=r["firing_since"],
        resolved_at=r["resolved_at"],
        last_eval=r["last_eval"],
        last_hit_at=r["last_hit_at"],
        consecutive_hits=r["consecutive_hits"],
        value=r["value"],
        summary=r["summary"],
        annotations=_str_dict(r["annotations"]),
        for_polls=r["for_polls"],
        keep_firing_for=r["keep_firing_for"],
    )


def _silence_from_row(r: RowMapping) -> Silence:
    return Silence(
        id=r["id"],
        matchers=tuple(Matcher(str(n), o, str(v)) for n, o, v in _json(r["matchers"])),
        starts_at=r["starts_at"],
        ends_at=r["ends_at"],
        created_by=r["created_by"],
        comment=r["comment"],
        expired=bool(r["expired"]),
    )


def _replace_silence_id(s: Silence, new_id: int) -> Silence:
    return Silence(new_id, s.matchers, s.starts_at, s.ends_at, s.created_by, s.comment, s.expired)


def _log_to_row(e: LogEntry) -> dict[str, Any]:
    return {
        "group_key": e.group_key,
        "receiver": e.receiver,
        "firing": sorted(e.firing),
        "resolved": sorted(e.resolved),
        "sent_at": e.sent_at,
        "reason": e.reason,
    }


def _log_from_row(r: RowMapping) -> LogEntry:
    return LogEntry(
        group_key=r["group_key"],
        receiver=r["receiver"],
        firing=frozenset(_json(r["firing"])),
        resolved=frozenset(_json(r["resolved"])),
        sent_at=r["sent_at"],
        reason=r["reason"],
    )


def _outbox_to_row(i: OutboxItem) -> dict[str, Any]:
    return {
        "id": i.id,
        "created_at": i.created_at,
        "group_key": i.group_key,
        "receiver": i.receiver,
        "tags": list(i.tags),
        "title": i.title,
        "body": i.body,
        "notify_type": i.notify_type,
        "severity": i.severity,
        "state": i.state,
        "attempts": i.attempts,
        "next_attempt_at": i.next_attempt_at,
        "last_error": i.last_error,
        "sent_at": i.sent_at,
        "delivered": sorted(i.delivered),
        "claimed_by": None,
        "claimed_until": None,
    }


def _outbox_from_row(r: Mapping[Any, Any]) -> OutboxItem:
    return OutboxItem(
        id=r["id"],
        created_at=r["created_at"],
        group_key=r["group_key"],
        receiver=r["receiver"],
        tags=tuple(_json(r["tags"])),
        title=r["title"],
        body=r["body"],
        notify_type=r["notify_type"],
        severity=_severity(r["severity"], r["notify_type"]),
        state=cast(OutboxState, r["state"]),
        attempts=r["attempts"],
        next_attempt_at=r["next_attempt_at"],
        last_error=r["last_error"],
        sent_at=r["sent_at"],
        delivered=frozenset(_json(r["delivered"])),
    )


_SEVERITIES: frozenset[str] = frozenset(get_args(Severity))
# What 0005_outbox_severity backfilled from: the Apprise type a severity is sent with.
_IMPLIED_BY_TYPE: dict[str, Severity] = {"failure": "critical", "warning": "warning"}


def _severity(stored: Any, notify_type: str) -> Severity:
    """A row's severity as the outbox acts on it. A row written by a release that did not know the
    column (still running against a migrated, shared database) got the DEFAULT 'info': its Apprise
    type `failure` still says it is a critical notice, and a critical notice must never expire."""
    implied = _IMPLIED_BY_TYPE.get(notify_type, "info")
    if stored not in _SEVERITIES:
        return implied
    if implied == "critical" and stored not in ("critical", "security"):
        return "critical"
    return cast(Severity, stored)


def _json(value: Any) -> Any:
    # sa.JSON decodes on SQLite; a raw string shows up only if a row was written by hand.
    return json.loads(value) if isinstance(value, str) else value


def _str_dict(value: Any) -> dict[str, str]:
    return {str(k): str(v) for k, v in (_json(value) or {}).items()}
