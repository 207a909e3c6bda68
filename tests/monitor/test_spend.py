"""Resetting relay windows -> monotonic spend: rollovers, restarts, new and vanished tokens."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from monitor.ingest import ingest
from monitor.model import Observation, PollResult
from monitor.spend import UsageDelta, UsageMark, advance

UTC_TZ = ZoneInfo("UTC")
SHANGHAI = ZoneInfo("Asia/Shanghai")


def ts(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def usage_delta(prev: UsageMark, o: Observation, now: float, tz: ZoneInfo, *, is_new: bool) -> UsageDelta:
    return advance(prev, o, now, tz, is_new=is_new)[0]


def obs(today: float | None, month: float | None, requests: int | None = None, **kw: object) -> Observation:
    base: dict[str, object] = {"token_id": "key_1", "name": "dev-app-api-2026-01", "status": "active"}
    base.update(kw)
    return Observation(today_usd=today, month_usd=month, today_requests=requests, **base)  # type: ignore[arg-type]


def test_same_day_delta_is_the_difference() -> None:
    prev = UsageMark(ts("2026-11-10T10:00:00"), 1.0, 20.0, 10)
    d = usage_delta(prev, obs(1.5, 20.5, 14), ts("2026-11-10T10:01:00"), UTC_TZ, is_new=False)
    assert (d.cost_usd, d.requests, d.gap) == (0.5, 4, False)


def test_day_rollover_inside_a_month_loses_nothing_thanks_to_the_month_figure() -> None:
    # 23:59 -> 00:01: 0.3 spent before midnight, 0.2 after; the day figure only shows 0.2.
    prev = UsageMark(ts("2026-11-10T23:59:00"), 5.0, 50.0, 100)
    d = usage_delta(prev, obs(0.2, 50.5, 3), ts("2026-11-11T00:01:00"), UTC_TZ, is_new=False)
    assert d.cost_usd == pytest.approx(0.5)
    assert d.requests == 3  # the day's requests restarted at midnight
    assert not d.gap


def test_month_rollover_counts_the_new_month_and_flags_the_unseen_gap() -> None:
    prev = UsageMark(ts("2026-11-30T23:59:00"), 5.0, 80.0, 100)
    d = usage_delta(prev, obs(0.4, 0.4, 2), ts("2026-12-01T00:01:00"), UTC_TZ, is_new=False)
    assert d.cost_usd == pytest.approx(0.4)
    assert d.gap


def test_restart_spanning_midnight_uses_the_stored_mark() -> None:
    # Daemon stopped at 22:00, started again at 03:00 the next day: 2.0 spent meanwhile.
    prev = UsageMark(ts("2026-11-10T22:00:00"), 4.0, 40.0, 50)
    d = usage_delta(prev, obs(1.0, 42.0, 9), ts("2026-11-11T03:00:00"), UTC_TZ, is_new=False)
    assert d.cost_usd == pytest.approx(2.0)
    assert d.requests == 9


def test_reset_is_detected_by_a_drop_even_when_the_relay_resets_in_another_time_zone() -> None:
    # The relay resets at Shanghai midnight (16:00 UTC), keywatch is configured for UTC.
    prev = UsageMark(ts("2026-11-10T15:59:00"), 3.0, 30.0, 10)
    d = usage_delta(prev, obs(0.1, 30.1, 1), ts("2026-11-10T16:01:00"), UTC_TZ, is_new=False)
    assert d.cost_usd == pytest.approx(0.1)
    assert d.requests == 1  # requests fell from 10 to 1: a reset, counted as new


def test_month_boundary_in_our_zone_but_not_the_relays_counts_only_the_increase() -> None:
    # keywatch says December has begun; the relay (a zone behind) still reports November.
    prev = UsageMark(ts("2026-11-30T23:58:00"), 5.0, 80.0, 10)
    d = usage_delta(prev, obs(5.2, 80.2, 12), ts("2026-12-01T00:02:00"), UTC_TZ, is_new=False)
    assert d.cost_usd == pytest.approx(0.2)


def test_month_rollover_in_the_relays_time_zone() -> None:
    # Shanghai's December starts at 16:00 UTC on Nov 30.
    prev = UsageMark(ts("2026-11-30T15:50:00"), 5.0, 80.0, 10)
    d = usage_delta(prev, obs(0.3, 0.3, 1), ts("2026-11-30T16:10:00"), SHANGHAI, is_new=False)
    assert d.cost_usd == pytest.approx(0.3)
    assert d.gap


def test_day_figure_only_relay() -> None:
    prev = UsageMark(ts("2026-11-10T10:00:00"), 1.0, None)
    assert (
        usage_delta(prev, obs(1.25, None), ts("2026-11-10T10:01:00"), UTC_TZ, is_new=False).cost_usd == 0.25
    )
    crossed = usage_delta(prev, obs(0.5, None), ts("2026-11-11T00:05:00"), UTC_TZ, is_new=False)
    assert crossed.cost_usd == 0.5 and crossed.gap


def test_lifetime_counter_never_goes_backwards() -> None:
    prev = UsageMark(ts("2026-11-10T10:00:00"), total_usd=10.0)
    back = usage_delta(prev, obs(None, None, total_usd=9.0), ts("2026-11-10T10:01:00"), UTC_TZ, is_new=False)
    assert back.cost_usd == 0.0 and back.note and back.corrected_usd == 1.0


def test_idle_token_has_a_zero_delta() -> None:
    prev = UsageMark(ts("2026-11-10T10:00:00"), 1.0, 20.0, 10)
    d = usage_delta(prev, obs(1.0, 20.0, 10), ts("2026-11-10T10:01:00"), UTC_TZ, is_new=False)
    assert (d.cost_usd, d.requests) == (0.0, 0)


# --- ingest: the token-level rules ---------------------------------------------------------
T0 = ts("2026-11-10T10:00:00")


def poll(*observations: Observation, complete: bool = True) -> PollResult:
    return PollResult(list(observations), complete=complete)


def test_first_poll_sets_a_starting_point_without_inventing_spend() -> None:
    cycle = ingest({}, poll(obs(2.0, 30.0, 5)), provider="lz", now=T0, tz=UTC_TZ, watching_since=None)
    assert cycle.spend == []
    state = cycle.states["key_1"]
    assert state.spend_total_usd == 30.0  # the lifetime counter starts at month-to-date
    assert cycle.new == ["key_1"]


def test_a_token_created_after_watching_began_counts_its_spend() -> None:
    first = ingest({}, poll(obs(1.0, 1.0)), provider="lz", now=T0, tz=UTC_TZ, watching_since=None)
    newcomer = obs(0.7, 0.7, 3, token_id="key_2", name="dev-app-batch-2026-11")
    second = ingest(
        first.states, poll(obs(1.0, 1.0), newcomer), provider="lz", now=T0 + 60, tz=UTC_TZ, watching_since=T0
    )
    assert [(s.token_id, s.cost_usd, s.requests) for s in second.spend] == [("key_2", 0.7, 3)]
    assert second.new == ["key_2"]
    assert second.changed == []  # key_1 was idle: no row to rewrite


def test_renamed_token_keeps_its_history_and_counter() -> None:
    first = ingest({}, poll(obs(1.0, 10.0)), provider="lz", now=T0, tz=UTC_TZ, watching_since=None)
    renamed = obs(1.5, 10.5, name="dev-app-api-2026-12")
    second = ingest(first.states, poll(renamed), provider="lz", now=T0 + 60, tz=UTC_TZ, watching_since=T0)
    state = second.states["key_1"]
    assert state.name == "dev-app-api-2026-12"
    assert state.spend_total_usd == pytest.approx(10.5)
    assert [s.cost_usd for s in second.spend] == [0.5]


def test_vanished_token_is_marked_deleted_only_after_a_complete_poll() -> None:
    first = ingest({}, poll(obs(1.0, 10.0)), provider="lz", now=T0, tz=UTC_TZ, watching_since=None)
    partial = ingest(
        first.states, poll(complete=False), provider="lz", now=T0 + 60, tz=UTC_TZ, watching_since=T0
    )
    assert partial.vanished == [] and partial.states["key_1"].status == "active"
    full = ingest(first.states, poll(), provider="lz", now=T0 + 120, tz=UTC_TZ, watching_since=T0)
    assert full.vanished == ["key_1"]
    assert full.states["key_1"].status == "deleted"
    assert full.states["key_1"].spend_total_usd == 10.0  # history and counter stay


def test_token_without_usage_figures_keeps_its_mark_and_exports_no_fake_zero() -> None:
    first = ingest({}, poll(obs(1.0, 10.0)), provider="lz", now=T0, tz=UTC_TZ, watching_since=None)
    blind = ingest(
        first.states, poll(obs(None, None)), provider="lz", now=T0 + 60, tz=UTC_TZ, watching_since=T0
    )
    assert blind.states["key_1"].mark == first.states["key_1"].mark
    later = ingest(
        blind.states, poll(obs(1.2, 10.2)), provider="lz", now=T0 + 120, tz=UTC_TZ, watching_since=T0
    )
    assert [s.cost_usd for s in later.spend] == [pytest.approx(0.2)]
    never = ingest({}, poll(obs(None, None)), provider="lz", now=T0, tz=UTC_TZ, watching_since=None)
    assert not never.states["key_1"].usage_known


def test_idle_fleet_changes_nothing() -> None:
    fleet = [obs(0.0, 5.0, 0, token_id=f"key_{i}", name=f"dev-app-api{i}-2026-01") for i in range(100)]
    first = ingest({}, poll(*fleet), provider="lz", now=T0, tz=UTC_TZ, watching_since=None)
    again = ingest(first.states, poll(*fleet), provider="lz", now=T0 + 60, tz=UTC_TZ, watching_since=T0)
    assert (again.new, again.changed, again.spend) == ([], [], [])
    assert all(again.states[k] is first.states[k] for k in first.states)
