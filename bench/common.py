"""Shared bench plumbing: a simulator in its own process, timing, and the report format."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
SIM_ADMIN = "sim-admin-token"


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def simulator(
    tokens: int, *, seed: int = 11, idle: float | None = None, flavor: str = "laozhang"
) -> Iterator[str]:
    """A simulated relay in another process (so its CPU is not the client's); yields its URL."""
    port = free_port()
    code = (
        "import asyncio; from monitor.simulator import run_simulator; "
        f"asyncio.run(run_simulator('127.0.0.1:{port}', tokens={tokens}, seed={seed}, flavor={flavor!r}"
        + (f", idle_fraction={idle}" if idle is not None else "")
        + "))"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-c", code], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/_sim/faults", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        else:
            raise RuntimeError("simulator did not start")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def control(url: str, path: str, body: dict[str, object]) -> None:
    httpx.post(f"{url}/_sim/{path}", json=body, timeout=30).raise_for_status()


async def median_async(fn: Callable[[], Awaitable[object]], runs: int = 5) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        await fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def median(fn: Callable[[], object], runs: int = 5) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def report(name: str, ours: float, baseline: float, *, target: str, unit: str = "s") -> None:
    ratio = ours / baseline if baseline else float("inf")
    print(
        f"{name:<58} {ours:9.4f}{unit} vs baseline {baseline:9.4f}{unit}  ratio {ratio:5.2f}x  (target {target})",
        flush=True,
    )
