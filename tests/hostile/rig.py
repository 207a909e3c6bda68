"""A real `keywatch run` against a hostile `keywatch simulate`, both separate processes on loopback.

The daemon is tuned to notice quickly (1 s polls, a 1 s request deadline, no retries, a 4 s poll
deadline, 4 MiB answers, 300 pages): the bounds are the product's, only smaller. A prober thread
asks /healthz every 0.2 s for the whole test, so a test can say the daemon never stalled.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx

from tests.e2e.procs import FLAVOR_SETTINGS, SIM_ADMIN, free_port, keywatch, metric_samples, wait_for

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


class HealthProbe(threading.Thread):
    """/healthz every 0.2 s: the slowest answer seen, and how many never came within 5 s."""

    def __init__(self, base: str) -> None:
        super().__init__(daemon=True)
        self.base = base
        self.worst = 0.0
        self.failures = 0
        self._halt = threading.Event()

    def run(self) -> None:
        with httpx.Client(timeout=5.0) as client:
            while not self._halt.is_set():
                started = time.monotonic()
                try:
                    client.get(f"{self.base}/healthz").raise_for_status()
                except httpx.HTTPError:
                    self.failures += 1
                self.worst = max(self.worst, time.monotonic() - started)
                self._halt.wait(0.2)

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=6)


class Rig:
    def __init__(self, tmp: Path, flavor: str, sim: str, base: str, daemon: Any) -> None:
        self.tmp = tmp
        self.flavor = flavor
        self.sim = sim
        self.base = base
        self.daemon = daemon
        self.db = tmp / "kw.db"
        self.log = tmp / "kw.log"

    # --- the simulator -----------------------------------------------------------------
    def control(self, path: str, body: dict[str, Any] | None = None) -> Any:
        response = httpx.post(f"{self.sim}/_sim/{path}", json=body or {}, timeout=10)
        response.raise_for_status()
        return response.json()

    def hostile(self, mode: str, **settings: Any) -> None:
        self.control("hostile", {"mode": mode, **settings})

    def calm(self) -> None:
        self.control("hostile", {"reset": True})
        self.control("faults", {"reset": True})

    def truth(self) -> list[dict[str, Any]]:
        tokens: list[dict[str, Any]] = httpx.get(f"{self.sim}/_sim/truth", timeout=10).json()["tokens"]
        return tokens

    def live(self) -> list[dict[str, Any]]:
        return [t for t in self.truth() if not t["deleted"]]

    # --- the daemon --------------------------------------------------------------------
    def samples(self) -> Samples:
        return metric_samples(httpx.get(f"{self.base}/metrics", timeout=10).text)

    def polls(self) -> float:
        return self.samples().get(
            ("keywatch_poll_duration_seconds_count", frozenset({("provider", "sim")})), 0.0
        )

    def wait_polls(self, n: int, *, timeout: float = 40.0) -> None:
        seen = self.polls()
        wait_for(lambda: self.polls() >= seen + n, timeout=timeout, what=f"{n} more polls")

    def errors(self, reason: str) -> float:
        key = ("keywatch_poll_errors_total", frozenset({("provider", "sim"), ("reason", reason)}))
        return self.samples().get(key, 0.0)

    def wait_error(self, reason: str, *, timeout: float = 40.0) -> None:
        before = self.errors(reason)
        wait_for(lambda: self.errors(reason) > before, timeout=timeout, what=f"a poll error {reason!r}")

    def up(self) -> float:
        return self.samples().get(("keywatch_provider_up", frozenset({("provider", "sim")})), -1.0)

    def spend(self, token: str) -> float | None:
        key = ("keywatch_token_spend_usd_total", frozenset({("provider", "sim"), ("token", token)}))
        return self.samples().get(key)

    def recovered(self) -> None:
        """After the relay behaves again: a successful poll, provider up, /readyz 200."""
        self.calm()
        wait_for(lambda: self.up() == 1.0, timeout=40, what="keywatch_provider_up back at 1")
        wait_for(lambda: httpx.get(f"{self.base}/readyz").status_code == 200, timeout=40, what="/readyz 200")

    def settle(self) -> None:
        """Freeze the relay's clock and let keywatch see all of it."""
        self.control("speed", {"speed": 0})
        self.wait_polls(2)

    def peak_rss_mb(self) -> float:
        for line in Path(f"/proc/{self.daemon.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        raise AssertionError("no VmHWM")

    def poll_run_errors(self) -> list[str]:
        with sqlite3.connect(self.db) as conn:
            rows = [r[0] for r in conn.execute("SELECT error FROM poll_runs WHERE error IS NOT NULL")]
        conn.close()
        return rows


@contextmanager
def hostile_rig(
    tmp: Path, flavor: str, *, tokens: int = 12, extra: str = ""
) -> Iterator[tuple[Rig, HealthProbe]]:
    sim_port, port = free_port(), free_port()
    sim, base = f"http://127.0.0.1:{sim_port}", f"http://127.0.0.1:{port}"
    cfg = tmp / "kw.yaml"
    cfg.write_text(
        f"""
database: sqlite:///{tmp / "kw.db"}
listen: 127.0.0.1:{port}
providers:
  - name: sim
    kind: {flavor}
    base_url: {sim}
    admin_token: {SIM_ADMIN}
    poll_interval: 1s
    timeout: 1s
    retries: 0
    poll_timeout: 4s
    max_response_mb: 4
    max_pages: 300{FLAVOR_SETTINGS[flavor]}
rules:
  provider_down: {{after: 2}}
{extra}
"""
    )
    with ExitStack() as stack:
        stack.enter_context(
            keywatch(
                "simulate",
                "--flavor",
                flavor,
                "--listen",
                f"127.0.0.1:{sim_port}",
                "--tokens",
                str(tokens),
                "--seed",
                "5",
                log=tmp / "sim.log",
            )
        )
        wait_for(lambda: httpx.get(f"{sim}/_sim/truth").status_code == 200, what="the simulator")
        daemon = stack.enter_context(
            keywatch("-c", str(cfg), "--log-level", "debug", "run", log=tmp / "kw.log")
        )
        rig = Rig(tmp, flavor, sim, base, daemon)
        wait_for(lambda: httpx.get(f"{base}/readyz").status_code == 200, what="/readyz")
        probe = HealthProbe(base)
        probe.start()
        try:
            yield rig, probe
        finally:
            probe.stop()
