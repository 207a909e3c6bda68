"""Which token is which (issue 9, items 3, 9 and 11): a relay id given to a new token, entries the
relay sends broken every poll, and names that repeat within a provider."""

from __future__ import annotations

from dataclasses import replace
from zoneinfo import ZoneInfo

import pytest

from monitor.ingest import ingest
from monitor.model import Observation, PollResult, Skip
from monitor.tokens import TokenState, with_series_labels

UTC = ZoneInfo("UTC")
T0 = 1_794_300_000.0


def obs(token_id: str, name: str, month: float, *, created: float = T0 - 86_400) -> Observation:
    return Observation(token_id, name, "active", created_at=created, today_usd=month, month_usd=month)


def test_a_reused_relay_id_starts_a_new_token_and_keeps_the_old_ones_history() -> None:
    first = ingest(
        {}, PollResult([obs("7", "ci-old", 40.0)]), provider="p", now=T0, tz=UTC, watching_since=None
    )
    stored = {k: replace(s, pk=11) for k, s in first.states.items()}
    reused = obs("7", "ci-new", 0.5, created=T0 + 30)  # deleted, and the id went to a new token
    cycle = ingest(stored, PollResult([reused]), provider="p", now=T0 + 60, tz=UTC, watching_since=T0)
    assert cycle.retired == {"7": "7~11"}
    old, new = cycle.states["7~11"], cycle.states["7"]
    assert (old.name, old.status, old.spend_total_usd, old.pk) == ("ci-old", "deleted", 40.0, 11)
    assert (new.name, new.spend_total_usd, new.pk) == ("ci-new", 0.5, None)  # its own spend, from zero
    assert cycle.new == ["7"]
    assert [(s.token_id, s.cost_usd) for s in cycle.spend] == [("7", 0.5)]


def test_a_rename_is_not_a_reuse() -> None:
    first = ingest(
        {}, PollResult([obs("7", "ci-old", 40.0)]), provider="p", now=T0, tz=UTC, watching_since=None
    )
    cycle = ingest(
        first.states,
        PollResult([obs("7", "ci-renamed", 41.0)]),
        provider="p",
        now=T0 + 60,
        tz=UTC,
        watching_since=T0,
    )
    assert cycle.retired == {}
    assert cycle.states["7"].spend_total_usd == 41.0


def test_an_entry_broken_every_poll_keeps_polls_complete_and_deletions_visible() -> None:
    """One skipped entry used to leave every later poll incomplete: auto-revoke waited for ever
    and deleted tokens were never noticed."""
    broken = Skip("bad-one", "absurd_value", "'today_requests' is over 1e+12", token_id="9")
    first = ingest(
        {},
        PollResult([obs("1", "a", 1.0), obs("2", "b", 1.0)], [broken]),
        provider="p",
        now=T0,
        tz=UTC,
        watching_since=None,
    )
    assert first.complete
    later = ingest(
        first.states,
        PollResult([obs("1", "a", 1.0)], [broken]),
        provider="p",
        now=T0 + 60,
        tz=UTC,
        watching_since=T0,
    )
    assert later.complete and later.vanished == ["2"]
    assert later.states["2"].status == "deleted"


def test_a_token_whose_entry_is_skipped_is_not_taken_for_deleted() -> None:
    first = ingest({}, PollResult([obs("1", "a", 1.0)]), provider="p", now=T0, tz=UTC, watching_since=None)
    skipped = Skip("a", "negative_usage", "'today_usage' is negative", token_id="1")
    later = ingest(
        first.states, PollResult([], [skipped]), provider="p", now=T0 + 60, tz=UTC, watching_since=T0
    )
    assert later.vanished == [] and later.states["1"].status == "active"


def state(token_id: str, name: str, *, first_seen: float, missing: float | None = None) -> TokenState:
    return TokenState(
        pk=None, provider="p", token_id=token_id, name=name, status="active", first_seen=first_seen,
        last_seen=first_seen, missing_since=missing,
    )  # fmt: skip


def test_repeated_names_get_distinct_labels_and_the_first_live_token_keeps_the_name() -> None:
    states = {
        "1": state("1", "ci", first_seen=T0),
        "2": state("2", "ci", first_seen=T0 + 5),
        "3": state("3", "web", first_seen=T0),
    }
    labelled = with_series_labels(states)
    assert {t: s.series for t, s in labelled.items()} == {"1": "ci", "2": "ci#2", "3": "web"}
    assert labelled["3"] is states["3"]  # untouched states stay the same objects (caches key on them)


def test_a_deleted_token_gives_its_name_to_the_live_one() -> None:
    states = {
        "1": state("1", "ci", first_seen=T0, missing=T0 + 100),
        "2": state("2", "ci", first_seen=T0 + 5),
    }
    labelled = with_series_labels(states)
    assert (labelled["1"].series, labelled["2"].series) == ("ci#1", "ci")
    alone = with_series_labels({"2": labelled["2"], "9": state("9", "other", first_seen=T0)})
    assert alone["2"].series == "ci"


@pytest.mark.parametrize("names", [["a", "a", "a"], ["x#3", "x", "x"]])
def test_labels_never_repeat(names: list[str]) -> None:
    states = {str(i): state(str(i), n, first_seen=T0 + i) for i, n in enumerate(names, 1)}
    labels = [s.series for s in with_series_labels(states).values()]
    assert len(labels) == len(set(labels))
