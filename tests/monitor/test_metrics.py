"""The hand-written exposition, read back by prometheus_client's own parser."""

from __future__ import annotations

import gzip

from prometheus_client.parser import text_string_to_metric_families

from monitor.metrics import METRIC_NAMES, Exposition, Family
from monitor.model import TokenLimits
from monitor.policy import PolicyBook
from monitor.settings import Budget, TokenPolicy
from monitor.spend import UsageMark
from monitor.tokens import TokenState


def state(name: str, **kw: object) -> TokenState:
    base: dict[str, object] = {
        "pk": 1,
        "provider": "lz",
        "token_id": "key_1",
        "name": name,
        "status": "active",
        "first_seen": 0.0,
        "last_seen": 0.0,
    }
    base.update(kw)
    return TokenState(**base)  # type: ignore[arg-type]


def samples(body: bytes) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    out = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(parsed: dict, name: str, **labels: str) -> float | None:
    return parsed.get((name, frozenset(labels.items())))


def test_token_series_parse_and_match_the_state() -> None:
    policies = PolicyBook([TokenPolicy(match="prod-*", budget=Budget(daily_usd=50.0))])
    exp = Exposition(policies)
    s = state(
        "prod-webapp-api-2024-01",
        mark=UsageMark(0.0, 12.5, 120.0, 40),
        spend_total_usd=321.25,
        requests_total=900,
        usage_known=True,
        limits=TokenLimits(monthly_usd=500.0),
        last_used_at=1_794_300_000.0,
        expires_at=1_800_000_000.0,
    )
    exp.set_tokens("lz", {"key_1": s})
    exp.set_score_source(lambda: {("lz", "key_1"): 2.5})
    parsed = samples(exp.render())
    tok = {"provider": "lz", "token": "prod-webapp-api-2024-01"}
    assert value(parsed, "keywatch_token_spend_usd_total", **tok) == 321.25
    assert value(parsed, "keywatch_token_requests_total", **tok) == 900
    assert value(parsed, "keywatch_token_spend_usd", window="day", **tok) == 12.5
    assert value(parsed, "keywatch_token_budget_usd", window="day", **tok) == 50.0  # config wins
    assert value(parsed, "keywatch_token_budget_usd", window="month", **tok) == 500.0  # relay limit fallback
    assert value(parsed, "keywatch_token_budget_used_ratio", window="month", **tok) == 0.24
    info = {"token_id": "key_1", "status": "active", "env": "prod", "project": "webapp", **tok}
    assert value(parsed, "keywatch_token_info", **info) == 1
    assert value(parsed, "keywatch_token_anomaly_score", **tok) == 2.5
    assert value(parsed, "keywatch_token_expiry_timestamp_seconds", **tok) == 1_800_000_000.0
    assert value(parsed, "keywatch_build_info", version=__import__("monitor").__version__) == 1


def test_unknown_usage_exports_no_fake_zero() -> None:
    exp = Exposition(PolicyBook([]))
    exp.set_tokens("lz", {"key_1": state("odd name", usage_known=False)})
    parsed = samples(exp.render())
    names = {name for name, _ in parsed}
    assert "keywatch_token_info" in names
    assert "keywatch_token_spend_usd_total" not in names
    assert "keywatch_token_spend_usd" not in names


def test_label_values_are_escaped() -> None:
    exp = Exposition(PolicyBook([]))
    exp.set_tokens("lz", {"key_1": state('we"ird\\name\nx', usage_known=True, spend_total_usd=1.0)})
    parsed = samples(exp.render())
    assert value(parsed, "keywatch_token_spend_usd_total", provider="lz", token='we"ird\\name\nx') == 1.0


def test_provider_health_histogram_and_contributed_families() -> None:
    exp = Exposition(PolicyBook([]))
    health = exp.health("lz")
    health.up, health.last_success = True, 1000.0
    health.errors["http_5xx"] = 3
    health.observe_duration(0.3)
    health.observe_duration(7.0)
    exp.add_source(
        lambda: [Family("keywatch_notifications_total", "counter", "n", [({"outcome": "sent"}, 4)])]
    )
    parsed = samples(exp.render())
    assert value(parsed, "keywatch_provider_up", provider="lz") == 1
    assert value(parsed, "keywatch_poll_errors_total", provider="lz", reason="http_5xx") == 3
    assert value(parsed, "keywatch_poll_duration_seconds_bucket", provider="lz", le="0.5") == 1
    assert value(parsed, "keywatch_poll_duration_seconds_bucket", provider="lz", le="+Inf") == 2
    assert value(parsed, "keywatch_poll_duration_seconds_count", provider="lz") == 2
    assert value(parsed, "keywatch_notifications_total", outcome="sent") == 4
    assert gzip.decompress(exp.render_gzip()) == exp.render()


def test_every_family_rendered_is_a_declared_metric_name() -> None:
    exp = Exposition(PolicyBook([]))
    exp.set_tokens("lz", {"key_1": state("dev-a-b-2026-01", usage_known=True, mark=UsageMark(0, 1, 1, 1))})
    exp.health("lz").observe_duration(1)
    families = {f.name for f in text_string_to_metric_families(exp.render().decode())}
    # the parser strips _total from counter family names
    declared = {n.removesuffix("_total") for n in METRIC_NAMES}
    assert families <= declared


def test_unchanged_tokens_reuse_their_rendered_lines() -> None:
    exp = Exposition(PolicyBook([]))
    s = state("dev-a-b-2026-01", usage_known=True, spend_total_usd=1.0)
    exp.set_tokens("lz", {"key_1": s})
    first = exp.render()
    exp.set_tokens("lz", {"key_1": s})
    assert exp.render() == first
    exp.set_tokens("lz", {"key_1": state("dev-a-b-2026-01", usage_known=True, spend_total_usd=2.0)})
    assert (
        value(samples(exp.render()), "keywatch_token_spend_usd_total", provider="lz", token="dev-a-b-2026-01")
        == 2.0
    )
