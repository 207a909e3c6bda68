"""The stateless rules one by one: budget, budget_forecast, token_expiring, token_unused,
rotation_due, provider_down and auto_revoke_paused. Pure functions on hand-built TokenStates with
an injected `now`: where each fires, where it does not (at and just short of every boundary),
its severity, its labels (stable across polls), and what it does with figures it does not have."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from zoneinfo import ZoneInfo

import pytest

from alerts.detection.rules import (
    budget_findings,
    forecast_findings,
    hygiene_findings,
    provider_down_finding,
)
from alerts.model import Finding
from alerts.response.playbook import auto_revoke_paused_finding
from monitor.model import TokenLimits
from monitor.policy import PolicyBook
from monitor.settings import Budget, BudgetRule, ForecastRule, Rules, TokenPolicy
from monitor.spend import UsageMark
from monitor.tokens import TokenState

UTC = ZoneInfo("UTC")
DAY = 86400.0
JAN_1 = 1_767_225_600.0  # 2026-01-01 00:00 UTC
NOW = JAN_1 + 14 * DAY + 12 * 3600  # 2026-01-15 12:00 UTC: mid-day, mid-month
RULES = Rules()  # warn 14 d before expiry, unused after 30 d, rotate prod 90 d, others 180 d
BUDGETS = PolicyBook([TokenPolicy(match="*", budget=Budget(daily_usd=10.0, monthly_usd=100.0))])
NO_BUDGETS = PolicyBook([])


def token(
    name: str = "dev-webapp-api-2026-01",
    *,
    day: float | None = None,
    month: float | None = None,
    status: str = "active",
    created: float | None = NOW - DAY,
    last_used: float | None = NOW - 60,
    expires: float | None = None,
    limits: TokenLimits | None = None,
    label: str = "",
    observed_at: float = NOW,
) -> TokenState:
    """A token as the rules see it; `day`/`month` are the relay's window figures (None: unknown)."""
    known = day is not None or month is not None
    return TokenState(
        pk=1,
        provider="lz",
        token_id="17",
        name=name,
        status=status,
        first_seen=NOW - 60 * DAY,
        last_seen=observed_at,
        created_at=created,
        last_used_at=last_used,
        expires_at=expires,
        limits=limits or TokenLimits(),
        mark=UsageMark(observed_at, today_usd=day, month_usd=month) if known else None,
        usage_known=known,
        label=label,
    )


def budgets(
    states: Sequence[TokenState], *, policies: PolicyBook = BUDGETS, rules: Rules = RULES, now: float = NOW
) -> list[Finding]:
    return list(budget_findings(states, policies, rules, now=now, tz=UTC))


def forecast(
    states: Sequence[TokenState], *, policies: PolicyBook = BUDGETS, rules: Rules = RULES, now: float = NOW
) -> list[Finding]:
    return list(forecast_findings(states, policies, rules, now=now, tz=UTC))


def hygiene(state: TokenState, *, rules: Rules = RULES, now: float = NOW) -> dict[str, Finding]:
    found = list(hygiene_findings([state], rules, now=now))
    by_rule = {f.rule: f for f in found}
    assert len(by_rule) == len(found)  # one finding per rule and token
    return by_rule


def crossed(found: Sequence[Finding]) -> list[tuple[str, str, str]]:
    """(window, threshold, severity) of each budget finding."""
    return [(f.labels["window"], f.labels["threshold"], f.severity) for f in found]


# --- budget ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("day", "expected"),
    [
        (4.99, []),
        (5.0, [("day", "0.5", "info")]),  # exactly at a threshold crosses it
        (7.99, [("day", "0.5", "info")]),
        (8.0, [("day", "0.5", "info"), ("day", "0.8", "warning")]),
        (9.999, [("day", "0.5", "info"), ("day", "0.8", "warning")]),
        (10.0, [("day", "0.5", "info"), ("day", "0.8", "warning"), ("day", "1", "critical")]),
        (25.0, [("day", "0.5", "info"), ("day", "0.8", "warning"), ("day", "1", "critical")]),
    ],
)
def test_budget_fires_once_per_threshold_reached_with_its_severity(
    day: float, expected: list[tuple[str, str, str]]
) -> None:
    assert crossed(budgets([token(day=day, month=day)])) == expected


def test_budget_watches_the_month_window_on_its_own() -> None:
    found = budgets([token(day=1.0, month=80.0)])
    assert crossed(found) == [("month", "0.5", "info"), ("month", "0.8", "warning")]
    (over,) = [f for f in found if f.labels["threshold"] == "0.8"]
    assert over.value == pytest.approx(0.8)
    assert over.annotations["budget_usd"] == "100" and over.annotations["spent_usd"] == "80.0000"
    assert "80%" in over.summary and "$80.00 of $100.00" in over.summary


def test_budget_labels_name_the_token_window_threshold_and_period() -> None:
    (f,) = budgets([token(day=6.0, month=6.0, label="dev-webapp-api-2026-01#17")])
    assert dict(f.labels) == {
        "provider": "lz",
        "token": "dev-webapp-api-2026-01#17",  # the series label, so a repeated name does not merge
        "window": "day",
        "threshold": "0.5",
        "period": "2026-01-15",
    }


def test_budget_labels_are_stable_across_polls_of_one_period_and_new_in_the_next() -> None:
    morning = budgets([token(day=6.0, month=6.0, observed_at=NOW - 4 * 3600)], now=NOW - 4 * 3600)
    noon = budgets([token(day=7.5, month=7.5)])
    assert [f.fingerprint for f in morning] == [f.fingerprint for f in noon]
    assert morning[0].value != noon[0].value  # the value moves; the identity does not
    tomorrow = budgets([token(day=6.0, month=60.0, observed_at=NOW + DAY)], now=NOW + DAY)
    by_window = {f.labels["window"]: f.labels["period"] for f in tomorrow}
    assert by_window == {"day": "2026-01-16", "month": "2026-01"}


def test_budget_periods_follow_the_relays_timezone() -> None:
    late = JAN_1 + 30 * DAY + 23.5 * 3600  # 2026-01-31 23:30 UTC is already February in Berlin
    state = token(day=6.0, month=60.0, observed_at=late)
    found = list(budget_findings([state], BUDGETS, RULES, now=late, tz=ZoneInfo("Europe/Berlin")))
    assert {f.labels["window"]: f.labels["period"] for f in found} == {
        "day": "2026-02-01",
        "month": "2026-02",
    }


def test_unknown_spend_fires_no_budget_rule_and_is_not_zero() -> None:
    """No data is not zero: a token whose relay never said its usage has no budget finding at all,
    whatever its budget, while a token that really spent $0 is simply under budget."""
    unknown = token(day=None, month=None)
    assert unknown.day_usd is None and unknown.month_usd is None
    assert budgets([unknown], rules=replace(RULES, budget=BudgetRule(thresholds=(0.0, 0.5)))) == []
    zero = token(day=0.0, month=0.0)
    assert crossed(budgets([zero], rules=replace(RULES, budget=BudgetRule(thresholds=(0.0, 0.5))))) == [
        ("day", "0", "info"),
        ("month", "0", "info"),
    ]


def test_a_known_month_with_an_unknown_day_is_judged_on_the_month_alone() -> None:
    assert crossed(budgets([token(day=None, month=90.0)])) == [
        ("month", "0.5", "info"),
        ("month", "0.8", "warning"),
    ]


def test_windows_keywatch_derived_itself_count_when_the_relay_keeps_only_a_lifetime_counter() -> None:
    lifetime = replace(
        token(day=None, month=None),
        mark=UsageMark(NOW, total_usd=500.0),
        usage_known=True,
        derived_day_usd=8.0,
        derived_month_usd=20.0,
    )
    assert crossed(budgets([lifetime])) == [("day", "0.5", "info"), ("day", "0.8", "warning")]


def test_yesterdays_day_figure_is_not_spend_for_today() -> None:
    """A relay figure shown in an earlier period is unknown for this one, never carried over."""
    yesterday = token(day=12.0, month=60.0, observed_at=NOW - DAY)  # over budget yesterday; not seen since
    found = budgets([yesterday])
    assert [f.labels["period"] for f in found if f.labels["window"] == "day"] == []
    # the month figure was shown this month: still this month's spend (60% of its budget)
    assert {(f.labels["window"], f.labels["threshold"]) for f in found} == {("month", "0.5")}


def test_budget_comes_from_the_relays_limits_where_config_gives_none() -> None:
    limited = token(day=9.0, month=9.0, limits=TokenLimits(daily_usd=10.0))
    assert crossed(budgets([limited], policies=NO_BUDGETS)) == [
        ("day", "0.5", "info"),
        ("day", "0.8", "warning"),
    ]
    config_first = PolicyBook([TokenPolicy(match="dev-*", budget=Budget(daily_usd=100.0))])
    assert budgets([limited], policies=config_first) == []


@pytest.mark.parametrize("limit", [None, 0.0, -5.0])
def test_no_budget_or_a_nonsense_one_fires_nothing(limit: float | None) -> None:
    policies = PolicyBook([TokenPolicy(match="*", budget=Budget(daily_usd=limit, monthly_usd=limit))])
    assert budgets([token(day=50.0, month=50.0)], policies=policies) == []


@pytest.mark.parametrize("status", ["revoked", "disabled", "deleted", "expired"])
def test_budget_skips_tokens_that_can_spend_no_more(status: str) -> None:
    assert budgets([token(day=50.0, month=500.0, status=status)]) == []


def test_budget_can_be_switched_off_and_given_its_own_thresholds() -> None:
    over = token(day=50.0, month=500.0)
    assert budgets([over], rules=replace(RULES, budget=BudgetRule(enabled=False))) == []
    custom = replace(RULES, budget=BudgetRule(thresholds=(0.9, 2.0)))
    assert crossed(budgets([token(day=19.0, month=19.0)], rules=custom)) == [("day", "0.9", "warning")]
    assert crossed(budgets([token(day=20.0, month=20.0)], rules=custom))[-1] == ("day", "2", "critical")


# --- budget_forecast ---------------------------------------------------------------------------------
# On 2026-01-15 12:00 UTC, 14.5 of January's 31 days are gone: a month figure of M projects to
# M * 31 / 14.5 and crosses $100 before the month ends once M > 100 * 14.5 / 31 = 46.77.


def test_forecast_fires_when_the_month_projects_past_the_budget() -> None:
    (f,) = forecast([token(month=50.0)])
    assert (f.rule, f.severity) == ("budget_forecast", "warning")
    assert dict(f.labels) == {"provider": "lz", "token": "dev-webapp-api-2026-01", "period": "2026-01"}
    assert f.value == pytest.approx(50.0 * 31 / 14.5 / 100.0)
    crossing = NOW + (100.0 - 50.0) / (50.0 / (14.5 * DAY))
    assert float(f.annotations["crossing_at"]) == pytest.approx(crossing, abs=1)
    assert "$106.90" in f.summary and "2026-01-30" in f.summary


def test_forecast_is_quiet_on_course_to_stay_under() -> None:
    assert forecast([token(month=46.0)]) == []


def test_forecast_is_quiet_when_the_crossing_falls_exactly_on_the_months_end() -> None:
    end = JAN_1 + 31 * DAY
    elapsed = NOW - JAN_1
    exactly = 100.0 * elapsed / (end - JAN_1)  # the linear projection reaches $100 at the last second
    assert forecast([token(month=exactly * (1 - 1e-9))]) == []
    assert len(forecast([token(month=exactly * (1 + 1e-6))])) == 1


def test_forecast_leaves_a_crossed_budget_to_the_budget_rule() -> None:
    assert forecast([token(month=100.0)]) == []
    assert forecast([token(month=99.99)]) != []


def test_forecast_ignores_spend_under_a_tenth_of_the_budget() -> None:
    early = JAN_1 + 1.5 * DAY  # a fast start: $9.99 in 36 hours projects to $206 for the month
    assert forecast([token(month=9.99, observed_at=early)], now=early) == []
    assert len(forecast([token(month=10.0, observed_at=early)], now=early)) == 1


def test_forecast_waits_for_a_day_of_the_month() -> None:
    just_under = JAN_1 + DAY - 1
    assert forecast([token(month=90.0, observed_at=just_under)], now=just_under) == []
    assert len(forecast([token(month=90.0, observed_at=JAN_1 + DAY)], now=JAN_1 + DAY)) == 1


def test_forecast_needs_a_known_month_figure_a_budget_a_live_token_and_the_rule_on() -> None:
    assert forecast([token(month=None, day=30.0)]) == []
    assert forecast([token(month=50.0)], policies=NO_BUDGETS) == []
    assert forecast([token(month=50.0, status="revoked")]) == []
    assert forecast([token(month=50.0)], rules=replace(RULES, forecast=ForecastRule(enabled=False))) == []


def test_forecast_labels_are_stable_through_the_month() -> None:
    a = forecast([token(month=50.0)])
    later = NOW + 3 * DAY
    b = forecast([token(month=70.0, observed_at=later)], now=later)
    assert [f.fingerprint for f in a] == [f.fingerprint for f in b] and len(a) == 1


# --- token_expiring ----------------------------------------------------------------------------------


def test_expiring_fires_within_warn_before_and_not_a_second_earlier() -> None:
    warn = RULES.expiry_warn_before
    f = hygiene(token(expires=NOW + warn))["token_expiring"]  # exactly warn_before away: warned
    assert f.severity == "warning" and f.value == pytest.approx(14.0)
    assert f.summary.endswith("expires in 14.0 days")
    assert dict(f.labels) == {"provider": "lz", "token": "dev-webapp-api-2026-01"}
    assert "token_expiring" not in hygiene(token(expires=NOW + warn + 1))


def test_expiring_stops_at_the_expiry_itself() -> None:
    assert hygiene(token(expires=NOW + 1))["token_expiring"].value == pytest.approx(1 / DAY)
    assert "token_expiring" not in hygiene(token(expires=NOW))
    assert "token_expiring" not in hygiene(token(expires=NOW - DAY))


def test_expiring_needs_an_expiry() -> None:
    assert "token_expiring" not in hygiene(token(expires=None))


# --- token_unused ------------------------------------------------------------------------------------


def test_unused_fires_at_unused_after_since_the_last_use() -> None:
    after = RULES.unused_after
    f = hygiene(token(last_used=NOW - after))["token_unused"]
    assert f.severity == "info" and f.value == pytest.approx(30.0)
    assert "has not been used for 30 days" in f.summary
    assert "token_unused" not in hygiene(token(last_used=NOW - after + 1))


def test_a_token_never_used_counts_from_its_creation() -> None:
    after = RULES.unused_after
    f = hygiene(token(last_used=None, created=NOW - after))["token_unused"]
    assert "has never been used for 30 days" in f.summary
    assert "token_unused" not in hygiene(token(last_used=None, created=NOW - after + 1))


def test_unused_needs_a_time_to_count_from() -> None:
    assert "token_unused" not in hygiene(token(last_used=None, created=None))


# --- rotation_due ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "limit_days"),
    [("prod-webapp-api-2025-06", 90), ("dev-webapp-api-2025-06", 180), ("scratch", 180)],
)
def test_rotation_is_due_at_the_limit_for_its_environment(name: str, limit_days: int) -> None:
    f = hygiene(token(name, created=NOW - limit_days * DAY))["rotation_due"]
    assert f.severity == "info" and f.value == pytest.approx(limit_days)
    assert f"every {limit_days} days" in f.summary
    assert "rotation_due" not in hygiene(token(name, created=NOW - limit_days * DAY + 1))


def test_rotation_says_production_only_for_prod_tokens() -> None:
    prod = hygiene(token("prod-webapp-api-2025-06", created=NOW - 100 * DAY))["rotation_due"]
    dev = hygiene(token("dev-webapp-api-2025-06", created=NOW - 200 * DAY))["rotation_due"]
    assert "rotate production tokens every 90 days" in prod.summary
    assert "rotate tokens every 180 days" in dev.summary


def test_rotation_needs_a_creation_time() -> None:
    assert "rotation_due" not in hygiene(token(created=None, last_used=NOW))


# --- the hygiene rules together ----------------------------------------------------------------------


@pytest.mark.parametrize("status", ["revoked", "disabled", "deleted", "expired", "exhausted"])
def test_hygiene_looks_only_at_live_tokens(status: str) -> None:
    stale = token(status=status, created=NOW - 400 * DAY, last_used=None, expires=NOW + DAY)
    assert hygiene(stale) == {}
    assert set(hygiene(replace(stale, status="unused"))) == {"token_expiring", "token_unused", "rotation_due"}


def test_hygiene_labels_are_stable_while_the_values_move() -> None:
    state = token(created=NOW - 400 * DAY, last_used=NOW - 40 * DAY, expires=NOW + 5 * DAY)
    today, tomorrow = hygiene(state), hygiene(state, now=NOW + DAY)
    assert set(today) == set(tomorrow) == {"token_expiring", "token_unused", "rotation_due"}
    for rule, f in today.items():
        assert f.fingerprint == tomorrow[rule].fingerprint
        assert f.value != tomorrow[rule].value


def test_a_fresh_token_has_no_hygiene_findings() -> None:
    assert hygiene(token()) == {}


# --- provider_down and auto_revoke_paused ------------------------------------------------------------


def test_provider_down_fires_at_provider_down_after_failures_in_a_row() -> None:
    after = RULES.provider_down_after
    assert provider_down_finding("lz", after - 1, "timeout", RULES) is None
    f = provider_down_finding("lz", after, "timeout", RULES)
    assert f is not None
    assert (f.rule, f.severity, f.value) == ("provider_down", "critical", float(after))
    assert dict(f.labels) == {"provider": "lz"}  # one alert per relay, whatever its tokens
    assert "failed 3 polls in a row (timeout)" in f.summary
    later = provider_down_finding("lz", after + 5, "http_5xx", RULES)
    assert later is not None and later.fingerprint == f.fingerprint


def test_provider_down_without_a_reason_says_so() -> None:
    f = provider_down_finding("lz", 7, None, replace(RULES, provider_down_after=1))
    assert f is not None and "(unknown reason)" in f.summary


def test_auto_revoke_paused_names_the_relay_and_the_cap() -> None:
    f = auto_revoke_paused_finding("lz", 3)
    assert (f.rule, f.severity, f.value) == ("auto_revoke_paused", "critical", 3.0)
    assert dict(f.labels) == {"provider": "lz"}
    assert "3 tokens were quarantined within the hour" in f.summary
    assert auto_revoke_paused_finding("lz", 5).fingerprint == f.fingerprint
