from __future__ import annotations

from pathlib import Path

from alerts.lifecycle.records import Alert
from alerts.lifecycle.state import AlertTracker
from alerts.notification.grouping import AlertGroup
from alerts.notification.notify import render
from alerts.notification.render import notify_type_for
from monitor.settings import Notify
from tests.alerts.notify_support import T0, finding, sqlite_store

TOKEN = "dev-webapp-api-2026-01"


def alerts_after(tmp_path: Path, *rounds: list[object]) -> list[Alert]:
    with sqlite_store(tmp_path / f"kw{len(list(tmp_path.iterdir()))}.db") as store:
        tracker = AlertTracker(store)
        for i, findings in enumerate(rounds):
            tracker.evaluate(findings, now=T0 + 60 * i)  # type: ignore[arg-type]
        return tracker.alerts()


def group(firing: list[Alert], resolved: list[Alert] = []) -> AlertGroup:  # noqa: B006
    return AlertGroup(
        f"{{provider=lz,token={TOKEN}}}", "critical", ("critical",), {}, tuple(firing), tuple(resolved)
    )


def test_firing_title_names_rules_and_token_and_body_has_the_facts(tmp_path: Path) -> None:
    alerts = alerts_after(
        tmp_path,
        [
            finding(
                "spend_anomaly",
                severity="critical",
                value=12.4,
                annotations={"baseline": "$1.27/h", "action": "Ask the webapp team.", "onset_ts": str(T0)},
            ),
            finding("budget", value=0.82, window="month", threshold="0.8", period="2026-01"),
        ],
    )
    title, body = render(
        group(alerts), "first", Notify(grafana_url="https://grafana.example.com/"), now=T0 + 720
    )
    assert title == f"[FIRING:2] spend_anomaly, budget · lz/{TOKEN}"
    assert f"* spend_anomaly [critical] lz/{TOKEN}" in body
    assert f"* budget [warning] lz/{TOKEN} period=2026-01 threshold=0.8 window=month" in body
    assert "value: 12.4 · baseline: $1.27/h · onset_ts: 2026-01-01 00:00 UTC" in body
    assert "firing since 2026-01-01 00:00 UTC (for 12m)" in body
    assert "what to do: Ask the webapp team." in body
    assert "what to do: Check the token's recent usage" in body  # the rule's default advice
    assert (
        f"https://grafana.example.com/d/keywatch-token/keywatch-token?var-provider=lz&var-token={TOKEN}"
        in body
    )
    assert "Sent because: new alert (first)" in body
    assert notify_type_for(group(alerts)) == "failure"


def test_resolved_notice_says_resolved_and_how_long(tmp_path: Path) -> None:
    alerts = alerts_after(tmp_path, [finding()], [finding()], [])
    title, body = render(group([], alerts), "resolved", Notify())
    assert title == f"[RESOLVED] spend_anomaly · lz/{TOKEN}"
    assert "resolved 2026-01-01 00:02 UTC after 2m (firing since 2026-01-01 00:00 UTC)" in body
    assert "Grafana" not in body  # no grafana_url configured
    assert notify_type_for(group([], alerts)) == "success"


def test_leak_notification_says_what_was_done_and_the_next_steps(tmp_path: Path) -> None:
    alerts = alerts_after(
        tmp_path, [finding("leak_suspected", severity="security", annotations={"response": "quarantined"})]
    )
    title, body = render(group(alerts), "first", Notify())
    assert title == f"[FIRING:1] leak_suspected · lz/{TOKEN} — quarantined"
    assert "done: quarantined" in body
    assert "next steps:" in body and "replacement token" in body


def test_group_of_several_tokens_says_how_many(tmp_path: Path) -> None:
    alerts = alerts_after(tmp_path, [finding(token="a"), finding(token="b")])
    title, _ = render(group(alerts), "first", Notify())
    assert title == "[FIRING:2] spend_anomaly · lz/2 tokens"
    alerts = alerts_after(tmp_path, [finding("provider_down", token="", severity="critical")])
    assert render(group(alerts), "first", Notify())[0] == "[FIRING:1] provider_down · lz"
