"""Money in messages keeps the digits that carry meaning: cents from a dollar up, three
significant digits below, and "$0" only for nothing at all."""

from __future__ import annotations

import pytest

from alerts.detection.anomaly import AnomalyResult, anomaly_finding
from monitor.money import usd
from monitor.settings import AnomalyRule


@pytest.mark.parametrize(
    ("amount", "text"),
    [
        (0.0, "$0"),
        (-0.0, "$0"),
        (1.0, "$1.00"),
        (1.456, "$1.46"),
        (1234.567, "$1,234.57"),
        (0.18234, "$0.182"),  # a small baseline keeps its size
        (0.0046, "$0.0046"),
        (0.000012345, "$0.0000123"),
        (0.5, "$0.50"),  # never fewer than two decimals
        (0.1, "$0.10"),
        (0.0999999, "$0.10"),
        (0.9996, "$1.00"),  # rounds up to a dollar: said as dollars
        (0.99949, "$0.999"),
        (-0.25, "-$0.25"),
        (-3.5, "-$3.50"),
    ],
)
def test_usd_keeps_meaningful_digits(amount: float, text: str) -> None:
    assert usd(amount) == text


def test_only_exactly_zero_reads_as_zero() -> None:
    assert usd(1e-9) != "$0" and usd(1e-9).startswith("$0.000000001")


def test_the_anomaly_notice_says_what_the_token_usually_spends() -> None:
    # The demo's busy token at 8x its usual rate once read "expected $0.00/h".
    result = AnomalyResult(
        score=9.3,
        expected=0.182,
        observed=1.46,
        impact_usd=1.28,
        impact_pct=711.0,
        requests=120,
        tier="seasonal",
        fire=True,
        window=3600.0,
    )
    finding = anomaly_finding(result, provider="demo", token="dev-x", rule=AnomalyRule())
    assert finding is not None
    assert finding.summary.startswith("spending $1.46/h, expected $0.182/h")
