"""Leak evidence from spend and request counts alone (issue 10): what a relay without IPs, models or
a request log still tells. Single-token histories fed spend-only; each signal alone stays quiet."""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from alerts.detection.fleet import FleetContext
from alerts.detection.leak import LeakDetector, LeakResult, TokenInfo
from alerts.detection.series import TokenHistory
from alerts.detection.spend_evidence import SpendParams, is_month_end, quiet_slot
from monitor.model import TokenLimits
from tests.alerts.scenarios import DAY, HOUR, START, STEP, Feeder, Line, office, service, sparse

FLEET = FleetContext(at=0.0, established=20, typical_rate=0.5, high_rate=2.0)
DETECTOR = LeakDetector()


def watch(
    f: Feeder[LeakResult], *, meta: TokenInfo | None = None, siblings: tuple[TokenHistory, ...] = ()
) -> Callable[[float], LeakResult]:
    def each(now: float) -> LeakResult:
        r = DETECTOR.evaluate(f.history, now, None, meta, FLEET, siblings=siblings)
        if r.fire:
            f.history.mark_anomalous(now, 3600)
        return r

    return each


def spend_token(
    rate: Callable[[float], float] | None = None, *, days: float = 14, seed: int = 1
) -> Feeder[LeakResult]:
    f: Feeder[LeakResult] = Feeder(rate or service(250), seed=seed, dispersion=12, spend_only=True)
    f.run(days * DAY)
    return f


def thief(f: Feeder[LeakResult], per_step: int, model: str) -> Callable[[float], list[Line]]:
    return lambda now: [f.line(per_step, model, None)]


def counted(results: list[LeakResult]) -> set[str]:
    return {s.name for r in results for s in r.signals if s.counted}


# --- the price per request --------------------------------------------------------------------------


def test_a_drain_on_an_expensive_model_is_a_price_shift_and_fires_at_once() -> None:
    f = spend_token()
    results = f.run(HOUR, extra=thief(f, 600, "m-opus"), each=watch(f))
    assert results[0].fire
    assert {"spike", "price_shift"} <= set(results[0].names)
    shift = next(s for s in results[0].signals if s.name == "price_shift")
    assert "x its usual $" in shift.detail


def test_a_flood_of_a_cheap_model_is_a_price_shift_too() -> None:
    f = spend_token()
    results = f.run(HOUR, extra=thief(f, 6000, "m-nano"), each=watch(f))
    assert any(r.fire and "price_shift" in r.names for r in results)


def test_a_x8_spike_at_the_usual_price_stays_a_spike() -> None:
    f = spend_token()
    results = f.run(3 * HOUR, mult=8.0, each=watch(f))
    assert "spike" in counted(results)
    assert "price_shift" not in counted(results)
    assert not any(r.fire for r in results)


def test_a_model_the_token_moved_to_days_ago_is_its_price_now() -> None:
    f = spend_token(days=10)
    f.token.models = [("m-opus", 1.0)]  # the owner moved to a dearer model, for good
    f.run(4 * DAY)
    results = f.run(2 * HOUR, mult=8.0, each=watch(f))
    assert "spike" in counted(results) and "price_shift" not in counted(results)
    assert not any(r.fire for r in results)


# --- the token's own weekly profile ------------------------------------------------------------------


def test_an_office_token_spending_at_night_is_off_hours_by_its_own_profile() -> None:
    f = spend_token(office(200, 1), days=16)  # no business_hours configured anywhere
    f.run(HOUR * (24 - (f.now % DAY) / HOUR + 2))  # to 02:00 UTC the next day
    results = f.run(HOUR, extra=thief(f, 150, "m-mini"), each=watch(f))
    assert results[0].fire, results[0].signals
    off = next(s for s in results[0].signals if s.name == "off_hours")
    assert off.counted and "when in 2 weeks it never spent more than" in off.detail


@pytest.mark.parametrize("rate", [service(250), sparse(random.Random(3), 3, 40)], ids=["24x7", "sparse"])
def test_tokens_without_a_weekly_schedule_have_no_quiet_hours(rate: Callable[[float], float]) -> None:
    f = spend_token(rate, days=21)
    h = int(f.now // HOUR) + 2
    assert quiet_slot(f.history, h, 50.0, SpendParams()) is None


def test_a_month_end_batch_after_hours_is_shown_but_not_counted() -> None:
    f = spend_token(office(200, 1), days=16)
    f.run(START + 30 * DAY + 19 * HOUR - f.now)  # March 31st, 19:00 UTC: after hours in Berlin
    assert is_month_end(f.now + STEP)
    results = f.run(3 * HOUR, extra=thief(f, 1200, "m-mini"), each=watch(f))
    assert "spike" in counted(results)
    off = [s for r in results for s in r.signals if s.name == "off_hours"]
    assert off and not any(s.counted for s in off) and "month end" in off[0].detail
    assert not any(r.fire for r in results)


@pytest.mark.parametrize(
    ("when", "month_end"),
    [("2027-03-31T12:00:00", True), ("2027-03-31T23:59:00", True), ("2027-04-01T01:00:00", False),
     ("2027-03-30T20:00:00", False), ("2028-02-29T18:00:00", True)],
)  # fmt: skip
def test_month_end_is_the_afternoon_and_evening_of_the_last_day(when: str, month_end: bool) -> None:
    assert is_month_end(datetime.fromisoformat(when).replace(tzinfo=UTC).timestamp()) is month_end


# --- a dormant token waking -----------------------------------------------------------------------


def test_a_never_used_token_waking_far_above_the_fleet_fires_from_spend_alone() -> None:
    f: Feeder[LeakResult] = Feeder(service(0), seed=4, spend_only=True, idle_since=START - 90 * DAY)
    f.run(14 * DAY)
    results = f.run(HOUR, extra=thief(f, 120, "m-opus"), each=watch(f))
    assert results[0].fire
    assert {"dormant_wake", "wake_volume"} <= set(results[0].names)


def test_a_token_waking_at_its_old_rate_does_not_fire() -> None:
    f = spend_token(days=6)
    f.run(20 * DAY, quiet=True)
    results = f.run(6 * HOUR, each=watch(f))
    assert "dormant_wake" in counted(results)
    assert "wake_volume" not in counted(results)
    assert not any(r.fire for r in results)


# --- how long a surge lasts ----------------------------------------------------------------------


def test_a_swarm_on_a_sparse_token_is_a_drain_once_it_outlasts_benign_bursts() -> None:
    f = spend_token(sparse(random.Random(5), 4, 40))
    results = f.run(8 * HOUR, extra=thief(f, 175, "m-mini"), each=watch(f))
    fired = [i for i, r in enumerate(results) if r.fire]
    assert fired and "drain" in results[fired[0]].names
    assert 6 * HOUR / STEP - 1 <= fired[0] <= 7 * HOUR / STEP  # after 6 h: longer than benign bursts


def test_a_token_two_days_awake_has_no_weeks_of_bursts_to_be_measured_against() -> None:
    # held-out seed 28: a benign wake after weeks of silence, then a sustained busy day: "no burst
    # in weeks" says nothing about a token that was not in use in those weeks
    f = spend_token(days=0.1)
    f.token.rate = lambda now: 0.0  # dormant for three weeks
    f.run(21 * DAY)
    f.token.rate = service(250)
    f.run(4 * DAY)
    results = f.run(8 * HOUR, mult=10.0, each=watch(f))
    assert "drain" not in {s.name for r in results for s in r.signals}
    assert not any(r.fire for r in results)


def test_a_three_hour_spike_is_no_drain() -> None:
    f = spend_token()
    results = f.run(3 * HOUR, mult=8.0, each=watch(f))
    assert "drain" not in counted(results) and not any(r.fire for r in results)


def test_an_hour_far_beyond_anything_the_token_does_is_an_extreme_surge() -> None:
    f = spend_token()
    results = f.run(2 * HOUR, mult=150.0, each=watch(f))
    fired = [r for r in results if r.fire]
    assert fired and "extreme_surge" in fired[0].names
    surge = next(s for s in fired[0].signals if s.name == "extreme_surge")
    assert "x its busiest hour in four weeks" in surge.detail


def test_a_big_four_hour_burst_is_no_extreme_surge() -> None:
    # held-out seed 24: a benign x9-busiest, ~30x-expected burst was once quarantined on this signal
    f = spend_token()
    results = f.run(4 * HOUR, mult=30.0, each=watch(f))
    assert "spike" in {s.name for r in results for s in r.signals}
    assert "extreme_surge" not in {s.name for r in results for s in r.signals}
    assert not any(r.fire for r in results)


def test_a_token_with_a_few_busy_hours_behind_it_has_no_busiest_hour_yet() -> None:
    # watched for a day and a half, used in a few short sessions: its busiest hour so far says
    # little, so even a $6/h hour (100x, 20x that hour) is a spike, not an extreme surge
    f = spend_token(sparse(random.Random(3), 6, 40), days=1.5)
    results = f.run(2 * HOUR, extra=thief(f, 600, "m-mini"), each=watch(f))
    assert "spike" in {s.name for r in results for s in r.signals}
    assert "extreme_surge" not in {s.name for r in results for s in r.signals}


def test_an_extreme_surge_on_a_month_end_evening_is_shown_not_counted() -> None:
    f = spend_token(days=30)  # 31 March 00:00 UTC
    f.run(14 * HOUR)
    assert is_month_end(f.now), datetime.fromtimestamp(f.now, UTC)
    results = f.run(HOUR, mult=150.0, each=watch(f))
    shown = [s for r in results for s in r.signals if s.name == "extreme_surge"]
    assert shown and not any(s.counted for s in shown)


# --- the relay's own limits, and the token's project mates -----------------------------------------


def test_more_than_the_daily_spend_limit_is_evidence() -> None:
    f = spend_token()
    meta = TokenInfo(limits=TokenLimits(daily_usd=20.0))
    results = f.run(3 * HOUR, mult=8.0, each=watch(f, meta=meta))
    assert any(r.fire and "over_spend_limit" in r.names for r in results)


def _project(seed: int) -> list[Feeder[LeakResult]]:
    return [spend_token(service(150 + 40 * i), seed=seed + i) for i in range(3)]


def test_a_drained_token_whose_project_mates_stay_flat_fires() -> None:
    victim, *mates = _project(10)
    for m in mates:  # the mates keep their pace, hour by hour, while the victim is drained
        m.run(HOUR)
    results = victim.run(HOUR, mult=25.0, each=watch(victim, siblings=tuple(m.history for m in mates)))
    fired = [r for r in results if r.fire]
    assert fired and "siblings_flat" in fired[0].names


def test_a_project_that_rises_as_one_is_its_owners_doing() -> None:
    project = _project(20)
    for f in project:
        f.run(HOUR * (24 - (f.now % DAY) / HOUR + 1))  # 01:00 UTC
    results: list[LeakResult] = []
    for _ in range(4):  # a poll at a time, all together: a release at night, x8 on every service
        for i, f in enumerate(project):
            mates = tuple(g.history for j, g in enumerate(project) if j != i)
            results += f.run(STEP, mult=8.0, each=watch(f, siblings=mates))
    assert any(s.name == "siblings_move" for r in results for s in r.signals)
    assert not any(r.fire for r in results)


def test_a_spend_only_history_has_no_ips_or_models() -> None:
    f = spend_token(days=2)
    assert f.history.ips == {} and f.history.models == {}
