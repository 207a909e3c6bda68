"""spend_anomaly and the per-token history it reads, on our own synthetic seasonal series."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable

import pytest

from alerts.detection.anomaly import AnomalyDetector, AnomalyResult, Baseline, anomaly_finding
from alerts.detection.fleet import FleetContext
from alerts.detection.series import HOUR, TokenHistory, hour_of
from monitor.settings import AnomalyRule
from tests.alerts.scenarios import DAY, START, STEP, Feeder, Rate, nightly, office, service, sparse

RULE = AnomalyRule()
FLEET = FleetContext(at=0.0, established=10, typical_rate=0.5, high_rate=2.0)


def detector() -> AnomalyDetector:
    return AnomalyDetector(poll_interval=STEP)


def poll(f: Feeder[AnomalyResult], det: AnomalyDetector) -> Callable[[float], AnomalyResult]:
    """The replay's loop body: evaluate, and keep what fired out of the baseline."""

    def each(now: float) -> AnomalyResult:
        r = det.evaluate(f.history, now, RULE, FLEET)
        if r.fire:
            f.history.mark_anomalous(now, r.window)
        return r

    return each


def fired_for(results: list[AnomalyResult], polls: int = 2) -> int:
    """How many times the alert would turn firing with `for: polls`."""
    turns = run = 0
    for r in results:
        run = run + 1 if r.fire else 0
        turns += run == polls
    return turns


# --- the history ----------------------------------------------------------------------------------


def test_an_observation_belongs_to_the_period_that_ends_at_its_stamp() -> None:
    h = TokenHistory(START)
    h.observe(START + 10 * HOUR, 1.0, 10)  # the delta of the poll at 10:00 is 09:00's usage
    midnight = int(START // HOUR)
    assert h.cost_at(midnight + 9) == pytest.approx(1.0)
    assert h.cost_at(midnight + 10) == 0.0
    assert h.window(START + 10 * HOUR, 900) == pytest.approx((1.0, 10.0))
    assert h.window(START + 10 * HOUR + 900, 900) == (0.0, 0.0)


def test_rings_forget_what_is_older_than_28_days() -> None:
    h = TokenHistory(START)
    h.observe(START + HOUR, 5.0, 1)
    h.observe(START + 29 * DAY, 1.0, 1)
    assert h.cost_at(int(START // HOUR)) == 0.0
    assert h.cost_at(hour_of(START + 29 * DAY)) == pytest.approx(1.0)


def test_late_data_for_a_complete_hour_invalidates_cached_baselines() -> None:
    h = TokenHistory(START)
    h.observe(START + 5 * HOUR, 1.0, 1)
    rev = h.revision
    h.observe(START + 5 * HOUR + 600, 1.0, 1)  # the current hour: baselines do not read it
    assert h.revision == rev
    h.observe(START + 2 * HOUR, 1.0, 1)  # an hour that is complete: they do
    assert h.revision > rev


def test_state_round_trips_through_bytes() -> None:
    f: Feeder[None] = Feeder(service(200), seed=3, ips=("198.18.0.1", "198.18.0.2"))
    f.run(9 * DAY)
    f.history.mark_anomalous(f.now, 3600)
    blob = f.history.to_bytes()
    back = TokenHistory.from_bytes(blob)
    det = detector()
    assert back.to_dict() == f.history.to_dict()
    assert det.evaluate(back, f.now, RULE, FLEET) == det.evaluate(f.history, f.now, RULE, FLEET)
    assert len(blob) < 8_000


def test_rebuilding_from_hourly_rollups_gives_the_same_baseline() -> None:
    f: Feeder[None] = Feeder(office(300, 1), seed=4)
    f.run(15 * DAY)
    rebuilt = TokenHistory(START)
    for k in range(hour_of(START), f.history.head + 1):
        rebuilt.add_hourly(k * HOUR, f.history.cost_at(k), f.history.requests_at(k))
    det, h = detector(), hour_of(f.now)
    assert det.baseline(rebuilt, h).expected == pytest.approx(det.baseline(f.history, h).expected)


# --- seasonal series --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "shape",
    [
        service(250),
        office(300, 1),
        office(200, -5, night=0.03),
        nightly(2000, 3, 1),
        service(120, growth=0.02),
    ],
    ids=["service", "office-berlin", "office-new-york", "nightly-batch", "growing"],
)
def test_four_quiet_weeks_raise_no_anomaly(shape: Rate) -> None:
    det = detector()
    f: Feeder[AnomalyResult] = Feeder(shape, seed=11)
    f.run(8 * DAY)
    results = f.run(20 * DAY, each=poll(f, det))
    assert fired_for(results) == 0


@pytest.mark.parametrize("shape", [service(250), office(300, 1)], ids=["service", "office"])
def test_a_x8_spike_of_two_hours_fires_within_a_few_polls(shape: Rate) -> None:
    det = detector()
    f: Feeder[AnomalyResult] = Feeder(shape, seed=5, dispersion=12)
    f.run(15 * DAY + 13 * HOUR)  # a Tuesday, 13:00 UTC: office hours in Berlin
    results = f.run(2 * HOUR, mult=8.0, each=poll(f, det))
    first = next(i for i, r in enumerate(results) if r.fire)
    assert first <= 2  # the trimmed hour needs two busy quarters
    assert results[first].tier == "seasonal"
    assert results[first].impact_pct > 100 and results[first].impact_usd > 1
    assert fired_for(results) == 1


def test_the_spike_stays_out_of_the_baseline() -> None:
    det = detector()
    f: Feeder[AnomalyResult] = Feeder(service(250), seed=6, dispersion=12)
    f.run(14 * DAY)
    spike_hour = hour_of(f.now + STEP)
    f.run(2 * HOUR, mult=8.0, each=poll(f, det))
    assert f.history.is_marked(spike_hour)
    f.run(7 * DAY - 2 * HOUR)
    # a week later, the same hour-of-week expects the usual level, not the spike
    assert (
        det.baseline(f.history, spike_hour + 168).expected
        < 2 * det.baseline(f.history, spike_hour + 167).expected
    )


def test_a_level_shift_alarms_then_becomes_the_new_normal() -> None:
    det = detector()
    f: Feeder[AnomalyResult] = Feeder(service(250), seed=7)
    f.run(14 * DAY)
    first_day = f.run(DAY, mult=4.0, each=poll(f, det))
    assert fired_for(first_day) >= 1
    f.run(6 * DAY, mult=4.0, each=poll(f, det))
    later = f.run(7 * DAY, mult=4.0, each=poll(f, det))
    assert fired_for(later) == 0


def test_a_planned_launch_at_x2_is_learned_within_days() -> None:
    """A x2.2 launch scores about 2.4: an alarm needs noise on top (at most a short one), and
    the daily part of the baseline follows the new level within days."""
    det = detector()
    f: Feeder[AnomalyResult] = Feeder(service(250), seed=8)
    f.run(14 * DAY)
    assert fired_for(f.run(2 * DAY, mult=2.2, each=poll(f, det))) <= 1
    assert fired_for(f.run(5 * DAY, mult=2.2, each=poll(f, det))) == 0


# --- zero-heavy tokens ------------------------------------------------------------------------------


def test_zero_heavy_token_usual_bursts_do_not_alarm_but_a_huge_one_does() -> None:
    det = detector()
    f: Feeder[AnomalyResult] = Feeder(sparse(random.Random(1), per_day=3, size=60), seed=9)
    f.run(10 * DAY)
    assert f.history.stats(hour_of(f.now)).zero_share > 0.5
    assert fired_for(f.run(14 * DAY, each=poll(f, det))) == 0
    burst = f.run(HOUR, extra=lambda t: [f.line(3000, "m-mini", "198.18.0.10")], each=poll(f, det))
    assert any(r.fire for r in burst)


def test_a_token_that_never_spends_has_a_zero_score() -> None:
    det = detector()
    h = TokenHistory(START)
    r = det.evaluate(h, START + 20 * DAY, RULE, FLEET)
    assert r.score == 0.0 and not r.fire and r.observed == 0.0


# --- tiers and gates --------------------------------------------------------------------------------


def test_a_new_token_is_compared_with_the_fleet() -> None:
    det = detector()
    h = TokenHistory(START)
    for k in range(4):
        h.observe(START + (k + 1) * STEP, 5.0, 1000)  # $20/h, 10x the fleet's 90th percentile
    r = det.evaluate(h, START + 4 * STEP, RULE, FLEET)
    assert r.tier == "new" and r.fire
    # with nothing to compare with (a fresh install) it learns instead of alarming
    assert not det.evaluate(h, START + 4 * STEP, RULE, FleetContext(at=0.0)).fire


def test_a_new_business_token_does_not_alarm_on_its_first_monday() -> None:
    det = detector()
    f: Feeder[AnomalyResult] = Feeder(office(300, 1), seed=12, start=START + 4 * DAY)  # starts on a Friday
    results = f.run(4 * DAY, each=poll(f, det))
    assert {r.tier for r in results} == {"new", "short"}
    assert fired_for(results) == 0


def test_gates_need_every_condition() -> None:
    det = detector()
    f: Feeder[AnomalyResult] = Feeder(service(250), seed=13, dispersion=12)
    f.run(14 * DAY)
    spike = f.run(HOUR, mult=8.0, each=lambda now: det.evaluate(f.history, now, RULE, FLEET))[-1]
    assert spike.fire
    h, now = f.history, f.now
    assert not det.evaluate(h, now, AnomalyRule(min_impact_usd=spike.impact_usd + 1), FLEET).fire
    assert not det.evaluate(h, now, AnomalyRule(min_impact_pct=spike.impact_pct + 1), FLEET).fire
    assert not det.evaluate(h, now, AnomalyRule(min_requests=int(spike.requests) + 1), FLEET).fire
    assert not det.evaluate(h, now, AnomalyRule(sensitivity=spike.score + 0.1), FLEET).fire
    assert not det.evaluate(h, now, AnomalyRule(enabled=False), FLEET).fire


def test_hourly_input_is_compared_over_an_hour() -> None:
    """Backtest input in hourly rows must not read as 4x its rate in a shorter window."""
    det = AnomalyDetector(poll_interval=STEP)
    h = TokenHistory(START)
    for k in range(1, 15 * 24):
        h.observe(START + k * HOUR, 1.0, 100)
    assert h.step == HOUR
    r = det.evaluate(h, START + 15 * 24 * HOUR - HOUR + 1, RULE, FLEET)
    assert r.window == HOUR and r.observed == pytest.approx(1.0, rel=0.01)


def test_baselines_are_computed_once_per_hour() -> None:
    det = detector()
    f: Feeder[AnomalyResult] = Feeder(service(250), seed=14)
    f.run(10 * DAY)
    calls = 0
    real = det._compute

    def counting(state: TokenHistory, h: int) -> Baseline:
        nonlocal calls
        calls += 1
        return real(state, h)

    det._compute = counting  # type: ignore[method-assign]
    f.run(3 * HOUR, each=lambda now: det.evaluate(f.history, now, RULE, FLEET))
    assert calls <= 5  # the straddled first hour, then one per new hour


def test_finding_carries_rule_labels_and_for() -> None:
    r = AnomalyResult(6.0, 1.0, 8.0, 7.0, 700.0, 300, "seasonal", True, 3600)
    finding = anomaly_finding(r, provider="lz", token="prod-a-b-2024-01", rule=AnomalyRule(for_polls=3))
    assert finding is not None
    assert finding.rule == "spend_anomaly" and finding.for_polls == 3
    assert dict(finding.labels) == {"provider": "lz", "token": "prod-a-b-2024-01"}
    assert anomaly_finding(dataclasses.replace(r, fire=False), provider="lz", token="t", rule=RULE) is None
