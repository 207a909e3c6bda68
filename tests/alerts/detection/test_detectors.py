"""Detection in the daemon: skipping quiet tokens changes nothing but the cost."""

from __future__ import annotations

import pytest

from alerts.detection import detectors
from alerts.detection.series import TokenHistory
from alerts.offline.backtest import read_input, run_backtest
from tests.alerts.offline.test_backtest import as_input, settings_for
from tests.alerts.scenarios import generate


def test_a_token_is_quiet_only_with_nothing_recent_and_no_wake_up_to_judge() -> None:
    h = TokenHistory(0.0)
    assert detectors.quiet(h, 10_000.0, 86_400.0)  # never used
    h.observe(1_000_000.0, 0.5, 3)
    assert not detectors.quiet(h, 1_000_000.0 + 3_600.0, 86_400.0)  # still in the hour window
    # out of every window, but its run began within the wake window: dormant_wake may still judge it
    assert not detectors.quiet(h, 1_000_000.0 + 7_200.0, 86_400.0)
    assert detectors.quiet(h, 1_000_000.0 + 90_000.0, 86_400.0)


@pytest.mark.slow
async def test_skipping_quiet_tokens_gives_the_same_alerts_and_scores(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sc = generate(seed=5, clean=4, days=16)
    data = as_input(sc.lines)
    real = detectors.quiet
    skipped = 0

    def counting(hist: TokenHistory, now: float, wake_window: float) -> bool:
        nonlocal skipped
        result = real(hist, now, wake_window)
        skipped += result
        return result

    monkeypatch.setattr(detectors, "quiet", counting)
    fast = await run_backtest(read_input(data), settings_for(sc))
    monkeypatch.setattr(detectors, "quiet", lambda *_: False)
    every = await run_backtest(read_input(data), settings_for(sc))
    assert skipped > 1000  # the scenario has quiet tokens: the skip was exercised
    assert fast == every
    assert any(r["rule"] in ("spend_anomaly", "leak_suspected") for r in fast)
