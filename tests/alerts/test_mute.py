from __future__ import annotations

from pathlib import Path

import pytest

from alerts.matchers import Matcher, MatcherError, parse_matcher
from alerts.mute import DEFAULT_INHIBIT_RULES, InhibitRule, Muter, SilenceError, Silences, inhibited
from alerts.records import Alert
from alerts.state import AlertTracker
from tests.alerts.notify_support import T0, finding, sqlite_store

LABELS = {"rule": "spend_anomaly", "provider": "lz", "token": "dev-webapp-api-2026-01", "severity": "warning"}


@pytest.mark.parametrize(
    ("text", "matches"),
    [
        ("token=dev-*", True),
        ("token=prod-*", False),
        ("token=dev-webapp-api-2026-01", True),
        ("token=dev", False),  # no `*`: exact, not prefix
        ("rule=spend_anomaly", True),
        ("provider!=lz", False),
        ("provider!=oa", True),
        ("token!=prod-*", True),
        ("token=~dev-.*", True),
        ("token=~dev", False),  # regexes are anchored
        ("token!~dev-.*", False),
        ("env=", True),  # a missing label is the empty string
        ("env!=prod", True),
        ('token="dev-*"', True),  # quotes as typed in a shell
        (" severity = warning ", True),
    ],
)
def test_matcher_table(text: str, matches: bool) -> None:
    assert parse_matcher(text).matches(LABELS) is matches


@pytest.mark.parametrize("text", ["token", "=x", "1abc=x", "token=~(", ""])
def test_bad_matchers_are_rejected(text: str) -> None:
    with pytest.raises(MatcherError):
        parse_matcher(text)


def test_matcher_round_trips_as_text() -> None:
    for text in ("token=dev-*", "provider!=lz", "rule=~budget|spend_anomaly", "token!~x.*"):
        assert str(parse_matcher(text)) == text


def test_silence_add_list_expire(tmp_path: Path) -> None:
    with sqlite_store(tmp_path / "kw.db") as store:
        silences = Silences(store)
        s = silences.add(["token=dev-*", "rule=spend_anomaly"], now=T0, created_by="ana", comment="load test")
        assert s.id is not None
        assert (s.starts_at, s.ends_at) == (T0, T0 + 3600)  # amtool's default: 1h
        assert s.matchers == (Matcher("token", "=", "dev-*"), Matcher("rule", "=", "spend_anomaly"))
        assert [x.id for x in silences.active(T0 + 10)] == [s.id]
        assert silences.active(T0 + 3600) == []  # ended by time
        later = silences.add(
            ["provider=lz"], now=T0, starts_at=T0 + 600, duration=60, created_by="b", comment=""
        )
        assert later.status(T0) == "pending" and [x.id for x in silences.active(T0)] == [s.id]

        assert silences.expire(s.id, now=T0 + 20)
        assert not silences.expire(s.id, now=T0 + 21)  # already expired
        assert not silences.expire(9999, now=T0)
        assert [x.id for x in silences.query(now=T0 + 30)] == [later.id]
        everything = silences.query(now=T0 + 30, include_expired=True)
        assert [(x.id, x.status(T0 + 30)) for x in everything] == [(s.id, "expired"), (later.id, "pending")]
        assert everything[0].ends_at == T0 + 20


def test_silence_validation(tmp_path: Path) -> None:
    with sqlite_store(tmp_path / "kw.db") as store:
        silences = Silences(store)
        with pytest.raises(SilenceError):
            silences.add([], now=T0, created_by="a", comment="")
        with pytest.raises(SilenceError):
            silences.add(["token=x"], now=T0, duration=0, created_by="a", comment="")
        with pytest.raises(SilenceError):
            silences.add(["token=x"], now=T0, starts_at=T0 - 7200, created_by="a", comment="")
        with pytest.raises(MatcherError):
            silences.add(["token"], now=T0, created_by="a", comment="")


def _alerts(tmp_path: Path, *findings_: object) -> list[Alert]:
    with sqlite_store(tmp_path / "kw.db") as store:
        tracker = AlertTracker(store)
        tracker.evaluate(findings_, now=T0)  # type: ignore[arg-type]
        return tracker.alerts()


def test_provider_down_inhibits_that_providers_token_alerts(tmp_path: Path) -> None:
    alerts = _alerts(
        tmp_path,
        finding("provider_down", token="", severity="critical"),
        finding("spend_anomaly", token="a"),
        finding("budget", token="b", window="month", threshold="0.8", period="2026-01"),
        finding("spend_anomaly", provider="oa", token="c"),
    )
    muted = inhibited(alerts, DEFAULT_INHIBIT_RULES)
    by_token = {a.labels.get("token", ""): muted.get(a.fingerprint) for a in alerts}
    assert by_token == {
        "": None,  # the source itself
        "a": "inhibited by provider_down",
        "b": "inhibited by provider_down",
        "c": None,  # another provider
    }


def test_pending_source_does_not_inhibit(tmp_path: Path) -> None:
    alerts = _alerts(
        tmp_path, finding("provider_down", token="", for_polls=3), finding("spend_anomaly", token="a")
    )
    assert inhibited(alerts, DEFAULT_INHIBIT_RULES) == {}


def test_quarantined_token_mutes_its_spend_and_budget_alerts_only(tmp_path: Path) -> None:
    alerts = _alerts(
        tmp_path,
        finding("leak_suspected", token="a", severity="security", annotations={"quarantined": "true"}),
        finding("spend_anomaly", token="a"),
        finding("budget", token="a", window="day", threshold="1.0", period="2026-01-01"),
        finding("token_expiring", token="a"),
        finding("spend_anomaly", token="b"),
    )
    muted = inhibited(alerts, DEFAULT_INHIBIT_RULES)
    assert sorted((a.rule, a.labels["token"]) for a in alerts if a.fingerprint in muted) == [
        ("budget", "a"),
        ("spend_anomaly", "a"),
    ]


def test_an_alert_never_inhibits_itself(tmp_path: Path) -> None:
    rule = InhibitRule.of(
        "self", source=["rule=spend_anomaly"], target=["rule=spend_anomaly"], equal=["token"]
    )
    alerts = _alerts(tmp_path, finding("spend_anomaly", token="a"))
    assert inhibited(alerts, [rule]) == {}


def test_muter_combines_silences_and_inhibition(tmp_path: Path) -> None:
    with sqlite_store(tmp_path / "kw.db") as store:
        tracker = AlertTracker(store)
        tracker.evaluate(
            [
                finding("provider_down", provider="oa", token="", severity="critical"),
                finding("spend_anomaly", provider="oa", token="x"),
                finding("spend_anomaly", token="dev-1"),
                finding("spend_anomaly", token="prod-1"),
            ],
            now=T0,
        )
        silences = Silences(store)
        sid = silences.add(["token=dev-*"], now=T0, created_by="ana", comment="").id
        muted = Muter(silences).muted(tracker.alerts(), T0 + 1)
        assert sorted(muted.values()) == ["inhibited by provider_down", f"silenced by {sid}"]
