"""`keywatch run` against `keywatch simulate --flavor X` for the oneapi, newapi and openai
flavours, as separate processes on loopback: /metrics spend checked against /_sim/truth."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from monitor.providers.anthropic import AnthropicProvider
from monitor.providers.litellm import LiteLLMProvider
from monitor.providers.oneapi import OneAPIProvider
from monitor.providers.openai import OpenAIProvider
from tests.e2e.procs import free_port, keywatch, metric_samples, simulator_config, wait_for

pytestmark = pytest.mark.e2e

ONEAPI = {"Authorization": "sim-admin-token"}


def totals(base: str) -> dict[str, float]:
    samples = metric_samples(httpx.get(f"{base}/metrics").text)
    return {
        dict(labels)["token"]: v
        for (name, labels), v in samples.items()
        if name == "keywatch_token_spend_usd_total"
    }


def poll_count(base: str) -> float:
    samples = metric_samples(httpx.get(f"{base}/metrics").text)
    return samples.get(("keywatch_poll_duration_seconds_count", frozenset({("provider", "sim")})), 0.0)


def settled(base: str) -> dict[str, float]:
    """Totals once three more polls changed nothing (windows caught up with the frozen relay)."""
    last: dict[str, Any] = {"totals": None, "polls": poll_count(base)}

    def check() -> dict[str, float] | None:
        polls = poll_count(base)
        if polls < last["polls"] + 3:
            return None
        now = totals(base)
        stable = now == last["totals"]
        last.update(totals=now, polls=polls)
        return now if stable else None

    return wait_for(check, timeout=60, what="spend totals to settle")


def post(sim: str, path: str, body: dict[str, Any]) -> Any:
    response = httpx.post(f"{sim}/_sim/{path}", json=body, timeout=30)
    response.raise_for_status()
    return response.json()


def booked(sim: str, token: str, since: float, until: float) -> float:
    events = httpx.get(
        f"{sim}/_sim/events", params={"token": token, "since": since, "until": until, "limit": 100_000}
    ).json()
    return sum(e["cost_usd"] for e in events["events"])


def freeze_after(sim: str, seconds: float) -> float:
    """Advance the relay, then stop its clock mid-minute (traffic buckets fall on minutes)."""
    now = post(sim, "advance", {"seconds": seconds})["now"]
    post(sim, "advance", {"to": now // 60 * 60 + 90})
    return float(post(sim, "speed", {"speed": 0})["now"])


def oneapi_unlimited(sim: str) -> set[str]:
    names: set[str] = set()
    p = 0
    while True:
        page = httpx.get(f"{sim}/api/token/", params={"p": p}, headers=ONEAPI).json()["data"]
        names |= {t["name"] for t in page if t["unlimited_quota"]}
        if len(page) < 10:
            return names
        p += 1


def start(tmp_path: Path, kind: str, seed: int) -> tuple[str, str, Path, list[str]]:
    sim_port, port = free_port(), free_port()
    cfg = simulator_config(
        tmp_path / "kw.yaml", sim_port=sim_port, listen_port=port, db=tmp_path / "kw.db", kind=kind
    )
    args = [
        "simulate",
        "--listen",
        f"127.0.0.1:{sim_port}",
        "--tokens",
        "30",
        "--seed",
        str(seed),
        "--flavor",
        kind,
    ]
    return f"http://127.0.0.1:{sim_port}", f"http://127.0.0.1:{port}", cfg, args


@pytest.mark.parametrize("kind", ["oneapi", "newapi", "openai", "openrouter", "anthropic", "litellm"])
def test_metrics_match_what_the_relay_served(tmp_path: Path, kind: str) -> None:
    sim, base, cfg, sim_args = start(tmp_path, kind, seed=3)
    with keywatch(*sim_args, log=tmp_path / "sim.log"):
        wait_for(lambda: httpx.get(f"{sim}/_sim/truth").status_code == 200, what="the simulator")
        with keywatch("-c", str(cfg), "run", log=tmp_path / "kw.log") as daemon:
            wait_for(lambda: httpx.get(f"{base}/readyz").status_code == 200, what="/readyz")
            # a token created while keywatch watches: everything it spends is new spend
            created = post(sim, "tokens", {"name": "dev-e2e-new-2026-03", "archetype": "service", "usd_per_hour": 6.0,
                                           "unlimited_quota": True})["token"]  # fmt: skip
            since = float(httpx.get(f"{sim}/_sim/truth").json()["now"]) - 60
            frozen = freeze_after(sim, 3600)
            got = settled(base)
            truth = {t["name"]: t for t in httpx.get(f"{sim}/_sim/truth").json()["tokens"]}
            assert set(got) == set(truth)

            if kind == "litellm":  # the spend log, read up to log_lag before the frozen clock
                visible = frozen - LiteLLMProvider.log_lag
                lo = booked(sim, created["name"], since, visible - 1)
                hi = booked(sim, created["name"], since, visible)
                assert lo - 1e-6 <= got[created["name"]] <= hi + 1e-6
                for name, total in got.items():
                    assert 0 <= total <= truth[name]["lifetime_usd"] + 1e-6, name
            elif kind == "openrouter":  # `usage`, a lifetime counter in USD: exact
                for name, t in truth.items():
                    assert got[name] == pytest.approx(t["lifetime_usd"], abs=1e-6), name
            elif kind in ("openai", "anthropic"):  # settled usage buckets, priced
                settle = OpenAIProvider.usage_settle if kind == "openai" else AnthropicProvider.usage_settle
                visible = (frozen - settle) // 60 * 60 - 0.001
                expected = booked(sim, created["name"], since, visible)
                assert got[created["name"]] == pytest.approx(expected, rel=2e-3)
                for name, total in got.items():
                    assert 0 <= total <= truth[name]["lifetime_usd"] + 1e-6, name
            else:
                from_logs = oneapi_unlimited(sim) if kind == "oneapi" else set()
                assert created["name"] in from_logs or kind == "newapi"
                for name, t in truth.items():
                    if name in from_logs:
                        continue
                    assert got[name] == pytest.approx(t["lifetime_usd"], abs=1e-5), name  # used_quota
                visible = frozen - OneAPIProvider.log_lag
                expected = booked(sim, created["name"], since, visible)
                assert expected > 0 and got[created["name"]] == pytest.approx(expected, abs=1e-4)

            daemon.send_signal(signal.SIGTERM)
            assert daemon.wait(timeout=10) == 0
    assert "sim-admin-token" not in (tmp_path / "kw.log").read_text()


def test_kill_9_then_restart_keeps_counting_log_spend(tmp_path: Path) -> None:
    """oneapi's unlimited tokens: spend from log rows, read again after a restart, never twice."""
    sim, base, cfg, sim_args = start(tmp_path, "oneapi", seed=5)
    with keywatch(*sim_args, log=tmp_path / "sim.log"):
        wait_for(lambda: httpx.get(f"{sim}/_sim/truth").status_code == 200, what="the simulator")
        with keywatch("-c", str(cfg), "run", log=tmp_path / "kw1.log") as daemon:
            wait_for(lambda: httpx.get(f"{base}/readyz").status_code == 200, what="/readyz")
            created = post(sim, "tokens", {"name": "dev-e2e-k9-2026-03", "archetype": "service", "usd_per_hour": 6.0,
                                           "unlimited_quota": True})["token"]  # fmt: skip
            since = float(httpx.get(f"{sim}/_sim/truth").json()["now"]) - 60
            post(sim, "advance", {"seconds": 1200})
            wait_for(lambda: poll_count(base) >= 3 and totals(base).get(created["name"], 0) > 0, what="spend")
            os.kill(daemon.pid, signal.SIGKILL)
            daemon.wait()
        post(sim, "advance", {"seconds": 1800})  # spend while keywatch is down
        with keywatch("-c", str(cfg), "run", log=tmp_path / "kw2.log"):
            wait_for(lambda: httpx.get(f"{base}/readyz").status_code == 200, what="/readyz after restart")
            frozen = freeze_after(sim, 0)
            got = settled(base)
            expected = booked(sim, created["name"], since, frozen - OneAPIProvider.log_lag)
            assert got[created["name"]] == pytest.approx(expected, abs=1e-4)


def test_one_daemon_watches_four_relays_of_four_kinds(tmp_path: Path) -> None:
    """Issue 5's "done when": laozhang, oneapi, newapi and openai in one config, one daemon; each
    provider's tokens show the relay's spend in /metrics and in `keywatch tokens`."""
    kinds = {"lz": "laozhang", "one": "oneapi", "new": "newapi", "oa": "openai"}
    ports = {name: free_port() for name in kinds}
    port = free_port()
    extra = {
        "laozhang": "",
        "oneapi": "",
        "newapi": "\n    user_id: 1",
        "openai": "\n    project_id: proj_sim",
    }
    providers = "".join(
        f"  - name: {name}\n    kind: {kind}\n    base_url: http://127.0.0.1:{ports[name]}\n"
        f"    admin_token: sim-admin-token\n    poll_interval: 1s\n    timeout: 5s{extra[kind]}\n"
        for name, kind in kinds.items()
    )
    cfg = tmp_path / "kw.yaml"
    cfg.write_text(
        f"database: sqlite:///{tmp_path / 'kw.db'}\nlisten: 127.0.0.1:{port}\nproviders:\n{providers}"
    )
    base = f"http://127.0.0.1:{port}"
    sims = {name: f"http://127.0.0.1:{ports[name]}" for name in kinds}
    with contextlib.ExitStack() as stack:
        for i, (name, kind) in enumerate(kinds.items()):
            args = [
                "simulate",
                "--listen",
                f"127.0.0.1:{ports[name]}",
                "--tokens",
                "12",
                "--seed",
                str(20 + i),
            ]
            stack.enter_context(keywatch(*args, "--flavor", kind, log=tmp_path / f"sim-{name}.log"))
        for sim in sims.values():
            wait_for(lambda sim=sim: httpx.get(f"{sim}/_sim/truth").status_code == 200, what="a simulator")
        stack.enter_context(keywatch("-c", str(cfg), "run", log=tmp_path / "kw.log"))
        ready = wait_for(
            lambda: (
                httpx.get(f"{base}/readyz").json() if httpx.get(f"{base}/readyz").status_code == 200 else None
            ),
            what="/readyz",
        )
        assert set(ready["providers"]) == set(kinds)
        for sim in sims.values():
            freeze_after(sim, 1800)

        def per_provider() -> dict[str, dict[str, float]]:
            samples = metric_samples(httpx.get(f"{base}/metrics").text)
            out: dict[str, dict[str, float]] = {}
            for (metric, labels), value in samples.items():
                if metric == "keywatch_token_spend_usd_total":
                    lab = dict(labels)
                    out.setdefault(lab["provider"], {})[lab["token"]] = value
            return out

        def polls() -> dict[str, float]:
            samples = metric_samples(httpx.get(f"{base}/metrics").text)
            return {
                p: samples.get(("keywatch_poll_duration_seconds_count", frozenset({("provider", p)})), 0.0)
                for p in kinds
            }

        frozen_at = polls()  # three more polls of every relay after the freeze: all caught up
        wait_for(
            lambda: all(n >= frozen_at[p] + 3 for p, n in polls().items()),
            timeout=60,
            what="three more polls",
        )
        got = per_provider()
        for name, kind in kinds.items():
            truth = {
                t["name"]: t
                for t in httpx.get(f"{sims[name]}/_sim/truth").json()["tokens"]
                if not t["deleted"]
            }
            assert got[name] and set(got[name]) <= set(truth), name
            if kind in ("laozhang", "newapi"):  # month-to-date / lifetime counters: exact
                for token, total in got[name].items():
                    expected = (
                        truth[token]["month_usage"] if kind == "laozhang" else truth[token]["lifetime_usd"]
                    )
                    assert total == pytest.approx(expected, abs=1e-5), (name, token)
            else:  # logs and settled usage buckets: never more than the relay booked
                for token, total in got[name].items():
                    assert 0 <= total <= truth[token]["lifetime_usd"] + 1e-4, (name, token)  # quota rounding
        listed = subprocess.run(
            [sys.executable, "-m", "monitor", "-c", str(cfg), "tokens", "--json"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        rows = json.loads(listed.stdout)
        assert {r["provider"] for r in rows} == set(kinds)
