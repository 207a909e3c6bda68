"""Findings -> AlertTracker -> NotificationPipeline -> outbox -> real Apprise, on an injected clock."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest

from alerts.lifecycle.state import AlertTracker, no_data_for_providers
from alerts.lifecycle.store import AlertStore
from alerts.model import Finding
from alerts.notification.mute import Silences
from alerts.notification.notify import Notifier
from alerts.notification.pipeline import Dispatched, NotificationPipeline
from monitor.clock import FakeClock
from monitor.settings import Notify
from tests.alerts.notify_support import (
    T0,
    SmtpSink,
    Webhook,
    closed_port,
    finding,
    notify_settings,
    sqlite_store,
)

ALL_TAGS = ("critical", "security", "warning", "info")


class Engine:
    """The daemon's notification half, driven by hand: evaluate, process, tick."""

    def __init__(self, store: AlertStore, notify: Notify, clock: FakeClock) -> None:
        self.clock = clock
        self.store = store
        self.tracker = AlertTracker(store)
        self.pipeline = NotificationPipeline(store, Notifier(notify), notify, clock=clock)

    def poll(self, findings: Sequence[Finding], **kw: object) -> list[Dispatched]:
        now = self.clock.now()
        transitions = self.tracker.evaluate(findings, now=now, **kw)  # type: ignore[arg-type]
        self.pipeline.process(transitions, self.tracker.alerts(), now)
        return self.pipeline.tick(now)

    def at(self, t: float) -> list[Dispatched]:
        self.clock.set(T0 + t)
        return self.pipeline.tick()


@contextmanager
def engine(tmp_path: Path, **options: object) -> Iterator[Engine]:
    notify = notify_settings((f"json://127.0.0.1:{closed_port()}/unused", ALL_TAGS), **options)
    with sqlite_store(tmp_path / "kw.db") as store:
        yield Engine(store, notify, FakeClock(T0))


def reasons(sent: list[Dispatched]) -> list[str]:
    return [d.reason for d in sent]


def test_group_wait_group_interval_repeat_interval(tmp_path: Path) -> None:
    with engine(tmp_path) as e:
        assert e.poll([finding(token="a")]) == []  # group_wait starts
        assert e.at(29) == []
        first = e.at(30)
        assert reasons(first) == ["first"]
        assert first[0].title == "[FIRING:1] spend_anomaly · lz/a"
        assert first[0].outbox_id is not None
        # another alert joins the group: it waits for the group's next flush, group_interval later
        e.clock.set(T0 + 60)
        assert e.poll([finding(token="a"), finding("budget", token="a", threshold="0.8", window="day")]) == []
        assert e.at(329) == []
        joined = e.at(330)
        assert reasons(joined) == ["new_alerts"] and joined[0].title.startswith("[FIRING:2]")
        # unchanged: nothing at each group_interval until repeat_interval has passed
        quiet = [e.at(330 + 300 * k) for k in range(1, 48)]
        assert all(q == [] for q in quiet)
        assert reasons(e.at(330 + 300 * 48)) == ["repeat"]  # 14400 s after the last send


def test_resolved_notice_then_the_group_is_gone(tmp_path: Path) -> None:
    with engine(tmp_path) as e:
        e.poll([finding(token="a"), finding("budget", token="a", threshold="1.0", window="day")])
        assert reasons(e.at(30)) == ["first"]
        e.clock.set(T0 + 90)
        e.poll([finding(token="a")])  # budget cleared
        some = e.at(330)
        assert reasons(some) == ["new_resolved"]
        assert "Resolved (1):" in some[0].body and some[0].title.startswith("[FIRING:1]")
        e.clock.set(T0 + 400)
        e.poll([])
        done = e.at(630)
        assert reasons(done) == ["resolved"] and done[0].title == "[RESOLVED] spend_anomaly · lz/a"
        assert len(e.pipeline.dispatcher) == 0
        # it comes back: a new group, group_wait, and it is news again
        e.clock.set(T0 + 700)
        e.poll([finding(token="a")])
        assert reasons(e.at(730)) == ["new_alerts"]


def test_the_outbox_row_has_the_groups_highest_severity_resolved_alerts_included(tmp_path: Path) -> None:
    def over_budget() -> Finding:
        return finding("budget", token="a", severity="critical", threshold="1.0", window="day")

    one_receiver = {severity: ("critical",) for severity in ("critical", "warning")}
    with engine(tmp_path, routes=one_receiver) as e:
        e.poll([over_budget(), finding(token="a")])
        assert reasons(e.at(30)) == ["first"]
        e.clock.set(T0 + 60)
        e.poll([finding(token="a")])  # the budget alert resolves: its all-clear matters as much
        assert reasons(e.at(330)) == ["new_resolved"]
        e.clock.set(T0 + 400)
        e.poll([])
        assert reasons(e.at(630)) == ["resolved"]
        e.clock.set(T0 + 700)
        e.poll([finding(token="a")])
        assert reasons(e.at(730)) == ["new_alerts"]
        rows = [(row.title, row.notify_type, row.severity) for row in e.store.outbox()]
    assert rows == [
        ("[FIRING:2] budget, spend_anomaly · lz/a", "failure", "critical"),
        ("[FIRING:1] spend_anomaly · lz/a", "warning", "critical"),  # with "Resolved (1): budget"
        ("[RESOLVED] spend_anomaly · lz/a", "success", "warning"),
        ("[FIRING:1] spend_anomaly · lz/a", "warning", "warning"),
    ]


def test_send_resolved_off_stays_quiet_but_refires(tmp_path: Path) -> None:
    with engine(tmp_path, send_resolved=False) as e:
        e.poll([finding()])
        assert reasons(e.at(30)) == ["first"]
        e.clock.set(T0 + 60)
        e.poll([])
        assert e.at(330) == []
        e.clock.set(T0 + 400)
        e.poll([finding()])
        assert reasons(e.at(430)) == ["new_alerts"]


def test_budget_one_notification_per_threshold_per_period(tmp_path: Path) -> None:
    def budget(threshold: str, period: str) -> Finding:
        return finding("budget", threshold=threshold, window="month", period=period)

    with engine(tmp_path) as e:
        e.poll([budget("0.5", "2026-01")])
        assert reasons(e.at(30)) == ["first"]
        e.clock.set(T0 + 100)
        e.poll([budget("0.5", "2026-01"), budget("0.8", "2026-01")])
        assert reasons(e.at(330)) == ["new_alerts"]
        # a day of the same findings: no repeats for budget groups
        for k in range(2, 300):
            e.clock.set(T0 + 300 * k)
            assert e.poll([budget("0.5", "2026-01"), budget("0.8", "2026-01")]) == [], k
        # the next period: the old thresholds resolve, the new one is news
        e.clock.set(T0 + 300 * 300)
        got = e.poll([budget("0.5", "2026-02")])
        assert reasons(got) == ["new_alerts"] and "period=2026-02" in got[0].body


def test_silence_mutes_and_expiry_notifies(tmp_path: Path) -> None:
    with engine(tmp_path) as e:
        silences = Silences(e.store)
        silence = silences.add(["token=dev-*"], now=T0, created_by="ana", comment="load test")
        e.poll([finding(token="dev-a"), finding(token="prod-a")])
        sent = e.at(30)
        assert [d.group_key for d in sent] == ["{provider=lz,token=prod-a}"]
        assert e.pipeline.counts()["suppressed"] == 1
        assert silence.id is not None
        silences.expire(silence.id, now=T0 + 100)
        assert [(d.group_key, d.reason) for d in e.at(330)] == [("{provider=lz,token=dev-a}", "first")]


def test_provider_down_inhibits_token_alerts(tmp_path: Path) -> None:
    def outage() -> Finding:
        return finding("provider_down", token="", severity="critical")

    with engine(tmp_path) as e:
        e.poll([finding(token="a")])
        assert reasons(e.at(30)) == ["first"]
        e.clock.set(T0 + 60)
        assert e.poll([outage(), finding(token="a")]) == []
        e.clock.set(T0 + 100)
        sent = e.poll([outage(), finding(token="a"), finding(token="b")])
        assert [(d.group_key, d.reason) for d in sent] == [("{provider=lz,token=}", "first")]
        assert e.pipeline.counts()["suppressed"] == 1  # b fired while muted
        assert e.at(330) == []  # a and b are muted (a's group goes quiet in the log)
        # the relay is back: the outage resolves, and the token alerts still firing are news again
        e.clock.set(T0 + 400)
        assert [(d.group_key, d.reason) for d in e.poll([finding(token="a"), finding(token="b")])] == [
            ("{provider=lz,token=}", "resolved")
        ]
        assert [(d.group_key, d.reason) for d in e.at(630)] == [
            ("{provider=lz,token=a}", "new_alerts"),
            ("{provider=lz,token=b}", "first"),
        ]


def test_quarantine_annotation_mutes_spend_alerts_and_shows_in_the_title(tmp_path: Path) -> None:
    with engine(tmp_path) as e:
        leak = finding("leak_suspected", severity="security")
        e.poll([leak, finding("spend_anomaly")])
        # the responder acts before the group's first flush and records what it did
        e.tracker.annotate(leak.fingerprint, {"response": "quarantined", "quarantined": "true"})
        e.pipeline.process([], e.tracker.alerts())
        sent = e.at(30)
        assert [(d.receiver, d.title) for d in sent] == [
            ("security,critical", "[FIRING:1] leak_suspected · lz/dev-webapp-api-2026-01 — quarantined")
        ]
        assert "done: quarantined" in sent[0].body


def test_a_route_of_nothing_only_logs(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    with engine(tmp_path, routes={"info": (), "warning": ("warning",)}) as e:
        e.poll([finding("token_unused", severity="info")])
        (sent,) = e.at(30)
        assert (sent.receiver, sent.outbox_id) == ("", None) and e.store.outbox() == []
    assert "(not routed to any target): [FIRING:1] token_unused" in caplog.text


def test_provider_down_no_data_does_not_resolve(tmp_path: Path) -> None:
    with engine(tmp_path) as e:
        e.poll([finding(token="a"), finding(token="b")])
        assert len(e.at(30)) == 2
        down = no_data_for_providers({"lz"})
        for k in range(1, 20):  # lz cannot be polled for a while: no findings, no data
            e.clock.set(T0 + 30 + 60 * k)
            assert e.poll([], unknown=down) == []
        assert {a.state for a in e.tracker.alerts()} == {"firing"}
        e.clock.set(T0 + 3000)
        e.poll([finding(token="a")])  # back: b is really fine now
        assert [a.labels["token"] for a in e.tracker.alerts(["resolved"])] == ["b"]


async def test_restart_does_not_refire(tmp_path: Path) -> None:
    path = tmp_path / "kw.db"
    async with Webhook() as hook:
        notify = notify_settings((f"json://127.0.0.1:{hook.port}/hook", ALL_TAGS))
        with sqlite_store(path) as store:
            e = Engine(store, notify, FakeClock(T0))
            e.poll([finding()])
            assert reasons(e.at(30)) == ["first"]
            assert (await e.pipeline.flush()).sent == 1
        with sqlite_store(path) as store:  # restarted daemon, same database
            e = Engine(store, notify, FakeClock(T0 + 120))
            assert e.poll([finding()]) == []
            for t in (150, 450, 750):
                assert e.at(t) == []
            assert (await e.pipeline.flush()).sent == 0
            # but it still resolves and says so
            e.clock.set(T0 + 800)
            e.poll([])
            assert reasons(e.at(1050)) == ["resolved"]
            assert (await e.pipeline.flush()).sent == 1
    assert [r["title"] for r in hook.received] == [
        "[FIRING:1] spend_anomaly · lz/dev-webapp-api-2026-01",
        "[RESOLVED] spend_anomaly · lz/dev-webapp-api-2026-01",
    ]


async def test_end_to_end_routes_to_email_webhook_and_ntfy(tmp_path: Path) -> None:
    async with SmtpSink() as smtp, Webhook() as hook, Webhook() as ntfy:
        notify = notify_settings(
            (smtp.url(), ("critical",)),
            (f"json://127.0.0.1:{hook.port}/hook", ("warning",)),
            (f"ntfy://127.0.0.1:{ntfy.port}/keywatch", ("security",)),
            # one mail per test: Apprise throttles consecutive sends to one mail target by 5.5 s
            routes={"critical": ("critical",), "warning": ("warning",), "security": ("security",)},
        )
        with sqlite_store(tmp_path / "kw.db") as store:
            e = Engine(store, notify, FakeClock(T0))
            e.poll(
                [
                    finding("budget", token="a", severity="warning", threshold="0.8", window="month"),
                    finding(
                        "leak_suspected",
                        token="b",
                        severity="security",
                        annotations={"response": "quarantined"},
                    ),
                    finding("provider_down", provider="oa", token="", severity="critical"),
                ]
            )
            assert len(e.at(30)) == 3
            report = await e.pipeline.flush()
            assert (report.sent, report.failed) == (3, 0)
            assert e.pipeline.counts() == {"sent": 3, "failed": 0, "expired": 0, "suppressed": 0}
    assert [m["Subject"] for m in smtp.messages] == ["[FIRING:1] provider_down · oa"]
    assert [r["title"] for r in hook.received] == ["[FIRING:1] budget · lz/a"]
    assert [r["title"] for r in ntfy.received] == ["[FIRING:1] leak_suspected · lz/b — quarantined"]


def test_no_targets_only_logs(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    with sqlite_store(tmp_path / "kw.db") as store:
        e = Engine(store, Notify(), FakeClock(T0))
        e.poll([finding()])
        (sent,) = e.at(30)
        assert sent.outbox_id is None and store.outbox() == []
        assert e.at(330) == []  # still deduplicated
    assert "alert notification (not routed to any target): [FIRING:1] spend_anomaly" in caplog.text


async def test_run_sender_ticks_and_sends_until_stopped(tmp_path: Path) -> None:
    async with Webhook() as hook:
        notify = notify_settings((f"json://127.0.0.1:{hook.port}/hook", ALL_TAGS), group_wait=0)
        with sqlite_store(tmp_path / "kw.db") as store:
            e = Engine(store, notify, FakeClock(T0))
            e.poll([finding()])  # group_wait 0: due at once; the background task sends it
            stop = asyncio.Event()
            task = asyncio.create_task(e.pipeline.run_sender(stop, interval=0.01))
            for _ in range(500):  # a real send has to complete: wait up to 5 s
                if hook.received:
                    break
                await asyncio.sleep(0.01)
            stop.set()
            await asyncio.wait_for(task, timeout=5)
    assert [r["title"] for r in hook.received] == ["[FIRING:1] spend_anomaly · lz/dev-webapp-api-2026-01"]
