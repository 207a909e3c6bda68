"""`keywatch backtest`: the daemon's engine on a simulated clock, on our own labelled fleets and
(where it is beside the checkout) the shared detection sample, scored by its own scorer."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from alerts.offline.backtest import read_input, run_backtest, spend_only
from monitor.cli import main
from monitor.secret import Secret
from monitor.settings import ProviderSettings, Response, Settings, TokenPolicy
from tests.alerts.scenarios import Scenario, generate
from tests.alerts.scoring import score

SHARED = Path(__file__).resolve().parents[4] / "shared" / "detection"
CONFIG = (
    "providers:\n  - {name: lz, kind: laozhang, base_url: 'http://x.invalid', admin_token: unused-token, poll_interval: 15m}\n"
    "response: {auto_revoke: true}\n"
)


def settings_for(sc: Scenario, *, protect: tuple[str, ...] = ()) -> Settings:
    provider = ProviderSettings(
        name="lz", kind="laozhang", base_url="http://x.invalid", admin_token=Secret(""), poll_interval=900
    )
    policies = tuple(TokenPolicy(match=k, business_hours=v) for k, v in sc.business_hours.items())
    return Settings(
        providers=(provider,), tokens=policies, response=Response(auto_revoke=True, protect=protect)
    )


def as_input(lines: list[dict[str, object]]) -> list[bytes]:
    return [orjson.dumps({**line, "provider": "lz"}) for line in lines]


def events(sc: Scenario) -> dict[str, dict[str, object]]:
    """The labelled events whose onset lies in the generated days, with a day to act in."""
    ev = sc.truth["events"]
    assert isinstance(ev, dict)
    last = max(str(line["ts"]) for line in sc.lines if "ts" in line)[:10]
    return {t: e for t, e in ev.items() if str(e["onset"])[:10] < last}


@pytest.fixture(scope="module")
def fleet() -> Scenario:
    return generate(seed=5, clean=6, days=18)


@pytest.mark.slow
async def test_every_leak_is_quarantined_and_nothing_else(fleet: Scenario) -> None:
    rows = await run_backtest(read_input(as_input(fleet.lines)), settings_for(fleet))
    leaks = {t for t, e in events(fleet).items() if e["type"] == "leak"}
    quarantined = {r["token"] for r in rows if r["action"] == "quarantine"}
    assert leaks and quarantined == leaks
    firing = {(r["rule"], r["token"]) for r in rows if r["state"] == "firing"}
    assert all(("leak_suspected", t) in firing for t in leaks)
    spikes = [t for t, e in events(fleet).items() if e["type"] == "spike"]
    caught = [t for t in spikes if ("spend_anomaly", t) in firing or ("leak_suspected", t) in firing]
    assert len(caught) >= len(spikes) - 1  # a one-hour x6 spike is at the edge of `for: 2`


@pytest.mark.slow
async def test_protected_tokens_are_alerted_not_quarantined(fleet: Scenario) -> None:
    leaks = sorted(t for t, e in events(fleet).items() if e["type"] == "leak")
    protect = (leaks[0],)
    rows = await run_backtest(read_input(as_input(fleet.lines)), settings_for(fleet, protect=protect))
    on_protected = [
        r for r in rows if r["token"] == leaks[0] and r["rule"] == "leak_suspected" and r["state"] == "firing"
    ]
    assert on_protected and all(r["action"] == "none" for r in on_protected)


@pytest.mark.slow
async def test_a_benign_month_quarantines_nothing() -> None:
    sc = generate(seed=6, clean=6, days=18)
    attacked = {t for t, e in events(sc).items() if e["type"] == "leak"}
    benign = [line for line in sc.lines if line["token"] not in attacked]
    rows = await run_backtest(read_input(as_input(benign)), settings_for(sc))
    assert [r for r in rows if r["action"] != "none"] == []
    assert not [r for r in rows if r["rule"] == "leak_suspected"]


def test_cli_writes_the_design_output_format(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sc = generate(seed=7, clean=3, days=4)
    source = tmp_path / "usage.jsonl.gz"
    with gzip.open(source, "wb") as f:
        f.writelines(line + b"\n" for line in as_input(sc.lines))
    out = tmp_path / "alerts.jsonl"
    config = tmp_path / "bt.yaml"
    config.write_text(CONFIG)
    assert main(["-c", str(config), "backtest", "--input", str(source), "--output", str(out)]) == 0
    rows = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    design = {"ts", "rule", "provider", "token", "severity", "state", "value", "action"}
    assert rows and all(design <= set(r) and r["signals"] == "all" for r in rows)
    assert {r["state"] for r in rows} <= {"firing", "resolved"}
    assert "usage lines replayed" in capsys.readouterr().err


def test_spend_signals_replay_what_a_spend_only_relay_reports(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sc = generate(seed=7, clean=3, days=4)
    source = tmp_path / "usage.jsonl"
    source.write_bytes(b"\n".join(as_input(sc.lines)))
    config = tmp_path / "bt.yaml"
    config.write_text(CONFIG)
    out = tmp_path / "alerts.jsonl"
    argv = ["-c", str(config), "backtest", "--input", str(source), "--output", str(out), "--signals", "spend"]
    assert main(argv) == 0
    rows = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    assert rows and {r["signals"] for r in rows} == {"spend"}
    evidence = " ".join(r["evidence"] for r in rows)
    assert not any(word in evidence for word in ("new_ip", "many_ips", "new_model", "ip_not_whitelisted"))
    assert "backtest (signals: spend)" in capsys.readouterr().err


def test_spend_only_collapses_lines_of_one_token_and_time() -> None:
    data = read_input(
        [
            b'{"ts": "2026-11-01T10:00:00Z", "token": "a", "requests": 2, "cost_usd": 0.5, "model": "m1", "ip": "1.1.1.1"}',
            b'{"ts": "2026-11-01T10:00:00Z", "token": "a", "requests": 3, "cost_usd": 0.25, "model": "m2", "ip": "2.2.2.2"}',
            b'{"ts": "2026-11-01T10:15:00Z", "token": "a", "requests": 1, "cost_usd": 0.1, "model": "m1"}',
        ]
    )
    collapsed = spend_only(data)
    assert [(u.requests, u.cost, u.model, u.ip) for u in collapsed.usage] == [
        (5, 0.75, None, None),
        (1, 0.1, None, None),
    ]


def test_bad_input_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"ts": "2026-11-01T00:00:00Z", "token": "a", "cost_usd": 1}\n{not json\n')
    assert main(["backtest", "--input", str(bad)]) == 2
    assert "line 2" in capsys.readouterr().err


@pytest.mark.slow
def test_the_shared_sample_passes_its_gate(tmp_path: Path) -> None:
    sample, scorer = SHARED / "usage.jsonl.gz", SHARED / "score.py"
    if not sample.exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{sample} is missing in CI")
        pytest.skip(f"the shared detection sample is not beside this checkout ({sample})")
    config = tmp_path / "backtest.yaml"
    config.write_text(CONFIG)
    out = tmp_path / "alerts.jsonl"
    assert main(["-c", str(config), "backtest", "--input", str(sample), "--output", str(out)]) == 0
    scored = subprocess.run(
        [sys.executable, str(scorer), str(SHARED / "truth.json"), str(out), "--gate"],
        capture_output=True,
        text=True,
    )
    assert scored.returncode == 0, scored.stdout + scored.stderr


@pytest.mark.slow
async def test_the_shared_sample_meets_the_spend_only_targets() -> None:
    """Issue 10: replayed as a spend-only relay reports it, >= 7/8 leaks quarantined, dormant-wake
    and off-hours leaks within 2 polls, no false quarantine, every spike alerted, <= 0.5 false
    alarms per 100 token-weeks."""
    sample = SHARED / "usage.jsonl.gz"
    if not sample.exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{sample} is missing in CI")
        pytest.skip(f"the shared detection sample is not beside this checkout ({sample})")
    with gzip.open(sample, "rb") as f:
        data = read_input(f)
    provider = ProviderSettings(
        name="lz", kind="laozhang", base_url="http://x.invalid", admin_token=Secret(""), poll_interval=900
    )
    settings = Settings(providers=(provider,), response=Response(auto_revoke=True))
    rows = await run_backtest(data, settings, signals="spend")
    s = score(orjson.loads((SHARED / "truth.json").read_bytes()), rows)
    assert s.quarantined >= 7 and not s.false_quarantines
    assert all(d <= 2 for d in s.delay_of("dormant_wake", "offhours"))
    assert s.spikes_caught == s.spikes
    assert s.false_alarm_rate <= 0.5
