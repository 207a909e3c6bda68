"""Notification text: a title that names the rule and the token, a body that says what, since
when, compared with what, and what to do next. Plain text that reads the same in mail and chat."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from urllib.parse import urlencode

from alerts.lifecycle.records import Alert
from alerts.model import Severity
from alerts.notification.grouping import AlertGroup
from monitor.model import severity_rank
from monitor.settings import Notify, Settings

__all__ = ["GRAFANA_TOKEN_DASHBOARD", "notify_type_for", "render", "severity_for"]

# The token dashboard in dashboards/grafana (uid keywatch-token), with its provider/token variables.
GRAFANA_TOKEN_DASHBOARD = "/d/keywatch-token/keywatch-token"

_REASONS = {
    "first": "new alert",
    "new_alerts": "new alerts joined this group",
    "resolved": "everything in this group resolved",
    "new_resolved": "some alerts resolved",
    "repeat": "reminder: still firing",
}

# Annotations with a place of their own; all others are listed as `key: value`. The contract with
# the rules and the responder: `action` is advice (what to do; overrides the rule's default),
# `response` is what keywatch did ("quarantined", "dry run — would quarantine", "protected: not
# quarantined"; shown in the title too), `next_steps` a multi-line playbook, `quarantined` a flag.
_PLACED = frozenset({"action", "response", "next_steps", "quarantined", "description"})

_WHAT_TO_DO = {
    "budget": "Check the token's recent usage; raise the budget if the spend is expected, "
    "otherwise pause the token (`keywatch revoke TOKEN --reason ...`).",
    "budget_forecast": "At this rate the budget runs out early: check what drives the spend before it does.",
    "spend_anomaly": "Compare with recent deploys, jobs and traffic. If nothing explains it, "
    "treat it as a possible leak: `keywatch revoke TOKEN --reason ...`.",
    "leak_suspected": "Treat the key as compromised.",
    "token_expiring": "Create the replacement token and roll it out before the expiry.",
    "token_unused": "If nothing needs this token any more, revoke it.",
    "rotation_due": "Rotate: create a new token, roll it out, then revoke this one.",
    "provider_down": "Check the relay's status and keywatch's admin token for it. Its per-token "
    "alerts are held (neither fire nor resolve) until it answers again.",
}

_LEAK_NEXT_STEPS = (
    "1. Confirm: look at the token's recent client IPs, models and request log at the relay.\n"
    "2. Keep it disabled; issue a replacement token and roll it out.\n"
    "3. Find where the key leaked (repositories, logs, client bundles, CI) and remove it.\n"
    "4. Delete the old token once nothing legitimate uses it; note the incident."
)


def render(
    group: AlertGroup, reason: str, settings: Settings | Notify, *, now: float | None = None
) -> tuple[str, str]:
    notify = settings.notify if isinstance(settings, Settings) else settings
    return _title(group), _body(group, reason, notify, now)


def notify_type_for(group: AlertGroup) -> str:
    """Apprise NotifyType: failure for critical/security, warning, info; success when resolved."""
    if not group.firing:
        return "success"
    top = max(severity_rank(a.severity) for a in group.firing)
    return (
        "failure"
        if top >= severity_rank("critical")
        else "warning"
        if top == severity_rank("warning")
        else "info"
    )


def severity_for(group: AlertGroup) -> Severity:
    """The outbox row's severity, which decides whether it may ever be given up: the highest among
    firing *and* resolved alerts — the all-clear for a critical alert matters as much as the alarm."""
    alerts = (*group.firing, *group.resolved)
    return max((a.severity for a in alerts), key=severity_rank, default="info")


def _ordered(alerts: Iterable[Alert]) -> list[Alert]:
    return sorted(alerts, key=lambda a: (-severity_rank(a.severity), a.rule, a.fingerprint))


def _title(group: AlertGroup) -> str:
    alerts = _ordered(group.firing or group.resolved)
    rules = list(dict.fromkeys(a.rule for a in alerts))
    if group.firing:
        head = f"[FIRING:{len(group.firing)}]"
    else:
        head = "[RESOLVED]" if len(group.resolved) == 1 else f"[RESOLVED:{len(group.resolved)}]"
    title = f"{head} {', '.join(rules)} · {_subject(alerts)}"
    done = [r for r in dict.fromkeys(a.annotations.get("response", "") for a in group.firing) if r]
    if done:
        title += " — " + "; ".join(done)
    return title


def _subject(alerts: list[Alert]) -> str:
    def one(label: str, plural: str) -> str:
        values = sorted({a.labels.get(label, "") for a in alerts} - {""})
        return values[0] if len(values) == 1 else f"{len(values)} {plural}" if values else ""

    provider, token = one("provider", "providers"), one("token", "tokens")
    return "/".join(p for p in (provider, token) if p) or "keywatch"


def _body(group: AlertGroup, reason: str, notify: Notify, now: float | None) -> str:
    lines: list[str] = []
    if group.firing:
        lines.append(f"Firing ({len(group.firing)}):")
        for alert in _ordered(group.firing):
            lines += _firing_lines(alert, notify, now)
    if group.resolved:
        if lines:
            lines.append("")
        lines.append(f"Resolved ({len(group.resolved)}):")
        for alert in _ordered(group.resolved):
            lines += _resolved_lines(alert, notify)
    lines += ["", f"Sent because: {_REASONS.get(reason, reason)} ({reason}). Group {group.key}."]
    return "\n".join(lines)


def _heading(alert: Alert) -> str:
    where = "/".join(p for p in (alert.labels.get("provider", ""), alert.labels.get("token", "")) if p)
    extra = " ".join(
        f"{k}={v}" for k, v in sorted(alert.labels.items()) if k not in ("provider", "token", "rule")
    )
    return " ".join(p for p in (f"* {alert.rule} [{alert.severity}]", where, extra) if p)


def _firing_lines(alert: Alert, notify: Notify, now: float | None) -> list[str]:
    lines = [_heading(alert), f"  {alert.summary}"]
    facts = [f"value: {alert.value:g}"]
    facts += [f"{k}: {_fact(k, v)}" for k, v in sorted(alert.annotations.items()) if k not in _PLACED and v]
    lines.append("  " + " · ".join(facts))
    since = alert.firing_since if alert.firing_since is not None else alert.active_since
    for_how_long = f" (for {_duration(now - since)})" if now is not None and now >= since else ""
    lines.append(f"  firing since {_when(since)}{for_how_long}")
    if alert.annotations.get("description"):
        lines.append(f"  {alert.annotations['description']}")
    if alert.annotations.get("response"):
        lines.append(f"  done: {alert.annotations['response']}")
    what = alert.annotations.get("action") or _WHAT_TO_DO.get(alert.rule)
    if what:
        lines.append(f"  what to do: {what}")
    steps = alert.annotations.get("next_steps") or (
        _LEAK_NEXT_STEPS if alert.rule == "leak_suspected" else ""
    )
    if steps:
        lines.append("  next steps:")
        lines += [f"    {s}" for s in steps.splitlines()]
    link = _grafana(alert.labels, notify)
    if link:
        lines.append(f"  Grafana: {link}")
    return lines


def _resolved_lines(alert: Alert, notify: Notify) -> list[str]:
    lines = [_heading(alert)]
    if alert.resolved_at is not None:
        since = alert.firing_since if alert.firing_since is not None else alert.active_since
        lines.append(
            f"  resolved {_when(alert.resolved_at)} after {_duration(alert.resolved_at - since)}"
            f" (firing since {_when(since)})"
        )
    else:
        lines.append("  resolved")
    link = _grafana(alert.labels, notify)
    if link:
        lines.append(f"  Grafana: {link}")
    return lines


def _grafana(labels: Mapping[str, str], notify: Notify) -> str:
    if not notify.grafana_url:
        return ""
    query = {f"var-{k}": labels[k] for k in ("provider", "token") if labels.get(k)}
    url = notify.grafana_url.rstrip("/") + GRAFANA_TOKEN_DASHBOARD
    return f"{url}?{urlencode(query)}" if query else url


def _fact(key: str, value: str) -> str:
    """Epoch-second annotations (`crossing_at`, `onset_ts`) read better as times."""
    if key.endswith(("_at", "_ts")):
        try:
            return _when(float(value))
        except ValueError:
            pass
    return value


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(ts))


def _duration(seconds: float) -> str:
    s = max(0, int(seconds))
    days, rest = divmod(s, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h" if hours else f"{days}d"
    if hours:
        return f"{hours}h {minutes}m" if minutes else f"{hours}h"
    return f"{minutes}m" if minutes else f"{secs}s"
