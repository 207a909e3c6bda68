"""The stateless rules: budget, budget_forecast, token_expiring, token_unused, rotation_due and
provider_down. Pure functions of token states, config and an injected `now`; each returns the
Findings whose condition holds now. (spend_anomaly and leak_suspected live in anomaly.py and
leak.py: they need per-token history.)"""

from __future__ import annotations

import calendar
from collections.abc import Iterable, Iterator
from datetime import datetime
from zoneinfo import ZoneInfo

from alerts.model import Finding, Severity
from monitor.money import usd
from monitor.policy import PolicyBook
from monitor.settings import Rules
from monitor.tokens import TokenState

__all__ = [
    "LIVE_STATUSES",
    "budget_findings",
    "expires_in",
    "forecast_findings",
    "hygiene_findings",
    "is_live",
    "provider_down_finding",
    "rotation_limit",
    "rotation_overdue",
    "unused_for",
]

DAY = 86400.0
LIVE_STATUSES = ("active", "unused")  # revoked, expired, disabled or deleted tokens spend nothing more


def _labels(s: TokenState, **extra: str) -> dict[str, str]:
    return {"provider": s.provider, "token": s.series, **extra}


def budget_severity(threshold: float) -> Severity:
    if threshold >= 1.0:
        return "critical"
    return "warning" if threshold >= 0.8 else "info"


def budget_findings(
    states: Iterable[TokenState], policies: PolicyBook, rules: Rules, *, now: float, tz: ZoneInfo
) -> Iterator[Finding]:
    """One alert per token, window and threshold crossed, keyed by the budget period, so each
    threshold notifies once per period and resolves when the period rolls over."""
    if not rules.budget.enabled:
        return
    local = datetime.fromtimestamp(now, tz)
    periods = {"day": local.strftime("%Y-%m-%d"), "month": local.strftime("%Y-%m")}
    for s in states:
        if not is_live(s):
            continue
        budgets = policies.budgets(s)
        for window, spent, limit in (
            ("day", s.spend_in("day", now, tz), budgets.day),
            ("month", s.spend_in("month", now, tz), budgets.month),
        ):
            if spent is None or not limit or limit <= 0:
                continue
            ratio = spent / limit
            for threshold in rules.budget.thresholds:
                if ratio < threshold:
                    break
                pct = f"{threshold * 100:g}%"
                yield Finding(
                    rule="budget",
                    labels=_labels(s, window=window, threshold=f"{threshold:g}", period=periods[window]),
                    severity=budget_severity(threshold),
                    value=ratio,
                    summary=f"{s.name} has used {ratio * 100:.0f}% of its {window} budget "
                    f"({usd(spent)} of {usd(limit)}), past the {pct} threshold",
                    annotations={
                        "budget_usd": f"{limit:g}",
                        "spent_usd": f"{spent:.4f}",
                        "action": "Check who uses this token and whether the spend is expected; raise the "
                        "budget in keywatch.yaml or the relay's limits if it is.",
                    },
                )


def forecast_findings(
    states: Iterable[TokenState], policies: PolicyBook, rules: Rules, *, now: float, tz: ZoneInfo
) -> Iterator[Finding]:
    """Month-to-date spend projected linearly: fires when it crosses the monthly budget before
    the month ends (and has not crossed it yet — then `budget` speaks)."""
    if not rules.forecast.enabled:
        return
    local = datetime.fromtimestamp(now, tz)
    month_start = local.replace(day=1, hour=0, minute=0, second=0, microsecond=0).timestamp()
    days_in_month = calendar.monthrange(local.year, local.month)[1]
    month_end = month_start + days_in_month * DAY
    elapsed = now - month_start
    if elapsed < DAY:  # one day of data is too little to project a month from
        return
    for s in states:
        spent = s.spend_in("month", now, tz)
        if spent is None or not is_live(s):
            continue
        limit = policies.budgets(s).month
        if not limit or spent >= limit or spent < 0.1 * limit:
            continue
        rate = spent / elapsed
        crossing = now + (limit - spent) / rate
        if crossing >= month_end:
            continue
        when = datetime.fromtimestamp(crossing, tz).strftime("%Y-%m-%d %H:%M %Z")
        projected = spent + rate * (month_end - now)
        yield Finding(
            rule="budget_forecast",
            labels=_labels(s, period=local.strftime("%Y-%m")),
            severity="warning",
            value=projected / limit,
            summary=f"{s.name} is on course to spend {usd(projected)} this month against a budget of "
            f"{usd(limit)}; at this rate it crosses the budget around {when}",
            annotations={"crossing_at": str(int(crossing)), "budget_usd": f"{limit:g}"},
        )


# -- the hygiene predicates: shared by hygiene_findings (alerts) and alerts.offline.audit (the report) -----


def is_live(s: TokenState) -> bool:
    """Active or not yet used: the only tokens the time-based hygiene checks look at."""
    return s.status in LIVE_STATUSES


def expires_in(s: TokenState, rules: Rules, *, now: float) -> float | None:
    """Seconds until expiry when the token expires within `expiry.warn_before` (and has not yet)."""
    if s.expires_at is not None and now < s.expires_at <= now + rules.expiry_warn_before:
        return s.expires_at - now
    return None


def unused_for(s: TokenState, rules: Rules, *, now: float) -> float | None:
    """Seconds since the token was last used — since it was created, if never — once that is at
    least `unused.after`; None otherwise (or when neither time is known)."""
    reference = s.last_used_at if s.last_used_at is not None else s.created_at
    if reference is not None and now - reference >= rules.unused_after:
        return now - reference
    return None


def rotation_limit(s: TokenState, rules: Rules) -> float:
    """`rotation.prod` for env=prod tokens, else `rotation.default` (seconds)."""
    return rules.rotation_prod if s.env == "prod" else rules.rotation_default


def rotation_overdue(s: TokenState, rules: Rules, *, now: float) -> float | None:
    """The token's age in seconds once it has reached its rotation limit; None otherwise."""
    if s.created_at is not None and now - s.created_at >= rotation_limit(s, rules):
        return now - s.created_at
    return None


def hygiene_findings(states: Iterable[TokenState], rules: Rules, *, now: float) -> Iterator[Finding]:
    """token_expiring, token_unused, rotation_due (the product guide's audits, continuously)."""
    for s in states:
        if not is_live(s):
            continue
        left = expires_in(s, rules, now=now)
        if left is not None:
            days = left / DAY
            yield Finding(
                rule="token_expiring",
                labels=_labels(s),
                severity="warning",
                value=days,
                summary=f"{s.name} expires in {days:.1f} days",
                annotations={"action": "Create a replacement token and roll it out before the expiry."},
            )
        idle = unused_for(s, rules, now=now)
        if idle is not None:
            days = idle / DAY
            never = s.last_used_at is None
            yield Finding(
                rule="token_unused",
                labels=_labels(s),
                severity="info",
                value=days,
                summary=f"{s.name} has {'never been used' if never else 'not been used'} for {days:.0f} days",
                annotations={"action": "Revoke it if nobody needs it: an unused token is only a liability."},
            )
        age = rotation_overdue(s, rules, now=now)
        if age is not None:
            limit = rotation_limit(s, rules)
            yield Finding(
                rule="rotation_due",
                labels=_labels(s),
                severity="info",
                value=age / DAY,
                summary=f"{s.name} is {age / DAY:.0f} days old; rotate {'production' if s.env == 'prod' else ''} "
                f"tokens every {limit / DAY:.0f} days".replace("  ", " "),
                annotations={
                    "action": "Create a replacement, update the applications, then revoke this one."
                },
            )


def provider_down_finding(provider: str, failures: int, reason: str | None, rules: Rules) -> Finding | None:
    if failures < rules.provider_down_after:
        return None
    return Finding(
        rule="provider_down",
        labels={"provider": provider},
        severity="critical",
        value=float(failures),
        summary=f"relay {provider} has failed {failures} polls in a row ({reason or 'unknown reason'}); "
        "its tokens' alerts are on hold until it answers again",
        annotations={
            "action": "Check the relay's status and the admin token; see keywatch's log for details."
        },
    )
