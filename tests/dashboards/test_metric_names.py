"""Every metric a dashboard panel, a dashboard variable or a Prometheus rule uses is one keywatch
exports (DESIGN §3.3 names are fixed: a dashboard must follow them, not the other way round)."""

from __future__ import annotations

import pytest

from tests.dashboards._support import (
    PROMETHEUS_SERIES,
    metric_names,
    panel_queries,
    rule_exprs,
    variable_queries,
)

SUFFIXES = ("_total", "_bucket", "_sum", "_count", "_created")


def used_metrics() -> dict[str, set[str]]:
    """Metric name -> where it is used."""
    used: dict[str, set[str]] = {}
    for q in panel_queries():
        for name in metric_names(q.expr):
            used.setdefault(name, set()).add(q.id)
    for v in variable_queries():
        for name in metric_names(v.selector):
            used.setdefault(name, set()).add(v.id)
    for alert, expr in rule_exprs().items():
        for name in metric_names(expr):
            used.setdefault(name, set()).add(f"rules.yml:{alert}")
    return used


def exported(name: str, known: frozenset[str]) -> bool:
    """A sample name is exported when it, or its family (without a counter/histogram suffix), is known."""
    return name in known or any(name.endswith(s) and name.removesuffix(s) in known for s in SUFFIXES)


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ('sum(keywatch_token_spend_usd{provider=~"$provider", window="day"})', {"keywatch_token_spend_usd"}),
        (
            "topk(10, sum by (provider, token) (rate(keywatch_token_spend_usd_total[$__rate_interval]))) * 3600",
            {"keywatch_token_spend_usd_total"},
        ),
        (
            "histogram_quantile(0.95, sum by (le) (rate(keywatch_poll_duration_seconds_bucket[5m])))",
            {"keywatch_poll_duration_seconds_bucket"},
        ),
        (
            "time() - keywatch_last_poll_success_timestamp_seconds > 900",
            {"keywatch_last_poll_success_timestamp_seconds"},
        ),
        (
            'a_total or on (provider) label_replace(0 * max by (provider) (b), "reason", "none", "", "")',
            {"a_total", "b"},
        ),
        ("sum(x) without (outcome) unless ignoring (le) y offset 5m > bool 1e3", {"x", "y"}),
        ('{__name__="ignored"} and z @ start()', {"z"}),
        ("sum(keywatch_alerts_firing) or vector(0)", {"keywatch_alerts_firing"}),
    ],
)
def test_metric_names_are_read_out_of_promql(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


def test_dashboards_and_rules_use_metrics() -> None:
    used = used_metrics()
    assert {n for n in used if n.startswith("keywatch_")} >= {
        "keywatch_token_spend_usd_total",
        "keywatch_token_budget_used_ratio",
        "keywatch_token_anomaly_score",
        "keywatch_alerts_firing",
        "keywatch_revocations_total",
        "keywatch_poll_duration_seconds_bucket",
        "keywatch_provider_up",
        "keywatch_auto_revoke_paused",
    }


def test_every_metric_used_is_one_keywatch_exports() -> None:
    from monitor.metrics import METRIC_NAMES  # the daemon's own list of the families it exports

    known = frozenset(METRIC_NAMES) | PROMETHEUS_SERIES
    missing = {name: sorted(where) for name, where in used_metrics().items() if not exported(name, known)}
    assert not missing, f"used but not exported by keywatch (monitor.metrics.METRIC_NAMES): {missing}"
