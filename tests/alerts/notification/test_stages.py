"""Each notification stage alone, on hand-built batches (alerts.notification.stages), with a real
SQLite store where the stage needs one; then the two properties of the stage list as `tick` runs it."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from alerts.lifecycle.records import Alert, LogEntry
from alerts.lifecycle.store import AlertStore
from alerts.model import AlertState, Severity
from alerts.notification.grouping import NO_REPEAT_RULES, AlertGroup, Dispatcher
from alerts.notification.mute import Muter, Silences
from alerts.notification.nflog import NotificationLog
from alerts.notification.notify import Notifier
from alerts.notification.outbox import FlushReport, Outbox
from alerts.notification.pipeline import NotificationPipeline
from alerts.notification.stages import (
    Batch,
    DedupStage,
    Dispatched,
    Due,
    GroupStage,
    MuteStage,
    Notice,
    OutboxStage,
    RearmStage,
    Rendered,
    RenderStage,
)
from monitor.clock import FakeClock
from monitor.settings import Notify
from tests.alerts.notify_support import T0, Webhook, notify_settings, sqlite_store


def notify(**options: Any) -> Notify:
    return Notify(**{"group_wait": 30, "group_interval": 300, "repeat_interval": 4 * 3600, **options})


NOTIFY = notify()
KEY = "{provider=lz,token=a}"
HOURS = 3600.0


def alert(
    rule: str = "spend_anomaly",
    token: str = "a",
    *,
    provider: str = "lz",
    state: AlertState = "firing",
    severity: Severity = "warning",
    annotations: Mapping[str, str] | None = None,
    **extra: str,
) -> Alert:
    labels = {"provider": provider, **({"token": token} if token else {}), **extra}
    return Alert(
        fingerprint=f"{rule}|" + ",".join(f"{k}={v}" for k, v in sorted(labels.items())),
        rule=rule,
        labels=labels,
        severity=severity,
        state=state,
        active_since=T0,
        firing_since=T0,
        resolved_at=T0 + 600 if state == "resolved" else None,
        last_eval=T0,
        last_hit_at=T0,
        consecutive_hits=1,
        value=12.5,
        summary=f"{rule} on {provider}/{token}",
        annotations=dict(annotations or {}),
    )


def group(firing: tuple[Alert, ...] = (), resolved: tuple[Alert, ...] = ()) -> AlertGroup:
    return AlertGroup(KEY, "warning", ("warning",), {"provider": "lz", "token": "a"}, firing, resolved)


def told(store: AlertStore, firing: tuple[Alert, ...], *, sent_at: float = T0) -> NotificationLog:
    """A log in which receiver `warning` was told, at `sent_at`, that `firing` fire; read back
    fresh from the store, as a restarted daemon would."""
    entry = LogEntry(KEY, "warning", frozenset(a.fingerprint for a in firing), frozenset(), sent_at, "first")
    NotificationLog(store).record(entry, None)
    return NotificationLog(store)


# -- mute ------------------------------------------------------------------------------------------


def test_mute_drops_silenced_and_inhibited_alerts_and_says_why(tmp_path: Path) -> None:
    with sqlite_store(tmp_path / "kw.db") as store:
        silences = Silences(store)
        silence = silences.add(["token=dev-*"], now=T0, created_by="ana", comment="load test")
        outage = alert("provider_down", token="", severity="critical")
        behind_outage = alert(token="b")  # same provider as the outage
        dev = alert(token="dev-a", provider="oa")
        leak = alert(
            "leak_suspected", "x", provider="oa", severity="security", annotations={"quarantined": "true"}
        )
        echo = alert(token="x", provider="oa")  # the quarantined token's spend alert
        loud = alert(token="c", provider="oa")
        pool = (outage, behind_outage, dev, leak, echo, loud)
        stage = MuteStage(Muter(silences))

        batch = stage.run(Batch(T0 + 60, pool))
        assert batch.muted == {
            behind_outage.fingerprint: "inhibited by provider_down",
            dev.fingerprint: f"silenced by {silence.id}",
            echo.fingerprint: "inhibited by quarantined",
        }
        assert batch.alerts == pool  # muted alerts stay: they still hold their group's timer
        # the silence has ended (an hour, the default): only the inhibitions are left
        assert set(stage.run(Batch(T0 + HOURS, pool)).muted) == {behind_outage.fingerprint, echo.fingerprint}


# -- group/wait ------------------------------------------------------------------------------------


def test_group_waits_group_wait_then_flushes_its_audible_alerts() -> None:
    dispatcher = Dispatcher(NOTIFY)
    a, muted, gone = (
        alert(),
        alert("budget", threshold="0.8", window="day"),
        alert("token_unused", state="resolved"),
    )
    elsewhere = alert(token="z")
    dispatcher.observe(a, T0)
    dispatcher.observe(elsewhere, T0 + 20)
    stage = GroupStage(dispatcher)
    pool = (a, muted, gone, elsewhere)

    assert stage.run(Batch(T0 + 29, pool)).due == ()
    batch = stage.run(Batch(T0 + 30, pool, muted={muted.fingerprint: "silenced by 1"}))
    assert batch.due == (Due(group(firing=(a,), resolved=(gone,)), still_firing=True),)
    # every member muted: nothing to tell, but the group still fires and keeps its timer
    only_muted = stage.run(Batch(T0 + 30, (a,), muted={a.fingerprint: "silenced by 1"}))
    assert only_muted.due == (Due(group(), still_firing=True),)


def test_rearm_flushes_again_after_group_interval_and_drops_a_group_with_nothing_firing() -> None:
    dispatcher = Dispatcher(NOTIFY)
    a = alert()
    dispatcher.observe(a, T0)
    flush, rearm = GroupStage(dispatcher), RearmStage(dispatcher)

    assert len(rearm.run(flush.run(Batch(T0 + 30, (a,)))).due) == 1
    dispatcher.observe(a, T0 + 60)  # a known group: its timer is not restarted
    assert flush.run(Batch(T0 + 329, (a,))).due == ()
    assert len(rearm.run(flush.run(Batch(T0 + 330, (a,)))).due) == 1

    over = replace(a, state="resolved", resolved_at=T0 + 400)
    rearm.run(flush.run(Batch(T0 + 630, (over,))))  # the resolved notice's flush: nothing fires
    assert len(dispatcher) == 0 and flush.run(Batch(T0 + 100 * HOURS, (over,))).due == ()


# -- dedup -----------------------------------------------------------------------------------------


def test_dedup_sends_what_is_new_and_skips_an_unchanged_group(tmp_path: Path) -> None:
    a, b = alert(), alert("budget", threshold="0.8", window="day")
    with sqlite_store(tmp_path / "kw.db") as store:
        first = DedupStage(NotificationLog(store), NOTIFY, no_repeat=NO_REPEAT_RULES)
        (notice,) = first.run(Batch(T0 + 30, (), due=(Due(group((a,)), True),))).notices
        assert notice == Notice(
            group((a,)),
            "first",
            LogEntry(KEY, "warning", frozenset({a.fingerprint}), frozenset(), T0 + 30, "first"),
        )

        stage = DedupStage(told(store, (a,), sent_at=T0 + 30), NOTIFY, no_repeat=NO_REPEAT_RULES)
        unchanged = stage.run(Batch(T0 + 330, (), due=(Due(group((a,)), True),)))
        assert (unchanged.notices, unchanged.quiet) == ((), ())
        joined = stage.run(Batch(T0 + 330, (), due=(Due(group((a, b)), True),)))
        assert [n.reason for n in joined.notices] == ["new_alerts"]


def test_dedup_repeats_after_repeat_interval_but_not_for_no_repeat_rules(tmp_path: Path) -> None:
    anomaly, budget = alert(), alert("budget", threshold="0.8", window="day")
    with sqlite_store(tmp_path / "kw.db") as store:
        for firing, at, reasons in [
            ((anomaly,), T0 + 4 * HOURS - 1, []),
            ((anomaly,), T0 + 4 * HOURS, ["repeat"]),
            ((budget,), T0 + 100 * HOURS, []),  # once per threshold and period, never reminded
            ((budget, anomaly), T0 + 4 * HOURS, ["repeat"]),  # one repeatable alert is enough
        ]:
            stage = DedupStage(told(store, firing), NOTIFY, no_repeat=NO_REPEAT_RULES)
            batch = stage.run(Batch(at, (), due=(Due(group(firing), True),)))
            assert [n.reason for n in batch.notices] == reasons, (firing, at)
            assert batch.quiet == ()
        # budget stays quiet only because NO_REPEAT_RULES lists it
        unlisted = DedupStage(told(store, (budget,)), NOTIFY, no_repeat=frozenset())
        batch = unlisted.run(Batch(T0 + 4 * HOURS, (), due=(Due(group((budget,)), True),)))
        assert [n.reason for n in batch.notices] == ["repeat"]


def test_dedup_tells_a_resolution_only_to_whom_it_told_the_firing(tmp_path: Path) -> None:
    a, b = alert(state="resolved"), alert("budget", threshold="0.8", window="day", state="resolved")
    with sqlite_store(tmp_path / "kw.db") as store:
        stage = DedupStage(told(store, (a,)), NOTIFY, no_repeat=NO_REPEAT_RULES)
        (notice,) = stage.run(Batch(T0 + 630, (), due=(Due(group(resolved=(a, b)), False),))).notices
    assert notice.reason == "resolved"
    assert notice.group.resolved == (a,)  # b fired unheard (muted, or between flushes): no all-clear
    assert notice.entry == LogEntry(
        KEY, "warning", frozenset(), frozenset({a.fingerprint}), T0 + 630, "resolved"
    )


def test_dedup_logs_a_group_that_went_quiet_without_sending(tmp_path: Path) -> None:
    a = alert(state="resolved")
    with sqlite_store(tmp_path / "kw.db") as store:
        stage = DedupStage(told(store, (a,)), notify(send_resolved=False), no_repeat=NO_REPEAT_RULES)
        batch = stage.run(Batch(T0 + 630, (), due=(Due(group(resolved=(a,)), False),)))
    assert batch.notices == ()
    # the send time stays the last send's, so repeat_interval still counts from a real notification
    assert batch.quiet == (
        LogEntry(KEY, "warning", frozenset(), frozenset({a.fingerprint}), T0, "resolved_quiet"),
    )


# -- render ----------------------------------------------------------------------------------------


def notice(g: AlertGroup, reason: str) -> Notice:
    return Notice(g, reason, LogEntry(g.key, g.receiver, frozenset(), frozenset(), T0, reason))


def test_render_makes_title_body_apprise_type_and_the_rows_severity() -> None:
    anomaly = alert()
    over = alert("budget", severity="critical", state="resolved", threshold="1.0", window="day")
    some = notice(group(firing=(anomaly,), resolved=(over,)), "new_resolved")
    stage = RenderStage(notify(grafana_url="https://grafana.example"))

    (r,) = stage.run(Batch(T0 + 900, (), notices=(some,))).rendered
    assert r.notice is some
    assert r.title == "[FIRING:1] spend_anomaly · lz/a"
    assert "Firing (1):\n* spend_anomaly [warning] lz/a\n  spend_anomaly on lz/a\n" in r.body
    assert "Resolved (1):\n* budget [critical] lz/a threshold=1.0 window=day\n" in r.body
    assert "firing since 2026-01-01 00:00 UTC (for 15m)" in r.body
    assert (
        "Grafana: https://grafana.example/d/keywatch-token/keywatch-token?var-provider=lz&var-token=a"
        in r.body
    )
    assert r.body.endswith(f"Sent because: some alerts resolved (new_resolved). Group {KEY}.")
    # the row keeps the all-clear of a critical alert as undroppable as its alarm
    assert (r.notify_type, r.severity) == ("warning", "critical")

    (done,) = stage.run(Batch(T0 + 900, (), notices=(notice(group(resolved=(over,)), "resolved"),))).rendered
    resolved = (done.title, done.notify_type, done.severity)
    assert resolved == ("[RESOLVED] budget · lz/a", "success", "critical")


# -- outbox ----------------------------------------------------------------------------------------


def rendered(tags: tuple[str, ...] = ("warning",), severity: Severity = "critical") -> Rendered:
    g = replace(group((alert(),)), tags=tags, receiver=",".join(tags))
    entry = LogEntry(KEY, g.receiver, frozenset({alert().fingerprint}), frozenset(), T0, "first")
    return Rendered(Notice(g, "first", entry), "[FIRING:1] spend_anomaly · lz/a", "body", "warning", severity)


async def test_outbox_enqueues_with_the_rows_severity_and_it_is_sent_only_after_delivery(
    tmp_path: Path,
) -> None:
    r = rendered(severity="critical")
    async with Webhook() as hook:
        with sqlite_store(tmp_path / "kw.db") as store:
            nflog = NotificationLog(store)
            (sent,) = OutboxStage(nflog, deliverable=True).run(Batch(T0, (), rendered=(r,))).dispatched
            (row,) = store.outbox()
            assert sent == Dispatched(KEY, "warning", "first", r.title, "body", row.id)
            assert (row.state, row.severity, row.tags, row.notify_type) == (
                "pending",
                "critical",
                ("warning",),
                "warning",
            )
            assert row.next_attempt_at == T0
            assert store.load_log() == {(KEY, "warning"): r.notice.entry}
            assert nflog.get(KEY, "warning") == r.notice.entry

            target = notify_settings((f"json://127.0.0.1:{hook.port}/hook", ("warning",)))
            outbox = Outbox(store, Notifier(target))
            hook.status = 503
            assert await outbox.flush(T0) == FlushReport(retried=1)
            assert store.outbox()[0].state == "pending"  # a refused send is not "sent"
            hook.status = 200
            assert await outbox.flush(T0 + 10) == FlushReport(sent=1)
            assert store.outbox()[0].state == "sent"
    assert [x["title"] for x in hook.received] == [r.title]


def test_outbox_only_logs_what_no_target_takes_and_records_quiet_groups(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    quiet = LogEntry("{provider=lz,token=q}", "warning", frozenset(), frozenset(), T0 - 600, "resolved_quiet")
    unrouted = rendered(tags=())  # a route of [] means "log only"
    with sqlite_store(tmp_path / "kw.db") as store:
        batch = OutboxStage(NotificationLog(store), deliverable=True).run(
            Batch(T0, (), quiet=(quiet,), rendered=(unrouted,))
        )
        assert [d.outbox_id for d in batch.dispatched] == [None]
        # no targets at all: every notification is only logged
        no_targets = OutboxStage(NotificationLog(store), deliverable=False)
        (nowhere,) = no_targets.run(Batch(T0, (), rendered=(rendered(),))).dispatched
        assert nowhere.outbox_id is None and store.outbox() == []
        assert store.load_log() == {
            (quiet.group_key, "warning"): quiet,
            (KEY, ""): unrouted.notice.entry,
            (KEY, "warning"): rendered().notice.entry,
        }
    assert caplog.text.count("alert notification (not routed to any target): [FIRING:1] spend_anomaly") == 2


# -- the list as tick runs it ----------------------------------------------------------------------


def test_a_tick_that_fails_to_write_leaves_its_group_due_for_the_next_tick(tmp_path: Path) -> None:
    path = tmp_path / "kw.db"
    engine = sa.create_engine(f"sqlite:///{path}", connect_args={"timeout": 0})  # locked: fail at once
    try:
        store = AlertStore(engine)
        store.ensure_schema()
        pipeline = NotificationPipeline(store, Notifier(Notify()), NOTIFY, clock=FakeClock(T0))
        pipeline.process([], [alert()], T0)
        other = sqlite3.connect(path, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")  # another writer (say `keywatch silence add`) holds the lock
            with pytest.raises(sa.exc.OperationalError, match="locked"):
                pipeline.tick(T0 + 30)
            other.execute("ROLLBACK")
        finally:
            other.close()
        # rearmed last, so the failed flush is retried on the next tick, not a group_interval later
        assert [(d.group_key, d.reason) for d in pipeline.tick(T0 + 31)] == [(KEY, "first")]
    finally:
        engine.dispose()


def test_reconfigure_rebuilds_the_stages_with_the_new_settings(tmp_path: Path) -> None:
    with sqlite_store(tmp_path / "kw.db") as store:
        pipeline = NotificationPipeline(store, Notifier(Notify()), NOTIFY, clock=FakeClock(T0))
        pipeline.process([], [alert()], T0)
        new = notify(group_wait=0, grafana_url="https://grafana.example")
        pipeline.reconfigure(new, Notifier(new))
        pipeline.process([], [alert()], T0)  # group timers restart, now without a wait
        (sent,) = pipeline.tick(T0)
    assert "Grafana: https://grafana.example/d/keywatch-token/" in sent.body


def test_a_group_spanning_providers_tells_only_of_the_providers_this_instance_polls() -> None:
    """Several instances, `group_by` without `provider`: each instance's group holds only the
    alerts of providers it polls (a process waking from a pause never speaks for the others)."""
    from monitor.cluster import Solo

    class PollsOnlyLz(Solo):
        def owns(self, provider: str) -> bool:
            return provider == "lz"

    dispatcher = Dispatcher(notify(group_by=("rule",)))
    ours, theirs = alert(provider="lz"), alert(provider="other")
    dispatcher.observe(ours, T0)
    stage = GroupStage(dispatcher, PollsOnlyLz("a", ["lz", "other"]))
    (due,) = stage.run(Batch(T0 + 30, (ours, theirs))).due
    assert due.group.firing == (ours,)
