"""A real `keywatch run` against a 10,000-token simulator: peak RSS, and database bytes per stored
usage sample after a stretch of busy traffic."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bench.common import ROOT, SIM_ADMIN, control, free_port, simulator


def vm_hwm_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main(n: int = 10_000, cycles: int = 10) -> None:
    with simulator(n) as url, tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        db = Path(tmp) / "kw.db"
        cfg = Path(tmp) / "kw.yaml"
        cfg.write_text(
            f"database: sqlite:///{db}\nlisten: 127.0.0.1:{port}\nproviders:\n  - name: bench\n    kind: laozhang\n"
            f"    base_url: {url}\n    admin_token: {SIM_ADMIN}\n    poll_interval: 5s\n    timeout: 60s\n"
        )
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        proc = subprocess.Popen(
            [sys.executable, "-m", "monitor", "-c", str(cfg), "--log-level", "warning", "run"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                try:
                    if httpx.get(f"{base}/readyz", timeout=5).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.5)
            with sqlite3.connect(db) as conn:
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            base_bytes = db.stat().st_size
            for _ in range(cycles):
                control(url, "advance", {"seconds": 600})
                time.sleep(5.5)  # one poll interval of the real daemon
                httpx.get(f"{base}/metrics", timeout=30)
            rss = vm_hwm_mb(proc.pid)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        with sqlite3.connect(db) as conn:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            deltas = conn.execute("SELECT COUNT(*) FROM usage_deltas").fetchone()[0]
            hourly = conn.execute("SELECT COUNT(*) FROM usage_hourly").fetchone()[0]
        conn.close()
        grown = db.stat().st_size - base_bytes
        print(f"daemon at {n:,} tokens: peak RSS {rss:.0f} MB (target <= 250 MB)")
        print(
            f"database: {grown / max(deltas, 1):.0f} bytes per stored usage sample "
            f"({deltas:,} deltas + {hourly:,} hourly rows over {cycles} busy cycles; tokens table excluded)"
        )


if __name__ == "__main__":
    main()
