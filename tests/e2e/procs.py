"""Whole-process helpers: free ports, bounded waits, and keywatch subprocesses on loopback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import httpx

ROOT = Path(__file__).resolve().parents[2]
SIM_ADMIN = "sim-admin-token"
T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(check: Callable[[], T | None], *, timeout: float = 30.0, what: str = "condition") -> T:
    """Poll `check` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except (httpx.HTTPError, OSError) as exc:
            last_error = exc
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last error: {last_error})")


@contextmanager
def keywatch(
    *args: str, log: Path, env: Mapping[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """`python -m monitor ARGS` with output to `log` (`env` added to the environment);
    terminated (then killed) on exit."""
    env = {**os.environ, **(env or {}), "PYTHONPATH": str(ROOT)}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "monitor", *args], stdout=out, stderr=subprocess.STDOUT, env=env
        )
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


# What each simulator flavour needs beyond the admin token (tests/e2e/test_flavors.py).
FLAVOR_SETTINGS = {
    "laozhang": "",
    "oneapi": "",
    "newapi": "\n    user_id: 1",
    "openai": "\n    project_id: proj_sim",
    "openrouter": "",
    "anthropic": "",
    "litellm": "",
}


def simulator_config(
    path: Path,
    *,
    sim_port: int,
    listen_port: int,
    db: Path,
    interval: str = "1s",
    extra: str = "",
    kind: str = "laozhang",
) -> Path:
    path.write_text(
        f"""
database: sqlite:///{db}
listen: 127.0.0.1:{listen_port}
providers:
  - name: sim
    kind: {kind}
    base_url: http://127.0.0.1:{sim_port}
    admin_token: {SIM_ADMIN}
    poll_interval: {interval}
    timeout: 5s{FLAVOR_SETTINGS[kind]}
{extra}
"""
    )
    return path


def metric_samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out
