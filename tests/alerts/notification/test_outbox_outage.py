"""A notification target down for days, through the daemon's AlertEngine on an injected clock and a
real webhook: critical and security notices wait for it, lower ones expire, the gauges say so."""

from __future__ import annotations

import gzip
import logging
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from itertools import pairwise
from pathlib import Path

import pytest

from alerts.engine import AlertEngine
from alerts.notification.notify import Notifier
from alerts.notification.outbox import EXPIRE_AFTER, FlushReport, Outbox, RetryPolicy
from monitor.clock import FakeClock
from monitor.settings import Notify, Settings
from monitor.store import open_engine
from tests.alerts.notify_support import T0, Webhook, closed_port, finding, notify_settings, sqlite_store

DAY = 86400.0
ALL_TAGS = ("critical", "security", "warning", "info", "audit")
NOTHING_PENDING = {"info": 0.0, "warning": 0.0, "critical": 0.0, "security": 0.0}
RELEASE_0_1_DB = Path(__file__).parents[2] / "fixtures" / "release-0.1-keywatch.db.gz"


@contextmanager
def alert_engine(tmp_path: Path, notify: Notify, clock: FakeClock) -> Iterator[AlertEngine]:
    db = open_engine(f"sqlite:///{tmp_path / 'kw.db'}")
    try:
        yield AlertEngine(Settings(notify=notify), db, clock=clock)
    finally:
        db.dispose()


def backlog_gauges(kw: AlertEngine) -> tuple[dict[str, float], float]:
    """keywatch_notifications_pending by severity and keywatch_notification_oldest_pending_seconds."""
    families = {f.name: f for f in kw.families()}
    pending = {dict(lbl)["severity"]: v for lbl, v in families["keywatch_notifications_pending"].samples}
    ((labels, oldest),) = families["keywatch_notification_oldest_pending_seconds"].samples
    assert dict(labels) == {}
    return pending, oldest


def outcomes(kw: AlertEngine) -> dict[str, float]:
    (total,) = [f for f in kw.families() if f.name == "keywatch_notifications_total"]
    return {dict(lbl)["outcome"]: v for lbl, v in total.samples}


def outbox_lines(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "alerts.notification.outbox" and r.levelno == level
    ]


async def test_a_target_down_for_two_days(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="alerts.notification.outbox")
    clock = FakeClock(T0)
    async with Webhook() as hook:
        hook.status = 503
        # group_interval (the backoff's cap) 30 min: two days are ~100 real attempts per notice
        notify = notify_settings((f"json://127.0.0.1:{hook.port}/hook", ALL_TAGS), group_interval=1800)
        with alert_engine(tmp_path, notify, clock) as kw:
            findings = [
                finding("provider_down", provider="oa", token="", severity="critical"),
                finding("leak_suspected", token="b", severity="security"),
                finding("spend_anomaly", token="c", severity="warning"),
            ]
            kw.pipeline.process(kw.tracker.evaluate(findings, now=T0), kw.tracker.alerts(), T0)
            assert backlog_gauges(kw) == (NOTHING_PENDING, 0.0)
            clock.set(created := T0 + 30)
            assert len(kw.pipeline.tick()) == 3
            rows = {row.severity: row for row in kw.store.outbox()}
            assert sorted(rows) == ["critical", "security", "warning"]

            # Only the outbox runs from here on (the groups' reminders would queue rows of their own).
            tried_at: list[float] = []  # when the critical notice was attempted
            retried = 0
            expired_at: float | None = None
            while (due := kw.pipeline.outbox.next_due()) is not None and due < created + 2 * DAY:
                clock.set(due)
                report = await kw.pipeline.flush()
                assert (report.sent, report.failed) == (0, 0)
                retried += report.retried
                if report.expired:
                    assert expired_at is None  # once
                    expired_at = due
                if {r.id: r for r in kw.store.outbox()}[rows["critical"].id].attempts > len(tried_at):
                    tried_at.append(due)
                waiting = {"critical": 1.0, "security": 1.0, "warning": float(expired_at is None)}
                assert backlog_gauges(kw) == ({**NOTHING_PENDING, **waiting}, due - created)

            # The warning was retried for the stated age, then expired at its next failed attempt.
            assert (
                expired_at is not None
                and created + EXPIRE_AFTER <= expired_at < created + EXPIRE_AFTER + 1800
            )
            # The critical notice: capped backoff (group_interval), far beyond the old 8 attempts.
            gaps = [b - a for a, b in pairwise(tried_at)]
            assert gaps[:9] == [10, 20, 40, 80, 160, 320, 640, 1280, 1800] and set(gaps[8:]) == {1800}
            assert len(tried_at) > 90
            assert outcomes(kw) == {"sent": 0, "failed": 0, "expired": 1, "suppressed": 0}

            hook.status = 200  # back after two days
            clock.set(created + 2 * DAY + 1800)
            assert await kw.pipeline.flush() == FlushReport(sent=2)
            assert backlog_gauges(kw) == (NOTHING_PENDING, 0.0)
            clock.advance(DAY)
            assert await kw.pipeline.flush() == FlushReport()
            assert outcomes(kw) == {"sent": 2, "failed": 0, "expired": 1, "suppressed": 0}
            final = {row.severity: (row.state, row.sent_at) for row in kw.store.outbox()}
            assert final == {
                "critical": ("sent", created + 2 * DAY + 1800),
                "security": ("sent", created + 2 * DAY + 1800),
                "warning": ("expired", None),
            }
            expired = kw.store.outbox(states=["expired"])[0]

    # Delivered exactly once each; every failed attempt really reached the target.
    assert sorted(r["title"] for r in hook.received) == sorted(
        [rows["critical"].title, rows["security"].title]
    )
    assert hook.refused == retried + 1
    # One line per retry, one for the expiry, never a traceback.
    assert len(outbox_lines(caplog, logging.WARNING)) == retried
    assert outbox_lines(caplog, logging.ERROR) == [
        f"outbox: warning notification {expired.id} '[FIRING:1] spend_anomaly · lz/c' expired undelivered "
        f"after {(expired_at - created) / 3600:.1f} h and {expired.attempts} attempts: "
        f"json [{','.join(sorted(ALL_TAGS))}]: not delivered"
    ]
    assert not [r for r in caplog.records if r.exc_info]


async def test_a_pending_critical_notice_from_release_0_1_waits_for_its_target(tmp_path: Path) -> None:
    # An older database: its outbox rows predate the severity column (0005 derives it on upgrade).
    path = tmp_path / "old.db"
    with gzip.open(RELEASE_0_1_DB) as src, path.open("wb") as dst:
        shutil.copyfileobj(src, dst)
    async with Webhook() as hook:
        hook.status = 503
        notify = notify_settings((f"json://127.0.0.1:{hook.port}/hook", ("critical", "security")))
        with sqlite_store(path) as store:
            assert [(row.notify_type, row.severity) for row in store.outbox()] == [
                ("failure", "critical"),
                ("info", "info"),
            ]
            (old,) = store.outbox(states=["pending"])
            outbox = Outbox(store, Notifier(notify), policy=RetryPolicy(cap=3600))
            now: float | None = old.next_attempt_at
            while now is not None and now < old.created_at + 2 * DAY:
                assert await outbox.flush(now) == FlushReport(retried=1)
                now = outbox.next_due()
            (waiting,) = store.outbox(states=["pending"])
            assert waiting.attempts > 40 and store.pending_counts() == {"critical": 1}
            hook.status = 200
            assert await outbox.flush(old.created_at + 2 * DAY + 3600) == FlushReport(sent=1)
            assert store.pending_counts() == {}
    assert [r["title"] for r in hook.received] == [old.title]


def test_the_weekly_digest_is_an_info_notice(tmp_path: Path) -> None:
    notify = notify_settings((f"json://127.0.0.1:{closed_port()}/x", ALL_TAGS))
    with alert_engine(tmp_path, notify, FakeClock(T0)) as kw:
        assert kw.send_digest_if_due([])
        (row,) = kw.store.outbox()
        assert (row.receiver, row.severity) == ("audit", "info")
        assert backlog_gauges(kw) == ({**NOTHING_PENDING, "info": 1.0}, 0.0)
