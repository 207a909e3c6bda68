"""The period clock: the relay's Date where plausible, never backwards, steps logged once each."""

from __future__ import annotations

import logging

import pytest

from monitor.clock import FakeClock
from monitor.periodclock import PeriodClock

T0 = 1_794_300_000.0


def test_the_relays_date_is_used_when_it_is_within_a_day_of_ours() -> None:
    clock = PeriodClock(FakeClock(T0), "lz")
    assert clock.now(T0 + 30) == (T0 + 30, True)


def test_a_relay_date_flung_far_away_is_not_believed_and_is_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = PeriodClock(FakeClock(T0), "lz")
    with caplog.at_level(logging.WARNING, logger="keywatch.clock"):
        assert clock.now(T0 + 40 * 86400) == (T0, False)
        assert clock.now(253_402_300_000.0) == (T0, False)  # the year 9999
    assert len(caplog.records) == 1


def test_a_backwards_step_holds_the_period_clock_until_the_wall_clock_catches_up(
    caplog: pytest.LogCaptureFixture,
) -> None:
    wall = FakeClock(T0)
    clock = PeriodClock(wall, "lz")
    assert clock.now(None) == (T0, False)
    wall.step(-30 * 86400)
    with caplog.at_level(logging.WARNING, logger="keywatch.clock"):
        assert clock.now(None) == (T0, False)
    assert "stepped by -2592000 s" in caplog.text
    wall.advance(60)
    assert clock.now(None)[0] == T0  # still held: the wall clock is a month behind
