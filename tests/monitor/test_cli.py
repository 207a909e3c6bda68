"""The command line's conventions: global options before or after the command, help on every
command and option, the environment, the config search order, and a `--help` that loads none
of the daemon's libraries."""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
from pathlib import Path
from zoneinfo import ZoneInfo

import orjson
import pytest

from monitor import cli
from monitor.cli import build_parser, config_candidates, find_config, log_options, main
from monitor.ingest import ingest
from monitor.model import Observation, PollResult
from monitor.store import PollRun, UsageWriter, open_engine
from tests.e2e.procs import ROOT

# Loaded by the daemon, the store, the relays, the alert side and the config: `keywatch --help`
# and `--version` need none of them.
HEAVY = ("sqlalchemy", "sqlmodel", "httpx", "aiohttp", "apprise", "uvicorn", "starlette", "apscheduler",
         "pydantic", "yaml", "alerts", "monitor.app", "monitor.config", "monitor.store")  # fmt: skip

DAY = 86400.0
T0 = 1_780_000_000.0  # 2026-05-28, long before any test runs: the wall clock is far ahead


def _config(tmp_path: Path, extra: str = "") -> Path:
    cfg = tmp_path / "kw.yaml"
    cfg.write_text(
        f"database: sqlite:///{tmp_path / 'kw.db'}\nproviders:\n  - name: na\n    kind: newapi\n"
        f"    base_url: http://127.0.0.1:9\n    admin_token: sim-admin-token\n    user_id: 1\n{extra}"
    )
    return cfg


def _imported(*args: str, env: dict[str, str] | None = None) -> set[str]:
    run = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "monitor", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env=env,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip()
    # importtime lines: "import time: self | cumulative | <indent>module"
    return {
        line.rsplit("|", 1)[1].strip() for line in run.stderr.splitlines() if line.startswith("import time:")
    }


@pytest.mark.parametrize(
    "args", [("--help",), ("--version",), ("tokens", "--help"), ("silence", "add", "--help")]
)
def test_help_and_version_load_none_of_the_daemon(args: tuple[str, ...]) -> None:
    modules = _imported(*args)
    assert "monitor.cli" in modules  # the measurement sees our imports at all
    heavy = sorted(m for m in modules if m.split(".")[0] in HEAVY or m.startswith(HEAVY))
    assert heavy == []


# --- global options -------------------------------------------------------------------------
@pytest.mark.parametrize(
    "argv",
    [
        ["-c", "x.yaml", "--log-level", "debug", "--log-format", "json", "tokens", "--json"],
        ["tokens", "-c", "x.yaml", "--log-level", "debug", "--log-format", "json", "--json"],
        ["-c", "x.yaml", "tokens", "--log-level", "debug", "--json", "--log-format", "json"],
    ],
)
def test_global_options_go_before_or_after_the_command(argv: list[str]) -> None:
    args = build_parser().parse_args(argv)
    assert (args.command, args.config, args.log_level, args.log_format, args.json) == (
        "tokens",
        "x.yaml",
        "debug",
        "json",
        True,
    )


def test_global_options_after_a_nested_command() -> None:
    args = build_parser().parse_args(["silence", "list", "--all", "-c", "x.yaml", "--log-level", "ERROR"])
    assert (args.command, args.verb, args.all, args.config, args.log_level) == (
        "silence",
        "list",
        True,
        "x.yaml",
        "error",
    )
    args = build_parser().parse_args(["silence", "-c", "y.yaml", "expire", "3"])
    assert (args.config, args.id) == ("y.yaml", 3)


def test_an_option_given_before_the_command_is_not_reset_by_it() -> None:
    args = build_parser().parse_args(["-c", "x.yaml", "--log-level", "warning", "audit"])
    assert (args.config, args.log_level, args.log_format) == ("x.yaml", "warning", None)


def test_version_after_the_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["tokens", "--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.startswith("keywatch ")


def test_log_options_come_from_the_environment_when_not_given() -> None:
    parse = build_parser().parse_args
    env = {"KEYWATCH_LOG_LEVEL": "DEBUG", "KEYWATCH_LOG_FORMAT": "json"}
    assert log_options(parse(["tokens"]), env) == ("json", "debug")
    assert log_options(parse(["tokens", "--log-level", "error", "--log-format", "text"]), env) == (
        "text",
        "error",
    )
    assert log_options(parse(["tokens"]), {}) == ("text", "info")
    with pytest.raises(ValueError, match="KEYWATCH_LOG_LEVEL"):
        log_options(parse(["tokens"]), {"KEYWATCH_LOG_LEVEL": "loud"})


def test_keywatch_log_level_sets_the_level(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("KEYWATCH_LOG_LEVEL", "warning")
    assert main(["check-config", "-c", str(_config(tmp_path))]) == 0
    assert logging.getLogger().level == logging.WARNING
    monkeypatch.setenv("KEYWATCH_LOG_LEVEL", "chatty")
    with pytest.raises(SystemExit) as exit_:
        main(["check-config", "-c", str(_config(tmp_path))])
    assert exit_.value.code == 2 and "KEYWATCH_LOG_LEVEL" in capsys.readouterr().err


# --- help -----------------------------------------------------------------------------------
def _parsers(
    parser: argparse.ArgumentParser, path: str = "keywatch"
) -> list[tuple[str, argparse.ArgumentParser]]:
    out = [(path, parser)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helped = {a.dest for a in action._choices_actions if a.help}
            for name, child in action.choices.items():
                assert name in helped, f"{path} {name}: no help text"
                out += _parsers(child, f"{path} {name}")
    return out


def test_every_command_and_option_has_help() -> None:
    parsers = _parsers(build_parser())
    assert len(parsers) > 15
    for path, parser in parsers:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                continue
            assert action.help and action.help != argparse.SUPPRESS, (
                f"{path} {action.option_strings or action.dest}"
            )
        assert "DESIGN" not in parser.format_help() and "../" not in parser.format_help(), path


def test_every_command_has_a_handler() -> None:
    from alerts.offline.backtest import SIGNAL_SETS
    from monitor.app import command_handlers

    (commands,) = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    alert_side = command_handlers()
    assert set(commands.choices) == set(cli._COMMANDS) | set(alert_side)
    assert not set(cli._COMMANDS) & set(alert_side)
    assert cli.SIGNAL_SETS == SIGNAL_SETS


# --- the config file ------------------------------------------------------------------------
def test_config_search_order(tmp_path: Path) -> None:
    home, xdg, cwd = tmp_path / "home", tmp_path / "xdg", tmp_path / "cwd"
    assert config_candidates({"HOME": str(home)}, cwd) == [
        cwd / "keywatch.yaml",
        home / ".config/keywatch/keywatch.yaml",
        Path("/etc/keywatch/keywatch.yaml"),
    ]
    assert config_candidates({"HOME": str(home), "XDG_CONFIG_HOME": str(xdg)}, cwd)[1] == (
        xdg / "keywatch/keywatch.yaml"
    )
    # The XDG spec: a relative $XDG_CONFIG_HOME is ignored.
    assert config_candidates({"HOME": str(home), "XDG_CONFIG_HOME": "rel"}, cwd)[1] == (
        home / ".config/keywatch/keywatch.yaml"
    )
    places = [
        tmp_path / "a" / "keywatch.yaml",
        tmp_path / "b" / "keywatch.yaml",
        tmp_path / "c" / "keywatch.yaml",
    ]
    assert find_config(None, {}, places) is None
    for path in reversed(places):  # each file, once there, wins over those after it
        path.parent.mkdir()
        path.write_text("providers: []\n")
        assert find_config(None, {}, places) == path
    assert find_config(None, {"KEYWATCH_CONFIG": "env.yaml"}, places) == Path("env.yaml")
    assert find_config("named.yaml", {"KEYWATCH_CONFIG": "env.yaml"}, places) == Path("named.yaml")


def test_the_config_is_found_in_xdg_config_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    xdg = tmp_path / "xdg"
    (xdg / "keywatch").mkdir(parents=True)
    _config(tmp_path).rename(xdg / "keywatch" / "keywatch.yaml")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("KEYWATCH_CONFIG", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(xdg))
    assert main(["check-config"]) == 0
    assert f"config ok: {xdg / 'keywatch' / 'keywatch.yaml'}" in capsys.readouterr().out


def test_no_config_anywhere_says_where_it_looked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("KEYWATCH_CONFIG", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    if Path("/etc/keywatch/keywatch.yaml").exists():
        pytest.skip("this machine has a system-wide keywatch config")
    assert main(["tokens"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("config error: ") and err.count("\n") == 1
    for place in (
        tmp_path / "keywatch.yaml",
        tmp_path / "xdg/keywatch/keywatch.yaml",
        "/etc/keywatch/keywatch.yaml",
    ):
        assert str(place) in err
    assert "-c PATH" in err and "$KEYWATCH_CONFIG" in err


def test_config_schema_prints_the_json_schema(capsys: pytest.CaptureFixture[str]) -> None:
    from monitor import config

    if not hasattr(config, "json_schema"):
        pytest.skip("monitor.config.json_schema() has not landed yet")
    assert main(["config", "schema"]) == 0  # needs no config file
    assert json.loads(capsys.readouterr().out) == json.loads(json.dumps(config.json_schema()))


# --- keywatch tokens ------------------------------------------------------------------------
def _store_polls(tmp_path: Path, start: float, step: float, totals: tuple[float, ...], *, age: float) -> None:
    """A new-api token as the daemon stores it, polled every `step` seconds from `start`: the
    relay reports only a lifetime counter (`totals`), so its day and month spend come from
    keywatch's own history. `age`: how old the token was at `start`."""
    engine = open_engine(f"sqlite:///{tmp_path / 'kw.db'}")
    writer = UsageWriter(engine)
    states: dict = {}
    for i, total in enumerate(totals):
        now = start + i * step
        obs = [Observation("7", "dev-app-batch-2026-05", "active", created_at=start - age, total_usd=total)]
        cycle = ingest(
            states,
            PollResult(obs),
            provider="na",
            now=now,
            tz=ZoneInfo("UTC"),
            watching_since=start if i else None,
        )
        states = writer.write_cycle(cycle, PollRun("na", "newapi", now, now, True, True), {})
    engine.dispose()


def test_tokens_shows_day_and_month_spend_as_of_the_last_poll(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = _config(tmp_path, "tokens:\n  - match: '*'\n    budget: {daily_usd: 10}\n")
    _store_polls(tmp_path, T0, 60, (10.0, 12.5, 13.0), age=30 * DAY)  # long before the wall clock
    assert main(["-c", str(cfg), "tokens", "--json"]) == 0
    (row,) = orjson.loads(capsys.readouterr().out)
    assert (row["today_usd"], row["month_usd"], row["budget_used_pct"]) == (3.0, 3.0, 30.0)
    # The human table says how old the figures are.
    assert main(["-c", str(cfg), "tokens"]) == 0
    out = capsys.readouterr().out
    assert "dev-app-batch-2026-05" in out and "3.00" in out
    assert "na: figures as of its last poll, 2026-05-28T20:28:40Z (" in out and "days ago)" in out


def test_history_and_audit_judge_time_from_the_newest_poll_when_it_is_ahead(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The demo writes its history on a clock hours ahead of the real one: "--since 3h" means
    # the three hours before its last poll, not three hours before a wall clock that is behind.
    cfg = _config(tmp_path)
    _store_polls(tmp_path, 4_000_000_000.0, 5 * 3600, (1.0, 2.0, 3.0), age=200 * DAY)  # in 2096
    assert main(["-c", str(cfg), "history", "dev-app-batch-2026-05", "--since", "3h", "--json"]) == 0
    assert [r["cost_usd"] for r in orjson.loads(capsys.readouterr().out)] == [1.0]
    assert main(["-c", str(cfg), "audit", "--json"]) == 0
    findings = {r["finding"] for r in orjson.loads(capsys.readouterr().out)}
    assert "rotation_due" in findings  # 200 days old at its last poll (not created in the future)
