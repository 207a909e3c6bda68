"""Durations refuse what nothing can use (issue 9, item 13): over 100 years is "too long"
everywhere parse_duration is used, and the config says so on one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from monitor.config import ConfigError, load_settings
from monitor.durations import MAX_DURATION_SECONDS, check_seconds, parse_duration


@pytest.mark.parametrize("text", ["99999999999w", "36501d", "5300w", "9" * 40, "99999999999999999999s"])
def test_absurd_durations_are_refused_as_too_long(text: str) -> None:
    with pytest.raises(ValueError, match="too long"):
        parse_duration(text)


def test_a_century_is_the_longest_duration() -> None:
    assert parse_duration("36500d") == MAX_DURATION_SECONDS == check_seconds(MAX_DURATION_SECONDS)
    with pytest.raises(ValueError, match="too long"):
        check_seconds(MAX_DURATION_SECONDS + 1)
    with pytest.raises(ValueError, match="invalid"):
        check_seconds(float("nan"))


def test_duration_text_longer_than_any_real_one_is_refused_before_parsing() -> None:
    with pytest.raises(ValueError, match="characters"):
        parse_duration("1" * 10_000 + "s")


def test_config_poll_interval_too_long_is_a_one_line_config_error(tmp_path: Path) -> None:
    cfg = tmp_path / "kw.yaml"
    cfg.write_text(
        "providers:\n  - name: lz\n    kind: laozhang\n    base_url: https://relay.example.com\n"
        "    admin_token: sk-x\n    poll_interval: 99999999999w\n"
    )
    with pytest.raises(ConfigError) as info:
        load_settings(cfg, env={})
    message = str(info.value)
    assert message.startswith("config error: providers[0].poll_interval: ") and "too long" in message
    assert "\n" not in message
