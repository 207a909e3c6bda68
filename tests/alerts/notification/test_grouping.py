from __future__ import annotations

from pathlib import Path

import pytest

from alerts.lifecycle.records import LogEntry
from alerts.lifecycle.state import AlertTracker
from alerts.notification.grouping import Decision, Dispatcher, decide, group_key, receiver_tags
from monitor.settings import Notify
from tests.alerts.notify_support import T0, finding, sqlite_store

ON = Notify(send_resolved=True, repeat_interval=4 * 3600)
OFF = Notify(send_resolved=False, repeat_interval=4 * 3600)
NOW = T0 + 600


def entry(firing: str = "", resolved: str = "", sent_ago: float = 60) -> LogEntry:
    return LogEntry("{g}", "warning", frozenset(firing), frozenset(resolved), NOW - sent_ago, "x")


# (previous log entry, firing now, resolved now (and told firing), settings, repeatable) -> decision
TABLE = [
    # nothing sent yet
    (None, "", "", ON, True, Decision(False, "empty")),
    (None, "a", "", ON, True, Decision(True, "first")),
    (None, "ab", "", ON, True, Decision(True, "first")),
    # a new alert joined
    (entry("a"), "ab", "", ON, True, Decision(True, "new_alerts")),
    (entry("a"), "b", "a", ON, True, Decision(True, "new_alerts")),
    (entry(""), "a", "", ON, True, Decision(True, "new_alerts")),  # the group had gone quiet
    # all resolved
    (entry("ab"), "", "ab", ON, True, Decision(True, "resolved")),
    (entry("ab"), "", "ab", OFF, True, Decision(False, "resolved_quiet", record=True)),
    (entry("ab"), "", "", ON, True, Decision(False, "resolved_quiet", record=True)),  # muted / gone
    (entry("", "a"), "", "", ON, True, Decision(False, "empty")),
    # some resolved
    (entry("ab"), "a", "b", ON, True, Decision(True, "new_resolved")),
    (entry("ab"), "a", "b", OFF, True, Decision(False, "unchanged")),
    (entry("a", "b"), "a", "b", ON, True, Decision(False, "unchanged")),  # already told
    # unchanged: repeat only after repeat_interval
    (entry("ab"), "ab", "", ON, True, Decision(False, "unchanged")),
    (entry("ab"), "a", "", ON, True, Decision(False, "unchanged")),  # shrank, but nothing to tell
    (entry("ab", sent_ago=4 * 3600 - 1), "ab", "", ON, True, Decision(False, "unchanged")),
    (entry("ab", sent_ago=4 * 3600), "ab", "", ON, True, Decision(True, "repeat")),
    (entry("ab", sent_ago=4 * 3600), "ab", "", OFF, True, Decision(True, "repeat")),
    # budget groups (NO_REPEAT_RULES only) are not repeated
    (entry("ab", sent_ago=40 * 3600), "ab", "", ON, False, Decision(False, "unchanged")),
]


@pytest.mark.parametrize(("prev", "firing", "resolved", "settings", "repeatable", "expected"), TABLE)
def test_decision_table(
    prev: LogEntry | None, firing: str, resolved: str, settings: Notify, repeatable: bool, expected: Decision
) -> None:
    got = decide(prev, frozenset(firing), frozenset(resolved), NOW, settings, repeatable=repeatable)
    assert got == expected


def test_group_key_and_routes() -> None:
    labels = {"provider": "lz", "token": "t", "rule": "budget", "window": "month"}
    assert group_key(labels, ("provider", "token")) == "{provider=lz,token=t}"
    assert group_key({"provider": "lz"}, ("provider", "token")) == "{provider=lz,token=}"
    assert group_key(labels, ("...",)) == "{provider=lz,rule=budget,token=t,window=month}"
    notify = Notify()
    assert receiver_tags("security", notify) == ("security", "critical")
    assert receiver_tags("critical", Notify(routes={"critical": ()})) == ()
    assert receiver_tags("warning", Notify(routes={})) == ("warning",)  # unrouted: the severity's name


def test_dispatcher_timers(tmp_path: Path) -> None:
    with sqlite_store(tmp_path / "kw.db") as store:
        tracker = AlertTracker(store)
        tracker.evaluate([finding(token="a"), finding("budget", token="a", severity="warning")], now=T0)
        a, b = tracker.alerts()
    d = Dispatcher(Notify(group_wait=30, group_interval=300))
    d.observe(a, T0)
    d.observe(b, T0 + 10)  # same group (provider, token) and receiver: joins, keeps the timer
    assert len(d) == 1
    assert d.due(T0 + 29) == []
    ((receiver, key),) = d.due(T0 + 30)
    assert (receiver, key) == ("warning", "{provider=lz,token=a}")
    assert d.group_of(receiver, key) == ({"provider": "lz", "token": "a"}, ("warning",))
    d.flushed(receiver, key, T0 + 30, still_firing=True)
    assert d.due(T0 + 329) == [] and d.due(T0 + 330) == [(receiver, key)]
    assert d.next_flush() == T0 + 330
    d.flushed(receiver, key, T0 + 330, still_firing=False)
    assert len(d) == 0 and d.next_flush() is None
