"""Benchmark: one evaluation cycle of spend_anomaly + leak_suspected for a 10,000-token fleet.

Each token has 28 days of hourly history. A cycle = ingest one poll's delta per token, build the
fleet context, evaluate both detectors for every token. Measured:
- steady: a poll within an hour (baselines come from the per-hour cache: the daemon's usual case);
- rollover: the first poll of a new hour (every token's baseline is recomputed once);
- naive: the same evaluation recomputed from the full 28-day history at every poll (the token's
  hourly rollups reloaded and every baseline rebuilt), on a subset of the fleet, scaled up.

    python -m bench.rules_eval [--tokens 10000] [--naive-sample 1000]
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import time
from collections.abc import Callable

from alerts.detection.anomaly import AnomalyDetector
from alerts.detection.fleet import FleetContext
from alerts.detection.leak import LeakDetector, TokenInfo
from alerts.detection.series import HISTORY_HOURS, HOUR, TokenHistory
from bench.common import report
from monitor.settings import AnomalyRule, TokenPolicy

POLL = 900.0
NOW = 1_800_000_000.0 // HOUR * HOUR + 3 * POLL  # 45 minutes into an hour (a Friday, 08:45 UTC)
RULE = AnomalyRule()


def shape(rng: random.Random) -> Callable[[int], float]:
    """Hourly spend of one synthetic token: office, 24x7 service, nightly batch or sparse."""
    level = rng.lognormvariate(-1.5, 1.2)
    kind = rng.randrange(4)
    if kind == 0:
        return lambda h: level * (1.0 if 8 <= h % 24 < 18 and (h // 24 + 3) % 7 < 5 else 0.02)
    if kind == 1:
        return lambda h: level * (1 + 0.5 * math.sin(2 * math.pi * (h % 24) / 24))
    if kind == 2:
        at = rng.randrange(24)
        return lambda h: level * 10 if h % 24 == at else 0.0
    return lambda h: level * 5 if rng.random() < 0.1 else 0.0


def rollups(rng: random.Random, hours: int) -> list[tuple[float, float, float]]:
    """28 days of (hour_start, cost, requests) rows, as the store would hold them."""
    f = shape(rng)
    start = int(NOW // HOUR) - hours
    rows: list[tuple[float, float, float]] = []
    for h in range(start, start + hours):
        cost = f(h) * rng.gammavariate(4, 0.25)
        rows.append((h * HOUR, cost, cost * 250))
    return rows


def build(rows: list[tuple[float, float, float]], ip: str, model: str) -> TokenHistory:
    s = TokenHistory(rows[0][0] - HOUR)
    for ts, cost, req in rows:
        s.add_hourly(ts, cost, req)
    s.observe(NOW - 2 * HOUR, 0.01, 2, model, ip)  # identities, and the data's 15-minute resolution
    s.observe(NOW - 2 * HOUR + POLL, 0.01, 2, model, ip)
    return s


def cycle(
    states: list[TokenHistory],
    metas: list[TokenInfo],
    now: float,
    anomaly: AnomalyDetector,
    leak: LeakDetector,
    policy: TokenPolicy,
    rng: random.Random,
) -> tuple[int, int]:
    for s in states:
        s.observe(now, rng.random() * 0.05, 5, "m-mini", "198.18.0.1")
    fleet = FleetContext.build(states, now)
    fired = leaks = 0
    for s, meta in zip(states, metas, strict=True):
        a = anomaly.evaluate(s, now, RULE, fleet)
        lk = leak.evaluate(s, now, policy, meta, fleet)
        fired += a.fire
        leaks += lk.fire
    return fired, leaks


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    ap.add_argument("--tokens", type=int, default=10_000)
    ap.add_argument("--naive-sample", type=int, default=1_000)
    args = ap.parse_args(argv)
    rng = random.Random(7)
    hours = HISTORY_HOURS - 1
    t0 = time.perf_counter()
    all_rows = [rollups(rng, hours) for _ in range(args.tokens)]
    states = [build(rows, f"198.18.{i % 250}.{i % 7}", "m-mini") for i, rows in enumerate(all_rows)]
    metas = [TokenInfo(ip_whitelist=("198.18.0.0/16",)) for _ in states]
    built = time.perf_counter() - t0
    anomaly = AnomalyDetector(poll_interval=POLL)
    leak = LeakDetector(anomaly=anomaly)
    policy = TokenPolicy(match="*", business_hours="mon-fri 08:00-20:00 Europe/Berlin")

    def timed(now: float) -> float:
        t = time.perf_counter()
        cycle(states, metas, now, anomaly, leak, policy, rng)
        return time.perf_counter() - t

    cold = timed(NOW - 4 * POLL + 1)  # the daemon's first cycle: two hours of baselines per token
    rollover = timed(NOW - 3 * POLL + 1)  # first poll of a new hour: one new baseline per token
    steady = min(timed(NOW - 2 * POLL + 1), timed(NOW - POLL + 1), timed(NOW))

    # naive: every poll, reload each token's 28 days of rollups and rebuild every baseline
    sample = min(args.naive_sample, args.tokens)
    t = time.perf_counter()
    fresh_anomaly = AnomalyDetector(poll_interval=POLL)
    fresh_leak = LeakDetector(anomaly=fresh_anomaly)
    fresh = [build(all_rows[i], f"198.18.{i % 250}.{i % 7}", "m-mini") for i in range(sample)]
    cycle(fresh, metas[:sample], NOW, fresh_anomaly, fresh_leak, policy, rng)
    naive = (time.perf_counter() - t) * args.tokens / sample

    blob = sum(len(s.to_bytes()) for s in states[:200]) / 200
    print(f"rules eval fleet: {args.tokens:,} tokens x {hours} hourly buckets (built in {built:.1f} s)")
    n = f"{args.tokens:,} tokens x 28 d"
    report(f"rules eval (anomaly+leak), {n}, steady poll", steady, naive, target="<= 2 s/cycle")
    report(f"rules eval (anomaly+leak), {n}, hour rollover", rollover, naive, target="<= 2 s/cycle")
    report(f"rules eval (anomaly+leak), {n}, cold start", cold, naive, target="one-off")
    print(f"  naive = full 28-day recomputation every poll, measured on {sample:,} tokens and scaled")
    print(
        f"  per token: steady {steady / args.tokens * 1e6:.1f} us, rollover {rollover / args.tokens * 1e6:.1f} us"
    )
    print(f"  serialized state: {blob / 1024:.1f} KiB/token (zlib JSON)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
