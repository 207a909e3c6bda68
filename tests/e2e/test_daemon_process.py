"""`keywatch run` against `keywatch simulate`, as separate processes on loopback."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import httpx
import pytest

from tests.e2e.procs import free_port, keywatch, metric_samples, simulator_config, wait_for

pytestmark = pytest.mark.e2e


def poll_count(base: str) -> float:
    samples = metric_samples(httpx.get(f"{base}/metrics").text)
    return samples.get(("keywatch_poll_duration_seconds_count", frozenset({("provider", "sim")})), 0.0)


def settle(base: str, sim: str) -> None:
    """Freeze the relay's clock, then wait for two more complete polls so keywatch has seen it all."""
    httpx.post(f"{sim}/_sim/speed", json={"speed": 0}).raise_for_status()
    seen = poll_count(base)
    wait_for(lambda: poll_count(base) >= seen + 2, what="two polls after freezing the relay")


def test_metrics_match_what_the_relay_served(tmp_path: Path) -> None:
    sim_port, port = free_port(), free_port()
    sim, base = f"http://127.0.0.1:{sim_port}", f"http://127.0.0.1:{port}"
    cfg = simulator_config(tmp_path / "kw.yaml", sim_port=sim_port, listen_port=port, db=tmp_path / "kw.db")
    with keywatch(
        "simulate",
        "--listen",
        f"127.0.0.1:{sim_port}",
        "--tokens",
        "30",
        "--seed",
        "3",
        log=tmp_path / "sim.log",
    ):
        wait_for(lambda: httpx.get(f"{sim}/_sim/truth").status_code == 200, what="the simulator")
        with keywatch("-c", str(cfg), "run", log=tmp_path / "kw.log") as daemon:
            wait_for(lambda: httpx.get(f"{base}/readyz").status_code == 200, what="/readyz")
            assert httpx.get(f"{base}/healthz").json() == {"status": "ok"}
            httpx.post(f"{sim}/_sim/advance", json={"seconds": 3600}).raise_for_status()  # an hour of traffic
            settle(base, sim)

            truth = httpx.get(f"{sim}/_sim/truth").json()
            samples = metric_samples(httpx.get(f"{base}/metrics").text)
            live = [t for t in truth["tokens"] if not t["deleted"]]
            assert len(live) == 30
            for t in live:
                tok = {("provider", "sim"), ("token", t["name"])}
                month = samples.get(("keywatch_token_spend_usd", frozenset(tok | {("window", "month")})))
                assert month == pytest.approx(t["month_usage"], abs=1e-6), t["name"]
                total = samples[("keywatch_token_spend_usd_total", frozenset(tok))]
                assert total == pytest.approx(t["month_usage"], abs=1e-6), t["name"]
                info = [k for k in samples if k[0] == "keywatch_token_info" and ("token", t["name"]) in k[1]]
                assert len(info) == 1
            assert samples[("keywatch_provider_up", frozenset({("provider", "sim")}))] == 1

            rows = httpx.get(f"{base}/api/v1/tokens").json()
            assert {r["name"] for r in rows} == {t["name"] for t in live}

            started = time.monotonic()
            daemon.send_signal(signal.SIGTERM)
            assert daemon.wait(timeout=10) == 0
            assert time.monotonic() - started < 10
    assert "sim-admin-token" not in (tmp_path / "kw.log").read_text()


def test_kill_9_then_restart_keeps_counting(tmp_path: Path) -> None:
    sim_port, port = free_port(), free_port()
    sim, base = f"http://127.0.0.1:{sim_port}", f"http://127.0.0.1:{port}"
    cfg = simulator_config(tmp_path / "kw.yaml", sim_port=sim_port, listen_port=port, db=tmp_path / "kw.db")
    with keywatch(
        "simulate",
        "--listen",
        f"127.0.0.1:{sim_port}",
        "--tokens",
        "20",
        "--seed",
        "5",
        log=tmp_path / "sim.log",
    ):
        wait_for(lambda: httpx.get(f"{sim}/_sim/truth").status_code == 200, what="the simulator")
        with keywatch("-c", str(cfg), "run", log=tmp_path / "kw1.log") as daemon:
            wait_for(lambda: httpx.get(f"{base}/readyz").status_code == 200, what="/readyz")
            httpx.post(f"{sim}/_sim/advance", json={"seconds": 1800}).raise_for_status()
            wait_for(lambda: poll_count(base) >= 3, what="three polls")
            os.kill(daemon.pid, signal.SIGKILL)
            daemon.wait()
        httpx.post(f"{sim}/_sim/advance", json={"seconds": 1800}).raise_for_status()  # spend while it is down
        with keywatch("-c", str(cfg), "run", log=tmp_path / "kw2.log"):
            wait_for(lambda: httpx.get(f"{base}/readyz").status_code == 200, what="/readyz after restart")
            settle(base, sim)
            truth = {t["name"]: t for t in httpx.get(f"{sim}/_sim/truth").json()["tokens"]}
            samples = metric_samples(httpx.get(f"{base}/metrics").text)
            totals = {
                dict(labels)["token"]: v
                for (name, labels), v in samples.items()
                if name == "keywatch_token_spend_usd_total"
            }
            assert totals
            for name, total in totals.items():
                assert total == pytest.approx(truth[name]["month_usage"], abs=1e-6), name


def test_bad_config_exits_2_with_one_line(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(
        "providers:\n  - name: lz\n    kind: laozhang\n    base_url: http://x\n    admin_token: a\n    poll_interval: 5 minutes\n"
    )
    with keywatch("-c", str(cfg), "check-config", log=tmp_path / "out.log") as proc:
        assert proc.wait(timeout=30) == 2
    lines = (tmp_path / "out.log").read_text().strip().splitlines()
    assert lines == [
        "config error: providers[0].poll_interval: invalid duration '5 minutes' (use e.g. 30s, 5m, 1h, 14d)"
    ]


def test_sighup_reloads_a_valid_config_and_keeps_the_old_one_on_a_bad_one(tmp_path: Path) -> None:
    sim_port, port = free_port(), free_port()
    sim, base = f"http://127.0.0.1:{sim_port}", f"http://127.0.0.1:{port}"
    cfg = simulator_config(tmp_path / "kw.yaml", sim_port=sim_port, listen_port=port, db=tmp_path / "kw.db")
    original = cfg.read_text()
    args = ("simulate", "--listen", f"127.0.0.1:{sim_port}", "--tokens", "8", "--seed", "9")
    with keywatch(*args, log=tmp_path / "sim.log"):
        wait_for(lambda: httpx.get(f"{sim}/_sim/truth").status_code == 200, what="the simulator")
        with keywatch("-c", str(cfg), "run", log=tmp_path / "kw.log") as daemon:
            wait_for(lambda: httpx.get(f"{base}/readyz").status_code == 200, what="/readyz")
            name = httpx.get(f"{sim}/_sim/truth").json()["tokens"][0]["name"]
            budget = (
                "keywatch_token_budget_usd",
                frozenset({("provider", "sim"), ("token", name), ("window", "day")}),
            )

            def day_budget() -> float | None:
                return metric_samples(httpx.get(f"{base}/metrics").text).get(budget)

            cfg.write_text(original + f"tokens:\n  - match: '{name}'\n    budget: {{daily_usd: 12345}}\n")
            daemon.send_signal(signal.SIGHUP)
            wait_for(lambda: day_budget() == 12345, what="the reloaded budget on /metrics")

            cfg.write_text(original + "tokens:\n  - match: 'x'\n    budget: {daily_usd: lots}\n")
            daemon.send_signal(signal.SIGHUP)
            log = tmp_path / "kw.log"
            wait_for(lambda: "keeping the running config" in log.read_text(), what="the reload to be refused")
            assert daemon.poll() is None  # still running
            assert day_budget() == 12345  # and still on the last good config
            assert httpx.get(f"{base}/readyz").status_code == 200
