from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from alerts.detection.rules import hygiene_findings
from alerts.offline.audit import (
    ADVICE,
    DIGEST_TAG,
    FINDINGS,
    AuditFinding,
    DigestSchedule,
    audit,
    digest_notify_type,
    naming_problem,
    render_digest,
    temporary_hint,
)
from monitor.model import TokenLimits
from monitor.policy import PolicyBook
from monitor.secret import Secret
from monitor.settings import Budget, ProviderSettings, Settings, TokenPolicy
from monitor.store.db import open_engine
from monitor.tokens import TokenState

DAY = 86400.0
NOW = 1_795_737_600.0  # 2026-11-27 00:00 UTC

SETTINGS = Settings(
    providers=(
        ProviderSettings(
            name="lz",
            kind="laozhang",
            base_url="https://relay.example.com",
            admin_token=Secret("admin"),
            keys={
                "prod-old-api-2025-01": Secret("sk-old"),
                "prod-paused-api-2026-10": Secret("sk-paused"),
                "prod-gone-api-2025-06": Secret("sk-gone"),
                "prod-webapp-api-2026-10": Secret("sk-live"),
            },
        ),
        ProviderSettings(
            name="nl", kind="oneapi", base_url="https://one.example.com", admin_token=Secret("admin")
        ),
        ProviderSettings(
            name="oa", kind="openai", base_url="https://api.openai.com", admin_token=Secret("admin")
        ),
    ),
    tokens=(
        TokenPolicy(match="prod-*", protected=True),  # prod budgets come from the relay's limits here
        TokenPolicy(match="dev-*", budget=Budget(monthly_usd=10)),
        TokenPolicy(match="test-*", budget=Budget(monthly_usd=50)),
    ),
)
POLICIES = PolicyBook(SETTINGS.tokens)


def token(name: str = "prod-webapp-api-2026-10", **kw: Any) -> TokenState:
    """A clean production token: whitelisted, limited, well named, recently used, with an expiry."""
    base: dict[str, Any] = dict(
        pk=None,
        provider="lz",
        token_id=f"key_{name}",
        name=name,
        status="active",
        first_seen=NOW - 30 * DAY,
        last_seen=NOW,
        created_at=NOW - 30 * DAY,
        last_used_at=NOW - 3600,
        expires_at=NOW + 200 * DAY,
        limits=TokenLimits(daily_usd=50.0, monthly_usd=500.0),
        ip_whitelist=("203.0.113.0/24",),
    )
    base.update(kw)
    return TokenState(**base)


def run(*states: TokenState) -> list[AuditFinding]:
    return audit(states, SETTINGS, POLICIES, now=NOW)


def test_a_clean_prod_token_has_no_findings() -> None:
    assert run(token()) == []


CASES: list[tuple[str, TokenState, str, str]] = [
    # (case id, token, the one finding expected, a piece of its detail)
    (
        "unused-since",
        token(last_used_at=NOW - 47 * DAY),
        "unused",
        "last used 47 days ago (2026-10-11)",
    ),
    (
        "unused-never",
        token(status="unused", last_used_at=None, created_at=NOW - 40 * DAY),
        "unused",
        "never used; created 2026-10-18, 40 days ago",
    ),
    (
        "rotation-prod",
        token(created_at=NOW - 360 * DAY),
        "rotation_due",
        "created 2025-12-02, 360 days ago; prod tokens rotate every 90 days",
    ),
    (
        "rotation-dev",
        token("dev-webapp-api-2026-05", created_at=NOW - 200 * DAY, ip_whitelist=()),
        "rotation_due",
        "200 days ago; tokens outside prod rotate every 180 days",
    ),
    ("expiring", token(expires_at=NOW + 9 * DAY), "expiring", "expires 2026-12-06 00:00 UTC, in 9 days"),
    ("expiring-hours", token(expires_at=NOW + 5 * 3600), "expiring", "in 5 hours"),
    (
        "no-expiry-env",
        token("test-webapp-api-2026-11", expires_at=None, ip_whitelist=()),
        "no_expiry",
        "temporary by its name (env 'test') but never expires",
    ),
    (
        "no-expiry-purpose",
        token("dev-search-poc2-2026-11", expires_at=None, ip_whitelist=()),
        "no_expiry",
        "(purpose 'poc2')",
    ),
    (
        "no-expiry-purpose-words",
        token("dev-search-load_experiment-2026-11", expires_at=None, ip_whitelist=()),
        "no_expiry",
        "(purpose 'load_experiment')",
    ),
    (
        "naming",
        token("prod-webapp-api", provider="lz"),
        "naming",
        "'prod-webapp-api' is off the [env]-[project]-[purpose]-[YYYY-MM] convention: "
        "it does not end in a -YYYY-MM date",
    ),
    ("naming-parts", token("prod-webapp-2026-01"), "naming", "needs an env, a project and a purpose"),
    (
        "no-ip-whitelist",
        token(ip_whitelist=()),
        "no_ip_whitelist",
        "production token with no IP whitelist",
    ),
    (
        "no-limits",
        token(limits=TokenLimits()),
        "no_limits",
        "no daily or monthly limit at the relay and its policy 'prod-*' sets no budget",
    ),
    (
        "no-limits-unlimited-no-policy",
        token("stage-webapp-api-2026-11", provider="nl", limits=TokenLimits(unlimited=True)),
        "no_limits",
        "unlimited quota at the relay and no tokens[] policy in the config matches it",
    ),
    (
        "no-limits-openai",
        token(provider="oa", ip_whitelist=(), limits=TokenLimits()),  # no per-key allowlist at OpenAI
        "no_limits",
        "OpenAI keys carry no spending limit",
    ),
    (
        "revoked-key",
        token("prod-old-api-2025-01", status="revoked", created_at=NOW - 700 * DAY, limits=TokenLimits()),
        "revoked_key_configured",
        "status revoked, but providers[lz].keys still holds a key for it",
    ),
    (
        "expired-key",
        token("prod-gone-api-2025-06", status="expired", expires_at=NOW - DAY, ip_whitelist=()),
        "revoked_key_configured",
        "status expired",
    ),
    (
        "disabled-key",
        token("prod-paused-api-2026-10", status="disabled"),
        "revoked_key_configured",
        "status disabled",
    ),
]


@pytest.mark.parametrize(("state", "finding", "detail"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_each_finding(state: TokenState, finding: str, detail: str) -> None:
    found = run(state)
    assert [f.finding for f in found] == [finding], found
    assert detail in found[0].detail
    assert (found[0].token, found[0].provider) == (state.name, state.provider)


@pytest.mark.parametrize(
    "state",
    [
        token(last_used_at=NOW - 29 * DAY),  # unused.after is 30d
        token(created_at=NOW - 89 * DAY),  # rotation.prod is 90d
        token("dev-webapp-api-2026-07", created_at=NOW - 179 * DAY, ip_whitelist=()),  # default 180d
        token(expires_at=NOW + 15 * DAY),  # warn_before is 14d
        token("dev-webapp-template-2026-11", expires_at=None),  # a word, not a substring
        token("prod-demo-api-2026-11", expires_at=None),  # the project is not read
        token("dev-webapp-api-2026-11", ip_whitelist=()),  # dev tokens need no whitelist
        token(limits=TokenLimits(remain_usd=12.0)),  # a finite one-api quota is a limit
        token(limits=TokenLimits(daily_requests=1000)),
        token("dev-webapp-api-2026-11", limits=TokenLimits()),  # budget from config
        token("prod-webapp-api-2026-10", status="active"),  # live token: its configured key is fine
        token("prod-old-api-2025-01", provider="nl", status="revoked"),  # the key is lz's, not nl's
        token("prod-other-api-2025-01", status="revoked", limits=TokenLimits(), ip_whitelist=()),
        token("prod-x-api-2025-01", status="deleted", created_at=NOW - 900 * DAY, last_used_at=None),
    ],
    ids=lambda s: f"{s.provider}/{s.name}/{s.status}",
)
def test_no_finding(state: TokenState) -> None:
    assert run(state) == []


def test_revoked_token_reports_only_its_configured_key() -> None:
    """A revoked token is a mess by every other measure too; only the stale key is worth saying."""
    state = token(
        "prod-old-api-2025-01",
        status="revoked",
        created_at=NOW - 700 * DAY,
        last_used_at=None,
        expires_at=None,
        limits=TokenLimits(),
        ip_whitelist=(),
    )
    assert run(state) == [
        AuditFinding(
            "prod-old-api-2025-01",
            "lz",
            "revoked_key_configured",
            "status revoked, but providers[lz].keys still holds a key for it",
        )
    ]


def test_disabled_tokens_still_get_setup_findings_but_not_time_based_ones() -> None:
    state = token("Paused Key", status="disabled", created_at=NOW - 400 * DAY, last_used_at=NOW - 90 * DAY)
    assert [f.finding for f in run(state)] == ["naming"]


def test_a_messy_token_gets_every_finding_in_display_order() -> None:
    state = token(
        "prod-webapp-tmp-2025-01",
        created_at=NOW - 120 * DAY,
        last_used_at=None,
        expires_at=None,
        limits=TokenLimits(),
        ip_whitelist=(),
    )
    other = token("scratch test key", provider="nl", limits=TokenLimits(daily_usd=1.0), ip_whitelist=())
    found = run(other, state)
    assert [(f.token, f.finding) for f in found] == [
        ("prod-webapp-tmp-2025-01", "no_ip_whitelist"),
        ("prod-webapp-tmp-2025-01", "no_limits"),
        ("prod-webapp-tmp-2025-01", "rotation_due"),
        ("prod-webapp-tmp-2025-01", "no_expiry"),
        ("prod-webapp-tmp-2025-01", "unused"),
        ("scratch test key", "naming"),
    ]
    assert [f.severity for f in found] == ["warning", "warning", "info", "info", "info", "info"]
    assert found[3].detail == "temporary by its name (purpose 'tmp') but never expires"
    assert set(FINDINGS) == set(ADVICE)


def test_off_convention_names_are_temporary_by_any_word() -> None:
    assert run(token("demo key", expires_at=None)) == [
        AuditFinding(
            "demo key", "lz", "no_expiry", "temporary by its name (the word 'demo') but never expires"
        ),
        AuditFinding(
            "demo key",
            "lz",
            "naming",
            "'demo key' is off the [env]-[project]-[purpose]-[YYYY-MM] convention: "
            "it does not end in a -YYYY-MM date",
        ),
    ]
    assert temporary_hint("ci-experiments-2026-01") == "the word 'experiments'"
    assert temporary_hint("trial-webapp-api-2026-01") == "env 'trial'"
    assert temporary_hint("prod-webapp-temporary_fix-2026-01") == "purpose 'temporary_fix'"
    assert temporary_hint("prod-webapp-contemporary-2026-01") is None
    assert temporary_hint("industrial-epoch-key") is None
    assert temporary_hint("prod-demo-api-2026-01") is None


def test_naming_problem_says_what_is_wrong() -> None:
    assert naming_problem("prod-webapp-api-2024-01") is None
    assert naming_problem("Prod-WebApp-API-2024-01") is None  # the convention is case-insensitive
    assert naming_problem("my key 2024-01") == "it does not end in a -YYYY-MM date"
    assert naming_problem("prod webapp-api-2024-01") == "use only letters, digits, '-' and '_'"
    assert naming_problem("prod--api-2024-01") == "it needs an env, a project and a purpose before the date"
    assert naming_problem("prod_x-webapp-api-2024-01") == "env and project take letters and digits only"


def test_time_based_findings_agree_with_the_hygiene_rules() -> None:
    states = [
        token(f"dev-app{i}-api-2026-01", created_at=NOW - c * DAY, last_used_at=u, expires_at=e, status=st)
        for i, (c, u, e, st) in enumerate(
            [
                (10, None, None, "unused"),
                (31, None, NOW + 13 * DAY, "active"),
                (30, None, NOW + 14 * DAY, "unused"),
                (200, NOW - 30 * DAY, NOW + 14 * DAY + 1, "active"),
                (180, NOW - 29 * DAY, NOW - 1, "active"),
                (181, NOW - 60 * DAY, NOW + DAY, "disabled"),
                (500, None, NOW + DAY, "exhausted"),
            ]
        )
    ] + [token(created_at=NOW - 90 * DAY), token("prod-webapp-api-2026-08", created_at=NOW - 89.9 * DAY)]
    names = {"token_unused": "unused", "rotation_due": "rotation_due", "token_expiring": "expiring"}
    from_rules = {
        (f.labels["token"], names[f.rule]) for f in hygiene_findings(states, SETTINGS.rules, now=NOW)
    }
    from_audit = {(f.token, f.finding) for f in run(*states) if f.finding in names.values()}
    assert from_audit == from_rules
    assert len(from_rules) == 8


def test_to_json_has_exactly_the_contract_keys() -> None:
    (found,) = run(token(ip_whitelist=()))
    assert found.to_json() == {
        "token": "prod-webapp-api-2026-10",
        "provider": "lz",
        "finding": "no_ip_whitelist",
        "detail": "production token with no IP whitelist: anyone holding the key can use it",
    }
    assert json.loads(json.dumps([found.to_json()])) == [found.to_json()]


# -- the digest -------------------------------------------------------------------------------


def test_digest_counts_caps_and_advises() -> None:
    findings = [AuditFinding(f"bad name {i:02d}", "lz", "naming", f"detail {i:02d}") for i in range(13)]
    findings += [
        AuditFinding("bad name 00", "lz", "no_limits", "no daily or monthly limit at the relay"),
        AuditFinding("prod-a-api-2026-01", "nl", "no_limits", "unlimited quota at the relay"),
        AuditFinding("prod-b-api-2026-01", "lz", "expiring", "expires 2026-12-06 00:00 UTC, in 9 days"),
    ]
    title, body = render_digest(findings, now=NOW)
    assert title == "keywatch audit: 16 findings on 15 tokens"
    lines = body.splitlines()
    assert lines[0] == "Token hygiene audit, 2026-11-27 00:00 UTC: 16 findings on 15 tokens."
    assert lines[2:5] == ["  expiring   1", "  no_limits  2", "  naming     13"]
    assert f"expiring (1): {ADVICE['expiring']}" in lines
    assert "  * lz/prod-b-api-2026-01: expires 2026-12-06 00:00 UTC, in 9 days" in lines
    assert "no_limits (2): Give every token a budget: per environment, e.g. dev $10/month, test $50, " in body
    assert "naming (13): Name tokens [env]-[project]-[purpose]-[date], e.g. prod-webapp-api-2024-01." in lines
    assert "  * lz/bad name 09: detail 09" in lines
    assert "  * lz/bad name 10: detail 10" not in lines
    assert "  ... and 3 more" in lines
    # sections in display order: expiring before no_limits before naming
    assert body.index("expiring (1)") < body.index("no_limits (2)") < body.index("naming (13)")
    assert digest_notify_type(findings) == "warning"
    assert DIGEST_TAG == "audit"


def test_digest_cap_is_adjustable_and_an_empty_audit_says_so() -> None:
    findings = [AuditFinding(f"t{i}", "lz", "unused", "never used") for i in range(3)]
    _, body = render_digest(findings, now=NOW, limit=2)
    assert "  ... and 1 more" in body
    assert digest_notify_type(findings) == "info"
    title, body = render_digest([], now=NOW)
    assert title == "keywatch audit: no findings"
    assert "no findings" in body


def test_digest_of_a_real_audit_reads_well() -> None:
    title, body = render_digest(run(token(ip_whitelist=()), token("demo key", expires_at=None)), now=NOW)
    assert title == "keywatch audit: 3 findings on 2 tokens"
    assert "  * lz/prod-webapp-api-2026-10: production token with no IP whitelist" in body
    assert "no_expiry (1): Give temporary tokens an expiry date" in body


# -- the schedule -----------------------------------------------------------------------------


def test_schedule_is_due_weekly_across_restarts(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'kw.db'}"
    engine = open_engine(url)  # the daemon's own database, migrations and all
    try:
        schedule = DigestSchedule(engine)
        assert schedule.load() is None
        assert schedule.due(NOW)  # never sent: due at once
        schedule.save(NOW)
        assert not schedule.due(NOW + DAY)
    finally:
        engine.dispose()

    # a restart: a new engine and a new schedule on the same file
    engine = open_engine(url)
    try:
        schedule = DigestSchedule(engine)
        assert schedule.load() == NOW
        assert schedule.next_due() == NOW + 7 * DAY
        assert not schedule.due(NOW + 7 * DAY - 1)
        assert schedule.due(NOW + 7 * DAY)
        schedule.save(NOW + 7 * DAY + 60)
        assert not schedule.due(NOW + 8 * DAY)
    finally:
        engine.dispose()

    engine = sa.create_engine(url)
    try:
        assert DigestSchedule(engine).load() == NOW + 7 * DAY + 60
        assert "audit_digest" in sa.inspect(engine).get_table_names()
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM audit_digest")).scalar_one() == 1
    finally:
        engine.dispose()


def test_schedule_interval_is_configurable(tmp_path: Path) -> None:
    engine = open_engine(f"sqlite:///{tmp_path / 'kw.db'}")
    try:
        schedule = DigestSchedule(engine, every=3600)
        schedule.save(NOW)
        assert not schedule.due(NOW + 3599)
        assert schedule.due(NOW + 3600)
        assert DigestSchedule(engine, name="other").due(NOW)  # independent rows
    finally:
        engine.dispose()


def test_findings_are_frozen() -> None:
    f = AuditFinding("t", "lz", "naming", "d")
    with pytest.raises(AttributeError):
        f.token = "u"  # type: ignore[misc]
    assert replace(f, token="u").token == "u"
