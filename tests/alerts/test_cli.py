"""The alert side's commands on a real config and database: audit, silence, alerts, export,
and revoke against a simulator in another process."""

from __future__ import annotations

from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import orjson
import pytest

from monitor.cli import main
from monitor.ingest import ingest
from monitor.model import Observation, PollResult
from monitor.store import PollRun, UsageWriter, open_engine
from tests.e2e.procs import free_port, keywatch, wait_for

T0 = 1_794_300_000.0


def config(tmp_path: Path, base_url: str = "http://127.0.0.1:9", extra: str = "") -> Path:
    cfg = tmp_path / "kw.yaml"
    cfg.write_text(
        f"database: sqlite:///{tmp_path / 'kw.db'}\nproviders:\n  - name: lz\n    kind: laozhang\n"
        f"    base_url: {base_url}\n    admin_token: sim-admin-token\n{extra}"
    )
    return cfg


def seed(tmp_path: Path) -> None:
    engine = open_engine(f"sqlite:///{tmp_path / 'kw.db'}")
    writer = UsageWriter(engine)
    obs = [
        Observation(
            "key_1",
            "prod-webapp-api-2024-01",
            "active",
            created_at=T0 - 400 * 86400,
            today_usd=1,
            month_usd=5,
        ),
        Observation("key_2", "Bobs key", "active", created_at=T0 - 10 * 86400, today_usd=0, month_usd=0),
    ]
    states = writer.write_cycle(
        ingest({}, PollResult(obs), provider="lz", now=T0, tz=ZoneInfo("UTC"), watching_since=None),
        PollRun("lz", "laozhang", T0, T0, True, True),
        {},
    )
    more = [
        Observation(
            "key_1",
            "prod-webapp-api-2024-01",
            "active",
            created_at=T0 - 400 * 86400,
            today_usd=2,
            month_usd=6,
        )
    ]
    writer.write_cycle(
        ingest(
            states,
            PollResult(more, complete=False),
            provider="lz",
            now=T0 + 60,
            tz=ZoneInfo("UTC"),
            watching_since=T0,
        ),
        PollRun("lz", "laozhang", T0 + 60, T0 + 60, True, False),
        {},
    )
    engine.dispose()


def test_audit_json_has_the_contract_keys(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = config(tmp_path)
    seed(tmp_path)
    assert main(["-c", str(cfg), "audit", "--json"]) == 0
    rows = orjson.loads(capsys.readouterr().out)
    assert rows and all(set(r) == {"token", "provider", "finding", "detail"} for r in rows)
    found = {(r["token"], r["finding"]) for r in rows}
    assert ("prod-webapp-api-2024-01", "rotation_due") in found
    assert ("prod-webapp-api-2024-01", "no_ip_whitelist") in found
    assert ("Bobs key", "naming") in found


def test_silences_are_added_listed_and_expired(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = str(config(tmp_path))
    assert (
        main(
            [
                "-c",
                cfg,
                "silence",
                "add",
                "token=dev-*",
                "rule=spend_anomaly",
                "--duration",
                "2h",
                "--comment",
                "load test",
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert main(["-c", cfg, "silence", "list", "--json"]) == 0
    (silence,) = orjson.loads(capsys.readouterr().out)
    assert silence["matchers"] == ["token=dev-*", "rule=spend_anomaly"] and silence["comment"] == "load test"
    assert main(["-c", cfg, "silence", "expire", str(silence["id"])]) == 0
    capsys.readouterr()
    assert main(["-c", cfg, "silence", "list", "--json"]) == 0
    assert orjson.loads(capsys.readouterr().out) == []
    assert main(["-c", cfg, "silence", "add", "token=~[", "--comment", "x"]) == 2  # a bad regex is refused


def test_alerts_json_is_an_array(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["-c", str(config(tmp_path)), "alerts", "--json"]) == 0
    assert orjson.loads(capsys.readouterr().out) == []


def test_export_writes_backtest_input(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    seed(tmp_path)
    out = tmp_path / "history.jsonl"
    assert main(["-c", str(cfg), "export", "--since", "36500d", "--output", str(out)]) == 0
    lines = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    assert {line["token"] for line in lines if line.get("type") == "token"} == {
        "prod-webapp-api-2024-01",
        "Bobs key",
    }
    usage = [line for line in lines if "ts" in line]
    assert [(u["token"], u["cost_usd"]) for u in usage] == [("prod-webapp-api-2024-01", 1.0)]


def test_revoke_by_hand_dry_run_then_for_real(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    port = free_port()
    sim = f"http://127.0.0.1:{port}"
    with keywatch(
        "simulate", "--listen", f"127.0.0.1:{port}", "--tokens", "6", "--seed", "3", log=tmp_path / "sim.log"
    ):
        wait_for(lambda: httpx.get(f"{sim}/_sim/truth").status_code == 200, what="the simulator")
        # laozhang can only delete a key: keywatch does so where the config says so
        cfg = str(config(tmp_path, sim, extra="    poll_interval: 1s\n    action: delete\n"))
        # keywatch must know the token: one poll through the daemon's own code path.
        with keywatch("-c", cfg, "run", log=tmp_path / "kw.log"):
            wait_for(lambda: (tmp_path / "kw.db").exists() and _polled(tmp_path), what="a stored poll")
        victim = next(
            t for t in httpx.get(f"{sim}/_sim/truth").json()["tokens"] if t["status"] in ("active", "unused")
        )
        assert main(["-c", cfg, "revoke", victim["name"], "--reason", "rotating", "--yes", "--dry-run"]) == 0
        assert "dry run" in capsys.readouterr().out
        assert main(["-c", cfg, "revoke", victim["name"], "--reason", "rotating", "--yes"]) == 0
        assert "quarantined" in capsys.readouterr().out
        truth = {t["name"]: t for t in httpx.get(f"{sim}/_sim/truth").json()["tokens"]}
        assert truth[victim["name"]]["status"] == "revoked"
        assert main(["-c", cfg, "revoke", "no-such-token", "--reason", "x", "--yes"]) == 1


def _polled(tmp_path: Path) -> bool:
    import sqlite3

    with sqlite3.connect(tmp_path / "kw.db") as conn:
        try:
            return bool(conn.execute("SELECT COUNT(*) FROM tokens").fetchone()[0])
        except sqlite3.OperationalError:
            return False
