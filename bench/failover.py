"""Failover time of several instances on one PostgreSQL database (issue 13).

Two `keywatch run` processes share a fresh database and two simulated relays. Each round kills
(SIGKILL) the instance polling relay `p1`, and measures how long until the survivor finished its
first successful poll of it (its `keywatch_last_poll_success_timestamp_seconds{provider="p1"}`),
then starts the killed instance again under its name and lets the two settle. Reported: median
and worst over the rounds, in seconds and in poll intervals (the issue's bound: 2 intervals).

    .venv/bin/python -m bench.failover [--rounds 7] [--interval 3] [--lease 3]

KEYWATCH_BENCH_PG: the server (default postgresql://root@127.0.0.1:5432/postgres).
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import httpx

ROOT = Path(__file__).resolve().parents[1]
SERVER = os.environ.get("KEYWATCH_BENCH_PG", "postgresql://root@127.0.0.1:5432/postgres")
T = TypeVar("T")


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(check: Callable[[], T | None], timeout: float, what: str) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except (httpx.HTTPError, OSError, ValueError, KeyError):
            pass
        time.sleep(0.05)
    raise TimeoutError(f"no {what} within {timeout:g} s")


def _spawn(args: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    full_env = {**os.environ, **(env or {}), "PYTHONPATH": str(ROOT)}
    out = log.open("wb")
    return subprocess.Popen(
        [sys.executable, "-m", "monitor", *args], stdout=out, stderr=subprocess.STDOUT, env=full_env
    )


def _last_success(port: int, provider: str) -> float:
    for line in httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text.splitlines():
        if line.startswith(f'keywatch_last_poll_success_timestamp_seconds{{provider="{provider}"}}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def _owns(port: int) -> list[str]:
    return list(httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).json()["owns"])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--interval", type=float, default=3.0, help="poll_interval, seconds")
    parser.add_argument("--lease", type=float, default=3.0, help="cluster.lease, seconds")
    args = parser.parse_args(argv)
    try:
        import psycopg

        admin = psycopg.connect(SERVER, autocommit=True, connect_timeout=3)
    except Exception as exc:  # the bench says why and skips
        print(f"skipped: PostgreSQL at {SERVER} is not reachable ({type(exc).__name__})")
        return
    name = f"keywatch_failover_{uuid.uuid4().hex[:8]}"
    admin.execute(f'CREATE DATABASE "{name}"')
    host = SERVER.split("@", 1)[1].rsplit("/", 1)[0]
    user = SERVER.split("://", 1)[1].split("@", 1)[0]
    work = Path(tempfile.mkdtemp(prefix="keywatch-failover-"))
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        sims = {p: _port() for p in ("p1", "p2")}
        for p, port in sims.items():
            procs[f"sim-{p}"] = _spawn(
                ["simulate", "--listen", f"127.0.0.1:{port}", "--tokens", "50"], work / f"{p}.log"
            )
        for port in sims.values():
            _wait(
                lambda port=port: httpx.get(f"http://127.0.0.1:{port}/_sim/truth").status_code == 200,
                30,
                "simulator",
            )
        providers = "".join(
            f"  - {{name: {p}, kind: laozhang, base_url: 'http://127.0.0.1:{port}', admin_token: sim-admin-token, "
            f"poll_interval: {args.interval:g}s}}\n"
            for p, port in sims.items()
        )
        cfg = work / "kw.yaml"
        cfg.write_text(
            f"database: postgresql+psycopg://{user}@{host}/{name}\nlisten: 127.0.0.1:${{KW_PORT}}\n"
            f"cluster: {{instance: '${{KW_INSTANCE}}', lease: {args.lease:g}s}}\nproviders:\n{providers}"
        )
        ports = {"a": _port(), "b": _port()}

        def start(instance: str) -> None:
            env = {"KW_PORT": str(ports[instance]), "KW_INSTANCE": instance}
            procs[instance] = _spawn(["-c", str(cfg), "run"], work / f"{instance}-{time.time():.0f}.log", env)

        def settled() -> dict[str, str] | None:
            owners = {p: i for i in ports for p in _owns(ports[i])}
            return owners if len(owners) == 2 and set(owners.values()) == {"a", "b"} else None

        start("a")
        start("b")
        times: list[float] = []
        for _ in range(args.rounds):
            owners = _wait(settled, 120, "both instances owning one relay each")
            victim = owners["p1"]
            (heir,) = [i for i in ports if i != victim]
            before = _last_success(ports[heir], "p1")
            time.sleep(args.interval * 0.5)  # kill mid-interval, not right after a poll
            procs[victim].send_signal(signal.SIGKILL)
            killed = time.time()
            procs[victim].wait()
            port, since = ports[heir], max(before, killed)

            def polled(port: int = port, since: float = since) -> float | None:
                t = _last_success(port, "p1")
                return t if t > since else None

            taken = _wait(polled, 120, "takeover")
            times.append(taken - killed)
            print(
                f"  kill {len(times)}: {victim} killed, {heir} polled p1 {taken - killed:.2f} s later",
                flush=True,
            )
            start(victim)  # waits out its old heartbeat, then takes its share back
        med, worst = statistics.median(times), max(times)
        print(
            f"failover over {len(times)} kills (poll_interval {args.interval:g} s, lease {args.lease:g} s): "
            f"median {med:.2f} s ({med / args.interval:.2f} intervals), worst {worst:.2f} s "
            f"({worst / args.interval:.2f} intervals)"
        )
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs.values():
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


if __name__ == "__main__":
    main()
