"""The outbox against a real webhook receiver: retries, backoff, restarts, expiry by severity."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from alerts.lifecycle.records import OutboxItem
from alerts.model import Severity
from alerts.notification.notify import Notifier
from alerts.notification.outbox import EXPIRE_AFTER, FlushReport, Outbox, RetryPolicy
from tests.alerts.notify_support import T0, Webhook, closed_port, notify_settings, sqlite_store


def item(
    title: str = "[FIRING:1] spend_anomaly · lz/a",
    tags: tuple[str, ...] = ("critical",),
    severity: Severity = "critical",
) -> OutboxItem:
    return OutboxItem(
        id=None,
        created_at=T0,
        group_key="{provider=lz,token=a}",
        receiver=",".join(tags),
        tags=tags,
        title=title,
        body="body",
        notify_type="failure" if severity in ("critical", "security") else severity,
        severity=severity,
        next_attempt_at=T0,
    )


def hook_notifier(hook: Webhook) -> Notifier:
    return Notifier(notify_settings((f"json://127.0.0.1:{hook.port}/hook", ("critical",))))


def test_backoff_is_exponential_and_capped() -> None:
    policy = RetryPolicy(cap=300)
    assert [policy.delay(n) for n in range(1, 8)] == [10, 20, 40, 80, 160, 300, 300]
    # a critical notice is retried for as long as a target is down: thousands of attempts
    assert policy.delay(5000) == 300


async def test_target_down_for_a_while_then_back(tmp_path: Path) -> None:
    async with Webhook() as hook:
        with sqlite_store(tmp_path / "kw.db") as store:
            outbox = Outbox(store, hook_notifier(hook))
            outbox.enqueue(item())
            hook.status = 503
            assert await outbox.flush(T0) == FlushReport(retried=1)
            (row,) = store.outbox()
            assert (row.state, row.attempts, row.next_attempt_at) == ("pending", 1, T0 + 10)
            assert "json [critical]: not delivered" in row.last_error
            assert await outbox.flush(T0 + 9) == FlushReport()  # not due yet
            assert await outbox.flush(T0 + 10) == FlushReport(retried=1)
            assert store.outbox()[0].next_attempt_at == T0 + 30
            hook.status = 200
            assert await outbox.flush(T0 + 30) == FlushReport(sent=1)
            assert await outbox.flush(T0 + 10_000) == FlushReport()
            (row,) = store.outbox()
            assert (row.state, row.attempts, row.sent_at) == ("sent", 3, T0 + 30)
            assert outbox.counts() == {"sent": 1, "failed": 0, "expired": 0, "suppressed": 0}
    assert (len(hook.received), hook.refused) == (1, 2)


async def test_restart_in_the_middle_of_a_retry_delivers_exactly_once(tmp_path: Path) -> None:
    path = tmp_path / "kw.db"
    async with Webhook() as hook:
        hook.status = 503
        with sqlite_store(path) as store:
            outbox = Outbox(store, hook_notifier(hook))
            outbox.enqueue(item())
            await outbox.flush(T0)  # attempt 1 fails
            # the retry is claimed (attempt 2 recorded) and then the process dies mid-send
            (due,) = store.due_ids(T0 + 10, 10)
            assert store.claim(due, T0 + 10) is not None
            del outbox
        hook.status = 200
        with sqlite_store(path) as store:  # a new process on the same file
            outbox = Outbox(store, hook_notifier(hook))
            (row,) = store.outbox()
            assert (row.state, row.attempts) == ("pending", 2)
            assert await outbox.flush(T0 + 10) == FlushReport(sent=1)
            assert await outbox.flush(T0 + 10_000) == FlushReport()
        with sqlite_store(path) as store:  # and another restart does not resend
            outbox = Outbox(store, hook_notifier(hook))
            assert await outbox.flush(T0 + 20_000) == FlushReport()
            assert outbox.counts()["sent"] == 1
    assert len(hook.received) == 1


def outbox_errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.ERROR and r.name == "alerts.notification.outbox"
    ]


async def test_critical_and_security_are_never_given_up_lower_ones_expire(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    notifier = Notifier(notify_settings((f"json://127.0.0.1:{closed_port()}/x", ("critical", "info"))))
    with sqlite_store(tmp_path / "kw.db") as store:
        outbox = Outbox(store, notifier, policy=RetryPolicy(cap=300, expire_after=1000))
        for severity in ("critical", "security", "warning", "info"):
            outbox.enqueue(item(title=severity, severity=severity))
        # attempts at 0, 10, 30, 70, 150, 310, 610, 910 (age < 1000: retried), 1210 (age >= 1000)
        times = [0, 10, 30, 70, 150, 310, 610, 910, 1210, 1510, 1810]
        reports = [await outbox.flush(T0 + t) for t in times]
        assert reports[:8] == [FlushReport(retried=4)] * 8
        assert reports[8] == FlushReport(retried=2, expired=2)
        assert reports[9:] == [FlushReport(retried=2)] * 2
        assert [(row.title, row.state, row.attempts) for row in store.outbox()] == [
            ("critical", "pending", 11),  # past the old budget of 8 attempts, and still going
            ("security", "pending", 11),
            ("warning", "expired", 9),
            ("info", "expired", 9),
        ]
        assert outbox.counts() == {"sent": 0, "failed": 0, "expired": 2, "suppressed": 0}
    # the two expire in one flush, whose sends run concurrently: their lines come in either order
    assert sorted(outbox_errors(caplog)) == [
        f"outbox: {s} notification {n} {s!r} expired undelivered after 0.3 h and 9 attempts: "
        "json [critical,info]: not delivered"
        for n, s in ((4, "info"), (3, "warning"))
    ]
    assert not [r for r in caplog.records if r.exc_info]  # one line each, never a traceback


async def test_an_overdue_warning_gets_one_more_try_before_it_expires(tmp_path: Path) -> None:
    # the daemon was stopped for longer than the age: a target that works now still delivers it
    async with Webhook() as hook:
        with sqlite_store(tmp_path / "kw.db") as store:
            outbox = Outbox(store, hook_notifier(hook))
            outbox.enqueue(item(severity="warning", tags=("critical",)))
            assert await outbox.flush(T0 + 2 * EXPIRE_AFTER) == FlushReport(sent=1)
    assert len(hook.received) == 1


async def test_no_matching_target_fails_at_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async with Webhook() as hook:
        with sqlite_store(tmp_path / "kw.db") as store:
            outbox = Outbox(store, hook_notifier(hook))
            outbox.enqueue(item(tags=("info",)))  # critical, but configuration is not a retry's job
            assert await outbox.flush(T0) == FlushReport(failed=1)
            (row,) = store.outbox()
            assert (row.state, row.attempts) == ("failed", 1)
            assert "no notify target has any of the tags ['info']" in row.last_error
            assert outbox.counts() == {"sent": 0, "failed": 1, "expired": 0, "suppressed": 0}
    assert hook.received == []
    assert outbox_errors(caplog) == [
        "outbox: critical notification 1 '[FIRING:1] spend_anomaly · lz/a' not sent: "
        "no notify target has any of the tags ['info'] (check notify.routes)"
    ]


async def test_two_senders_never_send_a_row_twice(tmp_path: Path) -> None:
    async with Webhook() as hook:
        with sqlite_store(tmp_path / "kw.db") as store:
            a = Outbox(store, hook_notifier(hook))
            b = Outbox(store, hook_notifier(hook), recover=False)
            for n in range(5):
                a.enqueue(item(title=f"n{n}"))
            ra, rb = await asyncio.gather(a.flush(T0), b.flush(T0))
            assert ra.sent + rb.sent == 5
    assert sorted(r["title"] for r in hook.received) == [f"n{n}" for n in range(5)]


async def test_one_attempt_per_row_per_flush_even_without_backoff(tmp_path: Path) -> None:
    notifier = Notifier(notify_settings((f"json://127.0.0.1:{closed_port()}/x", ("critical",))))
    with sqlite_store(tmp_path / "kw.db") as store:
        outbox = Outbox(store, notifier, policy=RetryPolicy(base=0))
        for _ in range(3):
            outbox.enqueue(item())
        assert await outbox.flush(T0) == FlushReport(retried=3)
        assert [row.attempts for row in store.outbox()] == [1, 1, 1]
