"""`keywatch demo` (what `make demo` runs) on a short clock: it tells the story and exits 0."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from tests.e2e.procs import ROOT, free_port

pytestmark = pytest.mark.e2e


def test_the_demo_tells_its_story_and_exits_cleanly(tmp_path: Path) -> None:
    port = free_port()
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "monitor",
            "demo",
            "--duration",
            "30",
            "--listen",
            f"127.0.0.1:{port}",
            "--data-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=90,
        cwd=ROOT,
    )
    out = run.stdout
    assert run.returncode == 0, run.stderr[-2000:]
    assert "seeded 14 days of history" in out
    assert "[FIRING:1] budget" in out  # the batch job's budget crossing reached the console
    leak = [line for line in out.splitlines() if "leak_suspected" in line and "🔔" in line]
    assert leak and "quarantined" in leak[0]
    delay = [line for line in out.splitlines() if "poll(s) after the leak began" in line]
    assert delay and int(delay[0].split(",")[1].split()[0]) <= 2  # within two polls of the onset
    assert "hygiene audit" in out and "summary" in out
    assert (tmp_path / "keywatch.db").exists() and (tmp_path / "keywatch.yaml").exists()
    # Every look-around command the summary suggests works on what the demo left behind and shows
    # its numbers, although the demo's clock ran hours away from the real one.
    config = str(tmp_path / "keywatch.yaml")
    around = out[out.index("look around") :]
    assert f"keywatch -c {config} tokens | alerts | audit" in around
    history = around.split(f"keywatch -c {config} ")[2].split()  # history TOKEN --since 3h

    tokens = orjson.loads(_look(config, "tokens", "--json"))
    assert tokens and all(t["provider"] == "demo" for t in tokens)
    spent = [t for t in tokens if t["spend_total_usd"] is not None]
    assert spent and all(isinstance(t["today_usd"], float) for t in spent), spent
    assert all(isinstance(t["month_usd"], float) for t in spent), spent
    assert sum(t["today_usd"] for t in spent) > 0 and any(t["budget_used_pct"] for t in spent)
    assert orjson.loads(_look(config, "alerts", "--json"))  # the leak and the budget crossing
    assert orjson.loads(_look(config, "audit", "--json"))
    assert history[0] == "history" and orjson.loads(_look(config, *history, "--json"))


def _look(config: str, *command: str) -> str:
    run = subprocess.run(
        [sys.executable, "-m", "monitor", "-c", config, *command],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    return run.stdout
