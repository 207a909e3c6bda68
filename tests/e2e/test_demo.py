"""`keywatch demo` (what `make demo` runs) on a short clock: it tells the story and exits 0."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

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
    # The config it leaves behind works with the read commands.
    tokens = subprocess.run(
        [sys.executable, "-m", "monitor", "-c", str(tmp_path / "keywatch.yaml"), "tokens", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert tokens.returncode == 0 and '"provider": "demo"' in tokens.stdout
