"""The words keywatch hands people with a leak: the product guide's playbook, made specific."""

from __future__ import annotations

from datetime import UTC, datetime

from alerts.model import Finding
from alerts.response.quarantine import Decision
from monitor.tokens import naming_labels

__all__ = ["auto_revoke_paused_finding", "leak_playbook", "replacement_name"]


def replacement_name(token: str, *, now: float | None = None) -> str:
    """The next name under `[env]-[project]-[purpose]-[date]`, dated this month."""
    month = datetime.fromtimestamp(now, UTC) if now is not None else datetime.now(UTC)
    stamp = month.strftime("%Y-%m")
    labels = naming_labels(token)
    if labels is None:
        return f"<env>-<project>-<purpose>-{stamp} (the old name {token!r} does not follow the convention)"
    parts = token.split("-")
    return "-".join([*parts[:-2], stamp])


def leak_playbook(
    token: str, decision: Decision, *, now: float | None = None, restorable: bool = False
) -> str:
    """`restorable`: the quarantine disabled the key (it was not deleted), so it can be undone."""
    first = {
        "done": "1. Revoked: keywatch quarantined the token.",
        "pending_verification": "1. Revoked at the relay; keywatch keeps checking that the key is refused.",
        "dry_run": "1. Revoke the token now (dry run: keywatch did not): `keywatch revoke "
        f"{token} --reason leak`.",
        "blocked": f"1. Decide now: the token is protected, keywatch did not revoke it. `keywatch revoke {token} --reason leak`.",
    }.get(decision.state, f"1. Revoke the token now: `keywatch revoke {token} --reason leak`.")
    return "\n".join(
        [
            first,
            f"2. Check the usage records: `keywatch history {token} --since 48h` and the relay's logs.",
            "3. Assess the impact: unusual calls, models and client IPs above, cost since the onset, data exposed.",
            f"4. Create a replacement token, e.g. {replacement_name(token, now=now)}, with an IP whitelist and limits.",
            "5. Update the applications that used the old key, then confirm the old one stays unused.",
            *(
                [
                    f"If this was a false alarm: `keywatch restore {token} --reason '<why>'` re-enables the key "
                    "(audited, verified at the relay, announced here)."
                ]
                if decision.quarantined and restorable
                else []
            ),
        ]
    )


def auto_revoke_paused_finding(provider: str, cap: int) -> Finding:
    return Finding(
        rule="auto_revoke_paused",
        labels={"provider": provider},
        severity="critical",
        value=float(cap),
        summary=f"automatic quarantine paused: {cap} tokens were quarantined within the hour "
        "(response.max_per_hour); further leaks are only alerted until a human looks",
        annotations={
            "action": "Review the recent quarantines (keywatch alerts, the audit trail) before anything else."
        },
    )
