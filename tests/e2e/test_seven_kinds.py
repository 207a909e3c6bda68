"""Issue 14's whole set in one daemon: seven simulated platforms of seven kinds, `keywatch run`
watching them all, spend equal to each simulator's truth, and on every platform that can disable
a key a quarantine (`keywatch revoke`) and its undoing (`keywatch restore`) verified at the
simulator and kept in the audit trail. Separate processes on loopback."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import httpx
import pytest

from monitor.model import CAN_DISABLE, PROVIDER_KINDS
from tests.e2e.procs import FLAVOR_SETTINGS, ROOT, SIM_ADMIN, free_port, keywatch, metric_samples, wait_for
from tests.e2e.test_flavors import freeze_after

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

# Exact where the platform keeps an exact counter; never more than booked where spend comes
# from request logs or settled usage buckets (tests/e2e/test_flavors.py has the per-kind detail).
EXACT = {"laozhang": "month_usage", "newapi": "lifetime_usd", "openrouter": "lifetime_usd"}


def run_cli(cfg: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "monitor", "-c", str(cfg), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def status(sim: str, name: str) -> str:
    (row,) = [t for t in httpx.get(f"{sim}/_sim/truth").json()["tokens"] if t["name"] == name]
    return str(row["status"])


def test_seven_platforms_in_one_daemon_spend_as_the_relays_and_quarantine_round_trips(tmp_path: Path) -> None:
    kinds = {kind: kind[:2] + str(i) for i, kind in enumerate(PROVIDER_KINDS)}  # kind -> provider name
    ports = {kind: free_port() for kind in kinds}
    sims = {kind: f"http://127.0.0.1:{port}" for kind, port in ports.items()}
    port = free_port()
    providers = "".join(
        f"  - name: {kinds[kind]}\n    kind: {kind}\n    base_url: {sims[kind]}\n    admin_token: {SIM_ADMIN}\n"
        f"    poll_interval: 1s\n    timeout: 5s{FLAVOR_SETTINGS[kind]}\n"
        for kind in kinds
    )
    db = tmp_path / "kw.db"
    cfg = tmp_path / "kw.yaml"
    cfg.write_text(f"database: sqlite:///{db}\nlisten: 127.0.0.1:{port}\nproviders:\n{providers}")
    base = f"http://127.0.0.1:{port}"
    with contextlib.ExitStack() as stack:
        for i, kind in enumerate(kinds):
            args = [
                "simulate",
                "--listen",
                f"127.0.0.1:{ports[kind]}",
                "--tokens",
                "10",
                "--seed",
                str(60 + i),
            ]
            stack.enter_context(keywatch(*args, "--flavor", kind, log=tmp_path / f"sim-{kind}.log"))
        for sim in sims.values():
            wait_for(lambda sim=sim: httpx.get(f"{sim}/_sim/truth").status_code == 200, what="a simulator")
        daemon = stack.enter_context(keywatch("-c", str(cfg), "run", log=tmp_path / "kw.log"))
        ready = wait_for(lambda: httpx.get(f"{base}/readyz").json() if httpx.get(f"{base}/readyz").status_code == 200 else None, what="/readyz")  # fmt: skip
        assert set(ready["providers"]) == set(kinds.values())
        for sim in sims.values():
            freeze_after(sim, 1800)

        def polls() -> dict[str, float]:
            samples = metric_samples(httpx.get(f"{base}/metrics").text)
            return {
                p: samples.get(("keywatch_poll_duration_seconds_count", frozenset({("provider", p)})), 0.0)
                for p in kinds.values()
            }

        start = polls()
        wait_for(
            lambda: all(n >= start[p] + 3 for p, n in polls().items()), timeout=90, what="three more polls"
        )
        samples = metric_samples(httpx.get(f"{base}/metrics").text)
        got: dict[str, dict[str, float]] = {}
        for (metric, labels), value in samples.items():
            if metric == "keywatch_token_spend_usd_total":
                lab = dict(labels)
                got.setdefault(lab["provider"], {})[lab["token"]] = value
        for kind, name in kinds.items():
            truth = {
                t["name"]: t
                for t in httpx.get(f"{sims[kind]}/_sim/truth").json()["tokens"]
                if not t["deleted"]
            }
            assert got.get(name) and set(got[name]) <= set(truth), kind
            for token, total in got[name].items():
                if kind in EXACT:
                    assert total == pytest.approx(truth[token][EXACT[kind]], abs=1e-5), (kind, token)
                else:
                    assert 0 <= total <= truth[token]["lifetime_usd"] + 1e-4, (kind, token)
            assert sum(got[name].values()) > 0, kind

        # The kill switch and its undoing, on every platform that can disable a key.
        for kind in sorted(CAN_DISABLE):
            name = kinds[kind]
            listed = json.loads(run_cli(cfg, "tokens", "--json").stdout)
            token = next(
                r["name"]
                for r in listed
                if r["provider"] == name
                and r["status"] == "active"
                and status(sims[kind], r["name"]) == "active"
            )
            revoked = run_cli(cfg, "revoke", f"{name}/{token}", "--reason", "e2e", "--yes")
            assert revoked.returncode == 0, (kind, revoked.stdout, revoked.stderr)
            assert status(sims[kind], token) == "disabled", (kind, revoked.stdout)
            restored = run_cli(cfg, "restore", f"{name}/{token}", "--reason", "false alarm", "--yes")
            assert restored.returncode == 0, (kind, restored.stdout, restored.stderr)
            assert "restored" in restored.stdout and status(sims[kind], token) == "active", (
                kind,
                restored.stdout,
            )
            with closing(sqlite3.connect(db)) as conn:
                trail = conn.execute(
                    "SELECT mode, state FROM quarantine_actions WHERE provider = ? AND token = ? ORDER BY id",
                    (name, token),
                ).fetchall()
            assert trail == [("manual", "done"), ("restore", "done")], (kind, trail)
        cannot = run_cli(cfg, "restore", f"{kinds['laozhang']}/nonexistent", "--reason", "x", "--yes")
        assert cannot.returncode != 0
        daemon.terminate()
    log = (tmp_path / "kw.log").read_text()
    assert SIM_ADMIN not in log and "Traceback" not in log
