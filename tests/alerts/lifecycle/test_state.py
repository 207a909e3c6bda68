from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from alerts.lifecycle.records import Transition
from alerts.lifecycle.state import AlertTracker, no_data_for_providers
from alerts.lifecycle.store import AlertStore
from tests.alerts.notify_support import T0, finding, sqlite_store


@pytest.fixture
def store(tmp_path: Path) -> Iterator[AlertStore]:
    with sqlite_store(tmp_path / "kw.db") as s:
        yield s


def moves(transitions: list[Transition]) -> list[tuple[str, str, str]]:
    return [(t.alert.rule, t.from_state, t.to_state) for t in transitions]


def test_pending_then_firing_after_for_polls(store: AlertStore) -> None:
    tracker = AlertTracker(store)
    f = finding(for_polls=2)
    assert moves(tracker.evaluate([f], now=T0)) == [("spend_anomaly", "inactive", "pending")]
    fired = tracker.evaluate([f], now=T0 + 60)
    assert moves(fired) == [("spend_anomaly", "pending", "firing")]
    alert = fired[0].alert
    assert (alert.active_since, alert.firing_since, alert.consecutive_hits) == (T0, T0 + 60, 2)
    assert tracker.evaluate([f], now=T0 + 120) == []  # still firing: no transition
    assert tracker.get(f.fingerprint) is not None
    assert tracker.get(f.fingerprint).consecutive_hits == 3  # type: ignore[union-attr]


def test_for_polls_one_fires_at_once(store: AlertStore) -> None:
    assert moves(AlertTracker(store).evaluate([finding()], now=T0)) == [
        ("spend_anomaly", "inactive", "firing")
    ]


def test_pending_that_clears_is_forgotten(store: AlertStore) -> None:
    tracker = AlertTracker(store)
    tracker.evaluate([finding(for_polls=3)], now=T0)
    assert moves(tracker.evaluate([], now=T0 + 60)) == [("spend_anomaly", "pending", "inactive")]
    assert tracker.alerts() == [] and store.load_alerts() == []
    # and the count starts over
    assert moves(tracker.evaluate([finding(for_polls=2)], now=T0 + 120)) == [
        ("spend_anomaly", "inactive", "pending")
    ]


def test_keep_firing_for_then_resolved(store: AlertStore) -> None:
    tracker = AlertTracker(store)
    tracker.evaluate([finding(keep_firing_for=300)], now=T0)
    assert tracker.evaluate([], now=T0 + 60) == []
    assert tracker.evaluate([], now=T0 + 299) == []
    resolved = tracker.evaluate([], now=T0 + 300)
    assert moves(resolved) == [("spend_anomaly", "firing", "resolved")]
    assert resolved[0].alert.resolved_at == T0 + 300


def test_a_hit_during_keep_firing_for_restarts_the_clock(store: AlertStore) -> None:
    tracker = AlertTracker(store)
    tracker.evaluate([finding(keep_firing_for=300)], now=T0)
    tracker.evaluate([finding(keep_firing_for=300)], now=T0 + 200)
    assert tracker.evaluate([], now=T0 + 400) == []
    assert moves(tracker.evaluate([], now=T0 + 500)) == [("spend_anomaly", "firing", "resolved")]


def test_resolved_alert_that_returns_is_a_new_episode(store: AlertStore) -> None:
    tracker = AlertTracker(store)
    tracker.evaluate([finding()], now=T0)
    tracker.evaluate([], now=T0 + 60)
    again = tracker.evaluate([finding()], now=T0 + 120)
    assert moves(again) == [("spend_anomaly", "resolved", "firing")]
    assert (again[0].alert.firing_since, again[0].alert.resolved_at) == (T0 + 120, None)


def test_no_data_neither_resolves_nor_advances(store: AlertStore) -> None:
    tracker = AlertTracker(store)
    tracker.evaluate([finding(token="a"), finding(token="b", for_polls=2)], now=T0)
    down = no_data_for_providers({"lz"})
    # lz is down: no findings, but nothing resolves or is forgotten ...
    assert tracker.evaluate([], now=T0 + 60, unknown=down) == []
    # ... and a stale finding does not advance the pending one either
    assert tracker.evaluate([finding(token="b", for_polls=2)], now=T0 + 120, unknown=down) == []
    states = {a.labels["token"]: (a.state, a.consecutive_hits) for a in tracker.alerts()}
    assert states == {"a": ("firing", 1), "b": ("pending", 1)}
    # lz is back and fine: now they clear
    assert sorted(moves(tracker.evaluate([], now=T0 + 180))) == [
        ("spend_anomaly", "firing", "resolved"),
        ("spend_anomaly", "pending", "inactive"),
    ]


def test_provider_down_itself_advances_while_its_provider_has_no_data(store: AlertStore) -> None:
    tracker = AlertTracker(store)
    down = no_data_for_providers({"lz"})
    outage = finding("provider_down", token="", severity="critical", for_polls=2)
    assert moves(tracker.evaluate([outage], now=T0, unknown=down)) == [
        ("provider_down", "inactive", "pending")
    ]
    assert moves(tracker.evaluate([outage], now=T0 + 60, unknown=down)) == [
        ("provider_down", "pending", "firing")
    ]
    assert moves(tracker.evaluate([], now=T0 + 120)) == [("provider_down", "firing", "resolved")]


def test_unknown_as_label_filters(store: AlertStore) -> None:
    tracker = AlertTracker(store)
    tracker.evaluate([finding(provider="lz"), finding(provider="oa")], now=T0)
    got = tracker.evaluate([], now=T0 + 60, unknown=[{"provider": "lz"}])
    assert [(t.alert.labels["provider"], t.to_state) for t in got] == [("oa", "resolved")]


def test_alerts_outside_the_evaluated_subjects_are_left_alone(store: AlertStore) -> None:
    tracker = AlertTracker(store)
    tracker.evaluate([finding(provider="lz"), finding(provider="oa")], now=T0)
    # a cycle of provider oa only: lz's alert has no finding but was not evaluated
    got = tracker.evaluate([], now=T0 + 60, evaluated_subjects=[{"provider": "oa"}])
    assert [(t.alert.labels["provider"], t.to_state) for t in got] == [("oa", "resolved")]
    got = tracker.evaluate([], now=T0 + 60, evaluated_subjects=lambda labels: labels["rule"] == "budget")
    assert got == []


def test_state_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "kw.db"
    with sqlite_store(path) as store:
        tracker = AlertTracker(store)
        tracker.evaluate([finding(token="a"), finding(token="b", for_polls=3)], now=T0)
        tracker.evaluate([finding(token="a"), finding(token="b", for_polls=3)], now=T0 + 60)
    with sqlite_store(path) as store:
        tracker = AlertTracker(store)
        states = {a.labels["token"]: (a.state, a.consecutive_hits) for a in tracker.alerts()}
        assert states == {"a": ("firing", 2), "b": ("pending", 2)}
        # same findings again: a does not re-fire, b completes its count
        got = tracker.evaluate([finding(token="a"), finding(token="b", for_polls=3)], now=T0 + 120)
        assert [(t.alert.labels["token"], t.from_state, t.to_state) for t in got] == [
            ("b", "pending", "firing")
        ]
        a = next(x for x in tracker.alerts() if x.labels["token"] == "a")
        assert a.firing_since == T0


def test_changes_are_committed_before_evaluate_returns(store: AlertStore) -> None:
    tracker = AlertTracker(store)
    tracker.evaluate([finding(value=3.0)], now=T0)
    tracker.evaluate([finding(value=7.0)], now=T0 + 60)
    (stored,) = store.load_alerts()
    assert (stored.state, stored.value, stored.last_eval) == ("firing", 7.0, T0 + 60)


def test_prune_forgets_old_resolved_alerts(store: AlertStore) -> None:
    tracker = AlertTracker(store)
    tracker.evaluate([finding(token="a"), finding(token="b")], now=T0)
    tracker.evaluate([finding(token="b")], now=T0 + 60)
    assert tracker.prune(before=T0 + 61) == 1
    assert [a.labels["token"] for a in tracker.alerts()] == ["b"]
    assert [a.labels["token"] for a in store.load_alerts()] == ["b"]


def test_to_api_shape(store: AlertStore) -> None:
    tracker = AlertTracker(store)
    tracker.evaluate([finding()], now=T0)
    api = tracker.alerts()[0].to_api()
    assert {"rule", "provider", "token", "severity", "state", "since", "value", "summary"} <= api.keys()
    since = datetime.fromtimestamp(T0, UTC).isoformat().replace("+00:00", "Z")
    assert (api["state"], api["since"], api["token"]) == ("firing", since, "dev-webapp-api-2026-01")


def test_annotate_sticks_for_the_episode(store: AlertStore) -> None:
    tracker = AlertTracker(store)
    leak = finding("leak_suspected", severity="security", annotations={"signals": "new_ip"})
    tracker.evaluate([leak], now=T0)
    done = tracker.annotate(leak.fingerprint, {"response": "quarantined", "quarantined": "true"})
    assert done is not None and done.annotations["response"] == "quarantined"
    assert store.load_alerts()[0].annotations["quarantined"] == "true"  # committed
    tracker.evaluate([leak], now=T0 + 60)  # the rule does not know: the responder's notes stay
    assert dict(tracker.alerts()[0].annotations) == {
        "signals": "new_ip",
        "response": "quarantined",
        "quarantined": "true",
    }
    tracker.evaluate([], now=T0 + 120)
    assert tracker.annotate(leak.fingerprint, {"response": "x"}) is None  # resolved: nothing to annotate
    tracker.evaluate([leak], now=T0 + 180)  # a new episode starts clean
    assert dict(tracker.alerts()[0].annotations) == {"signals": "new_ip"}


def test_a_firing_alert_hit_again_by_the_same_finding_counts_without_rebuilding(store: AlertStore) -> None:
    """The rules hand the same Finding object for a token that did not change: the tracker keeps
    the alert object and counts the hit aside; the count and the last hit reach the alert when it
    is read with get() and when it next changes (then it is written, repeats included)."""
    tracker = AlertTracker(store)
    f = finding()  # keep_firing_for 0: the hygiene and budget rules' alerts
    tracker.evaluate([f], now=T0)
    kept = tracker.alerts()[0]
    for k in range(1, 5):
        assert tracker.evaluate([f], now=T0 + 60 * k) == []
        assert tracker.alerts()[0] is kept  # not rebuilt
    got = tracker.get(f.fingerprint)
    assert got is not None and (got.consecutive_hits, got.last_hit_at) == (5, T0 + 240)
    assert store.load_alerts()[0].consecutive_hits == 1  # repeats are not written on their own
    changed = finding(value=20.0)  # the token changed: a new finding
    tracker.evaluate([changed], now=T0 + 300)
    row = store.load_alerts()[0]
    assert (row.consecutive_hits, row.last_hit_at, row.value) == (6, T0 + 300, 20.0)
    assert moves(tracker.evaluate([], now=T0 + 360)) == [("spend_anomaly", "firing", "resolved")]


def test_an_alert_that_lingers_is_stepped_every_time(store: AlertStore) -> None:
    """keep_firing_for counts from the last hit, so such alerts take no shortcut."""
    tracker = AlertTracker(store)
    f = finding(keep_firing_for=300)
    tracker.evaluate([f], now=T0)
    tracker.evaluate([f], now=T0 + 600)
    assert tracker.evaluate([], now=T0 + 600 + 299) == []  # kept from the last hit, not the first
    assert moves(tracker.evaluate([], now=T0 + 900)) == [("spend_anomaly", "firing", "resolved")]


async def test_the_paced_evaluation_is_the_same_evaluation(store: AlertStore, tmp_path: Path) -> None:
    with sqlite_store(tmp_path / "other.db") as other:
        a, b = AlertTracker(store), AlertTracker(other)
        f, g = finding(for_polls=2), finding(token="other")
        for now, found in ((T0, [f, g]), (T0 + 60, [f]), (T0 + 120, [f]), (T0 + 180, [])):
            assert moves(a.evaluate(found, now=now)) == moves(await b.evaluate_paced(found, now=now))
        assert [x.to_api() for x in a.alerts()] == [x.to_api() for x in b.alerts()]
        assert store.load_alerts() == other.load_alerts()
